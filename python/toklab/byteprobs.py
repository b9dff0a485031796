"""Exact byte-level probabilities from a tokenized language model (Phan et al. 2024; issue 9).

A token LM gives ``P(t_1..t_k)``, the probability that the token stream starts with ``t_1..t_k``.
The probability that the *byte* stream starts with ``x`` is the sum over the **covers** of ``x``:
token sequences whose tokens before the last decode to a strict prefix of ``x`` and whose last
token reaches to or past the end of ``x`` (Phan's byte-token representation lemma). Then
``P(b | x) = P(xb) / P(x)``.

Three semantics, chosen explicitly:

- ``"all"``: every token sequence counts (genlm-bytes).
- ``"canonical"``: only sequences the tokenizer itself produces, ``encode(decode(T)) == T``
  (Phan, ByteSampler). For a toklab BPE tokenizer this is decided in Rust from the merge ranks
  (``_core.Canonical``: pre-token pieces on token boundaries, every adjacent pair inside a piece
  one that BPE would not merge across), looking only at the last two pieces; any other tokenizer
  is re-encoded. For a model that puts all its mass on canonical encodings both modes agree.
- ``beam=K`` and/or ``threshold=t`` (with either): keep the ``K`` most probable token prefixes
  at each byte position, and drop those below ``t`` times the most probable one there;
  approximate, and ``pruned`` reports the probability mass dropped.

How it runs. **States** are token sequences that decode exactly to a prefix ``x[:i]``; a state
at ``i`` extends by every token equal to ``x[i:p]`` into a state at ``p``. The vocabulary is a
byte trie in Rust (``_core.VocabTrie``) whose subtrees are ranges of one token order, so the mass
of the next byte ``b`` from a state is a segmented log-sum-exp over a permuted row of the token
LM's output. All mixing is in log space with float64 accumulators.

The token LM is called through its incremental interface (``start`` / ``select`` / ``append``:
KV caches) where it has one: a new state is its parent plus one token, so each state costs one
position of the model. Scoring a known text (no beam) first enumerates every state it needs from
the tokenizer alone, then runs the model once per token depth over all of them at once;
generating calls it once per byte (per group of parents). ``stats`` reports model calls per byte
and the share of time spent outside the model.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from toklab import _core
from toklab.errors import (
    ConfigError,
    ContextLengthError,
    InvalidIdsError,
    InvalidInputError,
    VocabularyMismatchError,
)
from toklab.tokenizer import as_bytes, int_list, prefix_list

__all__ = ["ByteEnsemble", "ByteLevelLM"]

_NEG = -math.inf
Seq = tuple[int, ...]


def _logsumexp(values: np.ndarray | Sequence[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return _NEG
    m = float(v.max())
    if m == _NEG:
        return _NEG
    return m + math.log(float(np.exp(v - m).sum()))


def _logsumexp_rows(a: np.ndarray) -> np.ndarray:
    m = a.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return (m + np.log(np.exp(a - m).sum(axis=-1, keepdims=True)))[..., 0]


class _Trie:
    """The Rust trie plus, per node, numpy views: the tokens equal to its string, the tokens
    that extend it, and where each child's tokens start among those."""

    def __init__(self, tokens: Sequence[bytes | None]) -> None:
        self.core = _core.VocabTrie(list(tokens))
        self.order = np.frombuffer(self.core.order(), dtype=np.uint32).astype(np.int64)
        self.longest = int(self.core.longest)
        self._info: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def info(self, node: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(here, ext, child_bytes, child_offsets)`` of a node."""
        hit = self._info.get(node)
        if hit is None:
            start, here, end = self.core.node(node)
            kids, starts = self.core.children(node)
            hit = (
                self.order[start:here],
                self.order[here:end],
                np.frombuffer(kids, dtype=np.uint8).astype(np.int64),
                np.asarray(starts, dtype=np.int64) - here,
            )
            self._info[node] = hit
        return hit


def _white(c: str) -> bool:
    """Whitespace as the pre-tokenizers' ``\\s`` reads it (Unicode White_Space; Python's
    ``isspace`` also takes the separators U+001C..U+001F)."""
    return c.isspace() and not "\x1c" <= c <= "\x1f"


class _Checker:
    """Which one-token extensions of a state are canonical. A state carries a *tail*: the part
    of its tokens that decides this (the last two pre-token pieces for a toklab BPE; the whole
    sequence for other tokenizers, which are re-encoded)."""

    def __init__(self, tokenizer: Any, tokens: Sequence[bytes | None], mode: str) -> None:
        self.mode = mode
        self.tokens = tokens
        core = getattr(tokenizer, "_core", None)
        self.rust = _core.Canonical(core) if isinstance(core, _core.Bpe) else None
        self.tokenizer = tokenizer
        self._root: dict[Seq, np.ndarray] = {}

    def tail(self, seq: Seq) -> Seq:
        if self.mode == "all":
            return ()
        if self.rust is None:
            return seq
        return seq[self.rust.tail_start(list(seq)) :]

    def ok(
        self, tail: Seq, cands: np.ndarray, root: bool = False, viable: bool = False
    ) -> np.ndarray | None:
        """A boolean mask over ``cands`` (``None``: all allowed): whether ``state + [c]`` is
        canonical or, with ``viable``, may start a longer text's canonical encoding (the last
        piece may still be cut by the patterns' look-ahead)."""
        if self.mode == "all" or cands.size == 0:
            return None
        if viable and self.rust is not None:
            got = self.rust.extensions(list(tail), cands, True)
            return np.frombuffer(got, dtype=np.uint8).astype(bool)
        if root:
            hit = self._root.get(tail)
            if hit is not None:
                return hit
        if self.rust is not None:
            out = np.frombuffer(self.rust.extensions(list(tail), cands), dtype=np.uint8)
            mask = out.astype(bool)
        else:
            mask = np.array(
                [
                    self._reencodes(seq) or (viable and self._cut_reencodes(seq))
                    for seq in ((*tail, int(t)) for t in cands.tolist())
                ]
            )
        if root:
            if len(self._root) > 4096:
                self._root.clear()
            self._root[tail] = mask
        return mask

    def _encode(self, data: bytes) -> list[int]:
        encode_bytes = getattr(self.tokenizer, "encode_bytes", None)
        if encode_bytes is not None:
            return [int(i) for i in encode_bytes(data)]
        return [int(i) for i in self.tokenizer.encode(data.decode("utf-8"))]

    def _cut_reencodes(self, seq: Seq) -> bool:
        """Whether a state whose text ends in a run of two or more whitespace characters may
        start a longer text's encoding: the patterns' look-ahead (``\\s+(?!\\S)``) cuts such a
        run before its last character when the text goes on with anything else (``"a  "``
        alone is ``"a"``, ``"  "``; in ``"a  b"`` it is ``"a"``, ``" "``, ``" b"``), so the
        state is re-encoded as the two parts (what the Rust check of a toklab BPE does)."""
        data = b"".join(self.tokens[t] or b"" for t in seq)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return False
        if len(text) < 2 or not (_white(text[-1]) and _white(text[-2])):
            return False
        cut = len(text[-1].encode("utf-8"))
        return self._encode(data[:-cut]) + self._encode(data[-cut:]) == list(seq)

    def _reencodes(self, seq: Seq) -> bool:
        data = b"".join(self.tokens[t] or b"" for t in seq)
        encode_bytes = getattr(self.tokenizer, "encode_bytes", None)
        if encode_bytes is not None:
            ids = encode_bytes(data)
        else:
            # A tokenizer of text only: bytes that are no text can only be the start of a
            # character that later bytes complete, and are judged once they do.
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                return e.end == len(data) and e.reason == "unexpected end of data"
            ids = self.tokenizer.encode(text)
        return [int(i) for i in ids] == list(seq)


class _Rows:
    """The token LM's next-token rows of states, through its KV-cached incremental interface
    when it has one (a state's parent must have been asked for first), else batched calls."""

    def __init__(self, owner: ByteLevelLM, before: Seq = ()) -> None:
        self.o = owner
        self.lm = owner.token_lm
        self.before = list(before)  # tokens every state follows (a window's context)
        self.incremental = callable(getattr(self.lm, "start", None))
        self.handles: dict[Seq, tuple[Any, int]] = {}

    def get(self, seqs: Sequence[Seq]) -> list[np.ndarray]:
        if not seqs:
            return []
        t0 = time.perf_counter()
        try:
            out = self._get(seqs)
        except ContextLengthError as e:
            raise ContextLengthError(
                f"{e}; byte-level probabilities need every token prefix of the text in the "
                "model's context (distributions and logprob score long texts in windows)"
            ) from None
        self.o._lm_seconds += time.perf_counter() - t0
        n = self.o.tokenizer.vocab_size
        for row in out:
            if row.shape != (n,):
                raise VocabularyMismatchError(
                    f"the token LM gave log-probabilities of shape {row.shape} for one prefix; "
                    f"the tokenizer has {n} ids"
                )
        return out

    def _get(self, seqs: Sequence[Seq]) -> list[np.ndarray]:
        if not self.incremental:
            self.o.model_calls += 1
            lp = self.lm.next_token_logprobs([self.before + list(s) for s in seqs])
            return list(np.asarray(lp, dtype=np.float64))
        out: list[np.ndarray | None] = [None] * len(seqs)
        groups: dict[int, tuple[Any, list[int], list[int], list[int]]] = {}
        for k, s in enumerate(seqs):
            if not s:
                state = self.lm.start([self.before])
                self.o.model_calls += 1
                self.handles[s] = (state, 0)
                out[k] = np.asarray(state.logprobs[0], dtype=np.float64)
                continue
            parent = self.handles.get(s[:-1])
            if parent is None:
                raise AssertionError("a state's parent was not evaluated first")  # pragma: no cover
            st, row = parent
            g = groups.setdefault(id(st), (st, [], [], []))
            g[1].append(row)
            g[2].append(s[-1])
            g[3].append(k)
        parts = list(groups.values())
        concat = getattr(type(parts[0][0]), "concat", None) if parts else None
        if len(parts) > 1 and callable(concat):
            # Parents from several states (different lengths): one ragged batch, one forward.
            child = concat([(st, rows) for st, rows, _, _ in parts])
            parts = [
                (child, [], [t for p in parts for t in p[2]], [k for p in parts for k in p[3]])
            ]
        else:
            parts = [(st.select(rows), [], toks, ks) for st, rows, toks, ks in parts]
        for child, _, toks, ks in parts:
            child.append(toks)
            self.o.model_calls += 1
            lp = np.asarray(child.logprobs, dtype=np.float64)
            for j, k in enumerate(ks):
                self.handles[seqs[k]] = (child, j)
                out[k] = lp[j]
        return out  # type: ignore[return-value]

    def release(self, seqs: Sequence[Seq]) -> None:
        for s in seqs:
            self.handles.pop(s, None)


class ByteLevelLM:
    """A :class:`~toklab.lm.protocols.TokenLM` over ``tokenizer``'s ids, as a byte-level LM.

    ``tokenizer`` needs ``vocab_size``, ``token_bytes(id)`` and, for ``mode="canonical"``,
    ``encode`` (of bytes or str) unless it is a toklab :class:`~toklab.bpe.BPETokenizer` (then
    canonicity comes from its merge ranks, in Rust). Special tokens never appear in covers;
    ``end_token`` (default: the tokenizer's ``<|endoftext|>``, if it has one) gives the end-of-
    text column 256. ``max_states`` bounds the states of one pass without a beam (``"all"`` mode
    has exponentially many in the length of the text: give it a beam).
    """

    def __init__(
        self,
        token_lm: Any,
        tokenizer: Any,
        mode: str = "canonical",
        beam: int | None = None,
        end_token: int | str | None = "auto",
        max_states: int = 200_000,
        threshold: float | None = None,
    ) -> None:
        if mode not in ("canonical", "all"):
            raise ConfigError(f"mode must be 'canonical' or 'all', got {mode!r}")
        if beam is not None and (not isinstance(beam, int) or isinstance(beam, bool) or beam < 1):
            raise ConfigError(f"beam must be a positive integer or None, got {beam!r}")
        if threshold is not None and not (_is_real(threshold) and 0 <= threshold < 1):
            raise ConfigError(f"threshold must be in [0, 1) or None, got {threshold!r}")
        for what, obj in (("token_lm", token_lm), ("tokenizer", tokenizer)):
            size = getattr(obj, "vocab_size", None)
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
                raise ConfigError(
                    f"{what} must have an integer vocab_size, got {type(obj).__name__}"
                )
        if token_lm.vocab_size != tokenizer.vocab_size:
            raise ConfigError(
                f"the LM predicts {token_lm.vocab_size} ids, the tokenizer has "
                f"{tokenizer.vocab_size}"
            )
        self.token_lm = token_lm
        self.tokenizer = tokenizer
        if isinstance(max_states, bool) or not isinstance(max_states, int) or max_states < 1:
            raise ConfigError(f"max_states must be a positive int, got {max_states!r}")
        self.max_states = min(max_states, 2**63 - 1)
        self.mode = mode
        self.beam = beam
        self.threshold = threshold
        self._log_threshold = (
            None if not threshold else math.log(threshold)
        )  # prune states below threshold x the best at their position
        specials = dict(getattr(tokenizer, "special_tokens", {}) or {})
        if end_token == "auto":
            end_token = specials.get("<|endoftext|>")
        if end_token is not None and not (
            isinstance(end_token, (int, np.integer))
            and not isinstance(end_token, bool)
            and 0 <= end_token < tokenizer.vocab_size
        ):
            raise ConfigError(f"end_token must be a token id or None, got {end_token!r}")
        self.end_token = None if end_token is None else int(end_token)
        if not callable(getattr(tokenizer, "token_bytes", None)):
            raise ConfigError(
                f"{type(tokenizer).__name__} has no token_bytes: byte-level probabilities need "
                "every token's bytes"
            )
        special_ids = set(specials.values())
        tokens: list[bytes | None] = []
        try:
            for i in range(tokenizer.vocab_size):
                if i in special_ids:
                    tokens.append(None)
                    continue
                b = bytes(tokenizer.token_bytes(i))
                tokens.append(b if b else None)
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
        self.tokens = tokens
        self._trie = _Trie(tokens)
        self._check = _Checker(tokenizer, tokens, mode)
        self.pruned = 0.0
        self.model_calls = 0
        self._lm_seconds = 0.0
        self._stats: dict[str, float] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its settings (the model and tokenizer pickle as they do): the vocabulary
        trie and the canonicity checker, in Rust, are rebuilt on load."""
        return (
            ByteLevelLM,
            (
                self.token_lm,
                self.tokenizer,
                self.mode,
                self.beam,
                self.end_token,
                self.max_states,
                self.threshold,
            ),
        )

    @property
    def has_end(self) -> bool:
        return self.end_token is not None

    @property
    def approximate(self) -> bool:
        """Whether states are pruned (a beam or a threshold): then ``pruned`` says how much
        probability mass the last call dropped."""
        return self.beam is not None or bool(self.threshold)

    @property
    def width(self) -> int:
        return 257 if self.has_end else 256

    @property
    def stats(self) -> dict[str, float]:
        """Of the last call: bytes, model calls, calls per byte, seconds, and the share of
        the time spent outside the token LM."""
        return dict(self._stats)

    def _begin(self) -> tuple[int, float, float]:
        return self.model_calls, self._lm_seconds, time.perf_counter()

    def _end(self, mark: tuple[int, float, float], nbytes: int) -> None:
        calls, lm_s, t0 = mark
        took = time.perf_counter() - t0
        n = max(nbytes, 1)
        inside = self._lm_seconds - lm_s
        self._stats = {
            "bytes": float(nbytes),
            "model_calls": float(self.model_calls - calls),
            "model_calls_per_byte": (self.model_calls - calls) / n,
            "seconds": took,
            "seconds_in_model": inside,
            "share_outside_model": (took - inside) / took if took > 0 else 0.0,
        }

    # -- one pass over a byte string --------------------------------------------------------------

    def _new_states(
        self, x: bytes, p: int, states: dict[int, dict[Seq, float]], tails: dict[Seq, Seq]
    ) -> list[tuple[Seq, Seq, int]]:
        """The states at ``p``: ``(state, parent, token)`` for each parent at ``i < p`` and each
        token equal to ``x[i:p]`` whose extension is allowed."""
        out = []
        for i in range(max(0, p - self._trie.longest), p):
            if not states.get(i):
                continue
            node = self._trie.core.walk(x[i:p])
            if node is None:
                continue
            here = self._trie.info(node)[0]
            if not here.size:
                continue
            for s in states[i]:
                mask = self._check.ok(tails[s], here, viable=True)
                for k, t in enumerate(here.tolist()):
                    if mask is None or mask[k]:
                        out.append(((*s, t), s, t))
        return out

    def _add_terms(
        self, dist: np.ndarray, x: bytes, i: int, tail: Seq, row: np.ndarray, lp: float,
        first: int, last: int,
    ) -> None:  # fmt: skip
        """Adds to ``dist[j - first]`` (``j`` in ``first..last``) the mass that state of log
        probability ``lp`` at ``i`` puts, through its next token (LM ``row``), on each byte
        after ``x[:j]``: the tokens that extend ``x[i:j]``, by their byte at ``j``; and, at
        ``j == i``, the end of text."""
        if lp == _NEG:
            return
        for j in range(max(i, first), min(last, i + self._trie.longest - 1) + 1):
            node = self._trie.core.walk(x[i:j]) if j > i else 0
            if node is None:
                break
            _, ext, kids, offs = self._trie.info(node)
            if not ext.size:
                break
            vals = row[ext]
            mask = self._check.ok(tail, ext, root=j == i)
            if mask is not None:
                vals = np.where(mask, vals, _NEG)
            with np.errstate(invalid="ignore"):
                red = np.logaddexp.reduceat(vals, offs)
            d = dist[j - first]
            d[kids] = np.logaddexp(d[kids], lp + red)
        if self.end_token is not None and first <= i <= last:
            d = dist[i - first]
            d[256] = np.logaddexp(d[256], lp + row[self.end_token])

    def _tail(self, tails: dict[Seq, Seq], s: Seq, parent: Seq) -> Seq:
        if self.mode == "all":
            return ()
        return self._check.tail((*tails[parent], s[-1]))

    def _distributions(self, x: bytes, first: int, last: int, before: Seq = ()) -> np.ndarray:
        """``[last - first + 1, width]``: the log cover masses ``log P(x[:j] b)`` for ``j`` in
        ``first..last`` (column 256: the end of text right after ``x[:j]``), not normalised.
        ``before``: tokens that precede ``x`` in every sequence (a window's context)."""
        if self.approximate:
            lat = _Lattice(self, before=before)
            out = []
            if first == 0:
                out.append(lat.masses())
            for j in range(1, last + 1):
                lat.push(x[j - 1])
                if j >= first:
                    out.append(lat.masses())
            self.pruned = lat.pruned
            return np.array(out).reshape(last - first + 1, self.width)
        # The states do not depend on the model here: enumerate them all from the tokenizer,
        # then run the model once per token depth over all of them (KV caches carry each
        # state's prefix, so every state costs one position).
        self.pruned = 0.0
        _, tails, at, children = self._enumerate(x, last, before)
        dist = np.full((last - first + 1, self.width), _NEG)
        logp: dict[Seq, float] = {(): 0.0}
        rows = _Rows(self, before)
        level: list[Seq] = [()]
        prev: list[Seq] = []
        while level:
            got = rows.get(level)
            rows.release(prev)  # the parents' KV caches are no longer needed
            nxt: list[Seq] = []
            for s, row in zip(level, got, strict=True):
                lp = logp[s]
                self._add_terms(dist, x, at[s], tails[s], row, lp, first, last)
                for c in children.get(s, ()):
                    # A state of probability zero is never asked for (nor are its extensions).
                    if row[c[-1]] != _NEG:
                        logp[c] = lp + float(row[c[-1]])
                        nxt.append(c)
            prev, level = level, nxt
        return dist

    def _enumerate(
        self, x: bytes, last: int, before: Seq = ()
    ) -> tuple[dict[int, dict[Seq, float]], dict[Seq, Seq], dict[Seq, int], dict[Seq, list[Seq]]]:
        """Every state at positions ``0..last`` of ``x``, from the tokenizer alone: the states by
        position, their tails, positions and children (``before``: tokens every state follows;
        states are the tokens after them)."""
        states: dict[int, dict[Seq, float]] = {0: {(): 0.0}}
        root_tail = self._check.tail(tuple(before))
        tails: dict[Seq, Seq] = {(): root_tail}
        at: dict[Seq, int] = {(): 0}
        children: dict[Seq, list[Seq]] = {}
        if self.mode == "all" or self._check.rust is not None:
            # In Rust: the trie walk and the canonicity checks.
            parent, token, pos, tail_len = _core.byte_states(
                self._trie.core,
                self._check.rust if self.mode == "canonical" else None,
                x,
                last,
                self.max_states,
                list(before),
            )
            seqs: list[Seq] = [()]
            for k in range(1, len(parent)):
                par = seqs[parent[k]]
                s = (*par, token[k])
                seqs.append(s)
                states.setdefault(pos[k], {})[s] = 0.0
                tails[s] = (*root_tail, *s)[-tail_len[k] :] if tail_len[k] else ()
                at[s] = pos[k]
                children.setdefault(par, []).append(s)
            return states, tails, at, children
        for p in range(1, min(len(x), last) + 1):
            for s, parent_seq, _t in self._new_states(x, p, states, tails):
                states.setdefault(p, {})[s] = 0.0
                tails[s] = self._tail(tails, s, parent_seq)
                at[s] = p
                children.setdefault(parent_seq, []).append(s)
                if len(at) > self.max_states:
                    raise ConfigError(
                        f"more than {self.max_states} token sequences decode to prefixes of "
                        f"the first {p} bytes; pass a beam"
                    )
        return states, tails, at, children

    def states(self, text: bytes | str) -> list[list[Seq]]:
        """``out[i]``: the token sequences that decode exactly to ``text[:i]`` and may start a
        cover (in ``"canonical"`` mode, the canonical ones: at most one), from the tokenizer
        alone (no beam)."""
        x = as_bytes(text)
        states = self._enumerate(x, len(x))[0]
        return [sorted(states.get(i, {})) for i in range(len(x) + 1)]

    def covers(self, prefix: bytes | str) -> list[Seq]:
        """Every cover of ``prefix`` under this mode: token sequences whose tokens before the
        last decode to a strict prefix of it and whose last token reaches its end or beyond.
        (Exponentially many in ``"all"`` mode: for inspection and tests.)"""
        x = as_bytes(prefix)
        if not x:
            return [()]
        if self.mode == "all" or self._check.rust is not None:
            canon = self._check.rust if self.mode == "canonical" else None
            found = _core.byte_covers(self._trie.core, canon, x, self.max_states)
            return [tuple(c) for c in found]
        states, tails, _, _ = self._enumerate(x, len(x) - 1)
        out: list[Seq] = []
        for i, group in states.items():
            node = self._trie.core.walk(x[i:])
            ends = self._trie.core.prefixes_of(x[i:])
            cands = [t for t, length in ends if length == len(x) - i]
            if node is not None:
                start, _here, end = self._trie.core.node(node)
                cands += self._trie.order[start:end].tolist()
            arr = np.array(sorted(set(cands)), dtype=np.int64)
            for s in group:
                mask = self._check.ok(tails[s], arr)
                out.extend((*s, int(t)) for k, t in enumerate(arr) if mask is None or mask[k])
        return sorted(set(out))

    # -- the ByteLM protocol ----------------------------------------------------------------------

    def prefix_logprob(self, prefix: bytes | str) -> float:
        """log of the cover mass of ``prefix``: log P(the byte stream starts with ``prefix``)
        in ``"all"`` mode; in ``"canonical"`` mode the mass of its canonical covers, which is not
        renormalised (natural log; 0 for the empty prefix)."""
        x = as_bytes(prefix)
        if not x:
            return 0.0
        mark = self._begin()
        d = self._distributions(x[:-1], len(x) - 1, len(x) - 1)
        self._end(mark, len(x))
        return float(d[0, x[-1]])

    def next_byte_logprobs(self, prefixes: Sequence[bytes | str]) -> np.ndarray:
        """``[len(prefixes), width]`` log P(next byte | prefix) (column 256, with an
        ``end_token``: the end of text). A prefix of probability zero raises
        :class:`~toklab.errors.InvalidInputError`."""
        prefixes = prefix_list(prefixes)
        out = np.empty((len(prefixes), self.width), dtype=np.float64)
        mark = self._begin()
        total_bytes = 0
        for k, p in enumerate(prefixes):
            x = as_bytes(p)
            total_bytes += len(x)
            a, _, _, before = self.windows(x)[-1]  # a long prompt: its last window
            d = self._distributions(x[a:], len(x) - a, len(x) - a, before)
            out[k] = _normalised(d, x, self.mode)[0]
        self._end(mark, total_bytes)
        return out

    def distributions(self, text: bytes | str) -> np.ndarray:
        """``[len(text) + 1, width]``: the next-byte distribution after every prefix of
        ``text`` (row ``j``: after ``text[:j]``), all in one pass over the text (in windows,
        for texts longer than the model's context: see :meth:`windows`)."""
        x = as_bytes(text)
        mark = self._begin()
        d = _normalised(self._windowed(x, len(x)), x, self.mode)
        self._end(mark, len(x))
        return d

    def windows(self, text: bytes | str) -> list[tuple[int, int, int, Seq]]:
        """How a text is scored: ``(start, first, end, before)`` per window: the distributions
        after ``text[:j]`` for ``first <= j < end`` come from one pass over ``text[start:]``
        that follows the tokens ``before``, the canonical encoding of the text before ``start``
        (its last ones, half the model's context). A window starts where a token starting with
        a space follows one ending with something else, a pre-token boundary in every built-in
        pattern, which the text's next byte settles: so in ``"canonical"`` mode no cover of a
        longer prefix crosses it, the distribution right at the cut comes from the window
        before, and the only approximation is the model's own: a context that forgets what
        came before ``before``. (Where no such boundary is within reach, as in text without
        spaces, a window starts at a plain token boundary: approximate.) In ``"all"`` mode,
        tokenizations that differ before a window's start are not summed. One window when the
        text fits the context (or the LM has no ``context``)."""
        x = as_bytes(text)
        n = len(x)
        found = self._context_and_encoding(x)
        if found is None:
            return [(0, 0, n + 1, ())]
        ctx, ids, starts = found
        budget = ctx - 1  # the document-start position
        margin = 8
        by_tokens = self.mode == "canonical"  # states are about as deep as the encoding
        if (len(ids) if by_tokens else n) + margin <= budget:
            return [(0, 0, n + 1, ())]
        overlap = budget // 2
        room = budget - overlap - margin  # tokens (canonical) or bytes ("all") per window
        if room < 8:
            raise ContextLengthError(f"a context of {ctx} is too short to score in windows")
        out: list[tuple[int, int, int, Seq]] = []
        k = 0  # the token the current window starts at
        while True:
            a = starts[k]
            first = a + 1 if k else 0
            before = tuple(ids[max(0, k - overlap) : k])
            if (len(ids) - k if by_tokens else n - a) <= room:
                out.append((a, first, n + 1, before))
                return out
            far = k + room if by_tokens else k
            if not by_tokens:
                while starts[far + 1] - a <= room:
                    far += 1
            nxt = max(far, k + 1)
            while nxt > k + 1 and not self._cut_ok(ids, nxt):
                nxt -= 1
            if not self._cut_ok(ids, nxt):
                nxt = max(far, k + 1)  # no "x| y" within reach: a plain token boundary
            out.append((a, first, starts[nxt] + 1, before))
            k = nxt

    def _windowed(self, x: bytes, last: int) -> np.ndarray:
        """``_distributions(x, 0, last)`` window by window (``last <= len(x)``)."""
        parts = []
        for a, first, end, before in self.windows(x):
            hi = min(end - 1, last)
            if hi < first:
                break
            parts.append(self._distributions(x[a:hi], first - a, hi - a, before))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def logprob(self, text: bytes | str) -> float:
        """The byte-level score of ``text``: the sum of ``log P(x_j | x_<j)``. In ``"all"``
        mode (no beam) this is :meth:`prefix_logprob` exactly; in ``"canonical"`` mode each step
        is renormalised over the canonical continuations."""
        x = as_bytes(text)
        if not x:
            return 0.0
        mark = self._begin()
        d = _normalised(self._windowed(x, len(x) - 1), x, self.mode)
        self._end(mark, len(x))
        return float(d[np.arange(len(x)), np.frombuffer(x, dtype=np.uint8)].sum())

    def start_bytes(self, prefixes: Sequence[bytes | str]) -> ByteState:
        """The incremental path: a state after each prefix, advanced one byte at a time by
        ``append`` (the token LM's KV caches carry over). A prefix too long for the model's
        context starts from its last pre-token cut that leaves room (see :meth:`windows`)."""
        return ByteState(self, [self._lattice_for(p) for p in prefix_list(prefixes)])

    def _lattice_for(self, x: bytes, force: bool = False) -> _Lattice:
        a, before = self._restart_cut(x, force)
        lat = _Lattice(self, before=before)
        for b in x[a:]:
            lat.push(b)
        return lat

    def _restart_cut(self, x: bytes, force: bool = False) -> tuple[int, Seq]:
        """Where a lattice for the end of ``x`` starts, and the canonical tokens before it:
        the whole text if it fits the model's context (and not ``force``), else a pre-token cut
        (``"x| y"``) that keeps about a quarter of the context after it and half before (if
        none is within reach, a plain token boundary: approximate)."""
        found = self._context_and_encoding(x)
        if found is None:
            return 0, ()
        ctx, ids, starts = found
        budget = ctx - 1
        if len(ids) + 8 <= (budget // 2 + budget // 4 if force else budget):
            return 0, ()
        overlap = budget // 2
        keep = max(1, budget // 4 - 8)  # tokens after the cut
        lo = max(1, len(ids) - keep)
        reach = max(1, len(ids) - (budget - overlap - 8))  # the most tokens a cut may leave
        cut = next((k for k in range(lo, len(ids)) if self._cut_ok(ids, k)), None)
        if cut is None:
            # No "x| y" near the end: the nearest one within reach, else any token boundary
            # (then covers that cross it are lost: approximate).
            cut = next((k for k in range(lo - 1, reach - 1, -1) if self._cut_ok(ids, k)), lo)
        return starts[cut], tuple(ids[max(0, cut - overlap) : cut])

    def _context_and_encoding(self, x: bytes) -> tuple[int, list[int], list[int]] | None:
        """The model's context, the canonical ids of ``x`` and where each token starts (plus
        the end); ``None`` when the model has no context or the tokenizer cannot encode."""
        ctx = getattr(self.token_lm, "context", None)
        encode_bytes = getattr(self.tokenizer, "encode_bytes", None)
        if not isinstance(ctx, int) or ctx <= 0 or encode_bytes is None:
            return None
        ids = [int(i) for i in encode_bytes(x)]
        lengths = [len(self.tokens[i] or b"") for i in ids]
        return ctx, ids, np.concatenate([[0], np.cumsum(lengths)]).astype(int).tolist()

    def _cut_ok(self, ids: Sequence[int], k: int) -> bool:
        """Whether a cut before token ``k`` is ``"x| y"``: a token starting with a space after
        one ending with something else, a pre-token boundary in every built-in pattern."""
        prev, nxt = self.tokens[ids[k - 1]] or b"", self.tokens[ids[k]] or b""
        return nxt[:1] == b" " and not prev[-1:].isspace()

    def _too_deep(self, lat: _Lattice) -> bool:
        """Whether the next byte could take a state past the model's context."""
        ctx = getattr(self.token_lm, "context", None)
        if not isinstance(ctx, int) or ctx <= 0:
            return False
        deepest = max((len(s) for g in lat.states.values() for s in g), default=0)
        return 1 + len(lat.rows.before) + deepest + 2 > ctx

    def sample(
        self,
        prompt: bytes | str = b"",
        max_bytes: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> bytes:
        """Continues ``prompt`` byte by byte (the prompt may end mid-token or mid-character);
        stops early at the end of text when the model has an ``end_token``. Past the model's
        context, the state restarts from a pre-token cut near the end, after the canonical
        tokens before it (exact in canonical mode but for what the model's context forgets).

        ``temperature`` is a finite number >= 0 (0: always the likeliest byte; a tiny one acts
        the same), ``top_p`` in (0, 1], ``seed`` a non-negative integer (or None: fresh
        randomness)."""
        if not (_is_real(temperature) and math.isfinite(temperature) and temperature >= 0):
            raise ConfigError(f"temperature must be a finite number >= 0, got {temperature!r}")
        if not (_is_real(top_p) and 0 < top_p <= 1):
            raise ConfigError(f"top_p must be in (0, 1], got {top_p!r}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ConfigError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0
        ):
            raise ConfigError(f"seed must be a non-negative integer or None, got {seed!r}")
        rng = np.random.default_rng(seed)
        x = as_bytes(prompt)
        mark = self._begin()
        state = self.start_bytes([x])
        out = bytearray()
        for _ in range(max_bytes):
            lp = state.logprobs[0]
            if temperature == 0:
                b = int(np.argmax(lp))
            else:
                # Scaled from the maximum, so that a tiny temperature leaves the likeliest
                # bytes at 0 and the rest at -inf (greedy), never -inf everywhere (NaN).
                with np.errstate(over="ignore"):
                    z = (lp - lp.max()) / temperature
                p = np.exp(z)
                p /= p.sum()
                order = np.argsort(-p, kind="stable")
                keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p) + 1)]
                q = np.zeros_like(p)
                q[keep] = p[keep]
                q /= q.sum()
                b = int(rng.choice(len(q), p=q))
            if b == 256:
                break
            out.append(b)
            state.append([b])
            if self._too_deep(state._lats[0]):
                state = ByteState(self, [self._lattice_for(x + bytes(out), force=True)])
        self._end(mark, len(x) + len(out))  # every byte the lattice took, prompt included
        return bytes(out)


def _normalised(masses: np.ndarray, x: bytes, mode: str) -> np.ndarray:
    """Rows of log masses to log probabilities; a row of no mass at all is a prefix the model
    cannot produce."""
    total = _logsumexp_rows(masses)
    bad = np.flatnonzero(total == _NEG)
    if bad.size:
        j = int(bad[0])
        start = 0 if masses.shape[0] == 1 and j == 0 else j
        shown = x[max(0, start - 20) : start] if masses.shape[0] > 1 else x[-20:]
        raise InvalidInputError(
            f"the prefix ...{shown!r} has probability zero under this model ({mode} encodings)"
        )
    return masses - total[:, None]


class _Lattice:
    """The states of a growing byte string, kept while they can still extend (the last
    ``longest`` positions), with their LM rows: one batched model call per byte (per group of
    parents)."""

    def __init__(self, owner: ByteLevelLM, rows: _Rows | None = None, before: Seq = ()) -> None:
        self.o = owner
        self.x = bytearray()
        self.rows = rows if rows is not None else _Rows(owner, before)
        self.states: dict[int, dict[Seq, float]] = {}
        self.tails: dict[Seq, Seq] = {(): owner._check.tail(tuple(before))}
        self.row_of: dict[Seq, np.ndarray] = {}
        self.pruned = 0.0
        if rows is None:
            self.states[0] = {(): 0.0}
            self.row_of[()] = self.rows.get([()])[0]

    def copy(self) -> _Lattice:
        rows = _Rows(self.o, tuple(self.rows.before))
        rows.handles = dict(self.rows.handles)
        new = _Lattice(self.o, rows)
        new.x = bytearray(self.x)
        new.states = {p: dict(s) for p, s in self.states.items()}
        new.tails = dict(self.tails)
        new.row_of = dict(self.row_of)
        new.pruned = self.pruned
        return new

    def push(self, b: int) -> None:
        o = self.o
        self.x.append(b)
        x, p = bytes(self.x), len(self.x)
        fresh: dict[Seq, float] = {}
        for s, parent, t in o._new_states(x, p, self.states, self.tails):
            i = p - len(o.tokens[t] or b"")
            lp = self.states[i][parent] + float(self.row_of[parent][t])
            if lp == _NEG:
                continue
            fresh[s] = lp
            self.tails[s] = o._tail(self.tails, s, parent)
        if o._log_threshold is not None and fresh:
            floor = max(fresh.values()) + o._log_threshold
            dropped = [lp for lp in fresh.values() if lp < floor]
            if dropped:
                self.pruned += math.exp(_logsumexp(dropped))
                fresh = {s: lp for s, lp in fresh.items() if lp >= floor}
        if o.beam is not None and len(fresh) > o.beam:
            ranked = sorted(fresh.items(), key=lambda kv: -kv[1])
            self.pruned += math.exp(_logsumexp([lp for _, lp in ranked[o.beam :]]))
            fresh = dict(ranked[: o.beam])
        seqs = list(fresh)
        for s, row in zip(seqs, self.rows.get(seqs), strict=True):
            self.row_of[s] = row
        if fresh:
            self.states[p] = fresh
        for i in [i for i in self.states if i < p + 1 - o._trie.longest]:
            dead = list(self.states.pop(i))
            self.rows.release(dead)
            for s in dead:
                self.row_of.pop(s, None)
                self.tails.pop(s, None)

    def masses(self) -> np.ndarray:
        """``[width]`` log masses of the next byte (and the end of text)."""
        o = self.o
        n = len(self.x)
        x = bytes(self.x)
        dist = np.full((1, o.width), _NEG)
        for i, group in self.states.items():
            for s, lp in group.items():
                o._add_terms(dist, x, i, self.tails[s], self.row_of[s], lp, n, n)
        return dist[0]


class ByteState:
    """:class:`~toklab.lm.protocols.LMState` of a :class:`ByteLevelLM`: next-byte
    log-probabilities of a batch of byte strings, advanced one byte per row."""

    def __init__(self, owner: ByteLevelLM, lattices: list[_Lattice]) -> None:
        self._o = owner
        self._lats = lattices
        self._lp = (
            np.stack([self._row(k) for k in range(len(lattices))])
            if lattices
            else (np.zeros((0, owner.width)))
        )

    def _row(self, k: int) -> np.ndarray:
        lat = self._lats[k]
        return _normalised(lat.masses()[None], bytes(lat.x), self._o.mode)[0]

    @property
    def logprobs(self) -> np.ndarray:
        return self._lp

    def append(self, symbols: Sequence[int]) -> None:
        symbols = int_list(symbols, "append: bytes")
        if len(symbols) != len(self._lats):
            raise ConfigError(f"append: {len(symbols)} bytes for {len(self._lats)} rows")
        if any(not 0 <= s < 256 for s in symbols):
            raise InvalidIdsError(f"append: bytes are 0..255, got {symbols}")
        for k, s in enumerate(symbols):
            self._lats[k].push(s)
            self._lp[k] = self._row(k)

    def select(self, rows: Sequence[int]) -> ByteState:
        rows = int_list(rows, "select: rows")
        if any(not 0 <= r < len(self._lats) for r in rows):
            raise ConfigError(f"select: rows outside 0..{len(self._lats)}")
        state = ByteState.__new__(ByteState)
        state._o = self._o
        state._lats = [self._lats[r].copy() for r in rows]
        state._lp = self._lp[rows].copy()
        return state


class ByteEnsemble:
    """Byte-level LMs with different tokenizers combined in byte space: a ``"mixture"``
    (``log sum_i w_i P_i(b | x)``) or a ``"product"`` (``sum_i w_i log P_i(b | x)``,
    renormalised over the bytes). Each member is anything with ``next_byte_logprobs`` (and,
    for scoring in one pass, ``distributions``)."""

    def __init__(
        self, members: Sequence[Any], weights: Sequence[float] | None = None, rule: str = "mixture"
    ) -> None:
        if not members:
            raise ConfigError("an ensemble needs at least one member")
        if rule not in ("mixture", "product"):
            raise ConfigError(f"rule must be 'mixture' or 'product', got {rule!r}")
        for m in members:
            if not callable(getattr(m, "next_byte_logprobs", None)):
                raise ConfigError(
                    f"an ensemble's members must be byte-level LMs (next_byte_logprobs), got "
                    f"{type(m).__name__}"
                )
        try:
            w = np.ones(len(members)) if weights is None else np.asarray(weights, np.float64)
        except (TypeError, ValueError):
            w = np.full(1, np.nan)
        if w.shape != (len(members),) or not np.isfinite(w).all() or (w < 0).any() or w.max() <= 0:
            raise ConfigError(
                f"weights must be finite and non-negative, one per member, not all zero; got "
                f"{weights!r}"
            )
        w = w / w.max()  # (first: weights near the float range would overflow their sum)
        self.members = list(members)
        self.weights = w / w.sum()
        self.rule = rule

    @property
    def has_end(self) -> bool:
        return False

    def _combine(self, lps: np.ndarray) -> np.ndarray:
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

    def next_byte_logprobs(self, prefixes: Sequence[bytes | str]) -> np.ndarray:
        prefixes = prefix_list(prefixes)
        lps = [np.asarray(m.next_byte_logprobs(prefixes))[:, :256] for m in self.members]
        return self._combine(np.stack([_renormalise256(v) for v in lps]))

    def distributions(self, text: bytes | str) -> np.ndarray:
        """``[len(text) + 1, 256]``: the next-byte distribution after every prefix."""
        x = as_bytes(text)
        lps = []
        for m in self.members:
            if callable(getattr(m, "distributions", None)):
                d = np.asarray(m.distributions(x))[:, :256]
            else:
                d = np.asarray(m.next_byte_logprobs([x[:j] for j in range(len(x) + 1)]))[:, :256]
            lps.append(_renormalise256(d))
        return self._combine(np.stack(lps))

    def start_bytes(self, prefixes: Sequence[bytes | str]) -> EnsembleState:
        """The incremental path: every member's state, combined after each byte."""
        prefixes = prefix_list(prefixes)
        return EnsembleState(self, [m.start_bytes(prefixes) for m in self.members])

    def logprob(self, text: bytes | str) -> float:
        x = as_bytes(text)
        if not x:
            return 0.0
        d = self.distributions(x)
        return float(d[np.arange(len(x)), np.frombuffer(x, dtype=np.uint8)].sum())


class EnsembleState:
    """:class:`~toklab.lm.protocols.LMState` of a :class:`ByteEnsemble`."""

    def __init__(self, ens: ByteEnsemble, states: list[Any]) -> None:
        self._ens = ens
        self._states = states

    @property
    def logprobs(self) -> np.ndarray:
        lps = [_renormalise256(np.asarray(s.logprobs)[:, :256]) for s in self._states]
        return self._ens._combine(np.stack(lps))

    def append(self, symbols: Sequence[int]) -> None:
        for s in self._states:
            s.append(symbols)

    def select(self, rows: Sequence[int]) -> EnsembleState:
        return EnsembleState(self._ens, [s.select(rows) for s in self._states])


def _renormalise256(lp: np.ndarray) -> np.ndarray:
    """Byte columns of distributions that may also have an end-of-text column, renormalised
    over the bytes (an ensemble combines byte distributions)."""
    return lp - _logsumexp_rows(lp)[:, None]


def _is_real(v: object) -> bool:
    """A real number (not a bool, a string or None)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)
