"""Small GPTs over raw bytes and over toklab BPE (4k and 16k), trained at an equal byte budget.

About 2 minutes on one H200 (README has its table): models of about 25M non-embedding
parameters (preset ``25m``: 8 layers, width 512, context 512 tokens), each reading the same
number of bytes of ../shared/data/en (the last 5% of every file held out), then scored on the
held-out text in bits per byte. Prints a table of bits per byte, tokens/s, model FLOPs
utilisation (against the GPU's dense bf16 peak) and time, and writes it as JSON.

    python benchmarks/lm_gpu.py                         # on CUDA: the real run
    python benchmarks/lm_gpu.py --smoke --device cpu    # a tiny run that checks the script

Nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import toklab
import toklab.lm as lm
from toklab.data import split_holdout

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "en")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="25m")
    ap.add_argument("--budget-bytes", type=float, default=64e6)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--vocab", type=int, nargs="*", default=[4096, 16384])
    ap.add_argument("--out", type=Path, default=Path("lm_gpu.json"))
    ap.add_argument("--smoke", action="store_true", help="tiny models, tiny budget")
    args = ap.parse_args()
    if args.smoke:
        args.preset, args.budget_bytes, args.batch_size = "tiny", 2e5, 8
    if args.device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    files = sorted(p for p in args.data.iterdir() if p.is_file())
    texts = [p.read_text(encoding="utf-8") for p in files]
    train, held = split_holdout(texts, 0.05)
    size = sum(len(t.encode()) for t in train)
    print(
        f"{len(files)} files, {size / 1e6:.1f} MB to train on, "
        f"{sum(len(t.encode()) for t in held) / 1e6:.2f} MB held out; device {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""),
        flush=True,
    )
    tokenizers: list[tuple[str, object]] = [("bytes", toklab.ByteTokenizer())]
    for v in args.vocab:
        t0 = time.perf_counter()
        tok = toklab.train_bpe(train, vocab_size=v, progress=False)
        print(f"BPE {v}: trained in {time.perf_counter() - t0:.1f} s", flush=True)
        tokenizers.append((f"bpe-{v // 1024}k", tok))

    rows = []
    for name, tok in tokenizers:
        t0 = time.perf_counter()
        run = lm.train_lm(
            tok,
            train,
            preset=args.preset,
            budget_bytes=int(args.budget_bytes),
            batch_size=args.batch_size,
            lr=args.lr,
            device=args.device,
            progress=sys.stderr.isatty(),
        )
        score = lm.evaluate(run.lm, held)
        row = {
            "tokenizer": name,
            "vocab": tok.vocab_size,  # type: ignore[attr-defined]
            "params": run.lm.model.num_params(),
            "non_embedding_params": run.lm.cfg.non_embedding_params(),
            "steps": run.steps,
            "bytes_seen": run.bytes_seen,
            "tokens_seen": run.tokens_seen,
            "train_seconds": run.seconds,
            "tokens_per_second": run.tokens_per_second,
            "mfu": run.mfu,
            "final_loss": run.final_loss,
            "bits_per_byte": score.bits_per_byte,
            "heldout_bytes_per_token": score.bytes_per_token,
            "eval_tokens_per_second": score.tokens_per_second,
            "wall_seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        mfu = f"{run.mfu:.1%}" if run.mfu is not None else "n/a"
        print(
            f"{name:>9}: {score.bits_per_byte:.4f} bits/byte, {run.tokens_per_second:,.0f} "
            f"tokens/s, MFU {mfu}, {run.steps} steps in {run.seconds:.0f} s",
            flush=True,
        )

    print("\n| tokenizer | vocab | bits per byte | bytes/token | tokens/s | MFU | train s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        print(
            f"| {r['tokenizer']} | {r['vocab']} | {r['bits_per_byte']:.4f} | "
            f"{r['heldout_bytes_per_token']:.2f} | {r['tokens_per_second']:,.0f} | {mfu} | "
            f"{r['train_seconds']:.0f} |"
        )
    args.out.write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2)
    )
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
