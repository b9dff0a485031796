"""The ``toklab`` command line: train, encode, decode, inspect and export tokenizers."""

from __future__ import annotations

import contextlib
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np

from toklab import data
from toklab.bpe import PATTERNS, BPETokenizer, train_bpe
from toklab.errors import CorruptFileError, TokLabError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# Seeds (torch and numpy take 0..2**64-1) and the largest size or byte budget.
_SEED = click.IntRange(0, 2**64 - 1)
_MAX_COUNT = 2**63 - 1


def _utf8(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A text option (or each of a repeated one) that must be valid UTF-8. Python decodes
    command-line bytes that are not UTF-8 to lone surrogates, which no text can hold."""
    for v in value if isinstance(value, tuple) else (value,):
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise click.BadParameter("not valid UTF-8") from None
    return value


def _torch_threads(threads: int | None) -> None:
    """--threads of the LM commands: None or 0 keep torch's default; more threads than four
    per core are not asked for (as the Rust core caps them)."""
    import os

    import torch

    if threads:
        torch.set_num_threads(min(threads, 4 * (os.cpu_count() or 1)))


# The library's hint for invalid UTF-8 in a file names its Python argument, errors="replace".
_ERRORS_HINT = re.compile(
    r"""[;,]?\s*\(?pass errors=["']replace["'] to substitute U\+FFFD[^)]*\)?"""
)


def _error(e: Exception, errors_option: bool = False) -> click.ClickException:
    """A library error as a CLI error; the hint for invalid UTF-8 says --errors replace where
    the command has that option, and nothing where it has not."""
    hint = " (pass --errors replace to substitute U+FFFD)" if errors_option else ""
    return click.ClickException(_ERRORS_HINT.sub(hint, str(e)))


def _load_any(path: str) -> Any:
    from toklab.tokenizer import load

    try:
        return load(path)
    except (TokLabError, OSError) as e:
        raise click.ClickException(str(e)) from None


def _load_for_compare(path: str) -> Any:
    """A toklab tokenizer file, or an HF byte-level BPE ``tokenizer.json`` (imported)."""
    from toklab.tokenizer import load

    try:
        return load(path)
    except CorruptFileError as first:
        try:
            import json

            spec = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise click.ClickException(str(first)) from None
        if not (isinstance(spec, dict) and isinstance(spec.get("model"), dict)):
            raise click.ClickException(str(first)) from None
        try:
            return BPETokenizer.from_hf(spec)
        except TokLabError as e:
            raise click.ClickException(
                f"{path}: an HF tokenizer.json that toklab cannot import: {e}"
            ) from None
    except (TokLabError, OSError) as e:
        raise click.ClickException(str(e)) from None


@contextlib.contextmanager
def _os_errors() -> Iterator[None]:
    """A file that cannot be written (a missing directory, no permission) as a clean error."""
    try:
        yield
    except OSError as e:
        raise click.ClickException(str(e)) from None


def _save(tok: Any, output: str) -> None:
    with _os_errors():
        tok.save(output)


def _save_ids(output: str, ids: np.ndarray) -> None:
    with _os_errors():
        np.save(output, ids)


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="toklab")
def main() -> None:
    """toklab: a tokenizer laboratory.

    \b
    Example:
      toklab train --vocab-size 8192 --output bpe.json
      toklab encode bpe.json README.md --output ids.npy
      toklab decode bpe.json ids.npy
    """


@main.command(context_settings=CONTEXT)
@click.argument("files", nargs=-1)
@click.option(
    "--vocab-size",
    type=int,
    default=32_768,
    show_default=True,
    help="Ids in all, special tokens included.",
)
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to save the tokenizer (toklab JSON).",
)
@click.option(
    "--pattern",
    default=None,
    callback=_utf8,
    help=f"Pre-tokenization: {', '.join(PATTERNS)}, or a regex (default: cl100k for BPE, gpt2 "
    "for ByteSpan).",
)
@click.option(
    "--special-token",
    "special_tokens",
    multiple=True,
    callback=_utf8,
    help="BPE: a special token (repeatable); gets the last ids.",
)
@click.option(
    "--min-frequency",
    type=click.IntRange(1, 2**64 - 1),
    default=1,
    show_default=True,
    help="BPE: stop when the best pair is rarer than this.",
)
@click.option(
    "--max-token-length",
    type=click.IntRange(1, 2**64 - 1),
    default=None,
    help="BPE: the longest token, in bytes.",
)
@click.option("--threads", type=int, default=None, help="Counting threads (default: all cores).")
@click.option(
    "--method",
    type=click.Choice(["bpe", "bytespan", "equal-info"]),
    default="bpe",
    show_default=True,
    help="bpe, bytespan or equal-info (both need toklab[lm]: they train a byte LM).",
)
@click.option(
    "--window-bits", type=int, default=16, show_default=True, help="Equal-Info: bits per window."
)
@click.option(
    "--token-bits",
    type=int,
    default=8,
    show_default=True,
    help="Equal-Info: bits per token (8: 256 tokens, 16: 65,536).",
)
@click.option(
    "--max-window-bytes", type=int, default=None, help="Equal-Info: most bytes per window."
)
@click.option(
    "--signal",
    type=click.Choice(["entropy", "surprisal"]),
    default="entropy",
    show_default=True,
    help="ByteSpan: the byte LM's signal.",
)
@click.option(
    "--constraint",
    type=click.Choice(["monotonic", "combined", "global"]),
    default="combined",
    show_default=True,
    help="ByteSpan: how bytes group into spans.",
)
@click.option("--percentile", type=float, default=30.0, show_default=True, help="ByteSpan.")
@click.option(
    "--min-count",
    type=int,
    default=20,
    show_default=True,
    help="ByteSpan global: how often a segment must occur to count toward the vocabulary.",
)
@click.option(
    "--building",
    type=click.Choice(["frequency", "seeding"]),
    default="frequency",
    show_default=True,
    help="ByteSpan: the most frequent spans, or spans then BPE fill.",
)
@click.option(
    "--proportion", type=float, default=0.5, show_default=True, help="ByteSpan seeding: q."
)
@click.option(
    "--inference",
    type=click.Choice(["longest", "bpe"]),
    default="longest",
    show_default=True,
    help="ByteSpan: longest match, or BPE merges derived from the vocabulary.",
)
@click.option(
    "--balance-files",
    is_flag=True,
    help="ByteSpan: a balanced multilingual vocabulary, each input file one language.",
)
@click.option(
    "--lm-preset", default="small", show_default=True, help="ByteSpan / Equal-Info: the byte LM."
)
@click.option(
    "--lm-budget",
    default=None,
    help="ByteSpan / Equal-Info: bytes the byte LM reads, e.g. 20M (default: 2M for equal-info; "
    "one pass over the corpus for bytespan, which on the embedded 12 MB takes tens of minutes "
    "on 2 CPU cores).",
)
@click.option("--device", default="auto", show_default=True, help="The byte LM's device.")
@click.option("--cache-dir", default=None, help="ByteSpan: keep the byte LM and its signals here.")
@click.option(
    "--errors",
    type=click.Choice(["strict", "replace"]),
    default="strict",
    show_default=True,
    help="Invalid UTF-8 in files.",
)
def train(
    files: tuple[str, ...],
    vocab_size: int,
    output: str,
    pattern: str | None,
    special_tokens: tuple[str, ...],
    min_frequency: int,
    max_token_length: int | None,
    threads: int | None,
    method: str,
    window_bits: int,
    token_bits: int,
    max_window_bytes: int | None,
    signal: str,
    constraint: str,
    percentile: float,
    min_count: int,
    building: str,
    proportion: float,
    inference: str,
    balance_files: bool,
    lm_preset: str,
    lm_budget: str | None,
    device: str,
    cache_dir: str | None,
    errors: str,
) -> None:
    """Train byte-level BPE (or ByteSpan, or Equal-Info) on FILES (paths, directories or globs).

    With no FILES, trains on the embedded default corpus (12 MB of English).

    \b
    Examples:
      toklab train --vocab-size 8192 --output bpe.json
      toklab train 'corpus/**/*.txt' --vocab-size 50000 --pattern gpt2 \\
          --special-token '<|endoftext|>' --output gpt2ish.json
      toklab train --method bytespan --signal entropy --constraint combined \\
          --vocab-size 16384 --output bytespan.json
      toklab train --method equal-info --window-bits 16 --token-bits 8 --output ei.json
    """
    # Options of another method, given on the command line, are refused before any training
    # (silently ignored, they would give a tokenizer other than the one asked for).
    ctx = click.get_current_context()
    lm_options = {"lm_preset", "lm_budget", "device"}
    methods_of = {
        "bpe": {"vocab_size", "pattern", "special_tokens", "min_frequency", "max_token_length"}
        | {"threads"},
        "bytespan": {"vocab_size", "pattern", "threads", "signal", "constraint", "percentile"}
        | {"min_count", "building", "proportion", "inference", "balance_files", "cache_dir"}
        | lm_options,
        "equal-info": {"window_bits", "token_bits", "max_window_bytes"} | lm_options,
    }
    mine = methods_of[method]
    every = set().union(*methods_of.values())
    given = [
        p
        for p in ctx.command.params
        if p.name in every - mine
        and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE
    ]
    if given:
        names = ", ".join(p.opts[0] for p in given)
        raise click.ClickException(f"{names}: not an option of --method {method}")
    # Checked before any reading or training.
    budget = (
        _count(lm_budget, "'--lm-budget'") if lm_budget is not None and method != "bpe" else None
    )
    if method == "equal-info":
        _train_equal_info(
            files,
            output,
            window_bits,
            token_bits,
            max_window_bytes,
            lm_preset,
            budget,
            device,
            errors,
        )
        return
    if method == "bytespan":
        _train_bytespan(
            files,
            vocab_size,
            output,
            signal,
            constraint,
            percentile,
            lm_preset,
            budget,
            device,
            cache_dir,
            threads,
            building,
            proportion,
            min_count,
            inference,
            balance_files,
            pattern or "gpt2",
            errors,
        )
        return
    corpus = list(files) if files else None
    try:
        if corpus is not None:
            corpus = [Path(p) for p in data.expand_files(corpus)]
        tok = train_bpe(
            corpus,
            vocab_size=vocab_size,
            pattern=pattern or "cl100k",
            special_tokens=special_tokens,
            min_frequency=min_frequency,
            max_token_length=max_token_length,
            num_threads=threads,
            errors=errors,  # type: ignore[arg-type]
        )
    except (TokLabError, OSError) as e:
        raise _error(e, errors_option=True) from None
    _save(tok, output)
    seen = tok.metadata.get("trainer", {}).get("bytes_seen", 0)
    click.echo(f"trained {tok!r} on {seen:,} bytes -> {output}", err=True)


def _train_equal_info(
    files: tuple[str, ...],
    output: str,
    window_bits: int,
    token_bits: int,
    max_window_bytes: int | None,
    lm_preset: str,
    lm_budget: int | None,
    device: str,
    errors: str = "strict",
) -> None:
    try:
        from toklab.equalinfo import EqualInfo, train_m1
        from toklab.lm.model import PRESETS

        # Bad settings are reported before minutes of training, not after.
        longest = EqualInfo.check_config(window_bits, token_bits, max_window_bytes=max_window_bytes)
        texts = (
            _read_documents(files, errors, errors_option=True)
            if files
            else list(data.default_corpus())
        )
        preset_context = PRESETS.get(lm_preset, {}).get("context", 256)
        m1 = train_m1(
            texts,
            preset=lm_preset,
            budget_bytes=lm_budget if lm_budget is not None else 2e6,
            context=max(preset_context, longest + 1),
            device=device,
            progress=sys.stderr.isatty(),
        )
        tok = EqualInfo(m1, window_bits, token_bits, max_window_bytes=max_window_bytes)
    except ImportError as e:
        raise click.ClickException(f"{e}. Equal-Info needs toklab[lm]") from None
    except (TokLabError, OSError, UnicodeDecodeError) as e:
        raise click.ClickException(str(e)) from None
    _save(tok, output)
    click.echo(f"trained {tok!r} -> {output}", err=True)


def _train_bytespan(
    files: tuple[str, ...],
    vocab_size: int,
    output: str,
    signal: str,
    constraint: str,
    percentile: float,
    lm_preset: str,
    lm_budget: int | None,
    device: str,
    cache_dir: str | None,
    threads: int | None,
    building: str = "frequency",
    proportion: float = 0.5,
    min_count: int = 20,
    inference: str = "longest",
    balance_files: bool = False,
    pattern: str = "gpt2",
    errors: str = "strict",
) -> None:
    from toklab.bytespan import train_bytespan

    if balance_files and not files:
        raise click.ClickException("--balance-files needs input files (one per language)")
    try:
        texts = _read_documents(files, errors, errors_option=True) if files else None
        languages = [p.stem for p in data.expand_files(files)] if balance_files else None
        tok = train_bytespan(
            texts,
            vocab_size=vocab_size,
            signal=signal,  # type: ignore[arg-type]
            constraint=constraint,  # type: ignore[arg-type]
            percentile=percentile,
            min_count=min_count,
            inference=inference,  # type: ignore[arg-type]
            lm_preset=lm_preset,
            lm_budget_bytes=lm_budget,
            device=device,
            cache_dir=cache_dir,
            num_threads=threads,
            building=building,  # type: ignore[arg-type]
            proportion=proportion,
            languages=languages,
            pattern=pattern,
        )
    except ImportError as e:
        raise click.ClickException(f"{e}. ByteSpan needs toklab[lm]") from None
    except (TokLabError, OSError, UnicodeDecodeError) as e:
        raise click.ClickException(str(e)) from None
    _save(tok, output)
    click.echo(f"trained {tok!r} -> {output}", err=True)


@main.command(context_settings=CONTEXT)
@click.argument("tokenizer", type=click.Path(exists=True, dir_okay=False))
@click.argument("files", nargs=-1, required=True)
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the ids (.npy).",
)
@click.option("--allow-special", is_flag=True, help="Encode special token text as special tokens.")
@click.option("--threads", type=int, default=None, help="Encoding threads (default: all cores).")
@click.option(
    "--stochastok",
    type=float,
    default=None,
    help="Expand the ids with StochasTok at this p (the paper's semantics).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="StochasTok's seed.")
def encode(
    tokenizer: str,
    files: tuple[str, ...],
    output: str,
    allow_special: bool,
    threads: int | None,
    stochastok: float | None,
    seed: int,
) -> None:
    """Encode FILES (UTF-8) with TOKENIZER into one .npy array of ids.

    The ids of all files are concatenated in order; the array is uint16 when the vocabulary
    fits, else uint32. With --stochastok P, each file's ids are expanded once (file i is
    sequence i under --seed), as the paper prepared its training data.

    \b
    Example:
      toklab encode bpe.json book.txt notes.txt --output ids.npy
      toklab encode bpe.json book.txt --stochastok 0.1 --seed 1 --output expanded.npy
    """
    tok = _load_any(tokenizer)
    expander = None
    if stochastok is not None:
        from toklab.stochastok import StochasTok

        try:
            expander = StochasTok(tok, p=stochastok, seed=seed)
        except TokLabError as e:
            raise click.ClickException(str(e)) from None
    try:
        paths = data.expand_files(list(files))
    except OSError as e:
        raise click.ClickException(str(e)) from None
    parts = []
    total = sum(p.stat().st_size for p in paths)
    from toklab.equalinfo import ArithmeticCoding, EqualInfo

    if isinstance(tok, (EqualInfo, ArithmeticCoding)):
        # A code is one stream: the files' bytes are coded together (decode gives them back
        # concatenated, as for every tokenizer).
        try:
            ids = tok.encode(b"".join(p.read_bytes() for p in paths))
        except TokLabError as e:
            raise click.ClickException(str(e)) from None
        _save_ids(output, ids.astype(np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32))
        written = output if output.endswith(".npy") else output + ".npy"
        click.echo(f"{len(ids):,} tokens from {total:,} bytes -> {written}", err=True)
        return
    with click.progressbar(
        length=total, label="encoding", file=sys.stderr, hidden=not sys.stderr.isatty()
    ) as bar:
        for path in paths:
            try:
                text = data.read_text(path)
            except UnicodeDecodeError as e:
                raise click.ClickException(f"{path}: invalid UTF-8 at byte {e.start}") from None
            except TokLabError as e:  # invalid UTF-8, as the library says it
                raise _error(e) from None
            try:
                ids = _encode_text(tok, text, allow_special, threads)
            except TokLabError as e:
                raise click.ClickException(f"{path}: {e}") from None
            if expander is not None:
                ids = expander.expand(ids, index=len(parts))
            parts.append(ids)
            bar.update(path.stat().st_size)
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)
    dtype = np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32
    _save_ids(output, ids.astype(dtype))
    # np.save appends .npy to names without it; say where the file really is.
    written = output if output.endswith(".npy") else output + ".npy"
    click.echo(
        f"{len(ids):,} tokens ({dtype.__name__}) from {total:,} bytes -> {written}", err=True
    )


def _encode_text(tok: Any, text: str, allow_special: bool, threads: int | None) -> np.ndarray:
    """One file's ids, alike for every tokenizer: special-token text is encoded as special
    tokens with --allow-special, else as ordinary text."""
    if isinstance(tok, BPETokenizer) and not allow_special:
        return tok.encode_ordinary(text, num_threads=threads)
    if allow_special and getattr(tok, "special_tokens", None):
        return tok.encode(text, allowed_special="all")
    ordinary = getattr(tok, "encode_ordinary", None)
    return ordinary(text) if ordinary is not None else tok.encode(text)


@main.command(context_settings=CONTEXT)
@click.argument("tokenizer", type=click.Path(exists=True, dir_okay=False))
@click.argument("ids", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write here instead of stdout.",
)
def decode(tokenizer: str, ids: str, output: str | None) -> None:
    """Decode the ids in IDS (.npy) with TOKENIZER; writes the exact bytes.

    \b
    Example:
      toklab decode bpe.json ids.npy > book.txt
    """
    tok = _load_any(tokenizer)
    try:
        arr = np.load(ids, allow_pickle=False)
        raw = tok.decode_bytes(arr.reshape(-1) if arr.ndim > 1 else arr)
    except (ValueError, OSError) as e:  # np.load's ValueError: not an .npy file of numbers
        raise click.ClickException(f"{ids}: {e}") from None
    if output is None:
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()
    else:
        with _os_errors():
            Path(output).write_bytes(raw)


@main.command(context_settings=CONTEXT)
@click.argument("tokenizer", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--longest",
    type=int,
    default=10,
    show_default=True,
    help="Show this many of the longest tokens.",
)
def info(tokenizer: str, longest: int) -> None:
    """Describe a saved tokenizer.

    \b
    Example:
      toklab info bpe.json
    """
    from toklab.bytespan import ByteSpan

    tok = _load_any(tokenizer)
    if isinstance(tok, ByteSpan):
        _info_bytespan(tok, longest)
        return
    if not isinstance(tok, BPETokenizer):
        click.echo(f"type:           {type(tok).__name__} (toklab format)")
        click.echo(f"vocab size:     {tok.vocab_size}")
        click.echo(f"special tokens: {getattr(tok, 'special_tokens', None) or 'none'}")
        click.echo(f"tokenizer:      {tok!r}")
        return
    vocab = tok.vocab()
    special_ids = set(tok.special_tokens.values())
    lengths = np.array([len(t) for i, t in enumerate(vocab) if i not in special_ids])
    click.echo("type:           byte-level BPE (toklab format)")
    click.echo(f"vocab size:     {tok.vocab_size}")
    click.echo(f"merges:         {tok.n_merges}")
    click.echo(f"pattern:        {tok.pattern_name or 'custom'}: {tok.pattern}")
    click.echo(f"special tokens: {tok.special_tokens or 'none'}")
    click.echo(f"token bytes:    mean {lengths.mean():.2f}, max {lengths.max()}")
    trainer = tok.metadata.get("trainer")
    if trainer:
        click.echo(f"trained on:     {trainer.get('bytes_seen', 0):,} bytes")
    order = sorted(
        (i for i in range(len(vocab)) if i not in special_ids), key=lambda i: (-len(vocab[i]), i)
    )
    shown = ", ".join(repr(vocab[i].decode("utf-8", "replace")) for i in order[:longest])
    click.echo(f"longest tokens: {shown}")


def _info_bytespan(tok: Any, longest: int) -> None:
    learned = tok.learned()
    click.echo("type:           ByteSpan (toklab format)")
    click.echo(f"vocab size:     {tok.vocab_size} (512 bytes + {len(learned)} learned)")
    click.echo(f"inference:      {tok.inference} ({len(tok.merges())} merges)")
    click.echo(f"pattern:        {tok.pattern}")
    for key in ("signal", "constraint", "vocab_building", "balanced_languages"):
        if tok.metadata.get(key) is not None:
            click.echo(f"{key + ':':<15} {tok.metadata[key]}")
    order = sorted(range(len(learned)), key=lambda i: (-len(learned[i][1]), i))
    shown = ", ".join(repr(learned[i][1].decode("utf-8", "replace")) for i in order[:longest])
    click.echo(f"longest tokens: {shown}")


@main.command(context_settings=CONTEXT)
@click.argument("tokenizer", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["hf", "tiktoken"]),
    required=True,
    help="hf: tokenizer.json; tiktoken: .tiktoken ranks.",
)
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False))
def export(tokenizer: str, fmt: str, output: str) -> None:
    """Export TOKENIZER for HF tokenizers/transformers (BPE, ByteSpan) or tiktoken (BPE).

    \b
    Examples:
      toklab export bpe.json --format hf --output tokenizer.json
      toklab export bpe.json --format tiktoken --output bpe.tiktoken
    """
    tok = _load_any(tokenizer)
    method = "save_hf" if fmt == "hf" else "save_tiktoken"
    if not hasattr(tok, method):
        kinds = "BPE and ByteSpan tokenizers" if fmt == "hf" else "BPE tokenizers"
        raise click.ClickException(
            f"{tokenizer} is a {type(tok).__name__}: only {kinds} export to --format {fmt}"
        )
    try:
        getattr(tok, method)(output)
    except (TokLabError, OSError) as e:
        raise click.ClickException(str(e)) from None
    note = (
        ""
        if fmt == "hf"
        else f" (pattern and special tokens are not part of the file: {tok.pattern!r})"
    )
    click.echo(f"wrote {output}{note}", err=True)


@main.command("import", context_settings=CONTEXT)
@click.argument("source")
@click.option("--format", "fmt", type=click.Choice(["hf", "tiktoken"]), required=True)
@click.option(
    "--pattern",
    default=None,
    callback=_utf8,
    help="tiktoken files only: the pattern (name or regex).",
)
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False))
def import_(source: str, fmt: str, pattern: str | None, output: str) -> None:
    """Import a HF byte-level BPE tokenizer.json or tiktoken ranks into toklab's format.

    \b
    Examples:
      toklab import tokenizer.json --format hf --output imported.json
      toklab import cl100k_base.tiktoken --format tiktoken --pattern cl100k --output cl100k.json
    """
    if fmt == "tiktoken" and pattern is None:
        # (The library's own message names its argument, pattern=...)
        raise click.ClickException(
            "--format tiktoken needs --pattern: tiktoken files do not hold the pre-tokenization "
            f"pattern (a name: {', '.join(PATTERNS)}; or a regex)"
        )
    if fmt == "hf" and pattern is not None:
        raise click.ClickException("--pattern: only for --format tiktoken (tokenizer.json has one)")
    try:
        if fmt == "hf":
            tok = BPETokenizer.from_hf(source)
        else:
            tok = BPETokenizer.from_tiktoken(source, pattern=pattern)
    except (TokLabError, OSError) as e:
        raise click.ClickException(str(e)) from None
    _save(tok, output)
    click.echo(f"imported {tok!r} -> {output}", err=True)


# -- comparison --------------------------------------------------------------------------------


def _int_list(text: str, option: str) -> list[int]:
    """Comma-separated sizes (``8192,32768``; k = 1000, so ``8k`` is 8000); at least one."""
    parts = [x for x in text.split(",") if x.strip()]
    if not parts:
        raise click.BadParameter(
            f"{text!r} gives no sizes: pass a comma-separated list such as 8192,32768",
            param_hint=option,
        )
    return [_count(x, option) for x in parts]


@main.command(context_settings=CONTEXT)
@click.argument("files", nargs=-1)
@click.option(
    "--methods",
    default=None,
    help="Comma-separated methods (default: all that are installed). See --list-methods.",
)
@click.option("--list-methods", is_flag=True, help="List the methods and exit.")
@click.option(
    "--tokenizer",
    "tokenizer_files",
    multiple=True,
    metavar="[NAME=]PATH",
    help="A saved tokenizer (any toklab file, or an HF byte-level BPE tokenizer.json) to "
    "score as a row of its own, named NAME or the file's name; repeat for more. With it, "
    "only the --methods named are trained (default: none).",
)
@click.option(
    "--vocab-sizes",
    default="4096,8192,16384,32768",
    show_default=True,
    help="Vocabulary sizes of toklab BPE, comma-separated (k means 1000: 8k is 8000, not 8192).",
)
@click.option(
    "--baseline-sizes",
    default="8192,32768",
    show_default=True,
    help="Vocabulary sizes of the other libraries' methods ('same': as --vocab-sizes).",
)
@click.option("--holdout", type=float, default=0.05, show_default=True)
@click.option("--languages", default=None, help="UDHR languages (ISO 639-3, comma-separated).")
@click.option(
    "--morph-data",
    type=click.Path(file_okay=False),
    default=None,
    help="Morphology data (default: shared/data/morph beside or above the working directory).",
)
@click.option("--lm", "with_lm", is_flag=True, help="Also train a small LM per tokenizer.")
@click.option("--lm-budget", default="2M", show_default=True, help="Bytes each LM reads.")
@click.option("--lm-preset", default="tiny", show_default=True)
@click.option("--device", default="auto", show_default=True, help="LM device.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False),
    default="toklab-compare",
    show_default=True,
    help="Directory for compare.md, compare.json and the plots.",
)
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
def compare(
    files: tuple[str, ...],
    methods: str | None,
    list_methods: bool,
    tokenizer_files: tuple[str, ...],
    vocab_sizes: str,
    baseline_sizes: str,
    holdout: float,
    languages: str | None,
    morph_data: str | None,
    with_lm: bool,
    lm_budget: str,
    lm_preset: str,
    device: str,
    seed: int,
    output: str,
    no_plots: bool,
) -> None:
    """Train tokenizers on FILES (default: the embedded corpus) and compare them.

    Each method is trained on all but the held-out tail of every document, then scored on that
    held-out English, on the UDHR in 63 languages and, when the shared morphology data is
    found, on MorphScore and morpheme boundaries. Prints a table; writes Markdown, JSON and
    PNG plots to --output.

    \b
    Examples:
      toklab compare
      toklab compare 'corpus/*.txt' --methods bpe,bytes,spm-unigram --vocab-sizes 8192,32768
      toklab compare --lm --lm-budget 5M
      toklab compare --tokenizer mine=bpe.json --methods bpe --vocab-sizes 32768
    """
    from toklab import compare as cmp

    if list_methods:
        for m in cmp.METHODS.values():
            state = "" if m.available() else f"  (needs {', '.join(m.requires)})"
            click.echo(f"{m.name:<12} {m.description}{state}")
        return
    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    loaded: dict[str, Any] = {}
    for spec in tokenizer_files:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).name.removesuffix(".json"), spec
        if not name or not path:
            raise click.BadParameter(f"{spec!r}: give NAME=PATH or PATH", param_hint="--tokenizer")
        if name in loaded:
            raise click.BadParameter(f"two tokenizers named {name!r}", param_hint="--tokenizer")
        loaded[name] = _load_for_compare(path)
    if chosen is None:
        chosen = [] if loaded else cmp.available_methods()
    sizes = _int_list(vocab_sizes, "'--vocab-sizes'")
    baselines = (
        None if baseline_sizes == "same" else _int_list(baseline_sizes, "'--baseline-sizes'")
    )
    budget = _count(lm_budget, "'--lm-budget'") if with_lm else None
    try:
        texts = _read_documents(files) if files else None
        result = cmp.run_compare(
            texts,
            methods=chosen,
            vocab_sizes=sizes,
            baseline_sizes=baselines,
            holdout=holdout,
            languages=[x.strip() for x in languages.split(",")] if languages else None,
            morph_data=morph_data,
            lm_budget=budget,
            lm_preset=lm_preset,
            lm_device=device,
            seed=seed,
            progress=True,
            tokenizers=loaded,
        )
        written = cmp.write_reports(result, output, plots=not no_plots)
    except (TokLabError, OSError, UnicodeDecodeError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(cmp.render_text(result))
    click.echo(f"\n{result.info['seconds']:.0f} s; wrote " + ", ".join(map(str, written)), err=True)
    if result.failures:
        raise click.ClickException(
            f"{len(result.failures)} method(s) failed (the others' results are written): "
            + "; ".join(f"{f['method']}: {f['error']}" for f in result.failures)
        )


# -- language models -------------------------------------------------------------------------


def _amount(text: str, option: str | None = None) -> float:
    """``10M``, ``2.5G``, ``500k`` or ``1e15`` as a number (k = 1000, M = 10**6, ...); a finite
    one: ``inf``, ``nan`` and ``1e400`` (which overflows to inf) are refused."""
    scale = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
    t = text.strip().lower()
    try:
        value = float(t[:-1]) * scale[t[-1]] if t and t[-1] in scale else float(t)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an amount such as 10M, 2.5G or 1e15", param_hint=option
        ) from None
    if not math.isfinite(value):
        raise click.BadParameter(
            f"{text!r} is not a finite amount such as 10M, 2.5G or 1e15", param_hint=option
        )
    return value


def _count(text: str, option: str | None = None) -> int:
    """An amount that is a whole count (bytes, a vocabulary size), at most 2**63 - 1."""
    value = _amount(text, option)
    if abs(value) > _MAX_COUNT:
        raise click.BadParameter(f"{text!r} is too large (at most 2**63 - 1)", param_hint=option)
    return int(value)


def _lm_tokenizer(spec: str) -> object:
    from toklab.bytes import ByteTokenizer
    from toklab.tokenizer import load

    if spec == "bytes":
        return ByteTokenizer()
    try:
        return load(spec)
    except (TokLabError, OSError) as e:
        raise click.ClickException(str(e)) from None


def _import_lm() -> object:
    try:
        import torch

        import toklab.lm
    except ImportError as e:
        raise click.ClickException(f"{e}. Install the extra: pip install 'toklab[lm]'") from None
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return toklab.lm


def _read_documents(
    files: tuple[str, ...], errors: str = "strict", errors_option: bool = False
) -> list[str]:
    """Each file (or each file a glob or directory expands to) as one document, exactly as
    stored (line endings too). Invalid UTF-8 is a clean error (``errors_option``: the command
    has --errors)."""
    texts = []
    for path in data.expand_files(files):
        try:
            texts.append(data.read_text(path, errors=errors))
        except UnicodeDecodeError as e:
            raise click.ClickException(f"{path}: invalid UTF-8 at byte {e.start}") from None
        except TokLabError as e:
            raise _error(e, errors_option) from None
    return texts


def _write_json(path: str | None, result: dict[str, object]) -> None:
    import json

    if path is not None:
        with _os_errors():
            Path(path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        click.echo(f"results -> {path}", err=True)


@main.group(context_settings=CONTEXT)
def lm() -> None:
    """Train and score small GPTs over any tokenizer (needs toklab[lm]).

    \b
    Example:
      toklab lm train --tokenizer bytes --preset small --budget-bytes 20M --output bytes.pt
      toklab lm eval bytes.pt --json eval.json
    """


@lm.command("train", context_settings=CONTEXT)
@click.argument("files", nargs=-1)
@click.option(
    "--tokenizer",
    "tokenizer_spec",
    required=True,
    help="A toklab tokenizer file, or 'bytes' for a byte-level model.",
)
@click.option("--preset", default="small", show_default=True, help="tiny, small, base or 25m.")
@click.option("--context", type=int, default=None, help="Context length (default: the preset's).")
@click.option("--budget-bytes", default=None, help="Bytes of text to read, e.g. 20M.")
@click.option("--budget-flops", default=None, help="Training FLOPs to spend, e.g. 1e15.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--seed", type=_SEED, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option(
    "--holdout",
    type=float,
    default=0.05,
    show_default=True,
    help="Share of each document held out and scored after training.",
)
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Checkpoint.")
@click.option("--checkpoint-every", type=int, default=None, help="Also save every N steps.")
@click.option("--resume", is_flag=True, help="Continue from --output if it exists.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=None,
    help="CPU threads for torch (default, or 0: torch's own choice).",
)
def lm_train(
    files: tuple[str, ...],
    tokenizer_spec: str,
    preset: str,
    context: int | None,
    budget_bytes: str | None,
    budget_flops: str | None,
    batch_size: int,
    lr: float,
    seed: int,
    device: str,
    holdout: float,
    output: str,
    checkpoint_every: int | None,
    resume: bool,
    json_path: str | None,
    threads: int | None,
) -> None:
    """Train a GPT on FILES (default: the embedded corpus) and score its held-out part.

    \b
    Example:
      toklab lm train 'corpus/*.txt' --tokenizer bpe.json --preset small --budget-bytes 20M \\
          --output bpe.pt --json train.json
    """
    # Checked before any loading or training.
    bytes_budget = _count(budget_bytes, "'--budget-bytes'") if budget_bytes is not None else None
    flops_budget = _amount(budget_flops, "'--budget-flops'") if budget_flops is not None else None
    lmod = _import_lm()
    _torch_threads(threads)
    tokenizer = _lm_tokenizer(tokenizer_spec)
    try:
        texts = _read_documents(files) if files else list(data.default_corpus())
        train_texts, held = data.split_holdout(texts, holdout)
        run = lmod.train_lm(  # type: ignore[attr-defined]
            tokenizer,
            train_texts,
            preset=preset,
            context=context,
            budget_bytes=bytes_budget,
            budget_flops=flops_budget,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=device,
            checkpoint=output,
            checkpoint_every=checkpoint_every,
            resume=resume,
        )
        result: dict[str, object] = {"train": run.to_dict()}
        click.echo(
            f"trained {run.lm!r}: {run.steps} steps, {run.bytes_seen / 1e6:.1f} MB of text, "
            f"loss {run.final_loss:.3f}, {run.tokens_per_second:,.0f} tokens/s -> {output}",
            err=True,
        )
        if held:
            ev = lmod.evaluate(run.lm, held)  # type: ignore[attr-defined]
            result["eval"] = ev.to_dict()
            click.echo(
                f"held-out: {ev.bits_per_byte:.4f} bits per byte over {ev.bytes:,} bytes",
                err=True,
            )
    except (TokLabError, OSError) as e:
        raise click.ClickException(str(e)) from None
    _write_json(json_path, result)


@lm.command("eval", context_settings=CONTEXT)
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("files", nargs=-1)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--stride", type=int, default=None, help="Window stride (default: half the context).")
@click.option(
    "--holdout",
    type=float,
    default=0.05,
    show_default=True,
    help="Without FILES: score this held-out share of the embedded corpus.",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=None,
    help="CPU threads for torch (default, or 0: torch's own choice).",
)
def lm_eval(
    model: str,
    files: tuple[str, ...],
    device: str,
    stride: int | None,
    holdout: float,
    json_path: str | None,
    threads: int | None,
) -> None:
    """Bits per byte of MODEL on FILES (each file one document).

    \b
    Example:
      toklab lm eval bpe.pt held-out.txt --json eval.json
    """
    lmod = _import_lm()
    _torch_threads(threads)
    try:
        lm_ = lmod.LanguageModel.load(model, device=device)  # type: ignore[attr-defined]
        if files:
            texts = _read_documents(files)
        else:
            texts = data.split_holdout(data.default_corpus(), holdout)[1]
        ev = lmod.evaluate(lm_, texts, stride=stride)  # type: ignore[attr-defined]
    except (TokLabError, OSError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(
        f"{ev.bits_per_byte:.4f} bits per byte over {ev.bytes:,} bytes in {len(texts)} "
        f"documents ({ev.bytes_per_token:.2f} bytes per token, {ev.tokens_per_second:,.0f} "
        f"tokens/s, {ev.flops_per_byte:.3g} FLOPs per byte)"
    )
    _write_json(json_path, {"model": model, "eval": ev.to_dict()})


@main.group(context_settings=CONTEXT)
def byteprobs() -> None:
    """Exact byte-level probabilities from a token LM (needs toklab[lm]).

    \b
    Examples:
      toklab byteprobs score --model ckpt.pt --text "The theme"
      toklab byteprobs sample --model ckpt.pt --prompt "The th" --max-bytes 40 --seed 1
    """


def _byte_level(
    model: str, tokenizer: str | None, mode: str, beam: int | None, threshold: float | None = None
) -> Any:
    lmod = _import_lm()
    from toklab.byteprobs import ByteLevelLM

    tok = _load_any(tokenizer) if tokenizer else None
    try:
        lm_ = lmod.LanguageModel.load(model, device="cpu", tokenizer=tok)  # type: ignore[attr-defined]
        return ByteLevelLM(lm_, lm_.tokenizer, mode=mode, beam=beam, threshold=threshold)
    except (TokLabError, OSError) as e:
        raise click.ClickException(str(e)) from None


def _temperature(ctx: click.Context, param: click.Parameter, value: float) -> float:
    # 0 is greedy; below 1e-300, log-probabilities over the temperature overflow.
    if not math.isfinite(value) or value < 0 or 0 < value < 1e-300:
        raise click.BadParameter(
            f"must be 0 (greedy) or a finite number of at least 1e-300, not {value}"
        )
    return value


_MODE = click.option(
    "--mode",
    type=click.Choice(["canonical", "all"]),
    default="canonical",
    show_default=True,
    help="Sum over the tokenizer's own encodings, or over every tokenization.",
)
_BEAM = click.option("--beam", type=int, default=None, help="Keep this many token prefixes.")
_THRESHOLD = click.option(
    "--threshold",
    type=float,
    default=None,
    help="Drop token prefixes below this fraction of the most probable one.",
)


@byteprobs.command("score", context_settings=CONTEXT)
@click.option("--model", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--tokenizer", default=None, help="The model's tokenizer (default: its own).")
@click.option("--text", required=True, callback=_utf8, help="The text to score (UTF-8).")
@_MODE
@_BEAM
@_THRESHOLD
def byteprobs_score(
    model: str,
    tokenizer: str | None,
    text: str,
    mode: str,
    beam: int | None,
    threshold: float | None,
) -> None:
    """Bits per byte of TEXT at byte level, next to the token-level figure.

    \b
    Example:
      toklab byteprobs score --model bpe.pt --text "The theme" --mode all --beam 8
    """
    blm = _byte_level(model, tokenizer, mode, beam, threshold)
    data = text.encode("utf-8")
    if not data:
        raise click.ClickException("--text is empty: nothing to score")
    try:
        lp = blm.logprob(data)
        stats = blm.stats
        ids = [int(i) for i in np.asarray(blm.token_lm.encode(text))]
        lps = blm.token_lm.next_token_logprobs([ids[:j] for j in range(len(ids))], truncate=True)
        token_lp = float(sum(lps[j, ids[j]] for j in range(len(ids))))
    except (TokLabError, OSError) as e:
        raise click.ClickException(str(e)) from None
    ln2 = math.log(2)
    click.echo(
        f"byte level ({mode}{f', beam {beam}' if beam else ''}"
        f"{f', threshold {threshold:g}' if threshold else ''}): "
        f"{-lp / ln2 / len(data):.4f} bits per byte; token level (canonical encoding): "
        f"{-token_lp / ln2 / len(data):.4f} bits per byte; "
        f"{stats['model_calls_per_byte']:.2f} model calls per byte, "
        f"{100 * stats['share_outside_model']:.0f}% of {stats['seconds']:.2f} s outside the model"
    )


@byteprobs.command("sample", context_settings=CONTEXT)
@click.option("--model", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--tokenizer", default=None, help="The model's tokenizer (default: its own).")
@click.option(
    "--prompt",
    default="",
    help="May end in the middle of a token or a character; bytes that are not UTF-8 are taken "
    "as they are.",
)
@click.option("--max-bytes", type=int, default=64, show_default=True)
@click.option(
    "--temperature",
    type=float,
    default=1.0,
    show_default=True,
    callback=_temperature,
    help="0: always the most probable byte.",
)
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--seed", type=_SEED, default=0, show_default=True)
@_MODE
@_BEAM
@_THRESHOLD
def byteprobs_sample(
    model: str,
    tokenizer: str | None,
    prompt: str,
    max_bytes: int,
    temperature: float,
    top_p: float,
    seed: int,
    mode: str,
    beam: int | None,
    threshold: float | None,
) -> None:
    """Continue PROMPT byte by byte; writes the prompt and the continuation's bytes.

    \b
    Example:
      toklab byteprobs sample --model bpe.pt --prompt "The th" --max-bytes 40 --seed 1
    """
    try:
        # The command works on bytes: a prompt may end mid-character, so command-line bytes
        # that are not UTF-8 (which Python decodes to lone surrogates) are taken as given.
        raw = prompt.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise click.BadParameter("not valid UTF-8", param_hint="'--prompt'") from None
    blm = _byte_level(model, tokenizer, mode, beam, threshold)
    try:
        out = blm.sample(raw, max_bytes, temperature, top_p, seed)
    except (TokLabError, OSError) as e:
        raise click.ClickException(str(e)) from None
    sys.stdout.buffer.write(raw + out + b"\n")
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
