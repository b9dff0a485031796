//! toklab's core: tight integer loops and exact combinatorics for tokenizer research.
//!
//! This crate builds and tests without Python (`cargo test`); the bindings in `py/` are compiled
//! only with the `python` feature, and only wrap what is here.
//!
//! - [`pretok`]: pre-tokenization with tiktoken's named patterns or any regex.
//! - [`count`]: counting pieces of texts and files as mergeable partial results.
//! - [`bpe`]: byte-level BPE training, encoding, decoding and its file format.
//! - [`bytespan`]: ByteSpan's span finding, vocabulary and longest-match inference.
//! - [`stochastok`]: StochasTok's split table and exact, fast stochastic expansion.

pub mod arith;
pub mod bpe;
pub mod byteprobs;
pub mod bytespan;
pub mod count;
pub mod equalinfo;
pub mod error;
pub mod mem;
pub mod par;
pub mod pretok;
pub mod stochastok;
#[cfg(test)]
mod testing;
pub mod utf;

#[cfg(feature = "python")]
mod py;

pub use error::{Error, Result};
