//! Bindings for arithmetic coding and Equal-Info windows (`toklab.equalinfo` drives them: it
//! runs the model, these code).

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::{raise, to_py};
use crate::arith::{quantize, Decoder, Encoder, Precision};
use crate::equalinfo::{
    encode_window, encode_window_lester, LesterDecoder, Step, Window, WindowConfig, WindowDecoder,
    ALPHABET,
};

fn floats(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<f32>> {
    pyo3::buffer::PyBuffer::<f32>::get(obj)
        .map_err(|_| {
            raise(
                "InvalidInputError",
                format!("{what} must be a float32 array"),
            )
        })?
        .to_vec(obj.py())
}

/// The coder's precision for a byte alphabet, checked.
fn byte_precision(state_bits: u32, cdf_bits: u32) -> PyResult<Precision> {
    let p = Precision {
        state_bits,
        cdf_bits,
    };
    p.check(ALPHABET).map_err(to_py)?;
    Ok(p)
}

fn window_config(
    window_bits: u32,
    state_bits: u32,
    cdf_bits: u32,
    max_bytes: usize,
) -> PyResult<WindowConfig> {
    let cfg = WindowConfig {
        precision: Precision {
            state_bits,
            cdf_bits,
        },
        window_bits,
        max_bytes,
    };
    cfg.check().map_err(to_py)?;
    Ok(cfg)
}

/// Cuts one window for each row: `logits` is `[rows, positions, 256]` float32 (row `r`,
/// position `t`: byte `t` of the window given the bytes before it, the context starting at the
/// window), `data[starts[r]:starts[r] + lens[r]]` the bytes left in row `r`'s segment.
/// Returns `(value, consumed, escape)` per row.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn equalinfo_cut(
    py: Python<'_>,
    logits: &Bound<'_, PyAny>,
    positions: usize,
    data: &[u8],
    starts: Vec<usize>,
    lens: Vec<usize>,
    window_bits: u32,
    state_bits: u32,
    cdf_bits: u32,
    max_bytes: usize,
    rule: &str,
) -> PyResult<Vec<(u128, usize, bool)>> {
    let lester = match rule {
        "straddle" => None,
        "lester" => Some(false),
        "lester-delay" => Some(true),
        _ => {
            return Err(raise(
                "ConfigError",
                format!("rule must be 'straddle', 'lester' or 'lester-delay', got {rule:?}"),
            ))
        }
    };
    let cfg = window_config(window_bits, state_bits, cdf_bits, max_bytes)?;
    let logits = floats(logits, "logits")?;
    let row = positions * ALPHABET;
    if starts.len() != lens.len() || logits.len() != starts.len() * row {
        return Err(raise(
            "InvalidInputError",
            format!(
                "equalinfo_cut: {} logits for {} rows of {positions} positions",
                logits.len(),
                starts.len()
            ),
        ));
    }
    py.detach(|| {
        starts
            .iter()
            .zip(&lens)
            .enumerate()
            .map(|(r, (&s, &n))| {
                let bytes = data.get(s..s + n).ok_or_else(|| {
                    crate::Error::Config(format!("equalinfo_cut: row {r} is out of range"))
                })?;
                let lg = &logits[r * row..(r + 1) * row];
                let w = match lester {
                    None => encode_window(&cfg, lg, bytes)?,
                    Some(delay) => encode_window_lester(&cfg, lg, bytes, delay)?,
                };
                Ok(match w {
                    Window::Coded { value, len } => (value, len, false),
                    Window::Escape { byte } => (byte as u128, 1, true),
                })
            })
            .collect::<crate::Result<Vec<_>>>()
    })
    .map_err(to_py)
}

/// Decodes many windows at once, one model step per call.
#[pyclass(module = "toklab._core", name = "WindowDecoders")]
struct PyWindowDecoders {
    decoders: Vec<WindowDecoder>,
    outputs: Vec<Vec<u8>>,
    active: Vec<usize>,
}

#[pymethods]
impl PyWindowDecoders {
    #[new]
    fn new(
        values: Vec<u128>,
        window_bits: u32,
        state_bits: u32,
        cdf_bits: u32,
        max_bytes: usize,
    ) -> PyResult<Self> {
        let cfg = window_config(window_bits, state_bits, cdf_bits, max_bytes)?;
        let decoders = values
            .iter()
            .map(|&v| WindowDecoder::new(cfg, v))
            .collect::<crate::Result<Vec<_>>>()
            .map_err(to_py)?;
        let n = decoders.len();
        Ok(PyWindowDecoders {
            decoders,
            outputs: vec![Vec::new(); n],
            active: (0..n).collect(),
        })
    }

    /// Indices of the windows still decoding, in the order `step` wants their logits.
    fn active(&self) -> Vec<usize> {
        self.active.clone()
    }

    /// The bytes decoded so far by window `i`.
    fn output<'py>(&self, py: Python<'py>, i: usize) -> PyResult<Bound<'py, PyBytes>> {
        self.outputs
            .get(i)
            .map(|o| PyBytes::new(py, o))
            .ok_or_else(|| raise("InvalidInputError", format!("no window {i}")))
    }

    /// Feeds `[len(active()), 256]` float32 logits (the next byte of each active window);
    /// returns, per active window, the byte decoded, or -1 where the window ended.
    fn step(&mut self, py: Python<'_>, logits: &Bound<'_, PyAny>) -> PyResult<Vec<i16>> {
        let logits = floats(logits, "logits")?;
        if logits.len() != self.active.len() * ALPHABET {
            return Err(raise(
                "InvalidInputError",
                format!(
                    "step: {} logits for {} active windows",
                    logits.len(),
                    self.active.len()
                ),
            ));
        }
        let (decoders, outputs, active) = (&mut self.decoders, &mut self.outputs, &mut self.active);
        py.detach(|| {
            let mut still = Vec::with_capacity(active.len());
            let mut got = Vec::with_capacity(active.len());
            for (k, &i) in active.iter().enumerate() {
                match decoders[i].step(&logits[k * ALPHABET..(k + 1) * ALPHABET])? {
                    Step::Byte(b) => {
                        outputs[i].push(b);
                        still.push(i);
                        got.push(b as i16);
                    }
                    Step::End => got.push(-1),
                }
            }
            *active = still;
            Ok(got)
        })
        .map_err(to_py)
    }
}

/// Lester's window decoders (look-ahead, or delay), one model step per call.
#[pyclass(module = "toklab._core", name = "LesterDecoders")]
struct PyLesterDecoders {
    decoders: Vec<LesterDecoder>,
}

#[pymethods]
impl PyLesterDecoders {
    /// One decoder per `(value, cap)`: `cap` bounds the window's bytes (the bytes left).
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        values: Vec<u128>,
        caps: Vec<usize>,
        delay: bool,
        window_bits: u32,
        state_bits: u32,
        cdf_bits: u32,
        max_bytes: usize,
    ) -> PyResult<Self> {
        let cfg = window_config(window_bits, state_bits, cdf_bits, max_bytes)?;
        if values.len() != caps.len() {
            return Err(raise("InvalidInputError", "one cap per value".into()));
        }
        let decoders = values
            .iter()
            .zip(&caps)
            .map(|(&v, &c)| LesterDecoder::new(cfg, v, c, delay))
            .collect::<crate::Result<Vec<_>>>()
            .map_err(to_py)?;
        Ok(PyLesterDecoders { decoders })
    }

    /// Indices of the decoders still running.
    fn active(&self) -> Vec<usize> {
        (0..self.decoders.len())
            .filter(|&i| !self.decoders[i].done())
            .collect()
    }

    /// Feeds `[len(active()), 256]` logits; returns the byte each active decoder decoded.
    fn step(&mut self, logits: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
        let logits = floats(logits, "logits")?;
        let active = self.active();
        if logits.len() != active.len() * ALPHABET {
            return Err(raise(
                "InvalidInputError",
                "one row of logits per active window".into(),
            ));
        }
        active
            .iter()
            .enumerate()
            .map(|(k, &i)| self.decoders[i].step(&logits[k * ALPHABET..(k + 1) * ALPHABET]))
            .collect::<crate::Result<Vec<_>>>()
            .map_err(to_py)
    }

    /// Each window's length (final once it is no longer active).
    fn lengths(&self) -> Vec<usize> {
        self.decoders.iter().map(|d| d.len()).collect()
    }
}

/// Plain arithmetic coding of `data` with one row of logits per byte (`[len(data), 256]`).
/// Returns the bit stream (bytes, MSB first) and its length in bits.
#[pyfunction]
fn ac_encode<'py>(
    py: Python<'py>,
    logits: &Bound<'py, PyAny>,
    data: &[u8],
    state_bits: u32,
    cdf_bits: u32,
) -> PyResult<(Bound<'py, PyBytes>, u64)> {
    let p = byte_precision(state_bits, cdf_bits)?;
    let logits = floats(logits, "logits")?;
    if logits.len() != data.len() * ALPHABET {
        return Err(raise(
            "InvalidInputError",
            format!(
                "ac_encode: {} logits for {} bytes",
                logits.len(),
                data.len()
            ),
        ));
    }
    let (bytes, len) = py
        .detach(|| {
            let mut enc = Encoder::new(p);
            let mut cdf = [0u32; ALPHABET + 1];
            for (t, &b) in data.iter().enumerate() {
                quantize(
                    &logits[t * ALPHABET..(t + 1) * ALPHABET],
                    cdf_bits,
                    &mut cdf,
                )?;
                enc.encode(&cdf, b as usize);
            }
            Ok(enc.finish())
        })
        .map_err(to_py)?;
    Ok((PyBytes::new(py, &bytes), len))
}

/// Plain arithmetic decoding of several streams in step, one byte each per `step`.
#[pyclass(module = "toklab._core", name = "AcDecoders")]
struct PyAcDecoders {
    p: Precision,
    states: Vec<Decoder<Vec<u8>>>,
}

#[pymethods]
impl PyAcDecoders {
    #[new]
    fn new(streams: Vec<Vec<u8>>, state_bits: u32, cdf_bits: u32) -> PyResult<Self> {
        let p = byte_precision(state_bits, cdf_bits)?;
        let states = streams.into_iter().map(|s| Decoder::new(p, s)).collect();
        Ok(PyAcDecoders { p, states })
    }

    /// Feeds `[n_streams, 256]` float32 logits; returns one decoded byte per stream.
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        logits: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let logits = floats(logits, "logits")?;
        if logits.len() != self.states.len() * ALPHABET {
            return Err(raise(
                "InvalidInputError",
                format!(
                    "step: {} logits for {} streams",
                    logits.len(),
                    self.states.len()
                ),
            ));
        }
        let mut out = Vec::with_capacity(self.states.len());
        let mut cdf = [0u32; ALPHABET + 1];
        for (k, dec) in self.states.iter_mut().enumerate() {
            quantize(
                &logits[k * ALPHABET..(k + 1) * ALPHABET],
                self.p.cdf_bits,
                &mut cdf,
            )
            .map_err(to_py)?;
            out.push(dec.decode(&cdf) as u8);
        }
        Ok(PyBytes::new(py, &out))
    }
}

fn u32s(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u32>> {
    pyo3::buffer::PyBuffer::<u32>::get(obj)
        .map_err(|_| {
            raise(
                "InvalidInputError",
                format!("{what} must be a uint32 array"),
            )
        })?
        .to_vec(obj.py())
}

/// Quantises `[n, 256]` float32 logits into `[n, 257]` uint32 CDFs (little-endian bytes).
#[pyfunction]
fn ac_quantize<'py>(
    py: Python<'py>,
    logits: &Bound<'py, PyAny>,
    cdf_bits: u32,
) -> PyResult<Bound<'py, PyBytes>> {
    let logits = floats(logits, "logits")?;
    if logits.len() % ALPHABET != 0 {
        return Err(raise("InvalidInputError", "logits must be [n, 256]".into()));
    }
    let n = logits.len() / ALPHABET;
    let cdfs = py
        .detach(|| {
            let mut cdfs = vec![0u32; n * (ALPHABET + 1)];
            for (row, cdf) in logits
                .chunks_exact(ALPHABET)
                .zip(cdfs.chunks_exact_mut(ALPHABET + 1))
            {
                quantize(row, cdf_bits, cdf)?;
            }
            Ok(cdfs)
        })
        .map_err(to_py)?;
    let bytes: Vec<u8> = cdfs.iter().flat_map(|c| c.to_le_bytes()).collect();
    Ok(PyBytes::new(py, &bytes))
}

fn check_cdfs(cdfs: &[u32], n: usize, cdf_bits: u32) -> PyResult<()> {
    if cdfs.len() != n * (ALPHABET + 1) {
        return Err(raise(
            "InvalidInputError",
            format!("{} CDF entries for {n} positions of 257", cdfs.len()),
        ));
    }
    for cdf in cdfs.chunks_exact(ALPHABET + 1) {
        if cdf[0] != 0 || cdf[ALPHABET] != 1 << cdf_bits || cdf.windows(2).any(|w| w[1] <= w[0]) {
            return Err(raise(
                "InvalidInputError",
                "each CDF must rise strictly from 0 to 2^cdf_bits".into(),
            ));
        }
    }
    Ok(())
}

/// Plain arithmetic coding of `data` under given CDFs (`[len(data), 257]` uint32).
#[pyfunction]
fn ac_encode_cdfs<'py>(
    py: Python<'py>,
    cdfs: &Bound<'py, PyAny>,
    data: &[u8],
    state_bits: u32,
    cdf_bits: u32,
) -> PyResult<(Bound<'py, PyBytes>, u64)> {
    let p = byte_precision(state_bits, cdf_bits)?;
    let cdfs = u32s(cdfs, "cdfs")?;
    check_cdfs(&cdfs, data.len(), cdf_bits)?;
    let (bytes, len) = py.detach(|| {
        let mut enc = Encoder::new(p);
        for (cdf, &b) in cdfs.chunks_exact(ALPHABET + 1).zip(data) {
            enc.encode(cdf, b as usize);
        }
        enc.finish()
    });
    Ok((PyBytes::new(py, &bytes), len))
}

/// Decodes `n` bytes from `stream` under given CDFs (`[n, 257]` uint32).
#[pyfunction]
fn ac_decode_cdfs<'py>(
    py: Python<'py>,
    cdfs: &Bound<'py, PyAny>,
    stream: &[u8],
    n: usize,
    state_bits: u32,
    cdf_bits: u32,
) -> PyResult<Bound<'py, PyBytes>> {
    let p = byte_precision(state_bits, cdf_bits)?;
    let cdfs = u32s(cdfs, "cdfs")?;
    check_cdfs(&cdfs, n, cdf_bits)?;
    let out = py.detach(|| {
        let mut dec = Decoder::new(p, stream);
        cdfs.chunks_exact(ALPHABET + 1)
            .map(|cdf| dec.decode(cdf) as u8)
            .collect::<Vec<u8>>()
    });
    Ok(PyBytes::new(py, &out))
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(ac_quantize, m)?)?;
    m.add_function(wrap_pyfunction!(ac_encode_cdfs, m)?)?;
    m.add_function(wrap_pyfunction!(ac_decode_cdfs, m)?)?;
    m.add_function(wrap_pyfunction!(equalinfo_cut, m)?)?;
    m.add_function(wrap_pyfunction!(ac_encode, m)?)?;
    m.add_class::<PyWindowDecoders>()?;
    m.add_class::<PyLesterDecoders>()?;
    m.add_class::<PyAcDecoders>()?;
    Ok(())
}
