"""ByteSpan against BPE on English, with the vocabulary and the inference method told apart.

    python benchmarks/bytespan_eval.py            # CPU, about 10 minutes on 2 cores

For 8k, 16k and 32k: toklab BPE with its merges; a BPE vocabulary with greedy longest-match
inference (ByteSpan's seeding with no spans, the brief's "BPEWP"); ByteSpan by frequency and by
seeding (q = 0.5), from the entropy of a small byte GPT trained on the same text (combined
constraint, 30th percentile). All on ../shared/data/en (5% of each file held out), scored on the
held-out text: fertility (GPT-2 pre-tokens, in context), Rényi efficiency (alpha 2.5, observed
types), bytes per token, and MorphScore v1 for English.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

import toklab
import toklab.lm as lm
import toklab.metrics as m
from toklab.bytespan import cached_signals, train_bytespan
from toklab.data import split_holdout
from toklab.errors import TokLabWarning

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--lm-budget", type=float, default=8e6)
    ap.add_argument("--sizes", type=int, nargs="*", default=[8192, 16384, 32768])
    ap.add_argument("--cache", type=Path, default=Path("bytespan-signals"))
    ap.add_argument("--out", type=Path, default=Path("bytespan_eval.json"))
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    began = time.perf_counter()
    files = sorted(p for p in (args.data / "en").iterdir() if p.is_file())
    train, held = split_holdout([p.read_text(encoding="utf-8") for p in files], 0.05)
    english = m.load_morphscore(args.data / "morph" / "morphscore")["english"]

    run = lm.train_lm(
        toklab.ByteTokenizer(),
        train,
        preset=args.preset,
        budget_bytes=int(args.lm_budget),
        lr=2e-3,
        device=args.device,
        progress=sys.stderr.isatty(),
    )
    print(
        f"byte LM: {run.steps} steps in {run.seconds:.0f} s; held-out "
        f"{lm.evaluate(run.lm, [h[:50_000] for h in held]).bits_per_byte:.3f} bits/byte",
        flush=True,
    )
    t = time.perf_counter()
    signals = [e for _, e in cached_signals(run.lm, train, args.cache)]
    print(
        f"signals of {sum(map(len, signals)) / 1e6:.1f} MB in {time.perf_counter() - t:.0f} s",
        flush=True,
    )

    rows = []
    for v in args.sizes:
        builders = {
            "BPE (merges)": lambda v=v: toklab.train_bpe(
                train, vocab_size=v, pattern="gpt2", progress=False
            ),
            "BPE vocab, longest match": lambda v=v: train_bytespan(
                train, vocab_size=v, building="seeding", proportion=0.0
            ),
            "ByteSpan frequency": lambda v=v: train_bytespan(
                train, vocab_size=v, signals=signals, building="frequency"
            ),
            "ByteSpan seeding 0.5": lambda v=v: train_bytespan(
                train, vocab_size=v, signals=signals, building="seeding", proportion=0.5
            ),
        }
        for name, build in builders.items():
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TokLabWarning)
                tok = build()
            f = m.fertility(tok, held)
            stats = m.vocabulary_stats(tok, held)
            ms = m.morphscore(tok, english)
            row = {
                "vocab": v,
                "tokenizer": name,
                "actual_vocab": tok.vocab_size,
                "fertility": f.fertility,
                "renyi_observed": stats["renyi_by_observed"],
                "bytes_per_token": m.compression(tok, held).bytes_per_token,
                "morphscore_en": ms.score,
                "morphscore_excluded": ms.excluded_share,
                "seconds": time.perf_counter() - t,
            }
            rows.append(row)
            print(
                f"{v:>6} {name:<26} fertility {row['fertility']:.3f}  Rényi "
                f"{row['renyi_observed']:.3f}  MorphScore {row['morphscore_en']:.3f} "
                f"({row['morphscore_excluded']:.0%} excluded)  {row['seconds']:.0f} s",
                flush=True,
            )
    print("\n| vocab | tokenizer | fertility | Rényi (obs) | bytes/token | MorphScore en |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['vocab']} | {r['tokenizer']} | {r['fertility']:.3f} | "
            f"{r['renyi_observed']:.3f} | {r['bytes_per_token']:.3f} | "
            f"{r['morphscore_en']:.3f} |"
        )
    print(f"\n{time.perf_counter() - began:.0f} s in all")
    args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
