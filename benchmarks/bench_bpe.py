"""BPE speed against HF tokenizers and tiktoken, as ratios measured in the same run.

    python benchmarks/bench_bpe.py [FILES...] [--vocab-size N] [--repeat N]

With no files it uses ../shared/data/en and ../shared/data/multi/wiki_vital_fr.txt (or the
embedded default corpus). It trains one toklab tokenizer, exports it to HF and tiktoken, checks
that all three give the same ids, and times: training (toklab vs HF's BpeTrainer on the same
texts and pattern), single-text encoding, and batch encoding on all cores. Not run in CI.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import toklab


def corpus(files: list[str]) -> list[str]:
    if files:
        paths = toklab.data.expand_files(files)
    else:
        shared = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
        paths = [*sorted((shared / "en").glob("*")), shared / "multi" / "wiki_vital_fr.txt"]
        paths = [p for p in paths if p.exists()]
    if not paths:
        return list(toklab.data.default_corpus())
    return [p.read_text(encoding="utf-8") for p in paths]


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("files", nargs="*")
    ap.add_argument("--vocab-size", type=int, default=32_768)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import tiktoken
    import tokenizers
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers

    texts = corpus(args.files)
    docs = [d for t in texts for d in t.split("\n\n") if d]
    n_bytes = sum(len(t.encode()) for t in texts)
    cores = os.cpu_count()
    print(f"corpus: {n_bytes / 1e6:.1f} MB, {len(docs)} documents, {cores} cores")

    t_ours = best_of(1, lambda: toklab.train_bpe(texts, vocab_size=args.vocab_size, progress=False))
    tok = toklab.train_bpe(texts, vocab_size=args.vocab_size, progress=False)
    hf_tok = tokenizers.Tokenizer(models.BPE())
    hf_tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(toklab._hf.pattern_to_onig(tok.pattern)), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    hf_tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    t_hf_train = best_of(1, lambda: hf_tok.train_from_iterator(texts, trainer=trainer))
    print(f"train  toklab {t_ours:7.2f}s  HF {t_hf_train:7.2f}s  -> {t_hf_train / t_ours:5.2f}x")

    with tempfile.TemporaryDirectory() as d:
        tok.save_hf(Path(d) / "tokenizer.json")
        hf = tokenizers.Tokenizer.from_file(str(Path(d) / "tokenizer.json"))
    tk: tiktoken.Encoding = tok.to_tiktoken()
    sample = docs[:2000]
    assert [t.tolist() for t in tok.encode_batch(sample)] == tk.encode_ordinary_batch(sample)
    assert [e.ids for e in hf.encode_batch_fast(sample, add_special_tokens=False)] == [
        t.tolist() for t in tok.encode_batch(sample)
    ]

    big = "\n\n".join(docs)
    r = args.repeat
    ours1 = best_of(r, lambda: tok.encode_ordinary(big, num_threads=1))
    tk1 = best_of(r, lambda: tk.encode_ordinary(big))
    hf1 = best_of(1, lambda: hf.encode(big, add_special_tokens=False))
    mb = len(big.encode()) / 1e6
    print(
        f"encode 1 thread  toklab {mb / ours1:6.1f} MB/s  tiktoken {mb / tk1:6.1f} MB/s "
        f"({tk1 / ours1:4.2f}x)  HF {mb / hf1:6.1f} MB/s ({hf1 / ours1:4.2f}x)"
    )
    oursb = best_of(r, lambda: tok.encode_batch(docs))
    tkb = best_of(r, lambda: tk.encode_ordinary_batch(docs, num_threads=cores))
    hfb = best_of(r, lambda: hf.encode_batch_fast(docs, add_special_tokens=False))
    print(
        f"encode batch     toklab {mb / oursb:6.1f} MB/s  tiktoken {mb / tkb:6.1f} MB/s "
        f"({tkb / oursb:4.2f}x)  HF {mb / hfb:6.1f} MB/s ({hfb / oursb:4.2f}x)"
    )
    print(f"median doc bytes: {statistics.median(len(d) for d in docs):.0f}", file=sys.stderr)


if __name__ == "__main__":
    main()
