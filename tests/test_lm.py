"""toklab.lm: the small GPT, training with byte and FLOP budgets, scoring in bits per byte, the
TokenLM / ByteLM protocols, checkpoints, the transformers adapter and the CLI. Tiny models on
CPU with an explicit torch thread count (set in conftest.py)."""

from __future__ import annotations

import itertools
import json
import math
import pickle
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason="toklab[lm] is not installed")

import toklab  # noqa: E402
import toklab.lm as lm  # noqa: E402
from toklab.errors import (  # noqa: E402
    ConfigError,
    ContextLengthError,
    CorruptFileError,
    DeviceError,
    EmptyCorpusError,
    InvalidIdsError,
    InvalidInputError,
    TrainingDivergedError,
    UnknownTokenError,
    VocabularyMismatchError,
)
from toklab.lm.score import _windows  # noqa: E402

TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was "
    "the age of foolishness, it was the epoch of belief, it was the epoch of incredulity.\n"
)


def tiny(tokenizer, corpus=None, **kwargs):
    options = {"preset": "tiny", "budget_bytes": 20_000, "device": "cpu", "progress": False}
    options.update(kwargs)
    return lm.train_lm(tokenizer, [TEXT * 20] if corpus is None else corpus, **options)


@pytest.fixture(scope="module")
def byte_run():
    return tiny(toklab.ByteTokenizer(), budget_bytes=200_000, lr=1e-2)


@pytest.fixture(scope="module")
def bpe_run(small_tokenizer):
    return tiny(small_tokenizer, budget_bytes=60_000)


# -- the model -------------------------------------------------------------------------------


def test_config_and_init():
    cfg = lm.GPTConfig(vocab_size=300, n_layer=2, n_head=2, n_embd=32, context=16)
    torch.manual_seed(0)
    model = lm.GPT(cfg)
    # Tied embeddings: the output layer is the embedding table (one parameter).
    assert model.wte.weight.shape == (cfg.embedding_rows, 32) and cfg.embedding_rows % 64 == 0
    names = [n for n, _ in model.named_parameters()]
    assert not any("head" in n for n in names)
    std = model.blocks[0].fc.weight.std().item()
    assert 0.015 < std < 0.025
    out = model(torch.zeros((3, 5), dtype=torch.long))
    assert out.shape == (3, 5, 300)
    assert cfg.non_embedding_params() == sum(
        p.numel() for n, p in model.named_parameters() if n not in ("wte.weight", "wpe.weight")
    )
    assert lm.GPTConfig(vocab_size=300, **lm.PRESETS["25m"]).non_embedding_params() > 24e6
    with pytest.raises(ConfigError):
        lm.GPTConfig(vocab_size=300, n_head=3, n_embd=32)
    with pytest.raises(ConfigError):
        lm.GPTConfig(vocab_size=0)
    # The start token takes a position: a context of one would score nothing (0 bits per byte).
    with pytest.raises(ConfigError, match="at least 2"):
        lm.GPTConfig(vocab_size=300, context=1)


def test_context_is_enforced():
    model = lm.GPT(lm.GPTConfig(vocab_size=256, n_layer=1, n_head=1, n_embd=8, context=8))
    with pytest.raises(ContextLengthError):
        model(torch.zeros((1, 9), dtype=torch.long))
    cache = lm.KVCache(1)
    model(torch.zeros((1, 8), dtype=torch.long), cache)
    with pytest.raises(ContextLengthError):
        model(torch.zeros((1, 1), dtype=torch.long), cache)


# -- training ---------------------------------------------------------------------------------


def test_tiny_model_overfits_tiny_text(byte_run):
    counts = Counter(TEXT.encode())
    n = sum(counts.values())
    unigram_bits = -sum(c / n * math.log2(c / n) for c in counts.values())
    score = lm.evaluate(byte_run.lm, [TEXT * 3])
    assert score.bits_per_byte < 0.5 * unigram_bits, (score.bits_per_byte, unigram_bits)
    losses = [loss for _, loss, _ in byte_run.history]
    assert losses[-1] < losses[0] / 3


def test_seed_gives_identical_training():
    a, b = tiny(toklab.ByteTokenizer(), seed=7), tiny(toklab.ByteTokenizer(), seed=7)
    c = tiny(toklab.ByteTokenizer(), seed=8)
    for (name, x), y in zip(a.lm.model.state_dict().items(), b.lm.model.state_dict().values()):
        assert torch.equal(x, y), name
    assert a.history == b.history
    assert not torch.equal(a.lm.model.wte.weight, c.lm.model.wte.weight)


def test_resume_continues_exactly(tmp_path):
    tok = toklab.ByteTokenizer()
    whole = tiny(tok, seed=3)
    path = tmp_path / "run.pt"
    first = tiny(tok, seed=3, checkpoint=path, stop_after=4)
    assert first.steps == 4 < whole.steps
    rest = tiny(tok, seed=3, checkpoint=path, resume=True)
    assert rest.steps == whole.steps and rest.bytes_seen == whole.bytes_seen
    for x, y in zip(whole.lm.model.state_dict().values(), rest.lm.model.state_dict().values()):
        assert torch.equal(x, y)
    # Resuming with other options is refused rather than silently mixed.
    with pytest.raises(ConfigError, match="trained with"):
        tiny(tok, seed=4, checkpoint=path, resume=True)


def test_budgets_in_bytes_and_flops(small_tokenizer):
    budget = 40_000
    runs = [tiny(t, budget_bytes=budget) for t in (toklab.ByteTokenizer(), small_tokenizer)]
    for run in runs:
        per_step = run.bytes_seen / run.steps
        assert abs(run.bytes_seen - budget) <= 1.5 * per_step
    # The BPE model reads the same text in fewer tokens.
    assert runs[1].tokens_seen < runs[0].tokens_seen / 1.5
    flops = tiny(toklab.ByteTokenizer(), budget_bytes=None, budget_flops=5e9)
    per_step = flops.flops / flops.steps
    assert 5e9 <= flops.flops < 5e9 + per_step
    with pytest.raises(ConfigError, match="not both"):
        tiny(toklab.ByteTokenizer(), budget_flops=1e9)


def test_lr_schedule():
    from toklab.lm.train import _lr_at

    rates = [_lr_at(s, 100, 10, 1.0, 0.1) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(rates[9:]))
    assert rates[-1] == pytest.approx(0.1, abs=1e-3)


# -- scoring ----------------------------------------------------------------------------------


def uniform_byte_model(context=32):
    model = lm.GPT(lm.GPTConfig(vocab_size=256, n_layer=1, n_head=1, n_embd=8, context=context))
    with torch.no_grad():
        model.ln_f.weight.zero_()
        model.ln_f.bias.zero_()
    return lm.LanguageModel(model, toklab.ByteTokenizer(), "cpu")


def test_uniform_model_scores_eight_bits_per_byte():
    texts = ["héllo wörld, ünïcode ✓ " * 9, "a", "", "日本語のテキスト" * 4]
    score = lm.evaluate(uniform_byte_model(), texts)
    assert score.bits_per_byte == pytest.approx(8.0, abs=1e-12)
    assert score.bytes == sum(len(t.encode()) for t in texts)
    assert [d.bytes for d in score.documents] == [len(t.encode()) for t in texts]
    assert score.documents[2].tokens == 0 and score.documents[2].bits == 0


def test_bits_per_byte_uses_real_byte_counts(bpe_run, small_tokenizer):
    text = TEXT[:100]
    score = lm.evaluate(bpe_run.lm, [text])
    assert score.bytes == len(text.encode())
    assert score.tokens == len(small_tokenizer.encode(text))
    # Brute force: the same sum from next_token_logprobs, one prefix at a time.
    ids = small_tokenizer.encode(text).tolist()
    assert len(ids) + 1 <= bpe_run.lm.context
    lp = bpe_run.lm.next_token_logprobs([ids[:i] for i in range(len(ids))])
    bits = -sum(lp[i, t] for i, t in enumerate(ids)) / math.log(2)
    assert score.bits == pytest.approx(bits, rel=1e-5)


def test_scores_do_not_depend_on_batching(bpe_run):
    texts = [TEXT * k for k in (1, 3, 7)] + ["short"]
    a = lm.evaluate(bpe_run.lm, texts, batch_tokens=64)
    b = lm.evaluate(bpe_run.lm, texts, batch_tokens=1 << 16)
    c = lm.evaluate(bpe_run.lm, texts[::-1])
    # Logits held at once: one row of the widest window at most, or fewer than one (a row
    # still runs: at least one per forward pass).
    d = lm.evaluate(bpe_run.lm, texts, max_logits=bpe_run.lm.vocab_size * 3)
    for x, y, z, w in zip(a.documents, b.documents, c.documents[::-1], d.documents):
        assert x.bits == pytest.approx(y.bits, rel=1e-6) == z.bits
        assert w.bits == pytest.approx(x.bits, rel=1e-6)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "64"])
@pytest.mark.parametrize("name", ["batch_tokens", "max_logits"])
def test_evaluate_refuses_bad_batch_limits(bpe_run, name, bad):
    with pytest.raises(ConfigError, match=name):
        lm.evaluate(bpe_run.lm, [TEXT], **{name: bad})


def test_evaluate_batch_limits_default_by_device():
    from toklab.lm.score import _batch_limits

    assert _batch_limits(torch.device("cpu"), None, None) == (1 << 14, 1 << 25)
    # Given values are kept, numpy integers as plain ints (torch takes those).
    got = _batch_limits(torch.device("cpu"), np.int64(100), 7)
    assert got == (100, 7) and all(type(x) is int for x in got)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 300), st.integers(2, 40), st.data())
def test_strided_windows_score_every_token_once_with_context(n, context, data):
    stride = data.draw(st.integers(1, context - 1))
    windows = _windows(n, context, stride)
    scored = []
    for i, (start, end, first) in enumerate(windows):
        assert end - start <= context and start <= first < end
        positions = list(range(first, end - 1))
        scored += positions
        if i > 0:  # after the first window, every prediction sees context - stride tokens
            assert all(p - start + 1 >= min(context - stride, p + 1) for p in positions)
    assert scored == list(range(n))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(0, 120), min_size=1, max_size=30),
    st.integers(2, 40),
    st.integers(1, 400),
    st.data(),
)
def test_window_batches_hold_the_budget_at_their_padded_width(lengths, context, budget, data):
    """Every window once, shortest first; a batch of several rows never holds more than the
    budget's positions once padded to its widest window (short documents first made the first,
    shortest window size a batch that the wider ones then overfilled)."""
    from toklab.lm.score import window_batches

    stride = data.draw(st.integers(1, context - 1))
    seqs = [np.arange(n + 1) for n in lengths]
    seen = []
    for batch, ids in window_batches(seqs, context, stride, lambda w: budget // w):
        width = max(end - start for _, start, end, _ in batch)
        assert ids.shape == (len(batch), width)
        assert len(batch) == 1 or len(batch) * width <= budget
        for r, (d, start, end, _) in enumerate(batch):
            assert ids[r, : end - start].tolist() == seqs[d][start:end].tolist()
            assert not ids[r, end - start :].any()
        seen += batch
    assert [end - start for _, start, end, _ in seen] == sorted(
        end - start for _, start, end, _ in seen
    )
    want = [(d, *w) for d, n in enumerate(lengths) for w in _windows(n, context, stride)]
    assert sorted(seen) == sorted(want)


def test_tokens_per_second_counts_scored_tokens_not_window_positions():
    # Stride 4 in a context of 32: each token sits in about 8 windows, but is scored once.
    score = lm.evaluate(uniform_byte_model(), [TEXT * 2], stride=4)
    assert score.tokens == len(TEXT.encode()) * 2
    assert score.tokens_per_second * score.seconds == pytest.approx(score.tokens)


def test_long_documents_get_strided_context(bpe_run):
    # A text several contexts long: every token scored once, whatever the stride.
    text = TEXT * 12
    tokens = len(bpe_run.lm.encode(text))
    assert tokens > 3 * bpe_run.lm.context
    scores = [lm.evaluate(bpe_run.lm, [text], stride=s) for s in (8, 32, 63)]
    assert all(s.tokens == tokens for s in scores)
    # More context can only help a model this overfitted (its text repeats).
    assert scores[0].bits < scores[2].bits * 1.05


def test_checkpoint_round_trip_gives_identical_scores(bpe_run, small_tokenizer, tmp_path):
    path = tmp_path / "model.pt"
    bpe_run.lm.save(path)
    again = lm.LanguageModel.load(path, device="cpu")
    texts = [TEXT, "Hark! who goes there?"]
    assert lm.evaluate(again, texts).bits == lm.evaluate(bpe_run.lm, texts).bits
    assert again.tokenizer.to_json() == small_tokenizer.to_json()
    lm.LanguageModel.load(path, device="cpu", tokenizer=small_tokenizer)
    other = toklab.train_bpe([TEXT * 5], vocab_size=300, progress=False)
    with pytest.raises(VocabularyMismatchError):
        lm.LanguageModel.load(path, device="cpu", tokenizer=other)
    with pytest.raises(VocabularyMismatchError):
        lm.LanguageModel(bpe_run.lm.model, toklab.ByteTokenizer())


def test_corrupt_checkpoints(bpe_run, tmp_path):
    path = tmp_path / "model.pt"
    bpe_run.lm.save(path)
    raw = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    torch.save({"format": "toklab.lm", "version": 99}, tmp_path / "future.pt")
    for name in ["cut.pt", "junk.pt", "other.pt", "future.pt"]:
        with pytest.raises(CorruptFileError):
            lm.LanguageModel.load(tmp_path / name, device="cpu")
    with pytest.raises(FileNotFoundError):
        lm.LanguageModel.load(tmp_path / "missing.pt", device="cpu")


def test_checkpoint_config_is_checked_against_the_weights_before_building(tmp_path, monkeypatch):
    """A damaged config (a huge n_layer) is refused by the stored weights' names and shapes,
    before a model of its size is built (which took minutes); a config of the wrong type is a
    CorruptFileError, not an AttributeError."""
    import toklab.lm.language_model as lm_mod

    path = tmp_path / "model.pt"
    uniform_byte_model(context=16).save(path)
    data = torch.load(path, weights_only=True)
    real_gpt = lm_mod.GPT

    def no_huge_models(cfg):
        if torch.get_default_device().type != "meta":  # (meta tensors take no memory)
            assert cfg.n_layer < 100 and cfg.n_embd < 10_000, f"built {cfg}"
        return real_gpt(cfg)

    monkeypatch.setattr(lm_mod, "GPT", no_huge_models)
    for change in [
        {"n_layer": 200_000},
        {"n_embd": 1 << 20, "n_head": 1},
        {"context": 10**9},
        {"vocab_size": 300},
    ]:
        torch.save({**data, "config": {**data["config"], **change}}, tmp_path / "bad.pt")
        with pytest.raises(CorruptFileError, match=r"bad\.pt"):
            lm.LanguageModel.load(tmp_path / "bad.pt", device="cpu")
    for config in [5, "x", None]:
        torch.save({**data, "config": config}, tmp_path / "bad.pt")
        with pytest.raises(CorruptFileError):
            lm.LanguageModel.load(tmp_path / "bad.pt", device="cpu")
    lm.LanguageModel.load(path, device="cpu")  # (the spy lets a sound checkpoint through)


def test_checkpoint_weights_are_checksummed(tmp_path):
    path = tmp_path / "model.pt"
    model = uniform_byte_model(context=16)
    model.save(path)
    data = torch.load(path, weights_only=True)
    assert "model_sha256" in data
    # One weight changed by one bit (as a flipped bit on disk would), the checksum kept.
    w = data["model"]["blocks.0.fc.weight"].clone()
    w.view(torch.int32)[3, 5] ^= 1 << 9
    torch.save({**data, "model": {**data["model"], "blocks.0.fc.weight": w}}, tmp_path / "f.pt")
    with pytest.raises(CorruptFileError, match="checksum"):
        lm.LanguageModel.load(tmp_path / "f.pt", device="cpu")
    # Non-finite weights are damage too, checksum or not.
    nan = {k: torch.full_like(v, float("nan")) for k, v in data["model"].items()}
    torch.save({k: v for k, v in {**data, "model": nan}.items() if k != "model_sha256"}, path)
    with pytest.raises(CorruptFileError, match="finite"):
        lm.LanguageModel.load(path, device="cpu")
    # A checkpoint written before checksums existed still loads.
    del data["model_sha256"]
    torch.save(data, path)
    again = lm.LanguageModel.load(path, device="cpu")
    for x, y in zip(again.model.state_dict().values(), model.model.state_dict().values()):
        assert torch.equal(x, y)


def test_damaged_training_state_on_resume(tmp_path):
    tok = toklab.ByteTokenizer()
    path = tmp_path / "run.pt"
    tiny(tok, budget_bytes=4_000, checkpoint=path, stop_after=1)
    good = torch.load(path, weights_only=True)
    damages = [
        lambda t: t.update(options={"bogus": 1}),
        lambda t: t.pop("optimizer"),
        lambda t: t.update(optimizer=5),
        lambda t: t.update(numpy_rng={"x": 1}),
        lambda t: t.update(torch_rng=torch.zeros(3, dtype=torch.uint8)),
        lambda t: t.update(step="3"),
        lambda t: t.update(history=[[1, 2]]),
    ]
    for damage in damages:
        data = {**good, "training": dict(good["training"])}
        damage(data["training"])
        torch.save(data, tmp_path / "bad.pt")
        with pytest.raises(CorruptFileError, match=r"bad\.pt"):
            tiny(tok, budget_bytes=4_000, checkpoint=tmp_path / "bad.pt", resume=True)
    torch.save({**good, "training": 5}, tmp_path / "bad.pt")
    with pytest.raises(CorruptFileError, match=r"bad\.pt"):
        tiny(tok, budget_bytes=4_000, checkpoint=tmp_path / "bad.pt", resume=True)


# -- the protocols ----------------------------------------------------------------------------


def test_incremental_path_matches_full_forward(bpe_run):
    model = bpe_run.lm
    assert isinstance(model, lm.TokenLM)
    ids = model.encode(TEXT).tolist()[:30]
    prefixes = [ids[:5], ids[:9], [], ids[:5]]
    state = model.start(prefixes)
    assert isinstance(state, lm.LMState)
    np.testing.assert_allclose(state.logprobs, model.next_token_logprobs(prefixes), atol=2e-5)
    grown = [list(p) for p in prefixes]
    for k in range(6):
        nxt = [ids[(len(p) + k) % len(ids)] for p in prefixes]
        state.append(nxt)
        for p, t in zip(grown, nxt):
            p.append(t)
        np.testing.assert_allclose(state.logprobs, model.next_token_logprobs(grown), atol=2e-5)
    # select keeps, reorders and repeats rows, each continuing independently.
    picked = state.select([3, 0, 0, 2])
    np.testing.assert_allclose(picked.logprobs, state.logprobs[[3, 0, 0, 2]])
    picked.append([ids[0], ids[1], ids[2], ids[3]])
    rows = [grown[3] + [ids[0]], grown[0] + [ids[1]], grown[0] + [ids[2]], grown[2] + [ids[3]]]
    np.testing.assert_allclose(picked.logprobs, model.next_token_logprobs(rows), atol=2e-5)
    assert np.allclose(np.exp(state.logprobs).sum(1), 1.0)
    # concat: rows of states of different lengths in one ragged batch (left-padded KV caches),
    # advanced by one forward pass, each row as if alone.
    from toklab.lm.language_model import GPTState

    other = model.start([ids[:2], ids[:12]])
    both = GPTState.concat([(picked, [1, 3]), (other, [1, 0]), (state, [2])])
    want = [rows[1], rows[3], ids[:12], ids[:2], grown[2]]
    np.testing.assert_allclose(both.logprobs, model.next_token_logprobs(want), atol=2e-5)
    assert both.length == [len(w) + 1 for w in want]
    for k in range(3):
        nxt = [ids[(7 * j + k) % len(ids)] for j in range(len(want))]
        both.append(nxt)
        want = [[*w, t] for w, t in zip(want, nxt)]
        np.testing.assert_allclose(both.logprobs, model.next_token_logprobs(want), atol=2e-5)
    again = both.select([4, 0])
    again.append([ids[0], ids[1]])
    np.testing.assert_allclose(
        again.logprobs,
        model.next_token_logprobs([[*want[4], ids[0]], [*want[0], ids[1]]]),
        atol=2e-5,
    )


def test_byte_lm_protocol(byte_run, bpe_run):
    model = byte_run.lm
    assert isinstance(model, lm.ByteLM) and not model.has_end
    lp = model.next_byte_logprobs([b"it was the ", b"", "ép".encode()])
    assert lp.shape == (3, 256) and np.allclose(np.exp(lp).sum(1), 1.0)
    assert lp[0].argmax() in b"abew"  # it learned the text
    state = model.start_bytes([b"it was the ", b"it"])
    state.append([ord("a"), ord(" ")])
    np.testing.assert_allclose(
        state.logprobs, model.next_byte_logprobs([b"it was the a", b"it "]), atol=2e-5
    )
    with pytest.raises(ConfigError, match="raw bytes"):
        bpe_run.lm.next_byte_logprobs([b"x"])
    # One bytes for the batch, or an int, was taken as prefixes of zero bytes.
    for bad in (b"abc", "abc", [3], [None], ["a\ud800"]):
        with pytest.raises(InvalidInputError):
            model.next_byte_logprobs(bad)
        with pytest.raises(InvalidInputError):
            model.start_bytes(bad)
    np.testing.assert_allclose(model.next_byte_logprobs(["ép"]), lp[2:], atol=2e-5)


def test_byte_lm_with_specials_renormalises_over_bytes():
    tok = toklab.ByteTokenizer(["<|endoftext|>"])
    run = tiny(tok, budget_bytes=2_000)
    lp = run.lm.next_byte_logprobs([b"it"])
    assert lp.shape == (1, 256) and np.exp(lp).sum() == pytest.approx(1.0)


def test_context_and_id_errors(bpe_run):
    model = bpe_run.lm
    long = [5] * model.context
    with pytest.raises(ContextLengthError, match="truncate=True"):
        model.next_token_logprobs([long])
    kept = model.next_token_logprobs([long], truncate=True)
    # Truncation keeps the last `context` positions: the document start and [7] fall off.
    np.testing.assert_allclose(kept, model.next_token_logprobs([[7, *long]], truncate=True))
    with pytest.raises(UnknownTokenError):
        model.next_token_logprobs([[model.vocab_size]])
    state = model.start([[1] * (model.context - 2)])
    state.append([1])
    with pytest.raises(ContextLengthError):
        state.append([1])


def test_token_ids_must_be_integers():
    """Floats were truncated ([104.7] read as [104]), strings parsed, NaN a plain ValueError."""
    model = uniform_byte_model(context=16)
    for bad in ([104.7], ["104"], [float("nan")], [True], [[1, 2]], "ab"):
        with pytest.raises(InvalidIdsError):
            model.next_token_logprobs([bad])
        with pytest.raises(InvalidIdsError):
            model.start([bad])
    with pytest.raises(InvalidIdsError, match="1-D"):
        model.next_token_logprobs([104])  # a prefix, not a list of prefixes
    with pytest.raises(UnknownTokenError):
        model.next_token_logprobs([[-1]])
    state = model.start([[1, 2], [3]])
    for bad in ([1.5, 2], ["1", "2"], [float("nan"), 1]):
        with pytest.raises(InvalidIdsError):
            state.append(bad)
    with pytest.raises(UnknownTokenError):
        state.append([1, 256])
    state.append(np.array([1, 2], dtype=np.uint32))  # integer arrays of any width are fine
    with pytest.raises(ConfigError, match="batch_size"):
        model.next_token_logprobs([[1]], batch_size=0)


# -- bad input --------------------------------------------------------------------------------


def test_training_input_errors(small_tokenizer):
    tok = toklab.ByteTokenizer()
    with pytest.raises(EmptyCorpusError):
        tiny(tok, corpus=[])
    with pytest.raises(EmptyCorpusError):
        tiny(tok, corpus=["", ""])
    with pytest.raises(ConfigError, match="preset"):
        tiny(tok, preset="huge")
    with pytest.raises(ConfigError):
        tiny(tok, budget_bytes=-5)
    with pytest.raises(ConfigError, match="vocab_size"):
        lm.train_lm(tok, [TEXT], config=lm.GPTConfig(vocab_size=1000), device="cpu")
    for seed in (-1, 1.5, True, 2**64):
        with pytest.raises(ConfigError, match="seed"):
            tiny(tok, seed=seed)
    with pytest.raises(ConfigError, match="budget_bytes"):
        tiny(tok, budget_bytes=float("inf"))


def test_text_that_is_not_unicode(tmp_path):
    """Lone surrogates have no UTF-8 bytes, and a file that is not UTF-8 has no text: both are
    InvalidInputError (they were UnicodeEncodeError / UnicodeDecodeError)."""
    tok = toklab.ByteTokenizer()
    with pytest.raises(InvalidInputError, match="surrogate"):
        tiny(tok, corpus=[TEXT, "ab\ud800"])
    with pytest.raises(InvalidInputError, match="surrogate"):
        lm.evaluate(uniform_byte_model(), ["ok", "ab\ud800"])
    with pytest.raises(InvalidInputError, match="surrogate"):
        uniform_byte_model().encode("ab\ud800")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(TEXT.encode() + b"\xff\xfe tail")
    with pytest.raises(InvalidInputError):
        tiny(tok, corpus=str(bad))

    def documents():
        yield TEXT
        yield b"\xff".decode("utf-8")  # a reader that decodes as it goes

    with pytest.raises(InvalidInputError, match="UTF-8"):
        lm.encode_corpus(tok, documents(), 256)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda():
    with pytest.raises(DeviceError, match="no CUDA"):
        tiny(toklab.ByteTokenizer(), device="cuda")
    with pytest.raises(DeviceError):
        lm.resolve_device("tpu")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import toklab.lm.train as train_mod

    path = tmp_path / "run.pt"
    real = train_mod.F.cross_entropy
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        loss = real(*args, **kwargs)
        if not torch.is_grad_enabled():
            return loss  # (the check of the weights before a save)
        calls["n"] += 1
        return loss * float("nan") if calls["n"] > 5 else loss

    monkeypatch.setattr(train_mod.F, "cross_entropy", flaky)
    with pytest.raises(TrainingDivergedError, match="step 5") as e:
        tiny(toklab.ByteTokenizer(), checkpoint=path, checkpoint_every=2)
    assert str(path) in str(e.value)
    good = torch.load(path, weights_only=True)
    assert good["training"]["step"] == 4
    assert all(torch.isfinite(t).all() for t in good["model"].values())


@pytest.mark.parametrize("lr", [300.0, 1e30])
def test_weights_that_diverge_are_never_saved_nor_returned(tmp_path, lr):
    """A finite loss before an update does not make the weights after it finite: a real
    divergence (no patched loss), caught before any checkpoint or result holds such weights."""
    path = tmp_path / "run.pt"
    with pytest.raises(TrainingDivergedError):
        tiny(toklab.ByteTokenizer(), lr=lr, warmup=1, checkpoint=path, checkpoint_every=1)
    if path.exists():
        kept = lm.LanguageModel.load(path, device="cpu")
        assert math.isfinite(lm.evaluate(kept, [TEXT[:300]]).bits_per_byte)
    with pytest.raises(TrainingDivergedError):
        tiny(toklab.ByteTokenizer(), lr=lr, warmup=1, grad_clip=0.0)


def test_language_model_pickles_through_checkpoint_not_pickle(bpe_run, tmp_path):
    # The model travels as a checkpoint; its tokenizer pickles as usual.
    assert pickle.loads(pickle.dumps(bpe_run.lm.tokenizer)).to_json() == (
        bpe_run.lm.tokenizer.to_json()
    )


# -- transformers adapter ---------------------------------------------------------------------


def test_transformers_adapter(small_tokenizer, tmp_path):
    transformers = pytest.importorskip("transformers")
    small_tokenizer.save_hf(tmp_path / "source.json")
    hf_tok = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tmp_path / "source.json"), eos_token="<|endoftext|>"
    )
    eos = hf_tok.eos_token_id
    config = transformers.GPT2Config(
        vocab_size=small_tokenizer.vocab_size,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(tmp_path / "model")
    hf_tok.save_pretrained(tmp_path / "model")

    adapter = lm.HFTokenLM(tmp_path / "model", device="cpu")
    assert isinstance(adapter, lm.TokenLM) and adapter.vocab_size == small_tokenizer.vocab_size
    ids = adapter.encode("To be, or not to be").tolist()
    assert ids == small_tokenizer.encode("To be, or not to be").tolist()
    prefixes = [ids[:3], ids, []]
    got = adapter.next_token_logprobs(prefixes)
    with torch.no_grad():
        for row, p in zip(got, prefixes):
            logits = model(torch.tensor([[eos, *p]])).logits[0, -1].double()
            np.testing.assert_allclose(row, logits.log_softmax(-1).numpy(), atol=1e-5)
    state = adapter.start(prefixes)
    state.append([ids[3], ids[0], ids[0]])
    full = adapter.next_token_logprobs([ids[:4], [*ids, ids[0]], [ids[0]]])
    np.testing.assert_allclose(state.logprobs, full, atol=1e-5)
    picked = state.select([2, 2, 0])
    picked.append([ids[1], ids[2], ids[4]])
    full = adapter.next_token_logprobs([ids[:2], [ids[0], ids[2]], ids[:5]])
    np.testing.assert_allclose(picked.logprobs, full, atol=1e-5)
    # The cached path stops at the model's context as the full path does (a raw IndexError
    # from the position embedding before), and before any row is advanced.
    state = adapter.start([[ids[0]] * 62, [ids[0]]])  # 63 and 2 positions of 64
    state.append([ids[1], ids[1]])
    before = state.logprobs.copy()
    with pytest.raises(ContextLengthError, match="context is 64"):
        state.append([ids[1], ids[1]])
    np.testing.assert_array_equal(state.logprobs, before)
    with pytest.raises(ContextLengthError):
        adapter.next_token_logprobs([[ids[0]] * 64])
    with pytest.raises(ConfigError, match="local"):
        lm.HFTokenLM(tmp_path / "nope", device="cpu")


# -- CLI --------------------------------------------------------------------------------------


def test_cli_train_and_eval(tmp_path):
    from click.testing import CliRunner

    from toklab.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT * 30, encoding="utf-8")
    out, result = tmp_path / "m.pt", tmp_path / "r.json"
    runner = CliRunner()
    args = ["lm", "train", str(corpus), "--tokenizer", "bytes", "--preset", "tiny"]
    args += ["--budget-bytes", "10k", "--device", "cpu", "--output", str(out)]
    args += ["--json", str(result), "--threads", "2"]
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    data = json.loads(result.read_text())
    assert data["train"]["bytes_seen"] >= 10_000 and data["eval"]["bytes"] > 0
    assert 0 < data["eval"]["bits_per_byte"] < 8
    r = runner.invoke(main, ["lm", "eval", str(out), str(corpus), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "bits per byte" in r.output
    r = runner.invoke(main, ["lm", "eval", str(corpus), "--device", "cpu"])
    assert r.exit_code != 0 and "checkpoint" in r.output
    r = runner.invoke(main, [*args[:-4], "--budget-bytes", "lots"])
    assert r.exit_code != 0 and "amount" in r.output
