//! StochasTok (Sims et al., "StochasTok: Improving Fine-Grained Subword Understanding in LLMs",
//! 2025): randomly split tokens of an encoded text into smaller tokens, so that a model trained on
//! the result sees inside words. Decoding is unchanged: the parts of a split spell the token.
//!
//! **The split table.** For every token, every 2-way split whose halves are both tokens (not
//! only the merge that made it). Special tokens never split and are never parts. A multi-byte
//! token with no 2-way split (possible in vocabularies that are not BPE's: ByteSpan, Unigram,
//! imported ones) gets one *fallback* split instead: its longest proper prefix that is a token,
//! then the rest encoded the same way (longest token prefix first), down to single bytes; if
//! some byte of it is not a token, it cannot be split. Stored in CSR form: token -> range of
//! splits, split -> range of part ids.
//!
//! **Expansion, the reference semantics** (`stochastok_processor.py`): `floor(p * n)` attempts
//! for a sequence of `n` ids; each attempt picks a position uniformly over the *current*,
//! growing sequence, and if the token there can split, replaces it by one of its splits chosen
//! uniformly (attempts on unsplittable tokens are wasted, so the realised rate is below `p`);
//! optionally at most `max_splits` successes. Here it runs in O(n + attempts * log n) and never
//! moves the sequence: a Fenwick tree over the original positions counts the pieces each one has
//! become, so a uniform position in the current sequence is a uniform draw over that tree; only
//! tokens that were split get a small buffer of pieces. Same distribution as the reference.
//!
//! **The Bernoulli variant**: each token splits with probability `p`, and each part of a split
//! again with probability `p`, recursively.
//!
//! Both take `max_depth` (a piece made by `d` nested splits splits no further once `d` reaches
//! it). Randomness: each sequence gets its own generator, derived from the seed and the
//! sequence's index, so the output never depends on batching or on the thread count.

use crate::error::{Error, Result};

/// For each token, its splits into smaller tokens (see the module documentation).
#[derive(Clone, Debug)]
pub struct SplitTable {
    /// `splits_of[t]..splits_of[t + 1]`: the splits of token `t`.
    splits_of: Vec<u32>,
    /// `parts_of[s]..parts_of[s + 1]`: the part ids of split `s`.
    parts_of: Vec<u32>,
    parts: Vec<u32>,
    /// Tokens whose only split is the fallback one (no 2-way split into tokens).
    fallback: usize,
}

/// What a token is to a vocabulary whose tokens have kinds (ByteSpan's): see
/// [`SplitTable::with_kinds`].
pub const ANY_KIND: u8 = 0;
pub const WORD_INITIAL: u8 = 1;
pub const CONTINUATION: u8 = 2;

impl SplitTable {
    /// Builds the table for tokens given by their bytes (index = id); `special[id]` marks ids
    /// that never split and are never parts.
    pub fn new(tokens: &[&[u8]], special: &[bool]) -> Result<Self> {
        Self::with_kinds(tokens, special, &vec![ANY_KIND; tokens.len()])
    }

    /// [`SplitTable::new`] for a vocabulary whose tokens have kinds (`kinds[id]`:
    /// [`WORD_INITIAL`] or [`CONTINUATION`], as ByteSpan's, or [`ANY_KIND`]): a split's first
    /// part has its token's kind, and the other parts are continuations (ANY_KIND tokens' parts
    /// are ANY_KIND), so that an expansion is a sequence the vocabulary could give.
    pub fn with_kinds(tokens: &[&[u8]], special: &[bool], kinds: &[u8]) -> Result<Self> {
        if special.len() != tokens.len() || kinds.len() != tokens.len() {
            return Err(Error::Config(format!(
                "{} tokens but {} special flags and {} kinds",
                tokens.len(),
                special.len(),
                kinds.len()
            )));
        }
        if let Some(k) = kinds.iter().find(|&&k| k > CONTINUATION) {
            return Err(Error::Config(format!("unknown token kind {k}")));
        }
        let mut ids: rustc_hash::FxHashMap<(u8, &[u8]), u32> = rustc_hash::FxHashMap::default();
        ids.reserve(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            if !special[i] && !t.is_empty() {
                // The first id wins if two tokens of a kind have the same bytes.
                ids.entry((kinds[i], t)).or_insert(i as u32);
            }
        }
        let mut splits_of = Vec::with_capacity(tokens.len() + 1);
        let mut parts_of = vec![0u32];
        let mut parts = Vec::new();
        let mut fallback = 0;
        splits_of.push(0);
        let mut scratch = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            if !special[i] && t.len() >= 2 {
                let (first, rest) = (kinds[i], rest_kind(kinds[i]));
                let before = parts_of.len();
                for j in 1..t.len() {
                    if let (Some(&a), Some(&b)) =
                        (ids.get(&(first, &t[..j])), ids.get(&(rest, &t[j..])))
                    {
                        parts.push(a);
                        parts.push(b);
                        parts_of.push(parts.len() as u32);
                    }
                }
                if parts_of.len() == before && greedy_parts(t, first, &ids, &mut scratch) {
                    parts.extend_from_slice(&scratch);
                    parts_of.push(parts.len() as u32);
                    fallback += 1;
                }
            }
            splits_of.push(parts_of.len() as u32 - 1);
        }
        Ok(Self {
            splits_of,
            parts_of,
            parts,
            fallback,
        })
    }

    /// Ids the table covers.
    pub fn len(&self) -> usize {
        self.splits_of.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many splits token `id` has (0: it cannot split).
    #[inline]
    pub fn split_count(&self, id: u32) -> u32 {
        let i = id as usize;
        self.splits_of[i + 1] - self.splits_of[i]
    }

    /// The parts of split `k` of token `id`.
    #[inline]
    pub fn split(&self, id: u32, k: u32) -> &[u32] {
        let s = (self.splits_of[id as usize] + k) as usize;
        &self.parts[self.parts_of[s] as usize..self.parts_of[s + 1] as usize]
    }

    /// Tokens that can split.
    pub fn splittable(&self) -> usize {
        (0..self.len() as u32)
            .filter(|&t| self.split_count(t) > 0)
            .count()
    }

    /// Tokens whose split is the fallback one.
    pub fn fallback_count(&self) -> usize {
        self.fallback
    }

    /// Splits in all.
    pub fn total_splits(&self) -> usize {
        self.parts_of.len() - 1
    }
}

/// The kind of the parts after a split's first (see [`SplitTable::with_kinds`]).
fn rest_kind(kind: u8) -> u8 {
    if kind == ANY_KIND {
        ANY_KIND
    } else {
        CONTINUATION
    }
}

/// The fallback split: the longest proper token prefix (of kind `first`), then longest token
/// prefixes of the rest (of the kind after it).
fn greedy_parts(
    t: &[u8],
    first: u8,
    ids: &rustc_hash::FxHashMap<(u8, &[u8]), u32>,
    out: &mut Vec<u32>,
) -> bool {
    out.clear();
    let mut at = 0;
    while at < t.len() {
        let (longest, kind) = if at == 0 {
            (t.len() - 1, first)
        } else {
            (t.len() - at, rest_kind(first))
        };
        let Some((n, id)) = (1..=longest)
            .rev()
            .find_map(|n| ids.get(&(kind, &t[at..at + n])).map(|&id| (n, id)))
        else {
            return false;
        };
        out.push(id);
        at += n;
    }
    out.len() >= 2
}

/// How ids are chosen for splitting.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// `floor(p * n)` attempts at uniform positions of the growing sequence (the paper's).
    Reference { max_splits: Option<usize> },
    /// Each token, and each part of a split, splits with probability `p`.
    Bernoulli,
}

/// Expansion options.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub p: f64,
    pub mode: Mode,
    pub max_depth: Option<u8>,
    pub seed: u64,
}

impl Options {
    pub fn check(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.p) {
            return Err(Error::Config(format!(
                "p must be between 0 and 1, got {}",
                self.p
            )));
        }
        Ok(())
    }
}

/// A small, fast, seedable generator (xoshiro256++), seeded through SplitMix64.
#[derive(Clone, Debug)]
pub struct Rng([u64; 4]);

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// The generator of sequence `index` under `seed`.
    pub fn for_sequence(seed: u64, index: u64) -> Self {
        let mut i = index;
        let mut x = seed ^ splitmix(&mut i).rotate_left(17);
        Self([
            splitmix(&mut x),
            splitmix(&mut x),
            splitmix(&mut x),
            splitmix(&mut x),
        ])
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in `0..n` (Lemire's method, unbiased); `n > 0`.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let floor = n.wrapping_neg() % n;
            while (m as u64) < floor {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// True with probability `p` (53-bit resolution).
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < p
    }
}

/// Expands one sequence, appending the result to `out`. Ids outside the table are an error.
pub fn expand_into(
    table: &SplitTable,
    ids: &[u32],
    opts: &Options,
    rng: &mut Rng,
    scratch: &mut Scratch,
    out: &mut Vec<u32>,
) -> Result<()> {
    let n_ids = table.len() as u32;
    if let Some(&bad) = ids.iter().find(|&&id| id >= n_ids) {
        return Err(Error::UnknownId {
            id: u64::from(bad),
            vocab_size: table.len(),
        });
    }
    match opts.mode {
        Mode::Reference { max_splits } => {
            reference(table, ids, opts, max_splits, rng, scratch, out);
        }
        Mode::Bernoulli => {
            let mut stack = Vec::new();
            for &id in ids {
                stack.push((id, 0u8));
                while let Some((t, depth)) = stack.pop() {
                    let count = table.split_count(t);
                    let deep = opts.max_depth.is_some_and(|d| depth >= d);
                    if count == 0 || deep || !rng.chance(opts.p) {
                        out.push(t);
                        continue;
                    }
                    let parts = table.split(t, rng.below(u64::from(count)) as u32);
                    // Push in reverse so that the parts come out in order.
                    stack.extend(parts.iter().rev().map(|&q| (q, depth + 1)));
                }
            }
        }
    }
    Ok(())
}

/// Reusable memory for expanding many sequences: no allocation per sequence or per split.
#[derive(Default)]
pub struct Scratch {
    /// Fenwick tree of piece counts per original position (1-based).
    tree: Vec<u32>,
    /// The first piece node of each original position that was split (`NONE`: untouched).
    head: Vec<u32>,
    /// Pieces of split positions, as singly linked lists.
    nodes: Vec<Node>,
    /// Positions in the tree.
    n: usize,
    /// Positions that were split, in the order they first were.
    touched: Vec<u32>,
}

#[derive(Clone, Copy)]
struct Node {
    id: u32,
    next: u32,
    depth: u8,
}

const NONE: u32 = u32::MAX;

impl Scratch {
    /// Fenwick tree with every count 1, over `n` positions. The tree is padded to a power of
    /// two with counts that no search reaches, so `find` needs no bounds test.
    fn reset(&mut self, n: usize) {
        let size = (n + 1).next_power_of_two().max(2);
        self.tree.clear();
        // With every count 1, node i covers (i - lowbit(i), i]: its sum is lowbit(i).
        self.tree.extend((0..size).map(|i| {
            if i <= n {
                (i & i.wrapping_neg()) as u32
            } else {
                u32::MAX
            }
        }));
        self.touched.clear();
        self.n = n;
        self.head.clear();
        self.head.resize(n, NONE);
        self.nodes.clear();
    }

    fn add(&mut self, i: usize, v: u32) {
        let mut i = i + 1;
        while i <= self.n {
            self.tree[i] += v;
            i += i & i.wrapping_neg();
        }
    }

    /// The position holding the `k`-th piece (from 0), and `k`'s offset inside it.
    fn find(&self, mut k: u32) -> (usize, u32) {
        let mut pos = 0;
        let mut step = self.tree.len() / 2;
        while step > 0 {
            let v = self.tree[pos + step];
            let take = v <= k;
            pos += if take { step } else { 0 };
            k -= if take { v } else { 0 };
            step >>= 1;
        }
        (pos, k)
    }
}

fn reference(
    table: &SplitTable,
    ids: &[u32],
    opts: &Options,
    max_splits: Option<usize>,
    rng: &mut Rng,
    scratch: &mut Scratch,
    out: &mut Vec<u32>,
) {
    let n = ids.len();
    let attempts = (opts.p * n as f64).floor() as usize;
    if attempts == 0 || n == 0 {
        out.extend_from_slice(ids);
        return;
    }
    scratch.reset(n);
    let mut total = n as u64;
    let mut done = 0usize;
    for _ in 0..attempts {
        if max_splits.is_some_and(|m| done >= m) {
            break;
        }
        let (i, k) = scratch.find(rng.below(total) as u32);
        // The piece: the original token, or node k of position i's list.
        let mut at = scratch.head[i];
        let (t, depth) = if at == NONE {
            (ids[i], 0u8)
        } else {
            for _ in 0..k {
                at = scratch.nodes[at as usize].next;
            }
            let node = scratch.nodes[at as usize];
            (node.id, node.depth)
        };
        let count = table.split_count(t);
        if count == 0 || opts.max_depth.is_some_and(|d| depth >= d) {
            continue;
        }
        let parts = table.split(t, rng.below(u64::from(count)) as u32);
        if at == NONE {
            at = scratch.nodes.len() as u32;
            scratch.nodes.push(Node {
                id: t,
                next: NONE,
                depth: 0,
            });
            scratch.head[i] = at;
            scratch.touched.push(i as u32);
        }
        // The node becomes the first part; the others follow it.
        let depth = depth + 1;
        let node = &mut scratch.nodes[at as usize];
        node.id = parts[0];
        node.depth = depth;
        let mut cur = at;
        for &q in &parts[1..] {
            let new = scratch.nodes.len() as u32;
            let next = scratch.nodes[cur as usize].next;
            scratch.nodes.push(Node { id: q, next, depth });
            scratch.nodes[cur as usize].next = new;
            cur = new;
        }
        let grown = parts.len() as u32 - 1;
        scratch.add(i, grown);
        total += u64::from(grown);
        done += 1;
    }
    out.reserve(total as usize);
    scratch.touched.sort_unstable();
    let mut from = 0;
    for &i in &scratch.touched {
        let i = i as usize;
        out.extend_from_slice(&ids[from..i]);
        let mut at = scratch.head[i];
        while at != NONE {
            let node = scratch.nodes[at as usize];
            out.push(node.id);
            at = node.next;
        }
        from = i + 1;
    }
    out.extend_from_slice(&ids[from..]);
}

/// Expands many sequences (`flat[offsets[i]..offsets[i + 1]]`); sequence `i` uses the generator
/// of index `first_index + i`, so results never depend on batching or threads.
pub fn expand_batch(
    table: &SplitTable,
    flat: &[u32],
    offsets: &[usize],
    opts: &Options,
    first_index: u64,
    threads: usize,
) -> Result<(Vec<u32>, Vec<usize>)> {
    opts.check()?;
    if offsets.is_empty() || offsets[0] != 0 || offsets[offsets.len() - 1] != flat.len() {
        return Err(Error::Config(
            "offsets must start at 0 and end at the number of ids".into(),
        ));
    }
    if offsets.windows(2).any(|w| w[0] > w[1]) {
        return Err(Error::Config("offsets must not decrease".into()));
    }
    // Runs of consecutive sequences of about 64k ids: work for threads, one vector each.
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 0..offsets.len() - 1 {
        if offsets[i + 1] - offsets[start] >= 1 << 16 {
            runs.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < offsets.len() - 1 {
        runs.push(start..offsets.len() - 1);
    }
    let parts = crate::par::map(&runs, threads, |run| -> Result<(Vec<u32>, Vec<usize>)> {
        let mut out = Vec::with_capacity(offsets[run.end] - offsets[run.start]);
        let mut lengths = Vec::with_capacity(run.len());
        let mut scratch = Scratch::default();
        for i in run.clone() {
            let before = out.len();
            let mut rng = Rng::for_sequence(opts.seed, first_index + i as u64);
            let ids = &flat[offsets[i]..offsets[i + 1]];
            expand_into(table, ids, opts, &mut rng, &mut scratch, &mut out)?;
            lengths.push(out.len() - before);
        }
        Ok((out, lengths))
    });
    let mut out = Vec::with_capacity(flat.len());
    let mut new_offsets = Vec::with_capacity(offsets.len());
    new_offsets.push(0);
    for part in parts {
        let (ids, lengths) = part?;
        out.extend_from_slice(&ids);
        for len in lengths {
            new_offsets.push(new_offsets[new_offsets.len() - 1] + len);
        }
    }
    Ok((out, new_offsets))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sequence expanded with the generator of sequence 0 under `seed`.
    fn expand(t: &SplitTable, ids: &[u32], opts: &Options, seed: u64) -> Vec<u32> {
        let mut out = Vec::new();
        let mut rng = Rng::for_sequence(seed, 0);
        expand_into(t, ids, opts, &mut rng, &mut Scratch::default(), &mut out).expect("expand");
        out
    }

    fn table(tokens: &[&str]) -> SplitTable {
        let bytes: Vec<&[u8]> = tokens.iter().map(|t| t.as_bytes()).collect();
        SplitTable::new(&bytes, &vec![false; tokens.len()]).expect("table")
    }

    #[test]
    fn kinds_keep_word_initial_parts_first() {
        // ByteSpan's layout: each byte twice (word-initial, then continuation), then tokens.
        let (i, c) = (WORD_INITIAL, CONTINUATION);
        let toks: [(&str, u8); 8] = [
            ("a", i),
            ("b", i),
            ("a", c),
            ("b", c),
            ("ab", c),
            ("ab", i),
            ("ba", c),
            ("bab", c),
        ];
        let bytes: Vec<&[u8]> = toks.iter().map(|t| t.0.as_bytes()).collect();
        let kinds: Vec<u8> = toks.iter().map(|t| t.1).collect();
        let t = SplitTable::with_kinds(&bytes, &[false; 8], &kinds).expect("table");
        assert_eq!(t.split(4, 0), &[2, 3]); // continuation ab = continuation a | continuation b
        assert_eq!(t.split(5, 0), &[0, 3]); // word-initial ab = initial a | continuation b
        assert_eq!(t.split_count(7), 2); // bab = b | ab, ba | b, all continuations
        assert_eq!(t.split(7, 0), &[3, 4]);
        assert_eq!(t.split(7, 1), &[6, 3]);
        // Without kinds, the first of equal bytes wins.
        let any = SplitTable::new(&bytes, &[false; 8]).expect("table");
        assert_eq!(any.split(4, 0), &[0, 1]);
        assert!(SplitTable::with_kinds(&bytes, &[false; 8], &[3; 8]).is_err());
        assert!(SplitTable::with_kinds(&bytes, &[false; 8], &[1; 7]).is_err());
    }

    #[test]
    fn all_two_way_splits() {
        let t = table(&["a", "b", "c", "ab", "bc", "abc"]);
        assert_eq!(t.split_count(5), 2);
        assert_eq!(t.split(5, 0), &[0, 4]); // a | bc
        assert_eq!(t.split(5, 1), &[3, 2]); // ab | c
        assert_eq!(t.split_count(0), 0);
        assert_eq!(t.splittable(), 3);
        assert_eq!(t.fallback_count(), 0);
    }

    #[test]
    fn fallback_when_no_two_way_split() {
        // "abcd" has no 2-way split into tokens: "abc" + "d"? "abc" is not a token here.
        let t = table(&["a", "b", "c", "d", "ab", "abcd"]);
        assert_eq!(t.split_count(5), 1);
        assert_eq!(t.split(5, 0), &[4, 2, 3]); // ab | c | d
        assert_eq!(t.fallback_count(), 1);
        // A byte that is not a token: no split.
        let t = table(&["a", "xyz"]);
        assert_eq!(t.split_count(1), 0);
    }

    #[test]
    fn specials_never_split_nor_part() {
        let bytes: Vec<&[u8]> = vec![b"a", b"b", b"ab", b"<s>", b"<", b"s", b">"];
        let special = [false, false, false, true, false, false, false];
        let t = SplitTable::new(&bytes, &special).expect("table");
        assert_eq!(t.split_count(3), 0);
        assert_eq!(t.split_count(2), 1);
    }

    #[test]
    fn expansion_spells_the_same_bytes() {
        let tokens = ["a", "b", "c", "ab", "bc", "abc", "abcabc"];
        let t = table(&tokens);
        let ids: Vec<u32> = vec![6, 5, 3, 0, 6, 4, 2];
        let spell = |ids: &[u32]| ids.iter().map(|&i| tokens[i as usize]).collect::<String>();
        for mode in [Mode::Reference { max_splits: None }, Mode::Bernoulli] {
            for seed in 0..50 {
                let opts = Options {
                    p: 1.0,
                    mode,
                    max_depth: None,
                    seed,
                };
                let out = expand(&t, &ids, &opts, seed);
                assert_eq!(spell(&out), spell(&ids));
                assert!(out.len() >= ids.len());
            }
        }
    }

    #[test]
    fn depth_and_count_limits() {
        let t = table(&["a", "b", "ab", "abab"]);
        let ids = vec![3u32; 100];
        let opts = Options {
            p: 1.0,
            mode: Mode::Reference {
                max_splits: Some(10),
            },
            max_depth: None,
            seed: 1,
        };
        assert_eq!(expand(&t, &ids, &opts, 1).len(), 110);
        let opts = Options {
            p: 1.0,
            mode: Mode::Bernoulli,
            max_depth: Some(1),
            seed: 1,
        };
        // abab -> ab ab, then no deeper
        assert_eq!(expand(&t, &ids, &opts, 1), [2u32, 2].repeat(100));
    }

    #[test]
    fn batches_do_not_depend_on_threads() {
        let t = table(&["a", "b", "ab", "abab"]);
        let flat: Vec<u32> = (0..200_000).map(|i| [3, 2, 0][i % 3]).collect();
        let offsets: Vec<usize> = (0..=1000).map(|i| i * 200).collect();
        let opts = Options {
            p: 0.3,
            mode: Mode::Reference { max_splits: None },
            max_depth: None,
            seed: 9,
        };
        let one = expand_batch(&t, &flat, &offsets, &opts, 0, 1).expect("expand");
        let three = expand_batch(&t, &flat, &offsets, &opts, 0, 3).expect("expand");
        assert_eq!(one, three);
        // The second half on its own, with its first index: the same ids.
        let half: Vec<usize> = offsets[500..].iter().map(|o| o - offsets[500]).collect();
        let part = expand_batch(&t, &flat[offsets[500]..], &half, &opts, 500, 2).expect("x");
        assert_eq!(part.0[..], one.0[one.1[500]..]);
    }

    #[test]
    fn fenwick_finds_pieces() {
        let mut f = Scratch::default();
        f.reset(5);
        f.add(2, 3); // position 2 now holds 4 pieces
        let found: Vec<(usize, u32)> = (0..8).map(|k| f.find(k)).collect();
        assert_eq!(
            found,
            [
                (0, 0),
                (1, 0),
                (2, 0),
                (2, 1),
                (2, 2),
                (2, 3),
                (3, 0),
                (4, 0)
            ]
        );
    }

    #[test]
    fn bad_input() {
        let t = table(&["a", "b", "ab"]);
        let opts = Options {
            p: 1.5,
            mode: Mode::Bernoulli,
            max_depth: None,
            seed: 0,
        };
        assert!(expand_batch(&t, &[2], &[0, 1], &opts, 0, 1).is_err());
        let opts = Options { p: 0.5, ..opts };
        assert!(expand_batch(&t, &[7], &[0, 1], &opts, 0, 1).is_err());
        assert!(expand_batch(&t, &[2], &[0, 2], &opts, 0, 1).is_err());
        assert_eq!(
            expand_batch(&t, &[], &[0], &opts, 0, 1).expect("empty"),
            (vec![], vec![0])
        );
    }
}
