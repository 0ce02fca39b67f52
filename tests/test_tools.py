"""Every script in tools/ follows the CLI's conventions: --help works, a bad argument is one `error:` line with exit
status 2, a bad input one line with exit 1, never a traceback. Run in this process (the scripts' imports are
shared, so all of them take seconds), as `python tools/NAME.py` runs them."""

from __future__ import annotations

import ast
import runpy
import subprocess
import sys
from dataclasses import replace

import pytest

from conftest import ROOT, TORCH_FREE_RUN, missing_imports
from repo_tools import tool, wild_set

TOOLS = ROOT / "tools"
SCRIPTS = sorted(p for p in TOOLS.glob("*.py") if not p.name.startswith("_"))  # _toolcli.py is their helper


def _run(script, *args: str, monkeypatch) -> int:
    """SCRIPT's exit status with ARGS, run as `python tools/SCRIPT ARGS` would (its folder first on sys.path)."""
    if TORCH_FREE_RUN and (missing := missing_imports(script)):
        pytest.skip(f"{script.name} needs {', '.join(sorted(missing))}")
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    monkeypatch.syspath_prepend(str(TOOLS))
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    return done.value.code


def test_every_script_is_checked():
    assert len(SCRIPTS) >= 15 and TOOLS / "wild_accuracy.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_and_a_bad_argument(script, monkeypatch, capsys):
    assert _run(script, "--help", monkeypatch=monkeypatch) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ")
    # the description is the docstring's whole first paragraph, not a first line that may stop mid-sentence
    first = (ast.get_docstring(ast.parse(script.read_text())) or "").split("\n\n")[0]
    assert "".join(first.split()) in "".join(out.split()), script.name  # argparse rewraps, at hyphens too
    assert _run(script, "--no-such-flag", monkeypatch=monkeypatch) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: "), err
    assert err.endswith(f"(try 'python tools/{script.name} --help')\n")


def test_wild_accuracy_takes_the_folder_as_its_argument(tmp_path):
    done = subprocess.run([sys.executable, "tools/wild_accuracy.py", str(wild_set(tmp_path / "wild"))],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "all      3/3   100.0%" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["{tmp}"], "{tmp}: no labels.csv here: pass the digits-in-the-wild folder as DIR"),
    (["{wild}", "--model", "{wild}/mnist-0.png"], "{wild}/mnist-0.png: an image, not a model"),
])
def test_wild_accuracy_bad_input_is_one_line(tmp_path, monkeypatch, capsys, args, message):
    wild = wild_set(tmp_path / "wild")
    fill = {"tmp": tmp_path, "wild": wild}
    assert _run(TOOLS / "wild_accuracy.py", *(a.format(**fill) for a in args), monkeypatch=monkeypatch) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message.format(**fill)}") and err.count("\n") == 1


def test_the_mutation_table_fits_the_source():
    """tools/mutations.py's old texts each occur exactly once where it says, so code that moved fails here, at once,
    instead of leaving a table that mutates nothing (running the table itself takes minutes: docs/layout.md)."""
    mutations = tool("mutations")
    assert mutations.table_problems() == []
    assert len(mutations.MUTATIONS) >= 15


def test_the_mutation_table_check_finds_moved_code_and_missing_tests():
    mutations = tool("mutations")
    row = mutations.Mutation("x", "spec.py", "return not_digit >= threshold", "return not_digit > threshold",
                             ("tests/test_open_set.py",), "")
    moved = replace(row, name="moved", old="return not_digit >== threshold")
    twice = replace(row, name="twice", old="NUM_CLASSES")  # defined, then used
    gone = replace(row, name="gone", tests=("tests/test_nothing.py", "-k", "x"))
    assert mutations.table_problems((row, moved, twice, gone, row)) == [
        "moved: its old text is found 0 times in src/mnist_edge/spec.py, not once",
        "twice: its old text is found 2 times in src/mnist_edge/spec.py, not once",
        "gone: no tests/test_nothing.py",
        "x: not a one-line change, or its name is used twice",
    ]


def test_a_reader_that_goes_away_is_no_error():
    """`tools/X --list | head -1`: the rest of the output has nowhere to go, which is no error to report."""
    reader = subprocess.Popen([sys.executable, str(TOOLS / "mutations.py"), "--list"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    assert reader.stdout is not None and reader.stdout.read(1)
    reader.stdout.close()  # as `head` does once it has its line
    assert reader.wait(timeout=60) in (0, 1) and reader.stderr is not None and reader.stderr.read() == b""


@pytest.mark.torch  # the tool exports with torch
def test_bench_latency_times_an_open_set_model(tmp_path, mnist_dir):
    # edgenet's files have a not_digit output, which predict's runtime opens only with the threshold beside it
    done = subprocess.run([sys.executable, "tools/bench_latency.py", "--arch", "tiny", "--arch", "edgenet",
                           "--rounds", "1", "--runs", "10", "--work", str(tmp_path), "--data-dir", str(mnist_dir)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("| edgenet | ") == 2  # its fp32 and int8 rows
