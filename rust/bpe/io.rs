//! toklab's own file format for BPE: versioned, human-readable JSON.
//!
//! ```text
//! {
//!   "format": "toklab.bpe",
//!   "version": 1,
//!   "pattern": "<pre-tokenization regex>",
//!   "ignore_merges": false,
//!   "special_tokens": [{"id": 1000, "content": "<|endoftext|>"}],
//!   "metadata": {...},                 // free-form, kept as is
//!   "tokens": [                        // index = id, one per line
//!     " the",                          // UTF-8 bytes as a string
//!     {"hex": "e2"},                   // other bytes as hex
//!     ...],
//!   "merges": [                        // rank order, one per line: left, right, merged ids
//!     [116, 104, 256],
//!     ...]
//! }
//! ```
//! Loading re-derives every merged id from the token bytes and checks it against the file, so a
//! truncated or edited file fails with `Error::Corrupt` instead of encoding wrongly.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::error::Category;
use serde_json::{json, Map, Value};

use super::{Bpe, Vocab};
use crate::error::{Error, Result};
use crate::pretok::PreTokenizer;

pub const FORMAT: &str = "toklab.bpe";
pub const VERSION: u64 = 1;

fn token_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({ "hex": hex(bytes) }),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.is_empty() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// Serializes a tokenizer; `metadata` must be a JSON object (as text) or empty.
pub fn to_json(bpe: &Bpe, metadata: &str) -> Result<String> {
    let metadata: Value = if metadata.is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str(metadata).map_err(|e| Error::Config(format!("metadata: {e}")))?
    };
    let v = bpe.vocab();
    let specials: Vec<Value> = v
        .specials()
        .iter()
        .map(|(content, id)| json!({"id": id, "content": content}))
        .collect();
    let mut out = String::with_capacity(v.len() * 24);
    out.push_str("{\n");
    let field = |out: &mut String, key: &str, value: &Value| {
        out.push_str(&format!("  {}: {},\n", json!(key), value));
    };
    field(&mut out, "format", &json!(FORMAT));
    field(&mut out, "version", &json!(VERSION));
    field(&mut out, "pattern", &json!(bpe.pre_tokenizer().pattern()));
    field(&mut out, "ignore_merges", &json!(bpe.ignore_merges()));
    field(&mut out, "special_tokens", &Value::Array(specials));
    field(&mut out, "metadata", &metadata);
    out.push_str("  \"tokens\": [\n");
    for (i, t) in v.tokens().iter().enumerate() {
        out.push_str("    ");
        out.push_str(&token_json(t).to_string());
        out.push_str(if i + 1 < v.len() { ",\n" } else { "\n" });
    }
    out.push_str("  ],\n  \"merges\": [\n");
    let merges = v.merges();
    for (i, m) in merges.iter().enumerate() {
        out.push_str(&format!("    [{}, {}, {}]", m.left, m.right, m.merged));
        out.push_str(if i + 1 < merges.len() { ",\n" } else { "\n" });
    }
    out.push_str("  ]\n}\n");
    Ok(out)
}

fn corrupt(msg: impl Into<String>) -> Error {
    Error::Corrupt(msg.into())
}

/// The fields of a toklab BPE file, typed: reading it makes no JSON tree (for 200k tokens
/// and merges, that tree was most of the time of loading).
#[derive(Deserialize)]
struct File {
    format: Option<Value>,
    version: Option<Value>,
    pattern: Option<String>,
    ignore_merges: Option<bool>,
    special_tokens: Option<Vec<Special>>,
    metadata: Option<Value>,
    tokens: Option<Vec<Token>>,
    merges: Option<Vec<[u32; 3]>>,
}

#[derive(Deserialize)]
struct Special {
    id: u32,
    content: String,
}

/// A token: its bytes as a string (UTF-8) or `{"hex": "..."}`.
struct Token(Vec<u8>);

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Token;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a token: a string or {\"hex\": \"...\"}")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Token, E> {
                Ok(Token(s.as_bytes().to_vec()))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Token, A::Error> {
                let mut bytes = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    let value = map.next_value::<std::borrow::Cow<'de, str>>()?;
                    if key != "hex" || bytes.is_some() {
                        return Err(de::Error::custom(format!("a token has key {key:?}")));
                    }
                    let hex = unhex(&value)
                        .ok_or_else(|| de::Error::custom(format!("bad hex {value:?}")))?;
                    bytes = Some(hex);
                }
                bytes
                    .map(Token)
                    .ok_or_else(|| de::Error::custom("a token object without \"hex\""))
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads a tokenizer written by `to_json`; returns it and its metadata (as JSON text).
pub fn from_json(text: &str) -> Result<(Bpe, String)> {
    let file: File = serde_json::from_str(text).map_err(|e| match e.classify() {
        Category::Data => corrupt(format!("not a toklab BPE file ({e})")),
        _ => corrupt(format!("not valid JSON ({e})")),
    })?;
    match file.format.as_ref().and_then(Value::as_str) {
        Some(FORMAT) => {}
        other => {
            return Err(corrupt(format!(
                "format is {other:?}, expected {FORMAT:?}; to read a HF tokenizer.json use \
                 BPETokenizer.from_hf"
            )))
        }
    }
    match file.version.as_ref().and_then(Value::as_u64) {
        Some(VERSION) => {}
        Some(v) => {
            return Err(corrupt(format!(
                "version {v} is not supported by this toklab (it reads version {VERSION})"
            )))
        }
        None => return Err(corrupt("missing version")),
    }
    let pattern = file.pattern.ok_or_else(|| corrupt("missing pattern"))?;
    let tokens: Vec<Vec<u8>> = file
        .tokens
        .ok_or_else(|| corrupt("missing tokens"))?
        .into_iter()
        .map(|t| t.0)
        .collect();
    let merges = file.merges.ok_or_else(|| corrupt("missing merges"))?;
    let pairs: Vec<(u32, u32)> = merges.iter().map(|m| (m[0], m[1])).collect();
    let mut specials = Vec::new();
    for s in file
        .special_tokens
        .ok_or_else(|| corrupt("missing special_tokens"))?
    {
        if tokens.get(s.id as usize).map(Vec::as_slice) != Some(s.content.as_bytes()) {
            return Err(corrupt(format!(
                "special token {:?} does not match token {}",
                s.content, s.id
            )));
        }
        specials.push((s.content, s.id));
    }
    let vocab = Vocab::new(tokens, &pairs, specials)?;
    for (rank, (m, want)) in vocab.merges().iter().zip(&merges).enumerate() {
        if m.merged != want[2] {
            return Err(corrupt(format!(
                "merge {rank} makes token {}, but the file says {}",
                m.merged, want[2]
            )));
        }
    }
    let pre = PreTokenizer::new(&pattern)?;
    let metadata = file
        .metadata
        .map_or_else(|| "{}".to_string(), |m| m.to_string());
    Ok((
        Bpe::new(vocab, pre, file.ignore_merges.unwrap_or(false))?,
        metadata,
    ))
}

/// [`from_json`] of a file's bytes: an `Error::Corrupt` if they are not UTF-8.
pub fn from_json_bytes(data: &[u8]) -> Result<(Bpe, String)> {
    let text = std::str::from_utf8(data).map_err(|e| {
        corrupt(format!(
            "not a UTF-8 text file (invalid byte at {})",
            e.valid_up_to()
        ))
    })?;
    from_json(text)
}

/// The `(token bytes, rank)` lines of a `.tiktoken` file (`base64 rank` per line, blank lines
/// skipped), in file order, as Python's `base64.b64decode(token, validate=True)` and `int(rank)`
/// would read them, except that a rank must be a plain decimal below 2^32 (no sign, no
/// underscores). Anything that does not parse (non-ASCII bytes, a wrong number of fields,
/// base64 outside the standard alphabet or unpadded) is an `Error::Corrupt` naming the line.
/// Several times faster than reading the file in Python, which was most of the time of
/// loading o200k.
pub fn parse_tiktoken(data: &[u8]) -> Result<Vec<(Vec<u8>, u32)>> {
    let mut out = Vec::with_capacity(data.len() / 12);
    for (n, line) in data.split(|&b| b == b'\n').enumerate() {
        let bad = |what: &str| {
            let shown = String::from_utf8_lossy(&line[..line.len().min(60)]);
            Error::Corrupt(format!("line {}: {what}, got {shown:?}", n + 1))
        };
        if !line.is_ascii() {
            return Err(bad("not ASCII"));
        }
        let mut fields = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|f| !f.is_empty());
        let (token, rank) = match (fields.next(), fields.next(), fields.next()) {
            (None, _, _) => continue,
            (Some(token), Some(rank), None) => (token, rank),
            _ => return Err(bad("expected 'base64 rank'")),
        };
        let token = base64_decode(token).ok_or_else(|| bad("invalid base64"))?;
        let rank = std::str::from_utf8(rank)
            .ok()
            .filter(|r| r.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|r| r.parse::<u32>().ok())
            .ok_or_else(|| bad("a rank must be an integer from 0 to 2^32 - 1"))?;
        out.push((token, rank));
    }
    Ok(out)
}

/// Standard base64 (`A-Z a-z 0-9 + /`), padded with `=` to a multiple of four characters;
/// `None` for anything else. Bits left over in the last character are ignored, as Python does.
pub fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let pad = s.iter().rev().take_while(|&&c| c == b'=').count();
    if pad > 2 {
        return None;
    }
    let digits = &s[..s.len() - pad];
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= u32::from(val(c)?) << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bpe {
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        tokens.push(b"ab".to_vec());
        tokens.push(vec![0xe2, 0x82]);
        tokens.push(b"<|end|>".to_vec());
        let merges = [(u32::from(b'a'), u32::from(b'b')), (0xe2, 0x82)];
        let vocab = Vocab::new(tokens, &merges, vec![("<|end|>".into(), 258)]).expect("ok");
        Bpe::new(vocab, PreTokenizer::new("gpt2").expect("ok"), false).expect("ok")
    }

    #[test]
    fn round_trip() {
        let bpe = sample();
        let text = to_json(&bpe, r#"{"corpus": "test"}"#).expect("ok");
        assert!(text.contains(r#"{"hex":"e282"}"#));
        let (back, meta) = from_json(&text).expect("loads");
        assert_eq!(back.vocab().tokens(), bpe.vocab().tokens());
        assert_eq!(back.vocab().merges(), bpe.vocab().merges());
        assert_eq!(back.vocab().specials(), bpe.vocab().specials());
        assert_eq!(meta, r#"{"corpus":"test"}"#);
    }

    #[test]
    fn truncated_and_edited_files_fail() {
        let text = to_json(&sample(), "").expect("ok");
        for cut in [0, 10, text.len() / 2, text.len() - 3] {
            assert!(
                matches!(from_json(&text[..cut]), Err(Error::Corrupt(_))),
                "cut {cut}"
            );
        }
        let edited = text.replace("[97, 98, 256]", "[97, 98, 257]");
        assert!(matches!(from_json(&edited), Err(Error::Corrupt(_))));
        let newer = text.replace("\"version\": 1", "\"version\": 9");
        assert!(matches!(from_json(&newer), Err(Error::Corrupt(m)) if m.contains("version 9")));
    }

    #[test]
    fn tiktoken_lines() {
        let data = b"IQ== 0\r\n\n  YWI= \t 1\nYWJj 7\n\nAAAA 4294967295\n";
        let got = parse_tiktoken(data).expect("parses");
        assert_eq!(
            got,
            vec![
                (b"!".to_vec(), 0),
                (b"ab".to_vec(), 1),
                (b"abc".to_vec(), 7),
                (vec![0, 0, 0], u32::MAX)
            ]
        );
        assert_eq!(parse_tiktoken(b"").expect("empty"), vec![]);
        for (bad, line) in [
            (&b"IQ== 0\nYWI=\n"[..], "line 2"),            // no rank
            (b"IQ== 0 1\n", "line 1"),                     // three fields
            (b"IQ= 0\n", "line 1"),                        // unpadded
            (b"I*== 0\n", "line 1"),                       // outside the alphabet
            (b"I=Q= 0\n", "line 1"),                       // padding inside
            (b"IQ== -1\n", "line 1"),                      // negative
            (b"IQ== +1\n", "line 1"),                      // a sign
            (b"IQ== 1_0\n", "line 1"),                     // underscores
            (b"IQ== 4294967296\n", "line 1"),              // too large
            ("IQ== 0\n\u{e9}== 1\n".as_bytes(), "line 2"), // not ASCII
        ] {
            match parse_tiktoken(bad) {
                Err(Error::Corrupt(m)) => assert!(m.starts_with(line), "{m}"),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bad)),
            }
        }
    }

    #[test]
    fn base64_round_trips() {
        let mut rng = crate::testing::Rng(5);
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
            // Encoded by hand, the standard way.
            const ALPHABET: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut text = Vec::new();
            for chunk in bytes.chunks(3) {
                let mut acc = 0u32;
                for (i, &b) in chunk.iter().enumerate() {
                    acc |= u32::from(b) << (16 - 8 * i);
                }
                for i in 0..4 {
                    text.push(if i <= chunk.len() {
                        ALPHABET[(acc >> (18 - 6 * i) & 63) as usize]
                    } else {
                        b'='
                    });
                }
            }
            assert_eq!(base64_decode(&text), Some(bytes));
        }
        // Leftover bits are ignored, as Python does ("IR==" and "IQ==" are both "!").
        assert_eq!(base64_decode(b"IR=="), Some(b"!".to_vec()));
        assert_eq!(base64_decode(b"===="), None);
    }
}
