//! Byte-level BPE: a pre-tokenizer, a ranked vocabulary, and special tokens.
//!
//! Encoding is exact BPE by merge rank (HF tokenizers' `BPE` model; tiktoken gives the same ids
//! for the same ranks): text is split around allowed special tokens, each remaining segment is
//! pre-tokenized, and each piece is merged independently. Pieces are independent, so big texts
//! are encoded on several threads by cutting them at the pre-tokenizer's safe cuts; the result
//! does not depend on the thread count.

pub mod hf;
pub mod io;
mod table;
pub mod train;
pub mod vocab;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::error::{Error, Result};
use crate::pretok::PreTokenizer;
pub use vocab::{Merge, PieceCache, Vocab, PIECE_BLOCK};

/// The encodings of consecutive texts of a batch: their ids one after another, and how many
/// belong to each text.
#[derive(Clone, Debug, Default)]
pub struct BatchRun {
    pub ids: Vec<u32>,
    pub lengths: Vec<usize>,
}

impl BatchRun {
    /// Offsets into the concatenated ids of `runs`: text `i` has `offsets[i]..offsets[i + 1]`.
    pub fn offsets(runs: &[BatchRun]) -> Vec<usize> {
        let mut offsets =
            Vec::with_capacity(runs.iter().map(|r| r.lengths.len()).sum::<usize>() + 1);
        let mut at = 0;
        offsets.push(at);
        for len in runs.iter().flat_map(|r| &r.lengths) {
            at += len;
            offsets.push(at);
        }
        offsets
    }
}

/// Groups a batch into runs of consecutive texts of about 256 KiB: threads take work in sizeable
/// pieces, and each run fills one vector, so there is no allocation per text whatever the batch
/// looks like.
pub fn batch_runs<S: AsRef<str>>(texts: &[S]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, t) in texts.iter().enumerate() {
        if run_ends(&mut size, t.as_ref()) {
            runs.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < texts.len() {
        runs.push(start..texts.len());
    }
    runs
}

/// Adds `text` to a run of `size` (each text counts 16 bytes more, for its own cost); whether
/// the run ends with it (then `size` starts again from 0). [`batch_runs`]'s rule, for callers
/// that form runs as the texts arrive.
pub fn run_ends(size: &mut usize, text: &str) -> bool {
    const RUN_BYTES: usize = 256 << 10;
    *size += text.len() + 16;
    let ends = *size >= RUN_BYTES;
    if ends {
        *size = 0;
    }
    ends
}

/// Token ids with the `[start, end)` byte range of each token.
pub type IdsWithOffsets = (Vec<u32>, Vec<(usize, usize)>);

/// Texts longer than this are cut at safe cuts and encoded on several threads.
const PARALLEL_PART: usize = 256 << 10;

/// An immutable byte-level BPE tokenizer. `Send + Sync`: share it freely between threads.
#[derive(Clone, Debug)]
pub struct Bpe {
    vocab: Vocab,
    pre: PreTokenizer,
    /// Matches every special token, leftmost-longest: for splitting text around them.
    specials: Option<AhoCorasick>,
    /// Matches every special token, all overlapping matches: for the disallowed check.
    specials_overlapping: Option<AhoCorasick>,
    /// HF's `ignore_merges`: a piece that is itself a token is emitted whole.
    ignore_merges: bool,
    /// Identifies this tokenizer's piece cache in each thread (see `with_cache`).
    id: u64,
    /// Caches of threads that have ended (worker threads live for one call), for the next
    /// thread that encodes with this tokenizer, so that workers do not start cold.
    spare: std::sync::Arc<SpareCaches>,
}

/// Piece caches waiting for a thread (see `Bpe::with_cache`).
#[derive(Default)]
struct SpareCaches(std::sync::Mutex<Vec<PieceCache>>);

impl std::fmt::Debug for SpareCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpareCaches")
    }
}

impl SpareCaches {
    fn take(&self) -> PieceCache {
        self.0
            .lock()
            .ok()
            .and_then(|mut spare| spare.pop())
            .unwrap_or_default()
    }

    fn give(&self, cache: PieceCache) {
        let most = std::thread::available_parallelism().map_or(1, usize::from);
        if let Ok(mut spare) = self.0.lock() {
            if spare.len() < most {
                spare.push(cache);
            }
        }
    }
}

/// One thread's cache for one tokenizer; handed back to the tokenizer's spare caches when the
/// thread ends or drops it for another tokenizer's.
struct ThreadCache {
    id: u64,
    cache: PieceCache,
    owner: std::sync::Weak<SpareCaches>,
}

impl Drop for ThreadCache {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.upgrade() {
            owner.give(std::mem::take(&mut self.cache));
        }
    }
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

thread_local! {
    /// Each thread's piece caches, most recently used first, for a few tokenizers. A cache only
    /// ever holds exact encodings, so results never depend on it; it is per thread, so it needs
    /// no lock.
    static CACHES: std::cell::RefCell<Vec<ThreadCache>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Tokenizers whose caches a thread keeps.
const CACHES_PER_THREAD: usize = 4;

impl Bpe {
    pub fn new(vocab: Vocab, pre: PreTokenizer, ignore_merges: bool) -> Result<Self> {
        let specials = build_matcher(vocab.specials().iter().map(|(s, _)| s.as_str()))?;
        let specials_overlapping = if vocab.specials().is_empty() {
            None
        } else {
            Some(
                AhoCorasick::new(vocab.specials().iter().map(|(s, _)| s.as_str()))
                    .map_err(|e| Error::Config(format!("special tokens: {e}")))?,
            )
        };
        Ok(Self {
            vocab,
            pre,
            specials,
            specials_overlapping,
            ignore_merges,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            spare: std::sync::Arc::default(),
        })
    }

    /// Runs `f` with this thread's piece cache for this tokenizer, which persists across calls
    /// (a new thread takes over the cache of one that ended, if any).
    fn with_cache<R>(&self, f: impl FnOnce(&mut PieceCache) -> R) -> R {
        CACHES.with(|caches| {
            let Ok(mut caches) = caches.try_borrow_mut() else {
                return f(&mut PieceCache::default()); // re-entered: use a fresh one
            };
            let at = caches.iter().position(|c| c.id == self.id);
            let entry = match at {
                Some(i) => caches.remove(i),
                None => ThreadCache {
                    id: self.id,
                    cache: self.spare.take(),
                    owner: std::sync::Arc::downgrade(&self.spare),
                },
            };
            caches.insert(0, entry);
            caches.truncate(CACHES_PER_THREAD);
            f(&mut caches[0].cache)
        })
    }

    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    pub fn pre_tokenizer(&self) -> &PreTokenizer {
        &self.pre
    }

    pub fn ignore_merges(&self) -> bool {
        self.ignore_merges
    }

    #[inline]
    fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>, cache: &mut PieceCache) {
        if self.ignore_merges {
            if let Some(id) = self.vocab.token_id(piece) {
                out.push(id);
                return;
            }
        }
        self.vocab.encode_piece(piece, out, cache);
    }

    /// Encodes text with no special-token handling: special token strings are plain text.
    ///
    /// (The ids of a call go to memory reserved for one id per two bytes (`id_room`), which
    /// holds most texts' ids without growing, on huge pages: a first call on 10 MB of text
    /// otherwise spends a fifth of its time in page faults. Untouched memory costs nothing.)
    pub fn encode_ordinary(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = crate::mem::huge_vec(id_room(text.len()));
        self.encode_ordinary_into(text, &mut out)?;
        Ok(out)
    }

    /// `encode_ordinary` of a text that `fill` hands over in consecutive parts: each call
    /// appends the next part to the buffer, and says whether more will follow. The text has
    /// about `about` bytes and at most `most` (for reserving: the ids' room is reserved for
    /// `most`, where growing would copy them). Each part of the buffer up to its last
    /// safe cut (see `PreTokenizer::last_safe_cut`) is encoded as soon as it is there, so the
    /// text's UTF-8 is never whole in memory, and is read while it is in cache. The ids are
    /// `encode_ordinary`'s of the whole text.
    pub fn encode_ordinary_parts(
        &self,
        about: usize,
        most: usize,
        mut fill: impl FnMut(&mut String) -> bool,
    ) -> Result<Vec<u32>> {
        let mut out = crate::mem::huge_vec(id_room(most));
        self.with_cache(|cache| -> Result<()> {
            cache.reserve_for(about);
            let mut buf = String::new();
            let mut more = true;
            while more {
                more = fill(&mut buf);
                let cut = if more {
                    self.pre.last_safe_cut(buf.as_bytes()).unwrap_or(0)
                } else {
                    buf.len()
                };
                if cut > 0 {
                    self.encode_ordinary_cached(&buf[..cut], &mut out, cache)?;
                    buf.drain(..cut);
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    fn encode_ordinary_into(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        self.with_cache(|cache| self.encode_ordinary_cached(text, out, cache))
    }

    fn encode_ordinary_cached(
        &self,
        text: &str,
        out: &mut Vec<u32>,
        cache: &mut PieceCache,
    ) -> Result<()> {
        let bytes = text.as_bytes();
        cache.reserve_for(bytes.len());
        if self.ignore_merges {
            return self
                .pre
                .for_each_piece(text, |s, e| self.encode_piece(&bytes[s..e], out, cache));
        }
        let mut spans = [(0usize, 0usize); PIECE_BLOCK];
        let mut n = 0;
        self.pre.for_each_piece(text, |s, e| {
            spans[n] = (s, e);
            n += 1;
            if n == PIECE_BLOCK {
                self.vocab.encode_pieces(bytes, &spans, out, cache);
                n = 0;
            }
        })?;
        self.vocab.encode_pieces(bytes, &spans[..n], out, cache);
        Ok(())
    }

    /// Encodes arbitrary bytes: each maximal run of valid UTF-8 exactly as `encode_ordinary`
    /// encodes it, each invalid sequence as one piece of its own. `decode_bytes` gives the bytes
    /// back exactly.
    pub fn encode_bytes(&self, bytes: &[u8]) -> Result<Vec<u32>> {
        let mut out = crate::mem::huge_vec(id_room(bytes.len()));
        self.with_cache(|cache| {
            for chunk in bytes.utf8_chunks() {
                self.encode_ordinary_cached(chunk.valid(), &mut out, cache)?;
                self.encode_piece(chunk.invalid(), &mut out, cache);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// `encode_ordinary` on up to `threads` threads (0 = all cores); identical output.
    pub fn encode_ordinary_parallel(&self, text: &str, threads: usize) -> Result<Vec<u32>> {
        if threads == 1 || text.len() <= 2 * PARALLEL_PART {
            return self.encode_ordinary(text);
        }
        let parts = self.pre.split_at_safe_cuts(text, PARALLEL_PART);
        let encoded = crate::par::map(&parts, threads, |p| self.encode_ordinary(p));
        let mut out = crate::mem::huge_vec(id_room(text.len()));
        for ids in encoded {
            out.extend(ids?);
        }
        Ok(out)
    }

    /// Encodes text, treating the special tokens whose ids are in `allowed` as special and all
    /// others as text. Fails if text contains a special token that is in `disallowed`.
    pub fn encode(&self, text: &str, allowed: &[u32], disallowed: &[u32]) -> Result<Vec<u32>> {
        if let Some(token) = self.find_special(text, disallowed) {
            return Err(Error::DisallowedSpecial { token });
        }
        let mut out = crate::mem::huge_vec(id_room(text.len()));
        self.encode_segments(text, allowed, |seg| match seg {
            Segment::Text(t) => self.encode_ordinary_into(t, &mut out),
            Segment::Special(id) => {
                out.push(id);
                Ok(())
            }
        })?;
        Ok(out)
    }

    /// Like `encode`, also returning each token's `[start, end)` byte offsets in `text`. A token
    /// that covers only part of a multi-byte character still gets its own byte range.
    pub fn encode_with_offsets(
        &self,
        text: &str,
        allowed: &[u32],
        disallowed: &[u32],
    ) -> Result<IdsWithOffsets> {
        if let Some(token) = self.find_special(text, disallowed) {
            return Err(Error::DisallowedSpecial { token });
        }
        let mut ids = Vec::new();
        let mut offsets = Vec::new();
        let mut base = 0usize;
        self.encode_segments(text, allowed, |seg| {
            match seg {
                Segment::Text(t) => {
                    let start = ids.len();
                    self.encode_ordinary_into(t, &mut ids)?;
                    let mut at = base;
                    for &id in &ids[start..] {
                        let len = self.vocab.token_bytes(id).map_or(0, <[u8]>::len);
                        offsets.push((at, at + len));
                        at += len;
                    }
                    base += t.len();
                }
                Segment::Special(id) => {
                    let len = self.vocab.token_bytes(id).map_or(0, <[u8]>::len);
                    ids.push(id);
                    offsets.push((base, base + len));
                    base += len;
                }
            }
            Ok(())
        })?;
        Ok((ids, offsets))
    }

    /// The first special token among `ids` that occurs in `text`, if any.
    pub fn find_special(&self, text: &str, ids: &[u32]) -> Option<String> {
        if ids.is_empty() {
            return None;
        }
        // Overlapping search, so that a checked special token is found even where a longer,
        // unchecked one starts at the same place.
        let ac = self.specials_overlapping.as_ref()?;
        let all = self.vocab.specials();
        ac.find_overlapping_iter(text)
            .map(|m| &all[m.pattern().as_usize()])
            .find(|(_, id)| ids.contains(id))
            .map(|(s, _)| s.clone())
    }

    /// Splits text into plain segments and allowed special tokens (leftmost-longest among the
    /// allowed ones).
    fn encode_segments(
        &self,
        text: &str,
        allowed: &[u32],
        mut f: impl FnMut(Segment<'_>) -> Result<()>,
    ) -> Result<()> {
        if allowed.is_empty() || self.specials.is_none() {
            return f(Segment::Text(text));
        }
        let all = self.vocab.specials();
        let chosen: Vec<&(String, u32)> =
            all.iter().filter(|(_, id)| allowed.contains(id)).collect();
        let owned;
        let ac = if chosen.len() == all.len() {
            self.specials.as_ref()
        } else {
            owned = build_matcher(chosen.iter().map(|(s, _)| s.as_str()))?;
            owned.as_ref()
        };
        let Some(ac) = ac else {
            return f(Segment::Text(text));
        };
        let mut last = 0;
        for m in ac.find_iter(text) {
            if m.start() > last {
                f(Segment::Text(&text[last..m.start()]))?;
            }
            f(Segment::Special(chosen[m.pattern().as_usize()].1))?;
            last = m.end();
        }
        if last < text.len() {
            f(Segment::Text(&text[last..]))?;
        }
        Ok(())
    }

    /// Encodes many texts on up to `threads` threads; output in input order.
    pub fn encode_batch<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        allowed: &[u32],
        disallowed: &[u32],
        threads: usize,
    ) -> Result<Vec<Vec<u32>>> {
        let (flat, offsets) = self.encode_batch_flat(texts, allowed, disallowed, threads)?;
        Ok(offsets
            .windows(2)
            .map(|w| flat[w[0]..w[1]].to_vec())
            .collect())
    }

    /// `encode_batch` as one flat id vector and `texts.len() + 1` offsets into it.
    pub fn encode_batch_flat<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        allowed: &[u32],
        disallowed: &[u32],
        threads: usize,
    ) -> Result<(Vec<u32>, Vec<usize>)> {
        let runs = self.encode_batch_runs(texts, allowed, disallowed, threads)?;
        let mut flat = Vec::with_capacity(runs.iter().map(|r| r.ids.len()).sum());
        for run in &runs {
            flat.extend_from_slice(&run.ids);
        }
        Ok((flat, BatchRun::offsets(&runs)))
    }

    /// `encode_batch` as runs of consecutive texts (see `batch_runs`), encoded on `threads`
    /// threads.
    pub fn encode_batch_runs<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        allowed: &[u32],
        disallowed: &[u32],
        threads: usize,
    ) -> Result<Vec<BatchRun>> {
        let runs = batch_runs(texts);
        crate::par::map(&runs, threads, |run| {
            self.encode_run(&texts[run.clone()], allowed, disallowed)
        })
        .into_iter()
        .collect()
    }

    /// Encodes consecutive texts of a batch into one `BatchRun`.
    pub fn encode_run<S: AsRef<str>>(
        &self,
        texts: &[S],
        allowed: &[u32],
        disallowed: &[u32],
    ) -> Result<BatchRun> {
        let bytes: usize = texts.iter().map(|t| t.as_ref().len()).sum();
        let mut ids = Vec::with_capacity(bytes / 3 + 16);
        let mut lengths = Vec::with_capacity(texts.len());
        if allowed.is_empty() && disallowed.is_empty() && !self.ignore_merges {
            // The run's texts one after another, each pre-tokenized on its own, their pieces
            // in blocks that run on across texts: a short text costs no block of its own.
            let mut all = Vec::with_capacity(bytes);
            for t in texts {
                all.extend_from_slice(t.as_ref().as_bytes());
            }
            let mut ends = Vec::with_capacity(texts.len());
            self.with_cache(|cache| -> Result<()> {
                cache.reserve_for(bytes);
                let mut spans = [(0usize, 0usize); PIECE_BLOCK];
                let mut cuts = [0u8; PIECE_BLOCK + 1];
                let (mut n, mut c, mut at) = (0, 0, 0);
                for t in texts {
                    let t = t.as_ref();
                    self.pre.for_each_piece(t, |s, e| {
                        if n == PIECE_BLOCK {
                            let (spans, cuts) = (&spans[..], &cuts[..c]);
                            self.vocab
                                .encode_pieces_cut(&all, spans, cuts, &mut ids, cache, &mut ends);
                            (n, c) = (0, 0);
                        }
                        spans[n] = (at + s, at + e);
                        n += 1;
                    })?;
                    // The text ends after the block's first `n` pieces. (Empty texts end
                    // without a piece: once PIECE_BLOCK + 1 ends wait, the block is encoded.)
                    cuts[c] = n as u8;
                    c += 1;
                    if c == cuts.len() {
                        let (spans, cuts) = (&spans[..n], &cuts[..c]);
                        self.vocab
                            .encode_pieces_cut(&all, spans, cuts, &mut ids, cache, &mut ends);
                        (n, c) = (0, 0);
                    }
                    at += t.len();
                }
                let (spans, cuts) = (&spans[..n], &cuts[..c]);
                self.vocab
                    .encode_pieces_cut(&all, spans, cuts, &mut ids, cache, &mut ends);
                Ok(())
            })?;
            let mut before = 0;
            for end in ends {
                lengths.push(end - before);
                before = end;
            }
        } else {
            for t in texts {
                let before = ids.len();
                ids.extend(self.encode(t.as_ref(), allowed, disallowed)?);
                lengths.push(ids.len() - before);
            }
        }
        Ok(BatchRun { ids, lengths })
    }

    /// The bytes of a sequence of ids; fails on an id outside the vocabulary.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = vec![0; self.decoded_len(ids)?];
        self.vocab.decode_into(ids, &mut out);
        Ok(out)
    }

    /// How many bytes `ids` decode to; fails on an id outside the vocabulary.
    pub fn decoded_len(&self, ids: &[u32]) -> Result<usize> {
        self.vocab.decoded_len(ids).map_err(|id| Error::UnknownId {
            id: u64::from(id),
            vocab_size: self.vocab.len(),
        })
    }
}

enum Segment<'t> {
    Text(&'t str),
    Special(u32),
}

fn build_matcher<'a>(patterns: impl Iterator<Item = &'a str>) -> Result<Option<AhoCorasick>> {
    let patterns: Vec<&str> = patterns.collect();
    if patterns.is_empty() {
        return Ok(None);
    }
    AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(patterns)
        .map(Some)
        .map_err(|e| Error::Config(format!("special tokens: {e}")))
}

/// The ids reserved for encoding `bytes` bytes at once: one per two bytes, up to 2^28 (1 GiB;
/// beyond, the output grows as it fills), so that a huge text asks for no more memory up front
/// than it is likely to use.
fn id_room(bytes: usize) -> usize {
    (bytes / 2 + 1).min(1 << 28)
}

#[cfg(test)]
mod tests {
    use super::train::{train, TrainConfig};
    use super::*;
    use crate::count::Counter;

    fn trained(text: &str, vocab_size: usize, specials: &[&str]) -> Bpe {
        let pre = PreTokenizer::new("cl100k").expect("ok");
        let specials: Vec<String> = specials.iter().map(|s| s.to_string()).collect();
        let mut counter = Counter::new(pre.clone(), &specials, 1).expect("ok");
        counter.add_texts(&[text]).expect("ok");
        let cfg = TrainConfig {
            vocab_size,
            special_tokens: specials,
            ..TrainConfig::default()
        };
        let vocab = train(counter.counts(), &cfg).expect("trains");
        Bpe::new(vocab, pre, false).expect("ok")
    }

    const TEXT: &str = "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox \
                        runs.\nNumbers 1234567 and émojis 🦀 too!\n";

    #[test]
    fn round_trips() {
        let bpe = trained(&TEXT.repeat(20), 400, &[]);
        for t in [TEXT, "", "unseen wörds ∀x", "\u{0}\n\t  "] {
            let ids = bpe.encode_ordinary(t).expect("ok");
            assert_eq!(bpe.decode_bytes(&ids).expect("ok"), t.as_bytes());
        }
        assert!(bpe.encode_ordinary(TEXT).expect("ok").len() < TEXT.len() / 2);
    }

    #[test]
    fn runs_encode_each_text_alone() {
        // Texts of 0 to 80 pieces (so that blocks of pieces end inside texts, at their ends and
        // hold several), empty ones in a row (more text ends than a block has pieces), texts
        // that end in spaces or start with them: each text's ids exactly as encoded alone.
        let bpe = trained(&TEXT.repeat(20), 400, &[]);
        let words = ["the", " fox", "  ", "\n", "🦀", "1234", " wörds", ".", " "];
        let mut state = 7u64;
        let mut texts: Vec<String> = vec![String::new(); 40];
        for _ in 0..300 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = (state >> 33) as usize % 80;
            let text = (0..n)
                .map(|i| words[(state >> (i % 50)) as usize % words.len()])
                .collect::<String>();
            texts.push(text);
            if state.is_multiple_of(7) {
                texts.extend(std::iter::repeat_n(String::new(), 35));
            }
        }
        let run = bpe.encode_run(&texts, &[], &[]).expect("ok");
        assert_eq!(run.lengths.len(), texts.len());
        let mut at = 0;
        for (t, &n) in texts.iter().zip(&run.lengths) {
            assert_eq!(
                run.ids[at..at + n],
                bpe.encode_ordinary(t).expect("ok")[..],
                "{t:?}"
            );
            at += n;
        }
        assert_eq!(at, run.ids.len());
    }

    #[test]
    fn specials_allowed_disallowed_and_ordinary() {
        let bpe = trained(&TEXT.repeat(5), 300, &["<|end|>", "<|end|>x"]);
        let end = bpe.vocab().specials()[0].1;
        let endx = bpe.vocab().specials()[1].1;
        let text = "a<|end|>b<|end|>x";
        let ids = bpe.encode(text, &[end, endx], &[]).expect("ok");
        assert!(ids.contains(&end) && ids.contains(&endx));
        // Only "<|end|>" allowed: the longer one is not special, so its "<|end|>" prefix is.
        let ids = bpe.encode(text, &[end], &[]).expect("ok");
        assert!(ids.contains(&end) && !ids.contains(&endx));
        assert_eq!(bpe.decode_bytes(&ids).expect("ok"), text.as_bytes());
        assert!(matches!(
            bpe.encode(text, &[], &[endx]),
            Err(Error::DisallowedSpecial { token }) if token == "<|end|>x"
        ));
        let ordinary = bpe.encode(text, &[], &[]).expect("ok");
        assert!(!ordinary.contains(&end));
        assert_eq!(ordinary, bpe.encode_ordinary(text).expect("ok"));
    }

    #[test]
    fn offsets_cover_the_text() {
        let bpe = trained(&TEXT.repeat(5), 300, &["<|end|>"]);
        let text = "héllo<|end|> wörld";
        let end = bpe.vocab().specials()[0].1;
        let (ids, offsets) = bpe.encode_with_offsets(text, &[end], &[]).expect("ok");
        assert_eq!(ids.len(), offsets.len());
        let mut at = 0;
        for (&id, &(s, e)) in ids.iter().zip(&offsets) {
            assert_eq!(s, at);
            assert_eq!(
                &text.as_bytes()[s..e],
                bpe.vocab().token_bytes(id).expect("known")
            );
            at = e;
        }
        assert_eq!(at, text.len());
    }

    #[test]
    fn parallel_equals_serial_and_unknown_ids_fail() {
        let bpe = trained(&TEXT.repeat(20), 400, &[]);
        let big = TEXT.repeat(20_000);
        assert_eq!(
            bpe.encode_ordinary_parallel(&big, 3).expect("ok"),
            bpe.encode_ordinary(&big).expect("ok")
        );
        assert!(matches!(
            bpe.decode_bytes(&[1, 400]),
            Err(Error::UnknownId { id: 400, .. })
        ));
    }

    #[test]
    fn parts_equal_the_whole() {
        // Parts of every size from one character, cut anywhere (a part may end inside a
        // pre-token, or hold no safe cut): the ids are those of the whole text.
        let mut rng = crate::testing::Rng(0x5EED_1234_ABCD_0001);
        for pattern in ["cl100k", "o200k", "gpt2", r"\S+|\s+"] {
            let pre = PreTokenizer::new(pattern).expect("ok");
            let bpe = Bpe::new(trained(&TEXT.repeat(20), 400, &[]).vocab, pre, false).expect("ok");
            let mut text = String::new();
            for _ in 0..300 {
                text.push_str(
                    [
                        "\n",
                        "\n\n",
                        " ",
                        "word",
                        "Émoji 🦀",
                        "  x\n",
                        "12345",
                        "'s",
                        "\r\n",
                        "日本",
                    ][rng.below(10)],
                );
            }
            text.push_str(&TEXT.repeat(30));
            let chars: Vec<char> = text.chars().collect();
            for most in [1, 2, 7, 64, 1000] {
                let mut at = 0;
                let ids = bpe
                    .encode_ordinary_parts(text.len(), text.len(), |buf| {
                        let end = (at + 1 + rng.below(most)).min(chars.len());
                        buf.extend(&chars[at..end]);
                        at = end;
                        at < chars.len()
                    })
                    .expect("ok");
                assert_eq!(
                    ids,
                    bpe.encode_ordinary(&text).expect("ok"),
                    "{pattern} {most}"
                );
            }
        }
    }

    #[test]
    fn encode_bytes_round_trips_invalid_utf8() {
        let bpe = trained(&TEXT.repeat(20), 400, &[]);
        let raw = b"The fox \xff\xfe jumps \xe2\x82 over\xf0";
        let ids = bpe.encode_bytes(raw).expect("ok");
        assert_eq!(bpe.decode_bytes(&ids).expect("ok"), raw);
        assert_eq!(
            bpe.encode_bytes(TEXT.as_bytes()).expect("ok"),
            bpe.encode_ordinary(TEXT).expect("ok")
        );
    }

    /// Pieces of 16 bytes and more (the long-piece tables): whole tokens among them, and
    /// pieces that merge to several tokens, each met many times and in a varying order, encode
    /// as merging them afresh does, whatever the cache holds.
    #[test]
    fn long_pieces_encode_like_merging() {
        let words = [
            "supercalifragilisticexpialidocious",
            "antidisestablishmentarianism",
            "Pneumonoultramicroscopic",
            "данныеиинформация",
            "中华人民共和国宪法",
        ];
        let corpus: String = (0..400).map(|i| format!("{} ", words[i % 5])).collect();
        let bpe = trained(&corpus, 600, &[]);
        let vocab = bpe.vocab();
        let whole_long = (0..vocab.len() as u32)
            .filter_map(|id| vocab.token_bytes(id))
            .filter(|t| t.len() >= 16)
            .count();
        assert!(whole_long >= 3, "{whole_long} long tokens");
        let mut rng = crate::testing::Rng(11);
        for round in 0..50 {
            let mut text = String::new();
            for _ in 0..20 {
                let w = words[rng.below(5)];
                // Whole words, and their long and short prefixes (pieces never trained).
                let cut = if round % 2 == 0 {
                    w.len()
                } else {
                    rng.below(w.len()) + 1
                };
                let cut = (cut..=w.len())
                    .find(|&c| w.is_char_boundary(c))
                    .unwrap_or(w.len());
                text.push(' ');
                text.push_str(&w[..cut]);
            }
            let mut expected = Vec::new();
            bpe.pre_tokenizer()
                .for_each_piece(&text, |s, e| {
                    vocab.merge_piece(&text.as_bytes()[s..e], &mut expected)
                })
                .expect("ok");
            assert_eq!(bpe.encode_ordinary(&text).expect("ok"), expected);
        }
    }

    #[test]
    fn long_piece_without_whitespace() {
        let bpe = trained(&TEXT.repeat(20), 400, &[]);
        let long = "abcdefghij".repeat(100_000);
        let ids = bpe.encode_ordinary(&long).expect("ok");
        assert_eq!(bpe.decode_bytes(&ids).expect("ok"), long.as_bytes());
    }
}

/// Hot-loop timings on the benchmark corpus, not run by `cargo test`:
/// `TOKLAB_BENCH_DIR=/path/to/corpus cargo test --release --lib bpe::bench -- --ignored --nocapture`
/// (the directory of `benchmarks/run.py`'s corpus: `en_10M.txt`, `multi.txt`, and
/// `toklab-bench/toklab-32k-en_100M.txt.json`; `TOKLAB_BENCH_O200K` names an o200k `.tiktoken`
/// file to time that vocabulary too). One thread, best of five.
#[cfg(test)]
mod bench {
    use super::*;

    fn best_of(n: usize, mut f: impl FnMut()) -> f64 {
        (0..n)
            .map(|_| {
                let t = std::time::Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    }

    /// The tokens of a `.tiktoken` file whose lines are in rank order (as OpenAI's are).
    pub(super) fn tokens_of_ranks(text: &str) -> Vec<Vec<u8>> {
        io::parse_tiktoken(text.as_bytes())
            .expect("a .tiktoken file")
            .into_iter()
            .enumerate()
            .map(|(i, (token, rank))| {
                assert_eq!(rank as usize, i, "lines in rank order");
                token
            })
            .collect()
    }

    /// The corpus directory that `TOKLAB_BENCH_DIR` names (`None`, said on stderr, if unset).
    fn bench_dir() -> Option<std::path::PathBuf> {
        let dir = std::env::var_os("TOKLAB_BENCH_DIR").map(std::path::PathBuf::from);
        if dir.is_none() {
            eprintln!("set TOKLAB_BENCH_DIR");
        }
        dir
    }

    /// The benchmark's 32k tokenizer, and o200k's ranks where `TOKLAB_BENCH_O200K` names them.
    fn load(dir: &std::path::Path) -> Vec<(&'static str, Bpe)> {
        let mut tokenizers = Vec::new();
        let path = dir.join("toklab-bench/toklab-32k-en_100M.txt.json");
        let json = std::fs::read_to_string(path).expect("32k tokenizer");
        tokenizers.push(("32k", io::from_json(&json).expect("loads").0));
        if let Ok(path) = std::env::var("TOKLAB_BENCH_O200K") {
            let text = std::fs::read_to_string(path).expect("o200k ranks");
            let vocab = Vocab::from_ranks(tokens_of_ranks(&text), vec![]).expect("vocab");
            let pre = PreTokenizer::new("o200k").expect("ok");
            tokenizers.push(("o200k", Bpe::new(vocab, pre, false).expect("ok")));
        }
        tokenizers
    }

    #[test]
    #[ignore = "a benchmark"]
    fn hot_loops() {
        let Some(dir) = bench_dir() else {
            return;
        };
        let dir = dir.as_path();
        let only = std::env::var("TOKLAB_BENCH_ONLY").unwrap_or_default();
        for file in ["en_10M.txt", "multi.txt"] {
            let text = std::fs::read_to_string(dir.join(file)).expect("corpus");
            let mb = text.len() as f64 / 1e6;
            // Loaded afresh for each file, so that every run starts with empty piece caches.
            for (name, bpe) in &load(dir) {
                if !format!("{file} {name}").contains(&only) {
                    continue;
                }
                let mut pieces = 0usize;
                let pre = bpe.pre_tokenizer();
                let t_pre = best_of(5, || {
                    pieces = 0;
                    pre.for_each_piece(&text, |s, e| pieces += e - s + 1)
                        .expect("ok");
                });
                let mut ids = Vec::new();
                bpe.encode_ordinary("warm up").expect("ok"); // builds the whole-token table
                                                             // Cold: a fresh tokenizer (empty piece caches) over the same built tables.
                let fresh = || {
                    let (vocab, pre) = (bpe.vocab().clone(), bpe.pre_tokenizer().clone());
                    Bpe::new(vocab, pre, false).expect("ok")
                };
                let mut cold = f64::MAX;
                // TOKLAB_BENCH_COLD=n: n first calls and nothing else (for a profiler).
                let only_cold = std::env::var("TOKLAB_BENCH_COLD").ok();
                let colds = only_cold
                    .as_deref()
                    .map_or(3, |n| n.parse().expect("a count"));
                for _ in 0..colds {
                    let bpe = fresh();
                    let t = std::time::Instant::now();
                    ids = bpe.encode_ordinary(&text).expect("ok");
                    cold = cold.min(t.elapsed().as_secs_f64());
                }
                if only_cold.is_some() {
                    println!("{file} {name}: encode cold {:.0} ms", cold * 1e3);
                    continue;
                }
                let warm = best_of(5, || ids = bpe.encode_ordinary(&text).expect("ok"));
                // The same text as a batch of its blank-line-separated documents, on this
                // thread, warm: what a document costs beyond its pieces.
                let docs: Vec<&str> = text.split("\n\n").filter(|d| !d.is_empty()).collect();
                let runs = batch_runs(&docs);
                let t_pre_docs = best_of(5, || {
                    for d in &docs {
                        pre.for_each_piece(d, |s, e| pieces += e - s + 1)
                            .expect("ok");
                    }
                });
                println!("  pre-tokenize docs {:.1} ms", t_pre_docs * 1e3);
                let batch = best_of(5, || {
                    for run in &runs {
                        bpe.encode_run(&docs[run.clone()], &[], &[]).expect("ok");
                    }
                });
                println!(
                    "  batch of {} documents, warm, one thread: {:.0} ms ({:.0} MB/s)",
                    docs.len(),
                    batch * 1e3,
                    mb / batch
                );
                println!(
                    "{file} {name}: pre-tokenize {:.0} ms ({:.0} MB/s); encode cold {:.0} ms \
                     ({:.0} MB/s), warm {:.0} ms ({:.0} MB/s); {} ids",
                    t_pre * 1e3,
                    mb / t_pre,
                    cold * 1e3,
                    mb / cold,
                    warm * 1e3,
                    mb / warm,
                    ids.len() + pieces % 2 - pieces % 2,
                );
                let stats = bpe.with_cache(|c| c.stats());
                println!("  {} {stats}", bpe.vocab().whole_stats());
            }
        }
    }

    /// Reading and writing o200k (`TOKLAB_BENCH_O200K` names its `.tiktoken` file) in each
    /// format, and the stages of each: `TOKLAB_BENCH_O200K=... cargo test --release --lib
    /// bpe::bench::formats -- --ignored --nocapture`.
    #[test]
    #[ignore = "a benchmark"]
    fn formats() {
        let Ok(path) = std::env::var("TOKLAB_BENCH_O200K") else {
            eprintln!("set TOKLAB_BENCH_O200K");
            return;
        };
        let data = std::fs::read(path).expect("o200k ranks");
        let ms = |t: f64| t * 1e3;
        let mut tokens = Vec::new();
        let t = best_of(3, || {
            tokens = tokens_of_ranks(std::str::from_utf8(&data).expect("ASCII"));
        });
        println!("parse .tiktoken: {:.1} ms", ms(t));
        let mut vocab = None;
        let t = best_of(3, || {
            vocab = Some(Vocab::from_ranks(tokens.clone(), vec![]).expect("ok"))
        });
        println!(
            "Vocab::from_ranks (merges derived, whole tokens known): {:.1} ms",
            ms(t)
        );
        let vocab = vocab.expect("built");
        let pairs: Vec<(u32, u32)> = vocab.merges().iter().map(|m| (m.left, m.right)).collect();
        let t = best_of(3, || {
            Vocab::new(tokens.clone(), &pairs, vec![]).expect("ok");
        });
        println!("Vocab::new with the merges: {:.1} ms", ms(t));
        let t = best_of(3, || {
            let v = Vocab::new(tokens.clone(), &pairs, vec![]).expect("ok");
            v.whole_stats();
        });
        println!(
            "  ... and its whole-token check (all cores): {:.1} ms",
            ms(t)
        );
        let t = best_of(3, || {
            PreTokenizer::new("o200k").expect("ok");
        });
        println!("PreTokenizer::new(o200k): {:.1} ms", ms(t));
        let bpe = Bpe::new(vocab, PreTokenizer::new("o200k").expect("ok"), false).expect("ok");
        let mut json = String::new();
        let t = best_of(3, || json = io::to_json(&bpe, "").expect("ok"));
        println!("to_json: {:.1} ms ({} MB)", ms(t), json.len() >> 20);
        let t = best_of(3, || {
            io::from_json(&json).expect("ok");
        });
        println!("from_json: {:.1} ms", ms(t));
        let mut tables = String::new();
        let t = best_of(3, || tables = hf::tables_json(bpe.vocab()));
        println!("hf::tables_json: {:.1} ms", ms(t));
        let file = format!("{{\"model\": {{\"type\": \"BPE\", {tables}}}}}");
        let mut model = None;
        let t = best_of(3, || {
            model = Some(hf::split_hf(file.as_bytes()).expect("ok").1)
        });
        println!("hf::split_hf: {:.1} ms", ms(t));
        let model = model.expect("read");
        let pattern = bpe.pre_tokenizer().pattern().to_string();
        let t = best_of(3, || {
            model.build(&[], &pattern, false).expect("ok");
        });
        println!("HfModel::build: {:.1} ms", ms(t));
    }

    /// Merging the distinct pieces of a file that are not tokens (what a first call on it
    /// merges), by length: `TOKLAB_BENCH_DIR=... TOKLAB_BENCH_O200K=... cargo test --release
    /// --lib bpe::bench::merge_new_pieces -- --ignored --nocapture`.
    #[test]
    #[ignore = "a benchmark"]
    fn merge_new_pieces() {
        let Some(dir) = bench_dir() else {
            return;
        };
        let dir = dir.as_path();
        let tokenizers = load(dir);
        for file in ["en_10M.txt", "multi.txt"] {
            let text = std::fs::read_to_string(dir.join(file)).expect("corpus");
            for (name, bpe) in &tokenizers {
                let v = bpe.vocab();
                let mut seen = rustc_hash::FxHashSet::default();
                let mut pieces: Vec<&[u8]> = Vec::new();
                bpe.pre_tokenizer()
                    .for_each_piece(&text, |s, e| {
                        let p = &text.as_bytes()[s..e];
                        if p.len() >= 2 && v.token_id(p).is_none() && seen.insert(p) {
                            pieces.push(p);
                        }
                    })
                    .expect("ok");
                let mut out = Vec::new();
                for (label, range) in [
                    ("2-16", 2..17),
                    ("17-128", 17..129),
                    ("129+", 129..usize::MAX),
                ] {
                    let these: Vec<&[u8]> = pieces
                        .iter()
                        .copied()
                        .filter(|p| range.contains(&p.len()))
                        .collect();
                    let bytes: usize = these.iter().map(|p| p.len()).sum();
                    let t = best_of(5, || {
                        out.clear();
                        for p in &these {
                            v.merge_piece(p, &mut out);
                        }
                    });
                    println!(
                        "{file} {name}: {} pieces of {label} bytes ({bytes} bytes, {} ids): \
                         {:.1} ms, {:.0} ns a piece",
                        these.len(),
                        out.len(),
                        t * 1e3,
                        t * 1e9 / these.len().max(1) as f64,
                    );
                }
            }
        }
    }
}
