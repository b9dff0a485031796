//! One error type for the whole core. Every variant maps to a typed Python exception (a subclass
//! of `ValueError`) in `py/`, so nothing that a user can feed in reaches Python as a panic.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pre-tokenization pattern does not compile.
    #[error("invalid pre-tokenization pattern {pattern:?}: {reason}")]
    Pattern { pattern: String, reason: String },

    /// The regex engine gave up on a text (fancy-regex's backtracking limit).
    #[error("pre-tokenization failed: {0}")]
    PreTokenize(String),

    /// A file that is not valid UTF-8 under `errors="strict"`.
    #[error(
        "{path}: invalid UTF-8 at byte {offset}; pass errors=\"replace\" to substitute U+FFFD for \
         invalid bytes"
    )]
    InvalidUtf8 { path: PathBuf, offset: u64 },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Training options that cannot be satisfied (vocab too small, bad special tokens, ...).
    #[error("{0}")]
    Config(String),

    /// A per-byte signal that does not fit its text: wrong length, NaN or infinite values.
    #[error("{0}")]
    Signal(String),

    /// The training corpus holds no text at all.
    #[error("the training corpus is empty: no text was seen")]
    EmptyCorpus,

    /// `decode` got an id outside the vocabulary.
    #[error("unknown token id {id}: the vocabulary has ids 0 to {} (vocab_size {vocab_size})", vocab_size.saturating_sub(1))]
    UnknownId { id: u64, vocab_size: usize },

    /// Text contains a special token that the caller did not allow.
    #[error(
        "Encountered text corresponding to disallowed special token {token:?}.\nIf you want this \
         text to be encoded as a special token, pass it to `allowed_special`, e.g. \
         `allowed_special={{{token:?}, ...}}`.\nIf you want this text to be encoded as normal \
         text, disable the check for this token by passing `disallowed_special=(tok.special_tokens_set \
         - {{{token:?}}})`.\nTo disable this check for all special tokens, pass \
         `disallowed_special=()`."
    )]
    DisallowedSpecial { token: String },

    /// A saved tokenizer that cannot be read back: truncated, edited, wrong version.
    #[error("corrupt tokenizer file: {0}")]
    Corrupt(String),

    /// A token stream that no encoder produced: corrupted, truncated or from another model.
    #[error("corrupt token stream: {0}")]
    CorruptTokens(String),
}

pub type Result<T> = std::result::Result<T, Error>;
