//! The BPE vocabulary: token bytes, the ranked merges, and special tokens.
//!
//! Ids are contiguous, `0..len`. Every byte value has a single-byte token (byte-level BPE can
//! encode any input), but ids need not equal byte values: an imported GPT-2 vocabulary numbers
//! its bytes in its own order. A merge `(left, right) -> merged` has a rank, its position in the
//! merge list; encoding applies merges by rank. Two merges may produce the same bytes (HF
//! tokenizers' trainer allows it); they then share one id.

use std::sync::atomic::{AtomicU8, Ordering};

use rustc_hash::FxHashMap;

use super::table::{key_at, key_of, long_hash, Key, LongTable, Table};

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
    /// The merges of two byte tokens, by their bytes `(a << 8) | b`: `rank << 32 | merged`, or
    /// [`NO_PAIR`]. Every first step of merging an ASCII piece looks up pairs of bytes, and this
    /// table (512 KiB) stays in cache where `merge_map` does not.
    byte_pairs: Vec<u64>,
    /// Bytes of every non-special token -> id.
    token_ids: FxHashMap<Vec<u8>, u32>,
    /// (content, id), sorted by id.
    specials: Vec<(String, u32)>,
    /// Tokens that BPE encodes as themselves (true of every token a BPE trainer makes, not
    /// always of imported vocabularies), so that a piece found among them skips merging.
    /// Computed on first use.
    whole: std::sync::OnceLock<WholeTokens>,
    /// The characters that merging may start from whole (see [`Atoms`]). Computed on first use,
    /// never while `from_ranks` is still adding merges (it merges bytes only).
    atoms: std::sync::OnceLock<Atoms>,
    /// All token bytes back to back, then `DECODE_PAD` zero bytes, and where each token starts
    /// (`offsets[id]..offsets[id + 1]`): decoding reads one flat table, not a `Vec` per token.
    flat: Vec<u8>,
    offsets: Vec<usize>,
    /// Every merge ranks after the merges that made its two parts, so a merge never creates a
    /// pair of lower rank than itself. True of every vocabulary a BPE trainer makes; it lets long
    /// pieces be merged rank by rank in linear time (`merge_by_rank`).
    monotone: bool,
}

/// The tokens that encode as themselves, by their bytes: short ones (up to 15 bytes) in a map
/// keyed by their packed bytes, which needs no pointer chasing to compare keys; longer ones by
/// hash.
#[derive(Debug, Default)]
struct WholeTokens {
    short: Table<u32>,
    long: LongTable<u32>,
    /// `None`: every token in the tables is whole. Else every regular token is in them, and
    /// whether it is whole is learnt the first time a piece is one (by merging it, which the
    /// piece needs anyway): per id, [`UNKNOWN`], [`WHOLE`] or [`NOT_WHOLE`]. Threads that learn
    /// the same token at once learn the same thing.
    learnt: Option<Box<[AtomicU8]>>,
}

const UNKNOWN: u8 = 0;
const WHOLE: u8 = 1;
const NOT_WHOLE: u8 = 2;

impl Clone for WholeTokens {
    fn clone(&self) -> Self {
        Self {
            short: self.short.clone(),
            long: self.long.clone(),
            learnt: self.learnt.as_ref().map(|l| {
                l.iter()
                    .map(|s| AtomicU8::new(s.load(Ordering::Relaxed)))
                    .collect()
            }),
        }
    }
}

impl WholeTokens {
    /// Whether token `id`, found in the tables, is whole (`None`: not known yet).
    #[inline(always)]
    fn known(&self, id: u32) -> Option<bool> {
        match &self.learnt {
            None => Some(true),
            Some(learnt) => match learnt[id as usize].load(Ordering::Relaxed) {
                WHOLE => Some(true),
                NOT_WHOLE => Some(false),
                _ => None,
            },
        }
    }

    fn learn(&self, id: u32, whole: bool) {
        if let Some(learnt) = &self.learnt {
            learnt[id as usize].store(if whole { WHOLE } else { NOT_WHOLE }, Ordering::Relaxed);
        }
    }
}

/// Vocabularies of up to this many tokens find their whole tokens all at once, on first use (a
/// few ms on all cores); larger ones learn each as pieces meet it, so that the first encode
/// after loading o200k from a saved file does not merge 200k tokens first (about 130 ms on two
/// cores).
const EAGER_WHOLE: usize = 1 << 16;

/// The characters that merging may start from whole: *atoms*. Most first-seen pieces of
/// non-Latin text are runs of 2- to 4-byte characters, and merging them from bytes spends most
/// of its steps rebuilding those characters; starting from atoms skips these steps.
///
/// A token `c` whose bytes are exactly one multi-byte UTF-8 character is an atom when:
///
/// 1. BPE over the bytes of `c` alone gives `[c]`; let `R` be the highest rank among the merges
///    it applies;
/// 2. every merge that has `c` as an operand (left or right) ranks above `R`.
///
/// An occurrence of `c` in a piece (a span `[s, s + k)` holding its bytes, at a whole, valid
/// character of the piece) starts whole when moreover:
///
/// 3. no merge of rank `<= R` could join a part of `c` with the bytes around it: none is
///    `(x, p)` with `p` a proper prefix of `c` and the bytes of `x` just before `s`, and none is
///    `(q, y)` with `q` a proper suffix of `c` and the bytes of `y` just after `s + k`. (These
///    merges are few: their results are the tokens that start with continuation bytes or end
///    with an incomplete character. Each atom keeps a list of them, see [`Crossing`].)
///
/// Then starting from the atoms' tokens at any set of such (disjoint) occurrences, and bytes
/// elsewhere, merging as usual gives exactly what merging from bytes gives. Take the run B from
/// bytes, and call an occurrence *unfinished* while B has not yet formed `c` there.
///
/// - While an occurrence is unfinished, a merge that B can apply inside it ranks at most `R`:
///   B's symbols there are a state of BPE over `c`'s bytes alone, which by 1 is not over yet,
///   and its next merge is among those that ranks are counted over.
/// - No symbol of B ever covers part of an occurrence and bytes outside it (this and the point
///   above hold together, by induction over B's steps). The first such symbol would be made by
///   a merge of a symbol inside an unfinished occurrence that touches its edge (a proper prefix
///   or suffix of `c`) with the symbol just outside; by 3 that merge ranks above `R`, so while
///   the occurrence is unfinished it is never the lowest pair (the first point), and once it is
///   finished there is no such pair. Hence B's merges inside an
///   unfinished occurrence are exactly those of BPE over `c`'s bytes alone, in the same order
///   (whenever B picks one, it is the lowest pair there, leftmost on ties), and since B stops
///   only when no pair has a merge, by 1 every occurrence ends as `c`.
/// - Let A be the run from atoms, and project each state of B onto A's symbols by collapsing
///   every unfinished occurrence to `c`. Steps of B inside occurrences leave the projection
///   unchanged. Every other step of B merges a pair that A has too, at the same relative
///   position, and its rank is at most `R` of every unfinished occurrence (B picks the lowest
///   pair, and each unfinished occurrence has one of rank `<= R`). The pairs that A has and B
///   has not all have the atom of an unfinished occurrence as an operand, so by 2 rank above its
///   `R`. So A picks the same merge. When B stops, every occurrence is finished, the projection
///   is B's state, and A has no pair left either: A's steps are B's steps outside occurrences,
///   and the results agree.
///
/// Nothing here needs a monotone vocabulary. For a monotone one, A's merges are a subsequence
/// of B's, whose ranks never decrease, so `merge_by_rank` stays exact from atoms too. Pieces are
/// scanned for whole, valid UTF-8 characters (no overlong forms or surrogates, which could
/// otherwise alias a character's code point); invalid sequences stay bytes.
#[derive(Clone, Debug, Default)]
struct Atoms {
    /// Atoms by code point, two levels: `entries[blocks[cp >> 8] << 8 | (cp & 0xff)]`, where
    /// block 0 holds no atoms (`id == NO_ATOM`).
    blocks: Vec<u16>,
    entries: Vec<AtomEntry>,
    /// The merges that condition 3 checks, `AtomEntry::crossing` indexes them.
    crossing: Vec<Crossing>,
    /// The bytes of their operands outside the atom, back to back.
    context: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
struct AtomEntry {
    id: u32,
    /// `start << 8 | count`: the atom's merges `crossing[start..start + count]`.
    crossing: u32,
}

const NO_ATOM: u32 = u32::MAX;
const NOT_AN_ATOM: AtomEntry = AtomEntry {
    id: NO_ATOM,
    crossing: 0,
};

/// A merge that could join a part of an atom with the bytes `context[start..end]` just before
/// (`before`) or after it, which rules out starting from the atom there.
#[derive(Clone, Copy, Debug)]
struct Crossing {
    before: bool,
    start: u32,
    end: u32,
}

impl Atoms {
    fn is_empty(&self) -> bool {
        self.entries.len() <= 256
    }

    /// The atoms of `vocab`, which must have all its merges.
    fn build(vocab: &Vocab) -> Self {
        let mut atoms = Self {
            blocks: vec![0; 0x110000 >> 8],
            entries: vec![NOT_AN_ATOM; 256],
            crossing: Vec::new(),
            context: Vec::new(),
        };
        if vocab.tokens.len() > (1 << 24) {
            return atoms; // (`context` offsets are u32; such vocabularies are not real)
        }
        // Each token's bytes from the flat table, read in order (not through a `Vec` per
        // token: o200k's 200k of them were most of this function's time). Per token: whether
        // it could be a proper prefix of a character (a lead byte, then continuation bytes),
        // or a proper suffix (continuation bytes only), and whether it is one whole character.
        const PREFIX: u8 = 1;
        const SUFFIX: u8 = 2;
        let cont = |b: &u8| b & 0xc0 == 0x80;
        let n = vocab.tokens.len();
        let mut kind = vec![0u8; n];
        let mut chars: Vec<(u32, u32)> = Vec::new();
        for (id, k) in kind.iter_mut().enumerate() {
            let bytes = &vocab.flat[vocab.offsets[id]..vocab.offsets[id + 1]];
            match bytes {
                [] => {}
                [lead, rest @ ..] if bytes.len() <= 3 && *lead >= 0xc0 && rest.iter().all(cont) => {
                    *k = PREFIX;
                }
                _ if bytes.len() <= 3 && bytes.iter().all(cont) => *k = SUFFIX,
                _ => {}
            }
            if bytes.len() >= 2 && bytes[0] >= 0xc2 {
                // One character, and the token that its bytes name (not a special token).
                if let Some(cp) = single_char(bytes) {
                    if vocab.token_ids.get(bytes) == Some(&(id as u32)) {
                        chars.push((cp, id as u32));
                    }
                }
            }
        }
        // Condition 2: the lowest rank of a merge with each token as an operand. Condition 3:
        // the merges whose right operand could be a proper prefix of a character, by that
        // operand, and those whose left operand could be a proper suffix: (rank, the other
        // operand).
        let mut first_use = vec![u32::MAX; n];
        let mut joins_before: FxHashMap<u32, Vec<(u32, u32)>> = FxHashMap::default();
        let mut joins_after: FxHashMap<u32, Vec<(u32, u32)>> = FxHashMap::default();
        for (rank, m) in vocab.merges.iter().enumerate() {
            let rank = rank as u32;
            for t in [m.left, m.right] {
                let r = &mut first_use[t as usize];
                *r = (*r).min(rank);
            }
            if kind[m.right as usize] == PREFIX {
                joins_before
                    .entry(m.right)
                    .or_default()
                    .push((rank, m.left));
            }
            if kind[m.left as usize] == SUFFIX {
                joins_after.entry(m.left).or_default().push((rank, m.right));
            }
        }
        chars.sort_unstable();
        for (cp, id) in chars {
            let bytes = &vocab.tokens[id as usize];
            // Conditions 1 and 2.
            let Some(max_rank) = vocab.max_rank_forming(bytes, id) else {
                continue;
            };
            if first_use[id as usize] <= max_rank {
                continue;
            }
            // Condition 3: the merges of rank <= R that join a part of the character with what
            // is around it.
            let start = atoms.crossing.len();
            for k in 1..bytes.len() {
                let sides = [
                    (true, &bytes[..k], &joins_before),
                    (false, &bytes[k..], &joins_after),
                ];
                for (before, part, joins) in sides {
                    let Some(part) = vocab.token_id(part) else {
                        continue;
                    };
                    for &(rank, other) in joins.get(&part).into_iter().flatten() {
                        if rank <= max_rank {
                            let other = &vocab.tokens[other as usize];
                            atoms.crossing.push(Crossing {
                                before,
                                start: atoms.context.len() as u32,
                                end: (atoms.context.len() + other.len()) as u32,
                            });
                            atoms.context.extend_from_slice(other);
                        }
                    }
                }
            }
            let count = atoms.crossing.len() - start;
            if count > 255 || atoms.context.len() > u32::MAX as usize {
                atoms.crossing.truncate(start);
                continue;
            }
            let block = &mut atoms.blocks[cp as usize >> 8];
            if *block == 0 {
                *block = (atoms.entries.len() >> 8) as u16;
                atoms.entries.resize(atoms.entries.len() + 256, NOT_AN_ATOM);
            }
            atoms.entries[(*block as usize) << 8 | (cp as usize & 0xff)] = AtomEntry {
                id,
                crossing: (start as u32) << 8 | count as u32,
            };
        }
        atoms
    }

    #[inline(always)]
    fn get(&self, cp: u32) -> AtomEntry {
        self.entries[(self.blocks[cp as usize >> 8] as usize) << 8 | (cp as usize & 0xff)]
    }

    /// Whether the atom `entry` may start whole between `before` and `after` (condition 3).
    #[inline]
    fn fits(&self, entry: AtomEntry, before: &[u8], after: &[u8]) -> bool {
        let start = (entry.crossing >> 8) as usize;
        let count = (entry.crossing & 0xff) as usize;
        self.crossing[start..start + count].iter().all(|c| {
            let bytes = &self.context[c.start as usize..c.end as usize];
            if c.before {
                !before.ends_with(bytes)
            } else {
                !after.starts_with(bytes)
            }
        })
    }

    /// Writes the start symbols of `piece` into `syms` (at least `piece.len()` long): the atom
    /// of each whole valid character that is one and fits there, byte tokens elsewhere. Returns
    /// their number.
    #[inline]
    fn split(&self, piece: &[u8], byte_ids: &[u32; 256], syms: &mut [u32]) -> usize {
        let (mut i, mut n) = (0, 0);
        while i < piece.len() {
            let b = piece[i];
            if b >= 0xc2 {
                if let Some((cp, len)) = decode_char(&piece[i..]) {
                    let entry = self.get(cp);
                    if entry.id != NO_ATOM
                        && (entry.crossing & 0xff == 0
                            || self.fits(entry, &piece[..i], &piece[i + len..]))
                    {
                        syms[n] = entry.id;
                        n += 1;
                        i += len;
                        continue;
                    }
                }
            }
            syms[n] = byte_ids[b as usize];
            n += 1;
            i += 1;
        }
        n
    }
}

/// The code point of `bytes` if they are exactly one multi-byte UTF-8 character.
fn single_char(bytes: &[u8]) -> Option<u32> {
    if bytes.len() < 2 {
        return None;
    }
    let mut chars = std::str::from_utf8(bytes).ok()?.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Some(c as u32),
        _ => None,
    }
}

/// The valid multi-byte UTF-8 character at the start of `b` (whose first byte is at least
/// 0xc2): its code point and length. Overlong forms, surrogates and code points past U+10FFFF
/// are not characters.
#[inline(always)]
fn decode_char(b: &[u8]) -> Option<(u32, usize)> {
    let cont = |i: usize| match b.get(i) {
        Some(&c) if c & 0xc0 == 0x80 => Some(u32::from(c & 0x3f)),
        _ => None,
    };
    let b0 = u32::from(b[0]);
    if b0 < 0xc2 {
        None
    } else if b0 < 0xe0 {
        Some(((b0 & 0x1f) << 6 | cont(1)?, 2))
    } else if b0 < 0xf0 {
        let cp = (b0 & 0x0f) << 12 | cont(1)? << 6 | cont(2)?;
        (cp >= 0x800 && !(0xd800..0xe000).contains(&cp)).then_some((cp, 3))
    } else if b0 < 0xf5 {
        let cp = (b0 & 0x07) << 18 | cont(1)? << 12 | cont(2)? << 6 | cont(3)?;
        (0x10000..0x110000).contains(&cp).then_some((cp, 4))
    } else {
        None
    }
}

/// The most ids an import may leave without a token beyond the number of tokens it gives: more
/// means a corrupt id rather than a sparse vocabulary.
const MAX_EXTRA_RESERVED: usize = 1 << 16;

/// The number of ids of an imported vocabulary that gives `given` tokens, whose largest id is
/// `top`; what is wrong with it otherwise.
pub(crate) fn import_ids(top: Option<u64>, given: usize) -> std::result::Result<usize, String> {
    let n = top.map_or(0, |t| t.saturating_add(1));
    if n > u64::from(u32::MAX) {
        return Err(format!("token id {} is not below 2^32", n - 1));
    }
    if n as usize > given + MAX_EXTRA_RESERVED {
        return Err(format!(
            "token ids run to {}, but there are only {given} tokens",
            n - 1
        ));
    }
    Ok(n as usize)
}

/// An imported vocabulary's tokens by id, where the ids that the import left without a token
/// become special tokens `<|reserved_{id}|>` (added to `specials`), so that ids keep their
/// meaning; and those ids.
pub(crate) fn fill_reserved(
    tokens: Vec<Option<Vec<u8>>>,
    specials: &mut Vec<(String, u32)>,
) -> (Vec<Vec<u8>>, Vec<u32>) {
    let mut reserved = Vec::new();
    let tokens = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                let name = format!("<|reserved_{i}|>");
                specials.push((name.clone(), i as u32));
                reserved.push(i as u32);
                name.into_bytes()
            })
        })
        .collect();
    (tokens, reserved)
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
        let mut byte_pairs = vec![NO_PAIR; 1 << 16];
        let mut merge_map = FxHashMap::default();
        merge_map.reserve(merges.len());
        // Each merge's id, found by its joined bytes: lookups that mostly miss the cache, so on
        // all cores, in chunks (o200k's `Vocab::new`: 184-204 ms on one core, 165-183 so).
        let chunks: Vec<(usize, &[(u32, u32)])> = merges
            .chunks(4096)
            .enumerate()
            .map(|(i, c)| (i * 4096, c))
            .collect();
        let merged_ids = crate::par::map(&chunks, 0, |&(first, chunk)| {
            let mut joined = Vec::new();
            let mut ids = Vec::with_capacity(chunk.len());
            for (rank, &(left, right)) in (first..).zip(chunk) {
                let (l, r) = (left as usize, right as usize);
                if l >= n || r >= n || is_special[l] || is_special[r] {
                    return Err(Error::Corrupt(format!(
                        "merge {rank} ({left}, {right}) names an id that is not a regular token"
                    )));
                }
                joined.clear();
                joined.extend_from_slice(&tokens[l]);
                joined.extend_from_slice(&tokens[r]);
                let Some(&merged) = token_ids.get(&joined) else {
                    return Err(Error::Corrupt(format!(
                        "merge {rank} ({left}, {right}) makes {:?}, which is not in the vocabulary",
                        String::from_utf8_lossy(&joined)
                    )));
                };
                ids.push(merged);
            }
            Ok(ids)
        });
        // (The first chunk in error has the first merge in error.)
        let merged_ids = merged_ids.into_iter().collect::<Result<Vec<_>>>()?;
        for (rank, (&(left, right), &merged)) in
            merges.iter().zip(merged_ids.iter().flatten()).enumerate()
        {
            if merge_map
                .insert((left, right), (rank as u32, merged))
                .is_some()
            {
                return Err(Error::Corrupt(format!(
                    "merge ({left}, {right}) appears twice"
                )));
            }
            set_byte_pair(&mut byte_pairs, &tokens, left, right, rank as u32, merged);
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
            byte_pairs,
            token_ids,
            specials,
            whole: std::sync::OnceLock::new(),
            atoms: std::sync::OnceLock::new(),
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
        // Tokens are derived by length, shortest first, each length on all cores: a token's
        // merge only ever joins parts of it, made by the merges of shorter tokens. While
        // deriving, a merge's rank is the id it makes (the same order as the final ranks, which
        // count only the tokens that get a merge). The merges of shorter tokens of higher id
        // than the token are in the table too, where in rank order they were not yet; merging
        // with them can only end at two parts that contain a longer token of higher id (see
        // `derived_merge`), and such an ending is not taken as the token's merge.
        let mut vocab = Self::new(tokens, &[], specials)?;
        // (`merge_by_rank` reads `merges` by rank, which is not built until the end.)
        vocab.monotone = false;
        let mut by_length: Vec<Vec<u32>> = Vec::new();
        for (id, t) in vocab.tokens.iter().enumerate() {
            if t.len() >= 2 && !vocab.is_special(id as u32) {
                if by_length.len() <= t.len() {
                    by_length.resize(t.len() + 1, Vec::new());
                }
                by_length[t.len()].push(id as u32);
            }
        }
        let mut found: Vec<(u32, u32, u32)> = Vec::new();
        for ids in by_length.iter().filter(|ids| !ids.is_empty()) {
            let chunks: Vec<&[u32]> = ids.chunks(2048).collect();
            let derived = crate::par::map(&chunks, 0, |chunk| {
                let mut scratch = Vec::with_capacity(64);
                chunk
                    .iter()
                    .filter_map(|&id| vocab.derived_merge(id, &mut scratch))
                    .collect::<Vec<_>>()
            });
            for (id, left, right) in derived.into_iter().flatten() {
                vocab.merge_map.insert((left, right), (id, id));
                set_byte_pair(&mut vocab.byte_pairs, &vocab.tokens, left, right, id, id);
                found.push((id, left, right));
            }
        }
        // The final ranks: the merges in id order.
        found.sort_unstable();
        let mut rank_of = vec![u32::MAX; vocab.tokens.len()];
        for (rank, &(id, _, _)) in found.iter().enumerate() {
            rank_of[id as usize] = rank as u32;
        }
        for (rank, merged) in vocab.merge_map.values_mut() {
            *rank = rank_of[*merged as usize];
        }
        for p in vocab.byte_pairs.iter_mut().filter(|p| **p != NO_PAIR) {
            let merged = *p as u32;
            *p = u64::from(rank_of[merged as usize]) << 32 | u64::from(merged);
        }
        let mut merged = vec![false; vocab.tokens.len()];
        vocab.merges = found
            .iter()
            .map(|&(id, left, right)| {
                merged[id as usize] = true;
                Merge {
                    left,
                    right,
                    merged: id,
                }
            })
            .collect();
        vocab.monotone = is_monotone(vocab.tokens.len(), &vocab.merges);
        // Nothing derived from the merges may survive from before they were all in place.
        vocab.atoms = std::sync::OnceLock::new();
        // The tokens that encode as themselves, without merging each again: a token with a
        // merge does (BPE over its bytes applies the lower-ranked merges exactly as above, down
        // to its two parts, and then its own merge), and one without does not (no other merge
        // makes its id), but for single bytes. Meanwhile another thread builds the atoms, which
        // the first piece of non-ASCII text would otherwise build inside its call (o200k's: about
        // 10 ms, hidden here behind the table of whole tokens).
        let (whole, atoms) = std::thread::scope(|scope| {
            let atoms = scope.spawn(|| Atoms::build(&vocab));
            let whole = vocab.whole_where(|b, id| b.len() == 1 || merged[id as usize]);
            let atoms = atoms
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
            (whole, atoms)
        });
        vocab.whole = std::sync::OnceLock::from(whole);
        vocab.atoms = std::sync::OnceLock::from(atoms);
        Ok(vocab)
    }

    /// A vocabulary from tiktoken's ranks, `(token bytes, rank)` (ranks become ids), and special
    /// tokens `(content, id)`: [`Vocab::from_ranks`], after [`fill_reserved`] (whose ids are
    /// returned). A rank given twice, or a special token on a rank's id, is `Error::Corrupt`.
    pub fn from_tiktoken(
        ranks: Vec<(Vec<u8>, u32)>,
        mut specials: Vec<(String, u32)>,
    ) -> Result<(Self, Vec<u32>)> {
        let top = (ranks.iter().map(|r| r.1))
            .chain(specials.iter().map(|s| s.1))
            .max()
            .map(u64::from);
        let n = import_ids(top, ranks.len() + specials.len()).map_err(Error::Corrupt)?;
        let mut tokens: Vec<Option<Vec<u8>>> = vec![None; n];
        for (bytes, rank) in ranks {
            if tokens[rank as usize].replace(bytes).is_some() {
                return Err(Error::Corrupt(format!(
                    "rank {rank} is given to two tokens"
                )));
            }
        }
        for (content, id) in &specials {
            if tokens[*id as usize]
                .replace(content.as_bytes().to_vec())
                .is_some()
            {
                return Err(Error::Corrupt(format!(
                    "special token {content:?} reuses id {id}"
                )));
            }
        }
        let (tokens, reserved) = fill_reserved(tokens, &mut specials);
        Ok((Self::from_ranks(tokens, specials)?, reserved))
    }

    /// During [`Vocab::from_ranks`], with the merges of every shorter token in place (ranked by
    /// the ids they make): token `id`'s merge `(id, left, right)`, if it gets one: merging its
    /// bytes with only the merges of lower rank ends at two parts, `left` and `right`.
    ///
    /// This merges with all the merges in place and takes the result unless it holds a token of
    /// two bytes or more with a higher id. That is the same: merging applies the lowest rank
    /// first, so it follows merging with the lower-ranked merges alone until that stops, and
    /// then, if at all, applies higher ranks; a merge of a higher rank makes a token of higher
    /// id, and every later merge that takes it in makes a token of higher id still (each
    /// derived merge's parts of two bytes or more have lower ids than what it makes), so a
    /// part of higher id stays to the end. Nor does merging with the lower-ranked merges stop
    /// at two parts and then go on: a merge of those two would make this token, whose merge is
    /// not in place.
    fn derived_merge(&self, id: u32, scratch: &mut Vec<u32>) -> Option<(u32, u32, u32)> {
        scratch.clear();
        self.merge_bytes(&self.tokens[id as usize], scratch);
        let later = |part: u32| part > id && self.tokens[part as usize].len() >= 2;
        match scratch[..] {
            [left, right] if !later(left) && !later(right) => Some((id, left, right)),
            _ => None,
        }
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

    fn atoms(&self) -> &Atoms {
        self.atoms.get_or_init(|| Atoms::build(self))
    }

    /// If BPE over `bytes` alone (from bytes) gives `[id]`: the highest rank it applies.
    /// `bytes` is one character (2 to 4 bytes), merged as `merge_small` merges: nothing is
    /// allocated, and the first pairs come from the small table of byte pairs.
    fn max_rank_forming(&self, bytes: &[u8], id: u32) -> Option<u32> {
        assert!((2..=4).contains(&bytes.len()), "one multi-byte character");
        let (syms, len, max_rank) = self.merged_small::<4>(bytes, None);
        (syms[..len] == [id]).then_some(max_rank)
    }

    fn whole_tokens(&self) -> &WholeTokens {
        self.whole.get_or_init(|| {
            if self.token_ids.len() > EAGER_WHOLE {
                return self.whole_learnt();
            }
            // Every token merged, on all cores (o200k's 200k tokens: about 150 ms on one).
            let tokens: Vec<(&[u8], u32)> =
                self.token_ids.iter().map(|(b, &id)| (&b[..], id)).collect();
            let chunks: Vec<&[(&[u8], u32)]> = tokens.chunks(4096).collect();
            let found = crate::par::map(&chunks, 0, |chunk| {
                let mut scratch = Vec::with_capacity(64);
                chunk
                    .iter()
                    .filter(|&&(bytes, id)| {
                        scratch.clear();
                        self.merge_piece(bytes, &mut scratch);
                        scratch == [id]
                    })
                    .map(|&(_, id)| id)
                    .collect::<Vec<u32>>()
            });
            let mut whole = vec![false; self.tokens.len()];
            for id in found.into_iter().flatten() {
                whole[id as usize] = true;
            }
            self.whole_where(|_, id| whole[id as usize])
        })
    }

    /// The tables of all regular tokens, each to be learnt whole or not on first use.
    fn whole_learnt(&self) -> WholeTokens {
        let mut whole = self.whole_where(|_, _| true);
        whole.learnt = Some(
            (0..self.tokens.len())
                .map(|_| AtomicU8::new(UNKNOWN))
                .collect(),
        );
        whole
    }

    /// The table of the regular tokens for which `is_whole(bytes, id)`.
    fn whole_where(&self, mut is_whole: impl FnMut(&[u8], u32) -> bool) -> WholeTokens {
        let mut whole = WholeTokens {
            short: Table::with_capacity(self.token_ids.len()),
            long: LongTable::default(),
            learnt: None,
        };
        for (bytes, &id) in &self.token_ids {
            if is_whole(bytes, id) {
                match key_of(bytes) {
                    Some(key) => {
                        whole.short.insert(key, id);
                    }
                    None => whole.long.insert(long_hash(bytes), bytes, id),
                }
            }
        }
        whole
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
        self.encode_pieces_cut(text, spans, &[], out, cache, &mut Vec::new());
    }

    /// [`Vocab::encode_pieces`], noting `out.len()` in `ends` after the first `cuts[i]` pieces
    /// of `spans`, for each `i` (`cuts` ascending): where each document of a batch ends, when
    /// one block of pieces holds several.
    #[inline]
    pub fn encode_pieces_cut(
        &self,
        text: &[u8],
        spans: &[(usize, usize)],
        cuts: &[u8],
        out: &mut Vec<u32>,
        cache: &mut PieceCache,
        ends: &mut Vec<usize>,
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
        let encode = |from: usize, to: usize, out: &mut Vec<u32>, cache: &mut PieceCache| {
            for (key, &(s, e)) in keys[from..to].iter().zip(&spans[from..to]) {
                let piece = &text[s..e];
                if piece.len() == 1 {
                    out.push(self.byte_ids[piece[0] as usize]);
                } else if *key != NO_KEY {
                    self.encode_short(piece, key, out, cache);
                } else {
                    self.encode_long(piece, out, cache);
                }
            }
        };
        let mut from = 0;
        for &cut in cuts {
            let cut = usize::from(cut);
            encode(from, cut, out, cache);
            ends.push(out.len());
            from = cut;
        }
        encode(from, spans.len(), out, cache);
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
                extend_from(out, &cache.arena, at, n);
            }
            return;
        }
        cache.missed = true;
        // The thread's cache takes whole tokens too, so that a piece seen before costs one
        // lookup in one table, whatever it encodes to.
        let whole = self.whole_tokens();
        let start = out.len();
        self.encode_found(whole, whole.short.get(key).copied(), piece, out);
        cache.insert_short(*key, &out[start..]);
    }

    /// Appends the encoding of `piece`, which the whole-token tables gave `found`: that id alone
    /// if the token is known to be whole, else by merging (which settles whether it is, if that
    /// was not known yet).
    #[inline(always)]
    fn encode_found(
        &self,
        whole: &WholeTokens,
        found: Option<u32>,
        piece: &[u8],
        out: &mut Vec<u32>,
    ) {
        match found.map(|id| (id, whole.known(id))) {
            Some((id, Some(true))) => out.push(id),
            Some((id, None)) => {
                let start = out.len();
                self.merge_piece(piece, out);
                whole.learn(id, out[start..] == [id]);
            }
            _ => self.merge_piece(piece, out),
        }
    }

    /// A piece of more than 15 bytes: like `encode_short`, with one hash of the piece for both
    /// tables.
    fn encode_long(&self, piece: &[u8], out: &mut Vec<u32>, cache: &mut PieceCache) {
        let hash = long_hash(piece);
        if let Some((at, n)) = cache.long.get(hash, piece) {
            extend_from(out, &cache.arena, at as usize, n as usize);
            return;
        }
        let start = out.len();
        let whole = self.whole_tokens();
        self.encode_found(whole, whole.long.get(hash, piece), piece, out);
        cache.insert_long(hash, piece, &out[start..]);
    }

    /// Appends the BPE encoding of one piece: start from its bytes and repeatedly apply the
    /// lowest-ranked merge among adjacent pairs, leftmost first on ties.
    ///
    /// A piece with non-ASCII bytes starts from its atoms (whole characters, see `Atoms`)
    /// instead of their bytes, which gives the same result with fewer merge steps.
    pub fn merge_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        if piece.len() < 2 || piece.is_ascii() {
            self.merge_from(piece, None, out);
        } else {
            let atoms = self.atoms();
            self.merge_from(piece, (!atoms.is_empty()).then_some(atoms), out);
        }
    }

    /// `merge_piece` from bytes only: the reference for the atom path, and what `from_ranks`
    /// uses while it is still adding merges.
    pub(crate) fn merge_bytes(&self, piece: &[u8], out: &mut Vec<u32>) {
        self.merge_from(piece, None, out);
    }

    /// `merge_piece`, starting from the atoms of `atoms` (if given) and bytes elsewhere.
    fn merge_from(&self, piece: &[u8], atoms: Option<&Atoms>, out: &mut Vec<u32>) {
        match piece.len() {
            0 => {}
            1 => out.push(self.byte_ids[piece[0] as usize]),
            n if n <= 16 => self.merge_small::<16>(piece, atoms, out),
            n if n <= SMALL_PIECE => self.merge_small::<SMALL_PIECE>(piece, atoms, out),
            n if n < u32::MAX as usize => self.merge_long(piece, atoms, out),
            _ => {
                // Beyond 4 GiB in one piece: merge in 1 GiB windows. Merges never reach across
                // the windows' edges, so this is the only place where the result can differ from
                // exact BPE; no real text has such a piece.
                for window in piece.chunks(1 << 30) {
                    self.merge_long(window, atoms, out);
                }
            }
        }
    }

    /// Quadratic in the piece length, but with tiny constants and no allocation: the right tool
    /// for the short pieces that make up almost all text. `N` bounds the piece length.
    fn merge_small<const N: usize>(&self, piece: &[u8], atoms: Option<&Atoms>, out: &mut Vec<u32>) {
        let (syms, len, _) = self.merged_small::<N>(piece, atoms);
        out.extend_from_slice(&syms[..len]);
    }

    /// `merge_small`'s work: the symbols merging ends at (the first `len`), `len`, and the
    /// highest rank it applied (0 if none).
    #[inline(always)]
    fn merged_small<const N: usize>(
        &self,
        piece: &[u8],
        atoms: Option<&Atoms>,
    ) -> ([u32; N], usize, u32) {
        debug_assert!(piece.len() >= 2 && piece.len() <= N);
        let mut syms = [0u32; N];
        // ranks[i], merged[i]: the merge of the pair (syms[i], syms[i + 1]), if any.
        let mut ranks = [u32::MAX; N];
        let mut merged = [0u32; N];
        let n = match atoms {
            Some(atoms) => atoms.split(piece, &self.byte_ids, &mut syms),
            None => {
                for (s, &b) in syms.iter_mut().zip(piece) {
                    *s = self.byte_ids[b as usize];
                }
                piece.len()
            }
        };
        let pair = |syms: &[u32; N], i: usize| self.merge_of(syms[i], syms[i + 1]);
        if atoms.is_none() {
            // Pairs of bytes: from the small table.
            for (i, w) in piece.windows(2).enumerate() {
                let p = self.byte_pairs[byte_pair_slot(w[0], w[1])];
                ranks[i] = (p >> 32) as u32;
                merged[i] = p as u32;
            }
        } else {
            for i in 0..n - 1 {
                if let Some((r, m)) = pair(&syms, i) {
                    ranks[i] = r;
                    merged[i] = m;
                }
            }
        }
        let (mut len, mut max_rank) = (n, 0);
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
            max_rank = max_rank.max(best);
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
        (syms, len, max_rank)
    }

    /// A piece as a doubly linked list of byte tokens (atoms where `atoms` is given):
    /// `(syms, next, prev)`, `u32::MAX` for none. Positions are u32 (`merge_piece` splits pieces
    /// of 4 GiB and more), which halves the memory of the lists and the heaps.
    fn linked(&self, piece: &[u8], atoms: Option<&Atoms>) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
        let syms: Vec<u32> = match atoms {
            Some(atoms) => {
                let mut syms = vec![0; piece.len()];
                let n = atoms.split(piece, &self.byte_ids, &mut syms);
                syms.truncate(n);
                syms
            }
            None => piece.iter().map(|&b| self.byte_ids[b as usize]).collect(),
        };
        let n = syms.len() as u32;
        let next = (1..=n).map(|i| if i == n { u32::MAX } else { i }).collect();
        let prev = (0..n).map(|i| i.wrapping_sub(1)).collect();
        (syms, next, prev)
    }

    fn merge_long(&self, piece: &[u8], atoms: Option<&Atoms>, out: &mut Vec<u32>) {
        if self.monotone {
            self.merge_by_rank(piece, atoms, out);
        } else {
            self.merge_large(piece, atoms, out);
        }
    }

    /// Linear time for monotone vocabularies: since a merge only ever creates pairs of higher
    /// rank, lowest-rank-first BPE equals applying the merges in rank order, each to all its
    /// occurrences left to right (exactly what training did). Occurrences wait in one bucket per
    /// rank; a small heap holds the ranks that have a bucket.
    ///
    /// Starting from atoms keeps this exact: the argument above holds from any start.
    fn merge_by_rank(&self, piece: &[u8], atoms: Option<&Atoms>, out: &mut Vec<u32>) {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        const NONE: u32 = u32::MAX;
        let (mut syms, mut next, mut prev) = self.linked(piece, atoms);
        let n = syms.len();
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
    fn merge_large(&self, piece: &[u8], atoms: Option<&Atoms>, out: &mut Vec<u32>) {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        const NONE: u32 = u32::MAX;
        let (mut syms, mut next, mut prev) = self.linked(piece, atoms);
        let n = syms.len();
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

/// No merge of two bytes: rank `u32::MAX`, the rank `merge_small` reads as none.
const NO_PAIR: u64 = u64::MAX;

/// Where the merge of bytes `a` and `b` is in `Vocab::byte_pairs`.
#[inline(always)]
fn byte_pair_slot(a: u8, b: u8) -> usize {
    usize::from(a) << 8 | usize::from(b)
}

/// Records in `byte_pairs` the merge `(left, right) -> merged` of rank `rank` if both are byte
/// tokens.
fn set_byte_pair(
    byte_pairs: &mut [u64],
    tokens: &[Vec<u8>],
    left: u32,
    right: u32,
    rank: u32,
    merged: u32,
) {
    if let ([a], [b]) = (&tokens[left as usize][..], &tokens[right as usize][..]) {
        byte_pairs[byte_pair_slot(*a, *b)] = u64::from(rank) << 32 | u64::from(merged);
    }
}

/// Ids held inline in a [`PieceCache`] entry; longer encodings go to its arena.
const INLINE: usize = 3;

/// `out.extend_from_slice(&src[at..at + n])`, where most `n` are small: by one fixed-size copy
/// of eight ids (then the surplus cut off) where `src` has them, which costs no call to
/// memmove.
#[inline(always)]
fn extend_from(out: &mut Vec<u32>, src: &[u32], at: usize, n: usize) {
    const W: usize = 8;
    match src.get(at..at + W) {
        Some(window) if n <= W => {
            let len = out.len();
            let window: &[u32; W] = window.try_into().expect("W ids");
            out.extend_from_slice(window);
            out.truncate(len + n);
        }
        _ => out.extend_from_slice(&src[at..at + n]),
    }
}

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
    long: LongTable<(u32, u32)>,
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
            long: LongTable::default(),
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
    /// The bytes of the long pieces remembered.
    const LONG_BYTES: usize = 1 << 26;

    /// Sizes the table for a text of `bytes` bytes at once (about one new piece per 64
    /// bytes of a large first text), instead of growing it step by step.
    pub fn reserve_for(&mut self, bytes: usize) {
        self.map.reserve((bytes / 64).min(Self::CAPACITY));
        // Long pieces are rarer (one new one per 256 bytes of a first text in scripts of 2 to
        // 3 bytes a character); all of it on huge pages when large.
        self.long.reserve(
            (bytes / 256).min(Self::CAPACITY / 2),
            (bytes / 8).min(Self::LONG_BYTES),
        );
        // Ids of encodings longer than INLINE: one per 7 bytes of a first text in scripts of 2
        // to 3 bytes a character (20 MB of multilingual text: 2.9M ids); reserved on huge
        // pages, only what is written is touched.
        let ids = (bytes / 6).min(Self::ARENA);
        if ids > self.arena.capacity() {
            self.arena.reserve(ids - self.arena.len());
            crate::mem::huge_capacity(&mut self.arena);
        }
    }

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

    /// Remembers the encoding `ids` of a long piece (`hash` is its `long_hash`), while there is
    /// room.
    #[inline]
    fn insert_long(&mut self, hash: u64, piece: &[u8], ids: &[u32]) {
        if piece.len() <= Self::LONGEST
            && self.arena.len() + ids.len() <= Self::ARENA
            && self.long.bytes_held() + piece.len() <= Self::LONG_BYTES
        {
            let at = self.arena.len() as u32;
            self.arena.extend_from_slice(ids);
            self.long.insert(hash, piece, (at, ids.len() as u32));
        }
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
            v.merge_small::<SMALL_PIECE>(&piece[..len], None, &mut s);
            v.merge_large(&piece[..len], None, &mut l);
            assert_eq!(s, l, "length {len}");
            let mut r = Vec::new();
            v.merge_by_rank(&piece[..len], None, &mut r);
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
        v.merge_small::<SMALL_PIECE>(&piece[..100], None, &mut short);
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
        check_byte_pairs(&v);
        check_whole(&v);
    }

    use crate::testing::Rng;

    /// `from_ranks` derives, shortest tokens first and on all cores, exactly the merges of
    /// deriving one token at a time in rank order with the merges found so far (the reference,
    /// here), also where byte tokens have any ids and longer tokens come in any order.
    #[test]
    fn from_ranks_equals_deriving_in_rank_order() {
        let mut rng = Rng(0x5EED_0011);
        for _ in 0..100 {
            let mut tokens = bytes_vocab();
            for _ in 0..30 {
                let len = 2 + rng.below(5);
                let t: Vec<u8> = (0..len).map(|_| b"abc"[rng.below(3)]).collect();
                if !tokens.contains(&t) {
                    tokens.push(t);
                }
            }
            for i in (1..tokens.len()).rev() {
                tokens.swap(i, rng.below(i + 1));
            }
            let mut pairs = Vec::new();
            for t in tokens.iter().filter(|t| t.len() >= 2) {
                let v = Vocab::new(tokens.clone(), &pairs, vec![]).expect("valid");
                let mut out = Vec::new();
                v.merge_bytes(t, &mut out);
                if let [left, right] = out[..] {
                    pairs.push((left, right));
                }
            }
            let reference = Vocab::new(tokens.clone(), &pairs, vec![]).expect("valid");
            let derived = Vocab::from_ranks(tokens, vec![]).expect("valid");
            assert_eq!(derived.merges(), reference.merges());
            assert_eq!(derived.is_monotone(), reference.is_monotone());
            check_byte_pairs(&derived);
            check_whole(&derived);
        }
    }

    /// The table of whole tokens holds exactly the tokens that merging encodes as themselves
    /// (built by merging each, or, for `from_ranks`, from the merges it derived); and so does
    /// the table that learns them on first use (as vocabularies above [`EAGER_WHOLE`] tokens
    /// do), once every token has been encoded.
    fn check_whole(v: &Vocab) {
        let mut lazy = v.clone();
        lazy.whole = std::sync::OnceLock::from(v.whole_learnt());
        for v in [v, &lazy] {
            let whole = v.whole_tokens();
            let (mut out, mut encoded) = (Vec::new(), Vec::new());
            // (Each token is a different piece: none is found in the cache.)
            let mut cache = PieceCache::default();
            for (bytes, &id) in &v.token_ids {
                out.clear();
                v.merge_piece(bytes, &mut out);
                encoded.clear();
                v.encode_piece(bytes, &mut encoded, &mut cache);
                assert_eq!(encoded, out, "{bytes:?}");
                let found = match key_of(bytes) {
                    Some(key) => whole.short.get(&key).copied(),
                    None => whole.long.get(long_hash(bytes), bytes),
                };
                let found = found.filter(|&f| bytes.len() == 1 || whole.known(f) == Some(true));
                assert_eq!(found, (out == [id]).then_some(id), "{bytes:?}");
            }
        }
    }

    /// The table of byte pairs says what `merge_map` says of every pair of byte tokens.
    fn check_byte_pairs(v: &Vocab) {
        let mut merges = 0;
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let p = v.byte_pairs[byte_pair_slot(a, b)];
                let got = (p != NO_PAIR).then_some(((p >> 32) as u32, p as u32));
                assert_eq!(got, v.merge_of(v.byte_id(a), v.byte_id(b)), "{a} {b}");
                merges += usize::from(got.is_some());
            }
        }
        assert!(merges > 0);
    }

    /// The atom of the character `c`, if it is one.
    fn atom_of(v: &Vocab, c: char) -> Option<u32> {
        let id = v.atoms().get(c as u32).id;
        (id != NO_ATOM).then_some(id)
    }

    /// Checks the atom path against merging from bytes on `piece`.
    fn check_piece(v: &Vocab, piece: &[u8]) {
        let (mut got, mut want) = (Vec::new(), Vec::new());
        v.merge_piece(piece, &mut got);
        v.merge_bytes(piece, &mut want);
        assert_eq!(got, want, "piece {piece:02x?}");
    }

    #[test]
    fn atoms_follow_their_conditions() {
        let mut tokens = bytes_vocab();
        let mut id = |t: &[u8]| {
            tokens.push(t.to_vec());
            tokens.len() as u32 - 1
        };
        let e_acute = id("é".as_bytes()); // an atom that fits anywhere
        let zhong2 = id(b"\xe4\xb8");
        let zhong = id("中".as_bytes()); // the same, made in two steps
        let wen2 = id(&"文".as_bytes()[..2]);
        let wen = id("文".as_bytes()); // an atom, but not before "a": (87, a) ranks before it
        let _wen_fragment = id(b"\x87a");
        let zhe = id("ж".as_bytes()); // not an atom: a merge with it ranks before it is made
        let _a_zhe = id("aж".as_bytes());
        let _a_umlaut = id("ä".as_bytes()); // not an atom: merging its bytes does not make it
        let grin = id("😀".as_bytes()); // an atom, but not after "c": (c, f0) ranks before it
        let _c_f0 = id(b"c\xf0");
        let _b_grin = id(b"b\xf0\x9f"); // (b, f09f) ranks after it: no matter
        let f09f = id(b"\xf0\x9f");
        let grin3 = id(b"\xf0\x9f\x98");
        let _ee = id("éé".as_bytes());
        let b = |c: u8| u32::from(c);
        let merges = [
            (b(0xc3), b(0xa9)), // é
            (b(0xe4), b(0xb8)),
            (zhong2, b(0xad)), // 中
            (b(0xe6), b(0x96)),
            (b(0x87), b(b'a')),
            (wen2, b(0x87)), // 文
            (b(b'a'), zhe),  // before ж is made
            (b(0xd0), b(0xb6)),
            (b(b'c'), b(0xf0)),
            (b(0xf0), b(0x9f)),
            (f09f, b(0x98)),
            (grin3, b(0x80)), // 😀
            (b(b'b'), f09f),
            (e_acute, e_acute),
        ];
        let v = Vocab::new(tokens, &merges, vec![]).expect("valid");
        assert_eq!(atom_of(&v, 'é'), Some(e_acute));
        assert_eq!(atom_of(&v, '中'), Some(zhong));
        assert_eq!(atom_of(&v, '文'), Some(wen));
        assert_eq!(atom_of(&v, 'ж'), None);
        assert_eq!(atom_of(&v, 'ä'), None);
        assert_eq!(atom_of(&v, '😀'), Some(grin));
        let starts = |piece: &str| {
            let mut syms = vec![0; piece.len()];
            let n = v.atoms().split(piece.as_bytes(), &v.byte_ids, &mut syms);
            syms.truncate(n);
            syms
        };
        let bytes = |s: &str| s.bytes().map(u32::from).collect::<Vec<_>>();
        assert_eq!(starts("aé中"), [b(b'a'), e_acute, zhong]);
        assert_eq!(starts("文b文"), [wen, b(b'b'), wen]);
        assert_eq!(starts("文a"), bytes("文a"));
        assert_eq!(
            starts("b😀c😀"),
            [b(b'b'), grin, b(b'c')]
                .into_iter()
                .chain(bytes("😀"))
                .collect::<Vec<_>>()
        );
        assert_eq!(starts("жä"), bytes("жä"));
        for piece in [
            "ééé",
            "中é中",
            "a中文ж",
            "aжé",
            "b😀é",
            "c😀😀",
            "文a",
            "文b",
            "\u{e9}\u{301}",
        ] {
            check_piece(&v, piece.as_bytes());
        }
        // Overlong and surrogate forms are not characters, so not atoms: they stay bytes, and
        // the valid character after them is an atom.
        for invalid in [
            &b"\xe0\x83\xa9"[..],
            b"\xf0\x84\xb8\xad",
            b"\xed\xa0\x80",
            b"\xc3",
        ] {
            for atom in ["é", "中"] {
                let piece = [invalid, atom.as_bytes()].concat();
                let n = v.atoms().split(&piece, &v.byte_ids, &mut [0; 16]);
                assert_eq!(n, invalid.len() + 1);
                check_piece(&v, &piece);
            }
        }
    }

    /// Random vocabularies over a small alphabet of characters, ASCII letters and stray or
    /// invalid bytes, with character tokens made at random ranks and a few fragment tokens:
    /// merging from atoms must give what merging from bytes gives, for short and long pieces,
    /// monotone vocabularies or not, and for vocabularies built by `from_ranks`.
    #[test]
    fn atoms_merge_like_bytes_on_random_vocabularies() {
        let chars: Vec<&[u8]> = ["é", "ä", "ж", "ы", "中", "文", "语", "😀", "𝄞"]
            .iter()
            .map(|c| c.as_bytes())
            .collect();
        let mut units: Vec<&[u8]> = chars.clone();
        units.extend([&b"a"[..], b"b", b" "]);
        units.extend([
            &b"\xe4"[..],
            b"\xb8",
            b"\xad",
            b"\xc3",
            b"\x80",
            b"\xff",
            b"\xe4\xb8",
            b"\xe0\x83\xa9",     // overlong é
            b"\xf0\x84\xb8\xad", // overlong 中
            b"\xed\xa0\x80",     // a surrogate
        ]);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let random_text = |rng: &mut Rng, units_max: usize| {
            let n = 1 + rng.below(units_max);
            let mut text = Vec::new();
            for _ in 0..n {
                // Mostly characters, so that atoms have neighbours of their own kind.
                let u = if rng.chance(60) {
                    chars[rng.below(chars.len())]
                } else {
                    units[rng.below(units.len())]
                };
                text.extend_from_slice(u);
            }
            text
        };
        let (mut accepted, mut rejected, mut pieces) = (0, 0, 0);
        for round in 0..300 {
            // Tokens: characters and their parts, words of a few units, some fragments.
            let mut new_tokens: Vec<Vec<u8>> = Vec::new();
            for c in &chars {
                if rng.chance(85) {
                    new_tokens.push(c.to_vec());
                }
                for k in 2..c.len() {
                    if rng.chance(50) {
                        new_tokens.push(c[..k].to_vec());
                    }
                    if rng.chance(30) {
                        new_tokens.push(c[c.len() - k..].to_vec());
                    }
                }
            }
            for _ in 0..rng.below(30) {
                let t = random_text(&mut rng, 3);
                if t.len() <= 10 {
                    new_tokens.push(t);
                }
            }
            for _ in 0..rng.below(4) {
                // A fragment: bytes from anywhere in a random text.
                let t = random_text(&mut rng, 4);
                let s = rng.below(t.len());
                let e = (s + 2 + rng.below(4)).min(t.len());
                if e - s >= 2 {
                    new_tokens.push(t[s..e].to_vec());
                }
            }
            let mut tokens = bytes_vocab();
            for t in new_tokens {
                if !tokens.contains(&t) {
                    tokens.push(t);
                }
            }
            // Merges: for each token, one or two of its splits into two tokens.
            let index: FxHashMap<&[u8], u32> = tokens
                .iter()
                .enumerate()
                .map(|(i, t)| (t.as_slice(), i as u32))
                .collect();
            let mut merges = Vec::new();
            for t in &tokens[256..] {
                let splits: Vec<(u32, u32)> = (1..t.len())
                    .filter_map(|k| Some((*index.get(&t[..k])?, *index.get(&t[k..])?)))
                    .collect();
                for _ in 0..1 + rng.below(2) {
                    if !splits.is_empty() && rng.chance(90) {
                        let m = splits[rng.below(splits.len())];
                        if !merges.contains(&m) {
                            merges.push(m);
                        }
                    }
                }
            }
            // Shuffled (rarely monotone) or by length (mostly monotone).
            if round % 2 == 0 {
                for i in (1..merges.len()).rev() {
                    merges.swap(i, rng.below(i + 1));
                }
            } else {
                let len =
                    |&(l, r): &(u32, u32)| tokens[l as usize].len() + tokens[r as usize].len();
                merges.sort_by_key(len);
            }
            let v = Vocab::new(tokens.clone(), &merges, vec![]).expect("valid");
            // The same tokens as tiktoken-style ranks, in the order of their merges.
            let mut ranked = bytes_vocab();
            for &(l, r) in &merges {
                let mut t = tokens[l as usize].clone();
                t.extend_from_slice(&tokens[r as usize]);
                if !ranked.contains(&t) {
                    ranked.push(t);
                }
            }
            for t in &tokens[256..] {
                if !ranked.contains(t) {
                    ranked.push(t.clone());
                }
            }
            let from_ranks = Vocab::from_ranks(ranked, vec![]).expect("valid");
            for v in [&v, &from_ranks] {
                check_byte_pairs(v);
                check_whole(v);
                for c in &chars {
                    if v.token_id(c).is_some() {
                        let ch = std::str::from_utf8(c).expect("utf-8").chars().next();
                        match atom_of(v, ch.expect("a char")) {
                            Some(_) => accepted += 1,
                            None => rejected += 1,
                        }
                    }
                }
                for i in 0..200 {
                    let text = random_text(&mut rng, if i % 10 == 0 { 80 } else { 12 });
                    check_piece(v, &text);
                    pieces += 1;
                }
            }
        }
        eprintln!("{pieces} pieces; atoms accepted {accepted} times, rejected {rejected}");
        assert!(accepted > 100 && rejected > 100);
    }

    /// Every distinct piece of a multilingual text, o200k's pre-tokenizer and vocabulary:
    /// merging from atoms gives what merging from bytes gives.
    #[test]
    #[ignore = "needs /tmp/o200k.tiktoken and /tmp/perfdata/multi.txt; slow in debug builds"]
    fn atoms_merge_like_bytes_on_o200k() {
        let (Ok(ranks), Ok(text)) = (
            std::fs::read_to_string("/tmp/o200k.tiktoken"),
            std::fs::read_to_string("/tmp/perfdata/multi.txt"),
        ) else {
            eprintln!("skipped: /tmp/o200k.tiktoken or /tmp/perfdata/multi.txt is missing");
            return;
        };
        let tokens = crate::bpe::bench::tokens_of_ranks(&ranks);
        let v = Vocab::from_ranks(tokens, vec![]).expect("vocab");
        check_whole(&v);
        let atoms = v.atoms();
        let n_atoms = atoms.entries.iter().filter(|e| e.id != NO_ATOM).count();
        let clean = atoms
            .entries
            .iter()
            .filter(|e| e.id != NO_ATOM && e.crossing & 0xff == 0);
        let n_clean = clean.count();
        let chars = v
            .token_ids
            .keys()
            .filter(|t| single_char(t).is_some())
            .count();
        let pre = crate::pretok::PreTokenizer::new("o200k").expect("ok");
        let mut seen: rustc_hash::FxHashSet<&[u8]> = Default::default();
        let (mut pieces, mut non_ascii) = (0usize, 0usize);
        pre.for_each_piece(&text, |s, e| {
            let piece = &text.as_bytes()[s..e];
            pieces += 1;
            if seen.insert(piece) && !piece.is_ascii() {
                non_ascii += 1;
                check_piece(&v, piece);
            }
        })
        .expect("ok");
        eprintln!(
            "{pieces} pieces, {} distinct, {non_ascii} of them non-ASCII, all alike; \
             {n_atoms} atoms ({n_clean} without crossing merges) among {chars} one-character \
             tokens",
            seen.len()
        );
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
