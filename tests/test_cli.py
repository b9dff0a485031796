"""The ``toklab`` command line, in-process (click's runner) and as the installed program."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import numpy as np
import pytest
from click.testing import CliRunner

import toklab
from toklab.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`toklab train` with no files: the embedded default corpus."""
    out = tmp_path_factory.mktemp("cli") / "bpe.json"
    result = CliRunner().invoke(
        main, ["train", "--vocab-size", "1000", "--output", str(out), "--special-token", "<|eot|>"]
    )
    assert result.exit_code == 0, result.output
    return out


def test_train_on_embedded_corpus(trained):
    tok = toklab.load(trained)
    assert tok.vocab_size == 1000
    assert tok.special_tokens == {"<|eot|>": 999}
    assert tok.metadata["trainer"]["bytes_seen"] > 10_000_000


def test_train_on_files_and_globs(tmp_path):
    for i in range(3):
        (tmp_path / f"doc{i}.txt").write_text("the rain in spain stays mainly in the plain\n" * 50)
    out = tmp_path / "tok.json"
    result = CliRunner().invoke(
        main,
        [
            "train",
            str(tmp_path / "*.txt"),
            "--vocab-size",
            "270",
            "--pattern",
            "gpt2",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert toklab.load(out).pattern == toklab.PATTERNS["gpt2"]
    result = CliRunner().invoke(main, ["train", str(tmp_path / "*.nope"), "-o", str(out)])
    assert result.exit_code != 0 and "no file matches" in result.output


def test_encode_decode_round_trip(trained, tmp_path):
    text = "Thou art more lovely and more temperate.\nRough winds do shake 🌸 the buds of May\n"
    src, src2 = tmp_path / "sonnet.txt", tmp_path / "sonnet2.txt"
    src.write_text(text * 20)
    src2.write_text(text * 20)
    ids_path = tmp_path / "ids.npy"
    runner = CliRunner()
    result = runner.invoke(
        main, ["encode", str(trained), str(src), str(src2), "--output", str(ids_path)]
    )
    assert result.exit_code == 0, result.output
    ids = np.load(ids_path)
    assert ids.dtype == np.uint16  # 1000 ids fit
    assert np.array_equal(ids, toklab.load(trained).encode((text * 20) * 2))
    result = runner.invoke(main, ["decode", str(trained), str(ids_path)])
    assert result.exit_code == 0
    assert result.stdout_bytes == ((text * 20) * 2).encode()
    out = tmp_path / "back.txt"
    runner.invoke(main, ["decode", str(trained), str(ids_path), "--output", str(out)])
    assert out.read_text() == (text * 20) * 2


def test_line_endings_round_trip(trained, tmp_path):
    """Files are encoded as stored: CRLF and lone CR are not turned into LF."""
    src = tmp_path / "crlf.txt"
    raw = b"one\r\ntwo\rthree\n\r\n"
    src.write_bytes(raw)
    ids_path = tmp_path / "ids.npy"
    runner = CliRunner()
    result = runner.invoke(main, ["encode", str(trained), str(src), "-o", str(ids_path)])
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.load(ids_path), toklab.load(trained).encode(raw.decode()))
    result = runner.invoke(main, ["decode", str(trained), str(ids_path)])
    assert result.exit_code == 0 and result.stdout_bytes == raw


def test_special_tokens_alike_for_every_tokenizer(trained, tmp_path):
    """Special-token text: ordinary text by default, special tokens with --allow-special,
    whichever tokenizer the file holds."""
    from toklab.bytes import ByteTokenizer
    from toklab.stochastok import StochasTok

    bpe = toklab.load(trained)
    src = tmp_path / "s.txt"
    src.write_text("a <|eot|> b")
    paths = {"bpe": trained, "bytes": tmp_path / "bytes.json", "st": tmp_path / "st.json"}
    ByteTokenizer(special_tokens=["<|eot|>"]).save(paths["bytes"])
    StochasTok(bpe, p=0.0, seed=1).save(paths["st"])
    runner = CliRunner()
    for name, path in paths.items():
        tok = toklab.load(path)
        plain = tok.encode_ordinary("a <|eot|> b")
        special = tok.encode("a <|eot|> b", allowed_special="all")
        for flag, want in [([], plain), (["--allow-special"], special)]:
            out = tmp_path / f"{name}.npy"
            result = runner.invoke(main, ["encode", str(path), str(src), "-o", str(out), *flag])
            assert result.exit_code == 0, (name, result.output)
            assert np.array_equal(np.load(out), want), name
        assert (tok.vocab_size - 1) in special and (tok.vocab_size - 1) not in plain


def test_info_and_export_of_other_tokenizers(tmp_path):
    from toklab.bytes import ByteTokenizer

    path = tmp_path / "bytes.json"
    ByteTokenizer(special_tokens=["<|eot|>"]).save(path)
    result = CliRunner().invoke(main, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "ByteTokenizer" in result.output and "vocab size:     257" in result.output
    result = CliRunner().invoke(main, ["export", str(path), "--format", "hf", "-o", "x.json"])
    assert result.exit_code != 0
    assert "is a ByteTokenizer: only BPE and ByteSpan tokenizers export" in result.output


def test_encode_uses_uint32_for_big_vocabularies(tmp_path):
    tok = toklab.BPETokenizer.from_parts(
        [bytes([b]) for b in range(256)] + [f"<|r{i}|>".encode() for i in range(70_000)],
        [],
        {f"<|r{i}|>": 256 + i for i in range(70_000)},
    )
    path = tmp_path / "big.json"
    tok.save(path)
    src = tmp_path / "a.txt"
    src.write_text("hello")
    result = CliRunner().invoke(
        main, ["encode", str(path), str(src), "-o", str(tmp_path / "ids.npy")]
    )
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "ids.npy").dtype == np.uint32


def test_decode_errors(trained, tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.array([1, 5000]))
    result = CliRunner().invoke(main, ["decode", str(trained), str(bad)])
    assert result.exit_code != 0 and "unknown token id 5000" in result.output
    np.save(bad, np.array([1.5]))
    result = CliRunner().invoke(main, ["decode", str(trained), str(bad)])
    assert result.exit_code != 0 and "integers" in result.output
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"format": "toklab.bpe", "version": 1')
    result = CliRunner().invoke(main, ["info", str(corrupt)])
    assert result.exit_code != 0 and "corrupt tokenizer file" in result.output


def test_invalid_utf8_file(trained, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff")
    result = CliRunner().invoke(
        main, ["encode", str(trained), str(bad), "-o", str(tmp_path / "x.npy")]
    )
    assert result.exit_code == 1 and "invalid UTF-8 at byte 3" in result.output
    assert "errors=" not in result.output  # the library's Python spelling; encode has no --errors
    out = str(tmp_path / "t.json")
    result = CliRunner().invoke(main, ["train", str(bad), "--vocab-size", "260", "-o", out])
    assert result.exit_code == 1 and "invalid UTF-8 at byte 3" in result.output
    assert "--errors replace" in result.output and "errors=" not in result.output


def test_info(trained):
    result = CliRunner().invoke(main, ["info", str(trained)])
    assert result.exit_code == 0
    assert "vocab size:     1000" in result.output
    assert "cl100k" in result.output and "<|eot|>" in result.output


def test_export_and_import(trained, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    runner = CliRunner()
    hf_path = tmp_path / "tokenizer.json"
    assert (
        runner.invoke(
            main, ["export", str(trained), "--format", "hf", "-o", str(hf_path)]
        ).exit_code
        == 0
    )
    hf = tokenizers.Tokenizer.from_file(str(hf_path))
    tok = toklab.load(trained)
    text = "Shall I compare thee to a summer's day? 12345"
    assert hf.encode(text).ids == tok.encode(text).tolist()
    tk_path = tmp_path / "bpe.tiktoken"
    assert (
        runner.invoke(
            main, ["export", str(trained), "--format", "tiktoken", "-o", str(tk_path)]
        ).exit_code
        == 0
    )
    assert len(tk_path.read_text().splitlines()) == 999
    back = tmp_path / "back.json"
    result = runner.invoke(main, ["import", str(hf_path), "--format", "hf", "-o", str(back)])
    assert result.exit_code == 0, result.output
    assert toklab.load(back) == tok
    result = runner.invoke(
        main,
        ["import", str(tk_path), "--format", "tiktoken", "--pattern", "cl100k", "-o", str(back)],
    )
    assert result.exit_code == 0, result.output
    assert np.array_equal(toklab.load(back).encode(text), tok.encode(text))


@pytest.mark.parametrize("command", ["train", "encode", "decode", "info", "export", "import"])
def test_help_has_an_example(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output


def test_installed_program_runs(trained):
    result = subprocess.run(
        [sys.executable, "-m", "toklab", "info", str(trained)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "merges:" in result.stdout
    # Not a terminal: no progress bar output.
    assert "counting" not in result.stderr and "merging" not in result.stderr


def test_metadata_is_json(trained):
    meta = json.loads(trained.read_text())["metadata"]
    assert meta["trainer"]["method"] == "bpe"


def test_equal_info_train_encode_decode(tmp_path):
    """`toklab train --method equal-info` trains M1 (here tiny, on a small budget) and saves an
    Equal-Info tokenizer; `encode` codes the files as one stream and `decode` gives the bytes."""
    torch = pytest.importorskip("torch", reason="toklab[lm] is not installed")
    torch.set_num_threads(2)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Equal information per window; windows of bits become tokens.\n" * 300)
    out = tmp_path / "ei.json"
    args = ["train", str(corpus), "--method", "equal-info", "--window-bits", "32"]
    args += ["--token-bits", "16", "--lm-preset", "tiny", "--lm-budget", "20k", "--device", "cpu"]
    result = CliRunner().invoke(main, [*args, "--output", str(out)])
    assert result.exit_code == 0, result.output
    tok = toklab.load(out)
    assert tok.vocab_size == 65536 and tok.window_bits == 32
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("windows of bits ")
    b.write_bytes("become tokens — ünïcode too\n".encode())
    ids = tmp_path / "ids.npy"
    result = CliRunner().invoke(main, ["encode", str(out), str(a), str(b), "--output", str(ids)])
    assert result.exit_code == 0, result.output
    assert np.load(ids).dtype == np.uint16
    back = tmp_path / "back.txt"
    result = CliRunner().invoke(main, ["decode", str(out), str(ids), "--output", str(back)])
    assert result.exit_code == 0, result.output
    assert back.read_bytes() == a.read_bytes() + b.read_bytes()
    bad = np.load(ids)[:-1]
    np.save(ids, bad)
    result = CliRunner().invoke(main, ["decode", str(out), str(ids)])
    assert result.exit_code != 0 and "truncated" in result.output
    result = CliRunner().invoke(
        main, ["train", "--method", "equal-info", "--window-bits", "24", "--token-bits", "16",
               "--lm-budget", "1k", "--output", str(out)]
    )  # fmt: skip
    assert result.exit_code != 0 and "multiple of token_bits" in result.output


def test_bad_files_and_output_paths_are_clean_errors(trained, tmp_path):
    runner = CliRunner()
    not_npy = tmp_path / "ids.npy"
    not_npy.write_text("not an array")
    result = runner.invoke(main, ["decode", str(trained), str(not_npy)])
    assert result.exit_code == 1 and "Error:" in result.output, result.output
    np.save(tmp_path / "obj.npy", np.array([1, 2], dtype=np.int64))
    missing = tmp_path / "no" / "such" / "dir"
    text = tmp_path / "t.txt"
    text.write_text("hello world\n")
    for args in [
        ["train", "--vocab-size", "258", str(text), "-o", str(missing / "x.json")],
        ["encode", str(trained), str(text), "-o", str(missing / "x.npy")],
        ["export", str(trained), "--format", "hf", "-o", str(missing / "x.json")],
        ["decode", str(trained), str(tmp_path / "obj.npy"), "-o", str(missing / "x.txt")],
    ]:
        result = runner.invoke(main, args)
        assert result.exit_code == 1 and "Error:" in result.output, (args, result.output)
        assert not isinstance(result.exception, OSError), args


def test_equal_info_settings_are_checked_before_training(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import toklab.equalinfo

    def no_training(*args, **kwargs):
        raise AssertionError("the byte model was trained before the settings were checked")

    monkeypatch.setattr(toklab.equalinfo, "train_m1", no_training)
    text = tmp_path / "t.txt"
    text.write_text("hello world\n" * 100)
    args = ["train", "--method", "equal-info", "--window-bits", "12", str(text)]
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "ei.json")])
    assert result.exit_code == 1 and "multiple of token_bits" in result.output
    assert not (tmp_path / "ei.json").exists()


def _usage_error(args: list[str], *words: str) -> str:
    """Runs the CLI; it must fail with a clean one-line error (click's usage error or a
    ClickException), not a Python exception."""
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (1, 2), (args, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), (args, result.exception)
    assert "Error:" in result.output and "Traceback" not in result.output, result.output
    for word in words:
        assert word in result.output, (args, word, result.output)
    return result.output


@pytest.fixture
def dummy(tmp_path, monkeypatch):
    """An existing file for path arguments: these errors come before anything is loaded (or
    written: relative outputs would land in tmp_path)."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "dummy.pt"
    path.write_bytes(b"x")
    return str(path)


def test_lm_threads_must_not_be_negative(dummy):
    args = ["lm", "train", "--tokenizer", "bytes", "-o", "m.pt", "--threads", "-1"]
    _usage_error(args, "--threads")
    _usage_error(["lm", "eval", dummy, "--threads", "-1"], "--threads")


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400", "NaNk"])
@pytest.mark.parametrize(
    "command",
    [
        ["lm", "train", "--tokenizer", "bytes", "-o", "m.pt", "--budget-bytes"],
        ["lm", "train", "--tokenizer", "bytes", "-o", "m.pt", "--budget-flops"],
        ["train", "--method", "bytespan", "-o", "x.json", "--lm-budget"],
        ["train", "--method", "equal-info", "-o", "x.json", "--lm-budget"],
        ["compare", "--methods", "bytes", "--lm", "--lm-budget"],
        ["compare", "--methods", "bpe", "--vocab-sizes"],
        ["compare", "--methods", "hf-bpe", "--baseline-sizes"],
    ],
)
def test_amounts_must_be_finite(dummy, command, value):
    """Refused before anything is read or trained (the default corpus would take long)."""
    _usage_error([*command, value], command[-1], "not a finite amount")


def test_amounts_and_counts_too_large(dummy):
    from toklab.cli import _amount, _count

    assert _amount("2.5G") == 2.5e9 and _count("8k") == 8000 and _count("1e15") == 10**15
    assert _amount("1e30") == 1e30  # FLOPs may be large
    for text in ["1e30", "1e19"]:
        with pytest.raises(click.BadParameter, match="too large"):
            _count(text)
    _usage_error(["lm", "train", "--tokenizer", "bytes", "-o", "m.pt", "--budget-bytes", "1e30"],
                 "--budget-bytes", "too large")  # fmt: skip
    _usage_error(["compare", "--vocab-sizes", "300,1e25"], "--vocab-sizes", "too large")
    for option in ["--min-frequency", "--max-token-length"]:
        _usage_error(["train", "-o", "x.json", option, "100000000000000000000000"], option)


def test_seeds_must_not_be_negative(dummy):
    _usage_error(["lm", "train", "--tokenizer", "bytes", "-o", "m.pt", "--seed", "-1"], "--seed")
    _usage_error(["byteprobs", "sample", "--model", dummy, "--seed", "-1"], "--seed")


def test_text_options_must_be_utf8(dummy):
    """Bytes that are not UTF-8 on the command line reach Python as lone surrogates."""
    bad = "a\udcff"
    for args in [
        ["train", "-o", "x.json", "--special-token", bad],
        ["train", "-o", "x.json", "--pattern", bad],
        ["import", dummy, "--format", "tiktoken", "--pattern", bad, "-o", "x.json"],
        ["byteprobs", "score", "--model", dummy, "--text", bad],
    ]:
        _usage_error(args, "not valid UTF-8")


def test_sample_prompt_is_bytes(tmp_path):
    """A prompt may end mid-character, so bytes that are not UTF-8 are taken as given."""
    torch = pytest.importorskip("torch", reason="toklab[lm] is not installed")
    from toklab.bytes import ByteTokenizer
    from toklab.lm import LanguageModel
    from toklab.lm.model import GPT, GPTConfig

    torch.manual_seed(0)
    path = tmp_path / "bytes.pt"
    LanguageModel(
        GPT(GPTConfig(256, n_layer=1, n_head=1, n_embd=8, context=16)), ByteTokenizer()
    ).save(path)
    args = ["byteprobs", "sample", "--model", str(path), "--max-bytes", "3", "--temperature", "0"]
    result = CliRunner().invoke(main, [*args, "--prompt", "caf\udcc3"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stdout_bytes.startswith(b"caf\xc3") and len(result.stdout_bytes) == 4 + 3 + 1


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e-320"])
def test_sample_temperature(dummy, value):
    _usage_error(["byteprobs", "sample", "--model", dummy, "--temperature", value], "--temperature")


def test_compare_needs_sizes(dummy):
    for option in ["--vocab-sizes", "--baseline-sizes"]:
        _usage_error(["compare", option, ","], option, "no sizes")


def test_compare_help_sizes_are_explicit():
    """k is 1000 in sizes: the help's example must not say 8k for 8192."""
    result = CliRunner().invoke(main, ["compare", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # as wrapped for any terminal width
    assert "--vocab-sizes 8192,32768" in text and "8k,32k" not in text
    assert "k means 1000" in text


@pytest.mark.parametrize(
    "command", [["lm", "train"], ["lm", "eval"], ["byteprobs", "score"], ["byteprobs", "sample"]]
)
def test_subcommand_help_has_an_example(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output and f"toklab {' '.join(command)} " in result.output


def test_import_tiktoken_needs_pattern(dummy):
    output = _usage_error(["import", dummy, "--format", "tiktoken", "-o", "x.json"], "--pattern")
    assert "pattern=" not in output
    _usage_error(["import", dummy, "--format", "hf", "--pattern", "gpt2", "-o", "x.json"])


def test_compare_scores_saved_tokenizers(trained, tmp_path):
    text = tmp_path / "c.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 400, encoding="utf-8")
    raw = tmp_path / "bytes.json"
    toklab.ByteTokenizer().save(raw)
    out = tmp_path / "out"
    args = ["compare", str(text), "--tokenizer", str(trained), "--tokenizer", f"raw={raw}"]
    args += ["--languages", "eng", "--no-plots", "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = {r["method"]: r for r in json.loads((out / "compare.json").read_text())["rows"]}
    assert set(rows) == {"bpe", "raw"}  # (only the given ones: no --methods)
    assert rows["raw"]["bytes_per_token"] == 1.0 and rows["raw"]["vocab_size"] == 256
    assert rows["bpe"]["vocab_size"] == toklab.load(trained).vocab_size
    # An HF tokenizer.json is imported (a byte-level BPE gives the same numbers).
    hf = tmp_path / "tokenizer.json"
    toklab.load(trained).save_hf(hf)
    result = CliRunner().invoke(main, [*args[:2], "--tokenizer", f"hf={hf}", *args[6:]])
    assert result.exit_code == 0, result.output
    again = {r["method"]: r for r in json.loads((out / "compare.json").read_text())["rows"]}
    assert again["hf"]["bytes_per_token"] == rows["bpe"]["bytes_per_token"]
    other = tmp_path / "other.json"
    other.write_text('{"model": {"type": "Unigram"}}', encoding="utf-8")
    for bad in (
        [f"raw={raw}", f"raw={raw}"],
        ["=x"],
        [str(tmp_path / "missing.json")],
        [str(other)],
    ):
        flags = [a for b in bad for a in ("--tokenizer", b)]
        result = CliRunner().invoke(main, ["compare", str(text), *flags, "-o", str(out)])
        assert result.exit_code != 0 and "Traceback" not in result.output


def test_options_of_another_method_are_refused(tmp_path):
    text = tmp_path / "c.txt"
    text.write_text("the cat sat on the mat\n" * 50, encoding="utf-8")
    cases = [
        (["--method", "equal-info", "--vocab-size", "500"], "--vocab-size"),
        (["--method", "equal-info", "--threads", "2"], "--threads"),
        (["--signal", "surprisal"], "--signal"),
        (["--window-bits", "32", "--lm-preset", "tiny"], "--window-bits, --lm-preset"),
        (["--method", "bytespan", "--token-bits", "16"], "--token-bits"),
    ]
    for extra, named in cases:
        args = ["train", str(text), "-o", str(tmp_path / "t.json"), *extra]
        result = CliRunner().invoke(main, args)
        assert result.exit_code != 0, extra
        assert f"{named}: not an option of --method" in result.output, result.output
        assert not (tmp_path / "t.json").exists()
