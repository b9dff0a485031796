"""Parity with HF tokenizers and tiktoken: same merges and pattern, same ids, on every document
of the English, French and UDHR texts in ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import toklab
from conftest import documents, needs_shared

tokenizers = pytest.importorskip("tokenizers")
tiktoken = pytest.importorskip("tiktoken")

pytestmark = needs_shared


def corpus_documents(shared_data: Path) -> dict[str, list[str]]:
    docs = {}
    for path in sorted((shared_data / "en").iterdir()):
        docs[f"en/{path.name}"] = documents(path)
    docs["multi/wiki_vital_fr.txt"] = documents(shared_data / "multi" / "wiki_vital_fr.txt")
    docs["multi/udhr"] = [
        d for p in sorted((shared_data / "multi" / "udhr").glob("*.txt")) for d in documents(p)
    ]
    return docs


@pytest.fixture(scope="module")
def all_documents(shared_data):
    return corpus_documents(shared_data)


def first_difference(ours, theirs, docs):
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if list(a) != list(b):
            return f"document {i}: {docs[i][:80]!r}"
    return None


def test_ids_equal_hf_and_tiktoken_on_every_document(en_tokenizer, all_documents, tmp_path):
    path = tmp_path / "tokenizer.json"
    en_tokenizer.save_hf(path)
    hf = tokenizers.Tokenizer.from_file(str(path))
    tk = en_tokenizer.to_tiktoken()
    n_docs = 0
    for name, docs in all_documents.items():
        ours = en_tokenizer.encode_batch(docs, disallowed_special=())
        hf_ids = [e.ids for e in hf.encode_batch_fast(docs, add_special_tokens=False)]
        tk_ids = tk.encode_ordinary_batch(docs)
        assert len(ours) == len(docs)
        assert first_difference(ours, hf_ids, docs) is None, f"{name} vs HF: " + str(
            first_difference(ours, hf_ids, docs)
        )
        assert first_difference(ours, tk_ids, docs) is None, f"{name} vs tiktoken: " + str(
            first_difference(ours, tk_ids, docs)
        )
        n_docs += len(docs)
    assert n_docs > 60_000


def test_special_tokens_match_hf_and_tiktoken(en_tokenizer, tmp_path):
    text = "Hello<|endoftext|> world<|pad|><|endoftext|>\n"
    path = tmp_path / "tokenizer.json"
    en_tokenizer.save_hf(path)
    hf = tokenizers.Tokenizer.from_file(str(path))
    tk = en_tokenizer.to_tiktoken()
    ours = en_tokenizer.encode(text, allowed_special="all").tolist()
    assert ours == hf.encode(text, add_special_tokens=False).ids
    assert ours == tk.encode(text, allowed_special="all")
    assert en_tokenizer.special_tokens["<|endoftext|>"] in ours


@pytest.mark.parametrize("pattern", ["gpt2", "o200k"])
def test_other_patterns_match(pattern, shared_data, all_documents, tmp_path):
    tok = toklab.train_bpe(
        shared_data / "en" / "tiny_shakespeare.txt",
        vocab_size=4_000,
        pattern=pattern,
        progress=False,
    )
    path = tmp_path / "tokenizer.json"
    tok.save_hf(path)
    hf = tokenizers.Tokenizer.from_file(str(path))
    tk = tok.to_tiktoken()
    for name in ["multi/udhr", "multi/wiki_vital_fr.txt", "en/brown.txt"]:
        docs = all_documents[name][:3000]
        ours = tok.encode_batch(docs)
        hf_ids = [e.ids for e in hf.encode_batch_fast(docs, add_special_tokens=False)]
        assert first_difference(ours, hf_ids, docs) is None, f"{pattern} {name} vs HF"
        assert first_difference(ours, tk.encode_ordinary_batch(docs), docs) is None


def test_transformers_loads_the_export(en_tokenizer, all_documents, tmp_path):
    transformers = pytest.importorskip("transformers")
    path = tmp_path / "tokenizer.json"
    en_tokenizer.save_hf(path)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    for doc in all_documents["multi/udhr"][:50] + all_documents["en/brown.txt"][:50]:
        assert fast.encode(doc, add_special_tokens=False) == en_tokenizer.encode(doc).tolist()
        assert fast.decode(en_tokenizer.encode(doc)) == doc


def test_hf_and_tiktoken_round_trips(en_tokenizer, tmp_path):
    assert toklab.BPETokenizer.from_hf(en_tokenizer.to_hf()) == en_tokenizer
    path = tmp_path / "tokenizer.json"
    en_tokenizer.save_hf(path)
    assert toklab.BPETokenizer.from_hf(path) == en_tokenizer
    assert toklab.BPETokenizer.from_hf(tokenizers.Tokenizer.from_file(str(path))) == en_tokenizer
    assert toklab.BPETokenizer.from_tiktoken(en_tokenizer.to_tiktoken()) == en_tokenizer
    ranks = tmp_path / "bpe.tiktoken"
    en_tokenizer.save_tiktoken(ranks)
    back = toklab.BPETokenizer.from_tiktoken(
        ranks, pattern="cl100k", special_tokens=en_tokenizer.special_tokens
    )
    assert back == en_tokenizer


def hf_trained(pre_tokenizer, texts, vocab_size=2_000):
    from tokenizers import Tokenizer, decoders, models, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


@pytest.mark.parametrize("style", ["gpt2", "split+bytelevel"])
def test_imports_a_tokenizer_trained_by_hf(style, all_documents):
    from tokenizers import Regex, pre_tokenizers

    train_texts = all_documents["en/tiny_shakespeare.txt"]
    if style == "gpt2":
        pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        pattern = toklab.PATTERNS["cl100k"].replace(r"\p{N}{1,3}+", r"(?>\p{N}{1,3})")
        pre = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    hf = hf_trained(pre, train_texts)
    ours = toklab.BPETokenizer.from_hf(json.loads(hf.to_str()))
    assert ours.vocab_size == hf.get_vocab_size()
    docs = all_documents["multi/udhr"][:200] + all_documents["en/brown.txt"][:500]
    docs.append("Numbers 1234567 and <|endoftext|> specials")
    for doc in docs:
        expected = hf.encode(doc, add_special_tokens=False).ids
        assert ours.encode(doc, allowed_special="all").tolist() == expected, doc[:80]


@settings(max_examples=60, deadline=None)
@given(special=st.text(min_size=1, max_size=6), text=st.text(max_size=20))
def test_special_tokens_of_any_text_keep_their_ids_in_hf(special, text, tmp_path_factory):
    """HF looks up an added token by its text: the export names special tokens so in its
    vocabulary (under their byte-level spelling HF gave those with a space, a non-ASCII or a
    control character a new id, or a regular token's id)."""
    from toklab.errors import ConfigError

    assume(not any(0xD800 <= ord(c) <= 0xDFFF for c in special + text))
    tok = toklab.BPETokenizer.from_parts(
        [bytes([b]) for b in range(256)] + [b"he", b"ll", b"hell", b"hello", special.encode()],
        [(104, 101), (108, 108), (256, 257), (258, 111)],
        {special: 260},
    )
    # GPT-2's byte-level alphabet, from its published definition (not toklab's): a text made
    # of its characters names those bytes in a tokenizer.json, so a special token whose text
    # names bytes other than its own cannot be told apart from them there.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    others = [b for b in range(256) if b not in printable]
    char_to_byte = {chr(b): b for b in printable} | {chr(256 + i): b for i, b in enumerate(others)}
    named = (
        bytes(char_to_byte[c] for c in special) if all(c in char_to_byte for c in special) else None
    )
    spelled_otherwise = named is not None and named != special.encode()
    if len(special.encode()) == 1 or special.encode() in (b"he", b"ll", b"hell", b"hello"):
        spelled_otherwise = False  # the "same bytes" error comes first
        with pytest.raises(ConfigError, match="share the same bytes"):
            tok.to_hf()
        return
    if spelled_otherwise:
        with pytest.raises(ConfigError, match="byte-level alphabet"):
            tok.to_hf()
        return
    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    tok.save_hf(path)
    hf = tokenizers.Tokenizer.from_file(str(path))
    assert hf.get_vocab_size() == tok.vocab_size
    for t in [text + special + text, special, "hello" + special]:
        ours = tok.encode(t, allowed_special="all").tolist()
        assert hf.encode(t, add_special_tokens=False).ids == ours
        assert 260 in ours
    assert toklab.BPETokenizer.from_hf(path) == tok


@pytest.mark.parametrize(
    "pattern",
    [
        r"\S+|\s+$|\s",
        r"^\s+|\S+|\s",
        r"[[:alpha:]]+|[^[:alpha:]]",
        r"[[:alpha:]$]+|\$|.|\n",
        r"\p{L}+$|\p{^L}",  # (the ^ of \p{^L} is no anchor)
        r"(?-ms:\s+$)|\S+|\s",  # (flags turned off: nothing to rewrite)
    ],
)
def test_custom_patterns_with_anchors_and_posix_classes_match_hf(pattern, tmp_path):
    """fancy-regex's ^ and $ are the text's ends and its POSIX classes ASCII; Oniguruma's are
    lines and Unicode: the export rewrites them, and the import reads them back."""
    tok = toklab.BPETokenizer.from_parts(
        [bytes([b]) for b in range(256)] + [b"  ", b"\n ", "é".encode(), "hé".encode()],
        [(32, 32), (10, 32), (195, 169), (104, 258)],
        {},
        pattern=pattern,
    )
    path = tmp_path / "tokenizer.json"
    tok.save_hf(path)
    hf = tokenizers.Tokenizer.from_file(str(path))
    texts = ["a  \n b", "  x\n  y  ", "héllo wörld\n", "$a$ \n$", "\n\n  ", "日本 語  "]
    for t in texts:
        assert hf.encode(t, add_special_tokens=False).ids == tok.encode(t).tolist(), t
    back = toklab.BPETokenizer.from_hf(path)
    for t in texts:
        assert back.encode(t).tolist() == tok.encode(t).tolist(), t
    # (POSIX classes come back as ranges; flags turned off, which change nothing, not at all.)
    if "[:" not in pattern and "(?-" not in pattern:
        assert back.pattern == pattern
    assert all(back.encode(t).tolist() == tok.encode(t).tolist() for t in texts)


def test_patterns_hf_reads_otherwise_are_refused(tmp_path):
    from toklab.errors import ConfigError

    for pattern, what in [
        (r"(?s).", "flags"),
        (r"(?m)^\s+|\S", "flags"),
        (r"[[:^alpha:]]", "POSIX"),
    ]:
        tok = toklab.BPETokenizer.from_parts(
            [bytes([b]) for b in range(256)], [], {}, pattern=pattern
        )
        with pytest.raises(ConfigError, match=what):
            tok.save_hf(tmp_path / "t.json")
