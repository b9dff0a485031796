"""ByteTokenizer: the identity over UTF-8 bytes, with optional special tokens."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import toklab
from toklab.errors import (
    ConfigError,
    CorruptFileError,
    DisallowedSpecialTokenError,
    InvalidIdsError,
    UnknownTokenError,
)


@given(st.text())
def test_round_trip(text):
    tok = toklab.ByteTokenizer()
    ids = tok.encode(text)
    assert ids.dtype == np.uint32 and ids.tolist() == list(text.encode("utf-8", "surrogatepass"))
    assert tok.decode_bytes(ids) == text.encode("utf-8", "surrogatepass")


@given(st.binary())
def test_any_bytes(data):
    tok = toklab.ByteTokenizer()
    assert tok.decode_bytes(tok.encode_bytes(data)) == data


def test_special_tokens():
    tok = toklab.ByteTokenizer(["<|endoftext|>", "<|pad|>"])
    assert tok.vocab_size == 258 and tok.special_tokens == {"<|endoftext|>": 256, "<|pad|>": 257}
    text = "a<|endoftext|>b<|pad|>"
    with pytest.raises(DisallowedSpecialTokenError, match="allowed_special"):
        tok.encode(text)
    assert tok.encode(text, allowed_special="all").tolist() == [97, 256, 98, 257]
    assert tok.encode(text, allowed_special={"<|pad|>"}, disallowed_special=()).tolist() == [
        *b"a<|endoftext|>b",
        257,
    ]
    assert tok.encode_ordinary(text).tolist() == list(text.encode())
    assert tok.decode([97, 256, 98]) == "a<|endoftext|>b"
    assert tok.token_bytes(257) == b"<|pad|>"
    with pytest.raises(ConfigError):
        toklab.ByteTokenizer(["x", "x"])


def test_bad_ids_and_text():
    tok = toklab.ByteTokenizer()
    with pytest.raises(UnknownTokenError):
        tok.decode([256])
    with pytest.raises(UnknownTokenError):
        tok.decode([-1])
    with pytest.raises(InvalidIdsError):
        tok.decode([1.5])
    with pytest.raises(UnknownTokenError):
        tok.token_bytes(300)
    with pytest.raises(TypeError):
        tok.encode(b"bytes")
    assert tok.encode("").size == 0 and tok.decode([]) == ""


def test_special_token_options_and_bytes_are_checked_as_bpes_are():
    tok = toklab.ByteTokenizer(["<s>"])
    bpe = toklab.train_bpe(["the cat"] * 5, vocab_size=258, special_tokens=["<s>"])
    for t in (tok, bpe):
        with pytest.raises(ConfigError, match="not special tokens"):
            t.encode("foo", allowed_special={"foo"})
        with pytest.raises(ConfigError, match="not special tokens"):
            t.encode("foo", disallowed_special={"foo"})
        with pytest.raises(ConfigError, match="not a str"):
            t.encode("<s>", allowed_special="<s>")
        assert t.decode(t.encode("a<s>", allowed_special={"<s>"})) == "a<s>"
    with pytest.raises(TypeError):
        tok.encode_bytes(5)  # (bytes(5) is five zero bytes)
    with pytest.raises(TypeError):
        tok.encode_bytes([300])
    with pytest.raises(TypeError):
        tok.token_bytes(True)
    assert tok.encode_bytes(bytearray(b"\xff")).tolist() == [255]
    assert tok.encode_bytes(np.frombuffer(b"hi", np.uint8)).tolist() == [104, 105]
    with pytest.raises(TypeError):
        tok.encode_bytes(np.array([1, 2], np.int64))
    for bad in ("<s>", [1], ["a\ud800"]):
        with pytest.raises(ConfigError):
            toklab.ByteTokenizer(bad)


def test_save_load_pickle(tmp_path):
    tok = toklab.ByteTokenizer(["<|endoftext|>"])
    path = tmp_path / "bytes.json"
    tok.save(path)
    assert toklab.load(path) == tok
    assert toklab.loads(tok.to_json()) == tok
    assert pickle.loads(pickle.dumps(tok)) == tok
    path.write_text('{"format": "toklab.bytes", "version": 2}')
    with pytest.raises(CorruptFileError, match="version"):
        toklab.load(path)
    path.write_text('{"format": "toklab.bytes", "version": 1, "special_tokens": [1]}')
    with pytest.raises(CorruptFileError):
        toklab.load(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(CorruptFileError):
        toklab.load(path)


def test_unknown_error_handlers_are_refused_whatever_the_bytes():
    from toklab.bytespan import ByteSpan

    bpe = toklab.train_bpe(["the cat"] * 5, vocab_size=258)
    for tok in (toklab.ByteTokenizer(), bpe, ByteSpan([]), toklab.StochasTok(bpe, p=0.1)):
        ids = tok.encode("ok")
        assert tok.decode(ids, errors="strict") == "ok"
        with pytest.raises(ConfigError, match="error handler"):
            tok.decode(ids, errors="bogus")  # (valid bytes: bytes.decode never looks it up)
    assert toklab.ByteTokenizer().decode([0xFF], errors="surrogateescape") == "\udcff"
