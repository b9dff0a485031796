"""Intrinsic tokenizer metrics, each with its formula and its conventions stated.

Every metric works on *token byte spans*: the ``[start, end)`` byte range of each token in the
UTF-8 text it came from, computed in context (the whole text is encoded once, and no prefix
space is injected anywhere). Spans come from ``encode_with_offsets`` where a tokenizer has it,
else from a ``spans(text)`` method (the comparison's adapters for HF tokenizers and
sentencepiece), else from the byte lengths of the tokens (``token_bytes``). Markers such as
``Ġ``, ``##`` and ``▁`` therefore never enter a comparison: boundaries are byte positions in the
original text.

>>> import toklab
>>> tok = toklab.ByteTokenizer()
>>> fertility(tok, ["ab c"]).fertility  # 4 tokens over 2 GPT-2 pre-tokens, "ab" and " c"
2.0
>>> round(renyi_efficiency([2, 1, 1], alpha=2.0, vocab_size=4).by_vocab, 4)
0.7075
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toklab.errors import ConfigError, InvalidInputError

__all__ = [
    "BoundaryScore",
    "Compression",
    "Fertility",
    "MorphItems",
    "MorphScore",
    "Renyi",
    "boundary_prf",
    "compression",
    "encoding_speed",
    "fertility",
    "load_morphscore",
    "load_segmentations",
    "morphscore",
    "renyi_efficiency",
    "token_spans",
    "vocabulary_stats",
]


def token_spans(tokenizer: Any, text: str) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, ends)``: the token ids of ``text`` and the byte offset where each token ends
    (token ``i`` covers ``ends[i - 1]..ends[i]``, from 0). Tokens that cover only part of a
    character still get byte boundaries of their own."""
    spans = getattr(tokenizer, "spans", None)
    if spans is not None:
        ids, ends = spans(text)
        return np.asarray(ids), np.asarray(ends, dtype=np.int64)
    with_offsets = getattr(tokenizer, "encode_with_offsets", None)
    if with_offsets is not None:
        ids, offsets = with_offsets(text)
        return np.asarray(ids), np.asarray(offsets[:, 1], dtype=np.int64)
    ids = np.asarray(tokenizer.encode(text))
    lengths = np.fromiter((len(tokenizer.token_bytes(int(i))) for i in ids), np.int64, len(ids))
    return ids, np.cumsum(lengths)


@dataclass(frozen=True)
class Compression:
    """``bytes_per_token = UTF-8 bytes / tokens`` over all texts (each encoded whole)."""

    bytes: int
    tokens: int
    characters: int

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / self.tokens if self.tokens else float("nan")

    @property
    def chars_per_token(self) -> float:
        return self.characters / self.tokens if self.tokens else float("nan")


def compression(tokenizer: Any, texts: Iterable[str]) -> Compression:
    n_bytes = n_tokens = n_chars = 0
    for text in texts:
        n_bytes += len(text.encode("utf-8"))
        n_chars += len(text)
        n_tokens += len(tokenizer.encode(text))
    return Compression(n_bytes, n_tokens, n_chars)


@dataclass(frozen=True)
class Fertility:
    """``fertility = tokens / words`` and ``split_share = words split / words``.

    Words are the pre-tokens of ``pattern`` (GPT-2's by default, as ByteSpan reports it, so a
    run of punctuation or of whitespace is a word too). A word is *split* when a token boundary
    falls strictly inside it; a token that covers a word and more leaves it unsplit.
    """

    words: int
    tokens: int
    split_words: int
    pattern: str

    @property
    def fertility(self) -> float:
        return self.tokens / self.words if self.words else float("nan")

    @property
    def split_share(self) -> float:
        return self.split_words / self.words if self.words else float("nan")


def fertility(tokenizer: Any, texts: Iterable[str], pattern: str = "gpt2") -> Fertility:
    from toklab import _core
    from toklab.bpe import PATTERNS

    regex = PATTERNS.get(pattern, pattern)
    words = tokens = split = 0
    if isinstance(texts, str):
        raise InvalidInputError("texts must be an iterable of str, not one str")
    for text in texts:
        if not isinstance(text, str):
            raise InvalidInputError(f"texts must be str, not {type(text).__name__}")
        if not text:
            continue
        ids, ends = token_spans(tokenizer, text)
        tokens += len(ids)
        pieces = _core.pretokenize(text, regex)
        word_ends = np.cumsum([len(p.encode("utf-8")) for p in pieces])
        word_starts = np.concatenate([[0], word_ends[:-1]])
        words += len(pieces)
        # token boundaries strictly inside a word: start < boundary < end
        bounds = np.asarray(ends[:-1], dtype=np.int64)
        first_after_start = np.searchsorted(bounds, word_starts, side="right")
        first_at_end = np.searchsorted(bounds, word_ends, side="left")
        split += int((first_at_end > first_after_start).sum())
    return Fertility(words, tokens, split, pattern)


@dataclass(frozen=True)
class Renyi:
    """Rényi efficiency (Zouhar et al. 2023) of the token distribution ``p``:

    ``H_a(p) = log2(sum_i p_i ** a) / (1 - a)`` (Shannon entropy at ``a = 1``, the
    min-entropy ``-log2(max_i p_i)`` at ``a = inf``), and
    ``by_vocab = H_a / log2(vocab_size)``, ``by_observed = H_a / log2(distinct tokens seen)``.
    ``by_observed`` is what the PyPI package ``tokenization-scorer`` and ByteSpan report.
    """

    alpha: float
    entropy: float
    by_vocab: float
    by_observed: float
    observed: int


def renyi_efficiency(
    counts: Sequence[int] | np.ndarray, alpha: float = 2.5, vocab_size: int | None = None
) -> Renyi:
    try:
        c = np.asarray(counts, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError("token counts must be numbers") from None
    if c.ndim != 1 or not np.isfinite(c).all() or (c < 0).any():
        raise InvalidInputError("token counts must be a 1-D array of finite, non-negative numbers")
    if math.isnan(alpha) or alpha < 0:
        raise ConfigError(f"alpha must be a number >= 0 (inf included), got {alpha!r}")
    c = c[c > 0]
    if c.size == 0:
        raise InvalidInputError("Rényi efficiency of no tokens")
    if vocab_size is not None and (
        not isinstance(vocab_size, (int, np.integer)) or isinstance(vocab_size, bool)
    ):
        raise ConfigError(f"vocab_size must be an int, got {vocab_size!r}")
    if vocab_size is not None and vocab_size < c.size:
        raise ConfigError(f"vocab_size {vocab_size} is below the {c.size} distinct tokens counted")
    with np.errstate(over="ignore"):
        total = float(c.sum())
    if not math.isfinite(total):
        c = c / c.max()  # (counts whose sum overflows float64: their scale does not matter)
    p = c / c.sum()
    log_p = np.log2(p)
    if math.isinf(alpha) or math.isinf(alpha * float(log_p.max())):
        h = float(-log_p.max())  # the min-entropy, the limit (alpha * log p overflows near it)
    elif abs(alpha - 1.0) < 1e-9:
        # Shannon's, the limit at 1 (the general formula divides rounding error by alpha - 1).
        h = float(-(p * log_p).sum())
    else:
        # log2(sum p^alpha) in log space: p**alpha underflows to 0 for large alpha.
        with np.errstate(over="ignore"):  # (the rarest tokens' terms: 0 either way)
            scaled = alpha * log_p
        top = scaled.max()
        h = float((top + np.log2(np.exp2(scaled - top).sum())) / (1.0 - alpha))
    observed = int(c.size)
    vocab = vocab_size if vocab_size is not None else observed
    return Renyi(
        alpha=alpha,
        entropy=h,
        by_vocab=h / math.log2(vocab) if vocab > 1 else float("nan"),
        by_observed=h / math.log2(observed) if observed > 1 else float("nan"),
        observed=observed,
    )


def vocabulary_stats(
    tokenizer: Any, texts: Iterable[str], alpha: float = 2.5
) -> dict[str, float | int]:
    """Counts of each id over ``texts``, and what follows from them:

    - ``utilisation = distinct ids used / vocab_size``;
    - ``unk_rate = unknown-token ids / tokens`` (ids in the tokenizer's ``unk_ids``, if any);
    - ``byte_fallback_rate = byte-fallback tokens / tokens``: tokens that are a single byte of a
      multi-byte character (a lone byte >= 0x80 for byte-level vocabularies, or the ids in the
      tokenizer's ``byte_fallback_ids``), i.e. text the vocabulary covers only byte by byte;
    - Rényi efficiency at ``alpha`` (both normalisations).
    """
    vocab = int(tokenizer.vocab_size)
    counts = np.zeros(vocab, dtype=np.int64)
    for text in texts:
        ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
        counts += np.bincount(ids, minlength=vocab)[:vocab]
    total = int(counts.sum())
    if total == 0:
        raise InvalidInputError("no tokens to count: the texts are empty")
    unk = sum(int(counts[i]) for i in getattr(tokenizer, "unk_ids", ()) if i < vocab)
    fallback_ids = getattr(tokenizer, "byte_fallback_ids", None)
    if fallback_ids is None:
        fallback_ids = [
            i
            for i in np.flatnonzero(counts)
            if len(b := tokenizer.token_bytes(int(i))) == 1 and b[0] >= 0x80
        ]
    fallback = sum(int(counts[i]) for i in fallback_ids if i < vocab)
    r = renyi_efficiency(counts, alpha, vocab)
    return {
        "tokens": total,
        "distinct": int((counts > 0).sum()),
        "utilisation": float((counts > 0).sum() / vocab),
        "unk_rate": unk / total,
        "byte_fallback_rate": fallback / total,
        "renyi_alpha": alpha,
        "renyi_by_vocab": r.by_vocab,
        "renyi_by_observed": r.by_observed,
    }


# -- morphology -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MorphScore:
    """MorphScore v1 (Arnett et al. 2024): each item is a word and its split ``pt1 | rest``;
    an item scores 1 when a token boundary of the bare word (encoded alone, no prefix space)
    falls exactly between ``pt1`` and ``rest``, else 0. Words encoded as a single token are
    excluded; ``score = hits / included`` and ``excluded_share = excluded / items``.

    Boundaries are byte offsets, so a word that the vocabulary covers only byte by byte (a
    script it has no tokens for) always scores 1, like raw bytes; the authors' code compares
    decoded token strings, in which the bytes of a split character decode to nothing that
    matches, and scores such words 0. Read a language's score beside the byte-fallback rate."""

    items: int
    included: int
    hits: int

    @property
    def score(self) -> float:
        return self.hits / self.included if self.included else float("nan")

    @property
    def excluded_share(self) -> float:
        return 1 - self.included / self.items if self.items else float("nan")


class MorphItems(list[tuple[str, str, str]]):
    """A language's MorphScore items ``(word, pt1, rest)``, with ``dropped``: how many rows of
    its file were left out because their parts do not spell the word (or a field is empty)."""

    dropped: int = 0


def load_morphscore(directory: str | os.PathLike[str]) -> dict[str, MorphItems]:
    """MorphScore v1 CSVs (``{language}_morph_data.csv``: ``full_word,pt1,rest``) by language.
    Items whose parts do not spell the word (or with an empty part) are dropped, and counted
    in each list's ``dropped`` (Gujarati's file has 191 such rows of 547, Zulu's 64, Turkish's
    7)."""
    out: dict[str, MorphItems] = {}
    root = Path(directory)
    files = sorted(root.glob("*_morph_data.csv"))
    if not files:
        raise InvalidInputError(f"{root}: no MorphScore files (*_morph_data.csv)")
    for path in files:
        items = MorphItems()
        with path.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                word, pt1, rest = row.get("full_word"), row.get("pt1"), row.get("rest")
                if word and pt1 and rest and pt1 + rest == word:
                    items.append((word, pt1, rest))
                else:
                    items.dropped += 1
        out[path.name.removesuffix("_morph_data.csv")] = items
    return out


def morphscore(tokenizer: Any, items: Iterable[tuple[str, str, str]]) -> MorphScore:
    n = included = hits = 0
    for word, pt1, _rest in items:
        n += 1
        _, ends = token_spans(tokenizer, word)
        if len(ends) < 2:
            continue
        included += 1
        hits += int(len(pt1.encode("utf-8")) in set(ends[:-1].tolist()))
    return MorphScore(n, included, hits)


@dataclass(frozen=True)
class BoundaryScore:
    """Morpheme-boundary precision, recall and F1, micro-averaged over words: predicted
    boundaries are the token boundaries inside each bare word, gold ones those between its
    morphs; ``precision = correct / predicted``, ``recall = correct / gold``."""

    words: int
    predicted: int
    gold: int
    correct: int

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else float("nan")

    @property
    def recall(self) -> float:
        return self.correct / self.gold if self.gold else float("nan")

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


def load_segmentations(path: str | os.PathLike[str]) -> list[tuple[str, list[str]]]:
    """Surface segmentations from a TSV with ``word`` and ``segmentation`` (morphs separated
    by spaces) columns, such as ``en_morphynet_surface_brown.tsv``; words whose morphs do not
    spell them are dropped."""
    out = []
    with Path(path).open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            word, seg = row.get("word"), row.get("segmentation")
            if not word or not seg:
                continue
            morphs = seg.split()
            if "".join(morphs) == word:
                out.append((word, morphs))
    if not out:
        raise InvalidInputError(f"{path}: no usable segmentations (word, segmentation columns)")
    return out


def boundary_prf(tokenizer: Any, items: Iterable[tuple[str, list[str]]]) -> BoundaryScore:
    words = predicted = gold = correct = 0
    for word, morphs in items:
        if isinstance(morphs, str) or "".join(morphs) != word:
            # (A str's characters would each count as a morph.)
            raise InvalidInputError(f"{word!r}: morphs must be a list of str that spell it")
        words += 1
        _, ends = token_spans(tokenizer, word)
        pred = set(ends[:-1].tolist())
        g = set(np.cumsum([len(m.encode("utf-8")) for m in morphs])[:-1].tolist())
        predicted += len(pred)
        gold += len(g)
        correct += len(pred & g)
    return BoundaryScore(words, predicted, gold, correct)


def encoding_speed(tokenizer: Any, texts: Sequence[str], repeat: int = 3) -> float:
    """MB/s (10^6 bytes) of ``encode`` over ``texts``, one thread, the best of ``repeat``."""
    size = sum(len(t.encode("utf-8")) for t in texts)
    best = math.inf
    for _ in range(repeat):
        began = time.perf_counter()
        for t in texts:
            tokenizer.encode(t)
        best = min(best, time.perf_counter() - began)
    return size / 1e6 / best if best > 0 else math.inf


def as_dict(obj: Any) -> dict[str, Any]:
    """A metric result with its derived values, for JSON."""
    out = asdict(obj)
    for name in dir(type(obj)):
        if isinstance(getattr(type(obj), name), property):
            out[name] = getattr(obj, name)
    return out
