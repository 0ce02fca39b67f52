"""The benchmark as one table: rich in the terminal, Markdown for the README; the same cells and notes in both."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mnist_edge.measure.benchmark import FAILED, PASSED, REFERENCE, REFUSED, SKIPPED, Benchmark, Row

HEADERS = (
    "format",
    "status",
    "size",
    "test accuracy",
    "max |Δlogit|",
    "top-1 agreement",
    "refused digits",
    "load",
    "batch 1 p50",
    "batch 1 p99",
    "vs eager",
    "batch {batch} img/s",
)


def _fmt(value: Any, render: Callable[[Any], str]) -> str:
    return "-" if value is None else render(value)


def _cells(row: Row) -> list[str]:
    return [
        row.name,
        row.status,
        _fmt(row.size_bytes, lambda v: f"{v / 1000:.1f} kB"),
        _fmt(row.accuracy, lambda v: f"{v:.2f}%"),
        _fmt(row.max_abs_diff, lambda v: "0 (reference)" if row.status == "reference" else f"{v:.1e}"),
        _fmt(row.agreement, lambda v: f"{v:.2f}%"),
        _fmt(row.refused, lambda v: f"{v:.2f}%"),
        _fmt(row.load_ms, lambda v: f"{v:.1f} ms"),
        _fmt(row.p50_us, lambda v: f"{v:.0f} µs"),
        _fmt(row.p99_us, lambda v: f"{v:.0f} µs"),
        _fmt(row.speedup, lambda v: f"{v:.1f}x"),
        _fmt(row.images_per_s, lambda v: f"{v:,.0f}"),
    ]


# The columns a terminal shows without --wide: what tells formats apart, in 80 columns. Parity (max |Δlogit|,
# agreement) is in the status, which says "passed" only when the file passed the gate; load, p99 and the speed-up
# over eager (p50 against p50) are --wide's.
NARROW = ("format", "status", "size", "test accuracy", "batch 1 p50", "batch {batch} img/s")
SHORT_STATUS = {REFUSED: "REFUSED", FAILED: "FAILED"}  # the notes under the table say why


def table(bench: Benchmark, columns: tuple[str, ...] = HEADERS) -> tuple[list[str], list[list[str]]]:
    """The headers and cells of COLUMNS (HEADERS names), in HEADERS' order."""
    keep = [i for i, h in enumerate(HEADERS) if h in columns]
    headers = [HEADERS[i].format(batch=bench.settings["batch"]["size"]) for i in keep]
    return headers, [[cells[i] for i in keep] for cells in map(_cells, bench.rows)]


def notes(bench: Benchmark) -> list[str]:
    """What the figures mean and how they were taken: thread settings, runs, ONNX Runtime options, failures."""
    s = bench.settings
    one, many = s["batch_1"], s["batch"]
    lines = [
        f"{bench.arch} checkpoint {bench.checkpoint}; accuracy and parity (vs PyTorch eager) on {bench.images:,} "
        "MNIST test digits.",
        f"Batch 1: {one['threads']} thread, {one['warmup']} warm-up + {one['runs']:,} timed runs per format; "
        f"batch {many['size']}: {many['threads']} threads, {many['warmup']} warm-up + {many['runs']} timed runs "
        f"(median); formats interleaved over {s['rounds']} rounds; load: mean of {s['loads']} after one untimed, "
        "opening the file as mnist-edge does (ONNX: session with graph optimization; TorchScript: its first check "
        "run, where the JIT profiles).",
    ]
    ort = s.get("onnxruntime")
    if ort:
        lines.append(
            f"ONNX Runtime {ort['version']} ({', '.join(ort['providers'])}) through the session `predict` uses: "
            f"{ort['graph_optimization_level']}, {ort['execution_mode']}, intra-op threads "
            f"{ort['intra_op_num_threads']}, inter-op threads {ort['inter_op_num_threads']}; a batch runs as up to "
            f"{ort['batch_threads']} chunks at once (at least {ort['min_chunk']} images each), one per usable CPU."
        )
    if lite := s.get("litert"):
        lines.append(
            f"LiteRT {lite['version']} (ai-edge-litert, XNNPACK on the CPU): one image on 1 thread, a batch through "
            f"the {lite['signatures']} signatures on every thread."
        )
    lines.append(f"torch {s['torch']['version']}; CPU {s['cpu']['machine']}, {s['cpu']['logical_cpus']} logical CPUs.")
    lines += [f"{r.name}: {r.status}: {r.detail}" for r in bench.rows if r.detail]
    return lines


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def markdown(bench: Benchmark) -> str:
    headers, rows = table(bench)
    numeric = [False, False] + [True] * (len(headers) - 2)
    rule = "|" + "|".join("---:" if n else "---" for n in numeric) + "|"
    lines = [_markdown_row(headers), rule, *map(_markdown_row, rows)]
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {line}" for line in notes(bench)) + "\n"


def _narrow(headers: list[str], rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """Two-line headers, and one word for a status the notes explain: each column as narrow as its figures."""
    rows = [[cells[0], SHORT_STATUS.get(cells[1], cells[1]), *cells[2:]] for cells in rows]
    return ["\n".join(header.rsplit(" ", 1)) for header in headers], rows


def print_table(bench: Benchmark, wide: bool = False) -> None:
    """The table on stdout: NARROW's columns (they fit 80 terminal columns), every column when WIDE."""
    import os

    from rich import box
    from rich.console import Console
    from rich.table import Table

    headers, rows = table(bench) if wide else _narrow(*table(bench, NARROW))
    # no outer edge, one space of padding: two characters between columns, as narrow as rich draws them
    out = Table(title=f"mnist-edge benchmark: {bench.arch}", title_justify="left", box=box.SIMPLE_HEAD,
                show_edge=False, padding=(0, 0, 0, 1))
    for i, header in enumerate(headers):
        out.add_column(header, justify="left" if i < 2 else "right", no_wrap=i != 1 or not wide)  # --wide: status wraps
    for row, data in zip(rows, bench.rows):
        style = {PASSED: None, REFERENCE: "bold", SKIPPED: "dim"}.get(data.status, "red")
        out.add_row(*row, style=style)
    console = Console()
    if wide and not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = max(console.width, 180)  # piped or redirected: one line per row, not rich's 80 columns
    console.print(out)
    for line in notes(bench):
        console.print(line, highlight=False, markup=False)
