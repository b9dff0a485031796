"""StochasTok: the split table, the expansion (in distribution equal to the paper's code),
determinism, the APIs, the CLI and bad input."""

from __future__ import annotations

import collections
import pickle

import numpy as np
import pytest
import reference_stochastok as ref
import scipy.stats as scipy_stats
from hypothesis import given, settings
from hypothesis import strategies as st

import toklab
from toklab.errors import ConfigError, CorruptFileError, UnknownTokenError
from toklab.stochastok import StochasTok, StochasTokDataset, expand_to_memmap


class Listed:
    """A tokenizer given by its token list (id = index), for vocabularies that are not BPE's."""

    def __init__(self, tokens, specials=()):
        self.tokens = [t.encode() if isinstance(t, str) else t for t in tokens]
        self.vocab_size = len(self.tokens)
        self.special_tokens = {s: self.tokens.index(s.encode()) for s in specials}

    def token_bytes(self, i):
        return self.tokens[i]

    def decode_bytes(self, ids):
        return b"".join(self.tokens[i] for i in ids)

    def decode(self, ids, errors="replace"):
        return self.decode_bytes(ids).decode("utf-8", errors)

    def encode(self, text):
        raise NotImplementedError


TOKENS = [bytes([b]) for b in range(256)] + [b"ab", b"bc", b"abc", b"abcd", b"cd", b"abab"]
AB, BC, ABC, ABCD, CD, ABAB = range(256, 262)


def test_split_table_matches_the_reference(small_tokenizer):
    st_ = StochasTok(small_tokenizer, p=0.1)
    tokens = [small_tokenizer.token_bytes(i) for i in range(small_tokenizer.vocab_size)]
    special = set(small_tokenizer.special_tokens.values())
    expected = ref.build_expansions(tokens, special)
    for i in range(small_tokenizer.vocab_size):
        assert sorted(st_.splits(i)) == sorted(expected.get(i, [])), i
    assert st_.fallback_count == 0  # a BPE vocabulary always has 2-way splits
    assert st_.splittable_count == len(expected)


def test_fallback_split_for_other_vocabularies():
    # "xyzw" has no 2-way split into tokens: longest token prefix "xy", then "z", "w".
    tok = Listed([bytes([b]) for b in range(256)] + [b"xy", b"xyzw", b"<s>"], specials=["<s>"])
    st_ = StochasTok(tok, p=1.0)
    assert st_.splits(257) == [(256, ord("z"), ord("w"))]
    assert st_.fallback_count == 1 and st_.splits(258) == []  # special: never split
    out = st_.expand([257] * 50, seed=3)
    assert tok.decode_bytes(out.tolist()) == b"xyzw" * 50


def test_rust_table_builds_a_large_vocabulary_quickly(small_tokenizer):
    # 200k tokens: random strings over a small alphabet, plus bytes. (No timing assertion:
    # the benchmark measures it; this checks it completes and agrees with the reference.)
    rng = np.random.default_rng(0)
    words = {bytes(rng.integers(97, 101, size=rng.integers(2, 9)).tolist()) for _ in range(250_000)}
    tokens = [bytes([b]) for b in range(256)] + sorted(words)
    table = toklab._core.SplitTable(tokens, [False] * len(tokens))
    # The reference on a prefix: its splits use the prefix's tokens only, so each must be
    # among the table's (which may have more, into tokens later in the vocabulary).
    expected = ref.build_expansions(tokens[:2000], set())
    assert len(table) == len(tokens) and table.stats()[0] > 0
    ids = {t: i for i, t in enumerate(tokens)}
    for i in range(256, 2000):
        t = tokens[i]
        want = sorted(
            (ids[t[:j]], ids[t[j:]]) for j in range(1, len(t)) if t[:j] in ids and t[j:] in ids
        )
        assert sorted(map(tuple, table.splits(i))) == want
    assert expected
    for i, splits in expected.items():
        assert set(splits) <= set(map(tuple, table.splits(i))), i


def _distribution(samples):
    return collections.Counter(tuple(s) for s in samples)


def _same_distribution(a, b):
    keys = sorted(set(a) | set(b))
    table = np.array([[a.get(k, 0) for k in keys], [b.get(k, 0) for k in keys]])
    return scipy_stats.chi2_contingency(table).pvalue


@pytest.mark.parametrize("p", [0.5, 1.0])
def test_reference_mode_equals_the_papers_code_in_distribution(p):
    tok = Listed(TOKENS)
    st_ = StochasTok(tok, p=p, seed=11)
    expansions = ref.build_expansions(TOKENS, set())
    ids = [ABCD, ABAB, ord("a"), ABC]
    n = 20_000
    flat = np.tile(np.array(ids, dtype=np.uint32), n)
    offsets = np.arange(n + 1, dtype=np.uint64) * len(ids)
    out, offs = st_.expand_batch(flat, offsets)
    ours = _distribution(out[offs[i] : offs[i + 1]].tolist() for i in range(n))
    rng = np.random.default_rng(5)
    theirs = _distribution(ref.expand(ids, expansions, p, rng) for _ in range(n))
    assert _same_distribution(ours, theirs) > 1e-3
    # The test has power: a plausible mistake is told apart.
    wrong = _distribution(ref.expand_wrong(ids, expansions, p, rng) for _ in range(n))
    assert _same_distribution(ours, wrong) < 1e-6


def test_bernoulli_mode_equals_its_reference_in_distribution():
    tok = Listed(TOKENS)
    expansions = ref.build_expansions(TOKENS, set())
    ids = [ABCD, ABAB, ABC]
    n = 20_000
    flat = np.tile(np.array(ids, dtype=np.uint32), n)
    offsets = np.arange(n + 1, dtype=np.uint64) * len(ids)
    rng = np.random.default_rng(6)
    for depth in [None, 1]:
        st_ = StochasTok(tok, p=0.4, seed=12, mode="bernoulli", max_depth=depth)
        out, offs = st_.expand_batch(flat, offsets)
        ours = _distribution(out[offs[i] : offs[i + 1]].tolist() for i in range(n))
        theirs = _distribution(
            ref.expand_bernoulli(ids, expansions, 0.4, rng, depth) for _ in range(n)
        )
        assert _same_distribution(ours, theirs) > 1e-3


def test_max_splits_and_depth():
    tok = Listed(TOKENS)
    out = StochasTok(tok, p=1.0, max_splits=3).expand([ABAB] * 40, seed=1)
    assert len(out) == 43
    out = StochasTok(tok, p=1.0, mode="bernoulli", max_depth=1).expand([ABAB] * 40, seed=1)
    assert out.tolist() == [AB, AB] * 40


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300), st.floats(0, 1), st.integers(0, 2**32), st.booleans())
def test_decoding_is_unchanged(small_tokenizer, text, p, seed, bernoulli):
    st_ = StochasTok(
        small_tokenizer, p=p, seed=seed, mode="bernoulli" if bernoulli else "reference"
    )
    base = small_tokenizer.encode(text, disallowed_special=())
    out = st_.expand(base)
    assert small_tokenizer.decode_bytes(out) == small_tokenizer.decode_bytes(base)
    assert len(out) >= len(base)
    if p == 0:
        assert np.array_equal(out, base)


def test_same_seed_same_output_whatever_the_batching(small_tokenizer):
    from toklab.data import default_corpus

    texts = next(default_corpus(["shakespeare"])).split("\n\n")[:3000]
    st_ = StochasTok(small_tokenizer, p=0.1, seed=4)
    whole = st_.encode_batch(texts, num_threads=1)
    assert whole != [] and any(
        len(a) != len(b) for a, b in zip(whole, small_tokenizer.encode_batch(texts))
    )
    threaded = st_.encode_batch(texts, num_threads=4)
    halves = st_.encode_batch(texts[:1000]) + st_.encode_batch(texts[1000:], first_index=1000)
    one_by_one = [st_.encode(t, seed=4) for t in texts[:1]]
    for a, b, c in zip(whole, threaded, halves):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    assert np.array_equal(one_by_one[0], whole[0])
    other = StochasTok(small_tokenizer, p=0.1, seed=5).encode_batch(texts)
    assert any(not np.array_equal(a, b) for a, b in zip(whole, other))
    # Calls without a seed are numbered: a fresh object replays the same stream.
    a, b = StochasTok(small_tokenizer, p=0.5, seed=2), StochasTok(small_tokenizer, p=0.5, seed=2)
    first = [a.encode(t) for t in texts[:50]]
    assert all(np.array_equal(x, b.encode(t)) for x, t in zip(first, texts[:50]))


def test_realised_rate_is_below_p_in_reference_mode(small_tokenizer):
    from toklab.data import default_corpus

    text = next(default_corpus(["shakespeare"]))[:200_000]
    rate = StochasTok(small_tokenizer, p=0.1, seed=0).expansion_rate([text])
    assert 0.03 < rate < 0.1
    rate = StochasTok(small_tokenizer, p=0.1, seed=0, mode="bernoulli").expansion_rate([text])
    assert rate > 0.05


def test_tokenizer_protocol_and_saving(small_tokenizer, tmp_path):
    st_ = StochasTok(small_tokenizer, p=0.2, seed=9, max_depth=3)
    assert isinstance(st_, toklab.Tokenizer) and st_.vocab_size == small_tokenizer.vocab_size
    path = tmp_path / "st.json"
    st_.save(path)
    again = toklab.load(path)
    assert isinstance(again, StochasTok) and again.p == 0.2 and again.max_depth == 3
    text = "Hark, who goes there?"
    assert np.array_equal(again.encode(text, seed=1), st_.encode(text, seed=1))
    clone = pickle.loads(pickle.dumps(st_))
    assert np.array_equal(clone.encode(text, seed=1), st_.encode(text, seed=1))
    assert st_.decode(st_.encode(text)) == text
    path.write_text('{"format": "toklab.stochastok", "version": 1, "p": 0.1}')
    with pytest.raises(CorruptFileError):
        toklab.load(path)


def test_bad_input(small_tokenizer):
    for p in [-0.1, 1.5, float("nan"), "0.1"]:
        with pytest.raises(ConfigError):
            StochasTok(small_tokenizer, p=p)
    with pytest.raises(ConfigError, match="mode"):
        StochasTok(small_tokenizer, mode="sometimes")
    with pytest.raises(ConfigError, match="no token"):
        StochasTok(toklab.ByteTokenizer())
    st_ = StochasTok(small_tokenizer, p=0.5)
    with pytest.raises(UnknownTokenError):
        st_.expand([small_tokenizer.vocab_size])
    assert st_.expand([]).size == 0
    out, offs = st_.expand_batch(np.zeros(0, np.uint32), [0, 0, 0])
    assert out.size == 0 and offs.tolist() == [0, 0, 0]
    with pytest.raises(ConfigError):
        st_.expand_batch(np.array([1, 2], np.uint32), [0, 3])
    with pytest.raises(ConfigError):
        st_.expand_batch(np.array([1, 2], np.uint32), [0, 2, 1, 2])


def test_dataset_resamples_every_epoch(small_tokenizer):
    from toklab.data import default_corpus

    ids = small_tokenizer.encode(next(default_corpus(["shakespeare"]))[:100_000])
    ds = StochasTokDataset(ids, 64, StochasTok(small_tokenizer, p=0.3), seed=1)
    first = [ds[i] for i in range(len(ds))]
    assert all(x.shape == (65,) and x.dtype == np.int64 for x in first)
    assert all(np.array_equal(x, ds[i]) for i, x in enumerate(first[:20]))
    ds.set_epoch(1)
    assert any(not np.array_equal(x, ds[i]) for i, x in enumerate(first[:20]))
    with pytest.raises(IndexError):
        ds[len(ds)]
    torch = pytest.importorskip("torch")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert tuple(batch.shape) == (8, 65)


def test_dataset_windows_reach_every_blocks_end_and_use_every_seed(small_tokenizer):
    text = "To be, or not to be, that is the question: whether 'tis nobler in the mind. " * 40
    ids = small_tokenizer.encode(text)
    block = 16
    ds = StochasTokDataset(ids, block, StochasTok(small_tokenizer, p=0.5, seed=1), seed=3)
    reached = set()
    for epoch in range(30):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            got = small_tokenizer.decode_bytes(ds[i])
            want = small_tokenizer.decode_bytes(ids[i * block : (i + 1) * block + 1])
            assert got in want and len(ds[i]) == block + 1
            if want.endswith(got):
                reached.add(i)
    # A window at a fixed start never reached a block's end once a token in it split (every
    # epoch, at p = 0.5); a random one, about once in seven epochs here.
    assert len(reached) >= 0.9 * len(ds)
    # The StochasTok's own seed counts, and (seed, epoch) pairs do not collide.
    other = StochasTokDataset(ids, block, StochasTok(small_tokenizer, p=0.5, seed=999), seed=3)
    ds.set_epoch(0)
    assert any(not np.array_equal(ds[i], other[i]) for i in range(len(ds)))
    a = StochasTokDataset(ids, block, StochasTok(small_tokenizer, p=0.5, seed=1), seed=0)
    b = StochasTokDataset(ids, block, StochasTok(small_tokenizer, p=0.5, seed=1), seed=1)
    a.set_epoch(1_000_003)
    assert any(not np.array_equal(a[i], b[i]) for i in range(len(a)))
    with pytest.raises(ConfigError):
        ds.set_epoch(-1)


def test_memmap_refuses_offsets_that_leave_ids_out(small_tokenizer, tmp_path):
    st_ = StochasTok(small_tokenizer, p=0.1, seed=3)
    flat = small_tokenizer.encode("the cat sat on the mat")
    for offsets in ([0, 2], [3, len(flat)], [0, 5, 2, len(flat)], []):
        with pytest.raises(ConfigError):
            expand_to_memmap(st_, flat, np.array(offsets, np.int64), tmp_path / "x.npy")
    with pytest.raises(ConfigError):
        expand_to_memmap(st_, flat, np.array([0, len(flat)]), tmp_path / "x.npy", chunk=-5)
    with pytest.raises(ConfigError):
        StochasTok(small_tokenizer, p=0.5, mode="bernoulli", max_splits=0)


def test_offline_memmap_equals_one_batch(small_tokenizer, tmp_path):
    from toklab.data import default_corpus

    docs = next(default_corpus(["shakespeare"])).split("\n\n")[:2000]
    base = small_tokenizer.encode_batch(docs)
    flat = np.concatenate(base)
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in base])]).astype(np.uint64)
    st_ = StochasTok(small_tokenizer, p=0.1, seed=3)
    ids, offs = expand_to_memmap(st_, flat, offsets, tmp_path / "x.npy", chunk=5000)
    want, want_offs = st_.expand_batch(flat, offsets)
    assert ids.dtype == np.uint16 and np.array_equal(ids, want)
    assert np.array_equal(offs, want_offs)


def test_cli_encode_with_stochastok(small_tokenizer, tmp_path):
    from click.testing import CliRunner

    from toklab.cli import main

    tok_path, text_path = tmp_path / "bpe.json", tmp_path / "t.txt"
    small_tokenizer.save(tok_path)
    text_path.write_text("To be, or not to be, that is the question. " * 50, encoding="utf-8")
    runner = CliRunner()
    base = tmp_path / "base.npy"
    assert (
        runner.invoke(main, ["encode", str(tok_path), str(text_path), "-o", str(base)]).exit_code
        == 0
    )
    outs = []
    for seed in [1, 1, 2]:
        out = tmp_path / f"st{len(outs)}.npy"
        args = ["encode", str(tok_path), str(text_path), "-o", str(out), "--stochastok", "0.3"]
        r = runner.invoke(main, [*args, "--seed", str(seed)])
        assert r.exit_code == 0, r.output
        outs.append(np.load(out))
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])
    assert len(outs[0]) > len(np.load(base))
    assert small_tokenizer.decode(outs[0]) == text_path.read_text()
    r = runner.invoke(
        main, ["encode", str(tok_path), str(text_path), "-o", str(base), "--stochastok", "2"]
    )
    assert r.exit_code != 0 and "between 0 and 1" in r.output


def test_seeds_indices_and_offsets_out_of_range():
    import toklab
    from toklab.errors import ConfigError, UnknownTokenError
    from toklab.stochastok import StochasTok

    base = toklab.train_bpe(["the cat sat on the mat"] * 20, vocab_size=262, progress=False)
    for seed in [-1, 2**64, 1.5, True]:
        with pytest.raises(ConfigError, match="seed"):
            StochasTok(base, p=0.5, seed=seed)
    st = StochasTok(base, p=0.5, seed=2**64 - 1)
    ids = base.encode("the cat")
    assert st.expand(ids, seed=0).size >= ids.size
    with pytest.raises(ConfigError, match="seed"):
        st.encode("the cat", seed=-1)
    with pytest.raises(ConfigError, match="first_index"):
        st.expand(ids, index=-1)
    with pytest.raises(ConfigError, match="offsets"):
        st.expand_batch(ids, [0, 1.7, len(ids)])
    with pytest.raises(UnknownTokenError):
        st.splits(-1)
    for bad in [1.5, -1]:
        with pytest.raises(ConfigError, match="max_splits"):
            StochasTok(base, p=0.5, max_splits=bad)
    with pytest.raises(TypeError, match="list of texts"):
        st.encode_batch("hello")


@settings(max_examples=40, deadline=None)
@given(
    text=st.text(alphabet=" singab", max_size=40),
    seed=st.integers(0, 2**32),
    mode=st.sampled_from(["reference", "bernoulli"]),
)
def test_over_bytespan_parts_keep_word_initial_and_continuation_apart(text, seed, mode):
    """ByteSpan has each byte twice (word-initial and continuation): an expansion has a
    word-initial token exactly where the base encoding starts one, as ByteSpan would give."""
    from toklab.bytespan import ByteSpan

    words = [(True, b" sing"), (False, b"ing"), (True, b" s"), (False, b"in"), (False, b"ng")]
    bs = ByteSpan([*words, (True, b"ing"), (False, b"ab"), (True, b"ab")])
    tok = StochasTok(bs, p=1.0, seed=seed, mode=mode)

    def initial_offsets(ids):
        at, out = 0, []
        for i in ids:
            if bs.is_word_initial(int(i)):
                out.append(at)
            at += len(bs.token_bytes(int(i)))
        return out

    base = bs.encode(text)
    out = tok.expand(base)
    assert bs.decode_bytes(out) == text.encode()
    assert initial_offsets(out) == initial_offsets(base)


def test_settings_built_into_tables_cannot_be_changed(small_tokenizer):
    """Setting one used to leave the object encoding with its old tables while saving or
    pickling the new setting (or failing only when unpickled, in a DataLoader's worker)."""
    from toklab.bytespan import ByteSpan
    from toklab.equalinfo import ArithmeticCoding, EqualInfo, NGramByteLM

    st_ = StochasTok(small_tokenizer, p=0.1)
    bs = ByteSpan([(True, b" ab"), (False, b"cd")])
    m1 = NGramByteLM.train(["abc abd"], order=2)
    ei, ac = EqualInfo(m1, window_bits=16), ArithmeticCoding(m1, 8)
    cases = [(st_, ["base", "p", "seed", "max_depth", "table"]), (bs, ["pattern", "inference"])]
    cases += [(ei, ["m1", "rule", "max_window_bytes", "segment_bytes"]), (ac, ["m1", "context"])]
    for obj, names in cases:
        for name in names:
            with pytest.raises(AttributeError, match="cannot be changed"):
                setattr(obj, name, getattr(obj, name))
            with pytest.raises(AttributeError):
                delattr(obj, name)
    assert bs.with_inference("bpe").inference == "bpe"  # (the way to another inference)
    assert st_.decode(st_.encode("the cat")) == "the cat"


def test_files_of_bernoulli_with_max_splits_still_load(small_tokenizer):
    """Saved before bernoulli refused max_splits (which it never used): they still load."""
    import json

    st_ = StochasTok(small_tokenizer, p=0.5, seed=1, mode="bernoulli")
    data = json.loads(st_.to_json())
    data["max_splits"] = 3
    old = toklab.loads(json.dumps(data))
    assert old.max_splits is None
    assert np.array_equal(old.encode("the cat sat", seed=2), st_.encode("the cat sat", seed=2))
