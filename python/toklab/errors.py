"""The exceptions toklab raises. Every one subclasses :class:`ValueError`, so callers that already
guard against bad input with ``except ValueError`` keep working; catch :class:`TokLabError` to
catch toklab's errors alone.

The Rust core raises these classes by name (``rust/py/mod.rs``), so rename with care.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ContextLengthError",
    "CorruptFileError",
    "CorruptTokensError",
    "DeviceError",
    "DisallowedSpecialTokenError",
    "EmptyCorpusError",
    "InvalidIdsError",
    "InvalidInputError",
    "PatternError",
    "TokLabError",
    "TokLabWarning",
    "TrainingDivergedError",
    "UnknownTokenError",
    "VocabularyMismatchError",
]


class TokLabError(ValueError):
    """Base class of every toklab error."""


class ConfigError(TokLabError):
    """Options that cannot be satisfied: a vocabulary too small, duplicate special tokens, ..."""


class PatternError(TokLabError):
    """A pre-tokenization pattern that does not compile, or that the regex engine gave up on."""


class InvalidInputError(TokLabError):
    """Input text or data that cannot be used: invalid UTF-8, a wrong type, a missing column."""


class EmptyCorpusError(InvalidInputError):
    """Training was asked for, but the corpus held no text."""


class InvalidIdsError(InvalidInputError, TypeError):
    """Token ids of the wrong type or shape (floats, booleans, 2-D arrays)."""


class UnknownTokenError(TokLabError):
    """A token id (or token) outside the vocabulary."""


class DisallowedSpecialTokenError(TokLabError):
    """Text holds a special token that the caller did not allow; the message says what to pass."""


class CorruptFileError(TokLabError):
    """A saved tokenizer that cannot be read back: truncated, edited, or of an unknown version."""


class CorruptTokensError(InvalidInputError):
    """A token stream that no encoder produced: corrupted, truncated, or meant for another model
    (Equal-Info and arithmetic-coded tokens, whose decoding can check what it reads)."""


class DeviceError(ConfigError):
    """A device that is not there (CUDA asked for on a machine without it) or not understood."""


class VocabularyMismatchError(ConfigError):
    """A model (or checkpoint) used with a tokenizer other than the one it was trained over."""


class ContextLengthError(InvalidInputError):
    """A sequence longer than a model's context."""


class TrainingDivergedError(TokLabError):
    """Training produced a non-finite loss; the last checkpoint written is still the good one."""


class TokLabWarning(UserWarning):
    """Something worked, but not quite as asked (say, a vocabulary that could not be filled)."""
