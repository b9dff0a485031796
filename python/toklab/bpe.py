"""Byte-level BPE: training, encoding and decoding, exact with HF tokenizers and tiktoken.

BPE (Sennrich et al., 2016; byte-level as in GPT-2, Radford et al., 2019) starts from the 256
bytes and repeatedly merges the most frequent adjacent pair of tokens within pre-tokenized pieces.
Encoding applies the learned merges by rank. The work happens in the Rust core (``rust/bpe/``):
this module holds the typed API, defaults, special-token policy and interop.

Invariants:

- ``decode_bytes(encode(text)) == text.encode()`` for every text and pattern;
- ids equal those of HF ``tokenizers`` (through :meth:`BPETokenizer.save_hf`) and tiktoken
  (through :meth:`BPETokenizer.to_tiktoken`) for the same merges and pattern;
- training is deterministic: ties break by count, then by the smaller pair of token bytes, and
  counting is a sum, so thread count, chunking and input order never change the merges.

>>> tok = train_bpe(["low lower lowest"] * 10, vocab_size=262)
>>> tok.decode(tok.encode("lowest"))
'lowest'
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import sys
import warnings
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from toklab import _core, _hf, data
from toklab.errors import (
    ConfigError,
    CorruptFileError,
    InvalidIdsError,
    InvalidInputError,
    TokLabWarning,
    UnknownTokenError,
)
from toklab.tokenizer import as_ids, check_batch, decode_text, ids_from_buffer, special_names

if TYPE_CHECKING:
    import tiktoken

__all__ = ["PATTERNS", "BPETokenizer", "count_words", "train_bpe", "train_bpe_from_counts"]

#: The named pre-tokenization patterns (tiktoken's); any other string is used as a regex.
PATTERNS: Mapping[str, str] = {
    "gpt2": _core.GPT2_PATTERN,
    "cl100k": _core.CL100K_PATTERN,
    "o200k": _core.O200K_PATTERN,
}

try:
    _VERSION = importlib.metadata.version("toklab")
except importlib.metadata.PackageNotFoundError:  # a source tree on the path: the core's
    _VERSION = _core.VERSION


def _threads(num_threads: int | None) -> int:
    if num_threads is None:
        return 0
    if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 0:
        raise ConfigError(
            f"num_threads must be an int >= 0 (0 or None: all cores), not {num_threads!r}"
        )
    # (The core uses at most four threads per core whatever is asked; results never depend on
    # the count.)
    return min(num_threads, 1 << 16)


class BPETokenizer:
    """An immutable byte-level BPE tokenizer.

    Make one with :func:`train_bpe`, :meth:`load`, :meth:`from_hf` or :meth:`from_tiktoken`.
    It is safe to share between threads, pickles, and survives ``fork``.

    Special tokens follow tiktoken: by default their text raises
    :class:`~toklab.errors.DisallowedSpecialTokenError` in :meth:`encode`; allow them with
    ``allowed_special={"<|endoftext|>"}`` (or ``"all"``), or encode them as plain text with
    ``disallowed_special=()`` or :meth:`encode_ordinary`.
    """

    __slots__ = ("_core", "_metadata", "_special")

    def __init__(self, core: _core.Bpe, metadata: Mapping[str, Any] | None = None) -> None:
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ConfigError(f"metadata must be a mapping, not {type(metadata).__name__}")
        self._core = core
        self._metadata = dict(metadata or {})
        self._special = dict(core.specials())

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BPETokenizer:
        """Loads a tokenizer saved with :meth:`save`."""
        data = Path(path).read_bytes()
        try:
            core, metadata = _core.Bpe.from_json_bytes(data)
        except CorruptFileError as e:
            raise CorruptFileError(f"{path}: {e}") from None
        return cls(core, _stored_metadata(metadata, f"{path}: "))

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        core, metadata = _core.Bpe.from_json(text)
        return cls(core, _stored_metadata(metadata))

    @classmethod
    def from_parts(
        cls,
        tokens: Sequence[bytes],
        merges: Sequence[tuple[int, int]],
        special_tokens: Mapping[str, int] | None = None,
        pattern: str = "cl100k",
        *,
        ignore_merges: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> BPETokenizer:
        """Builds a tokenizer from ``tokens[id]`` bytes, ``(left, right)`` merges in rank order,
        and special tokens ``{content: id}`` (whose ids also index ``tokens``)."""
        specials = list((special_tokens or {}).items())
        try:
            core = _core.Bpe.from_parts(
                list(tokens), list(merges), specials, _core.resolve_pattern(pattern), ignore_merges
            )
        except OverflowError as e:
            raise InvalidIdsError(
                f"ids in merges and special tokens are 0..2**32-1 ({e})"
            ) from None
        return cls(core, metadata)

    @classmethod
    def from_tiktoken(
        cls,
        source: tiktoken.Encoding | Mapping[bytes, int] | str | os.PathLike[str],
        pattern: str | None = None,
        special_tokens: Mapping[str, int] | None = None,
    ) -> BPETokenizer:
        """Imports tiktoken ranks: a ``tiktoken.Encoding``, a ``{bytes: rank}`` dict, or a
        ``.tiktoken`` file (``base64 rank`` per line). Ranks become ids; merges are derived as HF's
        converter derives them. Ids that neither ranks nor special tokens use are filled with
        reserved special tokens ``<|reserved_ID|>`` so that ids keep their meaning."""
        pairs: list[tuple[bytes, int]] | None = None
        if hasattr(source, "_mergeable_ranks"):
            pairs = list(source._mergeable_ranks.items())
            pattern = pattern or source._pat_str
            special_tokens = {**source._special_tokens, **(special_tokens or {})}
        elif isinstance(source, Mapping):
            pairs = list(source.items())
        else:
            path = Path(source)
            data = path.read_bytes()
        if pattern is None:
            raise ConfigError("pass pattern=... (a name or regex) with tiktoken ranks")
        specials = sorted(dict(special_tokens or {}).items(), key=lambda kv: kv[1])
        regex = _core.resolve_pattern(pattern)
        if pairs is not None:
            try:
                core, reserved = _core.Bpe.from_tiktoken_ranks(pairs, specials, regex)
            except OverflowError as e:
                raise InvalidIdsError(f"ranks and special ids are 0..2**32-1 ({e})") from None
        else:  # the file parsed in Rust (base64 per line in Python took 300-400 ms for o200k)
            try:
                core, reserved = _core.Bpe.from_tiktoken_file(data, specials, regex)
            except CorruptFileError as e:
                raise CorruptFileError(f"{path}: {e}") from None
        return cls(core, {"imported_from": "tiktoken", "reserved_ids": reserved})

    @classmethod
    def from_hf(cls, source: Any) -> BPETokenizer:
        """Imports a HF byte-level BPE: a ``tokenizer.json`` path, its parsed dict or text, a
        ``tokenizers.Tokenizer``, or a ``transformers`` fast tokenizer.

        Supported: ``BPE`` models over the byte-level alphabet, pre-tokenized by ``ByteLevel``
        (GPT-2's regex) or ``Split(Regex) + ByteLevel(use_regex=False)``, no normalizer. HF
        always matches added tokens in text; pass ``allowed_special="all"`` to encode as it does.
        Post-processing (BOS/EOS templates) is not part of the tokenizer and is ignored.
        """
        return _from_hf(cls, source)

    # -- properties -------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """The number of ids, special tokens included."""
        return self._core.vocab_size

    @property
    def n_merges(self) -> int:
        return len(self._core.merges())

    @property
    def pattern(self) -> str:
        """The pre-tokenization regex."""
        return self._core.pattern

    @property
    def pattern_name(self) -> str | None:
        """``"gpt2"``, ``"cl100k"`` or ``"o200k"`` if the pattern is a named one."""
        return next((k for k, v in PATTERNS.items() if v == self.pattern), None)

    @property
    def special_tokens(self) -> dict[str, int]:
        """``{content: id}`` of the special tokens."""
        return dict(self._special)

    @property
    def special_tokens_set(self) -> set[str]:
        return set(self._special)

    @property
    def metadata(self) -> dict[str, Any]:
        """Free-form facts saved with the tokenizer (how it was trained, where it came from)."""
        return json.loads(json.dumps(self._metadata))

    @property
    def merges(self) -> list[tuple[int, int, int]]:
        """``(left, right, merged)`` ids in rank order."""
        return self._core.merges()

    def vocab(self) -> list[bytes]:
        """The bytes of every id, in id order."""
        return self._core.tokens()

    # -- encoding ---------------------------------------------------------------------------

    def _special_ids(
        self,
        allowed_special: Literal["all"] | Collection[str],
        disallowed_special: Literal["all"] | Collection[str],
    ) -> tuple[list[int], list[int]]:
        if not self._special:
            return [], []
        allowed = self._names(allowed_special, "allowed_special")
        if disallowed_special == "all":
            disallowed = set(self._special) - allowed
        else:
            disallowed = self._names(disallowed_special, "disallowed_special")
        return [self._special[s] for s in allowed], [self._special[s] for s in disallowed]

    def _names(self, names: Literal["all"] | Collection[str], what: str) -> set[str]:
        return special_names(names, self._special, what)

    def encode(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | Collection[str] = (),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> np.ndarray:
        """Encodes text to ``uint32`` ids.

        >>> tok = train_bpe(["hello world"] * 5, vocab_size=266, special_tokens=["<|eot|>"])
        >>> tok.decode(tok.encode("hello<|eot|>", allowed_special="all"))
        'hello<|eot|>'
        """
        _check_text(text)
        allowed, disallowed = self._special_ids(allowed_special, disallowed_special)
        if not allowed and not disallowed:
            return ids_from_buffer(self._core.encode_ordinary(text))
        return ids_from_buffer(self._core.encode(text, allowed, disallowed))

    def encode_ordinary(self, text: str, *, num_threads: int = 1) -> np.ndarray:
        """Encodes text with special token strings treated as plain text. Long texts are split
        at safe places and encoded on ``num_threads`` threads (None: all cores); the ids are the
        same whatever the thread count."""
        _check_text(text)
        return ids_from_buffer(self._core.encode_ordinary(text, _threads(num_threads)))

    def encode_bytes(self, data: bytes | bytearray | memoryview) -> np.ndarray:
        """Encodes arbitrary bytes, invalid UTF-8 included: each valid run exactly as
        :meth:`encode_ordinary` encodes it, each invalid sequence as a piece of its own, so that
        ``decode_bytes(encode_bytes(data)) == data``."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        return ids_from_buffer(self._core.encode_bytes(bytes(data)))

    def encode_batch(
        self,
        texts: Iterable[str],
        *,
        num_threads: int | None = None,
        allowed_special: Literal["all"] | Collection[str] = (),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[np.ndarray]:
        """Encodes many texts on ``num_threads`` threads (None: all cores)."""
        check_batch(texts)
        texts = texts if isinstance(texts, list) else list(texts)  # items checked in Rust
        allowed, disallowed = self._special_ids(allowed_special, disallowed_special)
        return self._core.encode_batch(texts, allowed, disallowed, _threads(num_threads))

    def encode_with_offsets(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | Collection[str] = (),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encodes text and returns ``(ids, offsets)``: ``offsets[i] = (start, end)``, the byte
        range of token ``i`` in ``text.encode()``.

        >>> tok = train_bpe(["héllo"] * 5, vocab_size=260)
        >>> ids, offsets = tok.encode_with_offsets("héllo")
        >>> [("héllo".encode()[s:e]) == tok.token_bytes(i) for i, (s, e) in zip(ids, offsets)]
        [True, True]
        """
        _check_text(text)
        allowed, disallowed = self._special_ids(allowed_special, disallowed_special)
        ids, offsets = self._core.encode_with_offsets(text, allowed, disallowed)
        return ids_from_buffer(ids), np.frombuffer(offsets, dtype="<u8").reshape(-1, 2)

    def pieces(self, text: str) -> list[str]:
        """The pre-tokenized pieces of text (merges never cross their boundaries)."""
        _check_text(text)
        return self._core.pieces(text)

    # -- decoding ---------------------------------------------------------------------------

    def decode_bytes(self, ids: Any) -> bytes:
        """The bytes of a sequence of ids (special tokens give their text)."""
        return self._core.decode_bytes(as_ids(ids, self.vocab_size))

    def decode(self, ids: Any, errors: str = "replace") -> str:
        """Decodes ids to text. Tokens can end mid-character, so ``errors`` (as in
        ``bytes.decode``) says what to do with bytes that are not valid UTF-8."""
        return decode_text(self.decode_bytes(ids), errors)

    def decode_tokens_bytes(self, ids: Any) -> list[bytes]:
        """The bytes of each id."""
        return [self._core.token_bytes(int(i)) for i in as_ids(ids, self.vocab_size)]

    def token_bytes(self, token_id: int) -> bytes:
        if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)):
            raise InvalidIdsError(f"a token id is an integer, not {type(token_id).__name__}")
        if not 0 <= token_id < self.vocab_size:
            raise UnknownTokenError(
                f"unknown token id {token_id}: the vocabulary has ids 0 to {self.vocab_size - 1}"
            )
        return self._core.token_bytes(int(token_id))

    def token_to_id(self, token: str | bytes) -> int | None:
        """The id of a token given by its text or bytes (special tokens too), or None."""
        if isinstance(token, str):
            if token in self._special:
                return self._special[token]
            token = token.encode()
        return self._core.token_id(token)

    # -- saving and interop -----------------------------------------------------------------

    def to_json(self) -> str:
        """toklab's own format: versioned, human-readable JSON (see ``rust/bpe/io.rs``)."""
        return self._core.to_json(json.dumps(self._metadata))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Saves in toklab's own format; :meth:`load` reads it back."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    def to_hf(self) -> dict[str, Any]:
        """The content of a HF ``tokenizer.json`` that encodes to the same ids."""
        return _to_hf(self)

    def save_hf(self, path: str | os.PathLike[str]) -> None:
        """Writes a ``tokenizer.json`` that ``tokenizers.Tokenizer.from_file`` and
        ``transformers.PreTrainedTokenizerFast(tokenizer_file=...)`` load."""
        spec = _to_hf(self, tables=False)
        model = spec.pop("model")
        head, body = json.dumps(spec, ensure_ascii=False), json.dumps(model, ensure_ascii=False)
        # Both are objects with members: each is closed after the vocabulary and merges, which
        # Rust writes (json.dumps of 200k of each took most of a second).
        tables = self._core.hf_tables_json()
        text = f'{head[:-1]}, "model": {body[:-1]}, {tables}}}}}'
        Path(path).write_text(text, encoding="utf-8")

    def to_tiktoken_ranks(self) -> dict[bytes, int]:
        """``{token bytes: rank}`` for tiktoken: ranks are ids, special tokens left out.

        tiktoken merges any adjacent pair whose bytes form a token, by that token's rank; that
        equals BPE by merge rank when each merge makes a token of higher rank than its parts
        (always true for tokenizers toklab trains)."""
        special_ids = set(self._special.values())
        return {t: i for i, t in enumerate(self.vocab()) if i not in special_ids}

    def save_tiktoken(self, path: str | os.PathLike[str]) -> None:
        """Writes the ranks as a ``.tiktoken`` file (``base64 rank`` per line)."""
        lines = [
            f"{base64.b64encode(t).decode()} {r}\n"
            for t, r in sorted(self.to_tiktoken_ranks().items(), key=lambda kv: kv[1])
        ]
        Path(path).write_text("".join(lines), encoding="ascii")

    def to_tiktoken(self, name: str = "toklab") -> tiktoken.Encoding:
        """A ``tiktoken.Encoding`` with these ranks, pattern and special tokens."""
        import tiktoken

        return tiktoken.Encoding(
            name=name,
            pat_str=self.pattern,
            mergeable_ranks=self.to_tiktoken_ranks(),
            special_tokens=self.special_tokens,
        )

    # -- python protocol --------------------------------------------------------------------

    def __reduce__(self) -> tuple[Any, ...]:
        return (BPETokenizer.from_json, (self.to_json(),))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BPETokenizer):
            return NotImplemented
        return (
            self.pattern == other.pattern
            and self._special == other._special
            and self.merges == other.merges
            and self.vocab() == other.vocab()
            and self._core.ignore_merges == other._core.ignore_merges
        )

    __hash__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        name = self.pattern_name or "custom"
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={self.n_merges}, "
            f"pattern={name!r}, special_tokens={len(self._special)})"
        )


def _check_text(text: Any) -> None:
    if not isinstance(text, str):
        hint = "; decode bytes first, e.g. data.decode('utf-8')" if isinstance(text, bytes) else ""
        raise TypeError(f"text must be str, not {type(text).__name__}{hint}")


# -- training --------------------------------------------------------------------------------


def count_words(
    corpus: Any = None,
    *,
    pattern: str = "cl100k",
    special_tokens: Sequence[str] = (),
    text_column: str = "text",
    num_threads: int | None = None,
    errors: Literal["strict", "replace"] = "strict",
    progress: bool | None = None,
) -> _core.WordCounts:
    """Counts the pre-tokenized pieces of a corpus (see :func:`train_bpe` for ``corpus``).

    The result is a mergeable partial count: ``count_words(a) + count_words(b)`` equals counting
    both, so shards can be counted separately and combined before :func:`train_bpe_from_counts`.
    """
    pattern = _core.resolve_pattern(pattern)
    if isinstance(special_tokens, str):
        raise ConfigError("special_tokens must be a list of str, not a str")
    if errors not in ("strict", "replace"):
        raise ConfigError(f"errors must be 'strict' or 'replace', not {errors!r}")
    specials = list(special_tokens)
    threads = _threads(num_threads)
    if progress is None:
        progress = sys.stderr.isatty()
    if isinstance(corpus, (str, os.PathLike)) or (
        isinstance(corpus, (list, tuple))
        and corpus
        and all(isinstance(c, os.PathLike) for c in corpus)
    ):
        paths = [str(p) for p in data.expand_files(corpus)]
        return _core.count_files(paths, pattern, specials, threads, errors, progress)
    if corpus is None:
        texts: Iterable[Any] = data.default_corpus()
    elif data.is_dataset(corpus):
        texts = data.iter_dataset_texts(corpus, text_column)
    elif isinstance(corpus, bytes):
        raise InvalidInputError("corpus is bytes; pass a list of str, or paths to files")
    else:
        texts = corpus
    try:
        return _core.count_iter(texts, pattern, specials, threads, progress=progress)
    except TypeError as e:
        raise InvalidInputError(str(e)) from None


def _stored_metadata(text: str, where: str = "") -> dict[str, Any]:
    """A saved file's ``metadata``: a JSON object (anything else: the file is corrupt)."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise CorruptFileError(f"{where}metadata must be a JSON object, not {type(value).__name__}")
    return value


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_vocab_size(vocab_size: object) -> None:
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise ConfigError(f"vocab_size must be an int, not {type(vocab_size).__name__}")
    if not 0 <= vocab_size < 2**32:
        raise ConfigError(f"vocab_size {vocab_size} is out of range: ids are 32-bit")


def train_bpe(
    corpus: Any = None,
    *,
    vocab_size: int = 32_768,
    pattern: str = "cl100k",
    special_tokens: Sequence[str] = (),
    min_frequency: int = 1,
    max_token_length: int | None = None,
    text_column: str = "text",
    num_threads: int | None = None,
    errors: Literal["strict", "replace"] = "strict",
    progress: bool | None = None,
) -> BPETokenizer:
    """Trains a byte-level BPE tokenizer.

    Args:
        corpus: what to train on. ``None``: the embedded default corpus. A ``str`` or path:
            a file, directory or glob (``"data/**/*.txt"``); a list of ``pathlib.Path`` too.
            Files are read by the Rust core, in blocks, on all threads. Any other iterable
            of ``str`` (a list, a generator): streamed in batches, counted with the GIL
            released, never held whole. A ``datasets.Dataset`` or ``IterableDataset``: its
            ``text_column``.
        vocab_size: ids in all, special tokens included (at least 256 + their number).
        pattern: ``"cl100k"`` (GPT-4, the default), ``"gpt2"``, ``"o200k"``, or any regex.
        special_tokens: given the last ids, in this order; never counted in training.
        min_frequency: stop when the best pair occurs fewer times than this.
        max_token_length: never make a token longer than this many bytes.
        num_threads: threads for counting (None: all cores). Results never depend on it.
        errors: invalid UTF-8 in files: ``"strict"`` raises, ``"replace"`` substitutes U+FFFD.
        progress: progress bars on stderr (default: when stderr is a terminal).

    A corpus too small to fill ``vocab_size`` gives a smaller vocabulary and a
    :class:`~toklab.errors.TokLabWarning`.
    """
    _check_vocab_size(vocab_size)  # before counting, which may take long
    if isinstance(special_tokens, str):
        raise ConfigError("special_tokens must be a list of str, not a str")
    floor = 256 + len(special_tokens)
    if vocab_size < floor:
        raise ConfigError(
            f"vocab_size {vocab_size} is too small: byte-level BPE needs 256 byte tokens plus "
            f"{len(special_tokens)} special token(s), so at least {floor}"
        )
    counts = count_words(
        corpus,
        pattern=pattern,
        special_tokens=special_tokens,
        text_column=text_column,
        num_threads=num_threads,
        errors=errors,
        progress=progress,
    )
    return train_bpe_from_counts(
        counts,
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        min_frequency=min_frequency,
        max_token_length=max_token_length,
        progress=progress,
        _consume=True,  # the counts are ours alone: let the trainer free them as it goes
    )


def train_bpe_from_counts(
    counts: _core.WordCounts,
    *,
    vocab_size: int = 32_768,
    special_tokens: Sequence[str] = (),
    min_frequency: int = 1,
    max_token_length: int | None = None,
    progress: bool | None = None,
    _consume: bool = False,
) -> BPETokenizer:
    """Trains on counts from :func:`count_words` (possibly summed over shards)."""
    if isinstance(special_tokens, str):
        raise ConfigError("special_tokens must be a list of str, not a str")
    if not _is_int(min_frequency) or not 1 <= min_frequency < 2**64:
        raise ConfigError(
            f"min_frequency must be an int from 1 to 2**64 - 1, not {min_frequency!r}"
        )
    if max_token_length is not None and (
        not _is_int(max_token_length) or not 1 <= max_token_length < 2**32
    ):
        raise ConfigError(
            "max_token_length must be an int from 1 to 2**32 - 1, or None, not "
            f"{max_token_length!r}"
        )
    if progress is None:
        progress = sys.stderr.isatty()
    _check_vocab_size(vocab_size)
    bytes_seen, distinct = counts.bytes_seen, len(counts)
    core = counts.train_bpe(
        vocab_size, list(special_tokens), min_frequency, max_token_length, progress, _consume
    )
    metadata = {
        "toklab_version": _VERSION,
        "trainer": {
            "method": "bpe",
            "vocab_size": vocab_size,
            "min_frequency": min_frequency,
            "max_token_length": max_token_length,
            "bytes_seen": bytes_seen,
            "distinct_pieces": distinct,
        },
    }
    tok = BPETokenizer(core, metadata)
    if tok.vocab_size < vocab_size:
        why = (
            f"no pair left occurs {min_frequency} times (min_frequency)"
            if min_frequency > 1
            else "the corpus ran out of pairs to merge"
        )
        warnings.warn(
            f"{why}: the vocabulary has {tok.vocab_size} ids, not the {vocab_size} asked for",
            TokLabWarning,
            stacklevel=3,
        )
    return tok


# -- HF tokenizer.json ------------------------------------------------------------------------


def _to_hf(tok: BPETokenizer, tables: bool = True) -> dict[str, Any]:
    """``tokenizer.json``'s content; without ``model.vocab`` and ``model.merges`` unless
    ``tables``."""
    if any(tok._core.token_id(content.encode()) is not None for content in tok._special):
        raise ConfigError(
            "two ids share the same bytes (a special token equal to a regular token); HF's "
            "vocabulary cannot hold that"
        )
    # HF's vocabulary names a special token by its text, the others by their bytes in the
    # byte-level alphabet: a special token's text that spells other bytes there would be both.
    alphabet = _hf.unicode_to_bytes()
    for content in tok._special:
        if all(c in alphabet for c in content) and content != _hf.token_to_hf(content.encode()):
            raise ConfigError(
                f"special token {content!r} is spelled like the bytes "
                f"{bytes(alphabet[c] for c in content)!r} in HF's byte-level alphabet, so a "
                "tokenizer.json cannot tell the two apart"
            )
    model_tables: dict[str, Any] = {}
    if tables:
        strings = tok._core.hf_strings()  # every token in HF's byte-level alphabet, by id
        model_tables["vocab"] = dict(zip(strings, range(len(strings)), strict=True))
        model_tables["merges"] = [[strings[a], strings[b]] for a, b, _ in tok.merges]
    added = [
        {
            "id": i,
            "content": content,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for content, i in sorted(tok.special_tokens.items(), key=lambda kv: kv[1])
    ]
    byte_level = {"add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": _hf.pattern_to_onig(tok.pattern)},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {"type": "ByteLevel", **byte_level},
            ],
        },
        "post_processor": {"type": "ByteLevel", **byte_level},
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": tok._core.ignore_merges,
            **model_tables,
        },
    }


def _hf_bytes(source: Any) -> bytes:
    """The UTF-8 text of a ``tokenizer.json`` from any source that ``from_hf`` takes."""
    if isinstance(source, Mapping):
        try:
            return json.dumps(dict(source), ensure_ascii=False).encode()
        except (TypeError, ValueError) as e:
            raise CorruptFileError(f"not a valid tokenizer.json: {e}") from None
    backend = getattr(source, "backend_tokenizer", None)  # transformers fast tokenizers
    if backend is not None:
        source = backend
    if hasattr(source, "to_str") and callable(source.to_str):  # tokenizers.Tokenizer
        return source.to_str().encode()
    if isinstance(source, str) and source.lstrip().startswith("{"):
        return source.encode()
    path = Path(source)
    if path.is_dir():
        path = path / "tokenizer.json"
    return path.read_bytes()


def _unsupported(what: str) -> ConfigError:
    return ConfigError(f"unsupported HF tokenizer: {what}; toklab imports byte-level BPE only")


def _hf_pattern(pre: Any) -> str:
    if pre is None:
        raise _unsupported("no pre-tokenizer (byte-level BPE needs ByteLevel)")
    steps = pre["pretokenizers"] if pre.get("type") == "Sequence" else [pre]
    if not steps or steps[-1].get("type") != "ByteLevel":
        raise _unsupported(f"pre-tokenizer {[s.get('type') for s in steps]}")
    byte_level = steps[-1]
    if byte_level.get("add_prefix_space"):
        raise _unsupported("ByteLevel(add_prefix_space=True)")
    if len(steps) == 1:
        if byte_level.get("use_regex", True):
            return _core.GPT2_PATTERN
        raise _unsupported("ByteLevel(use_regex=False) with no Split before it")
    if len(steps) != 2 or steps[0].get("type") != "Split":
        raise _unsupported(f"pre-tokenizer {[s.get('type') for s in steps]}")
    split = steps[0]
    if byte_level.get("use_regex", True):
        raise _unsupported("Split followed by ByteLevel(use_regex=True)")
    if split.get("behavior") != "Isolated" or split.get("invert"):
        raise _unsupported(f"Split(behavior={split.get('behavior')}, invert={split.get('invert')})")
    pattern = split.get("pattern", {})
    if "Regex" in pattern:
        regex = _hf.pattern_from_onig(pattern["Regex"])
    elif "String" in pattern:
        import re

        regex = re.escape(pattern["String"])
    else:
        raise _unsupported(f"Split pattern {pattern}")
    # Prefer the named pattern when the regex is one of them (it enables parallel encoding).
    return next((v for v in PATTERNS.values() if v == regex), regex)


def _from_hf(cls: type[BPETokenizer], source: Any) -> BPETokenizer:
    # The vocabulary and merges (most of the file) are read in Rust; the rest is checked here.
    rest, hf_model = _core.split_hf(_hf_bytes(source))
    try:
        return _from_hf_spec(cls, json.loads(rest), hf_model)
    except (AttributeError, TypeError, KeyError, IndexError) as e:
        # A field of the wrong kind (a number where an object belongs, ...).
        raise CorruptFileError(f"not a valid tokenizer.json: {type(e).__name__}: {e}") from None


def _from_hf_spec(cls: type[BPETokenizer], spec: Any, hf_model: Any) -> BPETokenizer:
    model = spec.get("model") or {}
    if model.get("type", "BPE") != "BPE":
        raise _unsupported(f"model type {model.get('type')!r}")
    if not hf_model.has_merges:
        raise _unsupported("a model without merges")
    if spec.get("normalizer") is not None:
        raise _unsupported(f"normalizer {spec['normalizer'].get('type')}")
    if model.get("byte_fallback"):
        raise _unsupported("byte_fallback (a SentencePiece-style BPE)")
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise _unsupported("subword prefixes or suffixes")
    if model.get("dropout"):
        raise _unsupported("BPE dropout (toklab's BPE is deterministic)")
    pattern = _hf_pattern(spec.get("pre_tokenizer"))
    specials: dict[str, int] = {}
    for a in spec.get("added_tokens") or []:
        if not (
            isinstance(a, dict)
            and isinstance(a.get("content"), str)
            and type(a.get("id")) is int
            and 0 <= a["id"] < 2**32
        ):
            raise CorruptFileError(f"not a valid tokenizer.json: added token {a!r}")
        if a.get("lstrip") or a.get("rstrip") or a.get("single_word"):
            warnings.warn(
                f"added token {a['content']!r} has lstrip/rstrip/single_word flags, which toklab "
                "ignores",
                TokLabWarning,
                stacklevel=3,
            )
        if specials.get(a["content"], a["id"]) != a["id"]:
            # (HF itself looks added tokens up by their text: one of the two ids is unreachable.)
            raise CorruptFileError(
                f"not a valid tokenizer.json: added token {a['content']!r} has two ids, "
                f"{specials[a['content']]} and {a['id']}"
            )
        specials[a["content"]] = a["id"]
    core, reserved = _core.Bpe.from_hf_model(
        hf_model,
        sorted(specials.items(), key=lambda kv: kv[1]),
        pattern,
        bool(model.get("ignore_merges", False)),
    )
    return cls(core, {"imported_from": "hf", "reserved_ids": reserved})
