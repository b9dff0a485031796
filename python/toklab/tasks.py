"""Language games that need a model to see inside tokens (StochasTok's evaluation, Sims et al.
2025), generated deterministically and scored by exact match.

- **LangGame**: six question types over a word list (the most frequent words of the embedded
  English corpus): which word has the most of a letter, contains a substring, starts with,
  ends with, is the longest, is the shortest. Four options, exactly one right (the paper's
  thresholds: "most of letter" >= 2 against <= 1 occurrences; "longest" >= 7 against <= 4
  characters; "shortest" <= 3 against >= 6; substrings of 1 to 3 letters).
- **Reversed addition**: ``"$a+b="`` followed by the digits of ``a + b`` reversed, with ``a``
  of three digits and ``b`` of one to three (written with three); a fixed train/validation
  split of the 900,000 problems (810,000 / 90,000, as the paper's), so that validation
  problems are never trained on.

Predictions are scored by exact match (after stripping whitespace), or by the paper's lenient
rule (the answer appears anywhere in the generation).

>>> ex = addition(1, seed=0)[0]
>>> a, b = ex.prompt[1:-1].split("+")
>>> ex.answer == str(int(a) + int(b))[::-1]
True
>>> [e.kind for e in langgame(["apple", "tree", "sky", "avocado", "kiwi", "cherry", "fig"] * 3,
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

__all__ = [
    "KINDS",
    "SPLITS",
    "Example",
    "addition",
    "addition_split",
    "langgame",
    "score",
    "word_list",
]

KINDS = ("most_letter", "contains", "starts_with", "ends_with", "longest", "shortest")


def _count_ok(n: object) -> bool:
    """A count of examples or words: a non-negative int (numpy's too), not a bool."""
    import numbers

    return isinstance(n, numbers.Integral) and not isinstance(n, bool) and int(n) >= 0


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

    if not _count_ok(n):
        raise ConfigError(f"n must be a non-negative int, not {n!r}")
    if isinstance(texts, str):
        raise ConfigError("texts must be an iterable of str, not a str")
    counts: Counter[str] = Counter()
    for text in texts if texts is not None else default_corpus():
        if not isinstance(text, str):
            raise ConfigError(f"texts must be str, not {type(text).__name__}")
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
    if any(not isinstance(w, str) or not w for w in words):
        raise ConfigError("LangGame's words must be non-empty str")
    if len(set(words)) < 4:
        raise ConfigError("LangGame needs at least 4 distinct words")
    if isinstance(kinds, str) or not kinds:
        raise ConfigError(f"kinds must be a non-empty list of question kinds from {KINDS}")
    if not _count_ok(n):
        raise ConfigError(f"n must be a non-negative int, not {n!r}")
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


# The 900,000 additions (``a`` in 100..999, ``b`` in 0..999) by index ``(a - 100) * 1000 + b``,
# split as the paper's (810,000 train, 90,000 validation) by a fixed shuffle of the indices:
# position ``(index * _MIX + _SHIFT) % 900,000``, the first 810,000 positions train. (An affine
# map with a multiplier prime to 900,000 is a bijection, so the splits are disjoint and exact.)
_ADDITIONS = 900_000
_TRAIN = 810_000
_MIX, _SHIFT = 387_221, 271_828
_UNMIX = pow(_MIX, -1, _ADDITIONS)
SPLITS = {"train": (0, _TRAIN), "validation": (_TRAIN, _ADDITIONS), "all": (0, _ADDITIONS)}


def addition_split(example: Example | str) -> str:
    """The split (``"train"`` or ``"validation"``) that an addition of :func:`addition` (or
    its prompt) is in."""
    prompt = example if isinstance(example, str) else example.prompt
    m = re.fullmatch(r"\$([1-9]\d{2})\+(\d{3})=", prompt)
    if m is None or (isinstance(example, Example) and example.kind != "addition"):
        raise ConfigError(f"not an addition: {prompt!r}")
    index = (int(m[1]) - 100) * 1000 + int(m[2])
    return "train" if (index * _MIX + _SHIFT) % _ADDITIONS < _TRAIN else "validation"


def addition(n: int = 1000, seed: int = 0, split: str = "all") -> list[Example]:
    """``n`` reversed additions ``$a+b=`` -> digits of ``a + b`` reversed (``a`` in 100..999,
    ``b`` in 0..999 written with three digits), drawn uniformly (with replacement) from
    ``split``: ``"train"`` (810,000 of the 900,000 problems) or ``"validation"`` (the other
    90,000: never a training problem, whatever the seeds), as the paper splits them; or
    ``"all"`` (any problem; the same draws as before the splits existed).

    >>> train = {e.prompt for e in addition(2000, seed=1, split="train")}
    >>> train.isdisjoint(e.prompt for e in addition(2000, seed=2, split="validation"))
    True
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose from {sorted(SPLITS)}")
    if not _count_ok(n):
        raise ConfigError(f"n must be a non-negative int, not {n!r}")
    rng = random.Random(seed)
    out = []
    lo, hi = SPLITS[split]
    for _ in range(n):
        if split == "all":
            a, b = rng.randint(100, 999), rng.randint(0, 999)
        else:
            index = ((rng.randrange(lo, hi) - _SHIFT) * _UNMIX) % _ADDITIONS
            a, b = 100 + index // 1000, index % 1000
        out.append(Example(f"${a}+{b:03d}=", str(a + b)[::-1], "addition"))
    return out


def score(predictions: Sequence[str], examples: Sequence[Example], lenient: bool = False) -> float:
    """The share of predictions that equal the answer (whitespace stripped), or with
    ``lenient`` that contain it (the paper's rule for addition)."""
    if len(predictions) != len(examples):
        raise ConfigError(f"{len(predictions)} predictions for {len(examples)} examples")
    if any(not isinstance(p, str) for p in predictions):
        raise ConfigError("predictions must be str (decode generated ids first)")
    if not examples:
        return float("nan")
    hits = 0
    for p, ex in zip(predictions, examples, strict=True):
        want = ex.answer.strip()
        hits += (want in p) if lenient else (p.strip() == want)
    return hits / len(examples)
