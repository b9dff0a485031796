"""Adapters that let a benchmark run the installed "anchor" tokenizer libraries beside toklab.

    python benchmarks/anchors.py [--lines N] [--train-mb MB] [--vocab-size N]

Three registries, one section per library below:

* ``TRAINERS[name](path, vocab_size, pattern) -> object`` trains byte-level BPE on the UTF-8
  file at ``path`` with the pre-tokenization regex ``pattern`` (tiktoken's dialect, e.g.
  :data:`CL100K_PATTERN`) and returns whatever the library trains; ``TRAINED_RANKS[name](obj)``
  turns that into tiktoken-style ``{token bytes: id}`` where the library allows it.
* ``ENCODERS[name](ranks, pattern) -> (encode, encode_batch, decode)`` builds the library's
  encoder from tiktoken-style mergeable ranks (``{token bytes: rank}``, ranks ``0..n-1``, no
  special tokens). ``encode(text)`` runs on one thread; ``encode_batch(texts)`` is the library's
  own parallel batch API on all cores (``None`` if it has none, or, for fastokens, if it could
  only run on one thread); ``decode(ids)`` returns bytes or str (``None`` if unsupported).
* ``UNSUPPORTED[(name, job)]`` says why a library has no entry for a job.

Every adapter imports its library lazily and raises ``NotImplementedError`` when the library is
missing or cannot do the job (e.g. ``bpe_openai`` given ranks other than its bundled ones), so
importing this module never fails. :func:`load_o200k_ranks` reads OpenAI's o200k ranks from the
``bpe-openai`` wheel, since tiktoken cannot download them here.

Thread counts: rayon-based libraries each have their own global pool, sized by
``RAYON_NUM_THREADS`` (read once, at first use) or the core count; setting that variable to 1
would make every rayon-based trainer and batch encoder in the process single-threaded, so this
module never sets it. The per-library notes below say what keeps ``encode`` on one thread.

Caches: HF tokenizers (BPE word cache), splintr (chunk cache of pieces up to 16 bytes) and
fastokens (thread-local caches) memoize pre-token encodings across calls; tiktoken and
bpe_openai do not. Repeated timings of the same text therefore favour the former.

The ``__main__`` smoke test checks every encoder against tiktoken's ids and times every trainer.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import importlib
import importlib.metadata
import importlib.util
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# HF's byte-level alphabet and the Oniguruma rewrite of tiktoken patterns are toklab's own
# helpers; the adapters share them rather than repeat them.
from toklab._hf import pattern_to_onig, unicode_to_bytes
from toklab._hf import token_to_hf as _to_hf

Ranks = dict[bytes, int]
Encode = Callable[[str], Sequence[int]]
EncodeBatch = Callable[[list[str]], list]
Decode = Callable[[list[int]], bytes | str]
Encoder = tuple[Encode, EncodeBatch | None, Decode | None]

# GPT-4's cl100k_base pattern, verbatim from tiktoken_ext/openai_public.py (tiktoken 0.14).
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

# GPT-4o's o200k_base pattern, verbatim from tiktoken_ext/openai_public.py (tiktoken 0.14).
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

# PyPI distribution and import name of every anchor library.
LIBRARIES = {
    "tiktoken": "tiktoken",
    "tokenizers": "tokenizers",
    "rustbpe": "rustbpe",
    "fast-bpe-rs": "fast_bpe_rs",
    "bpeasy": "bpeasy",
    "sentencepiece": "sentencepiece",
    "splintr-rs": "splintr",
    "fastokens": "fastokens",
    "bpe-openai": "bpe_openai",
}


# ------------------------------------------------------------------------------------------------
# Shared helpers


def _require(module: str) -> Any:
    """Imports ``module``, turning a missing library into NotImplementedError."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise NotImplementedError(f"{module} is not installed: {e}") from e


def library_versions() -> dict[str, str | None]:
    """``{distribution: version}`` for every anchor library (None if not installed)."""
    out: dict[str, str | None] = {}
    for dist in LIBRARIES:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def iter_lines(path: str) -> Iterator[str]:
    """The file's lines with their endings kept (``\\n`` or ``\\r\\n``), as HF reads files."""
    with open(path, encoding="utf-8", newline="") as f:
        yield from f


def load_o200k_ranks() -> tuple[Ranks, str]:
    """OpenAI's o200k_base ranks (199,998 tokens, no special tokens) and tiktoken's pattern.

    Read from ``bpe_openai/data/o200k_base.tiktoken.gz`` in the bpe-openai wheel: one
    ``base64(token) rank`` line per token. The package is located without importing it.
    """
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("bpe-openai is not installed; it carries the o200k ranks")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "o200k_base.tiktoken.gz"
    ranks: Ranks = {}
    with gzip.open(path, "rb") as f:
        for line in f:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    return ranks, O200K_PATTERN


def tiktoken_file_bytes(ranks: Ranks) -> bytes:
    """``ranks`` in the ``.tiktoken`` text format (``base64(token) rank`` lines, by rank)."""
    items = sorted(ranks.items(), key=lambda kv: kv[1])
    return b"".join(base64.b64encode(t) + b" %d\n" % r for t, r in items)


def _from_hf(token: str) -> bytes:
    table = unicode_to_bytes()
    return bytes(table[c] for c in token)


def strip_possessive(pattern: str) -> str:
    """Lowers possessive quantifiers (``?+``, ``*+``, ``++``, ``{n,m}+``) to greedy ones.

    Not equivalent for every regex, but it is for the GPT-style patterns here: tiktoken notes
    that its possessive cl100k pattern splits like the greedy one, and splintr ships the result
    as its own ``CL100K_BASE_PATTERN``.
    """
    out: list[str] = []
    i, depth, quantified = 0, 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            quantified = False
            continue
        if depth:  # inside a character class, where nothing is a quantifier
            depth += c == "["
            depth -= c == "]"
        elif c == "[":
            depth = 1
            quantified = False
        elif c == "+" and quantified:
            i += 1  # the possessive marker: drop it
            quantified = False
            continue
        elif c in "?*+":
            # `(?` opens a group, and `?` after a quantifier makes it lazy.
            quantified = not quantified and not (c == "?" and out and out[-1] == "(")
        else:
            quantified = c == "}"
        out.append(c)
        i += 1
    return "".join(out)


def _bpe_split(ranks: Ranks, token: bytes, max_rank: int) -> list[bytes]:
    """Byte-level BPE of ``token`` using only merges ranked below ``max_rank``."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, at = max_rank, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best:
                best, at = rank, i
        if at < 0:
            break
        parts[at : at + 2] = [parts[at] + parts[at + 1]]
    return parts


def merges_from_ranks(ranks: Ranks) -> list[tuple[bytes, bytes]]:
    """The merge list that reproduces ``ranks``, in rank order.

    The standard derivation (HF's and transformers' tiktoken converters): each multi-byte token
    is the merge of the two parts that BPE with the lower-ranked merges leaves it in. About 2.5 s
    for o200k. Raises ValueError for a vocabulary that BPE cannot build this way.
    """
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = _bpe_split(ranks, token, rank)
        if len(parts) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) is not a merge of two lower ranks")
        merges.append((parts[0], parts[1]))
    return merges


def hf_tokenizer_json(ranks: Ranks, pattern: str) -> dict[str, Any]:
    """An HF ``tokenizer.json`` (as a dict) for byte-level BPE with ``ranks`` and ``pattern``.

    Split(Regex, isolated) then ByteLevel without its own regex, a BPE model whose ids are the
    ranks and whose merges come from :func:`merges_from_ranks`, and ``ignore_merges`` so that a
    pre-token that is itself in the vocabulary maps straight to its id, as tiktoken does.
    """
    vocab = {_to_hf(token): rank for token, rank in ranks.items()}
    merges = [[_to_hf(a), _to_hf(b)] for a, b in merges_from_ranks(ranks)]
    byte_level = {"add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": pattern_to_onig(pattern)},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {"type": "ByteLevel", **byte_level},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,
            "vocab": vocab,
            "merges": merges,
        },
    }


# ------------------------------------------------------------------------------------------------
# tiktoken (import tiktoken). Encoder only: it has no trainer (tiktoken._educational is a
# pure-Python teaching implementation, far too slow to be an anchor).
#
# Threads: Encoding.encode_ordinary runs on the calling thread only (Rust, GIL released).
# encode_ordinary_batch spreads texts over a ThreadPoolExecutor of num_threads (default 8).


def tiktoken_encoder(ranks: Ranks, pattern: str) -> Encoder:
    tiktoken = _require("tiktoken")
    enc = tiktoken.Encoding("anchor", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    threads = _cores()

    def encode_batch(texts: list[str]) -> list[list[int]]:
        return enc.encode_ordinary_batch(texts, num_threads=threads)

    return enc.encode_ordinary, encode_batch, enc.decode_bytes


# ------------------------------------------------------------------------------------------------
# HF tokenizers (import tokenizers).
#
# Training: Tokenizer(BPE()).train([path]) reads the file itself in Rust, line by line with the
# line endings kept, and counts in parallel with rayon on all cores (unless
# TOKENIZERS_PARALLELISM=false or RAYON_NUM_THREADS says otherwise). vocab_size counts the 256
# byte-level alphabet symbols (there are no special tokens); training stops early if it runs out
# of pairs. Ids: the 256 bytes first in alphabet-character order, then merges in order.
#
# Encoding: Tokenizer.encode runs one text on the calling thread; encode_batch_fast runs texts
# in parallel on rayon's pool.


def hf_train(path: str, vocab_size: int, pattern: str) -> Any:
    _require("tokenizers")
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern_to_onig(pattern)), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([path], trainer=trainer)
    return tok


def hf_ranks(tok: Any) -> Ranks:
    return {_from_hf(token): i for token, i in tok.get_vocab().items()}


def hf_encoder(ranks: Ranks, pattern: str) -> Encoder:
    _require("tokenizers")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(json.dumps(hf_tokenizer_json(ranks, pattern)))

    def encode(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False).ids

    def encode_batch(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in tok.encode_batch_fast(texts, add_special_tokens=False)]

    return encode, encode_batch, tok.decode


# ------------------------------------------------------------------------------------------------
# rustbpe (import rustbpe; Karpathy's nanochat trainer). Trainer only: rustbpe.Tokenizer() takes
# no arguments and has no way to load ranks or merges, so it can only encode with a vocabulary it
# trained itself.
#
# Training: train_from_iterator pulls lines from the open file under the GIL in buffers of 8192,
# then splits and counts them in parallel (rayon, all cores); the merge loop is sequential.
# vocab_size counts the 256 bytes (merges = vocab_size - 256). Regex engine: fancy-regex, so the
# tiktoken pattern is used as is.


def rustbpe_train(path: str, vocab_size: int, pattern: str) -> Any:
    rustbpe = _require("rustbpe")
    tok = rustbpe.Tokenizer()
    with open(path, encoding="utf-8", newline="") as f:
        tok.train_from_iterator(f, vocab_size, pattern=pattern)
    return tok


def rustbpe_ranks(tok: Any) -> Ranks:
    return {bytes(token): rank for token, rank in tok.get_mergeable_ranks()}


# ------------------------------------------------------------------------------------------------
# fast_bpe_rs (import fast_bpe_rs; PyPI fast-bpe-rs). Trainer only: BPE(split_pattern) has just
# train/train_arrow/encode/decode, with no way to load ranks or merges.
#
# Training: BPE.train(vocab_size, docs) wants a sequence of str (not an iterator), so the file is
# read into a list of lines (endings kept); pair counting uses rayon (all cores), the merges are
# sequential. vocab_size counts the 256 bytes. It does not deduplicate: two merges that spell
# the same bytes get two ids, so its vocabulary can hold fewer distinct tokens than vocab_size
# (fast_bpe_rs_ranks keeps each token's first id). train_arrow needs pyarrow, not installed here.


def fast_bpe_rs_train(path: str, vocab_size: int, pattern: str) -> Any:
    fast_bpe_rs = _require("fast_bpe_rs")
    bpe = fast_bpe_rs.BPE(pattern)
    bpe.train(vocab_size, list(iter_lines(path)))
    return bpe


def fast_bpe_rs_ranks(bpe: Any) -> Ranks:
    ranks: Ranks = {}
    i = 0
    while token := bpe.decode([i]):  # ids past the vocabulary decode to b""
        ranks.setdefault(token, i)
        i += 1
    return ranks


# ------------------------------------------------------------------------------------------------
# bpeasy (import bpeasy). Trainer only: its BPEasyTokenizer encodes through tiktoken.Encoding,
# so as an encoder it would be tiktoken again.
#
# Training: train_bpe(iterator, regex, max_token_length, vocab_size, batch_size=1000) pulls
# batches of 1000 lines and splits/counts each batch in parallel (rayon, all cores). It returns
# {token bytes: rank}; vocab_size counts the 256 bytes. max_token_length is set far above any
# real token so that it does not limit the vocabulary (the other trainers have no such limit).


def bpeasy_train(path: str, vocab_size: int, pattern: str) -> Ranks:
    bpeasy = _require("bpeasy")
    with open(path, encoding="utf-8", newline="") as f:
        return bpeasy.train_bpe(f, pattern, 1 << 20, vocab_size)


# ------------------------------------------------------------------------------------------------
# sentencepiece (import sentencepiece). NOT COMPARABLE: SentencePiece BPE is not byte-level and
# takes no regex; it splits on whitespace (kept as "▁" inside pieces), script and number
# boundaries, and with byte_fallback encodes unseen characters as <0xXX> pieces. (0.2.x has a
# `pretokenizer` callback, but it calls Python once per sentence, so it is not used.)
#
# Training: reads the file itself, one sentence per line (endings dropped), with
# num_threads = all cores. Set here to keep the text as is: identity normalization, no extra
# whitespace removal, no dummy prefix, whitespace-only pieces allowed, full character coverage,
# lines up to 64 KiB. vocab_size is the total piece count: <unk>, <s>, </s>, the 256 byte
# pieces, the characters, then merges. Returns a SentencePieceProcessor.


def sentencepiece_train(path: str, vocab_size: int, pattern: str) -> Any:
    spm = _require("sentencepiece")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        input=path,
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        num_threads=_cores(),
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,
        max_sentence_length=1 << 16,
        minloglevel=2,
    )
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


# ------------------------------------------------------------------------------------------------
# splintr (import splintr; PyPI splintr-rs). Encoder only: no trainer.
#
# Built with Tokenizer.from_bytes(tiktoken file bytes, pattern). Its default regex engine,
# regexr, rejects possessive quantifiers, so the pattern goes through strip_possessive; for
# cl100k that gives exactly splintr.CL100K_BASE_PATTERN, and tiktoken's o200k pattern is
# splintr.O200K_BASE_PATTERN, which lets splintr use its hand-written scanners for both.
#
# Threads: encode is sequential on the calling thread (encode_rayon would split one text);
# encode_batch is parallel over texts on rayon's global pool. It keeps a chunk cache across
# calls (clear_cache() empties it).


def splintr_encoder(ranks: Ranks, pattern: str) -> Encoder:
    splintr = _require("splintr")
    tok = splintr.Tokenizer.from_bytes(tiktoken_file_bytes(ranks), strip_possessive(pattern))
    return tok.encode, tok.encode_batch, tok.decode_bytes


# ------------------------------------------------------------------------------------------------
# fastokens (import fastokens). Encoder only: no trainer.
#
# Built with Tokenizer.from_tiktoken(path, pattern, special_tokens={}) from a temporary
# .tiktoken file. fastokens replaces the regex by a hand-written scanner only for patterns that
# are byte-identical to its own constants; tiktoken's o200k pattern is one, and tiktoken's cl100k
# pattern is swapped for fastokens' equivalent canonical spelling below (the smoke test checks
# that the ids still equal tiktoken's). Other patterns run on PCRE2.
#
# Threads: fastokens runs both encode (one large text cut into pieces) and encode_batch on its
# own rayon pool, sized once per process, when first used, by FASTOKENS_BPE_THREADS (default: all
# cores). The adapter sets FASTOKENS_BPE_THREADS=1 unless the caller has set it, so encode runs on
# one thread; then encode_batch would too, so it is returned as None. To time fastokens' batch
# encoding, build the encoder in a separate process with FASTOKENS_BPE_THREADS=<cores> set
# beforehand: encode_batch is then returned, and encode is multi-threaded as well. Either way,
# build this encoder before anything else in the process uses fastokens. FASTOKENS_INPUT_CACHE and
# FASTOKENS_SEGMENT_CACHE, which would let repeated timings hit a cache, are removed from the
# environment before construction.

_FASTOKENS_CANONICAL = {
    CL100K_PATTERN: (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    ),
}


def fastokens_encoder(ranks: Ranks, pattern: str) -> Encoder:
    threads = os.environ.setdefault("FASTOKENS_BPE_THREADS", "1")
    os.environ.pop("FASTOKENS_INPUT_CACHE", None)
    os.environ.pop("FASTOKENS_SEGMENT_CACHE", None)
    fastokens = _require("fastokens")
    fd, path = tempfile.mkstemp(suffix=".tiktoken")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(tiktoken_file_bytes(ranks))
        tok = fastokens.Tokenizer.from_tiktoken(
            path, pattern=_FASTOKENS_CANONICAL.get(pattern, pattern), special_tokens={}
        )
    finally:
        os.unlink(path)

    def encode(text: str) -> list[int]:
        return tok.encode(text).ids

    def encode_batch(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in tok.encode_batch(texts)]

    return encode, None if threads == "1" else encode_batch, tok.decode


# ------------------------------------------------------------------------------------------------
# bpe_openai (import bpe_openai; PyPI bpe-openai, bindings to GitHub's rust-gems bpe-openai
# crate). Encoder only, and only for its bundled vocabularies (cl100k_base, o200k_base,
# voyage3_base): the Rust tokenizers are compiled in with their own pre-tokenizers, so given
# other ranks or another pattern the adapter raises NotImplementedError.
#
# The raw binding (bpe_openai._bindings.tokenizer_for_encoding) is used rather than the
# tiktoken-like Encoding wrapper, which adds Python-side checks and refuses texts of 1M+
# characters or 200k+ tokens. Threads: the binding has no thread pool (no rayon); encode runs
# on the calling thread. encode_batch maps texts over a ThreadPoolExecutor of all cores, as the
# wrapper's own encode_ordinary_batch does.


def bpe_openai_encoder(ranks: Ranks, pattern: str) -> Encoder:
    bindings = _require("bpe_openai._bindings")
    from bpe_openai import registry

    for name in bindings.supported_encodings():
        spec = registry.ENCODING_CONSTRUCTORS[name]()
        if spec["pat_str"] == pattern and spec["mergeable_ranks"] == ranks:
            break
    else:
        raise NotImplementedError(
            "bpe_openai only encodes its bundled vocabularies "
            f"({', '.join(bindings.supported_encodings())}) with their own patterns"
        )
    tok = bindings.tokenizer_for_encoding(name)
    threads = _cores()

    def encode_batch(texts: list[str]) -> list[list[int]]:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(tok.encode, texts))

    return tok.encode, encode_batch, tok.decode


# ------------------------------------------------------------------------------------------------
# Registries

TRAINERS: dict[str, Callable[[str, int, str], Any]] = {
    "hf": hf_train,
    "rustbpe": rustbpe_train,
    "fast_bpe_rs": fast_bpe_rs_train,
    "bpeasy": bpeasy_train,
    "sentencepiece": sentencepiece_train,
}

# Trainers whose result is not byte-level BPE under `pattern`, so not comparable with toklab.
NOT_COMPARABLE = {"sentencepiece": "not byte-level, no regex pre-tokenization"}

TRAINED_RANKS: dict[str, Callable[[Any], Ranks]] = {
    "hf": hf_ranks,
    "rustbpe": rustbpe_ranks,
    "fast_bpe_rs": fast_bpe_rs_ranks,
    "bpeasy": dict,
}

ENCODERS: dict[str, Callable[[Ranks, str], Encoder]] = {
    "tiktoken": tiktoken_encoder,
    "hf": hf_encoder,
    "splintr": splintr_encoder,
    "fastokens": fastokens_encoder,
    "bpe_openai": bpe_openai_encoder,
}

UNSUPPORTED = {
    ("tiktoken", "train"): "no trainer (tiktoken._educational is pure Python, for teaching)",
    ("splintr", "train"): "no trainer",
    ("fastokens", "train"): "no trainer",
    ("bpe_openai", "train"): "no trainer; fixed bundled vocabularies",
    ("rustbpe", "encode"): "cannot load ranks or merges; encodes only what it trained",
    ("fast_bpe_rs", "encode"): "cannot load ranks or merges; encodes only what it trained",
    ("bpeasy", "encode"): "its BPEasyTokenizer is a wrapper around tiktoken.Encoding",
    ("sentencepiece", "encode"): "not byte-level BPE; cannot take tiktoken ranks",
}


# ------------------------------------------------------------------------------------------------
# Smoke test

EDGE_CASES = [
    "",
    " ",
    "\n",
    "\r\n\r\n",
    "  \n\n  x",
    "trailing spaces   ",
    "don't I'LL we've 12345678 x",
    "tabs\tand\u00a0nbsp \u3000ideographic",
    "emoji 👍🏽 and a lone é",
    "camelCaseXMLHttpRequest /usr/bin\n/etc",
]


def _sample_lines(path: str, n: int) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.readlines()
    step = max(1, len(lines) // n)
    return lines[::step][:n]


def _as_bytes(x: bytes | str) -> bytes:
    return x if isinstance(x, bytes) else x.encode("utf-8")


def _check_encoders(label: str, ranks: Ranks, pattern: str, texts: list[str]) -> None:
    print(f"\n== encoders on {label} ({len(ranks)} tokens), {len(texts)} texts vs tiktoken")
    import tiktoken

    ref_enc = tiktoken.Encoding("ref", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    ref = [ref_enc.encode_ordinary(t) for t in texts]
    for name, make in ENCODERS.items():
        try:
            t0 = time.perf_counter()
            encode, encode_batch, decode = make(ranks, pattern)
            built = time.perf_counter() - t0
            got = [list(encode(t)) for t in texts]
        except NotImplementedError as e:
            print(f"  {name:12s} n/a       {e}")
            continue
        except Exception as e:
            print(f"  {name:12s} FAILED    {type(e).__name__}: {e}")
            continue
        bad = [i for i, (a, b) in enumerate(zip(got, ref, strict=True)) if a != b]
        notes = [f"built in {built:.2f}s"]
        if encode_batch is None:
            notes.append("no batch")
        else:
            try:
                batch = [list(x) for x in encode_batch(texts)]
                notes.append("batch ok" if batch == got else "batch DIFFERS from encode")
            except Exception as e:
                notes.append(f"batch FAILED {type(e).__name__}: {e}")
        if decode is not None:
            try:
                ok = all(
                    _as_bytes(decode(ids)) == t.encode() for ids, t in zip(ref, texts, strict=True)
                )
                notes.append("decode ok" if ok else "decode DIFFERS")
            except Exception as e:
                notes.append(f"decode FAILED {type(e).__name__}: {e}")
        status = "ok" if not bad else f"MISMATCH  {len(bad)}/{len(texts)} texts differ"
        print(f"  {name:12s} {status:9s} " + ", ".join(notes))
        for i in bad[:2]:
            print(
                f"      text {texts[i][:60]!r}\n      ours {got[i][:12]}\n      ref  {ref[i][:12]}"
            )


def _check_trainers(path: str, vocab_size: int, pattern: str) -> Ranks | None:
    mb = os.path.getsize(path) / 1e6
    print(f"\n== trainers on {path} ({mb:.1f} MB), vocab_size={vocab_size}")
    results: dict[str, Ranks] = {}
    for name, train in TRAINERS.items():
        try:
            t0 = time.perf_counter()
            obj = train(path, vocab_size, pattern)
            dt = time.perf_counter() - t0
        except NotImplementedError as e:
            print(f"  {name:14s} n/a      {e}")
            continue
        except Exception as e:
            print(f"  {name:14s} FAILED   {type(e).__name__}: {e}")
            continue
        note = NOT_COMPARABLE.get(name)
        if name in TRAINED_RANKS:
            ranks = TRAINED_RANKS[name](obj)
            results[name] = ranks
            note = f"{len(ranks)} distinct tokens, ids 0..{max(ranks.values())}"
        elif hasattr(obj, "get_piece_size"):
            note = f"{obj.get_piece_size()} pieces; {note}"
        print(f"  {name:14s} {dt:6.2f}s  {note}")
    base = results.get("hf") or next(iter(results.values()), None)
    if base is not None:
        shared = {n: len(set(r) & set(base)) for n, r in results.items()}
        print("  tokens shared with hf: " + ", ".join(f"{n} {k}" for n, k in shared.items()))
    return results.get("rustbpe") or results.get("hf") or results.get("bpeasy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lines", type=int, default=200, help="lines of multi.txt to encode")
    ap.add_argument("--train-mb", type=float, default=2.0, help="size of the training prefix")
    ap.add_argument("--vocab-size", type=int, default=2000)
    ap.add_argument("--en", default="/tmp/perfdata/en_10M.txt")
    ap.add_argument("--multi", default="/tmp/perfdata/multi.txt")
    args = ap.parse_args()

    print(f"python {sys.version.split()[0]}, {_cores()} cores")
    for dist, version in library_versions().items():
        print(f"  {dist:14s} import {LIBRARIES[dist]:14s} {version or 'not installed'}")
    for (name, job), why in UNSUPPORTED.items():
        print(f"  no {job:6s} adapter for {name}: {why}")

    prefix = Path(tempfile.gettempdir()) / f"toklab_anchors_{args.train_mb:g}MB.txt"
    data = Path(args.en).read_bytes()[: int(args.train_mb * 1e6)]
    prefix.write_bytes(data.decode("utf-8", "ignore").encode())  # no torn last character
    trained = _check_trainers(str(prefix), args.vocab_size, CL100K_PATTERN)

    texts = [*_sample_lines(args.multi, args.lines), *EDGE_CASES]
    if trained is not None:
        _check_encoders(f"a vocab trained on {prefix.name}", trained, CL100K_PATTERN, texts)
    ranks, pattern = load_o200k_ranks()
    _check_encoders("o200k_base", ranks, pattern, texts)


if __name__ == "__main__":
    main()
