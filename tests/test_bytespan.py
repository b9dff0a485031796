"""ByteSpan: span finding against a readable reference written from the brief's pseudocode,
longest-match inference against a slow reference, exact round trips, signals from a byte GPT,
training end to end, saving, and bad input."""

from __future__ import annotations

import collections
import itertools
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


def pre_token_starts(text):
    data = text.encode()
    ptb = [False] * len(data)
    at = 0
    for piece in _core.pretokenize(text, PATTERNS["gpt2"]):
        if piece:
            ptb[at] = True
        at += len(piece.encode())
    return ptb


def reference_global(texts, signals, want, min_count):
    """The global constraint from its definition, recounting every segment after every byte:
    bytes grow from the lowest signal up (ties by position in the corpus); segments are the
    maximal runs of grown bytes inside one pre-token; a segment's string takes in the space
    before it when that space opens its pre-token; stop as soon as `want` strings of two bytes
    or more occur `min_count` times."""
    data = b"".join(t.encode() for t in texts)
    ptb = [f for t in texts for f in pre_token_starts(t)]
    sig = [float(x) for s in signals for x in s]
    grown = [False] * len(data)

    def segment_counts():
        counts = collections.Counter()
        t = 0
        while t < len(data):
            if grown[t]:
                left = t
                while t + 1 < len(data) and grown[t + 1] and not ptb[t + 1]:
                    t += 1
                if left > 0 and not ptb[left] and ptb[left - 1] and data[left - 1] == 32:
                    left -= 1
                if t + 1 - left >= 2:
                    counts[(ptb[left], data[left : t + 1])] += 1
            t += 1
        return counts

    good = {}
    steps = 0
    if want > 0:
        for t in sorted(range(len(data)), key=lambda t: (sig[t], t)):
            grown[t] = True
            steps += 1
            good = {k: c for k, c in segment_counts().items() if c >= min_count}
            if len(good) >= want:
                break
    ranked = sorted(good.items(), key=lambda kc: (-kc[1], len(kc[0][1]), kc[0]))
    return [(f, b, c) for (f, b), c in ranked[:want]], steps


GLOBAL_WORDS = [" the", " cat", "the", ".", " ", "  ", "a", " a", "\n", "é", "##", "ab"]
GLOBAL_DOCS = st.lists(st.lists(st.sampled_from(GLOBAL_WORDS), max_size=25), min_size=1, max_size=4)


@settings(max_examples=120, deadline=None)
@given(
    GLOBAL_DOCS,
    st.integers(0, 2**31),
    st.integers(0, 8),
    st.integers(1, 3),
)
def test_global_constraint_matches_the_reference(docs, seed, want, min_count):
    texts = ["".join(d) for d in docs]
    rng = np.random.default_rng(seed)
    signals = [rng.integers(0, 4, size=len(t.encode())).astype(np.float32) for t in texts]
    got, steps, threshold, full = _core.global_spans(
        texts, signals, PATTERNS["gpt2"], want, min_count, 2
    )
    expected, expected_steps = reference_global(texts, signals, want, min_count)
    assert got == expected
    assert steps == expected_steps
    assert full == (len(expected) >= want)
    if steps:
        assert threshold == sorted(float(x) for s in signals for x in s)[steps - 1]


@settings(max_examples=60, deadline=None)
@given(
    GLOBAL_DOCS,
    st.integers(0, 2**31),
    st.integers(0, 8),
    st.integers(1, 3),
    st.booleans(),
)
def test_global_constraint_reads_views_of_one_array_in_place(docs, seed, want, min_count, signed):
    """Signals that are consecutive views of one array (as a cached signal's are) are read in
    place: the same answer as separate arrays, also with negative values and -0.0 (which the
    keys cannot be read in place for)."""
    texts = ["".join(d) for d in docs]
    offs = np.cumsum([0] + [len(t.encode()) for t in texts])
    rng = np.random.default_rng(seed)
    flat = rng.integers(-2 if signed else 0, 4, size=int(offs[-1])).astype(np.float32)
    if signed:
        flat[rng.random(flat.size) < 0.2] = -0.0
    views = [flat[offs[i] : offs[i + 1]] for i in range(len(texts))]
    copies = [v.copy() for v in views]
    assert _core.signals_in_place(views) == (offs[-1] > 0)
    expected, expected_steps = reference_global(texts, copies, want, min_count)
    for threads in (1, 2):
        got = _core.global_spans(texts, views, PATTERNS["gpt2"], want, min_count, threads)
        assert got == _core.global_spans(texts, copies, PATTERNS["gpt2"], want, min_count, threads)
        assert got[0] == expected and got[1] == expected_steps


def test_which_signals_are_read_in_place():
    flat = np.arange(12, dtype=np.float32)
    rows = np.arange(24, dtype=np.float32).reshape(2, 12)
    empty = flat[5:5]
    assert _core.signals_in_place([flat[:5], flat[5:9], flat[9:]])
    assert _core.signals_in_place([flat[2:5], empty, flat[5:7]])  # empty ones anywhere
    assert _core.signals_in_place([rows[1, :4], rows[1, 4:]])  # rows of a 2-D array
    assert _core.signals_in_place([flat])  # one array
    assert _core.signals_in_place([np.ones(3, np.float32), np.zeros(0, np.float32)])
    assert _core.signals_in_place([rows[0, :], rows[1, :]])  # consecutive rows
    other = np.arange(12, dtype=np.float32)
    for signals in [
        [],
        [empty],
        [flat[5:], flat[:5]],  # out of order
        [flat[:4], flat[5:]],  # a gap
        [flat[:5], flat[:5]],  # the same twice
        [flat[:6], other[6:]],  # two arrays
        [np.ones(3, np.float32), np.ones(3, np.float32)],
        [flat[::2][:3], flat[::2][3:]],  # strided (copied)
        [rows[:, 0], rows[:, 1]],  # columns (copied)
    ]:
        assert not _core.signals_in_place(signals), signals


def test_global_boundary_rules():
    # Pre-tokens " cat", " sat", ".", " on": the spaces have a high signal, the rest low.
    text = " cat sat. on"
    sig = np.array([9, 1, 1, 1, 9, 1, 1, 1, 1, 9, 1, 1], np.float32)
    got, steps, threshold, full = _core.global_spans([text], [sig], PATTERNS["gpt2"], 3, 1, 1)
    # Segments take in the space that opens their pre-token; "." grows (step 7) but joins
    # neither " sat" nor " on"; the third string (" o") arrives at step 8, and growth stops.
    assert got == [(True, b" o", 1), (True, b" cat", 1), (True, b" sat", 1)]
    assert (steps, threshold, full) == (8, 1.0, True)
    # Word-internal segments are continuations; the spaces stay out of them.
    sig = np.array([9, 9, 1, 1, 9, 9, 1, 1, 9, 9, 9, 1], np.float32)
    got, steps, *_ = _core.global_spans([text], [sig], PATTERNS["gpt2"], 1, 2, 1)
    assert got == [(False, b"at", 2)] and steps == 4


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


def test_signals_equal_each_prediction_computed_alone(byte_lm):
    """The batched, strided windows against one forward pass per byte: byte i's signals come
    from the window that scores it (the document start, or ``context - stride`` bytes before it
    at least), whatever the batch size."""
    import torch

    from toklab.bytespan import byte_signals
    from toklab.lm.score import _windows

    texts = ["Hark, the bells! " * 9, "é" * 40, "a", "To be, or not to be " * 5]
    seqs = [[byte_lm.cfg.bos_id, *t.encode()] for t in texts]
    context = byte_lm.context
    for stride, batch_tokens in ((None, 1 << 14), (5, 3 * context), (context - 1, 1)):
        sig = byte_signals(byte_lm, texts, stride=stride, batch_tokens=batch_tokens)
        for seq, (surprisal, entropy) in zip(seqs, sig, strict=True):
            n = len(seq) - 1
            assert surprisal.shape == entropy.shape == (n,)
            want = np.zeros((2, n))
            for start, end, first in _windows(n, context, stride or context // 2):
                for p in range(first, end - 1):
                    with torch.no_grad():
                        logits = byte_lm.model(torch.tensor([seq[start : p + 1]]))[0, -1]
                    lp = logits.double().log_softmax(-1)
                    want[0, p] = -lp[seq[p + 1]]
                    want[1, p] = -(lp.exp() * lp).sum()
            np.testing.assert_allclose(surprisal, want[0], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(entropy, want[1], rtol=1e-4, atol=1e-5)


def test_signals_agree_with_scoring(byte_lm):
    import math

    import toklab.lm as lm
    from toklab.bytespan import byte_signals

    texts = ["To be, or not to be: that is the question. " * 4, "é ok", ""]
    sig = byte_signals(byte_lm, texts)
    for t, (s, e) in zip(texts, sig):
        n = len(t.encode())
        assert s.shape == (n,) and e.shape == (n,) and s.dtype == np.float32
        assert np.isfinite(s).all() and (e <= math.log(256) + 1e-4).all()
        # Never negative, nor -0.0 (so that the global constraint reads them in place).
        assert not np.signbit(s).any() and not np.signbit(e).any()
    # Views of one array each, in order.
    assert _core.signals_in_place([s for s, _ in sig]) and _core.signals_in_place(
        [e for _, e in sig]
    )
    # The surprisals add up to the bits that scoring reports.
    score = lm.evaluate(byte_lm, texts[:2])
    total = sum(float(s.sum()) for s, _ in sig) / math.log(2)
    assert total == pytest.approx(score.bits, rel=1e-4)


def test_signals_refuse_bad_strides_texts_and_caches(byte_lm, tmp_path):
    from toklab.bytespan import byte_signals, cached_signals

    for stride in (0, -1, byte_lm.context, 2.5):
        with pytest.raises(ConfigError, match="stride"):
            byte_signals(byte_lm, ["x" * 200], stride=stride)
    with pytest.raises(InvalidInputError, match="surrogate"):
        byte_signals(byte_lm, ["ab\ud800"])
    with pytest.raises(InvalidInputError, match="document 1: a lone surrogate"):
        train_bytespan(["ok", "a\ud800b"], vocab_size=600, signals=[np.ones(2), np.ones(3)])
    # A damaged cache is scored again (with a warning) and replaced; a file is no directory.
    texts = ["To be, or not to be.", "é ok"]
    first = cached_signals(byte_lm, texts, tmp_path)
    (cache,) = tmp_path.glob("signals-*.npz")
    cache.write_bytes(cache.read_bytes()[:100])
    with pytest.warns(toklab.TokLabWarning, match="damaged"):
        again = cached_signals(byte_lm, texts, tmp_path)
    for (s0, e0), (s1, e1) in zip(first, again):
        assert np.array_equal(s0, s1) and np.array_equal(e0, e1)
    assert [len(s) for s, _ in cached_signals(byte_lm, texts, tmp_path)] == [20, 5]
    with pytest.raises(ConfigError, match="not a directory"):
        cached_signals(byte_lm, texts, cache)


def test_the_byte_lm_trained_here_is_kept_in_the_cache(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    import toklab.lm as lm
    from toklab.data import default_corpus

    docs = [d for d in next(default_corpus(["shakespeare"])).split("\n\n") if d][:300]
    kw = {"vocab_size": 700, "lm_preset": "tiny", "lm_budget_bytes": 20_000, "device": "cpu"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", toklab.TokLabWarning)  # (a small vocabulary)
        first = train_bytespan(docs, cache_dir=tmp_path, **kw)
        (ckpt,) = tmp_path.glob("bytelm-*.pt")
        assert len(list(tmp_path.glob("signals-*.npz"))) == 1

        # Again: nothing trained, the same vocabulary.
        def refuse(*args, **kwargs):
            raise AssertionError("trained again")

        monkeypatch.setattr(lm, "train_lm", refuse)
        assert train_bytespan(docs, cache_dir=tmp_path, **kw).learned() == first.learned()
        # Another seed, budget or corpus is another model.
        for change in ({"seed": 1}, {"lm_budget_bytes": 30_000}):
            with pytest.raises(AssertionError, match="trained again"):
                train_bytespan(docs, cache_dir=tmp_path, **{**kw, **change})
        with pytest.raises(AssertionError, match="trained again"):
            train_bytespan(docs[1:], cache_dir=tmp_path, **kw)
        monkeypatch.undo()
    # A damaged checkpoint is trained again, with a warning, and replaced.
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.warns(toklab.TokLabWarning, match="damaged byte LM"):
        assert train_bytespan(docs, cache_dir=tmp_path, **kw).learned() == first.learned()
    # (Replaced by a whole checkpoint: loading it no longer raises CorruptFileError.)
    assert ckpt.stat().st_size > 100
    lm.LanguageModel.load(ckpt, device="cpu")
    with pytest.raises(ConfigError, match="not a directory"):
        train_bytespan(docs, cache_dir=ckpt, **kw)
    from toklab.bytespan import cached_byte_lm

    with pytest.raises(InvalidInputError, match="document 1: a lone surrogate"):
        cached_byte_lm(["ok", "a\ud800"], tmp_path, preset="tiny", device="cpu")


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
    # The HF export of a trained vocabulary gives the same ids.
    tokenizers = pytest.importorskip("tokenizers")
    vocabs["combined"].save_hf(tmp_path / "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert hf.encode(text).ids == vocabs["combined"].encode(text).tolist()


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
    with pytest.raises(InvalidInputError, match="document 0: the signal has 5 values for 11"):
        train_bytespan(docs, vocab_size=600, signals=[np.ones(5, np.float32), sig[1]])
    with pytest.raises(InvalidInputError, match="NaN"):
        train_bytespan(docs, vocab_size=600, signals=[np.full(11, np.nan, np.float32), sig[1]])
    with pytest.raises(InvalidInputError):
        train_bytespan(docs, vocab_size=600, signals=sig[:1])
    with pytest.raises(EmptyCorpusError):
        train_bytespan(["", ""], vocab_size=600, signals=[])
    with pytest.raises(ConfigError, match="constraint"):
        train_bytespan(docs, vocab_size=600, signals=sig, constraint="globl")
    with pytest.raises(ConfigError, match="min_count"):
        train_bytespan(docs, vocab_size=600, signals=sig, constraint="global", min_count=0)
    with pytest.raises(InvalidInputError, match=r"not finite at byte 0 \(inf\)"):
        train_bytespan(
            docs,
            vocab_size=600,
            signals=[sig[0], np.full(7, np.inf, np.float32)],
            constraint="global",
        )
    # The core checks too, whoever calls it.
    with pytest.raises(InvalidInputError, match="document 1"):
        _core.global_spans(docs, [sig[0], np.ones(3, np.float32)], PATTERNS["gpt2"], 5)
    with pytest.raises(InvalidInputError, match="finite"):
        _core.global_spans(docs, [sig[0], np.full(7, np.nan, np.float32)], PATTERNS["gpt2"], 5)
    with pytest.raises(InvalidInputError, match="zero everywhere"):
        train_bytespan(
            docs, vocab_size=600, signals=[np.zeros(11, np.float32), np.zeros(7, np.float32)]
        )
    with pytest.raises(toklab.UnknownTokenError):
        ByteSpan([]).decode([600])
    # A signal that is mostly NaN or infinite is the signal's fault, not the threshold's.
    for bad in (np.nan, np.inf):
        with pytest.raises(InvalidInputError, match="document 0: the signal"):
            train_bytespan(docs, vocab_size=600, signals=[np.full(11, bad), np.full(7, bad)])
    with pytest.raises(InvalidInputError, match="document 0: the signal"):
        train_bytespan(docs, vocab_size=600, signals=[np.full(11, 1e300), np.full(7, 1e300)])
    for size in (2**40, 600.0):
        with pytest.raises(ConfigError, match="vocab_size"):
            train_bytespan(docs, vocab_size=size, signals=sig)


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
    r = runner.invoke(main, [*args, "surprisal", "--constraint", "monotonic", "--pattern", "o200k"])
    assert r.exit_code == 0, r.output
    tok = toklab.load(out)
    assert isinstance(tok, ByteSpan) and tok.metadata["signal"] == "surprisal"
    assert tok.pattern == "o200k"
    # BPE's own options are refused, before any training, not silently ignored.
    r = runner.invoke(main, [*args, "surprisal", "--special-token", "<s>", "--min-frequency", "3"])
    assert r.exit_code != 0
    assert "--special-token, --min-frequency: not an option of --method bytespan" in r.output
    hf_path = tmp_path / "tokenizer.json"
    r = runner.invoke(main, ["export", str(out), "--format", "hf", "-o", str(hf_path)])
    assert r.exit_code != 0 and "needs the gpt2 pre-tokenization pattern" in r.output
    ids, back = tmp_path / "ids.npy", tmp_path / "back.txt"
    assert runner.invoke(main, ["encode", str(out), str(corpus), "-o", str(ids)]).exit_code == 0
    r = runner.invoke(main, ["decode", str(out), str(ids), "-o", str(back)])
    assert r.exit_code == 0, r.output
    assert back.read_bytes() == corpus.read_bytes()
    r = runner.invoke(main, [*args[:-1], "--vocab-size", "10"])
    assert r.exit_code != 0
    more = ["--constraint", "global", "--min-count", "3", "--inference", "bpe"]
    r = runner.invoke(main, [*args, "entropy", *more])
    assert r.exit_code == 0, r.output
    tok = toklab.load(out)
    assert tok.metadata["constraint"] == "global" and tok.metadata["min_count"] == 3
    assert tok.inference == "bpe"
    r = runner.invoke(main, ["info", str(out)])
    assert r.exit_code == 0 and "ByteSpan" in r.output and "inference:      bpe" in r.output
    # Exported for HF tokenizers by the CLI (gpt2's pattern), with the same ids; not as
    # tiktoken ranks.
    r = runner.invoke(main, ["export", str(out), "--format", "hf", "-o", str(hf_path)])
    assert r.exit_code == 0, r.output
    tokenizers = pytest.importorskip("tokenizers")
    sample = corpus.read_text(encoding="utf-8")[:2000]
    hf_ids = tokenizers.Tokenizer.from_file(str(hf_path)).encode(sample).ids
    assert hf_ids == tok.encode(sample).tolist()  # BPE inference: HF's BPE model
    r = runner.invoke(main, ["export", str(out), "--format", "tiktoken", "-o", str(hf_path)])
    assert r.exit_code != 0 and "only BPE tokenizers export to --format tiktoken" in r.output
    # Balanced: each input file one language.
    ru = tmp_path / "ru.txt"
    ru.write_text("Все люди рождаются свободными и равными в своем достоинстве. " * 300)
    both = ["train", str(corpus), str(ru), "--method", "bytespan", "--vocab-size", "700"]
    both += ["-o", str(out), "--lm-preset", "tiny", "--lm-budget", "30k", "--device", "cpu"]
    r = runner.invoke(main, [*both, "--balance-files"])
    assert r.exit_code == 0, r.output
    assert set(toklab.load(out).metadata["balanced_languages"]) == {"c", "ru"}
    assert tok.decode(tok.encode(corpus.read_text(encoding="utf-8"))) == corpus.read_text(
        encoding="utf-8"
    )


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=80), min_size=1, max_size=8))
def test_hf_export_gives_the_same_ids(texts):
    tokenizers = pytest.importorskip("tokenizers")
    import json

    texts = [t for t in texts if not any(0xD800 <= ord(c) <= 0xDFFF for c in t)]
    learned = [(w.startswith(" "), w.encode()) for w in WORDS] + [(False, "é".encode())]
    vocab = ByteSpan(learned)
    hf = tokenizers.Tokenizer.from_str(json.dumps(vocab.to_hf()))
    for t in [*texts, "##x ## ⁂", " unbelievable thing"]:
        ids = vocab.encode(t).tolist()
        assert hf.encode(t).ids == ids
        assert hf.decode(ids) == t


def reference_fill(seed: list[tuple[bool, bytes]], texts: list[str], target: int):
    """BPE fill as the issue states it, slowly: longest-match segmentation of each pre-token,
    then repeatedly merge the most frequent adjacent pair (non-overlapping counts; ties by the
    smaller pair of token bytes), the merged token word-initial if its left part is."""
    vocab = ByteSpan(seed)
    tokens = [(vocab.is_word_initial(i), vocab.token_bytes(i)) for i in range(vocab.vocab_size)]
    index = {t: i for i, t in enumerate(tokens)}
    words = collections.Counter(
        p for t in texts for p in _core.pretokenize(t, PATTERNS["gpt2"]) if p
    )
    seqs = {w: reference_encode(vocab, w) for w in words}
    added = []
    while len(tokens) < target:
        counts = collections.Counter()
        for w, seq in seqs.items():
            # A pair counts as often as a left-to-right merge of it would fire.
            for p in set(itertools.pairwise(seq)):
                i = fired = 0
                while i < len(seq) - 1:
                    if (seq[i], seq[i + 1]) == p:
                        fired += 1
                        i += 2
                    else:
                        i += 1
                counts[p] += fired * words[w]
        counts = {p: c for p, c in counts.items() if c > 0}
        if not counts:
            break
        top = max(counts.values())
        pair = min(
            (p for p, c in counts.items() if c == top),
            key=lambda p: (tokens[p[0]][1], tokens[p[1]][1], p),
        )
        merged = (tokens[pair[0]][0], tokens[pair[0]][1] + tokens[pair[1]][1])
        if merged not in index:
            index[merged] = len(tokens)
            tokens.append(merged)
            added.append(merged)
        new = index[merged]
        for w, seq in seqs.items():
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == pair:
                    out.append(new)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[w] = out
    return added


def test_bpe_fill_matches_the_reference():
    from toklab.data import default_corpus

    texts = [next(default_corpus(["shakespeare"]))[:20_000], "aaaa aaa bbbb ab ab"]
    for seed in [[], [(True, b" the"), (False, b"ing"), (True, b" and")]]:
        want = reference_fill(seed, texts, ALPHABET + 150)
        assert len(seed) + len(want) == 150  # the text fills the vocabulary
        for threads in (1, 2):
            got = _core.SpanVocab(seed, PATTERNS["gpt2"]).fill_with_bpe(
                texts, ALPHABET + 150, threads
            )
            assert got == seed + want


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.text(alphabet="ab c", max_size=30), min_size=1, max_size=6),
    st.lists(
        st.tuples(st.booleans(), st.text(alphabet="ab c", min_size=2, max_size=4)), max_size=4
    ),
    st.integers(0, 25),
)
def test_bpe_fill_of_few_letters_matches_the_reference(texts, seed, extra):
    """Few letters: counts tie, equal symbols run (a run of k holds k // 2 pairs), and merges
    make tokens the seeds already hold (their ids are reused)."""
    seed = list(dict.fromkeys((f, w.encode()) for f, w in seed))
    got = _core.SpanVocab(seed, PATTERNS["gpt2"]).fill_with_bpe(
        texts, ALPHABET + len(seed) + extra, 1
    )
    assert got[: len(seed)] == seed
    assert got[len(seed) :] == reference_fill(seed, texts, ALPHABET + len(seed) + extra)


def test_seeding_keeps_the_top_spans_then_fills():
    docs = ["the cat sat on the mat. " * 3, "a theme of the thing"] * 20
    sig = [
        np.tile(np.array([3, 2, 1], np.float32), len(d.encode()) // 3 + 1)[: len(d.encode())]
        for d in docs
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", toklab.TokLabWarning)
        freq = train_bytespan(docs, vocab_size=600, signals=sig, building="frequency")
        seeded = train_bytespan(
            docs, vocab_size=600, signals=sig, building="seeding", proportion=0.9
        )
    keep = min(int(0.9 * 600) - ALPHABET, len(freq.learned()))
    assert seeded.learned()[:keep] == freq.learned()[:keep]
    assert seeded.vocab_size > freq.vocab_size  # BPE filled the rest
    assert seeded.metadata["vocab_building"] == "seeding"
    for d in docs[:2]:
        assert seeded.decode(seeded.encode(d)) == d
    with pytest.raises(ConfigError, match="proportion"):
        train_bytespan(docs, vocab_size=600, signals=sig, building="seeding", proportion=2)
    # A proportion that leaves no room past the alphabet is plain BPE: said, not silent.
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", toklab.TokLabWarning)
        plain = train_bytespan(
            docs, vocab_size=1024, signals=sig, building="seeding", proportion=0.5
        )
    assert any("plain BPE" in str(w.message) for w in said)
    assert "signal" not in plain.metadata


def test_train_with_the_global_constraint():
    docs = ["the cat sat on the mat. " * 3, "a theme of the thing", "unthinkable things"] * 20
    rng = np.random.default_rng(0)
    sig = [rng.gamma(2.0, 1.0, size=len(d.encode())).astype(np.float32) for d in docs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", toklab.TokLabWarning)
        v = train_bytespan(docs, vocab_size=532, signals=sig, constraint="global", min_count=5)
        seeded = train_bytespan(
            docs,
            vocab_size=600,
            signals=sig,
            constraint="global",
            min_count=5,
            building="seeding",
            proportion=532 / 600,
        )
    found, steps, threshold, full = _core.global_spans(docs, sig, PATTERNS["gpt2"], 20, 5)
    assert full and v.learned() == [(f, b) for f, b, _ in found]
    assert v.metadata["constraint"] == "global" and v.metadata["threshold"] == threshold
    assert v.metadata["grown_share"] == steps / sum(map(len, sig)) < 1
    assert seeded.learned()[:20] == v.learned() and seeded.vocab_size > 532  # BPE filled
    for d in docs[:3]:
        assert v.decode(v.encode(d)) == d and seeded.decode(seeded.encode(d)) == d


def test_balanced_multilingual_vocabulary():
    from toklab.data import default_corpus, udhr

    english = [d for d in next(default_corpus(["shakespeare"]))[:100_000].split("\n\n") if d]
    russian = [line for line in udhr()["rus"]["text"].splitlines() if line]
    docs = english + russian
    labels = ["en"] * len(english) + ["ru"] * len(russian)
    rng = np.random.default_rng(0)
    sig = [rng.integers(0, 6, size=len(d.encode())).astype(np.float32) for d in docs]
    n = 40
    plain = train_bytespan(docs, vocab_size=ALPHABET + n, signals=sig)
    balanced = train_bytespan(docs, vocab_size=ALPHABET + n, signals=sig, languages=labels)
    assert balanced.metadata["balanced_languages"] == {"en": n // 2, "ru": n // 2}

    # English has 5 times the bytes: unbalanced, it takes most of the vocabulary.
    def cyrillic(tokens):
        return sum(any(0xD0 <= c <= 0xD3 for c in b) for _, b in tokens)

    assert cyrillic(plain.learned()) < n // 4
    assert cyrillic(balanced.learned()) == n // 2
    # Exactly: each language's own ranking (same threshold), taken in turns, skipping repeats.
    threshold = _core.signal_percentile(sig, 30.0)
    rankings = []
    for lang in ["en", "ru"]:
        idx = [i for i, x in enumerate(labels) if x == lang]
        got = _core.span_counts(
            [docs[i] for i in idx], [sig[i] for i in idx], PATTERNS["gpt2"], threshold
        )
        rankings.append(iter([(f, b) for f, b, _ in got]))
    expected = []
    while len(expected) < n:
        for ranking in rankings:
            expected.append(next(t for t in ranking if t not in expected))
    assert balanced.learned() == expected
    for d in docs[:3] + docs[-3:]:
        assert balanced.decode(balanced.encode(d)) == d
    # With the global constraint and with seeding too.
    for kw in [
        {"constraint": "global", "min_count": 2},
        {"building": "seeding", "proportion": 0.95},
    ]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", toklab.TokLabWarning)
            v = train_bytespan(docs, vocab_size=ALPHABET + n, signals=sig, languages=labels, **kw)
        shares = v.metadata["balanced_languages"]
        assert abs(shares["en"] - shares["ru"]) <= 1 and shares["en"] > 0
    # Labels follow the documents as given (empty ones dropped with their labels) or the
    # non-empty ones; any other count is an error.
    v = train_bytespan(["", *docs], vocab_size=ALPHABET + n, signals=sig, languages=["ru", *labels])
    assert v.learned() == balanced.learned()
    with pytest.raises(InvalidInputError, match="language labels"):
        train_bytespan(docs, vocab_size=ALPHABET + n, signals=sig, languages=labels[:-1])


def test_doctests():
    import doctest

    import toklab.bytespan

    failed, tried = doctest.testmod(toklab.bytespan)
    assert tried > 0 and failed == 0


def reference_merges(vocab: ByteSpan) -> dict[tuple[int, int], int]:
    """The merge rule, slowly: for each learned token in id order, among its splits into a
    left token of its kind and a continuation token, both with smaller ids and buildable by
    earlier merges, the one whose later part is earliest (ties: the shorter left part)."""
    tokens = [(vocab.is_word_initial(i), vocab.token_bytes(i)) for i in range(vocab.vocab_size)]
    index = {t: i for i, t in enumerate(tokens)}
    buildable = set(range(ALPHABET))
    merges = {}
    for i in range(ALPHABET, len(tokens)):
        flag, data = tokens[i]
        options = []
        for k in range(1, len(data)):
            left, right = index.get((flag, data[:k])), index.get((False, data[k:]))
            if left in buildable and right in buildable and max(left, right) < i:
                options.append((max(left, right), k, left, right))
        if options:
            _, _, left, right = min(options)
            merges[(left, right)] = i
            buildable.add(i)
    return merges


def reference_bpe_encode(merges: dict[tuple[int, int], int], text: str) -> list[int]:
    """Textbook BPE per pre-token: merge the lowest-ranked adjacent pair, leftmost first."""
    out = []
    for piece in _core.pretokenize(text, PATTERNS["gpt2"]):
        data = piece.encode()
        seq = [data[0]] + [256 + b for b in data[1:]]
        while True:
            found = [(merges[p], i) for i, p in enumerate(itertools.pairwise(seq)) if p in merges]
            if not found:
                break
            rank, i = min(found)
            seq[i : i + 2] = [rank]
        out += seq
    return out


BPE_WORDS = [
    *WORDS,
    " t",
    " th",
    "he",
    "hel",
    "lo",
    "ab",
    "abl",
    "le",
    "bel",
    "iev",
    "#",
    "###",
    " a",
    "aa",
    "aaa",
    "aaaa",
]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(BPE_WORDS), max_size=30),
    st.lists(st.sampled_from([*BPE_WORDS, " ", "x", "\n"]), max_size=20),
    st.text(max_size=40),
)
def test_bpe_inference_matches_the_reference_and_hf(chosen, pieces, noise):
    tokenizers = pytest.importorskip("tokenizers")
    import json

    if any(0xD800 <= ord(c) <= 0xDFFF for c in noise):
        return
    vocab = ByteSpan([(w.startswith(" "), w.encode()) for w in chosen], inference="bpe")
    merges = reference_merges(vocab)
    assert {(a, b): m for a, b, m in vocab.merges()} == merges
    hf = tokenizers.Tokenizer.from_str(json.dumps(vocab.to_hf()))
    for text in ["".join(pieces), noise, "".join(pieces) + noise]:
        ids = vocab.encode(text)
        assert ids.tolist() == reference_bpe_encode(merges, text)
        assert vocab.decode(ids) == text
        assert hf.encode(text).ids == ids.tolist()
        assert hf.decode(ids.tolist()) == text


def test_bpe_inference_on_a_trained_vocabulary(tmp_path):
    from toklab.data import default_corpus

    text = next(default_corpus(["shakespeare"]))[:60_000]
    docs = [d for d in text.split("\n\n") if d]
    rng = np.random.default_rng(0)
    sig = [rng.gamma(2.0, 1.0, size=len(d.encode())).astype(np.float32) for d in docs]
    for building in ["frequency", "seeding"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", toklab.TokLabWarning)
            longest = train_bytespan(docs, vocab_size=1200, signals=sig, building=building)
        bpe = longest.with_inference("bpe")
        assert bpe.learned() == longest.learned() and bpe.inference == "bpe"
        merges = {(a, b): m for a, b, m in bpe.merges()}
        assert merges == reference_merges(bpe)
        ids = bpe.encode(text)
        assert bpe.decode(ids) == text
        assert bpe.encode(text[:5000]).tolist() == reference_bpe_encode(merges, text[:5000])
        # Nearly every learned token has a merge that builds it.
        assert len(merges) >= 0.95 * (bpe.vocab_size - ALPHABET)
        # Saved, loaded and exported with its inference.
        bpe.save(tmp_path / "bpe.json")
        again = toklab.load(tmp_path / "bpe.json")
        assert again.inference == "bpe" and again.encode(text).tolist() == ids.tolist()
        assert pickle.loads(pickle.dumps(bpe)).inference == "bpe"
        tokenizers = pytest.importorskip("tokenizers")
        bpe.save_hf(tmp_path / "tokenizer.json")
        hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
        assert hf.encode(text).ids == ids.tolist()
    with pytest.raises(ConfigError, match="inference"):
        ByteSpan([], inference="wordpiece")


def test_bad_input_on_the_new_paths():
    docs = ["hello world", "foo bar"]
    sig = [np.ones(11, np.float32), np.ones(7, np.float32)]
    regex = PATTERNS["gpt2"]
    # Wrong lengths and non-finite values, whichever constraint and building.
    for kw in [
        {"constraint": "global"},
        {"constraint": "monotonic"},
        {"languages": ["a", "b"]},
        {"building": "seeding", "proportion": 0.99},
    ]:
        with pytest.raises(InvalidInputError, match="document 1: the signal has 6 values"):
            train_bytespan(docs, vocab_size=600, signals=[sig[0], np.ones(6, np.float32)], **kw)
        with pytest.raises(InvalidInputError, match="not finite at byte 3"):
            bad = sig[0].copy()
            bad[3] = -np.inf
            train_bytespan(docs, vocab_size=600, signals=[bad, sig[1]], **kw)
    # Signals that are not numbers, or not one value per byte.
    with pytest.raises(InvalidInputError, match="numbers"):
        train_bytespan(docs, vocab_size=600, signals=[["a"] * 11, sig[1]])
    with pytest.raises(InvalidInputError, match="1-d"):
        train_bytespan(docs, vocab_size=600, signals=[np.ones((11, 1), np.float32), sig[1]])
    with pytest.raises(InvalidInputError, match="float32"):
        _core.span_counts(docs, [np.ones(11), sig[1]], regex)
    with pytest.raises(ConfigError, match="2 texts but 1 signals"):
        _core.global_spans(docs, sig[:1], regex, 5)
    # Empty corpus and too small a vocabulary, with the new options too.
    with pytest.raises(EmptyCorpusError):
        train_bytespan([""], vocab_size=600, signals=[], constraint="global", languages=["x"])
    with pytest.raises(ConfigError, match="at least 512"):
        train_bytespan(docs, vocab_size=511, signals=sig, constraint="global")
    with pytest.raises(ConfigError, match="inference"):
        train_bytespan(docs, vocab_size=600, signals=sig, inference="wordpiece")
    with pytest.raises(ConfigError, match="inference"):
        ByteSpan([]).with_inference("greedy")
    with pytest.raises(toklab.UnknownTokenError):
        ByteSpan([], inference="bpe").decode([512])


@pytest.mark.parametrize("kind", ["gamma", "ties", "periodic", "sparse", "negative"])
def test_signal_percentile_equals_numpys(kind):
    """At the sizes where the core samples the values first (65,536 and more), including the
    values that mislead the sample (a pattern of its period: it falls back)."""
    rng = np.random.default_rng(0)
    n = 300_000
    if kind == "gamma":
        x = rng.gamma(2.0, 1.0, n)
    elif kind == "ties":
        x = rng.integers(0, 4, n).astype(float)
    elif kind == "periodic":
        x = np.where(np.arange(n) % 127 == 0, 1e3, rng.random(n))
    elif kind == "sparse":
        x = np.where(rng.random(n) < 0.999, 0.0, rng.random(n))
    else:
        x = rng.normal(0.0, 1.0, n)
    x = x.astype(np.float32)
    parts = np.split(x, [1000, 5000, 5001, 200_000])
    nonzero = x[x != 0].astype(np.float64)
    for q in (0.0, 0.5, 30.0, 50.0, 99.0, 100.0):
        want = np.float32(np.percentile(nonzero, q))
        for threads in (1, 2):
            got = _core.signal_percentile(parts, q, threads)
            assert got == pytest.approx(want, rel=1e-6, abs=1e-30), (q, threads)


def test_signals_are_read_in_place_or_copied_alike():
    text = "the cat sat on the mat, the cat sat"
    n = len(text.encode())
    sig = np.random.default_rng(0).integers(0, 4, size=2 * n).astype(np.float32)
    strided = sig[::2]  # not contiguous: copied
    contiguous = np.ascontiguousarray(strided)
    for f in [
        lambda s: _core.span_counts([text, ""], [s, np.zeros(0, np.float32)], PATTERNS["gpt2"]),
        lambda s: _core.global_spans([text], [s], PATTERNS["gpt2"], 3, 1),
        lambda s: _core.signal_percentile([s], 30.0),
    ]:
        assert f(strided) == f(contiguous)


def test_learned_tokens_of_any_kind_give_the_same_vocabulary():
    """Pairs of bool and bytes go to the core as they are; other flags (numpy bools, ints) and
    bytes-like objects (bytearray, memoryview, lists of ints) are converted first."""
    plain = ByteSpan([(True, b" the"), (False, b"ing"), (False, b"xy")])
    for learned in (
        [(np.True_, bytearray(b" the")), (0, memoryview(b"ing")), (np.False_, [120, 121])],
        ((f, b) for f, b in plain.learned()),
        tuple(plain.learned()),
    ):
        got = ByteSpan(learned)
        assert got.learned() == plain.learned()
        assert got.encode(" the thing xy").tolist() == plain.encode(" the thing xy").tolist()
    with pytest.raises(TypeError):
        ByteSpan([(True, "the")])
