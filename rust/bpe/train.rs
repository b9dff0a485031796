//! Byte-level BPE training with incremental pair counts.
//!
//! Words (pre-tokenized pieces, with counts) are laid out once in flat arrays as doubly linked
//! lists of symbols. We keep, for every adjacent pair, its total count and the positions where it
//! may occur. A merge visits only the positions of the merged pair and updates the counts of the
//! pairs around each occurrence, so the cost of a merge is proportional to how often the pair
//! occurs, not to the corpus size: a 100 MB word costs no more per merge than 100 MB of short words.
//!
//! The next merge is the pair with the highest count; ties go to the smallest pair by bytes,
//! comparing `(left bytes, right bytes)` lexicographically. The order depends only on the counts,
//! so the merges are the same whatever the thread count, chunking or order of the input.
//! Occurrences are merged left to right, so `a a a` with merge `(a, a)` becomes `aa a`, as in
//! encoding. A merge whose bytes already form a token reuses that token's id (HF tokenizers does
//! the same); training stops when the vocabulary is full, when no pair is left, or when the best
//! pair occurs fewer than `min_frequency` times.

use rustc_hash::{FxHashMap, FxHashSet};

use super::vocab::Vocab;
use crate::count::WordCounts;
use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Total ids, special tokens included.
    pub vocab_size: usize,
    /// Stop when the best pair occurs fewer times than this.
    pub min_frequency: u64,
    /// Never make a token longer than this many bytes.
    pub max_token_length: Option<usize>,
    /// Special tokens, given ids after all merged tokens.
    pub special_tokens: Vec<String>,
    /// Show a progress bar (on stderr, only if it is a terminal).
    pub progress: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            vocab_size: 32_768,
            min_frequency: 1,
            max_token_length: None,
            special_tokens: Vec::new(),
            progress: false,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let mut seen = FxHashSet::default();
        for s in &self.special_tokens {
            if s.is_empty() {
                return Err(Error::Config("special tokens must not be empty".into()));
            }
            if !seen.insert(s) {
                return Err(Error::Config(format!("special token {s:?} is given twice")));
            }
        }
        let floor = 256 + self.special_tokens.len();
        if self.vocab_size < floor {
            return Err(Error::Config(format!(
                "vocab_size {} is too small: byte-level BPE needs 256 byte tokens plus {} special \
                 token(s), so at least {floor}",
                self.vocab_size,
                self.special_tokens.len()
            )));
        }
        if self.vocab_size > u32::MAX as usize {
            return Err(Error::Config(format!(
                "vocab_size {} does not fit in 32-bit ids",
                self.vocab_size
            )));
        }
        if self.max_token_length == Some(0) {
            return Err(Error::Config("max_token_length must be at least 1".into()));
        }
        Ok(())
    }
}

const NONE: u32 = u32::MAX;

/// A candidate merge: a pair and its count when pushed. The count may be stale (higher than the
/// pair's current count); that is checked when it reaches the top.
#[derive(Clone, Copy)]
struct Candidate {
    count: i64,
    pair: (u32, u32),
}

/// A max-heap of candidates ordered by count, then by the smaller `(left bytes, right bytes)`.
/// Hand-written rather than `BinaryHeap` so that entries are 16 bytes of ids and the byte
/// comparison reads the token table, instead of each entry carrying its own bytes.
struct CandidateHeap {
    data: Vec<Candidate>,
}

impl CandidateHeap {
    /// Whether `x` should be popped before `y`.
    #[inline]
    fn above(tokens: &[Vec<u8>], x: &Candidate, y: &Candidate) -> bool {
        if x.count != y.count {
            return x.count > y.count;
        }
        let key = |c: &Candidate| {
            (
                &tokens[c.pair.0 as usize],
                &tokens[c.pair.1 as usize],
                c.pair,
            )
        };
        key(x) < key(y)
    }

    fn new(data: Vec<Candidate>, tokens: &[Vec<u8>]) -> Self {
        let mut heap = Self { data };
        for i in (0..heap.data.len() / 2).rev() {
            heap.sift_down(i, tokens);
        }
        heap
    }

    fn push(&mut self, c: Candidate, tokens: &[Vec<u8>]) {
        self.data.push(c);
        let mut i = self.data.len() - 1;
        while i > 0 {
            let parent = (i - 1) / 2;
            if !Self::above(tokens, &self.data[i], &self.data[parent]) {
                break;
            }
            self.data.swap(i, parent);
            i = parent;
        }
    }

    fn pop(&mut self, tokens: &[Vec<u8>]) -> Option<Candidate> {
        if self.data.is_empty() {
            return None;
        }
        let top = self.data.swap_remove(0);
        self.sift_down(0, tokens);
        Some(top)
    }

    fn sift_down(&mut self, mut i: usize, tokens: &[Vec<u8>]) {
        let n = self.data.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut best = i;
            if l < n && Self::above(tokens, &self.data[l], &self.data[best]) {
                best = l;
            }
            if r < n && Self::above(tokens, &self.data[r], &self.data[best]) {
                best = r;
            }
            if best == i {
                return;
            }
            self.data.swap(i, best);
            i = best;
        }
    }
}

/// A pair's total count and the positions where it may occur (some stale).
#[derive(Default)]
struct PairStats {
    count: i64,
    positions: Vec<u32>,
}

/// Adds `delta` to a pair's count (recording `pos` as an occurrence if it grew); a pair whose
/// count drops to zero is forgotten, with its positions, which are all stale by then.
#[inline]
fn bump(pairs: &mut FxHashMap<(u32, u32), PairStats>, pair: (u32, u32), delta: i64, pos: u32) {
    let stats = pairs.entry(pair).or_default();
    stats.count += delta;
    if delta > 0 {
        stats.positions.push(pos);
    } else if stats.count <= 0 {
        pairs.remove(&pair);
    }
}

/// The words as linked lists in flat arrays.
struct Corpus {
    sym: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    /// The word each position belongs to (an index into `word_count`).
    word: Vec<u32>,
    word_count: Vec<u64>,
}

/// Trains byte-level BPE on word counts. Token ids: bytes are `0..256` (id = byte value), then
/// merged tokens in the order they were made, then `special_tokens` in the order given.
pub fn train(counts: &WordCounts, cfg: &TrainConfig) -> Result<Vocab> {
    let words = counts.words.iter().map(|(w, c)| (w.as_slice(), *c));
    train_words(words.collect(), cfg)
}

/// `train`, consuming the counts: each word's memory is freed as soon as it is laid out, so
/// the counts and the trainer's arrays are never both held whole.
pub fn train_owned(counts: WordCounts, cfg: &TrainConfig) -> Result<Vocab> {
    train_words(counts.words.into_iter().collect(), cfg)
}

fn train_words<W: AsRef<[u8]> + Ord>(mut words: Vec<(W, u64)>, cfg: &TrainConfig) -> Result<Vocab> {
    cfg.validate()?;
    if words.is_empty() {
        return Err(Error::EmptyCorpus);
    }
    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let mut token_ids: FxHashMap<Vec<u8>, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut merges: Vec<(u32, u32)> = Vec::new();
    let new_tokens = cfg.vocab_size - 256 - cfg.special_tokens.len();

    // Lay the words out in a fixed order (the order does not affect the result, but it makes
    // runs reproducible to the byte).
    words.retain(|(w, c)| w.as_ref().len() >= 2 && *c > 0);
    words.sort_unstable();
    let total: usize = words.iter().map(|(w, _)| w.as_ref().len()).sum();
    if total >= NONE as usize {
        return Err(Error::Config(format!(
            "the distinct words hold {total} bytes; at most {} are supported",
            NONE - 1
        )));
    }
    let mut c = Corpus {
        sym: Vec::with_capacity(total),
        next: Vec::with_capacity(total),
        prev: Vec::with_capacity(total),
        word: Vec::with_capacity(total),
        word_count: Vec::with_capacity(words.len()),
    };
    let mut pairs: FxHashMap<(u32, u32), PairStats> = FxHashMap::default();
    for (word, count) in words {
        let word = word.as_ref();
        let start = c.sym.len() as u32;
        let word_index = c.word_count.len() as u32;
        c.word_count.push(count);
        let n = word.len() as u32;
        for (i, &b) in word.iter().enumerate() {
            let i = i as u32;
            c.sym.push(u32::from(b));
            c.prev.push(if i == 0 { NONE } else { start + i - 1 });
            c.next.push(if i + 1 == n { NONE } else { start + i + 1 });
            c.word.push(word_index);
            if i > 0 {
                let pair = (u32::from(word[i as usize - 1]), u32::from(b));
                bump(&mut pairs, pair, count as i64, start + i - 1);
            }
        }
    }

    let mut heap = CandidateHeap::new(
        pairs
            .iter()
            .map(|(&pair, s)| Candidate {
                count: s.count,
                pair,
            })
            .collect(),
        &tokens,
    );

    let bar = if cfg.progress {
        indicatif::ProgressBar::new(new_tokens as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "merging {bar:40} {pos}/{len} tokens [{elapsed_precise}<{eta_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );

    let mut added = 0usize;
    let mut grown: FxHashSet<(u32, u32)> = FxHashSet::default();
    while added < new_tokens {
        let Some(top) = heap.pop(&tokens) else { break };
        let current = pairs.get(&top.pair).map_or(0, |s| s.count);
        if current != top.count {
            if current > 0 {
                let fresh = Candidate {
                    count: current,
                    pair: top.pair,
                };
                heap.push(fresh, &tokens);
            }
            continue;
        }
        if current <= 0 || (current as u64) < cfg.min_frequency {
            break;
        }
        let (a, b) = top.pair;
        let (left, right) = (&tokens[a as usize], &tokens[b as usize]);
        if let Some(max) = cfg.max_token_length {
            if left.len() + right.len() > max {
                continue;
            }
        }
        let mut joined = left.clone();
        joined.extend_from_slice(right);
        let merged = match token_ids.get(&joined) {
            Some(&id) => id,
            None => {
                let id = tokens.len() as u32;
                token_ids.insert(joined.clone(), id);
                tokens.push(joined);
                added += 1;
                bar.inc(1);
                id
            }
        };
        merges.push((a, b));

        let mut positions = pairs.remove(&top.pair).unwrap_or_default().positions;
        positions.sort_unstable();
        positions.dedup();
        grown.clear();
        for pos in positions {
            let p = pos as usize;
            let right = c.next[p];
            if c.sym[p] != a || right == NONE || c.sym[right as usize] != b {
                continue; // stale: this occurrence was consumed by an earlier merge
            }
            let w = c.word_count[c.word[p] as usize] as i64;
            let before = c.prev[p];
            if before != NONE {
                let s = c.sym[before as usize];
                if (s, a) != top.pair {
                    bump(&mut pairs, (s, a), -w, before);
                }
                bump(&mut pairs, (s, merged), w, before);
                grown.insert((s, merged));
            }
            let after = c.next[right as usize];
            if after != NONE {
                let s = c.sym[after as usize];
                if (b, s) != top.pair {
                    bump(&mut pairs, (b, s), -w, pos);
                }
                bump(&mut pairs, (merged, s), w, pos);
                grown.insert((merged, s));
                c.prev[after as usize] = pos;
            }
            c.sym[p] = merged;
            c.next[p] = after;
            let r = right as usize;
            c.sym[r] = NONE;
            c.next[r] = NONE;
            c.prev[r] = NONE;
        }
        for &pair in &grown {
            if let Some(s) = pairs.get(&pair) {
                if s.count > 0 {
                    let count = s.count;
                    heap.push(Candidate { count, pair }, &tokens);
                }
            }
        }
    }
    bar.finish_and_clear();

    let mut specials = Vec::with_capacity(cfg.special_tokens.len());
    for s in &cfg.special_tokens {
        specials.push((s.clone(), tokens.len() as u32));
        tokens.push(s.as_bytes().to_vec());
    }
    Vocab::new(tokens, &merges, specials)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(words: &[(&str, u64)]) -> WordCounts {
        let mut c = WordCounts::default();
        for (w, n) in words {
            c.add(w.as_bytes(), *n);
        }
        c
    }

    fn cfg(vocab_size: usize) -> TrainConfig {
        TrainConfig {
            vocab_size,
            ..TrainConfig::default()
        }
    }

    fn merged_strings(v: &Vocab) -> Vec<String> {
        v.merges()
            .iter()
            .map(|m| String::from_utf8_lossy(v.token_bytes(m.merged).unwrap_or_default()).into())
            .collect()
    }

    #[test]
    fn highest_count_then_smallest_bytes() {
        // "ab" 5 + "ab" in "abc" 1 = 6; "bc" 1; then "abc".
        let v = train(&counts(&[("ab", 5), ("abc", 1), ("xy", 6)]), &cfg(259)).expect("ok");
        // "ab" and "xy" tie at 6: the smaller bytes win.
        assert_eq!(merged_strings(&v), ["ab", "xy", "abc"]);
    }

    #[test]
    fn overlapping_pairs_merge_left_to_right() {
        let v = train(&counts(&[("aaaa", 1), ("aaa", 1)]), &cfg(258)).expect("ok");
        // (a,a) occurs 3 + 2 = 5 times; after merging, "aaaa" -> [aa, aa] and "aaa" -> [aa, a].
        // (aa, aa) and (aa, a) tie at 1: ("aa", "a") is the smaller pair.
        assert_eq!(merged_strings(&v), ["aa", "aaa"]);
    }

    #[test]
    fn stops_at_min_frequency_and_respects_max_length() {
        let c = counts(&[("abcd", 3)]);
        let v = train(
            &c,
            &TrainConfig {
                min_frequency: 4,
                ..cfg(300)
            },
        )
        .expect("ok");
        assert!(v.merges().is_empty());
        let v = train(
            &c,
            &TrainConfig {
                max_token_length: Some(2),
                ..cfg(300)
            },
        )
        .expect("ok");
        assert!(v
            .merges()
            .iter()
            .all(|m| v.token_bytes(m.merged).map_or(0, <[u8]>::len) <= 2));
        assert_eq!(merged_strings(&v).len(), 2); // "ab", "cd"
    }

    #[test]
    fn special_tokens_come_last_and_vocab_size_is_checked() {
        let c = counts(&[("hello", 10), ("help", 3)]);
        let cfg2 = TrainConfig {
            special_tokens: vec!["<|end|>".into()],
            ..cfg(260)
        };
        let v = train(&c, &cfg2).expect("ok");
        assert_eq!(v.len(), 260);
        assert_eq!(v.specials(), &[("<|end|>".to_string(), 259)]);
        let too_small = TrainConfig {
            special_tokens: vec!["<|end|>".into()],
            ..cfg(256)
        };
        assert!(matches!(train(&c, &too_small), Err(Error::Config(_))));
        assert!(matches!(
            train(&WordCounts::default(), &cfg(300)),
            Err(Error::EmptyCorpus)
        ));
    }

    #[test]
    fn training_then_encoding_reproduces_training_segmentation() {
        let c = counts(&[
            ("lowest", 2),
            ("lower", 5),
            ("newest", 6),
            ("widest", 3),
            ("low", 7),
        ]);
        let v = train(&c, &cfg(280)).expect("ok");
        let mut out = Vec::new();
        v.merge_piece(b"lowest", &mut out);
        let decoded: Vec<u8> = out
            .iter()
            .flat_map(|&id| v.token_bytes(id).unwrap_or_default().to_vec())
            .collect();
        assert_eq!(decoded, b"lowest");
        assert!(out.len() <= 2);
    }
}
