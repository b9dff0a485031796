//! Open-addressing hash tables keyed by short pieces packed into 16 bytes, for the encoder's hot
//! loop.
//!
//! A piece of at most 15 bytes packs into a [`Key`]: its bytes, zero-padded, and its length in
//! the top byte; two pieces pack equal exactly when they are equal, so a key compare is the
//! whole comparison. Keys and values sit side by side in one array (linear probing), so a
//! lookup usually touches one cache line, and [`Table::prefetch`] can ask for that line while
//! the encoder is still busy with the pieces before: with big vocabularies (o200k's table is
//! 12 MB) the lookups are otherwise mostly cache misses.

/// A packed piece: bytes 0..8, then bytes 8..15 with the length in the top byte. Never
/// `[0, 0]` for a non-empty piece, which marks an empty slot.
pub type Key = [u64; 2];

const EMPTY: Key = [0, 0];

/// The low `k` bytes of a word (`k <= 8`).
#[inline(always)]
fn low_bytes(w: u64, k: usize) -> u64 {
    if k >= 8 {
        w
    } else {
        w & ((1u64 << (8 * k)) - 1)
    }
}

/// Packs a piece of 1 to 15 bytes; `None` if it is longer (or empty).
#[inline(always)]
pub fn key_of(piece: &[u8]) -> Option<Key> {
    let n = piece.len();
    if n == 0 || n > 15 {
        return None;
    }
    let mut b = [0u8; 16];
    b[..n].copy_from_slice(piece);
    b[15] = n as u8;
    let u = u128::from_le_bytes(b);
    Some([u as u64, (u >> 64) as u64])
}

/// `key_of(&text[s..e])`, reading whole words from `text` where 16 bytes are in bounds (no
/// variable-length copy).
#[inline(always)]
pub fn key_at(text: &[u8], s: usize, e: usize) -> Option<Key> {
    let n = e - s;
    if n == 0 || n > 15 {
        return None;
    }
    let Some(window) = text.get(s..s + 16) else {
        return key_of(&text[s..e]);
    };
    let (lo, hi) = window.split_at(8);
    let lo = u64::from_le_bytes(lo.try_into().unwrap_or_default());
    let hi = u64::from_le_bytes(hi.try_into().unwrap_or_default());
    let len = (n as u64) << 56;
    Some(if n >= 8 {
        [lo, low_bytes(hi, n - 8) | len]
    } else {
        [low_bytes(lo, n), len]
    })
}

/// Aligned to 32 bytes, so that a slot of up to 32 bytes never straddles two cache lines.
#[derive(Clone, Debug)]
#[repr(C, align(32))]
struct Slot<V> {
    key: Key,
    val: V,
}

/// Insert-only map from packed pieces to `V`, at most half full.
#[derive(Clone, Debug)]
pub struct Table<V> {
    slots: Vec<Slot<V>>,
    /// `64 - log2(slots.len())`: the hash's top bits pick the home slot.
    shift: u32,
    len: usize,
}

impl<V: Copy + Default> Default for Table<V> {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl<V: Copy + Default> Table<V> {
    /// A table that holds `n` entries without growing.
    pub fn with_capacity(n: usize) -> Self {
        let size = (2 * n).next_power_of_two().max(16);
        // (Large tables on huge pages: a piece cache sized for 10 MB of text is 16 MB.)
        let mut slots = crate::mem::huge_vec(size);
        slots.resize(
            size,
            Slot {
                key: EMPTY,
                val: V::default(),
            },
        );
        Self {
            slots,
            shift: 64 - size.trailing_zeros(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Makes room for `n` entries in all (one rebuild at most).
    pub fn reserve(&mut self, n: usize) {
        if 2 * n > self.slots.len() {
            self.rebuild(n);
        }
    }

    #[inline(always)]
    fn home(&self, key: &Key) -> usize {
        let h = (key[0] ^ key[1].rotate_left(23)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> self.shift) as usize
    }

    /// Asks the CPU to start loading `key`'s home slot (a hint: no effect on results).
    #[inline(always)]
    pub fn prefetch(&self, key: &Key) {
        #[cfg(target_arch = "x86_64")]
        {
            let p = self.slots[self.home(key)..].as_ptr();
            // SAFETY: `p` points into `self.slots`; a prefetch reads nothing and cannot fault.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    p.cast::<i8>(),
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = key;
    }

    #[inline(always)]
    pub fn get(&self, key: &Key) -> Option<&V> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let slot = &self.slots[i];
            if slot.key == *key {
                return Some(&slot.val);
            }
            if slot.key == EMPTY {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Inserts or replaces; `key` must not be `[0, 0]` (no packed piece is).
    pub fn insert(&mut self, key: Key, val: V) {
        debug_assert!(key != EMPTY);
        if 2 * (self.len + 1) > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(&key);
        loop {
            let slot = &mut self.slots[i];
            if slot.key == key {
                slot.val = val;
                return;
            }
            if slot.key == EMPTY {
                *slot = Slot { key, val };
                self.len += 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// (entries, slots, mean distance of an entry from its home slot): for tuning.
    #[cfg(test)]
    pub fn probe_stats(&self) -> (usize, usize, f64) {
        let mask = self.slots.len() - 1;
        let mut total = 0usize;
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.key != EMPTY {
                total += (i.wrapping_sub(self.home(&slot.key))) & mask;
            }
        }
        (
            self.len,
            self.slots.len(),
            total as f64 / self.len.max(1) as f64,
        )
    }

    fn grow(&mut self) {
        self.rebuild(self.slots.len());
    }

    /// The same entries in a table sized for `n`.
    fn rebuild(&mut self, n: usize) {
        let old = std::mem::replace(self, Self::with_capacity(n));
        for slot in old.slots {
            if slot.key != EMPTY {
                self.insert(slot.key, slot.val);
            }
        }
    }
}

/// A 64-bit hash of a piece of any length, never 0 (which marks an empty [`LongTable`] slot):
/// eight bytes at a time, finished so that the top bits (which pick the slot) depend on all.
#[inline]
pub fn long_hash(piece: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mix = |h: u64, w: u64| (h.rotate_left(26) ^ w).wrapping_mul(K);
    let mut h = piece.len() as u64;
    let mut words = piece.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = mix(h, u64::from_le_bytes(b));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        h = mix(h, u64::from_le_bytes(b));
    }
    (h ^ h >> 31).wrapping_mul(K).max(1)
}

/// A slot of a [`LongTable`]: the piece's hash (0: empty), where its bytes are in the table's
/// arena, and its value.
#[derive(Clone, Copy, Debug, Default)]
struct LongSlot<V> {
    hash: u64,
    at: u32,
    len: u32,
    val: V,
}

/// Insert-only map from pieces of any length (those too long for a [`Key`]) to `V`: open
/// addressing on [`long_hash`], at most half full, the pieces' bytes back to back in one arena
/// (no allocation per entry), compared in full on a hash match.
#[derive(Clone, Debug)]
pub struct LongTable<V> {
    slots: Vec<LongSlot<V>>,
    shift: u32,
    len: usize,
    bytes: Vec<u8>,
}

impl<V: Copy + Default> Default for LongTable<V> {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl<V: Copy + Default> LongTable<V> {
    pub fn with_capacity(n: usize) -> Self {
        let size = (2 * n).next_power_of_two().max(16);
        let mut slots = crate::mem::huge_vec(size);
        slots.resize(size, LongSlot::default());
        Self {
            slots,
            shift: 64 - size.trailing_zeros(),
            len: 0,
            bytes: Vec::new(),
        }
    }

    /// Makes room for `n` entries of `bytes` bytes in all (the slots rebuilt once at most).
    pub fn reserve(&mut self, n: usize, bytes: usize) {
        if 2 * n > self.slots.len() {
            self.rebuild(n);
        }
        if bytes > self.bytes.capacity() {
            self.bytes.reserve(bytes - self.bytes.len());
            crate::mem::huge_capacity(&mut self.bytes);
        }
    }

    /// The same entries in slots for `n`.
    fn rebuild(&mut self, n: usize) {
        let old = std::mem::take(&mut self.slots);
        *self = Self {
            bytes: std::mem::take(&mut self.bytes),
            ..Self::with_capacity(n)
        };
        for slot in old.into_iter().filter(|s| s.hash != 0) {
            self.place(slot);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The bytes of all the pieces held.
    pub fn bytes_held(&self) -> usize {
        self.bytes.len()
    }

    #[inline]
    pub fn get(&self, hash: u64, piece: &[u8]) -> Option<V> {
        let mask = self.slots.len() - 1;
        let mut i = (hash >> self.shift) as usize;
        loop {
            let slot = &self.slots[i];
            if slot.hash == 0 {
                return None;
            }
            if slot.hash == hash
                && self.bytes[slot.at as usize..(slot.at + slot.len) as usize] == *piece
            {
                return Some(slot.val);
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `piece` (`hash` is its [`long_hash`]), which must not be in the table yet; the
    /// arena takes pieces up to 4 GiB in all, and nothing is added beyond.
    pub fn insert(&mut self, hash: u64, piece: &[u8], val: V) {
        debug_assert!(hash != 0 && self.get(hash, piece).is_none());
        let at = self.bytes.len() as u32;
        if u32::try_from(self.bytes.len() + piece.len()).is_err() {
            return;
        }
        if 2 * (self.len + 1) > self.slots.len() {
            self.rebuild(self.slots.len());
        }
        self.bytes.extend_from_slice(piece);
        self.place(LongSlot {
            hash,
            at,
            len: piece.len() as u32,
            val,
        });
    }

    fn place(&mut self, slot: LongSlot<V>) {
        let mask = self.slots.len() - 1;
        let mut i = (slot.hash >> self.shift) as usize;
        while self.slots[i].hash != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = slot;
        self.len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_at_equals_key_of() {
        let text: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) | 1).collect();
        for s in 0..text.len() {
            for e in s..=text.len() {
                assert_eq!(key_at(&text, s, e), key_of(&text[s..e]), "{s}..{e}");
            }
        }
        // Distinct pieces, distinct keys; trailing zero bytes included.
        assert_ne!(key_of(b"a"), key_of(b"a\0"));
        assert_ne!(key_of(b"\0"), Some(EMPTY));
    }

    #[test]
    fn table_matches_a_hash_map() {
        let mut table = Table::<u32>::default();
        let mut map = std::collections::HashMap::new();
        let mut x = 12345u64;
        for i in 0..5000u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = 1 + (x >> 60) as usize % 15;
            let piece: Vec<u8> = (0..len).map(|j| (x >> (j * 4)) as u8 % 4).collect();
            let key = key_of(&piece).expect("short");
            table.insert(key, i);
            map.insert(piece, i);
            if i % 1000 == 999 {
                // Making room keeps every entry (and a smaller request changes nothing).
                table.reserve(4 * i as usize);
                table.reserve(1);
            }
        }
        assert_eq!(table.len(), map.len());
        for (piece, &v) in &map {
            assert_eq!(table.get(&key_of(piece).expect("short")), Some(&v));
        }
        assert_eq!(table.get(&key_of(b"zzz").expect("short")), None);
    }

    #[test]
    fn long_table_matches_a_hash_map() {
        use rustc_hash::FxHashMap;
        let mut rng = crate::testing::Rng(7);
        let mut table: LongTable<u32> = LongTable::default();
        let mut map: FxHashMap<Vec<u8>, u32> = FxHashMap::default();
        for i in 0..20_000u32 {
            // Few distinct bytes and lengths, so that pieces repeat and share prefixes.
            let len = 16 + rng.below(24);
            let piece: Vec<u8> = (0..len).map(|_| b'a' + rng.below(2) as u8).collect();
            let hash = long_hash(&piece);
            assert_eq!(table.get(hash, &piece), map.get(&piece).copied());
            if let std::collections::hash_map::Entry::Vacant(e) = map.entry(piece.clone()) {
                table.insert(hash, &piece, i);
                e.insert(i);
            }
        }
        assert_eq!(table.len(), map.len());
        assert!(map.len() > 5_000);
        for (piece, &v) in &map {
            assert_eq!(table.get(long_hash(piece), piece), Some(v));
            let mut other = piece.clone();
            other.push(b'c');
            assert_eq!(table.get(long_hash(&other), &other), None);
        }
    }
}
