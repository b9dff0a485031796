"""Exact byte-level probabilities: the engine against brute-force enumeration of every token
sequence, on a tiny BPE and a token LM with closed-form probabilities."""

from __future__ import annotations

import itertools
import math
from functools import cache
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toklab.byteprobs import ByteEnsemble, ByteLevelLM
from toklab.errors import ConfigError, InvalidIdsError, InvalidInputError


class MiniBPE:
    """BPE over the bytes "a" and "b" with three merges (no pre-tokenization)."""

    tokens: ClassVar[list[bytes]] = [b"a", b"b", b"ab", b"bb", b"aba"]
    merges: ClassVar[list[tuple[int, int, int]]] = [(0, 1, 2), (1, 1, 3), (2, 0, 4)]  # by rank
    vocab_size = 5

    def token_bytes(self, i: int) -> bytes:
        return self.tokens[i]

    def encode_bytes(self, data: bytes) -> list[int]:
        ids = [self.tokens.index(bytes([c])) for c in data]
        for left, right, new in self.merges:
            out, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and ids[i] == left and ids[i + 1] == right:
                    out.append(new)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        return ids


class ClosedFormLM:
    """P(t | prefix) from a fixed table of the last token (and the prefix length's parity)."""

    vocab_size = 5

    def __init__(self, seed: int = 0, canonical_only: bool = False) -> None:
        rng = np.random.default_rng(seed)
        self.table = rng.normal(size=(2, 6, 5)) * 1.5
        self.canonical_only = canonical_only
        self.tok = MiniBPE()
        self.key = (seed, canonical_only)

    def __hash__(self) -> int:  # by value: the brute force caches conditionals per model
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClosedFormLM) and other.key == self.key

    def next_token_logprobs(self, prefixes):
        out = []
        for p in prefixes:
            logits = self.table[len(p) % 2, p[-1] if p else 5].copy()
            if self.canonical_only:
                data = b"".join(self.tok.tokens[t] for t in p)
                for t in range(5):
                    seq = [*p, t]
                    if self.tok.encode_bytes(data + self.tok.tokens[t]) != seq:
                        logits[t] = -math.inf
            m = logits[np.isfinite(logits)].max()
            z = np.exp(logits - m)
            out.append(logits - m - math.log(z.sum()))
        return np.array(out)


def brute_prefix_prob(lm: ClosedFormLM, x: bytes, canonical: bool) -> float:
    """Sum over every token sequence (up to len(x) tokens) that covers x."""
    tok = MiniBPE()
    total = 0.0
    for k in range(1, len(x) + 1):
        for seq in itertools.product(range(5), repeat=k):
            head = b"".join(tok.tokens[t] for t in seq[:-1])
            full = head + tok.tokens[seq[-1]]
            if not (len(head) < len(x) and x.startswith(head) and full.startswith(x)):
                continue
            if canonical and tok.encode_bytes(full) != list(seq):
                continue
            total += math.exp(sum(_cond(lm, seq[:j])[seq[j]] for j in range(k)))
    return total


@cache
def _cond(lm: ClosedFormLM, prefix: tuple[int, ...]) -> tuple[float, ...]:
    return tuple(lm.next_token_logprobs([list(prefix)])[0])


@settings(max_examples=25, deadline=None)
@given(x=st.binary(min_size=1, max_size=5).map(lambda b: bytes(97 + (c % 2) for c in b)),
       seed=st.integers(0, 3), mode=st.sampled_from(["all", "canonical"]))  # fmt: skip
def test_prefix_and_next_byte_match_brute_force(x: bytes, seed: int, mode: str) -> None:
    lm = ClosedFormLM(seed)
    blm = ByteLevelLM(lm, MiniBPE(), mode=mode)
    canonical = mode == "canonical"
    want = brute_prefix_prob(lm, x, canonical)
    assert math.exp(blm.prefix_logprob(x)) == pytest.approx(want, rel=1e-9, abs=1e-15)
    if want > 0:
        nb = blm.next_byte_logprobs([x])[0]
        ext = {b: brute_prefix_prob(lm, x + bytes([b]), canonical) for b in (97, 98)}
        for b in (97, 98):
            # Canonical covers lose the mass of non-canonical extensions: the next-byte
            # distribution is normalised over the bytes (in "all" mode the sum is P(x) itself).
            assert math.exp(nb[b]) == pytest.approx(ext[b] / sum(ext.values()), rel=1e-9)
            if not canonical:
                assert sum(ext.values()) == pytest.approx(want, rel=1e-9)
        assert np.exp(nb[[i for i in range(256) if i not in (97, 98)]]).max() == 0
        assert math.isclose(float(np.exp(nb).sum()), 1.0, rel_tol=1e-12)
        if not canonical:
            assert blm.logprob(x) == pytest.approx(blm.prefix_logprob(x), rel=1e-9)


def test_unbounded_beam_equals_all_and_small_beams_report_pruning() -> None:
    lm = ClosedFormLM(1)
    x = b"abab"
    exact = ByteLevelLM(lm, MiniBPE(), mode="all").next_byte_logprobs([x])[0]
    wide = ByteLevelLM(lm, MiniBPE(), mode="all", beam=10_000)
    np.testing.assert_allclose(wide.next_byte_logprobs([x])[0], exact, rtol=1e-12)
    assert wide.pruned == 0
    narrow = ByteLevelLM(lm, MiniBPE(), mode="all", beam=1)
    narrow.next_byte_logprobs([x])
    assert narrow.pruned > 0
    # A threshold of 0 prunes nothing; a high one prunes, and reports it.
    zero = ByteLevelLM(lm, MiniBPE(), mode="all", threshold=0.0)
    np.testing.assert_allclose(zero.next_byte_logprobs([x])[0], exact, rtol=1e-12)
    high = ByteLevelLM(lm, MiniBPE(), mode="all", threshold=0.5)
    assert high.approximate and not zero.approximate
    high.next_byte_logprobs([x])
    assert high.pruned > 0
    # The threshold keeps every state within the factor: a tiny one changes little.
    tiny = ByteLevelLM(lm, MiniBPE(), mode="all", threshold=1e-12, beam=10_000)
    np.testing.assert_allclose(tiny.next_byte_logprobs([x])[0], exact, rtol=1e-12)
    with pytest.raises(ConfigError):
        ByteLevelLM(lm, MiniBPE(), threshold=1.5)


def test_canonical_equals_all_for_a_model_with_canonical_mass_only() -> None:
    lm = ClosedFormLM(2, canonical_only=True)
    for x in (b"a", b"ab", b"abba", b"babab"):
        a = ByteLevelLM(lm, MiniBPE(), mode="all").next_byte_logprobs([x])[0]
        c = ByteLevelLM(lm, MiniBPE(), mode="canonical").next_byte_logprobs([x])[0]
        np.testing.assert_allclose(np.exp(a), np.exp(c), atol=1e-12)


def test_prompts_that_end_mid_token_and_sampling() -> None:
    lm = ClosedFormLM(3, canonical_only=True)
    blm = ByteLevelLM(lm, MiniBPE())
    # "ab" is one token; a prompt ending with "a" must still allow the "b" that completes it.
    assert blm.next_byte_logprobs([b"a"])[0][98] > -math.inf
    s1 = blm.sample(b"ab", max_bytes=6, seed=5)
    assert s1 == blm.sample(b"ab", max_bytes=6, seed=5)
    assert set(s1) <= {97, 98} and len(s1) == 6
    assert blm.sample(b"a", max_bytes=3, temperature=0) in {
        bytes(p) for p in itertools.product(b"ab", repeat=3)
    }


def test_bad_input() -> None:
    lm = ClosedFormLM(0)
    with pytest.raises(ConfigError):
        ByteLevelLM(lm, MiniBPE(), mode="greedy")
    with pytest.raises(ConfigError):
        ByteLevelLM(lm, MiniBPE(), beam=0)
    blm = ByteLevelLM(lm, MiniBPE())
    with pytest.raises(InvalidInputError, match="probability zero"):
        blm.next_byte_logprobs([b"c"])
    with pytest.raises(InvalidInputError):
        blm.logprob(3)  # type: ignore[arg-type]
    assert blm.logprob(b"") == 0.0
    assert blm.next_byte_logprobs([]).shape == (0, 256)
    assert blm.distributions(b"").shape == (1, 256)
    assert blm.sample(b"ab", max_bytes=0) == b""
    with pytest.raises(ConfigError):
        blm.sample(b"ab", top_p=0)
    state = blm.start_bytes([b"ab"])
    with pytest.raises(InvalidInputError):
        state.append([300])
    with pytest.raises(ConfigError):
        state.append([97, 98])
    with pytest.raises(ConfigError):
        state.select([1])
    with pytest.raises(InvalidInputError, match="probability zero"):
        blm.start_bytes([b"c"])


def test_on_toklab_bpe_and_gpt() -> None:
    """A toklab BPE and a (random) toklab GPT: canonical mode keeps one state per position and
    agrees with the token-level score of the canonical encoding as its first cover; "all" mode
    is a larger probability (every tokenization counts), and its next-byte distribution sums
    to one."""
    torch = pytest.importorskip("torch")
    from toklab.bpe import train_bpe
    from toklab.lm import LanguageModel
    from toklab.lm.model import GPT, GPTConfig

    torch.set_num_threads(2)
    tok = train_bpe(["the theme of the thesis: then there, and these themes"] * 20, vocab_size=264)
    torch.manual_seed(0)
    lm = LanguageModel(
        GPT(GPTConfig(vocab_size=264, n_layer=1, n_head=2, n_embd=32, context=32)), tok
    )
    text = b"the them"
    ids = [int(i) for i in tok.encode_bytes(text)]
    token_level = sum(float(lm.next_token_logprobs([ids[:j]])[0][ids[j]]) for j in range(len(ids)))
    canon = ByteLevelLM(lm, tok, mode="canonical")
    every = ByteLevelLM(lm, tok, mode="all")
    states = canon.states(text)
    assert max(len(s) for s in states) <= 1
    assert states[len(text)] == [tuple(ids)]
    assert tuple(ids) in {c[: len(ids)] for c in canon.covers(text)}
    all_lp = every.prefix_logprob(text)
    assert all_lp > token_level
    assert canon.prefix_logprob(text) >= token_level - 1e-9
    nb = every.next_byte_logprobs([text])[0]
    assert math.isclose(float(np.exp(nb).sum()), 1.0, rel_tol=1e-9)
    # Against brute force: every token sequence whose tokens before the last spell a strict
    # prefix of the text and whose last token reaches its end, scored token by token.
    vocab = [tok.token_bytes(i) for i in range(tok.vocab_size)]

    def brute(at: int, seq: tuple[int, ...]) -> list[tuple[int, ...]]:
        found = []
        for t, b in enumerate(vocab):
            if not b:
                continue
            if text[at:].startswith(b) and at + len(b) < len(text):
                found += brute(at + len(b), (*seq, t))
            elif b.startswith(text[at:]):
                found.append((*seq, t))
        return found

    covers = brute(0, ())
    assert sorted(covers) == sorted(every.covers(text))

    def score(seq: tuple[int, ...]) -> float:
        lp = lm.next_token_logprobs([seq[:j] for j in range(len(seq))])
        return sum(float(lp[j][seq[j]]) for j in range(len(seq)))

    scores = [score(c) for c in covers]
    assert all_lp == pytest.approx(float(np.logaddexp.reduce(scores)), abs=1e-6)


def test_cli_score_and_sample(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from click.testing import CliRunner

    from toklab.bpe import train_bpe
    from toklab.cli import main
    from toklab.lm import LanguageModel
    from toklab.lm.model import GPT, GPTConfig

    torch.set_num_threads(2)
    tok = train_bpe(["the theme of the thesis: then there, and these themes"] * 20, vocab_size=264)
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=264, n_layer=1, n_head=2, n_embd=32, context=64)
    path = tmp_path / "lm.pt"
    LanguageModel(GPT(cfg), tok).save(path)
    run = CliRunner().invoke(
        main, ["byteprobs", "score", "--model", str(path), "--text", "the them", "--mode", "all"]
    )
    assert run.exit_code == 0, run.output
    assert "bits per byte" in run.output and "token level" in run.output
    run = CliRunner().invoke(
        main,
        ["byteprobs", "sample", "--model", str(path), "--prompt", "the th", "--max-bytes", "5"],
    )
    assert run.exit_code == 0, run.output
    assert run.stdout_bytes.startswith(b"the th") and len(run.stdout_bytes) == len("the th") + 6
    run = CliRunner().invoke(
        main,
        ["byteprobs", "score", "--model", str(path), "--text", "the th", "--mode", "all",
         "--beam", "4", "--threshold", "0.001"],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    long = "the theme of the thesis: then there, and these themes. " * 6  # > the context
    run = CliRunner().invoke(main, ["byteprobs", "score", "--model", str(path), "--text", long])
    assert run.exit_code == 0, run.output
    run = CliRunner().invoke(main, ["byteprobs", "score", "--model", str(path), "--text", ""])
    assert run.exit_code != 0 and "empty" in run.output


class MarkovTokenLM:
    """The token process that a first-order Markov source over {a, b} induces through MiniBPE:
    P(T) = P(the canonical encoding of the byte stream starts with T), computed exactly by
    summing over every byte string of ``horizon`` bytes (long enough that the encoding of the
    first bytes no longer depends on what follows)."""

    vocab_size = 5

    def __init__(self, q: np.ndarray, start: np.ndarray, horizon: int = 12) -> None:
        self.tok = MiniBPE()
        self.strings = []
        for y in itertools.product((0, 1), repeat=horizon):
            p = start[y[0]] * np.prod([q[y[j], y[j + 1]] for j in range(horizon - 1)])
            self.strings.append((tuple(self.tok.encode_bytes(bytes(97 + c for c in y))), p))
        self.horizon = horizon

    def prob(self, seq: tuple[int, ...]) -> float:
        assert sum(len(self.tok.tokens[t]) for t in seq) <= self.horizon - 4
        k = len(seq)
        return float(sum(p for enc, p in self.strings if enc[:k] == seq))

    def next_token_logprobs(self, prefixes):
        out = []
        for pre in prefixes:
            base = self.prob(tuple(pre))
            with np.errstate(divide="ignore"):
                row = np.log([self.prob((*pre, t)) / base for t in range(5)])
            out.append(row)
        return np.array(out)


def test_markov_chain_recovered_exactly_and_naive_prompting_is_biased() -> None:
    """Phan et al. 2024a's experiment: the byte-level conversion of the induced token LM gives
    back the source's transition probabilities; prompting with the prompt's own encoding and
    reading the next token's first byte does not."""
    q = np.array([[0.3, 0.7], [0.6, 0.4]])
    start = np.array([0.5, 0.5])
    lm = MarkovTokenLM(q, start)
    blm = ByteLevelLM(lm, MiniBPE(), mode="all")
    # The first byte: the source's start distribution.
    first = np.exp(blm.next_byte_logprobs([b""])[0][[97, 98]])
    assert first == pytest.approx(start, rel=1e-9)
    worst_naive = 0.0
    for prompt in (b"a", b"b", b"ab", b"aab", b"abba", b"bab"):
        nb = np.exp(blm.next_byte_logprobs([prompt])[0][[97, 98]])
        want = q[prompt[-1] - 97]
        np.testing.assert_allclose(nb, want, atol=1e-9)
        ids = MiniBPE().encode_bytes(prompt)
        row = np.exp(lm.next_token_logprobs([ids])[0])
        naive = np.array([row[[0, 2, 4]].sum(), row[[1, 3]].sum()])  # first byte a / b
        naive /= naive.sum()
        worst_naive = max(worst_naive, float(np.abs(naive - want).max()))
    assert worst_naive > 0.05, worst_naive


def test_ensembles_in_byte_space() -> None:
    a = ByteLevelLM(ClosedFormLM(0), MiniBPE(), mode="all")
    b = ByteLevelLM(ClosedFormLM(1), MiniBPE(), mode="all")
    x = [b"ab", b"b"]
    la, lb = a.next_byte_logprobs(x), b.next_byte_logprobs(x)
    mix = ByteEnsemble([a, b], [0.25, 0.75]).next_byte_logprobs(x)
    np.testing.assert_allclose(np.exp(mix), 0.25 * np.exp(la) + 0.75 * np.exp(lb), atol=1e-12)
    prod = ByteEnsemble([a, b], rule="product").next_byte_logprobs(x)
    want = np.exp(0.5 * la + 0.5 * lb)
    np.testing.assert_allclose(np.exp(prod), want / want.sum(axis=1, keepdims=True), atol=1e-12)
    same = ByteEnsemble([a, a]).next_byte_logprobs(x)
    np.testing.assert_allclose(same, la, atol=1e-12)
    # A mixture's score lies between its members' (a mixture is at least the weighted worst).
    s = ByteEnsemble([a, b]).logprob(b"abab")
    assert min(a.logprob(b"abab"), b.logprob(b"abab")) - math.log(2) <= s
    with pytest.raises(ConfigError):
        ByteEnsemble([])
    with pytest.raises(ConfigError):
        ByteEnsemble([a, b], [1.0])


def test_tokenizers_it_cannot_handle() -> None:
    class Codes:
        vocab_size = 5

        def token_bytes(self, i: int) -> bytes:
            raise ConfigError("tokens are bits of a code")

    with pytest.raises(ConfigError, match="not byte strings"):
        ByteLevelLM(ClosedFormLM(0), Codes())

    class NoBytes:
        vocab_size = 5

    with pytest.raises(ConfigError, match="token_bytes"):
        ByteLevelLM(ClosedFormLM(0), NoBytes())
    # Prompts ending inside a UTF-8 character are just bytes; an empty prompt is the start.
    blm = ByteLevelLM(ClosedFormLM(0), MiniBPE(), mode="all")
    assert math.isclose(float(np.exp(blm.next_byte_logprobs([b""])[0]).sum()), 1.0)


# -- the Rust core: canonical validity from merge ranks, the trie, on toklab BPE -------------------

_ALPHA = b"ab \n1'"


@cache
def _small_bpe(pattern: str, ignore_merges: bool = False):
    from toklab.bpe import BPETokenizer, train_bpe

    rng = np.random.default_rng(5)
    p = [0.3, 0.3, 0.2, 0.06, 0.08, 0.06]
    text = rng.choice(list(_ALPHA), size=6000, p=p).astype(np.uint8).tobytes()
    tok = train_bpe(
        [text.decode()], vocab_size=256 + 48, pattern=pattern, special_tokens=["<|endoftext|>"]
    )
    if ignore_merges:
        core = tok._core
        tok = BPETokenizer.from_parts(
            [core.token_bytes(i) for i in range(256 + 48)],
            [(m[0], m[1]) for m in core.merges()],
            pattern=pattern,
            special_tokens=tok.special_tokens,
            ignore_merges=True,
        )
    return tok


@settings(max_examples=60, deadline=None)
@given(seq=st.lists(st.integers(0, 10_000), min_size=1, max_size=7),
       pattern=st.sampled_from(["gpt2", "cl100k", "o200k"]), ignore=st.booleans())  # fmt: skip
def test_canonical_from_merge_ranks_agrees_with_reencoding(seq, pattern, ignore) -> None:
    from toklab import _core

    tok = _small_bpe(pattern, ignore)
    canon = _core.Canonical(tok._core)
    # Mostly tokens made of the training alphabet, so that many sequences are canonical.
    real = [i for i in range(tok.vocab_size - 1) if set(tok.token_bytes(i)) <= set(_ALPHA)]
    ids = [real[i % len(real)] for i in seq]
    want = [int(i) for i in tok.encode_bytes(tok.decode_bytes(ids))] == ids
    assert canon.is_canonical(ids) == want
    if want:
        cands = list(range(tok.vocab_size))
        got = np.frombuffer(canon.extensions(ids, cands), dtype=np.uint8)
        for t in cands:
            longer = [*ids, t]
            ok = t != tok.vocab_size - 1 and (
                [int(i) for i in tok.encode_bytes(tok.decode_bytes(longer))] == longer
            )
            assert bool(got[t]) == ok, (ids, t)
    assert not canon.is_canonical([*ids, tok.vocab_size - 1])  # the special token
    assert not canon.is_canonical([*ids, 10**9])


class TableLM:
    """A closed-form token LM over a toklab BPE: logits from a table of (last token, parity),
    -inf for every token outside ``support`` (so that brute force stays small). No KV cache."""

    def __init__(self, vocab_size: int, support: list[int], seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.vocab_size = vocab_size
        self.support = support
        self.table = rng.normal(size=(2, vocab_size + 1, vocab_size)) * 1.5
        mask = np.full(vocab_size, -math.inf)
        mask[support] = 0
        self.table += mask

    def next_token_logprobs(self, prefixes):
        out = []
        for p in prefixes:
            z = self.table[len(p) % 2, p[-1] if p else self.vocab_size]
            out.append(z - _lse(z))
        return np.array(out)


def _lse(z: np.ndarray) -> float:
    m = z[np.isfinite(z)].max()
    return float(m + np.log(np.exp(z - m).sum()))


def brute_covers(tok, lm, x: bytes, canonical: bool, reencode=None) -> float:
    """The cover mass of x by depth-first enumeration of token sequences consistent with x;
    canonical covers are those whose bytes ``reencode`` (default ``tok.encode_bytes``) to them."""
    reencode = reencode or tok.encode_bytes
    support = [(t, tok.token_bytes(t)) for t in lm.support]
    total = 0.0

    def go(seq: list[int], done: int, lp: float) -> None:
        nonlocal total
        row = lm.next_token_logprobs([seq])[0]
        for t, b in support:
            piece = x[done : done + len(b)]
            if not b.startswith(piece) and not piece.startswith(b):
                continue
            if done + len(b) >= len(x):  # t reaches the end: a cover
                full = [*seq, t]
                data = tok.decode_bytes(full)
                if data.startswith(x) and (
                    not canonical or [int(i) for i in reencode(data)] == full
                ):
                    total += math.exp(lp + row[t])
            elif x[done : done + len(b)] == b:
                go([*seq, t], done + len(b), lp + row[t])

    go([], 0, 0.0)
    return total


@settings(max_examples=60, deadline=None)
@given(x=st.lists(st.sampled_from(list(b"ab \n")), min_size=1, max_size=6).map(bytes),
       seed=st.integers(0, 3), mode=st.sampled_from(["all", "canonical"]),
       pattern=st.sampled_from(["gpt2", "cl100k", "o200k"]))  # fmt: skip
def test_toklab_bpe_with_pretokenization_matches_brute_force(x, seed, mode, pattern) -> None:
    tok = _small_bpe(pattern)
    support = [i for i in range(tok.vocab_size - 1) if set(tok.token_bytes(i)) <= set(b"ab \n")][
        :14
    ]
    lm = TableLM(tok.vocab_size, support, seed)
    blm = ByteLevelLM(lm, tok, mode=mode, end_token=None)
    want = brute_covers(tok, lm, x, mode == "canonical")
    assert math.exp(blm.prefix_logprob(x)) == pytest.approx(want, rel=1e-9, abs=1e-300)
    if want > 0:
        nb = np.exp(blm.next_byte_logprobs([x])[0])
        ext = np.array(
            [brute_covers(tok, lm, x + bytes([b]), mode == "canonical") for b in b"ab \n"]
        )
        np.testing.assert_allclose(nb[list(b"ab \n")], ext / ext.sum(), rtol=1e-9)
        # One pass over the text gives every prefix's distribution.
        d = blm.distributions(x)
        np.testing.assert_allclose(np.exp(d[-1]), nb, rtol=1e-9, atol=1e-300)
        assert blm.logprob(x) == pytest.approx(
            sum(blm.next_byte_logprobs([x[:j]])[0][x[j]] for j in range(len(x))), rel=1e-9
        )


def test_kv_cached_path_equals_plain_batched_calls_and_calls_per_byte() -> None:
    """The toklab GPT through its KV-cached incremental interface and through plain batched
    calls give the same probabilities; generating costs at most one model call per byte in
    canonical mode, scoring one call per token depth."""
    torch = pytest.importorskip("torch")
    from toklab.bpe import train_bpe
    from toklab.lm import LanguageModel
    from toklab.lm.model import GPT, GPTConfig

    torch.set_num_threads(1)
    tok = train_bpe(["the theme of the thesis: then there, and these themes"] * 20, vocab_size=270)
    torch.manual_seed(0)
    lm = LanguageModel(
        GPT(GPTConfig(vocab_size=270, n_layer=2, n_head=2, n_embd=32, context=64)), tok
    )

    class Plain:  # the same model without its incremental interface
        vocab_size = lm.vocab_size

        def next_token_logprobs(self, prefixes):
            return lm.next_token_logprobs(prefixes)

    text = b"the these thesis: them"
    for mode in ("canonical", "all"):
        kv = ByteLevelLM(lm, tok, mode=mode, beam=None if mode == "canonical" else 8)
        plain = ByteLevelLM(Plain(), tok, mode=mode, beam=None if mode == "canonical" else 8)
        a, b = kv.distributions(text), plain.distributions(text)
        np.testing.assert_allclose(a, b, atol=1e-6)
        # The incremental byte state agrees with the one-pass distributions.
        state = kv.start_bytes([b"the"])
        for j in range(3, len(text)):
            np.testing.assert_allclose(state.logprobs[0], a[j], atol=1e-6)
            state.append([text[j]])
        two = state.select([0, 0])
        two.append([ord("e"), ord("s")])
        np.testing.assert_allclose(
            two.logprobs[0], kv.next_byte_logprobs([text + b"e"])[0], atol=1e-6
        )
    canon = ByteLevelLM(lm, tok)
    canon.logprob(text)
    # One batched call per token depth of the states (the longest state has few more tokens
    # than the text's own encoding), far fewer than one per byte.
    depth = max(len(s) for group in canon.states(text[:-1]) for s in group)
    assert canon.stats["model_calls"] == depth + 1 < len(text)
    assert 0 <= canon.stats["share_outside_model"] <= 1
    out = canon.sample(b"the th", max_bytes=12, seed=3)
    # One call per byte of prompt and output (one new canonical state each), plus the start.
    assert len(out) == 12 and canon.stats["model_calls"] <= 6 + 12 + 1


def test_end_of_text_column() -> None:
    tok = _small_bpe("gpt2")
    support = [i for i in range(tok.vocab_size - 1) if set(tok.token_bytes(i)) <= set(b"ab ")][:10]
    end = tok.special_tokens["<|endoftext|>"]
    lm = TableLM(tok.vocab_size, [*support, end], 1)
    blm = ByteLevelLM(lm, tok, mode="all")
    assert blm.has_end and blm.end_token == end
    d = blm.next_byte_logprobs([b"ab"])[0]
    assert d.shape == (257,) and math.isclose(float(np.exp(d).sum()), 1.0, rel_tol=1e-12)
    # P(end | x) = sum over the encodings of x exactly of P(T) P(end | T), over P(x).
    x = b"ab"
    mass_x = math.exp(blm.prefix_logprob(x))
    exact = 0.0
    for seq in blm.states(x)[len(x)]:
        lp = sum(lm.next_token_logprobs([list(seq[:k])])[0][seq[k]] for k in range(len(seq)))
        exact += math.exp(lp + lm.next_token_logprobs([list(seq)])[0][end])
    assert math.exp(d[256]) == pytest.approx(exact / mass_x, rel=1e-9)
    with pytest.raises(ConfigError):
        ByteLevelLM(lm, tok, end_token=10**6)


@cache
def _accent_bpe():
    from toklab.bpe import train_bpe

    rng = np.random.default_rng(2)
    text = "".join(rng.choice(["a", "é", " ", "b"], size=5000, p=[0.35, 0.25, 0.2, 0.2]))
    return train_bpe([text], vocab_size=256 + 30, pattern="gpt2")


@settings(max_examples=20, deadline=None)
@given(x=st.text(alphabet="aé b", min_size=1, max_size=4).map(lambda s: s.encode()),
       cut=st.integers(0, 3), seed=st.integers(0, 3),
       mode=st.sampled_from(["all", "canonical"]))  # fmt: skip
def test_prompts_ending_inside_a_utf8_character_match_brute_force(x, cut, seed, mode) -> None:
    """Prompts cut at any byte, inside "é" too: handled at byte level, exactly."""
    tok = _accent_bpe()
    x = x[: max(1, len(x) - cut)]
    support = [i for i in range(tok.vocab_size) if set(tok.token_bytes(i)) <= set("aé b".encode())]
    lm = TableLM(tok.vocab_size, support[:16], seed)
    blm = ByteLevelLM(lm, tok, mode=mode)
    want = brute_covers(tok, lm, x, mode == "canonical")
    assert math.exp(blm.prefix_logprob(x)) == pytest.approx(want, rel=1e-9, abs=1e-300)


def _text_reencodes(tok, full: list[int]) -> bool:
    """Canonicity for a tokenizer of text only (no ``encode_bytes``), as documented in
    ``byteprobs``: bytes that end inside a character are judged once it is complete."""
    data = tok.decode_bytes(full)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.end == len(data) and e.reason == "unexpected end of data"
    return [int(i) for i in tok.encode(text)] == full


def _cut_ok(tok, seq: list[int]) -> bool:
    """The allowance for states that go on (as documented in ``byteprobs``): text ending in a
    whitespace run of two or more, re-encoded with the run cut before its last character."""
    try:
        text = tok.decode_bytes(seq).decode("utf-8")
    except UnicodeDecodeError:
        return False
    if len(text) < 2 or not (text[-1].isspace() and text[-2].isspace()):
        return False
    head, tail = text[:-1], text[-1]
    return [int(i) for i in tok.encode(head)] + [int(i) for i in tok.encode(tail)] == seq


@settings(max_examples=25, deadline=None)
@given(x=st.text(alphabet="aé b", min_size=1, max_size=4).map(lambda s: s.encode()),
       cut=st.integers(0, 2), seed=st.integers(0, 3))  # fmt: skip
def test_canonical_over_a_tokenizer_of_text_only_matches_brute_force(x, cut, seed) -> None:
    """ByteSpan has no ``encode_bytes``: states that end inside "é" (whose byte tokens are
    candidates everywhere) used to crash the re-encoding."""
    from toklab.bytespan import ByteSpan

    tok = ByteSpan([(True, b"a\xc3\xa9"), (False, b"\xc3\xa9"), (True, b" b"), (False, b"ab")])
    x = x[: max(1, len(x) - cut)]
    alphabet = set("aé b".encode())
    support = [i for i in range(tok.vocab_size) if set(tok.token_bytes(i)) <= alphabet]
    lm = TableLM(tok.vocab_size, support, seed)
    blm = ByteLevelLM(lm, tok, mode="canonical")
    total = 0.0

    def go(seq: list[int], done: int, lp: float) -> None:
        nonlocal total
        row = lm.next_token_logprobs([seq])[0]
        for t in support:
            b = tok.token_bytes(t)
            piece = x[done : done + len(b)]
            if not b.startswith(piece) and not piece.startswith(b):
                continue
            last = done + len(b) >= len(x)
            if not _text_reencodes(tok, [*seq, t]) and (last or not _cut_ok(tok, [*seq, t])):
                continue
            if last:
                total += math.exp(lp + row[t])
            else:
                go([*seq, t], done + len(b), lp + row[t])

    go([], 0, 0.0)
    assert math.exp(blm.prefix_logprob(x)) == pytest.approx(total, rel=1e-9, abs=1e-300)
    if total > 0:  # (else: a typed error, as for every prefix the model cannot produce)
        nb = blm.next_byte_logprobs([x])[0]
        assert _lse(nb) == pytest.approx(0.0, abs=1e-9)


class MarkovTableLM(TableLM):
    """A token LM that depends on the last token only, with a (small) context: cutting its
    context changes nothing, so windowed scoring must equal scoring the whole text at once."""

    def __init__(self, vocab_size, support, seed, context=None) -> None:
        super().__init__(vocab_size, support, seed)
        if context is not None:
            self.context = context

    def next_token_logprobs(self, prefixes):
        if hasattr(self, "context"):
            assert all(len(p) + 1 <= self.context for p in prefixes), "past the context"
        out = []
        for p in prefixes:
            z = self.table[0, p[-1] if p else self.vocab_size]
            out.append(z - _lse(z))
        return np.array(out)


@settings(max_examples=15, deadline=None)
@given(words=st.lists(st.sampled_from(["ab", "a", "b", "ba", "aab", "\n"]), min_size=40,
                      max_size=60), seed=st.integers(0, 3))  # fmt: skip
def test_long_texts_are_scored_in_windows_exactly_for_a_markov_model(words, seed) -> None:
    tok = _small_bpe("gpt2")
    support = [i for i in range(tok.vocab_size - 1) if set(tok.token_bytes(i)) <= set(b"ab \n")]
    text = " ".join(words).encode()
    whole = ByteLevelLM(MarkovTableLM(tok.vocab_size, support, seed), tok, end_token=None)
    short = MarkovTableLM(tok.vocab_size, support, seed, context=40)
    windowed = ByteLevelLM(short, tok, end_token=None)
    wins = windowed.windows(text)
    assert len(wins) > 1 and wins[0][:2] == (0, 0) and wins[-1][2] == len(text) + 1
    for (_, _, end, _), (a2, first, _, before) in itertools.pairwise(wins):
        # Cut before " y"; the distribution at the cut from the window before; with context.
        assert end == first == a2 + 1 and text[a2 : a2 + 1] == b" " and before
    np.testing.assert_allclose(windowed.distributions(text), whole.distributions(text), atol=1e-9)
    assert windowed.logprob(text) == pytest.approx(whole.logprob(text), rel=1e-9)
    np.testing.assert_allclose(
        windowed.next_byte_logprobs([text]), whole.next_byte_logprobs([text]), atol=1e-9
    )


def test_long_texts_on_a_gpt_and_contexts_too_short() -> None:
    torch = pytest.importorskip("torch")
    from toklab.bpe import train_bpe
    from toklab.errors import ContextLengthError
    from toklab.lm import LanguageModel
    from toklab.lm.model import GPT, GPTConfig

    torch.set_num_threads(1)
    tok = train_bpe(["the theme of the thesis"] * 20, vocab_size=262)
    lm = LanguageModel(
        GPT(GPTConfig(vocab_size=262, n_layer=1, n_head=2, n_embd=16, context=40)), tok
    )
    blm = ByteLevelLM(lm, tok)
    text = b"the theme of the thesis: " * 12
    assert len(blm.windows(text)) > 2
    d = blm.distributions(text)
    assert d.shape == (len(text) + 1, 256) and np.allclose(np.exp(d).sum(1), 1.0)
    assert np.isfinite(blm.logprob(text))
    beam = ByteLevelLM(lm, tok, mode="all", beam=4)
    assert np.isfinite(beam.logprob(text[:150]))
    assert len(blm.sample(text, max_bytes=120, seed=1)) == 120  # restarts past the context
    tiny = LanguageModel(
        GPT(GPTConfig(vocab_size=262, n_layer=1, n_head=2, n_embd=16, context=12)), tok
    )
    with pytest.raises(ContextLengthError, match="too short"):
        ByteLevelLM(tiny, tok).logprob(text)
    with pytest.raises(ValueError):  # a typed error users can catch as ValueError
        ByteLevelLM(tiny, tok).distributions(text)


@settings(max_examples=80, deadline=None)
@given(seq=st.lists(st.integers(0, 10_000), min_size=1, max_size=6))
def test_canonical_from_merge_ranks_on_an_hf_tokenizer_against_hf(seq) -> None:
    """An HF byte-level BPE imported into toklab: canonicity from merge ranks agrees with
    HF's own encoder on the decoded text."""
    tokenizers = pytest.importorskip("tokenizers")
    from toklab import _core

    hf, ours = _hf_pair(tokenizers)
    canon = _core.Canonical(ours._core)
    real = [i for i in range(ours.vocab_size) if i not in ours.special_tokens.values()]
    ids = [real[i % len(real)] for i in seq]
    data = ours.decode_bytes(ids)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # HF encodes str only; such sequences are covered against toklab's encoder
    want = hf.encode(text, add_special_tokens=False).ids == ids
    assert canon.is_canonical(ids) == want, (ids, text)


@cache
def _hf_pair(tokenizers):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from toklab.bpe import BPETokenizer

    rng = np.random.default_rng(4)
    words = ["the", "them", "these", "a", "an", "and", "éa", "  ", "\n", "1", "12", "'s", "!"]
    text = " ".join(rng.choice(words, size=3000))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer=trainer)
    return tok, BPETokenizer.from_hf(tok)


def test_byte_level_lm_is_a_byte_lm_and_ensembles_advance_incrementally() -> None:
    from toklab.lm.protocols import ByteLM

    a = ByteLevelLM(ClosedFormLM(0), MiniBPE(), mode="all")
    b = ByteLevelLM(ClosedFormLM(1), MiniBPE(), mode="all")
    ens = ByteEnsemble([a, b], [0.3, 0.7])
    assert isinstance(a, ByteLM) and isinstance(ens, ByteLM)
    state = ens.start_bytes([b"ab", b""])
    np.testing.assert_allclose(state.logprobs, ens.next_byte_logprobs([b"ab", b""]), atol=1e-12)
    state.append([ord("a"), ord("b")])
    np.testing.assert_allclose(state.logprobs, ens.next_byte_logprobs([b"aba", b"b"]), atol=1e-12)
    two = state.select([1, 1, 0])
    np.testing.assert_allclose(two.logprobs, state.logprobs[[1, 1, 0]])
    np.testing.assert_allclose(ens.distributions(b"abab")[2], ens.next_byte_logprobs([b"ab"])[0])


def test_hf_encodings_are_canonical_and_their_splits_are_not() -> None:
    tokenizers = pytest.importorskip("tokenizers")
    from toklab import _core

    hf, ours = _hf_pair(tokenizers)
    canon = _core.Canonical(ours._core)
    merges = {m[2]: (m[0], m[1]) for m in ours._core.merges()}
    rng = np.random.default_rng(0)
    words = ["the", "them", "these", "a", "and", "éa", "  ", "\n", "12", "'s", "!", "x"]
    split_checked = 0
    for _ in range(200):
        text = " ".join(rng.choice(words, size=rng.integers(1, 6)))
        ids = hf.encode(text, add_special_tokens=False).ids
        assert canon.is_canonical(ids), text
        k = int(rng.integers(len(ids)))
        if ids[k] in merges:
            split = [*ids[:k], *merges[ids[k]], *ids[k + 1 :]]
            want = hf.encode(text, add_special_tokens=False).ids == split
            assert canon.is_canonical(split) == want
            split_checked += 1
    assert split_checked > 50


def test_generation_past_the_context_restarts_exactly_for_a_markov_model() -> None:
    """Sampling far past the model's context: the state restarts from a pre-token cut after
    the canonical tokens before it; for a Markov token LM nothing is lost, so the same seed
    gives the same bytes as with no context limit."""
    tok = _small_bpe("gpt2")
    support = [i for i in range(tok.vocab_size - 1) if set(tok.token_bytes(i)) <= set(b"ab \n")]
    whole = ByteLevelLM(MarkovTableLM(tok.vocab_size, support, 2), tok, end_token=None)
    short = ByteLevelLM(MarkovTableLM(tok.vocab_size, support, 2, context=40), tok, end_token=None)
    prompt = b"ab ba " * 20  # longer than the context already
    a = short.sample(prompt, max_bytes=150, seed=4)
    assert len(a) == 150
    assert a == whole.sample(prompt, max_bytes=150, seed=4)
    state = short.start_bytes([prompt])
    np.testing.assert_allclose(state.logprobs[0], whole.next_byte_logprobs([prompt])[0], atol=1e-9)


def test_vocab_trie_nodes_out_of_range_are_an_index_error():
    from toklab import _core

    trie = _core.VocabTrie([b"a", b"ab", None])
    assert trie.node(0)[0] == 0
    for n in [trie.num_nodes, 99]:
        with pytest.raises(IndexError, match="out of range"):
            trie.node(n)
        with pytest.raises(IndexError, match="out of range"):
            trie.children(n)


def test_token_lm_rows_of_the_wrong_width_and_bad_max_states():
    from toklab.errors import ConfigError, VocabularyMismatchError

    class Narrow(ClosedFormLM):  # claims 5 ids, gives 3 log-probabilities a row
        def next_token_logprobs(self, prefixes):
            return np.zeros((len(prefixes), 3))

    with pytest.raises(VocabularyMismatchError, match=r"shape \(3,\)"):
        ByteLevelLM(Narrow(), MiniBPE()).logprob(b"ab")
    for bad in [-1, 0, 1.5]:
        with pytest.raises(ConfigError, match="max_states"):
            ByteLevelLM(ClosedFormLM(), MiniBPE(), max_states=bad)
    assert math.isfinite(ByteLevelLM(ClosedFormLM(), MiniBPE(), max_states=2**64).logprob(b"ab"))
    with pytest.raises(ConfigError, match="max_bytes"):
        ByteLevelLM(ClosedFormLM(), MiniBPE()).sample(b"a", -5)


def test_sampling_settings_are_checked_and_tiny_temperatures_are_greedy() -> None:
    blm = ByteLevelLM(ClosedFormLM(3, canonical_only=True), MiniBPE())
    greedy = blm.sample(b"ab", max_bytes=6, temperature=0)
    # exp(lp / T) underflowed to 0 for every byte (NaN probabilities); scaled from the
    # maximum, a tiny temperature is greedy (this model has no ties).
    for seed in range(3):
        assert blm.sample(b"ab", max_bytes=6, temperature=1e-320, seed=seed) == greedy
    assert len(blm.sample(b"ab", max_bytes=6, temperature=1e300)) == 6
    for kwargs in [
        {"temperature": math.nan},
        {"temperature": math.inf},
        {"temperature": -1.0},
        {"temperature": "1"},
        {"top_p": math.nan},
        {"seed": -1},
        {"seed": 1.5},
    ]:
        with pytest.raises(ConfigError):
            blm.sample(b"ab", max_bytes=2, **kwargs)


def test_ensemble_weights_must_be_finite() -> None:
    a = ByteLevelLM(ClosedFormLM(0), MiniBPE(), mode="all")
    b = ByteLevelLM(ClosedFormLM(1), MiniBPE(), mode="all")
    for weights in ([math.inf, 1.0], [math.nan, 1.0], [-1.0, 2.0], [0.0, 0.0], ["a", "b"]):
        with pytest.raises(ConfigError, match="weights"):
            ByteEnsemble([a, b], weights)
    # Weights near the float range are normalised without overflow (their sum was inf: -inf).
    even = ByteEnsemble([a, b]).logprob(b"abab")
    assert math.isfinite(even)
    assert ByteEnsemble([a, b], [1e308, 1e308]).logprob(b"abab") == pytest.approx(even)
    assert ByteEnsemble([a, b], [1e-320, 0.0]).logprob(b"abab") == pytest.approx(a.logprob(b"abab"))
    with pytest.raises(ConfigError, match="members"):
        ByteEnsemble([a, None])


def test_one_prefix_where_a_list_is_expected_and_non_integer_bytes() -> None:
    blm = ByteLevelLM(ClosedFormLM(0), MiniBPE(), mode="all")
    ens = ByteEnsemble([blm, blm])
    # A str or bytes is itself a sequence: it was taken as one prefix per character.
    for model in (blm, ens):
        for one in ("ab", b"ab"):
            with pytest.raises(InvalidInputError, match="list of prefixes"):
                model.next_byte_logprobs(one)
            with pytest.raises(InvalidInputError, match="list of prefixes"):
                model.start_bytes(one)
    assert blm.next_byte_logprobs(["ab"]).shape == (1, 256)
    with pytest.raises(InvalidInputError, match="surrogate"):
        blm.logprob("a\ud800")
    state = blm.start_bytes([b"ab"])
    before = state.logprobs.copy()
    for bad in ([97.7], ["a"], [True], 97):
        with pytest.raises(InvalidIdsError):
            state.append(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidIdsError):
        state.select([0.5])  # was row 0
    np.testing.assert_array_equal(state.logprobs, before)  # nothing was appended
    state.append([np.int64(97)])
    assert state.select([np.int64(0)]).logprobs.shape == (1, 256)
    with pytest.raises(InvalidIdsError):
        ens.start_bytes([b"ab"]).append([97.0])
    with pytest.raises(ConfigError, match="vocab_size"):
        ByteLevelLM(ClosedFormLM(0), None)


def test_byte_level_lm_pickles_and_copies() -> None:
    """It holds Rust tables (the vocabulary trie, the checker): pickled as its settings, they
    are rebuilt, and the copy scores alike (it could not be pickled, so no spawn worker)."""
    import copy
    import pickle

    tok = _small_bpe("gpt2")
    support = [i for i in range(tok.vocab_size - 1) if set(tok.token_bytes(i)) <= set(_ALPHA)]
    blm = ByteLevelLM(TableLM(tok.vocab_size, support, 3), tok, mode="canonical", beam=8)
    text = bytes(_ALPHA[:3]) * 3
    for other in (pickle.loads(pickle.dumps(blm)), copy.deepcopy(blm)):
        assert (other.mode, other.beam, other.end_token) == (blm.mode, blm.beam, blm.end_token)
        assert other.logprob(text) == blm.logprob(text)
        np.testing.assert_array_equal(
            other.next_byte_logprobs([text]), blm.next_byte_logprobs([text])
        )


@settings(max_examples=30, deadline=None)
@given(
    x=st.text(alphabet="ab \n", min_size=1, max_size=6).map(str.encode),
    seed=st.integers(0, 3),
)
def test_canonical_over_text_only_tokenizers_allows_whitespace_runs(x, seed) -> None:
    """Runs of whitespace are cut by the patterns' look-ahead once the text goes on
    (``"a  b"``: ``"a"``, ``" "``, ``" b"``), so a state ending in such a run may go on though
    it is not canonical alone: with every such state refused, ``"a  b"`` had no cover. The
    brute force checks only each whole cover (canonical: its bytes encode to it), as
    ``brute_covers`` does for BPE, never the states on the way."""
    from toklab.bytespan import ByteSpan

    tok = ByteSpan([(True, b" b"), (False, b"ab"), (True, b"ab"), (False, b"  ")])
    support = [i for i in range(tok.vocab_size) if set(tok.token_bytes(i)) <= set(b"ab \n")]
    lm = TableLM(tok.vocab_size, support, seed)
    blm = ByteLevelLM(lm, tok, mode="canonical")
    total = brute_covers(tok, lm, x, True, reencode=lambda data: tok.encode(data.decode()))
    assert math.exp(blm.prefix_logprob(x)) == pytest.approx(total, rel=1e-9, abs=1e-300)
    assert blm.logprob(b"a  b") > -math.inf and blm.logprob(b"a\n\n b") > -math.inf
