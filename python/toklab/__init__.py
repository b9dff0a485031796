"""toklab: a tokenizer laboratory.

A Rust core (``toklab._core``) behind a typed Python API. Every method is a
:class:`~toklab.tokenizer.Tokenizer`; byte-level BPE is :class:`BPETokenizer`, trained with
:func:`train_bpe`.

>>> import toklab
>>> tok = toklab.train_bpe(["the cat sat on the mat"] * 10, vocab_size=268)
>>> tok.decode(tok.encode("the cat"))
'the cat'
"""

from toklab.bpe import _VERSION as __version__
from toklab.bpe import PATTERNS, BPETokenizer, count_words, train_bpe, train_bpe_from_counts
from toklab.bytes import ByteTokenizer
from toklab.errors import (
    ConfigError,
    ContextLengthError,
    CorruptFileError,
    DeviceError,
    DisallowedSpecialTokenError,
    EmptyCorpusError,
    InvalidIdsError,
    InvalidInputError,
    PatternError,
    TokLabError,
    TokLabWarning,
    TrainingDivergedError,
    UnknownTokenError,
    VocabularyMismatchError,
)
from toklab.stochastok import StochasTok
from toklab.tokenizer import Tokenizer, load, loads

__all__ = [
    "PATTERNS",
    "BPETokenizer",
    "ByteTokenizer",
    "ConfigError",
    "ContextLengthError",
    "CorruptFileError",
    "DeviceError",
    "DisallowedSpecialTokenError",
    "EmptyCorpusError",
    "InvalidIdsError",
    "InvalidInputError",
    "PatternError",
    "StochasTok",
    "TokLabError",
    "TokLabWarning",
    "Tokenizer",
    "TrainingDivergedError",
    "UnknownTokenError",
    "VocabularyMismatchError",
    "__version__",
    "count_words",
    "load",
    "loads",
    "train_bpe",
    "train_bpe_from_counts",
]
