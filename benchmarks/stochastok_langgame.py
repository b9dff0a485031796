"""StochasTok's claim, at small scale: pretraining with StochasTok beats deterministic BPE on
language games after fine-tuning, at similar held-out loss (Sims et al. 2025, Fig. 1).

    python benchmarks/stochastok_langgame.py              # CPU, about 15 minutes on 2 cores
    python benchmarks/stochastok_langgame.py --scale 16 --device cuda  # larger, on a GPU

1. BPE (4k) trained on ../shared/data/en (or the embedded corpus), the last 5% of each file
   held out.
2. Two GPTs of the same shape pretrained at equal compute (equal FLOPs, so equal steps): over the
   deterministic BPE ids, and over StochasTok-expanded ids (p = 0.1, expanded once per document
   as the paper did).
3. Held-out bits per byte of each (deterministic tokenization for both).
4. Both fine-tuned on LangGame questions (answers only; prompts tokenized deterministically, as
   in the paper), then scored on new questions: 4-way multiple choice by log-likelihood (the
   paper's metric) and greedy exact match, with the question tokenized three ways (base BPE,
   StochasTok, characters).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import toklab
import toklab.lm as lm
from toklab import tasks
from toklab.data import default_corpus, split_holdout
from toklab.stochastok import StochasTok

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "en")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--scale", type=float, default=2.0, help="multiplies compute and steps")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--p", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("stochastok_langgame.json"))
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    if args.device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    began = time.perf_counter()

    if args.data.is_dir():
        texts = [p.read_text(encoding="utf-8") for p in sorted(args.data.iterdir()) if p.is_file()]
    else:
        texts = list(default_corpus())
    train, held = split_holdout(texts, 0.05)
    held = [t[:150_000] for t in held]  # enough to compare, quick to score
    bpe = toklab.train_bpe(train, vocab_size=args.vocab, progress=False)
    st = StochasTok(bpe, p=args.p, seed=args.seed)
    print(
        f"BPE {bpe.vocab_size}; StochasTok expands held-out text by {st.expansion_rate(held):.1%}",
        flush=True,
    )

    cfg = lm.GPTConfig(vocab_size=bpe.vocab_size, n_layer=4, n_head=4, n_embd=128, context=128)
    flops = 1.6e13 * args.scale
    results: dict[str, dict[str, float]] = {}
    words = tasks.word_list(train, n=1000)
    train_q = tasks.langgame(words, 20_000, seed=args.seed + 1)
    test_q = tasks.langgame(words, 240, seed=args.seed + 2)
    chars = toklab.ByteTokenizer()  # toklab BPE ids 0..255 are the bytes: characters here
    ways = {"base": bpe.encode, "stochastok": lambda t: st.encode(t, seed=7), "chars": chars.encode}

    for name, tok in [("deterministic", bpe), ("stochastok", st)]:
        t0 = time.perf_counter()
        run = lm.train_lm(
            tok,
            train,
            config=cfg,
            budget_flops=flops,
            batch_size=16,
            lr=2e-3,
            seed=args.seed,
            device=args.device,
            progress=sys.stderr.isatty(),
        )
        model = lm.LanguageModel(run.lm.model, bpe, run.lm.device)  # score with plain BPE
        bpb = lm.evaluate(model, held).bits_per_byte
        print(
            f"{name}: pretrained {run.steps} steps in {run.seconds:.0f} s; held-out "
            f"{bpb:.4f} bits per byte",
            flush=True,
        )
        pairs = [(bpe.encode(q.prompt).tolist(), bpe.encode(q.answer).tolist()) for q in train_q]
        losses = lm.finetune(
            model, pairs, steps=int(400 * args.scale), batch_size=32, lr=1e-3, seed=args.seed
        )
        row: dict[str, float] = {
            "pretrain_steps": run.steps,
            "pretrain_seconds": run.seconds,
            "heldout_bits_per_byte": bpb,
            "finetune_final_loss": float(np.mean(losses[-20:])),
        }
        for way, encode in ways.items():
            correct = 0
            for q in test_q:
                options = [bpe.encode(f" {o}").tolist() for o in q.options]
                best, _ = lm.choose(model, encode(q.prompt).tolist(), options)
                correct += q.options[best] == q.answer.strip()
            row[f"mcq_{way}"] = correct / len(test_q)
            prompts = [encode(q.prompt).tolist() for q in test_q]
            outs = lm.generate(model, prompts, max_tokens=6)
            preds = [bpe.decode(o).split(".")[0].split("\n")[0].split(",")[0] for o in outs]
            row[f"exact_{way}"] = tasks.score(preds, test_q)
        row["seconds"] = time.perf_counter() - t0
        results[name] = row
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)

    print(
        "\n| pretraining | held-out bits/byte | LangGame MCQ (base / StochasTok / chars prompts) "
        "| exact match (base / StochasTok / chars) |"
    )
    print("| --- | --- | --- | --- |")
    for name, r in results.items():
        print(
            f"| {name} | {r['heldout_bits_per_byte']:.4f} | {r['mcq_base']:.3f} / "
            f"{r['mcq_stochastok']:.3f} / {r['mcq_chars']:.3f} | {r['exact_base']:.3f} / "
            f"{r['exact_stochastok']:.3f} / {r['exact_chars']:.3f} |"
        )
    print(
        f"\nchance: MCQ 0.25; {len(test_q)} test questions; "
        f"{time.perf_counter() - began:.0f} s in all"
    )
    args.out.write_text(
        json.dumps(
            {
                "args": vars(args) | {"data": str(args.data), "out": str(args.out)},
                "results": results,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
