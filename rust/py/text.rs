//! A Python `str`'s UTF-8, for the calls that take large texts.
//!
//! Borrowing a `str` as UTF-8 (`PyUnicode_AsUTF8AndSize`, what PyO3's `&str` does) makes
//! CPython convert it, one character at a time, and keep the result in the object. For a
//! fresh `str` that is not all ASCII this costs about 2 ns a character: 40 ms for a 20 MB
//! multilingual text, more than a tenth of a first BPE encode of it. [`Utf8Text`] converts
//! large such texts itself instead ([`crate::utf`]: sixteen characters at a time where they
//! are ASCII), reading the characters where CPython keeps them.
//!
//! The stable ABI has no call that lends a `str`'s characters, so this reads CPython's own
//! layout of a compact `str` (its length, kind and data), known for CPython 3.11 to 3.13 on
//! 64-bit little-endian machines, and checked once per process against CPython's own
//! conversion on strings of every kind: elsewhere, or if any check fails, texts go through
//! `PyUnicode_AsUTF8AndSize` as before. So do ASCII texts (their characters are their UTF-8),
//! texts whose UTF-8 CPython already keeps, short texts, subclasses of `str`, and texts with
//! a lone surrogate (for CPython's own error).

use std::ops::Deref;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;

/// A text's UTF-8: borrowed from the `str` (which keeps it), or converted here.
pub(crate) enum Utf8Text {
    Borrowed(PyBackedStr),
    Owned(String),
}

impl Deref for Utf8Text {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Utf8Text::Borrowed(s) => s,
            Utf8Text::Owned(s) => s,
        }
    }
}

impl AsRef<str> for Utf8Text {
    fn as_ref(&self) -> &str {
        self
    }
}

/// Shorter texts (in characters) are left to CPython, which keeps their UTF-8 for next time.
const MIN_CHARS: usize = 4096;

impl Utf8Text {
    /// `text`'s UTF-8 (the GIL is released while it converts).
    pub(crate) fn new(text: &Bound<'_, PyString>) -> PyResult<Self> {
        if let Some(chars) = chars_of(text) {
            if let Some(s) = text.py().detach(|| chars.to_utf8()) {
                return Ok(Utf8Text::Owned(s));
            }
        }
        Ok(Utf8Text::Borrowed(PyBackedStr::try_from(text.clone())?))
    }

    /// Each of `texts`' UTF-8, the texts converted here on up to `threads` threads (0: all
    /// cores; the GIL is released meanwhile).
    pub(crate) fn all(
        py: Python<'_>,
        texts: &[Bound<'_, PyString>],
        threads: usize,
    ) -> PyResult<Vec<Self>> {
        let chars: Vec<Option<Chars>> = texts.iter().map(chars_of).collect();
        let converted: Vec<Option<String>> =
            py.detach(|| crate::par::map(&chars, threads, |c| c.as_ref().and_then(Chars::to_utf8)));
        texts
            .iter()
            .zip(converted)
            .map(|(text, utf8)| match utf8 {
                Some(s) => Ok(Utf8Text::Owned(s)),
                None => Ok(Utf8Text::Borrowed(PyBackedStr::try_from(text.clone())?)),
            })
            .collect()
    }
}

/// A compact `str`'s characters, in their width.
pub(crate) enum Chars<'a> {
    Latin1(&'a [u8]),
    Ucs2(&'a [u16]),
    Ucs4(&'a [u32]),
}

/// The characters of `text` where [`Utf8Text`] would convert it here (see its conditions),
/// for a caller that converts it in parts ([`Chars::push_utf8`]).
pub(crate) fn chars_of<'a>(text: &'a Bound<'_, PyString>) -> Option<Chars<'a>> {
    let layout = layout(text.py())?;
    // SAFETY: an exact `str` (checked) in the layout checked for this CPython; the
    // characters are immutable and live as long as `text`.
    unsafe { layout.chars(text, MIN_CHARS) }
}

impl Chars<'_> {
    /// How many characters.
    pub(crate) fn len(&self) -> usize {
        match *self {
            Chars::Latin1(c) => c.len(),
            Chars::Ucs2(c) => c.len(),
            Chars::Ucs4(c) => c.len(),
        }
    }

    /// The most bytes of UTF-8 that they can take.
    pub(crate) fn most_bytes(&self) -> usize {
        match *self {
            Chars::Latin1(c) => 2 * c.len(),
            Chars::Ucs2(c) => 3 * c.len(),
            Chars::Ucs4(c) => 4 * c.len(),
        }
    }

    /// Appends the UTF-8 of characters `range` to `out`; false (and `out` unchanged) for a
    /// lone surrogate.
    pub(crate) fn push_utf8(&self, range: std::ops::Range<usize>, out: &mut String) -> bool {
        match *self {
            Chars::Latin1(c) => {
                crate::utf::push_latin1(&c[range], out);
                true
            }
            Chars::Ucs2(c) => crate::utf::push_ucs2(&c[range], out),
            Chars::Ucs4(c) => crate::utf::push_ucs4(&c[range], out),
        }
    }

    /// The UTF-8, or `None` for a lone surrogate.
    fn to_utf8(&self) -> Option<String> {
        let mut out = String::new();
        self.push_utf8(0..self.len(), &mut out).then_some(out)
    }
}

/// Where a compact `str` keeps its parts, in bytes from the object's start.
#[derive(Clone, Copy)]
struct Layout {
    /// The characters of a compact non-ASCII string (after `PyCompactUnicodeObject`).
    data: usize,
    /// The pointer to the UTF-8 that CPython keeps (null until it makes it).
    utf8: usize,
    /// Whether the state's bit 7 is `ready` (3.11), which must then be set.
    ready_bit: bool,
}

/// `PyASCIIObject`'s `length` and `state`, in every version here.
const LENGTH: usize = 16;
const STATE: usize = 32;

impl Layout {
    /// For this CPython (by version), if every check passes.
    fn detect(py: Python<'_>) -> Option<Layout> {
        if !cfg!(all(target_pointer_width = "64", target_endian = "little")) {
            return None;
        }
        let v = py.version_info();
        let layout = match (v.major, v.minor) {
            (3, 11) => Layout {
                data: 72,
                utf8: 56,
                ready_bit: true,
            },
            (3, 12) | (3, 13) => Layout {
                data: 56,
                utf8: 48,
                ready_bit: false,
            },
            _ => return None,
        };
        layout.check(py).then_some(layout)
    }

    /// Reads strings of every kind as this layout says, against what CPython makes of them.
    fn check(self, py: Python<'_>) -> bool {
        let texts = [
            "plain ASCII only, long enough to fill several blocks of sixteen".repeat(3),
            "Latin-1: café, naïve, Straße, ÿ ".repeat(9),
            "UCS-2: € ЖЖ 日本語 ﬁ ".repeat(11),
            "UCS-4: 😀 𝄞 𐍈 and ASCII ".repeat(7),
            "éè".to_string(),
            "€".repeat(17),
            "😀".repeat(33),
        ];
        let kinds = [None, Some(1), Some(2), Some(4), Some(1), Some(2), Some(4)];
        for (text, kind) in texts.iter().zip(kinds) {
            let s = PyString::new(py, text);
            // SAFETY: `chars` only reads this exact `str` at the candidate layout's offsets,
            // all inside a compact non-ASCII object's header and characters for a layout that
            // is right; a wrong one is caught below by comparing with CPython's answers (the
            // version was matched first, so the header is the one these offsets read).
            let got = unsafe { self.chars(&s, 0) };
            let converted = got.as_ref().and_then(Chars::to_utf8);
            let width = got.as_ref().map(|c| match c {
                Chars::Latin1(_) => 1,
                Chars::Ucs2(_) => 2,
                Chars::Ucs4(_) => 4,
            });
            if width != kind || (kind.is_some() && converted.as_deref() != Some(text.as_str())) {
                return false;
            }
            // Once CPython keeps the UTF-8, its pointer is where this layout says.
            let Ok(kept) = s.to_str() else { return false };
            if kind.is_some() {
                // SAFETY: as above; the pointer field is inside the compact header.
                let ptr =
                    unsafe { (s.as_ptr().cast::<u8>().add(self.utf8) as *const *const u8).read() };
                // SAFETY: as above.
                if ptr != kept.as_ptr() || unsafe { self.chars(&s, 0) }.is_some() {
                    return false;
                }
            }
        }
        true
    }

    /// `text`'s characters where it is an exact, compact, non-ASCII `str` of `min_chars`
    /// characters or more whose UTF-8 CPython does not keep yet.
    ///
    /// # Safety
    /// This must be the layout of the running CPython (see [`Layout::detect`]).
    unsafe fn chars<'a>(
        self,
        text: &'a Bound<'_, PyString>,
        min_chars: usize,
    ) -> Option<Chars<'a>> {
        let obj = text.as_ptr();
        if ffi::PyUnicode_CheckExact(obj) == 0 {
            return None;
        }
        let base = obj.cast::<u8>();
        let state = base.add(STATE).cast::<u32>().read();
        let (kind, compact, ascii) = ((state >> 2) & 7, (state >> 5) & 1, (state >> 6) & 1);
        if compact == 0 || ascii == 1 || (self.ready_bit && (state >> 7) & 1 == 0) {
            return None;
        }
        let len = base.add(LENGTH).cast::<isize>().read();
        // (Against the stable ABI's answer: a layout that reads the wrong field gives up.)
        if len < 0 || (len as usize) < min_chars || len != ffi::PyUnicode_GetLength(obj) {
            return None;
        }
        if !base.add(self.utf8).cast::<*const u8>().read().is_null() {
            return None; // CPython keeps the UTF-8 already: borrowing it is free
        }
        let data = base.add(self.data);
        let n = len as usize;
        match kind {
            1 => Some(Chars::Latin1(std::slice::from_raw_parts(data, n))),
            2 => Some(Chars::Ucs2(std::slice::from_raw_parts(data.cast(), n))),
            4 => Some(Chars::Ucs4(std::slice::from_raw_parts(data.cast(), n))),
            _ => None,
        }
    }
}

/// The checked layout of this CPython's `str`, or `None` (found once per process).
fn layout(py: Python<'_>) -> Option<Layout> {
    // (Found with the GIL held: a `std` once-lock could deadlock with a thread waiting for
    // the GIL inside it.)
    static LAYOUT: PyOnceLock<Option<Layout>> = PyOnceLock::new();
    *LAYOUT.get_or_init(py, || {
        let off = std::env::var_os("TOKLAB_NO_STR_LAYOUT");
        if off.is_some_and(|v| !v.is_empty() && v != "0") {
            return None;
        }
        Layout::detect(py)
    })
}

/// Whether large texts are converted here (the layout of this CPython's `str` known and
/// checked), for the tests.
#[pyfunction]
pub(crate) fn str_layout_checked(py: Python<'_>) -> bool {
    layout(py).is_some()
}
