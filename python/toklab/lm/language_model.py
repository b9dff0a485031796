"""A trained GPT with the tokenizer it reads, on a device: the lab's :class:`TokenLM`, and its
:class:`ByteLM` when the tokenizer is :class:`~toklab.bytes.ByteTokenizer`.

Checkpoints are single files written with ``torch.save`` (loaded with ``weights_only=True``):
the format name and version, the model config and weights, a SHA-256 of the weights
(``model_sha256``, checked on load; files written before it existed load without the check),
the tokenizer as its JSON text, and, when written by training, the optimizer, the step, the
random states and the training options, so that training resumes exactly. On load the config is
checked against the stored weights' names and shapes before any model is built.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toklab.bytes import ByteTokenizer
from toklab.errors import (
    ConfigError,
    ContextLengthError,
    CorruptFileError,
    DeviceError,
    InvalidIdsError,
    InvalidInputError,
    UnknownTokenError,
    VocabularyMismatchError,
)
from toklab.lm.model import GPT, GPTConfig, KVCache
from toklab.tokenizer import as_ids, loads, prefix_list

__all__ = ["GPTState", "LanguageModel", "resolve_device"]

CHECKPOINT_FORMAT = "toklab.lm"
CHECKPOINT_VERSION = 1


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None): CUDA when present, else CPU; ``"cuda"`` on a machine without CUDA
    raises :class:`~toklab.errors.DeviceError`."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"unknown device {device!r}: {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r} asked for, but torch sees no CUDA device here "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
    elif dev.type != "cpu":
        raise DeviceError(f"device {device!r}: toklab runs on 'cpu' or 'cuda'")
    return dev


def check_ids(ids: Any, vocab_size: int, what: str = "token ids") -> list[int]:
    """``ids`` (a 1-D sequence or array) as a list of ints, each in ``0..vocab_size``, checked
    as :func:`toklab.tokenizer.as_ids` checks them: floats (NaN included), booleans, strings and
    anything not 1-D raise :class:`~toklab.errors.InvalidIdsError`, an id outside the vocabulary
    :class:`~toklab.errors.UnknownTokenError`; ``what`` names the ids in the message."""
    if isinstance(ids, (str, bytes)):
        raise InvalidIdsError(f"{what} must be a sequence of integers, got {type(ids).__name__}")
    try:
        arr = np.asarray(ids)
    except (ValueError, TypeError) as e:  # ragged nesting
        raise InvalidIdsError(f"{what} must be a 1-D sequence of integers ({e})") from None
    if arr.ndim != 1:
        raise InvalidIdsError(f"{what} must be a 1-D sequence of integers, got shape {arr.shape}")
    try:
        return as_ids(arr, vocab_size, core_checks=False).tolist()
    except (InvalidIdsError, UnknownTokenError) as e:
        raise type(e)(f"{what}: {e}") from None


def check_batch_size(batch_size: Any) -> int:
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool):
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    return int(batch_size)


def utf8_length(text: str) -> int:
    """Bytes of ``text`` in UTF-8; a text that has none (lone surrogates) raises
    :class:`~toklab.errors.InvalidInputError`."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise InvalidInputError(
            f"a text holds {text[e.start : e.end]!r} at character {e.start}, which is not "
            "valid Unicode (a lone surrogate) and has no UTF-8 bytes"
        ) from None


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA; nothing on CPU (where float32 keeps results exact and stable)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def tokenizer_json(tokenizer: Any) -> str:
    to_json = getattr(tokenizer, "to_json", None)
    if to_json is None:
        raise ConfigError(
            f"{type(tokenizer).__name__} cannot be saved with a model (it has no to_json)"
        )
    return str(to_json())


class LanguageModel:
    """A :class:`~toklab.lm.model.GPT` over ``tokenizer``'s ids, on ``device``.

    Implements :class:`~toklab.lm.protocols.TokenLM`; over a :class:`ByteTokenizer` it is also a
    :class:`~toklab.lm.protocols.ByteLM` (256 columns: the byte GPT predicts no end of text).
    """

    def __init__(
        self, model: GPT, tokenizer: Any, device: str | torch.device | None = None
    ) -> None:
        if tokenizer.vocab_size != model.cfg.vocab_size:
            raise VocabularyMismatchError(
                f"the model predicts {model.cfg.vocab_size} ids, the tokenizer has "
                f"{tokenizer.vocab_size}"
            )
        self.device = resolve_device(device if device is not None else _model_device(model))
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer

    @property
    def cfg(self) -> GPTConfig:
        return self.model.cfg

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab_size

    @property
    def context(self) -> int:
        return self.cfg.context

    @property
    def has_end(self) -> bool:
        return False

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"LanguageModel(layers={c.n_layer}, width={c.n_embd}, heads={c.n_head}, "
            f"context={c.context}, vocab={c.vocab_size}, params={self.model.num_params():,}, "
            f"device={self.device})"
        )

    # -- TokenLM -------------------------------------------------------------------------------

    @torch.no_grad()
    def next_token_logprobs(
        self, prefixes: Sequence[Sequence[int]], *, truncate: bool = False, batch_size: int = 64
    ) -> np.ndarray:
        """``[len(prefixes), vocab_size]`` float64 log-probabilities of the next token after
        each prefix (a document start comes before every prefix). A prefix that does not fit
        the context raises :class:`~toklab.errors.ContextLengthError`, or with ``truncate``
        keeps only its last ``context`` positions. Ids must be integers in ``0..vocab_size``
        (else :class:`~toklab.errors.InvalidIdsError` or
        :class:`~toklab.errors.UnknownTokenError`)."""
        batch_size = check_batch_size(batch_size)
        seqs = [self._sequence(p, truncate) for p in prefixes]
        out = np.empty((len(seqs), self.vocab_size), dtype=np.float64)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        for at in range(0, len(order), batch_size):
            rows = order[at : at + batch_size]
            width = max(len(seqs[i]) for i in rows)
            ids = torch.zeros((len(rows), width), dtype=torch.long)
            for j, i in enumerate(rows):
                ids[j, : len(seqs[i])] = torch.as_tensor(seqs[i])
            last = torch.tensor([len(seqs[i]) - 1 for i in rows])
            ids, last = ids.to(self.device), last.to(self.device)
            with autocast(self.device):
                h = self.model.hidden(ids)
                h = h[torch.arange(len(rows), device=self.device), last]
                logits = self.model.head(h)
            out[rows] = _logprobs(logits)
        return out

    @torch.no_grad()
    def start(self, prefixes: Sequence[Sequence[int]]) -> GPTState:
        """The incremental path: a state after each prefix (KV caches), advanced by ``append``."""
        return GPTState.start(self, [self._sequence(p, False) for p in prefixes])

    # -- ByteLM --------------------------------------------------------------------------------

    def next_byte_logprobs(self, prefixes: Sequence[bytes]) -> np.ndarray:
        """``[len(prefixes), 256]`` log-probabilities of the next byte (byte GPTs only)."""
        self._check_bytes()
        lp = self.next_token_logprobs([list(p) for p in prefix_list(prefixes)])
        return _renormalised_bytes(lp)

    def start_bytes(self, prefixes: Sequence[bytes]) -> GPTState:
        self._check_bytes()
        state = self.start([list(p) for p in prefix_list(prefixes)])
        state.byte_columns = self.vocab_size > 256
        return state

    def _check_bytes(self) -> None:
        if not isinstance(self.tokenizer, ByteTokenizer):
            raise ConfigError(
                "next_byte_logprobs needs a model over raw bytes (ByteTokenizer); for a token "
                "model use toklab's exact byte-level conversion"
            )

    # -- helpers -------------------------------------------------------------------------------

    def encode(self, text: str) -> np.ndarray:
        """The tokenizer's ids of ``text`` (special-token strings as plain text). A text with
        lone surrogates raises :class:`~toklab.errors.InvalidInputError`."""
        encode = getattr(self.tokenizer, "encode_ordinary", None) or self.tokenizer.encode
        try:
            return np.asarray(encode(text))
        except UnicodeEncodeError:
            utf8_length(text)  # raises InvalidInputError, saying where
            raise

    def _sequence(self, prefix: Sequence[int], truncate: bool) -> list[int]:
        ids = check_ids(prefix, self.vocab_size, "a prefix's token ids")
        seq = [self.cfg.bos_id, *ids]
        if len(seq) > self.context:
            if not truncate:
                raise ContextLengthError(
                    f"a prefix of {len(ids)} tokens (+1 for the document start) does not fit "
                    f"the model's context of {self.context}; pass truncate=True to keep the "
                    "last positions"
                )
            seq = seq[-self.context :]
        return seq

    # -- checkpoints ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the weights, config and tokenizer to one file (atomically)."""
        save_checkpoint(path, self.model, self.tokenizer)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str | torch.device | None = "auto",
        tokenizer: Any = None,
    ) -> LanguageModel:
        """Loads a checkpoint. ``tokenizer``, if given, must be the one the model was trained
        over (else :class:`~toklab.errors.VocabularyMismatchError`)."""
        ckpt = read_checkpoint(path)
        model, stored = model_from_checkpoint(ckpt, path)
        if tokenizer is not None:
            check_same_tokenizer(tokenizer, stored, path)
        return cls(model, stored if tokenizer is None else tokenizer, device)


def check_same_tokenizer(tokenizer: Any, stored: Any, where: Any) -> None:
    if tokenizer_json(tokenizer) != tokenizer_json(stored):
        raise VocabularyMismatchError(
            f"{where}: the model was trained over another tokenizer ({stored.vocab_size} ids; "
            f"this one has {tokenizer.vocab_size}, and its vocabulary differs)"
        )


def save_checkpoint(
    path: str | os.PathLike[str],
    model: GPT,
    tokenizer: Any,
    training: dict[str, Any] | None = None,
) -> None:
    """Writes a checkpoint to ``path`` through a temporary file, so a crash never leaves a torn
    file in place of a good one."""
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    data: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": model.cfg.to_dict(),
        "model": weights,
        "model_sha256": weights_sha256(weights),
        "tokenizer": tokenizer_json(tokenizer),
    }
    if training is not None:
        data["training"] = training
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises many types for a damaged file
        raise CorruptFileError(f"{path}: not a readable toklab LM checkpoint ({e})") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CorruptFileError(f"{path}: not a toklab LM checkpoint (format field)")
    if data.get("version") != CHECKPOINT_VERSION:
        raise CorruptFileError(
            f"{path}: checkpoint version {data.get('version')!r}; this toklab reads "
            f"version {CHECKPOINT_VERSION}"
        )
    return data


def weights_sha256(weights: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the weights in name order: each name, dtype, shape and raw bytes."""
    h = hashlib.sha256()
    for name in sorted(weights):
        t = weights[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def expected_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """The name and shape of every weight of ``GPT(cfg)``, without building it: one block is
    built on the meta device (no memory) and repeated ``n_layer`` times."""
    with torch.device("meta"):
        one = GPT(dataclasses.replace(cfg, n_layer=1))
    out: dict[str, tuple[int, ...]] = {}
    for name, t in one.state_dict().items():
        if name.startswith("blocks.0."):
            rest = name[len("blocks.0.") :]
            for i in range(cfg.n_layer):
                out[f"blocks.{i}.{rest}"] = tuple(t.shape)
        else:
            out[name] = tuple(t.shape)
    return out


def check_weights_fit(cfg: GPTConfig, weights: Any, where: Any) -> None:
    """The stored weights are exactly those of ``GPT(cfg)`` (names, shapes, finite floats),
    checked before the model is built (a damaged config could claim a huge model)."""
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise CorruptFileError(f"{where}: damaged checkpoint (the weights are not a state dict)")
    # Each block has more than one weight, so a config claiming more layers than are stored
    # is refused here, by counting, before anything its size is built.
    blocks = {k.split(".")[1] for k in weights if k.startswith("blocks.")}
    if cfg.n_layer != len(blocks):
        raise CorruptFileError(
            f"{where}: damaged checkpoint (the config says {cfg.n_layer} layers, the weights "
            f"hold {len(blocks)})"
        )
    want = expected_shapes(cfg)
    if set(want) != set(weights):
        missing, extra = sorted(set(want) - set(weights)), sorted(set(weights) - set(want))
        raise CorruptFileError(
            f"{where}: damaged checkpoint (weights missing: {missing[:5]}, unexpected: {extra[:5]})"
        )
    for name, shape in want.items():
        t = weights[name]
        if tuple(t.shape) != shape:
            raise CorruptFileError(
                f"{where}: damaged checkpoint ({name} has shape {tuple(t.shape)}, the config "
                f"needs {shape})"
            )
        if not t.is_floating_point():
            raise CorruptFileError(f"{where}: damaged checkpoint ({name} is {t.dtype})")
        if not bool(torch.isfinite(t).all()):
            raise CorruptFileError(f"{where}: damaged checkpoint ({name} is not finite)")


def model_from_checkpoint(ckpt: dict[str, Any], where: Any) -> tuple[GPT, Any]:
    """The model and tokenizer of a checkpoint read by :func:`read_checkpoint`; anything
    damaged raises :class:`~toklab.errors.CorruptFileError` naming ``where``. The config is
    checked against the stored weights before the model is built."""
    config = ckpt.get("config")
    if not isinstance(config, dict):
        raise CorruptFileError(f"{where}: damaged checkpoint (no model config)")
    try:
        cfg = GPTConfig.from_dict(config)
    except (TypeError, ValueError) as e:  # (ConfigError is a ValueError)
        raise CorruptFileError(f"{where}: damaged checkpoint (config: {e})") from None
    weights = ckpt.get("model")
    check_weights_fit(cfg, weights, where)
    stored_sum = ckpt.get("model_sha256")
    if stored_sum is not None and stored_sum != weights_sha256(weights):
        raise CorruptFileError(
            f"{where}: damaged checkpoint (the weights do not match their checksum)"
        )
    try:
        tokenizer = loads(ckpt["tokenizer"])
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise CorruptFileError(f"{where}: damaged checkpoint (tokenizer: {e})") from None
    if tokenizer.vocab_size != cfg.vocab_size:
        raise CorruptFileError(f"{where}: the stored tokenizer does not fit the model")
    model = GPT(cfg)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CorruptFileError(f"{where}: damaged checkpoint ({e})") from None
    return model, tokenizer


def _model_device(model: GPT) -> torch.device:
    return next(model.parameters()).device


def _logprobs(logits: torch.Tensor) -> np.ndarray:
    """Log-softmax in float64 (so each row sums to one to double precision)."""
    return logits.double().log_softmax(-1).cpu().numpy()


def _renormalised_bytes(lp: np.ndarray) -> np.ndarray:
    """The 256 byte columns of a byte tokenizer's distribution; if it also has special tokens,
    renormalised over the bytes alone."""
    if lp.shape[1] == 256:
        return lp
    b = lp[:, :256]
    return b - np.logaddexp.reduce(b, axis=1, keepdims=True)


def group_by_length(seqs: Sequence[Sequence[int]]) -> list[list[int]]:
    """Batch rows grouped by sequence length (rows of one group advance together)."""
    by_len: dict[int, list[int]] = {}
    for i, seq in enumerate(seqs):
        by_len.setdefault(len(seq), []).append(i)
    return list(by_len.values())


def regroup(
    groups: Sequence[Sequence[int]], rows: Sequence[int], batch: int
) -> list[tuple[int, list[int], list[int]]]:
    """For ``select(rows)``: ``(old group, new rows, indices inside the old group)`` for each old
    group that the selected rows come from."""
    where = {r: (g, k) for g, members in enumerate(groups) for k, r in enumerate(members)}
    picked: dict[int, tuple[list[int], list[int]]] = {}
    for new, old in enumerate(rows):
        if old not in where:
            raise ConfigError(f"select: no row {old} in a batch of {batch}")
        g, k = where[old]
        picked.setdefault(g, ([], []))
        picked[g][0].append(new)
        picked[g][1].append(k)
    return [(g, new_rows, inside) for g, (new_rows, inside) in picked.items()]


class GPTState:
    """Incremental next-token distributions of a batch, with one KV cache per group of rows of
    the same length (rows advance together, so groups never mix)."""

    def __init__(self, lm: LanguageModel, groups: list[tuple[list[int], KVCache]], lp: np.ndarray):
        self._lm = lm
        self._groups = groups  # (batch rows, cache of those rows in that order)
        self._logprobs = lp
        self.byte_columns = False

    @classmethod
    def start(cls, lm: LanguageModel, seqs: list[list[int]]) -> GPTState:
        lp = np.empty((len(seqs), lm.vocab_size), dtype=np.float64)
        groups = []
        for rows in group_by_length(seqs):
            cache = KVCache(lm.cfg.n_layer)
            ids = torch.tensor([seqs[i] for i in rows], dtype=torch.long, device=lm.device)
            with torch.no_grad(), autocast(lm.device):
                logits = lm.model(ids, cache)[:, -1]
            lp[rows] = _logprobs(logits)
            groups.append((rows, cache))
        return cls(lm, groups, lp)

    @property
    def logprobs(self) -> np.ndarray:
        return _renormalised_bytes(self._logprobs) if self.byte_columns else self._logprobs

    @property
    def length(self) -> list[int]:
        """Positions seen by each row, the document start included."""
        out = [0] * len(self._logprobs)
        for rows, cache in self._groups:
            for k, r in enumerate(rows):
                out[r] = cache.length if cache.lengths is None else int(cache.lengths[k])
        return out

    def append(self, symbols: Sequence[int]) -> None:
        """Advances every row by its symbol (a token id in ``0..vocab_size``). A row that would
        pass the context raises :class:`~toklab.errors.ContextLengthError`, before any row is
        advanced."""
        symbols = check_ids(symbols, self._lm.vocab_size, "append: the symbols")
        if len(symbols) != len(self._logprobs):
            raise ConfigError(f"append: {len(symbols)} symbols for {len(self._logprobs)} rows")
        for _, cache in self._groups:
            seen = cache.length if cache.lengths is None else int(cache.lengths.max())
            if seen + 1 > self._lm.context:
                raise ContextLengthError(
                    f"append: {seen + 1} positions, but the model's context is {self._lm.context}"
                )
        for rows, cache in self._groups:
            ids = torch.tensor([[symbols[r]] for r in rows], dtype=torch.long)
            with torch.no_grad(), autocast(self._lm.device):
                logits = self._lm.model(ids.to(self._lm.device), cache)[:, -1]
            self._logprobs[rows] = _logprobs(logits)

    @classmethod
    def concat(cls, parts: Sequence[tuple[GPTState, Sequence[int]]]) -> GPTState:
        """One state of the given rows of several states, in order, advanced together by one
        forward pass per ``append`` even where their lengths differ (a ragged KV cache)."""
        if not parts:
            raise ConfigError("concat: nothing to concatenate")
        lm = parts[0][0]._lm
        caches, lps, where = [], [], []  # where[k]: the output row of the k-th cache row
        base = 0
        for state, rows in parts:
            sel = state.select(rows)
            for members, cache in sel._groups:
                caches.append(cache)
                lps.append(sel._logprobs[members])
                where.extend(base + m for m in members)
            base += len(rows)
        cache = KVCache.concat(caches)
        inv = np.empty(base, dtype=np.int64)
        inv[np.asarray(where, dtype=np.int64)] = np.arange(base)
        index = torch.as_tensor(inv, device=lm.device)
        merged = cls(lm, [(list(range(base)), cache.select(index))], np.concatenate(lps)[inv])
        merged.byte_columns = parts[0][0].byte_columns
        return merged

    def select(self, rows: Sequence[int]) -> GPTState:
        rows = [int(r) for r in rows]
        members = [m for m, _ in self._groups]
        groups = []
        for g, new_rows, inside in regroup(members, rows, len(self._logprobs)):
            index = torch.tensor(inside, dtype=torch.long, device=self._lm.device)
            groups.append((new_rows, self._groups[g][1].select(index)))
        state = GPTState(self._lm, groups, self._logprobs[rows].copy())
        state.byte_columns = self.byte_columns
        return state
