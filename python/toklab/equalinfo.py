"""Equal-Info windows (Lester et al. 2024): text arithmetic-coded by a small byte LM (M1), in
windows that each compress to exactly ``window_bits`` bits; the bits, cut every ``token_bits``,
are the tokens.

- :class:`EqualInfo` is a tokenizer (``encode``/``decode``, ``vocab_size`` = 2^token_bits).
  The coder and M1's context reset at every window, which is what makes the tokens learnable.
- :class:`ArithmeticCoding` is the paper's "AC" baseline (one stream per text, no windows; M1's
  context resets every ``context`` bytes); with a unigram M1 (:func:`static_ac`) it is
  "StaticAC".
- M1 is any :class:`~toklab.lm.protocols.ByteLM`: toklab's byte GPT (:func:`train_m1`), or an
  exact :class:`NGramByteLM` (tests, StaticAC).

**Exactness.** The coder (``rust/arith.rs``, ``rust/equalinfo.rs``) is integer arithmetic on CDFs
quantised from M1's logits by a deterministic routine. The decoder must see *bit-identical*
logits, so the GPT is always evaluated in fixed-shape batches (``batch_rows`` rows of
``max_window_bytes + 1`` positions, padded), whether encoding or decoding: on CPU this makes each
row's logits independent of the other rows, of its position in the batch and of the thread count
(tested over thousands of windows). Encoding and decoding on different hardware (CPU vs GPU, two
GPU models) is not guaranteed to agree (Lester §3.7).

**End of window and end of input.** Each window's bits name a cell of the ``W``-bit grid that
straddles two of the next symbol's sub-intervals, so the decoder knows where every window ends
without looking ahead, mid-text or at its end (Lester's decoder fails on 0.6% of sequences
there); see ``rust/equalinfo.rs``. With ``header=True`` (the default) the tokens start with the
text's byte length and CRC-32 (64 bits), so that truncated or corrupted streams fail with
:class:`~toklab.errors.CorruptTokensError` instead of decoding to something else.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import numbers
import os
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toklab import _core
from toklab.errors import (
    ConfigError,
    CorruptFileError,
    CorruptTokensError,
    InvalidIdsError,
    InvalidInputError,
)
from toklab.tokenizer import (
    IdsLike,
    Settings,
    as_bytes,
    as_ids,
    check_batch,
    decode_text,
    int_list,
    prefix_list,
)

__all__ = [
    "ArithmeticCoding",
    "EqualInfo",
    "NGramByteLM",
    "static_ac",
    "train_m1",
]

_HEADER_BITS = 64
FORMAT = "toklab.equalinfo"
AC_FORMAT = "toklab.ac"
#: The most rows of M1 one batch evaluates (``batch_rows``), and the longest context of plain
#: arithmetic coding over an M1 that is not a GPT with a context of its own.
_MAX_BATCH_ROWS = 1 << 16
_MAX_CONTEXT = 1 << 16
#: The largest n-gram smoothing: a row sums 256 of them, which must not overflow.
_MAX_ALPHA = 1e300


# -- exact n-gram byte models -----------------------------------------------------------------


class NGramByteLM:
    """An exact byte n-gram model with add-``alpha`` smoothing, backing off to shorter contexts
    never seen in training. ``order=1`` is a static unigram model; ``alpha`` is a finite
    positive number (at most 1e300).

    Implements :class:`~toklab.lm.protocols.ByteLM` (256 columns, no end of text); its
    log-probabilities are computed in float64 from integer counts, so they are exactly
    reproducible.
    """

    def __init__(self, order: int = 3, alpha: float = 0.5) -> None:
        if not isinstance(order, int) or isinstance(order, bool) or order < 1:
            raise ConfigError(f"order must be a positive integer, got {order!r}")
        # (An alpha so large that a row's sum overflows would give NaN log-probabilities.)
        if (
            not isinstance(alpha, numbers.Real)
            or isinstance(alpha, bool)
            or not 0 < float(alpha) <= _MAX_ALPHA
        ):
            raise ConfigError(
                f"alpha must be a finite positive number (at most {_MAX_ALPHA:g}), got {alpha!r}"
            )
        self.order = order
        self.alpha = float(alpha)
        self.counts: dict[bytes, np.ndarray] = {}

    @classmethod
    def train(cls, texts: Iterable[str | bytes], order: int = 3, alpha: float = 0.5) -> NGramByteLM:
        check_batch(texts)
        lm = cls(order, alpha)
        for t in texts:
            data = as_bytes(t)  # (an int would be taken as that many zero bytes)
            for i, b in enumerate(data):
                for k in range(min(order - 1, i) + 1):
                    ctx = data[i - k : i]
                    row = lm.counts.get(ctx)
                    if row is None:
                        row = lm.counts[ctx] = np.zeros(256, dtype=np.int64)
                    row[b] += 1
        return lm

    @property
    def has_end(self) -> bool:
        return False

    def _row(self, prefix: bytes) -> np.ndarray:
        for k in range(min(self.order - 1, len(prefix)), -1, -1):
            row = self.counts.get(prefix[len(prefix) - k :])
            if row is not None:
                c = row.astype(np.float64) + self.alpha
                return np.log(c) - math.log(float(c.sum()))
        return np.full(256, -math.log(256.0))

    def next_byte_logprobs(self, prefixes: Sequence[bytes]) -> np.ndarray:
        rows = [self._row(p) for p in prefix_list(prefixes)]
        return np.stack(rows) if rows else np.zeros((0, 256))

    def start_bytes(self, prefixes: Sequence[bytes]) -> _NGramState:
        return _NGramState(self, prefix_list(prefixes))

    def to_dict(self) -> dict[str, Any]:
        return {
            "order": self.order,
            "alpha": self.alpha,
            "counts": {
                base64.b64encode(k).decode(): {str(i): int(v) for i, v in enumerate(row) if v}
                for k, row in self.counts.items()
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NGramByteLM:
        """The inverse of :meth:`to_dict`; anything that :meth:`to_dict` cannot have written
        (a byte outside 0..255, a negative or fractional count, a context that is not base64
        or longer than ``order - 1`` bytes) raises :class:`~toklab.errors.CorruptFileError`."""
        if not isinstance(d, dict):
            raise CorruptFileError(f"n-gram M1: expected an object, got {type(d).__name__}")
        for key in ("order", "alpha", "counts"):
            if key not in d:
                raise CorruptFileError(f"n-gram M1: no {key!r} field")
        try:
            lm = cls(d["order"], d["alpha"])
        except ConfigError as e:
            raise CorruptFileError(f"n-gram M1: {e}") from None
        counts = d["counts"]
        if not isinstance(counts, dict):
            raise CorruptFileError(
                f"n-gram M1: counts must be an object, got {type(counts).__name__}"
            )
        for k, row in counts.items():
            try:
                ctx = base64.b64decode(k, validate=True)
            except (binascii.Error, ValueError):
                raise CorruptFileError(f"n-gram M1: context {k!r} is not base64") from None
            if len(ctx) > lm.order - 1:
                raise CorruptFileError(
                    f"n-gram M1: context {ctx!r} is longer than order - 1 = {lm.order - 1} bytes"
                )
            if ctx in lm.counts:
                raise CorruptFileError(f"n-gram M1: context {ctx!r} appears twice")
            if not isinstance(row, dict):
                raise CorruptFileError(
                    f"n-gram M1: the counts after {ctx!r} must be an object, got "
                    f"{type(row).__name__}"
                )
            arr = np.zeros(256, dtype=np.int64)
            for i, v in row.items():
                # Bytes are written as "0".."255", exactly (not "-1", "+7", "07" or " 7").
                b = int(i) if isinstance(i, str) and i.isascii() and i.isdigit() else -1
                if not 0 <= b <= 255 or str(b) != i:
                    raise CorruptFileError(
                        f"n-gram M1: byte {i!r} after {ctx!r} is not one of 0..255"
                    )
                if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 63:
                    raise CorruptFileError(
                        f"n-gram M1: the count of byte {b} after {ctx!r} must be a non-negative "
                        f"integer below 2^63, got {v!r}"
                    )
                arr[b] = v
            lm.counts[ctx] = arr
        return lm


class _NGramState:
    def __init__(self, lm: NGramByteLM, prefixes: list[bytes]) -> None:
        self.lm, self.prefixes = lm, prefixes

    @property
    def logprobs(self) -> np.ndarray:
        return self.lm.next_byte_logprobs(self.prefixes)

    def append(self, symbols: Sequence[int]) -> None:
        got = int_list(symbols, "append: bytes")
        if len(got) != len(self.prefixes):
            raise ConfigError(f"append: {len(got)} bytes for {len(self.prefixes)} rows")
        if any(not 0 <= s < 256 for s in got):
            raise InvalidIdsError(f"append: bytes are 0..255, got {got}")
        self.prefixes = [p + bytes([s]) for p, s in zip(self.prefixes, got, strict=True)]

    def select(self, rows: Sequence[int]) -> _NGramState:
        got = int_list(rows, "select: rows")
        if any(not 0 <= r < len(self.prefixes) for r in got):
            raise ConfigError(f"select: rows outside 0..{len(self.prefixes)}")
        return _NGramState(self.lm, [self.prefixes[i] for i in got])


# -- M1: logits of fixed-shape windows ---------------------------------------------------------


class _M1:
    """Evaluates M1 on rows of bytes (the window's bytes, zero-padded to ``positions - 1``):
    ``[n, positions, 256]`` float32 logits where ``[r, t]`` is byte ``t``'s distribution given
    ``rows[r, :t]``. A toklab byte GPT runs in fixed-shape batches; any other ByteLM is asked
    for each prefix."""

    def __init__(self, lm: Any, positions: int, batch_rows: int) -> None:
        self.lm = lm
        self.positions = positions
        self.batch_rows = batch_rows
        self.gpt = _is_byte_gpt(lm)
        self.rows_evaluated = 0
        if self.gpt:
            if lm.context < positions:
                raise ConfigError(
                    f"M1's context ({lm.context}) is shorter than a window's "
                    f"{positions - 1} bytes + 1; lower max_window_bytes or use a longer context"
                )
        elif not callable(getattr(lm, "next_byte_logprobs", None)):
            raise ConfigError(
                f"M1 must be a ByteLM (next_byte_logprobs over 256 bytes), got {type(lm).__name__}"
            )

    def flops_per_row(self) -> float:
        if not self.gpt:
            return 0.0
        return self.lm.cfg.forward_flops_per_token(self.positions) * self.positions

    def all_positions(self, rows: np.ndarray) -> np.ndarray:
        n = rows.shape[0]
        if self.gpt:
            return self._gpt(rows)
        out = np.empty((n, self.positions, 256), dtype=np.float32)
        prefixes = [bytes(rows[r, :t]) for r in range(n) for t in range(self.positions)]
        lp = _byte_columns(self.lm.next_byte_logprobs(prefixes), len(prefixes))
        out[:] = lp.reshape(n, self.positions, 256)
        self.rows_evaluated += n
        return out

    def at(self, rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """``[n, 256]``: the distribution after ``rows[r, :lengths[r]]``."""
        n = rows.shape[0]
        if self.gpt:
            full = self._gpt(rows)
            return np.ascontiguousarray(full[np.arange(n), lengths])
        prefixes = [bytes(rows[r, : lengths[r]]) for r in range(n)]
        self.rows_evaluated += n
        return _byte_columns(self.lm.next_byte_logprobs(prefixes), n)

    def _gpt(self, rows: np.ndarray) -> np.ndarray:
        import torch

        lm = self.lm
        n, p, b = rows.shape[0], self.positions, self.batch_rows
        out = np.empty((n, p, 256), dtype=np.float32)
        x = np.zeros((b, p), dtype=np.int64)
        with torch.no_grad():
            for i in range(0, n, b):
                m = min(b, n - i)
                x[:] = 0
                x[:, 0] = lm.cfg.bos_id
                x[:m, 1:] = rows[i : i + m, : p - 1]
                logits = lm.model(torch.from_numpy(x).to(lm.device))
                if isinstance(logits, tuple):
                    logits = logits[0]
                out[i : i + m] = logits[:m, :, :256].float().cpu().numpy()
        self.rows_evaluated += n
        return out


def _is_byte_gpt(lm: Any) -> bool:
    try:
        from toklab.bytes import ByteTokenizer
        from toklab.lm.language_model import LanguageModel
    except ImportError:  # no torch: no GPT
        return False
    return isinstance(lm, LanguageModel) and isinstance(lm.tokenizer, ByteTokenizer)


def _byte_columns(lp: np.ndarray, rows: int) -> np.ndarray:
    """M1's output for ``rows`` prefixes as ``[rows, 256]`` float32 (a ConfigError for any
    other shape, or for values that are not numbers)."""
    try:
        lp = np.asarray(lp, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError("M1's output must be numbers (log-probabilities)") from None
    if lp.ndim != 2 or lp.shape[1] not in (256, 257) or lp.shape[0] != rows:
        raise ConfigError(
            f"M1 must predict 256 bytes (or 257 with an end of text) for each of the {rows} "
            f"prefixes it is given; its output has shape {lp.shape}"
        )
    return np.ascontiguousarray(lp[:, :256], dtype=np.float32)


# -- bits and tokens ---------------------------------------------------------------------------


def _to_tokens(values: Sequence[int], bits: int, token_bits: int) -> list[int]:
    per = bits // token_bits
    mask = (1 << token_bits) - 1
    out = []
    for v in values:
        for j in range(per - 1, -1, -1):
            out.append((v >> (j * token_bits)) & mask)
    return out


def _from_tokens(ids: np.ndarray, bits: int, token_bits: int) -> list[int]:
    per = bits // token_bits
    out = []
    vals = ids.tolist()
    for i in range(0, len(vals), per):
        v = 0
        for t in vals[i : i + per]:
            v = (v << token_bits) | t
        out.append(v)
    return out


def _header(data: bytes) -> int:
    if len(data) >= 1 << 32:
        raise InvalidInputError(f"text of {len(data)} bytes: at most 4 GiB per text")
    return (len(data) << 32) | zlib.crc32(data)


def _is_plain_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_header(header: int, data: bytes) -> None:
    n, crc = header >> 32, header & 0xFFFFFFFF
    if n != len(data):
        raise CorruptTokensError(
            f"the header says {n} bytes but the tokens decode to {len(data)}: truncated or "
            "corrupted token stream"
        )
    if zlib.crc32(data) != crc:
        raise CorruptTokensError("CRC-32 mismatch: the token stream is corrupted")


def _check_int(name: str, v: object, lo: int, hi: int | None = None) -> int:
    """``v`` as an int in ``lo..hi`` (no upper bound when ``hi`` is None), else a
    :class:`~toklab.errors.ConfigError` (a float or a string is refused, not truncated or
    parsed)."""
    if (
        isinstance(v, bool)
        or not isinstance(v, (int, np.integer))
        or v < lo
        or (hi is not None and v > hi)
    ):
        within = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise ConfigError(f"{name} must be an integer {within}, got {v!r}")
    return int(v)


def _check_precision(cdf_bits: object, state_bits: object) -> None:
    """The coder's precision settings are integers the Rust coder can take (it checks the
    rest)."""
    for name, v in (("cdf_bits", cdf_bits), ("state_bits", state_bits)):
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 64:
            raise ConfigError(f"{name} must be an integer in 1..64, got {v!r}")


# -- what the codes have in common ------------------------------------------------------------


class _Code(Settings):
    """The parts of a tokenizer whose tokens are ``token_bits``-bit pieces of an arithmetic
    code: the vocabulary, the protocol's one-text methods over the batch ones, and files. Its
    settings and model are fixed once it is made (the coder and the saved file must agree)."""

    _SETTINGS = frozenset(
        {"m1", "_m1", "token_bits", "cdf_bits", "state_bits", "batch_rows"}
        | {"max_window_bytes", "rule", "window_bits", "segment_bytes", "header", "context"}
    )

    _FORMAT = ""
    _WHAT = ""
    token_bits: int
    m1: Any
    stats: dict[str, float]

    #: No unknown or byte-fallback tokens (for :func:`toklab.metrics.vocabulary_stats`).
    unk_ids: tuple[int, ...] = ()
    byte_fallback_ids: tuple[int, ...] = ()

    @property
    def vocab_size(self) -> int:
        return 1 << self.token_bits

    @property
    def special_tokens(self) -> dict[str, int]:
        return {}

    def token_bytes(self, token_id: int) -> bytes:
        raise ConfigError(f"{self._WHAT} tokens are bits of a code, not byte strings")

    def m1_flops_per_byte(self) -> float:
        """M1 forward FLOPs per byte of text in the last ``encode_batch`` (0 for n-gram M1s)."""
        return float(self.stats.get("m1_flops_per_byte", 0.0))

    def encode_batch(self, texts: Sequence[str | bytes]) -> list[np.ndarray]:
        raise NotImplementedError

    def decode_bytes_batch(self, batch: Sequence[IdsLike]) -> list[bytes]:
        raise NotImplementedError

    def encode(self, text: str | bytes) -> np.ndarray:
        return self.encode_batch([text])[0]

    def decode_bytes(self, ids: IdsLike) -> bytes:
        return self.decode_bytes_batch([ids])[0]

    def decode(self, ids: IdsLike, errors: str = "replace") -> str:
        return decode_text(self.decode_bytes(ids), errors)

    def decode_batch(self, batch: Sequence[IdsLike], errors: str = "replace") -> list[str]:
        return [decode_text(b, errors) for b in self.decode_bytes_batch(batch)]

    def _config(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": self._FORMAT,
                "version": 1,
                "config": self._config(),
                "m1": _m1_to_dict(self.m1),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Any:
        """Reads what :meth:`to_json` wrote; anything else raises
        :class:`~toklab.errors.CorruptFileError` saying what is wrong."""
        d = _read_json(text, cls._FORMAT)
        try:
            for key in ("m1", "config"):
                if key not in d:
                    raise CorruptFileError(f"no {key!r} field")
            config = d["config"]
            if not isinstance(config, dict):
                raise CorruptFileError(f"config must be an object, got {type(config).__name__}")
            return cls(_m1_from_dict(d["m1"]), **config)  # type: ignore[call-arg]
        except CorruptFileError as e:
            raise CorruptFileError(f"{cls._WHAT} file: {e}") from None
        except (KeyError, TypeError, AttributeError, OverflowError, ValueError) as e:
            # (ValueError: ConfigError for settings out of range, among others.)
            raise CorruptFileError(f"{cls._WHAT} file: missing or bad field ({e})") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        _write_atomic(Path(path), self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Any:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


# -- Equal-Info windows ------------------------------------------------------------------------


class EqualInfo(_Code):
    """Equal-Info windows over M1: every ``window_bits`` bits of arithmetic code hold as many
    bytes as fit, and become ``window_bits / token_bits`` tokens.

    Parameters: ``m1`` a ByteLM; ``window_bits`` (Lester's b: 16, 32, 64, 128; any of 8..128
    that ``token_bits`` divides); ``token_bits`` (8: 256 tokens, 16: 65,536); ``max_window_bytes``
    (most bytes per window, default ``2 * window_bits``; M1's context must hold one more);
    ``segment_bytes`` (texts are coded in independent segments of this many bytes, so that long
    texts batch; a window never crosses one); ``cdf_bits`` / ``state_bits`` (the coder's
    precision: Lester's 14-bit CDFs by default); ``header`` (length and CRC-32 first);
    ``batch_rows`` (the fixed batch shape of the GPT: an integer in 1..65536); ``rule``:
    ``"straddle"`` (toklab's: every window decodes exactly, without look-ahead), or Lester et
    al.'s greedy windows coded as the shortest enclosed bitstring, decoded with one byte of
    look-ahead (``"lester"``: ambiguous when the next byte re-encodes to the same bits) or with
    the "delay" variant (``"lester-delay"``: never ends a window on a byte that adds no bits,
    decoded at the first matching prefix, which is still wrong when an earlier prefix's shorter
    code pads to the same bits). Both need the length header for the end of the text; where a
    window decodes wrongly, the header's CRC fails (:class:`~toklab.errors.CorruptTokensError`),
    never silently.
    """

    _FORMAT = FORMAT
    _WHAT = "Equal-Info"

    def __init__(
        self,
        m1: Any,
        window_bits: int = 16,
        token_bits: int = 8,
        *,
        max_window_bytes: int | None = None,
        segment_bytes: int = 1024,
        cdf_bits: int = 14,
        state_bits: int = 32,
        header: bool = True,
        batch_rows: int = 32,
        rule: str = "straddle",
    ) -> None:
        self.max_window_bytes = self.check_config(
            window_bits,
            token_bits,
            max_window_bytes=max_window_bytes,
            segment_bytes=segment_bytes,
            cdf_bits=cdf_bits,
            state_bits=state_bits,
            header=header,
            rule=rule,
        )
        self.rule = rule
        self.m1 = m1
        self.window_bits = window_bits
        self.token_bits = token_bits
        self.segment_bytes = int(segment_bytes)
        self.cdf_bits = int(cdf_bits)
        self.state_bits = int(state_bits)
        self.header = bool(header)
        self.batch_rows = _check_int("batch_rows", batch_rows, 1, _MAX_BATCH_ROWS)
        self._m1 = _M1(m1, self.max_window_bytes + 1, self.batch_rows)
        self._cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        self.stats: dict[str, float] = {}

    def __repr__(self) -> str:
        return (
            f"EqualInfo(window_bits={self.window_bits}, token_bits={self.token_bits}, "
            f"max_window_bytes={self.max_window_bytes}, m1={self.m1!r})"
        )

    @staticmethod
    def check_config(
        window_bits: int,
        token_bits: int,
        *,
        max_window_bytes: int | None = None,
        segment_bytes: int = 1024,
        cdf_bits: int = 14,
        state_bits: int = 32,
        header: bool = True,
        rule: str = "straddle",
    ) -> int:
        """Checks the settings of an :class:`EqualInfo` (a :class:`~toklab.errors.ConfigError`
        for bad ones) before its byte model is trained; returns the longest window in bytes."""
        if rule not in ("straddle", "lester", "lester-delay"):
            raise ConfigError(f"rule must be 'straddle', 'lester' or 'lester-delay', got {rule!r}")
        if rule != "straddle" and not header:
            raise ConfigError(
                f"rule={rule!r} needs header=True: Lester's windows do not mark where the text "
                "ends, so the decoder needs the length"
            )
        for name, v in (("window_bits", window_bits), ("token_bits", token_bits)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise ConfigError(f"{name} must be an integer, got {v!r}")
        if not 1 <= token_bits <= 16:
            raise ConfigError(
                f"token_bits must be in 1..16 (vocabulary <= 65,536), got {token_bits}"
            )
        if not 8 <= window_bits <= 128:
            raise ConfigError(f"window_bits must be in 8..128, got {window_bits}")
        if window_bits % token_bits:
            raise ConfigError(
                f"window_bits ({window_bits}) must be a multiple of token_bits ({token_bits}): "
                "each window becomes a whole number of tokens"
            )
        if _HEADER_BITS % token_bits:
            raise ConfigError(f"token_bits ({token_bits}) must divide the 64-bit header")
        # (Each window is one row of M1's batch, as long as the longest window.)
        longest = (
            2 * window_bits
            if max_window_bytes is None
            else _check_int("max_window_bytes", max_window_bytes, 1, 1 << 16)
        )
        _check_int("segment_bytes", segment_bytes, 1)
        flag = isinstance(header, (bool, np.bool_))
        if not (flag or (_is_plain_int(header) and header in (0, 1))):
            raise ConfigError(f"header must be True or False, got {header!r}")
        _check_precision(cdf_bits, state_bits)
        # The coder's precision.
        _core.WindowDecoders([], window_bits, state_bits, cdf_bits, longest)
        return longest

    # -- encoding --------------------------------------------------------------------------------

    def encode_batch(self, texts: Sequence[str | bytes]) -> list[np.ndarray]:
        check_batch(texts)
        datas = [as_bytes(t) for t in texts]
        cache = self._cache
        if cache and all(d in cache for d in datas):
            return [cache[d][0].copy() for d in datas]
        windows = self.windows_batch(datas)
        return [self._tokens(d, w)[0] for d, w in zip(datas, windows, strict=True)]

    def prepare(self, texts: Iterable[str | bytes]) -> None:
        """Encodes ``texts`` in one batch and remembers their tokens, so that later ``encode``
        and ``spans`` calls on them one at a time (as metrics make them, word by word) cost no
        M1 evaluation. ``prepare([])`` forgets everything."""
        datas = list(dict.fromkeys(as_bytes(t) for t in texts))
        if not datas:
            self._cache = {}
            return
        todo = [d for d in datas if d not in self._cache]
        for d, w in zip(todo, self.windows_batch(todo), strict=True):
            self._cache[d] = self._tokens(d, w)

    def spans(self, text: str | bytes) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, ends)`` for :func:`toklab.metrics.token_spans`: a window's bytes end at its
        last token (its other tokens, and the header, cover no bytes)."""
        data = as_bytes(text)
        hit = self._cache.get(data)
        if hit is not None:
            return hit[0].copy(), hit[1].copy()
        return self._tokens(data, self.windows_batch([data])[0])

    def _tokens(
        self, data: bytes, wins: list[tuple[int, int, bool]]
    ) -> tuple[np.ndarray, np.ndarray]:
        per = self.window_bits // self.token_bits
        values: list[int] = []
        ends: list[int] = []
        at = 0
        if self.header:
            ends += [0] * (_HEADER_BITS // self.token_bits)
        for value, n, escape in wins:
            if escape:
                values.append((1 << self.window_bits) - 1)
                values.append(value << (self.window_bits - 8))
                ends += [at] * (2 * per - 1)
            else:
                values.append(value)
                ends += [at] * (per - 1)
            at += n
            ends.append(at)
        toks = _to_tokens(values, self.window_bits, self.token_bits)
        if self.header:
            toks = _to_tokens([_header(data)], _HEADER_BITS, self.token_bits) + toks
        return np.asarray(toks, dtype=np.uint32), np.asarray(ends, dtype=np.int64)

    def windows_batch(self, datas: Sequence[bytes]) -> list[list[tuple[int, int, bool]]]:
        """Per text, its windows as ``(value, bytes, escape)`` (escape: value is a raw byte)."""
        buf = b"".join(datas)
        starts, ends, owner = [], [], []
        at = 0
        for k, d in enumerate(datas):
            for s in range(0, len(d), self.segment_bytes):
                starts.append(at + s)
                ends.append(at + min(len(d), s + self.segment_bytes))
                owner.append(k)
            at += len(d)
        seg_windows: list[list[tuple[int, int, bool]]] = [[] for _ in starts]
        pos = np.asarray(starts, dtype=np.int64)
        end = np.asarray(ends, dtype=np.int64)
        arr = np.frombuffer(buf, dtype=np.uint8) if buf else np.zeros(0, dtype=np.uint8)
        width = self.max_window_bytes
        self._m1.rows_evaluated = 0
        chunk = max(self.batch_rows, 1024 // max(1, width // 64))
        active = np.flatnonzero(pos < end)
        while active.size:
            for c in range(0, active.size, chunk):
                idx = active[c : c + chunk]
                p, e = pos[idx], end[idx]
                cols = p[:, None] + np.arange(width)[None, :]
                valid = cols < e[:, None]
                rows = np.where(valid, arr[np.minimum(cols, max(len(arr) - 1, 0))], 0).astype(
                    np.uint8
                )
                logits = self._m1.all_positions(rows)
                res = _core.equalinfo_cut(
                    logits,
                    width + 1,
                    buf,
                    p.tolist(),
                    (e - p).tolist(),
                    self.window_bits,
                    self.state_bits,
                    self.cdf_bits,
                    self.max_window_bytes,
                    self.rule,
                )
                for k, (value, used, escape) in zip(idx.tolist(), res, strict=True):
                    seg_windows[k].append((value, used, escape))
                    pos[k] += used
            active = np.flatnonzero(pos < end)
        out: list[list[tuple[int, int, bool]]] = [[] for _ in datas]
        for k, wins in zip(owner, seg_windows, strict=True):
            out[k].extend(wins)
        total = len(buf)
        if total:
            self.stats = {
                "bytes": float(total),
                "windows": float(sum(len(w) for w in out)),
                "m1_rows": float(self._m1.rows_evaluated),
                "m1_flops_per_byte": self._m1.rows_evaluated * self._m1.flops_per_row() / total,
            }
        return out

    # -- decoding --------------------------------------------------------------------------------

    def decode_bytes_batch(self, batch: Sequence[IdsLike]) -> list[bytes]:
        w, k = self.window_bits, self.token_bits
        per = w // k
        escape = (1 << w) - 1
        plans: list[tuple[int | None, list[tuple[bool, int]]]] = []
        coded: list[int] = []
        for ids in batch:
            arr = as_ids(ids, self.vocab_size, core_checks=False)
            header = None
            if self.header:
                hp = _HEADER_BITS // k
                if arr.size < hp:
                    raise CorruptTokensError(
                        f"{arr.size} tokens: shorter than the {hp}-token header (truncated)"
                    )
                header = _from_tokens(arr[:hp], _HEADER_BITS, k)[0]
                arr = arr[hp:]
            if arr.size % per:
                raise CorruptTokensError(
                    f"{arr.size} tokens is not a whole number of {per}-token windows (truncated)"
                )
            values = _from_tokens(arr, w, k)
            items: list[tuple[bool, int]] = []
            i = 0
            while i < len(values):
                v = values[i]
                if v == escape:
                    if i + 1 >= len(values):
                        raise CorruptTokensError("an escape window at the end of the stream")
                    raw = values[i + 1]
                    if raw & ((1 << (w - 8)) - 1):
                        raise CorruptTokensError(
                            "the window after an escape holds more than a byte"
                        )
                    items.append((True, raw >> (w - 8)))
                    i += 2
                else:
                    items.append((False, len(coded)))
                    coded.append(v)
                    i += 1
            plans.append((header, items))
        if self.rule != "straddle":
            return self._decode_lester(plans, coded)
        outputs = self._decode_windows(coded)
        result = []
        for header, items in plans:
            data = b"".join(bytes([v]) if raw else outputs[v] for raw, v in items)
            if header is not None:
                _check_header(header, data)
            result.append(data)
        return result

    def _decode_lester(
        self, plans: list[tuple[int | None, list[tuple[bool, int]]]], coded: list[int]
    ) -> list[bytes]:
        """Lester's decoders need each window's cap (the bytes left in its segment), so the
        windows of one text are decoded in order; texts go in parallel."""
        width, seg = self.max_window_bytes, self.segment_bytes
        outs = [bytearray() for _ in plans]
        totals = [(h or 0) >> 32 for h, _ in plans]
        cursor = [0] * len(plans)
        while True:
            batch: list[tuple[int, int, int]] = []  # (text, value, cap)
            for k, (_, items) in enumerate(plans):
                while cursor[k] < len(items) and items[cursor[k]][0]:
                    outs[k].append(items[cursor[k]][1])
                    cursor[k] += 1
                if cursor[k] < len(items):
                    at = len(outs[k])
                    end = min(totals[k], (at // seg + 1) * seg)
                    if end <= at:
                        raise CorruptTokensError("more windows than the header's length allows")
                    batch.append((k, coded[items[cursor[k]][1]], end - at))
            if not batch:
                break
            dec = _core.LesterDecoders(
                [v for _, v, _ in batch],
                [c for _, _, c in batch],
                self.rule == "lester-delay",
                self.window_bits,
                self.state_bits,
                self.cdf_bits,
                width,
            )
            rows = np.zeros((len(batch), width), dtype=np.uint8)
            lengths = np.zeros(len(batch), dtype=np.int64)
            active = np.asarray(dec.active(), dtype=np.int64)
            while active.size:
                got = dec.step(self._m1.at(rows[active], lengths[active]))
                for i, b in zip(active.tolist(), got, strict=True):
                    if lengths[i] < width:
                        rows[i, lengths[i]] = b
                    lengths[i] += 1
                active = np.asarray(dec.active(), dtype=np.int64)
            for (k, _, _), n, r in zip(batch, dec.lengths(), rows, strict=True):
                if n == 0:
                    raise CorruptTokensError("a window that decodes to no bytes")
                outs[k] += bytes(r[:n])
                cursor[k] += 1
        result = []
        for (header, _), out in zip(plans, outs, strict=True):
            data = bytes(out)
            if header is not None:
                _check_header(header, data)
            result.append(data)
        return result

    def _decode_windows(self, values: list[int]) -> list[bytes]:
        if not values:
            return []
        dec = _core.WindowDecoders(
            values, self.window_bits, self.state_bits, self.cdf_bits, self.max_window_bytes
        )
        width = self.max_window_bytes
        rows = np.zeros((len(values), width), dtype=np.uint8)
        lengths = np.zeros(len(values), dtype=np.int64)
        active = np.asarray(dec.active(), dtype=np.int64)
        while active.size:
            lp = self._m1.at(rows[active], lengths[active])
            got = dec.step(lp)
            for i, b in zip(active.tolist(), got, strict=True):
                if b >= 0:
                    if lengths[i] < width:
                        rows[i, lengths[i]] = b
                    lengths[i] += 1
            active = np.asarray(dec.active(), dtype=np.int64)
        return [bytes(rows[i, : lengths[i]]) for i in range(len(values))]

    def _config(self) -> dict[str, Any]:
        return {
            "window_bits": self.window_bits,
            "token_bits": self.token_bits,
            "max_window_bytes": self.max_window_bytes,
            "segment_bytes": self.segment_bytes,
            "cdf_bits": self.cdf_bits,
            "state_bits": self.state_bits,
            "header": self.header,
            "batch_rows": self.batch_rows,
            "rule": self.rule,
        }


# -- plain arithmetic coding (the paper's AC and StaticAC baselines) ----------------------------


class ArithmeticCoding(_Code):
    """One arithmetic-code stream per text (no windows), cut into ``token_bits`` tokens, with a
    64-bit header (length, CRC-32) so that decoding knows where the text ends. M1's context
    resets every ``context`` bytes (default: M1's context minus one, or 256 for n-gram models),
    so encoding evaluates all blocks at once; decoding is one M1 step per byte.

    ``context`` is an integer of at least 1: for a toklab byte GPT at most its own context
    minus one (it evaluates fixed rows of ``context + 1`` positions), for any other M1 at most
    65,536 (decoding keeps a row of ``context`` bytes per text, and every position of a block
    is a prefix given to M1); anything else is a :class:`~toklab.errors.ConfigError`.
    ``batch_rows`` (the GPT's fixed batch shape) is an integer in 1..65536."""

    _FORMAT = AC_FORMAT
    _WHAT = "arithmetic-coding"

    def __init__(
        self,
        m1: Any,
        token_bits: int = 8,
        *,
        context: int | None = None,
        cdf_bits: int = 14,
        state_bits: int = 32,
        batch_rows: int = 64,
    ) -> None:
        if (
            not isinstance(token_bits, int)
            or isinstance(token_bits, bool)
            or not 1 <= token_bits <= 16
            or 64 % token_bits
        ):
            raise ConfigError(f"token_bits must divide 64 and be at most 16, got {token_bits!r}")
        gpt = _is_byte_gpt(m1)
        if context is None:
            context = (m1.context - 1) if gpt else 256
        # A GPT's own context bounds it (_M1 checks); any other M1 gets rows of this length.
        top = max(1, m1.context - 1) if gpt else _MAX_CONTEXT
        self.context = _check_int("context", context, 1, top)
        self.m1 = m1
        self.token_bits = token_bits
        self.cdf_bits = int(cdf_bits)
        self.state_bits = int(state_bits)
        self.batch_rows = _check_int("batch_rows", batch_rows, 1, _MAX_BATCH_ROWS)
        _check_precision(cdf_bits, state_bits)
        _core.AcDecoders([], state_bits, cdf_bits)  # checks the precision
        self._m1 = _M1(m1, self.context + 1, self.batch_rows)
        self.stats: dict[str, float] = {}

    def __repr__(self) -> str:
        return (
            f"ArithmeticCoding(token_bits={self.token_bits}, context={self.context}, "
            f"m1={self.m1!r})"
        )

    def _logits(self, data: bytes) -> np.ndarray:
        c = self.context
        n_blocks = -(-len(data) // c)
        if not self._m1.gpt:
            # Only the text's own prefixes (a GPT needs whole fixed-shape rows), each from the
            # start of its block, in pieces of at most about 2^24 prefix bytes.
            step = max(1, (1 << 24) // c)
            parts = []
            for a in range(0, len(data), step):
                prefixes = [data[t - t % c : t] for t in range(a, min(len(data), a + step))]
                parts.append(_byte_columns(self.m1.next_byte_logprobs(prefixes), len(prefixes)))
            self._m1.rows_evaluated += n_blocks
            return np.ascontiguousarray(np.concatenate(parts))
        arr = np.zeros(n_blocks * c, dtype=np.uint8)
        arr[: len(data)] = np.frombuffer(data, dtype=np.uint8)
        rows = arr.reshape(n_blocks, c)
        full = self._m1.all_positions(rows)[:, :c]
        return np.ascontiguousarray(full.reshape(-1, 256)[: len(data)])

    def encode_batch(self, texts: Sequence[str | bytes]) -> list[np.ndarray]:
        check_batch(texts)
        out = []
        self._m1.rows_evaluated = 0
        total = 0
        for t in texts:
            data = as_bytes(t)
            total += len(data)
            toks = _to_tokens([_header(data)], _HEADER_BITS, self.token_bits)
            if data:
                stream, nbits = _core.ac_encode(
                    self._logits(data), data, self.state_bits, self.cdf_bits
                )
                k = self.token_bits
                n_tok = -(-nbits // k)
                value = int.from_bytes(stream, "big") >> (len(stream) * 8 - nbits)
                value <<= n_tok * k - nbits
                toks += _to_tokens([value], n_tok * k, k)
            out.append(np.asarray(toks, dtype=np.uint32))
        if total:
            self.stats = {
                "bytes": float(total),
                "m1_flops_per_byte": self._m1.rows_evaluated * self._m1.flops_per_row() / total,
            }
        return out

    def decode_bytes_batch(self, batch: Sequence[IdsLike]) -> list[bytes]:
        k = self.token_bits
        hp = _HEADER_BITS // k
        headers, streams = [], []
        for ids in batch:
            arr = as_ids(ids, self.vocab_size, core_checks=False)
            if arr.size < hp:
                raise CorruptTokensError(f"{arr.size} tokens: shorter than the header (truncated)")
            headers.append(_from_tokens(arr[:hp], _HEADER_BITS, k)[0])
            body = arr[hp:]
            nbits = body.size * k
            value = _from_tokens(body, nbits, k)[0] if body.size else 0
            streams.append(value.to_bytes(-(-nbits // 8), "big") if nbits else b"")
            if nbits % 8:
                streams[-1] = (value << (8 - nbits % 8)).to_bytes(-(-nbits // 8), "big")
        lengths = [h >> 32 for h in headers]
        # Every byte costs at least -log2(1 - 255 / 2^cdf_bits) bits (each other byte keeps a
        # count of 1): a header claiming more bytes than the stream can hold is corrupt.
        min_bits = -math.log2(1 - 255 / (1 << self.cdf_bits))
        for n, s in zip(lengths, streams, strict=True):
            if n > (len(s) * 8 + 2) / min_bits + 1:
                raise CorruptTokensError(
                    f"the header claims {n} bytes, more than {len(s) * 8} bits can hold"
                )
        dec = _core.AcDecoders(streams, self.state_bits, self.cdf_bits)
        c = self.context
        n = len(streams)
        outs = [bytearray() for _ in range(n)]
        rows = np.zeros((n, c), dtype=np.uint8)
        steps = max(lengths, default=0)
        for t in range(steps):
            j = t % c
            if j == 0:
                rows[:] = 0
            lp = self._m1.at(rows, np.full(n, j, dtype=np.int64))
            got = dec.step(lp)
            for i in range(n):
                if t < lengths[i]:
                    outs[i].append(got[i])
                    rows[i, j] = got[i]
        result = []
        for h, o in zip(headers, outs, strict=True):
            data = bytes(o)
            _check_header(h, data)
            result.append(data)
        return result

    def _config(self) -> dict[str, Any]:
        return {
            "token_bits": self.token_bits,
            "context": self.context,
            "cdf_bits": self.cdf_bits,
            "state_bits": self.state_bits,
            "batch_rows": self.batch_rows,
        }


def static_ac(texts: Iterable[str | bytes], token_bits: int = 8) -> ArithmeticCoding:
    """Lester's StaticAC: arithmetic coding under a static unigram byte model of ``texts``."""
    return ArithmeticCoding(NGramByteLM.train(texts, order=1), token_bits, context=256)


# -- M1 training and files ---------------------------------------------------------------------


def train_m1(
    texts: Sequence[str],
    *,
    preset: str = "small",
    budget_bytes: float = 2e6,
    context: int | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
    **options: Any,
) -> Any:
    """Trains toklab's byte GPT as M1 (Lester's M1 is a 3-layer, 256-wide byte transformer).
    Returns a :class:`~toklab.lm.LanguageModel` over :class:`~toklab.ByteTokenizer`."""
    from toklab.bytes import ByteTokenizer
    from toklab.lm import train_lm

    result = train_lm(
        ByteTokenizer(),
        list(texts),
        preset=preset,
        context=context,
        budget_bytes=int(budget_bytes),
        seed=seed,
        device=device,
        progress=progress,
        **options,
    )
    return result.lm


def _m1_to_dict(m1: Any) -> dict[str, Any]:
    if isinstance(m1, NGramByteLM):
        return {"kind": "ngram", **m1.to_dict()}
    if _is_byte_gpt(m1):
        import torch

        buf = io.BytesIO()
        torch.save({"config": m1.cfg.__dict__, "state": m1.model.state_dict()}, buf)
        return {
            "kind": "gpt",
            "checkpoint": base64.b64encode(buf.getvalue()).decode(),
            # (Its special tokens, if any: the model predicts 256 + their number of ids.)
            "tokenizer": json.loads(m1.tokenizer.to_json()),
        }
    raise ConfigError(f"cannot save an M1 of type {type(m1).__name__}")


def _m1_from_dict(d: dict[str, Any]) -> Any:
    if not isinstance(d, dict):
        raise CorruptFileError(f"the M1 model must be an object, not {type(d).__name__}")
    kind = d.get("kind")
    if kind == "ngram":
        return NGramByteLM.from_dict(d)
    if kind == "gpt":
        import torch

        from toklab.bytes import ByteTokenizer
        from toklab.lm.language_model import LanguageModel
        from toklab.lm.model import GPT, GPTConfig

        try:
            raw = base64.b64decode(d["checkpoint"], validate=True)
            ckpt = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
            model = GPT(GPTConfig(**ckpt["config"]))
            model.load_state_dict(ckpt["state"])
        except Exception as e:
            raise CorruptFileError(f"unreadable M1 checkpoint ({e})") from None
        tokenizer = ByteTokenizer()
        if d.get("tokenizer") is not None:  # (files before it was stored: a plain one)
            try:
                tokenizer = ByteTokenizer.from_json(json.dumps(d["tokenizer"]))
            except (ValueError, TypeError) as e:
                raise CorruptFileError(f"the M1's tokenizer: {e}") from None
        return LanguageModel(model, tokenizer, device="cpu")
    raise CorruptFileError(f"unknown M1 kind {kind!r}")


def _read_json(text: str, fmt: str) -> dict[str, Any]:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise CorruptFileError(f"not valid JSON ({e})") from None
    if not isinstance(d, dict) or d.get("format") != fmt:
        raise CorruptFileError(f"not a {fmt} file")
    if d.get("version") != 1:
        raise CorruptFileError(f"{fmt} version {d.get('version')!r} is not supported (this is 1)")
    return d


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
