"""``toklab compare``: train or load several tokenizers, evaluate them on one scale, report.

Methods register themselves with :func:`register_method` (a name, a builder, whether a
vocabulary size applies, the modules it needs), so every method toklab adds joins the
comparison. Built in: ``bpe`` (toklab), ``bytes``, and, when their libraries are installed,
``hf-bpe`` and ``hf-unigram`` (HF tokenizers), ``spm-bpe`` and ``spm-unigram`` (sentencepiece),
and ``tiktoken`` (tiktoken running toklab's BPE ranks: the same ids, another engine).

Every tokenizer is evaluated on held-out English (the tail of each training document, see
:func:`toklab.data.split_holdout`) and on the embedded UDHR in 63 languages; with the shared
morphology data, on MorphScore v1 and on morpheme boundaries; with ``lm_budget``, by the bits per
byte of a small GPT trained over it at an equal byte budget. One method failing never loses the
others' results: its error is recorded in the report.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toklab import metrics
from toklab.data import split_holdout, udhr
from toklab.errors import ConfigError, EmptyCorpusError, InvalidInputError

__all__ = [
    "METHODS",
    "CompareResult",
    "Method",
    "available_methods",
    "find_morph_data",
    "register_method",
    "run_compare",
]


@dataclass(frozen=True)
class Method:
    """A way to get a tokenizer from training texts: ``build(texts, vocab_size, seed)``."""

    name: str
    build: Callable[[list[str], int | None, int], Any]
    description: str
    sized: bool = True
    requires: tuple[str, ...] = ()
    default: bool = True

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.requires)


#: Registered methods, by name.
METHODS: dict[str, Method] = {}


def register_method(
    name: str,
    *,
    description: str,
    sized: bool = True,
    requires: Sequence[str] = (),
    default: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Registers ``build(texts, vocab_size, seed) -> tokenizer`` under ``name``.

    The tokenizer needs ``encode``, ``vocab_size`` and ``token_bytes`` (or ``spans(text) ->
    (ids, ends)``, see :func:`toklab.metrics.token_spans`); ``unk_ids`` and
    ``byte_fallback_ids`` are optional.
    """

    def wrap(build: Callable[..., Any]) -> Callable[..., Any]:
        METHODS[name] = Method(name, build, description, sized, tuple(requires), default)
        return build

    return wrap


def available_methods(defaults_only: bool = True) -> list[str]:
    """Installed methods (only those run by default, unless ``defaults_only`` is False)."""
    return [m.name for m in METHODS.values() if m.available() and (m.default or not defaults_only)]


# -- built-in methods ---------------------------------------------------------------------------


@register_method("bpe", description="toklab byte-level BPE (GPT-4 pattern)")
def _build_bpe(texts: list[str], vocab_size: int | None, seed: int) -> Any:
    from toklab.bpe import train_bpe

    return train_bpe(texts, vocab_size=vocab_size or 8192, progress=False)


@register_method("bytes", description="raw UTF-8 bytes", sized=False)
def _build_bytes(texts: list[str], vocab_size: int | None, seed: int) -> Any:
    from toklab.bytes import ByteTokenizer

    return ByteTokenizer()


class _Lengths:
    """Spans from a table of token byte lengths (for adapters of other libraries)."""

    _lengths: np.ndarray
    name: str

    def spans(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(self.encode(text), dtype=np.int64)
        return ids, np.cumsum(self._lengths[ids])

    def encode(self, text: str) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{self.name}, {len(self._lengths)} ids>"


class HFAdapter(_Lengths):
    """A ``tokenizers.Tokenizer``: byte-level BPE, or Unigram over characters (with an unknown
    token for characters it never saw)."""

    def __init__(self, tok: Any, name: str, byte_level: bool) -> None:
        from toklab._hf import bytes_to_unicode

        self.tok, self.name = tok, name
        decode_map = {c: b for b, c in bytes_to_unicode().items()}
        vocab = tok.get_vocab()
        self.vocab_size = max(vocab.values()) + 1
        self._bytes = [b""] * self.vocab_size
        for piece, i in vocab.items():
            if byte_level:
                self._bytes[i] = bytes(decode_map[c] for c in piece)
            else:
                self._bytes[i] = piece.replace("▁", " ").encode("utf-8")
        unk = tok.token_to_id("<unk>")
        self.unk_ids = [] if unk is None else [unk]
        if unk is not None:
            self._bytes[unk] = b""  # stands for any text; spans come from HF's offsets
        self._lengths = np.array([len(b) for b in self._bytes], dtype=np.int64)
        self.byte_fallback_ids = [
            i for i, b in enumerate(self._bytes) if len(b) == 1 and b[0] >= 0x80
        ]

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False).ids)

    def spans(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        if not self.unk_ids:
            return super().spans(text)
        # An unknown token stands for text of any length: take the ends from HF's offsets.
        enc = self.tok.encode(text, add_special_tokens=False)
        char_end = np.cumsum([0] + [len(c.encode("utf-8")) for c in text])
        ends = np.array([char_end[e] for _, e in enc.offsets], dtype=np.int64)
        return np.asarray(enc.ids, dtype=np.int64), np.maximum.accumulate(ends)

    def token_bytes(self, i: int) -> bytes:
        return self._bytes[i]


@register_method("hf-bpe", description="HF tokenizers BPE, byte level", requires=("tokenizers",))
def _build_hf_bpe(texts: list[str], vocab_size: int | None, seed: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size or 8192,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return HFAdapter(tok, "hf-bpe", byte_level=True)


@register_method(
    "hf-unigram", description="HF tokenizers Unigram (Metaspace)", requires=("tokenizers",)
)
def _build_hf_unigram(texts: list[str], vocab_size: int | None, seed: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    tok.decoder = decoders.Metaspace(prepend_scheme="never")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size or 8192,
        unk_token="<unk>",
        special_tokens=["<unk>"],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return HFAdapter(tok, "hf-unigram", byte_level=False)


class SPMAdapter(_Lengths):
    """A sentencepiece model trained with byte fallback, identity normalisation and no dummy
    prefix, so its pieces spell the text exactly."""

    def __init__(self, model_proto: bytes, name: str) -> None:
        import sentencepiece as spm

        self.sp, self.name = spm.SentencePieceProcessor(model_proto=model_proto), name
        self.vocab_size = self.sp.vocab_size()
        self._bytes = []
        for i in range(self.vocab_size):
            piece = self.sp.id_to_piece(i)
            if self.sp.is_byte(i):
                self._bytes.append(bytes([int(piece[3:5], 16)]))
            elif self.sp.is_control(i) or self.sp.is_unknown(i):
                self._bytes.append(b"")
            else:
                self._bytes.append(piece.replace("▁", " ").encode("utf-8"))
        self._lengths = np.array([len(b) for b in self._bytes], dtype=np.int64)
        self.unk_ids = [self.sp.unk_id()]
        self.byte_fallback_ids = [
            i for i in range(self.vocab_size) if self.sp.is_byte(i) and self._bytes[i][0] >= 0x80
        ]

    def encode(self, text: str) -> list[int]:
        return list(self.sp.encode(text))

    def token_bytes(self, i: int) -> bytes:
        return self._bytes[i]


def _lines(texts: Iterable[str]) -> list[str]:
    return [line for t in texts for line in t.splitlines() if line.strip()]


def _build_spm(texts: list[str], vocab_size: int | None, seed: int, model_type: str) -> Any:
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_lines(texts)),
        model_writer=out,
        vocab_size=vocab_size or 8192,
        model_type=model_type,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        byte_fallback=True,
        character_coverage=0.9995,
        input_sentence_size=200_000,
        shuffle_input_sentence=True,
        max_sentence_length=1 << 16,
        num_threads=os.cpu_count() or 1,
        minloglevel=2,
    )
    return SPMAdapter(out.getvalue(), f"spm-{model_type}")


@register_method("spm-bpe", description="sentencepiece BPE", requires=("sentencepiece",))
def _build_spm_bpe(texts: list[str], vocab_size: int | None, seed: int) -> Any:
    return _build_spm(texts, vocab_size, seed, "bpe")


@register_method("spm-unigram", description="sentencepiece Unigram", requires=("sentencepiece",))
def _build_spm_unigram(texts: list[str], vocab_size: int | None, seed: int) -> Any:
    return _build_spm(texts, vocab_size, seed, "unigram")


@register_method("stochastok", description="StochasTok p=0.1 over toklab BPE (seeded)")
def _build_stochastok(texts: list[str], vocab_size: int | None, seed: int) -> Any:
    from toklab.stochastok import StochasTok

    return StochasTok(_build_bpe(texts, vocab_size, seed), p=0.1, seed=seed)


#: Signals shared by the ByteSpan runs of one comparison (the byte LM is trained once).
_BYTESPAN_SIGNALS: dict[int, list[Any]] = {}


@register_method(
    "bytespan",
    description="ByteSpan (entropy, combined, frequency) from a small byte GPT; opt-in, slow",
    requires=("torch",),
    default=False,
)
def _build_bytespan(texts: list[str], vocab_size: int | None, seed: int) -> Any:
    import warnings as _warnings

    import toklab.lm as lm
    from toklab.bytes import ByteTokenizer
    from toklab.bytespan import cached_signals, train_bytespan
    from toklab.errors import TokLabWarning

    key = hash(tuple(hash(t) for t in texts))
    if key not in _BYTESPAN_SIGNALS:
        run = lm.train_lm(ByteTokenizer(), texts, preset="tiny", seed=seed, progress=False)
        _BYTESPAN_SIGNALS[key] = [e for _, e in cached_signals(run.lm, texts, None)]
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", TokLabWarning)
        return train_bytespan(
            texts, vocab_size=vocab_size or 8192, signals=_BYTESPAN_SIGNALS[key], seed=seed
        )


@register_method(
    "equal-info",
    description="Equal-Info windows (b=16, 256 tokens) over a tiny byte GPT; opt-in, slow",
    sized=False,
    requires=("torch",),
    default=False,
)
def _build_equal_info(texts: list[str], vocab_size: int | None, seed: int) -> Any:
    from toklab.equalinfo import EqualInfo, train_m1

    m1 = train_m1(texts, preset="tiny", context=64, seed=seed, device="cpu", budget_bytes=4e6)
    return EqualInfo(m1, 16, 8)


class TiktokenAdapter:
    """tiktoken running toklab BPE's ranks: the same ids, tiktoken's engine."""

    def __init__(self, bpe: Any) -> None:
        self.enc, self.bpe = bpe.to_tiktoken(), bpe
        self.vocab_size = bpe.vocab_size
        self.name = "tiktoken"

    def encode(self, text: str) -> list[int]:
        return list(self.enc.encode_ordinary(text))

    def token_bytes(self, i: int) -> bytes:
        return bytes(self.bpe.token_bytes(i))


@register_method("tiktoken", description="tiktoken over toklab BPE's ranks", requires=("tiktoken",))
def _build_tiktoken(texts: list[str], vocab_size: int | None, seed: int) -> Any:
    return TiktokenAdapter(_build_bpe(texts, vocab_size, seed))


# -- running the comparison ---------------------------------------------------------------------


@dataclass
class CompareResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"info": self.info, "rows": self.rows, "failures": self.failures}


def find_morph_data(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The shared morphology data: ``explicit``, ``$TOKLAB_SHARED_DATA/morph``, or
    ``shared/data/morph`` beside the working directory or above it."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_dir():
            raise InvalidInputError(f"{path}: not a directory of morphology data")
        return path
    candidates = []
    if os.environ.get("TOKLAB_SHARED_DATA"):
        candidates.append(Path(os.environ["TOKLAB_SHARED_DATA"]) / "morph")
    here = Path.cwd()
    for base in [here, *here.parents][:4]:
        candidates += [base / "shared" / "data" / "morph", base / "data" / "morph"]
    for c in candidates:
        if (c / "morphscore").is_dir():
            return c
    return None


def _log(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def run_compare(
    corpus: Sequence[str] | None = None,
    *,
    methods: Sequence[str] | None = None,
    vocab_sizes: Sequence[int] = (4096, 8192, 16384, 32768),
    baseline_sizes: Sequence[int] | None = (8192, 32768),
    holdout: float = 0.05,
    languages: Sequence[str] | None = None,
    morph_data: str | os.PathLike[str] | None = None,
    lm_budget: int | None = None,
    lm_preset: str = "tiny",
    lm_device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    tokenizers: Mapping[str, Any] | None = None,
) -> CompareResult:
    """Runs the comparison and returns every number (see the module docstring).

    ``vocab_sizes`` are those of toklab BPE; ``baseline_sizes`` those of the other sized
    methods (None: the same as BPE's). ``tokenizers``: tokenizers already built or loaded
    (``{row name: tokenizer}``, e.g. from ``toklab.load``), evaluated as rows of their own
    beside the methods trained here (``methods=[]``: those alone).
    """
    from toklab.data import default_corpus

    loaded = dict(tokenizers or {})
    names = (
        list(methods) if methods is not None else [m.name for m in METHODS.values() if m.default]
    )
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    if not names and not loaded:
        raise ConfigError("no methods to compare")
    for name, tok in loaded.items():
        if not all(hasattr(tok, a) for a in ("encode", "decode_bytes", "vocab_size")):
            raise ConfigError(f"{name!r} is not a tokenizer (encode, decode_bytes, vocab_size)")
    if lm_budget:  # (None or 0: no LM)
        # Checked before any training, which may take long: not after it, for every method.
        whole = isinstance(lm_budget, (int, np.integer, float)) and float(lm_budget).is_integer()
        if isinstance(lm_budget, bool) or not whole or lm_budget < 1:
            raise ConfigError(f"lm_budget must be a positive number of bytes, got {lm_budget!r}")
        lm_budget = int(lm_budget)
        from toklab.lm.language_model import resolve_device
        from toklab.lm.model import PRESETS

        if lm_preset not in PRESETS:
            raise ConfigError(f"unknown LM preset {lm_preset!r}; choose from {sorted(PRESETS)}")
        resolve_device(lm_device)
    for v in [*vocab_sizes, *(baseline_sizes or ())]:
        if not isinstance(v, int) or v < 256:
            raise ConfigError(f"vocabulary sizes must be integers of at least 256, got {v!r}")
    texts = list(corpus) if corpus is not None else list(default_corpus())
    train, held = split_holdout(texts, holdout)
    if not any(t.strip() for t in train):
        raise EmptyCorpusError("the corpus holds no text to train on")
    if not held:
        raise EmptyCorpusError("nothing held out to evaluate on: raise holdout or add text")
    all_langs = udhr()
    if languages is not None:
        missing = [code for code in languages if code not in all_langs]
        if missing:
            raise InvalidInputError(
                f"no UDHR text for {missing}; available: {', '.join(sorted(all_langs))}"
            )
        langs = {code: all_langs[code] for code in languages}
    else:
        langs = all_langs
    empty = [code for code, d in langs.items() if not d["text"].strip()]
    if empty:
        raise InvalidInputError(f"the UDHR text of {empty} is empty")
    morph_dir = find_morph_data(morph_data)
    if morph_dir is None:
        _log(
            progress,
            "no morphology data found (shared/data/morph, $TOKLAB_SHARED_DATA/morph or "
            "--morph-data): no MorphScore or boundary columns",
        )
    morph_items = metrics.load_morphscore(morph_dir / "morphscore") if morph_dir else {}
    seg_path = morph_dir / "en_morphynet_surface_brown.tsv" if morph_dir else None
    segmentations = metrics.load_segmentations(seg_path) if seg_path and seg_path.exists() else None

    result = CompareResult()
    result.info = {
        "train_bytes": sum(len(t.encode()) for t in train),
        "heldout_bytes": sum(len(t.encode()) for t in held),
        "languages": len(langs),
        "morph_data": str(morph_dir) if morph_dir else None,
        # MorphScore rows left out of each language's file (parts that do not spell the word).
        "morphscore_dropped": {lang: items.dropped for lang, items in morph_items.items()},
        "lm_budget_bytes": lm_budget,
        "lm_preset": lm_preset if lm_budget else None,
        "seed": seed,
    }
    jobs: list[tuple[str, int | None]] = []
    jobs.extend((name, None) for name in loaded)
    for name in names:
        method = METHODS[name]
        if not method.available():
            result.failures.append(
                {"method": name, "error": f"needs {', '.join(method.requires)} (not installed)"}
            )
            continue
        if not method.sized:
            jobs.append((name, None))
        else:
            sizes = vocab_sizes if name == "bpe" or baseline_sizes is None else baseline_sizes
            jobs.extend((name, v) for v in sizes)
    began = time.perf_counter()
    for k, (name, vocab) in enumerate(jobs, 1):
        label = name if vocab is None else f"{name} {vocab}"
        row: dict[str, Any] = {"method": name, "vocab_size": vocab}
        try:
            t0 = time.perf_counter()
            if k <= len(loaded):
                tok = loaded[name]  # (given: no training)
                row["loaded"] = True
            else:
                _log(progress, f"[{k}/{len(jobs)}] {label}: training ...")
                tok = METHODS[name].build(train, vocab, seed)
                row["train_seconds"] = time.perf_counter() - t0
            row["vocab_size"] = int(tok.vocab_size)
            _log(progress, f"[{k}/{len(jobs)}] {label}: evaluating ...")
            row.update(_evaluate(tok, held, langs, morph_items, segmentations))
            if lm_budget:
                _log(progress, f"[{k}/{len(jobs)}] {label}: training an LM ...")
                row.update(_lm_score(tok, train, held, lm_budget, lm_preset, lm_device, seed))
            result.rows.append(row)
            _log(
                progress,
                f"[{k}/{len(jobs)}] {label}: {row['bytes_per_token']:.3f} bytes/token, "
                f"{time.perf_counter() - t0:.1f} s ({time.perf_counter() - began:.0f} s in all)",
            )
        except Exception as e:  # one method failing must not lose the others
            result.failures.append(
                {"method": label, "error": f"{type(e).__name__}: {e}", "trace": _trace(e)}
            )
            _log(progress, f"[{k}/{len(jobs)}] {label}: FAILED: {type(e).__name__}: {e}")
    result.info["seconds"] = time.perf_counter() - began
    return result


def _trace(e: BaseException) -> str:
    return "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=-3))


def _evaluate(
    tok: Any,
    held: list[str],
    langs: dict[str, dict[str, str]],
    morph_items: dict[str, list[tuple[str, str, str]]],
    segmentations: list[tuple[str, list[str]]] | None,
) -> dict[str, Any]:
    speed = metrics.encoding_speed(tok, held, repeat=1)
    prepare = getattr(tok, "prepare", None)
    if prepare is not None:  # a tokenizer that encodes faster in one batch (Equal-Info)
        prepare(
            [
                *held,
                *(d["text"] for d in langs.values()),
                *(w for items in morph_items.values() for w, _, _ in items),
                *(w for w, _ in segmentations or []),
            ]
        )
    c = metrics.compression(tok, held)
    f = metrics.fertility(tok, held)
    v = metrics.vocabulary_stats(tok, held)
    row: dict[str, Any] = {
        "bytes_per_token": c.bytes_per_token,
        "chars_per_token": c.chars_per_token,
        "tokens": c.tokens,
        "fertility": f.fertility,
        "split_share": f.split_share,
        "renyi_observed": v["renyi_by_observed"],
        "renyi_vocab": v["renyi_by_vocab"],
        "utilisation": v["utilisation"],
        "unk_rate": v["unk_rate"],
        "byte_fallback_rate": v["byte_fallback_rate"],
        "encode_mb_s": speed,
    }
    if hasattr(tok, "expansion_rate"):  # StochasTok: how much longer than its base
        row["expansion"] = tok.expansion_rate(held)
    if hasattr(tok, "m1_flops_per_byte"):  # a code (Equal-Info): its rate, and M1's cost
        tok.windows_batch([h.encode("utf-8") for h in held])
        row["code_bits_per_byte"] = math.log2(tok.vocab_size) / c.bytes_per_token
        row["m1_flops_per_byte"] = tok.m1_flops_per_byte()
    per_lang, fallback, unk = {}, {}, {}
    for code, doc in langs.items():
        lc = metrics.compression(tok, [doc["text"]])
        per_lang[code] = lc.bytes_per_token
        stats = metrics.vocabulary_stats(tok, [doc["text"]])
        fallback[code], unk[code] = stats["byte_fallback_rate"], stats["unk_rate"]
    row["udhr_bytes_per_token"] = per_lang
    row["udhr_byte_fallback"] = fallback
    row["udhr_unk_rate"] = unk
    row["udhr_mean_bytes_per_token"] = float(np.mean(list(per_lang.values())))
    row["udhr_mean_unk_rate"] = float(np.mean(list(unk.values())))
    if morph_items:
        scores = {lang: metrics.morphscore(tok, items) for lang, items in morph_items.items()}
        row["morphscore"] = {lang: s.score for lang, s in scores.items()}
        row["morphscore_excluded"] = {lang: s.excluded_share for lang, s in scores.items()}
        row["morphscore_en"] = scores["english"].score if "english" in scores else None
        valid = [s.score for s in scores.values() if not math.isnan(s.score)]
        row["morphscore_mean"] = float(np.mean(valid)) if valid else None
    if segmentations:
        b = metrics.boundary_prf(tok, segmentations)
        row["boundary_precision"], row["boundary_recall"], row["boundary_f1"] = (
            b.precision,
            b.recall,
            b.f1,
        )
    return row


def _lm_score(
    tok: Any, train: list[str], held: list[str], budget: int, preset: str, device: str, seed: int
) -> dict[str, Any]:
    import toklab.lm as lm

    run = lm.train_lm(
        tok, train, preset=preset, budget_bytes=budget, device=device, seed=seed, progress=False
    )
    scorer = run.lm
    base = getattr(tok, "base", None)
    if base is not None and hasattr(base, "to_json"):
        # A stochastic tokenizer is scored on its base's (deterministic) ids, as the paper does.
        scorer = lm.LanguageModel(run.lm.model, base, run.lm.device)
    score = lm.evaluate(scorer, held)
    return {
        "lm_bits_per_byte": score.bits_per_byte,
        "lm_train_seconds": run.seconds,
        "lm_tokens_seen": run.tokens_seen,
        "lm_bytes_seen": run.bytes_seen,
    }


# -- reports ------------------------------------------------------------------------------------

#: The columns of the main table: (key, header, format).
COLUMNS: list[tuple[str, str, str]] = [
    ("method", "method", "{}"),
    ("vocab_size", "vocab", "{}"),
    ("bytes_per_token", "bytes/tok", "{:.3f}"),
    ("expansion", "expansion", "{:.1%}"),
    ("fertility", "fertility", "{:.3f}"),
    ("split_share", "split", "{:.1%}"),
    ("renyi_observed", "Rényi(obs)", "{:.3f}"),
    ("renyi_vocab", "Rényi(V)", "{:.3f}"),
    ("utilisation", "used", "{:.1%}"),
    ("byte_fallback_rate", "fallback", "{:.2%}"),
    ("unk_rate", "unk", "{:.2%}"),
    ("udhr_mean_bytes_per_token", "UDHR b/tok", "{:.2f}"),
    ("udhr_mean_unk_rate", "UDHR unk", "{:.1%}"),
    ("morphscore_en", "MorphScore en", "{:.3f}"),
    ("morphscore_mean", "MorphScore 22", "{:.3f}"),
    ("boundary_f1", "boundary F1", "{:.3f}"),
    ("lm_bits_per_byte", "LM bits/byte", "{:.4f}"),
    ("encode_mb_s", "MB/s", "{:.1f}"),
    ("train_seconds", "train s", "{:.1f}"),
]


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    v = row.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    text = fmt.format(v)
    if text.startswith("-") and re.fullmatch(r"-0(\.0*)?%?", text):
        text = text[1:]  # (a rounding error's "-0.000")
    return text


def table_rows(result: CompareResult) -> tuple[list[str], list[list[str]]]:
    """The main table: the columns that have a value in some row."""
    cols = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in result.rows)]
    rows = sorted(result.rows, key=lambda r: (r["method"], r.get("vocab_size") or 0))
    return [c[1] for c in cols], [[_cell(r, k, f) for k, _, f in cols] for r in rows]


def render_text(result: CompareResult) -> str:
    """The main table as aligned plain text, for the terminal."""
    headers, rows = table_rows(result)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    for f in result.failures:
        lines.append(f"FAILED {f['method']}: {f['error']}")
    return "\n".join(lines)


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _describe_columns(result: CompareResult) -> str:
    """What the main table's columns are (those it has)."""

    def has(key: str) -> bool:
        return any(r.get(key) is not None for r in result.rows)

    parts = [
        "bytes per token and fertility (tokens per GPT-2 pre-token, in context) and the share "
        "of pre-tokens split, on held-out English; Rényi efficiency (α = 2.5) normalised by "
        "the distinct tokens observed and by the vocabulary size; the share of the vocabulary "
        "used; byte-fallback and unknown-token rates; mean bytes per token and mean "
        "unknown-token rate over the UDHR languages (an unknown token counts as the bytes it "
        "replaced, so a high unknown rate flatters compression)"
    ]
    if has("morphscore_en") or has("morphscore_mean"):
        parts.append(
            "MorphScore v1 (English, and the mean over its 22 languages; single-token words "
            "excluded)"
        )
    if has("boundary_f1"):
        parts.append("morpheme-boundary F1 on MorphyNet's English surface segmentations")
    if has("expansion"):
        parts.append("StochasTok's realised expansion over its base")
    if has("lm_bits_per_byte"):
        parts.append("LM bits per byte")
    parts.append("encoding speed (one thread)")
    if has("train_seconds"):
        parts.append("training time (none for tokenizers given ready-made)")
    text = "; ".join(parts)
    if not (has("morphscore_en") or has("boundary_f1")):
        text += (
            ". No morphology columns: no morphology data was found (`--morph-data`, "
            "`$TOKLAB_SHARED_DATA/morph` or `shared/data/morph`)"
        )
    return f"Columns: {text}. Formulas: `toklab.metrics`."


def render_markdown(result: CompareResult) -> str:
    info = result.info
    parts = [
        "# toklab compare",
        "",
        f"Trained on {info.get('train_bytes', 0) / 1e6:.1f} MB; evaluated on "
        f"{info.get('heldout_bytes', 0) / 1e6:.2f} MB held out (English) and the UDHR in "
        f"{info.get('languages')} languages; {info.get('seconds', 0):.0f} s in all.",
        "",
        _describe_columns(result),
        "",
        _md_table(*table_rows(result)),
    ]
    udhr_rows = [r for r in result.rows if r.get("udhr_bytes_per_token")]
    if udhr_rows:
        codes = sorted(udhr_rows[0]["udhr_bytes_per_token"])
        names = [f"{r['method']} {r.get('vocab_size') or ''}".strip() for r in udhr_rows]
        parts += ["", "## Bytes per token on the UDHR, by language", ""]
        rows = [
            [code, *(f"{r['udhr_bytes_per_token'][code]:.2f}" for r in udhr_rows)] for code in codes
        ]
        parts.append(_md_table(["language", *names], rows))
    morph_rows = [r for r in result.rows if r.get("morphscore")]
    if morph_rows:
        langs = sorted(morph_rows[0]["morphscore"])
        names = [f"{r['method']} {r.get('vocab_size') or ''}".strip() for r in morph_rows]
        parts += ["", "## MorphScore v1 by language (share of words excluded)", ""]
        dropped = info.get("morphscore_dropped") or {}
        if any(dropped.values()):
            listed = ", ".join(f"{lang} {n}" for lang, n in sorted(dropped.items()) if n)
            parts += [
                f"Rows of the data left out because their parts do not spell the word: {listed}.",
                "",
            ]
        rows = [
            [
                lang,
                *(
                    f"{_fmt(r['morphscore'][lang])} ({r['morphscore_excluded'][lang]:.0%})"
                    for r in morph_rows
                ),
            ]
            for lang in langs
        ]
        parts.append(_md_table(["language", *names], rows))
    if result.failures:
        parts += ["", "## Failures", ""]
        parts += [f"- `{f['method']}`: {f['error']}" for f in result.failures]
    return "\n".join(parts) + "\n"


def _fmt(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.3f}"


def plot(result: CompareResult, out_dir: str | os.PathLike[str]) -> list[Path]:
    """PNG plots: bytes per token against vocabulary size per method, and bytes per token per
    UDHR language for each method at its largest vocabulary. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    paths = []
    by_method: dict[str, list[dict[str, Any]]] = {}
    for r in result.rows:
        by_method.setdefault(r["method"], []).append(r)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, rows in sorted(by_method.items()):
        rows = sorted(rows, key=lambda r: r["vocab_size"])
        xs = [r["vocab_size"] for r in rows]
        ys = [r["bytes_per_token"] for r in rows]
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("vocabulary size")
    ax.set_ylabel("bytes per token (held-out English)")
    ax.set_title("Compression against vocabulary size")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(out / "bytes_per_token_vs_vocab.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    largest = [max(rows, key=lambda r: r["vocab_size"]) for rows in by_method.values()]
    largest = [r for r in largest if r.get("udhr_bytes_per_token")]
    if largest:
        ref = next((r for r in largest if r["method"] == "bpe"), largest[0])
        codes = sorted(ref["udhr_bytes_per_token"], key=lambda c: ref["udhr_bytes_per_token"][c])
        fig, ax = plt.subplots(figsize=(max(8, len(codes) * 0.22), 4.8))
        # An unknown token stands for any amount of text: such rows are drawn dashed, and the
        # axis follows the others.
        top = 0.0
        for r in sorted(largest, key=lambda r: r["method"]):
            unk = r.get("udhr_mean_unk_rate") or 0.0
            ys = [r["udhr_bytes_per_token"][c] for c in codes]
            if unk <= 0.01:
                top = max(top, *ys)
            ax.plot(
                range(len(codes)),
                ys,
                marker=".",
                linestyle="--" if unk > 0.01 else "-",
                label=f"{r['method']} {r['vocab_size']}"
                + (f" ({unk:.0%} unknown)" if unk > 0.01 else ""),
            )
        if top > 0:
            ax.set_ylim(0, top * 1.25)
        ax.set_xticks(range(len(codes)), codes, rotation=90, fontsize=7)
        ax.set_ylabel("bytes per token")
        ax.set_title("Compression across the UDHR languages (sorted by toklab BPE)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / "udhr_bytes_per_token.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def write_reports(
    result: CompareResult, out_dir: str | os.PathLike[str], plots: bool
) -> list[Path]:
    """Writes ``compare.md``, ``compare.json`` and (with matplotlib) the PNG plots."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "compare.md", out / "compare.json"]
    written[0].write_text(render_markdown(result), encoding="utf-8")
    written[1].write_text(json.dumps(result.to_dict(), indent=1, default=float), encoding="utf-8")
    if plots and result.rows:
        if importlib.util.find_spec("matplotlib") is None:
            result.failures.append(
                {"method": "plots", "error": "matplotlib is not installed (toklab[compare])"}
            )
        else:
            written += plot(result, out)
    return written
