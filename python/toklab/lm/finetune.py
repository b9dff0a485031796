"""Fine-tuning on prompt/answer pairs (loss on the answer only), greedy generation, and
multiple-choice scoring by log-likelihood: what the language games need.

Every function takes token ids, so the caller decides how prompts are tokenized (the base
tokenizer, StochasTok, characters): the point of the games.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from toklab.errors import ConfigError, ContextLengthError, InvalidInputError, TrainingDivergedError
from toklab.lm.language_model import LanguageModel, autocast, check_batch_size, check_ids
from toklab.lm.train import _lr_at, adamw, check_seed

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
    was). The learning rate warms up linearly to ``lr`` over ``warmup`` steps, then decays
    from ``lr`` to zero along a cosine over the remaining steps. ``grad_clip=0`` does not clip.
    Returns the loss of every step.

    Ids must be integers in ``0..vocab_size`` (else :class:`~toklab.errors.InvalidIdsError` or
    :class:`~toklab.errors.UnknownTokenError`); bad options raise
    :class:`~toklab.errors.ConfigError`."""
    if not pairs:
        raise ConfigError("no examples to fine-tune on")
    _check_count("steps", steps, 1)
    _check_count("warmup", warmup, 0)
    batch_size = check_batch_size(batch_size)
    _check_rate("lr", lr, positive=True)
    _check_rate("weight_decay", weight_decay, positive=False)
    _check_rate("grad_clip", grad_clip, positive=False)
    check_seed(seed)
    seqs = []
    for k, pair in enumerate(pairs):
        try:
            prompt, answer = pair
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"example {k} is not a (prompt_ids, answer_ids) pair: {pair!r}"
            ) from None
        prompt = check_ids(prompt, lm.vocab_size, f"example {k}: the prompt's token ids")
        answer = check_ids(answer, lm.vocab_size, f"example {k}: the answer's token ids")
        if not answer:
            raise ConfigError(f"example {k} has an empty answer")
        seq = [lm.cfg.bos_id, *prompt, *answer]
        if len(seq) > lm.context + 1:
            raise ContextLengthError(
                f"example {k}: {len(seq) - 1} tokens (with the document start) exceed the "
                f"model's context of {lm.context}"
            )
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
                rate = _lr_at(step, steps, warmup, lr, 0.0)
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
                if grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                opt.step()
                losses.append(value)
        finally:
            model.eval()
    return losses


def _check_count(name: str, value: Any, least: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
        raise ConfigError(f"{name} must be an int of at least {least}, got {value!r}")


def _check_rate(name: str, value: Any, *, positive: bool) -> None:
    try:
        ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
    except TypeError:
        ok = False
    if not ok:
        kind = "positive" if positive else "non-negative"
        raise ConfigError(f"{name} must be a finite {kind} number, got {value!r}")


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
    early after a token in ``stop`` (which is kept), and at most as many as the context holds
    (``context - n`` for a prompt of ``n`` tokens: the document start takes a position, the
    last token generated none), whatever else is in the batch. A prompt that does not fit the
    context raises :class:`~toklab.errors.ContextLengthError`. ``max_tokens=0`` returns an
    empty continuation for each (valid) prompt; a negative ``max_tokens`` raises
    :class:`~toklab.errors.ConfigError`."""
    _check_count("max_tokens", max_tokens, 0)
    batch_size = check_batch_size(batch_size)
    stop_set = set(check_ids(stop, lm.vocab_size, "the stop ids"))
    checked = [
        check_ids(p, lm.vocab_size, f"prompt {k}'s token ids") for k, p in enumerate(prompts)
    ]
    for k, p in enumerate(checked):
        if len(p) + 1 > lm.context:
            raise ContextLengthError(
                f"prompt {k}: {len(p)} tokens (+1 for the document start) do not fit the "
                f"model's context of {lm.context}"
            )
    out: list[list[int]] = [[] for _ in checked]
    if max_tokens == 0:
        return out
    for at in range(0, len(checked), batch_size):
        active = list(range(at, min(at + batch_size, len(checked))))  # rows, in state order
        budget = {i: min(max_tokens, lm.context - len(checked[i])) for i in active}
        state = lm.start([checked[i] for i in active])
        while True:
            nxt = [int(t) for t in state.logprobs.argmax(axis=1)]
            keep = []
            for j, i in enumerate(active):
                out[i].append(nxt[j])
                if nxt[j] not in stop_set and len(out[i]) < budget[i]:
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(active):  # finished rows leave the batch
                state = state.select(keep)
                active = [active[j] for j in keep]
                nxt = [nxt[j] for j in keep]
            state.append(nxt)
    return out


@torch.no_grad()
def choose(
    lm: LanguageModel, prompt: Sequence[int], options: Sequence[Sequence[int]]
) -> tuple[int, np.ndarray]:
    """The option with the highest total log-probability after the prompt, and every option's
    log-probability (the paper's multiple-choice scoring). Ids must be integers in
    ``0..vocab_size``; no options, or an empty one, raise :class:`~toklab.errors.ConfigError`."""
    prompt = check_ids(prompt, lm.vocab_size, "the prompt's token ids")
    checked = [
        check_ids(o, lm.vocab_size, f"option {k}'s token ids") for k, o in enumerate(options)
    ]
    if not checked:
        raise ConfigError("choose: no options to choose from")
    scores = np.zeros(len(checked))
    prefixes, owners, targets = [], [], []
    for k, opt in enumerate(checked):
        if not opt:
            raise ConfigError(f"choose: option {k} is empty (it would score log-probability 0)")
        for j, t in enumerate(opt):
            prefixes.append([*prompt, *opt[:j]])
            owners.append(k)
            targets.append(t)
    if prefixes:
        lp = lm.next_token_logprobs(prefixes)
        for row, (k, t) in enumerate(zip(owners, targets, strict=True)):
            scores[k] += lp[row, t]
    return int(np.argmax(scores)), scores
