//! Unicode character classes for the hand-written pre-tokenizers, taken from `regex-syntax` (the
//! parser behind fancy-regex and the regex crate), so that `\p{L}` here is exactly `\p{L}` there.

use std::sync::OnceLock;

use regex_syntax::hir::{Class, HirKind};

/// `\p{L}`
pub const LETTER: u8 = 1;
/// `\p{N}`
pub const NUMBER: u8 = 2;
/// `\s` (Unicode White_Space)
pub const SPACE: u8 = 4;
/// `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`, o200k's "upper" class
pub const UPPER: u8 = 8;
/// `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`, o200k's "lower" class
pub const LOWER: u8 = 16;
/// Past the end of the text: in no class.
pub const END: u8 = 128;

const CLASSES: [(&str, u8); 5] = [
    (r"\p{L}", LETTER),
    (r"\p{N}", NUMBER),
    (r"\s", SPACE),
    (r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", UPPER),
    (r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]", LOWER),
];

/// One byte of class flags per code point (1.1 MB, built once on first use). `None` only if
/// regex-syntax ever stopped returning plain classes for these patterns; the pre-tokenizer then
/// falls back to the regex engine.
pub fn table() -> Option<&'static [u8]> {
    static TABLE: OnceLock<Option<Box<[u8]>>> = OnceLock::new();
    TABLE.get_or_init(build).as_deref()
}

fn build() -> Option<Box<[u8]>> {
    let mut table = vec![0u8; 0x11_0000].into_boxed_slice();
    for (pattern, flag) in CLASSES {
        let hir = regex_syntax::parse(pattern).ok()?;
        let HirKind::Class(Class::Unicode(class)) = hir.kind() else {
            return None;
        };
        for range in class.ranges() {
            for c in u32::from(range.start())..=u32::from(range.end()) {
                table[c as usize] |= flag;
            }
        }
    }
    Some(table)
}

/// The characters that `(?i)x` matches, for an ASCII letter `x` (e.g. `s` -> `s`, `S`, `ſ`).
/// Used by the tests to check the case folds that `fast.rs` hard-codes.
#[cfg(test)]
pub fn case_insensitive(letter: char) -> Vec<char> {
    let Ok(hir) = regex_syntax::parse(&format!("(?i){letter}")) else {
        return vec![letter];
    };
    match hir.kind() {
        HirKind::Class(Class::Unicode(class)) => class
            .ranges()
            .iter()
            .flat_map(|r| r.start()..=r.end())
            .collect(),
        _ => vec![letter],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_look_right() {
        let t = table().expect("builds");
        let f = |c: char| t[c as usize];
        assert_eq!(f('a'), LETTER | LOWER);
        assert_eq!(f('A'), LETTER | UPPER);
        assert_eq!(f('7'), NUMBER);
        assert_eq!(f(' '), SPACE);
        assert_eq!(f('\u{3000}'), SPACE);
        assert_eq!(f('!'), 0);
        assert_eq!(f('\u{301}'), UPPER | LOWER); // combining acute: \p{M}
        assert_eq!(f('中'), LETTER | UPPER | LOWER); // Lo
    }

    /// The hand-written contraction matchers assume these case folds.
    #[test]
    fn contraction_letters_fold_as_assumed() {
        let mut s = case_insensitive('s');
        s.sort_unstable();
        assert_eq!(s, ['S', 's', 'ſ']);
        for c in ['d', 'm', 't', 'l', 'v', 'e', 'r'] {
            let mut got = case_insensitive(c);
            got.sort_unstable();
            assert_eq!(got, [c.to_ascii_uppercase(), c], "{c}");
        }
    }
}
