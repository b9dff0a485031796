"""Shared fixtures: the development data in ../shared/data and tokenizers trained on it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import toklab

REPO = Path(__file__).resolve().parent.parent


def _shared_data() -> Path | None:
    env = os.environ.get("TOKLAB_SHARED_DATA")
    for candidate in (
        [Path(env)] if env else [REPO.parent / "shared" / "data", REPO / "shared" / "data"]
    ):
        if (candidate / "en").is_dir():
            return candidate
    return None


SHARED_DATA = _shared_data()

# `python -m pytest -n auto --dist worksteal` (pytest-xdist) runs one worker per core, so each
# worker's torch gets one thread: more would only make the workers wait on each other.
TORCH_THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch
    except ImportError:  # toklab[lm] not installed: its tests skip with importorskip
        return
    torch.set_num_threads(TORCH_THREADS)


needs_shared = pytest.mark.skipif(
    SHARED_DATA is None,
    reason="../shared/data (the development corpora) is not beside this checkout; set "
    "TOKLAB_SHARED_DATA to its path",
)


def documents(path: Path) -> list[str]:
    """Splits a corpus file into documents, following each file's layout."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".tsv":  # Bible: one verse per line, `ref<TAB>text`
        return [line.split("\t", 1)[1] for line in text.splitlines() if "\t" in line]
    if path.name.startswith("wiki_vital"):  # `= Title =` then the lead section
        docs, current = [], []
        for line in text.splitlines(keepends=True):
            if line.startswith("= ") and current:
                docs.append("".join(current))
                current = []
            current.append(line)
        docs.append("".join(current))
        return docs
    if path.parent.name == "udhr":
        return [text]
    # Brown, Shakespeare: paragraphs / speeches separated by blank lines.
    return [d for d in text.split("\n\n") if d]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    # Tests that use this fixture carry `needs_shared`, so this only fires if one forgets to.
    if SHARED_DATA is None:
        pytest.fail("../shared/data is not available; mark the test with needs_shared")
    return SHARED_DATA


@pytest.fixture(scope="session")
def en_tokenizer(shared_data: Path) -> toklab.BPETokenizer:
    """A cl100k-pattern BPE trained on all of ../shared/data/en, with special tokens."""
    files = sorted((shared_data / "en").iterdir())
    return toklab.train_bpe(
        files,
        vocab_size=16_384,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        progress=False,
    )


@pytest.fixture(scope="session")
def small_tokenizer() -> toklab.BPETokenizer:
    """A small BPE trained on the embedded default corpus's Shakespeare part."""
    from toklab.data import default_corpus

    return toklab.train_bpe(
        default_corpus(["shakespeare"]),
        vocab_size=1_000,
        special_tokens=["<|endoftext|>"],
        progress=False,
    )
