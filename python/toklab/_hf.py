"""Helpers for HF tokenizers' ``tokenizer.json``: the byte-level alphabet and regex dialects.

HF's byte-level BPE stores each token as a string in which every byte is replaced by a printable
character (GPT-2's ``bytes_to_unicode``: printable Latin-1 bytes map to themselves, the others to
U+0100 onwards; the core reads and writes whole vocabularies with its own copy of this table, in
``rust/bpe/hf.rs``, which the tests compare with this one). HF's regex engine is Oniguruma in Ruby
syntax, where ``X{1,3}+`` is a repetition of ``X{1,3}``, not a possessive quantifier as in
tiktoken's (fancy-regex's) dialect; patterns are rewritten between the two so that they cut text
identically.
"""

from __future__ import annotations

import re
from functools import cache

# A quantifiable atom: \p{..}, an escape, a character class, a group (one level), or one character.
_ATOM = r"(\\[pP]\{[^}]*\}|\\.|\[(?:\\.|[^\]\\])*\]|\((?:\\.|[^()\\])*\)|[^\\()\[\]{}|])"
_BOUNDED_PLUS = re.compile(_ATOM + r"\{(\d+(?:,\d*)?)\}\+")
_BOUNDED_ATOMIC = re.compile(r"\(\?>" + _ATOM + r"\{(\d+(?:,\d*)?)\}\)")


@cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    mapping = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@cache
def unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def token_to_hf(token: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def pattern_to_onig(pattern: str) -> str:
    """Rewrites a fancy-regex pattern for Oniguruma: ``X{n,m}+`` (possessive) -> ``(?>X{n,m})``."""
    return _BOUNDED_PLUS.sub(r"(?>\1{\2})", pattern)


def pattern_from_onig(pattern: str) -> str:
    """The inverse of :func:`pattern_to_onig`, and Oniguruma's reading of ``X{n,m}+``
    (a repetition) spelled for fancy-regex."""
    pattern = _BOUNDED_PLUS.sub(r"(?:\1{\2})+", pattern)
    return _BOUNDED_ATOMIC.sub(r"\1{\2}+", pattern)
