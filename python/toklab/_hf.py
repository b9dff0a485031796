"""Helpers for HF tokenizers' ``tokenizer.json``: the byte-level alphabet and regex dialects.

HF's byte-level BPE stores each token as a string in which every byte is replaced by a printable
character (GPT-2's ``bytes_to_unicode``: printable Latin-1 bytes map to themselves, the others to
U+0100 onwards; the core reads and writes whole vocabularies with its own copy of this table, in
``rust/bpe/hf.rs``, which the tests compare with this one). HF's regex engine is Oniguruma in Ruby
syntax, where ``X{1,3}+`` is a repetition of ``X{1,3}``, not a possessive quantifier as in
tiktoken's (fancy-regex's) dialect, ``^`` and ``$`` match at every line (fancy-regex: at the
ends of the text, as ``\\A`` and ``\\z`` do in both), and POSIX classes such as ``[[:alpha:]]`` are
Unicode (fancy-regex: ASCII); patterns are rewritten between the two so that they cut text
identically, and what cannot be rewritten (the ``m`` and ``s`` flags, which the two dialects
spell differently) is a :class:`~toklab.errors.ConfigError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache

from toklab.errors import ConfigError

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
    """Rewrites a fancy-regex pattern for Oniguruma: ``X{n,m}+`` (possessive) ->
    ``(?>X{n,m})``, ``^`` -> ``\\A``, ``$`` -> ``\\z``, POSIX classes -> their ASCII ranges."""
    # (Line anchors, as pattern_from_onig spells Oniguruma's, go back as they came.)
    anchors = {"^": r"\A", "$": r"\z", "(?m:^)": "^", "(?m:$)": "$"}
    pattern = _rewrite(pattern, anchors, _posix_ascii)
    return _BOUNDED_PLUS.sub(r"(?>\1{\2})", pattern)


def pattern_from_onig(pattern: str) -> str:
    """The inverse of :func:`pattern_to_onig`, and Oniguruma's reading of ``X{n,m}+``
    (a repetition), ``^`` and ``$`` (at every line) spelled for fancy-regex."""
    anchors = {"^": "(?m:^)", "$": "(?m:$)", r"\A": "^", r"\z": "$"}
    pattern = _rewrite(pattern, anchors, _no_posix)
    pattern = _BOUNDED_PLUS.sub(r"(?:\1{\2})+", pattern)
    return _BOUNDED_ATOMIC.sub(r"\1{\2}+", pattern)


#: fancy-regex's POSIX classes (ASCII only), as ranges inside a character class.
_POSIX_ASCII = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": r"\x00-\x7F",
    "blank": r"\t ",
    "cntrl": r"\x00-\x1F\x7F",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": r"!-/:-@\[-`{-~",
    "space": r"\t\n\x0B\x0C\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}

_POSIX = re.compile(r"\[:(\^?)([a-z]*):\]")
_FLAGS = re.compile(r"\(\?([a-zA-Z-]*)[:)]")


def _posix_ascii(negated: str, name: str) -> str:
    if negated or name not in _POSIX_ASCII:
        raise ConfigError(
            f"the pattern's POSIX class [:{negated}{name}:] has no equivalent in HF's regex dialect"
        )
    return _POSIX_ASCII[name]


def _no_posix(negated: str, name: str) -> str:
    raise ConfigError(
        f"unsupported HF tokenizer: the pattern's POSIX class [:{negated}{name}:] (Unicode in "
        "Oniguruma, ASCII in tiktoken's dialect)"
    )


def _rewrite(pattern: str, anchors: dict[str, str], posix: Callable[[str, str], str]) -> str:
    """``pattern`` with the anchors and escapes of ``anchors`` replaced outside character
    classes, and each POSIX class inside one replaced by ``posix(negated, name)``; an ``m`` or
    ``s`` flag is a :class:`ConfigError`."""
    out: list[str] = []
    depth = 0  # nesting of character classes
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            escape = pattern[i : i + 2]
            if escape[1:] in ("p", "P", "x", "u") and pattern.startswith("{", i + 2):
                # \p{^L}, \x{2F}: the braces are part of the escape ('^' there is no anchor).
                end = pattern.find("}", i + 2)
                escape = pattern[i : len(pattern) if end < 0 else end + 1]
            out.append(anchors.get(escape, escape) if depth == 0 else escape)
            i += len(escape)
            continue
        if c == "[":
            found = _POSIX.match(pattern, i) if depth else None
            if found:
                out.append(posix(found[1], found[2]))
                i = found.end()
                continue
            depth += 1
            out.append(c)
            i += 1
            # A class's leading ^ negates it; a ] right after it (or after that ^) is literal.
            for lead in "^]":
                if pattern.startswith(lead, i):
                    out.append(lead)
                    i += 1
            continue
        if depth:
            depth -= c == "]"
            out.append(c)
            i += 1
            continue
        whole = next((k for k in anchors if len(k) > 2 and pattern.startswith(k, i)), None)
        if whole is not None:
            out.append(anchors[whole])
            i += len(whole)
            continue
        flags = _FLAGS.match(pattern, i)
        if flags:
            on, _, off = flags[1].partition("-")
            if set(on) & set("ms"):
                raise ConfigError(
                    f"the pattern's flags (?{flags[1]}) mean other things in HF's regex dialect "
                    "(Oniguruma's m is fancy-regex's s, and its ^ and $ always match at lines)"
                )
            # Turning m or s off changes nothing (neither can be on), and Oniguruma has no s:
            # those flags are left out.
            off = off.replace("m", "").replace("s", "")
            group = f"(?{on}{'-' + off if off else ''}{flags[0][-1]}"
            out.append("" if group == "(?)" else group)
            i = flags.end()
            continue
        out.append(anchors.get(c, c))
        i += 1
    return "".join(out)
