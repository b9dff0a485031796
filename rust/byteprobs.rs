//! The tokenizer side of exact byte-level probabilities from token LMs (Phan et al. 2024): the
//! vocabulary as a byte trie, and BPE's canonical validity from merge ranks.
//!
//! - [`VocabTrie`]: tokens sorted by their bytes, so that the tokens starting with any string are
//!   one contiguous range of that order, and the tokens that extend it by byte `b` a sub-range.
//!   A next-byte distribution is then a segmented log-sum-exp over a permuted row of the token
//!   LM's output, and the covers of a prefix are walks down the trie.
//! - [`Canonical`]: whether a token sequence is what the tokenizer itself produces, without
//!   re-encoding: the pre-token pieces of its bytes must start and end on token boundaries, and
//!   inside each piece every token must be one BPE builds whole and every adjacent pair one BPE
//!   would not merge across (the pairwise test, exact for vocabularies whose merges rank after
//!   the merges of their parts; others are re-encoded piece by piece).

use crate::bpe::Bpe;
use crate::error::{Error, Result};

/// A node: the tokens starting with its string are `order[start..end]`; of those, the ones equal
/// to it come first (`order[start..here]`).
#[derive(Clone, Copy, Debug, Default)]
pub struct TrieNode {
    pub start: u32,
    pub here: u32,
    pub end: u32,
    first_edge: u32,
    n_edges: u32,
}

#[derive(Clone, Debug)]
pub struct VocabTrie {
    order: Vec<u32>,
    nodes: Vec<TrieNode>,
    /// The children of each node, by byte: `edges[first_edge..first_edge + n_edges]`.
    edges: Vec<(u8, u32)>,
    root_children: Box<[u32; 256]>,
    longest: usize,
}

const NO_NODE: u32 = u32::MAX;

impl VocabTrie {
    /// `tokens[id]`: the token's bytes, or `None` for ids that never appear in covers (special
    /// tokens). Empty tokens are left out too.
    pub fn new(tokens: &[Option<&[u8]>]) -> Result<Self> {
        if tokens.len() >= u32::MAX as usize {
            return Err(Error::Config("too many tokens for a trie".into()));
        }
        let mut order: Vec<u32> = (0..tokens.len() as u32)
            .filter(|&i| tokens[i as usize].is_some_and(|t| !t.is_empty()))
            .collect();
        let bytes = |i: u32| tokens[i as usize].unwrap_or_default();
        order.sort_unstable_by(|&a, &b| bytes(a).cmp(bytes(b)).then(a.cmp(&b)));
        let longest = order.iter().map(|&i| bytes(i).len()).max().unwrap_or(0);
        let mut nodes = vec![TrieNode {
            start: 0,
            here: 0,
            end: order.len() as u32,
            first_edge: 0,
            n_edges: 0,
        }];
        let mut edges = Vec::new();
        let mut depths = vec![0usize];
        // Breadth first: each node's children are created (and their edges stored) together.
        let mut at = 0;
        while at < nodes.len() {
            let depth = depths[at];
            let TrieNode { start, end, .. } = nodes[at];
            let (start, end) = (start as usize, end as usize);
            let mut k = start;
            while k < end && bytes(order[k]).len() == depth {
                k += 1;
            }
            nodes[at].here = k as u32;
            nodes[at].first_edge = edges.len() as u32;
            while k < end {
                let b = bytes(order[k])[depth];
                let mut e = k + 1;
                while e < end && bytes(order[e])[depth] == b {
                    e += 1;
                }
                edges.push((b, nodes.len() as u32));
                nodes.push(TrieNode {
                    start: k as u32,
                    here: k as u32,
                    end: e as u32,
                    first_edge: 0,
                    n_edges: 0,
                });
                depths.push(depth + 1);
                k = e;
            }
            nodes[at].n_edges = edges.len() as u32 - nodes[at].first_edge;
            at += 1;
        }
        let mut root_children = Box::new([NO_NODE; 256]);
        for &(b, child) in &edges[..nodes[0].n_edges as usize] {
            root_children[b as usize] = child;
        }
        Ok(Self {
            order,
            nodes,
            edges,
            root_children,
            longest,
        })
    }

    /// Token ids in trie order (sorted by their bytes).
    pub fn order(&self) -> &[u32] {
        &self.order
    }

    pub fn node(&self, n: u32) -> TrieNode {
        self.nodes[n as usize]
    }

    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// The longest token, in bytes.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// `(byte, child)` for each child of node `n`, by byte.
    pub fn edges(&self, n: u32) -> &[(u8, u32)] {
        let node = &self.nodes[n as usize];
        &self.edges[node.first_edge as usize..(node.first_edge + node.n_edges) as usize]
    }

    #[inline]
    pub fn child(&self, n: u32, b: u8) -> Option<u32> {
        if n == 0 {
            let c = self.root_children[b as usize];
            return (c != NO_NODE).then_some(c);
        }
        let edges = self.edges(n);
        edges
            .binary_search_by_key(&b, |e| e.0)
            .ok()
            .map(|k| edges[k].1)
    }

    /// The node of string `s` (the tokens that start with it), if any token does.
    pub fn walk(&self, s: &[u8]) -> Option<u32> {
        let mut n = 0;
        for &b in s {
            n = self.child(n, b)?;
        }
        Some(n)
    }

    /// `(token, length)` for every token that is a prefix of `s`, shortest first.
    pub fn prefixes_of(&self, s: &[u8]) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        let mut n = 0;
        for (depth, &b) in s.iter().enumerate() {
            match self.child(n, b) {
                Some(c) => n = c,
                None => break,
            }
            let node = self.nodes[n as usize];
            for &t in &self.order[node.start as usize..node.here as usize] {
                out.push((t, depth as u32 + 1));
            }
        }
        out
    }
}

const BYTE: u32 = u32::MAX;

/// BPE's canonical encodings, decided from the merges (see the module notes).
#[derive(Clone, Debug)]
pub struct Canonical {
    bpe: Bpe,
    /// The last merge BPE applies when it encodes the token's bytes alone: `(left, right)`, and
    /// its rank (`BYTE` for single-byte tokens).
    split: Vec<(u32, u32)>,
    rank: Vec<u32>,
    /// BPE encodes the token's bytes as the token itself (never true of special tokens).
    whole: Vec<bool>,
    pairwise: bool,
    /// Tokens that start with a space, are one pre-token piece on their own and encode as
    /// themselves (see `extend_with`); computed on first use.
    solo: std::sync::OnceLock<Vec<bool>>,
}

impl Canonical {
    pub fn new(bpe: &Bpe) -> Self {
        let vocab = bpe.vocab();
        let n = vocab.len();
        let mut split = vec![(BYTE, BYTE); n];
        let mut rank = vec![BYTE; n];
        let mut whole = vec![false; n];
        let mut syms = Vec::new();
        for id in 0..n as u32 {
            if vocab.is_special(id) {
                continue;
            }
            let Some(bytes) = vocab.token_bytes(id) else {
                continue;
            };
            if bytes.is_empty() {
                continue;
            }
            if let Some((result, last)) = trace(bpe, bytes, &mut syms) {
                whole[id as usize] = result == id;
                if let Some((l, r, k)) = last {
                    split[id as usize] = (l, r);
                    rank[id as usize] = k;
                }
            }
        }
        Self {
            bpe: bpe.clone(),
            split,
            rank,
            whole,
            pairwise: vocab.is_monotone(),
            solo: std::sync::OnceLock::new(),
        }
    }

    pub fn bpe(&self) -> &Bpe {
        &self.bpe
    }

    /// Whether BPE encodes `id`'s bytes alone as `id`.
    pub fn is_whole(&self, id: u32) -> bool {
        self.whole.get(id as usize).copied().unwrap_or(false)
    }

    /// Whether BPE, given the bytes of `left` then `right` (two tokens it builds whole) as one
    /// piece, ends with exactly these two tokens: undo the two tokens' merges latest first, and
    /// at every step ask whether the pair across the boundary would have merged before the merge
    /// being undone (on a tie of ranks, the same merge: leftmost first).
    pub fn valid_pair(&self, left: u32, right: u32) -> bool {
        let vocab = self.bpe.vocab();
        let (mut l, mut r) = (left, right);
        // The interval being checked ends with the merge of rank `until`; `right_side` if that
        // merge was on the right (it then loses a tie to the boundary pair, which is leftmost).
        let (mut until, mut right_side) = (u32::MAX, true);
        loop {
            if let Some((rho, _)) = vocab.merge_of(l, r) {
                if rho < until || (rho == until && right_side) {
                    return false;
                }
            }
            let (rl, rr) = (self.rank[l as usize], self.rank[r as usize]);
            if rl == BYTE && rr == BYTE {
                return true;
            }
            // Undo whichever token was made later (on equal ranks, the right one).
            if rr == BYTE || (rl != BYTE && rl > rr) {
                until = rl;
                right_side = false;
                l = self.split[l as usize].1;
            } else {
                until = rr;
                right_side = true;
                r = self.split[r as usize].0;
            }
        }
    }

    /// Whether `ids`, all inside one pre-token piece, are that piece's BPE encoding.
    fn piece_ok(&self, ids: &[u32], scratch: &mut Vec<u8>) -> bool {
        let vocab = self.bpe.vocab();
        if ids.len() == 1 {
            return self.bpe.ignore_merges() || self.is_whole(ids[0]);
        }
        if self.bpe.ignore_merges() || !self.pairwise {
            scratch.clear();
            for &t in ids {
                scratch.extend_from_slice(vocab.token_bytes(t).unwrap_or_default());
            }
            if self.bpe.ignore_merges() && vocab.token_id(scratch).is_some() {
                return false;
            }
            if !self.pairwise {
                let mut out = Vec::with_capacity(ids.len());
                vocab.merge_piece(scratch, &mut out);
                return out == ids;
            }
        }
        ids.iter().all(|&t| self.is_whole(t)) && ids.windows(2).all(|w| self.valid_pair(w[0], w[1]))
    }

    /// Whether `encode_bytes(decode(ids)) == ids`. Ids out of range or special are not.
    pub fn is_canonical(&self, ids: &[u32]) -> bool {
        self.check(ids, false)
    }

    /// Whether `ids`, which decode to a prefix of a longer text, may be the start of that
    /// text's encoding: canonical, or canonical once its last piece, a run of two or more
    /// whitespace characters, is cut before its last character, which is what the patterns'
    /// `\s+(?!\S)` does when the text goes on with something else (`" \n"` alone is one piece;
    /// before `"a"` it is `" "`, `"\n"`).
    pub fn is_viable(&self, ids: &[u32]) -> bool {
        self.check(ids, true)
    }

    fn check(&self, ids: &[u32], viable: bool) -> bool {
        let mut scratch = Scratch::default();
        if !scratch.load(self, ids) {
            return false;
        }
        self.check_loaded(ids, &mut scratch, viable)
    }

    /// `check` of `ids`, whose bytes and token ends are in `scratch`.
    fn check_loaded(&self, ids: &[u32], scratch: &mut Scratch, viable: bool) -> bool {
        let Scratch {
            bytes,
            ends,
            pieces,
            piece,
        } = scratch;
        pieces.clear();
        self.for_each_piece(bytes, |s, e| {
            if s < e {
                pieces.push((s, e));
            }
        });
        if self.pieces_ok(ids, ends, pieces, piece) {
            return true;
        }
        if !viable {
            return false;
        }
        let Some(&(s, e)) = pieces.last() else {
            return false;
        };
        let Ok(run) = std::str::from_utf8(&bytes[s..e]) else {
            return false;
        };
        let Some((cut, _)) = run.char_indices().next_back() else {
            return false;
        };
        if cut == 0 || !run.chars().all(char::is_whitespace) {
            return false;
        }
        pieces.pop();
        pieces.push((s, s + cut));
        pieces.push((s + cut, e));
        self.pieces_ok(ids, ends, pieces, piece)
    }

    /// Whether every piece starts and ends on token boundaries and is encoded canonically.
    fn pieces_ok(
        &self,
        ids: &[u32],
        ends: &[usize],
        pieces: &[(usize, usize)],
        scratch: &mut Vec<u8>,
    ) -> bool {
        let mut tok = 0; // the first token of the current piece
        for &(s, e) in pieces {
            let start = if tok == 0 { 0 } else { ends[tok - 1] };
            if start != s {
                return false;
            }
            let mut last = tok;
            while last < ends.len() && ends[last] < e {
                last += 1;
            }
            if last == ends.len() || ends[last] != e {
                return false;
            }
            if !self.piece_ok(&ids[tok..=last], scratch) {
                return false;
            }
            tok = last + 1;
        }
        tok == ids.len()
    }

    /// The pieces of arbitrary bytes as `Bpe::encode_bytes` cuts them: the valid UTF-8 runs by
    /// the pre-tokenizer, each invalid sequence whole.
    fn for_each_piece(&self, bytes: &[u8], mut f: impl FnMut(usize, usize)) {
        let mut at = 0;
        for chunk in bytes.utf8_chunks() {
            let valid = chunk.valid();
            // A pattern that fails on a valid string cannot happen for the built-in patterns;
            // a custom one that errors leaves the run as one piece.
            if self
                .bpe
                .pre_tokenizer()
                .for_each_piece(valid, |s, e| f(at + s, at + e))
                .is_err()
            {
                f(at, at + valid.len());
            }
            at += valid.len();
            let bad = chunk.invalid().len();
            if bad > 0 {
                f(at, at + bad);
                at += bad;
            }
        }
    }

    /// Where the tail of `ids` that decides the canonicity of its extensions starts: the first
    /// token of the second-to-last piece (appending text re-cuts at most the last piece, whose
    /// start the one-character look-ahead of the piece before it has already seen).
    pub fn tail_start(&self, ids: &[u32]) -> usize {
        let vocab = self.bpe.vocab();
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(ids.len());
        for &t in ids {
            bytes.extend_from_slice(vocab.token_bytes(t).unwrap_or_default());
            ends.push(bytes.len());
        }
        let mut starts = Vec::new();
        self.for_each_piece(&bytes, |s, e| {
            if s < e {
                starts.push(s);
            }
        });
        let cut = if starts.len() >= 2 {
            starts[starts.len() - 2]
        } else {
            0
        };
        // The number of tokens that end at or before the cut.
        ends.partition_point(|&e| e <= cut)
    }

    /// For each candidate, whether `ids + [candidate]` is canonical, given that `ids` is: only
    /// the tail from `tail_start` is checked.
    pub fn extensions(&self, ids: &[u32], candidates: &[u32]) -> Vec<bool> {
        self.extend_with(ids, candidates, false)
    }

    /// `extensions` for states that go on: `is_viable` rather than `is_canonical`.
    pub fn viable_extensions(&self, ids: &[u32], candidates: &[u32]) -> Vec<bool> {
        self.extend_with(ids, candidates, true)
    }

    /// A shortcut for the built-in patterns: after a text ending in a non-whitespace
    /// character, a token starting with a space starts a new pre-token piece and leaves the
    /// pieces before it alone (no alternative of the GPT-2, cl100k or o200k patterns takes a
    /// space after anything but whitespace, and none looks back), so `tail + [t]` is canonical
    /// exactly when `tail` is and `t` alone is one piece encoded as itself.
    fn solo(&self) -> &[bool] {
        self.solo.get_or_init(|| {
            let vocab = self.bpe.vocab();
            (0..vocab.len() as u32)
                .map(|t| {
                    let Some(u) = vocab.token_bytes(t) else {
                        return false;
                    };
                    if vocab.is_special(t) || u.first() != Some(&b' ') {
                        return false;
                    }
                    let mut pieces = 0;
                    self.for_each_piece(u, |s, e| pieces += usize::from(s < e));
                    pieces == 1 && (self.bpe.ignore_merges() || self.is_whole(t))
                })
                .collect()
        })
    }

    /// Whether the shortcut of `solo` applies after `tail`: a built-in pattern, and decoded
    /// bytes that end in a whole non-whitespace character.
    fn ends_in_non_space(&self, tail: &[u32]) -> bool {
        if self.bpe.pre_tokenizer().kind() == crate::pretok::PatternKind::Custom {
            return false;
        }
        let vocab = self.bpe.vocab();
        let mut end = Vec::new();
        for &t in tail.iter().rev() {
            let b = vocab.token_bytes(t).unwrap_or_default();
            let mut joined = b.to_vec();
            joined.extend_from_slice(&end);
            end = joined;
            if end.len() >= 4 {
                break;
            }
        }
        let last = end.utf8_chunks().last().and_then(|c| {
            if c.invalid().is_empty() {
                c.valid().chars().next_back()
            } else {
                None
            }
        });
        last.is_some_and(|c| !c.is_whitespace())
    }

    fn extend_with(&self, ids: &[u32], candidates: &[u32], viable: bool) -> Vec<bool> {
        let tail = &ids[self.tail_start(ids)..];
        let shortcut = !viable && self.ends_in_non_space(tail);
        let (solo, tail_ok) = if shortcut {
            (self.solo(), self.is_canonical(tail))
        } else {
            (&[][..], false)
        };
        let run = |cands: &[u32]| -> Vec<bool> {
            let mut scratch = Scratch::default();
            if !scratch.load(self, tail) {
                return vec![false; cands.len()];
            }
            let (n_bytes, n_ids) = (scratch.bytes.len(), tail.len());
            let mut seq = tail.to_vec();
            let vocab = self.bpe.vocab();
            cands
                .iter()
                .map(|&t| {
                    if shortcut
                        && vocab
                            .token_bytes(t)
                            .is_some_and(|u| u.first() == Some(&b' '))
                        && !vocab.is_special(t)
                    {
                        return tail_ok && solo[t as usize];
                    }
                    seq.truncate(n_ids);
                    scratch.bytes.truncate(n_bytes);
                    scratch.ends.truncate(n_ids);
                    if !scratch.push(self, t) {
                        return false;
                    }
                    seq.push(t);
                    self.check_loaded(&seq, &mut scratch, viable)
                })
                .collect()
        };
        // Every token after a state (a next-byte distribution's first byte) is a long list:
        // two workers, results in input order, the same on any thread count.
        if candidates.len() < 8192 {
            return run(candidates);
        }
        let chunks: Vec<&[u32]> = candidates.chunks(candidates.len().div_ceil(2)).collect();
        crate::par::map(&chunks, 2, |c| run(c)).concat()
    }
}

/// Reusable buffers for checking token sequences: their bytes, where each token ends, the
/// pieces, and a piece's bytes.
#[derive(Default)]
struct Scratch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    pieces: Vec<(usize, usize)>,
    piece: Vec<u8>,
}

impl Scratch {
    fn load(&mut self, canon: &Canonical, ids: &[u32]) -> bool {
        self.bytes.clear();
        self.ends.clear();
        ids.iter().all(|&t| self.push(canon, t))
    }

    /// Appends a token; false for ids out of range or special.
    fn push(&mut self, canon: &Canonical, t: u32) -> bool {
        let vocab = canon.bpe.vocab();
        if (t as usize) >= vocab.len() || vocab.is_special(t) {
            return false;
        }
        self.bytes
            .extend_from_slice(vocab.token_bytes(t).unwrap_or_default());
        self.ends.push(self.bytes.len());
        true
    }
}

/// BPE on one piece, tracing the last merge: the single token it ends with (if it ends with
/// one) and `(left, right, rank)` of the merge that made it. Lowest rank first, leftmost on
/// ties, as `Vocab::merge_piece`.
/// The states of a byte string: token sequences that decode exactly to one of its prefixes,
/// as a tree (state 0 is the empty sequence at position 0; every other state is its parent plus
/// one token). In canonical mode only sequences whose every one-token extension so far was
/// canonical are kept; `tail_len` is then the length of the tail that decides the canonicity of
/// further extensions.
#[derive(Clone, Debug, Default)]
pub struct States {
    pub parent: Vec<u32>,
    pub token: Vec<u32>,
    pub pos: Vec<u32>,
    pub tail_len: Vec<u32>,
    /// The tail of the tokens before the text (state 0's), in canonical mode.
    pub root_tail: Vec<u32>,
}

impl States {
    /// The token sequence of state `s`.
    pub fn sequence(&self, mut s: u32) -> Vec<u32> {
        let mut out = Vec::new();
        while s != 0 {
            out.push(self.token[s as usize]);
            s = self.parent[s as usize];
        }
        out.reverse();
        out
    }

    /// The last `tail_len[s]` tokens of state `s`, reaching into the root's tail (the tokens
    /// before the text, if any) when `s` has fewer of its own.
    fn tail(&self, s: u32) -> Vec<u32> {
        let want = self.tail_len[s as usize] as usize;
        let mut out = Vec::with_capacity(want);
        let mut at = s;
        while out.len() < want && at != 0 {
            out.push(self.token[at as usize]);
            at = self.parent[at as usize];
        }
        let rest = want - out.len();
        out.extend(self.root_tail[self.root_tail.len() - rest..].iter().rev());
        out.reverse();
        out
    }
}

/// Every state at positions `0..=last` of `x` (`canon`: canonical mode). More than
/// `max_states` states is an error: in "all" mode their number grows exponentially with the
/// length of the text (use a beam).
pub fn enumerate_states(
    trie: &VocabTrie,
    canon: Option<&Canonical>,
    x: &[u8],
    last: usize,
    max_states: usize,
) -> Result<States> {
    enumerate_states_after(trie, canon, &[], x, last, max_states)
}

/// `enumerate_states` for a text that follows the tokens `before` (which every state extends;
/// in canonical mode they must be the canonical encoding of what precedes the text, cut at a
/// pre-token boundary). Only their tail is used.
pub fn enumerate_states_after(
    trie: &VocabTrie,
    canon: Option<&Canonical>,
    before: &[u32],
    x: &[u8],
    last: usize,
    max_states: usize,
) -> Result<States> {
    let last = last.min(x.len());
    let root_tail = match canon {
        Some(c) => before[c.tail_start(before)..].to_vec(),
        None => Vec::new(),
    };
    let mut st = States {
        parent: vec![0],
        token: vec![u32::MAX],
        pos: vec![0],
        tail_len: vec![root_tail.len() as u32],
        root_tail,
    };
    let mut at_pos: Vec<Vec<u32>> = vec![Vec::new(); last + 1];
    at_pos[0].push(0);
    let mut seq = Vec::new();
    for i in 0..=last {
        let here_states = std::mem::take(&mut at_pos[i]);
        let mut n = 0;
        for (d, &b) in x[i..last].iter().enumerate() {
            match trie.child(n, b) {
                Some(c) => n = c,
                None => break,
            }
            let node = trie.node(n);
            let p = i + d + 1;
            for &t in &trie.order()[node.start as usize..node.here as usize] {
                for &s in &here_states {
                    let tail_len = match canon {
                        None => 0,
                        Some(c) => {
                            seq.clear();
                            seq.extend(st.tail(s));
                            seq.push(t);
                            if !c.is_viable(&seq) {
                                continue;
                            }
                            (seq.len() - c.tail_start(&seq)) as u32
                        }
                    };
                    if st.parent.len() >= max_states {
                        return Err(Error::Config(format!(
                            "more than {max_states} token sequences decode to prefixes of the \
                             first {p} bytes: mode 'all' counts every tokenization, whose number \
                             grows exponentially with the text; pass a beam"
                        )));
                    }
                    at_pos[p].push(st.parent.len() as u32);
                    st.parent.push(s);
                    st.token.push(t);
                    st.pos.push(p as u32);
                    st.tail_len.push(tail_len);
                }
            }
        }
        at_pos[i] = here_states;
    }
    Ok(st)
}

/// Every cover of `x` (see the module notes), each as its token sequence.
pub fn covers(
    trie: &VocabTrie,
    canon: Option<&Canonical>,
    x: &[u8],
    max_states: usize,
) -> Result<Vec<Vec<u32>>> {
    if x.is_empty() {
        return Ok(vec![Vec::new()]);
    }
    let n = x.len();
    let st = enumerate_states(trie, canon, x, n - 1, max_states)?;
    let mut out = Vec::new();
    let mut seq = Vec::new();
    for s in 0..st.parent.len() as u32 {
        let i = st.pos[s as usize] as usize;
        let Some(node) = trie.walk(&x[i..]) else {
            continue;
        };
        let node = trie.node(node);
        for &t in &trie.order()[node.start as usize..node.end as usize] {
            if let Some(c) = canon {
                seq.clear();
                seq.extend(st.tail(s));
                seq.push(t);
                if !c.is_canonical(&seq) {
                    continue;
                }
            }
            let mut full = st.sequence(s);
            full.push(t);
            out.push(full);
        }
    }
    out.sort();
    Ok(out)
}

/// `(left, right, rank)` of a merge.
type LastMerge = Option<(u32, u32, u32)>;

fn trace(bpe: &Bpe, piece: &[u8], syms: &mut Vec<u32>) -> Option<(u32, LastMerge)> {
    let vocab = bpe.vocab();
    syms.clear();
    syms.extend(piece.iter().map(|&b| vocab.byte_id(b)));
    let mut last = None;
    while syms.len() > 1 {
        let mut best: Option<(u32, u32, usize)> = None;
        for i in 0..syms.len() - 1 {
            if let Some((r, m)) = vocab.merge_of(syms[i], syms[i + 1]) {
                if best.is_none_or(|(br, _, _)| r < br) {
                    best = Some((r, m, i));
                }
            }
        }
        let (r, m, i) = best?;
        last = Some((syms[i], syms[i + 1], r));
        syms[i] = m;
        syms.remove(i + 1);
    }
    Some((syms[0], last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpe::train::{train, TrainConfig};
    use crate::count::Counter;
    use crate::pretok::PreTokenizer;

    fn trie_of(tokens: &[&[u8]]) -> VocabTrie {
        let t: Vec<Option<&[u8]>> = tokens.iter().map(|&b| Some(b)).collect();
        VocabTrie::new(&t).expect("ok")
    }

    #[test]
    fn trie_ranges_hold_exactly_the_tokens_with_each_prefix() {
        let toks: Vec<&[u8]> = vec![
            b"a", b"b", b"ab", b"abc", b"abd", b"b c", b"bc", b"ac", b"c",
        ];
        let trie = trie_of(&toks);
        for prefix in [&b""[..], b"a", b"ab", b"b", b"abc", b"x", b"b "] {
            let got: Option<Vec<u32>> = trie.walk(prefix).map(|n| {
                let node = trie.node(n);
                let mut v = trie.order()[node.start as usize..node.end as usize].to_vec();
                v.sort();
                v
            });
            let want: Vec<u32> = (0..toks.len() as u32)
                .filter(|&i| toks[i as usize].starts_with(prefix))
                .collect();
            if want.is_empty() {
                assert!(got.is_none(), "{prefix:?}");
            } else {
                assert_eq!(got.expect("ok"), want, "{prefix:?}");
            }
        }
        assert_eq!(trie.prefixes_of(b"abcz"), vec![(0, 1), (2, 2), (3, 3)]);
        assert_eq!(trie.longest(), 3);
        // Children of "a": 'b' and 'c', in byte order, and their ranges tile the node's range
        // after the tokens equal to "a".
        let a = trie.walk(b"a").expect("ok");
        let node = trie.node(a);
        let kids: Vec<u8> = trie.edges(a).iter().map(|e| e.0).collect();
        assert_eq!(kids, b"bc");
        let mut at = node.here;
        for &(_, c) in trie.edges(a) {
            assert_eq!(trie.node(c).start, at);
            at = trie.node(c).end;
        }
        assert_eq!(at, node.end);
    }

    fn trained(text: &str, vocab: usize, pattern: &str, ignore_merges: bool) -> Bpe {
        let cfg = TrainConfig {
            vocab_size: vocab,
            ..TrainConfig::default()
        };
        let pre = PreTokenizer::new(pattern).expect("ok");
        let mut counter = Counter::new(pre.clone(), &[], 1).expect("ok");
        counter.add_texts(&[text]).expect("ok");
        let v = train(counter.counts(), &cfg).expect("ok");
        Bpe::new(v, pre, ignore_merges).expect("ok")
    }

    /// Every pair of whole tokens, and random sequences, against re-encoding.
    #[test]
    fn pairwise_validity_agrees_with_reencoding() {
        let mut text = String::new();
        let mut s = 7u64;
        for _ in 0..4000 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            text.push(b"aab b\n"[(s >> 33) as usize % 6] as char);
        }
        for (pattern, size, ignore) in [
            ("gpt2", 40, false),
            (r"[^\n]+|\n", 40, false),
            ("gpt2", 90, true),
            (r"[^\n]+|\n", 90, false),
        ] {
            let bpe = trained(&text, 256 + size, pattern, ignore);
            let canon = Canonical::new(&bpe);
            let n = bpe.vocab().len() as u32;
            let mut buf = Vec::new();
            let mut checked = 0;
            for l in 0..n {
                for r in 0..n {
                    if !canon.is_whole(l) || !canon.is_whole(r) {
                        continue;
                    }
                    buf.clear();
                    buf.extend_from_slice(bpe.vocab().token_bytes(l).expect("ok"));
                    buf.extend_from_slice(bpe.vocab().token_bytes(r).expect("ok"));
                    let mut out = Vec::new();
                    bpe.vocab().merge_piece(&buf, &mut out);
                    assert_eq!(canon.valid_pair(l, r), out == [l, r], "{pattern} {l} {r}");
                    assert_eq!(
                        canon.is_canonical(&[l, r]),
                        bpe.encode_bytes(&buf).expect("ok") == [l, r]
                    );
                    checked += 1;
                }
            }
            assert!(checked > 1000);
            let real: Vec<u32> = (0..n).filter(|&t| canon.is_whole(t)).collect();
            for _ in 0..3000 {
                let mut seq = Vec::new();
                let len = 1 + (s >> 60) as usize;
                for _ in 0..len {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    seq.push(real[(s >> 33) as usize % real.len()]);
                }
                let bytes = bpe.decode_bytes(&seq).expect("ok");
                let want = bpe.encode_bytes(&bytes).expect("ok") == seq;
                assert_eq!(canon.is_canonical(&seq), want, "{seq:?}");
                if want {
                    let cands: Vec<u32> = (0..n).collect();
                    for (t, ok) in canon.extensions(&seq, &cands).into_iter().enumerate() {
                        let mut longer = seq.clone();
                        longer.push(t as u32);
                        assert_eq!(ok, canon.is_canonical(&longer));
                    }
                }
            }
        }
    }
    /// Covers by brute force: every token sequence (of whole tokens) whose bytes before the last
    /// token are a strict prefix of x and whose bytes reach past x, canonical by re-encoding.
    #[test]
    fn covers_match_brute_force() {
        let mut text = String::new();
        let mut s = 11u64;
        for _ in 0..3000 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            text.push(b"ab a\n"[(s >> 33) as usize % 5] as char);
        }
        let bpe = trained(&text, 256 + 20, "gpt2", false);
        let canon = Canonical::new(&bpe);
        let toks: Vec<Option<&[u8]>> = (0..bpe.vocab().len() as u32)
            .map(|i| bpe.vocab().token_bytes(i))
            .collect();
        let trie = VocabTrie::new(&toks).expect("ok");
        let useful: Vec<u32> = (0..bpe.vocab().len() as u32)
            .filter(|&t| {
                bpe.vocab()
                    .token_bytes(t)
                    .is_some_and(|b| b.iter().all(|c| b"ab \n".contains(c)))
            })
            .collect();
        for x in [&b"ab a"[..], b"a\n", b" ab", b"aa b", b"b"] {
            for canonical in [false, true] {
                let c = canonical.then_some(&canon);
                let mut got = covers(&trie, c, x, 1 << 20).expect("ok");
                got.retain(|seq| seq.iter().all(|t| useful.contains(t)));
                let mut want = Vec::new();
                let mut stack: Vec<(Vec<u32>, usize)> = vec![(Vec::new(), 0)];
                while let Some((seq, done)) = stack.pop() {
                    for &t in &useful {
                        let b = bpe.vocab().token_bytes(t).expect("ok");
                        let end = (done + b.len()).min(x.len());
                        if b[..end - done] != x[done..end] {
                            continue;
                        }
                        let mut longer = seq.clone();
                        longer.push(t);
                        if done + b.len() >= x.len() {
                            let data = bpe.decode_bytes(&longer).expect("ok");
                            if !canonical || bpe.encode_bytes(&data).expect("ok") == longer {
                                want.push(longer);
                            }
                        } else {
                            stack.push((longer, done + b.len()));
                        }
                    }
                }
                want.sort();
                assert_eq!(got, want, "{x:?} canonical={canonical}");
                assert!(!want.is_empty());
            }
        }
        let long = b"ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab".repeat(4);
        assert!(enumerate_states(&trie, None, &long, long.len(), 10_000).is_err());
        let st = enumerate_states(&trie, Some(&canon), &long, long.len(), 10_000).expect("ok");
        assert!(st.parent.len() <= 2 * long.len());
    }
}
