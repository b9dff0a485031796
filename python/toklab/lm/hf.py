"""A local ``transformers`` causal LM as a :class:`~toklab.lm.protocols.TokenLM`.

Nothing is downloaded: ``HFTokenLM(directory)`` loads the model and its tokenizer with
``local_files_only=True`` (a directory written by ``save_pretrained``). Every prefix starts from
the tokenizer's BOS token (or, if it has none, its EOS token, as GPT-2 does); the incremental
path uses the model's KV cache, one per group of rows of the same length.
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from toklab.errors import ConfigError, ContextLengthError
from toklab.lm.language_model import check_ids, group_by_length, regroup, resolve_device

__all__ = ["HFTokenLM"]


class HFTokenLM:
    """A ``transformers`` causal LM (from a local directory, or already loaded objects)."""

    def __init__(
        self,
        model: str | os.PathLike[str] | Any,
        tokenizer: Any = None,
        *,
        device: str | torch.device | None = "auto",
        dtype: torch.dtype | None = None,
    ) -> None:
        import transformers

        self.device = resolve_device(device)
        if isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            if not os.path.isdir(path):
                raise ConfigError(f"{path}: not a local model directory (nothing is downloaded)")
            if tokenizer is None:
                tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                path, local_files_only=True, dtype=dtype
            )
        if tokenizer is None:
            raise ConfigError("HFTokenLM needs the model's tokenizer")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        start = tokenizer.bos_token_id
        if start is None:
            start = tokenizer.eos_token_id
        self.start_id: int | None = start
        self._vocab = int(model.get_output_embeddings().weight.shape[0])
        # transformers 5 renamed `past_key_values` to `cache` (argument and output).
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._context = getattr(model.config, "max_position_embeddings", None) or getattr(
            model.config, "n_positions", None
        )

    @property
    def vocab_size(self) -> int:
        """Columns of the model's output (may exceed the tokenizer's ids when padded)."""
        return self._vocab

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(
            self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.uint32
        )

    def _sequence(self, prefix: Sequence[int]) -> list[int]:
        ids = check_ids(prefix, self._vocab, "a prefix's token ids")
        if self.start_id is not None:
            ids = [self.start_id, *ids]
        if not ids:
            raise ConfigError("an empty prefix needs a BOS or EOS token; this tokenizer has none")
        if self._context is not None and len(ids) > self._context:
            raise ContextLengthError(
                f"{len(ids)} positions, but the model's context is {self._context}"
            )
        return ids

    @torch.no_grad()
    def next_token_logprobs(self, prefixes: Sequence[Sequence[int]]) -> np.ndarray:
        return self.start(prefixes).logprobs

    @torch.no_grad()
    def start(self, prefixes: Sequence[Sequence[int]]) -> HFState:
        seqs = [self._sequence(p) for p in prefixes]
        return HFState.start(self, seqs)


class HFState:
    """Incremental distributions of a batch, with a ``transformers`` cache per length group
    (``(rows, cache, positions seen)``: the rows of a group always have the same length)."""

    def __init__(
        self, lm: HFTokenLM, groups: list[tuple[list[int], Any, int]], lp: np.ndarray
    ) -> None:
        self._lm = lm
        self._groups = groups
        self._logprobs = lp

    @classmethod
    def start(cls, lm: HFTokenLM, seqs: list[list[int]]) -> HFState:
        lp = np.empty((len(seqs), lm.vocab_size), dtype=np.float64)
        groups = []
        for rows in group_by_length(seqs):
            ids = torch.tensor([seqs[i] for i in rows], dtype=torch.long, device=lm.device)
            out = lm.model(input_ids=ids, use_cache=True)
            lp[rows] = out.logits[:, -1].double().log_softmax(-1).cpu().numpy()
            groups.append((rows, getattr(out, lm._cache_arg), len(seqs[rows[0]])))
        return cls(lm, groups, lp)

    @property
    def logprobs(self) -> np.ndarray:
        return self._logprobs

    @property
    def length(self) -> list[int]:
        """Positions seen by each row, the start token included."""
        out = [0] * len(self._logprobs)
        for rows, _, seen in self._groups:
            for r in rows:
                out[r] = seen
        return out

    @torch.no_grad()
    def append(self, symbols: Sequence[int]) -> None:
        """Advances every row by its symbol; a row that would pass the model's context raises
        :class:`~toklab.errors.ContextLengthError` (before any row is advanced)."""
        symbols = check_ids(symbols, self._lm.vocab_size, "append: the symbols")
        if len(symbols) != len(self._logprobs):
            raise ConfigError(f"append: {len(symbols)} symbols for {len(self._logprobs)} rows")
        context = self._lm._context
        for _, _, seen in self._groups:
            if context is not None and seen + 1 > context:
                raise ContextLengthError(
                    f"append: {seen + 1} positions, but the model's context is {context}"
                )
        groups = []
        for rows, cache, seen in self._groups:
            ids = torch.tensor([[symbols[r]] for r in rows], dtype=torch.long)
            out = self._lm.model(
                input_ids=ids.to(self._lm.device), use_cache=True, **{self._lm._cache_arg: cache}
            )
            self._logprobs[rows] = out.logits[:, -1].double().log_softmax(-1).cpu().numpy()
            groups.append((rows, getattr(out, self._lm._cache_arg), seen + 1))
        self._groups = groups

    def select(self, rows: Sequence[int]) -> HFState:
        rows = [int(r) for r in rows]
        members = [m for m, _, _ in self._groups]
        groups = []
        for g, new_rows, inside in regroup(members, rows, len(self._logprobs)):
            _, cache, seen = self._groups[g]
            cache = copy.deepcopy(cache)
            cache.batch_select_indices(torch.tensor(inside, device=self._lm.device))
            groups.append((new_rows, cache, seen))
        return HFState(self._lm, groups, self._logprobs[rows].copy())
