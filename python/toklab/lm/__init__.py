"""Language models for the lab (needs the ``toklab[lm]`` extra: torch).

- :class:`GPT` / :class:`GPTConfig` / :data:`PRESETS`: the lab's small GPT, over bytes or any
  tokenizer's ids.
- :func:`train_lm`: training with a budget in bytes of text seen or in FLOPs, seeded, with
  checkpoints that resume exactly.
- :func:`evaluate`: bits per byte of held-out text, per document, with strided context.
- :class:`LanguageModel`: a trained GPT with its tokenizer; the :class:`TokenLM` (and, over
  bytes, :class:`ByteLM`) that ByteSpan, Equal-Info and byte-level probabilities consume.
- :class:`HFTokenLM`: a local ``transformers`` causal LM behind the same protocol.

>>> import toklab, toklab.lm
>>> run = toklab.lm.train_lm(toklab.ByteTokenizer(), ["abcabc" * 50], preset="tiny",
...                          budget_bytes=20_000, device="cpu", progress=False)
>>> toklab.lm.evaluate(run.lm, ["abcabc" * 5]).bits_per_byte < 8
True
"""

try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "toklab.lm needs torch: pip install 'toklab[lm]' (or pip install torch)"
    ) from e

from toklab.lm.finetune import choose, finetune, generate
from toklab.lm.hf import HFTokenLM
from toklab.lm.language_model import GPTState, LanguageModel, resolve_device
from toklab.lm.model import GPT, PRESETS, GPTConfig, KVCache
from toklab.lm.protocols import ByteLM, LMState, TokenLM
from toklab.lm.score import DocumentScore, EvalResult, evaluate
from toklab.lm.train import TrainOptions, TrainResult, encode_corpus, peak_flops, train_lm

__all__ = [
    "GPT",
    "PRESETS",
    "ByteLM",
    "DocumentScore",
    "EvalResult",
    "GPTConfig",
    "GPTState",
    "HFTokenLM",
    "KVCache",
    "LMState",
    "LanguageModel",
    "TokenLM",
    "TrainOptions",
    "TrainResult",
    "choose",
    "encode_corpus",
    "evaluate",
    "finetune",
    "generate",
    "peak_flops",
    "resolve_device",
    "train_lm",
]
