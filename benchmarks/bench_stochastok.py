"""StochasTok speed: building the split table, and expanding ids (one thread and all).

    python benchmarks/bench_stochastok.py

Builds the split table of a 32k toklab BPE and, when the anchor package bpe-openai is installed,
of OpenAI's o200k vocabulary (200k tokens); then expands the embedded corpus's ids (documents of
about 1000 tokens, as the paper's memmaps are read) at p = 0.1 and p = 1.0, and compares with the
paper's Python code (list slicing) on a sample.
"""

from __future__ import annotations

import gzip
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

import toklab
from toklab.data import default_corpus
from toklab.stochastok import StochasTok

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import reference_stochastok as ref


def best(f, repeat=3):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    text = "".join(default_corpus())
    bpe = toklab.train_bpe([text], vocab_size=32768, progress=False)
    secs, _ = best(lambda: toklab._core.SplitTable.from_bpe(bpe._core))
    print(f"split table, toklab BPE 32k: {secs * 1e3:.1f} ms")
    spec = importlib.util.find_spec("bpe_openai")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "data" / "o200k_base.tiktoken.gz"
        if path.exists():
            import base64

            tokens = []
            for line in gzip.decompress(path.read_bytes()).splitlines():
                tok, _rank = line.split()
                tokens.append(base64.b64decode(tok))
            secs, table = best(lambda: toklab._core.SplitTable(tokens, [False] * len(tokens)))
            s = table.stats()
            print(
                f"split table, o200k ({len(tokens):,} tokens): {secs * 1e3:.1f} ms "
                f"(including the copy from Python); {s[0]:,} splittable, {s[2]:,} splits"
            )
    ids = bpe.encode_ordinary(text)
    n = len(ids)
    offsets = np.arange(0, n, 1000, dtype=np.uint64)
    offsets = np.append(offsets, np.uint64(n))
    for p in (0.1, 1.0):
        st = StochasTok(bpe, p=p, seed=0)
        for threads in (1, 2):
            secs, (out, _) = best(
                lambda st=st, threads=threads: st.expand_batch(ids, offsets, num_threads=threads)
            )
            print(
                f"expand p={p}, {threads} thread(s): {n / secs / 1e6:.1f}M tokens/s "
                f"({n:,} tokens -> {len(out):,})"
            )
    expansions = ref.build_expansions([bpe.token_bytes(i) for i in range(bpe.vocab_size)], set())
    sample = ids[: 200 * 1000].tolist()
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for k in range(0, len(sample), 1000):
        ref.expand(sample[k : k + 1000], expansions, 0.1, rng)
    secs = time.perf_counter() - t
    print(f"the paper's Python code, p=0.1: {len(sample) / secs / 1e6:.2f}M tokens/s")


if __name__ == "__main__":
    main()
