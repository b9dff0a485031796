"""Time to the first ids from o200k's files (the ranks from the bpe-openai wheel): reading a
file, building the tokenizer, and encoding one short text, in fresh processes; and writing a
``tokenizer.json``.

    python benchmarks/import_time.py [--runs 5]

Rows, each against the library that owns the format, alternating runs of the two:

- ``.tiktoken``: toklab ``BPETokenizer.from_tiktoken(path, pattern="o200k")`` against tiktoken
  ``load_tiktoken_bpe(path)`` and ``Encoding(...)``;
- ``tokenizer.json`` (written by toklab's ``save_hf``; HF loads it): toklab
  ``BPETokenizer.from_hf(path)`` against ``tokenizers.Tokenizer.from_file(path)``;
- toklab's own JSON: ``toklab.load(path)`` (no other library reads it);
- writing ``tokenizer.json``: toklab ``save_hf`` against ``tokenizers.Tokenizer.save`` (the
  tokenizer loaded first, untimed).

Imports are not timed. Prints the medians (ms) of each step and of the whole.
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

# Each child prints the ms of building and of the first encode (or of writing, and 0).
CHILDREN = {
    ".tiktoken": {
        "toklab": r"""
import sys, time
import toklab
t0 = time.perf_counter()
tok = toklab.BPETokenizer.from_tiktoken(sys.argv[1], pattern="o200k")
t1 = time.perf_counter()
tok.encode(sys.argv[4])
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
enc.encode(sys.argv[4])
t2 = time.perf_counter()
print(1e3 * (t1 - t0), 1e3 * (t2 - t1))
""",
    },
    "tokenizer.json": {
        "toklab": r"""
import sys, time
import toklab
t0 = time.perf_counter()
tok = toklab.BPETokenizer.from_hf(sys.argv[2])
t1 = time.perf_counter()
tok.encode(sys.argv[4])
t2 = time.perf_counter()
print(1e3 * (t1 - t0), 1e3 * (t2 - t1))
""",
        "tokenizers": r"""
import sys, time
import tokenizers
t0 = time.perf_counter()
tok = tokenizers.Tokenizer.from_file(sys.argv[2])
t1 = time.perf_counter()
tok.encode(sys.argv[4], add_special_tokens=False)
t2 = time.perf_counter()
print(1e3 * (t1 - t0), 1e3 * (t2 - t1))
""",
    },
    "toklab JSON": {
        "toklab": r"""
import sys, time
import toklab
t0 = time.perf_counter()
tok = toklab.load(sys.argv[3])
t1 = time.perf_counter()
tok.encode(sys.argv[4])
t2 = time.perf_counter()
print(1e3 * (t1 - t0), 1e3 * (t2 - t1))
""",
    },
    "write tokenizer.json": {
        "toklab": r"""
import sys, time, tempfile, os
import toklab
tok = toklab.BPETokenizer.from_hf(sys.argv[2])
out = os.path.join(tempfile.mkdtemp(), "tokenizer.json")
t0 = time.perf_counter()
tok.save_hf(out)
print(1e3 * (time.perf_counter() - t0), 0)
""",
        "tokenizers": r"""
import sys, time, tempfile, os
import tokenizers
tok = tokenizers.Tokenizer.from_file(sys.argv[2])
out = os.path.join(tempfile.mkdtemp(), "tokenizer.json")
t0 = time.perf_counter()
tok.save(out)
print(1e3 * (time.perf_counter() - t0), 0)
""",
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("bpe-openai is not installed; it carries the o200k ranks (the bench extra)")
    packed = Path(next(iter(spec.submodule_search_locations))) / "data" / "o200k_base.tiktoken.gz"
    import toklab

    with tempfile.TemporaryDirectory() as tmp:
        ranks = Path(tmp) / "o200k_base.tiktoken"
        ranks.write_bytes(gzip.decompress(packed.read_bytes()))
        tok = toklab.BPETokenizer.from_tiktoken(ranks, pattern="o200k")
        hf_json, own_json = Path(tmp) / "tokenizer.json", Path(tmp) / "o200k.json"
        tok.save_hf(hf_json)
        tok.save(own_json)
        argv = [str(ranks), str(hf_json), str(own_json), TEXT]
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.runs):  # alternating, so that drifts hit both
            for row, children in CHILDREN.items():
                for name, child in children.items():
                    out = subprocess.run(
                        [sys.executable, "-c", child, *argv],
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout.split()
                    times.setdefault((row, name), []).append((float(out[0]), float(out[1])))
    for (row, name), runs in times.items():
        load = statistics.median(t[0] for t in runs)
        whole = statistics.median(t[0] + t[1] for t in runs)
        if row.startswith("write"):
            print(f"{row:20s} {name:10s} write {load:6.0f} ms (medians of {args.runs})")
            continue
        first = statistics.median(t[1] for t in runs)
        print(
            f"{row:20s} {name:10s} read and build {load:6.0f} ms, first encode {first:6.1f} ms, "
            f"to the first ids {whole:6.0f} ms (medians of {args.runs})"
        )


if __name__ == "__main__":
    main()
