"""Speed of the arithmetic coder and of Equal-Info encoding (issue 8).

The coder alone, given its CDFs, is measured in Rust (no Python, CDFs in cache):

    cargo test --release --lib arith::tests::bench_coder -- --ignored --nocapture

This script measures, on English text from the embedded corpus, with an exact order-3 n-gram
model for the probabilities:

- plain AC from logits (quantising 256 logits per byte included), MB/s;
- Equal-Info windows (b = 16, 32, 128) given M1's outputs: the coder's share (``equalinfo_cut``,
  which quantises only the rows a window uses) and end-to-end bytes/s with the n-gram M1 and
  with toklab's byte GPT (random weights of the given shape: speed does not depend on them,
  except through bytes per window, so the GPT row is reported with its bytes per window).

    python benchmarks/bench_equalinfo.py [--mb 1] [--gpt-layers 2 --gpt-width 128] [--json out]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from toklab import _core
from toklab.data import default_corpus
from toklab.equalinfo import EqualInfo, NGramByteLM


def _best(f, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=1.0, help="MB of text for the coder benchmarks")
    ap.add_argument("--gpt-layers", type=int, default=2)
    ap.add_argument("--gpt-width", type=int, default=128)
    ap.add_argument("--gpt-kb", type=float, default=8.0, help="KB of text for the GPT rows")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TORCH_THREADS", "2")))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    text = next(default_corpus())
    train = text[:2_000_000]
    n = int(args.mb * 1e6)
    data = text[3_000_000 : 3_000_000 + n].encode("utf-8")[:n]
    lm = NGramByteLM.train([train], order=3)
    t = time.perf_counter()
    lp = lm.next_byte_logprobs([data[max(0, i - 2) : i] for i in range(len(data))])
    logits = np.ascontiguousarray(lp, dtype=np.float32)
    print(f"n-gram logits for {len(data):,} bytes in {time.perf_counter() - t:.1f} s")
    mb = len(data) / 1e6
    out: dict[str, float] = {}

    _, nbits = _core.ac_encode(logits, data, 32, 14)
    out["ac_from_logits_mb_s"] = mb / _best(lambda: _core.ac_encode(logits, data, 32, 14))
    out["ngram_bits_per_byte"] = nbits / len(data)

    for w in (16, 32, 128):
        ei = EqualInfo(lm, w, 8, header=False)
        sample = data[: min(len(data), 200_000)]
        # The coder's share: equalinfo_cut timed inside windows_batch.
        cut_time = 0.0
        real_cut = _core.equalinfo_cut

        def timed(*a, _real=real_cut):
            nonlocal cut_time
            t0 = time.perf_counter()
            r = _real(*a)
            cut_time += time.perf_counter() - t0
            return r

        _core.equalinfo_cut = timed
        try:
            t0 = time.perf_counter()
            wins = ei.windows_batch([sample])[0]
            total = time.perf_counter() - t0
        finally:
            _core.equalinfo_cut = real_cut
        s_mb = len(sample) / 1e6
        out[f"ei{w}_coder_mb_s"] = s_mb / cut_time
        out[f"ei{w}_ngram_end_to_end_mb_s"] = s_mb / total
        out[f"ei{w}_bytes_per_window"] = len(sample) / len(wins)

    # Lossless decoding, per rule: 1 KB documents, counted as decoded exactly or failed (CRC).
    docs = [data[i : i + 1000].decode("utf-8", "ignore") for i in range(0, 200_000, 1000)]
    for rule in ("straddle", "lester", "lester-delay"):
        ei = EqualInfo(lm, 16, 8, rule=rule)
        ids = ei.encode_batch(docs)
        failed = 0
        for d, t in zip(docs, ids, strict=True):
            try:
                failed += ei.decode(t) != d
            except Exception:
                failed += 1
        out[f"{rule}_failed_docs_share"] = failed / len(docs)
        # Window by window: does each window decode to exactly its bytes?
        bad = total = 0
        for d in docs[:20]:
            raw = d.encode()
            pos = 0
            for value, n, escape in ei.windows_batch([raw])[0]:
                total += 1
                if escape:
                    pos += 1
                    continue
                if rule == "straddle":
                    dec = _core.WindowDecoders([value], 16, 32, 14, ei.max_window_bytes)
                    got = bytearray()
                    while dec.active():
                        lp = lm.next_byte_logprobs([bytes(got)]).astype(np.float32)
                        b = dec.step(lp)[0]
                        if b >= 0:
                            got.append(b)
                    length = len(got)
                else:
                    dec = _core.LesterDecoders(
                        [value], [len(raw) - pos], rule == "lester-delay", 16, 32, 14,
                        ei.max_window_bytes,
                    )  # fmt: skip
                    got = bytearray()
                    while dec.active():
                        lp = lm.next_byte_logprobs([bytes(got)]).astype(np.float32)
                        got.append(dec.step(lp)[0])
                    length = dec.lengths()[0]
                bad += length != n or bytes(got[:length]) != raw[pos : pos + n]
                pos += n
        out[f"{rule}_failed_windows_share"] = bad / total
        out[f"{rule}_bytes_per_token"] = sum(len(d.encode()) for d in docs) / sum(map(len, ids))

    try:
        import torch

        from toklab.bytes import ByteTokenizer
        from toklab.lm import LanguageModel
        from toklab.lm.model import GPT, GPTConfig
    except ImportError:
        print("torch is not installed: no GPT rows")
    else:
        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        cfg = GPTConfig(
            vocab_size=256,
            n_layer=args.gpt_layers,
            n_head=4,
            n_embd=args.gpt_width,
            context=33,
        )
        gpt = LanguageModel(GPT(cfg), ByteTokenizer(), device="cpu")
        ei = EqualInfo(gpt, 16, 8, header=False)
        sample = data[: int(args.gpt_kb * 1000)]
        t0 = time.perf_counter()
        wins = ei.windows_batch([sample])[0]
        dt = time.perf_counter() - t0
        out["ei16_gpt_cpu_bytes_s"] = len(sample) / dt
        out["ei16_gpt_bytes_per_window"] = len(sample) / len(wins)
        out["ei16_gpt_m1_flops_per_byte"] = ei.m1_flops_per_byte()
    for k, v in out.items():
        print(f"{k:32s} {v:12.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
