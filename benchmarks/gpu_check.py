"""The GPU checks: every CUDA path of toklab, run once on a machine with a GPU, compared with the
same computation on CPU, plus the throughputs worth reporting. Not run in CI (no GPU there).

Sections (each timed, each failure recorded without stopping the others; results are written to
``--out``/gpu_check.json after every section):

- ``lm``: a CPU-trained byte GPT scored on CPU and on CUDA (bf16 autocast there): bits per byte
  and next-token log-probabilities compared; the KV-cached incremental path against full forward
  passes on CUDA; seeded training on CUDA twice (same losses?) and its throughput.
- ``bytespan``: per-byte signals on CUDA against CPU (differences, and the vocabularies that
  each gives), signal throughput at two batch sizes and two model sizes, and ``train_bytespan``
  end to end on CUDA (byte LM trained there), then again from the cache (the byte LM and its
  signals loaded).
- ``evaluate``: ``evaluate``'s scored tokens per second with a 16k BPE vocabulary at several
  batch limits (and its defaults on CUDA), against bytes; the bits per byte must not change.
- ``byteprobs``: exact byte-level probabilities over a token GPT on CUDA against CPU.
- ``equalinfo``: Equal-Info windows coded with M1 on CUDA, decoded by a fresh coder on CUDA
  (must be exact on every text) and by a CPU copy of M1 (not guaranteed; counted).

    python benchmarks/gpu_check.py --out gpu_out                        # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gc   # checks the script
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

import toklab
from toklab.bytes import ByteTokenizer
from toklab.data import default_corpus
from toklab.lm import LanguageModel, evaluate, train_lm


def docs(text: str, size: int = 4096) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size) if text[i : i + size].strip()]


def nbytes(texts: list[str]) -> int:
    return sum(len(t.encode()) for t in texts)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dev = torch.device(args.device)
        self.q = 0.1 if args.quick else 1.0  # scales every size
        text = self.text = next(default_corpus())
        self.train_text = text[: int(8_000_000 * self.q)]
        self.held = docs(text[-int(200_000 * self.q) :])
        self.results: dict[str, Any] = {}
        self.byte_gpu: LanguageModel | None = None

    def on(self, lm: LanguageModel, device: torch.device | str) -> LanguageModel:
        """A copy of ``lm`` on ``device`` (LanguageModel moves its model in place)."""
        return LanguageModel(copy.deepcopy(lm.model).cpu(), lm.tokenizer, device=device)

    # -- sections ------------------------------------------------------------------------------

    def env(self) -> dict[str, Any]:
        r: dict[str, Any] = {
            "torch": torch.__version__,
            "cuda_build": torch.version.cuda,
            "toklab": toklab.__version__,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        }
        if self.dev.type == "cuda":
            p = torch.cuda.get_device_properties(self.dev)
            r.update(gpu=p.name, capability=f"{p.major}.{p.minor}")
            r["memory_gib"] = p.total_memory / 2**30
        return r

    def lm(self) -> dict[str, Any]:
        tok = ByteTokenizer()
        r: dict[str, Any] = {}
        train = docs(self.train_text[: int(2_000_000 * self.q)])
        cpu = train_lm(
            tok, train, preset="tiny", budget_bytes=int(300_000 * self.q) + 1000,
            device="cpu", progress=False,
        ).lm  # fmt: skip
        gpu = self.on(cpu, self.dev)
        e_cpu, e_gpu = evaluate(cpu, self.held), evaluate(gpu, self.held)
        r["bpb_cpu"], r["bpb_gpu"] = e_cpu.bits_per_byte, e_gpu.bits_per_byte
        r["bpb_rel_diff"] = abs(e_gpu.bits_per_byte / e_cpu.bits_per_byte - 1)

        rng = np.random.default_rng(0)
        data = self.held[0].encode()
        prefixes = [list(data[: int(k)]) for k in rng.integers(0, cpu.context - 1, 48)]
        a, b = cpu.next_token_logprobs(prefixes), gpu.next_token_logprobs(prefixes)
        r["next_token_max_abs_prob_diff"] = float(np.abs(np.exp(a) - np.exp(b)).max())
        r["next_token_max_abs_logprob_diff"] = float(np.abs(a - b).max())

        # The KV-cached path against full forward passes, on CUDA, over 3 rows of 40 steps.
        rows = [list(data[i * 50 : i * 50 + 41]) for i in range(3)]
        state = gpu.start([row[:1] for row in rows])
        worst = 0.0
        for t in range(1, 40):
            state.append([row[t] for row in rows])
            full = gpu.next_token_logprobs([row[: t + 1] for row in rows])
            worst = max(worst, float(np.abs(np.exp(state.logprobs) - np.exp(full)).max()))
        r["kv_vs_full_max_abs_prob_diff_gpu"] = worst

        # Seeded training on the GPU, twice, then scored.
        big = docs(self.train_text)
        runs = []
        for _ in range(2):
            res = train_lm(
                tok, big, preset="small", budget_bytes=int(8_000_000 * self.q),
                batch_size=32, device=self.dev, seed=0, progress=False,
            )  # fmt: skip
            runs.append(res)
        r["train_small"] = {
            "steps": runs[0].steps,
            "seconds": [x.seconds for x in runs],
            "tokens_per_second": [x.tokens_per_second for x in runs],
            "mfu": runs[0].mfu,
            "final_loss": [x.final_loss for x in runs],
            "same_history": [h[1] for h in runs[0].history] == [h[1] for h in runs[1].history],
            "same_weights": all(
                torch.equal(p, q)
                for p, q in zip(
                    runs[0].lm.model.state_dict().values(),
                    runs[1].lm.model.state_dict().values(),
                    strict=True,
                )
            ),
            "bpb_gpu": evaluate(runs[0].lm, self.held).bits_per_byte,
        }
        self.byte_gpu = runs[0].lm
        return r

    def bytespan(self) -> dict[str, Any]:
        from toklab.bytespan import byte_signals, train_bytespan

        r: dict[str, Any] = {}
        if self.byte_gpu is None:
            self.byte_gpu = train_lm(
                ByteTokenizer(), docs(self.train_text), preset="small",
                budget_bytes=int(4_000_000 * self.q), device=self.dev, progress=False,
            ).lm  # fmt: skip
        gpu = self.byte_gpu
        cpu = self.on(gpu, "cpu")
        sample = docs(self.train_text[: int(300_000 * self.q)])
        t = time.perf_counter()
        s_cpu = byte_signals(cpu, sample)
        r["signals_cpu_mb_s"] = nbytes(sample) / 1e6 / (time.perf_counter() - t)
        s_gpu = byte_signals(gpu, sample)
        for k, name in enumerate(("surprisal", "entropy")):
            x = np.concatenate([s[k] for s in s_cpu])
            y = np.concatenate([s[k] for s in s_gpu])
            r[f"{name}_max_abs_diff"] = float(np.abs(x - y).max())
            r[f"{name}_mean_abs_diff"] = float(np.abs(x - y).mean())
            r[f"{name}_mean"] = float(x.mean())
        vocabs = {}
        for name, sig in (("cpu", s_cpu), ("gpu", s_gpu)):
            tok = train_bytespan(
                sample, vocab_size=1024, signals=[e for _, e in sig], constraint="combined",
                progress=False,
            )  # fmt: skip
            vocabs[name] = set(map(tuple, tok.learned()))
        inter = len(vocabs["cpu"] & vocabs["gpu"])
        r["combined_1k_vocab_jaccard_cpu_gpu"] = inter / len(vocabs["cpu"] | vocabs["gpu"])

        # Throughput on the GPU, at the CPU's default batch (2^14 positions) and CUDA's (2^16),
        # for the small preset and the 25M preset (untrained: speed only).
        big = docs(self.train_text[: int(4_000_000 * self.q)])
        size = nbytes(big)
        speed = {}
        m25 = LanguageModel(
            toklab.lm.GPT(toklab.lm.GPTConfig(vocab_size=256, **toklab.lm.PRESETS["25m"])),
            ByteTokenizer(),
            device=self.dev,
        )
        models = [("small", gpu)] + ([] if self.args.quick else [("25m", m25)])
        for label, model in models:
            for bt in (1 << 14, 1 << 16):
                byte_signals(model, big[:64], batch_tokens=bt)  # warm-up: full batches
                sync(self.dev)
                t = time.perf_counter()
                byte_signals(model, big, batch_tokens=bt)
                sync(self.dev)
                speed[f"{label}_batch_tokens_{bt}"] = size / 1e6 / (time.perf_counter() - t)
        r["signals_gpu_mb_s"] = speed
        r["signals_bytes"] = size

        # End to end: the byte LM trained on the GPU, signals, spans, vocabulary; then again
        # from the signal cache.
        corpus = docs(self.train_text[: int(4_000_000 * self.q)])
        with tempfile.TemporaryDirectory() as cache:
            times = []
            for _ in range(2):
                t = time.perf_counter()
                tok = train_bytespan(
                    corpus, vocab_size=8192, device=str(self.dev), cache_dir=cache,
                    progress=False, lm_budget_bytes=int(4_000_000 * self.q),
                )  # fmt: skip
                times.append(time.perf_counter() - t)
            assert tok.decode(tok.encode(self.held[0])) == self.held[0]
        r["train_bytespan_8k"] = {
            "corpus_bytes": nbytes(corpus),
            "seconds_first": times[0],
            "seconds_cached": times[1],
            "held_bytes_per_token": nbytes(self.held) / sum(len(tok.encode(d)) for d in self.held),
        }
        return r

    def evaluate(self) -> dict[str, Any]:
        """``evaluate``'s speed on CUDA with a 16k BPE vocabulary (an untrained 25M GPT: speed
        only) at several batch limits, against the byte GPT; the scores must not change."""
        from toklab.lm import GPT, PRESETS, GPTConfig
        from toklab.lm.score import _batch_limits

        r: dict[str, Any] = {"default_limits": _batch_limits(self.dev, None, None)}
        held = docs(self.text[-int(1_000_000 * self.q) :])
        r["held_bytes"] = nbytes(held)
        bpe = toklab.train_bpe(docs(self.train_text[: int(2_000_000 * self.q)]), vocab_size=16384)
        torch.manual_seed(0)
        models = [
            (name, LanguageModel(GPT(GPTConfig(vocab_size=tok.vocab_size, **PRESETS["25m"])), tok,
                                 device=self.dev))
            for name, tok in (("bpe16k", bpe), ("bytes", ByteTokenizer()))
        ]  # fmt: skip
        limits = [(1 << 14, 1 << 25), (1 << 16, 1 << 25), (1 << 16, 1 << 27), (1 << 16, 1 << 28)]
        limits += [(1 << 17, 1 << 28), (None, None)]
        for name, model in models:
            rows, bpbs = {}, []
            for bt, ml in limits if name == "bpe16k" else [(None, None)]:
                evaluate(model, held[:8], batch_tokens=bt, max_logits=ml)  # warm-up
                sync(self.dev)
                t = time.perf_counter()
                e = evaluate(model, held, batch_tokens=bt, max_logits=ml)
                sync(self.dev)
                rows[f"{bt}_{ml}"] = {
                    "tokens_per_s": e.tokens / (time.perf_counter() - t),
                    "bpb": e.bits_per_byte,
                }
                bpbs.append(e.bits_per_byte)
            r[name] = rows
            r[f"{name}_bpb_max_rel_spread"] = max(bpbs) / min(bpbs) - 1
        return r

    def byteprobs(self) -> dict[str, Any]:
        from toklab.byteprobs import ByteLevelLM

        r: dict[str, Any] = {}
        train = docs(self.train_text[: int(1_000_000 * self.q)])
        bpe = toklab.train_bpe(train, vocab_size=512, progress=False)
        cpu = train_lm(
            bpe, train, preset="tiny", budget_bytes=int(300_000 * self.q) + 1000,
            device="cpu", progress=False,
        ).lm  # fmt: skip
        gpu = self.on(cpu, self.dev)
        text = self.held[0][:200]
        out = {}
        for name, lm in (("cpu", cpu), ("gpu", gpu)):
            bl = ByteLevelLM(lm, bpe)
            t = time.perf_counter()
            d = bl.distributions(text)
            lp = bl.logprob(text)
            out[name] = (d, lp, time.perf_counter() - t)
        d_cpu, lp_cpu, t_cpu = out["cpu"]
        d_gpu, lp_gpu, t_gpu = out["gpu"]
        data = text.encode()
        chain = float(sum(d_gpu[i, b] for i, b in enumerate(data)))
        r["distributions_max_abs_prob_diff"] = float(np.abs(np.exp(d_cpu) - np.exp(d_gpu)).max())
        r["logprob_cpu"], r["logprob_gpu"] = lp_cpu, lp_gpu
        r["logprob_rel_diff"] = abs(lp_gpu / lp_cpu - 1)
        r["gpu_chain_rule_gap"] = abs(chain - lp_gpu)
        r["seconds_cpu"], r["seconds_gpu"] = t_cpu, t_gpu
        r["text_bytes"] = len(data)
        return r

    def equalinfo(self) -> dict[str, Any]:
        from toklab.equalinfo import EqualInfo, train_m1
        from toklab.errors import CorruptTokensError

        r: dict[str, Any] = {}
        t = time.perf_counter()
        m1 = train_m1(
            docs(self.train_text[: int(1_500_000 * self.q)]), preset="small", context=33,
            budget_bytes=int(1_500_000 * self.q), device=str(self.dev),
        )  # fmt: skip
        r["m1_train_seconds"] = time.perf_counter() - t
        texts = docs("".join(self.held), 2048)[:48]
        size = nbytes(texts)
        t = time.perf_counter()
        toks = EqualInfo(m1, 16, 8).encode_batch(texts)
        sync(self.dev)
        r["encode_bytes_per_s"] = size / (time.perf_counter() - t)
        t = time.perf_counter()
        back = EqualInfo(m1, 16, 8).decode_bytes_batch(toks)  # a fresh coder: no shared cache
        r["decode_bytes_per_s"] = size / (time.perf_counter() - t)
        r["texts"], r["bytes"] = len(texts), size
        r["gpu_roundtrip_exact"] = sum(b == x.encode() for b, x in zip(back, texts, strict=True))
        r["bytes_per_token"] = size / sum(len(x) for x in toks)
        # Across devices (not guaranteed, Lester 3.7): a CPU copy of M1 decodes the GPU's tokens.
        cpu_ei = EqualInfo(self.on(m1, "cpu"), 16, 8)
        sub = list(range(min(len(texts), 8)))
        exact = failed = 0
        for i in sub:
            try:
                exact += cpu_ei.decode_bytes(toks[i]) == texts[i].encode()
            except CorruptTokensError:
                failed += 1
        r["cpu_decodes_gpu_tokens"] = {"texts": len(sub), "exact": exact, "corrupt_error": failed}
        same = sum(np.array_equal(cpu_ei.encode(texts[i]), toks[i]) for i in sub)
        r["cpu_encoding_identical"] = f"{same}/{len(sub)}"
        return r

    # -- driver --------------------------------------------------------------------------------

    def run(self, names: list[str]) -> int:
        failures = 0
        out = Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            t = time.perf_counter()
            print(f"== {name}", flush=True)
            try:
                res = getattr(self, name)()
                res["section_seconds"] = time.perf_counter() - t
            except Exception:
                failures += 1
                res = {"error": traceback.format_exc(), "section_seconds": time.perf_counter() - t}
            self.results[name] = res
            print(json.dumps(res, indent=1, default=str), flush=True)
            (out / "gpu_check.json").write_text(json.dumps(self.results, indent=1, default=str))
        return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="gpu_check_out")
    ap.add_argument("--quick", action="store_true", help="every size / 10 (checks the script)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument(
        "--sections",
        nargs="*",
        default=["env", "lm", "bytespan", "evaluate", "byteprobs", "equalinfo"],
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    return 1 if Check(args).run(args.sections) else 0


if __name__ == "__main__":
    sys.exit(main())
