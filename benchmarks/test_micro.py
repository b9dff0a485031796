"""Micro-benchmarks of toklab's hot loops (pytest-benchmark; not run in CI).

    python -m pytest benchmarks/test_micro.py --benchmark-only

Each benchmark isolates one loop on a fixed 1 MB slice of the embedded corpus: pre-tokenization
(hand-written matcher against the regex engine), counting, the merge loop of training, piece
encoding (short pieces, and one long piece through the linear-time path), and decoding.
"""

from __future__ import annotations

import pytest

import toklab
from toklab import _core
from toklab.data import default_corpus

pytest.importorskip("pytest_benchmark")


@pytest.fixture(scope="module")
def text() -> str:
    return next(default_corpus(["brown"]))[:1_000_000]


@pytest.fixture(scope="module")
def tok(text) -> toklab.BPETokenizer:
    return toklab.train_bpe([text], vocab_size=8_192, progress=False)


@pytest.mark.parametrize("engine", ["fast", "regex"])
def test_pretokenize(benchmark, text, engine):
    benchmark(_core.pretokenize, text, "cl100k", engine)


def test_count_words(benchmark, text):
    benchmark(toklab.count_words, [text], num_threads=1, progress=False)


def test_merge_loop(benchmark, text):
    counts = toklab.count_words([text], num_threads=1, progress=False)
    benchmark(toklab.train_bpe_from_counts, counts, vocab_size=8_192, progress=False)


def test_encode_ordinary(benchmark, tok, text):
    benchmark(tok.encode_ordinary, text)


def test_encode_long_piece(benchmark, tok):
    benchmark(tok.encode_ordinary, "abcdefghij" * 100_000)


def test_decode(benchmark, tok, text):
    ids = tok.encode_ordinary(text)
    benchmark(tok.decode_bytes, ids)
