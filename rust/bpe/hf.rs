//! HF tokenizers' `tokenizer.json`, for byte-level BPE: its byte alphabet, and reading the
//! model's vocabulary and merges (most of such a file) without building a JSON tree.
//!
//! HF stores each token as a string in which every byte stands for a printable character
//! (GPT-2's `bytes_to_unicode`): the printable Latin-1 bytes for themselves, the other 68
//! bytes, in byte order, for U+0100 to U+0143. `python/toklab/_hf.py` keeps the readable
//! Python version, which the tests compare with this one.
//!
//! Reading is split in two so that the checks on the small parts of the file (pre-tokenizer,
//! normalizer, added tokens) stay in Python: [`split_hf`] returns the file without
//! `model.vocab` and `model.merges`, as JSON text, and those two as an [`HfModel`];
//! [`HfModel::build`] then makes the tokenizer.

use std::fmt;

use rustc_hash::FxHashMap;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::vocab::{fill_reserved, import_ids};
use super::{Bpe, Vocab};
use crate::error::{Error, Result};
use crate::pretok::PreTokenizer;

/// Whether byte `b` stands for itself (printable Latin-1: `!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`).
const fn keeps(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The character that stands for each byte.
const BYTE_CHARS: [char; 256] = {
    let mut chars = ['\0'; 256];
    let mut extra = 0u32;
    let mut b = 0;
    while b < 256 {
        let c = if keeps(b as u8) {
            b as u32
        } else {
            extra += 1;
            255 + extra
        };
        chars[b] = match char::from_u32(c) {
            Some(c) => c,
            None => panic!("below U+0144"),
        };
        b += 1;
    }
    chars
};

/// The first code point past the alphabet.
const ALPHABET_END: usize = 0x144;

/// The byte of each character below [`ALPHABET_END`] (`u16::MAX`: not in the alphabet).
const CHAR_BYTES: [u16; ALPHABET_END] = {
    let mut bytes = [u16::MAX; ALPHABET_END];
    let mut b = 0;
    while b < 256 {
        bytes[BYTE_CHARS[b] as usize] = b as u16;
        b += 1;
    }
    bytes
};

/// A token's bytes as HF's byte-level string.
pub fn token_to_hf(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| BYTE_CHARS[b as usize]).collect()
}

/// The bytes of a byte-level token string; `None` if a character is outside the alphabet.
pub fn token_from_hf(text: &str) -> Option<Vec<u8>> {
    text.chars()
        .map(|c| match CHAR_BYTES.get(c as usize) {
            Some(&b) if b != u16::MAX => Some(b as u8),
            _ => None,
        })
        .collect()
}

/// Each special token's text by id (`None` for the other ids).
fn special_texts(vocab: &Vocab) -> Vec<Option<&str>> {
    let mut texts = vec![None; vocab.tokens().len()];
    for (text, id) in vocab.specials() {
        if let Some(slot) = texts.get_mut(*id as usize) {
            *slot = Some(text.as_str());
        }
    }
    texts
}

/// Every token's name in a `tokenizer.json`'s vocabulary, by id: its bytes in HF's byte-level
/// alphabet, but a special token's own text (as HF looks up added tokens: under any other
/// name, HF would give the special token a new id).
pub fn hf_names(vocab: &Vocab) -> Vec<String> {
    let specials = special_texts(vocab);
    vocab
        .tokens()
        .iter()
        .zip(specials)
        .map(|(t, special)| special.map_or_else(|| token_to_hf(t), str::to_string))
        .collect()
}

/// `"vocab": {...}, "merges": [...]`: the members of a `tokenizer.json`'s BPE model that hold
/// `vocab`'s tokens (named as [`hf_names`] says, by id) and merges (`["left", "right"]`, by
/// rank), as JSON text (what `BPETokenizer.save_hf` writes most of).
pub fn tables_json(vocab: &Vocab) -> String {
    let tokens = vocab.tokens();
    let specials = special_texts(vocab);
    let mut out: Vec<u8> = Vec::with_capacity(tokens.iter().map(|t| 6 * t.len() + 16).sum());
    // Where each token's quoted string is in `out`, for the merges to copy.
    let mut quoted = Vec::with_capacity(tokens.len());
    let mut utf8 = [0u8; 4];
    out.extend_from_slice(b"\"vocab\": {");
    for (id, t) in tokens.iter().enumerate() {
        if id > 0 {
            out.extend_from_slice(b", ");
        }
        let start = out.len();
        if let Some(text) = specials[id] {
            // Any text: escaped as JSON needs.
            out.extend_from_slice(Value::String(text.to_string()).to_string().as_bytes());
            quoted.push(start..out.len());
            out.extend_from_slice(format!(": {id}").as_bytes());
            continue;
        }
        out.push(b'"');
        for &b in t {
            // The alphabet has no control characters: only these two need escaping in JSON.
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.extend_from_slice(BYTE_CHARS[b as usize].encode_utf8(&mut utf8).as_bytes());
        }
        out.push(b'"');
        quoted.push(start..out.len());
        out.extend_from_slice(format!(": {id}").as_bytes());
    }
    out.extend_from_slice(b"}, \"merges\": [");
    for (rank, m) in vocab.merges().iter().enumerate() {
        if rank > 0 {
            out.extend_from_slice(b", ");
        }
        out.push(b'[');
        out.extend_from_within(quoted[m.left as usize].clone());
        out.extend_from_slice(b", ");
        out.extend_from_within(quoted[m.right as usize].clone());
        out.push(b']');
    }
    out.push(b']');
    // Only whole characters were written.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A BPE model's vocabulary and merges, as read from a `tokenizer.json`.
#[derive(Debug, Default)]
pub struct HfModel {
    /// `model.vocab`, in file order: token string and id (`None`: the file has none).
    pub vocab: Option<Vec<(String, u64)>>,
    /// `model.merges`, in rank order (`None`: the file has none).
    pub merges: Option<Vec<(String, String)>>,
}

/// Reads a `tokenizer.json` (its bytes): the file without `model.vocab` and `model.merges` (JSON text; the
/// other fields of `model` stay), and those two. Anything that is not UTF-8 JSON, or whose top level
/// is not an object, or whose vocabulary or merges have the wrong shape, is an
/// `Error::Corrupt`.
pub fn split_hf(data: &[u8]) -> Result<(String, HfModel)> {
    let text = std::str::from_utf8(data).map_err(|e| {
        Error::Corrupt(format!(
            "not a valid tokenizer.json: not UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let doc = de.deserialize_map(DocVisitor).and_then(|doc| {
        de.end()?;
        Ok(doc)
    });
    let (mut rest, model) =
        doc.map_err(|e| Error::Corrupt(format!("not a valid tokenizer.json: {e}")))?;
    let model = match model {
        Some((model_rest, model)) => {
            rest.insert("model".into(), Value::Object(model_rest));
            model
        }
        None => HfModel::default(),
    };
    Ok((Value::Object(rest).to_string(), model))
}

/// The top level: `model` read by [`ModelVisitor`], every other field kept as a JSON value.
struct DocVisitor;

type Doc = (Map<String, Value>, Option<(Map<String, Value>, HfModel)>);

impl<'de> Visitor<'de> for DocVisitor {
    type Value = Doc;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object at the top level")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Doc, A::Error> {
        let (mut rest, mut model) = (Map::new(), None);
        while let Some(key) = map.next_key::<String>()? {
            if key == "model" {
                model = map.next_value_seed(OptionalModel)?;
            } else {
                let value = map.next_value::<Value>()?;
                rest.insert(key, value);
            }
        }
        Ok((rest, model))
    }
}

/// `model`: an object (see [`ModelVisitor`]) or null.
struct OptionalModel;

impl<'de> DeserializeSeed<'de> for OptionalModel {
    type Value = Option<(Map<String, Value>, HfModel)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        struct Opt;
        impl<'de> Visitor<'de> for Opt {
            type Value = Option<(Map<String, Value>, HfModel)>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a model object or null")
            }
            fn visit_none<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> std::result::Result<Self::Value, D::Error> {
                d.deserialize_map(ModelVisitor).map(Some)
            }
        }
        d.deserialize_option(Opt)
    }
}

/// `model`'s fields: `vocab` and `merges` typed, the others kept as JSON values.
struct ModelVisitor;

impl<'de> Visitor<'de> for ModelVisitor {
    type Value = (Map<String, Value>, HfModel);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a model object")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let (mut rest, mut model) = (Map::new(), HfModel::default());
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "vocab" => model.vocab = Some(map.next_value_seed(VocabSeed)?),
                "merges" => model.merges = Some(map.next_value_seed(MergesSeed)?),
                _ => {
                    let value = map.next_value::<Value>()?;
                    rest.insert(key, value);
                }
            }
        }
        Ok((rest, model))
    }
}

/// `vocab`: `{token: id}`, kept in file order.
struct VocabSeed;

impl<'de> DeserializeSeed<'de> for VocabSeed {
    type Value = Vec<(String, u64)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for VocabSeed {
    type Value = Vec<(String, u64)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a vocab object of token: id")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut vocab = Vec::with_capacity(map.size_hint().unwrap_or(1 << 16));
        while let Some((token, id)) = map.next_entry::<String, u64>()? {
            vocab.push((token, id));
        }
        Ok(vocab)
    }
}

/// `merges`: each `"left right"` (older files) or `["left", "right"]`.
struct MergesSeed;

impl<'de> DeserializeSeed<'de> for MergesSeed {
    type Value = Vec<(String, String)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for MergesSeed {
    type Value = Vec<(String, String)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of merges")
    }

    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut merges = Vec::with_capacity(seq.size_hint().unwrap_or(1 << 16));
        while let Some(m) = seq.next_element_seed(MergeSeed)? {
            merges.push(m);
        }
        Ok(merges)
    }
}

struct MergeSeed;

impl<'de> DeserializeSeed<'de> for MergeSeed {
    type Value = (String, String);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MergeSeed {
    type Value = (String, String);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a merge: \"left right\" or [\"left\", \"right\"]")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Self::Value, E> {
        // Byte-level tokens never hold a space (it is `Ġ`), so there is exactly one.
        let mut parts = s.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(l), Some(r), None) if !l.is_empty() && !r.is_empty() => {
                Ok((l.to_string(), r.to_string()))
            }
            _ => Err(E::custom(format!(
                "merge {s:?} is not two tokens separated by one space"
            ))),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let pair = (seq.next_element::<String>()?, seq.next_element::<String>()?);
        let (Some(l), Some(r)) = pair else {
            return Err(de::Error::custom("a merge list has fewer than two tokens"));
        };
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("a merge list has more than two tokens"));
        }
        Ok((l, r))
    }
}

impl HfModel {
    /// The tokenizer of this model: `added` are the file's added tokens (`(content, id)`, which
    /// become special tokens and take their ids' places in `vocab`), `pattern` the
    /// pre-tokenizer's regex. Ids that no token has become special tokens
    /// `<|reserved_{id}|>`; they are returned too.
    ///
    /// Errors: `Error::Config` for a token outside the byte-level alphabet (not a byte-level
    /// BPE); `Error::Corrupt` for a missing vocabulary or merge list, an id above 2^32 or given
    /// twice, a merge of tokens not in the vocabulary, and whatever [`Vocab::new`] rejects.
    pub fn build(
        &self,
        added: &[(String, u32)],
        pattern: &str,
        ignore_merges: bool,
    ) -> Result<(Bpe, Vec<u32>)> {
        let corrupt = |msg: String| Error::Corrupt(format!("not a valid tokenizer.json: {msg}"));
        let vocab = self
            .vocab
            .as_ref()
            .ok_or_else(|| corrupt("the BPE model has no vocab".into()))?;
        let merges = self
            .merges
            .as_ref()
            .ok_or_else(|| corrupt("the BPE model has no merges".into()))?;
        let top = vocab
            .iter()
            .map(|&(_, id)| id)
            .chain(added.iter().map(|&(_, id)| u64::from(id)))
            .max();
        let n = import_ids(top, vocab.len() + added.len()).map_err(corrupt)?;
        let mut tokens: Vec<Option<Vec<u8>>> = vec![None; n];
        let mut special = vec![false; n];
        for (content, id) in added {
            tokens[*id as usize] = Some(content.as_bytes().to_vec());
            special[*id as usize] = true;
        }
        let mut ids: FxHashMap<&str, u32> = FxHashMap::default();
        ids.reserve(vocab.len());
        for (text, id) in vocab {
            let id = *id as usize;
            ids.insert(text, id as u32);
            if special[id] {
                continue;
            }
            let bytes = token_from_hf(text).ok_or_else(|| {
                Error::Config(format!(
                    "unsupported HF tokenizer: token {text:?} is not in the byte-level alphabet; \
                     toklab imports byte-level BPE only"
                ))
            })?;
            if let Some(other) = tokens[id].replace(bytes) {
                return Err(corrupt(format!(
                    "id {id} is given to two tokens, {:?} and {text:?}",
                    token_to_hf(&other)
                )));
            }
        }
        let mut specials = added.to_vec();
        let (tokens, reserved) = fill_reserved(tokens, &mut specials);
        let mut pairs = Vec::with_capacity(merges.len());
        for (rank, (left, right)) in merges.iter().enumerate() {
            match (ids.get(left.as_str()), ids.get(right.as_str())) {
                (Some(&l), Some(&r)) => pairs.push((l, r)),
                _ => {
                    return Err(corrupt(format!(
                        "merge {rank} ({left:?}, {right:?}) names a token not in the vocabulary"
                    )))
                }
            }
        }
        let vocab = Vocab::new(tokens, &pairs, specials)?;
        Ok((
            Bpe::new(vocab, PreTokenizer::new(pattern)?, ignore_merges)?,
            reserved,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alphabet_is_gpt2s() {
        // GPT-2's table: the 188 printable bytes stand for themselves; the rest follow U+00FF.
        assert_eq!((0..=255u8).filter(|&b| keeps(b)).count(), 188);
        assert_eq!(BYTE_CHARS[b'!' as usize], '!');
        assert_eq!(BYTE_CHARS[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_CHARS[b'\n' as usize], 'Ċ');
        assert_eq!(BYTE_CHARS[0], 'Ā');
        assert_eq!(BYTE_CHARS[0xAD], 'Ń');
        let mut seen: Vec<char> = BYTE_CHARS.to_vec();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 256);
        for b in 0..=255u8 {
            assert_eq!(token_from_hf(&token_to_hf(&[b])), Some(vec![b]));
        }
        assert_eq!(token_from_hf("Ġthe"), Some(b" the".to_vec()));
        assert_eq!(token_from_hf(" the"), None); // a raw space is not in the alphabet
        assert_eq!(token_from_hf("Ŕ"), None); // U+0154, past the alphabet
        assert_eq!(token_from_hf(""), Some(vec![]));
    }

    fn tiny(merges: &str, vocab: &str, added: &str) -> String {
        format!(
            r#"{{"version": "1.0", "added_tokens": {added}, "normalizer": null,
               "model": {{"type": "BPE", "dropout": null, "vocab": {vocab}, "merges": {merges}}}}}"#
        )
    }

    fn bytes_vocab() -> String {
        let entries: Vec<String> = (0..=255u8)
            .map(|b| format!("{:?}: {b}", token_to_hf(&[b])))
            .collect();
        entries.join(", ")
    }

    #[test]
    fn reads_both_merge_styles_and_keeps_the_rest() {
        let vocab = format!("{{{}, \"ab\": 256, \"abc\": 257}}", bytes_vocab());
        for merges in [r#"["a b", "ab c"]"#, r#"[["a", "b"], ["ab", "c"]]"#] {
            let (rest, model) = split_hf(tiny(merges, &vocab, "[]").as_bytes()).expect("valid");
            let rest: Value = serde_json::from_str(&rest).expect("json");
            assert_eq!(rest["model"]["type"], "BPE");
            assert!(rest["model"].get("vocab").is_none());
            assert!(rest["model"].get("merges").is_none());
            assert_eq!(rest["version"], "1.0");
            let (bpe, reserved) = model.build(&[], r"\S+|\s+", false).expect("builds");
            assert!(reserved.is_empty());
            assert_eq!(
                bpe.encode_ordinary("abc ab").expect("ok"),
                vec![257, 32, 256]
            );
        }
    }

    #[test]
    fn rejects_what_is_wrong() {
        let vocab = format!("{{{}, \"ab\": 256}}", bytes_vocab());
        let pattern = r"\S+|\s+";
        let corrupt = |text: &str| match split_hf(text.as_bytes()) {
            Err(Error::Corrupt(msg)) => msg,
            other => panic!("{text}: {other:?}"),
        };
        for bad in [
            "[1, 2]",
            "{",
            "{} x",
            r#"{"model": 3}"#,
            &tiny(r#"["a  b"]"#, &vocab, "[]"),
            &tiny(r#"["ab"]"#, &vocab, "[]"),
            &tiny(r#"[["a"]]"#, &vocab, "[]"),
            &tiny(r#"[["a", "b", "c"]]"#, &vocab, "[]"),
            &tiny("[]", r#"{"a": -1}"#, "[]"),
            &tiny("[]", r#"{"a": "1"}"#, "[]"),
        ] {
            assert!(
                corrupt(bad).starts_with("not a valid tokenizer.json"),
                "{bad}"
            );
        }
        let build = |merges: &str, vocab: &str| {
            let (_, model) = split_hf(tiny(merges, vocab, "[]").as_bytes()).expect("valid JSON");
            model.build(&[], pattern, false).map(|_| ())
        };
        assert!(
            matches!(build(r#"["a x"]"#, &vocab), Err(Error::Corrupt(m)) if m.contains("merge 0"))
        );
        let two = format!("{{{}, \"ab\": 256, \"ba\": 256}}", bytes_vocab());
        assert!(matches!(build("[]", &two), Err(Error::Corrupt(m)) if m.contains("id 256")));
        let raw_space = format!("{{{}, \" a\": 256}}", bytes_vocab());
        assert!(
            matches!(build("[]", &raw_space), Err(Error::Config(m)) if m.contains("byte-level"))
        );
        let far = format!("{{{}, \"ab\": 99999999}}", bytes_vocab());
        assert!(matches!(build("[]", &far), Err(Error::Corrupt(m)) if m.contains("run to")));
        let huge = format!("{{{}, \"ab\": 4294967296}}", bytes_vocab());
        assert!(matches!(build("[]", &huge), Err(Error::Corrupt(m)) if m.contains("2^32")));
        let (_, none) = split_hf(br#"{"model": null}"#).expect("valid");
        assert!(
            matches!(none.build(&[], pattern, false), Err(Error::Corrupt(m)) if m.contains("no vocab"))
        );
    }

    #[test]
    fn gaps_become_reserved_and_added_tokens_take_their_ids() {
        let vocab = format!("{{{}, \"ab\": 258, \"<|end|>\": 256}}", bytes_vocab());
        let added = r#"[{"id": 256, "content": "<|end|>"}]"#;
        let (_, model) = split_hf(tiny(r#"["a b"]"#, &vocab, added).as_bytes()).expect("valid");
        let (bpe, reserved) = model
            .build(&[("<|end|>".into(), 256)], r"\S+|\s+", false)
            .expect("builds");
        assert_eq!(reserved, vec![257]);
        assert_eq!(bpe.vocab().token_bytes(257), Some(&b"<|reserved_257|>"[..]));
        assert_eq!(bpe.vocab().token_bytes(256), Some(&b"<|end|>"[..]));
        assert_eq!(bpe.encode_ordinary("ab").expect("ok"), vec![258]);
    }
}
