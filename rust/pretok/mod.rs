//! Pre-tokenization: cutting text into the pieces that BPE merges never cross.
//!
//! The named patterns are byte-for-byte the ones tiktoken ships (`r50k`/GPT-2, `cl100k`/GPT-4,
//! `o200k`/GPT-4o), so a toklab tokenizer and a tiktoken `Encoding` built from the same ranks cut
//! text identically. Any other string is compiled as a custom regex.
//!
//! Invariant: the pieces cover the text exactly. Text that the pattern does not match becomes a
//! piece of its own (HF tokenizers' `Split(behavior="isolated")`), so decoding is lossless for
//! every pattern; for the named patterns every byte is matched anyway, as in tiktoken.
//!
//! Safe cuts: for the named patterns there are positions where every piece boundary is the same
//! whether the text is processed whole or in two parts: just after a `\n` that is followed by a
//! letter or digit (cl100k, o200k), or just before such a `\n` (GPT-2, whose `\s+(?!\S)` would
//! otherwise see the end of the text instead of the letter). Splitting big texts there lets
//! counting and encoding run on many threads and stream files in blocks while giving exactly the
//! result of processing each text whole. Custom patterns are never cut.

mod blocks;
mod classes;
mod fast;

use crate::error::{Error, Result};

/// GPT-2 / r50k_base (tiktoken's possessive form of the original GPT-2 pattern).
pub const GPT2_PATTERN: &str =
    r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s";
/// GPT-4 / cl100k_base: the default.
pub const CL100K_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";
/// GPT-4o / o200k_base.
pub const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"\p{N}{1,3}",
    "|",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    "|",
    r"\s*[\r\n]+",
    "|",
    r"\s+(?!\S)",
    "|",
    r"\s+",
);

/// fancy-regex gives up after this many backtracking steps on one match. The named patterns
/// backtrack at most a character or two per match, so this only bounds pathological custom
/// patterns; it is far above tiktoken's default so that long runs of whitespace never trip it.
const BACKTRACK_LIMIT: usize = 100_000_000;

/// Which of the named patterns (if any) a pattern string is; decides where texts may be cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternKind {
    Gpt2,
    Cl100k,
    O200k,
    Custom,
}

/// Maps a pattern name (`"gpt2"`, `"cl100k"`, `"o200k"` and tiktoken's aliases) to its regex; any
/// other string is returned unchanged as a custom regex.
pub fn resolve_pattern(name_or_regex: &str) -> &str {
    match name_or_regex {
        "gpt2" | "r50k" | "r50k_base" | "p50k_base" => GPT2_PATTERN,
        "cl100k" | "cl100k_base" | "gpt4" | "gpt-4" => CL100K_PATTERN,
        "o200k" | "o200k_base" | "gpt4o" | "gpt-4o" => O200K_PATTERN,
        other => other,
    }
}

fn kind_of(pattern: &str) -> PatternKind {
    if pattern == GPT2_PATTERN {
        PatternKind::Gpt2
    } else if pattern == CL100K_PATTERN {
        PatternKind::Cl100k
    } else if pattern == O200K_PATTERN {
        PatternKind::O200k
    } else {
        PatternKind::Custom
    }
}

/// A compiled pre-tokenization pattern. Cheap to share between threads.
#[derive(Debug, Clone)]
pub struct PreTokenizer {
    pattern: String,
    regex: fancy_regex::Regex,
    kind: PatternKind,
    /// For the named patterns: the class table that their hand-written matchers read.
    fast: Option<&'static [u8]>,
}

impl PreTokenizer {
    /// Compiles a pattern given by name or as a regex.
    pub fn new(name_or_regex: &str) -> Result<Self> {
        let pattern = resolve_pattern(name_or_regex).to_string();
        let regex = fancy_regex::RegexBuilder::new(&pattern)
            .backtrack_limit(BACKTRACK_LIMIT)
            .build()
            .map_err(|e| Error::Pattern {
                pattern: pattern.clone(),
                reason: e.to_string(),
            })?;
        let kind = kind_of(&pattern);
        let fast = match kind {
            PatternKind::Custom => None,
            _ => classes::table(),
        };
        Ok(Self {
            pattern,
            regex,
            kind,
            fast,
        })
    }

    /// The same pre-tokenizer without the hand-written matcher: the regex engine only. For
    /// differential tests and benchmarks.
    pub fn regex_only(&self) -> Self {
        Self {
            fast: None,
            ..self.clone()
        }
    }

    /// The regex source (named patterns resolved).
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    pub fn kind(&self) -> PatternKind {
        self.kind
    }

    /// Calls `f(start, end)` for each piece of `text`, in order, covering all of it.
    #[inline]
    pub fn for_each_piece(&self, text: &str, f: impl FnMut(usize, usize)) -> Result<()> {
        // One loop per named pattern, so that its matcher is inlined into it.
        let b = text.as_bytes();
        match (self.kind, self.fast) {
            (PatternKind::Gpt2, Some(table)) => {
                blocks::pieces::<{ blocks::GPT2 }>(b, |s| fast::gpt2_end(b, table, s), f)
            }
            (PatternKind::Cl100k, Some(table)) => {
                blocks::pieces::<{ blocks::CL100K }>(b, |s| fast::cl100k_end(b, table, s), f)
            }
            (PatternKind::O200k, Some(table)) => {
                blocks::pieces::<{ blocks::O200K }>(b, |s| fast::o200k_end(b, table, s), f)
            }
            _ => return self.regex_pieces(text, f),
        }
        Ok(())
    }

    /// `for_each_piece` by the regex engine.
    fn regex_pieces(&self, text: &str, mut f: impl FnMut(usize, usize)) -> Result<()> {
        let mut covered = 0;
        for m in self.regex.find_iter(text) {
            let m = m.map_err(|e| Error::PreTokenize(e.to_string()))?;
            if m.start() == m.end() {
                continue;
            }
            if m.start() > covered {
                f(covered, m.start());
            }
            f(m.start(), m.end());
            covered = m.end();
        }
        if covered < text.len() {
            f(covered, text.len());
        }
        Ok(())
    }

    /// The pieces of `text` as string slices.
    pub fn pieces<'t>(&self, text: &'t str) -> Result<Vec<&'t str>> {
        let mut out = Vec::new();
        self.for_each_piece(text, |s, e| out.push(&text[s..e]))?;
        Ok(out)
    }

    /// Whether a text may be cut at byte `i` without changing any piece (see the module notes).
    fn is_safe_cut(&self, bytes: &[u8], i: usize) -> bool {
        let starts_alnum = |j: usize| {
            match std::str::from_utf8(&bytes[j..bytes.len().min(j + 4)]) {
                Ok(s) => s.chars().next(),
                Err(e) => std::str::from_utf8(&bytes[j..j + e.valid_up_to()])
                    .ok()
                    .and_then(|s| s.chars().next()),
            }
            .is_some_and(char::is_alphanumeric)
        };
        match self.kind {
            PatternKind::Cl100k | PatternKind::O200k => {
                i > 0 && i < bytes.len() && bytes[i - 1] == b'\n' && starts_alnum(i)
            }
            PatternKind::Gpt2 => i + 1 < bytes.len() && bytes[i] == b'\n' && starts_alnum(i + 1),
            PatternKind::Custom => false,
        }
    }

    /// Cuts `text` into consecutive parts of roughly `target` bytes at safe cuts only, so that the
    /// pieces of the parts, concatenated, are the pieces of `text`. A text with no safe cut, or
    /// with a custom pattern, comes back whole.
    pub fn split_at_safe_cuts<'t>(&self, text: &'t str, target: usize) -> Vec<&'t str> {
        let bytes = text.as_bytes();
        if self.kind == PatternKind::Custom || bytes.len() <= target {
            return vec![text];
        }
        let mut parts = Vec::new();
        let mut start = 0;
        while bytes.len() - start > target {
            let mut cut = None;
            let mut i = start + target;
            // Look for a '\n' near the target first, then anywhere after it.
            while let Some(off) = memchr_newline(&bytes[i..]) {
                let nl = i + off;
                let candidate = match self.kind {
                    PatternKind::Gpt2 => nl,
                    _ => nl + 1,
                };
                if candidate > start && self.is_safe_cut(bytes, candidate) {
                    cut = Some(candidate);
                    break;
                }
                i = nl + 1;
            }
            match cut {
                Some(c) => {
                    parts.push(&text[start..c]);
                    start = c;
                }
                None => break,
            }
        }
        parts.push(&text[start..]);
        parts
    }

    /// Length of the longest prefix of `buf` (a block of a stream) that ends at a safe cut, for
    /// reading files in blocks. `None` if there is none.
    pub fn last_safe_cut(&self, buf: &[u8]) -> Option<usize> {
        if self.kind == PatternKind::Custom {
            return None;
        }
        // A cut must see the character after it, so leave 4 bytes of look-ahead in the buffer.
        let mut end = buf.len().saturating_sub(4);
        while let Some(nl) = buf[..end].iter().rposition(|&b| b == b'\n') {
            let candidate = match self.kind {
                PatternKind::Gpt2 => nl,
                _ => nl + 1,
            };
            if candidate > 0 && self.is_safe_cut(buf, candidate) {
                return Some(candidate);
            }
            end = nl;
        }
        None
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(pat: &str, text: &str) -> Vec<String> {
        let pre = PreTokenizer::new(pat).expect("pattern compiles");
        pre.pieces(text)
            .expect("pre-tokenizes")
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn cl100k_pieces() {
        assert_eq!(
            pieces("cl100k", "Hello world's 12345 !!\n\n  "),
            ["Hello", " world", "'s", " ", "123", "45", " !!\n\n", "  "]
        );
        // Trailing whitespace is one piece (`\s++$`), as in current tiktoken.
        assert_eq!(pieces("cl100k", "a\n\n  "), ["a", "\n\n  "]);
    }

    #[test]
    fn gpt2_pieces() {
        assert_eq!(
            pieces("gpt2", "Hello  world\n123"),
            ["Hello", " ", " world", "\n", "123"]
        );
    }

    #[test]
    fn o200k_pieces() {
        assert_eq!(
            pieces("o200k", "HelloWorld don't"),
            ["Hello", "World", " don't"]
        );
    }

    #[test]
    fn custom_pattern_is_lossless() {
        // The pattern matches only letters; the rest becomes pieces of its own.
        assert_eq!(pieces(r"\p{L}+", "ab, cd!"), ["ab", ", ", "cd", "!"]);
    }

    #[test]
    fn bad_pattern_is_an_error() {
        assert!(matches!(
            PreTokenizer::new("(unclosed"),
            Err(Error::Pattern { .. })
        ));
    }

    /// The hand-written matchers against the regexes, on text built to hit every alternative.
    #[test]
    fn fast_matchers_equal_the_regexes() {
        let samples = [
            "Hello world's THE'S we'LL they'Re I'd 'x ' ſ 'ſ 'Ş",
            "  leading and trailing  \n\n \t\r\n x\u{3000}y\u{85}z \u{a0}\u{a0}a  ",
            "12345 1 22 333 4444 ١٢٣٤ ²³ Ⅻ x1y2 a.b,c!? !!!\n\n?!/\n/x //\n",
            "HelloWorld ABCdef abcDEF ǅungla Ǆ MᵃᵇC DŽx x\u{301}y \u{301}\u{301}a É\u{301}",
            "日本語のテキスト 中文 한국어 עברית العربية देवनागरी ไทย 🦀🦀 emoji👍🏽",
            "  \n",
            "\n",
            " ",
            "",
            "'",
            "a'",
            "' s",
            "\r\n\r\n",
            "x  \n  y",
            "..\n\n  \n",
        ];
        for pat in ["gpt2", "cl100k", "o200k"] {
            let fast = PreTokenizer::new(pat).expect("ok");
            assert!(fast.fast.is_some());
            let slow = fast.regex_only();
            for text in samples {
                assert_eq!(
                    fast.pieces(text).expect("ok"),
                    slow.pieces(text).expect("ok"),
                    "{pat}: {text:?}"
                );
            }
            // Every suffix, so every character is tried as a piece start; every prefix, so the
            // text ends at every character (in the window cut short by the end, which the
            // matcher finishes); and texts of 60 to 200 bytes from every third character, so
            // that they end in every part of a second or third window.
            let all = samples.concat();
            let starts: Vec<usize> = all.char_indices().map(|(i, _)| i).collect();
            let mut texts: Vec<&str> = starts.iter().map(|&i| &all[i..]).collect();
            texts.extend(starts.iter().map(|&i| &all[..i]));
            for (k, &i) in starts.iter().enumerate().step_by(3) {
                let len = 60 + k * 7 % 141;
                if let Some(&j) = starts.iter().find(|&&j| j >= i + len) {
                    texts.push(&all[i..j]);
                }
            }
            for t in texts {
                assert_eq!(
                    fast.pieces(t).expect("ok"),
                    slow.pieces(t).expect("ok"),
                    "{pat}: {t:?}"
                );
            }
        }
    }

    #[test]
    fn safe_cuts_do_not_change_pieces() {
        let text = "Line one  \nTwo lines\n\n  three 123\n456 four!\n/five\nsix  \n\n7 seven \n";
        let text = text.repeat(50);
        for pat in ["gpt2", "cl100k", "o200k"] {
            let pre = PreTokenizer::new(pat).expect("compiles");
            let whole = pre.pieces(&text).expect("ok");
            for target in [1, 7, 30, 100, 1000] {
                let parts = pre.split_at_safe_cuts(&text, target);
                assert_eq!(parts.concat(), text);
                let mut joined = Vec::new();
                for p in &parts {
                    joined.extend(pre.pieces(p).expect("ok"));
                }
                assert_eq!(joined, whole, "pattern {pat}, target {target}");
            }
            let cut = pre.last_safe_cut(text.as_bytes()).expect("has a cut");
            let mut joined = pre.pieces(&text[..cut]).expect("ok");
            joined.extend(pre.pieces(&text[cut..]).expect("ok"));
            assert_eq!(joined, whole);
        }
    }
}
