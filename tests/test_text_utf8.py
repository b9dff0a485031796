"""Large non-ASCII texts are converted to UTF-8 in Rust (`rust/py/text.rs`, `rust/utf.rs`),
reading CPython's characters in place, instead of by `PyUnicode_AsUTF8AndSize`: the ids must
be those of CPython's own UTF-8, for every width of `str`, on every entry point that takes
large texts."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toklab import _core
from toklab.bpe import PATTERNS
from toklab.bytespan import train_bytespan

# Past `MIN_CHARS` (4096): shorter texts always go through CPython.
LONG = 5000

_as_utf8 = ctypes.pythonapi.PyUnicode_AsUTF8AndSize
_as_utf8.restype = ctypes.c_void_p
_as_utf8.argtypes = [ctypes.py_object, ctypes.c_void_p]


def fresh(text: str) -> str:
    """An equal str that is a new object, so that CPython keeps no UTF-8 for it yet."""
    return "".join([text[: len(text) // 2], text[len(text) // 2 :]])


def kept(text: str) -> str:
    """An equal new str whose UTF-8 CPython keeps (so it is borrowed, not converted)."""
    s = fresh(text)
    _as_utf8(s, None)
    return s


def test_the_layout_is_known_where_it_should_be():
    expected = (
        platform.python_implementation() == "CPython"
        and sys.version_info[:2] in ((3, 11), (3, 12), (3, 13))
        and sys.maxsize > 2**32
        and sys.byteorder == "little"
    )
    assert _core.str_layout_checked() is expected


def test_turning_the_layout_off_is_honoured():
    code = "from toklab import _core; print(_core.str_layout_checked())"
    env = {**os.environ, "TOKLAB_NO_STR_LAYOUT": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


# One alphabet per width of str: Latin-1, UCS-2 (BMP), UCS-4 (astral), each with ASCII.
ALPHABETS = {
    "latin1": st.characters(max_codepoint=0xFF),
    "ucs2": st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)),
    "ucs4": st.characters(exclude_categories=("Cs",)),
}


def long_text(alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    # A long text from a short sample (hypothesis keeps examples small): the sample repeated,
    # with ASCII runs, so that both the ASCII blocks and the others are met.
    return st.tuples(st.text(alphabet, min_size=1, max_size=60), st.text(max_size=20)).map(
        lambda t: (t[0] + " plain ASCII words " + t[1]) * (LONG // (len(t[0]) + 19 + len(t[1])) + 1)
    )


@pytest.mark.parametrize("width", sorted(ALPHABETS))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_bpe_ids_equal_those_of_cpythons_utf8(small_tokenizer, width, data):
    text = data.draw(long_text(ALPHABETS[width]))
    converted = fresh(text)
    size = sys.getsizeof(converted)
    ours = small_tokenizer.encode_ordinary(converted)
    # Converted here (or ASCII, its own UTF-8): CPython keeps no UTF-8 in the str, which
    # `__sizeof__` would count.
    assert sys.getsizeof(converted) == size
    assert text.isascii() or size < sys.getsizeof(kept(text))
    theirs = small_tokenizer.encode_ordinary(kept(text))
    assert np.array_equal(ours, theirs)
    assert np.array_equal(ours, small_tokenizer.encode_bytes(text.encode("utf-8")))
    assert small_tokenizer.decode(ours) == text


def test_every_bpe_entry_point_agrees(small_tokenizer):
    text = ("Grüße, 日本語 😀 and ÿ; " * 400) + "end"
    for encode in (
        lambda t: small_tokenizer.encode(t),
        lambda t: small_tokenizer.encode_ordinary(t, num_threads=2),
        lambda t: small_tokenizer.encode_batch([t, "short é", t], num_threads=1)[2],
        lambda t: small_tokenizer.encode_batch([t, "short é", t], num_threads=2)[0],
    ):
        assert np.array_equal(encode(fresh(text)), encode(kept(text)))
    ids, offsets = small_tokenizer.encode_with_offsets(fresh(text))
    ids2, offsets2 = small_tokenizer.encode_with_offsets(kept(text))
    assert np.array_equal(ids, ids2) and np.array_equal(np.asarray(offsets), np.asarray(offsets2))


def test_a_converted_text_is_left_as_it_was(small_tokenizer):
    # Long enough to be converted here, and left with no UTF-8 kept in it (short texts and
    # those with CPython's conversion keep theirs, counted by `__sizeof__`).
    for text, converted in (("naïve café " * 1000, True), ("naïve café", False)):
        s = fresh(text)
        size = sys.getsizeof(s)
        small_tokenizer.encode(s)
        assert (sys.getsizeof(s) == size) is converted


def test_lone_surrogates_in_long_texts_raise_as_in_short_ones(small_tokenizer):
    for bad in ("\ud800", "\udfff"):
        for text in ("é" * LONG + bad, bad + "€" * LONG, "😀" * LONG + bad + "x" * 20):
            with pytest.raises(UnicodeEncodeError):
                small_tokenizer.encode(text)
            with pytest.raises(UnicodeEncodeError):
                small_tokenizer.encode_batch(["ok", text], num_threads=2)


def test_str_subclasses_go_through_cpython(small_tokenizer):
    class Text(str):
        pass

    text = "Grüße 日本語 " * 600
    assert np.array_equal(small_tokenizer.encode(Text(text)), small_tokenizer.encode(kept(text)))


def test_bytespan_agrees_on_long_texts():
    texts = [("Grüße, naïve 日本語 words and more words 😀 " * 200) + str(i) for i in range(6)]
    rng = np.random.default_rng(0)
    signals = [rng.random(len(t.encode("utf-8")), dtype=np.float32) for t in texts]
    a = _core.global_spans([fresh(t) for t in texts], signals, PATTERNS["gpt2"], 40, 2, 1)
    b = _core.global_spans([kept(t) for t in texts], signals, PATTERNS["gpt2"], 40, 2, 1)
    assert a == b and a[0]
    tok = train_bytespan(texts, vocab_size=600, signals=signals)
    assert np.array_equal(tok.encode(fresh(texts[0])), tok.encode(kept(texts[0])))
    assert tok.decode(tok.encode(fresh(texts[0]))) == texts[0]


def test_large_texts_are_encoded_in_parts_exactly(small_tokenizer):
    # Past 65,536 characters, `encode_ordinary` converts and encodes a text in parts, each up
    # to its last safe cut: the ids are those of the whole text, with cuts and without.
    line = "Grüße,\nnaïve 日本語 words 😀\n\n  indented\nx's 1234\r\n"
    for text in (line * 5000, line.replace("\n", " ") * 5000, "é" * 200_000, "€a\n" * 70_000):
        ours = small_tokenizer.encode_ordinary(fresh(text))
        assert np.array_equal(ours, small_tokenizer.encode_ordinary(kept(text)))
        assert small_tokenizer.decode(ours) == text
    # A lone surrogate in a later part: CPython's error, as for any text.
    for bad in ("é" * 150_000 + "\ud800", "😀\n" * 100_000 + "\udc00"):
        with pytest.raises(UnicodeEncodeError):
            small_tokenizer.encode_ordinary(bad)
