"""Fine-tuning on prompt/answer pairs (loss on the answer only), greedy generation, and
multiple-choice scoring by log-likelihood: what the language games need.

Every function takes token ids, so the caller decides how prompts are tokenized (the base
tokenizer, StochasTok, characters): the point of the games.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from toklab.errors import ConfigError, ContextLengthError, TrainingDivergedError
from toklab.lm.language_model import LanguageModel, autocast
from toklab.lm.train import adamw

__all__ = ["choose", "finetune", "generate"]


def finetune(
    lm: LanguageModel,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 3e-4,
    warmup: int = 50,
    weight_decay: float = 0.0,
    grad_clip: float = 1.0,
    seed: int = 0,
) -> list[float]:
    """Trains ``lm`` in place on ``(prompt_ids, answer_ids)`` pairs: each sequence is the
    document start, the prompt, then the answer, and only the answer's tokens are scored.
    Batches are drawn uniformly with a seeded generator, and dropout (if the model has any)
    from torch's generators seeded with ``seed`` too (the caller's random state is left as it
    was). Returns the loss of every step."""
    if not pairs:
        raise ConfigError("no examples to fine-tune on")
    if steps < 1:
        raise ConfigError(f"steps must be positive, got {steps}")
    seqs = []
    for prompt, answer in pairs:
        seq = [lm.cfg.bos_id, *map(int, prompt), *map(int, answer)]
        if len(seq) > lm.context + 1:
            raise ContextLengthError(f"an example of {len(seq) - 1} tokens exceeds the context")
        if not answer:
            raise ConfigError("an example with an empty answer")
        seqs.append((seq, len(seq) - len(answer)))
    model, dev = lm.model, lm.device
    opt = adamw(model, lr, weight_decay, dev)
    rng = np.random.Generator(np.random.PCG64(seed))
    losses = []
    # (torch.manual_seed seeds every CUDA device: each one's state is put back.)
    cuda = range(torch.cuda.device_count()) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        model.train()
        try:
            for step in range(steps):
                rate = lr * min(1.0, (step + 1) / max(1, warmup))
                rate *= 0.5 * (1 + math.cos(math.pi * step / steps)) if step >= warmup else 1.0
                for g in opt.param_groups:
                    g["lr"] = rate
                batch = [seqs[i] for i in rng.integers(0, len(seqs), size=batch_size)]
                width = max(len(s) for s, _ in batch) - 1
                x = torch.zeros((len(batch), width), dtype=torch.long)
                y = torch.full((len(batch), width), -1, dtype=torch.long)
                for r, (s, answer_at) in enumerate(batch):
                    t = torch.tensor(s)
                    x[r, : len(s) - 1] = t[:-1]
                    # position p predicts s[p + 1]; the answer starts at index answer_at of s
                    y[r, answer_at - 1 : len(s) - 1] = t[answer_at:]
                x, y = x.to(dev), y.to(dev)
                with autocast(dev):
                    logits = model(x)
                loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-1)
                value = float(loss.item())
                if not math.isfinite(value):
                    raise TrainingDivergedError(f"fine-tuning loss became {value} at step {step}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                opt.step()
                losses.append(value)
        finally:
            model.eval()
    return losses


@torch.no_grad()
def generate(
    lm: LanguageModel,
    prompts: Sequence[Sequence[int]],
    max_tokens: int,
    *,
    stop: Sequence[int] = (),
    batch_size: int = 64,
) -> list[list[int]]:
    """Greedy continuations of each prompt (KV-cached), at most ``max_tokens`` each, ending
    early after a token in ``stop`` (which is kept)."""
    stop_set = set(int(s) for s in stop)
    out: list[list[int]] = [[] for _ in prompts]
    for at in range(0, len(prompts), batch_size):
        rows = list(range(at, min(at + batch_size, len(prompts))))
        room = lm.context - 1 - max(len(prompts[i]) for i in rows)
        steps = min(max_tokens, room)
        if steps < 1:
            raise ContextLengthError("a prompt leaves no room to generate in the context")
        state = lm.start([prompts[i] for i in rows])
        done = [False] * len(rows)
        for _ in range(steps):
            nxt = state.logprobs.argmax(axis=1)
            for j, i in enumerate(rows):
                if not done[j]:
                    out[i].append(int(nxt[j]))
                    done[j] = int(nxt[j]) in stop_set
            if all(done):
                break
            state.append([int(t) for t in nxt])
    return out


@torch.no_grad()
def choose(
    lm: LanguageModel, prompt: Sequence[int], options: Sequence[Sequence[int]]
) -> tuple[int, np.ndarray]:
    """The option with the highest total log-probability after the prompt, and every option's
    log-probability (the paper's multiple-choice scoring)."""
    scores = np.zeros(len(options))
    prefixes, owners, targets = [], [], []
    for k, opt in enumerate(options):
        for j, t in enumerate(opt):
            prefixes.append([*prompt, *opt[:j]])
            owners.append(k)
            targets.append(int(t))
    if prefixes:
        lp = lm.next_token_logprobs(prefixes)
        for row, (k, t) in enumerate(zip(owners, targets, strict=True)):
            scores[k] += lp[row, t]
    return int(np.argmax(scores)), scores
