"""ByteSpan's global constraint on the evaluation's real entropy signal, timed as a process's
first call (a vocabulary is mostly built once per process) and as the best of the calls after it.

    python benchmarks/bytespan_first_call.py [--cache bytespan-signals] [--runs 3]

Needs the signal cache that `python benchmarks/bytespan_eval.py --data ../shared/data` writes
(its `--cache`, default `bytespan-signals`): the same training text and the same signals. Each
measurement runs in a fresh process; prints MB/s per vocabulary size and thread count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[1])
from bytespan_eval import MORPH_UDHR
from toklab import _core
from toklab.bpe import PATTERNS
from toklab.data import split_holdout

data, cache = Path(sys.argv[2]), Path(sys.argv[3])
want, threads = int(sys.argv[4]), int(sys.argv[5])
files = sorted(p for p in (data / "en").iterdir() if p.is_file())
train, _ = split_holdout([p.read_text(encoding="utf-8") for p in files], 0.05)
for code in MORPH_UDHR.values():
    train.append((data / "multi" / "udhr" / f"{code}.txt").read_text("utf-8"))
found = [p for p in sorted(cache.glob("signals-*.npz"))
         if np.load(p)["offsets"][-1] == sum(len(t.encode()) for t in train)]
if not found:
    sys.exit("no cached signals for this training text: run bytespan_eval.py first")
npz = np.load(found[0])
offs, ent = npz["offsets"], npz["entropy"]
signals = [np.ascontiguousarray(ent[offs[i] : offs[i + 1]]) for i in range(len(train))]
times = []
for _ in range(3):
    t = time.perf_counter()
    _core.global_spans(train, signals, PATTERNS["gpt2"], want - 256, 20, threads)
    times.append(time.perf_counter() - t)
print(json.dumps({"bytes": int(offs[-1]), "times": times}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--cache", type=Path, default=Path("bytespan-signals"))
    ap.add_argument("--runs", type=int, default=3, help="fresh processes per row")
    ap.add_argument("--sizes", type=int, nargs="*", default=[2048, 4096, 8192, 16384, 32768])
    args = ap.parse_args()
    print("| vocab | threads | first call MB/s (each process) | best later call MB/s |")
    print("| --- | --- | --- | --- |")
    for size in args.sizes:
        for threads in (1, 2):
            firsts, laters = [], []
            for _ in range(args.runs):
                argv = [str(HERE), str(args.data), str(args.cache), str(size), str(threads)]
                run = subprocess.run(
                    [sys.executable, "-c", CHILD, *argv],
                    capture_output=True,
                    text=True,
                )
                if run.returncode:
                    sys.exit(run.stderr.strip().splitlines()[-1])
                out = json.loads(run.stdout)
                mb = out["bytes"] / 1e6
                firsts.append(mb / out["times"][0])
                laters.append(mb / min(out["times"][1:]))
            print(
                f"| {size} | {threads} | {' / '.join(f'{x:.1f}' for x in firsts)} "
                f"(median {statistics.median(firsts):.1f}) | {max(laters):.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
