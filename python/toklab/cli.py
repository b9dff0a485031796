"""The ``toklab`` command line: train, encode, decode, inspect and export tokenizers."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np

from toklab import data
from toklab.bpe import PATTERNS, BPETokenizer, train_bpe
from toklab.errors import TokLabError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _load(path: str) -> BPETokenizer:
    try:
        return BPETokenizer.load(path)
    except (TokLabError, OSError) as e:
        raise click.ClickException(str(e)) from None


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
    default="cl100k",
    show_default=True,
    help=f"Pre-tokenization: {', '.join(PATTERNS)}, or a regex.",
)
@click.option(
    "--special-token",
    "special_tokens",
    multiple=True,
    help="A special token (repeatable); gets the last ids.",
)
@click.option(
    "--min-frequency",
    type=int,
    default=1,
    show_default=True,
    help="Stop when the best pair is rarer than this.",
)
@click.option("--max-token-length", type=int, default=None, help="Longest token, in bytes.")
@click.option("--threads", type=int, default=None, help="Counting threads (default: all cores).")
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
    pattern: str,
    special_tokens: tuple[str, ...],
    min_frequency: int,
    max_token_length: int | None,
    threads: int | None,
    errors: str,
) -> None:
    """Train byte-level BPE on FILES (paths, directories or globs).

    With no FILES, trains on the embedded default corpus (12 MB of English).

    \b
    Examples:
      toklab train --vocab-size 8192 --output bpe.json
      toklab train 'corpus/**/*.txt' --vocab-size 50000 --pattern gpt2 \\
          --special-token '<|endoftext|>' --output gpt2ish.json
    """
    corpus = list(files) if files else None
    try:
        if corpus is not None:
            corpus = [Path(p) for p in data.expand_files(corpus)]
        tok = train_bpe(
            corpus,
            vocab_size=vocab_size,
            pattern=pattern,
            special_tokens=special_tokens,
            min_frequency=min_frequency,
            max_token_length=max_token_length,
            num_threads=threads,
            errors=errors,  # type: ignore[arg-type]
        )
    except (TokLabError, OSError) as e:
        raise click.ClickException(str(e)) from None
    tok.save(output)
    seen = tok.metadata.get("trainer", {}).get("bytes_seen", 0)
    click.echo(f"trained {tok!r} on {seen:,} bytes -> {output}", err=True)


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
def encode(
    tokenizer: str, files: tuple[str, ...], output: str, allow_special: bool, threads: int | None
) -> None:
    """Encode FILES (UTF-8) with TOKENIZER into one .npy array of ids.

    The ids of all files are concatenated in order; the array is uint16 when the vocabulary
    fits, else uint32.

    \b
    Example:
      toklab encode bpe.json book.txt notes.txt --output ids.npy
    """
    tok = _load(tokenizer)
    try:
        paths = data.expand_files(list(files))
    except OSError as e:
        raise click.ClickException(str(e)) from None
    parts = []
    total = sum(p.stat().st_size for p in paths)
    with click.progressbar(
        length=total, label="encoding", file=sys.stderr, hidden=not sys.stderr.isatty()
    ) as bar:
        for path in paths:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise click.ClickException(f"{path}: invalid UTF-8 at byte {e.start}") from None
            try:
                if allow_special:
                    ids = tok.encode(text, allowed_special="all")
                else:
                    ids = tok.encode_ordinary(text, num_threads=threads)
            except TokLabError as e:
                raise click.ClickException(f"{path}: {e}") from None
            parts.append(ids)
            bar.update(path.stat().st_size)
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)
    dtype = np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32
    np.save(output, ids.astype(dtype))
    # np.save appends .npy to names without it; say where the file really is.
    written = output if output.endswith(".npy") else output + ".npy"
    click.echo(
        f"{len(ids):,} tokens ({dtype.__name__}) from {total:,} bytes -> {written}", err=True
    )


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
    tok = _load(tokenizer)
    try:
        arr = np.load(ids, allow_pickle=False)
        raw = tok.decode_bytes(arr.reshape(-1) if arr.ndim > 1 else arr)
    except (TokLabError, OSError) as e:
        raise click.ClickException(f"{ids}: {e}") from None
    if output is None:
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()
    else:
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
    tok = _load(tokenizer)
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
    """Export TOKENIZER for HF tokenizers/transformers or tiktoken.

    \b
    Examples:
      toklab export bpe.json --format hf --output tokenizer.json
      toklab export bpe.json --format tiktoken --output bpe.tiktoken
    """
    tok = _load(tokenizer)
    try:
        if fmt == "hf":
            tok.save_hf(output)
        else:
            tok.save_tiktoken(output)
    except TokLabError as e:
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
@click.option("--pattern", default=None, help="tiktoken files only: the pattern (name or regex).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False))
def import_(source: str, fmt: str, pattern: str | None, output: str) -> None:
    """Import a HF byte-level BPE tokenizer.json or tiktoken ranks into toklab's format.

    \b
    Examples:
      toklab import tokenizer.json --format hf --output imported.json
      toklab import cl100k_base.tiktoken --format tiktoken --pattern cl100k --output cl100k.json
    """
    try:
        if fmt == "hf":
            tok = BPETokenizer.from_hf(source)
        else:
            tok = BPETokenizer.from_tiktoken(source, pattern=pattern)
    except (TokLabError, OSError) as e:
        raise click.ClickException(str(e)) from None
    tok.save(output)
    click.echo(f"imported {tok!r} -> {output}", err=True)


if __name__ == "__main__":
    main()
