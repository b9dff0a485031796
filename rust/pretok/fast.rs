//! Hand-written matchers for the named patterns: the same pieces as the regexes, several times
//! faster.
//!
//! Each `*_end(text, start)` returns where the regex's leftmost-first match starting at `start`
//! ends. The regexes always match at the position where the previous match ended (every
//! character belongs to some alternative), so calling these in a loop reproduces `find_iter`.
//! Alternatives are tried in the pattern's order, and greedy quantifiers that can backtrack are
//! resolved by reasoning about where backtracking stops (see the comments at each one). The
//! equivalence is tested differentially against fancy-regex on all the shared corpora and on
//! hypothesis-generated text (`tests/test_pretok.py`), and in `mod tests` below.

use super::classes::{END, LETTER, LOWER, NUMBER, SPACE, UPPER};

/// Decodes the character at `i` of valid UTF-8: `(code point, class flags, byte length)`.
#[inline(always)]
fn at(b: &[u8], table: &[u8], i: usize) -> (u32, u8, usize) {
    let Some(&b0) = b.get(i) else {
        return (0, END, 0);
    };
    if b0 < 0x80 {
        return (u32::from(b0), table[b0 as usize], 1);
    }
    let (c, n) = if b0 < 0xE0 {
        ((u32::from(b0 & 0x1F) << 6) | u32::from(b[i + 1] & 0x3F), 2)
    } else if b0 < 0xF0 {
        (
            (u32::from(b0 & 0x0F) << 12)
                | (u32::from(b[i + 1] & 0x3F) << 6)
                | u32::from(b[i + 2] & 0x3F),
            3,
        )
    } else {
        (
            (u32::from(b0 & 0x07) << 18)
                | (u32::from(b[i + 1] & 0x3F) << 12)
                | (u32::from(b[i + 2] & 0x3F) << 6)
                | u32::from(b[i + 3] & 0x3F),
            4,
        )
    };
    (c, table[c as usize], n)
}

/// End of the run of characters whose flags intersect `mask`, from `i`.
#[inline(always)]
fn run(b: &[u8], table: &[u8], mut i: usize, mask: u8) -> usize {
    loop {
        let (_, f, n) = at(b, table, i);
        if f & mask == 0 || f == END {
            return i;
        }
        i += n;
    }
}

/// End of the run of "other" characters (not `\s`, `\p{L}`, `\p{N}`), from `i`.
#[inline(always)]
fn run_other(b: &[u8], table: &[u8], mut i: usize) -> usize {
    loop {
        let (_, f, n) = at(b, table, i);
        if f & (SPACE | LETTER | NUMBER | END) != 0 {
            return i;
        }
        i += n;
    }
}

#[inline(always)]
fn is_other(f: u8) -> bool {
    f & (SPACE | LETTER | NUMBER | END) == 0
}

/// `\p{N}{1,3}`: up to three numeric characters from `s`.
#[inline(always)]
fn digits_end(b: &[u8], table: &[u8], s: usize) -> usize {
    let mut i = s;
    for _ in 0..3 {
        let (_, g, m) = at(b, table, i);
        if g & NUMBER == 0 || g == END {
            break;
        }
        i += m;
    }
    i
}

/// ` ?[^\s\p{L}\p{N}]+` followed by any run of the ASCII bytes in `tail`, from `s` (whose
/// character is `c` with flags `f`); `None` if neither `s` nor, after a space, `s + 1` starts
/// such a run.
#[inline(always)]
fn other_end(b: &[u8], table: &[u8], s: usize, c: u32, f: u8, tail: &[u8]) -> Option<usize> {
    let start = if c == u32::from(b' ') {
        let (_, g, _) = at(b, table, s + 1);
        is_other(g).then_some(s + 1)
    } else {
        is_other(f).then_some(s)
    }?;
    let mut i = run_other(b, table, start);
    while b.get(i).is_some_and(|x| tail.contains(x)) {
        i += 1;
    }
    Some(i)
}

/// Whitespace starting at `s`: `(end of the run, start of its last char, end of its last
/// \r or \n if any)`.
#[inline(always)]
fn space_run(b: &[u8], table: &[u8], s: usize) -> (usize, usize, Option<usize>) {
    let (mut i, mut last, mut newline) = (s, s, None);
    loop {
        let (c, f, n) = at(b, table, i);
        if f & SPACE == 0 || f == END {
            return (i, last, newline);
        }
        if c == u32::from(b'\n') || c == u32::from(b'\r') {
            newline = Some(i + 1);
        }
        last = i;
        i += n;
    }
}

/// `(?i)x` for the contraction letters: ASCII either case, plus `ſ` (U+017F) for `s`.
#[inline(always)]
fn fold(c: u32, x: u8) -> bool {
    c == u32::from(x) || c == u32::from(x.to_ascii_uppercase()) || (x == b's' && c == 0x17F)
}

/// Length in bytes of a contraction suffix after an apostrophe at `i - 1`: `s`, `d`, `m`, `t`
/// (one letter) or `ll`, `ve`, `re` (two), compared case-insensitively or not.
#[inline(always)]
fn contraction(b: &[u8], table: &[u8], i: usize, case_insensitive: bool, singles: &[u8]) -> usize {
    let eq = |c: u32, x: u8| {
        if case_insensitive {
            fold(c, x)
        } else {
            c == u32::from(x)
        }
    };
    let (c1, _, n1) = at(b, table, i);
    if n1 == 0 {
        return 0;
    }
    if singles.iter().any(|&x| eq(c1, x)) {
        return n1;
    }
    let (c2, _, n2) = at(b, table, i + n1);
    if n2 == 0 {
        return 0;
    }
    for [x, y] in [[b'l', b'l'], [b'v', b'e'], [b'r', b'e']] {
        if eq(c1, x) && eq(c2, y) {
            return n1 + n2;
        }
    }
    0
}

/// The whitespace alternatives shared by all three patterns, for a run starting at `s`.
/// `trailing_all`: `\s++$` comes first (GPT-2, cl100k); `newline_rule`: `\s*[\r\n]` (cl100k,
/// o200k), which ends the piece just after the run's last line break.
#[inline(always)]
fn space_end(b: &[u8], table: &[u8], s: usize, trailing_all: bool, newline_rule: bool) -> usize {
    let (end, last, newline) = space_run(b, table, s);
    if trailing_all && end == b.len() {
        return end;
    }
    if newline_rule {
        if let Some(nl) = newline {
            return nl;
        }
    }
    // `\s+(?!\S)`: the whole run at the end of the text, else all but its last character
    // (backtracking one character makes the look-ahead see whitespace).
    if end == b.len() {
        return end;
    }
    if last > s {
        return last;
    }
    // `\s` / `\s+`: a single whitespace character before a non-space.
    end
}

/// `'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s`
pub fn gpt2_end(b: &[u8], table: &[u8], s: usize) -> usize {
    let (c, f, _) = at(b, table, s);
    if c == u32::from(b'\'') {
        let k = contraction(b, table, s + 1, false, b"sdmt");
        if k > 0 {
            return s + 1 + k;
        }
    }
    // ` ?X++`: an optional space before a letter, number or other run.
    let (start, g) = if c == u32::from(b' ') {
        let (_, g, _) = at(b, table, s + 1);
        if g & (LETTER | NUMBER) != 0 || is_other(g) {
            (s + 1, g)
        } else {
            (s, f)
        }
    } else {
        (s, f)
    };
    if g & LETTER != 0 {
        return run(b, table, start, LETTER);
    }
    if g & NUMBER != 0 {
        return run(b, table, start, NUMBER);
    }
    if is_other(g) {
        return run_other(b, table, start);
    }
    space_end(b, table, s, true, false)
}

/// Flags of the byte at `i` if it is ASCII (`None` past the end or for a non-ASCII byte).
#[inline(always)]
fn ascii(b: &[u8], table: &[u8], i: usize) -> Option<u8> {
    b.get(i).filter(|&&c| c < 0x80).map(|&c| table[c as usize])
}

/// End of the run of ASCII bytes whose flags intersect `mask`, from `i`.
#[inline(always)]
fn ascii_run(b: &[u8], table: &[u8], mut i: usize, mask: u8) -> usize {
    while let Some(&c) = b.get(i) {
        if c >= 0x80 || table[c as usize] & mask == 0 {
            break;
        }
        i += 1;
    }
    i
}

const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
const ONES: u64 = 0x0101_0101_0101_0101;

/// The high bit of each byte of `w` that is in `lo..=hi` (ASCII, `0 < lo <= hi < 0x7F`).
#[inline(always)]
fn bytes_in(w: u64, lo: u8, hi: u8) -> u64 {
    // With each byte's high bit cleared, adding `0x80 - lo` sets it exactly for bytes >= lo,
    // and adding `0x7F - hi` for bytes > hi; no sum carries into the next byte.
    let x = w & !HIGH_BITS;
    let ge_lo = x + ONES * u64::from(0x80 - lo);
    let gt_hi = x + ONES * u64::from(0x7F - hi);
    ge_lo & !gt_hi & !w & HIGH_BITS
}

/// `ascii_run` for the ASCII letters of `class` (`UPPER`: A-Z, `LOWER`: a-z, `LETTER`: both),
/// eight bytes at a time while eight bytes remain.
#[inline(always)]
fn ascii_letters(b: &[u8], table: &[u8], mut i: usize, class: u8) -> usize {
    while let Some(w) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
        let m = match class {
            UPPER => bytes_in(w, b'A', b'Z'),
            LOWER => bytes_in(w, b'a', b'z'),
            _ => bytes_in(w, b'A', b'Z') | bytes_in(w, b'a', b'z'),
        };
        let n = (!m & HIGH_BITS).trailing_zeros() as usize / 8;
        i += n;
        if n < 8 {
            return i;
        }
    }
    ascii_run(b, table, i, class)
}

/// Where a letter run may start at `s` in the ASCII fast paths: `s` itself if its byte is an
/// ASCII letter, or `s + 1` if the byte at `s` is ASCII in `[^\r\n\p{L}\p{N}]` and the next
/// one is an ASCII letter (the optional one-character prefix of both patterns' word rules).
#[inline(always)]
fn ascii_word_start(b: &[u8], table: &[u8], s: usize) -> Option<usize> {
    let f = ascii(b, table, s)?;
    if f & LETTER != 0 {
        return Some(s);
    }
    if f & NUMBER != 0 || b[s] == b'\r' || b[s] == b'\n' {
        return None;
    }
    (ascii(b, table, s + 1)? & LETTER != 0).then_some(s + 1)
}

/// `'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|
///  ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s`
#[inline]
pub fn cl100k_end(b: &[u8], table: &[u8], s: usize) -> usize {
    // Fast path: a word of ASCII letters, with its optional prefix (an apostrophe may start a
    // contraction instead, which the general path decides). The letter run goes on through any
    // non-ASCII letters.
    if b.get(s) != Some(&b'\'') {
        if let Some(a) = ascii_word_start(b, table, s) {
            let i = ascii_letters(b, table, a, LETTER);
            return if b.get(i).is_some_and(|&c| c >= 0x80) {
                run(b, table, i, LETTER)
            } else {
                i
            };
        }
    }
    let (c, f, n) = at(b, table, s);
    if c == u32::from(b'\'') {
        let k = contraction(b, table, s + 1, true, b"sdmt");
        if k > 0 {
            return s + 1 + k;
        }
    }
    if f & LETTER != 0 {
        return run(b, table, s, LETTER);
    }
    // `[^\r\n\p{L}\p{N}]?+\p{L}++`: one non-letter, non-digit, non-newline before letters.
    if f & NUMBER == 0 && c != u32::from(b'\r') && c != u32::from(b'\n') {
        let (_, g, _) = at(b, table, s + n);
        if g & LETTER != 0 && g != END {
            return run(b, table, s + n, LETTER);
        }
    }
    if f & NUMBER != 0 {
        return digits_end(b, table, s);
    }
    // ` ?[^\s\p{L}\p{N}]++[\r\n]*+`
    if let Some(e) = other_end(b, table, s, c, f, b"\r\n") {
        return e;
    }
    space_end(b, table, s, true, true)
}

/// o200k's `P?U*W+C?` and `P?U+W*C?` alternatives, with `P = [^\r\n\p{L}\p{N}]`,
/// `U = [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`, `W = [\p{Ll}\p{Lm}\p{Lo}\p{M}]`, `C` a contraction.
fn o200k_word_end(b: &[u8], table: &[u8], s: usize, c: u32, f: u8, n: usize) -> Option<usize> {
    let p_class =
        f & (LETTER | NUMBER | END) == 0 && c != u32::from(b'\r') && c != u32::from(b'\n');
    // Starts to try for the rest: with P taken first (greedy `?`), then without.
    let starts: &[usize] = if p_class { &[n, 0] } else { &[0] };
    let finish = |end: usize| end + o200k_contraction(b, table, end);
    // Alternative 1: `U*` greedy, then `W+`. If the character after the U-run is in W, `W+`
    // takes the W-run from there. Otherwise `U*` gives characters back one at a time, and the
    // first point where `W+` can start is the run's last character that is also in W (Lm, Lo,
    // M are in both); `W+` then takes exactly that character.
    for &skip in starts {
        let a = s + skip;
        let mut i = a;
        let mut last_w = None;
        loop {
            let (_, g, m) = at(b, table, i);
            if g & UPPER == 0 || g == END {
                break;
            }
            if g & LOWER != 0 {
                last_w = Some(i + m);
            }
            i += m;
        }
        let (_, g, _) = at(b, table, i);
        if g & LOWER != 0 && g != END {
            return Some(finish(run(b, table, i, LOWER)));
        }
        if let Some(e) = last_w {
            return Some(finish(e));
        }
    }
    // Alternative 2: `U+` (at least one) then `W*`, both greedy; nothing after can fail.
    for &skip in starts {
        let a = s + skip;
        let e = run(b, table, a, UPPER);
        if e > a {
            return Some(finish(run(b, table, e, LOWER)));
        }
    }
    None
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)?` at `i`: its length in bytes, or 0.
#[inline(always)]
fn o200k_contraction(b: &[u8], table: &[u8], i: usize) -> usize {
    if b.get(i) != Some(&b'\'') {
        return 0;
    }
    let k = contraction(b, table, i + 1, true, b"stmd");
    if k > 0 {
        1 + k
    } else {
        0
    }
}

/// o200k's word rules when the word is ASCII: `P?` as in `ascii_word_start`, then ASCII upper-
/// case letters, then ASCII lower-case letters, then an optional contraction. `None` where a
/// non-ASCII character ends the letters (it might be in U or W: the general path decides).
///
/// ASCII upper-case letters are in U only and lower-case ones in W only, so with `P?` taken the
/// first rule matches exactly when a lower-case run follows the upper-case run (`U*` takes all
/// of it, `W+` all the lower-case letters); otherwise the first rule fails with and without
/// `P` (the byte at `s`, if not a letter, is in neither class) and the second takes the upper-
/// case run. Either way the match ends where the two runs end.
#[inline(always)]
fn o200k_ascii_word(b: &[u8], table: &[u8], s: usize) -> Option<usize> {
    let a = ascii_word_start(b, table, s)?;
    let i = ascii_letters(b, table, ascii_letters(b, table, a, UPPER), LOWER);
    if b.get(i).is_some_and(|&c| c >= 0x80) {
        return None;
    }
    Some(i + o200k_contraction(b, table, i))
}

/// o200k: `P?U*W+C?|P?U+W*C?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`
#[inline]
pub fn o200k_end(b: &[u8], table: &[u8], s: usize) -> usize {
    if let Some(e) = o200k_ascii_word(b, table, s) {
        return e;
    }
    let (c, f, n) = at(b, table, s);
    if let Some(e) = o200k_word_end(b, table, s, c, f, n) {
        return e;
    }
    if f & NUMBER != 0 {
        return digits_end(b, table, s);
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n/]*`
    if let Some(e) = other_end(b, table, s, c, f, b"\r\n/") {
        return e;
    }
    space_end(b, table, s, false, true)
}
