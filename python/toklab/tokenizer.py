"""The :class:`Tokenizer` protocol that every toklab method implements, and shared helpers.

Every segmentation method is a tokenizer: text in, ``uint32`` token ids out, and back, without
loss. Tokenizers are immutable (training returns a new object), picklable and thread-safe.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from toklab.errors import (
    ConfigError,
    CorruptFileError,
    InvalidIdsError,
    InvalidInputError,
    UnknownTokenError,
)

__all__ = ["IdsLike", "Tokenizer", "as_ids", "load", "loads"]

#: Anything that holds token ids: a 1-D integer numpy array, a list or tuple of ints, ...
IdsLike = npt.ArrayLike

_U32_MAX = np.iinfo(np.uint32).max


@runtime_checkable
class Tokenizer(Protocol):
    """What toklab's methods have in common."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> np.ndarray: ...

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]: ...

    def decode(self, ids: IdsLike) -> str: ...

    def decode_bytes(self, ids: IdsLike) -> bytes: ...

    def token_bytes(self, token_id: int) -> bytes: ...

    def save(self, path: str | os.PathLike[str]) -> None: ...


def check_batch(texts: object) -> None:
    """A ``TypeError`` for one text given where a batch of texts is expected (a ``str`` or
    ``bytes`` is itself a sequence, and would be taken as one text per character)."""
    if isinstance(texts, (str, bytes, bytearray, memoryview)):
        raise TypeError(
            f"encode_batch takes a list of texts, not one {type(texts).__name__}; "
            "use encode for a single text"
        )


def as_ids(ids: IdsLike, vocab_size: int, *, core_checks: bool = True) -> np.ndarray:
    """Validates token ids and returns them as a contiguous little-endian ``uint32`` array.

    Integers of any width are accepted if every value is a valid id; floats, booleans, strings
    and arrays that are not 1-D raise :class:`~toklab.errors.InvalidIdsError`, and an id outside
    ``0..vocab_size`` raises :class:`~toklab.errors.UnknownTokenError`. ``uint32`` arrays pass
    as they are when ``core_checks`` (the Rust core checks their range); callers that use the
    ids in Python pass ``core_checks=False``.
    """
    if isinstance(ids, (str, bytes)):
        raise InvalidIdsError(f"token ids must be integers, got {type(ids).__name__}")
    arr = np.asarray(ids)
    if arr.ndim != 1:
        if arr.ndim == 0 and arr.dtype.kind in "iu":
            arr = arr.reshape(1)
        else:
            raise InvalidIdsError(f"token ids must be a 1-D sequence, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint32)
    if arr.dtype.kind not in "iu":
        raise InvalidIdsError(
            f"token ids must be integers, got dtype {arr.dtype}; convert with "
            "np.asarray(ids, dtype=np.uint32) if the values are whole numbers"
        )
    if arr.dtype == np.uint32 and core_checks:
        # The common case (ids from encode): no copy, no pass; the core checks the range.
        return np.ascontiguousarray(arr)
    if arr.dtype.kind == "i" and arr.min() < 0:
        raise UnknownTokenError(f"unknown token id {int(arr.min())}: ids are never negative")
    top = int(arr.max())
    if top >= vocab_size or top > _U32_MAX:
        raise UnknownTokenError(
            f"unknown token id {top}: the vocabulary has ids 0 to {vocab_size - 1}"
        )
    return np.ascontiguousarray(arr, dtype=np.uint32)


def load(path: str | os.PathLike[str]) -> Any:
    """Loads any tokenizer saved by toklab, whatever its method."""
    try:
        return loads(Path(path).read_text(encoding="utf-8"))
    except CorruptFileError as e:
        raise CorruptFileError(f"{path}: {e}") from None
    except UnicodeDecodeError:
        raise CorruptFileError(f"{path}: not a toklab tokenizer file (not UTF-8 text)") from None


def loads(text: str) -> Any:
    """Reads a tokenizer from the JSON text that its ``to_json()`` gave."""
    from toklab.bpe import BPETokenizer
    from toklab.bytes import ByteTokenizer

    # The first "format" field is the file's own (a wrapper's base comes later).
    found = re.search(r'"format"\s*:\s*"([^"]+)"', text[:2000])
    kind = found.group(1) if found else None
    if kind == "toklab.bpe":
        return BPETokenizer.from_json(text)
    if kind == "toklab.bytes":
        return ByteTokenizer.from_json(text)
    if kind == "toklab.bytespan":
        from toklab.bytespan import ByteSpan

        return ByteSpan.from_json(text)
    if kind == "toklab.stochastok":
        from toklab.stochastok import StochasTok

        return StochasTok.from_json(text)
    if kind in ("toklab.equalinfo", "toklab.ac"):
        from toklab.equalinfo import ArithmeticCoding, EqualInfo

        return (EqualInfo if kind == "toklab.equalinfo" else ArithmeticCoding).from_json(text)
    raise CorruptFileError("not a toklab tokenizer file (no known format field)")


def ids_from_buffer(raw: bytearray) -> np.ndarray:
    """Wraps the ``u32`` bytes that the core returns, without copying."""
    return np.frombuffer(raw, dtype="<u4")


_HANDLERS = frozenset({"strict", "replace", "ignore", "surrogateescape", "backslashreplace"})


def decode_text(data: bytes, errors: str) -> str:
    """``data`` as UTF-8 text, ``errors`` as in ``bytes.decode``: an unknown handler is a
    ConfigError whatever the bytes (``bytes.decode`` only looks it up when it needs it)."""
    import codecs

    if errors in _HANDLERS:
        return data.decode("utf-8", errors=errors)
    try:
        codecs.lookup_error(errors)
    except (LookupError, TypeError):
        raise ConfigError(
            f"errors must be an error handler such as 'replace', 'strict' or "
            f"'surrogateescape', not {errors!r}"
        ) from None
    return data.decode("utf-8", errors=errors)


class Settings:
    """A mixin for objects whose settings were built into tables (a split table, a Rust
    vocabulary, a model wrapper): the attributes named in ``_SETTINGS`` are set once, in
    ``__init__``, and setting them again raises ``AttributeError``, where it would leave the
    object encoding with the old tables and saving the new settings."""

    _SETTINGS: frozenset[str] = frozenset()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._SETTINGS and name in self.__dict__:
            raise AttributeError(
                f"{type(self).__name__}.{name} cannot be changed (the object was built for "
                f"it); make a new {type(self).__name__} instead"
            )
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if name in self._SETTINGS:
            raise AttributeError(f"{type(self).__name__}.{name} cannot be deleted")
        object.__delattr__(self, name)


def as_bytes(x: object) -> bytes:
    """A text (as UTF-8) or bytes: a lone surrogate, which has no UTF-8 bytes, or anything else
    (an int would be taken by ``bytes()`` as that many zero bytes) is an InvalidInputError."""
    if isinstance(x, str):
        try:
            return x.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InvalidInputError(
                f"text has a lone surrogate {x[e.start]!r} at character {e.start}, which is not "
                "valid Unicode text; pass bytes for arbitrary bytes"
            ) from None
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    raise InvalidInputError(f"expected bytes or str, got {type(x).__name__}")


def prefix_list(prefixes: object) -> list[bytes]:
    """A batch of prefixes as bytes (see :func:`as_bytes`): one ``str`` or ``bytes`` passed for
    the batch would otherwise be taken as one prefix per character."""
    if isinstance(prefixes, (str, bytes, bytearray, memoryview)):
        raise InvalidInputError(
            f"expected a list of prefixes, got one {type(prefixes).__name__}; wrap it in a list"
        )
    if not isinstance(prefixes, Iterable):
        raise InvalidInputError(f"expected a list of prefixes, got {type(prefixes).__name__}")
    return [as_bytes(p) for p in prefixes]


def int_list(values: object, what: str) -> list[int]:
    """``values`` as Python ints: an :class:`~toklab.errors.InvalidIdsError` for anything that
    is not a sequence of integers (a float would otherwise be truncated)."""
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise InvalidIdsError(f"{what} must be a sequence of integers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InvalidIdsError(f"{what} must be integers, got {v!r}")
        out.append(int(v))
    return out


def special_names(
    names: Literal["all"] | Collection[str], specials: Collection[str], what: str
) -> set[str]:
    """The special tokens that ``allowed_special`` / ``disallowed_special`` name: ``"all"``, or
    a collection of this tokenizer's special tokens (a str or an unknown name is an error)."""
    if names == "all":
        return set(specials)
    if isinstance(names, str):
        raise ConfigError(f'{what} must be "all" or a collection of special tokens, not a str')
    found = set(names)
    unknown = found - set(specials)
    if unknown:
        raise ConfigError(
            f"{what} names {sorted(map(str, unknown))}, which are not special tokens of this "
            f"tokenizer (it has {sorted(specials)})"
        )
    return found
