"""Cost of exact byte-level probabilities outside the model (issue 9).

1. Building the Rust core for a 200k vocabulary (OpenAI's o200k ranks, carried by the
   ``bpe-openai`` wheel) and for toklab BPEs trained on the embedded corpus: the byte trie
   (``_core.VocabTrie``), canonical validity from merge ranks (``_core.Canonical``), and one
   full next-token canonicity mask (every token after a state).
2. The engine's own time per byte, with a token LM that costs nothing (a fixed random table
   indexed by the last token), so that every second counted is outside the model: scoring a
   held-out passage (canonical; all with a beam of 8) and generating.

    python benchmarks/bench_byteprobs.py [--bytes 400] [--json out.json]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import tempfile
import time

import numpy as np

from toklab import _core
from toklab.bpe import BPETokenizer, train_bpe
from toklab.byteprobs import ByteLevelLM
from toklab.data import default_corpus


class TableLM:
    """log P(t | prefix) = a fixed random row per last token: no model time at all."""

    def __init__(self, vocab_size: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.vocab_size = vocab_size
        rows = rng.normal(size=(max(16, min(vocab_size + 1, 2**22 // vocab_size)), vocab_size)) * 2
        self.rows = rows - np.logaddexp.reduce(rows, axis=1, keepdims=True)

    def next_token_logprobs(self, prefixes):
        return np.stack([self.rows[(p[-1] + 1) % len(self.rows) if p else 0] for p in prefixes])


def best(f, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def o200k() -> BPETokenizer | None:
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        return None
    src = os.path.join(spec.submodule_search_locations[0], "data", "o200k_base.tiktoken.gz")
    if not os.path.exists(src):
        return None
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "o200k.tiktoken")
        with gzip.open(src) as g, open(path, "wb") as f:
            f.write(g.read())
        return BPETokenizer.from_tiktoken(path, pattern="o200k")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bytes", type=int, default=400)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    text = next(default_corpus())
    passage = text[-50_000:][: args.bytes].encode()
    toks: dict[str, BPETokenizer] = {}
    for v in (4096, 16384):
        toks[f"bpe{v // 1024}k"] = train_bpe([text[:3_000_000]], vocab_size=v, progress=False)
    big = o200k()
    if big is not None:
        toks["o200k"] = big
    out: dict[str, dict[str, float]] = {}
    for name, tok in toks.items():
        row: dict[str, float] = {"vocab_size": tok.vocab_size}
        tokens = [tok.token_bytes(i) for i in range(tok.vocab_size)]
        row["trie_build_s"] = best(lambda tokens=tokens: _core.VocabTrie(tokens))
        row["canonical_build_s"] = best(lambda tok=tok: _core.Canonical(tok._core))
        canon = _core.Canonical(tok._core)
        ids = [int(i) for i in tok.encode_bytes(passage[:60])]
        every = list(range(tok.vocab_size))
        row["full_mask_s"] = best(lambda c=canon, i=ids, e=every: c.extensions(i, e))
        lm = TableLM(tok.vocab_size)
        blm = ByteLevelLM(lm, tok, mode="canonical")
        blm.logprob(passage)  # warm the caches
        blm.logprob(passage)
        row["score_canonical_ms_per_byte"] = 1000 * blm.stats["seconds"] / len(passage)
        beam = ByteLevelLM(lm, tok, mode="all", beam=8)
        beam.logprob(passage)
        row["score_all_beam8_ms_per_byte"] = 1000 * beam.stats["seconds"] / len(passage)
        blm.sample(passage[:40], max_bytes=100, seed=1)
        row["generate_canonical_ms_per_byte"] = 1000 * blm.stats["seconds"] / blm.stats["bytes"]
        out[name] = row
        print(name, json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
