"""Exact byte-level probabilities from a tokenized language model (Phan et al. 2024; issue 9,
first part: the exact engine in Python, checked against brute-force enumeration).

A token LM gives ``P(t_1..t_k)``, the probability that the token stream starts with ``t_1..t_k``.
The probability that the *byte* stream starts with ``x`` is the sum over the **covers** of ``x``:
token sequences whose tokens before the last decode to a strict prefix of ``x`` and whose last
token reaches to or past the end of ``x`` (Phan's byte-token representation lemma). Then
``P(b | x) = P(xb) / P(x)``.

Three semantics, chosen explicitly:

- ``"all"``: every token sequence counts (genlm-bytes).
- ``"canonical"``: only sequences the tokenizer itself would produce: ``encode(decode(T)) == T``
  for every cover (Phan, ByteSampler); for a model that puts all its mass on canonical
  encodings both agree.
- ``beam=K`` (with either): keep the ``K`` most probable token prefixes at each byte position;
  approximate, and ``pruned`` reports the probability mass dropped.

All mixing is in log space with float64 accumulators. The covers of every position are found by
a dynamic programme over byte positions (states: token sequences that decode exactly to a prefix
of ``x``), and the LM is called once per state, batched by position and cached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from toklab.errors import ConfigError, InvalidInputError

__all__ = ["ByteEnsemble", "ByteLevelLM"]

_NEG = -math.inf


def _logsumexp(values: Sequence[float]) -> float:
    vals = [v for v in values if v != _NEG]
    if not vals:
        return _NEG
    m = max(vals)
    return m + math.log(sum(math.exp(v - m) for v in vals))


class ByteLevelLM:
    """A :class:`~toklab.lm.protocols.TokenLM` over ``tokenizer``'s ids, as a byte-level LM.

    ``tokenizer`` needs ``vocab_size``, ``token_bytes(id)`` and, for ``mode="canonical"``,
    ``encode`` (of bytes or str) to decide which sequences are canonical. Special tokens (the
    tokenizer's ``special_tokens``) never appear in covers.
    """

    def __init__(
        self,
        token_lm: Any,
        tokenizer: Any,
        mode: str = "canonical",
        beam: int | None = None,
    ) -> None:
        if mode not in ("canonical", "all"):
            raise ConfigError(f"mode must be 'canonical' or 'all', got {mode!r}")
        if beam is not None and (not isinstance(beam, int) or beam < 1):
            raise ConfigError(f"beam must be a positive integer or None, got {beam!r}")
        if token_lm.vocab_size != tokenizer.vocab_size:
            raise ConfigError(
                f"the LM predicts {token_lm.vocab_size} ids, the tokenizer has "
                f"{tokenizer.vocab_size}"
            )
        self.token_lm = token_lm
        self.tokenizer = tokenizer
        self.mode = mode
        self.beam = beam
        specials = set(getattr(tokenizer, "special_tokens", {}).values())
        if not callable(getattr(tokenizer, "token_bytes", None)):
            raise ConfigError(
                f"{type(tokenizer).__name__} has no token_bytes: byte-level probabilities need "
                "every token's bytes"
            )
        self.tokens: list[bytes | None] = []
        try:
            for i in range(tokenizer.vocab_size):
                if i in specials:
                    self.tokens.append(None)
                    continue
                b = bytes(tokenizer.token_bytes(i))
                self.tokens.append(b if b else None)
        except ConfigError as e:
            raise ConfigError(
                f"{type(tokenizer).__name__} cannot be converted to byte level: its tokens are "
                f"not byte strings ({e})"
            ) from None
        if mode == "canonical" and not (
            callable(getattr(tokenizer, "encode_bytes", None))
            or callable(getattr(tokenizer, "encode", None))
        ):
            raise ConfigError("mode='canonical' needs a tokenizer that can encode")
        self._trie = _Trie(self.tokens)
        self._cache: dict[tuple[int, ...], np.ndarray] = {}
        self._canon: dict[tuple[int, ...], bool] = {}
        self.pruned = 0.0
        self.model_calls = 0

    @property
    def has_end(self) -> bool:
        return False

    # -- the token LM, cached ------------------------------------------------------------------

    def _next(self, prefixes: list[tuple[int, ...]]) -> None:
        todo = [p for p in dict.fromkeys(prefixes) if p not in self._cache]
        if todo:
            lp = np.asarray(self.token_lm.next_token_logprobs([list(p) for p in todo]))
            self.model_calls += 1
            for p, row in zip(todo, lp, strict=True):
                self._cache[p] = row.astype(np.float64)

    def _canonical(self, seq: tuple[int, ...]) -> bool:
        if self.mode == "all":
            return True
        hit = self._canon.get(seq)
        if hit is None:
            data = b"".join(self.tokens[t] or b"" for t in seq)
            encode_bytes = getattr(self.tokenizer, "encode_bytes", None)
            if encode_bytes is not None:
                ids = encode_bytes(data)
            else:
                ids = self.tokenizer.encode(data.decode("utf-8", errors="surrogateescape"))
            hit = [int(i) for i in ids] == list(seq)
            self._canon[seq] = hit
        return hit

    # -- covers ---------------------------------------------------------------------------------

    def _states(self, x: bytes) -> list[list[tuple[tuple[int, ...], float]]]:
        """``states[i]``: token sequences that decode exactly to ``x[:i]``, with log P."""
        n = len(x)
        states: list[list[tuple[tuple[int, ...], float]]] = [[] for _ in range(n + 1)]
        states[0] = [((), 0.0)]
        self.pruned = 0.0
        for i in range(n + 1):
            if self.beam is not None and len(states[i]) > self.beam:
                states[i].sort(key=lambda s: -s[1])
                dropped = [lp for _, lp in states[i][self.beam :]]
                self.pruned += math.exp(_logsumexp(dropped))
                states[i] = states[i][: self.beam]
            if i == n or not states[i]:
                continue
            self._next([seq for seq, _ in states[i]])
            rest = x[i:]
            inside = self._trie.prefixes_of(rest)  # tokens that are prefixes of the rest
            for seq, lp in states[i]:
                row = self._cache[seq]
                for t, length in inside:
                    if row[t] == _NEG:
                        continue
                    new = (*seq, t)
                    if self._canonical(new):
                        states[i + length].append((new, lp + float(row[t])))
        return states

    def _cover_terms(
        self, x: bytes, states: list[list[tuple[tuple[int, ...], float]]]
    ) -> np.ndarray:
        """log P(x b) for every byte b (``[256]``), from the states of ``x``."""
        n = len(x)
        per_byte: list[list[float]] = [[] for _ in range(256)]
        for i in range(n + 1):
            if not states[i]:
                continue
            self._next([seq for seq, _ in states[i]])
            ids, nxt = self._trie.extending(x[i:])  # tokens longer than the rest, starting with it
            if not ids.size:
                continue
            for seq, lp in states[i]:
                row = self._cache[seq]
                vals = row[ids]
                for t, b, v in zip(ids.tolist(), nxt.tolist(), vals.tolist(), strict=True):
                    if v == _NEG or not self._canonical((*seq, t)):
                        continue
                    per_byte[b].append(lp + v)
        return np.array([_logsumexp(v) for v in per_byte], dtype=np.float64)

    # -- the ByteLM protocol ----------------------------------------------------------------------

    def prefix_logprob(self, prefix: bytes | str) -> float:
        """log of the cover mass of ``prefix``: log P(the byte stream starts with ``prefix``)
        in ``"all"`` mode; in ``"canonical"`` mode the mass of its canonical covers, which is not
        renormalised (natural log; 0 for the empty prefix)."""
        x = _as_bytes(prefix)
        if not x:
            return 0.0
        states = self._states(x[:-1])
        return float(self._cover_terms(x[:-1], states)[x[-1]])

    def next_byte_logprobs(self, prefixes: Sequence[bytes | str]) -> np.ndarray:
        """``[len(prefixes), 256]`` log P(next byte | prefix). A prefix of probability zero
        raises :class:`~toklab.errors.InvalidInputError`."""
        out = np.empty((len(prefixes), 256), dtype=np.float64)
        for k, p in enumerate(prefixes):
            x = _as_bytes(p)
            terms = self._cover_terms(x, self._states(x))
            total = _logsumexp(terms.tolist())
            if total == _NEG:
                raise InvalidInputError(
                    f"the prefix {x[-20:]!r} has probability zero under this model "
                    f"({self.mode} encodings)"
                )
            out[k] = terms - total
        return out

    def logprob(self, text: bytes | str) -> float:
        """The byte-level score of ``text``: the sum of ``log P(x_j | x_<j)`` under
        :meth:`next_byte_logprobs`. In ``"all"`` mode this is :meth:`prefix_logprob` exactly;
        in ``"canonical"`` mode each step is renormalised over the canonical continuations."""
        x = _as_bytes(text)
        if not x:
            return 0.0
        if self.mode == "all" and self.beam is None:
            return self.prefix_logprob(x)
        lps = self.next_byte_logprobs([x[:j] for j in range(len(x))])
        return float(sum(lps[j, x[j]] for j in range(len(x))))

    def sample(
        self,
        prompt: bytes | str = b"",
        max_bytes: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> bytes:
        """Continues ``prompt`` byte by byte (the prompt may end mid-token or mid-character)."""
        if temperature < 0 or not 0 < top_p <= 1:
            raise ConfigError("temperature must be >= 0 and top_p in (0, 1]")
        rng = np.random.default_rng(seed)
        x = _as_bytes(prompt)
        out = bytearray()
        for _ in range(max_bytes):
            lp = self.next_byte_logprobs([x + bytes(out)])[0]
            if temperature == 0:
                b = int(np.argmax(lp))
            else:
                z = lp / temperature
                p = np.exp(z - z.max())
                p /= p.sum()
                order = np.argsort(-p, kind="stable")
                keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p) + 1)]
                q = np.zeros_like(p)
                q[keep] = p[keep]
                q /= q.sum()
                b = int(rng.choice(256, p=q))
            out.append(b)
        return bytes(out)


class ByteEnsemble:
    """Byte-level LMs with different tokenizers combined in byte space: a ``"mixture"``
    (``log sum_i w_i P_i(b | x)``) or a ``"product"`` (``sum_i w_i log P_i(b | x)``,
    renormalised over the bytes). Each member is anything with ``next_byte_logprobs``."""

    def __init__(
        self, members: Sequence[Any], weights: Sequence[float] | None = None, rule: str = "mixture"
    ) -> None:
        if not members:
            raise ConfigError("an ensemble needs at least one member")
        if rule not in ("mixture", "product"):
            raise ConfigError(f"rule must be 'mixture' or 'product', got {rule!r}")
        w = np.full(len(members), 1.0 / len(members)) if weights is None else np.asarray(weights)
        if w.shape != (len(members),) or (w < 0).any() or not w.sum() > 0:
            raise ConfigError("weights must be non-negative, one per member, not all zero")
        self.members = list(members)
        self.weights = w / w.sum()
        self.rule = rule

    @property
    def has_end(self) -> bool:
        return False

    def next_byte_logprobs(self, prefixes: Sequence[bytes | str]) -> np.ndarray:
        lps = np.stack([np.asarray(m.next_byte_logprobs(prefixes))[:, :256] for m in self.members])
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.rule == "mixture":
                z = np.log(self.weights)[:, None, None] + lps
                m = z.max(axis=0)
                m = np.where(np.isfinite(m), m, 0.0)
                out = m + np.log(np.exp(z - m).sum(axis=0))
            else:
                z = np.where(self.weights[:, None, None] > 0, self.weights[:, None, None] * lps, 0)
                out = z.sum(axis=0)
                m = out.max(axis=1, keepdims=True)
                out = out - m - np.log(np.exp(out - m).sum(axis=1, keepdims=True))
        return out

    def logprob(self, text: bytes | str) -> float:
        x = _as_bytes(text)
        if not x:
            return 0.0
        lps = self.next_byte_logprobs([x[:j] for j in range(len(x))])
        return float(sum(lps[j, x[j]] for j in range(len(x))))


class _Trie:
    """The vocabulary as a byte trie: the tokens that are prefixes of a string, and the tokens
    that extend a string (with the byte that follows it), precomputed per node."""

    def __init__(self, tokens: Sequence[bytes | None]) -> None:
        self.children: list[dict[int, int]] = [{}]
        self.ends: list[list[int]] = [[]]
        for t, tb in enumerate(tokens):
            if tb is None:
                continue
            node = 0
            for c in tb:
                nxt = self.children[node].get(c)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[node][c] = nxt
                    self.children.append({})
                    self.ends.append([])
                node = nxt
            self.ends[node].append(t)
        self.tokens = tokens
        self._extending: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _node(self, s: bytes) -> int | None:
        node = 0
        for c in s:
            nxt = self.children[node].get(c)
            if nxt is None:
                return None
            node = nxt
        return node

    def prefixes_of(self, s: bytes) -> list[tuple[int, int]]:
        """``(token, length)`` for every token that is a prefix of ``s`` (``length <= len(s)``)."""
        out, node = [], 0
        for depth, c in enumerate(s, 1):
            nxt = self.children[node].get(c)
            if nxt is None:
                break
            node = nxt
            out.extend((t, depth) for t in self.ends[node])
        return out

    def extending(self, s: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Tokens that start with ``s`` and are longer, and the byte after ``s`` in each."""
        node = self._node(s)
        if node is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        hit = self._extending.get(node)
        if hit is None:
            ids, nxt = [], []
            stack = [(child, c) for c, child in self.children[node].items()]
            while stack:
                n, first = stack.pop()
                ids.extend(self.ends[n])
                nxt.extend([first] * len(self.ends[n]))
                stack.extend((child, first) for child in self.children[n].values())
            hit = (np.asarray(ids, dtype=np.int64), np.asarray(nxt, dtype=np.int64))
            self._extending[node] = hit
        return hit


def _as_bytes(x: bytes | str) -> bytes:
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    raise InvalidInputError(f"expected bytes or str, got {type(x).__name__}")
