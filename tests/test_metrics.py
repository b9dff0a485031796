"""toklab.metrics against hand-computed values, with a tiny greedy tokenizer whose segmentations
are known by construction, and against the PyPI package tokenization-scorer."""

from __future__ import annotations

import csv
import doctest
import math

import numpy as np
import pytest

import toklab
import toklab.metrics as m
from conftest import SHARED_DATA, needs_shared
from toklab.errors import ConfigError, InvalidInputError


class Greedy:
    """Longest match over a fixed list of strings plus every single byte."""

    def __init__(self, pieces, unk=None):
        self.pieces = [bytes([b]) for b in range(256)] + [p.encode() for p in pieces]
        self.ids = {p: i for i, p in enumerate(self.pieces)}
        self.vocab_size = len(self.pieces)
        self.unk_ids = [] if unk is None else [self.ids[unk.encode()]]

    def encode(self, text):
        data, out, at = text.encode(), [], 0
        while at < len(data):
            n = max(k for k in range(1, len(data) - at + 1) if data[at : at + k] in self.ids)
            out.append(self.ids[data[at : at + n]])
            at += n
        return np.array(out, dtype=np.uint32)

    def token_bytes(self, i):
        return self.pieces[i]


def test_compression_and_fertility_by_hand():
    tok = Greedy(["the", " cat", " s", "at"])
    # "the" " cat" " s" "at": 4 tokens, 11 bytes; GPT-2 pre-tokens "the", " cat", " sat".
    c = m.compression(tok, ["the cat sat"])
    assert (c.bytes, c.tokens, c.bytes_per_token) == (11, 4, 2.75)
    f = m.fertility(tok, ["the cat sat"])
    assert (f.words, f.tokens, f.split_words) == (3, 4, 1)
    assert f.fertility == pytest.approx(4 / 3) and f.split_share == pytest.approx(1 / 3)
    # In context, no injected space: "cat" at the start of a text is its own pre-token.
    f = m.fertility(tok, ["cat"])
    assert (f.words, f.tokens, f.split_words) == (1, 2, 1)  # "c" + "at"
    # A token that covers more than a word leaves it unsplit: the GPT-2 pattern makes "a,"
    # two pre-tokens, "a" and ",", and one token "a," covers both.
    f = m.fertility(Greedy(["a,"]), ["a,"])
    assert (f.words, f.tokens, f.split_words) == (2, 1, 0)


def test_renyi_by_hand():
    # A uniform distribution over k tokens has H_a = log2 k for every a.
    r = m.renyi_efficiency([5, 5, 5, 5], alpha=2.5, vocab_size=16)
    assert r.entropy == pytest.approx(2.0) and r.by_observed == pytest.approx(1.0)
    assert r.by_vocab == pytest.approx(0.5) and r.observed == 4
    # Shannon at a = 1: p = (1/2, 1/4, 1/4) has 1.5 bits.
    assert m.renyi_efficiency([2, 1, 1], alpha=1.0).entropy == pytest.approx(1.5)
    # a = 2: -log2(1/4 + 1/16 + 1/16) = log2(8/3).
    r = m.renyi_efficiency([2, 1, 1], alpha=2.0, vocab_size=4)
    assert r.entropy == pytest.approx(math.log2(8 / 3)) and r.by_vocab == pytest.approx(
        math.log2(8 / 3) / 2
    )
    with pytest.raises(InvalidInputError):
        m.renyi_efficiency([0, 0])
    # Large alphas (p ** a underflows), alpha = inf (the min-entropy), and alphas next to 1
    # (where the general formula divides rounding error by a - 1): the limits, within 1e-6.
    for alpha in [100.0, 1e6, 1e308, math.inf]:
        assert m.renyi_efficiency(np.ones(2000), alpha=alpha).by_observed == pytest.approx(1.0)
    assert m.renyi_efficiency([2, 1, 1], alpha=math.inf).entropy == pytest.approx(1.0)
    shannon = m.renyi_efficiency([5, 3, 2, 1, 1], alpha=1.0).entropy
    for alpha in [1 - 1e-13, 1 + 1e-15, 1 + 1e-8, 1 - 1e-7]:
        near = m.renyi_efficiency([5, 3, 2, 1, 1], alpha=alpha).entropy
        assert near == pytest.approx(shannon, abs=1e-6), alpha
    assert m.renyi_efficiency(np.ones(50), alpha=1 - 1e-13).by_observed <= 1.0 + 1e-12
    # Counts that are not counts, and settings outside the definition: typed errors, not NaN.
    for bad in [[1, math.inf, 2], [1, math.nan], [1, -2, 3], ["a"], [[1, 2]]]:
        with pytest.raises(InvalidInputError):
            m.renyi_efficiency(bad)
    bad_settings = [{"alpha": math.nan}, {"alpha": -1.0}, {"vocab_size": 2}, {"vocab_size": -4}]
    bad_settings += [{"vocab_size": math.nan}, {"vocab_size": math.inf}, {"vocab_size": 7.5}]
    for kwargs in bad_settings:
        with pytest.raises(ConfigError):
            m.renyi_efficiency([1, 2, 3, 4, 5], **kwargs)
    # Counts whose sum overflows float64 have the same entropy as any scale of them.
    assert m.renyi_efficiency([1e308, 1e308, 1e308]).entropy == pytest.approx(math.log2(3))


def test_renyi_agrees_with_tokenization_scorer(small_tokenizer):
    scorer = pytest.importorskip("tokenization_scorer")
    from toklab.data import default_corpus

    text = next(default_corpus(["shakespeare"]))[:50_000]
    ids = small_tokenizer.encode(text)
    # tokenization-scorer reads whitespace-split token strings; ids as strings are exact.
    lines = [[str(i) for i in ids]]
    stats = m.vocabulary_stats(small_tokenizer, [text])
    ours = m.renyi_efficiency(np.bincount(ids), alpha=2.5, vocab_size=small_tokenizer.vocab_size)
    assert ours.by_observed == pytest.approx(stats["renyi_by_observed"])
    theirs = scorer.score(lines, metric="renyi", power=2.5)
    assert ours.by_observed == pytest.approx(theirs, rel=1e-9)
    theirs_v = scorer.score(lines, metric="renyi", power=2.5, vocab=small_tokenizer.vocab_size)
    assert ours.by_vocab == pytest.approx(theirs_v, rel=1e-9)


def test_vocabulary_stats_by_hand():
    tok = toklab.ByteTokenizer()
    s = m.vocabulary_stats(tok, ["aé"])  # 0x61, 0xC3, 0xA9
    assert s["tokens"] == 3 and s["distinct"] == 3
    assert s["utilisation"] == pytest.approx(3 / 256)
    assert s["byte_fallback_rate"] == pytest.approx(2 / 3) and s["unk_rate"] == 0
    g = Greedy(["?"], unk="?")
    assert m.vocabulary_stats(g, ["a??"])["unk_rate"] == pytest.approx(2 / 3)
    with pytest.raises(InvalidInputError):
        m.vocabulary_stats(tok, [""])


def test_morphscore_by_hand():
    tok = Greedy(["light", "ed", "cher", "ished", "cats"])
    items = [("lighted", "light", "ed"), ("cherished", "cherish", "ed"), ("cats", "cat", "s")]
    s = m.morphscore(tok, items)
    # lighted = light|ed: hit; cherished = cher|ished: miss; cats: one token, excluded.
    assert (s.items, s.included, s.hits) == (3, 2, 1)
    assert s.score == 0.5 and s.excluded_share == pytest.approx(1 / 3)


def test_boundaries_by_hand():
    tok = Greedy(["un", "happ", "ily"])
    b = m.boundary_prf(tok, [("unhappily", ["un", "happi", "ly"])])
    # predicted {2, 6}, gold {2, 7}
    assert (b.predicted, b.gold, b.correct) == (2, 2, 1)
    assert b.precision == 0.5 and b.recall == 0.5 and b.f1 == 0.5


def test_token_spans_paths_agree(small_tokenizer):
    text = "Naïve café — 東京 🙂 words"

    class NoOffsets:
        vocab_size = small_tokenizer.vocab_size
        encode = staticmethod(small_tokenizer.encode)
        token_bytes = staticmethod(small_tokenizer.token_bytes)

    a = m.token_spans(small_tokenizer, text)
    b = m.token_spans(NoOffsets(), text)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[1][-1] == len(text.encode())


def test_encoding_speed_is_positive():
    assert m.encoding_speed(toklab.ByteTokenizer(), ["abc" * 1000], repeat=1) > 0


@needs_shared
def test_load_morph_data():
    items = m.load_morphscore(SHARED_DATA / "morph" / "morphscore")
    assert len(items) == 22 and len(items["english"]) > 1000
    assert all(p + r == w for w, p, r in items["english"])
    # Every row of each file is kept or counted as dropped.
    for lang, kept in items.items():
        path = SHARED_DATA / "morph" / "morphscore" / f"{lang}_morph_data.csv"
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(kept) + kept.dropped == len(rows), lang
        spelled = sum(
            bool(r["pt1"] and r["rest"]) and r["pt1"] + r["rest"] == r["full_word"] for r in rows
        )
        assert len(kept) == spelled, lang
    assert items["gujarati"].dropped == 191 and items["english"].dropped == 0
    segs = m.load_segmentations(SHARED_DATA / "morph" / "en_morphynet_surface_brown.tsv")
    assert len(segs) > 10_000 and all("".join(ms) == w for w, ms in segs)


def test_doctests():
    import toklab.bytes
    import toklab.data
    import toklab.lm.score

    for module in [m, toklab.bytes, toklab.data, toklab.lm.score]:
        failed, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert tried > 0 and failed == 0, module.__name__


def test_texts_and_morphs_of_the_wrong_kind_are_refused():
    tok = toklab.ByteTokenizer()
    for texts in ([None], "one text", [b"bytes"]):
        with pytest.raises(InvalidInputError):
            m.fertility(tok, texts)
    # A str of morphs counted each character as a morph.
    for morphs in ("ab", ["a", "c"]):
        with pytest.raises(InvalidInputError):
            m.boundary_prf(tok, [("ab", morphs)])
    assert m.boundary_prf(tok, [("ab", ["a", "b"])]).f1 == 1.0
