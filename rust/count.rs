//! Counting pre-tokenized pieces ("words"): the expensive, parallel half of BPE training.
//!
//! Counts are a mergeable partial result: `WordCounts::merge` is a commutative, associative sum
//! with 64-bit counts, so shards of a corpus can be counted anywhere, in any order, on any number
//! of threads, and combined into exactly the same totals.
//!
//! Texts are split around special tokens (which are never counted), then big texts are cut at
//! the pre-tokenizer's safe cuts (`PreTokenizer::split_at_safe_cuts`) so the work spreads over
//! threads without changing a single piece. Files stream in blocks that end at safe cuts.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};

use aho_corasick::{AhoCorasick, MatchKind};
use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::pretok::PreTokenizer;

/// Texts are handed to threads in parts of about this size.
const PART_BYTES: usize = 1 << 20;
/// Files are read in blocks of about this size (small in tests, to exercise the block logic).
#[cfg(not(test))]
const BLOCK_BYTES: usize = 1 << 20;
#[cfg(test)]
const BLOCK_BYTES: usize = 1 << 16;

/// How to treat invalid UTF-8 in files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Utf8Errors {
    /// Fail with the file name and byte offset.
    Strict,
    /// Replace each invalid sequence by U+FFFD.
    Replace,
}

const COUNTS_MAGIC: &[u8; 4] = b"TLWC";
const COUNTS_VERSION: u32 = 1;

/// Piece -> count, plus how much text was seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WordCounts {
    pub words: FxHashMap<Vec<u8>, u64>,
    pub bytes_seen: u64,
}

impl WordCounts {
    pub fn add(&mut self, word: &[u8], count: u64) {
        match self.words.get_mut(word) {
            Some(c) => *c += count,
            None => {
                self.words.insert(word.to_vec(), count);
            }
        }
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: WordCounts) {
        if self.words.len() < other.words.len() {
            let mine = std::mem::replace(&mut self.words, other.words);
            for (w, c) in mine {
                *self.words.entry(w).or_insert(0) += c;
            }
        } else {
            for (w, c) in other.words {
                *self.words.entry(w).or_insert(0) += c;
            }
        }
        self.bytes_seen += other.bytes_seen;
    }

    /// A compact binary form, for shipping partial counts between processes or machines:
    /// `b"TLWC"`, format version (u32), bytes seen (u64), word count (u64), then per word its
    /// length (u32), bytes and count (u64); integers little-endian, words sorted by bytes so
    /// that equal counts serialize identically.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut words: Vec<(&Vec<u8>, &u64)> = self.words.iter().collect();
        words.sort_unstable();
        let size: usize = words.iter().map(|(w, _)| w.len() + 12).sum();
        let mut out = Vec::with_capacity(24 + size);
        out.extend_from_slice(COUNTS_MAGIC);
        out.extend_from_slice(&COUNTS_VERSION.to_le_bytes());
        out.extend_from_slice(&self.bytes_seen.to_le_bytes());
        out.extend_from_slice(&(words.len() as u64).to_le_bytes());
        for (w, c) in words {
            out.extend_from_slice(&(w.len() as u32).to_le_bytes());
            out.extend_from_slice(w);
            out.extend_from_slice(&c.to_le_bytes());
        }
        out
    }

    /// Reads `to_bytes`'s form; anything truncated or malformed is `Error::Corrupt`.
    pub fn from_bytes(data: &[u8]) -> Result<Self> {
        let corrupt = |what: &str| Error::Corrupt(format!("word counts: {what}"));
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8]> {
            let end = at.checked_add(n).filter(|&e| e <= data.len());
            let end = end.ok_or_else(|| corrupt("truncated"))?;
            let slice = &data[at..end];
            at = end;
            Ok(slice)
        };
        let u32_at = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let u64_at = |b: &[u8]| {
            let mut x = [0u8; 8];
            x.copy_from_slice(b);
            u64::from_le_bytes(x)
        };
        if take(4)? != COUNTS_MAGIC {
            return Err(corrupt("not toklab word counts (bad magic)"));
        }
        let version = u32_at(take(4)?);
        if version != COUNTS_VERSION {
            return Err(corrupt(&format!("unsupported format version {version}")));
        }
        let bytes_seen = u64_at(take(8)?);
        let n = u64_at(take(8)?);
        let mut words = FxHashMap::default();
        for _ in 0..n {
            let len = u32_at(take(4)?) as usize;
            let w = take(len)?.to_vec();
            let c = u64_at(take(8)?);
            if words.insert(w, c).is_some() {
                return Err(corrupt("a word appears twice"));
            }
        }
        if take(1).is_ok() {
            return Err(corrupt("trailing bytes"));
        }
        Ok(Self { words, bytes_seen })
    }
}

/// Counts pieces of texts and files with one pre-tokenizer and set of special tokens.
pub struct Counter {
    pre: PreTokenizer,
    specials: Option<AhoCorasick>,
    threads: usize,
    counts: WordCounts,
}

impl Counter {
    pub fn new(pre: PreTokenizer, special_tokens: &[String], threads: usize) -> Result<Self> {
        // (An empty one would match between any two bytes, even inside a character.)
        if special_tokens.iter().any(String::is_empty) {
            return Err(Error::Config("special tokens must not be empty".into()));
        }
        let specials = if special_tokens.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(special_tokens)
                    .map_err(|e| Error::Config(format!("special tokens: {e}")))?,
            )
        };
        Ok(Self {
            pre,
            specials,
            threads,
            counts: WordCounts::default(),
        })
    }

    pub fn pattern(&self) -> &str {
        self.pre.pattern()
    }

    pub fn counts(&self) -> &WordCounts {
        &self.counts
    }

    pub fn into_counts(self) -> WordCounts {
        self.counts
    }

    /// The parts of `text` that are counted: the text between special tokens, cut into parts of
    /// about `PART_BYTES` at safe cuts.
    fn parts<'t>(&self, text: &'t str, out: &mut Vec<&'t str>) {
        let mut push = |segment: &'t str| {
            if !segment.is_empty() {
                out.extend(self.pre.split_at_safe_cuts(segment, PART_BYTES));
            }
        };
        match &self.specials {
            None => push(text),
            Some(ac) => {
                let mut last = 0;
                for m in ac.find_iter(text) {
                    push(&text[last..m.start()]);
                    last = m.end();
                }
                push(&text[last..]);
            }
        }
    }

    fn count_part(&self, acc: &mut (WordCounts, Option<Error>), part: &str) {
        if acc.1.is_some() {
            return;
        }
        let counts = &mut acc.0;
        counts.bytes_seen += part.len() as u64;
        let bytes = part.as_bytes();
        if let Err(e) = self
            .pre
            .for_each_piece(part, |s, e| counts.add(&bytes[s..e], 1))
        {
            acc.1 = Some(e);
        }
    }

    /// Counts a batch of texts on the counter's threads.
    pub fn add_texts<S: AsRef<str> + Sync>(&mut self, texts: &[S]) -> Result<()> {
        let mut parts = Vec::new();
        for t in texts {
            self.parts(t.as_ref(), &mut parts);
        }
        let partial = crate::par::fold(
            &parts,
            self.threads,
            || (WordCounts::default(), None),
            |acc, part| self.count_part(acc, part),
        );
        for (counts, err) in partial {
            if let Some(e) = err {
                return Err(e);
            }
            self.counts.merge(counts);
        }
        Ok(())
    }

    /// Counts files, read in blocks that end at safe cuts and counted on the counter's threads
    /// while the next blocks are read. `on_bytes` is called with the bytes read so far.
    pub fn add_files(
        &mut self,
        paths: &[PathBuf],
        errors: Utf8Errors,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<()> {
        let threads = crate::par::thread_count(self.threads, usize::MAX);
        let (tx, rx) = mpsc::sync_channel::<String>(threads);
        let rx = Mutex::new(rx);
        let this = &*self;
        let (read_result, partial) = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let rx = &rx;
                    s.spawn(move || {
                        let mut acc = (WordCounts::default(), None);
                        loop {
                            let block = match rx.lock() {
                                Ok(guard) => guard.recv(),
                                Err(_) => break,
                            };
                            let Ok(block) = block else { break };
                            let mut parts = Vec::new();
                            this.parts(&block, &mut parts);
                            for p in &parts {
                                this.count_part(&mut acc, p);
                            }
                        }
                        acc
                    })
                })
                .collect();
            let mut total = 0u64;
            let mut read_result = Ok(());
            for path in paths {
                let sent = read_blocks(&this.pre, this.specials.as_ref(), path, errors, |block| {
                    total += block.len() as u64;
                    on_bytes(total);
                    tx.send(block).is_ok()
                });
                if let Err(e) = sent {
                    read_result = Err(e);
                    break;
                }
            }
            drop(tx);
            let partial: Vec<_> = workers
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect();
            (read_result, partial)
        });
        read_result?;
        for (counts, err) in partial {
            if let Some(e) = err {
                return Err(e);
            }
            self.counts.merge(counts);
        }
        Ok(())
    }
}

/// Reads `path` as UTF-8 text in blocks that end at safe cuts (the whole file for custom
/// patterns) and hands each to `sink`; stops early if `sink` returns false.
pub fn read_blocks(
    pre: &PreTokenizer,
    specials: Option<&AhoCorasick>,
    path: &Path,
    errors: Utf8Errors,
    mut sink: impl FnMut(String) -> bool,
) -> Result<()> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    let mut buf: Vec<u8> = Vec::with_capacity(BLOCK_BYTES + 4096);
    let mut offset = 0u64; // file offset of buf[0]
    let mut eof = false;
    while !eof || !buf.is_empty() {
        if !eof {
            let want = BLOCK_BYTES.max(buf.len() / 2);
            let got = file
                .by_ref()
                .take(want as u64)
                .read_to_end(&mut buf)
                .map_err(io_err)?;
            eof = got < want;
        }
        let cut = if eof {
            buf.len()
        } else {
            match last_cut(pre, specials, &buf) {
                Some(c) => c,
                None => continue, // read more: no safe cut yet
            }
        };
        let rest = buf.split_off(cut);
        let block = std::mem::replace(&mut buf, rest);
        let text = match errors {
            Utf8Errors::Strict => String::from_utf8(block).map_err(|e| Error::InvalidUtf8 {
                path: path.to_path_buf(),
                offset: offset + e.utf8_error().valid_up_to() as u64,
            })?,
            Utf8Errors::Replace => String::from_utf8_lossy(&block).into_owned(),
        };
        offset += cut as u64;
        if !text.is_empty() && !sink(text) {
            return Ok(());
        }
    }
    Ok(())
}

/// The last safe cut of `buf` (see [`PreTokenizer::last_safe_cut`]) that no special token
/// spans, as the whole text's special tokens are found before it is cut (a cut that might fall
/// inside one that the buffer does not yet hold entirely is not taken either).
fn last_cut(pre: &PreTokenizer, specials: Option<&AhoCorasick>, buf: &[u8]) -> Option<usize> {
    let mut limit = buf.len();
    // The special tokens that the block's own scan (from its start) finds, once: a scan from
    // near the cut could find others (where special tokens overlap).
    let mut found: Option<Vec<(usize, usize)>> = None;
    loop {
        let cut = pre.last_safe_cut(&buf[..limit])?;
        let Some(ac) = specials else {
            return Some(cut);
        };
        let spans =
            found.get_or_insert_with(|| ac.find_iter(buf).map(|m| (m.start(), m.end())).collect());
        // The last match that starts before the cut (they are in order, without overlap).
        let before = spans.partition_point(|&(start, _)| start < cut);
        let spanned =
            cut + ac.max_pattern_len() - 1 > buf.len() || before > 0 && spans[before - 1].1 > cut;
        if !spanned {
            return Some(cut);
        }
        // An earlier cut: this one's newline (at `cut` or `cut - 1`) falls outside the search,
        // which leaves 4 bytes of look-ahead before `limit` (so `limit` always falls).
        limit = cut + 3;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(pat: &str, specials: &[&str], threads: usize) -> Counter {
        let specials: Vec<String> = specials.iter().map(|s| s.to_string()).collect();
        Counter::new(PreTokenizer::new(pat).expect("ok"), &specials, threads).expect("ok")
    }

    #[test]
    fn counts_pieces_and_skips_specials() {
        let mut c = counter("cl100k", &["<|end|>"], 1);
        c.add_texts(&["the cat<|end|>the dog"]).expect("ok");
        let w = &c.counts().words;
        assert_eq!(w.get(b"the".as_slice()), Some(&2));
        assert_eq!(w.get(b" cat".as_slice()), Some(&1));
        assert!(!w.keys().any(|k| k.windows(2).any(|x| x == b"<|")));
    }

    #[test]
    fn bytes_round_trip_and_reject_corruption() {
        let mut c = counter("cl100k", &[], 1);
        c.add_texts(&["the cat and the hat", "\u{1F980} crabs"])
            .expect("ok");
        let counts = c.into_counts();
        let raw = counts.to_bytes();
        assert_eq!(WordCounts::from_bytes(&raw).expect("ok"), counts);
        for cut in [0, 3, 10, raw.len() - 1] {
            assert!(matches!(
                WordCounts::from_bytes(&raw[..cut]),
                Err(Error::Corrupt(_))
            ));
        }
        let mut longer = raw.clone();
        longer.push(0);
        assert!(WordCounts::from_bytes(&longer).is_err());
        let mut bad = raw;
        bad[0] = b'X';
        assert!(WordCounts::from_bytes(&bad).is_err());
    }

    #[test]
    fn same_counts_any_threads_and_chunking() {
        let text = "Alpha beta  gamma\n\ndelta 12345\nepsilon!\n".repeat(40_000);
        let mut one = counter("cl100k", &[], 1);
        one.add_texts(&[text.as_str()]).expect("ok");
        let mut many = counter("cl100k", &[], 3);
        let half = text.len() / 2;
        let cut = half + text[half..].find("\nd").expect("has") + 1;
        many.add_texts(&[&text[cut..], &text[..cut]]).expect("ok");
        assert_eq!(one.counts(), many.counts());
    }

    #[test]
    fn files_equal_texts_and_report_bad_utf8() {
        let dir = std::env::temp_dir().join(format!("toklab-count-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let text = "Some words here\nand more words\n".repeat(20_000);
        let good = dir.join("good.txt");
        std::fs::write(&good, &text).expect("write");
        for pat in ["gpt2", "cl100k", r"\w+"] {
            let mut a = counter(pat, &[], 2);
            a.add_files(std::slice::from_ref(&good), Utf8Errors::Strict, &|_| {})
                .expect("ok");
            let mut b = counter(pat, &[], 1);
            b.add_texts(&[text.as_str()]).expect("ok");
            assert_eq!(a.counts(), b.counts(), "pattern {pat}");
        }
        let bad = dir.join("bad.txt");
        std::fs::write(&bad, b"ok text\n\xff\xfe more").expect("write");
        let mut c = counter("cl100k", &[], 1);
        match c.add_files(std::slice::from_ref(&bad), Utf8Errors::Strict, &|_| {}) {
            Err(Error::InvalidUtf8 { offset, .. }) => assert_eq!(offset, 8),
            other => panic!("expected InvalidUtf8, got {other:?}"),
        }
        let mut c = counter("cl100k", &[], 1);
        c.add_files(&[bad], Utf8Errors::Replace, &|_| {})
            .expect("ok");
        assert!(c.counts().words.contains_key("\u{fffd}\u{fffd}".as_bytes()));
        let missing =
            counter("cl100k", &[], 1).add_files(&[dir.join("nope")], Utf8Errors::Strict, &|_| {});
        assert!(matches!(missing, Err(Error::Io { .. })));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn blocks_of_files_never_cut_a_special_token() {
        // Every newline here is followed by a letter (a safe cut) and most are inside a
        // special token, whose parts would otherwise be counted as words; in the second text
        // the special tokens overlap, so that only a scan from the block's start finds the
        // ones that span the newlines.
        let dir = std::env::temp_dir().join(format!("toklab-specials-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let cases: [(String, &[&str]); 2] = [
            (
                "Next line<|turn|>\nUser asks\nMore<|turn|>\nUser".repeat(12_000),
                &["<|turn|>\nUser"],
            ),
            (
                "words abcde2\nZebra more and more\n".repeat(12_000),
                &["abcde2", "2\n", "\nZebra"],
            ),
        ];
        for (i, (text, specials)) in cases.iter().enumerate() {
            let path = dir.join(format!("chat{i}.txt"));
            std::fs::write(&path, text).expect("write");
            for pat in ["gpt2", "cl100k", "o200k"] {
                for threads in [1, 2] {
                    let mut a = counter(pat, specials, threads);
                    a.add_files(std::slice::from_ref(&path), Utf8Errors::Strict, &|_| {})
                        .expect("ok");
                    let mut b = counter(pat, specials, 1);
                    b.add_texts(&[text.as_str()]).expect("ok");
                    assert_eq!(a.counts(), b.counts(), "case {i}, {pat}, {threads} threads");
                }
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
