"""Scoring held-out text in bits per byte, the one scale on which tokenizers compare.

``bits_per_byte = sum over tokens of -log2 p(token | context) / bytes of the text``, with the
byte count taken from the text itself (``len(text.encode("utf-8"))``), never from a token count
times an assumed length. Each document starts from the model's document-start id, as in
training; the end of a document is not scored.

Documents longer than the context are scored with a strided window: windows of ``context``
positions start every ``stride`` positions (default half the context), and each window scores
only the tokens that earlier windows did not, so every token after the first window is scored
with at least ``context - stride`` tokens of context. The sums are in float64 and do not depend
on how windows are batched (beyond float rounding).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from toklab.errors import ConfigError, EmptyCorpusError, InvalidInputError
from toklab.lm.language_model import LanguageModel, autocast, utf8_length

__all__ = ["DocumentScore", "EvalResult", "evaluate"]

LN2 = math.log(2.0)


@dataclass(frozen=True)
class DocumentScore:
    bytes: int
    tokens: int
    bits: float

    @property
    def bits_per_byte(self) -> float:
        return self.bits / self.bytes if self.bytes else float("nan")


@dataclass
class EvalResult:
    """What :func:`evaluate` measured. ``tokens`` counts the scored tokens (each once, however
    many windows hold it as context), and ``tokens_per_second`` is ``tokens / seconds``: scored
    tokens per second, not window positions (a small stride runs many more positions through
    the model than it scores)."""

    bits_per_byte: float
    bits: float
    bytes: int
    tokens: int
    seconds: float
    tokens_per_second: float
    flops_per_byte: float
    documents: list[DocumentScore] = field(default_factory=list)

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / self.tokens if self.tokens else float("nan")

    @property
    def loss(self) -> float:
        """Mean negative log-likelihood per token, in nats."""
        return self.bits * LN2 / self.tokens if self.tokens else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "bits_per_byte": self.bits_per_byte,
            "bits": self.bits,
            "bytes": self.bytes,
            "tokens": self.tokens,
            "bytes_per_token": self.bytes_per_token,
            "loss_nats_per_token": self.loss,
            "seconds": self.seconds,
            "tokens_per_second": self.tokens_per_second,
            "flops_per_byte": self.flops_per_byte,
            "documents": [
                {"bytes": d.bytes, "tokens": d.tokens, "bits": d.bits, "bpb": d.bits_per_byte}
                for d in self.documents
            ],
        }


def _windows(n_tokens: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """``(start, end, first)`` over the sequence ``[bos, t_1..t_n]``: the window holds positions
    ``start..end`` and scores the targets at positions ``first..end - 1`` (position p's target
    is the token at p + 1).

    >>> _windows(10, 4, 2)
    [(0, 4, 0), (2, 6, 3), (4, 8, 5), (6, 10, 7), (8, 11, 9)]
    """
    out = []
    length = n_tokens + 1
    start, scored = 0, 0  # positions < scored have had their target scored
    while scored < n_tokens:
        end = min(start + context, length)
        out.append((start, end, scored))
        scored = end - 1
        start += stride
    return out


Window = tuple[int, int, int, int]  # (document, start, end, first), see _windows


def window_batches(
    seqs: Sequence[np.ndarray], context: int, stride: int, max_rows: Callable[[int], int]
) -> Iterator[tuple[list[Window], torch.Tensor]]:
    """The strided windows of every sequence (each ``[bos, t_1..t_n]``), shortest first, in
    batches of at most ``max_rows(width)`` rows where ``width`` is the batch's widest window
    (the width it is padded to; one row at least), with their ids right-padded with 0 (causal
    attention never lets padding reach the positions before it)."""
    jobs = [
        (d, start, end, first)
        for d, seq in enumerate(seqs)
        for start, end, first in _windows(len(seq) - 1, context, stride)
    ]
    jobs.sort(key=lambda j: j[2] - j[1])
    at = 0
    while at < len(jobs):
        # Windows come shortest first, so each one added is the widest so far.
        end = at + 1
        while end < len(jobs) and end - at < max_rows(jobs[end][2] - jobs[end][1]):
            end += 1
        batch = jobs[at:end]
        at = end
        width = batch[-1][2] - batch[-1][1]
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        for r, (d, start, end, _first) in enumerate(batch):
            ids[r, : end - start] = torch.from_numpy(np.asarray(seqs[d][start:end], np.int64))
        yield batch, ids


def _batch_limits(
    device: torch.device, batch_tokens: int | None, max_logits: int | None
) -> tuple[int, int]:
    """:func:`evaluate`'s ``batch_tokens`` and ``max_logits``, defaults filled in and checked."""
    cuda = device.type == "cuda"
    if batch_tokens is None:
        batch_tokens = 1 << 16 if cuda else 1 << 14
    if max_logits is None:
        max_logits = 1 << 25
        if cuda:
            free, _total = torch.cuda.mem_get_info(device)
            max_logits = min(max(free // 32, 1 << 25), 1 << 28)
    for name, v in (("batch_tokens", batch_tokens), ("max_logits", max_logits)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ConfigError(f"{name} must be a positive int, got {v!r}")
    return int(batch_tokens), int(max_logits)


@torch.no_grad()
def evaluate(
    lm: LanguageModel,
    texts: Iterable[str],
    *,
    stride: int | None = None,
    batch_tokens: int | None = None,
    max_logits: int | None = None,
) -> EvalResult:
    """Bits per byte of ``lm`` on ``texts`` (each one document), with per-document results.

    ``batch_tokens`` (positions per forward pass) and ``max_logits`` (logit entries held at
    once) bound memory and do not change the result beyond float rounding. Their defaults:
    on CPU 2^14 and 2^25; on CUDA 2^16 and a 32nd of the free GPU memory's bytes, between 2^25
    and 2^28 (a float32 logit and its exponential take 8 bytes, and small batches leave a GPU
    idle). A text with lone surrogates (no UTF-8 bytes) raises
    :class:`~toklab.errors.InvalidInputError`. ``tokens_per_second`` in the result counts
    scored tokens (see :class:`EvalResult`).
    """
    context = lm.context
    stride = context // 2 if stride is None else stride
    if not 1 <= stride <= context - 1 and context > 1:
        raise ConfigError(f"stride must be in 1..{context - 1}, got {stride}")
    stride = max(stride, 1)
    batch_tokens, max_logits = _batch_limits(lm.device, batch_tokens, max_logits)
    bos = lm.cfg.bos_id
    docs: list[tuple[np.ndarray, int]] = []
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts must be str, not {type(text).__name__}")
        try:
            n_bytes = utf8_length(text)
        except InvalidInputError as e:
            raise InvalidInputError(f"text {len(docs)}: {e}") from None
        ids = np.asarray(lm.encode(text), dtype=np.int64)
        docs.append((np.concatenate([[bos], ids]), n_bytes))
    if not any(n for _, n in docs):
        raise EmptyCorpusError("no text to score")

    bits = np.zeros(len(docs), dtype=np.float64)
    positions = windows = 0
    began = time.perf_counter()
    seqs = [seq for seq, _ in docs]

    def max_rows(width: int) -> int:
        return min(batch_tokens // max(width, 1), max_logits // (width * lm.vocab_size))

    for batch, ids in window_batches(seqs, context, stride, max_rows):
        targets = torch.full(ids.shape, -1, dtype=torch.long)
        for r, (d, start, end, first) in enumerate(batch):
            # position p (window offset p - start) predicts seq[p + 1]
            targets[r, first - start : end - 1 - start] = torch.from_numpy(seqs[d][first + 1 : end])
        windows += len(batch)
        positions += sum(j[2] - j[1] for j in batch)
        ids, targets = ids.to(lm.device), targets.to(lm.device)
        with autocast(lm.device):
            logits = lm.model(ids)
        # log p(target) = logit(target) - logsumexp(logits): the exponentials of the logits
        # less their row's largest (each in [0, 1]) summed in float32, the rest in float64.
        # (All of it in float64 took 8-14 times the forward pass on CPU at 16k ids; this
        # differs from it by about 1e-7 nats a token, under the float32 logits' own rounding.)
        logits = logits.float()
        top = logits.amax(-1, keepdim=True)
        sums = (logits - top).exp_().sum(-1)
        lse = top.squeeze(-1).double() + sums.double().log()
        picked = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1).double() - lse
        picked = torch.where(targets >= 0, picked, torch.zeros_like(picked))
        per_row = (-picked.sum(-1) / LN2).cpu().numpy()
        for r, (d, *_) in enumerate(batch):
            bits[d] += per_row[r]
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)
    seconds = time.perf_counter() - began
    scores = [
        DocumentScore(bytes=n, tokens=len(seq) - 1, bits=float(b))
        for (seq, n), b in zip(docs, bits, strict=True)
    ]
    total_bits = float(bits.sum())
    total_bytes = sum(s.bytes for s in scores)
    total_tokens = sum(s.tokens for s in scores)
    mean_window = positions / max(windows, 1)
    flops = lm.cfg.forward_flops_per_token(round(mean_window)) * positions
    return EvalResult(
        bits_per_byte=total_bits / total_bytes,
        bits=total_bits,
        bytes=total_bytes,
        tokens=total_tokens,
        seconds=seconds,
        tokens_per_second=total_tokens / seconds if seconds > 0 else 0.0,
        flops_per_byte=flops / total_bytes,
        documents=scores,
    )
