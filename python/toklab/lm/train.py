"""Training a GPT over any tokenizer, with a budget in bytes of text seen or in FLOPs.

Tokenizers are compared at equal cost: ``budget_bytes`` fixes how much text every model reads
(a tokenizer that compresses more sees the same text in fewer tokens), ``budget_flops`` fixes the
compute. The number of steps follows from the budget before training starts (so the learning
rate schedule is known): ``steps = ceil(budget_bytes / (batch_size * context * bytes_per_token))``
with the corpus's own bytes per token, or ``ceil(budget_flops / (batch_size * context *
train_flops_per_token))``. The bytes actually seen (the bytes of every target token) are counted
and reported.

The corpus becomes one stream of ids, each document preceded by the model's ``bos_id``; batches
are windows at uniformly random offsets (a seeded numpy ``Generator``); targets that are
``bos_id`` are ignored. AdamW (betas 0.9/0.95, weight decay on matrices only), linear warmup then
cosine decay to a tenth of the peak rate, gradient clipping. On CPU a seed gives bit-identical
training at a given thread count; resuming from a checkpoint continues exactly as if never
stopped.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from toklab.errors import (
    ConfigError,
    CorruptFileError,
    EmptyCorpusError,
    InvalidInputError,
    TokLabError,
    TrainingDivergedError,
)
from toklab.lm.language_model import (
    LanguageModel,
    autocast,
    check_same_tokenizer,
    model_from_checkpoint,
    read_checkpoint,
    resolve_device,
    save_checkpoint,
    utf8_length,
)
from toklab.lm.model import GPT, PRESETS, GPTConfig

__all__ = ["TrainOptions", "TrainResult", "encode_corpus", "peak_flops", "train_lm"]


@dataclass(frozen=True)
class TrainOptions:
    """Everything that determines a training run (stored in checkpoints, checked on resume)."""

    batch_size: int = 16
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int | None = None  # steps; None: 5% of the run, at most 200
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    budget_bytes: int | None = None
    budget_flops: float | None = None


@dataclass
class TrainResult:
    """What training did: the model, and the numbers for the report."""

    lm: LanguageModel
    steps: int
    tokens_seen: int
    bytes_seen: int
    flops: float
    seconds: float
    tokens_per_second: float
    final_loss: float
    corpus_bytes_per_token: float
    mfu: float | None
    options: TrainOptions
    history: list[tuple[int, float, float]] = field(default_factory=list)  # step, loss, lr

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the model)."""
        c = self.lm.cfg
        return {
            "config": c.to_dict(),
            "params": self.lm.model.num_params(),
            "non_embedding_params": c.non_embedding_params(),
            "options": asdict(self.options),
            "steps": self.steps,
            "tokens_seen": self.tokens_seen,
            "bytes_seen": self.bytes_seen,
            "flops": self.flops,
            "seconds": self.seconds,
            "tokens_per_second": self.tokens_per_second,
            "final_loss": self.final_loss,
            "corpus_bytes_per_token": self.corpus_bytes_per_token,
            "mfu": self.mfu,
            "device": str(self.lm.device),
        }


def encode_corpus(tokenizer: Any, texts: Iterable[str], bos_id: int) -> tuple[np.ndarray, int]:
    """One ``int64`` stream ``[bos, doc1..., bos, doc2...]`` and the number of text bytes.

    A file that is not UTF-8, or a text with lone surrogates (no UTF-8 bytes), raises
    :class:`~toklab.errors.InvalidInputError`."""
    parts: list[np.ndarray] = []
    n_bytes = 0
    bos = np.array([bos_id], dtype=np.int64)
    encode = getattr(tokenizer, "encode_ordinary", None) or tokenizer.encode
    documents = iter(texts)
    for k in itertools.count():
        try:
            text = next(documents)
        except StopIteration:
            break
        except UnicodeDecodeError as e:  # a corpus file read as UTF-8
            raise InvalidInputError(
                f"corpus document {k} could not be read as UTF-8 text ({e})"
            ) from None
        if not isinstance(text, str):
            raise TypeError(f"corpus documents must be str, not {type(text).__name__}")
        if not text:
            continue
        try:
            n_bytes += utf8_length(text)
        except InvalidInputError as e:
            raise InvalidInputError(f"corpus document {k}: {e}") from None
        parts.append(bos)
        parts.append(np.asarray(encode(text), dtype=np.int64))
    if not parts:
        raise EmptyCorpusError("the corpus holds no text to train on")
    return np.concatenate(parts), n_bytes


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak FLOP/s of known GPUs (for model FLOPs utilisation), else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).upper()
    for key, value in [
        ("H200", 989e12),
        ("H100", 989e12),
        ("A100", 312e12),
        ("L40S", 362e12),
        ("L4", 121e12),
        ("A10", 125e12),
        ("4090", 165e12),
    ]:
        if key in name:
            return value
    return None


def train_lm(
    tokenizer: Any,
    corpus: Any = None,
    *,
    preset: str = "small",
    config: GPTConfig | None = None,
    context: int | None = None,
    budget_bytes: int | None = None,
    budget_flops: float | None = None,
    batch_size: int = 16,
    lr: float = 1e-3,
    warmup: int | None = None,
    weight_decay: float = 0.1,
    grad_clip: float = 1.0,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool | None = None,
    text_column: str = "text",
) -> TrainResult:
    """Trains a GPT over ``tokenizer``'s ids on ``corpus``.

    Args:
        tokenizer: any toklab tokenizer (``ByteTokenizer()`` for a byte-level model).
        corpus: None (the embedded default corpus), paths or globs, a ``datasets`` dataset, or
            an iterable of ``str`` documents.
        preset: a size from :data:`~toklab.lm.model.PRESETS` (``tiny``, ``small``, ``base``,
            ``25m``), or ``config`` for any shape; ``context`` overrides the preset's.
        budget_bytes / budget_flops: bytes of text to read, or training FLOPs to spend (at most
            one; default: one pass over the corpus's bytes).
        seed: model initialisation and batch order.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (bf16 autocast there).
        checkpoint: file written every ``checkpoint_every`` steps and at the end; with
            ``resume=True`` training continues from it when it exists.
        stop_after: run at most this many steps in this call (then checkpoint), for runs in
            several sessions.
    """
    from toklab.data import iter_texts

    dev = resolve_device(device)
    if budget_bytes is not None and budget_flops is not None:
        raise ConfigError("give budget_bytes or budget_flops, not both")
    for name, v in [("budget_bytes", budget_bytes), ("budget_flops", budget_flops)]:
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise ConfigError(f"{name} must be positive and finite, got {v}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"lr must be positive and finite, got {lr}")
    check_seed(seed)
    if config is None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        shape = dict(PRESETS[preset])
        if context is not None:
            shape["context"] = context
        config = GPTConfig(vocab_size=tokenizer.vocab_size, **shape)
    elif config.vocab_size != tokenizer.vocab_size:
        raise ConfigError(
            f"config.vocab_size is {config.vocab_size}, the tokenizer has {tokenizer.vocab_size}"
        )
    options = TrainOptions(
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        weight_decay=weight_decay,
        grad_clip=grad_clip,
        seed=seed,
        budget_bytes=budget_bytes,
        budget_flops=budget_flops,
    )

    stream, n_bytes = encode_corpus(tokenizer, iter_texts(corpus, text_column), config.bos_id)
    n_text_tokens = int((stream != config.bos_id).sum())
    bytes_per_token = n_bytes / max(n_text_tokens, 1)
    window = min(config.context, len(stream) - 1)
    if window < 1:
        raise EmptyCorpusError("the corpus is too small to train on (under two tokens)")
    token_bytes = _token_byte_lengths(tokenizer, config, bytes_per_token)

    state: dict[str, Any] | None = None
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if resume and ckpt_path is not None and ckpt_path.exists():
        state = read_checkpoint(ckpt_path)
        if "training" not in state:
            raise ConfigError(f"{ckpt_path}: a model-only checkpoint; it cannot be resumed")
        model, stored = model_from_checkpoint(state, ckpt_path)
        check_same_tokenizer(tokenizer, stored, ckpt_path)
        if model.cfg != config:
            raise ConfigError(f"{ckpt_path}: trained with {model.cfg}, not {config}")
        try:
            stored_options = TrainOptions(**state["training"]["options"])
        except (KeyError, TypeError) as e:
            raise CorruptFileError(
                f"{ckpt_path}: damaged training state (options: {e}); it cannot be resumed"
            ) from None
        if stored_options != options:
            raise ConfigError(f"{ckpt_path}: trained with {stored_options}, not {options}")
    else:
        torch.manual_seed(seed)
        model = GPT(config)
    model.to(dev)

    tokens_per_step = batch_size * window
    if budget_flops is not None:
        total = math.ceil(budget_flops / (config.train_flops_per_token(window) * tokens_per_step))
    else:
        target = budget_bytes if budget_bytes is not None else n_bytes
        total = math.ceil(target / (tokens_per_step * bytes_per_token))
    total = max(total, 1)
    warm = warmup if warmup is not None else min(200, max(1, total // 20))

    opt = adamw(model, lr, weight_decay, dev)
    rng = np.random.Generator(np.random.PCG64(seed))
    step, bytes_seen, tokens_seen, seconds = 0, 0, 0, 0.0
    history: list[tuple[int, float, float]] = []
    if state is not None:
        assert ckpt_path is not None
        step, bytes_seen, tokens_seen, seconds, history = _resume(
            state["training"], opt, rng, ckpt_path
        )

    def kept() -> str:
        """What a divergence leaves: the last checkpoint written, if any."""
        if ckpt_path is None or not ckpt_path.exists():
            return ""
        return f"; {ckpt_path} still holds the last good checkpoint"

    # The last batch trained on: before weights are saved or returned, their loss on it is
    # checked (a finite loss before an update does not make the weights after it finite).
    last_batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def check_weights() -> None:
        if last_batch is None:
            return
        model.eval()  # (no dropout: the random state stays as training left it)
        with torch.no_grad():
            with autocast(dev):
                logits = model(last_batch[0])
            after = F.cross_entropy(
                logits.float().flatten(0, 1), last_batch[1].flatten(), ignore_index=-1
            )
        model.train()
        if not math.isfinite(float(after.item())):
            raise TrainingDivergedError(
                f"the weights diverged at step {step} (their loss on the last batch is "
                f"{float(after.item())}): lower lr or raise warmup{kept()}"
            )

    def save() -> None:
        check_weights()
        if ckpt_path is None:
            return
        save_checkpoint(
            ckpt_path,
            model,
            tokenizer,
            {
                "options": asdict(options),
                "optimizer": opt.state_dict(),
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "step": step,
                "total_steps": total,
                "bytes_seen": bytes_seen,
                "tokens_seen": tokens_seen,
                "seconds": seconds,
                "history": [list(h) for h in history],
            },
        )

    offsets = torch.arange(window + 1)
    stream_t = torch.from_numpy(stream)
    lengths_t = torch.from_numpy(token_bytes)
    end = total if stop_after is None else min(total, step + stop_after)
    bar = _progress_bar(progress, total, step)
    model.train()
    loss_value = float("nan")
    started = time.perf_counter()
    while step < end:
        rate = _lr_at(step, total, warm, lr, lr * options.min_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = rate
        starts = torch.from_numpy(rng.integers(0, len(stream) - window, size=batch_size))
        rows = stream_t[starts[:, None] + offsets]
        x, y = rows[:, :-1], rows[:, 1:].clone()
        y[y == config.bos_id] = -1
        bytes_seen += round(float(lengths_t[y.clamp(min=0)][y >= 0].sum()))
        tokens_seen += int((y >= 0).sum())
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        with autocast(dev):
            logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-1)
        loss_value = float(loss.item())
        if not math.isfinite(loss_value):
            raise TrainingDivergedError(
                f"the loss became {loss_value} at step {step} (learning rate {rate:.3g}): "
                f"lower lr or raise warmup{kept()}"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            # (A non-finite gradient makes non-finite weights: the next step's loss, or the
            # check before a save, stops training; no second device sync per step here.)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        last_batch = (x, y)
        step += 1
        history.append((step, loss_value, rate))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
        if checkpoint_every and step % checkpoint_every == 0 and step < end:
            seconds += time.perf_counter() - started
            started = time.perf_counter()
            save()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds += time.perf_counter() - started
    if bar is not None:
        bar.close()
    save()
    model.eval()
    flops = config.train_flops_per_token(window) * step * tokens_per_step
    peak = peak_flops(dev)
    return TrainResult(
        lm=LanguageModel(model, tokenizer, dev),
        steps=step,
        tokens_seen=tokens_seen,
        bytes_seen=bytes_seen,
        flops=flops,
        seconds=seconds,
        tokens_per_second=step * tokens_per_step / seconds if seconds > 0 else 0.0,
        final_loss=loss_value if history else float("nan"),
        corpus_bytes_per_token=bytes_per_token,
        mfu=flops / seconds / peak if peak and seconds > 0 else None,
        options=options,
        history=history,
    )


def adamw(
    model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device
) -> torch.optim.AdamW:
    """AdamW (betas 0.9/0.95) with weight decay on matrices only; fused on CUDA."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0}],
        lr=lr,
        betas=(0.9, 0.95),
        eps=1e-8,
        fused=device.type == "cuda",
    )


def check_seed(seed: Any) -> None:
    """Seeds are ints in ``0..2**64 - 1`` (what numpy's and torch's generators take)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**64:
        raise ConfigError(f"seed must be an int in 0..2**64 - 1, got {seed!r}")


def _resume(
    t: Any, opt: torch.optim.Optimizer, rng: np.random.Generator, path: Path
) -> tuple[int, int, int, float, list[tuple[int, float, float]]]:
    """Restores the optimizer and the random states from a checkpoint's training state and
    returns its counters; a damaged state raises :class:`~toklab.errors.CorruptFileError`
    (the torch random state is set last, once everything else has been read)."""
    try:
        counters = [t["step"], t["bytes_seen"], t["tokens_seen"]]
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counters):
            raise ValueError(f"step and counts must be non-negative ints, got {counters}")
        seconds = float(t["seconds"])
        history = [(int(s), float(loss), float(rate)) for s, loss, rate in t["history"]]
        torch_rng = t["torch_rng"]
        if not isinstance(torch_rng, torch.Tensor) or torch_rng.dtype != torch.uint8:
            raise ValueError("the torch random state is not a byte tensor")
        opt.load_state_dict(t["optimizer"])
        rng.bit_generator.state = t["numpy_rng"]
        torch.set_rng_state(torch_rng)
    except TokLabError:
        raise
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError) as e:
        raise CorruptFileError(
            f"{path}: damaged training state ({type(e).__name__}: {e}); it cannot be resumed"
        ) from None
    step, bytes_seen, tokens_seen = counters
    return step, bytes_seen, tokens_seen, seconds, history


def _lr_at(step: int, total: int, warmup: int, peak: float, floor: float) -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then cosine decay to ``floor``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(progress, 1.0)))


def _token_byte_lengths(tokenizer: Any, config: GPTConfig, average: float) -> np.ndarray:
    """Bytes of each id (``bos_id`` and special tokens count zero: they are not text). Codes
    whose tokens are not byte strings (Equal-Info, arithmetic coding) count the corpus's
    average bytes per token for every id."""
    specials = set(getattr(tokenizer, "special_tokens", {}).values())
    out = np.zeros(config.embedding_rows, dtype=np.float64)
    try:
        for i in range(config.vocab_size):
            if i not in specials:
                out[i] = len(tokenizer.token_bytes(i))
    except ConfigError:
        out[: config.vocab_size] = average
    return out


def _progress_bar(progress: bool | None, total: int, done: int) -> Any:
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=done, desc="training", unit="step", dynamic_ncols=True)
