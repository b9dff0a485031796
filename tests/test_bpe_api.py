"""BPETokenizer's API: round trips, special tokens, offsets, bad input, determinism, pickling,
threads and fork."""

from __future__ import annotations

import concurrent.futures
import gc
import json
import multiprocessing
import pickle
import random
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import toklab
from toklab import (
    BPETokenizer,
    ConfigError,
    CorruptFileError,
    DisallowedSpecialTokenError,
    EmptyCorpusError,
    InvalidIdsError,
    InvalidInputError,
    PatternError,
    TokLabError,
    UnknownTokenError,
)

# -- round trips ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_decode_encode_round_trip(small_tokenizer, text):
    ids = small_tokenizer.encode(text, disallowed_special=())
    assert ids.dtype == np.uint32
    assert small_tokenizer.decode(ids) == text
    assert small_tokenizer.decode_bytes(ids) == text.encode("utf-8", "surrogatepass")


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=500))
def test_decode_bytes_round_trip_for_arbitrary_bytes(small_tokenizer, data):
    ids = small_tokenizer.encode_bytes(data)
    assert small_tokenizer.decode_bytes(ids) == data


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_encode_bytes_equals_encode_on_valid_utf8(small_tokenizer, text):
    assert np.array_equal(
        small_tokenizer.encode_bytes(text.encode()), small_tokenizer.encode_ordinary(text)
    )


@pytest.mark.parametrize("pattern", ["gpt2", "cl100k", "o200k", r"\w+|\d"])
@settings(max_examples=50, deadline=None)
@given(text=st.text(max_size=200))
def test_round_trip_every_pattern(pattern, text):
    tok = _tiny(pattern)
    assert tok.decode(tok.encode(text)) == text


_TINY: dict[str, BPETokenizer] = {}


def _tiny(pattern: str) -> BPETokenizer:
    if pattern not in _TINY:
        from toklab.data import default_corpus

        text = next(default_corpus(["shakespeare"]))[:100_000]
        _TINY[pattern] = toklab.train_bpe(
            [text, "the quick brown fox 12345 ÀÉÎ 日本語 🦀"],
            vocab_size=400,
            pattern=pattern,
            progress=False,
        )
    return _TINY[pattern]


def test_empty_inputs(small_tokenizer):
    assert small_tokenizer.encode("").size == 0
    assert small_tokenizer.encode("").dtype == np.uint32
    assert small_tokenizer.decode([]) == ""
    assert small_tokenizer.decode(np.array([], dtype=np.int64)) == ""
    assert small_tokenizer.encode_batch([]) == []
    assert [a.size for a in small_tokenizer.encode_batch(["", "a", ""])] == [0, 1, 0]
    ids, offsets = small_tokenizer.encode_with_offsets("")
    assert ids.size == 0 and offsets.shape == (0, 2)


def test_encode_batch_equals_encode(small_tokenizer):
    texts = [f"To be, or not to be {i}: that is the question" * (i % 5) for i in range(100)]
    batch = small_tokenizer.encode_batch(texts, num_threads=3)
    assert all(np.array_equal(b, small_tokenizer.encode(t)) for b, t in zip(batch, texts))


def test_encode_batch_many_runs_on_threads(small_tokenizer):
    # Megabytes of texts: many runs, encoded by workers while the caller builds the arrays.
    from toklab.data import default_corpus

    texts = next(default_corpus(["shakespeare"])).splitlines()
    while sum(map(len, texts)) <= 1 << 20:  # four runs or more, whatever the corpus's size
        texts += texts
    serial = [small_tokenizer.encode(t) for t in texts]
    for threads in [1, 2, 3]:
        batch = small_tokenizer.encode_batch(texts, num_threads=threads)
        assert len(batch) == len(texts)
        assert all(b.dtype == np.uint32 and np.array_equal(b, s) for b, s in zip(batch, serial))
    # An error in a late run, on a worker thread, reaches the caller as the typed error.
    bad = [*texts, "x <|endoftext|> y"]
    with pytest.raises(DisallowedSpecialTokenError):
        small_tokenizer.encode_batch(bad, num_threads=2)
    last = small_tokenizer.encode_batch(bad, num_threads=2, allowed_special="all")[-1]
    assert np.array_equal(last, small_tokenizer.encode("x <|endoftext|> y", allowed_special="all"))
    # A bad item read after the workers started on the first runs: the typed error, no hang,
    # and the next batch is whole.
    with pytest.raises(TypeError, match=f"item {len(texts)} is int"):
        small_tokenizer.encode_batch([*texts, 3, "more"], num_threads=2)
    with pytest.raises(UnicodeEncodeError):
        small_tokenizer.encode_batch([*texts, "a\ud800b"], num_threads=3)
    again = small_tokenizer.encode_batch(texts[:5000], num_threads=2)
    assert all(np.array_equal(b, s) for b, s in zip(again, serial[:5000], strict=True))


def test_parallel_encode_ordinary_equals_serial(small_tokenizer):
    from toklab.data import default_corpus

    text = next(default_corpus(["shakespeare"]))
    serial = small_tokenizer.encode_ordinary(text, num_threads=1)
    for threads in [2, 4, None]:
        assert np.array_equal(small_tokenizer.encode_ordinary(text, num_threads=threads), serial)


def test_offsets_are_byte_ranges(small_tokenizer):
    text = "naïve café<|endoftext|> 🦀 done"
    ids, offsets = small_tokenizer.encode_with_offsets(text, allowed_special="all")
    raw = text.encode()
    assert offsets.shape == (len(ids), 2)
    assert offsets[0, 0] == 0 and offsets[-1, 1] == len(raw)
    assert np.array_equal(offsets[1:, 0], offsets[:-1, 1])
    for i, (s, e) in zip(ids, offsets):
        assert raw[s:e] == small_tokenizer.token_bytes(i)


def test_piece_caches_never_change_results(docs):
    """Each thread caches piece encodings per tokenizer; interleaving tokenizers and texts must
    give exactly what fresh tokenizers give."""
    a = toklab.train_bpe(docs[:100], vocab_size=700)
    b = toklab.train_bpe(docs[100:200], vocab_size=500)
    texts = ["\n".join(docs[i : i + 20]) for i in range(0, 200, 20)]
    expected = {
        id(tok): [pickle.loads(pickle.dumps(tok)).encode(t) for t in texts] for tok in (a, b)
    }
    for _ in range(2):
        for i, t in enumerate(texts):
            for tok in (a, b, a):
                assert np.array_equal(tok.encode(t), expected[id(tok)][i])


def test_writable_arrays(small_tokenizer):
    ids = small_tokenizer.encode("hello")
    ids[0] = 0  # the arrays are the caller's own
    # A batch's arrays are views of one buffer per run, made through numpy's C API: each is
    # an ordinary C-contiguous, writable uint32 array whose writes stay inside its own text.
    texts = ["hello world", "", "to be or not", "x" * 50, "hello world"]
    batch = small_tokenizer.encode_batch(texts, num_threads=1)
    expected = [small_tokenizer.encode(t) for t in texts]
    for a in batch:
        assert a.flags.c_contiguous and a.flags.writeable and a.flags.aligned
        assert a.dtype == np.dtype("<u4") and a.ndim == 1
    assert np.array_equal(batch[0], expected[0])
    batch[0][:] = 7
    batch[3][-1] = 9
    for i in (1, 2, 4):
        assert np.array_equal(batch[i], expected[i])
    assert np.array_equal(batch[3][:-1], expected[3][:-1])
    assert batch[2].base is batch[4].base  # one run's buffer, kept alive by each view


def test_results_own_their_memory(small_tokenizer):
    # Ids come from Rust without a copy (the buffer protocol): each result keeps its memory
    # alive, alone, whatever else is encoded or freed afterwards.
    texts = ["hello world " * 50, "x", "another text", ""]
    arrays = [small_tokenizer.encode(t) for t in texts]
    arrays += small_tokenizer.encode_batch(texts, num_threads=2)
    arrays.append(small_tokenizer.encode_bytes(b"bytes \xff"))
    copies = [a.copy() for a in arrays]
    arrays[0][:] = 7  # changes no other result (arrays[4]: the same text's ids, by batch)
    raw = bytes(memoryview(arrays[1].base))
    gc.collect()
    for _ in range(20):
        small_tokenizer.encode("something else " * 200)
    gc.collect()
    assert all(np.array_equal(a, c) for a, c in zip(arrays[1:], copies[1:]))
    assert raw == copies[1].astype("<u4").tobytes()
    assert all(a.dtype == np.uint32 and a.flags.writeable for a in arrays)


# -- special tokens ---------------------------------------------------------------------------


def test_special_tokens_like_tiktoken(small_tokenizer):
    eot = small_tokenizer.special_tokens["<|endoftext|>"]
    text = "end<|endoftext|>start"
    with pytest.raises(DisallowedSpecialTokenError) as e:
        small_tokenizer.encode(text)
    assert "allowed_special" in str(e.value) and "disallowed_special=()" in str(e.value)
    allowed = small_tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    assert eot in allowed.tolist()
    assert np.array_equal(allowed, small_tokenizer.encode(text, allowed_special="all"))
    plain = small_tokenizer.encode(text, disallowed_special=())
    assert eot not in plain.tolist()
    assert np.array_equal(plain, small_tokenizer.encode_ordinary(text))
    assert small_tokenizer.decode(allowed) == small_tokenizer.decode(plain) == text
    with pytest.raises(ConfigError, match="not special tokens"):
        small_tokenizer.encode(text, allowed_special={"<|nope|>"})
    with pytest.raises(ConfigError):
        small_tokenizer.encode(text, allowed_special="<|endoftext|>")
    assert small_tokenizer.token_to_id("<|endoftext|>") == eot
    assert small_tokenizer.token_bytes(eot) == b"<|endoftext|>"


def test_special_tokens_get_the_last_ids():
    text = "".join(chr(c) for c in range(0x100, 0x300))  # 512 two-byte characters, many pairs
    tok = toklab.train_bpe([text], vocab_size=300, special_tokens=["<s>", "</s>"])
    assert tok.special_tokens == {"<s>": 298, "</s>": 299}
    assert tok.vocab_size == 300


# -- bad input --------------------------------------------------------------------------------


def test_unknown_and_bad_ids(small_tokenizer):
    n = small_tokenizer.vocab_size
    with pytest.raises(UnknownTokenError):
        small_tokenizer.decode([1, n])
    with pytest.raises(UnknownTokenError):
        small_tokenizer.decode([-1])
    with pytest.raises(UnknownTokenError):
        small_tokenizer.decode(np.array([2**40], dtype=np.int64))
    with pytest.raises(UnknownTokenError):
        small_tokenizer.token_bytes(n)
    with pytest.raises(UnknownTokenError):
        small_tokenizer.token_bytes(-5)
    for bad in [np.array([1.0, 2.0]), [1.5], np.array([True]), "abc", b"ab", [[1, 2], [3, 4]]]:
        with pytest.raises(InvalidIdsError):
            small_tokenizer.decode(bad)
    # Caught as either ValueError or TypeError.
    for base in (ValueError, TypeError):
        with pytest.raises(base):
            small_tokenizer.decode([1.5])
    # Any integer dtype works when the values are valid ids.
    ids = small_tokenizer.encode("hello there")
    for dtype in [np.int64, np.int32, np.uint16, np.uint64]:
        assert small_tokenizer.decode(ids.astype(dtype)) == "hello there"
    assert small_tokenizer.decode(ids.tolist()) == "hello there"


def test_lone_surrogates_are_rejected(small_tokenizer):
    # Python strs may hold lone surrogates, which have no UTF-8 form: a ValueError, not a crash.
    with pytest.raises(UnicodeEncodeError):
        small_tokenizer.encode("a\ud800b")
    with pytest.raises(UnicodeEncodeError):
        small_tokenizer.encode_batch(["ok", "a\ud800b"], num_threads=2)
    with pytest.raises(ValueError):
        toklab.train_bpe(["a\ud800b"], vocab_size=300)


def test_bad_text_types(small_tokenizer):
    with pytest.raises(TypeError, match="decode bytes first"):
        small_tokenizer.encode(b"bytes")
    with pytest.raises(TypeError, match="item 1 is int"):
        small_tokenizer.encode_batch(["ok", 3])
    with pytest.raises(TypeError, match="item 0 is bytes"):
        small_tokenizer.encode_batch(iter([b"ok"]))


def test_vocab_size_checks():
    with pytest.raises(ConfigError, match="at least 258"):
        toklab.train_bpe(["abc"], vocab_size=257, special_tokens=["<a>", "<b>"])
    with pytest.raises(ConfigError):
        toklab.train_bpe(["abc"], vocab_size=100)
    with pytest.raises(ConfigError):
        toklab.train_bpe(["abc"], vocab_size=300, special_tokens=["<a>", "<a>"])
    with pytest.raises(ConfigError):
        toklab.train_bpe(["abc"], vocab_size=300, min_frequency=0)
    tok = toklab.train_bpe(["abc abc"], vocab_size=256)
    assert tok.vocab_size == 256 and tok.n_merges == 0


def test_empty_corpus_and_small_corpus():
    with pytest.raises(EmptyCorpusError):
        toklab.train_bpe([], vocab_size=300)
    with pytest.raises(EmptyCorpusError):
        toklab.train_bpe(["", ""], vocab_size=300)
    with pytest.warns(toklab.TokLabWarning, match="ran out of pairs"):
        tok = toklab.train_bpe(["ab"], vocab_size=1000)
    assert tok.vocab_size == 257


def test_bad_corpus_items():
    with pytest.raises(InvalidInputError, match="item 1 is int"):
        toklab.train_bpe(["ok", 5], vocab_size=300)
    with pytest.raises(InvalidInputError):
        toklab.train_bpe(b"bytes", vocab_size=300)


def test_invalid_utf8_in_files(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good text here\nmore \xff\xfe bad\n")
    with pytest.raises(InvalidInputError, match=r"bad.txt: invalid UTF-8 at byte 20"):
        toklab.train_bpe(bad, vocab_size=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", toklab.TokLabWarning)
        tok = toklab.train_bpe(bad, vocab_size=300, errors="replace")
    assert tok.decode(tok.encode("more \ufffd")) == "more \ufffd"
    with pytest.raises(FileNotFoundError, match="no file matches"):
        toklab.train_bpe(tmp_path / "missing.txt", vocab_size=300)
    with pytest.raises(FileNotFoundError):
        toklab.train_bpe(str(tmp_path / "*.nothing"), vocab_size=300)


def test_bad_patterns():
    with pytest.raises(PatternError):
        toklab.train_bpe(["abc"], vocab_size=300, pattern="(unclosed")
    for base in (TokLabError, ValueError):
        with pytest.raises(base):
            toklab.train_bpe(["abc"], vocab_size=300, pattern="(unclosed")


def test_corrupt_saved_files(small_tokenizer, tmp_path):
    path = tmp_path / "tok.json"
    small_tokenizer.save(path)
    text = path.read_text()
    cases = {
        "truncated": text[: len(text) // 2],
        "empty": "",
        "not json": "hello",
        "wrong format": text.replace('"toklab.bpe"', '"other"'),
        "future version": text.replace('"version": 1', '"version": 99'),
        "bad merge": text.replace("[32, 116,", "[32, 117,", 1),
        "missing tokens": text.replace('"tokens"', '"tokenz"'),
    }
    for content in cases.values():  # (the keys say what each case is)
        path.write_text(content)
        with pytest.raises(CorruptFileError):
            BPETokenizer.load(path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CorruptFileError):
        BPETokenizer.load(path)
    # Metadata that is no JSON object (it used to give a bare ValueError or TypeError).
    data = json.loads(text)
    for metadata in ("x", 7, [1]):
        path.write_text(json.dumps({**data, "metadata": metadata}))
        with pytest.raises(CorruptFileError, match="metadata"):
            BPETokenizer.load(path)
        with pytest.raises(CorruptFileError, match="metadata"):
            BPETokenizer.from_json(path.read_text())


def test_training_options_from_counts_are_checked_as_in_train_bpe():
    counts = toklab.count_words(["the cat sat on the mat"] * 5)
    # A str of specials used to become one special per character.
    for bad in (
        {"special_tokens": "<s>"},
        {"min_frequency": 1e23},
        {"min_frequency": 0},
        {"max_token_length": 1e23},
        {"max_token_length": 2.5},
    ):
        with pytest.raises(ConfigError):
            toklab.train_bpe_from_counts(counts, vocab_size=300, **bad)
    with pytest.raises(ConfigError, match="errors"):
        toklab.train_bpe(["the cat"], vocab_size=300, errors="bogus")
    with pytest.warns(toklab.TokLabWarning, match="min_frequency"):
        toklab.train_bpe_from_counts(counts, vocab_size=300, min_frequency=3)


def test_corrupt_tiktoken_files(small_tokenizer, tmp_path):
    """A .tiktoken file that does not parse names itself and its first bad line; one that
    parses round-trips (blank lines, CRLF and extra spaces are fine)."""
    path = tmp_path / "bpe.tiktoken"
    small_tokenizer.save_tiktoken(path)
    lines = path.read_text().splitlines()
    loose = "\r\n".join(f"  {line.replace(' ', chr(9))} " for line in lines) + "\n\n"
    path.write_text(loose)
    back = BPETokenizer.from_tiktoken(path, pattern=small_tokenizer.pattern)
    assert back.encode("Shall I compare thee").tolist() == (
        small_tokenizer.encode("Shall I compare thee").tolist()
    )
    token, rank = lines[300].split()
    cases = {
        "no rank": token,
        "three fields": f"{token} {rank} 7",
        "bad base64": f"{token[:-1]}* {rank}",
        "unpadded": f"{token.rstrip('=')}{'' if token.endswith('=') else 'A'} {rank}",
        "negative rank": f"{token} -{rank}",
        "rank not a number": f"{token} x{rank}",
        "rank too large": f"{token} {2**32}",
        "not ASCII": f"{token} {rank}é",
    }
    for bad in cases.values():  # (the keys say what each case is)
        path.write_text("\n".join([*lines[:300], bad, *lines[301:]]) + "\n", encoding="utf-8")
        with pytest.raises(CorruptFileError, match=r"bpe\.tiktoken: .*line 301: "):
            BPETokenizer.from_tiktoken(path, pattern="cl100k")


def test_100mb_without_whitespace():
    """One 100 MB piece: encoding and training stay near-linear, and round-trip exactly."""
    tok = _tiny("cl100k")
    text = "abcdefghij" * 10_000_000
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    with pytest.warns(toklab.TokLabWarning):
        trained = toklab.train_bpe([text], vocab_size=400, num_threads=2)
    assert trained.n_merges > 10
    assert trained.decode(trained.encode(text[:1000])) == text[:1000]


def test_huge_vocab():
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choices(letters, k=rng.randint(6, 13))) for _ in range(300_000)]
    tok = toklab.train_bpe([" ".join(words * 2)], vocab_size=262_144)
    assert tok.vocab_size == 262_144
    sample = " ".join(words[:1000])
    assert tok.decode(tok.encode(sample)) == sample


# -- determinism ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docs() -> list[str]:
    from toklab.data import default_corpus

    text = next(default_corpus(["brown"]))[:3_000_000]
    return text.split("\n\n")


def test_same_merges_any_threads_order_and_chunking(docs, tmp_path):
    reference = toklab.train_bpe(docs, vocab_size=2_000, num_threads=1)
    shuffled = docs[:]
    random.Random(1).shuffle(shuffled)
    assert toklab.train_bpe(shuffled, vocab_size=2_000, num_threads=2) == reference
    assert toklab.train_bpe(iter(docs), vocab_size=2_000, num_threads=4) == reference
    # Counts are partial results: shards counted separately add up to the same training.
    half = len(docs) // 2
    a, b = toklab.count_words(docs[:half]), toklab.count_words(docs[half:], num_threads=1)
    assert toklab.train_bpe_from_counts(b + a, vocab_size=2_000) == reference
    # Files, read in blocks on several threads, train like the same documents as texts
    # (one document per file here).
    for i, d in enumerate(docs[:300]):
        (tmp_path / f"{i:04d}.txt").write_text(d)
    from_files = toklab.train_bpe(str(tmp_path / "*.txt"), vocab_size=600)
    assert from_files == toklab.train_bpe(docs[:300], vocab_size=600, num_threads=1)


def _count_shard(shard: list[str]):
    return toklab.count_words(shard, num_threads=1, progress=False)


def test_sharded_counts_from_processes_train_identically(docs):
    """Distributed-ready: shards counted in other processes, shipped back (pickled), summed in
    any order, train exactly the merges of the whole corpus."""
    whole = toklab.train_bpe(docs, vocab_size=3_000)
    shards = [docs[i::8] for i in range(8)]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        partial = pool.map(_count_shard, shards)
    total = partial[5]
    for counts in partial[:5] + partial[6:]:
        total = counts + total
    assert toklab.train_bpe_from_counts(total, vocab_size=3_000) == whole
    # The partial counts are untouched by training from them (no consume), so train again.
    assert toklab.train_bpe_from_counts(total, vocab_size=3_000) == whole


def test_word_counts_serialize(docs):
    counts = toklab.count_words(docs[:50])
    back = pickle.loads(pickle.dumps(counts))
    assert back.most_common(len(back)) == counts.most_common(len(counts))
    assert back.bytes_seen == counts.bytes_seen and back.pattern == counts.pattern
    raw = counts.to_bytes()
    for bad in [raw[:-1], raw + b"x", b"junk" + raw[4:], b""]:
        with pytest.raises(CorruptFileError):
            toklab._core.WordCounts.from_bytes(bad, counts.pattern)
    other = toklab.count_words(docs[:5], pattern="gpt2")
    with pytest.raises(ConfigError, match="different pre-tokenization"):
        counts + other


def test_one_big_text_equals_its_safe_parts(docs):
    whole = "\n".join(docs)
    a = toklab.count_words([whole], num_threads=1)
    b = toklab.count_words([whole], num_threads=3)
    assert a.most_common(len(a)) == b.most_common(len(b))


def test_datasets_input(docs):
    datasets = pytest.importorskip("datasets")
    reference = toklab.train_bpe(docs[:200], vocab_size=500)
    ds = datasets.Dataset.from_dict({"body": docs[:200], "n": list(range(len(docs[:200])))})
    assert toklab.train_bpe(ds, vocab_size=500, text_column="body") == reference
    assert (
        toklab.train_bpe(ds.to_iterable_dataset(), vocab_size=500, text_column="body") == reference
    )
    with pytest.raises(InvalidInputError, match="no column 'text'"):
        toklab.train_bpe(ds, vocab_size=500)


def test_datasets_map_with_processes(small_tokenizer, docs):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": docs[:64]})
    small_tokenizer.encode_batch(docs[:64], num_threads=2)  # threads used before the fork

    def tokenize(batch):
        return {"ids": [t.tolist() for t in small_tokenizer.encode_batch(batch["text"])]}

    mapped = ds.map(tokenize, batched=True, num_proc=2)
    expected = [small_tokenizer.encode(t).tolist() for t in docs[:64]]
    assert mapped["ids"] == expected


# -- pickling, threads, fork ------------------------------------------------------------------


def test_pickle_round_trip(small_tokenizer):
    back = pickle.loads(pickle.dumps(small_tokenizer))
    assert back == small_tokenizer
    text = "Now is the winter of our discontent<|endoftext|>"
    assert np.array_equal(
        back.encode(text, allowed_special="all"),
        small_tokenizer.encode(text, allowed_special="all"),
    )
    assert back.metadata == small_tokenizer.metadata


def test_save_load_round_trip(small_tokenizer, tmp_path):
    path = tmp_path / "tok.json"
    small_tokenizer.save(path)
    back = toklab.load(path)
    assert back == small_tokenizer
    assert '"format": "toklab.bpe"' in path.read_text()


def test_concurrent_use_from_threads(small_tokenizer, docs):
    texts = docs[:400]
    expected = [small_tokenizer.encode(t) for t in texts]

    def work(i):
        t = texts[i % len(texts)]
        ids = small_tokenizer.encode(t)
        return i % len(texts), ids, small_tokenizer.decode(ids) == t

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for i, ids, ok in pool.map(work, range(2000)):
            assert ok and np.array_equal(ids, expected[i])


def _encode_in_child(args):
    tok, text = args
    return tok.encode_ordinary(text, num_threads=2).tolist()


def test_works_after_fork(small_tokenizer, docs):
    text = "\n".join(docs[:200])
    expected = small_tokenizer.encode_ordinary(text, num_threads=2).tolist()
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        results = pool.map(_encode_in_child, [(small_tokenizer, text)] * 4)
    assert all(r == expected for r in results)


@settings(max_examples=50, deadline=None)
@given(st.sets(st.binary(min_size=2, max_size=12), max_size=40))
def test_hf_alphabet_and_tables_match_the_python_reference(extra):
    """The byte-level strings that Rust writes are `_hf.token_to_hf`'s (the readable reference),
    and a tokenizer round-trips through `to_hf`, `save_hf` and `from_hf`."""
    import json
    import tempfile
    from pathlib import Path

    from toklab import _hf

    tokens = [bytes([b]) for b in range(256)] + sorted(extra)
    tok = BPETokenizer.from_parts(tokens, [], {})
    assert tok._core.hf_strings() == [_hf.token_to_hf(t) for t in tokens]
    spec = tok.to_hf()
    assert spec["model"]["vocab"] == {_hf.token_to_hf(t): i for i, t in enumerate(tokens)}
    assert BPETokenizer.from_hf(spec) == tok
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tokenizer.json"
        tok.save_hf(path)
        assert json.loads(path.read_text(encoding="utf-8")) == spec
        assert BPETokenizer.from_hf(path) == tok


def test_hf_export_writes_what_to_hf_gives(small_tokenizer, tmp_path):
    import json

    path = tmp_path / "tokenizer.json"
    small_tokenizer.save_hf(path)
    spec = small_tokenizer.to_hf()
    assert json.loads(path.read_text(encoding="utf-8")) == spec
    assert spec["model"]["merges"][0] == [
        small_tokenizer._core.hf_strings()[i] for i in small_tokenizer.merges[0][:2]
    ]
    assert BPETokenizer.from_hf(path) == small_tokenizer
    # A special token with a regular token's bytes: HF's vocabulary (text -> id) cannot hold both.
    clash = BPETokenizer.from_parts([bytes([b]) for b in range(256)] + [b"a"], [], {"a": 256})
    for export in (clash.to_hf, lambda: clash.save_hf(tmp_path / "clash.json")):
        with pytest.raises(ConfigError, match="share the same bytes"):
            export()


def test_corrupt_hf_files(small_tokenizer, tmp_path):
    """A tokenizer.json that is not one fails with CorruptFileError; one that is, but not of a
    byte-level BPE, with ConfigError."""
    import copy
    import json

    good = small_tokenizer.to_hf()
    first = next(iter(good["model"]["vocab"]))

    def edited(edit):
        spec = copy.deepcopy(good)
        edit(spec)
        return spec

    def drop_vocab(s):
        del s["model"]["vocab"]

    corrupt = {
        "unknown merge token": edited(lambda s: s["model"]["merges"].append(["Ġthe", "zzzz"])),
        "merge string with two spaces": edited(lambda s: s["model"].update(merges=["a  b"])),
        "merge list of three": edited(lambda s: s["model"].update(merges=[["a", "b", "c"]])),
        "id not a number": edited(lambda s: s["model"]["vocab"].update({first: "1"})),
        "negative id": edited(lambda s: s["model"]["vocab"].update({first: -1})),
        "two tokens, one id": edited(lambda s: s["model"]["vocab"].update({"ĠĠzz": 3})),
        "no vocab": edited(drop_vocab),
        "added token without an id": edited(lambda s: s["added_tokens"].append({"content": "x"})),
        "added token twice": edited(
            lambda s: s["added_tokens"].extend(
                [{"content": "<a>", "id": 5000}, {"content": "<a>", "id": 5001}]
            )
        ),
    }
    for name, spec in corrupt.items():
        with pytest.raises(CorruptFileError, match=r"tokenizer\.json"):
            BPETokenizer.from_hf(spec)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        with pytest.raises(CorruptFileError, match=r"tokenizer\.json"):
            BPETokenizer.from_hf(path)
    for text in ["{", "[1, 2]", '{"model": 3}', "{} x", ""]:
        (tmp_path / "x.json").write_text(text)
        with pytest.raises(CorruptFileError, match=r"tokenizer\.json"):
            BPETokenizer.from_hf(tmp_path / "x.json")
        if text.startswith("{"):  # (a str that starts with "{" is read as the file's text)
            with pytest.raises(CorruptFileError, match=r"tokenizer\.json"):
                BPETokenizer.from_hf(text)
    (tmp_path / "x.json").write_bytes(b'{"model": "\xff"}')
    with pytest.raises(CorruptFileError, match="UTF-8"):
        BPETokenizer.from_hf(tmp_path / "x.json")
    unsupported = {
        "raw space": edited(lambda s: s["model"]["vocab"].update({" zz": 5000})),
        "wordpiece": edited(lambda s: s["model"].update(type="WordPiece")),
        "no merges": edited(lambda s: s["model"].pop("merges")),
        "byte fallback": edited(lambda s: s["model"].update(byte_fallback=True)),
        "normalizer": edited(lambda s: s.update(normalizer={"type": "NFC"})),
    }
    for spec in unsupported.values():  # (the keys say what each case is)
        with pytest.raises(ConfigError, match="unsupported HF tokenizer"):
            BPETokenizer.from_hf(spec)


def test_tiktoken_import_fills_gaps_and_rejects_collisions(tmp_path):
    """Ids that neither ranks nor special tokens use become reserved special tokens (so ids keep
    their meaning); two tokens on one id, or ids far past the tokens given, are corrupt."""
    import base64

    ranks = {bytes([b]): b for b in range(256)} | {b"ab": 257}
    tok = BPETokenizer.from_tiktoken(ranks, pattern="gpt2", special_tokens={"<|end|>": 259})
    assert tok.metadata["reserved_ids"] == [256, 258]
    assert tok.special_tokens == {"<|reserved_256|>": 256, "<|reserved_258|>": 258, "<|end|>": 259}
    assert tok.encode("ab<|end|>", allowed_special="all").tolist() == [257, 259]
    with pytest.raises(CorruptFileError, match="reuses id 257"):
        BPETokenizer.from_tiktoken(ranks, pattern="gpt2", special_tokens={"<|end|>": 257})
    lines = [f"{base64.b64encode(t).decode()} {r}" for t, r in ranks.items()]
    path = tmp_path / "bpe.tiktoken"
    path.write_text("\n".join(lines) + "\n")
    assert BPETokenizer.from_tiktoken(path, pattern="gpt2").metadata["reserved_ids"] == [256]
    for extra, message in [
        ("YWJj 257", "rank 257 is given to two tokens"),
        (f"YWJj {2**31}", "run to 2147483648"),
        ("YWI= 300", "same bytes"),
    ]:
        path.write_text("\n".join([*lines, extra]) + "\n")
        with pytest.raises(CorruptFileError, match=message) as e:
            BPETokenizer.from_tiktoken(path, pattern="gpt2")
        assert str(path) in str(e.value)


# -- bad input found by review (each of these once panicked, aborted or leaked an internal
# -- exception) ---------------------------------------------------------------------------------


def test_one_text_where_a_batch_belongs(small_tokenizer):
    # A str is a sequence of characters; taken as a batch it would silently encode each alone.
    for batch in ["hello", b"hello"]:
        with pytest.raises(TypeError, match="list of texts"):
            small_tokenizer.encode_batch(batch)
    assert len(small_tokenizer.encode_batch(["hello"])) == 1


def test_empty_special_token_is_a_config_error_before_counting(tmp_path):
    # Non-ASCII text: an empty special token would match inside a character.
    path = tmp_path / "t.txt"
    path.write_text("héllo wörld\n" * 20, encoding="utf-8")
    for corpus in [["héllo"] * 5, path]:
        with pytest.raises(ConfigError, match="must not be empty"):
            toklab.train_bpe(corpus, vocab_size=270, special_tokens=[""])
    with pytest.raises(ConfigError, match="must not be empty"):
        toklab.count_words(["é"], special_tokens=[""])


def test_thread_counts_far_above_the_cores(tmp_path, small_tokenizer):
    # The core caps threads per core (results never depend on the count), so huge requests
    # neither fail to spawn nor try to allocate a channel per thread.
    path = tmp_path / "t.txt"
    path.write_text("abc abd abe\n" * 50, encoding="utf-8")
    reference = toklab.train_bpe(path, vocab_size=260, num_threads=1)
    for threads in [100_000, 2**40, 2**70]:
        assert toklab.train_bpe(path, vocab_size=260, num_threads=threads) == reference
    text = "To be, or not to be"
    batch = small_tokenizer.encode_batch([text] * 3, num_threads=2**70)
    assert all(np.array_equal(b, small_tokenizer.encode(text)) for b in batch)
    for bad in [-1, 1.5, "2"]:
        with pytest.raises(ConfigError, match="num_threads"):
            small_tokenizer.encode_ordinary(text, num_threads=bad)


def test_hf_files_with_fields_of_the_wrong_kind(small_tokenizer):
    for field, value in [
        ("pre_tokenizer", 5),
        ("normalizer", "x"),
        ("pre_tokenizer", {"type": "Sequence", "pretokenizers": 5}),
    ]:
        spec = small_tokenizer.to_hf()
        spec[field] = value
        with pytest.raises(CorruptFileError, match=r"tokenizer\.json"):
            BPETokenizer.from_hf(spec)


def test_ids_and_sizes_out_of_range_are_typed_errors(small_tokenizer):
    for bad in [2**64, -5, small_tokenizer.vocab_size]:
        with pytest.raises(UnknownTokenError, match=f"unknown token id {bad}"):
            small_tokenizer.token_bytes(bad)
    with pytest.raises(InvalidIdsError):
        small_tokenizer.token_bytes(1.5)
    with pytest.raises(ConfigError, match="32-bit"):
        toklab.train_bpe(["abc"], vocab_size=2**64)
    counts = toklab.count_words(["abc abd"], progress=False)
    with pytest.raises(ConfigError, match="32-bit"):
        toklab.train_bpe_from_counts(counts, vocab_size=2**64)
    with pytest.raises(ConfigError, match="n >= 0"):
        counts.most_common(-1)
    byte_tokens = [bytes([i]) for i in range(256)]
    with pytest.raises(InvalidIdsError):
        BPETokenizer.from_parts(byte_tokens, [(-1, 0)])
    with pytest.raises(InvalidIdsError):
        BPETokenizer.from_parts(byte_tokens, [], {"<s>": -1})
    ranks = {bytes([i]): i for i in range(256)}
    for rank in [-3, 2**40]:
        with pytest.raises(InvalidIdsError):
            BPETokenizer.from_tiktoken({**ranks, b"ab": rank}, pattern="gpt2")
