"""The documentation: the README stays short, its two commands are the ones CI runs, every relative link lands,
and no page tells a user to install from PyPI, where mnist-edge is not published."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target): the only link syntax the pages use
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def code_blocks(text: str) -> list[str]:
    return FENCE.findall(text)


def commands(block: str) -> list[str]:
    """The command lines of a shell block, without comment lines and trailing comments."""
    lines = (line.split("  #")[0].strip() for line in block.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces as hyphens."""
    text = FENCE.sub("", page.read_text())
    headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) < 200


def test_the_readme_commands_are_what_ci_runs() -> None:
    # The first block installs without torch and predicts; the second sets up the tests and runs them: CI runs
    # each line as written, so the README cannot drift from what is proven.
    first, second = code_blocks(README.read_text())[:2]
    ci_lines = {line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()}
    for block in (first, second):
        assert commands(block) and all(command in ci_lines for command in commands(block)), block
    assert "pip install -q -e ." in first and "mnist-edge predict" in first and "torch" not in first
    assert commands(second)[-1].endswith(".venv/bin/python -m pytest")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_lands(page: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not ours to check offline
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    assert not broken, broken


def test_no_page_tells_a_user_to_install_from_pypi() -> None:
    # mnist-edge is not on PyPI: `pip install mnist-edge` or 'mnist-edge[train]' would fetch nothing, or a stranger's
    # package of that name; installs name the checkout (`.`, ".[train]") or a wheel built from it.
    hint = re.compile(r"pip install[^\n`]*?(?<![\w./-])['\"]?mnist-edge\b(?![-_/.])")
    offenders = [f"{page.name}: {m.group(0)}" for page in PAGES for m in hint.finditer(page.read_text())]
    assert not offenders, offenders
