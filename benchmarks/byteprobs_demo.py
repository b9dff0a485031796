"""Exact byte-level probabilities on the lab's own GPTs (issue 9, uses): small GPTs over BPE 4k
and BPE 16k, trained on the embedded corpus, then

1. prompts that end mid-token: the log-probability of the true next byte, when the prompt is cut
   inside its last token, under the byte-level conversion against naive prompting (encode the
   cut prompt, read the first byte of the next token);
2. bits per byte of held-out text at byte level (canonical, chained next-byte probabilities)
   next to the token-level figure of the canonical encoding;
3. a mixture and a product of the two models in byte space, against each member;
4. the cost: model calls per byte and the share of time outside the model, scoring (canonical,
   and "all" with a beam of 8) and generating.

    python benchmarks/byteprobs_demo.py [--budget 2e6] [--docs 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from toklab.bpe import train_bpe
from toklab.byteprobs import ByteEnsemble, ByteLevelLM
from toklab.data import default_corpus
from toklab.lm import train_lm


def naive_next_byte(lm, tok, prompt: bytes) -> np.ndarray:
    ids = [int(i) for i in tok.encode_bytes(prompt)]
    row = lm.next_token_logprobs([ids])[0]
    out = np.full(256, -math.inf)
    for t in range(tok.vocab_size):
        b = tok.token_bytes(t)
        if b:
            out[b[0]] = np.logaddexp(out[b[0]], row[t])
    return out - np.logaddexp.reduce(out)


def naive_greedy(lm, tok, prompt: bytes, n_bytes: int) -> bytes:
    """The token LM continued greedily from the encoding of the (cut) prompt."""
    ids = [int(i) for i in tok.encode_bytes(prompt)]
    out = b""
    while len(out) < n_bytes:
        t = int(np.argmax(lm.next_token_logprobs([ids])[0]))
        ids.append(t)
        out += tok.token_bytes(t)
    return out[:n_bytes]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=2e6)
    ap.add_argument("--docs", type=int, default=8)
    ap.add_argument("--doc-bytes", type=int, default=300)
    ap.add_argument("--vocab", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    text = next(default_corpus(["shakespeare"]))
    train, held = text[:900_000], text[-40_000:]
    step = len(held) // args.docs
    docs = [held[i * step : i * step + args.doc_bytes] for i in range(args.docs)]
    out: dict[str, object] = {}
    models = {}
    for v in args.vocab:
        t = time.perf_counter()
        tok = train_bpe([train], vocab_size=v, progress=False)
        res = train_lm(
            tok, [train], preset="tiny", context=128, budget_bytes=int(args.budget), progress=False
        )
        models[v] = (res.lm, tok)
        print(f"BPE {v}: GPT trained in {time.perf_counter() - t:.0f} s")

    rng = np.random.default_rng(0)
    for v, (lm, tok) in models.items():
        blm = ByteLevelLM(lm, tok, mode="canonical")
        # 1. Prompts cut inside their last token.
        byte_lp, naive_lp, n = 0.0, 0.0, 0
        for d in docs:
            raw = d.encode()
            ids = [int(i) for i in tok.encode_bytes(raw)]
            ends = np.cumsum([len(tok.token_bytes(i)) for i in ids])
            long_tokens = [k for k in range(1, len(ids)) if ends[k] - ends[k - 1] >= 3]
            for k in rng.choice(long_tokens, size=min(4, len(long_tokens)), replace=False):
                cut = int(ends[k - 1]) + 1  # one byte into token k
                prompt, nxt = raw[:cut], raw[cut]
                byte_lp += float(blm.next_byte_logprobs([prompt])[0][nxt])
                naive_lp += float(naive_next_byte(lm, tok, prompt)[nxt])
                n += 1
        # 2. Bits per byte, byte level and token level.
        nbytes = sum(len(d.encode()) for d in docs)
        bl, calls, secs, inside = 0.0, 0.0, 0.0, 0.0
        for d in docs:
            bl += blm.logprob(d)
            calls += blm.stats["model_calls"]
            secs += blm.stats["seconds"]
            inside += blm.stats["seconds_in_model"]
        tl = 0.0
        for d in docs:
            ids = [int(i) for i in tok.encode_bytes(d.encode())]
            lps = lm.next_token_logprobs([ids[:j] for j in range(len(ids))])
            tl += float(sum(lps[j, ids[j]] for j in range(len(ids))))
        beam = ByteLevelLM(lm, tok, mode="all", beam=8)
        t = time.perf_counter()
        bb = sum(beam.logprob(d) for d in docs)
        beam_secs = time.perf_counter() - t
        beam_bytes = nbytes
        # Greedy continuations of prompts cut one byte into a word's token.
        examples = []
        for d in docs[:3]:
            raw = d.encode()
            cut = raw.find(b" ", 60) + 2
            if cut < 2:
                continue
            prompt = raw[:cut]
            examples.append(
                {
                    "prompt_end": prompt[-30:].decode("utf-8", "replace"),
                    "byte_level": blm.sample(prompt, max_bytes=24, temperature=0).decode(
                        "utf-8", "replace"
                    ),
                    "naive_tokens": naive_greedy(lm, tok, prompt, 24).decode("utf-8", "replace"),
                    "text": raw[cut : cut + 24].decode("utf-8", "replace"),
                }
            )
        # 3. Generating: cost per byte.
        blm.sample(docs[0][:40], max_bytes=200, temperature=0.8, seed=1)
        gen = blm.stats
        out[f"bpe{v}"] = {
            "mid_token_next_byte_logprob_byte_level": byte_lp / n,
            "mid_token_next_byte_logprob_naive": naive_lp / n,
            "mid_token_prompts": n,
            "bits_per_byte_byte_level": -bl / math.log(2) / nbytes,
            "bits_per_byte_token_level": -tl / math.log(2) / nbytes,
            "bits_per_byte_all_beam8": -bb / math.log(2) / beam_bytes,
            "score_model_calls_per_byte": calls / nbytes,
            "score_ms_per_byte": 1000 * secs / nbytes,
            "score_share_outside_model": (secs - inside) / secs,
            "beam8_ms_per_byte": 1000 * beam_secs / beam_bytes,
            "generate_model_calls_per_byte": gen["model_calls_per_byte"],
            "generate_ms_per_byte": 1000 * gen["seconds"] / gen["bytes"],
            "generate_share_outside_model": gen["share_outside_model"],
            "greedy_examples": examples,
        }
        print(f"BPE {v}: {json.dumps(out[f'bpe{v}'])}")
    # 3. Ensembles in byte space.
    members = [ByteLevelLM(lm, tok, mode="canonical") for lm, tok in models.values()]
    nbytes = sum(len(d.encode()) for d in docs)
    for rule in ("mixture", "product"):
        ens = ByteEnsemble(members, rule=rule)
        bits = -sum(ens.logprob(d) for d in docs) / math.log(2) / nbytes
        out[f"ensemble_{rule}_bits_per_byte"] = bits
        print(f"{rule}: {bits:.4f} bits per byte")
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
