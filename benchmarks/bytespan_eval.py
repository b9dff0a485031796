"""ByteSpan against BPE on English, with the vocabulary and the inference method told apart.

    python benchmarks/bytespan_eval.py            # CPU, about 20 minutes on 2 cores

For 8k, 16k and 32k: toklab BPE with its merges; a BPE vocabulary with greedy longest-match
inference (ByteSpan's seeding with no spans, the brief's "BPEWP"); ByteSpan by frequency (with
longest match, the paper's, and with BPE inference over the same vocabulary), by seeding
(q = 0.5), with the global constraint, and balanced across languages, all from the entropy of a
small byte GPT trained on the same text (combined constraint, 30th percentile, unless said).
Training text: ../shared/data/en (5% of each file held out) plus, with --multilingual (the
default), the UDHR of every other MorphScore v1 language (21 languages, 10-37 KB each; the only
text the shared data has in them). Scored on the held-out English: fertility (GPT-2
pre-tokens, in context), Rényi efficiency (alpha 2.5, observed types), bytes per token; and
MorphScore v1 for English and for each other language present in the training text (their
mean is reported; each language is in the JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import toklab
import toklab.lm as lm
import toklab.metrics as m
from toklab.bytespan import cached_signals, train_bytespan
from toklab.data import split_holdout
from toklab.errors import TokLabWarning

ROOT = Path(__file__).resolve().parent.parent

#: MorphScore v1 languages other than English, and their UDHR text in ../shared/data/multi/udhr.
MORPH_UDHR = {
    "armenian": "hye",
    "basque": "eus",
    "bulgarian": "bul",
    "cebuano": "ceb",
    "georgian": "kat",
    "greek": "ell_monotonic",
    "gujarati": "guj",
    "hungarian": "hun",
    "icelandic": "isl",
    "indonesian": "ind",
    "irish": "gle",
    "japanese": "jpn",
    "korean": "kor",
    "kurdish": "kmr",
    "persian": "pes_1",
    "slovenian": "slv",
    "spanish": "spa",
    "tamil": "tam",
    "turkish": "tur",
    "urdu": "urd",
    "zulu": "zul",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--lm-budget", type=float, default=8e6)
    ap.add_argument("--sizes", type=int, nargs="*", default=[8192, 16384, 32768])
    ap.add_argument("--cache", type=Path, default=Path("bytespan-signals"))
    ap.add_argument("--out", type=Path, default=Path("bytespan_eval.json"))
    ap.add_argument(
        "--multilingual",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add the UDHR of the other MorphScore languages to the training text",
    )
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    began = time.perf_counter()
    files = sorted(p for p in (args.data / "en").iterdir() if p.is_file())
    train, held = split_holdout([p.read_text(encoding="utf-8") for p in files], 0.05)
    labels = ["english"] * len(train)
    if args.multilingual:
        for lang, code in MORPH_UDHR.items():
            train.append((args.data / "multi" / "udhr" / f"{code}.txt").read_text("utf-8"))
            labels.append(lang)
    gold = m.load_morphscore(args.data / "morph" / "morphscore")
    others = [lang for lang in dict.fromkeys(labels) if lang != "english" and lang in gold]
    english = gold["english"]

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
        last: dict[str, Any] = {}  # the tokenizers of this size, by name
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
            "ByteSpan frequency, BPE inference": lambda last=last: last[
                "ByteSpan frequency"
            ].with_inference("bpe"),
            "ByteSpan seeding 0.5": lambda v=v: train_bytespan(
                train, vocab_size=v, signals=signals, building="seeding", proportion=0.5
            ),
            "ByteSpan global": lambda v=v: train_bytespan(
                train, vocab_size=v, signals=signals, constraint="global"
            ),
        }
        if others:
            builders["ByteSpan balanced"] = lambda v=v: train_bytespan(
                train, vocab_size=v, signals=signals, languages=labels
            )
        for name, build in builders.items():
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TokLabWarning)
                tok = build()
            last[name] = tok
            f = m.fertility(tok, held)
            stats = m.vocabulary_stats(tok, held)
            ms = m.morphscore(tok, english)
            per_language = {lang: m.morphscore(tok, gold[lang]).score for lang in others}
            # MorphScore only counts words split in two or more tokens, and a language the
            # vocabulary hardly covers is split into bytes, at every boundary: tokens per
            # gold word tells that apart from a good segmentation.
            split = {
                lang: sum(len(tok.encode(w)) for w, _, _ in gold[lang]) / len(gold[lang])
                for lang in others
            }
            row = {
                "vocab": v,
                "tokenizer": name,
                "actual_vocab": tok.vocab_size,
                "fertility": f.fertility,
                "renyi_observed": stats["renyi_by_observed"],
                "bytes_per_token": m.compression(tok, held).bytes_per_token,
                "morphscore_en": ms.score,
                "morphscore_excluded": ms.excluded_share,
                "morphscore_others": per_language,
                "morphscore_others_mean": (
                    sum(per_language.values()) / len(per_language) if per_language else None
                ),
                "tokens_per_word_others": split,
                "tokens_per_word_others_mean": (
                    sum(split.values()) / len(split) if split else None
                ),
                "tokens_per_word_en": sum(len(tok.encode(w)) for w, _, _ in english) / len(english),
                "seconds": time.perf_counter() - t,
            }
            if "grown_share" in getattr(tok, "metadata", {}):
                row["grown_share"] = tok.metadata["grown_share"]
            rows.append(row)
            print(
                f"{v:>6} {name:<34} fertility {row['fertility']:.3f}  Rényi "
                f"{row['renyi_observed']:.3f}  MorphScore {row['morphscore_en']:.3f} "
                f"({row['morphscore_excluded']:.0%} excluded), others "
                f"{_fmt(row['morphscore_others_mean'])}  {row['seconds']:.0f} s",
                flush=True,
            )
    print(
        "\n| vocab | tokenizer | ids | fertility | Rényi (obs) | bytes/token | MorphScore en "
        f"| MorphScore, mean of {len(others)} others | tokens per gold word, others |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['vocab']} | {r['tokenizer']} | {r['actual_vocab']} | {r['fertility']:.3f} | "
            f"{r['renyi_observed']:.3f} | {r['bytes_per_token']:.3f} | "
            f"{r['morphscore_en']:.3f} | {_fmt(r['morphscore_others_mean'])} | "
            f"{_fmt(r['tokens_per_word_others_mean'])} |"
        )
    if others:
        for v in args.sizes:
            chosen = [r for r in rows if r["vocab"] == v]
            print(f"\nMorphScore by language at {v}:\n")
            print("| language | " + " | ".join(r["tokenizer"] for r in chosen) + " |")
            print("| --- " * (len(chosen) + 1) + "|")
            for lang in others:
                cells = " | ".join(_fmt(r["morphscore_others"][lang]) for r in chosen)
                print(f"| {lang} | {cells} |")
    # The global constraint's speed on this real signal (the vocabulary only, best of 3): the
    # smaller vocabularies stop part of the way, the larger ones grow every byte.
    size = sum(len(s) for s in signals)
    speed = []
    print(f"\nGlobal constraint on the entropy signal ({size / 1e6:.1f} MB), MB/s:\n")
    print("| vocab | bytes grown | 1 thread | all threads |")
    print("| --- | --- | --- | --- |")
    for v in sorted({2048, 4096, *args.sizes}):
        cells = {}
        for threads in (1, 0):
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", TokLabWarning)
                    tok = train_bytespan(
                        train,
                        vocab_size=v,
                        signals=signals,
                        constraint="global",
                        num_threads=threads,
                    )
                best = min(best, time.perf_counter() - t)
            cells[threads] = size / best / 1e6
        grown = tok.metadata["grown_share"]
        speed.append({"vocab": v, "grown_share": grown, "mb_s_1": cells[1], "mb_s_all": cells[0]})
        print(f"| {v} | {grown:.0%} | {cells[1]:.1f} | {cells[0]:.1f} |")
    print(f"\n{time.perf_counter() - began:.0f} s in all")
    args.out.write_text(json.dumps({"rows": rows, "global_speed": speed}, indent=1))
    return 0


def _fmt(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.3f}"


if __name__ == "__main__":
    sys.exit(main())
