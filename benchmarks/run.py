"""toklab's BPE against every installed anchor library: one command, one table.

    python benchmarks/run.py                 # full run: median of 3, about 45 minutes
    python benchmarks/run.py --quick         # en_10M only, one repeat, a few minutes
    python benchmarks/run.py --only encode   # train | encode | decode | batch | linear

The corpus (en_100M.txt, en_10M.txt, multi.txt) is built by ../shared/bench/make_corpus.sh into
$TOKLAB_BENCH_DATA (default /tmp/perfdata), or reused if it is there. Every measurement runs in
a fresh Python process, so peak RSS (from wait4) is that library's alone and no library warms
another's caches; times exclude interpreter start-up and imports. Ratios are anchor time over
toklab time (above 1: toklab is faster), from the same run, because absolute times on a shared
machine are noisy. Results also go to benchmarks/RESULTS.md. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("TOKLAB_BENCH_DATA", "/tmp/perfdata"))
CACHE = DATA / "toklab-bench"
MAKE_CORPUS = HERE.parent.parent / "shared" / "bench" / "make_corpus.sh"

# -- workers (run in a child process) --------------------------------------------------------


def _ranks_and_pattern(vocab: str) -> tuple[dict[bytes, int], str]:
    sys.path.insert(0, str(HERE))
    import anchors

    import toklab

    if vocab == "o200k":
        return anchors.load_o200k_ranks()
    tok = toklab.load(vocab)
    return tok.to_tiktoken_ranks(), tok.pattern


def _toklab_encoder(vocab: str):
    import toklab

    if vocab == "o200k":
        ranks, pattern = _ranks_and_pattern(vocab)
        tok = toklab.BPETokenizer.from_tiktoken(ranks, pattern=pattern)
    else:
        tok = toklab.load(vocab)
    return tok


def worker(spec: dict) -> dict:
    sys.path.insert(0, str(HERE))
    import anchors

    job, lib = spec["job"], spec["lib"]
    if job == "train":
        path, vocab_size = spec["path"], spec["vocab_size"]
        t = time.perf_counter()
        if lib == "toklab":
            import toklab

            tok = toklab.train_bpe(path, vocab_size=vocab_size, progress=False)
            if spec.get("save"):
                tok.save(spec["save"])
        else:
            anchors.TRAINERS[lib](path, vocab_size, anchors.CL100K_PATTERN)
        return {"seconds": time.perf_counter() - t}

    text = Path(spec["path"]).read_text(encoding="utf-8")
    if lib == "toklab":
        tok = _toklab_encoder(spec["vocab"])
        encode, decode = tok.encode_ordinary, tok.decode_bytes

        def encode_batch(texts, threads):
            return tok.encode_batch(texts, num_threads=threads)
    else:
        ranks, pattern = _ranks_and_pattern(spec["vocab"])
        encode, _, decode = anchors.ENCODERS[lib](ranks, pattern)
    # Every library's lazy tables (toklab's whole-token table, fastokens' pre-filled cache, ...)
    # are built before anything is timed, by the same short call.
    encode("warm up")
    out: dict = {}
    if job == "cold":
        # The first call alone (more fresh processes for the cold column's median).
        t = time.perf_counter()
        encode(text)
        out["first"] = time.perf_counter() - t
    elif job == "encode":
        # Cold: the first call on the text in a fresh process (piece caches empty). Warm: the
        # median of the calls after it, on the same text, which favours libraries that cache
        # pieces across calls.
        t = time.perf_counter()
        encode(text)
        out["first"] = time.perf_counter() - t
        times = []
        for _ in range(spec["repeat"]):
            t = time.perf_counter()
            ids = encode(text)
            times.append(time.perf_counter() - t)
        out["seconds"] = statistics.median(times)
        if lib == "toklab":
            # Parity: identical ids to tiktoken on every document (line) of the file.
            tk_encode = anchors.tiktoken_encoder(*_ranks_and_pattern(spec["vocab"]))[0]
            lines = text.splitlines(keepends=True)
            ours = tok.encode_batch(lines)
            out["documents"] = len(lines)
            out["mismatches"] = sum(a.tolist() != tk_encode(line) for a, line in zip(ours, lines))
    elif job == "decode":
        if decode is None:
            return {"error": "no decoder"}
        ids = encode(text)
        times = []
        for _ in range(spec["repeat"]):
            t = time.perf_counter()
            decode(ids)
            times.append(time.perf_counter() - t)
        out["seconds"] = statistics.median(times)
    elif job == "batch":
        # Documents: the blank-line-separated blocks of the file.
        lines = [d for d in text.split("\n\n") if d]
        out["documents"] = len(lines)
        # One warm-up call, then 1 and 2 threads alternately, so that the machine's drift in
        # speed (large on shared machines) affects both alike.
        encode_batch(lines, 1)
        times = {1: [], 2: []}
        for _ in range(spec["repeat"]):
            for threads in (1, 2):
                t = time.perf_counter()
                encode_batch(lines, threads)
                times[threads].append(time.perf_counter() - t)
        for threads, ts in times.items():
            out[f"seconds_{threads}"] = statistics.median(ts)
    elif job == "linear":
        for name, unit in [("no whitespace", "abcdefghij"), ("one character", "a")]:
            for mb in (1, 2, 5, 10):
                s = (unit * (mb * 1_000_000 // len(unit) + 1))[: mb * 1_000_000]
                t = time.perf_counter()
                encode(s)
                out[f"{name} {mb} MB"] = time.perf_counter() - t
    return out


# -- the parent: runs workers, prints tables -------------------------------------------------


def run_worker(spec: dict, timeout: float = 3600) -> dict:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    start = time.monotonic()
    _, status, usage = os.wait4(proc.pid, 0)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or time.monotonic() - start > timeout:
        tail = stderr.strip().splitlines()[-1:] or ["?"]
        return {"error": tail[0][:120]}
    result = json.loads(stdout.strip().splitlines()[-1])
    result["rss_mb"] = usage.ru_maxrss / 1024
    return result


class Report:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def table(self, title: str, header: list[str], rows: list[list[str]]) -> None:
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        fmt = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
        block = [f"### {title}", "", fmt(header), fmt(["-" * w for w in widths])]
        block += [fmt(r) for r in rows]
        print("\n".join(block) + "\n", flush=True)
        self.lines += [*block, ""]

    def note(self, text: str) -> None:
        print(text, flush=True)
        self.lines += [text, ""]


def ensure_corpus() -> None:
    if (DATA / "en_100M.txt").exists() and (DATA / "multi.txt").exists():
        return
    print(f"building the benchmark corpus into {DATA} ...", flush=True)
    subprocess.run(["bash", str(MAKE_CORPUS)], check=True)


def mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def bench_train(report: Report, quick: bool, repeat: int, libs: list[str]) -> None:
    configs = (
        [("en_10M.txt", 32_768)]
        if quick
        else [
            ("en_100M.txt", 8_192),
            ("en_100M.txt", 32_768),
            ("en_100M.txt", 65_536),
            ("multi.txt", 32_768),
        ]
    )
    sys.path.insert(0, str(HERE))
    import anchors

    for name, vocab_size in configs:
        path = DATA / name
        rows, results = [], {}
        for lib in ["toklab", *[t for t in anchors.TRAINERS if t in libs or not libs]]:
            runs = [
                run_worker(
                    {"job": "train", "lib": lib, "path": str(path), "vocab_size": vocab_size}
                )
                for _ in range(repeat)
            ]
            ok = [r for r in runs if "error" not in r]
            if not ok:
                rows.append([lib, "failed: " + runs[0]["error"], "", "", ""])
                continue
            sec = statistics.median(r["seconds"] for r in ok)
            rss = max(r["rss_mb"] for r in ok)
            results[lib] = sec
            note = anchors.NOT_COMPARABLE.get(lib, "")
            rows.append([lib, f"{sec:.2f}", f"{mb(path) / sec:.1f}", f"{rss:.0f}", note])
        base = results.get("toklab")
        for r in rows:
            if r[0] in results and base:
                r.insert(4, f"{results[r[0]] / base:.2f}x")
            elif len(r) == 5:
                r.insert(4, "")
        report.table(
            f"Training: {name} ({mb(path):.0f} MB), vocab {vocab_size}, GPT-4 pattern",
            ["library", "seconds", "MB/s", "peak RSS MB", "time / toklab's", "note"],
            rows,
        )


def trained_vocab(quick: bool) -> str:
    """The 32k toklab vocabulary (trained on en_100M) that the encoders share."""
    CACHE.mkdir(parents=True, exist_ok=True)
    source = "en_10M.txt" if quick else "en_100M.txt"
    path = CACHE / f"toklab-32k-{source}.json"
    if not path.exists():
        r = run_worker(
            {
                "job": "train",
                "lib": "toklab",
                "path": str(DATA / source),
                "vocab_size": 32_768,
                "save": str(path),
            }
        )
        if "error" in r:
            raise SystemExit(f"training the shared vocabulary failed: {r['error']}")
    return str(path)


def bench_encode(report: Report, quick: bool, repeat: int, job: str, libs: list[str]) -> None:
    sys.path.insert(0, str(HERE))
    import anchors

    vocabs = [("32k", trained_vocab(quick)), ("o200k", "o200k")]
    files = ["en_10M.txt"] if quick else ["en_10M.txt", "multi.txt"]
    for label, vocab in vocabs:
        for name in files:
            path = DATA / name
            rows, results, firsts, parity = [], {}, {}, ""
            for lib in ["toklab", *[e for e in anchors.ENCODERS if e in libs or not libs]]:
                r = run_worker(
                    {"job": job, "lib": lib, "path": str(path), "vocab": vocab, "repeat": repeat}
                )
                if "error" in r:
                    blanks = ["", "", ""] if job == "encode" else ["", ""]
                    rows.append([lib, "n/a: " + r["error"][:60], *blanks])
                    continue
                results[lib] = r["seconds"]
                row = [lib]
                if job == "encode":
                    firsts[lib] = r["first"]
                    row.append(f"{mb(path) / r['first']:.1f}")
                row += [
                    f"{r['seconds']:.3f}",
                    f"{mb(path) / r['seconds']:.1f}",
                    f"{r['rss_mb']:.0f}",
                ]
                rows.append(row)
                if "mismatches" in r:
                    parity = (
                        f"toklab vs tiktoken: {r['documents'] - r['mismatches']}/{r['documents']} "
                        "documents (lines) with identical ids"
                    )
            if job == "encode":
                # Cold calls: one sample per fresh process, `repeat` more processes per library,
                # the libraries alternating (the machine's drift hits all alike); the column is
                # their median. (Not the first calls of the jobs above: toklab's always ran
                # first, right after other work, and on the development VM the first processes
                # after other work can run their first call far slower: toklab's first call on
                # en_10M in the two processes after a batch run 66 and 82 MB/s, in the five
                # after them 112-127; memory that the host took back is slow to touch again.)
                samples = {lib: [] for lib in firsts}
                for _ in range(repeat):
                    for lib in samples:
                        spec = {"job": "cold", "lib": lib, "path": str(path), "vocab": vocab}
                        r = run_worker(spec)
                        if "first" in r:
                            samples[lib].append(r["first"])
                firsts = {lib: statistics.median(ts) for lib, ts in samples.items()}
                for row in rows:
                    if row[0] in firsts:
                        row[1] = f"{mb(path) / firsts[row[0]]:.1f}"
            base, base_first = results.get("toklab"), firsts.get("toklab")
            for row in rows:
                if job == "encode":
                    ok = row[0] in firsts and base_first
                    row.append(f"{firsts[row[0]] / base_first:.2f}x" if ok else "")
                row.append(f"{results[row[0]] / base:.2f}x" if row[0] in results and base else "")
            if job == "encode":
                header = [
                    "library",
                    "cold MB/s",
                    "warm seconds",
                    "warm MB/s",
                    "peak RSS MB",
                    "cold time / toklab's",
                    "warm time / toklab's",
                ]
                title = f"Encoding, one thread: {name} ({mb(path):.0f} MB), {label} vocabulary"
            else:
                header = ["library", "seconds", "MB/s", "peak RSS MB", "time / toklab's"]
                title = f"Decoding: {name} ({mb(path):.0f} MB), {label} vocabulary"
            report.table(title, header, rows)
            if parity:
                report.note(parity)


def bench_batch(report: Report, quick: bool, repeat: int) -> None:
    vocab = trained_vocab(quick)
    rows = []
    for name in ["en_10M.txt"] if quick else ["en_10M.txt", "multi.txt"]:
        spec = {"job": "batch", "lib": "toklab", "path": str(DATA / name), "vocab": vocab}
        r = run_worker({**spec, "repeat": max(repeat, 5)})
        if "error" in r:
            rows.append([name, r["error"], "", "", ""])
            continue
        one, two, size = r["seconds_1"], r["seconds_2"], mb(DATA / name)
        rows.append(
            [
                name,
                str(r["documents"]),
                f"{size / one:.1f}",
                f"{size / two:.1f}",
                f"{one / two:.2f}x",
            ]
        )
    report.table(
        "toklab encode_batch over documents (blank-line separated), 32k vocabulary",
        ["file", "documents", "1 thread MB/s", "2 threads MB/s", "speed-up"],
        rows,
    )


def bench_linear(report: Report) -> None:
    r = run_worker(
        {
            "job": "linear",
            "lib": "toklab",
            "path": str(DATA / "en_10M.txt"),
            "vocab": trained_vocab(True),
        }
    )
    if "error" in r:
        report.note(f"linear: failed: {r['error']}")
        return
    rows = []
    for name in ["no whitespace", "one character"]:
        rows.append([name, *(f"{r[f'{name} {m} MB']:.3f}" for m in (1, 2, 5, 10))])
    report.table(
        "toklab worst cases (seconds; linear time)",
        ["input", "1 MB", "2 MB", "5 MB", "10 MB"],
        rows,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="en_10M only, one repeat")
    ap.add_argument("--repeat", type=int, default=None, help="runs per measurement (median)")
    ap.add_argument(
        "--only", choices=["train", "encode", "decode", "batch", "linear"], action="append"
    )
    ap.add_argument("--libs", nargs="*", default=[], help="anchors to include (default: all)")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    repeat = args.repeat or (1 if args.quick else 3)
    only = set(args.only or ["train", "encode", "decode", "batch", "linear"])
    ensure_corpus()
    sys.path.insert(0, str(HERE))
    import anchors

    report = Report()
    versions = {k: v for k, v in anchors.library_versions().items() if v}
    report.note(
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"median of {repeat}; " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
    )
    if "train" in only:
        bench_train(report, args.quick, repeat, args.libs)
    if "encode" in only:
        bench_encode(report, args.quick, repeat, "encode", args.libs)
    if "decode" in only:
        bench_encode(report, args.quick, repeat, "decode", args.libs)
    if "batch" in only:
        bench_batch(report, args.quick, repeat)
    if "linear" in only:
        bench_linear(report)
    Path(args.out).write_text(
        "# Benchmark results\n\n`python benchmarks/run.py "
        + " ".join(sys.argv[1:])
        + "`\n\n"
        + "\n".join(report.lines)
        + kept_sections(Path(args.out))
    )
    print(f"written to {args.out}")


def kept_sections(path: Path) -> str:
    """The hand-written sections of an existing results file (headed "## ... (not written by
    `run.py`)"), which a new run keeps after its own tables."""
    if not path.exists():
        return ""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("## ") and "not written by `run.py`" in line:
            return "\n\n" + "\n".join(lines[i:]) + "\n"
    return ""


if __name__ == "__main__":
    main()
