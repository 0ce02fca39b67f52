import errno
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import cli_runner

import mnist_edge
from mnist_edge.cli.commands import app

runner = cli_runner()
SAMPLE = Path(__file__).resolve().parents[1] / "src" / "mnist_edge" / "samples" / "mnist-0.png"
COMMANDS = ["models", "train", "evaluate", "predict", "export", "verify", "benchmark"]


def test_models_json_lists_names_and_params():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {r["name"]: r["params"] for r in rows}["tiny"] == 12_364
    assert all(r["macs"] > 0 for r in rows)


def test_models_table():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    assert "inception" in result.output and "97,298" in result.output and "98.88%" in result.output


def test_version_is_the_installed_distributions():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"mnist-edge {mnist_edge.__version__}\n"
    assert importlib.metadata.version("mnist-edge") == mnist_edge.__version__  # one version, not two copies


def no_such_option(flag: str) -> str:
    """The line for an unknown option, as a regex: click 8.2+ words it "No such option '--x'." (typer 0.16-0.27
    use the installed click), click 8.1 and typer 0.28's own copy "No such option: --x"."""
    return rf"error: no such option(: {flag}| '{flag}'\.)$"


@pytest.mark.parametrize(
    "args, message",
    [
        (["models", "--no-such-flag"], no_such_option("--no-such-flag")),
        (["predict"], re.escape("error: missing argument 'PATH...'.")),
        (
            ["export", "x.pt", "--format", "zip"],
            re.escape(
                "error: invalid value for '--format': 'zip' is not one of 'onnx', 'tflite', 'torchscript', 'all'."
            ),
        ),
        (
            ["predict", "--top", "three", "x.png"],
            re.escape("error: invalid value for '--top': 'three' is not a valid int"),
        ),
        (
            ["predict", "--top", "11", "x.png"],
            re.escape("error: invalid value for '--top': 11 is not in the range 1<=x<=10."),
        ),
    ],
)
def test_usage_errors_are_one_line_and_a_hint(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and result.stdout == ""
    first, hint = result.stderr.splitlines()
    assert re.match(message, first) and hint == f"try 'mnist-edge {args[0]} --help'"


def test_usage_errors_through_the_installed_command():
    proc = subprocess.run(
        [sys.executable, "-m", "mnist_edge", "predict", "--bogus"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and proc.stdout == ""
    first, hint = proc.stderr.splitlines()
    assert re.match(no_such_option("--bogus"), first) and hint == "try 'mnist-edge predict --help'"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_plain_metavars(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert not re.search(r"<[a-z ]+>|\{\w+\}|╭", result.stdout), result.stdout  # <file>, {paths}, rich boxes


def test_help_names_values_by_what_they_are():
    text = runner.invoke(app, ["predict", "--help"]).stdout
    assert "Usage: mnist-edge predict [OPTIONS] PATH..." in text
    assert "--model FILE" in text and "--top N" in text and "--save-preprocessed DIR" in text
    text = runner.invoke(app, ["export", "--help"]).stdout
    assert "--format onnx|tflite|torchscript|all" in text and "--max-abs-diff NUMBER" in text
    assert "Usage: mnist-edge benchmark [OPTIONS] [CHECKPOINT]" in runner.invoke(app, ["benchmark", "--help"]).stdout


def failing_model_lookup(monkeypatch, exc: BaseException) -> None:
    """predict's first step (finding the default model) raises EXC: an error no code path expects."""
    from mnist_edge.edge import manifest

    def lookup():
        raise exc

    monkeypatch.setattr(manifest, "default_model_path", lookup)


@pytest.mark.parametrize(
    "exc, line",
    [
        (OSError(errno.EACCES, "Permission denied", "/srv/models"), "error: /srv/models: Permission denied (EACCES)"),
        (OSError(errno.ENOSPC, "No space left on device"), "error: No space left on device (ENOSPC)"),
        (OSError(errno.EROFS, "Read-only file system", "/ro/x"), "error: /ro/x: Read-only file system (EROFS)"),
        (MemoryError(), "error: out of memory: try fewer or smaller inputs"),
    ],
)
def test_system_errors_are_one_line(monkeypatch, exc, line):
    failing_model_lookup(monkeypatch, exc)
    result = runner.invoke(app, ["predict", str(SAMPLE)])
    assert result.exit_code == 1 and result.stderr == line + "\n"


def test_a_bug_says_so_in_one_line_unless_debugging(monkeypatch):
    failing_model_lookup(monkeypatch, KeyError("default"))
    result = runner.invoke(app, ["predict", str(SAMPLE)])
    assert result.exit_code == 70
    assert (
        result.stderr
        == "error: KeyError: 'default' (this is a bug, please report it; MNIST_EDGE_DEBUG=1 shows the traceback)\n"
    )
    monkeypatch.setenv("MNIST_EDGE_DEBUG", "1")
    result = runner.invoke(app, ["predict", str(SAMPLE)])
    assert isinstance(result.exception, KeyError)  # let out, with its traceback


@pytest.mark.parametrize(
    "module, body, package",
    [
        ("onnxruntime", "raise ImportError('libonnxruntime.so.1.32.0: cannot open shared object file')", "onnxruntime"),
        ("onnxruntime", "raise OSError('libgomp.so.1: cannot open shared object file')", "onnxruntime"),
        ("numpy", "raise ModuleNotFoundError(\"No module named 'numpy'\", name='numpy')", "numpy"),
        ("PIL", "raise ImportError('cannot import name _imaging from PIL')", "pillow"),
    ],
)
def test_a_broken_or_missing_dependency_is_one_line(tmp_path, module, body, package):
    (tmp_path / module).mkdir()
    (tmp_path / module / "__init__.py").write_text(body + "\n")
    src = Path(mnist_edge.__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "mnist_edge", "predict", str(SAMPLE)], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tmp_path}:{src}"},
    )
    assert proc.returncode == 1 and proc.stdout == "", proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {package} is missing or broken (")
    assert f"reinstall it: pip install --force-reinstall '{package}" in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--version"], ["predict", "--json", str(Path(mnist_edge.__file__).parent / "samples" / "mnist-7.png")],
        ["models"],
    ],
)
def test_closed_standard_output_is_an_error_not_silence(args):
    """`cmd >&-`: Python starts with sys.stdout None and click drops what it echoes; results must not vanish with
    exit 0."""
    run = subprocess.run(["bash", "-c", 'exec "$@" >&-', "-", sys.executable, "-m", "mnist_edge", *args],
                         capture_output=False, stderr=subprocess.PIPE, text=True, timeout=60)
    assert run.returncode != 0 and run.stderr.count("error:") == 1 and "Traceback" not in run.stderr, run.stderr


SAMPLE = str(Path(mnist_edge.__file__).parent / "samples" / "mnist-7.png")


@pytest.mark.parametrize(
    "args",
    [
        ["--version"], ["--help"], ["predict", "--help"], [], ["models"], ["predict", SAMPLE],
        ["predict", "--json", SAMPLE],
    ],
)
@pytest.mark.parametrize("buffered", [True, False])
def test_writing_to_a_full_disk_is_one_line(args, buffered):
    """--help and --version are written by click before any command runs, outside the commands' error handling; a
    command's output may fail when written or only when flushed at the end. Buffered is a fresh shell's default."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | (
        {} if buffered else {"PYTHONUNBUFFERED": "1"}
    )
    with open("/dev/full", "w") as full:
        run = subprocess.run(
            [sys.executable, "-m", "mnist_edge", *args],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env=env,
        )
    assert run.returncode == 1 and run.stderr == "error: No space left on device (ENOSPC)\n", run.stderr
