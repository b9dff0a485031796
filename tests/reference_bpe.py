"""A slow, readable reference for byte-level BPE, used as the test oracle for the Rust core.

Training follows the textbook loop: count every adjacent pair over all words (weighted by the
word's count), merge the most frequent, repeat. Ties break by the smaller (left bytes, right
bytes); occurrences merge left to right; a merge whose bytes already form a token reuses it.
"""

from __future__ import annotations

import itertools
from collections import Counter


def train(
    word_counts: dict[bytes, int],
    vocab_size: int,
    min_frequency: int = 1,
    max_token_length: int | None = None,
) -> tuple[list[bytes], list[tuple[int, int]]]:
    """Returns (tokens, merges): tokens[id] bytes, merges as (left, right) ids in rank order."""
    tokens = [bytes([b]) for b in range(256)]
    ids = {t: i for i, t in enumerate(tokens)}
    words = [([w[i] for i in range(len(w))], c) for w, c in word_counts.items()]
    merges: list[tuple[int, int]] = []
    while len(tokens) < vocab_size:
        pairs: Counter[tuple[int, int]] = Counter()
        for syms, count in words:
            for a, b in itertools.pairwise(syms):
                pairs[(a, b)] += count
        allowed = [
            (count, pair)
            for pair, count in pairs.items()
            if max_token_length is None
            or len(tokens[pair[0]]) + len(tokens[pair[1]]) <= max_token_length
        ]
        if not allowed:
            break
        best_count = max(c for c, _ in allowed)
        if best_count < min_frequency:
            break
        a, b = min(
            (pair for c, pair in allowed if c == best_count),
            key=lambda p: (tokens[p[0]], tokens[p[1]]),
        )
        joined = tokens[a] + tokens[b]
        if joined not in ids:
            ids[joined] = len(tokens)
            tokens.append(joined)
        new = ids[joined]
        merges.append((a, b))
        for syms, _ in words:
            i = 0
            while i < len(syms) - 1:
                if syms[i] == a and syms[i + 1] == b:
                    syms[i : i + 2] = [new]
                i += 1
    return tokens, merges


def encode_piece(piece: bytes, tokens: list[bytes], merges: list[tuple[int, int]]) -> list[int]:
    """BPE by merge rank: apply the lowest-ranked merge among adjacent pairs, leftmost first."""
    ids = {t: i for i, t in enumerate(tokens)}
    rank = {pair: r for r, pair in enumerate(merges)}
    syms = [ids[bytes([b])] for b in piece]
    while len(syms) > 1:
        candidates = [
            (rank.get((a, b), float("inf")), i) for i, (a, b) in enumerate(itertools.pairwise(syms))
        ]
        best, at = min(candidates)
        if best == float("inf"):
            break
        a, b = syms[at], syms[at + 1]
        syms[at : at + 2] = [ids[tokens[a] + tokens[b]]]
    return syms
