//! Bit-parallel pre-tokenization of ASCII text: 64 bytes at a time, the pieces' start positions
//! are derived from per-class bitmaps with whole-word operations, instead of one branchy step
//! per piece. Prose and code are mostly ASCII; elsewhere, and wherever a window cannot decide,
//! the scalar matchers of `fast.rs` take over for one piece.
//!
//! A window starts at a known piece start `s` and covers the ASCII bytes `s..s + k` (`k <= 64`,
//! ending before the first non-ASCII byte). Patterns have no look-behind, so matching from `s`
//! does not depend on what came before it. A start is only trusted before the last class run of
//! the window (letters, digits, whitespace or other), since that run's pieces depend on bytes
//! past the window; the window's last trusted start becomes the next window's `s`. Equality with
//! the regexes is tested in `mod tests` below and in `tests/test_pretok.py`.

/// Class bitmaps of a window: bit `i` is byte `s + i`. Bits at and past the window's length are
/// zero in every map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Masks {
    /// The window: the ASCII bytes before the first non-ASCII one (and within 64).
    valid: u64,
    /// `[A-Za-z]` (`\p{L}` in ASCII)
    letter: u64,
    /// `[A-Z]` (o200k's upper-case class in ASCII; `[a-z]` is its lower-case one)
    upper: u64,
    /// `[0-9]` (`\p{N}` in ASCII)
    digit: u64,
    /// `[\t\n\x0B\x0C\r ]` (`\s` in ASCII)
    space: u64,
    /// `[\r\n]`
    newline: u64,
    /// `' '`
    blank: u64,
    /// `'`
    apostrophe: u64,
    /// `/`
    slash: u64,
}

/// The class bitmaps of `b[s..s + 64]` (`s + 64 <= b.len()`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn classify(b: &[u8], s: usize) -> Masks {
    use std::arch::x86_64::*;
    let window = &b[s..s + 64];
    let mut m = Masks::default();
    let mut high = 0u64;
    // SAFETY: SSE2 is part of the x86_64 baseline; every load reads 16 bytes of `window`.
    unsafe {
        let in_range = |x: __m128i, lo: u8, hi: u8| -> u64 {
            let t = _mm_sub_epi8(x, _mm_set1_epi8(lo as i8));
            let le = _mm_cmpeq_epi8(_mm_min_epu8(t, _mm_set1_epi8((hi - lo) as i8)), t);
            u64::from(_mm_movemask_epi8(le) as u16)
        };
        let eq = |x: __m128i, c: u8| -> u64 {
            u64::from(_mm_movemask_epi8(_mm_cmpeq_epi8(x, _mm_set1_epi8(c as i8))) as u16)
        };
        for j in 0..4 {
            let x = _mm_loadu_si128(window.as_ptr().add(16 * j).cast::<__m128i>());
            let at = 16 * j;
            high |= u64::from(_mm_movemask_epi8(x) as u16) << at;
            let folded = _mm_or_si128(x, _mm_set1_epi8(0x20));
            m.letter |= in_range(folded, b'a', b'z') << at;
            m.upper |= in_range(x, b'A', b'Z') << at;
            m.digit |= in_range(x, b'0', b'9') << at;
            let blank = eq(x, b' ');
            m.space |= (in_range(x, b'\t', b'\r') | blank) << at;
            m.newline |= (eq(x, b'\n') | eq(x, b'\r')) << at;
            m.blank |= blank << at;
            m.apostrophe |= eq(x, b'\'') << at;
            m.slash |= eq(x, b'/') << at;
        }
    }
    restrict(m, high)
}

/// The class bitmaps of `b[s..s + 64]` (`s + 64 <= b.len()`), byte by byte.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn classify(b: &[u8], s: usize) -> Masks {
    classify_scalar(&b[s..s + 64])
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn classify_scalar(window: &[u8]) -> Masks {
    let mut m = Masks::default();
    let mut high = 0u64;
    for (i, &c) in window.iter().enumerate().take(64) {
        let bit = 1u64 << i;
        let set = |mask: &mut u64, yes: bool| *mask |= if yes { bit } else { 0 };
        set(&mut high, c >= 0x80);
        set(&mut m.letter, c.is_ascii_alphabetic());
        set(&mut m.upper, c.is_ascii_uppercase());
        set(&mut m.digit, c.is_ascii_digit());
        set(&mut m.space, matches!(c, b'\t'..=b'\r' | b' '));
        set(&mut m.newline, c == b'\n' || c == b'\r');
        set(&mut m.blank, c == b' ');
        set(&mut m.apostrophe, c == b'\'');
        set(&mut m.slash, c == b'/');
    }
    restrict(m, high)
}

/// Cuts the maps at the first non-ASCII byte (or the first bit of `high`).
#[inline(always)]
fn restrict(mut m: Masks, high: u64) -> Masks {
    let k = high.trailing_zeros();
    m.valid = if k >= 64 { !0 } else { (1u64 << k) - 1 };
    for x in [
        &mut m.letter,
        &mut m.upper,
        &mut m.digit,
        &mut m.space,
        &mut m.newline,
        &mut m.blank,
        &mut m.apostrophe,
        &mut m.slash,
    ] {
        *x &= m.valid;
    }
    m
}

/// Whether the bytes at `i` start a contraction suffix (`s`, `d`, `m`, `t`, `ll`, `ve`, `re`,
/// any case; both patterns have the same seven), and its length; ASCII only (a window holds no
/// `ſ`). Reads the text itself, so bytes past the window count.
#[inline(always)]
fn contraction(b: &[u8], i: usize) -> usize {
    let lower = |j: usize| b.get(j).map_or(0, |c| c | 0x20);
    match lower(i) {
        b's' | b'd' | b'm' | b't' => 1,
        b'l' if lower(i + 1) == b'l' => 2,
        b'v' | b'r' if lower(i + 1) == b'e' => 2,
        _ => 0,
    }
}

/// The piece starts of cl100k's pattern in the window of `b` at `s` (bit 0 always set), and
/// how many of them are trusted: those below the returned position.
///
/// `'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|
///  \s++$|\s*[\r\n]|\s+(?!\S)|\s`, read for ASCII:
/// - a letter run is one piece, with the character before it if that one is whitespace other
///   than a newline, or an "other" character that starts a piece; an apostrophe that starts a
///   piece and is followed by a contraction suffix is a piece with that suffix instead;
/// - a digit run is pieces of three digits from its left;
/// - an "other" run is one piece, with a blank before it and the newlines after it;
/// - a whitespace run (less newlines taken by an "other" run) is split after its last newline,
///   and its last character, if not a newline, starts the next piece (alone, or with the
///   letters or "other" run after it).
///
/// With `O200K`, o200k's pattern (`P?U*W+C?|P?U+W*C?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|
/// \s*[\r\n]+|\s+(?!\S)|\s+`), which reads the same for ASCII but for words: an upper-case
/// letter after a lower-case one starts a new word, and a contraction joins the word before it
/// (`don't` is one piece), while an apostrophe that starts a piece is just a prefix.
#[inline(always)]
fn window_starts<const O200K: bool>(b: &[u8], s: usize, m: &Masks) -> (u64, u32) {
    let prev = |x: u64| x << 1;
    let next = |x: u64| x >> 1;
    let (l, n, w, nl) = (m.letter, m.digit, m.space, m.newline);
    let x = w & !nl;
    // "Other" runs take the newlines after them (`[\r\n]*`; o200k's `[\r\n/]*` slashes too):
    // in each run of such characters, everything from the first newline that follows an
    // "other" character (before the run, or a slash in it) to the run's end. The next
    // character starts a piece.
    let tail = if O200K { nl | m.slash } else { nl };
    let follows_other = nl & prev(m.valid & !(l | n | w));
    let before = tail & !follows_other;
    let before = before & !before.wrapping_add(tail & !prev(tail) & before);
    let taken = tail & !before;
    let after_taken = prev(taken & !next(tail)) & m.valid;
    let o = m.valid & !(l | n | w) & !taken;

    // "Other" runs that start a piece (after a blank, the blank starts it).
    let o_start = o & !prev(o) & !prev(m.blank);
    // Characters that take the letter run after them into their piece.
    let prefix = (x | o_start) & next(l);
    let mut starts = 1 | o_start | prefix | (l & !prev(l) & !prev(prefix));

    if O200K {
        // Words: also where an upper-case letter follows a lower-case one.
        starts |= m.upper & prev(l & !m.upper);
        // A contraction right after a word's letters joins it; what follows starts a piece.
        let mut apostrophes = m.apostrophe & prev(l);
        let mut joined_to = usize::MAX;
        while apostrophes != 0 {
            let e = apostrophes.trailing_zeros() as usize;
            apostrophes &= apostrophes - 1;
            if e == joined_to {
                continue; // after a contraction, not after a word
            }
            let k = contraction(b, s + e + 1);
            if k > 0 {
                starts &= !(low_bits(e as u32 + k as u32 + 1) & !low_bits(e as u32));
                joined_to = e + 1 + k;
                if joined_to < 64 {
                    starts |= m.valid & (1 << joined_to);
                }
            }
        }
    } else {
        // Contractions: an apostrophe that starts a piece, then a suffix; the letters after it
        // start a new piece.
        let mut apostrophes = m.apostrophe & o_start & next(l);
        while apostrophes != 0 {
            let p = apostrophes.trailing_zeros() as usize;
            apostrophes &= apostrophes - 1;
            let k = contraction(b, s + p + 1);
            if k > 0 && p + 1 + k < 64 {
                starts |= l & (1 << (p + 1 + k));
            }
        }
    }

    // Digits: a run's first digit, then every third one while the run goes on.
    let three = n & prev(n) & (n << 2);
    let mut group = n & !prev(n);
    while group != 0 {
        starts |= group;
        group = (group << 3) & three;
    }

    // Whitespace. Newlines right after an "other" run belong to its piece; the character after
    // them starts a piece.
    starts |= (w & !prev(w) & !taken) | after_taken;
    // The last character of a run, unless a newline.
    starts |= x & !next(w);
    // After the run's last newline, if whitespace follows (`\s*[\r\n]` ends there): the first
    // character of a non-newline run that follows a newline and ends the whitespace.
    if x & prev(nl) != 0 {
        let ends = x & !next(w);
        let rx = x.reverse_bits();
        let before = (rx.wrapping_add(ends.reverse_bits()) & !rx).reverse_bits();
        starts |= prev(before & nl);
    }

    // Trusted: before the class run that reaches the window's last byte.
    (starts, trusted_limit(m, [l, n, w, o]))
}

/// The piece starts of GPT-2's pattern in the window of `b` at `s` (bit 0 always set), and how
/// many of them are trusted (see [`window_starts`]).
///
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, read for ASCII:
/// - a run of letters, of digits or of "other" characters is one piece, with the space
///   before it if there is one (`' '` only);
/// - an apostrophe that starts a piece (the first of an "other" run, with no space before it)
///   and is followed by a contraction suffix (lower case only) is a piece with that suffix;
///   the letters after the suffix start a new piece;
/// - a whitespace run is one piece but for its last character, which starts the next piece:
///   alone, or with the run after it if it is a space. (A run that ends the text is one
///   piece; it is the window's last class run then, never trusted.)
#[inline(always)]
fn gpt2_window_starts(b: &[u8], s: usize, m: &Masks) -> (u64, u32) {
    let prev = |x: u64| x << 1;
    let next = |x: u64| x >> 1;
    let (l, n, w) = (m.letter, m.digit, m.space);
    let o = m.valid & !(l | n | w);
    let runs = (l & !prev(l)) | (n & !prev(n)) | (o & !prev(o));
    // Runs start a piece, or the space before them does (that space is a whitespace run's
    // last character, a start below).
    let mut starts = 1 | (runs & !prev(m.blank));
    // Whitespace runs: their first and their last character.
    starts |= (w & !prev(w)) | (w & !next(w));
    // Contractions.
    let mut apostrophes = m.apostrophe & o & !prev(o) & !prev(m.blank);
    while apostrophes != 0 {
        let p = apostrophes.trailing_zeros() as usize;
        apostrophes &= apostrophes - 1;
        let k = match (b.get(s + p + 1), b.get(s + p + 2)) {
            (Some(b's' | b't' | b'm' | b'd'), _) => 1,
            (Some(b'r' | b'v'), Some(b'e')) | (Some(b'l'), Some(b'l')) => 2,
            _ => 0,
        };
        if k > 0 {
            if p + 1 < 64 {
                starts &= !(l & (1 << (p + 1)));
            }
            if p + 1 + k < 64 {
                starts |= l & (1 << (p + 1 + k));
            }
        }
    }
    (starts, trusted_limit(m, [l, n, w, o]))
}

/// Where a window's trusted starts end: at the start of the class run that reaches its last
/// byte (the runs of `classes`).
#[inline(always)]
fn trusted_limit(m: &Masks, classes: [u64; 4]) -> u32 {
    let last = 63 - m.valid.leading_zeros().min(63);
    let class = classes
        .into_iter()
        .find(|c| c >> last & 1 == 1)
        .unwrap_or(0);
    let other = !class & m.valid;
    if other == 0 {
        0
    } else {
        64 - other.leading_zeros()
    }
}

/// The patterns [`pieces`] knows.
pub const CL100K: u8 = 0;
pub const O200K: u8 = 1;
pub const GPT2: u8 = 2;

/// Calls `f(start, end)` for each piece of `b` under the pattern `KIND` ([`CL100K`], [`O200K`]
/// or [`GPT2`]): windows where they decide, `scalar` (the hand-written matcher, `b` and `table`
/// bound) elsewhere.
#[inline(always)]
pub fn pieces<const KIND: u8>(
    b: &[u8],
    scalar: impl Fn(usize) -> usize,
    mut f: impl FnMut(usize, usize),
) {
    let mut s = 0;
    while s < b.len() {
        let last = s + 64 > b.len();
        let m = if !last {
            classify(b, s)
        } else {
            // The text's last bytes, padded: the window ends with the text.
            let n = b.len() - s;
            let mut padded = [0u8; 64];
            padded[..n].copy_from_slice(&b[s..]);
            truncate(classify(&padded, 0), n)
        };
        let (starts, limit) = match KIND {
            GPT2 => gpt2_window_starts(b, s, &m),
            O200K => window_starts::<true>(b, s, &m),
            _ => window_starts::<false>(b, s, &m),
        };
        let trusted = starts & low_bits(limit);
        // Pieces between consecutive trusted starts; the last one's end is not known yet.
        let mut rest = trusted & !1;
        let mut from = s;
        while rest != 0 {
            let to = s + rest.trailing_zeros() as usize;
            rest &= rest - 1;
            f(from, to);
            from = to;
        }
        if last {
            // The rest (the window's last class run, a piece or a few) by the matcher, rather
            // than by another window over it: the end of every text comes here.
            s = from;
            while s < b.len() {
                let e = scalar(s);
                f(s, e);
                s = e;
            }
        } else if from == s {
            let e = scalar(s);
            f(s, e);
            s = e;
        } else {
            s = from;
        }
    }
}

/// The maps of a window cut to its first `n` bytes.
#[inline(always)]
fn truncate(m: Masks, n: usize) -> Masks {
    restrict(m, !(m.valid & low_bits(n as u32)))
}

/// The bits below `k` (`k <= 64`).
#[inline(always)]
fn low_bits(k: u32) -> u64 {
    if k >= 64 {
        !0
    } else {
        (1u64 << k) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::super::classes::{LETTER, NUMBER, SPACE};
    use super::*;
    use crate::pretok::PreTokenizer;
    use crate::testing::Rng;

    /// The flags that the ASCII maps stand for, for the tests.
    fn flags_of(m: &Masks, i: usize) -> u8 {
        let bit = |x: u64| x >> i & 1 == 1;
        let mut f = 0;
        if bit(m.letter) {
            f |= LETTER;
        }
        if bit(m.digit) {
            f |= NUMBER;
        }
        if bit(m.space) {
            f |= SPACE;
        }
        f
    }

    /// The maps agree with the Unicode class table on every ASCII byte, and stop at the first
    /// non-ASCII one.
    #[test]
    fn classes_match_the_table() {
        let table = super::super::classes::table().expect("builds");
        let bytes: Vec<u8> = (0u8..128).collect();
        for chunk in bytes.chunks(64) {
            let m = classify(chunk, 0);
            assert_eq!(m, classify_scalar(chunk));
            assert_eq!(m.valid, !0);
            for (i, &c) in chunk.iter().enumerate() {
                let want = table[c as usize] & (LETTER | NUMBER | SPACE);
                assert_eq!(flags_of(&m, i), want, "byte {c:#x}");
                assert_eq!(m.newline >> i & 1 == 1, c == b'\n' || c == b'\r');
                assert_eq!(m.blank >> i & 1 == 1, c == b' ');
                assert_eq!(m.apostrophe >> i & 1 == 1, c == b'\'');
            }
        }
        let mut text = vec![b'a'; 64];
        text[10] = 0xC3;
        let m = classify(&text, 0);
        assert_eq!(m.valid, (1 << 10) - 1);
        assert_eq!(m, classify_scalar(&text));
    }

    /// Long random texts over the characters that matter to the patterns, against the regexes.
    #[test]
    fn windows_equal_the_regex() {
        let alphabet: [&str; 28] = [
            "a", "b", "S", "s", "l", "L", "v", "E", "e", "r", "t", "D", "'", "'", " ", " ", "  ",
            "\n", "\r", "\t", "\x0b", ".", "(", "1", "23", "/", "é", "\u{a0}",
        ];
        for pattern in ["cl100k", "o200k", "gpt2"] {
            let pre = PreTokenizer::new(pattern).expect("ok");
            let slow = pre.regex_only();
            let mut rng = Rng(0x2545_f491_4f6c_dd1d);
            for round in 0..3000 {
                let len = 1 + (round % 300);
                let mut text = String::new();
                for _ in 0..len {
                    let x = rng.next();
                    // Mostly ASCII; non-ASCII rarely, so that most windows are long.
                    let i = (x % 26) as usize + if x >> 40 & 63 == 0 { 2 } else { 0 };
                    text.push_str(alphabet[i]);
                }
                assert_eq!(
                    pre.pieces(&text).expect("ok"),
                    slow.pieces(&text).expect("ok"),
                    "{pattern}: {text:?}"
                );
            }
        }
    }
}
