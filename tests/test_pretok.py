"""The hand-written pre-tokenizers for the named patterns against the regex engine (fancy-regex,
the engine tiktoken uses): differential on every shared text, and hypothesis on arbitrary text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import documents, needs_shared
from toklab import _core

PATTERNS = ["gpt2", "cl100k", "o200k"]


@needs_shared
@pytest.mark.parametrize("pattern", PATTERNS)
def test_equal_to_regex_on_all_shared_texts(pattern, shared_data):
    paths = [
        *sorted((shared_data / "en").iterdir()),
        shared_data / "multi" / "wiki_vital_fr.txt",
        *sorted((shared_data / "multi" / "udhr").glob("*.txt")),
    ]
    for path in paths:
        text = path.read_text(encoding="utf-8")
        fast = _core.pretokenize(text, pattern)
        if fast != _core.pretokenize(text, pattern, engine="regex"):
            for doc in documents(path):
                assert _core.pretokenize(doc, pattern) == _core.pretokenize(
                    doc, pattern, engine="regex"
                ), f"{path.name}: {doc[:100]!r}"
            pytest.fail(f"{path.name} differs only as a whole")
        assert "".join(fast) == text


# Characters from every class the matchers distinguish, weighted toward the tricky ones.
tricky = st.sampled_from(
    [
        *"aZ'sStTlLvVeErRdDmM ſ\t\n\r\u3000\u0085\u00a0.,!?/-_1٣²Ⅻ\u0301\u0327中ǅᵃ",
        *["'s", "'ll", "'VE", "'Re", " \n", "\r\n", "  ", "😀", "🏽"],
    ]
)


@settings(max_examples=1000, deadline=None)
@given(text=st.lists(tricky, max_size=40).map("".join))
@pytest.mark.parametrize("pattern", PATTERNS)
def test_equal_to_regex_on_tricky_text(pattern, text):
    assert _core.pretokenize(text, pattern) == _core.pretokenize(text, pattern, engine="regex")


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=80))
@pytest.mark.parametrize("pattern", PATTERNS)
def test_equal_to_regex_on_any_text(pattern, text):
    assert _core.pretokenize(text, pattern) == _core.pretokenize(text, pattern, engine="regex")


def test_engine_is_checked():
    with pytest.raises(ValueError):
        _core.pretokenize("x", "cl100k", engine="nope")
