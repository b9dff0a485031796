"""Language games: deterministic generators whose answers are right, scoring, and the LM
helpers that play them (fine-tuning on answers, greedy generation, multiple choice)."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

import toklab
from toklab import tasks
from toklab.errors import ConfigError

WORDS = tasks.word_list(n=1000)


def _right(ex: tasks.Example, option: str) -> bool:
    q = ex.prompt
    if ex.kind == "most_letter":
        return option.count(q.split("'")[1]) >= 2
    if ex.kind == "contains":
        return q.split("'")[1] in option
    if ex.kind == "starts_with":
        return option.startswith(q.split("'")[1])
    if ex.kind == "ends_with":
        return option.endswith(q.split("'")[1])
    if ex.kind == "longest":
        return len(option) >= 7
    return len(option) <= 3


def test_word_list_is_deterministic():
    assert tasks.word_list(n=1000) == WORDS
    assert len(WORDS) == 1000 and "the" in WORDS[:5] and all(w.isalpha() for w in WORDS)


def test_langgame_questions_have_exactly_one_right_option():
    qs = tasks.langgame(WORDS, 600, seed=3)
    assert qs == tasks.langgame(WORDS, 600, seed=3)
    assert qs != tasks.langgame(WORDS, 600, seed=4)
    assert {q.kind for q in qs} == set(tasks.KINDS)
    for q in qs:
        assert len(q.options) == 4 and len(set(q.options)) == 4
        assert [_right(q, o) for o in q.options].count(True) == 1, q
        assert _right(q, q.answer.strip()) and q.answer.startswith(" ")
        assert q.prompt.endswith("Answer:")
    with pytest.raises(ConfigError):
        tasks.langgame(WORDS, 5, kinds=["rhymes"])
    with pytest.raises(ConfigError):
        tasks.langgame(["a", "b"], 5)


def test_addition():
    qs = tasks.addition(500, seed=1)
    assert qs == tasks.addition(500, seed=1)
    for q in qs:
        a, b = q.prompt[1:-1].split("+")
        assert q.prompt.startswith("$") and q.prompt.endswith("=") and len(b) == 3
        assert 100 <= int(a) <= 999 and q.answer == str(int(a) + int(b))[::-1]
    # "all" draws as before the splits existed.
    assert [q.prompt for q in tasks.addition(3, seed=0)] == ["$964+394=", "$876+911=", "$530+041="]


def test_addition_splits_are_disjoint_and_sized_as_the_papers():
    every = [f"${a}+{b:03d}=" for a in range(100, 1000) for b in range(1000)]
    sides = Counter(tasks.addition_split(e) for e in every)
    assert sides == {"train": 810_000, "validation": 90_000}
    train = {q.prompt for s in range(3) for q in tasks.addition(20_000, seed=s, split="train")}
    valid = {q.prompt for s in range(3) for q in tasks.addition(5_000, seed=s, split="validation")}
    assert train.isdisjoint(valid)
    # Every problem of a split can be drawn: 200,000 draws of the 90,000 validation ones find
    # about 80,000 (1 - e^(-20/9) of them).
    assert len({q.prompt for q in tasks.addition(200_000, seed=9, split="validation")}) > 79_000
    for q in tasks.addition(200, seed=3, split="validation"):
        a, b = q.prompt[1:-1].split("+")
        assert q.answer == str(int(a) + int(b))[::-1]
    with pytest.raises(ConfigError):
        tasks.addition(5, split="test")
    with pytest.raises(ConfigError):
        tasks.addition(-1)
    with pytest.raises(ConfigError):
        tasks.addition_split(tasks.Example("$1+2=", "3", "addition"))
    with pytest.raises(ConfigError):
        tasks.addition_split("$099+100=")


def test_scoring():
    ex = [tasks.Example("p", " cat", "x"), tasks.Example("q", "123", "addition")]
    assert tasks.score(["cat", "1234"], ex) == 0.5
    assert tasks.score(["cat", "1234"], ex, lenient=True) == 1.0
    assert tasks.score([" cat ", "12"], ex) == 0.5
    with pytest.raises(ConfigError):
        tasks.score(["x"], ex)


def test_finetune_generate_and_choose():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    import toklab.lm as lm

    tok = toklab.ByteTokenizer()
    run = lm.train_lm(
        tok, ["abc " * 200], preset="tiny", budget_bytes=5_000, device="cpu", progress=False
    )
    items = [("$12=", "21;"), ("$34=", "43;"), ("$56=", "65;"), ("$78=", "87;")]
    pairs = [(tok.encode(p).tolist(), tok.encode(a).tolist()) for p, a in items]
    losses = lm.finetune(run.lm, pairs, steps=150, batch_size=8, lr=3e-3, warmup=10)
    assert losses[-1] < losses[0] / 4
    prompts = [p for p, _ in pairs]
    outs = lm.generate(run.lm, prompts, max_tokens=5, stop=[ord(";")])
    assert [tok.decode(o) for o in outs] == [a for _, a in items]
    best, scores = lm.choose(run.lm, prompts[0], [tok.encode(x).tolist() for x in ["12;", "21;"]])
    assert best == 1 and scores[1] > scores[0]
    with pytest.raises(ConfigError):
        lm.finetune(run.lm, [], steps=3)


def test_finetune_is_seeded_with_dropout_too():
    """Dropout draws from torch's generators: `seed` seeds them (and leaves the caller's)."""
    torch = pytest.importorskip("torch")
    import copy

    import toklab.lm as lm

    tok = toklab.ByteTokenizer()
    cfg = lm.GPTConfig(
        vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16, context=32, dropout=0.3
    )
    base = lm.LanguageModel(lm.GPT(cfg), tok, "cpu")
    pairs = [(list(b"abc"), list(b"def")), (list(b"hello "), list(b"world"))] * 3
    state = torch.get_rng_state()
    runs = [
        lm.finetune(copy.deepcopy(base), pairs, steps=3, batch_size=4, seed=seed)
        for seed in (0, 0, 1)
    ]
    assert torch.equal(torch.get_rng_state(), state)
    assert runs[0] == runs[1] and runs[0] != runs[2]


def _untrained_byte_lm():
    torch = pytest.importorskip("torch")
    import toklab.lm as lm

    cfg = lm.GPTConfig(vocab_size=256, n_layer=1, n_head=2, n_embd=16, context=32)
    torch.manual_seed(0)
    return lm.LanguageModel(lm.GPT(cfg), toklab.ByteTokenizer(), "cpu")


def test_finetune_choose_and_generate_check_ids_and_options():
    """Ids out of range were a raw IndexError or, for -1 (the ignored target), silently dropped;
    -1 in choose wrapped round to the last id; floats were truncated."""
    torch = pytest.importorskip("torch")
    import toklab.lm as lm
    from toklab.errors import ContextLengthError, InvalidIdsError, UnknownTokenError

    model = _untrained_byte_lm()
    weights = [p.clone() for p in model.model.parameters()]
    for pair, error in [
        (([1, 2], [256]), UnknownTokenError),
        (([1, 2], [5, -1]), UnknownTokenError),
        (([-1], [5]), UnknownTokenError),
        (([1.5], [5]), InvalidIdsError),
        (([1], [5.0]), InvalidIdsError),
        (([1], ["5"]), InvalidIdsError),
    ]:
        with pytest.raises(error):
            lm.finetune(model, [([1], [2]), pair], steps=1, batch_size=2)
    for options in [
        {"batch_size": 0},
        {"lr": float("nan")},
        {"lr": 0.0},
        {"warmup": -1},
        {"seed": -1},
        {"steps": 0},
    ]:
        with pytest.raises(ConfigError):
            lm.finetune(model, [([1], [2])], **{"steps": 1, **options})
    # Nothing was trained by the refused calls.
    assert all(torch.equal(p, w) for p, w in zip(model.model.parameters(), weights))

    with pytest.raises(UnknownTokenError):
        lm.choose(model, [1, 2], [[-1], [255]])
    with pytest.raises(UnknownTokenError):
        lm.choose(model, [1, 2], [[256]])
    with pytest.raises(InvalidIdsError):
        lm.choose(model, [1.5], [[3]])
    with pytest.raises(ConfigError):
        lm.choose(model, [1, 2], [])
    with pytest.raises(ConfigError, match="empty"):
        lm.choose(model, [1, 2], [[3], []])

    # No tokens asked for: an empty continuation per prompt (it was a ContextLengthError).
    assert lm.generate(model, [[1], [2, 3]], 0) == [[], []]
    with pytest.raises(ConfigError):
        lm.generate(model, [[1]], -1)
    with pytest.raises(ConfigError):
        lm.generate(model, [[1]], 3, batch_size=0)
    with pytest.raises(UnknownTokenError):
        lm.generate(model, [[1, 256]], 3)
    with pytest.raises(ContextLengthError):
        lm.generate(model, [[1] * 32], 0)
    # Each prompt has its own room in the context (a long prompt in the batch cut the others'
    # continuations short); the last token generated takes no position.
    outs = lm.generate(model, [[1], [1] * 29, [1] * 31], 5)
    assert [len(o) for o in outs] == [5, 3, 1]
    assert outs == [lm.generate(model, [p], 5)[0] for p in ([1], [1] * 29, [1] * 31)]


def test_finetune_learning_rate_is_continuous_after_warmup(monkeypatch):
    """The cosine decay starts after warmup: the rate just after warmup is about the peak (it
    fell to 0.5 * (1 + cos(pi * warmup / steps)) times the peak, half of it here)."""
    pytest.importorskip("torch")
    import sys

    import toklab.lm as lm

    ft = sys.modules["toklab.lm.finetune"]
    rates = []
    real_adamw = ft.adamw

    def spy(*args, **kwargs):
        opt = real_adamw(*args, **kwargs)
        real_step = opt.step

        def step(*a, **k):
            rates.append(opt.param_groups[0]["lr"])
            return real_step(*a, **k)

        opt.step = step
        return opt

    monkeypatch.setattr(ft, "adamw", spy)
    model = _untrained_byte_lm()
    lm.finetune(model, [([1], [2, 3])], steps=20, warmup=10, batch_size=1, lr=1e-3)
    assert len(rates) == 20
    assert rates[9] == pytest.approx(1e-3) and rates[10] == pytest.approx(1e-3, rel=0.02)
    assert all(a <= b for a, b in itertools.pairwise(rates[:10]))  # warming up
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))  # then decaying
    assert rates[-1] < 0.05e-3


def test_games_check_their_settings():
    for bad in (
        lambda: tasks.langgame(WORDS, 2, kinds=[]),  # (a division by zero)
        lambda: tasks.langgame(["", "b", "c", "d"], 5, kinds=["contains"]),
        lambda: tasks.langgame([1, 2, 3, 4], 5),
        lambda: tasks.langgame(WORDS, -1),
        lambda: tasks.word_list(["a b c"], n=-1),  # (silently dropped the last word)
        lambda: tasks.word_list([None]),
        lambda: tasks.word_list("just one text"),
        lambda: tasks.score([None], [tasks.Example("p", "a", "x")]),
    ):
        with pytest.raises(ConfigError):
            bad()


def test_counts_may_be_numpy_integers():
    import numpy as np

    assert len(tasks.addition(np.int64(3))) == 3
    assert len(tasks.langgame(WORDS, np.int64(3))) == 3
    assert len(tasks.word_list(["ab cd ef gh"], n=np.int64(2))) == 2
    with pytest.raises(ConfigError):
        tasks.addition(True)
