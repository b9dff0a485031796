"""toklab compare: methods, the run, the reports, failures and bad input; and the ordering of
ByteSpan's English BPE rows reproduced at small scale."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest

import toklab.compare as cmp
import toklab.metrics as m
from conftest import SHARED_DATA, needs_shared
from toklab.data import default_corpus, split_holdout
from toklab.errors import ConfigError, DeviceError, EmptyCorpusError, InvalidInputError


@pytest.fixture(scope="module")
def corpus():
    text = next(default_corpus(["shakespeare"]))
    return [text[:400_000], text[400_000:800_000]]


@pytest.fixture(scope="module")
def result(corpus):
    methods = ["bpe", "bytes", "tiktoken", "hf-bpe", "spm-unigram", "stochastok"]
    return cmp.run_compare(
        corpus,
        methods=methods,
        vocab_sizes=[400, 1000],
        baseline_sizes=[1000],
        languages=["eng", "jpn", "rus"],
        morph_data=SHARED_DATA / "morph" if SHARED_DATA else None,
        progress=False,
    )


def test_rows(result):
    assert not result.failures
    rows = {(r["method"], r["vocab_size"]): r for r in result.rows}
    assert rows[("bytes", 256)]["bytes_per_token"] == 1.0
    assert rows[("bpe", 400)]["bytes_per_token"] < rows[("bpe", 1000)]["bytes_per_token"]
    assert rows[("bpe", 400)]["fertility"] > rows[("bpe", 1000)]["fertility"]
    # tiktoken runs toklab's ranks: the same ids, so the same numbers.
    for key in ["bytes_per_token", "fertility", "renyi_observed", "udhr_mean_bytes_per_token"]:
        assert rows[("tiktoken", 1000)][key] == rows[("bpe", 1000)][key]
    # StochasTok: the same vocabulary, longer sequences, and it says by how much.
    st = rows[("stochastok", 1000)]
    assert 0.01 < st["expansion"] < 0.1
    assert st["bytes_per_token"] < rows[("bpe", 1000)]["bytes_per_token"]
    for r in result.rows:
        assert set(r["udhr_bytes_per_token"]) == {"eng", "jpn", "rus"}
        assert 0 < r["utilisation"] <= 1 and 0 < r["renyi_observed"] <= 1
    # Japanese is mostly outside an English vocabulary: byte fallback, low compression.
    bpe = rows[("bpe", 1000)]
    assert bpe["udhr_byte_fallback"]["jpn"] > 0.5 > bpe["udhr_byte_fallback"]["eng"]


def test_loaded_tokenizers_are_rows_of_their_own(corpus, result):
    train, _ = split_holdout(corpus, 0.05)
    mine = cmp.METHODS["bpe"].build(train, 400, 0)
    loaded = cmp.run_compare(
        corpus,
        methods=[],
        tokenizers={"mine": mine},
        languages=["eng", "jpn", "rus"],
        morph_data=None,
        progress=False,
    )
    (row,) = loaded.rows
    assert row["method"] == "mine" and row["loaded"] and "train_seconds" not in row
    trained = next(r for r in result.rows if (r["method"], r["vocab_size"]) == ("bpe", 400))
    for key in ["bytes_per_token", "fertility", "renyi_observed", "udhr_bytes_per_token"]:
        assert row[key] == trained[key], key
    with pytest.raises(ConfigError, match="not a tokenizer"):
        cmp.run_compare(corpus, methods=[], tokenizers={"x": object()}, progress=False)


def test_lm_settings_are_checked_before_any_training(corpus, monkeypatch):
    pytest.importorskip("torch")

    def never(*args):
        raise AssertionError("trained before the LM settings were checked")

    stub = dataclasses.replace(cmp.METHODS["bytes"], build=never)
    monkeypatch.setitem(cmp.METHODS, "bytes", stub)
    for bad in [{"lm_budget": 1000, "lm_preset": "huge"}, {"lm_budget": -5}, {"lm_budget": 2.5}]:
        with pytest.raises(ConfigError):
            cmp.run_compare(corpus, methods=["bytes"], progress=False, **bad)
    with pytest.raises(DeviceError):
        cmp.run_compare(corpus, methods=["bytes"], lm_budget=1000, lm_device="tpu", progress=False)


def test_external_adapters_spell_the_text(corpus):
    held = split_holdout(corpus, 0.05)[1][0][:20_000]
    for name in ["hf-bpe", "spm-bpe", "spm-unigram"]:
        if not cmp.METHODS[name].available():
            continue
        tok = cmp.METHODS[name].build(corpus, 800, 0)
        ids, ends = m.token_spans(tok, held)
        assert ends[-1] == len(held.encode()), name
        assert b"".join(tok.token_bytes(int(i)) for i in ids) == held.encode(), name


@needs_shared
def test_morphology_columns(result):
    for r in result.rows:
        assert set(r["morphscore"]) >= {"english", "turkish"}
        assert 0 <= r["morphscore_en"] <= 1 and 0 <= r["boundary_f1"] <= 1
    bytes_row = next(r for r in result.rows if r["method"] == "bytes")
    # Bytes split at every boundary: all gold boundaries found.
    assert bytes_row["morphscore_en"] == 1.0 and bytes_row["boundary_recall"] == 1.0
    # The rows dropped at load are said, in the JSON and in the report.
    assert result.info["morphscore_dropped"]["gujarati"] == 191
    assert result.info["morphscore_dropped"]["english"] == 0
    assert "gujarati 191" in cmp.render_markdown(result)


def test_reports(result, tmp_path):
    written = cmp.write_reports(result, tmp_path, plots=True)
    names = {p.name for p in written}
    assert {"compare.md", "compare.json", "bytes_per_token_vs_vocab.png"} <= names
    assert "udhr_bytes_per_token.png" in names
    for p in written:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "compare.json").read_text())
    assert len(data["rows"]) == len(result.rows)
    md = (tmp_path / "compare.md").read_text()
    assert "| method |" in md and "UDHR" in md
    text = cmp.render_text(result)
    assert "bytes/tok" in text and "bpe" in text


def test_a_failing_method_does_not_lose_the_others(corpus, monkeypatch, tmp_path):
    def broken(texts, vocab_size, seed):
        raise RuntimeError("this method is broken")

    monkeypatch.setitem(
        cmp.METHODS, "broken", cmp.Method("broken", broken, "always fails", sized=False)
    )
    res = cmp.run_compare(
        corpus, methods=["broken", "bytes"], languages=["eng"], morph_data=None, progress=False
    )
    assert [r["method"] for r in res.rows] == ["bytes"]
    assert res.failures[0]["method"] == "broken" and "broken" in res.failures[0]["error"]
    cmp.write_reports(res, tmp_path, plots=False)
    assert "this method is broken" in (tmp_path / "compare.md").read_text()


def test_bad_input(corpus):
    with pytest.raises(ConfigError, match="unknown method"):
        cmp.run_compare(corpus, methods=["bpe", "wordpiece9000"], progress=False)
    with pytest.raises(EmptyCorpusError):
        cmp.run_compare(["", "  "], methods=["bytes"], progress=False)
    with pytest.raises(InvalidInputError, match="no UDHR text"):
        cmp.run_compare(corpus, methods=["bytes"], languages=["xx"], progress=False)
    with pytest.raises(ConfigError, match="at least 256"):
        cmp.run_compare(corpus, methods=["bpe"], vocab_sizes=[100], progress=False)
    with pytest.raises(ConfigError, match="at least 256, got 0"):
        cmp.run_compare(corpus, methods=["hf-bpe"], baseline_sizes=[0], progress=False)
    with pytest.raises(InvalidInputError, match="not a directory"):
        cmp.run_compare(corpus, methods=["bytes"], morph_data="/nonexistent", progress=False)


def test_cli(tmp_path):
    from click.testing import CliRunner

    from toklab.cli import main

    corpus = tmp_path / "c.txt"
    corpus.write_text(next(default_corpus(["shakespeare"]))[:300_000], encoding="utf-8")
    out = tmp_path / "out"
    args = ["compare", str(corpus), "--methods", "bpe,bytes", "--vocab-sizes", "300,600"]
    args += ["--languages", "eng,fra", "--output", str(out), "--no-plots"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "bytes/tok" in r.output and (out / "compare.json").exists()
    r = CliRunner().invoke(main, ["compare", "--list-methods"])
    assert r.exit_code == 0 and "spm-unigram" in r.output
    r = CliRunner().invoke(main, ["compare", str(corpus), "--methods", "nope"])
    assert r.exit_code != 0 and "unknown method" in r.output
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "missing.txt")])
    assert r.exit_code != 0 and "missing.txt" in r.output
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe not utf-8")
    r = CliRunner().invoke(main, ["compare", str(bad), "--methods", "bytes"])
    assert r.exit_code != 0 and "utf-8" in r.output.lower()


@needs_shared
def test_bytespan_english_bpe_ordering():
    """ByteSpan's English table (FineWeb-Edu, 16k/32k/64k; the brief's section 1c): for BPE,
    fertility 1.209 > 1.131 > 1.086, Rényi (observed) .468 > .427 > .395 and MorphScore
    .226 > .207 > .164 all fall as the vocabulary grows. The same ordering at small scale:
    BPE trained on the embedded corpus, scored on its held-out part."""
    from toklab.bpe import train_bpe

    train, held = split_holdout(list(default_corpus()), 0.05)
    english = m.load_morphscore(SHARED_DATA / "morph" / "morphscore")["english"]
    rows = []
    for v in (16384, 32768, 65536):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the vocabulary fills
            tok = train_bpe(train, vocab_size=v, progress=False)
        rows.append(
            (
                m.fertility(tok, held).fertility,
                m.vocabulary_stats(tok, held)["renyi_by_observed"],
                m.morphscore(tok, english).score,
            )
        )
    for column in range(3):
        values = [r[column] for r in rows]
        assert values[0] > values[1] > values[2], (column, values)


def test_lm_column(corpus):
    torch = pytest.importorskip("torch", reason="toklab[lm] is not installed")
    torch.set_num_threads(2)
    methods = ["bytes", "bpe"] + (["hf-bpe"] if cmp.METHODS["hf-bpe"].available() else [])
    res = cmp.run_compare(
        [t[:100_000] for t in corpus],
        methods=methods,
        vocab_sizes=[400],
        baseline_sizes=[400],
        languages=["eng"],
        morph_data=None,
        lm_budget=30_000,
        lm_preset="tiny",
        lm_device="cpu",
        progress=False,
    )
    assert not res.failures, res.failures
    for r in res.rows:
        assert 0 < r["lm_bits_per_byte"] < 9
        # every model read about the same number of bytes
        assert abs(r["lm_bytes_seen"] - 30_000) < 0.6 * 30_000
    assert "LM bits/byte" in cmp.render_text(res)


def test_equal_info_row(corpus, monkeypatch):
    """The registered equal-info method (its byte GPT trained on a small budget here): bytes per
    token, the code's bits per byte and M1's FLOPs per byte; windows end at token spans."""
    torch = pytest.importorskip("torch", reason="toklab[lm] is not installed")
    torch.set_num_threads(2)
    import toklab.equalinfo as ei

    real = ei.train_m1
    monkeypatch.setattr(cmp, "find_morph_data", lambda explicit=None: None)  # keep it short
    monkeypatch.setattr(
        ei, "train_m1", lambda texts, **kw: real(texts, **{**kw, "budget_bytes": 30_000})
    )
    res = cmp.run_compare(
        [t[:20_000] for t in corpus],
        methods=["equal-info"],
        languages=["eng"],
        morph_data=None,
        progress=False,
    )
    assert not res.failures, res.failures
    (row,) = res.rows
    assert row["vocab_size"] == 256
    assert 0.5 < row["bytes_per_token"] < 4
    assert row["code_bits_per_byte"] == pytest.approx(8 / row["bytes_per_token"])
    assert row["m1_flops_per_byte"] > 0
    assert row["fertility"] > 0 and 0 < row["renyi_observed"] < 1


def test_cells_keep_signs_that_mean_something():
    assert cmp._cell({"x": -1e-9}, "x", "{:.3f}") == "0.000"
    assert cmp._cell({"x": float("-inf")}, "x", "{:.3f}") == "-inf"
    assert cmp._cell({"x": -0.5}, "x", "{:.3f}") == "-0.500"
