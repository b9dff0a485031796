"""Equal-Info windows and arithmetic coding: lossless round trips against exact n-gram models and
the byte GPT, code lengths against the ideal, and the errors of bad streams and settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import toklab
from toklab.equalinfo import ArithmeticCoding, EqualInfo, NGramByteLM, static_ac
from toklab.errors import (
    ConfigError,
    CorruptFileError,
    CorruptTokensError,
    InvalidIdsError,
    InvalidInputError,
    UnknownTokenError,
)

TRAIN = (
    "The quick brown fox jumps over the lazy dog. Arithmetic coding turns a model's "
    "probabilities into bits; Equal-Info windows cut those bits into equal pieces. "
) * 20
SAMPLES = [
    "The lazy fox jumps over the quick dog, and the bits are equal.",
    "",
    "x",
    "ünïcödé — 日本語のテキスト and emoji 🎉🎉",
    "\x00\x01\x02 control bytes \xff",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
]
SHAPES = [(16, 8), (32, 8), (64, 8), (128, 8), (16, 16), (32, 16), (64, 16), (128, 16)]


@pytest.fixture(scope="module")
def ngram() -> NGramByteLM:
    return NGramByteLM.train([TRAIN], order=3)


@pytest.mark.parametrize(("window_bits", "token_bits"), SHAPES)
def test_round_trip_every_shape(ngram: NGramByteLM, window_bits: int, token_bits: int) -> None:
    for header in (True, False):
        ei = EqualInfo(ngram, window_bits, token_bits, header=header)
        ids = ei.encode_batch(SAMPLES)
        assert ei.decode_batch(ids) == SAMPLES
        for text, t in zip(SAMPLES, ids, strict=True):
            assert t.dtype == np.uint32 and (t < ei.vocab_size).all()
            body = len(t) - (64 // token_bits if header else 0)
            assert body % (window_bits // token_bits) == 0
            assert (body == 0) == (text == "")
        assert ei.vocab_size == 2**token_bits


def test_bigger_windows_compress_more(ngram: NGramByteLM) -> None:
    text = TRAIN[:3000]
    ratios = []
    for w in (16, 32, 64, 128):
        ei = EqualInfo(ngram, w, 8, header=False)
        ratios.append(len(text) / len(ei.encode(text)))
    assert ratios == sorted(ratios), ratios
    ac = ArithmeticCoding(ngram, 8)
    # Plain AC (no windows) bounds every Equal-Info ratio.
    assert len(text) / len(ac.encode(text)) > ratios[-1]


def _quantised_bits(lp: np.ndarray, byte: int, cdf_bits: int = 14, end: bool = False) -> float:
    """-log2 of ``byte``'s probability in the coder's CDF (the Rust quantiser's rule, in numpy:
    counts 1 + floor(p * (total - 256)), the remainder to the likeliest byte)."""
    total = (1 << cdf_bits) - (1 if end else 0)
    p = np.exp(lp - lp.max())
    p /= p.sum()
    counts = 1 + np.floor(p * (total - 256))
    counts[int(np.argmax(lp))] += total - counts.sum()
    return -math.log2(counts[byte] / (1 << cdf_bits))


def _ideal_bits(lm: NGramByteLM, data: bytes, windows: list[tuple[int, int, bool]]) -> float:
    """-log2 of the quantised probabilities of the bytes, each window's context reset."""
    bits, pos = 0.0, 0
    for _, n, escape in windows:
        if escape:
            pos += 1
            continue
        for t in range(n):
            lp = lm.next_byte_logprobs([data[pos : pos + t]])[0].astype(np.float32)
            bits += _quantised_bits(lp.astype(np.float64), data[pos + t], end=True)
        pos += n
    return bits


@pytest.mark.parametrize("window_bits", [16, 32, 128])
def test_windows_waste_little(ngram: NGramByteLM, window_bits: int) -> None:
    data = TRAIN[:1500].encode()
    ei = EqualInfo(ngram, window_bits, 8, header=False)
    windows = ei.windows_batch([data])[0]
    assert sum(n for _, n, _ in windows) == len(data)
    used = window_bits * len(windows)
    ideal = _ideal_bits(ngram, data, windows)
    # Each window pads at most what one more byte would have cost plus the END/straddle slack.
    assert ideal < used < ideal + len(windows) * 14, (used, ideal, len(windows))


def test_plain_ac_is_near_the_ideal_length(ngram: NGramByteLM) -> None:
    data = TRAIN[100:1600].encode()
    ac = ArithmeticCoding(ngram, 8, context=4096)
    ids = ac.encode(data)
    bits = (len(ids) - 8) * 8
    # The model's float32 logits, as the coder gets them.
    logits = ac._logits(data).astype(np.float64)
    assert np.abs(logits[7] - ngram.next_byte_logprobs([data[:7]])[0]).max() < 1e-5
    ideal = sum(_quantised_bits(logits[t], data[t]) for t in range(len(data)))
    # The interval's rounding (32-bit state) and the stream's last bits and padding cost little.
    assert ideal < bits < ideal * 1.001 + 2 + 8, (bits, ideal)
    assert ac.decode_bytes(ids) == data


def test_static_ac_round_trips() -> None:
    sa = static_ac([TRAIN])
    for text in SAMPLES:
        assert sa.decode(sa.encode(text)) == text
    # A unigram model of English letters: about 4-5 bits per byte, 1.6-2 bytes per token.
    ratio = 3000 / len(sa.encode(TRAIN[:3000]))
    assert 1.5 < ratio < 2.2, ratio


@settings(max_examples=40, deadline=None)
@given(
    train=st.binary(min_size=0, max_size=300),
    data=st.binary(min_size=0, max_size=300),
    order=st.integers(1, 4),
    shape=st.sampled_from([*SHAPES, (8, 8), (24, 8), (48, 16)]),
    precision=st.sampled_from([(32, 14), (16, 14), (62, 24), (32, 20)]),
    segment=st.sampled_from([1, 7, 4096]),
)
def test_any_bytes_round_trip(
    train: bytes,
    data: bytes,
    order: int,
    shape: tuple[int, int],
    precision: tuple[int, int],
    segment: int,
) -> None:
    lm = NGramByteLM.train([train], order=order, alpha=0.05)
    state_bits, cdf_bits = precision
    ei = EqualInfo(
        lm,
        *shape,
        state_bits=state_bits,
        cdf_bits=cdf_bits,
        segment_bytes=segment,
        max_window_bytes=24,
    )
    assert ei.decode_bytes(ei.encode(data)) == data


def test_escape_windows_keep_every_byte_encodable() -> None:
    # A model sure of "a": the first byte "b" of a window costs ~14 bits, more than an 8-bit
    # window holds, so it goes out raw after the escape window.
    lm = NGramByteLM.train(["a" * 5000], order=1, alpha=1e-6)
    ei = EqualInfo(lm, 8, 8, header=False)
    wins = ei.windows_batch([b"bab"])[0]
    assert any(escape for _, _, escape in wins)
    ids = ei.encode("bab")
    assert 255 in ids.tolist()
    assert ei.decode(ids) == "bab"


def test_corrupt_streams_fail_loudly(ngram: NGramByteLM) -> None:
    ei = EqualInfo(ngram, 16, 8)
    text = SAMPLES[0]
    ids = ei.encode(text)
    with pytest.raises(CorruptTokensError, match="whole number"):
        ei.decode(ids[:-1])
    with pytest.raises(CorruptTokensError):
        ei.decode(ids[:-2])  # a whole window less: the header's length catches it
    with pytest.raises(CorruptTokensError, match="header"):
        ei.decode(ids[:3])
    rng = np.random.default_rng(0)
    for _ in range(50):
        bad = ids.copy()
        i = int(rng.integers(8, len(bad)))
        bad[i] ^= np.uint32(1 << int(rng.integers(0, 8)))
        with pytest.raises(CorruptTokensError):
            ei.decode(bad)
    with pytest.raises(UnknownTokenError):
        ei.decode([300])
    # The same bits moved into an id past the vocabulary, as uint32 (the dtype encode gives,
    # whose range the Rust core checks for other tokenizers): an error, not the text.
    for coder in (ei, ArithmeticCoding(ngram, 8)):
        moved = coder.encode(text).astype(np.uint32)
        at = next(k for k in range(1, len(moved)) if moved[k - 1] > 0)
        moved[at - 1] -= 1
        moved[at] += 256
        with pytest.raises(UnknownTokenError):
            coder.decode(moved)
    with pytest.raises(InvalidIdsError):
        ei.decode(np.array([1.5, 2.0]))
    # Without the header, structural checks still catch most corruption.
    raw = EqualInfo(ngram, 32, 8, header=False)
    rids = raw.encode(text)
    caught = 0
    for _ in range(50):
        bad = rids.copy()
        bad[int(rng.integers(0, len(bad)))] ^= np.uint32(1 << int(rng.integers(0, 8)))
        try:
            caught += raw.decode_bytes(bad) != text.encode()
        except CorruptTokensError:
            caught += 1
    assert caught == 50
    ac = ArithmeticCoding(ngram, 8)
    aids = ac.encode(text)
    with pytest.raises(CorruptTokensError):
        ac.decode(aids[:-3])
    bad = aids.copy()
    bad[10] ^= np.uint32(4)
    with pytest.raises(CorruptTokensError):
        ac.decode(bad)
    with pytest.raises(CorruptTokensError, match="claims"):
        ac.decode(np.array([255] * 4 + [0] * 4 + [1, 2], dtype=np.uint32))


def test_bad_settings_are_clear(ngram: NGramByteLM) -> None:
    with pytest.raises(ConfigError, match="multiple of token_bits"):
        EqualInfo(ngram, 24, 16)
    with pytest.raises(ConfigError, match="window_bits"):
        EqualInfo(ngram, 256, 8)
    with pytest.raises(ConfigError, match="token_bits"):
        EqualInfo(ngram, 16, 32)
    with pytest.raises(ConfigError, match="state_bits"):
        EqualInfo(ngram, 16, 8, state_bits=15, cdf_bits=14)

    class Letters:  # an M1 with the wrong alphabet
        has_end = False

        def next_byte_logprobs(self, prefixes):
            return np.zeros((len(prefixes), 26))

    with pytest.raises(ConfigError, match="256 bytes"):
        EqualInfo(Letters(), 16, 8).encode("abc")

    class Broken(Letters):
        def next_byte_logprobs(self, prefixes):
            return np.full((len(prefixes), 256), np.nan)

    with pytest.raises(ConfigError, match="not finite"):
        EqualInfo(Broken(), 16, 8).encode("abc")
    with pytest.raises(ConfigError, match="ByteLM"):
        EqualInfo(object(), 16, 8)


def test_save_and_load(ngram: NGramByteLM, tmp_path) -> None:
    ei = EqualInfo(ngram, 32, 16, max_window_bytes=40)
    path = tmp_path / "ei.json"
    ei.save(path)
    back = toklab.load(path)
    assert isinstance(back, EqualInfo) and back.window_bits == 32 and back.token_bits == 16
    ids = ei.encode(SAMPLES[0])
    assert back.encode(SAMPLES[0]).tolist() == ids.tolist()
    assert back.decode(ids) == SAMPLES[0]
    ac = ArithmeticCoding(ngram, 8)
    ac.save(tmp_path / "ac.json")
    assert toklab.load(tmp_path / "ac.json").decode(ac.encode("hello")) == "hello"
    path.write_text(path.read_text()[:100])
    with pytest.raises(CorruptFileError):
        toklab.load(path)


def test_corrupt_model_fields_and_bad_settings(ngram: NGramByteLM) -> None:
    import json

    for cls in (EqualInfo, ArithmeticCoding):
        good = json.loads(
            cls(ngram, 16, 8).to_json() if cls is EqualInfo else cls(ngram, 8).to_json()
        )
        for m1 in [None, -1, "x", []]:
            bad = dict(good, m1=m1)
            with pytest.raises(CorruptFileError, match=r"M1|field"):
                toklab.loads(json.dumps(bad))
    for kwargs in [{"cdf_bits": -1}, {"state_bits": 2**64}, {"cdf_bits": 1.5}]:
        with pytest.raises(ConfigError):
            EqualInfo(ngram, 16, 8, **kwargs)
    # The settings alone are checked before any byte model is trained (the CLI does this).
    with pytest.raises(ConfigError, match="multiple of token_bits"):
        EqualInfo.check_config(12, 8)
    assert EqualInfo.check_config(16, 8) == 32


def _mutated(coder, change) -> str:
    import json

    d = json.loads(coder.to_json())
    change(d)
    return json.dumps(d)


def test_corrupt_ngram_m1_in_files_is_a_corrupt_file_error(ngram: NGramByteLM) -> None:
    ei = EqualInfo(ngram, 16, 8)
    ctx = next(iter(ngram.to_dict()["counts"]))  # a context, as saved

    def count(key: str, value: object):
        return lambda d: d["m1"]["counts"][ctx].update({key: value})

    cases = [
        (count("300", 1), r"0\.\.255"),  # was an IndexError
        (count("-1", 5), r"0\.\.255"),  # was loaded as byte 255
        (count("07", 5), r"0\.\.255"),
        (count("116", -100), "non-negative"),  # was NaN logits at encode time
        (count("116", "x"), "non-negative"),  # was a plain ValueError
        (count("116", 2.5), "non-negative"),  # was truncated
        (count("116", 10**30), "non-negative"),
        (lambda d: d["m1"]["counts"].update({"abc": {"1": 1}}), "base64"),  # binascii.Error
        (lambda d: d["m1"]["counts"].update({"YWJjZA==": {"1": 1}}), "longer than"),
        (lambda d: d["m1"]["counts"].update({ctx: [1]}), "object"),
        (lambda d: d["m1"].update(counts=[1]), "object"),
        (lambda d: d["m1"].update(order="x"), "order"),  # was a plain ValueError
        (lambda d: d["m1"].update(order=2.7), "order"),  # was truncated
        (lambda d: d["m1"].update(alpha=math.inf), "alpha"),  # was NaN logits at encode time
        (lambda d: d["m1"].update(alpha="nan"), "alpha"),
        (lambda d: d["m1"].pop("alpha"), "alpha"),
        (lambda d: d["config"].update(batch_rows="x"), "batch_rows"),  # was a plain ValueError
        (lambda d: d["config"].update(batch_rows=0), "batch_rows"),
        (lambda d: d["config"].update(batch_rows=2.5), "batch_rows"),
        (lambda d: d["config"].update(max_window_bytes="x"), "max_window_bytes"),
        (lambda d: d["config"].update(segment_bytes=2.5), "segment_bytes"),
        (lambda d: d["config"].update(header="no"), "header"),
        (lambda d: d.update(config=[1]), "config"),
        (lambda d: d.pop("config"), "config"),
    ]
    for change, what in cases:
        with pytest.raises(CorruptFileError, match=what):
            toklab.loads(_mutated(ei, change))
    with pytest.raises(CorruptFileError, match=r"0\.\.255"):
        NGramByteLM.from_dict({"order": 1, "alpha": 0.5, "counts": {"": {"256": 1}}})
    # What to_dict writes reads back exactly.
    back = NGramByteLM.from_dict(ngram.to_dict())
    assert back.counts.keys() == ngram.counts.keys()
    assert all((back.counts[k] == v).all() for k, v in ngram.counts.items())


def test_ngram_settings_and_inputs_are_checked(ngram: NGramByteLM) -> None:
    # alpha=inf (or one whose 256-fold sum overflows) gave NaN log-probabilities.
    for alpha in (math.inf, 1e308, math.nan, 0.0, "x", True):
        with pytest.raises(ConfigError, match="alpha"):
            NGramByteLM(2, alpha)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="order"):
        NGramByteLM(True)  # type: ignore[arg-type]
    assert np.isfinite(
        NGramByteLM.train(["ab"], order=1, alpha=1e300).next_byte_logprobs([b""])
    ).all()
    # One str where a list of prefixes is expected was taken as one prefix per character; an
    # int as that many zero bytes.
    with pytest.raises(InvalidInputError, match="list of prefixes"):
        ngram.next_byte_logprobs("the")
    with pytest.raises(InvalidInputError, match="got int"):
        ngram.next_byte_logprobs([5])
    np.testing.assert_array_equal(
        ngram.next_byte_logprobs(["th"]), ngram.next_byte_logprobs([b"th"])
    )
    state = ngram.start_bytes([b"th", b""])
    for bad in ([101.7, 97], ["e", "a"], [101, 256]):
        with pytest.raises(InvalidIdsError):
            state.append(bad)
    with pytest.raises(InvalidIdsError):
        state.select([0.5])  # was row 0
    with pytest.raises(ConfigError, match="rows"):
        state.select([-1])  # was the last row
    state.append([101, 97])
    assert state.select([1]).prefixes == [b"a"]

    class Short:  # an M1 that answers fewer rows than it is asked for
        def next_byte_logprobs(self, prefixes):
            return np.zeros((1, 256))

    with pytest.raises(ConfigError, match="prefixes"):  # was a plain ValueError
        EqualInfo(Short(), 16, 8).encode("abc")


def test_ac_context_and_batch_rows_are_bounded(ngram: NGramByteLM) -> None:
    # A huge context loaded, then ran out of memory encoding one byte.
    for context in (10**12, 2**40, 65537, 0, 2.5, "x", True):
        with pytest.raises(ConfigError, match="context"):
            ArithmeticCoding(ngram, 8, context=context)  # type: ignore[arg-type]
    with pytest.raises(CorruptFileError, match="context"):
        toklab.loads(
            _mutated(ArithmeticCoding(ngram, 8), lambda d: d["config"].update(context=2**40))
        )
    for batch_rows in (0, -1, 2.5, "x", 2**17):
        with pytest.raises(ConfigError, match="batch_rows"):
            ArithmeticCoding(ngram, 8, batch_rows=batch_rows)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="batch_rows"):
            EqualInfo(ngram, 16, 8, batch_rows=batch_rows)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="token_bits"):
        ArithmeticCoding(ngram, True)  # type: ignore[arg-type]
    # The longest context codes only the text's own prefixes (in pieces), as a shorter one
    # that also holds the text in one block does; short contexts reset M1 between blocks.
    text = TRAIN[:700]
    longest = ArithmeticCoding(ngram, 8, context=1 << 16)
    ids = longest.encode(text)
    assert ids.tolist() == ArithmeticCoding(ngram, 8, context=1024).encode(text).tolist()
    assert longest.decode(ids) == text
    short = ArithmeticCoding(ngram, 8, context=3)
    assert short.decode_batch(short.encode_batch(SAMPLES)) == SAMPLES


torch = pytest.importorskip("torch")


def test_gpt_m1_never_diverges_over_thousands_of_windows() -> None:
    """Encoder and decoder evaluate the GPT in the same fixed-shape batches, so the CDFs agree
    bit for bit: thousands of windows decode exactly, at any thread count. (This model's logits
    do change with the batch size when evaluated naively, which the first check shows.)"""
    from toklab.bytes import ByteTokenizer
    from toklab.lm import LanguageModel
    from toklab.lm.model import GPT, GPTConfig

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=256, n_layer=2, n_head=4, n_embd=256, context=32))
    lm = LanguageModel(model, ByteTokenizer(), device="cpu")
    x = torch.randint(0, 256, (70, 17))
    with torch.no_grad():
        one = torch.cat([model(x[i : i + 1]) for i in range(70)])
        batched = model(x)
    naive_differs = bool((one != batched).any())

    text = TRAIN[:2500] + SAMPLES[3] * 10
    ei = EqualInfo(lm, 16, 8, max_window_bytes=16, segment_bytes=64, batch_rows=64)
    ids = ei.encode(text)
    assert ei.stats["windows"] > 1000
    assert ei.decode(ids) == text
    torch.set_num_threads(1)
    try:
        assert ei.encode(text).tolist() == ids.tolist()
    finally:
        torch.set_num_threads(2)
    assert ei.m1_flops_per_byte() > 0
    # Not asserted (it depends on the BLAS build), only recorded for the reader.
    print(f"naive batching changes logits: {naive_differs}")


def test_coder_primitives_given_cdfs(ngram: NGramByteLM) -> None:
    """The core's plain coder on explicit CDFs: quantise, encode, decode; bad CDFs are refused."""
    from toklab import _core

    data = TRAIN[:500].encode()
    lp = ngram.next_byte_logprobs([data[max(0, i - 2) : i] for i in range(len(data))])
    cdfs = np.frombuffer(_core.ac_quantize(lp.astype(np.float32), 14), dtype="<u4")
    assert cdfs.reshape(len(data), 257)[:, -1].tolist() == [1 << 14] * len(data)
    stream, nbits = _core.ac_encode_cdfs(cdfs, data, 32, 14)
    # Same bits as coding from the logits.
    assert (stream, nbits) == _core.ac_encode(lp.astype(np.float32), data, 32, 14)
    assert _core.ac_decode_cdfs(cdfs, stream, len(data), 32, 14) == data
    bad = cdfs.copy()
    bad[5] = bad[4]  # a symbol with no mass
    with pytest.raises(InvalidInputError, match="rise strictly"):
        _core.ac_encode_cdfs(bad, data, 32, 14)
    with pytest.raises(InvalidInputError):
        _core.ac_encode_cdfs(cdfs, data[:-1], 32, 14)
    with pytest.raises(ConfigError):
        _core.ac_encode_cdfs(cdfs, data, 15, 14)


def test_lester_rules(ngram: NGramByteLM) -> None:
    """Lester's windows: the look-ahead rule and (less often) the delay variant decode some
    windows wrongly; the header's CRC then says so: never a silently wrong text."""
    texts = [*SAMPLES, TRAIN[:700], "zzzz qqqq xxxx " * 20]
    delay = EqualInfo(ngram, 16, 8, rule="lester-delay", max_window_bytes=24, segment_bytes=100)
    look = EqualInfo(ngram, 16, 8, rule="lester", max_window_bytes=24, segment_bytes=100)
    ok = {"delay": 0, "look": 0}
    for name, ei in (("delay", delay), ("look", look)):
        for text in texts:
            try:
                assert ei.decode(ei.encode(text)) == text
                ok[name] += 1
            except CorruptTokensError:
                pass
    assert ok["delay"] >= ok["look"] >= 1, ok
    # Lester's greedy windows hold at least as many bytes as the delay variant's.
    body = [len(look.encode(t)) for t in texts[-2:]], [len(delay.encode(t)) for t in texts[-2:]]
    assert sum(body[0]) <= sum(body[1])
    with pytest.raises(ConfigError, match="header"):
        EqualInfo(ngram, 16, 8, rule="lester", header=False)
    with pytest.raises(ConfigError, match="rule"):
        EqualInfo(ngram, 16, 8, rule="greedy")


def test_lone_surrogates_and_non_text_items(ngram: NGramByteLM) -> None:
    from toklab.errors import InvalidInputError

    ei = EqualInfo(ngram, 16, 8)
    # Passing a lone surrogate through as bytes would decode to other text.
    with pytest.raises(InvalidInputError, match="lone surrogate"):
        ei.encode("a\ud800b")
    assert ei.decode(ei.encode(b"a\xed\xa0\x80b")) == "a\ufffd\ufffd\ufffdb"  # bytes: as given
    with pytest.raises(InvalidInputError, match="got int"):
        NGramByteLM.train([1, 2, 300])
    with pytest.raises(TypeError, match="list of texts"):
        NGramByteLM.train("hello")
    for kwargs in [{"state_bits": -1}, {"cdf_bits": 2**70}]:
        with pytest.raises(ConfigError):
            ArithmeticCoding(ngram, 8, **kwargs)
    for longest in [2**40, 0, -1]:  # 0 is not "the default"
        with pytest.raises(ConfigError, match="max_window_bytes"):
            EqualInfo(ngram, 16, 8, max_window_bytes=longest)


def test_gpt_m1_batch_rows_and_context_are_checked() -> None:
    from toklab.bytes import ByteTokenizer
    from toklab.lm import LanguageModel
    from toklab.lm.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=256, n_layer=1, n_head=1, n_embd=16, context=40))
    lm = LanguageModel(model, ByteTokenizer(), device="cpu")
    # batch_rows=0 was a plain ValueError at encode time (a range step of 0); 2.5 was 2.
    for batch_rows in (0, -1, 2.5):
        with pytest.raises(ConfigError, match="batch_rows"):
            EqualInfo(lm, 16, 8, max_window_bytes=16, batch_rows=batch_rows)
    with pytest.raises(ConfigError, match="context"):
        ArithmeticCoding(lm, 8, context=40)  # rows of context + 1 positions
    ac = ArithmeticCoding(lm, 8, context=39, batch_rows=3)
    assert ac.decode(ac.encode("hello, world")) == "hello, world"


def test_gpt_m1_with_special_tokens_saves_and_loads(tmp_path) -> None:
    """The file stored the model but not its tokenizer: one with a special token (257 ids)
    saved a file that could not be loaded."""
    import toklab
    from toklab.bytes import ByteTokenizer
    from toklab.lm import LanguageModel
    from toklab.lm.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, n_layer=1, n_head=1, n_embd=16, context=40))
    lm = LanguageModel(model, ByteTokenizer(["<|endoftext|>"]), device="cpu")
    ei = EqualInfo(lm, 16, 8, max_window_bytes=16)
    ids = ei.encode("hello, world")
    ei.save(tmp_path / "ei.json")
    loaded = toklab.load(tmp_path / "ei.json")
    assert loaded.m1.tokenizer.special_tokens == {"<|endoftext|>": 256}
    assert np.array_equal(loaded.encode("hello, world"), ids)
    assert loaded.decode(ids) == "hello, world"


def test_header_takes_numpy_bools_and_0_or_1(ngram: NGramByteLM) -> None:
    for flag in (np.True_, 1, np.False_, 0):
        ei = EqualInfo(ngram, 16, 8, header=flag)
        assert ei.header is bool(flag) and ei.decode(ei.encode("abc abd")) == "abc abd"
    for bad in ("no", 2, None):
        with pytest.raises(ConfigError, match="header"):
            EqualInfo(ngram, 16, 8, header=bad)
