"""ByteSpan (Goriely et al. 2025, "ByteSpan: Information-Driven Subword Tokenisation"): a subword
vocabulary of the byte spans that a byte-level LM finds predictable, with greedy longest-match
inference.

1. **Signals**: the per-byte surprisal ``-ln p(b_t | b_<t)`` or entropy ``H(p(. | b_<t))`` (nats)
   of a byte LM (:func:`byte_signals`; by default toklab's byte GPT trained on the corpus).
2. **Spans** (Rust, one linear pass): a byte and the run of bytes after it over which the
   signal falls (``monotonic``), or falls or stays under the ``percentile``-th percentile of all
   non-zero signal values (``combined``, default 30); the reference's pre-token rules (absorb
   the space that opens a pre-token; never cross a pre-token boundary). Or the ``global``
   constraint: bytes join segments from the lowest signal up (each pre-token on its own) until the
   vocabulary's worth of segment strings occur ``min_count`` times (default 20), under the same
   pre-token rules. See ``rust/bytespan.rs``.
3. **Vocabulary by frequency**: the byte alphabet twice (word-initial and continuation, so every
   input encodes), then the most frequent spans.
4. **Inference**: within each pre-token, the longest word-initial token, then the longest
   continuation tokens (``inference="longest"``, the paper's). Or ``inference="bpe"``: BPE
   merges over the same vocabulary. A ByteSpan vocabulary has no merge history (spans are
   counted, not merged), so merges are derived for every token: its split into two smaller
   tokens (left of its kind, right a continuation) that BPE can already build, the one whose
   later part came first; merges apply in id order. A token with no such split is never
   produced by BPE (``len(merges())`` says how many can be built: nearly all, in practice;
   99.8% of a 4k Shakespeare vocabulary from a random signal). Tokens are raw bytes plus a
   flag, never markers, so ``decode(encode(x)) == x`` for any text, ``##`` and all, under
   both.

Vocabulary by seeding (spans first, then BPE fill) is here too, and :meth:`ByteSpan.to_hf`
exports a ``tokenizer.json`` that gives the same ids.

>>> vocab = ByteSpan([(True, b" the"), (False, b"ing")])
>>> ids = vocab.encode(" the thing")
>>> [vocab.token_bytes(int(i)) for i in ids]
[b' the', b' ', b't', b'h', b'ing']
>>> vocab.decode(ids)
' the thing'
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from toklab import _core
from toklab.errors import (
    ConfigError,
    CorruptFileError,
    EmptyCorpusError,
    InvalidInputError,
    TokLabWarning,
)
from toklab.tokenizer import (
    IdsLike,
    Settings,
    as_ids,
    check_batch,
    decode_text,
    ids_from_buffer,
)

__all__ = ["ByteSpan", "byte_signals", "train_bytespan"]

_FORMAT = "toklab.bytespan"
_VERSION = 1
#: Ids of the byte alphabet: 256 word-initial bytes, then 256 continuation bytes.
ALPHABET = 512
#: The HF export's continuation prefix and unknown token (never in byte-level text).
CONTINUATION = "\u2042"
UNK = "\u2042unk\u2042"


class ByteSpan(Settings):
    """A ByteSpan vocabulary and its longest-match inference (see the module). Immutable:
    ``with_inference`` gives the same vocabulary with the other inference."""

    _SETTINGS = frozenset({"pattern", "inference", "metadata", "_regex", "_core", "_tokens"})

    def __init__(
        self,
        learned: Sequence[tuple[bool, bytes]],
        pattern: str = "gpt2",
        metadata: dict[str, Any] | None = None,
        inference: Literal["longest", "bpe"] = "longest",
    ) -> None:
        from toklab.bpe import PATTERNS

        if inference not in ("longest", "bpe"):
            raise ConfigError(f"inference must be 'longest' or 'bpe', got {inference!r}")
        self.pattern = pattern
        self.inference = inference
        self._regex = PATTERNS.get(pattern, pattern)
        items = learned if type(learned) is list else list(learned)
        try:
            # Pairs of a flag and bytes (as training and loading give them) go as they are.
            self._core = _core.SpanVocab(items, self._regex)
        except TypeError:
            self._core = _core.SpanVocab([(bool(f), bytes(b)) for f, b in items], self._regex)
        self._tokens = self._core.tokens()
        if inference == "bpe":
            # Derived now, with the GIL held: lazily, inside an encode that releases it, a fork
            # from another thread at that moment left the child waiting forever.
            self._core.merge_count()
        self.metadata = dict(metadata or {})

    def with_inference(self, inference: Literal["longest", "bpe"]) -> ByteSpan:
        """The same vocabulary with another inference method."""
        return ByteSpan(self.learned(), self.pattern, self.metadata, inference)

    def merges(self) -> list[tuple[int, int, int]]:
        """BPE inference's merges, ``(left, right, merged)`` ids, by rank (the merged id)."""
        return self._core.merges()

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def special_tokens(self) -> dict[str, int]:
        return {}

    def __repr__(self) -> str:
        return (
            f"ByteSpan(vocab_size={self.vocab_size}, pattern={self.pattern!r}, "
            f"inference={self.inference!r})"
        )

    def is_word_initial(self, token_id: int) -> bool:
        return bool(self._token(token_id)[0])

    def _token(self, token_id: int) -> tuple[bool, bytes]:
        if not 0 <= int(token_id) < len(self._tokens):
            from toklab.errors import UnknownTokenError

            raise UnknownTokenError(
                f"unknown token id {token_id}: the vocabulary has ids 0 to {self.vocab_size - 1}"
            )
        return self._tokens[int(token_id)]

    def token_bytes(self, token_id: int) -> bytes:
        return bytes(self._token(token_id)[1])

    def encode(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        return ids_from_buffer(self._core.encode(text, self.inference == "bpe"))

    def encode_batch(self, texts: Iterable[str]) -> list[np.ndarray]:
        check_batch(texts)
        return [self.encode(t) for t in texts]

    def decode_bytes(self, ids: IdsLike) -> bytes:
        return bytes(self._core.decode_bytes(as_ids(ids, self.vocab_size)))

    def decode(self, ids: IdsLike, errors: str = "replace") -> str:
        return decode_text(self.decode_bytes(ids), errors)

    def learned(self) -> list[tuple[bool, bytes]]:
        """The tokens after the byte alphabet, in id order."""
        return [(bool(f), bytes(b)) for f, b in self._tokens[ALPHABET:]]

    def to_hf(self) -> dict[str, Any]:
        """A HF ``tokenizer.json`` (as a dict) that encodes to the same ids: a WordPiece model
        (longest match) or a BPE model with the merges (``inference="bpe"``) over GPT-2's
        byte-level alphabet, continuation tokens prefixed by ``⁂`` (a character that byte-level
        text never contains, so nothing collides), no length limit, and for WordPiece an
        unknown token at the last id that is never produced. It decodes exactly too."""
        from toklab._hf import bytes_to_unicode
        from toklab.bpe import PATTERNS

        if self._regex != PATTERNS["gpt2"]:
            raise ConfigError("the HF export needs the gpt2 pre-tokenization pattern")
        table = bytes_to_unicode()
        names: list[str] = []
        for initial, data in self._tokens:
            names.append(("" if initial else CONTINUATION) + "".join(table[b] for b in data))
        vocab = {name: i for i, name in enumerate(names)}
        vocab[UNK] = len(self._tokens)
        model: dict[str, Any] = {
            "type": "WordPiece",
            "unk_token": UNK,
            "continuing_subword_prefix": CONTINUATION,
            "max_input_chars_per_word": 1 << 30,
            "vocab": vocab,
        }
        if self.inference == "bpe":
            # HF's BPE with a continuation prefix is the same algorithm: the merged token is
            # left + right without its prefix, and merges apply in list order (our ids).
            del vocab[UNK]
            model = {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": CONTINUATION,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": False,
                "vocab": vocab,
                "merges": [[names[a], names[b]] for a, b, _ in self.merges()],
            }
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [],
            "normalizer": None,
            "pre_tokenizer": {
                "type": "ByteLevel",
                "add_prefix_space": False,
                "trim_offsets": False,
                "use_regex": True,
            },
            "post_processor": None,
            "decoder": {
                "type": "Sequence",
                "decoders": [
                    {
                        "type": "Replace",
                        "pattern": {"String": CONTINUATION},
                        "content": "",
                    },
                    {
                        "type": "ByteLevel",
                        "add_prefix_space": False,
                        "trim_offsets": False,
                        "use_regex": True,
                    },
                ],
            },
            "model": model,
        }

    def save_hf(self, path: str | os.PathLike[str]) -> None:
        """Writes :meth:`to_hf` as a ``tokenizer.json`` file."""
        Path(path).write_text(json.dumps(self.to_hf(), ensure_ascii=False), encoding="utf-8")

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _FORMAT,
                "version": _VERSION,
                "pattern": self.pattern,
                "inference": self.inference,
                "metadata": self.metadata,
                "tokens": [
                    [int(f), base64.b64encode(b).decode("ascii")] for f, b in self.learned()
                ],
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> ByteSpan:
        try:
            data = json.loads(text)
            if data.get("format") != _FORMAT:
                raise CorruptFileError("not a ByteSpan file (format field)")
            if data.get("version") != _VERSION:
                raise CorruptFileError(f"ByteSpan file version {data.get('version')!r}")
            learned = [(bool(f), base64.b64decode(b, validate=True)) for f, b in data["tokens"]]
            return cls(
                learned, data["pattern"], data.get("metadata"), data.get("inference", "longest")
            )
        except CorruptFileError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CorruptFileError(f"damaged ByteSpan file: {e}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    def __reduce__(self) -> tuple[Any, ...]:
        return (ByteSpan, (self.learned(), self.pattern, self.metadata, self.inference))


def _utf8(text: object, i: int | None = None) -> bytes:
    """``text``'s UTF-8 bytes; a lone surrogate (which has none) or a non-str is an error."""
    where = "" if i is None else f"document {i}: "
    if not isinstance(text, str):
        raise InvalidInputError(f"{where}texts must be str, not {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidInputError(
            f"{where}a lone surrogate {text[e.start]!r} at character {e.start} has no UTF-8 bytes"
        ) from None


def byte_signals(
    lm: Any,
    texts: Sequence[str],
    *,
    stride: int | None = None,
    batch_tokens: int | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-byte ``(surprisal, entropy)`` in nats (float32) of each text under a byte GPT
    (:class:`toklab.lm.LanguageModel` over :class:`~toklab.bytes.ByteTokenizer`), computed in
    batched strided windows (every byte predicted once, from the document start or from at
    least ``context - stride`` bytes of context). ``batch_tokens``, the positions of one forward
    pass, is 2^16 on CUDA (where smaller batches leave the GPU idle: 2^14 scored 2.8x slower
    with the small preset on an H200) and 2^14 on CPU."""
    import torch

    from toklab.bytes import ByteTokenizer
    from toklab.lm.language_model import autocast
    from toklab.lm.score import window_batches

    if not isinstance(getattr(lm, "tokenizer", None), ByteTokenizer):
        raise ConfigError("byte_signals needs a byte-level toklab LM (over ByteTokenizer)")
    context = lm.context
    stride = context // 2 if stride is None else stride
    if not isinstance(stride, (int, np.integer)) or not 1 <= stride <= max(1, context - 1):
        raise ConfigError(f"stride must be an int in 1..{max(1, context - 1)}, got {stride!r}")
    if batch_tokens is None:
        batch_tokens = 1 << 16 if lm.device.type == "cuda" else 1 << 14
    if not isinstance(batch_tokens, (int, np.integer)) or batch_tokens < 1:
        raise ConfigError(f"batch_tokens must be a positive int, got {batch_tokens!r}")
    bos = lm.cfg.bos_id
    seqs = [np.concatenate([[bos], np.frombuffer(_utf8(t), np.uint8)]) for t in texts]
    # Views of one array per signal (as a cached signal's are), which the global constraint
    # reads in place.
    offs = np.concatenate([[0], np.cumsum([len(s) - 1 for s in seqs])]).astype(np.int64)
    flat = np.zeros((2, int(offs[-1])), np.float32)
    out = [
        (flat[0, offs[i] : offs[i + 1]], flat[1, offs[i] : offs[i + 1]]) for i in range(len(seqs))
    ]
    with torch.no_grad():
        for batch, ids in window_batches(seqs, context, stride, lambda w: batch_tokens // w):
            ids = ids.to(lm.device)
            with autocast(lm.device):
                logits = lm.model(ids)
            logp = logits.float().log_softmax(-1)
            # Both signals are reduced where the model ran (on the GPU, only [rows, width]
            # floats come back, not the whole distributions): position p's surprisal is that
            # of the byte at p + 1 (padding beyond a window's end is never read).
            entropy = -(logp.exp() * logp).sum(-1).cpu().numpy()
            surprisal = -logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0].cpu().numpy()
            for r, (d, start, end, first) in enumerate(batch):
                out[d][0][first : end - 1] = surprisal[r, first - start : end - 1 - start]
                out[d][1][first : end - 1] = entropy[r, first - start : end - 1 - start]
    # Both are never negative: rounding's tiny negatives and -0.0 (from -log 1) become +0.0.
    np.maximum(flat, 0.0, out=flat)
    flat += 0.0
    return out


def _add_texts(h: Any, texts: Sequence[str]) -> None:
    """Adds each text's digest to the cache key ``h``."""
    for i, t in enumerate(texts):
        h.update(hashlib.sha256(_utf8(t, i)).digest())


def _cache_dir(cache_dir: str | os.PathLike[str]) -> Path:
    """``cache_dir`` as a path, refused when it is a file."""
    path = Path(cache_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"cache_dir {cache_dir} is not a directory")
    return path


def _signal_cache_key(lm: Any, texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for name, p in sorted(lm.model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().numpy().tobytes())
    _add_texts(h, texts)
    return h.hexdigest()[:32]


def _read_signal_cache(
    path: Path, lengths: list[int]
) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The signals stored at ``path`` for documents of these byte lengths, or None when the
    file is not such a cache (truncated, damaged, or of other lengths)."""
    try:
        # (Opened here: np.load leaves its own file open when the zip is damaged.)
        with open(path, "rb") as f, np.load(f) as data:
            offs = np.asarray(data["offsets"])
            surprisal, entropy = np.asarray(data["surprisal"]), np.asarray(data["entropy"])
    except Exception:  # (any damage: zip, pickle refused, missing keys, bad headers)
        return None
    want = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    if (
        offs.shape != want.shape
        or not np.array_equal(offs, want)
        or surprisal.dtype != np.float32
        or entropy.dtype != np.float32
        or surprisal.shape != (want[-1],)
        or entropy.shape != (want[-1],)
    ):
        return None
    return [
        (surprisal[offs[i] : offs[i + 1]], entropy[offs[i] : offs[i + 1]])
        for i in range(len(lengths))
    ]


def cached_signals(
    lm: Any, texts: Sequence[str], cache_dir: str | os.PathLike[str] | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`byte_signals`, stored in ``cache_dir`` (float32 beside the byte offsets, keyed by
    the model's weights and the texts), so each corpus and model is scored once."""
    if cache_dir is None:
        return byte_signals(lm, texts)
    path = _cache_dir(cache_dir) / f"signals-{_signal_cache_key(lm, texts)}.npz"
    if path.exists():
        cached = _read_signal_cache(path, [len(_utf8(t, i)) for i, t in enumerate(texts)])
        if cached is not None:
            return cached
        warnings.warn(
            f"{path}: a damaged signal cache; scoring again and replacing it",
            TokLabWarning,
            stacklevel=2,
        )
    sig = byte_signals(lm, texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s, _ in sig])])
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp,
        offsets=offsets,
        surprisal=np.concatenate([s for s, _ in sig]) if sig else np.zeros(0, np.float32),
        entropy=np.concatenate([e for _, e in sig]) if sig else np.zeros(0, np.float32),
    )
    os.replace(tmp, path)
    return sig


def cached_byte_lm(
    texts: Sequence[str],
    cache_dir: str | os.PathLike[str] | None,
    *,
    preset: str = "small",
    budget_bytes: int | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool | None = None,
) -> Any:
    """The byte GPT that :func:`train_bytespan` trains on ``texts`` when given no signals and no
    ``byte_lm``, kept in ``cache_dir`` beside the signals (a checkpoint keyed by the texts, the
    preset, the budget, the seed, the device, and the torch and toklab versions: whatever
    changes the trained weights), so that a second run on the same corpus trains nothing."""
    import torch

    import toklab.lm as lm
    from toklab.bytes import ByteTokenizer
    from toklab.errors import CorruptFileError

    def train() -> Any:
        return lm.train_lm(
            ByteTokenizer(),
            texts,
            preset=preset,
            budget_bytes=budget_bytes,
            device=device,
            seed=seed,
            progress=progress,
        ).lm

    if cache_dir is None:
        return train()
    folder = _cache_dir(cache_dir)
    dev = lm.resolve_device(device)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    from toklab import __version__

    budget: Any = budget_bytes
    if isinstance(budget, (float, np.floating)) and float(budget).is_integer():
        budget = int(budget)  # (1e6 and 1_000_000 train the same model)
    h = hashlib.sha256()
    settings = [preset, budget, seed, where, torch.__version__, __version__]
    h.update(json.dumps(settings, default=str).encode())
    _add_texts(h, texts)
    path = folder / f"bytelm-{h.hexdigest()[:32]}.pt"
    if path.exists():
        try:
            return lm.LanguageModel.load(path, device=dev, tokenizer=ByteTokenizer())
        except CorruptFileError:
            warnings.warn(
                f"{path}: a damaged byte LM checkpoint; training again and replacing it",
                TokLabWarning,
                stacklevel=2,
            )
    model = train()
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model


def train_bytespan(
    corpus: Any = None,
    *,
    vocab_size: int = 16_384,
    signal: Literal["entropy", "surprisal"] = "entropy",
    constraint: Literal["monotonic", "combined", "global"] = "combined",
    percentile: float = 30.0,
    min_count: int = 20,
    signals: Sequence[np.ndarray] | None = None,
    byte_lm: Any = None,
    lm_preset: str = "small",
    lm_budget_bytes: int | None = None,
    building: Literal["frequency", "seeding"] = "frequency",
    proportion: float = 0.5,
    pattern: str = "gpt2",
    device: str = "auto",
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    num_threads: int | None = None,
    progress: bool | None = None,
    languages: Sequence[str] | None = None,
    inference: Literal["longest", "bpe"] = "longest",
) -> ByteSpan:
    """Trains a ByteSpan vocabulary (see the module).

    Args:
        corpus: documents, as ``train_bpe`` takes them (None: the embedded corpus).
        signals: per-byte signal arrays, one per document (skips the byte LM).
        byte_lm: a byte-level :class:`toklab.lm.LanguageModel`; default: one trained here on
            the corpus (``lm_preset``, ``lm_budget_bytes``, default one pass).
        constraint: ``"monotonic"``, ``"combined"`` or ``"global"`` (see the module).
        percentile: the combined constraint's threshold, a percentile of all non-zero signal
            values.
        min_count: the global constraint's count threshold: it grows segments until the
            vocabulary's worth of segment strings (``vocab_size``, or ``proportion *
            vocab_size`` for seeding, less the alphabet) occur this often.
        building: ``"frequency"`` (the most frequent spans) or ``"seeding"``: the most frequent
            spans up to ``proportion * vocab_size`` ids (alphabet included), then BPE over the
            corpus's pre-tokens, each first segmented by longest match, merging the most frequent
            adjacent pair (non-overlapping counts) until the vocabulary is full. ``proportion=0``
            is a BPE vocabulary with longest-match inference (the brief's "BPEWP"), and needs no
            signal.
        cache_dir: where the byte LM trained here (:func:`cached_byte_lm`) and the signals
            (:func:`cached_signals`) are kept, so that a second run on the same corpus neither
            trains nor scores (None: nothing kept).
        inference: the returned tokenizer's inference, ``"longest"`` or ``"bpe"`` (see the
            module; :meth:`ByteSpan.with_inference` switches it later).
        languages: one language label per document (of the corpus as given, or of its
            non-empty documents, like ``signals``) for a **balanced multilingual** vocabulary:
            spans are ranked within each language and taken round-robin across languages
            (sorted by label), each turn the language's most frequent span not yet taken, so
            every language gets an equal share of the learned spans (a language that runs out
            leaves its turns to the others). The combined constraint's threshold is one
            percentile over all languages; the global constraint grows each language's segments
            separately. Seeding's BPE fill runs over the pooled corpus.
    """
    from toklab.data import iter_texts

    if not isinstance(vocab_size, (int, np.integer)) or not ALPHABET <= vocab_size < 2**32:
        raise ConfigError(
            f"vocab_size must be an int of at least {ALPHABET} (the byte alphabet, word-initial "
            f"and continuation) and under 2**32, got {vocab_size!r}"
        )
    if signal not in ("entropy", "surprisal"):
        raise ConfigError(f"signal must be 'entropy' or 'surprisal', got {signal!r}")
    if constraint not in ("monotonic", "combined", "global"):
        raise ConfigError(
            f"constraint must be 'monotonic', 'combined' or 'global', got {constraint!r}"
        )
    if inference not in ("longest", "bpe"):
        raise ConfigError(f"inference must be 'longest' or 'bpe', got {inference!r}")
    if not isinstance(min_count, int) or not 1 <= min_count < 2**32:
        raise ConfigError(f"min_count must be an integer in 1..2**32, got {min_count!r}")
    if building not in ("frequency", "seeding"):
        raise ConfigError(f"building must be 'frequency' or 'seeding', got {building!r}")
    if not 0.0 <= proportion <= 1.0:
        raise ConfigError(f"proportion must be in [0, 1], got {proportion}")
    if not 0.0 <= percentile <= 100.0:
        raise ConfigError(f"percentile must be in [0, 100], got {percentile}")
    docs = list(iter_texts(corpus))
    for i, t in enumerate(docs):
        # (Checked here: the core would raise a bare UnicodeEncodeError. An ASCII str, which
        # CPython marks as such, has no surrogate and needs no encoding to tell.)
        if not (isinstance(t, str) and t.isascii()):
            _utf8(t, i)
    texts = [t for t in docs if t]
    if not texts:
        raise EmptyCorpusError("the corpus holds no text")
    if languages is not None:
        languages = [str(x) for x in languages]
        if len(languages) == len(docs) != len(texts):
            languages = [x for x, t in zip(languages, docs, strict=True) if t]
        if len(languages) != len(texts):
            raise InvalidInputError(
                f"{len(languages)} language labels for {len(docs)} documents "
                f"({len(texts)} not empty)"
            )
    from toklab.bpe import PATTERNS, _threads

    regex = PATTERNS.get(pattern, pattern)
    if building == "seeding" and int(proportion * vocab_size) <= ALPHABET:
        # No spans kept: plain BPE over the alphabet, no signal needed.
        if proportion > 0:
            warnings.warn(
                f"seeding keeps proportion * vocab_size = {int(proportion * vocab_size)} ids, "
                f"no more than the {ALPHABET}-byte alphabet: no span fits, so this is a plain "
                "BPE vocabulary (the signal, constraint and byte LM are not used)",
                TokLabWarning,
                stacklevel=2,
            )
        learned = _core.SpanVocab([], regex).fill_with_bpe(texts, vocab_size, _threads(num_threads))
        meta = {"vocab_building": "seeding", "proportion": proportion, "pattern": pattern}
        return _finish(learned, vocab_size, pattern, meta, inference)
    if signals is None:
        if byte_lm is None:
            byte_lm = cached_byte_lm(
                texts,
                cache_dir,
                preset=lm_preset,
                budget_bytes=lm_budget_bytes,
                device=device,
                seed=seed,
                progress=progress,
            )
        pairs = cached_signals(byte_lm, texts, cache_dir)
        signals = [p[0] if signal == "surprisal" else p[1] for p in pairs]
    # Lengths and finiteness are checked in Rust (InvalidInputError), with no copy here.
    try:
        with np.errstate(over="ignore"):  # (float64 past float32's range: inf, refused below)
            signals = [np.ascontiguousarray(s, dtype=np.float32) for s in signals]
    except (ValueError, TypeError) as e:
        raise InvalidInputError(f"signals must be arrays of numbers: {e}") from None
    if len(signals) != len(texts):
        raise InvalidInputError(f"{len(signals)} signal arrays for {len(texts)} documents")
    if any(s.ndim != 1 for s in signals):
        raise InvalidInputError("each document's signal must be a 1-d array")
    threads = _threads(num_threads)
    keep = vocab_size - ALPHABET
    if building == "seeding":
        keep = max(0, int(proportion * vocab_size) - ALPHABET)
    threshold: Any = None
    grown: Any = None
    if constraint == "combined":
        threshold = _core.signal_percentile(signals, float(percentile), threads)
        if threshold is None:
            raise InvalidInputError("the signal is zero everywhere")
        if not np.isfinite(threshold):
            # (Only where most of the signal is NaN or infinite: say where, not the threshold.)
            bad = next(i for i, x in enumerate(signals) if not np.isfinite(x).all())
            raise InvalidInputError(f"document {bad}: the signal has NaN or infinite values")

    def ranked(texts: list[str], signals: list[np.ndarray]) -> tuple[list, Any, Any]:
        if constraint == "global":
            found, steps, reached, _ = _core.global_spans(
                texts, signals, regex, keep, min_count, threads
            )
            share = steps / max(1, sum(len(s) for s in signals))
            return [(f, b) for f, b, _ in found], reached, share
        counts = _core.span_counts(texts, signals, regex, threshold, threads, keep)
        return [(f, b) for f, b, _ in counts], threshold, None

    if languages is None:
        spans, threshold, grown = ranked(texts, signals)
        shares = None
    else:
        per_language = {}
        for lang in sorted(set(languages)):
            idx = [i for i, x in enumerate(languages) if x == lang]
            try:
                per_language[lang] = ranked([texts[i] for i in idx], [signals[i] for i in idx])
            except InvalidInputError as e:
                # Say which document of the corpus, not of the language.
                m = re.match(r"document (\d+): (.*)", str(e), re.S)
                if m is None:
                    raise
                raise InvalidInputError(f"document {idx[int(m[1])]}: {m[2]}") from None
        spans, shares = round_robin({k: v[0] for k, v in per_language.items()}, keep)
        if constraint == "global":
            threshold = {k: v[1] for k, v in per_language.items()}
            grown = {k: v[2] for k, v in per_language.items()}
    if building == "seeding":
        learned = _core.SpanVocab(spans[:keep], regex).fill_with_bpe(texts, vocab_size, threads)
    else:
        learned = spans[:keep]
    meta = {
        "signal": signal,
        "constraint": constraint,
        "percentile": percentile if constraint == "combined" else None,
        "threshold": threshold,
        "min_count": min_count if constraint == "global" else None,
        "grown_share": grown,
        "vocab_building": building,
        "proportion": proportion if building == "seeding" else None,
        "pattern": pattern,
    }
    if shares is not None:
        meta["balanced_languages"] = shares
    return _finish(learned, vocab_size, pattern, meta, inference)


def round_robin(
    ranked: dict[str, list[tuple[bool, bytes]]], n: int
) -> tuple[list[tuple[bool, bytes]], dict[str, int]]:
    """Up to ``n`` tokens taken in turns from each language's ranking (languages in key
    order), each turn the language's best token not yet taken; returns them and how many each
    language contributed.

    >>> round_robin({"a": [(True, b"xy"), (True, b"zz")], "b": [(True, b"xy"), (True, b"q!")]}, 3)
    ([(True, b'xy'), (True, b'q!'), (True, b'zz')], {'a': 2, 'b': 1})
    """
    taken: list[tuple[bool, bytes]] = []
    seen: set[tuple[bool, bytes]] = set()
    shares = dict.fromkeys(ranked, 0)
    at = dict.fromkeys(ranked, 0)
    live = list(ranked)
    while live and len(taken) < n:
        for lang in list(live):
            if len(taken) >= n:
                break
            tokens = ranked[lang]
            while at[lang] < len(tokens) and tokens[at[lang]] in seen:
                at[lang] += 1
            if at[lang] == len(tokens):
                live.remove(lang)
                continue
            seen.add(tokens[at[lang]])
            taken.append(tokens[at[lang]])
            shares[lang] += 1
    return taken, shares


def _finish(
    learned: list[tuple[bool, bytes]],
    vocab_size: int,
    pattern: str,
    meta: dict[str, Any],
    inference: Literal["longest", "bpe"],
) -> ByteSpan:
    if len(learned) < vocab_size - ALPHABET:
        warnings.warn(
            f"only {len(learned)} tokens beyond the byte alphabet could be made: the "
            f"vocabulary has {ALPHABET + len(learned)} ids, not {vocab_size}",
            TokLabWarning,
            stacklevel=3,
        )
    return ByteSpan(learned, pattern, meta, inference)
