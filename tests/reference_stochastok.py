"""StochasTok as the paper's code does it (``stochastok_processor.py``), slow and readable: the
oracle that the Rust expansion is checked against, in distribution."""

from __future__ import annotations

import numpy as np


def build_expansions(tokens: list[bytes], special: set[int]) -> dict[int, list[tuple[int, int]]]:
    """Every 2-way split of each token into two tokens (special tokens excluded)."""
    ids: dict[bytes, int] = {}
    for i, t in enumerate(tokens):
        if i not in special and t:
            ids.setdefault(t, i)
    out = {}
    for i, t in enumerate(tokens):
        if i in special or len(t) < 2:
            continue
        splits = [
            (ids[t[:j]], ids[t[j:]]) for j in range(1, len(t)) if t[:j] in ids and t[j:] in ids
        ]
        if splits:
            out[i] = splits
    return out


def expand(ids, expansions, p, rng, max_num_to_expand=None):
    """floor(p * len) attempts; each at a uniform position of the current list."""
    ids = list(ids)
    done = 0
    for _ in range(int(len(ids) * p)):
        if max_num_to_expand is not None and done >= max_num_to_expand:
            break
        i = int(rng.integers(len(ids)))
        if ids[i] in expansions:
            options = expansions[ids[i]]
            a, b = options[int(rng.integers(len(options)))]
            ids = [*ids[:i], a, b, *ids[i + 1 :]]
            done += 1
    return ids


def expand_bernoulli(ids, expansions, p, rng, max_depth=None):
    """Each token, and each part of a split, splits with probability p."""
    out = []

    def visit(t, depth):
        if t in expansions and (max_depth is None or depth < max_depth) and rng.random() < p:
            options = expansions[t]
            for q in options[int(rng.integers(len(options)))]:
                visit(q, depth + 1)
        else:
            out.append(t)

    for t in ids:
        visit(t, 0)
    return out


def expand_wrong(ids, expansions, p, rng):
    """A plausible mistake: positions uniform over the ORIGINAL length, not the current one."""
    ids = list(ids)
    n = len(ids)
    for _ in range(int(n * p)):
        i = int(rng.integers(n))
        if ids[i] in expansions:
            options = expansions[ids[i]]
            a, b = options[int(rng.integers(len(options)))]
            ids = [*ids[:i], a, b, *ids[i + 1 :]]
    return ids


__all__ = ["build_expansions", "expand", "expand_bernoulli", "expand_wrong", "np"]
