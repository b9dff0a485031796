"""Lester et al.'s experiment at lab scale (issue 8): train M1, a byte GPT; code text with it as
Equal-Info windows (b = 16, 256 tokens), as plain arithmetic coding (AC), and tokenise it as raw
bytes and BPE; then train one small GPT (M2) per token stream at an equal byte budget and score
bits per byte on held-out text.

The paper's claims, and what this prints to test them:
- plain AC is not learnable: M2 over AC tokens scores about what M1's code costs (its bits per
  byte stay near M1's; Lester: 1.46 = M1 at every size);
- Equal-Info is learnable: M2 over EI[16] scores well below that;
- EI needs fewer steps than bytes at the same sequence length (each token carries ~2-3 bytes):
  M2 over bytes is also trained for EI's number of steps, for an equal-steps row.

    python benchmarks/equalinfo_experiment.py                      # CPU size, ~15 min on 2 cores
    python benchmarks/equalinfo_experiment.py --scale 8 --device cuda --json ei.json

Every model is seeded; numbers are for the embedded English corpus.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from toklab.bpe import train_bpe
from toklab.bytes import ByteTokenizer
from toklab.data import default_corpus
from toklab.equalinfo import ArithmeticCoding, EqualInfo, train_m1
from toklab.lm import evaluate, train_lm
from toklab.lm.model import GPTConfig


def _docs(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size) if text[i : i + size].strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies data and budgets")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    s = args.scale
    began = time.perf_counter()

    text = next(default_corpus())  # technical English (Debian documentation), 4.8 MB
    m1_text = text[: int(1_500_000 * s)]
    m2_text = text[2_500_000 : 2_500_000 + int(800_000 * s)]
    held_text = text[-int(60_000 * max(1.0, s / 4)) :]
    m2_docs, held = _docs(m2_text, 4096), _docs(held_text, 4096)
    out: dict[str, object] = {"scale": s, "device": args.device}

    # M1: a small byte GPT whose context holds one window (32 bytes) plus the start.
    t = time.perf_counter()
    m1 = train_m1(
        _docs(m1_text, 4096),
        preset="small",
        context=33,
        budget_bytes=int(1_500_000 * s),
        seed=args.seed,
        device=args.device,
    )
    m1_eval = evaluate(m1, held)
    out["m1"] = {
        "bits_per_byte": m1_eval.bits_per_byte,
        "params": m1.model.num_params(),
        "seconds": time.perf_counter() - t,
    }
    took = time.perf_counter() - t
    print(f"M1: {m1_eval.bits_per_byte:.3f} bits/byte on held-out ({took:.0f} s)")

    ei = EqualInfo(m1, 16, 8, header=False)
    t = time.perf_counter()
    ei.prepare(m2_docs + held)  # every document coded once, in one batch
    n_bytes = sum(len(d.encode()) for d in m2_docs + held)
    out["ei_encode_bytes_per_s"] = n_bytes / (time.perf_counter() - t)
    out["ei_m1_flops_per_byte"] = ei.m1_flops_per_byte()
    print(f"EI[16] coded {n_bytes:,} bytes at {out['ei_encode_bytes_per_s']:,.0f} bytes/s")
    tokenizers = {
        "bytes": ByteTokenizer(),
        "bpe-4k": train_bpe([m1_text], vocab_size=4096, progress=False),
        "equal-info-16": ei,
        "ac": ArithmeticCoding(m1, 8, context=32),
    }
    m2_cfg = GPTConfig(vocab_size=256, n_layer=2, n_head=4, n_embd=128, context=128)
    rows = {}

    def run(name: str, tok: object, budget: int) -> dict[str, float]:
        t0 = time.perf_counter()
        cfg = GPTConfig(**{**m2_cfg.__dict__, "vocab_size": tok.vocab_size})  # type: ignore[attr-defined]
        res = train_lm(
            tok,
            m2_docs,
            config=cfg,
            budget_bytes=budget,
            batch_size=16,
            seed=args.seed,
            device=args.device,
            progress=False,
        )
        ev = evaluate(res.lm, held)
        held_tokens = sum(len(tok.encode(d)) for d in held)  # type: ignore[attr-defined]
        held_bytes = sum(len(d.encode()) for d in held)
        row = {
            "bits_per_byte": ev.bits_per_byte,
            # A model that learned nothing (uniform over the vocabulary) scores this:
            "uniform_bits_per_byte": math.log2(tok.vocab_size) * held_tokens / held_bytes,  # type: ignore[attr-defined]
            "steps": res.steps,
            "bytes_seen": res.bytes_seen,
            "bytes_per_token": res.corpus_bytes_per_token,
            "seconds": time.perf_counter() - t0,
        }
        print(
            f"M2 over {name:16s}: {ev.bits_per_byte:.3f} bits/byte "
            f"(uniform {row['uniform_bits_per_byte']:.3f}), {res.steps} steps, "
            f"{res.corpus_bytes_per_token:.2f} bytes/token ({row['seconds']:.0f} s)"
        )
        return row

    budget = int(3_200_000 * s)  # four passes over the M2 text
    for name, tok in tokenizers.items():
        rows[name] = run(name, tok, budget)
    # Equal steps: bytes trained for EI's number of steps (same batch and sequence length).
    ratio = rows["equal-info-16"]["steps"] / rows["bytes"]["steps"]
    rows["bytes@ei-steps"] = run("bytes@ei-steps", ByteTokenizer(), int(budget * ratio))
    out["m2"] = rows
    out["seconds"] = time.perf_counter() - began
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
