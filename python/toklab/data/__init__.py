"""Corpora: the small embedded default, files and globs, and HF ``datasets`` columns.

The embedded default corpus (about 12 MB of English, 3.2 MB compressed, shipped inside the
package) is the World English Bible (public domain), the Brown Corpus (redistribution permitted
by its copyright holder) and tiny-shakespeare (public domain); see ``ATTRIBUTION.md`` beside this
file. Nothing here downloads anything.
"""

from __future__ import annotations

import glob
import lzma
import os
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from toklab.errors import InvalidInputError

__all__ = [
    "DEFAULT_CORPUS_PARTS",
    "default_corpus",
    "expand_files",
    "is_dataset",
    "iter_dataset_texts",
    "iter_texts",
    "read_text",
    "split_holdout",
    "udhr",
]

#: The parts of the embedded corpus, in the order :func:`default_corpus` yields them.
DEFAULT_CORPUS_PARTS = ("bible", "brown", "shakespeare")

_GLOB_CHARS = frozenset("*?[")


def default_corpus(parts: Iterable[str] = DEFAULT_CORPUS_PARTS) -> Iterator[str]:
    """Yields the embedded corpus, one document (a whole source text) per part.

    >>> sum(len(t) for t in default_corpus()) > 10_000_000
    True
    """
    root = resources.files(__name__)
    for part in parts:
        if part not in DEFAULT_CORPUS_PARTS:
            raise InvalidInputError(
                f"unknown part {part!r} of the default corpus; choose from {DEFAULT_CORPUS_PARTS}"
            )
        with (root / f"{part}.txt.xz").open("rb") as f:
            yield lzma.decompress(f.read()).decode("utf-8")


def udhr() -> dict[str, dict[str, str]]:
    """The embedded Universal Declaration of Human Rights in 63 languages, keyed by ISO 639-3
    code: ``{"name", "bcp47", "direction", "udhr_code", "text"}`` for each.

    >>> docs = udhr()
    >>> len(docs), docs["eng"]["name"], docs["jpn"]["text"][1:5]
    (63, 'English', '世界人権')
    """
    import json

    with (resources.files(__name__) / "udhr.json.xz").open("rb") as f:
        data: dict[str, dict[str, str]] = json.loads(lzma.decompress(f.read()).decode("utf-8"))
    return data


def expand_files(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expands paths and globs (``**`` recurses) into a sorted, de-duplicated list of files.

    A directory stands for every file below it. A source that matches nothing is an error, so a
    typo never trains on an empty corpus.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    found: list[Path] = []
    for source in sources:
        text = os.fspath(source)
        if any(c in _GLOB_CHARS for c in text) and not os.path.exists(text):
            matches = [Path(p) for p in glob.glob(text, recursive=True)]
            matches = [p for p in matches if p.is_file()]
        elif os.path.isdir(text):
            matches = [p for p in Path(text).rglob("*") if p.is_file()]
        elif os.path.isfile(text):
            matches = [Path(text)]
        else:
            matches = []
        if not matches:
            raise FileNotFoundError(
                f"no file matches {text!r}; to train on text rather than files, pass a list of "
                "strings"
            )
        found.extend(sorted(matches))
    return list(dict.fromkeys(found))


def is_dataset(obj: Any) -> bool:
    """Whether ``obj`` is a HF ``Dataset`` or ``IterableDataset`` (without importing datasets)."""
    return type(obj).__module__.startswith("datasets.") and hasattr(obj, "column_names")


def iter_dataset_texts(
    dataset: Any, text_column: str = "text", batch_size: int = 1000
) -> Iterator[str]:
    """Yields the ``text_column`` of a ``datasets.Dataset`` or ``IterableDataset``."""
    columns = dataset.column_names
    if columns is not None and text_column not in columns:
        raise InvalidInputError(
            f"the dataset has no column {text_column!r}; its columns are {columns}; pass "
            "text_column=..."
        )
    if hasattr(dataset, "iter") and not type(dataset).__name__.startswith("Iterable"):
        for batch in dataset.iter(batch_size=batch_size):
            yield from batch[text_column]
    else:
        for row in dataset:
            yield row[text_column]


def read_text(path: str | os.PathLike[str], errors: str = "strict") -> str:
    """A UTF-8 file's text exactly as stored: ``\\r\\n`` and lone ``\\r`` stay (``Path.read_text``
    turns both into ``\\n``, so that decoding the ids would not give the file back).
    ``errors`` as in ``bytes.decode``; invalid UTF-8 under ``"strict"`` is an
    ``InvalidInputError`` that names the file and the byte."""
    try:
        with open(path, encoding="utf-8", errors=errors, newline="") as f:
            return f.read()
    except UnicodeDecodeError as e:
        # (The offset is within the decoder's chunk; the file's bytes say where exactly.)
        with open(path, "rb") as f:
            raw = f.read()
        try:
            raw.decode("utf-8")
            at = e.start
        except UnicodeDecodeError as exact:
            at = exact.start
        raise InvalidInputError(
            f"{path}: invalid UTF-8 at byte {at} (pass errors='replace' to substitute U+FFFD)"
        ) from None


def iter_texts(source: Any, text_column: str = "text") -> Iterator[str]:
    """Texts from any corpus toklab accepts: None (the embedded default), paths and globs, a
    dataset, or an iterable of ``str``."""
    if source is None:
        yield from default_corpus()
    elif isinstance(source, (str, os.PathLike)):
        for path in expand_files(source):
            yield read_text(path)
    elif is_dataset(source):
        yield from iter_dataset_texts(source, text_column)
    else:
        yield from source


def split_holdout(texts: Iterable[str], fraction: float) -> tuple[list[str], list[str]]:
    """Splits each document into a training head and a held-out tail of about ``fraction`` of
    its characters, cut at a line break near the cut (or exactly there if none is close).
    Deterministic, so training and evaluation agree on the split.

    >>> split_holdout(["a\\nb\\nc\\nd\\n"], 0.5)
    (['a\\nb\\n'], ['c\\nd\\n'])
    """
    if not 0.0 <= fraction < 1.0:
        raise InvalidInputError(f"the held-out fraction must be in [0, 1), got {fraction}")
    train: list[str] = []
    held: list[str] = []
    for text in texts:
        cut = round(len(text) * (1.0 - fraction))
        if 0 < cut < len(text):
            window = max(200, len(text) // 100)
            line = text.rfind("\n", max(0, cut - window), cut)
            if line >= 0:
                cut = line + 1
        if text[:cut]:
            train.append(text[:cut])
        if text[cut:]:
            held.append(text[cut:])
    return train, held
