//! The BPE vocabulary: token bytes, the ranked merges, and special tokens.
//!
//! Ids are contiguous, `0..len`. Every byte value has a single-byte token (byte-level BPE can
//! encode any input), but ids need not equal byte values: an imported GPT-2 vocabulary numbers
//! its bytes in its own order. A merge `(left, right) -> merged` has a rank, its position in the
//! merge list; encoding applies merges by rank. Two merges may produce the same bytes (HF
//! tokenizers' trainer allows it); they then share one id.

use rustc_hash::FxHashMap;

use super::table::{key_at, key_of, Key, Table};

use crate::error::{Error, Result};

/// An id pair and what it merges into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Merge {
    pub left: u32,
    pub right: u32,
    pub merged: u32,
}

#[derive(Clone, Debug)]
pub struct Vocab {
    tokens: Vec<Vec<u8>>,
    byte_ids: [u32; 256],
    merges: Vec<Merge>,
    /// (left, right) -> (rank, merged)
    merge_map: FxHashMap<(u32, u32), (u32, u32)>,
    /// Bytes of every non-special token -> id.
    token_ids: FxHashMap<Vec<u8>, u32>,
    /// (content, id), sorted by id.
    specials: Vec<(String, u32)>,
    /// Tokens that BPE encodes as themselves (true of every token a BPE trainer makes, not
    /// always of imported vocabularies), so that a piece found among them skips merging.
    /// Computed on first use.
    whole: std::sync::OnceLock<WholeTokens>,
    /// All token bytes back to back, then `DECODE_PAD` zero bytes, and where each token starts
    /// (`offsets[id]..offsets[id + 1]`): decoding reads one flat table, not a `Vec` per token.
    flat: Vec<u8>,
    offsets: Vec<usize>,
    /// Every merge ranks after the merges that made its two parts, so a merge never creates a
    /// pair of lower rank than itself. True of every vocabulary a BPE trainer makes; it lets long
    /// pieces be merged rank by rank in linear time (`merge_by_rank`).
    monotone: bool,
}

/// The tokens that encode as themselves: short ones (up to 15 bytes) in a map keyed by their
/// packed bytes, which needs no pointer chasing to compare keys; longer ones as a bitset over
/// `token_ids`.
#[derive(Clone, Debug, Default)]
struct WholeTokens {
    short: Table<u32>,
    long: Vec<u64>,
}

/// Tokens up to this long are decoded with one fixed-size copy.
const DECODE_PAD: usize = 16;

impl Vocab {
    /// Builds and validates a vocabulary.
    ///
    /// `tokens[id]` is the byte string of `id` (for a special token, its UTF-8 text); `merges` are
    /// `(left, right)` pairs in rank order, whose merged id is looked up by the concatenated
    /// bytes; `specials` are `(content, id)`. Any inconsistency is an `Error::Corrupt`.
    pub fn new(
        tokens: Vec<Vec<u8>>,
        merges: &[(u32, u32)],
        specials: Vec<(String, u32)>,
    ) -> Result<Self> {
        let n = tokens.len();
        if n > u32::MAX as usize {
            return Err(Error::Corrupt("more than 2^32 tokens".into()));
        }
        let mut specials = specials;
        specials.sort_by_key(|(_, id)| *id);
        let mut is_special = vec![false; n];
        for (content, id) in &specials {
            let i = *id as usize;
            if i >= n {
                return Err(Error::Corrupt(format!(
                    "special token {content:?} has id {id}, outside the vocabulary of {n} ids"
                )));
            }
            if is_special[i] {
                return Err(Error::Corrupt(format!(
                    "id {id} is given to two special tokens"
                )));
            }
            if content.is_empty() {
                return Err(Error::Corrupt("a special token is empty".into()));
            }
            is_special[i] = true;
        }
        let mut token_ids = FxHashMap::default();
        token_ids.reserve(n);
        let mut byte_ids = [u32::MAX; 256];
        for (id, bytes) in tokens.iter().enumerate() {
            if is_special[id] {
                continue;
            }
            if bytes.is_empty() {
                return Err(Error::Corrupt(format!("token {id} is empty")));
            }
            if let Some(prev) = token_ids.insert(bytes.clone(), id as u32) {
                return Err(Error::Corrupt(format!(
                    "tokens {prev} and {id} have the same bytes {:?}",
                    String::from_utf8_lossy(bytes)
                )));
            }
            if bytes.len() == 1 {
                byte_ids[bytes[0] as usize] = id as u32;
            }
        }
        if let Some(b) = byte_ids.iter().position(|&id| id == u32::MAX) {
            return Err(Error::Corrupt(format!(
                "the vocabulary has no token for byte 0x{b:02x}; byte-level BPE needs all 256"
            )));
        }
        let mut merge_list = Vec::with_capacity(merges.len());
        let mut merge_map = FxHashMap::default();
        merge_map.reserve(merges.len());
        for (rank, &(left, right)) in merges.iter().enumerate() {
            let (l, r) = (left as usize, right as usize);
            if l >= n || r >= n || is_special[l] || is_special[r] {
                return Err(Error::Corrupt(format!(
                    "merge {rank} ({left}, {right}) names an id that is not a regular token"
                )));
            }
            let mut joined = tokens[l].clone();
            joined.extend_from_slice(&tokens[r]);
            let Some(&merged) = token_ids.get(&joined) else {
                return Err(Error::Corrupt(format!(
                    "merge {rank} ({left}, {right}) makes {:?}, which is not in the vocabulary",
                    String::from_utf8_lossy(&joined)
                )));
            };
            if merge_map
                .insert((left, right), (rank as u32, merged))
                .is_some()
            {
                return Err(Error::Corrupt(format!(
                    "merge ({left}, {right}) appears twice"
                )));
            }
            merge_list.push(Merge {
                left,
                right,
                merged,
            });
        }
        let mut offsets = Vec::with_capacity(n + 1);
        let mut flat = Vec::with_capacity(tokens.iter().map(Vec::len).sum::<usize>() + DECODE_PAD);
        for t in &tokens {
            offsets.push(flat.len());
            flat.extend_from_slice(t);
        }
        offsets.push(flat.len());
        flat.resize(flat.len() + DECODE_PAD, 0);
        let monotone = is_monotone(n, &merge_list);
        Ok(Self {
            tokens,
            byte_ids,
            merges: merge_list,
            merge_map,
            token_ids,
            specials,
            whole: std::sync::OnceLock::new(),
            flat,
            offsets,
            monotone,
        })
    }

    /// Builds a vocabulary from tiktoken-style ranks: `tokens[rank]` are the bytes of the token
    /// with that rank (= id). Merges are derived as HF's converter does: a token's merge is the
    /// pair that encoding its bytes with the lower-ranked merges ends at. A token that does not
    /// end at exactly two parts is unreachable by merging and gets no merge.
    pub fn from_ranks(tokens: Vec<Vec<u8>>, specials: Vec<(String, u32)>) -> Result<Self> {
        // Start with no merges, add them in rank order; encoding a token only ever uses merges
        // of lower rank, which are all in place by then.
        let mut vocab = Self::new(tokens, &[], specials)?;
        let mut scratch = Vec::new();
        // (`whole` is computed lazily, after all merges are in place.)
        for id in 0..vocab.tokens.len() as u32 {
            if vocab.tokens[id as usize].len() < 2 || vocab.is_special(id) {
                continue;
            }
            scratch.clear();
            let bytes = vocab.tokens[id as usize].clone();
            vocab.merge_piece(&bytes, &mut scratch);
            if let [left, right] = scratch[..] {
                let rank = vocab.merges.len() as u32;
                vocab.merge_map.insert((left, right), (rank, id));
                vocab.merges.push(Merge {
                    left,
                    right,
                    merged: id,
                });
            }
        }
        vocab.monotone = is_monotone(vocab.tokens.len(), &vocab.merges);
        Ok(vocab)
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// The number of bytes that `ids` decode to; `Err(id)` for the first id out of range.
    pub fn decoded_len(&self, ids: &[u32]) -> std::result::Result<usize, u32> {
        let n = self.tokens.len();
        let mut total = 0;
        for &id in ids {
            let i = id as usize;
            if i >= n {
                return Err(id);
            }
            total += self.offsets[i + 1] - self.offsets[i];
        }
        Ok(total)
    }

    /// Writes the bytes of `ids` into `out`, which must be exactly `decoded_len(ids)` long (ids
    /// already checked). Short tokens are copied as fixed 16-byte blocks (the tail of each block
    /// is overwritten by the next token), which is what makes decoding fast.
    pub fn decode_into(&self, ids: &[u32], out: &mut [u8]) {
        let mut pos = 0;
        for &id in ids {
            let i = id as usize;
            let (s, e) = (self.offsets[i], self.offsets[i + 1]);
            let len = e - s;
            if len <= DECODE_PAD && pos + DECODE_PAD <= out.len() {
                out[pos..pos + DECODE_PAD].copy_from_slice(&self.flat[s..s + DECODE_PAD]);
            } else {
                out[pos..pos + len].copy_from_slice(&self.flat[s..e]);
            }
            pos += len;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.tokens.get(id as usize).map(Vec::as_slice)
    }

    pub fn tokens(&self) -> &[Vec<u8>] {
        &self.tokens
    }

    /// Whether every merge ranks after the merges that made its parts (see the field).
    pub fn is_monotone(&self) -> bool {
        self.monotone
    }

    pub fn merges(&self) -> &[Merge] {
        &self.merges
    }

    pub fn specials(&self) -> &[(String, u32)] {
        &self.specials
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.specials.binary_search_by_key(&id, |(_, i)| *i).is_ok()
    }

    pub fn byte_id(&self, byte: u8) -> u32 {
        self.byte_ids[byte as usize]
    }

    /// The id of a regular token with exactly these bytes.
    pub fn token_id(&self, bytes: &[u8]) -> Option<u32> {
        self.token_ids.get(bytes).copied()
    }

    /// (rank, merged id) of the merge of `left` and `right`, if there is one.
    #[inline]
    pub fn merge_of(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        self.merge_map.get(&(left, right)).copied()
    }

    fn whole_tokens(&self) -> &WholeTokens {
        self.whole.get_or_init(|| {
            let mut whole = WholeTokens {
                short: Table::with_capacity(self.token_ids.len()),
                long: vec![0u64; self.tokens.len().div_ceil(64)],
            };
            let mut scratch = Vec::with_capacity(64);
            for (bytes, &id) in &self.token_ids {
                scratch.clear();
                self.merge_piece(bytes, &mut scratch);
                if scratch == [id] {
                    match key_of(bytes) {
                        Some(key) => {
                            whole.short.insert(key, id);
                        }
                        None => whole.long[id as usize / 64] |= 1 << (id % 64),
                    }
                }
            }
            whole
        })
    }

    #[cfg(test)]
    pub fn whole_stats(&self) -> String {
        format!("whole {:?}", self.whole_tokens().short.probe_stats())
    }

    /// `merge_piece`, with shortcuts: a piece that is a whole token (most pieces of most text)
    /// costs one hash lookup, and a short piece seen before in this `cache` another.
    #[inline]
    pub fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>, cache: &mut PieceCache) {
        if piece.len() == 1 {
            out.push(self.byte_ids[piece[0] as usize]);
            return;
        }
        match key_of(piece) {
            Some(key) => self.encode_short(piece, &key, out, cache),
            None => self.encode_long(piece, out, cache),
        }
    }

    /// `encode_piece` for the consecutive pieces `spans` of `text` (byte ranges): their keys
    /// are computed and their slots in the thread's piece cache prefetched first, so the
    /// table's cache misses overlap instead of following one another.
    #[inline]
    pub fn encode_pieces(
        &self,
        text: &[u8],
        spans: &[(usize, usize)],
        out: &mut Vec<u32>,
        cache: &mut PieceCache,
    ) {
        const NO_KEY: Key = [0, 0];
        let mut keys = [NO_KEY; PIECE_BLOCK];
        // While the cache is still missing pieces (a first call on new text), the whole-token
        // table's slots too; once it is warm, those would only cost memory traffic.
        let whole = cache.missed.then(|| self.whole_tokens());
        cache.missed = false;
        for (key, &(s, e)) in keys.iter_mut().zip(spans) {
            if e - s >= 2 {
                if let Some(k) = key_at(text, s, e) {
                    cache.map.prefetch(&k);
                    if let Some(whole) = whole {
                        whole.short.prefetch(&k);
                    }
                    *key = k;
                }
            }
        }
        for (key, &(s, e)) in keys.iter().zip(spans) {
            let piece = &text[s..e];
            if piece.len() == 1 {
                out.push(self.byte_ids[piece[0] as usize]);
            } else if *key != NO_KEY {
                self.encode_short(piece, key, out, cache);
            } else {
                self.encode_long(piece, out, cache);
            }
        }
    }

    /// A piece of 2 to 15 bytes, packed into `key`.
    #[inline(always)]
    fn encode_short(&self, piece: &[u8], key: &Key, out: &mut Vec<u32>, cache: &mut PieceCache) {
        if let Some(cached) = cache.map.get(key) {
            let n = cached.n as usize;
            if n <= INLINE {
                // A fixed-size copy (no call to memmove), then the surplus cut off.
                let len = out.len();
                out.extend_from_slice(&cached.ids);
                out.truncate(len + n);
            } else {
                let at = cached.ids[0] as usize;
                out.extend_from_slice(&cache.arena[at..at + n]);
            }
            return;
        }
        cache.missed = true;
        // The thread's cache takes whole tokens too, so that a piece seen before costs one
        // lookup in one table, whatever it encodes to.
        if let Some(&id) = self.whole_tokens().short.get(key) {
            out.push(id);
            cache.insert_short(*key, &[id]);
            return;
        }
        let start = out.len();
        self.merge_piece(piece, out);
        cache.insert_short(*key, &out[start..]);
    }

    /// A piece of more than 15 bytes.
    fn encode_long(&self, piece: &[u8], out: &mut Vec<u32>, cache: &mut PieceCache) {
        if let Some(&id) = self.token_ids.get(piece) {
            let whole = self.whole_tokens();
            if whole.long[id as usize / 64] & (1 << (id % 64)) != 0 {
                out.push(id);
                return;
            }
        }
        if let Some(&(at, n)) = cache.long.get(piece) {
            out.extend_from_slice(&cache.arena[at as usize..(at + n) as usize]);
            return;
        }
        let start = out.len();
        self.merge_piece(piece, out);
        if piece.len() <= PieceCache::LONGEST && cache.arena.len() < PieceCache::ARENA {
            let at = cache.arena.len() as u32;
            let n = (out.len() - start) as u32;
            cache.arena.extend_from_slice(&out[start..]);
            cache.long.insert(piece.into(), (at, n));
        }
    }

    /// Appends the BPE encoding of one piece: start from its bytes and repeatedly apply the
    /// lowest-ranked merge among adjacent pairs, leftmost first on ties.
    pub fn merge_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        match piece.len() {
            0 => {}
            1 => out.push(self.byte_ids[piece[0] as usize]),
            n if n <= 16 => self.merge_small::<16>(piece, out),
            n if n <= SMALL_PIECE => self.merge_small::<SMALL_PIECE>(piece, out),
            n if n < u32::MAX as usize => self.merge_long(piece, out),
            _ => {
                // Beyond 4 GiB in one piece: merge in 1 GiB windows. Merges never reach across
                // the windows' edges, so this is the only place where the result can differ from
                // exact BPE; no real text has such a piece.
                for window in piece.chunks(1 << 30) {
                    self.merge_long(window, out);
                }
            }
        }
    }

    /// Quadratic in the piece length, but with tiny constants and no allocation: the right tool
    /// for the short pieces that make up almost all text. `N` bounds the piece length.
    fn merge_small<const N: usize>(&self, piece: &[u8], out: &mut Vec<u32>) {
        let n = piece.len();
        debug_assert!(n >= 2 && n <= N);
        let mut syms = [0u32; N];
        // ranks[i], merged[i]: the merge of the pair (syms[i], syms[i + 1]), if any.
        let mut ranks = [u32::MAX; N];
        let mut merged = [0u32; N];
        for (s, &b) in syms.iter_mut().zip(piece) {
            *s = self.byte_ids[b as usize];
        }
        let pair = |syms: &[u32; N], i: usize| self.merge_of(syms[i], syms[i + 1]);
        for i in 0..n - 1 {
            if let Some((r, m)) = pair(&syms, i) {
                ranks[i] = r;
                merged[i] = m;
            }
        }
        let mut len = n;
        while len > 1 {
            let mut best = u32::MAX;
            let mut at = 0;
            for (i, &r) in ranks[..len - 1].iter().enumerate() {
                if r < best {
                    best = r;
                    at = i;
                }
            }
            if best == u32::MAX {
                break;
            }
            syms[at] = merged[at];
            syms.copy_within(at + 2..len, at + 1);
            ranks.copy_within(at + 1..len - 1, at);
            merged.copy_within(at + 1..len - 1, at);
            len -= 1;
            ranks[len - 1] = u32::MAX;
            if at + 1 < len {
                (ranks[at], merged[at]) = pair(&syms, at).unwrap_or((u32::MAX, 0));
            }
            if at > 0 {
                (ranks[at - 1], merged[at - 1]) = pair(&syms, at - 1).unwrap_or((u32::MAX, 0));
            }
        }
        out.extend_from_slice(&syms[..len]);
    }

    /// A piece as a doubly linked list of byte tokens: `(syms, next, prev)`, `u32::MAX` for none.
    /// Positions are u32 (`merge_piece` splits pieces of 4 GiB and more), which halves the
    /// memory of the lists and the heaps.
    fn linked(&self, piece: &[u8]) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
        let n = piece.len() as u32;
        let syms = piece.iter().map(|&b| self.byte_ids[b as usize]).collect();
        let next = (1..=n).map(|i| if i == n { u32::MAX } else { i }).collect();
        let prev = (0..n).map(|i| i.wrapping_sub(1)).collect();
        (syms, next, prev)
    }

    fn merge_long(&self, piece: &[u8], out: &mut Vec<u32>) {
        if self.monotone {
            self.merge_by_rank(piece, out);
        } else {
            self.merge_large(piece, out);
        }
    }

    /// Linear time for monotone vocabularies: since a merge only ever creates pairs of higher
    /// rank, lowest-rank-first BPE equals applying the merges in rank order, each to all its
    /// occurrences left to right (exactly what training did). Occurrences wait in one bucket per
    /// rank; a small heap holds the ranks that have a bucket.
    fn merge_by_rank(&self, piece: &[u8], out: &mut Vec<u32>) {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        const NONE: u32 = u32::MAX;
        let n = piece.len();
        let (mut syms, mut next, mut prev) = self.linked(piece);
        let mut buckets: FxHashMap<u32, Vec<u32>> = FxHashMap::default();
        let mut ranks: BinaryHeap<Reverse<u32>> = BinaryHeap::new();
        fn add(
            buckets: &mut FxHashMap<u32, Vec<u32>>,
            ranks: &mut BinaryHeap<Reverse<u32>>,
            rank: u32,
            pos: u32,
        ) {
            buckets
                .entry(rank)
                .or_insert_with(|| {
                    ranks.push(Reverse(rank));
                    Vec::new()
                })
                .push(pos);
        }
        for i in 0..n - 1 {
            if let Some((rank, _)) = self.merge_of(syms[i], syms[i + 1]) {
                add(&mut buckets, &mut ranks, rank, i as u32);
            }
        }
        while let Some(Reverse(rank)) = ranks.pop() {
            let Some(mut positions) = buckets.remove(&rank) else {
                continue;
            };
            // Positions arrive in runs of increasing order; sorting them is cheap, and it makes
            // overlapping occurrences (`a a a` with merge `(a, a)`) merge leftmost first.
            positions.sort_unstable();
            let m = self.merges[rank as usize];
            for pos in positions {
                let p = pos as usize;
                let right = next[p];
                if syms[p] != m.left || right == NONE || syms[right as usize] != m.right {
                    continue;
                }
                let r = right as usize;
                syms[p] = m.merged;
                syms[r] = NONE;
                let after = next[r];
                next[p] = after;
                if after != NONE {
                    prev[after as usize] = pos;
                    if let Some((rk, _)) = self.merge_of(m.merged, syms[after as usize]) {
                        add(&mut buckets, &mut ranks, rk, pos);
                    }
                }
                let before = prev[p];
                if before != NONE {
                    if let Some((rk, _)) = self.merge_of(syms[before as usize], m.merged) {
                        add(&mut buckets, &mut ranks, rk, before);
                    }
                }
            }
        }
        collect_linked(&syms, &next, out);
    }

    /// O(n log n) for any vocabulary: a linked list over the piece and a heap of candidate
    /// merges, validated lazily when popped.
    fn merge_large(&self, piece: &[u8], out: &mut Vec<u32>) {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        const NONE: u32 = u32::MAX;
        let n = piece.len();
        let (mut syms, mut next, mut prev) = self.linked(piece);
        let mut heap: BinaryHeap<Reverse<(u32, u32)>> = (0..n - 1)
            .filter_map(|i| {
                self.merge_of(syms[i], syms[i + 1])
                    .map(|(rank, _)| Reverse((rank, i as u32)))
            })
            .collect();
        while let Some(Reverse((rank, pos))) = heap.pop() {
            let pos = pos as usize;
            // A removed node has sym NONE; a node at the end has no right neighbour.
            if syms[pos] == NONE || next[pos] == NONE {
                continue;
            }
            let right = next[pos] as usize;
            let Some((cur_rank, merged)) = self.merge_of(syms[pos], syms[right]) else {
                continue;
            };
            if cur_rank != rank {
                continue;
            }
            syms[pos] = merged;
            syms[right] = NONE;
            let after = next[right];
            next[pos] = after;
            if after != NONE {
                prev[after as usize] = pos as u32;
                if let Some((r, _)) = self.merge_of(merged, syms[after as usize]) {
                    heap.push(Reverse((r, pos as u32)));
                }
            }
            let before = prev[pos];
            if before != NONE {
                if let Some((r, _)) = self.merge_of(syms[before as usize], merged) {
                    heap.push(Reverse((r, before)));
                }
            }
        }
        collect_linked(&syms, &next, out);
    }
}

/// Ids held inline in a [`PieceCache`] entry; longer encodings go to its arena.
const INLINE: usize = 3;

/// A cached encoding: `n` ids, in `ids` if `n <= INLINE`, else at `arena[ids[0]..][..n]`.
/// With its key, one 32-byte table slot.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cached {
    n: u32,
    ids: [u32; INLINE],
}

/// Encodings of pieces (whole tokens too, once seen), remembered by one thread for one
/// tokenizer (see `Bpe::with_cache`): no locks, bounded size, and since it only ever holds
/// exact encodings, results never depend on what was encoded before.
pub struct PieceCache {
    /// Pieces of up to 15 bytes, by packed bytes.
    map: Table<Cached>,
    /// Longer pieces (common in scripts of 2 to 4 bytes a character); their ids are
    /// `arena[at..at + n]`.
    long: FxHashMap<Box<[u8]>, (u32, u32)>,
    /// Ids of cached encodings too long to hold inline.
    arena: Vec<u32>,
    /// Whether a short piece missed `map` in the last block of pieces.
    missed: bool,
}

impl Default for PieceCache {
    fn default() -> Self {
        Self {
            // Room for the pieces of a few hundred kB of text before the table first grows.
            map: Table::with_capacity(1 << 14),
            long: FxHashMap::default(),
            arena: Vec::new(),
            missed: true,
        }
    }
}

impl PieceCache {
    #[cfg(test)]
    pub fn stats(&self) -> String {
        format!(
            "cache {:?}, long {}, arena {}",
            self.map.probe_stats(),
            self.long.len(),
            self.arena.len()
        )
    }

    /// Short pieces remembered (the table grows up to this); later ones are merged each time.
    const CAPACITY: usize = 1 << 18;
    /// Ids held in the arena, and the longest piece remembered.
    const ARENA: usize = 1 << 22;
    const LONGEST: usize = 256;

    /// Remembers the encoding `ids` of a short piece, while there is room.
    #[inline]
    fn insert_short(&mut self, key: Key, ids: &[u32]) {
        if self.map.len() >= Self::CAPACITY {
            return;
        }
        let mut cached = Cached {
            n: ids.len() as u32,
            ids: [0; INLINE],
        };
        if ids.len() <= INLINE {
            cached.ids[..ids.len()].copy_from_slice(ids);
        } else if self.arena.len() + ids.len() <= Self::ARENA {
            cached.ids[0] = self.arena.len() as u32;
            self.arena.extend_from_slice(ids);
        } else {
            return;
        }
        self.map.insert(key, cached);
    }
}

/// How many pieces `encode_pieces` takes at a time.
pub const PIECE_BLOCK: usize = 32;

/// Pieces up to this many bytes use the quadratic scan; longer ones `merge_long`.
const SMALL_PIECE: usize = 128;

/// Appends the symbols of a linked list, from position 0 (which merging never removes).
fn collect_linked(syms: &[u32], next: &[u32], out: &mut Vec<u32>) {
    let mut i = 0u32;
    while i != u32::MAX {
        out.push(syms[i as usize]);
        i = next[i as usize];
    }
}

/// Whether every merge ranks after the merges that made its parts (see `Vocab::monotone`).
fn is_monotone(n_tokens: usize, merges: &[Merge]) -> bool {
    // made_at[t]: the last rank that produces t (+1; 0 for tokens no merge makes).
    let mut made_at = vec![0usize; n_tokens];
    for (rank, m) in merges.iter().enumerate() {
        made_at[m.merged as usize] = rank + 1;
    }
    merges
        .iter()
        .enumerate()
        .all(|(rank, m)| made_at[m.left as usize] <= rank && made_at[m.right as usize] <= rank)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_vocab() -> Vec<Vec<u8>> {
        (0..=255u8).map(|b| vec![b]).collect()
    }

    /// Vocabulary: bytes + "ab" (rank 0), "abab" (rank 1), "aa" (rank 2).
    fn small() -> Vocab {
        let mut tokens = bytes_vocab();
        tokens.push(b"ab".to_vec()); // 256
        tokens.push(b"abab".to_vec()); // 257
        tokens.push(b"aa".to_vec()); // 258
        let (a, b) = (u32::from(b'a'), u32::from(b'b'));
        Vocab::new(tokens, &[(a, b), (256, 256), (a, a)], vec![]).expect("valid")
    }

    #[test]
    fn merges_by_rank_leftmost_first() {
        let v = small();
        let mut out = Vec::new();
        v.merge_piece(b"ababab", &mut out);
        assert_eq!(out, [257, 256]);
        out.clear();
        v.merge_piece(b"aaa", &mut out);
        assert_eq!(out, [258, u32::from(b'a')]);
    }

    #[test]
    fn large_and_small_paths_agree() {
        let v = small();
        let piece: Vec<u8> = b"abaababbaaab".iter().copied().cycle().take(1000).collect();
        for len in [2, 3, 10, 16, 17, 100, 127, 128] {
            let (mut s, mut l) = (Vec::new(), Vec::new());
            v.merge_small::<SMALL_PIECE>(&piece[..len], &mut s);
            v.merge_large(&piece[..len], &mut l);
            assert_eq!(s, l, "length {len}");
            let mut r = Vec::new();
            v.merge_by_rank(&piece[..len], &mut r);
            assert_eq!(s, r, "length {len}");
        }
    }

    #[test]
    fn non_monotone_vocabularies_merge_correctly() {
        // (ab, c) ranks before (a, b), which makes "ab": merging (a, b) creates a pair of
        // lower rank, so long pieces must take the heap, not the rank-by-rank pass.
        let mut tokens = bytes_vocab();
        tokens.push(b"ab".to_vec()); // 256
        tokens.push(b"abc".to_vec()); // 257
        let (a, b, c) = (u32::from(b'a'), u32::from(b'b'), u32::from(b'c'));
        let v = Vocab::new(tokens, &[(256, c), (a, b)], vec![]).expect("valid");
        assert!(!v.monotone);
        assert!(small().monotone);
        let piece: Vec<u8> = b"abcab".iter().copied().cycle().take(1000).collect();
        let (mut short, mut long) = (Vec::new(), Vec::new());
        v.merge_small::<SMALL_PIECE>(&piece[..100], &mut short);
        v.merge_piece(&piece[..100], &mut long);
        assert_eq!(short, long);
        long.clear();
        v.merge_piece(&piece, &mut long);
        assert_eq!(long, [257, 256].repeat(200)); // "abc", "ab", ...
    }

    #[test]
    fn from_ranks_derives_merges() {
        let mut tokens = bytes_vocab();
        tokens.push(b"ab".to_vec());
        tokens.push(b"abab".to_vec());
        let v = Vocab::from_ranks(tokens, vec![]).expect("valid");
        let (a, b) = (u32::from(b'a'), u32::from(b'b'));
        assert_eq!(v.merge_of(a, b), Some((0, 256)));
        assert_eq!(v.merge_of(256, 256), Some((1, 257)));
    }

    #[test]
    fn rejects_inconsistent_vocabularies() {
        let mut tokens = bytes_vocab();
        tokens.push(b"ab".to_vec());
        assert!(Vocab::new(tokens.clone(), &[(1, 2)], vec![]).is_err());
        assert!(Vocab::new(tokens.clone(), &[(999, 2)], vec![]).is_err());
        assert!(Vocab::new(tokens.clone(), &[], vec![("<s>".into(), 300)]).is_err());
        let mut missing = tokens.clone();
        missing[7] = b"zz".to_vec();
        assert!(Vocab::new(missing, &[], vec![]).is_err());
        let mut dup = tokens;
        dup.push(b"ab".to_vec());
        assert!(Vocab::new(dup, &[], vec![]).is_err());
    }
}
