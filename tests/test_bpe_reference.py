"""The Rust trainer and encoder against the slow, readable reference in reference_bpe.py."""

from __future__ import annotations

import warnings

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference_bpe
import toklab

# Small alphabets make many ties and overlapping pairs ("aaa"), the cases that go wrong.
texts = st.lists(
    st.text(alphabet=st.sampled_from("aab cdé\n'1"), min_size=1, max_size=40),
    min_size=1,
    max_size=12,
)


def rust_and_reference(corpus, vocab_size, **kw):
    counts = toklab.count_words(corpus, num_threads=1, progress=False)
    word_counts = dict(counts.most_common(len(counts)))
    with warnings.catch_warnings():
        # Tiny corpora often run out of pairs before vocab_size; that is part of what we test.
        warnings.simplefilter("ignore", toklab.TokLabWarning)
        tok = toklab.train_bpe_from_counts(counts, vocab_size=vocab_size, progress=False, **kw)
    ref_tokens, ref_merges = reference_bpe.train(word_counts, vocab_size, **kw)
    return tok, ref_tokens, ref_merges


def assert_same(tok, ref_tokens, ref_merges):
    assert tok.vocab() == ref_tokens
    assert [(a, b) for a, b, _ in tok.merges] == ref_merges


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corpus=texts, extra=st.integers(0, 40))
def test_trainer_matches_reference(corpus, extra):
    tok, ref_tokens, ref_merges = rust_and_reference(corpus, 256 + extra)
    assert_same(tok, ref_tokens, ref_merges)


@settings(max_examples=60, deadline=None)
@given(
    corpus=texts, min_frequency=st.integers(1, 4), max_len=st.one_of(st.none(), st.integers(1, 4))
)
def test_trainer_options_match_reference(corpus, min_frequency, max_len):
    kw = {"min_frequency": min_frequency, "max_token_length": max_len}
    tok, ref_tokens, ref_merges = rust_and_reference(corpus, 300, **kw)
    assert_same(tok, ref_tokens, ref_merges)


def test_trainer_matches_reference_on_real_text():
    from toklab.data import default_corpus

    text = next(default_corpus(["shakespeare"]))[:20_000]
    tok, ref_tokens, ref_merges = rust_and_reference([text], 400)
    assert_same(tok, ref_tokens, ref_merges)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("aab cdé\n'1"), max_size=300))
def test_encoder_matches_reference(small_tokenizer, text):
    tokens, merges = small_tokenizer.vocab(), [(a, b) for a, b, _ in small_tokenizer.merges]
    expected = []
    for piece in small_tokenizer.pieces(text):
        expected.extend(reference_bpe.encode_piece(piece.encode(), tokens, merges))
    assert small_tokenizer.encode_ordinary(text).tolist() == expected


def test_long_pieces_match_reference(small_tokenizer):
    """Pieces over 128 bytes take the heap path in Rust; the reference is the same loop."""
    tokens, merges = small_tokenizer.vocab(), [(a, b) for a, b, _ in small_tokenizer.merges]
    for piece in ["thethethe" * 40, "a" * 1000, "shallnotpass" * 30, "!?" * 200]:
        expected = reference_bpe.encode_piece(piece.encode(), tokens, merges)
        assert small_tokenizer.encode_ordinary(piece).tolist() == expected
