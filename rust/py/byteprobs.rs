//! Bindings for the tokenizer side of exact byte-level probabilities (`toklab.byteprobs` runs
//! the language model and mixes the probabilities; these walk the vocabulary).

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::{to_py, PyBpe};
use crate::byteprobs::{covers, enumerate_states_after, Canonical, VocabTrie};

fn ids_arg(ids: Vec<i64>, vocab_size: usize) -> Vec<u32> {
    // Ids out of range map to u32::MAX, which no check accepts.
    ids.into_iter()
        .map(|i| {
            u32::try_from(i)
                .ok()
                .filter(|&i| (i as usize) < vocab_size)
                .unwrap_or(u32::MAX)
        })
        .collect()
}

/// The vocabulary as a byte trie whose subtrees are ranges of one token order.
#[pyclass(frozen, module = "toklab._core", name = "VocabTrie")]
pub struct PyVocabTrie {
    inner: VocabTrie,
}

impl PyVocabTrie {
    /// `n` if it is one of the trie's nodes, else an `IndexError`.
    fn checked(&self, n: u32) -> PyResult<u32> {
        if (n as usize) < self.inner.num_nodes() {
            Ok(n)
        } else {
            Err(pyo3::exceptions::PyIndexError::new_err(format!(
                "node {n} is out of range: the trie has {} nodes",
                self.inner.num_nodes()
            )))
        }
    }
}

#[pymethods]
impl PyVocabTrie {
    /// `tokens[id]`: bytes, or `None` for ids left out (special tokens).
    #[new]
    fn new(py: Python<'_>, tokens: Vec<Option<Vec<u8>>>) -> PyResult<Self> {
        py.detach(|| {
            let refs: Vec<Option<&[u8]>> = tokens.iter().map(|t| t.as_deref()).collect();
            VocabTrie::new(&refs)
        })
        .map(|inner| Self { inner })
        .map_err(to_py)
    }

    /// Token ids sorted by their bytes (little-endian uint32).
    fn order<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let order = self.inner.order();
        PyBytes::new_with(py, order.len() * 4, |buf| {
            for (dst, &id) in buf.chunks_exact_mut(4).zip(order) {
                dst.copy_from_slice(&id.to_le_bytes());
            }
            Ok(())
        })
        .expect("fills")
    }

    #[getter]
    fn longest(&self) -> usize {
        self.inner.longest()
    }

    #[getter]
    fn num_nodes(&self) -> usize {
        self.inner.num_nodes()
    }

    /// `(start, here, end)` of node `n`: its tokens are `order[start:end]`, those equal to its
    /// string `order[start:here]`.
    fn node(&self, n: u32) -> PyResult<(u32, u32, u32)> {
        let node = self.inner.node(self.checked(n)?);
        Ok((node.start, node.here, node.end))
    }

    /// The bytes of node `n`'s children and where each child's range starts, in byte order.
    fn children<'py>(&self, py: Python<'py>, n: u32) -> PyResult<(Bound<'py, PyBytes>, Vec<u32>)> {
        let edges = self.inner.edges(self.checked(n)?);
        let bytes: Vec<u8> = edges.iter().map(|e| e.0).collect();
        let starts = edges.iter().map(|e| self.inner.node(e.1).start).collect();
        Ok((PyBytes::new(py, &bytes), starts))
    }

    /// The node of `s`, or `None` if no token starts with it.
    fn walk(&self, s: &[u8]) -> Option<u32> {
        self.inner.walk(s)
    }

    /// `(token, length)` for every token that is a prefix of `s`.
    fn prefixes_of(&self, s: &[u8]) -> Vec<(u32, u32)> {
        self.inner.prefixes_of(s)
    }
}

/// A BPE tokenizer's canonical encodings, decided from its merge ranks.
#[pyclass(frozen, module = "toklab._core", name = "Canonical")]
pub struct PyCanonical {
    inner: Canonical,
}

#[pymethods]
impl PyCanonical {
    #[new]
    fn new(py: Python<'_>, bpe: &PyBpe) -> Self {
        let inner = py.detach(|| Canonical::new(&bpe.inner));
        Self { inner }
    }

    /// Whether `encode_bytes(decode(ids)) == ids`.
    fn is_canonical(&self, py: Python<'_>, ids: Vec<i64>) -> bool {
        let ids = ids_arg(ids, self.inner.bpe().vocab().len());
        py.detach(|| self.inner.is_canonical(&ids))
    }

    /// Whether BPE encodes the bytes of `left` then `right`, as one piece, as those two tokens.
    fn valid_pair(&self, left: i64, right: i64) -> bool {
        let v = ids_arg(vec![left, right], self.inner.bpe().vocab().len());
        v.iter().all(|&t| self.inner.is_whole(t)) && self.inner.valid_pair(v[0], v[1])
    }

    /// Whether BPE encodes the token's bytes alone as the token.
    fn is_whole(&self, id: i64) -> bool {
        let v = ids_arg(vec![id], self.inner.bpe().vocab().len());
        self.inner.is_whole(v[0])
    }

    /// Where the tail of `ids` that decides the canonicity of its extensions starts.
    fn tail_start(&self, py: Python<'_>, ids: Vec<i64>) -> usize {
        let ids = ids_arg(ids, self.inner.bpe().vocab().len());
        py.detach(|| self.inner.tail_start(&ids))
    }

    /// Whether `ids` may start the encoding of a longer text (see `Canonical::is_viable`).
    fn is_viable(&self, py: Python<'_>, ids: Vec<i64>) -> bool {
        let ids = ids_arg(ids, self.inner.bpe().vocab().len());
        py.detach(|| self.inner.is_viable(&ids))
    }

    /// For each candidate, whether `ids + [candidate]` is canonical (with `viable`: may start
    /// a longer text's encoding), given that `ids` may (as bytes of 0 and 1).
    #[pyo3(signature = (ids, candidates, viable=false))]
    fn extensions<'py>(
        &self,
        py: Python<'py>,
        ids: Vec<i64>,
        candidates: &Bound<'py, PyAny>,
        viable: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let n = self.inner.bpe().vocab().len();
        // An int64 numpy array crosses as a buffer (a vocabulary's worth of candidates); any
        // other sequence of ints as a list.
        let candidates = match pyo3::buffer::PyBuffer::<i64>::get(candidates) {
            Ok(buf) => buf.to_vec(py)?,
            Err(_) => candidates.extract::<Vec<i64>>()?,
        };
        let (ids, candidates) = (ids_arg(ids, n), ids_arg(candidates, n));
        let ok = py.detach(|| {
            if viable {
                self.inner.viable_extensions(&ids, &candidates)
            } else {
                self.inner.extensions(&ids, &candidates)
            }
        });
        let bytes: Vec<u8> = ok.into_iter().map(u8::from).collect();
        Ok(PyBytes::new(py, &bytes))
    }
}

/// Every state at positions `0..=last` of `x`: `(parent, token, pos, tail_len)` per state
/// (state 0: the empty sequence, or the tokens `before` the text). `canonical`: canonical mode.
/// More than `max_states` states raises `ConfigError`.
#[pyfunction]
#[pyo3(signature = (trie, canonical, x, last, max_states, before=Vec::new()))]
#[allow(clippy::type_complexity)]
fn byte_states(
    py: Python<'_>,
    trie: &PyVocabTrie,
    canonical: Option<&PyCanonical>,
    x: &[u8],
    last: usize,
    max_states: usize,
    before: Vec<i64>,
) -> PyResult<(Vec<u32>, Vec<u32>, Vec<u32>, Vec<u32>)> {
    let n = canonical.map_or(usize::MAX, |c| c.inner.bpe().vocab().len());
    let before = ids_arg(before, n);
    let st = py
        .detach(|| {
            enumerate_states_after(
                &trie.inner,
                canonical.map(|c| &c.inner),
                &before,
                x,
                last,
                max_states,
            )
        })
        .map_err(to_py)?;
    Ok((st.parent, st.token, st.pos, st.tail_len))
}

/// Every cover of `x`, as token sequences, sorted.
#[pyfunction]
#[pyo3(signature = (trie, canonical, x, max_states))]
fn byte_covers(
    py: Python<'_>,
    trie: &PyVocabTrie,
    canonical: Option<&PyCanonical>,
    x: &[u8],
    max_states: usize,
) -> PyResult<Vec<Vec<u32>>> {
    py.detach(|| covers(&trie.inner, canonical.map(|c| &c.inner), x, max_states))
        .map_err(to_py)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyVocabTrie>()?;
    m.add_class::<PyCanonical>()?;
    m.add_function(wrap_pyfunction!(byte_states, m)?)?;
    m.add_function(wrap_pyfunction!(byte_covers, m)?)?;
    Ok(())
}
