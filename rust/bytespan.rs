//! ByteSpan (Goriely et al., "ByteSpan: Information-Driven Subword Tokenisation", 2025): a
//! vocabulary of contiguous byte spans that a byte-level LM finds predictable, and greedy
//! longest-match (or BPE) inference over it.
//!
//! **Spans** (one linear pass over a document's bytes and its per-byte signal, surprisal or
//! entropy). A byte is *grouped* with the one before it when the signal falls (`s[t] <
//! s[t - 1]`, the monotonic constraint) or, with a threshold `θ` (the combined constraint), also
//! when `s[t] < θ`; the first byte of a document never is. A span is a byte that is not grouped
//! followed by the run of grouped bytes after it, two bytes or more. Then the reference's
//! pre-token rules: a span that starts just after a space that opens its pre-token takes the
//! space in; a span never ends on the first byte of the next pre-token; a span is cut at every
//! pre-token boundary inside it (pieces of one byte are dropped: every byte is in the
//! vocabulary anyway).
//!
//! **The global constraint** ([`global_spans`]) has no threshold of its own: bytes join
//! segments from the lowest signal up, under the same pre-token rules, until the vocabulary's
//! worth of segment strings occur `min_count` times (each pre-token grown on its own, in
//! parallel; births counted first, which often proves that the growth never stops; else the
//! count changes replayed in signal order, sorted only near the stop).
//!
//! **Tokens** are byte strings with a flag: *word-initial* (starting at a pre-token boundary) or
//! *continuation*. All 256 bytes are tokens of both kinds, so every input encodes; no marker
//! (`##`, `Ġ`) is ever part of a token's bytes, so decoding is concatenation and always exact.
//!
//! **Inference**: within each pre-token, the longest word-initial token that prefixes it, then
//! repeatedly the longest continuation token that prefixes the rest. No length limit, no
//! unknown token.
//! Or BPE inference ([`SpanVocab::encode_bpe`]) with merges derived from the vocabulary
//! (see `derive_merges`).

use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::pretok::PreTokenizer;

/// How the signal groups bytes into spans.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Constraint {
    /// Grouped when the signal falls.
    Monotonic,
    /// Grouped when the signal falls or is below the threshold.
    Combined { threshold: f32 },
}

/// Pre-token boundaries of a text: `true` at the first byte of every piece.
pub fn boundaries(pre: &PreTokenizer, text: &str) -> Result<Vec<bool>> {
    let mut out = vec![false; text.len()];
    pre.for_each_piece(text, |s, _| {
        if s < out.len() {
            out[s] = true;
        }
    })?;
    Ok(out)
}

/// Checks a signal: one finite value per byte.
pub fn check_signal(signal: &[f32], n_bytes: usize) -> Result<()> {
    if signal.len() != n_bytes {
        return Err(Error::Signal(format!(
            "the signal has {} values for {} bytes: one per byte is needed",
            signal.len(),
            n_bytes
        )));
    }
    // Chunked so that the common, all-finite case vectorizes; then find the first bad value.
    let finite = signal
        .chunks(64)
        .all(|c| c.iter().fold(true, |ok, v| ok & v.is_finite()));
    if let Some(i) = (!finite)
        .then(|| signal.iter().position(|v| !v.is_finite()))
        .flatten()
    {
        return Err(Error::Signal(format!(
            "the signal is not finite at byte {i} ({})",
            signal[i]
        )));
    }
    Ok(())
}

/// `e`, said of document `i`.
pub fn in_document(i: usize, e: Error) -> Error {
    match e {
        Error::Signal(m) => Error::Signal(format!("document {i}: {m}")),
        Error::Config(m) => Error::Config(format!("document {i}: {m}")),
        other => other,
    }
}

/// Calls `f(start, end, initial)` for every span of one document (see the module
/// documentation); `initial` says whether the span starts at a pre-token boundary.
pub fn find_spans(
    bytes: &[u8],
    signal: &[f32],
    ptb: &[bool],
    constraint: Constraint,
    mut f: impl FnMut(usize, usize, bool),
) {
    let n = bytes.len();
    let grouped = |t: usize| -> bool {
        if t == 0 {
            return false;
        }
        let falls = signal[t] < signal[t - 1];
        match constraint {
            Constraint::Monotonic => falls,
            Constraint::Combined { threshold } => falls || signal[t] < threshold,
        }
    };
    let mut i = 0;
    while i < n {
        // i is an onset (not grouped); extend over the grouped bytes after it.
        let mut j = i;
        while j + 1 < n && grouped(j + 1) {
            j += 1;
        }
        let next = j + 1;
        if j > i {
            let (mut s, mut e) = (i, j);
            if !ptb[s] && s > 0 && bytes[s - 1] == b' ' && ptb[s - 1] {
                s -= 1; // absorb the space that opens the pre-token
            }
            if ptb[e] {
                e -= 1; // never end on the first byte of the next pre-token
            }
            if s < e {
                // Cut at internal pre-token boundaries; keep pieces of two bytes or more.
                let mut from = s;
                for k in s + 1..=e {
                    if ptb[k] {
                        if k - from >= 2 {
                            f(from, k, ptb[from]);
                        }
                        from = k;
                    }
                }
                if e + 1 - from >= 2 {
                    f(from, e + 1, ptb[from]);
                }
            }
        }
        i = next;
    }
}

/// Counts of byte strings with a word-initial flag, by size class.
///
/// Performance note: hashing and comparing byte slices dominated span counting, and then cache
/// misses in one large table did. So two-byte strings (about half of all spans) are counted in
/// a flat array; strings of up to 7 bytes are packed with their length and flag into a `u64`
/// key and up to 15 bytes into a `u128` key (an integer hash, an integer compare, small table
/// entries); only longer strings borrow their bytes. Mergeable across documents and threads.
#[derive(Clone, Debug, Default)]
pub struct PackedCounts<'a> {
    pairs: Vec<u64>,
    small: FxHashMap<u64, u64>,
    short: FxHashMap<u128, u64>,
    long: FxHashMap<(bool, &'a [u8]), u64>,
}

/// The longest strings packed into a `u64` and a `u128` key.
const SMALL: usize = 7;
const PACKED: usize = 15;

/// `bytes` (at most [`SMALL`] long), its length and the flag in one integer.
fn pack_small(initial: bool, bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(buf) | (bytes.len() as u64) << 56 | u64::from(initial) << 63
}

fn unpack_small(key: u64) -> (bool, Vec<u8>) {
    let len = ((key >> 56) & 0x7F) as usize;
    (key >> 63 == 1, key.to_le_bytes()[..len].to_vec())
}

/// `bytes` (at most [`PACKED`] long), its length and the flag in one integer.
fn pack(initial: bool, bytes: &[u8]) -> u128 {
    let mut buf = [0u8; 16];
    buf[..bytes.len()].copy_from_slice(bytes);
    u128::from_le_bytes(buf) | (bytes.len() as u128) << 120 | u128::from(initial) << 127
}

fn unpack(key: u128) -> (bool, Vec<u8>) {
    let len = ((key >> 120) & 0x7F) as usize;
    (key >> 127 == 1, key.to_le_bytes()[..len].to_vec())
}

fn bump<K: std::hash::Hash + Eq>(map: &mut FxHashMap<K, u64>, k: K, delta: i64) -> u64 {
    let c = map.entry(k).or_insert(0);
    *c = c.saturating_add_signed(delta);
    *c
}

impl<'a> PackedCounts<'a> {
    /// Adds `delta` to the count of `(initial, bytes)` (two bytes or more) and returns the
    /// new count. A count never falls below zero; hashed entries that reach zero are removed.
    pub fn add(&mut self, initial: bool, bytes: &'a [u8], delta: i64) -> u64 {
        match bytes.len() {
            2 => {
                if self.pairs.is_empty() {
                    self.pairs = vec![0; 1 << 17];
                }
                let at = usize::from(initial) << 16 | usize::from(bytes[0]) << 8;
                let c = &mut self.pairs[at | usize::from(bytes[1])];
                *c = c.saturating_add_signed(delta);
                *c
            }
            n if n <= SMALL => {
                let k = pack_small(initial, bytes);
                let c = bump(&mut self.small, k, delta);
                if c == 0 {
                    self.small.remove(&k);
                }
                c
            }
            n if n <= PACKED => {
                let k = pack(initial, bytes);
                let c = bump(&mut self.short, k, delta);
                if c == 0 {
                    self.short.remove(&k);
                }
                c
            }
            _ => {
                let c = bump(&mut self.long, (initial, bytes), delta);
                if c == 0 {
                    self.long.remove(&(initial, bytes));
                }
                c
            }
        }
    }

    pub fn merge(&mut self, other: PackedCounts<'a>) {
        fn merge_map<K: std::hash::Hash + Eq>(
            mine: &mut FxHashMap<K, u64>,
            mut theirs: FxHashMap<K, u64>,
        ) {
            if theirs.len() > mine.len() {
                std::mem::swap(mine, &mut theirs);
            }
            for (k, v) in theirs {
                *mine.entry(k).or_insert(0) += v;
            }
        }
        merge_map(&mut self.small, other.small);
        merge_map(&mut self.short, other.short);
        merge_map(&mut self.long, other.long);
        if self.pairs.is_empty() {
            self.pairs = other.pairs;
        } else {
            for (a, b) in self.pairs.iter_mut().zip(other.pairs) {
                *a += b;
            }
        }
    }

    /// Distinct strings counted (count above zero).
    pub fn len(&self) -> usize {
        self.pairs.iter().filter(|&&c| c > 0).count()
            + self.small.len()
            + self.short.len()
            + self.long.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `n` most frequent strings with a count of `min_count` or more (ties: shorter
    /// first, then by flag and bytes).
    pub fn top(&self, n: usize, min_count: u64) -> Vec<((bool, Vec<u8>), u64)> {
        let keep = |c: u64| c >= min_count.max(1);
        let pairs = self.pairs.iter().enumerate().filter(|&(_, &c)| keep(c));
        let all: Vec<((bool, Vec<u8>), u64)> = pairs
            .map(|(at, &c)| ((at >> 16 == 1, vec![(at >> 8) as u8, at as u8]), c))
            .chain(
                self.small
                    .iter()
                    .filter(|&(_, &c)| keep(c))
                    .map(|(&k, &c)| (unpack_small(k), c)),
            )
            .chain(
                self.short
                    .iter()
                    .filter(|&(_, &c)| keep(c))
                    .map(|(&k, &c)| (unpack(k), c)),
            )
            .chain(
                self.long
                    .iter()
                    .filter(|&(_, &c)| keep(c))
                    .map(|(&(f, b), &c)| ((f, b.to_vec()), c)),
            )
            .collect();
        ranked(all, n)
    }
}

/// The `n` first of `all` by count (descending), then length, flag and bytes.
fn ranked(mut all: Vec<((bool, Vec<u8>), u64)>, n: usize) -> Vec<((bool, Vec<u8>), u64)> {
    let order = |a: &((bool, Vec<u8>), u64), b: &((bool, Vec<u8>), u64)| {
        b.1.cmp(&a.1)
            .then(a.0 .1.len().cmp(&b.0 .1.len()))
            .then(a.0.cmp(&b.0))
    };
    if n < all.len() {
        all.select_nth_unstable_by(n, order);
        all.truncate(n);
    }
    all.sort_unstable_by(order);
    all
}

/// Counts of spans over documents (see [`PackedCounts`]), with a reused pre-token boundary
/// buffer.
#[derive(Clone, Debug, Default)]
pub struct SpanCounts<'a> {
    pub counts: PackedCounts<'a>,
    ptb: Vec<bool>,
}

impl<'a> SpanCounts<'a> {
    /// Adds the spans of one document.
    pub fn add(
        &mut self,
        pre: &PreTokenizer,
        text: &'a str,
        signal: &[f32],
        constraint: Constraint,
    ) -> Result<()> {
        check_signal(signal, text.len())?;
        let bytes = text.as_bytes();
        let mut ptb = std::mem::take(&mut self.ptb);
        ptb.clear();
        ptb.resize(bytes.len(), false);
        pre.for_each_piece(text, |s, _| ptb[s] = true)?;
        let counts = &mut self.counts;
        find_spans(bytes, signal, &ptb, constraint, |s, e, initial| {
            counts.add(initial, &bytes[s..e], 1);
        });
        self.ptb = ptb;
        Ok(())
    }

    pub fn merge(&mut self, other: SpanCounts<'a>) {
        self.counts.merge(other.counts);
    }

    /// Distinct spans.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The `n` most frequent spans (ties: shorter first, then by flag and bytes).
    pub fn top(&self, n: usize) -> Vec<((bool, Vec<u8>), u64)> {
        self.counts.top(n, 1)
    }
}

/// The global constraint's vocabulary: segment strings by count (descending; ties as
/// [`SpanCounts::top`]) and how far the growth went.
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalSpans {
    /// `(word_initial, bytes)` and count of every segment string of two bytes or more that
    /// occurs at least `min_count` times when the growth stopped.
    pub tokens: Vec<((bool, Vec<u8>), u64)>,
    /// Bytes grown into segments (the corpus's lowest-signal bytes).
    pub steps: usize,
    /// The signal of the last byte grown, the threshold the growth reached (None: no step).
    pub threshold: Option<f32>,
    /// Whether `want` tokens were reached (false: the whole corpus was grown first).
    pub full: bool,
}

/// Maps an `f32` to a `u32` with the same order (`-0.0` counts as `0.0`).
fn ordered_bits(x: f32) -> u32 {
    let b = (x + 0.0).to_bits();
    // Negative: all bits flipped; else the sign bit set (without a branch, so loops vectorize).
    b ^ (((b as i32) >> 31) as u32 | 0x8000_0000)
}

/// ByteSpan's global constraint: grows segments in ascending order of the signal (ties by
/// position) until `want` segment strings occur `min_count` times or more.
///
/// Every byte starts outside any segment. Taking bytes from the lowest signal up, a byte joins
/// the segment just before it unless it starts a pre-token, and the segment just after it
/// unless that one starts a pre-token: segments are the maximal runs of grown bytes inside one
/// pre-token. A segment's string is its bytes, with the space before it when that space opens
/// the pre-token and the segment starts right after it (the same rule as [`find_spans`]); it is
/// word-initial when the string starts at a pre-token boundary. The counts of all current
/// segment strings (two bytes or more) are kept as the segments grow; the growth stops as soon
/// as `want` strings reach `min_count` (checked after every byte, where the reference checks
/// every thousand bytes and truncates), or when every byte has grown.
///
/// `docs[i]` are the bytes of document `i`, `ptbs[i]` its pre-token boundaries (see
/// [`boundaries`]), `signals[i]` its checked signal; `threads` (0: all cores) grow pre-tokens
/// in parallel, with the same result for any number. ([`global_spans_of_texts`] finds the
/// boundaries itself.)
///
/// How: a pre-token's segments depend only on the order of its own bytes, so each pre-token is
/// grown on its own, in cache, and distinct short pre-tokens (most bytes) keep a table of their
/// segments. A first pass counts how often each string is born; a string never occurs more
/// often than it was born, so unless `want` strings are born `min_count` times the growth
/// cannot stop, and the answer is the whole pre-tokens' counts. Otherwise a second pass
/// records what each byte's step does to the counts of those strings, bucketed by the signal's
/// top bits, and the buckets are replayed in signal order (`Replay`): a bucket whose bytes
/// cannot bring `want` strings to `min_count` at any point (bounded from its new occurrences)
/// is replayed in any order, and only the others are sorted. No per-byte sort of the corpus
/// and no per-byte hashing of strings (see `grow`). `global_spans_reference` (in the tests) is
/// the direct algorithm.
pub fn global_spans(
    docs: &[&[u8]],
    ptbs: &[&[bool]],
    signals: &[&[f32]],
    want: usize,
    min_count: u64,
    threads: usize,
) -> Result<GlobalSpans> {
    if ptbs.len() != docs.len() {
        return Err(Error::Config(format!(
            "{} documents and {} boundary arrays",
            docs.len(),
            ptbs.len(),
        )));
    }
    let mark = |i: usize, range: std::ops::Range<usize>, flags: &mut [u8]| {
        if ptbs[i].len() != docs[i].len() {
            return Err(Error::Config(
                "one pre-token flag per byte is needed".into(),
            ));
        }
        for (f, &p) in flags.iter_mut().zip(&ptbs[i][range]) {
            *f = u8::from(p) * PTB;
        }
        Ok(())
    };
    // (Any byte can end a part: the boundaries are given.)
    let cut = |i: usize, target: usize| {
        let n = docs[i].len();
        (0..n)
            .step_by(target.max(1))
            .map(|s| (n - s).min(target))
            .collect()
    };
    global_spans_by(docs, &mark, &cut, signals, None, want, min_count, threads)
}

/// [`global_spans`] of texts, with the pre-token boundaries that `pre` finds (written straight
/// into the corpus's flags).
pub fn global_spans_of_texts(
    texts: &[&str],
    pre: &PreTokenizer,
    signals: &[&[f32]],
    want: usize,
    min_count: u64,
    threads: usize,
) -> Result<GlobalSpans> {
    let docs: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
    let mark = |i: usize, range: std::ops::Range<usize>, flags: &mut [u8]| {
        pre.for_each_piece(&texts[i][range], |s, _| {
            if let Some(f) = flags.get_mut(s) {
                *f = PTB;
            }
        })
    };
    let cut = |i: usize, target: usize| text_parts(pre, texts[i], target);
    global_spans_by(&docs, &mark, &cut, signals, None, want, min_count, threads)
}

/// [`global_spans_of_texts`], where `signals` are consecutive slices of `whole` (views of one
/// array, like the slices of a cached signal): where no value is negative (nor `-0.0`), the
/// growth reads its keys from `whole` in place, as the bits of the floats (whose order they
/// share), where it would otherwise copy them: 4 bytes per byte of text that need not be
/// written (nor mapped, on first write, page by page).
pub fn global_spans_of_texts_in(
    texts: &[&str],
    pre: &PreTokenizer,
    signals: &[&[f32]],
    whole: &[f32],
    want: usize,
    min_count: u64,
    threads: usize,
) -> Result<GlobalSpans> {
    let mut at = whole.as_ptr();
    // (Pointers compared, never read; an empty slice's may be anywhere.)
    for s in signals.iter().filter(|s| !s.is_empty()) {
        if s.as_ptr() != at {
            return Err(Error::Config(
                "the signals are not consecutive slices of the whole signal".into(),
            ));
        }
        at = s.as_ptr().wrapping_add(s.len());
    }
    if at != whole.as_ptr().wrapping_add(whole.len()) {
        return Err(Error::Config(
            "the signals do not cover the whole signal".into(),
        ));
    }
    let docs: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
    let mark = |i: usize, range: std::ops::Range<usize>, flags: &mut [u8]| {
        pre.for_each_piece(&texts[i][range], |s, _| {
            if let Some(f) = flags.get_mut(s) {
                *f = PTB;
            }
        })
    };
    let cut = |i: usize, target: usize| text_parts(pre, texts[i], target);
    global_spans_by(
        &docs,
        &mark,
        &cut,
        signals,
        Some(whole),
        want,
        min_count,
        threads,
    )
}

/// Marks the pre-token starts of bytes `range` of document `i` in their flags (all zero
/// before) with [`PTB`] (`range` from a [`Cutter`]).
type Marker<'m> = dyn Fn(usize, std::ops::Range<usize>, &mut [u8]) -> Result<()> + Sync + 'm;

/// The lengths of consecutive parts of about `target` bytes that document `i` can be cut into
/// for a [`Marker`] (at safe cuts of the pre-tokenizer, for text).
type Cutter<'c> = dyn Fn(usize, usize) -> Vec<usize> + Sync + 'c;

/// [`Cutter`] for a text and its pre-tokenizer: the parts at its safe cuts (the whole text
/// where it has none).
fn text_parts(pre: &PreTokenizer, text: &str, target: usize) -> Vec<usize> {
    pre.split_at_safe_cuts(text, target)
        .iter()
        .map(|p| p.len())
        .collect()
}

/// [`global_spans`], with the pre-token boundaries from `mark` (and `signals` also as one
/// slice, `whole`, when the caller has it: see [`global_spans_of_texts_in`]).
#[allow(clippy::too_many_arguments)]
fn global_spans_by(
    docs: &[&[u8]],
    mark: &Marker,
    cut: &Cutter,
    signals: &[&[f32]],
    whole: Option<&[f32]>,
    want: usize,
    min_count: u64,
    threads: usize,
) -> Result<GlobalSpans> {
    if min_count == 0 {
        return Err(Error::Config("min_count must be at least 1".into()));
    }
    let total: usize = docs.iter().map(|d| d.len()).sum();
    if total >= u32::MAX as usize {
        return Err(Error::Config(format!(
            "the global constraint takes under 4 GiB of text, not {total} bytes"
        )));
    }
    if signals.len() != docs.len() {
        return Err(Error::Config(format!(
            "{} documents and {} signals",
            docs.len(),
            signals.len()
        )));
    }
    // The concatenated corpus, filled (and checked) by threads over runs of documents of about
    // equal size; the bytes have 16 bytes of padding for `pack_at`.
    let runs = crate::par::thread_count(threads, total / MIN_RANGE);
    // Only the growth's hash tables (the slots of `PieceTable` and `Interner`, read at random)
    // are advised onto huge pages. Its other large buffers (these, the records, the pre-token
    // lists and the tables) are written in order, and on the development VM their huge pages
    // made first calls slower and less steady: with two threads faulting huge pages in at
    // once, one thread's share of this copy took 41-56 ms against 18-24 with 4 KiB pages; on
    // one thread, first calls at 4k ranged 21-34 MB/s against 31-34 (see
    // benchmarks/RESULTS.md).
    let mut bytes: Vec<u8> = vec![0; total + 16];
    let mut flags: Vec<u8> = vec![0; total];
    // The keys: copied from the signals, or read from `whole` in place (below).
    let mut keys: Vec<u32> = vec![0; if whole.is_some() { 0 } else { total }];
    // The parts of the documents (`(document, bytes)`): whole documents, but for those larger
    // than a quarter of a thread's share, cut where their pre-tokens allow (so that a corpus
    // of a few large files still fills on every thread).
    let share = (total / (4 * runs)).max(MIN_RANGE);
    let mut parts: Vec<(usize, std::ops::Range<usize>)> = Vec::with_capacity(docs.len());
    for (i, d) in docs.iter().enumerate() {
        if runs == 1 || d.len() <= share || signals[i].len() != d.len() {
            parts.push((i, 0..d.len()));
            continue;
        }
        let mut at = 0;
        for len in cut(i, share) {
            parts.push((i, at..at + len));
            at += len;
        }
        debug_assert_eq!(at, d.len());
    }
    // Runs of parts of about equal size, each with its slices of the buffers: four per thread,
    // which the threads take in turn (their cores' speeds, and the text's cost per byte, vary).
    let groups = if runs == 1 { 1 } else { 4 * runs };
    let mut jobs = Vec::with_capacity(groups);
    let (mut b, mut f, mut k) = (&mut bytes[..total], &mut flags[..], &mut keys[..]);
    let (mut first, mut done) = (0, 0);
    for run in 1..=groups {
        let (mut last, mut size) = (first, 0);
        while last < parts.len() && (run == groups || done + size < total * run / groups) {
            size += parts[last].1.len();
            last += 1;
        }
        let (b0, b1) = std::mem::take(&mut b).split_at_mut(size);
        let (f0, f1) = std::mem::take(&mut f).split_at_mut(size);
        let key_len = size.min(k.len()); // (no keys to copy with `whole`)
        let (k0, k1) = std::mem::take(&mut k).split_at_mut(key_len);
        jobs.push(std::sync::Mutex::new(Some((
            &parts[first..last],
            b0,
            f0,
            k0,
        ))));
        (b, f, k, first, done) = (b1, f1, k1, last, done + size);
    }
    // Each run also finds its largest key (and, with `whole`, whether any of its values has
    // the sign bit set). The results come back in the runs' order.
    type Job<'j> = (
        &'j [(usize, std::ops::Range<usize>)],
        &'j mut [u8],
        &'j mut [u8],
        &'j mut [u32],
    );
    type Filled = (Option<u32>, bool);
    let fill = |(parts, b, f, k): Job| -> Result<Filled> {
        let (mut at, mut signed, mut top) = (0, 0, None::<u32>);
        for (i, range) in parts.iter().cloned() {
            let (d, s) = (docs[i], signals[i]);
            // (A document's signal is checked whole, as its first part's, or where a part's
            // values are not all finite: then the check says where.)
            if s.len() != d.len() {
                check_signal(s, d.len()).map_err(|e| in_document(i, e))?;
            }
            let (d, s) = (&d[range.clone()], &s[range.clone()]);
            let n = d.len();
            // In place: the check, the sign bits and the largest key in one pass over the
            // signal (the check's own pass only to say what is wrong).
            let folded = whole.is_some();
            if folded {
                let (bad, any, max) = as_bits(s).chunks(64).fold((0, 0, 0), |acc, c| {
                    c.iter().fold(acc, |(bad, any, max), &x| {
                        let inf_or_nan = u32::from(x & 0x7FFF_FFFF >= 0x7F80_0000);
                        (bad | inf_or_nan, any | x, max.max(x))
                    })
                });
                if bad != 0 {
                    check_signal(signals[i], docs[i].len()).map_err(|e| in_document(i, e))?;
                }
                signed |= any >> 31;
                top = (n > 0).then_some(max).max(top);
            } else if check_signal(s, n).is_err() {
                check_signal(signals[i], docs[i].len()).map_err(|e| in_document(i, e))?;
            }
            b[at..at + n].copy_from_slice(d);
            let f = &mut f[at..at + n];
            mark(i, range, f).map_err(|e| in_document(i, e))?;
            for (f, &b) in f.iter_mut().zip(d) {
                *f |= u8::from(b == b' ') * SPACE;
            }
            if !folded {
                for (k, &x) in k[at..at + n].iter_mut().zip(s.iter()) {
                    *k = ordered_bits(x);
                }
            }
            at += n;
        }
        // (With `whole`, only used where no sign bit is set: then the bits are the keys.)
        if whole.is_none() {
            top = k.iter().copied().max();
        }
        Ok((top, signed != 0))
    };
    let filled: Vec<Result<Filled>> = crate::par::map(&jobs, runs, |job| {
        let job = job.lock().unwrap_or_else(|e| e.into_inner()).take();
        fill(job.expect("each run is taken once"))
    });
    // The first document in error, as one pass would have found it.
    let filled = filled.into_iter().collect::<Result<Vec<_>>>()?;
    let mut top = filled.iter().filter_map(|f| f.0).max();
    // `whole`'s bits order the keys like `ordered_bits` when no sign bit is set (all values
    // `+0.0` or more); else they are copied after all.
    let copied: Vec<u32>;
    let keys: &[u32] = match whole {
        None => &keys,
        Some(w) if filled.iter().all(|f| !f.1) => as_bits(w),
        Some(w) => {
            copied = w.iter().map(|&x| ordered_bits(x)).collect();
            top = copied.iter().copied().max();
            &copied
        }
    };
    #[cfg(test)]
    if whole.is_some() && keys.as_ptr() == whole.map_or(std::ptr::null(), |w| w.as_ptr().cast()) {
        PATHS.with(|p| {
            let mut v = p.get();
            v[6] += 1;
            p.set(v);
        });
    }
    let mut out = GlobalSpans {
        tokens: Vec::new(),
        steps: 0,
        threshold: None,
        full: want == 0,
    };
    if want == 0 {
        return Ok(out);
    }

    let grown = grow(&bytes, &flags, keys, want, min_count, threads);
    // The last byte grown: where the growth stopped, else the last position with the largest
    // key; and how many bytes grew up to it, in growth order (key, then position).
    let (t, steps) = match grown.stop {
        Some((at, steps)) => (Some(at), steps),
        None => (
            top.and_then(|top| keys.iter().rposition(|&k| k == top)),
            total,
        ),
    };
    out.full = grown.stop.is_some();
    out.steps = steps;
    out.threshold = t.map(|t| signal_at(signals, t));
    out.tokens = ranked(grown.tokens, want);
    Ok(out)
}

/// The bits of `x`'s floats, in place.
fn as_bits(x: &[f32]) -> &[u32] {
    // SAFETY: `f32` and `u32` have the same size and alignment, and any bits are a `u32`.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u32>(), x.len()) }
}

// Per position of the concatenated corpus: bit 0 starts a pre-token, bit 1 is a space.
const PTB: u8 = 1;
const SPACE: u8 = 2;

/// No string: a segment of one byte.
const NO_ID: u32 = u32::MAX;

/// What growing one byte does to the counts, as [`grow`]'s second pass records it: the byte's
/// key ([`ordered_bits`] of its signal) and the dense live ids of the strings of the segments
/// it joins on its left and its right (which stop occurring) and of the segment it makes
/// ([`Record::NONE`]: no live string). No position: [`Pass2::position`] finds the one needed.
trait Record: Copy + Default + Send + Sync {
    /// No live string (every live id is below it).
    const NONE: u32;
    /// Which of [`PATHS`]' counts a replay with these records adds to.
    #[cfg(test)]
    const PATH: usize;
    /// From ids that are live ids or [`NO_ID`].
    fn new(key: u32, left: u32, right: u32, new: u32) -> Self;
    /// The key, for a record of the bucket whose keys' top 16 bits are those of `base` (where
    /// the record keeps only the low bits: see [`Record`] for `[u16; 4]`).
    fn key(&self, base: u32) -> u32;
    /// `[left, right, new]`.
    fn ids(&self) -> [u32; 3];
}

/// 8 bytes: the key's low 16 bits and the ids in 16 bits each, for fewer than
/// [`COMPACT_LIMIT`] live strings, where each bucket holds the keys of one value of their top
/// 16 bits (its `base`).
impl Record for [u16; 4] {
    const NONE: u32 = u16::MAX as u32;
    #[cfg(test)]
    const PATH: usize = 7;

    #[inline(always)]
    fn new(key: u32, left: u32, right: u32, new: u32) -> Self {
        // NO_ID (all ones) becomes NONE.
        [key as u16, left as u16, right as u16, new as u16]
    }

    #[inline(always)]
    fn key(&self, base: u32) -> u32 {
        (base & 0xFFFF_0000) | u32::from(self[0])
    }

    #[inline(always)]
    fn ids(&self) -> [u32; 3] {
        [self[1], self[2], self[3]].map(u32::from)
    }
}

/// 12 bytes: the ids in 21 bits each, for fewer than [`PACKED_LIMIT`] live strings.
impl Record for [u32; 3] {
    const NONE: u32 = (1 << 21) - 1;
    #[cfg(test)]
    const PATH: usize = 3;

    #[inline(always)]
    fn new(key: u32, left: u32, right: u32, new: u32) -> Self {
        // NO_ID (all ones) becomes NONE.
        let ids = u64::from(left & Self::NONE)
            | u64::from(right & Self::NONE) << 21
            | u64::from(new & Self::NONE) << 42;
        [key, ids as u32, (ids >> 32) as u32]
    }

    #[inline(always)]
    fn key(&self, _: u32) -> u32 {
        self[0]
    }

    #[inline(always)]
    fn ids(&self) -> [u32; 3] {
        let ids = u64::from(self[1]) | u64::from(self[2]) << 32;
        [0, 21, 42].map(|shift| (ids >> shift) as u32 & Self::NONE)
    }
}

/// 16 bytes, for more live strings.
impl Record for [u32; 4] {
    const NONE: u32 = NO_ID;
    #[cfg(test)]
    const PATH: usize = 4;

    #[inline(always)]
    fn new(key: u32, left: u32, right: u32, new: u32) -> Self {
        [key, left, right, new]
    }

    #[inline(always)]
    fn key(&self, _: u32) -> u32 {
        self[0]
    }

    #[inline(always)]
    fn ids(&self) -> [u32; 3] {
        [self[1], self[2], self[3]]
    }
}

/// The most live strings whose events are packed in 12 bytes (few in tests, to test both).
const PACKED_LIMIT: usize = if cfg!(test) { 24 } else { (1 << 21) - 1 };

/// The most live strings whose events are packed in 8 bytes (few in tests, to test all three
/// sizes), and the most values of the keys' top 16 bits (buckets) that those take.
const COMPACT_LIMIT: usize = if cfg!(test) { 16 } else { u16::MAX as usize };
const COMPACT_BUCKETS: usize = if cfg!(test) { 150 } else { 4096 };

#[cfg(test)]
thread_local! {
    /// How often [`grow`] answered from the births alone, how often it replayed, how often in
    /// more than one round, with 12-byte records, with 16-byte ones, how often the stop's
    /// position needed a walk (its key being shared), and how often the keys were read in
    /// place ([`global_spans_of_texts_in`]), with 8-byte records, how often not for the keys'
    /// many values, and how many rounds of the second walk took pieces of a partner's
    /// pre-tokens.
    static PATHS: std::cell::Cell<[usize; 10]> = const { std::cell::Cell::new([0; 10]) };
}

/// What [`grow`] found: where the growth stopped (the last byte's position and how many bytes
/// grew; `None`: it never did, every byte grew) and every string with `min_count` occurrences
/// or more then.
struct Grown {
    stop: Option<(usize, usize)>,
    tokens: Vec<((bool, Vec<u8>), u64)>,
}

/// The growth of [`global_spans`] over the concatenated corpus, in two passes over the
/// pre-tokens, each on `threads` threads over ranges of pre-tokens.
///
/// Segments never cross a pre-token boundary, so each pre-token grows on its own (see
/// [`Grower::walk`]), with small arrays that stay in cache.
///
/// 1. **Births.** Every string's number of *births* (the steps that make a segment of it) is
///    counted, and the strings of whole pre-tokens (the segments once every byte has grown).
///    A string never has more occurrences than births, so only the strings born `min_count`
///    times or more (*live*) can ever qualify. If fewer than `want` are live, the growth
///    never stops: the answer is the whole pre-tokens' counts, with no ordering at all.
/// 2. **Events** (only when it may stop). The same walk again, now recording what each byte's
///    step does to the counts of live strings ([`Record`]s: the key and the strings' dense
///    live ids; dead strings' counts never matter), in ranges of keys (*buckets*)
///    ([`Events`]); [`Replay`] then replays them in growth order, and [`Pass2::position`]
///    finds the last byte's position. Each thread walks its own pre-tokens from the front, in
///    pieces, and then takes its partner's from their end until they meet (the first walk's
///    split follows that walk's time, which the second's does not: its per-byte cost differs
///    across the corpus, and this VM's two cores run at different speeds from moment to
///    moment).
///
/// Each thread interns the strings it meets in an [`Interner`] of its own (no lock);
/// afterwards the first thread's is kept and the others' strings are interned into it (but for
/// those that only the last thread met and saw born fewer than `min_count` times: they never
/// count). Within a bucket, events are in pre-token order, and inside a pre-token either
/// children before parents ([`cartesian_steps`]) or by position ([`segments`]): either way the
/// events of equal keys are in position order, so a stable sort by key puts them in growth
/// order.
fn grow(
    bytes: &[u8],
    flags: &[u8],
    keys: &[u32],
    want: usize,
    min_count: u64,
    threads: usize,
) -> Grown {
    let total = flags.len();
    let threads = crate::par::thread_count(threads, total / MIN_RANGE);
    // Each pair of threads shares a region of the corpus: one walks its chunks from the front,
    // the other from the back, until they meet, so that their ranges split the region by
    // walking time, not bytes (the more varied half of a text walks slower: more distinct
    // pre-tokens, each a cache miss). Chunks of about MIN_RANGE bytes, cut at pre-tokens.
    let regions = threads.div_ceil(2);
    let mut chunk_cuts = vec![0];
    for i in 1..total.div_ceil(MIN_RANGE) {
        let c = next_start(flags, i * MIN_RANGE, total);
        if c > chunk_cuts[chunk_cuts.len() - 1] && c < total {
            chunk_cuts.push(c);
        }
    }
    chunk_cuts.push(total);
    let chunks = chunk_cuts.len() - 1;
    // Per region, its chunks `lo..hi`; and those left, taken from either end.
    let bounds: Vec<(usize, usize)> = (0..regions)
        .map(|r| (chunks * r / regions, chunks * (r + 1) / regions))
        .collect();
    let left: Vec<std::sync::Mutex<(usize, usize)>> =
        bounds.iter().map(|&b| std::sync::Mutex::new(b)).collect();
    // (Ranges that take no chunk are empty, where the partner's ends: so they still tile the
    // corpus in thread order.)
    let first = run_each((0..threads).collect(), |t, _| {
        let (region, back) = (t / 2, t % 2 == 1);
        let (lo, hi) = bounds[region];
        let sharing = if back || t + 1 < threads { 2 } else { 1 };
        // (A thread that shares its region may walk most of it: the other's chunks are taken
        // from either end as each finishes one.)
        let size = chunk_cuts[hi] - chunk_cuts[lo];
        let mut g = Grower::new(bytes, size / sharing, size);
        let mut births = Births::default();
        // The chunks taken, in the order walked, with where their occurrences start.
        let mut taken: Vec<(usize, usize)> = Vec::new();
        loop {
            let next = {
                let mut s = left[region].lock().unwrap_or_else(|e| e.into_inner());
                if s.0 >= s.1 {
                    break;
                }
                if back {
                    s.1 -= 1;
                    s.1
                } else {
                    s.0 += 1;
                    s.0 - 1
                }
            };
            taken.push((next, g.occurrences.len()));
            let range = chunk_cuts[next]..chunk_cuts[next + 1];
            g.walk(flags, keys, range, &mut births);
        }
        // The occurrences in position order, as runs: walked from the back, one per chunk, in
        // reverse (not copied into order: 12 bytes a pre-token, in pages of their own).
        let len = g.occurrences.len();
        g.runs = if back {
            let ends = taken.iter().skip(1).map(|c| c.1).chain([len]);
            let mut runs: Vec<_> = taken.iter().zip(ends).map(|(c, end)| c.1..end).collect();
            runs.reverse();
            runs
        } else {
            std::iter::once(0..len).collect()
        };
        g.runs.retain(|r| !r.is_empty());
        g.settle(&mut births);
        (g, births)
    });
    let (mut growers, births): (Vec<Grower>, Vec<Births>) = first.into_iter().unzip();
    let (head, others) = growers.split_first_mut().expect("one thread at least");
    // Per thread, the merged id of each of its ids.
    let maps = merge_strings(head, others, &births, min_count, threads);
    let strings = &head.strings;
    let n = strings.len();
    let (mut born, mut whole) = (vec![0u32; n + 1], vec![0u32; n + 1]);
    for (map, b) in maps.iter().zip(&births) {
        for (local, &id) in map.iter().enumerate() {
            // (NO_ID's counts go to the extra slot at the end.)
            let id = (id as usize).min(n);
            born[id] += b.births.get(local + 1).copied().unwrap_or(0);
            whole[id] += b.wholes.get(local + 1).copied().unwrap_or(0);
        }
    }
    born.truncate(n);
    whole.truncate(n);
    let live: Vec<bool> = born.iter().map(|&c| u64::from(c) >= min_count).collect();
    let replays = live.iter().filter(|&&l| l).count() >= want;
    #[cfg(test)]
    PATHS.with(|p| {
        let mut v = p.get();
        v[usize::from(replays)] += 1;
        p.set(v);
    });
    if !replays {
        // Every byte grew: the segments are the whole pre-tokens.
        let tokens = whole
            .iter()
            .enumerate()
            .filter(|&(_, &c)| u64::from(c) >= min_count)
            .map(|(id, &c)| (strings.get(id), u64::from(c)))
            .collect();
        return Grown { stop: None, tokens };
    }

    // Pass 2: the events of live strings, in dense live ids, per thread and bucket; replayed
    // bucket by bucket, threads in range order. The buckets are ranges of keys' top 16 bits
    // with about equal numbers of bytes.
    let live_ids: Vec<u32> = (0..n as u32).filter(|&id| live[id as usize]).collect();
    let mut dense = vec![NO_ID; n];
    for (d, &id) in live_ids.iter().enumerate() {
        dense[id as usize] = d as u32;
    }
    // The bytes (of pre-tokens of two bytes or more, which alone have events) per value of the
    // keys' top 16 bits, counted by the first walk; and how many values are taken.
    let hists: Vec<Vec<u32>> = growers
        .iter_mut()
        .map(|g| std::mem::take(&mut g.tops))
        .collect();
    let per_top: Vec<u64> = (0..1 << 16)
        .map(|top| hists.iter().map(|h| u64::from(h[top])).sum())
        .collect();
    let values = per_top.iter().filter(|&&c| c > 0).count();
    let counted = per_top.iter().sum::<u64>().max(1);
    // With few live strings and few values of the keys' top 16 bits (a real signal takes about
    // a thousand), each bucket is one such value and records take 8 bytes (the key's low 16
    // bits and 16-bit ids: a third less memory to write, and to fault in, than 12); else
    // `BUCKETS` ranges of about equal numbers of bytes.
    let compact = live_ids.len() < COMPACT_LIMIT && values <= COMPACT_BUCKETS;
    #[cfg(test)]
    PATHS.with(|p| {
        let mut v = p.get();
        v[8] += usize::from(live_ids.len() < COMPACT_LIMIT && !compact);
        p.set(v);
    });
    let mut bucket_of = vec![0u16; 1 << 16];
    let mut bases = Vec::new();
    if compact {
        for (top, b) in bucket_of.iter_mut().enumerate() {
            if per_top[top] > 0 {
                bases.push((top as u32) << 16);
            }
            *b = bases.len().saturating_sub(1) as u16;
        }
    } else {
        let mut below = 0u64;
        for (top, b) in bucket_of.iter_mut().enumerate() {
            *b = (below * BUCKETS as u64 / counted).min(BUCKETS as u64 - 1) as u16;
            below += per_top[top];
        }
        bases = vec![0; BUCKETS];
    }
    let buckets = bases.len();
    // Per thread: the dense ids of its own ids (by local id + 1: slot 0 is NO_ID's), put into
    // its tables once, and each bucket's room: the thread's bytes with keys in it (each has
    // one event at most).
    let (tos, rooms): (Vec<Vec<u32>>, Vec<Vec<usize>>) = run_each(
        growers.iter_mut().zip(&maps).zip(&hists).collect(),
        |_, ((g, map), hist)| {
            let mut to = vec![NO_ID; map.len() + 1];
            for (local, &id) in map.iter().enumerate() {
                to[local + 1] = dense.get(id as usize).copied().unwrap_or(NO_ID);
            }
            g.map_tables(&to);
            let mut room = vec![0usize; buckets];
            for (top, &n) in hist.iter().enumerate() {
                room[bucket_of[top] as usize] += n as usize;
            }
            (to, room)
        },
    )
    .into_iter()
    .unzip();
    let pass = Pass2 {
        flags,
        keys,
        bucket_of: &bucket_of,
        bases: &bases,
        tos: &tos,
        rooms: &rooms,
        want,
        min_count,
        threads,
    };
    let (stop, counts) = if compact {
        pass.replay::<[u16; 4]>(&growers, live_ids.len())
    } else if live_ids.len() < PACKED_LIMIT {
        pass.replay::<[u32; 3]>(&growers, live_ids.len())
    } else {
        pass.replay::<[u32; 4]>(&growers, live_ids.len())
    };
    let strings = &growers[0].strings;
    let tokens = counts
        .iter()
        .zip(&live_ids)
        .filter(|&(&c, _)| u64::from(c) >= min_count)
        .map(|(&c, &id)| (strings.get(id as usize), u64::from(c)))
        .collect();
    Grown { stop, tokens }
}

/// The merged id (in `head`'s strings) of each of each thread's strings, by thread: the first
/// thread's strings are kept, the others' interned into them. A string that only the last
/// thread met is born there alone: below `min_count` times it can never count (nor can its
/// whole pre-tokens, fewer than its births), and gets no merged id ([`NO_ID`]).
///
/// Each thread's strings are first looked up on `threads` threads (read-only: most are
/// found, or are the last thread's rare ones), and only those not found are then interned,
/// in the order of the thread's slots, so the merged ids do not depend on `threads`.
fn merge_strings(
    head: &mut Grower,
    others: &[Grower],
    births: &[Births],
    min_count: u64,
    threads: usize,
) -> Vec<Vec<u32>> {
    let mut maps: Vec<Vec<u32>> = vec![(0..head.strings.len() as u32).collect()];
    for (t, other) in others.iter().enumerate() {
        let last = t + 1 == others.len();
        let mut map = vec![0u32; other.strings.len()];
        // By the other table's slots, with their keys: prefetched a batch ahead.
        let found: Vec<(u64, u32)> = other
            .strings
            .slots
            .iter()
            .copied()
            .filter(|s| s.0 != 0)
            .collect();
        let pieces: Vec<&[(u64, u32)]> = found
            .chunks(found.len().div_ceil(threads.max(1)).max(1))
            .collect();
        let strings = &head.strings;
        let looked: Vec<Vec<Option<u32>>> = crate::par::map(&pieces, threads, |piece| {
            let mut looked = Vec::with_capacity(piece.len());
            for (i, &(key, id)) in piece.iter().enumerate() {
                if let Some(&(later, _)) = piece.get(i + 16) {
                    strings.prefetch(later);
                }
                let (start, len, _) = other.strings.strings[id as usize];
                looked.push(strings.probe(key, start as usize, len as usize).ok());
            }
            looked
        });
        let born_there = &births[t + 1].births;
        for (&(key, id), merged) in found.iter().zip(looked.into_iter().flatten()) {
            let rare =
                || u64::from(born_there.get(id as usize + 1).copied().unwrap_or(0)) < min_count;
            map[id as usize] = match merged {
                Some(merged) => merged,
                None if last && rare() => NO_ID,
                None => {
                    let (start, len, initial) = other.strings.strings[id as usize];
                    head.strings
                        .intern(key, start as usize, len as usize, initial)
                }
            };
        }
        maps.push(map);
    }
    maps
}

/// What the second pass of [`grow`] needs: the corpus's flags and keys, the buckets of keys,
/// per thread the dense live ids of its own ids and each bucket's room, and the stopping rule.
struct Pass2<'a> {
    flags: &'a [u8],
    keys: &'a [u32],
    bucket_of: &'a [u16],
    /// Per bucket, a key in it (for [`Record::key`]).
    bases: &'a [u32],
    tos: &'a [Vec<u32>],
    rooms: &'a [Vec<usize>],
    want: usize,
    min_count: u64,
    threads: usize,
}

impl<'a> Pass2<'a> {
    /// Records the events of `lives` live strings as `R`s and replays them; where the growth
    /// stopped (see [`Pass2::position`]) and each live string's count then.
    fn replay<R: Record>(
        &self,
        growers: &[Grower],
        lives: usize,
    ) -> (Option<(usize, usize)>, Vec<u32>) {
        #[cfg(test)]
        PATHS.with(|p| {
            let mut v = p.get();
            v[R::PATH] += 1;
            p.set(v);
        });
        // Rounds of consecutive buckets whose events fit a bounded arena per thread (one
        // round unless the corpus is large): each round walks the pre-tokens again.
        let mut rounds = Vec::new();
        let buckets = self.bases.len();
        let mut first = 0;
        while first < buckets {
            let mut end = first + 1;
            let fits = |end: usize| {
                self.rooms
                    .iter()
                    .all(|room| room[first..end].iter().sum::<usize>() <= ROUND_ROOM)
            };
            while end < buckets && fits(end + 1) {
                end += 1;
            }
            rounds.push(first..end);
            first = end;
        }
        #[cfg(test)]
        PATHS.with(|p| {
            let mut v = p.get();
            v[2] += usize::from(rounds.len() > 1);
            p.set(v);
        });
        let mut replay = Replay::<R> {
            counts: vec![0; lives + SPARE],
            qualified: 0,
            want: self.want,
            // Only live strings are counted (the others are NONE's slots, never qualified),
            // each with all its events: a count is never negative, and `min_count` is at most
            // the corpus size here (some string was born that often), so under 2^32.
            min: u32::try_from(self.min_count).expect("a live string's count"),
            last: None,
            sorted: Vec::new(),
            spare: Vec::new(),
        };
        let threads = growers.len();
        // Each grower's pre-tokens in pieces, and those not yet taken (from either end).
        let pieces: Vec<Vec<std::ops::Range<usize>>> =
            growers.iter().map(|g| g.walk_pieces()).collect();
        'rounds: for round in rounds {
            // (In tests, each grower's last piece of two or more is taken by its partner first,
            // so that the pieces taken from a partner are replayed whatever the timing.)
            let given: Vec<Option<usize>> = (0..threads)
                .map(|g| {
                    let n = pieces[g].len();
                    (cfg!(test) && n >= 2 && partner(g, threads).is_some()).then(|| n - 1)
                })
                .collect();
            let left: Vec<std::sync::Mutex<(usize, usize)>> = pieces
                .iter()
                .zip(&given)
                .map(|(p, given)| std::sync::Mutex::new((0, given.unwrap_or(p.len()))))
                .collect();
            let take = |g: usize, back: bool| {
                let mut s = left[g].lock().unwrap_or_else(|e| e.into_inner());
                if s.0 >= s.1 {
                    return None;
                }
                if back {
                    s.1 -= 1;
                    Some(s.1)
                } else {
                    s.0 += 1;
                    Some(s.0 - 1)
                }
            };
            let found = run_each((0..threads).collect(), |t, _| {
                let mut scratch = Scratch::default();
                let (flags, keys) = (self.flags, self.keys);
                let mut stolen = Stolen {
                    events: None,
                    marks: Vec::new(),
                };
                // The partner's pieces, from its end, while any is left.
                let steal = |stolen: &mut Stolen<'a, R>, scratch: &mut Scratch, first: bool| {
                    let Some(v) = partner(t, threads) else {
                        return;
                    };
                    let mut given = given[v].filter(|_| first);
                    while let Some(i) = given.take().or_else(|| take(v, true)) {
                        let events = stolen.events.get_or_insert_with(|| {
                            Events::new(&self.tos[v], self.bucket_of, round.clone(), &self.rooms[v])
                        });
                        stolen.marks.push(events.counts());
                        growers[v].rewalk(scratch, flags, keys, pieces[v][i].clone(), events);
                    }
                };
                if cfg!(test) {
                    steal(&mut stolen, &mut scratch, true);
                }
                let mut own =
                    Events::new(&self.tos[t], self.bucket_of, round.clone(), &self.rooms[t]);
                while let Some(i) = take(t, false) {
                    growers[t].rewalk(&mut scratch, flags, keys, pieces[t][i].clone(), &mut own);
                }
                own.finish();
                steal(&mut stolen, &mut scratch, false);
                if let Some(events) = &mut stolen.events {
                    events.finish();
                }
                (own, stolen)
            });
            #[cfg(test)]
            PATHS.with(|p| {
                let mut v = p.get();
                v[9] += usize::from(found.iter().any(|f| f.1.events.is_some()));
                p.set(v);
            });
            let mut parts: Vec<&[R]> = Vec::new();
            for lane in 0..round.len() {
                parts.clear();
                // Each grower's pre-tokens in position order: those it walked, then those its
                // partner took from its end (taken last to first).
                for (t, (own, _)) in found.iter().enumerate() {
                    own.lane(lane, &mut parts);
                    let Some(v) = partner(t, threads) else {
                        continue;
                    };
                    let Stolen {
                        events: Some(events),
                        marks,
                    } = &found[v].1
                    else {
                        continue;
                    };
                    let mut end = events.count(lane);
                    for mark in marks.iter().rev() {
                        events.lane_range(lane, mark[lane] as usize..end, &mut parts);
                        end = mark[lane] as usize;
                    }
                }
                if replay.grow(&parts, self.bases[round.start + lane]) {
                    break 'rounds;
                }
            }
        }
        let stop = replay
            .last
            .map(|(key, rank)| self.position(growers, key, rank));
        let mut counts = replay.counts;
        counts.truncate(lives);
        (stop, counts)
    }

    /// The position of the byte of key `key` whose event is the `rank`th (from 0) of those
    /// kept with that key, in walk order (which [`Replay::grow`]'s stable sort keeps), and how
    /// many bytes grew up to it, in growth order (key, then position).
    fn position(&self, growers: &[Grower], key: u32, rank: usize) -> (usize, usize) {
        // Per range of the corpus: its bytes with smaller keys, with this key, and the first of
        // those.
        let total = self.keys.len();
        let chunks: Vec<usize> = (0..total.div_ceil(MIN_RANGE)).collect();
        let counted = crate::par::map(&chunks, self.threads, |&c| {
            let keys = &self.keys[c * MIN_RANGE..((c + 1) * MIN_RANGE).min(total)];
            let (below, equal) = count_below_equal(keys, key);
            let first = (equal > 0)
                .then(|| keys.iter().position(|&k| k == key))
                .flatten()
                .map(|i| c * MIN_RANGE + i);
            (below, equal, first)
        });
        let below: usize = counted.iter().map(|c| c.0).sum();
        // Mostly one byte has the key: then it is that one.
        if counted.iter().map(|c| c.1).sum::<usize>() == 1 {
            if let Some(at) = counted.iter().find_map(|c| c.2) {
                return (at, below + 1);
            }
        }
        // Else the bytes with the key, in order, each regrown in its pre-token (with a step
        // only in a pre-token of two bytes or more) until the `rank`th kept step.
        #[cfg(test)]
        PATHS.with(|p| {
            let mut v = p.get();
            v[5] += 1;
            p.set(v);
        });
        let mut found = Vec::new();
        let mut last = None;
        let mut scratch = Scratch::default();
        'bytes: for (c, _) in counted.iter().enumerate().filter(|(_, c)| c.1 > 0) {
            let from = c * MIN_RANGE;
            let to = (from + MIN_RANGE).min(total);
            for x in (from..to).filter(|&x| self.keys[x] == key) {
                // The thread that walked it: the last whose first pre-token starts by `x`.
                let Some((t, o)) = growers.iter().enumerate().rev().find_map(|(t, g)| {
                    (g.first_position()? <= x).then(|| (t, g.occurrence_at(self.flags, x)))
                }) else {
                    continue;
                };
                let Some(o) = o else { continue };
                if last == Some((t, o)) {
                    continue; // already regrown
                }
                last = Some((t, o));
                let mut finder = Finder {
                    map: &self.tos[t],
                    key,
                    found: Vec::new(),
                };
                growers[t].rewalk_one(&mut scratch, self.flags, self.keys, o, &mut finder);
                finder.found.sort_unstable();
                found.extend(finder.found);
                if found.len() > rank {
                    break 'bytes;
                }
            }
        }
        let at = *found.get(rank).expect("the event replayed");
        // The bytes with the key up to it: those of the chunks before its own (counted above),
        // then its chunk's up to it.
        let c = at / MIN_RANGE;
        let before: usize = counted[..c].iter().map(|c| c.1).sum();
        let equal = self.keys[c * MIN_RANGE..=at]
            .iter()
            .filter(|&&k| k == key)
            .count();
        (at, below + before + equal)
    }
}

/// The thread that shared a region of the first walk with thread `t` of `threads` (see
/// [`grow`]), if any.
fn partner(t: usize, threads: usize) -> Option<usize> {
    (t ^ 1 < threads).then_some(t ^ 1)
}

/// The events that a thread of the second walk recorded for its partner's pre-tokens, taken
/// from their end, and per piece taken (in the order taken) the count of each lane before it.
struct Stolen<'b, R> {
    events: Option<Events<'b, R>>,
    marks: Vec<Vec<u32>>,
}

/// How many of `keys` (at most [`MIN_RANGE`]: the counts are `u32`) are below `key`, and how
/// many equal it: eight lanes of `u32` counts, so that the loop vectorizes.
fn count_below_equal(keys: &[u32], key: u32) -> (usize, usize) {
    let (mut below, mut equal) = ([0u32; 8], [0u32; 8]);
    let mut words = keys.chunks_exact(8);
    for w in &mut words {
        for i in 0..8 {
            below[i] += u32::from(w[i] < key);
            equal[i] += u32::from(w[i] == key);
        }
    }
    let rest = words.remainder();
    let sum = |v: [u32; 8]| v.iter().map(|&x| x as usize).sum::<usize>();
    (
        sum(below) + rest.iter().filter(|&&k| k < key).count(),
        sum(equal) + rest.iter().filter(|&&k| k == key).count(),
    )
}

/// `f(i, part)` for every part, each on its own thread (the first on this one); the results in
/// order.
fn run_each<P: Send, R: Send>(parts: Vec<P>, f: impl Fn(usize, P) -> R + Sync) -> Vec<R> {
    let f = &f;
    std::thread::scope(|s| {
        let mut parts = parts.into_iter().enumerate();
        let first = parts.next();
        let handles: Vec<_> = parts.map(|(i, p)| s.spawn(move || f(i, p))).collect();
        let mut out: Vec<R> = first.into_iter().map(|(i, p)| f(i, p)).collect();
        for h in handles {
            out.push(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        out
    })
}

/// What [`Grower::long_piece`] does with each step and with the pre-token's whole string:
/// count births ([`Births`], pass 1) or record events ([`Events`], pass 2). Short pre-tokens
/// count in their tables instead, and [`Grower::rewalk`] gives their events to
/// [`Events::emit`] directly.
trait Pass {
    /// The byte at position `x`, with key `key`, grows: it joins the segments whose strings
    /// are `left` and `right` and makes one whose string is `new` (in the walker's ids;
    /// [`NO_ID`]: no segment, or one of one byte).
    fn step(&mut self, key: u32, left: u32, right: u32, new: u32, x: usize);
    /// A pre-token of two bytes or more is done; `whole` is its whole string's id.
    fn piece(&mut self, whole: u32);
}

/// Pass 1 of [`grow`]: births and whole pre-tokens per string, by id + 1 (slot 0 is
/// [`NO_ID`]'s).
#[derive(Default)]
struct Births {
    births: Vec<u32>,
    wholes: Vec<u32>,
}

/// `v[i] += n`, growing `v` as needed.
#[inline(always)]
fn add_at(v: &mut Vec<u32>, i: usize, n: u32) {
    if i >= v.len() {
        v.resize((i + 1).next_power_of_two().max(1 << 12), 0);
    }
    v[i] += n;
}

impl Pass for Births {
    #[inline(always)]
    fn step(&mut self, _: u32, _: u32, _: u32, new: u32, _: usize) {
        add_at(&mut self.births, new.wrapping_add(1) as usize, 1);
    }

    #[inline(always)]
    fn piece(&mut self, whole: u32) {
        add_at(&mut self.wholes, whole.wrapping_add(1) as usize, 1);
    }
}

/// What [`Grower::rewalk`] tells of each step, in dense live ids ([`NO_ID`]: no live
/// string): [`Events`] records them, [`Finder`] looks for one.
trait Emit {
    /// The dense live ids of the walker's own ids, by id + 1 (for long pre-tokens).
    fn map(&self) -> &[u32];
    /// Whether the steps of a pre-token with these keys are wanted.
    #[inline(always)]
    fn wants(&self, _keys: &[u32]) -> bool {
        true
    }
    /// [`Pass::step`] in dense live ids.
    fn emit(&mut self, key: u32, left: u32, right: u32, new: u32, x: usize);
}

/// An [`Emit`] as the [`Pass`] of [`Grower::long_piece`] (whose steps are in the walker's ids).
struct Mapped<'e, E>(&'e mut E);

impl<E: Emit> Pass for Mapped<'_, E> {
    #[inline(always)]
    fn step(&mut self, key: u32, left: u32, right: u32, new: u32, x: usize) {
        let map = self.0.map();
        let [a, b, c] = [left, right, new].map(|id| map[id.wrapping_add(1) as usize]);
        self.0.emit(key, a, b, c, x);
    }

    #[inline(always)]
    fn piece(&mut self, _: u32) {}
}

/// Pass 2 of [`grow`]: the events that touch a live string, as `R`s, in buckets by the key's
/// top 16 bits (`bucket_of`); only the buckets of this round (its *lanes*) are kept. Each
/// lane is a list of chunks of [`CHUNK`] records handed out from one arena as the lanes fill,
/// so the memory touched is about the records written; and records are staged [`GROUP`] at a
/// time per lane, in cache, then streamed to the arena, which is never read on the way.
struct Events<'b, R> {
    map: &'b [u32],
    bucket_of: &'b [u16],
    /// The round's first bucket and its number of buckets.
    first: usize,
    lanes: usize,
    arena: Vec<R>,
    /// Per lane, and one more for the other buckets (never kept): [`GROUP`] records, and how
    /// many are staged.
    stage: Vec<R>,
    staged: Vec<u32>,
    /// Per lane: the next slot in the arena, the end of its last chunk, and where its chunks
    /// start.
    next: Vec<usize>,
    ends: Vec<usize>,
    chunks: Vec<Vec<usize>>,
    /// The arena's first slot not handed out.
    free: usize,
}

/// The records [`Events`] stages per lane (few in tests, to test the chunks).
const GROUP: usize = if cfg!(test) { 4 } else { 16 };

/// The records of a chunk of [`Events`], a multiple of [`GROUP`].
const CHUNK: usize = if cfg!(test) { 2 * GROUP } else { 32 * GROUP };

/// The most events (upper bounds: bytes) one thread holds in one round of [`grow`]'s second
/// pass: 16 bytes each at most, so about 1 GB (small in tests, to test the rounds).
const ROUND_ROOM: usize = if cfg!(test) { 400 } else { 1 << 26 };

/// How many ranges of keys [`grow`] replays one by one.
const BUCKETS: usize = 1024;

impl<'b, R: Record> Events<'b, R> {
    /// For the buckets of `round`, whose bytes are `room` (per bucket).
    fn new(
        map: &'b [u32],
        bucket_of: &'b [u16],
        round: std::ops::Range<usize>,
        room: &[usize],
    ) -> Self {
        let lanes = round.len();
        // Every chunk but a lane's last is full, so this is enough (with the first slots,
        // skipped so that groups start on a cache line).
        let bytes: usize = room[round.clone()].iter().sum();
        let arena = vec![R::default(); GROUP + lanes * CHUNK + bytes];
        let size = std::mem::size_of::<R>();
        let skip = (0..GROUP)
            .find(|&i| (arena.as_ptr() as usize + i * size).is_multiple_of(64))
            .unwrap_or(0);
        let next: Vec<usize> = (0..lanes).map(|lane| skip + lane * CHUNK).collect();
        Self {
            map,
            bucket_of,
            first: round.start,
            lanes,
            arena,
            stage: vec![R::default(); (lanes + 1) * GROUP],
            staged: vec![0; lanes + 1],
            ends: next.iter().map(|&s| s + CHUNK).collect(),
            chunks: next.iter().map(|&s| vec![s]).collect(),
            next,
            free: skip + lanes * CHUNK,
        }
    }

    /// Writes out a lane's full stage.
    #[inline(never)]
    fn flush(&mut self, lane: usize) {
        let at = self.next[lane];
        stream_copy(
            &mut self.arena[at..at + GROUP],
            &self.stage[lane * GROUP..(lane + 1) * GROUP],
        );
        self.staged[lane] = 0;
        self.next[lane] = at + GROUP;
        if at + GROUP == self.ends[lane] {
            self.chunks[lane].push(self.free);
            self.next[lane] = self.free;
            self.ends[lane] = self.free + CHUNK;
            self.free += CHUNK;
        }
    }

    /// After the walk: writes out what is staged.
    fn finish(&mut self) {
        for lane in 0..self.lanes {
            let (at, n) = (self.next[lane], self.staged[lane] as usize);
            self.arena[at..at + n].copy_from_slice(&self.stage[lane * GROUP..lane * GROUP + n]);
            self.next[lane] = at + n;
            self.staged[lane] = 0;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a store fence only orders this thread's stores (here, the streaming ones
        // before the other threads read the arena).
        unsafe {
            std::arch::x86_64::_mm_sfence();
        }
    }

    /// How many records lane `lane` has kept.
    fn count(&self, lane: usize) -> usize {
        let chunks = &self.chunks[lane];
        (chunks.len() - 1) * CHUNK + self.next[lane] - chunks[chunks.len() - 1]
            + self.staged[lane] as usize
    }

    /// [`Events::count`] of every lane.
    fn counts(&self) -> Vec<u32> {
        (0..self.lanes)
            .map(|lane| self.count(lane) as u32)
            .collect()
    }

    /// Adds the records of lane `lane` to `parts`, in order (after [`Events::finish`]).
    fn lane<'s>(&'s self, lane: usize, parts: &mut Vec<&'s [R]>) {
        self.lane_range(lane, 0..self.count(lane), parts);
    }

    /// Adds records `range` of lane `lane` (by their order in it) to `parts`, in order (after
    /// [`Events::finish`]).
    fn lane_range<'s>(
        &'s self,
        lane: usize,
        range: std::ops::Range<usize>,
        parts: &mut Vec<&'s [R]>,
    ) {
        let first = range.start / CHUNK;
        for (i, &start) in self.chunks[lane].iter().enumerate().skip(first) {
            let (from, to) = (i * CHUNK, (i + 1) * CHUNK);
            if from >= range.end {
                break;
            }
            let (a, b) = (range.start.max(from), range.end.min(to));
            if b > a {
                parts.push(&self.arena[start + a - from..start + b - from]);
            }
        }
    }
}

/// `dst.copy_from_slice(src)`, with streaming stores (which do not read `dst`'s cache lines
/// first) where `dst` is 16-byte aligned and whole 16-byte words.
#[inline(always)]
fn stream_copy<R: Record>(dst: &mut [R], src: &[R]) {
    assert_eq!(dst.len(), src.len());
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        let bytes = std::mem::size_of_val(src);
        if bytes.is_multiple_of(16) && (dst.as_ptr() as usize).is_multiple_of(16) {
            let (d, s) = (
                dst.as_mut_ptr().cast::<__m128i>(),
                src.as_ptr().cast::<__m128i>(),
            );
            for i in 0..bytes / 16 {
                // SAFETY: both slices hold `bytes` bytes of plain `u32` arrays (any bits are
                // valid), `d` is 16-byte aligned, and the load needs no alignment.
                unsafe { _mm_stream_si128(d.add(i), _mm_loadu_si128(s.add(i))) };
            }
            return;
        }
    }
    dst.copy_from_slice(src);
}

impl<R: Record> Emit for Events<'_, R> {
    #[inline(always)]
    fn map(&self) -> &[u32] {
        self.map
    }

    /// Without a branch on what is kept: the record is staged in its lane's next slot, which
    /// only moves on when it is kept.
    #[inline(always)]
    fn emit(&mut self, key: u32, a: u32, b: u32, c: u32, _: usize) {
        let bucket = self.bucket_of[(key >> 16) as usize] as usize;
        let lane = bucket.wrapping_sub(self.first).min(self.lanes);
        let kept = (a & b & c != NO_ID) & (lane < self.lanes);
        let at = self.staged[lane] as usize;
        self.stage[lane * GROUP + at] = R::new(key, a, b, c);
        let at = at + usize::from(kept);
        self.staged[lane] = at as u32;
        if at == GROUP {
            self.flush(lane);
        }
    }
}

/// Finds the positions of the steps of key `key` that [`Events`] keeps, in walk order.
struct Finder<'b> {
    map: &'b [u32],
    key: u32,
    found: Vec<usize>,
}

impl Emit for Finder<'_> {
    fn map(&self) -> &[u32] {
        self.map
    }

    fn wants(&self, keys: &[u32]) -> bool {
        keys.contains(&self.key)
    }

    fn emit(&mut self, key: u32, a: u32, b: u32, c: u32, x: usize) {
        if key == self.key && a & b & c != NO_ID {
            self.found.push(x);
        }
    }
}

/// The fewest bytes a thread of [`grow`] takes (few in tests, to test the threads).
const MIN_RANGE: usize = if cfg!(test) { 64 } else { 1 << 16 };

/// The longest pre-tokens whose segment strings' ids are cached per distinct pre-token.
const CACHED: usize = 15;

/// The most pre-tokens in a piece of the second walk's work (see [`Pass2::replay`]): few in
/// tests, to test the pieces that threads take from each other.
const WALK_PIECE: usize = if cfg!(test) { 3 } else { 1 << 14 };

/// How many pre-tokens [`Grower::walk`] looks up at a time.
const BATCH: usize = 32;

/// One thread's state for [`grow`], kept from one pass to the next: its distinct short
/// pre-tokens (their bytes and whether they start a pre-token), each with a table of its
/// segment strings' ids, the strings it met, and scratch.
struct Grower<'a> {
    bytes: &'a [u8],
    pieces: PieceTable,
    strings: Interner<'a>,
    scratch: Scratch,
    batch: Vec<(usize, usize, u128, usize)>,
    /// The pre-tokens walked (see [`Occurrence`]), in runs in position order (`runs`, set
    /// after the first walk: see [`grow`]).
    occurrences: Vec<Occurrence>,
    runs: Vec<std::ops::Range<usize>>,
    /// How many bytes of the pre-tokens walked (of two bytes or more) have each value of the
    /// keys' top 16 bits (for the second walk's buckets and their room).
    tops: Vec<u32>,
}

impl<'a> Grower<'a> {
    /// For a range of about `range` bytes of `bytes`, and at most `most` (its hash tables
    /// are sized for `range`; its lists reserve room for `most`: reserved pages that are never
    /// written cost nothing, where growing a list copies it into fresh pages).
    fn new(bytes: &'a [u8], range: usize, most: usize) -> Self {
        Self {
            bytes,
            pieces: PieceTable::new(range, most),
            strings: Interner::new(bytes, range),
            scratch: Scratch::default(),
            batch: Vec::with_capacity(BATCH),
            // (Room for most texts; capped, so that a range of gigabytes does not reserve more
            // than it needs: the lists grow from there as they must.)
            occurrences: Vec::with_capacity((most / 4 + 1).min(1 << 22)),
            runs: Vec::new(),
            tops: vec![0; 1 << 16],
        }
    }

    /// After the first walk: turns every short pre-token's table of births into one of segment
    /// string ids (interning the strings born, [`UNSET`] for the segments never born), adding
    /// the births to `births` and each pre-token's occurrences to its whole string's.
    fn settle(&mut self, births: &mut Births) {
        let Self {
            pieces, strings, ..
        } = self;
        // The strings born, `(entry in the tables, key, start, length)`, their slots in
        // `strings` prefetched as they are found; interned in batches over many tables (so
        // that the cache misses of a batch overlap), and then those tables' whole strings
        // counted: `(table, m, occurrences)`.
        const PENDING: usize = 64;
        let mut pending: Vec<(usize, u64, usize, usize)> = Vec::with_capacity(PENDING + 128);
        let mut wholes: Vec<(usize, usize, u32)> = Vec::new();
        let flush = |pending: &mut Vec<(usize, u64, usize, usize)>,
                     wholes: &mut Vec<(usize, usize, u32)>,
                     strings: &mut Interner,
                     tables: &mut [u32],
                     births: &mut Births| {
            for &(at, key, start, len) in pending.iter() {
                let id = strings.intern(key, start, len, key >> 63 != 0);
                add_at(&mut births.births, id as usize + 1, tables[at]);
                tables[at] = id;
            }
            for &(table, m, occurrences) in wholes.iter() {
                tables[table + table_size(m) - 1] = NO_ID;
                let whole = tables[table + tri(0, m - 1)];
                add_at(
                    &mut births.wholes,
                    whole.wrapping_add(1) as usize,
                    occurrences,
                );
            }
            pending.clear();
            wholes.clear();
        };
        // The tables in the order they were made, each after its position and key.
        let mut next = 0;
        while next < pieces.tables.len() {
            let p = pieces.tables[next] as usize;
            let table = next + 1 + HEADER;
            let piece = pieces.tables[next + 1..table]
                .iter()
                .rev()
                .fold(0u128, |k, &w| k << 32 | u128::from(w));
            let m = ((piece >> 120) & 0x7F) as usize;
            next = table + table_size(m);
            let initial = piece >> 127 != 0;
            let absorbs = initial && piece as u8 == b' ';
            let tab = &mut pieces.tables[table..next];
            let occurrences = tab[tri(0, m - 1)];
            for r in 0..m {
                for l in 0..=r {
                    let at = tri(l, r);
                    if tab[at] == 0 {
                        tab[at] = UNSET;
                        continue;
                    }
                    let s = if l == 1 && absorbs { 0 } else { l };
                    if r == s {
                        tab[at] = NO_ID; // one byte
                        continue;
                    }
                    let (start, len) = (p + s, r + 1 - s);
                    let key = packed_key(piece, s == 0 && initial, s, len);
                    strings.prefetch(key);
                    pending.push((table + at, key, start, len));
                }
            }
            wholes.push((table, m, occurrences));
            if pending.len() >= PENDING {
                flush(
                    &mut pending,
                    &mut wholes,
                    strings,
                    &mut pieces.tables,
                    births,
                );
            }
        }
        flush(
            &mut pending,
            &mut wholes,
            strings,
            &mut pieces.tables,
            births,
        );
    }

    /// Pass 1 of [`grow`]: grows every pre-token in `range` on its own, counting how often
    /// each segment is born. Pre-tokens of one byte change no count and are skipped. Short
    /// pre-tokens count in their table (one per distinct pre-token, looked up in batches with
    /// prefetches, so that the cache misses of a batch overlap; see [`Grower::settle`]), longer
    /// ones hash their segments ([`Grower::long_piece`]). Every pre-token of two bytes or more
    /// is recorded in `occurrences` for [`Grower::rewalk`].
    fn walk(
        &mut self,
        flags: &[u8],
        keys: &[u32],
        range: std::ops::Range<usize>,
        births: &mut Births,
    ) {
        // Every pre-token recorded has two bytes or more. (The tables take about a quarter of
        // a word per byte of English.)
        self.occurrences.reserve(range.len() / 2 + 1);
        self.pieces.tables.reserve(range.len() / 2);
        let mut e = range.start;
        while e < range.end {
            // `(start, length, key, table)`
            let mut batch = std::mem::take(&mut self.batch);
            batch.clear();
            while e < range.end && batch.len() < BATCH {
                let p = e;
                e = next_start(flags, p + 1, range.end);
                let m = e - p;
                if m == 1 {
                    continue;
                }
                let mut key = 0;
                if m <= CACHED {
                    key = pack_at(self.bytes, p, m, flags[p] & PTB != 0);
                    self.pieces.prefetch(key);
                }
                batch.push((p, m, key, 0));
            }
            for &(_, m, key, _) in batch.iter() {
                if m <= CACHED {
                    self.pieces.prefetch_table(key, m);
                }
            }
            for (p, m, key, table) in batch.iter_mut() {
                if *m <= CACHED {
                    *table = self.pieces.find(*key, *m, *p);
                }
            }
            for &(p, m, _, table) in batch.iter() {
                for &k in &keys[p..p + m] {
                    self.tops[(k >> 16) as usize] += 1;
                }
                if m > CACHED {
                    self.occurrences.push(occurrence(0, NO_PLAN, 0, p));
                    let (bytes, scratch) = (self.bytes, &mut self.scratch);
                    long_piece(bytes, scratch, &mut self.strings, flags, keys, p, m, births);
                    continue;
                }
                let keys = &keys[p..p + m];
                let tab = &mut self.pieces.tables[table..table + table_size(m)];
                let mut code = NO_PLAN;
                if m <= PLANNED {
                    let plans = plans();
                    let c = lehmer_code(keys);
                    let at = plans.starts[m] + m * c;
                    for &t in &plans.tris[at..at + m] {
                        tab[usize::from(t)] += 1;
                    }
                    code = c as u32;
                } else {
                    segments(keys, |_, l, r| tab[tri(l, r)] += 1);
                }
                self.occurrences.push(occurrence(table, code, m, p));
            }
            self.batch = batch;
        }
    }

    /// Before [`Grower::rewalk`]: the short pre-tokens' tables take the merged ids of live
    /// strings, [`NO_ID`] for the others (`map`, by local id + 1).
    fn map_tables(&mut self, map: &[u32]) {
        let tables = &mut self.pieces.tables;
        let mut next = 0;
        while next < tables.len() {
            let table = next + 1 + HEADER;
            let m = ((tables[table - 1] >> 24) & 0x7F) as usize;
            next = table + table_size(m);
            for id in &mut tables[table..next] {
                if *id != UNSET {
                    *id = map[id.wrapping_add(1) as usize];
                }
            }
        }
    }

    /// Pass 2 of [`grow`] (after [`Grower::map_tables`]): the pre-tokens of the first walk
    /// again, from `occurrences`, telling `pass` each byte's step: children before parents (see
    /// [`cartesian_steps`]) for pre-tokens of up to [`PLANNED`] bytes and longer than
    /// [`CACHED`], by position (see [`segments`]) for the others.
    fn rewalk(
        &self,
        scratch: &mut Scratch,
        flags: &[u8],
        keys: &[u32],
        piece: std::ops::Range<usize>,
        pass: &mut impl Emit,
    ) {
        const AHEAD: usize = 8;
        let run = &self.occurrences[piece];
        for (i, &o) in run.iter().enumerate() {
            if let Some(&later) = run.get(i + AHEAD) {
                // The whole table (up to 121 entries: eight cache lines at most).
                let (table, _, m, _) = occurrence_parts(later);
                let end = (table + table_size(m)).min(self.pieces.tables.len());
                for j in (table..end).step_by(16) {
                    prefetch(&self.pieces.tables[j]);
                }
            }
            self.rewalk_one(scratch, flags, keys, o, pass);
        }
    }

    /// The occurrences in position order, as ranges of `occurrences` of at most
    /// [`WALK_PIECE`] (none across runs): the units of the second walk's work.
    fn walk_pieces(&self) -> Vec<std::ops::Range<usize>> {
        let mut pieces = Vec::new();
        for run in &self.runs {
            let mut at = run.start;
            while at < run.end {
                let end = (at + WALK_PIECE).min(run.end);
                pieces.push(at..end);
                at = end;
            }
        }
        pieces
    }

    /// Where the first pre-token walked starts.
    fn first_position(&self) -> Option<usize> {
        let run = self.runs.first()?;
        Some(occurrence_parts(self.occurrences[run.start]).3)
    }

    /// [`Grower::rewalk`] of one pre-token.
    #[inline(always)]
    fn rewalk_one(
        &self,
        scratch: &mut Scratch,
        flags: &[u8],
        keys: &[u32],
        o: Occurrence,
        pass: &mut impl Emit,
    ) {
        let (table, code, m, p) = occurrence_parts(o);
        if m == 0 {
            // Longer than CACHED: to the next pre-token (a thread's range ends at one). Its
            // strings were all interned in the first walk, so they are only looked up.
            let e = next_start(flags, p + 1, flags.len());
            if pass.wants(&keys[p..e]) {
                let (known, mapped) = (&mut Known(&self.strings), &mut Mapped(&mut *pass));
                long_piece(self.bytes, scratch, known, flags, keys, p, e - p, mapped);
            }
            return;
        }
        let keys = &keys[p..p + m];
        if !pass.wants(keys) {
            return;
        }
        let tab = &self.pieces.tables[table..table + table_size(m)];
        if code != NO_PLAN {
            let plans = plans();
            let at = plans.starts[m] + m * code as usize;
            for &[x, l, r, left, right] in &plans.steps[at..at + m] {
                let (x, new) = (usize::from(x), tri(l.into(), r.into()));
                pass.emit(
                    keys[x],
                    tab[usize::from(left)],
                    tab[usize::from(right)],
                    tab[new],
                    p + x,
                );
            }
        } else {
            // By position (see [`grow`]).
            let none = table_size(m) - 1;
            segments(keys, |x, l, r| {
                let left = if x > l { tri(l, x - 1) } else { none };
                let right = if x < r { tri(x + 1, r) } else { none };
                pass.emit(keys[x], tab[left], tab[right], tab[tri(l, r)], p + x);
            });
        }
    }

    /// The pre-token of two bytes or more that holds position `x`, if one does (and this
    /// thread walked it).
    fn occurrence_at(&self, flags: &[u8], x: usize) -> Option<Occurrence> {
        let at = |i: usize| occurrence_parts(self.occurrences[i]).3;
        let r = self.runs.partition_point(|run| at(run.start) <= x);
        let run = &self.occurrences[self.runs.get(r.checked_sub(1)?)?.clone()];
        let i = run.partition_point(|&o| occurrence_parts(o).3 <= x);
        let o = *run.get(i.checked_sub(1)?)?;
        let (_, _, m, p) = occurrence_parts(o);
        let end = if m == 0 {
            next_start(flags, p + 1, flags.len())
        } else {
            p + m
        };
        (x < end).then_some(o)
    }
}

/// The scratch of [`long_piece`], kept from one pre-token to the next.
#[derive(Default)]
struct Scratch {
    stack: Vec<usize>,
    made: Vec<u32>,
    left_child: Vec<usize>,
    prefix: Vec<u64>,
    powers: Vec<u64>,
}

/// How [`long_piece`] finds the ids of segment strings: interning them (the first walk), or
/// looking up those interned before ([`Known`], the second walk: read-only, so that another
/// thread can walk a grower's pre-tokens).
trait Ids {
    fn id(&mut self, key: u64, start: usize, len: usize, initial: bool) -> u32;
}

impl Ids for Interner<'_> {
    #[inline(always)]
    fn id(&mut self, key: u64, start: usize, len: usize, initial: bool) -> u32 {
        self.intern(key, start, len, initial)
    }
}

/// [`Ids`] of strings already interned.
struct Known<'i, 'a>(&'i Interner<'a>);

impl Ids for Known<'_, '_> {
    #[inline(always)]
    fn id(&mut self, key: u64, start: usize, len: usize, _: bool) -> u32 {
        let found = self.0.probe(key, start, len);
        debug_assert!(found.is_ok(), "a string of the first walk");
        found.unwrap_or(NO_ID)
    }
}

/// Grows the pre-token of `m` bytes at `p` of `bytes` (longer than [`CACHED`]), hashing its
/// segment strings (their ids from `strings`), and tells `pass`.
#[allow(clippy::too_many_arguments)]
fn long_piece(
    bytes: &[u8],
    scratch: &mut Scratch,
    strings: &mut impl Ids,
    flags: &[u8],
    keys: &[u32],
    p: usize,
    m: usize,
    pass: &mut impl Pass,
) {
    let Scratch {
        stack,
        made,
        left_child,
        prefix,
        powers,
    } = scratch;
    if powers.is_empty() {
        powers.push(1);
    }
    let keys = &keys[p..p + m];
    // A segment that starts just after the space opening the pre-token takes it in.
    let absorbs = flags[p] & (PTB | SPACE) == PTB | SPACE;
    let initial_at_start = flags[p] & PTB != 0;
    let piece = &bytes[p..p + m];
    prefix.clear();
    prefix.push(0);
    let mut h = 0u64;
    for &b in piece {
        h = h.wrapping_mul(HASH_BASE).wrapping_add(u64::from(b) + 1);
        prefix.push(h);
    }
    while powers.len() <= m {
        let last = powers[powers.len() - 1];
        powers.push(last.wrapping_mul(HASH_BASE));
    }
    // The id of the string of segment `l..=r` (two bytes or more once the space is in).
    let mut id_of = |l: usize, r: usize| -> u32 {
        let s = if l == 1 && absorbs { 0 } else { l };
        if r == s {
            return NO_ID;
        }
        let initial = s == 0 && initial_at_start;
        let len = r + 1 - s;
        let key = if len <= SMALL {
            pack_small(initial, &piece[s..=r])
        } else {
            let h = prefix[r + 1].wrapping_sub(prefix[s].wrapping_mul(powers[len]));
            long_key(initial, h, len)
        };
        strings.id(key, p + s, len, initial)
    };
    // See [`Step`].
    if made.len() <= m {
        made.resize(m + 1, NO_ID);
    }
    made[m] = NO_ID; // no child (every other slot is written before it is read)
    let mut whole = NO_ID;
    cartesian_steps(keys, stack, left_child, |st: Step| {
        let id = id_of(st.l, st.r);
        made[st.x] = id;
        pass.step(keys[st.x], made[st.left], made[st.right], id, p + st.x);
        whole = id; // the last step makes the whole pre-token
    });
    pass.piece(whole);
}

/// The first position from `e` (and before `end`) that starts a pre-token, else `end`: eight
/// flags at a time.
#[inline(always)]
fn next_start(flags: &[u8], mut e: usize, end: usize) -> usize {
    const PTBS: u64 = u64::from_le_bytes([PTB; 8]);
    while e + 8 <= end {
        let mut word = [0u8; 8];
        word.copy_from_slice(&flags[e..e + 8]);
        let w = u64::from_le_bytes(word) & PTBS;
        if w != 0 {
            return e + (w.trailing_zeros() / 8) as usize;
        }
        e += 8;
    }
    while e < end && flags[e] & PTB == 0 {
        e += 1;
    }
    e
}

/// A pre-token of two bytes or more met by [`Grower::walk`], in 12 bytes: where its table
/// starts (40 bits), the order of its keys ([`lehmer_code`], 16 bits; [`NO_PLAN`]: longer than
/// [`PLANNED`]), its length (8 bits; 0: longer than [`CACHED`], with no table) and position.
type Occurrence = [u32; 3];

fn occurrence(table: usize, code: u32, len: usize, at: usize) -> Occurrence {
    debug_assert!(table >> TABLE_BITS == 0 && code <= NO_PLAN && len <= CACHED);
    [
        table as u32,
        (table >> 32) as u32 | code << 8 | (len as u32) << 24,
        at as u32,
    ]
}

/// `(table, code, length, position)` of an [`Occurrence`].
#[inline(always)]
fn occurrence_parts(o: Occurrence) -> (usize, u32, usize, usize) {
    let table = o[0] as usize | ((o[1] & 0xFF) as usize) << 32;
    (
        table,
        (o[1] >> 8) & 0xFFFF,
        (o[1] >> 24) as usize,
        o[2] as usize,
    )
}

/// No [`Plans`] entry: a pre-token longer than [`PLANNED`].
const NO_PLAN: u32 = 0xFFFF;

/// Marks a table entry not yet looked up (no id is as large: there are fewer strings than
/// bytes, under `u32::MAX`).
const UNSET: u32 = NO_ID - 1;

/// The entries of the table of a short pre-token of `m` bytes: one per segment `l..=r` at
/// [`tri`]`(l, r)`, and a last one for no segment, always [`NO_ID`].
fn table_size(m: usize) -> usize {
    m * (m + 1) / 2 + 1
}

/// Where the id of segment `l..=r` lies in a short pre-token's table.
#[inline(always)]
fn tri(l: usize, r: usize) -> usize {
    r * (r + 1) / 2 + l
}

/// The table entries of the segments a step joins in a pre-token of `m` bytes: its children
/// are the segments `l..x` and `x + 1..=r` (the entry for no segment where they are empty).
#[inline(always)]
fn child_slots(st: Step, m: usize) -> (usize, usize) {
    let none = table_size(m) - 1;
    let left = if st.x > st.l {
        tri(st.l, st.x - 1)
    } else {
        none
    };
    let right = if st.x < st.r {
        tri(st.x + 1, st.r)
    } else {
        none
    };
    (left, right)
}

/// One byte's step in a pre-token of `m` bytes: byte `x` grows, making the segment `l..=r`,
/// and joins the segments made by the steps of bytes `left` and `right` (`m`: none).
///
/// In growth order (key, then position), a byte joins the bytes grown before it on each side:
/// the segment it makes runs between its nearest larger bytes, and the ones it joins are its
/// children in the pre-token's Cartesian tree (a max-heap by key then position, in position
/// order), each made by that child's own step.
#[derive(Clone, Copy)]
struct Step {
    x: usize,
    l: usize,
    r: usize,
    left: usize,
    right: usize,
}

/// `f(x, l, r)` for each byte `x` of a pre-token of at most [`CACHED`] bytes with these keys,
/// in position order: `l..=r` is the segment that `x` makes when it grows (the same as its
/// [`Step`]'s), the bytes around it that grow before it. Two bit masks per byte (the bytes
/// with a larger key, and with a smaller one) give its nearest blockers on each side: on its
/// left a larger key, on its right a key at least as large (equal keys grow in position
/// order). No stack and no data-dependent branch, where [`cartesian_steps`] mispredicts.
#[inline(always)]
fn segments(keys: &[u32], mut f: impl FnMut(usize, usize, usize)) {
    let m = keys.len();
    debug_assert!(m <= CACHED && CACHED < 16);
    // Past the pre-token, a key larger than any (finite signals' keys are below `u32::MAX`):
    // every segment ends by position 15.
    let mut k = [u32::MAX; 16];
    k[..m].copy_from_slice(keys);
    let masks = KeyMasks::new(&k);
    for (x, &key) in keys.iter().enumerate() {
        let (larger, smaller) = masks.around(key);
        let left = larger & ((1 << x) - 1);
        let l = (u32::BITS - left.leading_zeros()) as usize;
        let right = !smaller & (u32::MAX << (x + 1));
        f(x, l, right.trailing_zeros() as usize - 1);
    }
}

/// 16 keys, compared to one at a time (see [`segments`]): SSE2 on x86-64, four keys per
/// compare; else a loop.
#[cfg(target_arch = "x86_64")]
struct KeyMasks([std::arch::x86_64::__m128i; 4]);

#[cfg(target_arch = "x86_64")]
impl KeyMasks {
    /// The top bit of every key flipped, so that signed compares order them as `u32`s.
    const FLIP: i32 = i32::MIN;

    #[inline(always)]
    fn new(k: &[u32; 16]) -> Self {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_set1_epi32, _mm_xor_si128};
        let p = k.as_ptr().cast::<__m128i>();
        // SAFETY: SSE2 is part of x86-64, and the four unaligned loads read `k`'s 64 bytes.
        #[allow(unused_unsafe)]
        Self([0, 1, 2, 3].map(|i| unsafe {
            _mm_xor_si128(_mm_loadu_si128(p.add(i)), _mm_set1_epi32(Self::FLIP))
        }))
    }

    /// Bit `y` of the first mask: key `y` is larger than `key`; of the second: smaller.
    #[inline(always)]
    fn around(&self, key: u32) -> (u32, u32) {
        use std::arch::x86_64::{
            __m128i, _mm_cmpgt_epi32, _mm_cmplt_epi32, _mm_movemask_epi8, _mm_packs_epi16,
            _mm_packs_epi32, _mm_set1_epi32,
        };
        // SAFETY: SSE2 is part of x86-64; these intrinsics only compute on registers.
        #[allow(unused_unsafe)]
        unsafe {
            let v = _mm_set1_epi32(key as i32 ^ Self::FLIP);
            // All-ones or zero lanes, packed (saturating, so unchanged) into one byte per key.
            let bits = |c: [__m128i; 4]| {
                let lo = _mm_packs_epi32(c[0], c[1]);
                let hi = _mm_packs_epi32(c[2], c[3]);
                _mm_movemask_epi8(_mm_packs_epi16(lo, hi)) as u32
            };
            (
                bits(self.0.map(|q| _mm_cmpgt_epi32(q, v))),
                bits(self.0.map(|q| _mm_cmplt_epi32(q, v))),
            )
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
struct KeyMasks([u32; 16]);

#[cfg(not(target_arch = "x86_64"))]
impl KeyMasks {
    fn new(k: &[u32; 16]) -> Self {
        Self(*k)
    }

    fn around(&self, key: u32) -> (u32, u32) {
        masks_around(&self.0, key)
    }
}

/// [`KeyMasks::around`] by a loop (the SSE2 one is tested against it).
#[cfg(any(test, not(target_arch = "x86_64")))]
fn masks_around(k: &[u32; 16], key: u32) -> (u32, u32) {
    k.iter().enumerate().fold((0, 0), |(a, b), (y, &k)| {
        (a | u32::from(k > key) << y, b | u32::from(k < key) << y)
    })
}

/// The [`Step`]s of a pre-token with these keys, children before parents (so a string is
/// made before it is merged away; equal keys in position order): one stack pass builds the
/// Cartesian tree and emits each byte once its subtree is done. `stack` and `left_child` are
/// scratch.
fn cartesian_steps(
    keys: &[u32],
    stack: &mut Vec<usize>,
    left_child: &mut Vec<usize>,
    mut f: impl FnMut(Step),
) {
    let m = keys.len();
    stack.clear();
    if left_child.len() < m {
        left_child.resize(m, 0);
    }
    for t in 0..=m {
        let mut last = m;
        while let Some(&x) = stack.last() {
            if t < m && keys[x] > keys[t] {
                break;
            }
            stack.pop();
            let l = stack.last().map_or(0, |&y| y + 1);
            f(Step {
                x,
                l,
                r: t - 1,
                left: left_child[x],
                right: last,
            });
            last = x;
        }
        if t < m {
            left_child[t] = last;
            stack.push(t);
        }
    }
}

/// The longest pre-tokens whose [`Step`]s are looked up by the order of their keys.
const PLANNED: usize = 7;

/// The order of `keys` (by key, then position) as a number below `keys.len()!`: digit `i`
/// (weight `(m - 1 - i)!`) counts the later keys below key `i`. Without branches.
fn lehmer_code(keys: &[u32]) -> usize {
    let m = keys.len();
    let mut code = 0;
    for (i, &k) in keys.iter().enumerate() {
        let below: usize = keys[i + 1..].iter().map(|&x| usize::from(x < k)).sum();
        code = code * (m - i) + below;
    }
    code
}

/// The [`Step`]s of every order of up to [`PLANNED`] keys: for `m` keys and code `c` (see
/// [`lehmer_code`]), `steps[starts[m] + m * c..][..m]`, each as `[x, l, r, left, right]` with `left` and `right`
/// the table entries of the segments joined (see [`child_slots`]).
struct Plans {
    starts: Vec<usize>,
    steps: Vec<[u8; 5]>,
    /// `tri(l, r)` of each step: all that counting births needs (a fifth of the memory).
    tris: Vec<u8>,
}

fn plans() -> &'static Plans {
    static PLANS: std::sync::OnceLock<Plans> = std::sync::OnceLock::new();
    PLANS.get_or_init(|| {
        let mut plans = Plans {
            starts: vec![0; PLANNED + 2],
            steps: Vec::new(),
            tris: Vec::new(),
        };
        let (mut stack, mut left_child) = (Vec::new(), Vec::new());
        for m in 0..=PLANNED {
            let count: usize = (1..=m).product();
            plans.starts[m] = plans.steps.len();
            plans.steps.resize(plans.steps.len() + m * count, [0; 5]);
            // Every order of `m` distinct keys (Heap's algorithm over a permutation).
            let mut keys: Vec<u32> = (0..m as u32).collect();
            let mut c = vec![0usize; m];
            let mut put = |keys: &[u32]| {
                let at = plans.starts[m] + m * lehmer_code(keys);
                let mut i = at;
                cartesian_steps(keys, &mut stack, &mut left_child, |st| {
                    let (left, right) = child_slots(st, m);
                    let small = |v: usize| v as u8; // all below table_size(PLANNED)
                    plans.steps[i] = [st.x, st.l, st.r, left, right].map(small);
                    i += 1;
                });
            };
            put(&keys);
            let mut i = 1;
            while i < m {
                if c[i] < i {
                    keys.swap(if i % 2 == 0 { 0 } else { c[i] }, i);
                    put(&keys);
                    c[i] += 1;
                    i = 1;
                } else {
                    c[i] = 0;
                    i += 1;
                }
            }
        }
        plans.starts[PLANNED + 1] = plans.steps.len();
        plans.tris = plans
            .steps
            .iter()
            .map(|&[_, l, r, _, _]| tri(l.into(), r.into()) as u8)
            .collect();
        plans
    })
}

/// `pack(initial, &bytes[p..p + m])` for `m <= 15`, from one unaligned load (`bytes` has 16
/// bytes of padding after the text).
#[inline(always)]
fn pack_at(bytes: &[u8], p: usize, m: usize, initial: bool) -> u128 {
    let mut word = [0u8; 16];
    word.copy_from_slice(&bytes[p..p + 16]);
    let w = u128::from_le_bytes(word) & ((1u128 << (8 * m)) - 1);
    w | (m as u128) << 120 | u128::from(initial) << 127
}

/// Distinct short pre-tokens by [`pack`]ed key, each with its table of segment string ids
/// (see [`table_size`]; [`UNSET`] until first needed).
///
/// A slot holds a fingerprint of the key and where the table starts; the key itself is stored
/// in the 4 words before the table, so that a lookup reads the small slot array and then the
/// table, which it needs anyway.
struct PieceTable {
    /// A 24-bit fingerprint (never 0; 0: empty) above where the table starts (40 bits).
    slots: Vec<u64>,
    shift: u32,
    len: usize,
    tables: Vec<u32>,
}

/// The fewest slots of a [`PieceTable`] or an [`Interner`], as a power of two (few in tests).
const MIN_SLOT_BITS: u32 = if cfg!(test) { 3 } else { 12 };

/// The slots (as a power of two) of a hash table for about `per_root * sqrt(range)` entries
/// (distinct pre-tokens and strings grow more slowly than text) at most half full; the fewest
/// in tests, to test the growth.
fn slot_bits(range: usize, per_root: usize) -> u32 {
    let expected = if cfg!(test) {
        0
    } else {
        per_root * (range as f64).sqrt() as usize
    };
    (2 * expected)
        .next_power_of_two()
        .trailing_zeros()
        .max(MIN_SLOT_BITS)
}

/// The words before a table: its pre-token's key (and one more before them: where the
/// pre-token first occurs).
const HEADER: usize = 4;

/// The bits of a [`PieceTable`] slot that say where its table starts.
const TABLE_BITS: u32 = 40;
const TABLE_MASK: u64 = (1 << TABLE_BITS) - 1;

impl PieceTable {
    /// For the pre-tokens of `range` bytes of text: about `32 * sqrt(range)` distinct ones
    /// (8.45 MB of the evaluation's English hold one per 90-170 bytes), so that the slots
    /// seldom grow (each time reading every table's key again, a cache miss each).
    /// (`most`: the most bytes it may take, for the tables' first room.)
    fn new(range: usize, most: usize) -> Self {
        let bits = slot_bits(range, 32);
        Self {
            slots: crate::mem::huge_zeroed(1 << bits),
            shift: 64 - bits,
            len: 0,
            tables: Vec::with_capacity((most / 2).min(1 << 23)),
        }
    }

    /// The home slot and fingerprint of `key`.
    #[inline(always)]
    fn hash(&self, key: u128) -> (usize, u64) {
        let x = (key as u64) ^ ((key >> 64) as u64).rotate_left(29);
        let x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (
            (x >> self.shift) as usize,
            ((x >> 20) & 0xFF_FFFF | 1) << TABLE_BITS,
        )
    }

    fn words(key: u128) -> [u32; HEADER] {
        [0, 32, 64, 96].map(|s| (key >> s) as u32)
    }

    /// A hint that the pre-token with `key` will be looked up soon.
    #[inline(always)]
    fn prefetch(&self, key: u128) {
        prefetch(&self.slots[self.hash(key).0]);
    }

    /// A hint that the table of the pre-token with `key` will be read soon (once its slot is
    /// in cache: see [`PieceTable::prefetch`]).
    #[inline(always)]
    fn prefetch_table(&self, key: u128, m: usize) {
        let mask = self.slots.len() - 1;
        let (mut i, fp) = self.hash(key);
        loop {
            let slot = self.slots[i];
            if slot & !TABLE_MASK == fp {
                let at = (slot & TABLE_MASK) as usize - HEADER;
                let end = (at + HEADER + table_size(m)).min(self.tables.len());
                for j in (at..end).step_by(16).take(3) {
                    prefetch(&self.tables[j]);
                }
                return;
            }
            if slot == 0 {
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// The table of the pre-token with `key` and `m` bytes (a new one, of zeros, if it is new:
    /// this one at position `p`).
    fn find(&mut self, key: u128, m: usize, p: usize) -> usize {
        let mask = self.slots.len() - 1;
        let (mut i, fp) = self.hash(key);
        let words = Self::words(key);
        loop {
            let slot = self.slots[i];
            let table = (slot & TABLE_MASK) as usize;
            if slot & !TABLE_MASK == fp && self.tables[table - HEADER..table] == words {
                return table;
            }
            if slot == 0 {
                self.tables.push(p as u32);
                self.tables.extend_from_slice(&words);
                let table = self.tables.len();
                self.tables.resize(table + table_size(m), 0);
                self.slots[i] = fp | table as u64;
                self.len += 1;
                if self.len * 2 > self.slots.len() {
                    self.grow();
                }
                return table;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let size = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, crate::mem::huge_zeroed(size));
        self.shift -= 1;
        for slot in old {
            if slot != 0 {
                let at = (slot & TABLE_MASK) as usize - HEADER;
                let mut words = [0u32; HEADER];
                words.copy_from_slice(&self.tables[at..at + HEADER]);
                let key = words
                    .iter()
                    .enumerate()
                    .fold(0u128, |k, (i, &w)| k | u128::from(w) << (32 * i));
                let (mut j, fp) = self.hash(key);
                while self.slots[j] != 0 {
                    j = (j + 1) & (size - 1);
                }
                self.slots[j] = fp | (slot & TABLE_MASK);
            }
        }
    }
}

/// Replays the [`Record`]s in growth order, counting strings and how many reach `min_count`.
struct Replay<R> {
    /// Per live id, and [`SPARE`] more slots that [`Record::NONE`] updates (never counted as
    /// qualified).
    counts: Vec<u32>,
    qualified: usize,
    want: usize,
    /// `min_count`.
    min: u32,
    /// Where the growth stopped: the last byte's key, and the rank of its record among those
    /// of that key (in the order they were recorded).
    last: Option<(u32, usize)>,
    /// Buffers for [`Replay::grow`]'s sorts.
    sorted: Vec<R>,
    spare: Vec<R>,
}

/// The count slots that [`Record::NONE`]'s updates take in turn (see [`Replay::slot`]).
const SPARE: usize = 8;

impl<R: Record> Replay<R> {
    /// Where string `id`'s count is; for [`Record::NONE`], one of the [`SPARE`] slots (by
    /// `spare`): the updates of no string are many (most children are one byte, or dead), and
    /// in one slot each would wait on the one before it.
    #[inline(always)]
    fn slot(&self, id: u32, spare: usize) -> usize {
        let n = self.counts.len() - SPARE;
        let i = id as usize;
        if i < n {
            i
        } else {
            n + spare % SPARE
        }
    }

    /// One more occurrence of string `id`.
    #[inline(always)]
    fn made(&mut self, id: u32, spare: usize) {
        let (i, min) = (self.slot(id, spare), self.min);
        let c = &mut self.counts[i];
        *c = c.wrapping_add(1);
        self.qualified += usize::from(*c == min) & usize::from(id != R::NONE);
    }

    /// One occurrence of string `id` fewer.
    #[inline(always)]
    fn gone(&mut self, id: u32, spare: usize) {
        let (i, min) = (self.slot(id, spare), self.min);
        let c = &mut self.counts[i];
        self.qualified -= usize::from(*c == min) & usize::from(id != R::NONE);
        *c = c.wrapping_sub(1);
    }

    /// Grows the bytes of one bucket (the records of a range of keys, in `parts`, in the order
    /// recorded: pre-token order; `base` a key in the range, see [`Record::key`]) in growth
    /// order; true when the growth stopped among them.
    ///
    /// A byte adds at most one occurrence, so at most one qualified string: if there are
    /// fewer bytes than strings still wanted, none of them can stop the growth. Otherwise,
    /// the new occurrences alone are added first, which bounds how many strings can qualify
    /// at any point among these bytes (counts only rise): if that stays under `want`, none of
    /// them can stop it either. Where none can, their order does not matter: the counts after
    /// them are those of the segments then. (On the way a count can pass below zero, where a
    /// segment is merged away before the step that made it; the counts wrap, and `qualified`
    /// only changes where a count passes `min`, at least 1.) Otherwise the bucket is put in
    /// growth order (a stable radix sort by key: equal keys stay in position order) and grown
    /// byte by byte.
    fn grow(&mut self, parts: &[&[R]], base: u32) -> bool {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let records = || parts.iter().flat_map(|p| p.iter()).enumerate();
        if len < self.want - self.qualified {
            let mut j = 0;
            for part in parts {
                for e in part.iter() {
                    let [left, right, new] = e.ids();
                    self.gone(left, j);
                    self.gone(right, j + 1);
                    self.made(new, j + 2);
                    j += 3;
                }
            }
            return false;
        }
        let mut j = 0;
        for part in parts {
            for e in part.iter() {
                self.made(e.ids()[2], j);
                j += 1;
            }
        }
        let cannot_stop = self.qualified < self.want;
        for (j, e) in records() {
            let [left, right, new] = e.ids();
            if cannot_stop {
                self.gone(left, 2 * j);
                self.gone(right, 2 * j + 1);
            } else {
                self.gone(new, j); // undone
            }
        }
        if cannot_stop {
            return false;
        }
        let mut sorted = std::mem::take(&mut self.sorted);
        sorted.clear();
        for part in parts {
            sorted.extend_from_slice(part);
        }
        radix_sort_by(&mut sorted, &mut self.spare, |e| e.key(base));
        let mut stopped = false;
        for (i, e) in sorted.iter().enumerate() {
            let [left, right, new] = e.ids();
            self.gone(left, 3 * i);
            self.gone(right, 3 * i + 1);
            self.made(new, 3 * i + 2);
            if self.qualified >= self.want {
                let key = e.key(base);
                let first = sorted[..i]
                    .iter()
                    .rposition(|f| f.key(base) != key)
                    .map_or(0, |j| j + 1);
                self.last = Some((key, i - first));
                stopped = true;
                break;
            }
        }
        self.sorted = sorted;
        stopped
    }
}

/// Sorts `v` by `key`, stably (LSD radix on the bytes of the keys that differ: memory
/// traffic, not arithmetic, is the cost here), with `spare` as scratch.
fn radix_sort_by<T: Copy + Default>(v: &mut Vec<T>, spare: &mut Vec<T>, key: impl Fn(&T) -> u32) {
    let (any, all) = v
        .iter()
        .fold((0u32, u32::MAX), |(o, a), x| (o | key(x), a & key(x)));
    for shift in [0, 8, 16, 24] {
        if ((any ^ all) >> shift) & 0xFF == 0 {
            continue; // every key has the same byte here
        }
        let digit = |x: &T| ((key(x) >> shift) & 0xFF) as usize;
        let mut starts = [0usize; 256];
        for x in v.iter() {
            starts[digit(x)] += 1;
        }
        let mut at = 0;
        for c in starts.iter_mut() {
            (*c, at) = (at, at + *c);
        }
        spare.clear();
        spare.resize(v.len(), T::default());
        for x in v.iter() {
            let d = &mut starts[digit(x)];
            spare[*d] = *x;
            *d += 1;
        }
        std::mem::swap(v, spare);
    }
}

/// The base of the polynomial hash of strings longer than [`SMALL`] (odd, so every power is).
const HASH_BASE: u64 = 0x100_0000_01B3;

/// The key of a string longer than [`SMALL`] bytes: a 56-bit fingerprint of its polynomial
/// hash `h` and length, with 127 in the length field (no packed key has it) and the flag on
/// top. Equal keys are told apart by comparing bytes ([`Interner::intern`]).
fn long_key(initial: bool, h: u64, len: usize) -> u64 {
    let mut x = h ^ (len as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    (x & ((1 << 56) - 1)) | 0x7F << 56 | u64::from(initial) << 63
}

/// The [`Interner`] key of `len` bytes from byte `s` of a [`pack`]ed short pre-token, with
/// flag `initial` (as `key_of` computes it from the bytes).
#[inline(always)]
fn packed_key(piece: u128, initial: bool, s: usize, len: usize) -> u64 {
    let bytes = piece >> (8 * s);
    if len <= SMALL {
        let b = (bytes as u64) & ((1 << (8 * len)) - 1);
        b | (len as u64) << 56 | u64::from(initial) << 63
    } else {
        let h = (0..len).fold(0u64, |h, i| {
            h.wrapping_mul(HASH_BASE)
                .wrapping_add(u64::from((bytes >> (8 * i)) as u8) + 1)
        });
        long_key(initial, h, len)
    }
}

/// The key of the string `bytes[start..start + len]` with flag `initial` (see [`Interner`]).
#[cfg(test)]
fn key_of(bytes: &[u8], initial: bool, start: usize, len: usize) -> u64 {
    let b = &bytes[start..start + len];
    if len <= SMALL {
        pack_small(initial, b)
    } else {
        let h = b.iter().fold(0u64, |h, &x| {
            h.wrapping_mul(HASH_BASE).wrapping_add(u64::from(x) + 1)
        });
        long_key(initial, h, len)
    }
}

/// Segment strings, interned to dense ids by key (see [`pack_small`], [`long_key`]) in an
/// open-addressing table; each id keeps where one occurrence lies in the corpus.
struct Interner<'a> {
    bytes: &'a [u8],
    /// `(key, id)`, key 0 empty (no key is 0: the length field never is).
    slots: Vec<(u64, u32)>,
    shift: u32,
    /// Per id: start, length, flag.
    strings: Vec<(u32, u32, bool)>,
}

impl<'a> Interner<'a> {
    /// For the strings of `range` bytes of text: about `64 * sqrt(range)` (distinct strings
    /// grow more slowly than text: 8.45 MB of the evaluation's English hold one per 40-80
    /// bytes), so that the table seldom grows (each time rehashing every string into new
    /// pages).
    fn new(bytes: &'a [u8], range: usize) -> Self {
        let bits = slot_bits(range, 64);
        Self {
            bytes,
            slots: crate::mem::huge_zeroed(1 << bits),
            shift: 64 - bits,
            strings: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.strings.len()
    }

    fn slot(&self, key: u64) -> usize {
        ((key ^ (key >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// The id of the string `bytes[start..start + len]` whose key is `key`, or the empty slot
    /// where it would go.
    #[inline]
    fn probe(&self, key: u64, start: usize, len: usize) -> std::result::Result<u32, usize> {
        let mask = self.slots.len() - 1;
        let mut i = self.slot(key);
        loop {
            let (k, id) = self.slots[i];
            if k == key {
                let (s, n, _) = self.strings[id as usize];
                // Short keys are the strings themselves; long ones are checked byte by byte.
                if len <= SMALL
                    || (n as usize == len
                        && self.bytes[s as usize..s as usize + len]
                            == self.bytes[start..start + len])
                {
                    return Ok(id);
                }
            } else if k == 0 {
                return Err(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// A new id for the string `bytes[start..start + len]` with flag `initial` and key `key`,
    /// in `slot` (empty, from [`Interner::probe`]).
    fn insert(&mut self, slot: usize, key: u64, start: usize, len: usize, initial: bool) -> u32 {
        let id = self.strings.len() as u32;
        self.strings.push((start as u32, len as u32, initial));
        self.slots[slot] = (key, id);
        if self.strings.len() * 2 > self.slots.len() {
            self.grow();
        }
        id
    }

    /// The id of the string `bytes[start..start + len]` with flag `initial`, whose key is
    /// `key`; a new id if it is new.
    #[inline]
    fn intern(&mut self, key: u64, start: usize, len: usize, initial: bool) -> u32 {
        match self.probe(key, start, len) {
            Ok(id) => id,
            Err(slot) => self.insert(slot, key, start, len, initial),
        }
    }

    fn grow(&mut self) {
        let size = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, crate::mem::huge_zeroed(size));
        self.shift -= 1;
        let mask = self.slots.len() - 1;
        for (k, id) in old {
            if k != 0 {
                let mut i = self.slot(k);
                while self.slots[i].0 != 0 {
                    i = (i + 1) & mask;
                }
                self.slots[i] = (k, id);
            }
        }
    }

    /// A hint that `key` will be interned soon.
    #[inline(always)]
    fn prefetch(&self, key: u64) {
        prefetch(&self.slots[self.slot(key)]);
    }

    /// `(initial, bytes)` of an id.
    fn get(&self, id: usize) -> (bool, Vec<u8>) {
        let (s, n, initial) = self.strings[id];
        (initial, self.bytes[s as usize..(s + n) as usize].to_vec())
    }
}

/// The previous implementation of [`global_spans`] (one hash-map update per segment string
/// per step), kept to check the fast one against.
#[cfg(test)]
fn global_spans_reference(
    docs: &[&[u8]],
    ptbs: &[&[bool]],
    signals: &[&[f32]],
    want: usize,
    min_count: u64,
) -> Result<GlobalSpans> {
    if min_count == 0 {
        return Err(Error::Config("min_count must be at least 1".into()));
    }
    let total: usize = docs.iter().map(|d| d.len()).sum();
    if total >= u32::MAX as usize {
        return Err(Error::Config(format!(
            "the global constraint takes under 4 GiB of text, not {total} bytes"
        )));
    }
    let mut bytes = Vec::with_capacity(total);
    let mut ptb = Vec::with_capacity(total);
    let mut order = Vec::with_capacity(total);
    if ptbs.len() != docs.len() || signals.len() != docs.len() {
        return Err(Error::Config(format!(
            "{} documents, {} boundary arrays and {} signals",
            docs.len(),
            ptbs.len(),
            signals.len()
        )));
    }
    for (i, ((d, p), s)) in docs.iter().zip(ptbs).zip(signals).enumerate() {
        check_signal(s, d.len()).map_err(|e| in_document(i, e))?;
        if p.len() != d.len() {
            return Err(Error::Config(
                "one pre-token flag per byte is needed".into(),
            ));
        }
        for &x in s.iter() {
            order.push(u64::from(ordered_bits(x)) << 32 | bytes.len() as u64);
            bytes.push(0);
        }
        let at = bytes.len() - d.len();
        bytes[at..].copy_from_slice(d);
        ptb.extend_from_slice(p);
    }
    let mut out = GlobalSpans {
        tokens: Vec::new(),
        steps: 0,
        threshold: None,
        full: want == 0,
    };
    if want == 0 {
        return Ok(out);
    }
    radix_sort_by(&mut order, &mut Vec::new(), |&p| (p >> 32) as u32);

    let bytes = &bytes[..];
    // Per position: bit 0 starts a pre-token, bit 1 is a space, bit 2 has grown.
    const PTB: u8 = 1;
    const SPACE: u8 = 2;
    const GROWN: u8 = 4;
    let mut flags: Vec<u8> = ptb
        .iter()
        .zip(bytes)
        .map(|(&p, &b)| (u8::from(p) * PTB) | (u8::from(b == b' ') * SPACE))
        .collect();
    drop(ptb);
    // The string of segment `l..=r` (see above), if two bytes or more.
    let key = |flags: &[u8], l: usize, r: usize| -> Option<(bool, &[u8])> {
        let s = if l > 0 && flags[l] & PTB == 0 && flags[l - 1] & (PTB | SPACE) == PTB | SPACE {
            l - 1
        } else {
            l
        };
        (r + 1 - s >= 2).then(|| (flags[s] & PTB != 0, &bytes[s..=r]))
    };
    // At a segment's right end: its left end; at its left end: its right end (one slot each:
    // the two ends differ unless the segment is one byte, whose slot holds itself).
    let mut other_end = vec![0u32; total];
    let mut counts = PackedCounts::default();
    let mut qualified = 0usize;
    // Steps visit random positions: fetch a later step's memory while this one runs.
    const AHEAD: usize = 12;
    for (step, &packed) in order.iter().enumerate() {
        if let Some(&later) = order.get(step + AHEAD) {
            let u = (later & 0xFFFF_FFFF) as usize;
            prefetch(&other_end[u]);
            prefetch(&flags[u]);
            prefetch(&bytes[u]);
        }
        let t = (packed & 0xFFFF_FFFF) as usize;
        let (mut l, mut r) = (t, t);
        if t > 0 && flags[t] & PTB == 0 && flags[t - 1] & GROWN != 0 {
            l = other_end[t - 1] as usize;
            if let Some((f, b)) = key(&flags, l, t - 1) {
                if counts.add(f, b, -1) + 1 == min_count {
                    qualified -= 1;
                }
            }
        }
        if t + 1 < total && flags[t + 1] & (PTB | GROWN) == GROWN {
            r = other_end[t + 1] as usize;
            if let Some((f, b)) = key(&flags, t + 1, r) {
                if counts.add(f, b, -1) + 1 == min_count {
                    qualified -= 1;
                }
            }
        }
        flags[t] |= GROWN;
        other_end[r] = l as u32;
        other_end[l] = r as u32;
        if let Some((f, b)) = key(&flags, l, r) {
            if counts.add(f, b, 1) == min_count {
                qualified += 1;
            }
        }
        out.steps = step + 1;
        if qualified >= want {
            out.full = true;
            break;
        }
    }
    if let Some(&last) = order.get(out.steps.wrapping_sub(1)) {
        let t = (last & 0xFFFF_FFFF) as usize;
        out.threshold = Some(signal_at(signals, t));
    }
    out.tokens = counts.top(want, min_count);
    Ok(out)
}

/// A hint that `x` will be read soon (no effect where the target has no prefetch).
#[inline(always)]
fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and changes no state the program can observe.
    #[allow(unused_unsafe)]
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((x as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// The signal value at global position `t` of the concatenated documents.
fn signal_at(signals: &[&[f32]], mut t: usize) -> f32 {
    for s in signals {
        if t < s.len() {
            return s[t];
        }
        t -= s.len();
    }
    f32::NAN
}

/// The ranks of the two values whose interpolation is the `q`-th percentile of `n` values,
/// and the weight of the second.
fn percentile_ranks(n: u64, q: f64) -> (u64, u64, f64) {
    let pos = q.clamp(0.0, 100.0) / 100.0 * (n - 1) as f64;
    let lo = pos.floor() as u64;
    let frac = pos - lo as f64;
    let hi = if frac > 0.0 && lo + 1 < n { lo + 1 } else { lo };
    (lo, hi, frac)
}

/// The percentile from the values of ranks `lo` (the `at`th of `vals`, from 0) and `lo + 1`
/// (the smallest after it, when `hi > lo`).
fn interpolate(vals: &mut [f32], at: usize, hi_too: bool, frac: f64) -> f32 {
    let (_, &mut x, rest) = vals.select_nth_unstable_by(at, f32::total_cmp);
    let a = f64::from(x);
    let b = if hi_too {
        // (In the same total order: a NaN above is the next value, not skipped.)
        f64::from(rest.iter().copied().min_by(f32::total_cmp).unwrap_or(x))
    } else {
        a
    };
    (a + (b - a) * frac) as f32
}

/// Inputs of fewer values take [`percentile_by_histogram`] directly (small in tests, so that
/// they test the sampling).
const SAMPLED_FROM: usize = if cfg!(test) { 256 } else { 1 << 16 };

/// Every how many values the sample of [`percentile_by_sample`] takes one (odd, so that it
/// does not follow a pattern of even period).
const SAMPLE_EVERY: usize = if cfg!(test) { 7 } else { 127 };

/// The `q`-th percentile (0 to 100, linear interpolation, as numpy's default) of the values
/// that are not zero; None if there are none. Exact (the same as a full sort), without copying
/// the values: [`percentile_by_sample`], else [`percentile_by_histogram`].
pub fn percentile_nonzero(signals: &[&[f32]], q: f64, threads: usize) -> Option<f32> {
    let total: usize = signals.iter().map(|s| s.len()).sum();
    if total >= SAMPLED_FROM {
        if let Some(p) = percentile_by_sample(signals, q, threads) {
            return p;
        }
    }
    percentile_by_histogram(signals, q, threads)
}

/// [`percentile_nonzero`] in one pass where a sample allows: every [`SAMPLE_EVERY`]th value
/// gives a range of keys (order-preserving bit patterns) that should hold the wanted ranks,
/// with six standard deviations of margin; one vectorized pass counts the values below the
/// range and collects those in it, and when the ranks do fall in it, the answer is selected
/// from those. None (the caller falls back) when they do not, or when the sample holds too few
/// values that are not zero.
fn percentile_by_sample(signals: &[&[f32]], q: f64, threads: usize) -> Option<Option<f32>> {
    let zero = ordered_bits(0.0);
    let mut sample = Vec::new();
    let mut offset = 0;
    for s in signals {
        let skip = (SAMPLE_EVERY - offset % SAMPLE_EVERY) % SAMPLE_EVERY;
        sample.extend(
            s.iter()
                .skip(skip)
                .step_by(SAMPLE_EVERY)
                .map(|&x| ordered_bits(x))
                .filter(|&k| k != zero),
        );
        offset += s.len();
    }
    let m = sample.len();
    if m < 32 {
        return None;
    }
    let f = q.clamp(0.0, 100.0) / 100.0;
    let margin = 6.0 * (f * (1.0 - f)).max(1.0 / m as f64).sqrt() / (m as f64).sqrt();
    let rank = |g: f64| ((g.clamp(0.0, 1.0) * (m - 1) as f64).round() as usize).min(m - 1);
    let (r0, r1) = (
        rank(f - margin - 2.0 / m as f64),
        rank(f + margin + 2.0 / m as f64),
    );
    // The range: unbounded below or above where the sample's ranks reach its ends.
    let lo_key = if r0 == 0 {
        0
    } else {
        *sample.select_nth_unstable(r0).1
    };
    let hi_key = if r1 == m - 1 {
        u32::MAX
    } else {
        *sample.select_nth_unstable(r1).1
    };
    let span = hi_key - lo_key;
    // Whether a key is in the range, and a value to collect.
    let in_range = |k: u32| k.wrapping_sub(lo_key) <= span;
    let kept = |k: u32| in_range(k) && k != zero;
    // Per thread: values below the range (zeros too), zeros, and the values in it.
    let found = crate::par::fold(
        signals,
        threads,
        || (0u64, 0u64, Vec::new()),
        |(below, zeros, vals), s| {
            // Sixteen lanes of counts, added up every 2^26 values (before they could overflow).
            for part in s.chunks(1 << 26) {
                let (mut b, mut z) = ([0u32; 16], [0u32; 16]);
                let mut blocks = part.chunks_exact(64);
                for c in &mut blocks {
                    let mut hit = [0u32; 16];
                    for w in c.chunks_exact(16) {
                        for i in 0..16 {
                            let k = ordered_bits(w[i]);
                            b[i] += u32::from(k < lo_key);
                            z[i] += u32::from(k == zero);
                            hit[i] |= u32::from(in_range(k));
                        }
                    }
                    if hit.iter().any(|&h| h != 0) {
                        vals.extend(c.iter().copied().filter(|&x| kept(ordered_bits(x))));
                    }
                }
                *below += b.iter().map(|&x| u64::from(x)).sum::<u64>();
                *zeros += z.iter().map(|&x| u64::from(x)).sum::<u64>();
                for &x in blocks.remainder() {
                    let k = ordered_bits(x);
                    *below += u64::from(k < lo_key);
                    *zeros += u64::from(k == zero);
                    if kept(k) {
                        vals.push(x);
                    }
                }
            }
        },
    );
    let total: u64 = signals.iter().map(|s| s.len() as u64).sum();
    let zeros: u64 = found.iter().map(|f| f.1).sum();
    let below = found.iter().map(|f| f.0).sum::<u64>() - if zero < lo_key { zeros } else { 0 };
    let n = total - zeros;
    if n == 0 {
        return Some(None);
    }
    let (lo, hi, frac) = percentile_ranks(n, q);
    let mut vals: Vec<f32> = found.into_iter().flat_map(|f| f.2).collect();
    if lo < below || hi >= below + vals.len() as u64 {
        return None;
    }
    Some(Some(interpolate(
        &mut vals,
        (lo - below) as usize,
        hi > lo,
        frac,
    )))
}

/// [`percentile_nonzero`] in two passes: one builds a histogram over the top 16 bits of each
/// value's order-preserving bit pattern, the bucket that holds the wanted rank is read off it,
/// and a second pass collects only that bucket's values to select from.
fn percentile_by_histogram(signals: &[&[f32]], q: f64, threads: usize) -> Option<f32> {
    const BUCKETS: usize = 1 << 16;
    let bucket = |x: f32| (ordered_bits(x) >> 16) as usize;
    // Branch-free: zeros are counted in their bucket, then taken out.
    let hists = crate::par::fold(
        signals,
        threads,
        || (vec![0u64; BUCKETS], 0u64),
        |(h, zeros), s| {
            for &x in s.iter() {
                h[bucket(x)] += 1;
                *zeros += u64::from(x == 0.0);
            }
        },
    );
    let mut hist = vec![0u64; BUCKETS];
    for (h, zeros) in hists {
        for (a, b) in hist.iter_mut().zip(h) {
            *a += b;
        }
        hist[bucket(0.0)] -= zeros;
    }
    let n: u64 = hist.iter().sum();
    if n == 0 {
        return None;
    }
    let (lo, hi, frac) = percentile_ranks(n, q);
    // The buckets that hold ranks `lo` and `hi`, and how many values lie below them.
    let (mut first, mut below) = (0, 0u64);
    while below + hist[first] <= lo {
        below += hist[first];
        first += 1;
    }
    let (mut last, mut upto) = (first, below + hist[first]);
    while upto <= hi {
        last += 1;
        upto += hist[last];
    }
    // One more pass collects just those buckets' values (both ranks in one pass).
    let (lo_bucket, width) = (first as u32, (last - first) as u32);
    let mut vals: Vec<f32> = crate::par::fold(signals, threads, Vec::new, |v, s| {
        for &x in s.iter() {
            if (ordered_bits(x) >> 16).wrapping_sub(lo_bucket) <= width && x != 0.0 {
                v.push(x);
            }
        }
    })
    .concat();
    Some(interpolate(&mut vals, (lo - below) as usize, hi > lo, frac))
}

/// A ByteSpan vocabulary: ids `0..256` are the word-initial bytes, `256..512` the continuation
/// bytes, then learned tokens.
#[derive(Clone, Debug)]
pub struct SpanVocab {
    tokens: Vec<(bool, Vec<u8>)>,
    initial: FxHashMap<Vec<u8>, u32>,
    continuation: FxHashMap<Vec<u8>, u32>,
    longest: usize,
    pre: PreTokenizer,
    /// BPE inference: `(left, right) -> merged`, the merged id being the merge's rank.
    /// Derived on first use (longest match never needs them).
    merges: std::sync::OnceLock<FxHashMap<(u32, u32), u32>>,
}

impl SpanVocab {
    /// The byte alphabet (both kinds) followed by `learned` (duplicates and single bytes are
    /// skipped).
    pub fn new(learned: &[(bool, Vec<u8>)], pre: PreTokenizer) -> Result<Self> {
        let mut tokens: Vec<(bool, Vec<u8>)> = (0..=255u8).map(|b| (true, vec![b])).collect();
        tokens.extend((0..=255u8).map(|b| (false, vec![b])));
        for t in learned {
            if t.1.is_empty() {
                return Err(Error::Config("an empty token".into()));
            }
            if t.1.len() > 1 {
                tokens.push(t.clone());
            }
        }
        let mut initial = FxHashMap::default();
        let mut continuation = FxHashMap::default();
        let mut kept = Vec::with_capacity(tokens.len());
        for (flag, bytes) in tokens {
            let map = if flag {
                &mut initial
            } else {
                &mut continuation
            };
            if map.contains_key(&bytes) {
                continue;
            }
            map.insert(bytes.clone(), kept.len() as u32);
            kept.push((flag, bytes));
        }
        let longest = kept.iter().map(|t| t.1.len()).max().unwrap_or(1);
        Ok(Self {
            tokens: kept,
            initial,
            continuation,
            longest,
            pre,
            merges: std::sync::OnceLock::new(),
        })
    }

    fn merge_table(&self) -> &FxHashMap<(u32, u32), u32> {
        self.merges
            .get_or_init(|| derive_merges(&self.tokens, &self.initial, &self.continuation))
    }

    /// Learned tokens that BPE inference can produce (each has a merge).
    pub fn merge_count(&self) -> usize {
        self.merge_table().len()
    }

    /// The merges in rank order: `(left, right)` for each merged id, ascending.
    pub fn merges(&self) -> Vec<(u32, u32, u32)> {
        let mut all: Vec<(u32, u32, u32)> = self
            .merge_table()
            .iter()
            .map(|(&(l, r), &m)| (l, r, m))
            .collect();
        all.sort_unstable_by_key(|&(_, _, m)| m);
        all
    }

    /// BPE inference within each pre-token: from the bytes (the first word-initial, the
    /// rest continuations), repeatedly merge the adjacent pair whose merged token has the
    /// smallest id (ties: the leftmost), as HF `tokenizers`' BPE model does.
    /// Each distinct piece is merged once per call (see [`SpanVocab::encode_cached`]).
    pub fn encode_bpe(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let mut work = BpeWork::default();
        self.encode_cached(text, out, |piece, out| {
            self.encode_piece_bpe(piece, &mut work, out)
        })
    }

    /// `encode_piece` of every pre-token of `text`, each distinct piece of 2 to
    /// [`CACHED_PIECE`] bytes encoded once (for up to [`CACHED_PIECES`] distinct pieces): its
    /// ids are kept and copied where it occurs again.
    fn encode_cached(
        &self,
        text: &str,
        out: &mut Vec<u32>,
        mut encode_piece: impl FnMut(&[u8], &mut Vec<u32>),
    ) -> Result<()> {
        let bytes = text.as_bytes();
        // Piece -> where its ids start in `kept`, and how many.
        let mut cache: FxHashMap<&[u8], (u32, u32)> = FxHashMap::default();
        let mut kept: Vec<u32> = Vec::new();
        self.pre.for_each_piece(text, |s, e| {
            let piece = &bytes[s..e];
            if piece.len() == 1 {
                out.push(u32::from(piece[0])); // a word-initial byte
                return;
            }
            if piece.len() > CACHED_PIECE {
                encode_piece(piece, out);
                return;
            }
            if let Some(&(at, n)) = cache.get(piece) {
                out.extend_from_slice(&kept[at as usize..(at + n) as usize]);
                return;
            }
            let start = out.len();
            encode_piece(piece, out);
            if cache.len() == CACHED_PIECES {
                cache.clear();
                kept.clear();
            }
            let ids = &out[start..];
            cache.insert(piece, (kept.len() as u32, ids.len() as u32));
            kept.extend_from_slice(ids);
        })
    }

    fn encode_piece_bpe(&self, piece: &[u8], work: &mut BpeWork, out: &mut Vec<u32>) {
        use std::cmp::Reverse;
        const NONE: u32 = u32::MAX;
        let n = piece.len();
        let merges = self.merge_table();
        let BpeWork {
            ids,
            next,
            prev,
            heap,
        } = work;
        ids.clear();
        ids.extend(
            piece
                .iter()
                .enumerate()
                .map(|(i, &b)| u32::from(b) + if i == 0 { 0 } else { 256 }),
        );
        next.clear();
        next.extend((1..=n as u32).map(|i| if i as usize == n { NONE } else { i }));
        prev.clear();
        prev.extend((0..n as u32).map(|i| if i == 0 { NONE } else { i - 1 }));
        heap.clear();
        for i in 0..n.saturating_sub(1) {
            if let Some(&m) = merges.get(&(ids[i], ids[i + 1])) {
                heap.push(Reverse((m, i as u32)));
            }
        }
        while let Some(Reverse((m, i))) = heap.pop() {
            let i = i as usize;
            let j = next[i];
            // Stale entries: the symbol was merged away or its pair changed.
            if ids[i] == NONE || j == NONE {
                continue;
            }
            let j = j as usize;
            if merges.get(&(ids[i], ids[j])) != Some(&m) {
                continue;
            }
            ids[i] = m;
            ids[j] = NONE;
            next[i] = next[j];
            if next[j] != NONE {
                prev[next[j] as usize] = i as u32;
            }
            if prev[i] != NONE {
                let p = prev[i] as usize;
                if let Some(&m2) = merges.get(&(ids[p], ids[i])) {
                    heap.push(Reverse((m2, p as u32)));
                }
            }
            if next[i] != NONE {
                if let Some(&m2) = merges.get(&(ids[i], ids[next[i] as usize])) {
                    heap.push(Reverse((m2, i as u32)));
                }
            }
        }
        out.extend(ids.iter().copied().filter(|&id| id != NONE));
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn token(&self, id: u32) -> Option<&(bool, Vec<u8>)> {
        self.tokens.get(id as usize)
    }

    pub fn tokens(&self) -> &[(bool, Vec<u8>)] {
        &self.tokens
    }

    pub fn pre_tokenizer(&self) -> &PreTokenizer {
        &self.pre
    }

    /// Greedy longest match within each pre-token (see the module documentation).
    ///
    /// (No cache of pieces as [`SpanVocab::encode_bpe`] has: most pieces are whole tokens, one
    /// lookup, and the cache made encoding lines of text one by one 30% slower.)
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let bytes = text.as_bytes();
        self.pre
            .for_each_piece(text, |s, e| self.encode_piece(&bytes[s..e], out))
    }

    /// Greedy longest match over one pre-token.
    pub fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        let mut at = 0;
        while at < piece.len() {
            let map = if at == 0 {
                &self.initial
            } else {
                &self.continuation
            };
            let most = (piece.len() - at).min(self.longest);
            let (n, id) = (1..=most)
                .rev()
                .find_map(|n| map.get(&piece[at..at + n]).map(|&id| (n, id)))
                // Every byte is a token of both kinds, so n = 1 always matches.
                .unwrap_or((1, u32::from(piece[at]) + if at == 0 { 0 } else { 256 }));
            out.push(id);
            at += n;
        }
    }

    /// The learned tokens (after the alphabet) of this vocabulary grown to `target` tokens by
    /// BPE over the pre-tokens of `texts`, each first encoded by longest match (ByteSpan's
    /// "seeding": spans first, then BPE); `SpanVocab::new` of them is the grown vocabulary.
    /// The pre-tokens are counted, and the distinct ones encoded, on `threads` threads (0: all
    /// cores); the result does not depend on the number.
    pub fn fill_with_bpe(
        &self,
        texts: &[&str],
        target: usize,
        threads: usize,
    ) -> Result<Vec<(bool, Vec<u8>)>> {
        let mut counter = crate::count::Counter::new(self.pre.clone(), &[], threads)?;
        counter.add_texts(texts)?;
        let mut pieces: Vec<(Vec<u8>, u64)> = counter.into_counts().words.into_iter().collect();
        // The words' order does not change the merges (counts are sums, ties go by bytes), but
        // words in byte order that share pairs lie near each other, which a merge's visits to
        // them find in cache (in the hash map's order, `bpe_fill` took twice as long).
        pieces.sort_unstable();
        let chunks: Vec<&[(Vec<u8>, u64)]> = pieces.chunks(4096).collect();
        let words: Vec<(Vec<u32>, u64)> = crate::par::map(&chunks, threads, |chunk| {
            chunk
                .iter()
                .map(|(p, c)| {
                    let mut ids = Vec::with_capacity(p.len());
                    self.encode_piece(p, &mut ids);
                    (ids, *c)
                })
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect();
        drop(pieces);
        let added = bpe_fill(&self.tokens, &words, target);
        let mut learned: Vec<(bool, Vec<u8>)> = self.tokens[512..].to_vec();
        learned.extend(added);
        Ok(learned)
    }

    /// Concatenated token bytes; fails on an unknown id.
    pub fn decode(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for &id in ids {
            let t = self.tokens.get(id as usize).ok_or(Error::UnknownId {
                id: u64::from(id),
                vocab_size: self.tokens.len(),
            })?;
            out.extend_from_slice(&t.1);
        }
        Ok(out)
    }
}

/// The longest pieces that [`SpanVocab::encode_cached`] keeps the ids of, and how many it keeps
/// at most (then it starts again; the ids of that many pieces take 64 MB at most). Few in
/// tests, to test both.
const CACHED_PIECE: usize = if cfg!(test) { 8 } else { 64 };
const CACHED_PIECES: usize = if cfg!(test) { 4 } else { 1 << 18 };

/// Scratch space for BPE inference, reused across pre-tokens.
#[derive(Default)]
struct BpeWork {
    ids: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(u32, u32)>>,
}

/// Merges that let BPE inference build the vocabulary's tokens from bytes: for each learned
/// token, in id order, the split into a left part (same kind as the token) and a continuation
/// right part, both tokens with smaller ids that BPE can already build, whose later part is
/// earliest (the merge BPE training would have made first), ties to the shorter left part. A
/// token without such a split gets no merge: longest match can produce it, BPE cannot.
fn derive_merges(
    tokens: &[(bool, Vec<u8>)],
    initial: &FxHashMap<Vec<u8>, u32>,
    continuation: &FxHashMap<Vec<u8>, u32>,
) -> FxHashMap<(u32, u32), u32> {
    let mut buildable = vec![false; tokens.len()];
    let mut merges = FxHashMap::default();
    for (id, (flag, bytes)) in tokens.iter().enumerate() {
        if bytes.len() == 1 {
            buildable[id] = true;
            continue;
        }
        let left_map = if *flag { initial } else { continuation };
        let best = (1..bytes.len())
            .filter_map(|k| {
                let l = *left_map.get(&bytes[..k])?;
                let r = *continuation.get(&bytes[k..])?;
                let ok = (l as usize) < id
                    && (r as usize) < id
                    && buildable[l as usize]
                    && buildable[r as usize];
                ok.then_some((l.max(r), k, l, r))
            })
            .min();
        if let Some((_, _, l, r)) = best {
            buildable[id] = true;
            merges.insert((l, r), id as u32);
        }
    }
    merges
}

/// Calls `f` for each adjacent pair of `seq` as a left-to-right merge would see them: a run of
/// `k` equal symbols holds `k / 2` pairs of that symbol, not `k - 1`.
fn for_pairs(seq: &[u32], mut f: impl FnMut((u32, u32))) {
    let mut counted_equal_at = usize::MAX;
    for i in 0..seq.len().saturating_sub(1) {
        let p = (seq[i], seq[i + 1]);
        if p.0 == p.1 {
            if i > 0 && counted_equal_at == i - 1 {
                counted_equal_at = usize::MAX; // overlaps the pair just counted
                continue;
            }
            counted_equal_at = i;
        }
        f(p);
    }
}

/// A candidate merge of [`bpe_fill`]: a pair and its count when pushed (stale when the pair's
/// count has since fallen; checked when it reaches the top).
#[derive(Clone, Copy)]
struct FillCandidate {
    count: i64,
    pair: (u32, u32),
    /// The first 8 bytes of the left and right tokens, zero-padded, big-endian: where they
    /// differ they order the bytes as the whole tokens do (a tie in count is mostly decided
    /// here, without reading the tokens).
    prefixes: (u64, u64),
}

impl FillCandidate {
    fn new(count: i64, pair: (u32, u32), tokens: &[(bool, Vec<u8>)]) -> Self {
        let prefix = |id: u32| {
            let b = &tokens[id as usize].1;
            let mut word = [0u8; 8];
            let n = b.len().min(8);
            word[..n].copy_from_slice(&b[..n]);
            u64::from_be_bytes(word)
        };
        Self {
            count,
            pair,
            prefixes: (prefix(pair.0), prefix(pair.1)),
        }
    }
}

/// The max-heap of [`bpe_fill`]: by count, then the smaller `(left bytes, right bytes, ids)`.
/// Entries are 32 bytes (no token bytes of their own); ties read the bytes from the token table
/// only where the prefixes tie.
struct FillHeap(Vec<FillCandidate>);

impl FillHeap {
    /// Whether `x` should be popped before `y`.
    #[inline]
    fn above(tokens: &[(bool, Vec<u8>)], x: &FillCandidate, y: &FillCandidate) -> bool {
        if x.count != y.count {
            return x.count > y.count;
        }
        // `(left bytes, right bytes, pair)`, smaller first; each side's bytes compared whole
        // only where their prefixes tie (and the tokens differ).
        let side = |a: u32, b: u32, pa: u64, pb: u64| {
            if a == b {
                std::cmp::Ordering::Equal
            } else if pa != pb {
                pa.cmp(&pb)
            } else {
                tokens[a as usize].1.cmp(&tokens[b as usize].1)
            }
        };
        side(x.pair.0, y.pair.0, x.prefixes.0, y.prefixes.0)
            .then_with(|| side(x.pair.1, y.pair.1, x.prefixes.1, y.prefixes.1))
            .then_with(|| x.pair.cmp(&y.pair))
            .is_lt()
    }

    fn new(data: Vec<FillCandidate>, tokens: &[(bool, Vec<u8>)]) -> Self {
        let mut heap = Self(data);
        for i in (0..heap.0.len() / 2).rev() {
            heap.sift_down(i, tokens);
        }
        heap
    }

    fn push(&mut self, c: FillCandidate, tokens: &[(bool, Vec<u8>)]) {
        self.0.push(c);
        let mut i = self.0.len() - 1;
        while i > 0 {
            let parent = (i - 1) / 2;
            if !Self::above(tokens, &self.0[i], &self.0[parent]) {
                break;
            }
            self.0.swap(i, parent);
            i = parent;
        }
    }

    fn pop(&mut self, tokens: &[(bool, Vec<u8>)]) -> Option<FillCandidate> {
        if self.0.is_empty() {
            return None;
        }
        let top = self.0.swap_remove(0);
        self.sift_down(0, tokens);
        Some(top)
    }

    fn sift_down(&mut self, mut i: usize, tokens: &[(bool, Vec<u8>)]) {
        let n = self.0.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut best = i;
            if l < n && Self::above(tokens, &self.0[l], &self.0[best]) {
                best = l;
            }
            if r < n && Self::above(tokens, &self.0[r], &self.0[best]) {
                best = r;
            }
            if best == i {
                return;
            }
            self.0.swap(i, best);
            i = best;
        }
    }
}

/// A pair's count over the corpus and the words that may hold it (some stale, some twice).
#[derive(Default)]
struct FillPair {
    count: i64,
    words: Vec<u32>,
}

/// Fills a vocabulary up to `target` tokens by BPE over the words of a corpus, each given as
/// its token ids under the vocabulary so far (longest match) and its count: repeatedly the most
/// frequent adjacent pair inside a word (ties: the smaller pair of token bytes, then of ids)
/// becomes a token (word-initial if its left part is; a merge whose token exists already
/// reuses it), and its occurrences are replaced left to right without overlap (see
/// [`for_pairs`]). Returns the tokens added, in order.
///
/// Pair counts are kept incrementally: a merge visits only the words that hold its pair, and in
/// each changes the counts of the pairs whose number in the word changed (a run of equal
/// symbols counts half its pairs, so a merge can change counts beyond its neighbours). A
/// max-heap of candidates is checked lazily: an entry whose count has fallen is pushed again
/// with the current count when it reaches the top; a pair whose count grows gets a new entry.
/// (`bpe_fill_reference`, in the tests, recounts every word it touches: the same merges.)
pub fn bpe_fill(
    tokens: &[(bool, Vec<u8>)],
    words: &[(Vec<u32>, u64)],
    target: usize,
) -> Vec<(bool, Vec<u8>)> {
    let mut tokens: Vec<(bool, Vec<u8>)> = tokens.to_vec();
    let mut index: FxHashMap<(bool, Vec<u8>), u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    // The words' symbols, one after another; each word shrinks in place as it merges.
    let mut syms: Vec<u32> = Vec::with_capacity(words.iter().map(|w| w.0.len()).sum());
    // Per word: where its symbols start, how many are left, and its count (one cache line).
    let mut spans: Vec<(usize, usize, i64)> = Vec::with_capacity(words.len());
    let mut pairs: FxHashMap<(u32, u32), FillPair> = FxHashMap::default();
    for (w, (seq, count)) in words.iter().enumerate() {
        spans.push((syms.len(), seq.len(), *count as i64));
        syms.extend_from_slice(seq);
        for_pairs(seq, |p| {
            let e = pairs.entry(p).or_default();
            e.count += *count as i64;
            if e.words.last() != Some(&(w as u32)) {
                e.words.push(w as u32);
            }
        });
    }
    pairs.retain(|_, e| e.count > 0);
    let mut heap = FillHeap::new(
        pairs
            .iter()
            .map(|(&pair, e)| FillCandidate::new(e.count, pair, &tokens))
            .collect(),
        &tokens,
    );
    let mut added = Vec::new();
    // Scratch: a word's pairs before and after a merge, and the pairs that grew.
    let (mut before, mut after, mut grown) = (Vec::new(), Vec::new(), Vec::new());
    while tokens.len() < target {
        let Some(top) = heap.pop(&tokens) else {
            break;
        };
        let current = pairs.get(&top.pair).map_or(0, |e| e.count);
        if current != top.count {
            if current > 0 {
                let fresh = FillCandidate {
                    count: current,
                    ..top
                };
                heap.push(fresh, &tokens);
            }
            continue;
        }
        let (l, r) = top.pair;
        let mut bytes = tokens[l as usize].1.clone();
        bytes.extend_from_slice(&tokens[r as usize].1);
        let merged = (tokens[l as usize].0, bytes);
        let id = match index.get(&merged) {
            Some(&id) => id,
            None => {
                let id = tokens.len() as u32;
                index.insert(merged.clone(), id);
                tokens.push(merged.clone());
                added.push(merged);
                id
            }
        };
        // (No occurrence of the pair is left after the merge: the merged token is longer than
        // either part, so it is neither.)
        let mut holders = pairs.remove(&top.pair).map(|e| e.words).unwrap_or_default();
        holders.sort_unstable();
        holders.dedup();
        grown.clear();
        for (i, &w) in holders.iter().enumerate() {
            // (The words' entries and symbols are cache misses: fetched a few words ahead.)
            if let Some(&later) = holders.get(i + 8) {
                prefetch(&spans[later as usize]);
            }
            if let Some(s) = holders
                .get(i + 4)
                .and_then(|&w| syms.get(spans[w as usize].0))
            {
                prefetch(s);
            }
            let (start, len, weight) = spans[w as usize];
            let seq = &mut syms[start..start + len];
            if !seq.windows(2).any(|p| p[0] == l && p[1] == r) {
                continue; // stale
            }
            before.clear();
            for_pairs(seq, |p| before.push(p));
            // Left to right, without overlap, in place.
            let (mut i, mut n) = (0, 0);
            while i < len {
                if i + 1 < len && seq[i] == l && seq[i + 1] == r {
                    seq[n] = id;
                    i += 2;
                } else {
                    seq[n] = seq[i];
                    i += 1;
                }
                n += 1;
            }
            spans[w as usize].1 = n;
            after.clear();
            for_pairs(&seq[..n], |p| after.push(p));
            // The pairs whose number in the word changed, by how much.
            before.sort_unstable();
            after.sort_unstable();
            let (mut a, mut b) = (0, 0);
            while a < before.len() || b < after.len() {
                let p = match (before.get(a), after.get(b)) {
                    (Some(&x), Some(&y)) => x.min(y),
                    (Some(&x), None) => x,
                    (None, Some(&y)) => y,
                    (None, None) => break,
                };
                let mut delta = 0i64;
                while before.get(a) == Some(&p) {
                    delta -= 1;
                    a += 1;
                }
                while after.get(b) == Some(&p) {
                    delta += 1;
                    b += 1;
                }
                if delta == 0 || p == top.pair {
                    continue;
                }
                let e = pairs.entry(p).or_default();
                e.count += delta * weight;
                if delta > 0 {
                    e.words.push(w);
                    grown.push(p);
                } else if e.count <= 0 {
                    // No word holds it any more: its list is all stale.
                    pairs.remove(&p);
                }
            }
        }
        grown.sort_unstable();
        grown.dedup();
        for &pair in &grown {
            if let Some(e) = pairs.get(&pair) {
                if e.count > 0 {
                    let fresh = FillCandidate::new(e.count, pair, &tokens);
                    heap.push(fresh, &tokens);
                }
            }
        }
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `whole` (the concatenation of `parts`) as consecutive slices of the parts' lengths.
    fn slices_like<'w>(whole: &'w [f32], parts: &[Vec<f32>]) -> Vec<&'w [f32]> {
        let mut rest = whole;
        parts
            .iter()
            .map(|p| {
                let (here, after) = rest.split_at(p.len());
                rest = after;
                here
            })
            .collect()
    }

    /// Among pairs of equal count, the one with the smaller (left bytes, right bytes, ids) wins.
    type TieBreak = std::cmp::Reverse<(Vec<u8>, Vec<u8>, (u32, u32))>;

    /// Fills a vocabulary up to `target` tokens by BPE over the words of a corpus, each given as
    /// its token ids under the vocabulary so far (longest match) and its count: repeatedly the most
    /// frequent adjacent pair inside a word (ties: the smaller pair of token bytes) becomes a token
    /// (word-initial if its left part is), and its occurrences are replaced left to right without
    /// overlap. Pair counts are kept incrementally (each merge touches only the words that hold the
    /// pair). Returns the tokens added, in order.
    fn bpe_fill_reference(
        tokens: &[(bool, Vec<u8>)],
        words: &[(Vec<u32>, u64)],
        target: usize,
    ) -> Vec<(bool, Vec<u8>)> {
        use std::collections::BinaryHeap;

        let mut tokens: Vec<(bool, Vec<u8>)> = tokens.to_vec();
        let mut index: FxHashMap<(bool, Vec<u8>), u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut seqs: Vec<Vec<u32>> = words.iter().map(|w| w.0.clone()).collect();
        let mut counts: FxHashMap<(u32, u32), i64> = FxHashMap::default();
        let mut holders: FxHashMap<(u32, u32), Vec<u32>> = FxHashMap::default();
        for (w, seq) in seqs.iter().enumerate() {
            for_pairs(seq, |p| {
                *counts.entry(p).or_insert(0) += words[w].1 as i64;
                holders.entry(p).or_default().push(w as u32);
            });
        }
        // Max-heap of (count, reversed tie-break) with lazy invalidation.
        let key = |tokens: &Vec<(bool, Vec<u8>)>, p: (u32, u32)| {
            let (a, b) = (&tokens[p.0 as usize].1, &tokens[p.1 as usize].1);
            std::cmp::Reverse((a.clone(), b.clone(), p))
        };
        let mut heap: BinaryHeap<(i64, TieBreak)> = counts
            .iter()
            .filter(|(_, &c)| c > 0)
            .map(|(&p, &c)| (c, key(&tokens, p)))
            .collect();
        let mut added = Vec::new();
        while tokens.len() < target {
            let Some((c, std::cmp::Reverse((_, _, pair)))) = heap.pop() else {
                break;
            };
            if counts.get(&pair).copied().unwrap_or(0) != c || c <= 0 {
                continue; // stale entry
            }
            let (l, r) = pair;
            let merged = (tokens[l as usize].0, {
                let mut b = tokens[l as usize].1.clone();
                b.extend_from_slice(&tokens[r as usize].1);
                b
            });
            let id = match index.get(&merged) {
                Some(&id) => id,
                None => {
                    let id = tokens.len() as u32;
                    index.insert(merged.clone(), id);
                    tokens.push(merged.clone());
                    added.push(merged);
                    id
                }
            };
            let mut ws = holders.remove(&pair).unwrap_or_default();
            ws.sort_unstable();
            ws.dedup();
            let mut touched: FxHashMap<(u32, u32), ()> = FxHashMap::default();
            for w in ws {
                let weight = words[w as usize].1 as i64;
                let seq = &mut seqs[w as usize];
                if !seq.windows(2).any(|p| p[0] == l && p[1] == r) {
                    continue;
                }
                for_pairs(seq, |p| {
                    *counts.entry(p).or_insert(0) -= weight;
                    touched.insert(p, ());
                });
                let mut out = Vec::with_capacity(seq.len());
                let mut i = 0;
                while i < seq.len() {
                    if i + 1 < seq.len() && seq[i] == l && seq[i + 1] == r {
                        out.push(id);
                        i += 2;
                    } else {
                        out.push(seq[i]);
                        i += 1;
                    }
                }
                *seq = out;
                for_pairs(seq, |p| {
                    *counts.entry(p).or_insert(0) += weight;
                    holders.entry(p).or_default().push(w);
                    touched.insert(p, ());
                });
            }
            for (p, ()) in touched {
                let c = counts.get(&p).copied().unwrap_or(0);
                if c > 0 && p != pair {
                    heap.push((c, key(&tokens, p)));
                }
            }
            counts.remove(&pair);
        }
        added
    }

    fn spans(text: &str, signal: &[f32], c: Constraint) -> Vec<(String, bool)> {
        let pre = PreTokenizer::new("gpt2").expect("pattern");
        let ptb = boundaries(&pre, text).expect("ptb");
        let mut out = Vec::new();
        find_spans(text.as_bytes(), signal, &ptb, c, |s, e, initial| {
            out.push((text[s..e].to_string(), initial));
        });
        out
    }

    #[test]
    fn monotonic_spans_follow_falling_signal() {
        // "abcd": a high, then falling b, c; d rises.
        let got = spans("abcd", &[5.0, 3.0, 1.0, 4.0], Constraint::Monotonic);
        assert_eq!(got, vec![("abc".to_string(), true)]);
        // Nothing falls: no span.
        assert!(spans("abcd", &[1.0, 2.0, 3.0, 4.0], Constraint::Monotonic).is_empty());
    }

    #[test]
    fn combined_groups_low_values_too() {
        let sig = [5.0, 1.0, 2.0, 3.0];
        assert_eq!(
            spans("abcd", &sig, Constraint::Monotonic),
            vec![("ab".into(), true)]
        );
        let got = spans("abcd", &sig, Constraint::Combined { threshold: 2.5 });
        assert_eq!(got, vec![("abc".to_string(), true)]);
    }

    #[test]
    fn pre_token_rules() {
        // " cat sat": pre-tokens " cat" and " sat". The falling run from " " to "s" crosses the
        // boundary: it is cut into " cat" and " s"; then "at" is a continuation span.
        let text = " cat sat";
        let sig = [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 9.0, 8.0];
        let got = spans(text, &sig, Constraint::Monotonic);
        assert_eq!(
            got,
            vec![
                (" cat".to_string(), true),
                (" s".to_string(), true),
                ("at".to_string(), false)
            ]
        );
        // A span starting on "s" right after the space that opens " sat" takes the space in.
        let sig = [9.0, 1.0, 0.5, 0.2, 0.1, 9.0, 1.0, 0.5];
        let got = spans(text, &sig, Constraint::Monotonic);
        assert_eq!(
            got,
            vec![(" cat".to_string(), true), (" sat".to_string(), true)]
        );
        // Inside a word there is no space to absorb.
        let got = spans(" cat", &[9.0, 1.0, 8.0, 7.0], Constraint::Monotonic);
        assert_eq!(
            got,
            vec![(" c".to_string(), true), ("at".to_string(), false)]
        );
    }

    #[test]
    fn longest_match_with_both_kinds() {
        let pre = PreTokenizer::new("gpt2").expect("pattern");
        let learned = vec![
            (true, b" un".to_vec()),
            (false, b"believ".to_vec()),
            (false, b"able".to_vec()),
            (true, b" unbeliev".to_vec()),
            (false, b"un".to_vec()),
        ];
        let v = SpanVocab::new(&learned, pre).expect("vocab");
        let mut ids = Vec::new();
        v.encode(" unbelievable unable", &mut ids).expect("encode");
        let shown: Vec<String> = ids
            .iter()
            .map(|&i| {
                let t = v.token(i).expect("token");
                format!(
                    "{}{}",
                    if t.0 { "^" } else { "" },
                    String::from_utf8_lossy(&t.1)
                )
            })
            .collect();
        assert_eq!(shown, ["^ unbeliev", "able", "^ un", "able"]);
        assert_eq!(v.decode(&ids).expect("decode"), b" unbelievable unable");
        // "##" and other would-be markers are plain text.
        ids.clear();
        v.encode("##x ##", &mut ids).expect("encode");
        assert_eq!(v.decode(&ids).expect("decode"), b"##x ##");
    }

    #[test]
    fn bpe_inference_of_repeated_pieces_equals_merging_each() {
        let pre = PreTokenizer::new("gpt2").expect("pattern");
        let learned: Vec<(bool, Vec<u8>)> = [
            (true, " th"),
            (true, " the"),
            (false, "he"),
            (false, "er"),
            (false, "ere"),
            (true, " w"),
            (true, " wh"),
            (false, "ing"),
            (false, "in"),
            (true, "th"),
        ]
        .iter()
        .map(|&(f, t)| (f, t.as_bytes().to_vec()))
        .collect();
        let v = SpanVocab::new(&learned, pre.clone()).expect("vocab");
        let mut rng = crate::testing::Rng(7);
        let words = [
            " the",
            " there",
            " where",
            " thing",
            "thin",
            " a",
            "ing",
            " x",
            " theretherethere",
        ];
        for _ in 0..50 {
            let text: String = (0..rng.below(40))
                .map(|_| words[rng.below(words.len())])
                .collect();
            let mut cached = Vec::new();
            v.encode_bpe(&text, &mut cached).expect("encodes");
            let (mut each, mut work) = (Vec::new(), BpeWork::default());
            pre.for_each_piece(&text, |s, e| {
                v.encode_piece_bpe(&text.as_bytes()[s..e], &mut work, &mut each)
            })
            .expect("pieces");
            assert_eq!(cached, each, "{text:?}");
        }
    }

    #[test]
    fn fill_heap_orders_ties_by_whole_token_bytes() {
        // Tokens whose 8-byte prefixes tie (zero bytes, shared prefixes of 8 bytes or more,
        // the same bytes under both flags): the prefixes settle a tie only where they differ.
        let mut rng = crate::testing::Rng(0xF111_7E57);
        let mut tokens: Vec<(bool, Vec<u8>)> = Vec::new();
        for _ in 0..40 {
            let len = 1 + rng.below(12);
            let shared = [0x61u8, 0, 0x61, 0, 1, 0x61, 0, 0, 1, 0x61, 0, 1];
            let mut bytes: Vec<u8> = shared[..len].to_vec();
            for b in bytes.iter_mut().skip(rng.below(len + 1)) {
                *b = [0u8, 1, 0x61][rng.below(3)];
            }
            tokens.push((rng.chance(50), bytes));
        }
        let candidates: Vec<FillCandidate> = (0..400)
            .map(|_| {
                let pair = (rng.below(40) as u32, rng.below(40) as u32);
                FillCandidate::new(1 + rng.below(2) as i64, pair, &tokens)
            })
            .collect();
        let key = |c: &FillCandidate| {
            (
                std::cmp::Reverse(c.count),
                tokens[c.pair.0 as usize].1.clone(),
                tokens[c.pair.1 as usize].1.clone(),
                c.pair,
            )
        };
        for x in &candidates {
            for y in &candidates {
                assert_eq!(
                    FillHeap::above(&tokens, x, y),
                    key(x) < key(y),
                    "{:?} {:?}",
                    x.pair,
                    y.pair
                );
            }
        }
    }

    #[test]
    fn bpe_fill_matches_the_recounting_reference() {
        // Small alphabets and short words, so that counts tie often, equal symbols run, and
        // merges make tokens that the seeds already hold (reused ids).
        let mut rng = crate::testing::Rng(0x5EED_F111);
        for case in 0..300 {
            let letters = 2 + rng.below(4);
            let letter = |rng: &mut crate::testing::Rng| b'a' + rng.below(letters) as u8;
            let mut learned: Vec<(bool, Vec<u8>)> = Vec::new();
            for _ in 0..rng.below(6) {
                let len = 2 + rng.below(3);
                let bytes: Vec<u8> = (0..len).map(|_| letter(&mut rng)).collect();
                let t = (rng.chance(50), bytes);
                if !learned.contains(&t) {
                    learned.push(t);
                }
            }
            let pre = PreTokenizer::new("gpt2").expect("pattern");
            let v = SpanVocab::new(&learned, pre).expect("vocab");
            let n_tokens = v.tokens().len() as u32;
            let mut words = Vec::new();
            for _ in 0..1 + rng.below(12) {
                let len = 1 + rng.below(9);
                let seq: Vec<u32> = if case % 3 == 0 {
                    // Any ids, learned tokens included.
                    (0..len)
                        .map(|_| {
                            if rng.chance(20) && n_tokens > 512 {
                                512 + rng.below(n_tokens as usize - 512) as u32
                            } else {
                                u32::from(letter(&mut rng)) + if rng.chance(20) { 0 } else { 256 }
                            }
                        })
                        .collect()
                } else {
                    // As longest match gives them: a word-initial token, then continuations.
                    let text: Vec<u8> = (0..len).map(|_| letter(&mut rng)).collect();
                    let mut ids = Vec::new();
                    v.encode_piece(&text, &mut ids);
                    ids
                };
                words.push((
                    seq,
                    1 + rng.below(if case % 2 == 0 { 3 } else { 40 }) as u64,
                ));
            }
            let target = v.len() + rng.below(30);
            assert_eq!(
                bpe_fill(v.tokens(), &words, target),
                bpe_fill_reference(v.tokens(), &words, target),
                "case {case}: {words:?}"
            );
        }
    }

    #[test]
    fn bpe_fill_merges_the_most_frequent_pairs() {
        let pre = PreTokenizer::new("gpt2").expect("pattern");
        let v = SpanVocab::new(&[], pre).expect("vocab");
        let id = |flag: bool, b: u8| u32::from(b) + if flag { 0 } else { 256 };
        // " ab" x5, " abc" x3: pairs (" ", a) 8, (a, b) 8, (b, c) 3. Ties by bytes: " " < "a".
        let w1 = vec![id(true, b' '), id(false, b'a'), id(false, b'b')];
        let w2 = vec![
            id(true, b' '),
            id(false, b'a'),
            id(false, b'b'),
            id(false, b'c'),
        ];
        let added = bpe_fill(v.tokens(), &[(w1, 5), (w2, 3)], v.len() + 3);
        let shown: Vec<(bool, &[u8])> = added.iter().map(|t| (t.0, t.1.as_slice())).collect();
        assert_eq!(
            shown,
            vec![
                (true, &b" a"[..]),
                (true, &b" ab"[..]),
                (true, &b" abc"[..])
            ]
        );
        // Non-overlapping: "aaaa" merges to "aa aa", counted once per word.
        let a = id(false, b'a');
        let added = bpe_fill(v.tokens(), &[(vec![a, a, a, a], 1)], v.len() + 2);
        let shown: Vec<&[u8]> = added.iter().map(|t| t.1.as_slice()).collect();
        assert_eq!(shown, vec![&b"aa"[..], &b"aaaa"[..]]);
        // "aaa" x10 holds 10 mergeable (a, a) pairs, not 20: "bc" x15 goes first.
        let (b, c) = (id(false, b'b'), id(false, b'c'));
        let words = [(vec![a, a, a], 10), (vec![b, c], 15)];
        let added = bpe_fill(v.tokens(), &words, v.len() + 1);
        assert_eq!(added[0].1, b"bc");
    }

    #[test]
    fn percentile_like_numpy() {
        let v = [0.0f32, 1.0, 2.0, 3.0, 4.0, 0.0];
        assert_eq!(percentile_nonzero(&[&v], 0.0, 1), Some(1.0));
        assert_eq!(percentile_nonzero(&[&v], 100.0, 1), Some(4.0));
        assert_eq!(percentile_nonzero(&[&v[..3], &v[3..]], 50.0, 2), Some(2.5));
        assert_eq!(percentile_nonzero(&[&v], 30.0, 1), Some(1.9));
        assert_eq!(percentile_nonzero(&[&[0.0f32]], 30.0, 1), None);
        // Against a full sort, on values that share histogram buckets and values that do not.
        let mut x = 12345u64;
        let mut vals = Vec::new();
        for i in 0..5000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = (x >> 40) as f32 / (1u64 << 24) as f32;
            vals.push(match i % 4 {
                0 => 0.0,
                1 => r * 1e-3,
                2 => -r,
                _ => 1.0 + r,
            });
        }
        let mut sorted: Vec<f64> = vals
            .iter()
            .filter(|&&v| v != 0.0)
            .map(|&v| f64::from(v))
            .collect();
        sorted.sort_by(f64::total_cmp);
        for q in [0.0, 7.5, 30.0, 50.0, 99.9, 100.0] {
            let pos = q / 100.0 * (sorted.len() - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = (lo + 1).min(sorted.len() - 1);
            let want = (sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)) as f32;
            let parts: Vec<&[f32]> = vals.chunks(700).collect();
            assert_eq!(percentile_nonzero(&parts, q, 2), Some(want), "q = {q}");
            // Both ways: the sample's one pass (these values let it) and the histogram's two.
            assert_eq!(
                percentile_by_sample(&parts, q, 1),
                Some(Some(want)),
                "q = {q}"
            );
            assert_eq!(percentile_by_histogram(&parts, q, 2), Some(want), "q = {q}");
        }
    }

    #[test]
    fn percentile_falls_back_where_the_sample_misleads() {
        let sort_percentile = |vals: &[f32], q: f64| {
            let mut v: Vec<f32> = vals.iter().copied().filter(|&x| x != 0.0).collect();
            v.sort_by(f32::total_cmp);
            let (lo, hi, frac) = percentile_ranks(v.len() as u64, q);
            let (a, b) = (f64::from(v[lo as usize]), f64::from(v[hi as usize]));
            (a + (b - a) * frac) as f32
        };
        // Every sampled value is large, the others small: the ranks fall below the range.
        let n = 2000 * SAMPLE_EVERY;
        let mut vals: Vec<f32> = (0..n)
            .map(|i| {
                if i % SAMPLE_EVERY == 0 {
                    1000.0 + i as f32
                } else {
                    1.0 + (i % 13) as f32
                }
            })
            .collect();
        let parts: Vec<&[f32]> = vals.chunks(33).collect();
        for q in [30.0, 50.0] {
            assert_eq!(percentile_by_sample(&parts, q, 2), None, "q = {q}");
        }
        // (At 0 and 100 the range is open below or above, and holds the ranks.)
        for q in [0.0, 30.0, 50.0, 100.0] {
            assert_eq!(
                percentile_nonzero(&parts, q, 2),
                Some(sort_percentile(&vals, q))
            );
        }
        // Every sampled value zero: too few to sample.
        for (i, v) in vals.iter_mut().enumerate() {
            if i % SAMPLE_EVERY == 0 {
                *v = 0.0;
            }
        }
        let parts: Vec<&[f32]> = vals.chunks(33).collect();
        assert_eq!(percentile_by_sample(&parts, 30.0, 2), None);
        assert_eq!(
            percentile_nonzero(&parts, 30.0, 2),
            Some(sort_percentile(&vals, 30.0))
        );
        // Ties across the range, zeros, negatives: the sample's range holds them all.
        let vals: Vec<f32> = (0..n)
            .map(|i| [0.0, 2.0, 2.0, 2.0, -1.0, 3.5][i % 6])
            .collect();
        let parts: Vec<&[f32]> = vals.chunks(100).collect();
        for q in [0.0, 10.0, 30.0, 60.0, 95.0, 100.0] {
            let want = sort_percentile(&vals, q);
            assert_eq!(
                percentile_by_sample(&parts, q, 2),
                Some(Some(want)),
                "q = {q}"
            );
            assert_eq!(percentile_nonzero(&parts, q, 1), Some(want), "q = {q}");
        }
        // A NaN as the upper of the two ranks: NaN, as numpy gives (not the lower value).
        let mut vals: Vec<f32> = (1..=n).map(|i| i as f32).collect();
        vals[n - 1] = f32::NAN;
        let q = 100.0 * (n as f64 - 1.5) / (n as f64 - 1.0);
        assert!(percentile_nonzero(&[&vals], q, 2).is_some_and(f32::is_nan));
        assert!(percentile_by_histogram(&[&vals], q, 2).is_some_and(f32::is_nan));
        // All zero, with enough values to sample: no percentile.
        let zeros = vec![0.0f32; n];
        assert_eq!(percentile_nonzero(&[&zeros], 30.0, 2), None);
    }

    #[test]
    fn signal_checks() {
        assert!(check_signal(&[1.0, 2.0], 3).is_err());
        assert!(check_signal(&[1.0, f32::NAN], 2).is_err());
        assert!(check_signal(&[1.0, f32::INFINITY], 2).is_err());
        assert!(check_signal(&[1.0, 2.0], 2).is_ok());
    }

    fn global(texts: &[&str], signals: &[&[f32]], want: usize, min_count: u64) -> GlobalSpans {
        let pre = PreTokenizer::new("gpt2").expect("pattern");
        let ptbs: Vec<Vec<bool>> = texts
            .iter()
            .map(|t| boundaries(&pre, t).expect("ptb"))
            .collect();
        let docs: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
        let refs: Vec<&[bool]> = ptbs.iter().map(Vec::as_slice).collect();
        global_spans(&docs, &refs, signals, want, min_count, 1).expect("global")
    }

    fn shown(g: &GlobalSpans) -> Vec<(bool, String, u64)> {
        g.tokens
            .iter()
            .map(|((f, b), c)| (*f, String::from_utf8_lossy(b).into_owned(), *c))
            .collect()
    }

    #[test]
    fn global_grows_segments_from_the_lowest_signal() {
        let sig: &[f32] = &[9.0, 1.0, 2.0, 3.0, 9.0, 1.0, 2.0, 3.0];
        // The two "c"s grow first; each takes in the space that opens its pre-token.
        let g = global(&[" cat cat"], &[sig], 1, 2);
        assert_eq!(shown(&g), vec![(true, " c".into(), 2)]);
        assert_eq!((g.steps, g.threshold, g.full), (2, Some(1.0), true));
        // Asking for more: " c" becomes " ca", then " cat"; the spaces join last. Only one
        // string ever reaches the count, so the whole corpus grows.
        let g = global(&[" cat cat"], &[sig], 2, 2);
        assert_eq!(shown(&g), vec![(true, " cat".into(), 2)]);
        assert_eq!((g.steps, g.full), (8, false));
        // Nothing asked: nothing grows.
        let g = global(&[" cat cat"], &[sig], 0, 2);
        assert!(g.tokens.is_empty() && g.steps == 0 && g.full);
    }

    #[test]
    fn global_never_crosses_pre_tokens_or_documents() {
        // "ab", ".", "cd" are three pre-tokens; all signals equal (ties by position).
        let g = global(&["ab.cd", "ef"], &[&[0.0; 5], &[0.0; 2]], 10, 1);
        assert_eq!(
            shown(&g),
            vec![
                (true, "ab".into(), 1),
                (true, "cd".into(), 1),
                (true, "ef".into(), 1)
            ]
        );
        // Continuation segments: the high-signal "x" never joins, "yz" does not start a
        // pre-token and takes no space.
        let g = global(&[" xyz"], &[&[9.0, 9.0, 1.0, 1.0]], 1, 1);
        assert_eq!(shown(&g), vec![(false, "yz".into(), 1)]);
    }

    #[test]
    fn global_rejects_bad_input() {
        let pre = PreTokenizer::new("gpt2").expect("pattern");
        let ptb = boundaries(&pre, "ab").expect("ptb");
        let docs: &[&[u8]] = &[b"ab"];
        assert!(global_spans(docs, &[&ptb], &[&[1.0]], 1, 1, 1).is_err());
        assert!(global_spans(docs, &[&ptb], &[&[1.0, f32::NAN]], 1, 1, 1).is_err());
        assert!(global_spans(docs, &[&ptb], &[&[1.0, 2.0]], 1, 0, 1).is_err());
        assert!(global_spans(docs, &[], &[&[1.0, 2.0]], 1, 1, 1).is_err());
        // In place: the signals must be consecutive slices covering the whole one.
        let whole = [1.0f32, 2.0, 3.0, 4.0];
        let texts = ["ab", "cd"];
        let in_place = |signals: &[&[f32]], whole: &[f32]| {
            global_spans_of_texts_in(&texts, &pre, signals, whole, 1, 1, 1)
        };
        assert!(in_place(&[&whole[..2], &whole[2..]], &whole).is_ok());
        let copy = whole;
        for (signals, whole) in [
            (&[&whole[2..], &whole[..2]][..], &whole[..]),
            (&[&whole[..2], &copy[2..]], &whole),
            (&[&whole[..2], &whole[2..]], &whole[..3]),
            (&[&whole[..2], &whole[2..3]], &whole),
        ] {
            let e = in_place(signals, whole).expect_err("not slices of the whole");
            assert!(matches!(e, Error::Config(_)), "{e}");
        }
        // Empty slices may point anywhere.
        let texts3 = ["ab", "", "cd"];
        let elsewhere: &[f32] = &copy[..0];
        let got = global_spans_of_texts_in(
            &texts3,
            &pre,
            &[&whole[..2], elsewhere, &whole[2..]],
            &whole,
            1,
            1,
            1,
        );
        assert!(got.is_ok());
        // Slices whose lengths are wrong for their texts, though the whole's is right.
        let e = in_place(&[&whole[..1], &whole[1..]], &whole).expect_err("lengths");
        assert!(matches!(e, Error::Signal(_)), "{e}");
        // Values that are not finite, read in place (with or without a sign bit elsewhere).
        for bad in [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for other in [1.0, -1.0] {
                let whole = [other, 2.0, 3.0, bad];
                let e = in_place(&[&whole[..2], &whole[2..]], &whole).expect_err("not finite");
                assert!(matches!(e, Error::Signal(_)), "{e}");
                assert!(e.to_string().contains("document 1:"), "{e}");
            }
        }
    }

    use crate::testing::Rng;

    #[test]
    fn ordered_bits_keep_the_order_of_floats() {
        let mut rng = Rng(11);
        let mut xs = vec![
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-45,
            -1e-45,
            f32::MAX,
            f32::MIN,
        ];
        for _ in 0..2000 {
            let x = f32::from_bits(rng.next() as u32);
            if x.is_finite() {
                xs.push(x);
            }
        }
        for &a in &xs {
            for &b in xs.iter().step_by(7) {
                let want = a.partial_cmp(&b).expect("finite");
                assert_eq!(ordered_bits(a).cmp(&ordered_bits(b)), want, "{a} {b}");
            }
        }
    }

    #[test]
    fn keys_from_packed_pre_tokens_match_keys_from_bytes() {
        let mut rng = Rng(7);
        for _ in 0..2000 {
            let m = 1 + rng.below(CACHED);
            let bytes: Vec<u8> = (0..m + 16).map(|_| rng.below(256) as u8).collect();
            let initial = rng.below(2) == 0;
            let piece = pack_at(&bytes, 0, m, initial);
            for s in 0..m {
                for len in 1..=m - s {
                    let flag = rng.below(2) == 0;
                    assert_eq!(
                        packed_key(piece, flag, s, len),
                        key_of(&bytes, flag, s, len),
                        "{bytes:?} {s} {len}"
                    );
                }
            }
        }
    }

    /// The fast global constraint against the previous implementation: random texts (short
    /// and long pre-tokens, runs of spaces, repeated words), signals with ties, zeros of both
    /// signs and negative values, boundaries from the pattern or arbitrary (a document need
    /// not start a pre-token), any vocabulary size and count, one thread or several.
    #[test]
    fn global_matches_the_previous_implementation() {
        let pre = PreTokenizer::new("gpt2").expect("pattern");
        let words = [
            "a",
            "ab",
            "the",
            " the",
            "cat",
            "  ",
            "    ",
            "x.y",
            "é",
            "aaaaaaaaaaaaaaaaaaaaaaaa",
            " internationalisation",
            "\n",
            "12",
            "3456789012345678901",
            "?!",
            " a b",
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut stopped = 0;
        for case in 0..400 {
            let n_docs = 1 + rng.below(4);
            let texts: Vec<String> = (0..n_docs)
                .map(|_| {
                    let n = rng.below(if case % 10 == 0 { 400 } else { 40 });
                    (0..n).map(|_| words[rng.below(words.len())]).collect()
                })
                .collect();
            let levels = 1 + rng.below(if case % 3 == 0 { 3 } else { 1000 });
            // In half the cases no value is negative, nor -0.0 (keys read in place).
            let signed = case % 2 == 0;
            let signals: Vec<Vec<f32>> = texts
                .iter()
                .map(|t| {
                    (0..t.len())
                        .map(|_| match rng.below(20) {
                            0 => -0.0,
                            1 => 0.0,
                            2 => -(rng.below(levels) as f32),
                            _ => rng.below(levels) as f32 * 0.25,
                        })
                        .map(|x| if signed { x } else { x.abs() })
                        .collect()
                })
                .collect();
            // The same signals as consecutive slices of one.
            let whole: Vec<f32> = signals.concat();
            let in_whole = slices_like(&whole, &signals);
            let arbitrary = case % 4 == 3;
            let ptbs: Vec<Vec<bool>> = texts
                .iter()
                .map(|t| {
                    if arbitrary {
                        (0..t.len()).map(|_| rng.below(3) == 0).collect()
                    } else {
                        boundaries(&pre, t).expect("ptb")
                    }
                })
                .collect();
            let docs: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
            let ptb_refs: Vec<&[bool]> = ptbs.iter().map(Vec::as_slice).collect();
            let sig_refs: Vec<&[f32]> = signals.iter().map(Vec::as_slice).collect();
            let want = match case % 50 {
                7 => usize::MAX,
                _ => rng.below(60),
            };
            let min_count = match case % 30 {
                11 => u64::MAX,
                13 => 1 << 32,
                _ => 1 + rng.below(4) as u64,
            };
            let expected = global_spans_reference(&docs, &ptb_refs, &sig_refs, want, min_count)
                .expect("reference");
            let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            for threads in [1, 2, 3] {
                let got = global_spans(&docs, &ptb_refs, &sig_refs, want, min_count, threads)
                    .expect("global");
                let what = format!("case {case}, {threads} threads, want {want}, min {min_count}");
                if !arbitrary {
                    // The same with the boundaries found on the way.
                    let of_texts = global_spans_of_texts(
                        &text_refs, &pre, &sig_refs, want, min_count, threads,
                    )
                    .expect("global of texts");
                    assert_eq!(of_texts, got, "{what}");
                    let in_place = global_spans_of_texts_in(
                        &text_refs, &pre, &in_whole, &whole, want, min_count, threads,
                    )
                    .expect("global in place");
                    assert_eq!(in_place, got, "{what}");
                    assert_eq!(
                        in_place.threshold.map(f32::to_bits),
                        got.threshold.map(f32::to_bits),
                        "{what}"
                    );
                }
                assert_eq!(got, expected, "{what}");
                assert_eq!(
                    got.threshold.map(f32::to_bits),
                    expected.threshold.map(f32::to_bits),
                    "{what}"
                );
            }
            stopped += usize::from(expected.full && want > 0);
        }
        // Both ways of answering were taken, and the replay both stopped and did not (three
        // runs per case).
        let [births_only, replayed, in_rounds, packed, wide, walked, in_place, compact, spread, stolen] =
            PATHS.with(|p| p.get());
        // Second walks where a thread walked pieces of its partner's pre-tokens.
        assert!(stolen > 100, "{stolen}");
        // Keys read in place (no value negative) in about half the cases that ran that way.
        assert!(in_place > 100, "{in_place}");
        // Records of all three sizes, and stops whose position needed a walk (ties).
        assert!(
            compact > 30
                && packed > 50
                && wide > 50
                && compact + packed + wide == replayed
                && walked > 20,
            "{compact} {packed} {wide} {walked}"
        );
        // And keys too spread for 8-byte records with few enough strings for them.
        assert!(spread > 20, "{spread}");
        // Replays in one round and in several.
        assert!(
            in_rounds > 50 && replayed > in_rounds + 50,
            "{in_rounds} {replayed}"
        );
        assert!(
            births_only > 100 && replayed > 100,
            "{births_only} {replayed}"
        );
        assert!(
            stopped > 50 && replayed > 3 * stopped + 50,
            "{stopped} {replayed}"
        );
    }

    #[test]
    fn global_matches_the_previous_implementation_with_many_distinct_pre_tokens() {
        // Thousands of distinct short pre-tokens, each seen a few times: the per-thread tables
        // of pre-tokens grow past their first size.
        let pre = PreTokenizer::new("gpt2").expect("pattern");
        let word = |mut i: usize| {
            let mut w = String::from(" ");
            loop {
                w.push(char::from(b'a' + (i % 26) as u8));
                i /= 26;
                if i == 0 {
                    return w;
                }
            }
        };
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let text: String = (0..12_000).map(|_| word(rng.below(5000) * 7)).collect();
        let signal: Vec<f32> = (0..text.len()).map(|_| rng.below(1000) as f32).collect();
        let ptb = boundaries(&pre, &text).expect("ptb");
        for (want, min_count) in [(40, 3), (usize::MAX, 1)] {
            let expected =
                global_spans_reference(&[text.as_bytes()], &[&ptb], &[&signal], want, min_count)
                    .expect("reference");
            for threads in [1, 2, 3] {
                let got = global_spans(
                    &[text.as_bytes()],
                    &[&ptb],
                    &[&signal],
                    want,
                    min_count,
                    threads,
                )
                .expect("global");
                assert_eq!(got, expected, "{threads} threads, want {want}");
            }
        }
    }

    #[test]
    fn global_on_empty_input() {
        let none: &[&[u8]] = &[];
        for (docs, ptbs, signals) in [
            (none, vec![], vec![]),
            (
                &[b"".as_slice(), b""][..],
                vec![&[][..]; 2],
                vec![&[][..]; 2],
            ),
        ] {
            for want in [0, 1, 5] {
                let got = global_spans(docs, &ptbs, &signals, want, 1, 2).expect("global");
                let expected =
                    global_spans_reference(docs, &ptbs, &signals, want, 1).expect("reference");
                assert_eq!(got, expected);
            }
        }
    }

    #[test]
    fn global_reports_the_first_bad_document_with_threads() {
        let text = "word ".repeat(40);
        let docs: Vec<&[u8]> = vec![text.as_bytes(); 6];
        let ptb = vec![false; text.len()];
        let ptbs = vec![ptb.as_slice(); 6];
        let good = vec![1.0f32; text.len()];
        let mut nan = good.clone();
        nan[3] = f32::NAN;
        let short = &good[1..];
        let mut signals = vec![good.as_slice(); 6];
        signals[1] = &nan;
        signals[5] = short;
        for threads in [1, 2, 3] {
            let e = global_spans(&docs, &ptbs, &signals, 5, 1, threads).expect_err("bad");
            assert!(e.to_string().contains("document 1:"), "{e}");
        }
    }

    #[test]
    fn global_cuts_large_documents_into_parts_alike() {
        // A few documents much larger than a thread's share, with lines (safe cuts for GPT-2's
        // pattern) and without: cut into parts on the way (`MIN_RANGE` is small in tests), the
        // same as the direct algorithm.
        let pre = PreTokenizer::new("gpt2").expect("pattern");
        let mut rng = crate::testing::Rng(0x1234_5678_9ABC_DEF1);
        let words = [
            "the", " cat", " sat", "\n", "On", " a", " mat", ".", "\n\n", " Über",
        ];
        let texts: Vec<String> = [3000, 40, 2500, 10]
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let mut t: String = (0..n).map(|_| words[rng.below(words.len())]).collect();
                if i == 2 {
                    t = t.replace('\n', " "); // no safe cut at all
                }
                t
            })
            .collect();
        let signals: Vec<Vec<f32>> = texts
            .iter()
            .map(|t| (0..t.len()).map(|_| rng.below(50) as f32).collect())
            .collect();
        let whole: Vec<f32> = signals.concat();
        let in_whole = slices_like(&whole, &signals);
        let docs: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
        let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let ptbs: Vec<Vec<bool>> = texts
            .iter()
            .map(|t| boundaries(&pre, t).expect("ptb"))
            .collect();
        let ptb_refs: Vec<&[bool]> = ptbs.iter().map(Vec::as_slice).collect();
        let sig_refs: Vec<&[f32]> = signals.iter().map(Vec::as_slice).collect();
        assert!(pre.split_at_safe_cuts(&texts[0], 500).len() > 3);
        for (want, min_count) in [(30, 3), (usize::MAX, 1)] {
            let expected = global_spans_reference(&docs, &ptb_refs, &sig_refs, want, min_count)
                .expect("reference");
            for threads in [1, 2, 3] {
                let what = format!("{threads} threads, want {want}");
                let got = global_spans(&docs, &ptb_refs, &sig_refs, want, min_count, threads);
                assert_eq!(got.expect("global"), expected, "{what}");
                let of_texts =
                    global_spans_of_texts(&text_refs, &pre, &sig_refs, want, min_count, threads);
                assert_eq!(of_texts.expect("of texts"), expected, "{what}");
                let in_place = global_spans_of_texts_in(
                    &text_refs, &pre, &in_whole, &whole, want, min_count, threads,
                );
                assert_eq!(in_place.expect("in place"), expected, "{what}");
            }
        }
        // A bad value late in a large document: said of that document, at its own position.
        let mut bad = signals[0].clone();
        let late = bad.len() - 7;
        bad[late] = f32::INFINITY;
        let mut with_bad = sig_refs.clone();
        with_bad[0] = &bad;
        for threads in [1, 2, 3] {
            let e =
                global_spans_of_texts(&text_refs, &pre, &with_bad, 5, 1, threads).expect_err("bad");
            let said = e.to_string();
            assert!(
                said.contains("document 0:") && said.contains(&format!("byte {late}")),
                "{said}"
            );
        }
    }

    #[test]
    fn segments_are_the_steps_segments() {
        let mut rng = crate::testing::Rng(0xB5AD_4ECE_DA1C_E2A9);
        let (mut stack, mut left_child) = (Vec::new(), Vec::new());
        for round in 0..20_000 {
            let m = round % (CACHED + 1);
            // Many ties, or keys over the whole range below `u32::MAX` (both halves, for
            // the flipped top bit of the compares).
            let spread = [3, 40, u32::MAX as usize][round % 3];
            let keys: Vec<u32> = (0..m).map(|_| rng.below(spread) as u32).collect();
            let mut want = vec![(0, 0); m];
            cartesian_steps(&keys, &mut stack, &mut left_child, |st| {
                want[st.x] = (st.l, st.r)
            });
            let mut got = Vec::new();
            segments(&keys, |x, l, r| got.push((x, l, r)));
            let mut k = [u32::MAX; 16];
            k[..m].copy_from_slice(&keys);
            let masks = KeyMasks::new(&k);
            for key in keys.iter().chain(&[0, 1 << 31, u32::MAX]) {
                assert_eq!(masks.around(*key), masks_around(&k, *key), "{keys:?} {key}");
            }
            let want: Vec<_> = want
                .iter()
                .enumerate()
                .map(|(x, &(l, r))| (x, l, r))
                .collect();
            assert_eq!(got, want, "{keys:?}");
        }
    }

    #[test]
    fn counts_below_and_equal_like_filters() {
        let mut rng = crate::testing::Rng(5);
        for len in [0, 1, 7, 8, 9, 63, 64, 1000] {
            let keys: Vec<u32> = (0..len).map(|_| rng.below(20) as u32).collect();
            for key in [0, 5, 10, 19, 20] {
                let below = keys.iter().filter(|&&k| k < key).count();
                let equal = keys.iter().filter(|&&k| k == key).count();
                assert_eq!(count_below_equal(&keys, key), (below, equal), "{len} {key}");
            }
        }
    }

    #[test]
    fn radix_sort_orders_floats_stably() {
        let xs = [3.5f32, -1.0, 0.0, -0.0, 2.0, -7.25, 2.0, f32::MAX, f32::MIN];
        let mut v: Vec<u64> = xs
            .iter()
            .enumerate()
            .map(|(i, &x)| u64::from(ordered_bits(x)) << 32 | i as u64)
            .collect();
        radix_sort_by(&mut v, &mut Vec::new(), |&p| (p >> 32) as u32);
        let got: Vec<usize> = v.iter().map(|&p| (p & 0xFFFF_FFFF) as usize).collect();
        let mut want: Vec<usize> = (0..xs.len()).collect();
        want.sort_by(|&a, &b| (xs[a] + 0.0).total_cmp(&(xs[b] + 0.0)).then(a.cmp(&b)));
        assert_eq!(got, want);
    }

    #[test]
    fn bpe_inference_follows_the_merge_order() {
        let pre = PreTokenizer::new("gpt2").expect("pattern");
        let learned = vec![
            (false, b"bc".to_vec()),
            (true, b"ab".to_vec()),
            (true, b"xyz".to_vec()),
        ];
        let v = SpanVocab::new(&learned, pre).expect("vocab");
        // "bc" (512) is merged before "ab" (513); "xyz" has no split into tokens.
        assert_eq!(
            v.merges(),
            vec![(98 + 256, 99 + 256, 512), (97, 98 + 256, 513)]
        );
        let mut bpe = Vec::new();
        v.encode_bpe("abc xyz", &mut bpe).expect("encode");
        assert_eq!(bpe, vec![97, 512, 32, 120 + 256, 121 + 256, 122 + 256]);
        let mut longest = Vec::new();
        v.encode("abc xyz", &mut longest).expect("encode");
        assert_eq!(
            longest,
            vec![513, 99 + 256, 32, 120 + 256, 121 + 256, 122 + 256]
        );
        // Repeated pairs merge left to right without overlap.
        let v = SpanVocab::new(
            &[(false, b"aa".to_vec()), (false, b"aaaa".to_vec())],
            PreTokenizer::new("gpt2").expect("pattern"),
        )
        .expect("vocab");
        let mut ids = Vec::new();
        v.encode_bpe("aaaaaaa", &mut ids).expect("encode");
        // a|a a|a a|a a -> a|aa aa aa -> a|aaaa aa
        assert_eq!(ids, vec![97, 513, 512]);
        assert_eq!(v.decode(&ids).expect("decode"), b"aaaaaaa");
    }
}
