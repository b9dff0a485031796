"""What the lab's methods ask of a language model.

Two protocols, both returning natural-log probabilities as ``float64`` numpy arrays:

- :class:`TokenLM`: ``next_token_logprobs(prefixes) -> [batch, vocab_size]``, the distribution of
  the next token after each prefix of token ids (an empty prefix means the start of a text).
- :class:`ByteLM`: ``next_byte_logprobs(prefixes) -> [batch, 256]`` or ``[batch, 257]``, the next
  byte after each prefix of bytes; column 256, where present (``has_end``), is the end of text.

Each has an incremental path for autoregressive use: ``start(prefixes)`` (or ``start_bytes``)
returns an :class:`LMState` whose ``logprobs`` are those of the next symbol; ``append`` feeds one
symbol per row and updates them, with a KV cache or carried state rather than a recomputation;
``select`` keeps, reorders or repeats rows (for beams). The incremental and full paths agree to
float tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["ByteLM", "LMState", "TokenLM"]


@runtime_checkable
class LMState(Protocol):
    """The next-symbol distributions of a batch of sequences, advanced one symbol at a time."""

    @property
    def logprobs(self) -> np.ndarray:
        """``[batch, width]`` log-probabilities of the next symbol of each row."""
        ...

    def append(self, symbols: Sequence[int]) -> None:
        """Extends row ``i`` by ``symbols[i]`` and updates ``logprobs``."""
        ...

    def select(self, rows: Sequence[int]) -> LMState:
        """A new state of the given rows, in that order (rows may repeat)."""
        ...


@runtime_checkable
class TokenLM(Protocol):
    """A language model over token ids ``0..vocab_size``."""

    @property
    def vocab_size(self) -> int: ...

    def next_token_logprobs(self, prefixes: Sequence[Sequence[int]]) -> np.ndarray: ...

    def start(self, prefixes: Sequence[Sequence[int]]) -> LMState: ...


@runtime_checkable
class ByteLM(Protocol):
    """A language model over bytes; ``has_end`` says whether column 256 (end of text) exists."""

    @property
    def has_end(self) -> bool: ...

    def next_byte_logprobs(self, prefixes: Sequence[bytes]) -> np.ndarray: ...

    def start_bytes(self, prefixes: Sequence[bytes]) -> LMState: ...
