"""Which file should I deploy? Every format of one checkpoint measured side by side in one process.

Rows: PyTorch eager (the reference), then each (format, quantization) asked for, named as `export` names them
(default: TorchScript fp32 and ONNX fp32, dynamic and static int8). Each file is made by export's
`export_artifact` in a temporary folder, behind the same parity gate as `mnist-edge export`; a file the gate
refuses is reported with its figures but never timed. The files are this process's own, so TorchScript is
loaded without asking for trust; the user gives a checkpoint, read weights-only.

Timing: batch-1 latency on 1 thread and batch-256 throughput on all threads, after a warm-up, with the
formats interleaved round by round so a slow spell of a shared CPU hits them alike (the eager ratio
stays honest), and the garbage collector off while the clock runs.

ONNX Runtime is timed through `runtime.OnnxModel`, the session `predict` uses, with the options it was tuned
to by measurement (runtime.py says why; the notes under the table print what ran). Latency on a
shared CPU is bimodal (other loads steal the core in spells), which is why formats take turns round by round
and the report gives p50 and p99 over many runs rather than a mean.
"""

from __future__ import annotations

import functools
import gc
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from collections.abc import Hashable

import numpy as np
import onnxruntime as ort
import torch

from mnist_edge.export.artifacts import open_artifact, require_checkpoint
from mnist_edge.train.checkpoint import Checkpoint, load_checkpoint
from mnist_edge.train.data import MNIST, load_mnist
from mnist_edge.edge.manifest import MANIFEST, SHIPPED_DIRS, file_sha256, read_manifest
from mnist_edge.edge.runtime import MIN_CHUNK, OnnxModel
from mnist_edge.errors import MnistEdgeError, first_line
from mnist_edge.measure.evaluate import LogitsFn, torch_logits_fn
from mnist_edge.export.publish import Exported, artifact_metadata, calibration_images, export_artifact
from mnist_edge.export.writers import writer_for
from mnist_edge.formats import (
    CALIBRATION_SIZE, CHECKPOINT, DYNAMIC, FORMATS, NONE, ONNX, STATIC, TFLITE, TORCHSCRIPT, artifact_name,
    display_name, runtime_model,
)
from mnist_edge.export.verify import FP32, ParityData, batched, compare, model_threshold, parity_data, parity_non_digits

K = TypeVar("K", bound=Hashable)
Variant = tuple[str, str]  # (format, quantization), as `export --format/--quantize` name them
EAGER: Variant = (CHECKPOINT, NONE)  # the checkpoint's own PyTorch model: the reference row
DEFAULT_VARIANTS: list[Variant] = [(TORCHSCRIPT, NONE), (ONNX, NONE), (ONNX, DYNAMIC), (ONNX, STATIC)]
REFERENCE, PASSED, REFUSED, FAILED = "reference", "passed", "exported but failed verification", "failed to export"
SKIPPED = "not made"  # e.g. dynamic int8 of a model with no layer it quantizes


@dataclass(frozen=True)
class Settings:
    runs: int = 2000  # timed batch-1 calls per format, for p50/p99
    batches: int = 30  # timed batch calls per format, for the median throughput
    rounds: int = 10  # formats take turns this many times
    warmup: int = 100  # untimed batch-1 calls per format first
    batch_warmup: int = 3
    batch: int = 256
    loads: int = 5  # timed loads per format (after one untimed)
    limit: int | None = None  # accuracy and parity on the first N test digits; None: all 10k

    @property
    def runs_per_round(self) -> int:
        return -(-self.runs // self.rounds)

    @property
    def batches_per_round(self) -> int:
        return -(-self.batches // self.rounds)

    @property
    def total_runs(self) -> int:
        return self.runs_per_round * self.rounds

    @property
    def total_batches(self) -> int:
        return self.batches_per_round * self.rounds


@dataclass
class Row:
    format: str  # a formats.FORMATS name; "checkpoint" is the PyTorch eager reference
    quantization: str
    status: str
    file: str = ""
    detail: str = ""  # why it failed
    size_bytes: int | None = None
    accuracy: float | None = None  # percent on the test digits
    max_abs_diff: float | None = None  # vs PyTorch eager
    agreement: float | None = None  # top-1, percent
    load_ms: float | None = None
    p50_us: float | None = None  # batch 1, 1 thread
    p99_us: float | None = None
    speedup: float | None = None  # eager p50 / this p50
    images_per_s: float | None = None  # batch 256, all threads
    refused: float | None = None  # percent of the test digits answered "not a digit" (a model that can say so)

    @property
    def name(self) -> str:
        return display_name(self.format, self.quantization)

    @property
    def variant(self) -> Variant:
        return self.format, self.quantization

    @property
    def timed(self) -> bool:
        return self.status in (REFERENCE, PASSED)


@dataclass
class Benchmark:
    checkpoint: str
    arch: str
    images: int  # test digits behind accuracy and parity
    rows: list[Row]
    settings: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows": [{"name": r.name, **asdict(r)} for r in self.rows]}


def default_checkpoint(arch: str | None = None) -> Path:
    """The shipped checkpoint (of ARCH, else of the default model's arch), else checkpoints/ARCH.pt."""
    for folder in SHIPPED_DIRS:
        if not (folder / MANIFEST).is_file():
            continue
        manifest = read_manifest(folder)
        artifacts = manifest["artifacts"]
        wanted = arch or next((a.get("arch") for a in artifacts if a.get("file") == manifest.get("default")), None)
        for entry in artifacts:
            if entry["format"] == CHECKPOINT and entry.get("arch") == wanted and (folder / entry["file"]).is_file():
                return folder / entry["file"]
    if arch is not None and (Path("checkpoints") / f"{arch}.pt").is_file():
        return Path("checkpoints") / f"{arch}.pt"
    if arch is not None:
        raise MnistEdgeError(
            f"no trained {arch!r} checkpoint shipped or at checkpoints/{arch}.pt: run "
            f"`mnist-edge train --arch {arch}` or pass CHECKPOINT"
        )
    raise MnistEdgeError("no checkpoint is shipped with this install (wheels carry ONNX files only): pass CHECKPOINT")


def _export_rows(
    ckpt: Checkpoint, checkpoint: Path, work: Path, variants: list[Variant], mnist: MNIST, data: ParityData,
    reference: np.ndarray,
) -> dict[Variant, Row]:
    """Write each requested file into WORK through export's parity gate, as `mnist-edge export` would.

    A file that cannot be made (an op the exporter lacks, a quantizer error) becomes a failed row, not
    a crash of the whole table; the ONNX variants share one fp32 export, so its failure fails them all.
    """
    sha = file_sha256(checkpoint)
    shared: dict[str, Any] = {}  # one fp32 ONNX export for every ONNX row
    onnx_error = ""
    if any(fmt == ONNX for fmt, _ in variants):
        try:
            writer_for(ONNX).make(ckpt.model, NONE, None, shared)
        except Exception as exc:  # the exporter raises many unrelated types; the row records which
            onnx_error = first_line(exc)
    calibration = calibration_images(mnist, CALIBRATION_SIZE) if any(mode == STATIC for _, mode in variants) else None
    rows: dict[Variant, Row] = {}
    for key in variants:
        fmt, mode = key
        if fmt == ONNX and onnx_error:
            rows[key] = Row(fmt, mode, FAILED, detail=onnx_error)
            continue
        name = artifact_name(checkpoint.stem, fmt, mode)
        try:
            result = export_artifact(
                ckpt, fmt, mode, name, work.joinpath, artifact_metadata(ckpt, sha, mode), reference, data,
                calibration=calibration, shared=shared,
            )
        except Exception as exc:  # as above: quantizers and tracers fail in their own ways
            rows[key] = Row(fmt, mode, FAILED, name, first_line(exc))
            continue
        rows[key] = _exported_row(result)
    return rows


def _exported_row(result: Exported) -> Row:
    if result.parity is None:  # export_artifact's verdict: nothing in this model to quantize
        return Row(result.format, result.quantization, SKIPPED, result.file, result.note.removeprefix("skipped: "))
    parity = result.parity.as_dict()  # plain data: NaN logits give no figure, not a NaN in the JSON
    status = PASSED if result.parity.passed else REFUSED  # a refused file was never written, so it is not timed
    return Row(
        result.format,
        result.quantization,
        status,
        result.file,
        "; ".join(parity["failures"]),
        result.size_bytes,
        parity["artifact_accuracy"],
        parity["max_abs_diff"],
        parity["agreement"],
        refused=parity["refused"],
    )


def _loader(fmt: str, path: str) -> Callable[[int | None], LogitsFn]:
    """How to open the row's file as a logits_fn; THREADS matters to ONNX Runtime and LiteRT (torch's is global)."""
    if fmt == CHECKPOINT:
        return lambda threads: torch_logits_fn(load_checkpoint(path).model)
    if fmt == TORCHSCRIPT:  # a file this run exported itself a moment ago: trusted
        return lambda threads: open_artifact(path, TORCHSCRIPT, trust_torchscript=True).logits_fn
    runtime = runtime_model(fmt)  # every other format has an edge runtime
    return lambda threads: runtime(path, threads=threads).run


@contextmanager
def _quiet_clock(torch_threads: int) -> Iterator[None]:
    """Torch on TORCH_THREADS threads and no garbage-collector pauses inside timed calls."""
    previous = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        torch.set_num_threads(previous)


def _times_ns(fn: Callable[[], Any], n: int) -> list[int]:
    clock = time.perf_counter_ns
    out = []
    for _ in range(n):
        start = clock()
        fn()
        out.append(clock() - start)
    return out


def interleaved(calls: dict[K, Callable[[], Any]], per_round: int, rounds: int, warmup: int) -> dict[K, np.ndarray]:
    """Each call timed PER_ROUND times in each of ROUNDS, the calls taking turns, after WARMUP calls each."""
    for call in calls.values():
        _times_ns(call, warmup)
    times: dict[K, list[int]] = {k: [] for k in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            times[key] += _times_ns(call, per_round)
    return {k: np.asarray(v, dtype=np.float64) for k, v in times.items()}


def _ort_settings(path: Path) -> dict[str, Any]:
    """The options ONNX Runtime really runs with, read back from the session `predict` opens."""
    model = OnnxModel(path)
    opts = model.session.get_session_options()
    return {
        "version": ort.__version__,
        "providers": model.session.get_providers(),
        "graph_optimization_level": opts.graph_optimization_level.name,
        "execution_mode": opts.execution_mode.name,
        "intra_op_num_threads": opts.intra_op_num_threads,
        "inter_op_num_threads": opts.inter_op_num_threads,
        "batch_threads": model.threads,  # chunks of one batch run at once
        "min_chunk": MIN_CHUNK,
    }


def _litert_settings() -> dict[str, Any]:
    from importlib.metadata import version

    return {"version": version("ai-edge-litert"), "batch_1_threads": 1, "signatures": "batch_1 and batch_64"}


def _eager_row(checkpoint: Path, reference: np.ndarray, data: ParityData, threshold: float | None) -> Row:
    """The reference row: the checkpoint's own PyTorch model, whose logits REFERENCE are."""
    parity = compare(reference, reference, data, FP32, threshold)
    return Row(
        *EAGER, REFERENCE, checkpoint.name, "", checkpoint.stat().st_size, parity.artifact_accuracy, 0.0,
        parity.agreement, refused=parity.refused,
    )


def _timed_loads(
    loaders: dict[Variant, Callable[[int | None], LogitsFn]], timed: dict[Variant, Row], loads: int
) -> dict[Variant, LogitsFn]:
    """Each row's mean load time over LOADS loads on 1 thread, into its row; the models last loaded."""
    single: dict[Variant, LogitsFn] = {}
    for key, load in loaders.items():
        load(1)  # the first load pays one-off import and allocator costs
        start = time.perf_counter()
        for _ in range(loads):
            single[key] = load(1)
        timed[key].load_ms = (time.perf_counter() - start) * 1000 / loads
    return single


def _time_rows(
    timed: dict[Variant, Row], paths: dict[Variant, Path], many: np.ndarray, settings: Settings, all_threads: int,
    log: Callable[[str], None],
) -> None:
    """Load time, latency on MANY's first image on 1 thread and throughput on MANY on ALL_THREADS of each TIMED row's
    file at PATHS, the formats taking turns (see the module docstring)."""
    loaders = {k: _loader(k[0], str(paths[k])) for k in timed}
    log("timing loads ...")
    single = _timed_loads(loaders, timed, settings.loads)
    # torch's thread count is process-wide (set around each phase); ONNX Runtime's and LiteRT's are per model.
    at_batch = {k: single[k] if not FORMATS[k[0]].runtime else load(None) for k, load in loaders.items()}

    one = many[:1]
    log(f"timing batch 1 on 1 thread, {settings.total_runs} runs per format ...")
    with _quiet_clock(1):
        latency = interleaved(
            {k: functools.partial(f, one) for k, f in single.items()}, settings.runs_per_round, settings.rounds,
            settings.warmup,
        )
    log(f"timing batch {len(many)} on {all_threads} threads, {settings.total_batches} runs per format ...")
    with _quiet_clock(all_threads):
        throughput = interleaved(
            {k: functools.partial(f, many) for k, f in at_batch.items()}, settings.batches_per_round, settings.rounds,
            settings.batch_warmup,
        )
    _record_times(timed, latency, throughput, len(many))


def _record_times(
    timed: dict[Variant, Row], latency: dict[Variant, np.ndarray], throughput: dict[Variant, np.ndarray], batch: int
) -> None:
    """Each TIMED row's figures from its times in ns: p50/p99 latency, speed-up over eager, images/s at BATCH."""
    eager_p50_us = float(np.percentile(latency[EAGER], 50)) / 1000
    for key, row in timed.items():
        row.p50_us, row.p99_us = (float(v) / 1000 for v in np.percentile(latency[key], [50, 99]))
        row.speedup = eager_p50_us / row.p50_us
        row.images_per_s = batch / (float(np.median(throughput[key])) / 1e9)


def _settings_record(
    settings: Settings, batch: int, all_threads: int, onnx_file: Path | None, litert: bool
) -> dict[str, Any]:
    """What the timing ran with, for the report: the Settings, the threads, and each runtime's own options (ONNX
    Runtime's read back from ONNX_FILE when an ONNX file was timed, LiteRT's when LITERT)."""
    return {
        "batch_1": {"threads": 1, "warmup": settings.warmup, "runs": settings.total_runs},
        "batch": {
            "size": batch, "threads": all_threads, "warmup": settings.batch_warmup, "runs": settings.total_batches,
        },
        "rounds": settings.rounds,
        "loads": settings.loads,
        "torch": {"version": torch.__version__, "threads_all": all_threads},
        "onnxruntime": _ort_settings(onnx_file) if onnx_file else {},
        "litert": _litert_settings() if litert else {},
        "cpu": {"machine": platform.machine(), "logical_cpus": os.cpu_count()},
    }


def run_benchmark(
    checkpoint: Path,
    variants: list[Variant] | None = None,
    data_dir: Path | None = None,
    settings: Settings = Settings(),
    log: Callable[[str], None] = lambda _: None,
) -> Benchmark:
    """Export, verify, load and time VARIANTS (default: DEFAULT_VARIANTS) of CHECKPOINT; PyTorch eager is
    always the reference."""
    variants = [v for v in dict.fromkeys(DEFAULT_VARIANTS if variants is None else variants) if v != EAGER]
    require_checkpoint(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    mnist = load_mnist(data_dir)  # accuracy is a column: real test digits, never a synthetic stand-in
    data = parity_data(mnist, settings.limit, non_digits=parity_non_digits(ckpt.model))
    log(f"PyTorch eager logits on {data.digits:,} test digits (the reference) ...")
    reference = batched(torch_logits_fn(ckpt.model), data.images)
    eager = _eager_row(checkpoint, reference, data, model_threshold(ckpt.model))
    all_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="mnist-edge-bench-") as tmp:
        work = Path(tmp)
        log("exporting and verifying each format in a temporary folder ...")
        rows = {EAGER: eager, **_export_rows(ckpt, checkpoint, work, variants, mnist, data, reference)}
        timed = {k: r for k, r in rows.items() if r.timed}
        paths = {k: checkpoint if k == EAGER else work / r.file for k, r in timed.items()}
        many = data.images[: settings.batch]
        _time_rows(timed, paths, many, settings, all_threads, log)
        onnx_file = next((paths[k] for k in timed if k[0] == ONNX), None)
        litert = any(k[0] == TFLITE for k in timed)
        recorded = _settings_record(settings, len(many), all_threads, onnx_file, litert)  # reads ONNX_FILE: still here
    return Benchmark(str(checkpoint), ckpt.arch, data.digits, [rows[k] for k in [EAGER, *variants]], recorded)
