"""StochasTok (Sims et al. 2025, "StochasTok: Improving Fine-Grained Subword Understanding in
LLMs"): split tokens of an encoded text at random into smaller tokens of the same vocabulary, so
that a model trained on the result sees inside words. Decoding is the base tokenizer's, and
``decode(expand(ids)) == decode(ids)`` always.

The split table (every 2-way split of each token into two tokens, with a fallback for tokens
that have none) and the expansion run in Rust; see ``rust/stochastok.rs`` for the exact
semantics. ``mode="reference"`` is the paper's: ``floor(p * n)`` attempts at uniform positions
of the growing sequence, so ``p`` is *not* the share of tokens split; ``mode="bernoulli"``
splits each token (and each part, recursively) with probability ``p``.

Randomness: sequence ``i`` of a call uses a generator derived from ``(seed, first_index + i)``,
so the same seed gives the same output whatever the batch size and the thread count.
``encode`` without a seed numbers its calls (the k-th call is sequence k), so a fresh
``StochasTok`` replays the same stream. That counter is per process: the workers of a
``DataLoader`` (copies made by fork or pickle) each count from where the copy was made, so
they, and the epochs of workers that restart, replay the same expansions. Feed a ``DataLoader``
from :class:`StochasTokDataset` (new expansions every epoch, any worker), or pass ``seed=``
explicitly.

>>> import toklab
>>> bpe = toklab.train_bpe(["the cat sat on the mat"] * 20, vocab_size=268)
>>> st = StochasTok(bpe, p=0.5, seed=1)
>>> ids = st.encode("the cat sat")
>>> st.decode(ids)
'the cat sat'
>>> len(ids) >= len(bpe.encode("the cat sat"))
True
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from toklab import _core
from toklab.bpe import _threads
from toklab.errors import ConfigError, CorruptFileError
from toklab.tokenizer import IdsLike, Settings, as_ids, check_batch, ids_from_buffer

__all__ = ["StochasTok", "StochasTokDataset", "expand_to_memmap"]

_FORMAT = "toklab.stochastok"
_VERSION = 1


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _u64(name: str, v: object) -> int:
    """A seed or sequence number: an int in 0..2**64."""
    if not _is_int(v) or not 0 <= v < 2**64:  # type: ignore[operator]
        raise ConfigError(f"{name} must be an int from 0 to 2**64 - 1, got {v!r}")
    return int(v)  # type: ignore[call-overload]


class StochasTok(Settings):
    """A stochastic tokenizer: ``base``'s ids with tokens split at random (see the module).
    Its settings are fixed once it is made (``st.p = 0.2`` raises ``AttributeError``)."""

    _SETTINGS = frozenset(
        {"base", "p", "seed", "mode", "max_depth", "max_splits", "table"}
        | {"fallback_count", "total_splits", "splittable_count"}
    )

    def __init__(
        self,
        base: Any,
        p: float = 0.1,
        seed: int = 0,
        *,
        mode: Literal["reference", "bernoulli"] = "reference",
        max_depth: int | None = None,
        max_splits: int | None = None,
    ) -> None:
        if isinstance(base, StochasTok):
            raise ConfigError("StochasTok over a StochasTok: wrap the base tokenizer instead")
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
            raise ConfigError(f"p must be a number between 0 and 1, got {p!r}")
        if mode not in ("reference", "bernoulli"):
            raise ConfigError(f"mode must be 'reference' or 'bernoulli', got {mode!r}")
        if max_depth is not None and not (_is_int(max_depth) and 1 <= max_depth <= 255):
            raise ConfigError(f"max_depth must be 1..255 or None, got {max_depth!r}")
        if max_splits is not None and not (_is_int(max_splits) and 0 <= max_splits < 2**32):
            raise ConfigError(f"max_splits must be an int >= 0 or None, got {max_splits!r}")
        if max_splits is not None and mode == "bernoulli":
            raise ConfigError("max_splits bounds the reference mode's attempts; bernoulli has none")
        seed = _u64("seed", seed)
        self.base, self.p, self.seed = base, float(p), seed
        self.mode, self.max_depth, self.max_splits = mode, max_depth, max_splits
        core = getattr(base, "_core", None)
        if isinstance(core, _core.Bpe):
            self.table = _core.SplitTable.from_bpe(core)
        else:
            specials = set(getattr(base, "special_tokens", {}).values())
            n = int(base.vocab_size)
            tokens = [bytes(base.token_bytes(i)) for i in range(n)]
            # Vocabularies with word-initial and continuation tokens (ByteSpan): a split's
            # first part keeps the token's kind, the others are continuations.
            initial = getattr(base, "is_word_initial", None)
            kinds = [1 if initial(i) else 2 for i in range(n)] if callable(initial) else None
            self.table = _core.SplitTable(tokens, [i in specials for i in range(n)], kinds)
        splittable, self.fallback_count, self.total_splits = self.table.stats()
        if splittable == 0:
            raise ConfigError(
                "no token of this vocabulary can be split into smaller tokens (a vocabulary of "
                "single bytes or characters?): StochasTok would change nothing"
            )
        self.splittable_count = splittable
        self._calls = itertools.count()
        self._lock = threading.Lock()

    # -- the Tokenizer protocol ----------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return int(self.base.vocab_size)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(getattr(self.base, "special_tokens", {}))

    def __repr__(self) -> str:
        return (
            f"StochasTok({self.base!r}, p={self.p}, seed={self.seed}, mode={self.mode!r}, "
            f"max_depth={self.max_depth}, max_splits={self.max_splits})"
        )

    def _next_index(self) -> int:
        with self._lock:
            return next(self._calls)

    def encode(self, text: str, *, seed: int | None = None, **kwargs: Any) -> np.ndarray:
        """The base encoding of ``text``, expanded. ``seed`` fixes this call's randomness (else
        the object's seed and the call's number); other options go to the base ``encode``."""
        ids = np.asarray(self.base.encode(text, **kwargs), dtype=np.uint32)
        return self._expand_one(ids, seed)

    def encode_ordinary(self, text: str, *, seed: int | None = None) -> np.ndarray:
        enc = getattr(self.base, "encode_ordinary", None) or self.base.encode
        return self._expand_one(np.asarray(enc(text), dtype=np.uint32), seed)

    def encode_batch(
        self,
        texts: Iterable[str],
        *,
        seed: int | None = None,
        first_index: int = 0,
        num_threads: int | None = None,
        **kwargs: Any,
    ) -> list[np.ndarray]:
        """Text ``i`` is expanded as sequence ``first_index + i`` under ``seed`` (default: the
        object's), so batching never changes the result."""
        check_batch(texts)
        base = self.base.encode_batch(list(texts), **kwargs)
        lengths = np.fromiter((len(b) for b in base), dtype=np.uint64, count=len(base))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.uint64)
        flat = np.concatenate(base).astype(np.uint32) if base else np.zeros(0, np.uint32)
        out, new = self.expand_batch(
            flat, offsets, seed=seed, first_index=first_index, num_threads=num_threads
        )
        return [out[new[i] : new[i + 1]] for i in range(len(base))]

    def decode(self, ids: IdsLike, errors: str = "replace") -> str:
        return str(self.base.decode(ids, errors=errors))

    def decode_bytes(self, ids: IdsLike) -> bytes:
        return bytes(self.base.decode_bytes(ids))

    def token_bytes(self, token_id: int) -> bytes:
        return bytes(self.base.token_bytes(token_id))

    # -- expansion -----------------------------------------------------------------------------

    def _expand_one(self, ids: np.ndarray, seed: int | None) -> np.ndarray:
        index = 0 if seed is not None else self._next_index()
        out, _ = self.expand_batch(
            ids, np.array([0, len(ids)], dtype=np.uint64), seed=seed, first_index=index
        )
        return out

    def expand(self, ids: IdsLike, *, seed: int | None = None, index: int = 0) -> np.ndarray:
        """Expands one sequence of ids (sequence number ``index`` under ``seed``)."""
        arr = as_ids(ids, self.vocab_size)
        out, _ = self.expand_batch(
            arr, np.array([0, len(arr)], dtype=np.uint64), seed=seed, first_index=index
        )
        return out

    def expand_batch(
        self,
        flat: IdsLike,
        offsets: Sequence[int] | np.ndarray,
        *,
        seed: int | None = None,
        first_index: int = 0,
        num_threads: int | None = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Expands the sequences ``flat[offsets[i]:offsets[i + 1]]`` (numpy in, numpy out):
        returns ``(flat_ids, offsets)`` of the expanded sequences."""
        arr = as_ids(flat, self.vocab_size)
        given = np.asarray(offsets)
        if given.dtype.kind not in "iu" or (given.dtype.kind == "i" and (given < 0).any()):
            raise ConfigError(f"offsets must be non-negative integers, got {given.dtype} values")
        offs = np.ascontiguousarray(given, dtype=np.uint64)
        if offs.ndim != 1 or offs.size == 0:
            raise ConfigError("offsets must be a 1-D sequence starting at 0")
        raw, raw_offsets = self.table.expand_batch(
            arr,
            offs,
            self.p,
            self.mode,
            self.seed if seed is None else _u64("seed", seed),
            _u64("first_index", first_index),
            self.max_splits,
            self.max_depth,
            _threads(num_threads),
        )
        return ids_from_buffer(raw), np.frombuffer(raw_offsets, dtype="<u8")

    def splits(self, token_id: int) -> list[tuple[int, ...]]:
        """The splits of a token (each a tuple of part ids), as the expansion chooses them."""
        as_ids([token_id], self.vocab_size)  # an unknown id: UnknownTokenError
        return [tuple(s) for s in self.table.splits(int(token_id))]

    def expansion_rate(self, texts: Iterable[str], seed: int | None = None) -> float:
        """The realised growth: expanded tokens / base tokens - 1, over ``texts``."""
        texts = list(texts)
        enc = getattr(self.base, "encode_ordinary", None) or self.base.encode
        base = sum(len(enc(t)) for t in texts)
        expanded = sum(
            len(self.encode_ordinary(t, seed=self.seed if seed is None else seed)) for t in texts
        )
        return expanded / base - 1 if base else 0.0

    # -- saving --------------------------------------------------------------------------------

    def to_json(self) -> str:
        to_json = getattr(self.base, "to_json", None)
        if to_json is None:
            raise ConfigError(f"the base tokenizer {type(self.base).__name__} cannot be saved")
        return json.dumps(
            {
                "format": _FORMAT,
                "version": _VERSION,
                "p": self.p,
                "seed": self.seed,
                "mode": self.mode,
                "max_depth": self.max_depth,
                "max_splits": self.max_splits,
                "base": json.loads(to_json()),
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> StochasTok:
        from toklab.tokenizer import loads

        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CorruptFileError(f"not a StochasTok file: {e}") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise CorruptFileError("not a StochasTok file (format field)")
        if data.get("version") != _VERSION:
            raise CorruptFileError(f"StochasTok file version {data.get('version')!r}")
        try:
            base = loads(json.dumps(data["base"]))
            return cls(
                base,
                p=data["p"],
                seed=data["seed"],
                mode=data["mode"],
                max_depth=data["max_depth"],
                # (Files before bernoulli refused max_splits: there it never counted.)
                max_splits=None if data["mode"] == "bernoulli" else data["max_splits"],
            )
        except (KeyError, TypeError, ConfigError) as e:
            raise CorruptFileError(f"damaged StochasTok file: {e}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (self.base, self.p, self.seed, self.mode, self.max_depth, self.max_splits),
        )


def _rebuild(
    base: Any, p: float, seed: int, mode: str, max_depth: int | None, max_splits: int | None
) -> StochasTok:
    return StochasTok(
        base,
        p,
        seed,
        mode=mode,
        max_depth=max_depth,
        max_splits=None if mode == "bernoulli" else max_splits,  # type: ignore[arg-type]
    )


def _mix(*values: int) -> int:
    """A 64-bit seed from several non-negative ints (splitmix64 steps: distinct inputs give
    unrelated seeds, where a linear mix like ``a * k + b`` collides)."""
    x = 0
    for v in values:
        x = (x ^ (int(v) & 0xFFFF_FFFF_FFFF_FFFF)) + 0x9E37_79B9_7F4A_7C15
        x &= 0xFFFF_FFFF_FFFF_FFFF
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9) & 0xFFFF_FFFF_FFFF_FFFF
        z = ((z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB) & 0xFFFF_FFFF_FFFF_FFFF
        x = z ^ (z >> 31)
    return x


class StochasTokDataset:
    """Blocks of base ids, expanded afresh every epoch: a map-style dataset for
    ``torch.utils.data.DataLoader`` (items are ``int64`` numpy arrays; the default collate makes
    tensors of them).

    Item ``i`` is the base block ``ids[i * block : (i + 1) * block + 1]``, expanded as sequence
    ``i`` under a seed derived from the StochasTok's seed, ``seed`` and the epoch. The expansion
    is longer than ``block + 1`` ids when a token split: the item is then a window of
    ``block + 1`` ids (input and shifted target) at a random offset in it, drawn from the same
    seed, so that over the epochs every part of every block is trained on (a fixed cut would
    never show a block's end). Call :meth:`set_epoch` at the start of each epoch; the same
    epoch gives the same items in any worker and any order.
    """

    def __init__(self, ids: np.ndarray, block: int, stochastok: StochasTok, seed: int = 0):
        if not _is_int(block) or block < 1:
            raise ConfigError(f"block must be a positive int, got {block!r}")
        self.ids = np.asarray(ids)
        if self.ids.ndim != 1 or len(self.ids) < block + 1:
            raise ConfigError(f"need a 1-D array of at least {block + 1} ids")
        self.block, self.st, self.seed, self.epoch = block, stochastok, _u64("seed", seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = _u64("epoch", epoch)

    def __len__(self) -> int:
        return (len(self.ids) - 1) // self.block

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(i)
        base = self.ids[i * self.block : (i + 1) * self.block + 1]
        seed = _mix(self.st.seed, self.seed, self.epoch)
        out = self.st.expand(base, seed=seed, index=i)
        extra = len(out) - (self.block + 1)
        start = 0
        if extra > 0:
            start = int(np.random.default_rng([_mix(seed, i), 1]).integers(0, extra + 1))
        return np.asarray(out[start : start + self.block + 1], dtype=np.int64)


def expand_to_memmap(
    stochastok: StochasTok,
    flat: np.ndarray,
    offsets: np.ndarray,
    path: str | os.PathLike[str],
    *,
    seed: int | None = None,
    chunk: int = 1 << 22,
) -> tuple[np.ndarray, np.ndarray]:
    """The paper's offline mode: expands every document once and writes the ids to ``path``
    (a ``.npy`` memmap, ``uint16`` when the vocabulary fits, else ``uint32``) and the offsets
    to ``path`` with ``.offsets.npy``. Works in chunks of about ``chunk`` ids, so memory stays
    bounded; the result equals one ``expand_batch`` call. Returns both, memory-mapped."""
    if not _is_int(chunk) or chunk < 1:
        raise ConfigError(f"chunk must be a positive int, got {chunk!r}")
    given = np.asarray(offsets)
    if given.dtype.kind not in "iu" or given.ndim != 1 or given.size == 0:
        raise ConfigError("offsets must be a 1-D array of integers starting at 0")
    if (given[:1] != 0).any() or int(given[-1]) != len(flat) or (np.diff(given) < 0).any():
        # (Slicing first would drop the ids the offsets leave out, without a word.)
        raise ConfigError(
            f"offsets must start at 0, never decrease and end at the number of ids "
            f"({len(flat)}), got {int(given[0])}..{int(given[-1])}"
        )
    offs = given.astype(np.uint64)
    path = Path(path)
    dtype = np.uint16 if stochastok.vocab_size <= 1 << 16 else np.uint32
    pieces_path = path.with_name(path.name + ".part")
    out_offsets = [np.zeros(1, dtype=np.uint64)]
    total = 0
    with pieces_path.open("wb") as f:
        start = 0
        n_docs = len(offs) - 1
        while start < n_docs:
            end = int(np.searchsorted(offs, offs[start] + chunk, side="right"))
            end = min(max(end - 1, start + 1), n_docs)
            lo, hi = int(offs[start]), int(offs[end])
            ids, new = stochastok.expand_batch(
                flat[lo:hi], offs[start : end + 1] - offs[start], seed=seed, first_index=start
            )
            f.write(ids.astype(dtype).tobytes())
            out_offsets.append(new[1:] + total)
            total += len(ids)
            start = end
    data = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(total,))
    if total:
        data[:] = np.memmap(pieces_path, dtype=dtype, mode="r", shape=(total,))
    data.flush()
    del data
    pieces_path.unlink()
    offsets_path = path.with_name(path.stem + ".offsets.npy")
    np.save(offsets_path, np.concatenate(out_offsets))
    return np.load(path, mmap_mode="r"), np.load(offsets_path, mmap_mode="r")
