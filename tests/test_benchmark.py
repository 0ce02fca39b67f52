"""`mnist-edge benchmark` on a tiny random-weight model, few digits and few runs: structure and sane figures, not
speed."""

import json
import re

import pytest
from typer.testing import CliRunner

from mnist_edge.measure.benchmark import (
    DEFAULT_VARIANTS, EAGER, FAILED, PASSED, REFERENCE, REFUSED, SKIPPED, Benchmark, Row, Settings, default_checkpoint,
    run_benchmark,
)
from mnist_edge.measure.benchmark_table import print_table
from mnist_edge.cli.commands import app
from mnist_edge.errors import MnistEdgeError

QUICK = Settings(runs=20, batches=4, rounds=2, warmup=2, batch_warmup=1, batch=16, loads=1, limit=64)
TORCHSCRIPT, ONNX, DYNAMIC, STATIC = ("torchscript", "none"), ("onnx", "none"), ("onnx", "dynamic"), ("onnx", "static")


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture(scope="module")
def bench(tiny, mnist_dir):
    return run_benchmark(tiny, None, mnist_dir, QUICK)


def test_every_format_gets_a_row_with_sane_figures(bench):
    rows = {r.variant: r for r in bench.rows}
    assert list(rows) == [EAGER, *DEFAULT_VARIANTS] == [EAGER, TORCHSCRIPT, ONNX, DYNAMIC, STATIC]
    assert rows[EAGER].status == REFERENCE and rows[EAGER].speedup == 1.0
    # tiny has no MatMul/Gemm: export makes no dynamic int8 file, and the table says so instead of timing nothing
    assert rows[DYNAMIC].status == SKIPPED and rows[DYNAMIC].p50_us is None
    for key in (EAGER, TORCHSCRIPT, ONNX, STATIC):
        row = rows[key]
        assert row.status in (REFERENCE, PASSED), (key, row.detail)
        assert row.size_bytes > 1000 and row.load_ms > 0 and row.images_per_s > 0
        assert 0 < row.p50_us <= row.p99_us
        assert row.speedup == pytest.approx(rows[EAGER].p50_us / row.p50_us)
        assert row.accuracy == pytest.approx(rows[EAGER].accuracy, abs=100 / 64 + 1e-9)  # at most one digit apart
    for key in (TORCHSCRIPT, ONNX):  # fp32 files compute what eager computes
        assert rows[key].max_abs_diff <= 1e-4 and rows[key].agreement == 100.0
    assert rows[STATIC].max_abs_diff > 0  # int8 moves logits; a zero would mean it timed the fp32 file
    assert bench.images == 64
    assert bench.settings["batch_1"] == {"threads": 1, "warmup": 2, "runs": 20}
    assert bench.settings["batch"]["size"] == 16 and bench.settings["batch"]["runs"] == 4
    assert (
        bench.settings["onnxruntime"]["intra_op_num_threads"] == 1
        and bench.settings["onnxruntime"]["batch_threads"] >= 1
    )


def test_a_file_that_fails_verification_is_reported_and_not_timed(tmp_path, mnist_dir, make_checkpoint):
    # logits around 1e7: float32 rounding in ONNX Runtime's differently ordered sums moves them far past 1e-4
    make_checkpoint(tmp_path / "huge.pt", logit_scale=1e7)
    result = run_benchmark(tmp_path / "huge.pt", [ONNX], mnist_dir, QUICK)
    assert [r.variant for r in result.rows] == [EAGER, ONNX]
    onnx = result.rows[1]
    assert onnx.status == REFUSED
    assert "max abs logit diff" in onnx.detail and onnx.max_abs_diff > 1e-4
    assert onnx.size_bytes > 1000 and onnx.p50_us is None and onnx.images_per_s is None


def test_json_is_plain_data(bench):
    report = json.loads(json.dumps(bench.as_dict()))
    assert [r["name"] for r in report["rows"]] == [
        "PyTorch eager", "TorchScript fp32", "ONNX fp32", "ONNX dynamic int8", "ONNX static int8",
    ]
    assert (report["rows"][4]["format"], report["rows"][4]["quantization"]) == STATIC
    assert report["rows"][2]["status"] == PASSED and report["rows"][2]["p50_us"] > 0


def test_cli_table_and_markdown_show_the_same_figures(tiny, mnist_dir, tmp_path):
    table = tmp_path / "perf.md"
    args = ["benchmark", str(tiny), "--format", "onnx", "--data-dir", str(mnist_dir), "--limit", "16", "--runs", "10"]
    result = CliRunner().invoke(app, [*args, "--markdown", str(table), "--wide"])
    assert result.exit_code == 0, result.output
    lines = table.read_text().splitlines()
    assert lines[0].startswith("| format | status | size |") and "max \\|Δlogit\\|" in lines[0]
    assert [line.split(" | ")[:2] for line in lines[2:4]] == [
        ["| PyTorch eager", "reference"],
        ["| ONNX fp32", "passed"],
    ]
    onnx_cells = [c.strip() for c in lines[3].strip("|").split("|")]
    terminal_row = next(line for line in result.stdout.splitlines() if "ONNX fp32" in line)
    assert re.split(r"\s{2,}", terminal_row.strip()) == onnx_cells
    assert "10 timed runs per format" in result.stdout and "ORT_ENABLE_ALL" in result.stdout
    assert any("intra-op threads 1" in line and "chunks at once" in line for line in lines)
    # the file is there now: never replaced unasked
    refused = CliRunner().invoke(app, [*args, "--markdown", str(table)])
    assert (
        refused.exit_code == 1
        and refused.output.strip() == f"error: {table}: exists; give --overwrite to replace it, or choose another path"
    )
    assert table.read_text().splitlines() == lines


def test_format_and_quantize_name_the_rows_as_export_names_the_files(tiny, mnist_dir):
    result = CliRunner().invoke(
        app,
        ["benchmark", str(tiny), "--format", "onnx", "--quantize", "static", "--limit", "16", "--runs", "10", "--json"],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["rows"]
    assert [(r["format"], r["quantization"]) for r in rows] == [EAGER, ONNX, STATIC]
    assert [r["file"] for r in rows[1:]] == ["tiny.onnx", "tiny.int8.onnx"]  # export's names for the same flags


def test_default_checkpoint_for_an_arch(tmp_path, monkeypatch, make_checkpoint):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MnistEdgeError, match="mnist-edge train --arch basic"):
        default_checkpoint("basic")
    make_checkpoint(tmp_path / "checkpoints" / "basic.pt", "basic")
    assert default_checkpoint("basic").resolve() == (tmp_path / "checkpoints" / "basic.pt").resolve()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--arch", "tiny", "x.pt"], "pass CHECKPOINT or --arch, not both"),
        (["--arch", "nope"], "unknown architecture 'nope'"),
        (["missing.pt"], "missing.pt: no such checkpoint"),
    ],
)
def test_bad_input_is_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["benchmark", *args])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}")


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_markdown_path_that_is_a_fifo_is_refused_before_measuring(overwrite, tmp_path):
    import os
    import stat

    table = tmp_path / "table.md"
    os.mkfifo(table)  # writing the table there would block; replacing it would destroy the user's FIFO
    result = CliRunner().invoke(app, ["benchmark", "--arch", "tiny", "--markdown", str(table), *overwrite])
    assert result.exit_code == 1
    assert result.output == f"error: {table}: is a pipe (FIFO), not a file; choose another path\n"
    assert stat.S_ISFIFO(os.lstat(table).st_mode)


def _worst_case_rows() -> Benchmark:
    """Every status, the longest format name, figures as wide as they get (a 16 MB model, ms latencies)."""
    figures = dict(size_bytes=15_894_000, accuracy=99.48, max_abs_diff=1e-6, agreement=100.0, load_ms=1234.5,
                   p50_us=12_345, p99_us=123_456, speedup=0.1, images_per_s=123_456)
    rows = [Row("checkpoint", "none", REFERENCE, **figures), Row("torchscript", "static", PASSED, **figures),
            Row("onnx", "dynamic", SKIPPED, detail="no layer it quantizes"),
            Row("onnx", "static", REFUSED, detail="top-1 agreement 99.00% < 99.5%", **{**figures, "p50_us": None}),
            Row("onnx", "none", FAILED, detail="export raised")]
    settings = {"batch": {"size": 256, "threads": 2, "warmup": 3, "runs": 30}, "rounds": 10, "loads": 5,
                "batch_1": {"threads": 1, "warmup": 100, "runs": 2000}, "torch": {"version": "2"},
                "cpu": {"machine": "x86_64", "logical_cpus": 2}}
    return Benchmark("checkpoints/wide.pt", "wide", 10_000, rows, settings)


def test_the_table_fits_80_columns_and_wide_shows_every_column(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    print_table(_worst_case_rows())
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 80 and "…" not in out
    table = out.split("wide checkpoint checkpoints/wide.pt")[0]  # the notes follow
    for shown in ("15894.0 kB", "reference", "passed", "not made", "REFUSED", "FAILED", "TorchScript static int8",
                  "99.48%", "12345 µs", "123,456", "batch 256", "img/s"):
        assert shown in table
    assert "load" not in table and "agreement" not in table
    assert "ONNX static int8: exported but failed verification: top-1 agreement" in out  # the notes say why
    monkeypatch.setenv("COLUMNS", "200")
    print_table(_worst_case_rows(), wide=True)
    out = capsys.readouterr().out
    assert "…" not in out and "exported but failed verification" in out.split("wide checkpoint")[0]
    for header in ("max |Δlogit|", "top-1 agreement", "load", "batch 1 p99", "vs eager", "batch 256 img/s"):
        assert header in out
