"""A small GPT (pre-LN transformer decoder), the lab's one language model, at byte or token level.

The shape follows GPT-2 / nanoGPT: learned position embeddings, pre-LayerNorm blocks of causal
self-attention (``torch.nn.functional.scaled_dot_product_attention``) and a 4x GELU MLP, a final
LayerNorm, and an output layer tied to the token embedding. Weights start from N(0, 0.02), the
residual projections from N(0, 0.02 / sqrt(2 * n_layer)).

**Vocabulary.** The model predicts exactly the tokenizer's ``vocab_size`` ids. One more id,
``bos_id = vocab_size``, is input-only: it starts every document (and every scored window), so
that the first token of a text is predicted from something; it is never predicted, so the
output distribution is over the tokenizer's ids alone (a uniform model over bytes scores exactly
8 bits per byte). The embedding table is padded to a multiple of 64 rows for speed; padded rows
are never read out.

**KV cache.** ``forward(ids, cache)`` with a :class:`KVCache` processes only the new positions;
the log-probabilities equal those of the full forward pass (to float tolerance).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from toklab.errors import ConfigError, ContextLengthError

__all__ = ["GPT", "PRESETS", "GPTConfig", "KVCache"]


@dataclass(frozen=True)
class GPTConfig:
    """The shape of a :class:`GPT`. ``vocab_size`` is the tokenizer's; the model adds ``bos_id``."""

    vocab_size: int
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    context: int = 256
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for f in ("vocab_size", "n_layer", "n_head", "n_embd", "context"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"GPTConfig.{f} must be a positive integer, got {v!r}")
        if self.context < 2:
            # The start token takes one position: a window of one scores no token.
            raise ConfigError(f"GPTConfig.context must be at least 2, got {self.context}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def bos_id(self) -> int:
        return self.vocab_size

    @property
    def embedding_rows(self) -> int:
        return (self.vocab_size + 1 + 63) // 64 * 64

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def non_embedding_params(self) -> int:
        """Parameters outside the token and position embeddings (the usual "model size")."""
        d, layer = self.n_embd, self.n_layer
        per_block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d)
        per_block += 4 * d * d + d
        return layer * per_block + 2 * d

    def forward_flops_per_token(self, context: int | None = None) -> float:
        """Forward-pass FLOPs per token (a multiply-add counts 2): the matmuls of the blocks and
        of the output layer, plus attention scores and mixing (QK^T and AV, ``2 * t * d``
        multiply-adds per layer over a window of ``t`` positions, halved because attention is
        causal). Embedding lookups, norms and softmax are left out, as is usual."""
        t = self.context if context is None else context
        d = self.n_embd
        matmuls = self.n_layer * 12 * d * d + d * self.vocab_size
        attention = self.n_layer * t * d
        return 2.0 * (matmuls + attention)

    def train_flops_per_token(self, context: int | None = None) -> float:
        """Forward and backward: three times the forward."""
        return 3.0 * self.forward_flops_per_token(context)


#: Sizes by name. ``tiny`` is for tests; ``25m`` has about 25M non-embedding parameters.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 32, "context": 64},
    "small": {"n_layer": 4, "n_head": 4, "n_embd": 128, "context": 256},
    "base": {"n_layer": 6, "n_head": 6, "n_embd": 384, "context": 512},
    "25m": {"n_layer": 8, "n_head": 8, "n_embd": 512, "context": 512},
}


class KVCache:
    """Keys and values of the positions seen so far, per layer: ``[batch, heads, seen, dim]``.

    A *ragged* cache (from :meth:`concat`) holds rows of different lengths, left-padded:
    ``valid[batch, seen]`` marks the real positions and ``lengths[batch]`` counts them, so that
    rows of different lengths advance in one forward pass."""

    def __init__(self, n_layer: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer
        self.valid: torch.Tensor | None = None
        self.lengths: torch.Tensor | None = None

    @property
    def length(self) -> int:
        k = self.keys[0]
        return 0 if k is None else int(k.shape[2])

    @property
    def batch(self) -> int:
        k = self.keys[0]
        return 0 if k is None else int(k.shape[0])

    def select(self, rows: torch.Tensor) -> KVCache:
        """A new cache holding the given batch rows (in that order; rows may repeat)."""
        out = KVCache(len(self.keys))
        out.keys = [None if k is None else k.index_select(0, rows) for k in self.keys]
        out.values = [None if v is None else v.index_select(0, rows) for v in self.values]
        if self.valid is not None and self.lengths is not None:
            out.valid = self.valid.index_select(0, rows)
            out.lengths = self.lengths.index_select(0, rows)
        return out

    @staticmethod
    def concat(caches: list[KVCache]) -> KVCache:
        """One ragged cache of the rows of ``caches`` (non-empty ones), in order."""
        if any(c.keys[0] is None for c in caches):
            raise ValueError("cannot concatenate empty caches")
        longest = max(c.length for c in caches)
        out = KVCache(len(caches[0].keys))
        valid, lengths = [], []
        for c in caches:
            k0 = c.keys[0]
            assert k0 is not None
            pad = longest - c.length
            v = (
                c.valid
                if c.valid is not None
                else torch.ones(c.batch, c.length, dtype=torch.bool, device=k0.device)
            )
            valid.append(F.pad(v, (pad, 0), value=False))
            lengths.append(
                c.lengths
                if c.lengths is not None
                else torch.full((c.batch,), c.length, dtype=torch.long, device=k0.device)
            )
        for layer in range(len(out.keys)):
            out.keys[layer] = torch.cat(
                [F.pad(c.keys[layer], (0, 0, longest - c.length, 0)) for c in caches]  # type: ignore[arg-type]
            )
            out.values[layer] = torch.cat(
                [F.pad(c.values[layer], (0, 0, longest - c.length, 0)) for c in caches]  # type: ignore[arg-type]
            )
        out.valid = torch.cat(valid)
        out.lengths = torch.cat(lengths)
        return out


class _Attention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        past = 0
        if cache is not None:
            pk, pv = cache.keys[layer], cache.values[layer]
            if pk is not None and pv is not None:
                past = pk.shape[2]
                k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
            cache.keys[layer], cache.values[layer] = k, v
        drop = self.dropout if self.training else 0.0
        if cache is not None and cache.valid is not None:
            # Ragged rows: also hide each row's left padding.
            keys_ok = torch.cat(
                [cache.valid, torch.ones(b, t, dtype=torch.bool, device=x.device)], dim=1
            )
            causal = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(past)
            mask = keys_ok[:, None, None, :] & causal[None, None]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        elif past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=drop)
        else:
            # Query i sits at position past + i and sees keys 0..past + i.
            mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class _Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = _Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.out = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), cache, layer))
        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)))))


class GPT(nn.Module):
    """A GPT over ``cfg.vocab_size`` ids plus the input-only ``bos_id``."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.embedding_rows, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.context, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "ln" in name:
                nn.init.ones_(p)
            elif name.endswith(("attn.proj.weight", "out.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))
            else:
                nn.init.normal_(p, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits ``[batch, len, vocab_size]`` for ids ``[batch, len]`` (which may include
        ``bos_id``). With a cache, ``ids`` continue the cached positions and the cache grows."""
        return self.head(self.hidden(ids, cache))

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits of the final hidden states (the output layer, tied to the embedding)."""
        return F.linear(hidden, self.wte.weight[: self.cfg.vocab_size])

    def hidden(self, ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The final hidden states ``[batch, len, n_embd]``, before the output layer."""
        t = ids.shape[1]
        past = 0 if cache is None else cache.length
        ragged = cache is not None and cache.lengths is not None
        if ragged:
            assert cache is not None and cache.lengths is not None
            seen = int(cache.lengths.max())
            pos = cache.lengths[:, None] + torch.arange(t, device=ids.device)
        else:
            seen = past
            pos = torch.arange(past, past + t, device=ids.device)
        if seen + t > self.cfg.context:
            raise ContextLengthError(
                f"{seen + t} positions, but the model's context is {self.cfg.context}"
            )
        x = self.drop(self.wte(ids) + self.wpe(pos))
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if ragged:
            assert cache is not None and cache.valid is not None and cache.lengths is not None
            new = torch.ones(ids.shape[0], t, dtype=torch.bool, device=ids.device)
            cache.valid = torch.cat([cache.valid, new], dim=1)
            cache.lengths = cache.lengths + t
        return self.ln_f(x)
