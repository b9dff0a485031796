"""ByteSpan: span finding against a readable reference written from the brief's pseudocode,
longest-match inference against a slow reference, exact round trips, signals from a byte GPT,
training end to end, saving, and bad input."""

from __future__ import annotations

import collections
import pickle
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import toklab
from toklab import _core
from toklab.bpe import PATTERNS
from toklab.bytespan import ALPHABET, ByteSpan, train_bytespan
from toklab.errors import ConfigError, CorruptFileError, EmptyCorpusError, InvalidInputError


def reference_spans(text, signal, threshold=None):
    """The brief's pseudocode (ByteCurveTokenizerTrainer.find_subword_boundaries), one step at a
    time: grouped[t] = d[t] < 0 or s[t] < threshold, d[0] = +1; a span is an onset and its
    grouped run (length >= 2); absorb the space that opens the pre-token; never end on the first
    byte of the next pre-token; cut at internal pre-token boundaries."""
    data = text.encode()
    ptb = [False] * len(data)
    at = 0
    for piece in _core.pretokenize(text, PATTERNS["gpt2"]):
        if piece:
            ptb[at] = True
        at += len(piece.encode())
    d = [1.0] + [signal[t] - signal[t - 1] for t in range(1, len(data))]
    grouped = [
        t > 0 and (d[t] < 0 or (threshold is not None and signal[t] < threshold))
        for t in range(len(data))
    ]
    out = collections.Counter()
    i = 0
    while i < len(data):
        j = i
        while j + 1 < len(data) and grouped[j + 1]:
            j += 1
        nxt = j + 1
        if j > i:
            if not ptb[i] and i > 0 and data[i - 1] == 32 and ptb[i - 1]:
                i -= 1
            if ptb[j]:
                j -= 1
            if i < j:
                start = i
                for k in range(i + 1, j + 1):
                    if ptb[k]:
                        if k - start >= 2:
                            out[(ptb[start], data[start:k])] += 1
                        start = k
                if j + 1 - start >= 2:
                    out[(ptb[start], data[start : j + 1])] += 1
        i = nxt
    return out


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200), st.integers(0, 2**31), st.booleans())
def test_span_finding_matches_the_reference(text, seed, combined):
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return  # lone surrogates are not text
    n = len(text.encode())
    signal = np.random.default_rng(seed).integers(0, 5, size=n).astype(np.float32)
    threshold = 1.5 if combined else None
    got = _core.span_counts([text], [signal], PATTERNS["gpt2"], threshold, 1)
    assert collections.Counter({(f, b): c for f, b, c in got}) == reference_spans(
        text, signal, threshold
    )


def reference_encode(vocab: ByteSpan, text: str) -> list[int]:
    initial = {}
    cont = {}
    for i in range(vocab.vocab_size):
        table = initial if vocab.is_word_initial(i) else cont
        table.setdefault(vocab.token_bytes(i), i)
    out = []
    for piece in _core.pretokenize(text, PATTERNS["gpt2"]):
        data = piece.encode()
        at = 0
        while at < len(data):
            table = initial if at == 0 else cont
            n = max(k for k in range(1, len(data) - at + 1) if data[at : at + k] in table)
            out.append(table[data[at : at + n]])
            at += n
    return out


WORDS = [" the", " un", "believ", "able", " ##", "##", "ing", " th", "e", " Ġ", "Ġx"]


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=120), st.lists(st.sampled_from(WORDS), max_size=20))
def test_longest_match_and_round_trip(text, chosen):
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return
    learned = [(w.startswith(" "), w.encode()) for w in chosen]
    vocab = ByteSpan(learned)
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text
    assert ids.tolist() == reference_encode(vocab, text)


def test_markers_are_plain_text():
    vocab = ByteSpan([(True, b" ##"), (False, b"##"), (True, "Ġ".encode())])
    for text in ["##", " ##x##", "Ġ Ġ", "a##b ## ##", "<|unk|>"]:
        assert vocab.decode(vocab.encode(text)) == text


@pytest.fixture(scope="module")
def byte_lm():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    import toklab.lm as lm
    from toklab.data import default_corpus

    text = next(default_corpus(["shakespeare"]))[:200_000]
    return lm.train_lm(
        toklab.ByteTokenizer(),
        [text],
        preset="tiny",
        budget_bytes=150_000,
        lr=3e-3,
        device="cpu",
        progress=False,
    ).lm


def test_signals_agree_with_scoring(byte_lm):
    import math

    import toklab.lm as lm
    from toklab.bytespan import byte_signals

    texts = ["To be, or not to be: that is the question. " * 4, "é ok", ""]
    sig = byte_signals(byte_lm, texts)
    for t, (s, e) in zip(texts, sig):
        n = len(t.encode())
        assert s.shape == (n,) and e.shape == (n,) and s.dtype == np.float32
        assert np.isfinite(s).all() and (e >= -1e-5).all() and (e <= math.log(256) + 1e-4).all()
    # The surprisals add up to the bits that scoring reports.
    score = lm.evaluate(byte_lm, texts[:2])
    total = sum(float(s.sum()) for s, _ in sig) / math.log(2)
    assert total == pytest.approx(score.bits, rel=1e-4)


def test_train_end_to_end(byte_lm, tmp_path):
    from toklab.data import default_corpus

    docs = [d for d in next(default_corpus(["shakespeare"])).split("\n\n") if d][:1500]
    vocabs = {}
    for constraint in ["monotonic", "combined"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", toklab.TokLabWarning)
            v = train_bytespan(
                docs,
                vocab_size=1500,
                byte_lm=byte_lm,
                constraint=constraint,
                cache_dir=tmp_path,
            )
        vocabs[constraint] = v
        assert ALPHABET < v.vocab_size <= 1500
        assert all(v.decode(v.encode(d)) == d for d in docs[:200])
        assert v.metadata["constraint"] == constraint
    assert vocabs["monotonic"].learned() != vocabs["combined"].learned()
    assert len(list(tmp_path.glob("signals-*.npz"))) == 1  # scored once, then cached
    # ByteSpan compresses the text it was trained on better than bytes.
    text = "\n\n".join(docs[:200])
    assert len(vocabs["combined"].encode(text)) < 0.7 * len(text.encode())


def test_saving(tmp_path):
    v = ByteSpan([(True, b" the"), (False, b"ing"), (True, bytes([0xE6, 0x97]))], metadata={"a": 1})
    path = tmp_path / "bs.json"
    v.save(path)
    again = toklab.load(path)
    assert isinstance(again, ByteSpan) and again.learned() == v.learned()
    assert again.metadata == {"a": 1}
    assert pickle.loads(pickle.dumps(v)).learned() == v.learned()
    path.write_text('{"format": "toklab.bytespan", "version": 1, "tokens": [[1, "%%%"]]}')
    with pytest.raises(CorruptFileError):
        toklab.load(path)


def test_bad_input():
    docs = ["hello world", "foo bar"]
    sig = [np.ones(11, np.float32), np.ones(7, np.float32)]
    with pytest.raises(ConfigError, match="at least 512"):
        train_bytespan(docs, vocab_size=300, signals=sig)
    with pytest.raises(InvalidInputError, match="signal values"):
        train_bytespan(docs, vocab_size=600, signals=[np.ones(5, np.float32), sig[1]])
    with pytest.raises(InvalidInputError, match="NaN"):
        train_bytespan(docs, vocab_size=600, signals=[np.full(11, np.nan, np.float32), sig[1]])
    with pytest.raises(InvalidInputError):
        train_bytespan(docs, vocab_size=600, signals=sig[:1])
    with pytest.raises(EmptyCorpusError):
        train_bytespan(["", ""], vocab_size=600, signals=[])
    with pytest.raises(ConfigError, match="global"):
        train_bytespan(docs, vocab_size=600, signals=sig, constraint="global")
    with pytest.raises(InvalidInputError, match="zero everywhere"):
        train_bytespan(
            docs, vocab_size=600, signals=[np.zeros(11, np.float32), np.zeros(7, np.float32)]
        )
    with pytest.raises(toklab.UnknownTokenError):
        ByteSpan([]).decode([600])


def test_cli_train_encode_decode(tmp_path):
    pytest.importorskip("torch")
    from click.testing import CliRunner

    from toklab.cli import main
    from toklab.data import default_corpus

    corpus = tmp_path / "c.txt"
    corpus.write_text(next(default_corpus(["shakespeare"]))[:60_000], encoding="utf-8")
    out = tmp_path / "bs.json"
    runner = CliRunner()
    args = ["train", str(corpus), "--method", "bytespan", "--vocab-size", "700", "-o", str(out)]
    args += ["--lm-preset", "tiny", "--lm-budget", "30k", "--device", "cpu", "--signal"]
    r = runner.invoke(main, [*args, "surprisal", "--constraint", "monotonic"])
    assert r.exit_code == 0, r.output
    tok = toklab.load(out)
    assert isinstance(tok, ByteSpan) and tok.metadata["signal"] == "surprisal"
    ids, back = tmp_path / "ids.npy", tmp_path / "back.txt"
    assert runner.invoke(main, ["encode", str(out), str(corpus), "-o", str(ids)]).exit_code == 0
    r = runner.invoke(main, ["decode", str(out), str(ids), "-o", str(back)])
    assert r.exit_code == 0, r.output
    assert back.read_bytes() == corpus.read_bytes()
    r = runner.invoke(main, [*args[:-1], "--vocab-size", "10"])
    assert r.exit_code != 0
