"""toklab.data and the compiled core's type stub."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import toklab
from toklab import _core, data


def test_default_corpus():
    parts = list(data.default_corpus())
    assert len(parts) == len(data.DEFAULT_CORPUS_PARTS)
    assert sum(len(p) for p in parts) > 10_000_000
    assert "In the beginning, God created the heavens and the earth." in parts[0]
    with pytest.raises(toklab.InvalidInputError):
        list(data.default_corpus(["nope"]))


def test_expand_files(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ["a/1.txt", "a/2.txt", "b.txt", "c.md"]:
        (tmp_path / name).write_text(name)
    assert data.expand_files(str(tmp_path / "**" / "*.txt")) == [
        tmp_path / "a" / "1.txt",
        tmp_path / "a" / "2.txt",
        tmp_path / "b.txt",
    ]
    assert data.expand_files(tmp_path / "a") == [tmp_path / "a" / "1.txt", tmp_path / "a" / "2.txt"]
    both = data.expand_files([tmp_path / "b.txt", str(tmp_path / "*.txt")])
    assert both == [tmp_path / "b.txt"]
    with pytest.raises(FileNotFoundError):
        data.expand_files(str(tmp_path / "*.nope"))


def _stub_names() -> tuple[set[str], dict[str, set[str]]]:
    stub = Path(toklab.__file__).with_name("_core.pyi")
    tree = ast.parse(stub.read_text())
    top, members = set(), {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            top.add(node.name)
            members[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        elif isinstance(node, ast.FunctionDef):
            top.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top.add(node.target.id)
    return top, members


def test_core_stub_matches_compiled_module():
    top, members = _stub_names()
    compiled = {n for n in dir(_core) if not n.startswith("_")}
    assert top == compiled
    for cls, names in members.items():
        public = {n for n in dir(getattr(_core, cls)) if not n.startswith("_")}
        assert {n for n in names if not n.startswith("_")} == public, cls


def test_version_is_the_packages_from_any_checkout():
    import tomllib

    root = Path(__file__).resolve().parents[1]
    with open(root / "pyproject.toml", "rb") as f:
        declared = tomllib.load(f)["project"]["version"]
    # The core's (Cargo's) version, which a source tree on the path reports, is pyproject's.
    assert declared == _core.VERSION
    assert toklab.__version__ == declared
