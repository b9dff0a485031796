"""Time to the first ids from a ``.tiktoken`` file (o200k, from the bpe-openai wheel): reading
the file, building the tokenizer, and encoding one short text, in fresh processes.

    python benchmarks/import_time.py [--runs 5]

toklab: ``BPETokenizer.from_tiktoken(path, pattern="o200k")`` then ``encode``; tiktoken:
``load_tiktoken_bpe(path)``, ``Encoding(...)`` then ``encode``. Imports are not timed. Prints the
medians (ms) of each step and of the whole.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TEXT = "Hello, world! Привет, мир! 你好，世界！"

CHILDREN = {
    "toklab": r"""
import sys, time
import toklab
t0 = time.perf_counter()
tok = toklab.BPETokenizer.from_tiktoken(sys.argv[1], pattern="o200k")
t1 = time.perf_counter()
tok.encode(sys.argv[2])
t2 = time.perf_counter()
print(1e3 * (t1 - t0), 1e3 * (t2 - t1))
""",
    "tiktoken": r"""
import sys, time
import tiktoken
from tiktoken.load import load_tiktoken_bpe
from toklab.bpe import PATTERNS
t0 = time.perf_counter()
ranks = load_tiktoken_bpe(sys.argv[1])
enc = tiktoken.Encoding("o200k", pat_str=PATTERNS["o200k"], mergeable_ranks=ranks,
                        special_tokens={})
t1 = time.perf_counter()
enc.encode(sys.argv[2])
t2 = time.perf_counter()
print(1e3 * (t1 - t0), 1e3 * (t2 - t1))
""",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("bpe-openai is not installed; it carries the o200k ranks (the bench extra)")
    packed = Path(next(iter(spec.submodule_search_locations))) / "data" / "o200k_base.tiktoken.gz"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "o200k_base.tiktoken"
        path.write_bytes(gzip.decompress(packed.read_bytes()))
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in CHILDREN}
        for _ in range(args.runs):  # alternating, so that drifts hit both
            for name, child in CHILDREN.items():
                out = subprocess.run(
                    [sys.executable, "-c", child, str(path), TEXT],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()
                times[name].append((float(out[0]), float(out[1])))
    for name, runs in times.items():
        load = statistics.median(t[0] for t in runs)
        first = statistics.median(t[1] for t in runs)
        whole = statistics.median(t[0] + t[1] for t in runs)
        print(
            f"{name:9s} read and build {load:6.0f} ms, first encode {first:6.1f} ms, "
            f"to the first ids {whole:6.0f} ms (medians of {args.runs})"
        )


if __name__ == "__main__":
    main()
