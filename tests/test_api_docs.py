"""docs/api.md's examples run as written: its ```python blocks, section by section, each section in one namespace,
from a folder that holds the checkout's samples (so the train side's files land in a scratch folder)."""

from __future__ import annotations

import re

import pytest

from conftest import ROOT

DOC = ROOT / "docs" / "api.md"


def blocks(section: str) -> list[str]:
    """The ```python blocks of the `## SECTION...` part of the page, in order."""
    parts = re.split(r"^## ", DOC.read_text(), flags=re.M)
    (text,) = [part for part in parts if part.startswith(section)]
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def run_blocks(section: str, folder, monkeypatch) -> dict:
    (folder / "src").symlink_to(ROOT / "src")
    monkeypatch.chdir(folder)
    namespace: dict = {}
    for code in blocks(section):
        exec(compile(code, f"{DOC.name}: {section}", "exec"), namespace)  # our own page's examples
    return namespace


def test_the_edge_examples_run(tmp_path, monkeypatch):
    assert len(blocks("The edge side")) >= 4
    namespace = run_blocks("The edge side", tmp_path, monkeypatch)
    assert namespace["result"].digit == 3 and len(namespace["results"]) == 7


@pytest.mark.torch
def test_the_train_examples_run(tmp_path, monkeypatch, mnist_dir):
    monkeypatch.setenv("MNIST_EDGE_DATA", str(mnist_dir))
    namespace = run_blocks("The train side", tmp_path, monkeypatch)
    assert (tmp_path / "tiny.pt").is_file() and (tmp_path / "exported-tiny" / "tiny.int8.onnx").is_file()
    assert namespace["parity"].passed
