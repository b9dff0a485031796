//! The BPE vocabulary: token bytes, the ranked merges, and special tokens.
//!
//! Ids are contiguous, `0..len`. Every byte value has a single-byte token (byte-level BPE can
//! encode any input), but ids need not equal byte values: an imported GPT-2 vocabulary numbers
//! its bytes in its own order. A merge `(left, right) -> merged` has a rank, its position in the
//! merge list; encoding applies merges by rank. Two merges may produce the same bytes (HF
//! tokenizers' trainer allows it); they then share one id.

use rustc_hash::FxHashMap;

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
}

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
        Ok(Self {
            tokens,
            byte_ids,
            merges: merge_list,
            merge_map,
            token_ids,
            specials,
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
        Ok(vocab)
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
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

    /// Appends the BPE encoding of one piece: start from its bytes and repeatedly apply the
    /// lowest-ranked merge among adjacent pairs, leftmost first on ties.
    pub fn merge_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        match piece.len() {
            0 => {}
            1 => out.push(self.byte_ids[piece[0] as usize]),
            n if n <= SMALL_PIECE => self.merge_small(piece, out),
            n if n < u32::MAX as usize => self.merge_large(piece, out),
            _ => {
                // Beyond 4 GiB in one piece: merge in 1 GiB windows. Merges never reach across
                // the windows' edges, so this is the only place where the result can differ from
                // exact BPE; no real text has such a piece.
                for window in piece.chunks(1 << 30) {
                    self.merge_large(window, out);
                }
            }
        }
    }

    /// Quadratic in the piece length, but with tiny constants: the right tool for the short
    /// pieces that make up almost all text.
    fn merge_small(&self, piece: &[u8], out: &mut Vec<u32>) {
        let mut syms: Vec<u32> = piece.iter().map(|&b| self.byte_ids[b as usize]).collect();
        let rank_at = |syms: &[u32], i: usize| -> u32 {
            self.merge_of(syms[i], syms[i + 1])
                .map_or(u32::MAX, |(rank, _)| rank)
        };
        let mut ranks: Vec<u32> = (0..syms.len() - 1).map(|i| rank_at(&syms, i)).collect();
        loop {
            let mut best = u32::MAX;
            let mut at = 0;
            for (i, &r) in ranks.iter().enumerate() {
                if r < best {
                    best = r;
                    at = i;
                }
            }
            if best == u32::MAX {
                break;
            }
            let (_, merged) = self
                .merge_of(syms[at], syms[at + 1])
                .unwrap_or((u32::MAX, u32::MAX));
            syms[at] = merged;
            syms.remove(at + 1);
            ranks.remove(at);
            if at < ranks.len() {
                ranks[at] = rank_at(&syms, at);
            }
            if at > 0 {
                ranks[at - 1] = rank_at(&syms, at - 1);
            }
        }
        out.extend_from_slice(&syms);
    }

    /// O(n log n): a linked list over the piece and a heap of candidate merges, validated lazily
    /// when popped, so one 100 MB piece encodes in seconds rather than never.
    fn merge_large(&self, piece: &[u8], out: &mut Vec<u32>) {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        // Positions are u32 (`merge_piece` splits pieces of 4 GiB and more), which halves the
        // memory of the lists and the heap.
        const NONE: u32 = u32::MAX;
        let n = piece.len();
        let mut syms: Vec<u32> = piece.iter().map(|&b| self.byte_ids[b as usize]).collect();
        let mut next: Vec<u32> = (1..=n as u32).collect();
        next[n - 1] = NONE;
        let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
        prev[0] = NONE;
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
        let mut i = 0u32;
        while i != NONE {
            out.push(syms[i as usize]);
            i = next[i as usize];
        }
    }
}

/// Pieces up to this many bytes use the quadratic scan; longer ones the heap.
const SMALL_PIECE: usize = 128;

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
        for len in [2, 3, 10, 127, 128, 129, 500, 1000] {
            let (mut s, mut l) = (Vec::new(), Vec::new());
            v.merge_small(&piece[..len], &mut s);
            v.merge_large(&piece[..len], &mut l);
            assert_eq!(s, l, "length {len}");
        }
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
