//! Python bindings (`toklab._core`): wrappers only. Policy, defaults and error messages that are
//! not about the core live in `python/toklab/`.
//!
//! Conventions: every call that takes time runs with the GIL released (`py.detach`); token ids
//! cross the boundary as little-endian `u32` bytes (out: an `Ids` object lending the encoder's
//! own memory through the buffer protocol, or a `bytearray`, which numpy wraps without a copy;
//! in: any bytes-like); core errors become the exception classes of `toklab.errors`, all
//! subclasses of `ValueError`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyByteArray, PyBytes, PyList, PyString};

use crate::bpe::train::{train, train_owned, TrainConfig};
use crate::bpe::{hf, io, BatchRun, Bpe, Vocab};
use crate::bytespan::{Constraint, SpanCounts, SpanVocab};
use crate::count::{Counter, Utf8Errors, WordCounts};
use crate::error::Error;
use crate::pretok::PreTokenizer;
use crate::stochastok::{Mode, Options, SplitTable};

mod byteprobs;
mod coding;
mod text;

use text::Utf8Text;

/// Characters of a large text converted to UTF-8 at a time where it is encoded in parts (at
/// most 256 KiB of UTF-8: the parts stay in the second-level cache).
const TEXT_PART: usize = 64 << 10;

/// Raises the `toklab.errors` class called `name`.
pub(crate) fn raise(name: &str, msg: String) -> PyErr {
    Python::attach(|py| {
        match py
            .import("toklab.errors")
            .and_then(|m| m.getattr(name))
            .and_then(|cls| cls.call1((msg.clone(),)))
        {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        }
    })
}

pub(crate) fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::Pattern { .. } | Error::PreTokenize(_) => raise("PatternError", msg),
        Error::InvalidUtf8 { .. } | Error::Signal(_) => raise("InvalidInputError", msg),
        Error::EmptyCorpus => raise("EmptyCorpusError", msg),
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(msg)
        }
        Error::Io { .. } => PyOSError::new_err(msg),
        Error::Config(_) => raise("ConfigError", msg),
        Error::UnknownId { .. } => raise("UnknownTokenError", msg),
        Error::DisallowedSpecial { .. } => raise("DisallowedSpecialTokenError", msg),
        Error::Corrupt(_) => raise("CorruptFileError", msg),
        Error::CorruptTokens(_) => raise("CorruptTokensError", msg),
    }
}

/// Token ids for Python: `ids` itself behind the buffer protocol (no copy), as little-endian
/// `u32` bytes that numpy wraps.
fn ids_to_py(py: Python<'_>, ids: Vec<u32>) -> PyResult<Bound<'_, PyIds>> {
    Bound::new(py, PyIds::new(ids))
}

/// Token ids that the core made, lent to Python without a copy: a writable buffer of bytes (the
/// ids as little-endian `u32`), like the `bytearray` that it replaces, which cost a copy of every
/// result and a page fault per 4 kB of it.
#[pyclass(frozen, module = "toklab._core", name = "Ids")]
pub struct PyIds {
    /// The parts of a `Vec<u32>` that this object owns alone (see `Drop`).
    ptr: std::ptr::NonNull<u32>,
    len: usize,
    cap: usize,
}

// SAFETY: `PyIds` owns its allocation exclusively, as a `Vec<u32>` does, and only hands out its
// address through the buffer protocol, whose writes Python serialises like a `bytearray`'s.
unsafe impl Send for PyIds {}
// SAFETY: as above; Rust never reads or writes the ids after construction.
unsafe impl Sync for PyIds {}

impl PyIds {
    fn new(mut ids: Vec<u32>) -> Self {
        // The encoders reserve room for more ids than most texts need; what a caller keeps
        // should not hold on to it (shrinking gives the tail back without copying).
        if ids.capacity() - ids.len() > ids.len() / 8 {
            ids.shrink_to_fit();
        }
        let mut ids = std::mem::ManuallyDrop::new(ids);
        if cfg!(target_endian = "big") {
            for id in ids.iter_mut() {
                *id = id.to_le();
            }
        }
        Self {
            ptr: std::ptr::NonNull::new(ids.as_mut_ptr()).expect("a Vec's pointer is never null"),
            len: ids.len(),
            cap: ids.capacity(),
        }
    }
}

impl Drop for PyIds {
    fn drop(&mut self) {
        // SAFETY: the parts of the `Vec` taken apart in `new`, put back together once.
        drop(unsafe { Vec::from_raw_parts(self.ptr.as_ptr(), self.len, self.cap) });
    }
}

#[pymethods]
impl PyIds {
    /// The buffer protocol: the ids' bytes, one-dimensional, format `B`. The view holds a
    /// reference to this object, so the memory outlives every array over it.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: std::ffi::c_int,
    ) -> PyResult<()> {
        use pyo3::ffi;
        if view.is_null() {
            return Err(pyo3::exceptions::PyBufferError::new_err("no view to fill"));
        }
        let ids = slf.get();
        let (buf, len) = (ids.ptr.as_ptr().cast::<std::ffi::c_void>(), ids.len * 4);
        // SAFETY: `view` is the non-null view that Python asked to fill; every pointer put in
        // it stays valid while the view holds its reference to `slf` (`obj`).
        unsafe {
            (*view).obj = slf.into_any().into_ptr();
            (*view).buf = buf;
            (*view).len = len as isize;
            (*view).readonly = 0;
            (*view).itemsize = 1;
            (*view).format = if flags & ffi::PyBUF_FORMAT != 0 {
                c"B".as_ptr().cast_mut()
            } else {
                std::ptr::null_mut()
            };
            (*view).ndim = 1;
            (*view).shape = if flags & ffi::PyBUF_ND != 0 {
                &raw mut (*view).len
            } else {
                std::ptr::null_mut()
            };
            (*view).strides = if flags & ffi::PyBUF_STRIDES == ffi::PyBUF_STRIDES {
                &raw mut (*view).itemsize
            } else {
                std::ptr::null_mut()
            };
            (*view).suboffsets = std::ptr::null_mut();
            (*view).internal = std::ptr::null_mut();
        }
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.len * 4
    }
}

/// Turns encoded runs of a batch into one numpy array per text: views of one buffer per run,
/// made with numpy's own C API (the `_ARRAY_API` table that compiled extensions use): no slice
/// object, no index parsing per text, as slicing an array from Python would cost.
struct RunViews<'py> {
    /// `PyArray_Type`, `PyArray_NewFromDescr` and `PyArray_SetBaseObject`: slots 2, 94 and 282
    /// of the table, the same in numpy 1 and 2.
    array_type: *mut pyo3::ffi::PyTypeObject,
    new_from_descr: NewFromDescr,
    set_base: SetBaseObject,
    /// `numpy.dtype("<u4")`: the ids' bytes are little-endian `u32` on every machine.
    dtype: Bound<'py, PyAny>,
}

/// numpy's `PyArray_NewFromDescr(subtype, descr, nd, dims, strides, data, flags, obj)`.
type NewFromDescr = unsafe extern "C" fn(
    *mut pyo3::ffi::PyTypeObject,
    *mut pyo3::ffi::PyObject,
    std::ffi::c_int,
    *const isize,
    *const isize,
    *mut std::ffi::c_void,
    std::ffi::c_int,
    *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject;

/// numpy's `PyArray_SetBaseObject(array, base)`.
type SetBaseObject =
    unsafe extern "C" fn(*mut pyo3::ffi::PyObject, *mut pyo3::ffi::PyObject) -> std::ffi::c_int;

/// `NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_WRITEABLE`.
const NPY_ARRAY_CARRAY: std::ffi::c_int = 0x0001 | 0x0100 | 0x0400;

impl<'py> RunViews<'py> {
    fn new(py: Python<'py>) -> PyResult<Self> {
        let module = py
            .import("numpy._core.multiarray")
            .or_else(|_| py.import("numpy.core.multiarray"))?;
        let capsule = module.getattr("_ARRAY_API")?;
        let dtype = py.import("numpy")?.getattr("dtype")?.call1(("<u4",))?;
        // SAFETY: `_ARRAY_API` is numpy's capsule of its C API table (a `void **`), which lives
        // as long as numpy stays loaded (never unloaded once imported); the slots read hold the
        // type object and functions that numpy's headers say they do.
        unsafe {
            let name = pyo3::ffi::PyCapsule_GetName(capsule.as_ptr());
            let table = pyo3::ffi::PyCapsule_GetPointer(capsule.as_ptr(), name)
                .cast::<*mut std::ffi::c_void>();
            if table.is_null() {
                return Err(PyErr::fetch(py));
            }
            let slot = |i: usize| *table.add(i);
            if [2, 94, 282].iter().any(|&i| slot(i).is_null()) {
                return Err(PyRuntimeError::new_err("numpy's C API table is incomplete"));
            }
            Ok(Self {
                array_type: slot(2).cast(),
                new_from_descr: std::mem::transmute::<*mut std::ffi::c_void, NewFromDescr>(slot(
                    94,
                )),
                set_base: std::mem::transmute::<*mut std::ffi::c_void, SetBaseObject>(slot(282)),
                dtype,
            })
        }
    }

    /// Appends one array per text of `run` to `out`, each a view of the run's ids.
    fn append(&self, out: &Bound<'py, PyList>, run: BatchRun) -> PyResult<()> {
        let py = out.py();
        let ids = ids_to_py(py, run.ids)?;
        let data = ids.get().ptr.as_ptr();
        let base = ids.into_any();
        let mut at = 0usize;
        for &len in &run.lengths {
            let dims = [len as isize];
            // SAFETY: `data[at..at + len]` lies in the run's ids, which the frozen `Ids` object
            // `base` owns and never moves or frees while it lives; the array keeps a reference
            // to it. The calls are as numpy documents them: `PyArray_NewFromDescr` steals a
            // reference to the dtype (taken here), `PyArray_SetBaseObject` one to the base
            // (taken here, and released by the array on its failure).
            let array = unsafe {
                let array = (self.new_from_descr)(
                    self.array_type,
                    self.dtype.clone().into_ptr(),
                    1,
                    dims.as_ptr(),
                    std::ptr::null(),
                    data.add(at).cast(),
                    NPY_ARRAY_CARRAY,
                    std::ptr::null_mut(),
                );
                let array = Bound::from_owned_ptr_or_err(py, array)?;
                if (self.set_base)(array.as_ptr(), base.clone().into_ptr()) < 0 {
                    return Err(PyErr::fetch(py));
                }
                array
            };
            out.append(array)?;
            at += len;
        }
        Ok(())
    }
}

/// Token ids from a buffer of native uint32 (what `toklab.tokenizer.as_ids` hands over).
fn ids_from_buffer(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
    let buf = pyo3::buffer::PyBuffer::<u32>::get(obj).map_err(|_| {
        raise(
            "InvalidIdsError",
            "token ids must be a contiguous uint32 buffer".into(),
        )
    })?;
    buf.to_vec(obj.py())
}

/// A byte-level BPE tokenizer (immutable, thread-safe). The Python class
/// `toklab.BPETokenizer` wraps it.
#[pyclass(frozen, module = "toklab._core", name = "Bpe")]
pub struct PyBpe {
    inner: Bpe,
}

/// The tokenizer of tiktoken's ranks and special tokens (`Vocab::from_tiktoken`), and the ids
/// filled with reserved special tokens.
fn tiktoken_bpe(
    ranks: Vec<(Vec<u8>, u32)>,
    specials: Vec<(String, u32)>,
    pattern: &str,
) -> crate::error::Result<(Bpe, Vec<u32>)> {
    let (vocab, reserved) = Vocab::from_tiktoken(ranks, specials)?;
    Ok((
        Bpe::new(vocab, PreTokenizer::new(pattern)?, false)?,
        reserved,
    ))
}

#[pymethods]
impl PyBpe {
    /// Builds from explicit parts: `tokens[id]` bytes, `(left, right)` merges in rank order,
    /// `(content, id)` special tokens.
    #[staticmethod]
    #[pyo3(signature = (tokens, merges, specials, pattern, ignore_merges=false))]
    fn from_parts(
        py: Python<'_>,
        tokens: Vec<Vec<u8>>,
        merges: Vec<(u32, u32)>,
        specials: Vec<(String, u32)>,
        pattern: &str,
        ignore_merges: bool,
    ) -> PyResult<Self> {
        let pattern = pattern.to_string();
        py.detach(move || {
            let vocab = Vocab::new(tokens, &merges, specials)?;
            Bpe::new(vocab, PreTokenizer::new(&pattern)?, ignore_merges)
        })
        .map(|inner| Self { inner })
        .map_err(to_py)
    }

    /// Builds from tiktoken's ranks, `(token bytes, rank)`, and special tokens `(content, id)`
    /// (see `Vocab::from_tiktoken`); returns the tokenizer and the ids filled with reserved
    /// special tokens.
    #[staticmethod]
    fn from_tiktoken_ranks(
        py: Python<'_>,
        ranks: Vec<(Vec<u8>, u32)>,
        specials: Vec<(String, u32)>,
        pattern: &str,
    ) -> PyResult<(Self, Vec<u32>)> {
        py.detach(|| tiktoken_bpe(ranks, specials, pattern))
            .map(|(inner, reserved)| (Self { inner }, reserved))
            .map_err(to_py)
    }

    /// [`PyBpe::from_tiktoken_ranks`] of a `.tiktoken` file's contents (parsed in Rust; a
    /// `CorruptFileError` names the first bad line).
    #[staticmethod]
    fn from_tiktoken_file(
        py: Python<'_>,
        data: &[u8],
        specials: Vec<(String, u32)>,
        pattern: &str,
    ) -> PyResult<(Self, Vec<u32>)> {
        py.detach(|| io::parse_tiktoken(data).and_then(|r| tiktoken_bpe(r, specials, pattern)))
            .map(|(inner, reserved)| (Self { inner }, reserved))
            .map_err(to_py)
    }

    /// Builds from a `tokenizer.json`'s model (see [`split_hf`]): `specials` are its added
    /// tokens, `(content, id)`. Returns the tokenizer and the ids that had no token (now
    /// special tokens `<|reserved_{id}|>`).
    #[staticmethod]
    fn from_hf_model(
        py: Python<'_>,
        model: &PyHfModel,
        specials: Vec<(String, u32)>,
        pattern: &str,
        ignore_merges: bool,
    ) -> PyResult<(Self, Vec<u32>)> {
        py.detach(|| model.inner.build(&specials, pattern, ignore_merges))
            .map(|(inner, reserved)| (Self { inner }, reserved))
            .map_err(to_py)
    }

    /// `"vocab": {...}, "merges": [...]` of a `tokenizer.json` for this vocabulary (JSON text).
    fn hf_tables_json(&self, py: Python<'_>) -> String {
        py.detach(|| hf::tables_json(self.inner.vocab()))
    }

    /// Every token's name in a `tokenizer.json`'s vocabulary, by id (see `hf::hf_names`).
    fn hf_strings(&self, py: Python<'_>) -> Vec<String> {
        py.detach(|| hf::hf_names(self.inner.vocab()))
    }

    /// Reads toklab's JSON format; returns `(Bpe, metadata_json)`.
    #[staticmethod]
    fn from_json(py: Python<'_>, text: &str) -> PyResult<(Self, String)> {
        py.detach(|| io::from_json(text))
            .map(|(inner, meta)| (Self { inner }, meta))
            .map_err(to_py)
    }

    /// [`PyBpe::from_json`] of a file's bytes (`CorruptFileError` if they are not UTF-8).
    #[staticmethod]
    fn from_json_bytes(py: Python<'_>, data: &[u8]) -> PyResult<(Self, String)> {
        py.detach(|| io::from_json_bytes(data))
            .map(|(inner, meta)| (Self { inner }, meta))
            .map_err(to_py)
    }

    #[pyo3(signature = (metadata=""))]
    fn to_json(&self, py: Python<'_>, metadata: &str) -> PyResult<String> {
        py.detach(|| io::to_json(&self.inner, metadata))
            .map_err(to_py)
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab().len()
    }

    #[getter]
    fn pattern(&self) -> &str {
        self.inner.pre_tokenizer().pattern()
    }

    #[getter]
    fn ignore_merges(&self) -> bool {
        self.inner.ignore_merges()
    }

    fn tokens<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        self.inner
            .vocab()
            .tokens()
            .iter()
            .map(|t| PyBytes::new(py, t))
            .collect()
    }

    /// `(left, right, merged)` ids in rank order.
    fn merges(&self) -> Vec<(u32, u32, u32)> {
        self.inner
            .vocab()
            .merges()
            .iter()
            .map(|m| (m.left, m.right, m.merged))
            .collect()
    }

    /// `(content, id)` of every special token, by id.
    fn specials(&self) -> Vec<(String, u32)> {
        self.inner.vocab().specials().to_vec()
    }

    fn token_bytes<'py>(&self, py: Python<'py>, id: i64) -> PyResult<Bound<'py, PyBytes>> {
        u32::try_from(id)
            .ok()
            .and_then(|i| self.inner.vocab().token_bytes(i))
            .map(|b| PyBytes::new(py, b))
            .ok_or_else(|| {
                to_py(Error::UnknownId {
                    id: id.max(0).unsigned_abs(),
                    vocab_size: self.inner.vocab().len(),
                })
            })
    }

    /// The id of the regular token with exactly these bytes, or None.
    fn token_id(&self, bytes: &[u8]) -> Option<u32> {
        self.inner.vocab().token_id(bytes)
    }

    /// The pre-tokenized pieces of `text`.
    fn pieces(&self, py: Python<'_>, text: &str) -> PyResult<Vec<String>> {
        py.detach(|| {
            self.inner
                .pre_tokenizer()
                .pieces(text)
                .map(|p| p.into_iter().map(str::to_string).collect())
        })
        .map_err(to_py)
    }

    #[pyo3(signature = (text, num_threads=1))]
    fn encode_ordinary<'py>(
        &self,
        py: Python<'py>,
        text: Bound<'py, PyString>,
        num_threads: usize,
    ) -> PyResult<Bound<'py, PyIds>> {
        if num_threads == 1 {
            // A large text that is converted here: converted and encoded in parts.
            if let Some(chars) = text::chars_of(&text) {
                let (n, mut at, mut refused) = (chars.len(), 0, false);
                let ids = py.detach(|| {
                    // (About one byte a character: text is mostly ASCII.)
                    self.inner
                        .encode_ordinary_parts(n, chars.most_bytes(), |buf| {
                            let end = (at + TEXT_PART).min(n);
                            refused |= !chars.push_utf8(at..end, buf);
                            at = end;
                            at < n && !refused
                        })
                });
                // (A lone surrogate: CPython's conversion below raises its error.)
                if !refused {
                    return ids_to_py(py, ids.map_err(to_py)?);
                }
            }
        }
        let text = Utf8Text::new(&text)?;
        let ids = py
            .detach(|| self.inner.encode_ordinary_parallel(&text, num_threads))
            .map_err(to_py)?;
        ids_to_py(py, ids)
    }

    fn encode<'py>(
        &self,
        py: Python<'py>,
        text: Bound<'py, PyString>,
        allowed: Vec<u32>,
        disallowed: Vec<u32>,
    ) -> PyResult<Bound<'py, PyIds>> {
        let text = Utf8Text::new(&text)?;
        let ids = py
            .detach(|| self.inner.encode(&text, &allowed, &disallowed))
            .map_err(to_py)?;
        ids_to_py(py, ids)
    }

    /// Encodes arbitrary bytes (invalid UTF-8 included) with no special tokens.
    fn encode_bytes<'py>(&self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyIds>> {
        let ids = py.detach(|| self.inner.encode_bytes(data)).map_err(to_py)?;
        ids_to_py(py, ids)
    }

    /// `(ids, offsets)`: offsets packed as little-endian u64 `start, end` pairs.
    fn encode_with_offsets<'py>(
        &self,
        py: Python<'py>,
        text: Bound<'py, PyString>,
        allowed: Vec<u32>,
        disallowed: Vec<u32>,
    ) -> PyResult<(Bound<'py, PyIds>, Bound<'py, PyByteArray>)> {
        let text = Utf8Text::new(&text)?;
        let (ids, offsets) = py
            .detach(|| self.inner.encode_with_offsets(&text, &allowed, &disallowed))
            .map_err(to_py)?;
        let mut raw = Vec::with_capacity(offsets.len() * 16);
        for (s, e) in offsets {
            raw.extend_from_slice(&(s as u64).to_le_bytes());
            raw.extend_from_slice(&(e as u64).to_le_bytes());
        }
        Ok((ids_to_py(py, ids)?, PyByteArray::new(py, &raw)))
    }

    /// One numpy array of ids per text, encoded on `num_threads` threads (0: all cores).
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyList>,
        allowed: Vec<u32>,
        disallowed: Vec<u32>,
        num_threads: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        // Each text's UTF-8 (see `Utf8Text`): borrowed from the str object where it is ASCII,
        // short or keeps its UTF-8 already, else converted here.
        let text_at = |i: usize, t: Bound<'py, PyAny>| -> PyResult<Utf8Text> {
            let t = t.cast_into::<PyString>().map_err(|e| {
                let kind = e.into_inner().get_type().name();
                let kind = kind.map_or(String::new(), |n| n.to_string());
                PyTypeError::new_err(format!("texts must be str; item {i} is {kind}"))
            })?;
            Utf8Text::new(&t)
        };
        let out = PyList::empty(py);
        let views = RunViews::new(py)?;
        let encode = |strs: &[Utf8Text]| self.inner.encode_run(strs, &allowed, &disallowed);
        let threads = crate::par::thread_count(num_threads, texts.len());
        if threads <= 1 {
            let strs: Vec<Utf8Text> = (texts.iter().enumerate())
                .map(|(i, t)| text_at(i, t))
                .collect::<PyResult<_>>()?;
            for run in crate::bpe::batch_runs(&strs) {
                let encoded = py.detach(|| encode(&strs[run])).map_err(to_py)?;
                views.append(&out, encoded)?;
            }
            return Ok(out);
        }
        // This thread (which holds the GIL) reads the texts and hands out runs of them as it
        // goes (`crate::bpe::run_ends`); `threads - 1` workers, started once there is a second
        // run, encode them, and so does this thread once every text is read, whenever the next
        // run in order is not ready. It turns finished runs into numpy views, in order. So the
        // Python-side work (reading the texts, making the arrays) overlaps the encoding.
        type Job = (usize, Vec<Utf8Text>);
        type Done = (usize, crate::error::Result<BatchRun>, Vec<Utf8Text>);
        let (job_tx, job_rx) = std::sync::mpsc::channel::<Job>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<Done>();
        let (mut job_tx, mut done_tx) = (Some(job_tx), Some(done_tx));
        let job_rx = std::sync::Mutex::new(job_rx);
        let done_rx = std::sync::Mutex::new(done_rx); // Sync, so that `detach` can wait on it
        let stop = AtomicBool::new(false);
        let work = |done: std::sync::mpsc::Sender<Done>| {
            // Until every job is taken (once the sender is gone), or the batch failed.
            while let Some((i, strs)) = job_rx.lock().ok().and_then(|rx| rx.recv().ok()) {
                let encoded = if stop.load(Ordering::Relaxed) {
                    Ok(BatchRun::default())
                } else {
                    encode(&strs)
                };
                if done.send((i, encoded, strs)).is_err() {
                    break;
                }
            }
        };
        // A finished run, kept until its turn (its texts are released here, with the GIL).
        let finished = |pending: &mut [Option<BatchRun>], (i, encoded, _texts): Done| {
            pending[i] = Some(encoded.map_err(to_py)?);
            PyResult::Ok(())
        };
        let result = std::thread::scope(|s| -> PyResult<()> {
            let mut runs = 0;
            let result = (|| -> PyResult<()> {
                let (mut run, mut size) = (Vec::new(), 0);
                let mut hand_out = |run: Vec<Utf8Text>| {
                    if runs == 1 {
                        for _ in 1..threads {
                            let done = done_tx.clone().expect("held while reading");
                            s.spawn(move || work(done));
                        }
                    }
                    if let Some(tx) = &job_tx {
                        let _ = tx.send((runs, run));
                    }
                    runs += 1;
                };
                for (i, t) in texts.iter().enumerate() {
                    let text = text_at(i, t)?;
                    let ends = crate::bpe::run_ends(&mut size, &text);
                    run.push(text);
                    if ends {
                        hand_out(std::mem::take(&mut run));
                    }
                }
                if !run.is_empty() {
                    hand_out(run);
                }
                // Every job is out: the workers end once the queue is empty.
                (job_tx, done_tx) = (None, None);
                let mut pending: Vec<Option<BatchRun>> = (0..runs).map(|_| None).collect();
                let mut done = 0;
                while done < runs {
                    // Whatever the workers have finished, without waiting.
                    while let Some(d) = done_rx.lock().ok().and_then(|rx| rx.try_recv().ok()) {
                        finished(&mut pending, d)?;
                    }
                    if let Some(run) = pending[done].take() {
                        views.append(&out, run)?;
                        done += 1;
                        continue;
                    }
                    let job = job_rx.lock().ok().and_then(|rx| rx.try_recv().ok());
                    if let Some((i, strs)) = job {
                        let encoded = py.detach(|| encode(&strs));
                        finished(&mut pending, (i, encoded, strs))?;
                        continue;
                    }
                    // Every run is taken: wait for the workers'.
                    let received = py.detach(|| done_rx.lock().ok().and_then(|rx| rx.recv().ok()));
                    let Some(d) = received else {
                        return Err(PyRuntimeError::new_err("encode_batch: a worker stopped"));
                    };
                    finished(&mut pending, d)?;
                }
                Ok(())
            })();
            // On failure the workers skip what is left; either way they end once the jobs do.
            stop.store(result.is_err(), Ordering::Relaxed);
            (job_tx, done_tx) = (None, None);
            result
        });
        // What the workers finished after a failure, released with the GIL.
        drop(done_rx);
        result?;
        Ok(out)
    }

    /// Bytes of ids given as a contiguous uint32 buffer (a numpy array).
    fn decode_bytes<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let ids = ids_from_buffer(ids)?;
        let len = py.detach(|| self.inner.decoded_len(&ids)).map_err(to_py)?;
        PyBytes::new_with(py, len, |out| {
            py.detach(|| self.inner.vocab().decode_into(&ids, out));
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "Bpe(vocab_size={}, merges={}, specials={})",
            self.inner.vocab().len(),
            self.inner.vocab().merges().len(),
            self.inner.vocab().specials().len()
        )
    }
}

/// What `__reduce__` returns: a constructor and its arguments.
type Reduced<'py> = (Bound<'py, PyAny>, (Bound<'py, PyBytes>, String));

/// Piece counts of a corpus: a mergeable partial result (`a + b`), and what BPE trains on.
#[pyclass(frozen, module = "toklab._core", name = "WordCounts")]
pub struct PyWordCounts {
    /// Behind a lock so that training can take the counts (`consume=True`) and free them early.
    inner: std::sync::Mutex<WordCounts>,
    pattern: String,
}

impl PyWordCounts {
    fn new(inner: WordCounts, pattern: String) -> Self {
        Self {
            inner: std::sync::Mutex::new(inner),
            pattern,
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, WordCounts> {
        // A panic while holding the lock cannot leave the counts half-updated in a way that
        // matters more than the panic itself, so a poisoned lock is simply taken over.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[pymethods]
impl PyWordCounts {
    fn __len__(&self) -> usize {
        self.counts().words.len()
    }

    #[getter]
    fn bytes_seen(&self) -> u64 {
        self.counts().bytes_seen
    }

    #[getter]
    fn total(&self) -> u64 {
        self.counts().words.values().sum()
    }

    #[getter]
    fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The `n` most frequent pieces as `(bytes, count)`, ties by bytes.
    fn most_common<'py>(
        &self,
        py: Python<'py>,
        n: i64,
    ) -> PyResult<Vec<(Bound<'py, PyBytes>, u64)>> {
        let n = usize::try_from(n)
            .map_err(|_| to_py(Error::Config(format!("most_common takes n >= 0, not {n}"))))?;
        let counts = self.counts();
        let mut all: Vec<(&Vec<u8>, &u64)> = counts.words.iter().collect();
        all.sort_unstable_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        Ok(all
            .into_iter()
            .take(n)
            .map(|(w, c)| (PyBytes::new(py, w), *c))
            .collect())
    }

    /// The counts in a compact, versioned binary form (see `WordCounts::to_bytes`), with the
    /// pattern; `WordCounts.from_bytes` reads it back. Pickling uses it.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let raw = self.counts().to_bytes();
        PyBytes::new(py, &raw)
    }

    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8], pattern: &str) -> PyResult<Self> {
        let counts = py.detach(|| WordCounts::from_bytes(data)).map_err(to_py)?;
        PreTokenizer::new(pattern).map_err(to_py)?;
        Ok(Self::new(counts, pattern.to_string()))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Reduced<'py>> {
        let py = slf.py();
        let this = slf.get();
        let ctor = py.get_type::<Self>().getattr("from_bytes")?;
        Ok((ctor, (this.to_bytes(py), this.pattern.clone())))
    }

    fn __add__(&self, py: Python<'_>, other: &Self) -> PyResult<Self> {
        if other.pattern != self.pattern {
            return Err(to_py(Error::Config(
                "cannot add word counts made with different pre-tokenization patterns".into(),
            )));
        }
        let mut inner = self.counts().clone();
        let theirs = other.counts().clone();
        py.detach(|| inner.merge(theirs));
        Ok(Self::new(inner, self.pattern.clone()))
    }

    /// Trains BPE on these counts. `consume=True` hands the counts over to the trainer, which
    /// frees them as it goes (lower peak memory); these counts are then empty.
    #[pyo3(signature = (vocab_size, special_tokens, min_frequency=1, max_token_length=None, progress=false, consume=false))]
    #[allow(clippy::too_many_arguments)]
    fn train_bpe(
        &self,
        py: Python<'_>,
        vocab_size: usize,
        special_tokens: Vec<String>,
        min_frequency: u64,
        max_token_length: Option<usize>,
        progress: bool,
        consume: bool,
    ) -> PyResult<PyBpe> {
        let cfg = TrainConfig {
            vocab_size,
            min_frequency,
            max_token_length,
            special_tokens,
            progress,
        };
        let mut guard = self.counts();
        let owned = consume.then(|| std::mem::take(&mut *guard));
        let borrowed: &WordCounts = &guard;
        py.detach(|| {
            let vocab = match owned {
                Some(counts) => train_owned(counts, &cfg)?,
                None => train(borrowed, &cfg)?,
            };
            Bpe::new(vocab, PreTokenizer::new(&self.pattern)?, false)
        })
        .map(|inner| PyBpe { inner })
        .map_err(to_py)
    }
}

fn new_counter(pattern: &str, special_tokens: &[String], num_threads: usize) -> PyResult<Counter> {
    let pre = PreTokenizer::new(pattern).map_err(to_py)?;
    Counter::new(pre, special_tokens, num_threads).map_err(to_py)
}

fn counts_of(counter: Counter) -> PyWordCounts {
    let pattern = counter.pattern().to_string();
    PyWordCounts::new(counter.into_counts(), pattern)
}

/// Counts the pieces of files (UTF-8; `errors` is "strict" or "replace").
#[pyfunction]
#[pyo3(signature = (paths, pattern, special_tokens, num_threads=0, errors="strict", progress=false))]
fn count_files(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    pattern: &str,
    special_tokens: Vec<String>,
    num_threads: usize,
    errors: &str,
    progress: bool,
) -> PyResult<PyWordCounts> {
    let errors = match errors {
        "strict" => Utf8Errors::Strict,
        "replace" => Utf8Errors::Replace,
        other => {
            return Err(to_py(Error::Config(format!(
                "errors must be \"strict\" or \"replace\", not {other:?}"
            ))))
        }
    };
    let mut counter = new_counter(pattern, &special_tokens, num_threads)?;
    let total: u64 = paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = progress_bar(progress, Some(total));
    py.detach(|| counter.add_files(&paths, errors, &|n| bar.set_position(n)))
        .map_err(to_py)?;
    bar.finish_and_clear();
    Ok(counts_of(counter))
}

/// Counts the pieces of an iterable of `str`, pulled in batches of about `batch_bytes`; each
/// batch is counted with the GIL released, so only one batch is ever held.
#[pyfunction]
#[pyo3(signature = (iterable, pattern, special_tokens, num_threads=0, batch_bytes=16_777_216, progress=false))]
fn count_iter(
    py: Python<'_>,
    iterable: &Bound<'_, PyAny>,
    pattern: &str,
    special_tokens: Vec<String>,
    num_threads: usize,
    batch_bytes: usize,
    progress: bool,
) -> PyResult<PyWordCounts> {
    let mut counter = new_counter(pattern, &special_tokens, num_threads)?;
    let bar = progress_bar(progress, None);
    let mut batch: Vec<PyBackedStr> = Vec::new();
    let mut size = 0usize;
    let flush = |batch: &mut Vec<PyBackedStr>, counter: &mut Counter| -> PyResult<()> {
        py.detach(|| counter.add_texts(batch)).map_err(to_py)?;
        bar.set_position(counter.counts().bytes_seen);
        batch.clear();
        Ok(())
    };
    for (i, item) in iterable.try_iter()?.enumerate() {
        let item = item?;
        let text: PyBackedStr = item.extract().map_err(|e| {
            if item.is_instance_of::<pyo3::types::PyString>() {
                // A str that has no UTF-8 form: a lone surrogate.
                return PyTypeError::new_err(format!(
                    "training text {i} is not valid Unicode: {e}"
                ));
            }
            PyTypeError::new_err(format!(
                "training texts must be str; item {i} is {}",
                item.get_type()
                    .name()
                    .map_or_else(|_| "?".to_string(), |n| n.to_string())
            ))
        })?;
        size += text.len();
        batch.push(text);
        if size >= batch_bytes {
            flush(&mut batch, &mut counter)?;
            size = 0;
        }
    }
    flush(&mut batch, &mut counter)?;
    bar.finish_and_clear();
    Ok(counts_of(counter))
}

fn progress_bar(show: bool, total: Option<u64>) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(n) => (
            indicatif::ProgressBar::new(n),
            "counting {bar:40} {bytes}/{total_bytes} [{elapsed_precise}<{eta_precise}]",
        ),
        None => (
            indicatif::ProgressBar::no_length(),
            "counting {spinner} {bytes} [{elapsed_precise}, {bytes_per_sec}]",
        ),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// The pieces of `text` under `pattern`; `engine="regex"` bypasses the hand-written matchers of
/// the named patterns (for differential tests).
#[pyfunction]
#[pyo3(signature = (text, pattern, engine="fast"))]
fn pretokenize(py: Python<'_>, text: &str, pattern: &str, engine: &str) -> PyResult<Vec<String>> {
    let pre = PreTokenizer::new(pattern).map_err(to_py)?;
    let pre = match engine {
        "fast" => pre,
        "regex" => pre.regex_only(),
        other => {
            return Err(to_py(Error::Config(format!(
                "engine must be \"fast\" or \"regex\", not {other:?}"
            ))))
        }
    };
    py.detach(|| {
        pre.pieces(text)
            .map(|p| p.into_iter().map(str::to_string).collect())
    })
    .map_err(to_py)
}

/// A `tokenizer.json`'s BPE vocabulary and merges, read by [`split_hf`]; opaque to Python.
#[pyclass(frozen, module = "toklab._core", name = "HfModel")]
pub struct PyHfModel {
    inner: hf::HfModel,
}

#[pymethods]
impl PyHfModel {
    /// Whether the model has a merge list (`model.merges`).
    #[getter]
    fn has_merges(&self) -> bool {
        self.inner.merges.is_some()
    }
}

/// Reads a `tokenizer.json`'s bytes: `(the file without model.vocab and model.merges as JSON text,
/// those two)`; a `CorruptFileError` if it is not JSON or they have the wrong shape.
#[pyfunction]
fn split_hf(py: Python<'_>, data: &[u8]) -> PyResult<(String, PyHfModel)> {
    py.detach(|| hf::split_hf(data))
        .map(|(rest, inner)| (rest, PyHfModel { inner }))
        .map_err(to_py)
}

/// Resolves a pattern name (`gpt2`, `cl100k`, `o200k`, ...) to its regex.
#[pyfunction]
fn resolve_pattern(name_or_regex: &str) -> String {
    crate::pretok::resolve_pattern(name_or_regex).to_string()
}

/// StochasTok's split table over a vocabulary, and the expansion that uses it.
#[pyclass(frozen, module = "toklab._core", name = "SplitTable")]
pub struct PySplitTable {
    inner: SplitTable,
}

#[pymethods]
impl PySplitTable {
    /// The table of arbitrary tokens (index = id); `special[id]` marks ids that never split;
    /// `kinds[id]` (optional): 1 word-initial, 2 continuation, 0 neither (see
    /// `SplitTable::with_kinds`).
    #[new]
    #[pyo3(signature = (tokens, special, kinds=None))]
    fn new(
        py: Python<'_>,
        tokens: Vec<Vec<u8>>,
        special: Vec<bool>,
        kinds: Option<Vec<u8>>,
    ) -> PyResult<Self> {
        let inner = py
            .detach(|| {
                let refs: Vec<&[u8]> = tokens.iter().map(Vec::as_slice).collect();
                match &kinds {
                    Some(k) => SplitTable::with_kinds(&refs, &special, k),
                    None => SplitTable::new(&refs, &special),
                }
            })
            .map_err(to_py)?;
        Ok(Self { inner })
    }

    /// The table of a toklab BPE vocabulary, built without copying its tokens to Python.
    #[staticmethod]
    fn from_bpe(py: Python<'_>, bpe: &PyBpe) -> PyResult<Self> {
        let vocab = bpe.inner.vocab();
        let inner = py
            .detach(|| {
                let n = vocab.len() as u32;
                let refs: Vec<&[u8]> = (0..n)
                    .map(|i| vocab.token_bytes(i).unwrap_or(b""))
                    .collect();
                let special: Vec<bool> = (0..n).map(|i| vocab.is_special(i)).collect();
                SplitTable::new(&refs, &special)
            })
            .map_err(to_py)?;
        Ok(Self { inner })
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// The splits of a token, each a list of part ids.
    fn splits(&self, id: u32) -> PyResult<Vec<Vec<u32>>> {
        if id as usize >= self.inner.len() {
            return Err(to_py(Error::UnknownId {
                id: u64::from(id),
                vocab_size: self.inner.len(),
            }));
        }
        Ok((0..self.inner.split_count(id))
            .map(|k| self.inner.split(id, k).to_vec())
            .collect())
    }

    /// `(tokens that can split, tokens whose split is the fallback, splits in all)`.
    fn stats(&self) -> (usize, usize, usize) {
        (
            self.inner.splittable(),
            self.inner.fallback_count(),
            self.inner.total_splits(),
        )
    }

    /// Expands the sequences `flat[offsets[i]:offsets[i + 1]]`; returns the new flat ids (u32
    /// bytes) and offsets (u64 bytes). `mode` is "reference" or "bernoulli".
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (flat, offsets, p, mode, seed, first_index, max_splits, max_depth, num_threads))]
    fn expand_batch<'py>(
        &self,
        py: Python<'py>,
        flat: &Bound<'py, PyAny>,
        offsets: &Bound<'py, PyAny>,
        p: f64,
        mode: &str,
        seed: u64,
        first_index: u64,
        max_splits: Option<usize>,
        max_depth: Option<u8>,
        num_threads: usize,
    ) -> PyResult<(Bound<'py, PyIds>, Bound<'py, PyByteArray>)> {
        let flat = ids_from_buffer(flat)?;
        let offsets: Vec<usize> = pyo3::buffer::PyBuffer::<u64>::get(offsets)
            .map_err(|_| raise("InvalidIdsError", "offsets must be a uint64 buffer".into()))?
            .to_vec(py)?
            .into_iter()
            .map(|o| o as usize)
            .collect();
        let mode = match mode {
            "reference" => Mode::Reference { max_splits },
            "bernoulli" => Mode::Bernoulli,
            other => {
                return Err(raise(
                    "ConfigError",
                    format!("unknown StochasTok mode {other:?}: use 'reference' or 'bernoulli'"),
                ))
            }
        };
        let opts = Options {
            p,
            mode,
            max_depth,
            seed,
        };
        let (ids, new_offsets) = py
            .detach(|| {
                crate::stochastok::expand_batch(
                    &self.inner,
                    &flat,
                    &offsets,
                    &opts,
                    first_index,
                    num_threads,
                )
            })
            .map_err(to_py)?;
        let raw: Vec<u8> = new_offsets
            .iter()
            .flat_map(|&o| (o as u64).to_le_bytes())
            .collect();
        Ok((ids_to_py(py, ids)?, PyByteArray::new(py, &raw)))
    }
}

/// Per-byte signals from float32 buffers (numpy arrays), read in place: contiguous buffers are
/// borrowed, not copied (12 MB of text has 48 MB of signal); others are copied.
struct Signals {
    bufs: Vec<pyo3::buffer::PyBuffer<f32>>,
    copies: Vec<Option<Vec<f32>>>,
    /// The buffer that the signals are consecutive views of, when they are (see
    /// [`Signals::whole`]), and where they start in it and how many values they hold.
    owner: Option<(pyo3::buffer::PyBuffer<f32>, usize, usize)>,
}

impl Signals {
    fn new(py: Python<'_>, signals: &[Bound<'_, PyAny>]) -> PyResult<Self> {
        let mut bufs = Vec::with_capacity(signals.len());
        let mut copies = Vec::with_capacity(signals.len());
        for s in signals {
            let buf = pyo3::buffer::PyBuffer::<f32>::get(s).map_err(|_| {
                raise(
                    "InvalidInputError",
                    "signals must be aligned float32 arrays".into(),
                )
            })?;
            copies.push(if buf.is_c_contiguous() && buf.item_count() > 0 {
                None
            } else {
                Some(buf.to_vec(py)?)
            });
            bufs.push(buf);
        }
        let owner = Self::owner(signals, &bufs, &copies);
        Ok(Self {
            bufs,
            copies,
            owner,
        })
    }

    /// The buffer of which the non-empty signals are consecutive views, in order: numpy arrays
    /// that are all views of one C-contiguous float32 array (their `base`), or a single array.
    fn owner(
        signals: &[Bound<'_, PyAny>],
        bufs: &[pyo3::buffer::PyBuffer<f32>],
        copies: &[Option<Vec<f32>>],
    ) -> Option<(pyo3::buffer::PyBuffer<f32>, usize, usize)> {
        let used: Vec<usize> = (0..bufs.len())
            .filter(|&i| bufs[i].item_count() > 0)
            .collect();
        let (&first, &last) = (used.first()?, used.last()?);
        // Borrowed (not copied), each starting where the one before it ends.
        if used.iter().any(|&i| copies[i].is_some()) {
            return None;
        }
        for w in used.windows(2) {
            let (a, b) = (&bufs[w[0]], &bufs[w[1]]);
            if b.buf_ptr() as usize != a.buf_ptr() as usize + a.len_bytes() {
                return None;
            }
        }
        // One buffer holds them all: the single array, or the `base` they all share.
        let holder = if used.len() == 1 {
            signals[first].clone()
        } else {
            let base = signals[first].getattr("base").ok()?;
            for &i in &used[1..] {
                if base.is_none() || !signals[i].getattr("base").ok()?.is(&base) {
                    return None;
                }
            }
            base
        };
        let owner = pyo3::buffer::PyBuffer::<f32>::get(&holder).ok()?;
        owner.is_c_contiguous().then_some(())?;
        let (lo, hi) = (
            owner.buf_ptr() as usize,
            owner.buf_ptr() as usize + owner.len_bytes(),
        );
        let start = bufs[first].buf_ptr() as usize;
        let end = bufs[last].buf_ptr() as usize + bufs[last].item_count() * 4;
        (lo <= start && end <= hi && (start - lo).is_multiple_of(4)).then_some(())?;
        Some((owner, (start - lo) / 4, (end - start) / 4))
    }

    /// The signals as one slice, when they are consecutive views of one buffer (see
    /// [`crate::bytespan::global_spans_of_texts_in`]).
    fn whole(&self) -> Option<&[f32]> {
        let (owner, start, len) = self.owner.as_ref()?;
        let ptr = owner.buf_ptr().cast::<f32>().cast_const();
        // SAFETY: `start..start + len` lies in the owner's buffer (checked in `owner`), which
        // is C-contiguous, aligned for f32 (checked by `get`), and stays exported while `self`
        // holds it; as for `slices`, no other thread is assumed to write to it meanwhile.
        Some(unsafe { std::slice::from_raw_parts(ptr.add(*start), *len) })
    }

    fn slices(&self) -> Vec<&[f32]> {
        self.bufs
            .iter()
            .zip(&self.copies)
            .map(|(buf, copy)| match (copy, buf.as_slice_ptr()) {
                (None, Some(ptr)) => {
                    // SAFETY: the buffer is C-contiguous, aligned for f32 (checked by `get`),
                    // non-empty, and stays exported while `self` holds it. Like any reader that
                    // releases the GIL over a numpy array, this assumes no other thread writes
                    // to the array during the call.
                    unsafe { ptr.as_ref() }
                }
                (Some(v), _) => v.as_slice(),
                (None, None) => &[],
            })
            .collect()
    }
}

/// Whether `global_spans` reads these signals in place: consecutive views of one float32
/// array (for tests).
#[pyfunction]
fn signals_in_place(py: Python<'_>, signals: Vec<Bound<'_, PyAny>>) -> PyResult<bool> {
    Ok(Signals::new(py, &signals)?.whole().is_some())
}

/// The `q`-th percentile of the non-zero values of float32 signals (None: all zero).
#[pyfunction]
#[pyo3(signature = (signals, q, num_threads=0))]
fn signal_percentile(
    py: Python<'_>,
    signals: Vec<Bound<'_, PyAny>>,
    q: f64,
    num_threads: usize,
) -> PyResult<Option<f32>> {
    let signals = Signals::new(py, &signals)?;
    let refs = signals.slices();
    Ok(py.detach(|| crate::bytespan::percentile_nonzero(&refs, q, num_threads)))
}

/// Counts ByteSpan spans over documents and their per-byte signals (float32 buffers), on all
/// threads; returns `(word_initial, bytes, count)` by count (descending), the first `limit`.
#[pyfunction]
#[pyo3(signature = (texts, signals, pattern, threshold=None, num_threads=0, limit=None))]
fn span_counts(
    py: Python<'_>,
    texts: Vec<Bound<'_, PyString>>,
    signals: Vec<Bound<'_, PyAny>>,
    pattern: &str,
    threshold: Option<f32>,
    num_threads: usize,
    limit: Option<usize>,
) -> PyResult<Vec<(bool, Py<PyBytes>, u64)>> {
    if texts.len() != signals.len() {
        return Err(to_py(Error::Config(format!(
            "{} texts but {} signals",
            texts.len(),
            signals.len()
        ))));
    }
    let texts = Utf8Text::all(py, &texts, num_threads)?;
    let signals = Signals::new(py, &signals)?;
    let signals = signals.slices();
    let pre = PreTokenizer::new(pattern).map_err(to_py)?;
    let constraint = match threshold {
        None => Constraint::Monotonic,
        Some(t) if t.is_finite() => Constraint::Combined { threshold: t },
        Some(t) => return Err(to_py(Error::Config(format!("threshold {t} is not finite")))),
    };
    let docs: Vec<usize> = (0..texts.len()).collect();
    let top = py
        .detach(|| -> crate::error::Result<_> {
            let parts = crate::par::fold(
                &docs,
                num_threads,
                || (SpanCounts::default(), None),
                |(acc, err), &i| {
                    if err.is_none() {
                        if let Err(e) = acc.add(&pre, &texts[i], signals[i], constraint) {
                            *err = Some((i, e));
                        }
                    }
                },
            );
            let mut total = SpanCounts::default();
            let mut first_err: Option<(usize, Error)> = None;
            for (counts, err) in parts {
                if let Some((i, e)) = err {
                    if first_err.as_ref().is_none_or(|(j, _)| i < *j) {
                        first_err = Some((i, e));
                    }
                }
                total.merge(counts);
            }
            if let Some((i, e)) = first_err {
                return Err(crate::bytespan::in_document(i, e));
            }
            Ok(total.top(limit.unwrap_or(usize::MAX)))
        })
        .map_err(to_py)?;
    Ok(top
        .into_iter()
        .map(|((initial, bytes), n)| (initial, PyBytes::new(py, &bytes).unbind(), n))
        .collect())
}

/// ByteSpan's global constraint over documents and their float32 signals: grows segments in
/// ascending signal order until `want` segment strings occur `min_count` times; returns
/// `(tokens, steps, threshold, full)` with tokens as `(word_initial, bytes, count)` by count.
/// Signals that are consecutive views of one array (a cached signal's, `byte_signals`') are
/// read in place where no value is negative; others are copied.
#[pyfunction]
#[pyo3(signature = (texts, signals, pattern, want, min_count=20, num_threads=0))]
#[allow(clippy::type_complexity)]
fn global_spans(
    py: Python<'_>,
    texts: Vec<Bound<'_, PyString>>,
    signals: Vec<Bound<'_, PyAny>>,
    pattern: &str,
    want: usize,
    min_count: u64,
    num_threads: usize,
) -> PyResult<(Vec<(bool, Py<PyBytes>, u64)>, usize, Option<f32>, bool)> {
    if texts.len() != signals.len() {
        return Err(to_py(Error::Config(format!(
            "{} texts but {} signals",
            texts.len(),
            signals.len()
        ))));
    }
    let texts = Utf8Text::all(py, &texts, num_threads)?;
    let signals = Signals::new(py, &signals)?;
    let sig_refs = signals.slices();
    let whole = signals.whole();
    let pre = PreTokenizer::new(pattern).map_err(to_py)?;
    let got = py
        .detach(|| {
            let texts: Vec<&str> = texts.iter().map(|t| &**t).collect();
            match whole {
                // Views of one array: the keys are read from it in place.
                Some(whole) => crate::bytespan::global_spans_of_texts_in(
                    &texts,
                    &pre,
                    &sig_refs,
                    whole,
                    want,
                    min_count,
                    num_threads,
                ),
                None => crate::bytespan::global_spans_of_texts(
                    &texts,
                    &pre,
                    &sig_refs,
                    want,
                    min_count,
                    num_threads,
                ),
            }
        })
        .map_err(to_py)?;
    let tokens = got
        .tokens
        .into_iter()
        .map(|((initial, bytes), n)| (initial, PyBytes::new(py, &bytes).unbind(), n))
        .collect();
    Ok((tokens, got.steps, got.threshold, got.full))
}

/// A ByteSpan vocabulary with longest-match inference.
#[pyclass(frozen, module = "toklab._core", name = "SpanVocab")]
pub struct PySpanVocab {
    inner: SpanVocab,
}

#[pymethods]
impl PySpanVocab {
    /// From `(word_initial, bytes)` pairs: any object's truth for the flag, `bytes` or
    /// `bytearray` for the bytes (read in place, where a `Vec<u8>` would be extracted one
    /// integer at a time).
    #[new]
    fn new(learned: Vec<(Bound<'_, PyAny>, PyBackedBytes)>, pattern: &str) -> PyResult<Self> {
        let pre = PreTokenizer::new(pattern).map_err(to_py)?;
        let learned = learned
            .iter()
            .map(|(flag, bytes)| Ok((flag.is_truthy()?, bytes.to_vec())))
            .collect::<PyResult<Vec<(bool, Vec<u8>)>>>()?;
        Ok(Self {
            inner: SpanVocab::new(&learned, pre).map_err(to_py)?,
        })
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// `(word_initial, bytes)` of a token.
    fn token<'py>(&self, py: Python<'py>, id: u32) -> PyResult<(bool, Bound<'py, PyBytes>)> {
        let (flag, bytes) = self.inner.token(id).ok_or_else(|| {
            to_py(Error::UnknownId {
                id: u64::from(id),
                vocab_size: self.inner.len(),
            })
        })?;
        Ok((*flag, PyBytes::new(py, bytes)))
    }

    /// `(word_initial, bytes)` of every token, in id order.
    fn tokens<'py>(&self, py: Python<'py>) -> Vec<(bool, Bound<'py, PyBytes>)> {
        self.inner
            .tokens()
            .iter()
            .map(|(flag, bytes)| (*flag, PyBytes::new(py, bytes)))
            .collect()
    }

    /// Longest-match inference, or BPE inference over the derived merges with `bpe=True`.
    #[pyo3(signature = (text, bpe=false))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        text: Bound<'py, PyString>,
        bpe: bool,
    ) -> PyResult<Bound<'py, PyIds>> {
        let text = Utf8Text::new(&text)?;
        let mut ids = Vec::with_capacity(text.len() / 3 + 1);
        py.detach(|| {
            if bpe {
                self.inner.encode_bpe(&text, &mut ids)
            } else {
                self.inner.encode(&text, &mut ids)
            }
        })
        .map_err(to_py)?;
        ids_to_py(py, ids)
    }

    /// BPE inference's merges, `(left, right, merged)` by rank (the merged id).
    fn merges(&self) -> Vec<(u32, u32, u32)> {
        self.inner.merges()
    }

    /// How many learned tokens have a merge: derives the merges now, with the GIL held, so
    /// that no later call derives them with it released (a fork then, from another thread,
    /// would leave the child waiting forever on the half-made table).
    fn merge_count(&self) -> usize {
        self.inner.merge_count()
    }

    fn decode_bytes<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let ids = ids_from_buffer(ids)?;
        let out = py.detach(|| self.inner.decode(&ids)).map_err(to_py)?;
        Ok(PyBytes::new(py, &out))
    }

    /// `(word_initial, bytes)` of the learned tokens (after the alphabet) of this vocabulary
    /// grown to `target` tokens by BPE over `texts` (seeding), on `threads` threads (0: all
    /// cores).
    fn fill_with_bpe<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<PyBackedStr>,
        target: usize,
        threads: usize,
    ) -> PyResult<Vec<(bool, Bound<'py, PyBytes>)>> {
        let learned = py
            .detach(|| {
                let refs: Vec<&str> = texts.iter().map(|t| &**t).collect();
                self.inner.fill_with_bpe(&refs, target, threads)
            })
            .map_err(to_py)?;
        Ok(learned
            .iter()
            .map(|(flag, bytes)| (*flag, PyBytes::new(py, bytes)))
            .collect())
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyIds>()?;
    m.add_class::<PyBpe>()?;
    m.add_class::<PyWordCounts>()?;
    m.add_class::<PySplitTable>()?;
    m.add_class::<PySpanVocab>()?;
    m.add_class::<PyHfModel>()?;
    coding::register(m)?;
    byteprobs::register(m)?;
    m.add_function(wrap_pyfunction!(span_counts, m)?)?;
    m.add_function(wrap_pyfunction!(global_spans, m)?)?;
    m.add_function(wrap_pyfunction!(signal_percentile, m)?)?;
    m.add_function(wrap_pyfunction!(signals_in_place, m)?)?;
    m.add_function(wrap_pyfunction!(count_files, m)?)?;
    m.add_function(wrap_pyfunction!(count_iter, m)?)?;
    m.add_function(wrap_pyfunction!(resolve_pattern, m)?)?;
    m.add_function(wrap_pyfunction!(text::str_layout_checked, m)?)?;
    m.add_function(wrap_pyfunction!(split_hf, m)?)?;
    m.add_function(wrap_pyfunction!(pretokenize, m)?)?;
    m.add("GPT2_PATTERN", crate::pretok::GPT2_PATTERN)?;
    m.add("CL100K_PATTERN", crate::pretok::CL100K_PATTERN)?;
    m.add("O200K_PATTERN", crate::pretok::O200K_PATTERN)?;
    m.add("FORMAT_VERSION", io::VERSION)?;
    // The package's version as built (Cargo's, kept equal to pyproject's by a test), for
    // `toklab.__version__` where no installed metadata says it (a source tree on the path).
    m.add("VERSION", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
