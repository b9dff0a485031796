"""ByteSpan speed given the signals: span finding and vocabulary building, and inference.

    python benchmarks/bench_bytespan.py [--global] [--copied]

(`--global`: the global constraint's rows alone; `--copied`: signals as one array per document,
which the global constraint copies, instead of views of one array, which it reads in place.)

Uses the embedded corpus (about 12 MB, split into paragraphs) with a synthetic per-byte signal
(the speed does not depend much on where the values come from), on all threads and on one;
each figure is the best of three runs (this machine is shared and noisy). The global
constraint is timed twice: with a 4k vocabulary, which fills after about half the bytes, so the
count changes are replayed in signal order (its slower path); and with 32k, which no random
signal fills, so that counting births proves the growth never stops and the whole corpus is
grown without ordering (the case of 16k and 32k vocabularies on corpora of this size).
Vocabulary building is timed by frequency and by seeding (half the 32k vocabulary from spans,
then the BPE fill; and the fill alone from the bytes, proportion 0).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from toklab import _core
from toklab.bpe import PATTERNS
from toklab.bytespan import train_bytespan
from toklab.data import default_corpus
from toklab.errors import TokLabWarning


def best_of(f: Callable[[], Any], runs: int = 3) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(runs):
        t = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    docs = [d for t in default_corpus() for d in t.split("\n\n") if d]
    size = sum(len(d.encode()) for d in docs)
    rng = np.random.default_rng(0)
    # Views of one array, as `byte_signals` and the signal cache give them (the global
    # constraint reads these in place; `--copied`: one array per document, which it copies).
    # The values are the same either way.
    lengths = [len(d.encode()) for d in docs]
    if "--copied" in sys.argv[1:]:
        signals = [rng.gamma(2.0, 1.0, size=n).astype(np.float32) for n in lengths]
    else:
        flat = rng.gamma(2.0, 1.0, size=size).astype(np.float32)
        offs = np.cumsum([0, *lengths])
        signals = [flat[offs[i] : offs[i + 1]] for i in range(len(docs))]
    print(f"{len(docs):,} documents, {size / 1e6:.1f} MB")
    only_global = "--global" in sys.argv[1:]
    for threads in () if only_global else (1, 0):
        label = "1 thread" if threads == 1 else "all threads"
        secs, counts = best_of(
            lambda threads=threads: _core.span_counts(docs, signals, PATTERNS["gpt2"], 1.5, threads)
        )
        print(
            f"span finding + counting ({label}): {size / secs / 1e6:.1f} MB/s, "
            f"{len(counts):,} distinct spans"
        )
    for threads in () if only_global else (1, 0):
        label = "1 thread" if threads == 1 else "all threads"
        secs, vocab = best_of(
            lambda threads=threads: train_bytespan(
                docs, vocab_size=32768, signals=signals, num_threads=threads
            )
        )
        print(
            f"train_bytespan given signals (percentile, spans, vocabulary of 32k; {label}): "
            f"{size / secs / 1e6:.1f} MB/s"
        )
    for threads in () if only_global else (1, 0):
        label = "1 thread" if threads == 1 else "all threads"
        for proportion in (0.5, 0.0):
            # Seeding: the top spans up to half the vocabulary, then BPE fills it (with
            # proportion 0, a BPE vocabulary from the bytes: the brief's "BPEWP").
            secs, _ = best_of(
                lambda threads=threads, proportion=proportion: train_bytespan(
                    docs,
                    vocab_size=32768,
                    signals=signals,
                    building="seeding",
                    proportion=proportion,
                    num_threads=threads,
                )
            )
            print(
                f"train_bytespan given signals, seeding {proportion} (32k; {label}): "
                f"{size / secs / 1e6:.1f} MB/s"
            )
    for threads in (1, 0):
        label = "1 thread" if threads == 1 else "all threads"
        # A small vocabulary fills: the growth stops part of the way, so the count changes
        # are replayed in signal order (the slower path).
        secs, small = best_of(
            lambda threads=threads: train_bytespan(
                docs, vocab_size=4096, signals=signals, constraint="global", num_threads=threads
            )
        )
        share = small.metadata["grown_share"]
        print(
            f"train_bytespan global constraint (4k vocabulary, stops after {share:.0%} of the "
            f"bytes; {label}): {size / secs / 1e6:.1f} MB/s"
        )
    for threads in (1, 0):
        label = "1 thread" if threads == 1 else "all threads"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TokLabWarning)  # random signals fill no 32k vocabulary
            secs, _ = best_of(
                lambda threads=threads: train_bytespan(
                    docs,
                    vocab_size=32768,
                    signals=signals,
                    constraint="global",
                    num_threads=threads,
                )
            )
        print(
            f"train_bytespan global constraint (growth of all {size / 1e6:.0f} MB; {label}): "
            f"{size / secs / 1e6:.1f} MB/s"
        )
    if only_global:
        return
    text = "\n\n".join(docs)
    for inference in ("longest", "bpe"):
        tok = vocab.with_inference(inference)  # type: ignore[arg-type]
        secs, ids = best_of(lambda tok=tok: tok.encode(text))
        print(
            f"{inference} inference, encoding: {size / secs / 1e6:.1f} MB/s, "
            f"{size / len(ids):.2f} bytes/token"
        )


if __name__ == "__main__":
    main()
