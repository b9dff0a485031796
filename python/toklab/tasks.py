"""Language games that need a model to see inside tokens (StochasTok's evaluation, Sims et al.
2025), generated deterministically and scored by exact match.

- **LangGame**: six question types over a word list (the most frequent words of the embedded
  English corpus): which word has the most of a letter, contains a substring, starts with,
  ends with, is the longest, is the shortest. Four options, exactly one right (the paper's
  thresholds: "most of letter" >= 2 against <= 1 occurrences; "longest" >= 7 against <= 4
  characters; "shortest" <= 3 against >= 6; substrings of 1 to 3 letters).
- **Reversed addition**: ``"$a+b="`` followed by the digits of ``a + b`` reversed, with ``a``
  of three digits and ``b`` of one to three (written with three).

Predictions are scored by exact match (after stripping whitespace), or by the paper's lenient
rule (the answer appears anywhere in the generation).

>>> ex = addition(1, seed=0)[0]
>>> a, b = ex.prompt[1:-1].split("+")
>>> ex.answer == str(int(a) + int(b))[::-1]
True
>>> [e.kind for e in langgame(["apple", "tree", "sky", "banana", "kiwi", "cherry", "fig"] * 3,
...                           6, seed=1, kinds=["longest"])][:2]
['longest', 'longest']
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from toklab.errors import ConfigError

__all__ = ["KINDS", "Example", "addition", "langgame", "score", "word_list"]

KINDS = ("most_letter", "contains", "starts_with", "ends_with", "longest", "shortest")


@dataclass(frozen=True)
class Example:
    """A prompt and its answer (the text a model should produce after the prompt)."""

    prompt: str
    answer: str
    kind: str
    options: tuple[str, ...] = ()


def word_list(texts: Iterable[str] | None = None, n: int = 1000, min_length: int = 2) -> list[str]:
    """The ``n`` most frequent lowercase alphabetic words of ``texts`` (default: the embedded
    corpus); ties by the word, so the list is deterministic."""
    from toklab.data import default_corpus

    counts: Counter[str] = Counter()
    for text in texts if texts is not None else default_corpus():
        counts.update(w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= min_length)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [w for w, _ in ranked[:n]]


def _question(kind: str, words: Sequence[str], rng: random.Random) -> Example | None:
    """One question of ``kind``, or None when this draw cannot make one."""
    if kind == "most_letter":
        letter = rng.choice("etaoinsrhl")
        right = [w for w in words if w.count(letter) >= 2]
        wrong = [w for w in words if w.count(letter) <= 1]
        q = f"Which word has the most letter '{letter}'?"
    elif kind in ("contains", "starts_with", "ends_with"):
        source = rng.choice(words)
        size = rng.randint(1, min(3, len(source)))
        if kind == "contains":
            at = rng.randint(0, len(source) - size)
            sub = source[at : at + size]
            right = [w for w in words if sub in w]
            wrong = [w for w in words if sub not in w]
            q = f"Which word contains '{sub}'?"
        elif kind == "starts_with":
            sub = source[:size]
            right = [w for w in words if w.startswith(sub)]
            wrong = [w for w in words if not w.startswith(sub)]
            q = f"Which word starts with '{sub}'?"
        else:
            sub = source[-size:]
            right = [w for w in words if w.endswith(sub)]
            wrong = [w for w in words if not w.endswith(sub)]
            q = f"Which word ends with '{sub}'?"
    elif kind == "longest":
        right = [w for w in words if len(w) >= 7]
        wrong = [w for w in words if len(w) <= 4]
        q = "Which word is the longest?"
    elif kind == "shortest":
        right = [w for w in words if len(w) <= 3]
        wrong = [w for w in words if len(w) >= 6]
        q = "Which word is the shortest?"
    else:
        raise ConfigError(f"unknown LangGame kind {kind!r}; choose from {KINDS}")
    if not right or len(set(wrong)) < 3:
        return None
    answer = rng.choice(right)
    options = [answer, *rng.sample(sorted(set(wrong)), 3)]
    rng.shuffle(options)
    prompt = f"{q} Options: {', '.join(options)}. Answer:"
    return Example(prompt, f" {answer}", kind, tuple(options))


def langgame(
    words: Sequence[str] | None = None,
    n: int = 1000,
    seed: int = 0,
    kinds: Sequence[str] = KINDS,
) -> list[Example]:
    """``n`` LangGame questions, the kinds in turn; the same seed gives the same questions."""
    words = list(words) if words is not None else word_list()
    if len(set(words)) < 4:
        raise ConfigError("LangGame needs at least 4 distinct words")
    for k in kinds:
        if k not in KINDS:
            raise ConfigError(f"unknown LangGame kind {k!r}; choose from {KINDS}")
    rng = random.Random(seed)
    out: list[Example] = []
    misses = 0
    while len(out) < n:
        ex = _question(kinds[len(out) % len(kinds)], words, rng)
        if ex is None:
            misses += 1
            if misses > 1000 + 10 * n:
                raise ConfigError(f"cannot make {kinds[len(out) % len(kinds)]} questions here")
            continue
        out.append(ex)
    return out


def addition(n: int = 1000, seed: int = 0) -> list[Example]:
    """``n`` reversed additions ``$a+b=`` -> digits of ``a + b`` reversed (``a`` in 100..999,
    ``b`` in 0..999 written with three digits)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(100, 999), rng.randint(0, 999)
        out.append(Example(f"${a}+{b:03d}=", str(a + b)[::-1], "addition"))
    return out


def score(predictions: Sequence[str], examples: Sequence[Example], lenient: bool = False) -> float:
    """The share of predictions that equal the answer (whitespace stripped), or with
    ``lenient`` that contain it (the paper's rule for addition)."""
    if len(predictions) != len(examples):
        raise ConfigError(f"{len(predictions)} predictions for {len(examples)} examples")
    if not examples:
        return float("nan")
    hits = 0
    for p, ex in zip(predictions, examples, strict=True):
        want = ex.answer.strip()
        hits += (want in p) if lenient else (p.strip() == want)
    return hits / len(examples)
