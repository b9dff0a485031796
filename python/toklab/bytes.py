"""Raw bytes as tokens: the identity tokenizer, and the baseline every other method is judged by.

Token ``b`` (0 to 255) is the byte ``b`` of the UTF-8 text; special tokens, if any, take the ids
after 255. Byte-level language models (ByteSpan's signal model, Equal-Info's compressor) read
this.

>>> tok = ByteTokenizer()
>>> tok.encode("hé").tolist()
[104, 195, 169]
>>> tok.decode([104, 195, 169])
'hé'
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from toklab.errors import (
    ConfigError,
    CorruptFileError,
    DisallowedSpecialTokenError,
    UnknownTokenError,
)
from toklab.tokenizer import IdsLike, as_ids, check_batch, decode_text, special_names

__all__ = ["ByteTokenizer"]

_FORMAT = "toklab.bytes"
_VERSION = 1


class ByteTokenizer:
    """UTF-8 bytes as token ids 0 to 255, then optional special tokens."""

    def __init__(self, special_tokens: Iterable[str] = ()) -> None:
        if isinstance(special_tokens, str):
            raise ConfigError("special_tokens must be a list of str, not a str")
        specials = list(special_tokens)
        if any(not isinstance(s, str) or not s for s in specials) or len(set(specials)) != len(
            specials
        ):
            raise ConfigError("special tokens must be distinct, non-empty strings")
        for s in specials:
            try:
                s.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigError(f"special token {s!r} has a lone surrogate") from None
        self._specials: dict[str, int] = {s: 256 + i for i, s in enumerate(specials)}
        self._special_bytes = [s.encode("utf-8") for s in specials]

    @property
    def vocab_size(self) -> int:
        return 256 + len(self._specials)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._specials)

    def __repr__(self) -> str:
        return f"ByteTokenizer(special_tokens={list(self._specials)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ByteTokenizer) and other._specials == self._specials

    def __hash__(self) -> int:
        return hash(tuple(self._specials))

    # -- encoding ---------------------------------------------------------------------------

    def encode(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | Collection[str] = (),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> np.ndarray:
        """The UTF-8 bytes of ``text`` as ``uint32`` ids (special tokens as tiktoken treats them:
        allowed ones become their id, disallowed ones raise, the rest are plain text)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        allowed = self._names(allowed_special, "allowed_special")
        if disallowed_special == "all":
            disallowed = set(self._specials) - allowed
        else:
            disallowed = self._names(disallowed_special, "disallowed_special")
        for s in disallowed:
            if s in text:
                raise DisallowedSpecialTokenError(
                    f"text contains the special token {s!r}; pass allowed_special={{{s!r}}} to "
                    "encode it as one token, or disallowed_special=() to encode it as text"
                )
        if not allowed or not any(s in text for s in allowed):
            return self.encode_bytes(text.encode("utf-8"))
        out: list[np.ndarray] = []
        at = 0
        while at < len(text):
            hits = [(text.find(s, at), -len(s), s) for s in allowed]
            hits = [h for h in hits if h[0] >= 0]
            if not hits:
                break
            start, neg_len, s = min(hits)
            out.append(self.encode_bytes(text[at:start].encode("utf-8")))
            out.append(np.array([self._specials[s]], dtype=np.uint32))
            at = start - neg_len
        out.append(self.encode_bytes(text[at:].encode("utf-8")))
        return np.concatenate(out)

    def encode_with_offsets(self, text: str, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, offsets)``: ``offsets[i] = (start, end)``, the bytes of token ``i``."""
        ids = self.encode(text, **kwargs)
        lengths = np.ones(len(ids), dtype=np.uint64)
        for special, i in self._specials.items():
            lengths[ids == i] = len(special.encode("utf-8"))
        ends = np.cumsum(lengths, dtype=np.uint64)
        return ids, np.stack([ends - lengths, ends], axis=1)

    def encode_ordinary(self, text: str) -> np.ndarray:
        """``encode`` with special token strings treated as plain text."""
        return self.encode(text, disallowed_special=())

    def _names(self, names: Literal["all"] | Collection[str], what: str) -> set[str]:
        return special_names(names, self._specials, what)

    def encode_bytes(self, data: bytes) -> np.ndarray:
        """Any bytes, valid UTF-8 or not, as ids."""
        # Any buffer of bytes (bytes, bytearray, a uint8 array); not an int (bytes(5) is five
        # zero bytes) nor a list of ints (bytes([300]) is a bare ValueError).
        try:
            view = memoryview(data)
        except TypeError:
            raise TypeError(f"data must be bytes, not {type(data).__name__}") from None
        if view.itemsize != 1:
            raise TypeError(f"data must be a buffer of bytes, not of {view.format!r} items")
        return np.frombuffer(view.tobytes(), dtype=np.uint8).astype(np.uint32)

    def encode_batch(self, texts: Iterable[str], **kwargs: Any) -> list[np.ndarray]:
        check_batch(texts)
        return [self.encode(t, **kwargs) for t in texts]

    # -- decoding ---------------------------------------------------------------------------

    def decode_bytes(self, ids: IdsLike) -> bytes:
        arr = as_ids(ids, self.vocab_size, core_checks=False)
        if not self._specials or not (arr >= 256).any():
            return arr.astype(np.uint8).tobytes()
        parts = []
        for i in arr.tolist():
            parts.append(bytes([i]) if i < 256 else self._special_bytes[i - 256])
        return b"".join(parts)

    def decode(self, ids: IdsLike, errors: str = "replace") -> str:
        return decode_text(self.decode_bytes(ids), errors)

    def token_bytes(self, token_id: int) -> bytes:
        if not isinstance(token_id, (int, np.integer)) or isinstance(token_id, bool):
            raise TypeError(f"token_id must be an int, not {type(token_id).__name__}")
        if not 0 <= token_id < self.vocab_size:
            raise UnknownTokenError(
                f"unknown token id {token_id}: the vocabulary has ids 0 to {self.vocab_size - 1}"
            )
        return bytes([token_id]) if token_id < 256 else self._special_bytes[token_id - 256]

    # -- saving -----------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(
            {"format": _FORMAT, "version": _VERSION, "special_tokens": list(self._specials)},
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> ByteTokenizer:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CorruptFileError(f"not a toklab byte tokenizer: {e}") from None
        if not isinstance(data, Mapping) or data.get("format") != _FORMAT:
            raise CorruptFileError("not a toklab byte tokenizer (format field)")
        if data.get("version") != _VERSION:
            raise CorruptFileError(
                f"byte tokenizer format version {data.get('version')!r}; this toklab reads "
                f"version {_VERSION}"
            )
        specials = data.get("special_tokens", [])
        if not isinstance(specials, list) or not all(isinstance(s, str) for s in specials):
            raise CorruptFileError("byte tokenizer: special_tokens must be a list of strings")
        try:
            return cls(specials)
        except ConfigError as e:
            raise CorruptFileError(f"byte tokenizer: {e}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    def __reduce__(self) -> tuple[Any, ...]:
        return (ByteTokenizer, (list(self._specials),))
