"""The edge side against hostile input (issue 21): formats that run interpreters, killed runs, odd paths and
names, and what a run leaves behind. Torch-free: the shipped model, `predict` and `serve` as processes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from mnist_edge.edge import lifetime
from mnist_edge.edge.predict import PARALLEL_MIN
from mnist_edge.edge.preprocess import IMAGE_FORMATS, IMAGE_SUFFIXES
from mnist_edge.edge.runtime import NOT_UTF8

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "mnist_edge" / "samples"
UNSUPPORTED = "not a supported image format (supported: PNG, JPEG, GIF, BMP, WebP, TIFF, PPM/PGM/PBM)"
# A real EPS: Pillow's EPS plugin would hand it to Ghostscript to be drawn.
EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n%%EndComments\n"
       b"0 setgray 10 4 moveto 10 24 lineto stroke\nshowpage\n")


def run_predict(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnist_edge", "predict", *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


@pytest.fixture
def fake_gs(tmp_path, monkeypatch) -> Path:
    """A `gs` first on PATH that leaves a marker file when run; the marker's path."""
    bin_dir, marker = tmp_path / "bin", tmp_path / "gs-ran"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    (bin_dir / "gs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return marker


def other_formats(tmp_path: Path) -> dict[str, bytes]:
    """Files in formats Pillow reads but a digit does not arrive in."""
    found = {"x.eps": EPS, "x.pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"}
    for fmt, suffix in (("ICO", ".ico"), ("TGA", ".tga"), ("PCX", ".pcx"), ("SGI", ".sgi")):
        buffer = io.BytesIO()
        Image.new("L", (28, 28), 0).save(buffer, format=fmt)
        found[f"x{suffix}"] = buffer.getvalue()
    return found


def test_the_suffixes_searched_are_those_of_the_formats_read():
    assert tuple(s for suffixes in IMAGE_FORMATS.values() for s in suffixes) == IMAGE_SUFFIXES
    assert set(IMAGE_FORMATS) == {"PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM"}


def test_an_eps_or_other_format_is_one_line_and_never_runs_ghostscript(tmp_path, fake_gs):
    files = other_formats(tmp_path)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    # In one process that also reports which Pillow plugins got loaded: the EPS one never may.
    code = ("import sys\nfrom mnist_edge.cli.runtime import main\ntry:\n    main()\nfinally:\n"
            "    print(sorted(m for m in sys.modules if m.startswith('PIL.') and m.endswith('ImagePlugin')),"
            " file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, "predict", "--json", *files], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stderr
    rows = json.loads(result.stdout)
    assert rows == [{"file": name, "error": f"{name}: {UNSUPPORTED}"} for name in files]
    *errors, plugins = result.stderr.splitlines()
    assert errors == [f"error: {name}: {UNSUPPORTED}" for name in files]
    assert not fake_gs.exists()
    loaded = {name.removeprefix("PIL.").removesuffix("ImagePlugin").upper() for name in eval(plugins)}
    assert loaded <= {"BMP", "GIF", "JPEG", "MPO", "PNG", "PPM", "TIFF", "WEBP"}, loaded


def test_the_server_refuses_an_eps_upload_without_running_ghostscript(tmp_path, fake_gs):
    pytest.importorskip("uvicorn", reason="the serve extra is not installed")
    from serve_helpers import Server

    with Server(["--workers", "1"]) as server:
        for name, data in other_formats(tmp_path).items():
            reply = server.upload([(name, data)])
            assert reply.status == 422, (name, reply.body)
            assert reply.json()["error"] == f"{name}: {UNSUPPORTED}"
            # The body on its own, as the page could send it, is read by the server process first.
            reply = server.request("POST", "/predict", data, {"Content-Type": "image/x-eps"})
            assert reply.status == 422 and UNSUPPORTED in reply.json()["error"], reply.body
        log = server.log()
    assert not fake_gs.exists() and "Traceback" not in log, log


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def alive(pid: int) -> bool:
    """Whether PID runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def assert_all_die(pids: list[int], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:  # not to leave them running after a failure
        os.kill(pid, signal.SIGKILL)
    assert not left, f"orphans still running {within_s} s after their parent was killed: {left}"


def wait_for(condition, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads process trees from /proc (Linux)")
def test_the_workers_of_a_killed_predict_die_with_it(tmp_path):
    """A run big enough for a worker pool, whose model never finishes: the workers wait for the parent, which
    is then killed outright (SIGKILL runs no cleanup). Before, each worker lived on, orphaned, forever."""
    onnx_graphs = pytest.importorskip("onnx_graphs", reason="builds the model with onnx")
    model = onnx_graphs.endless(tmp_path / "endless.onnx")
    folder = tmp_path / "many"
    folder.mkdir()
    for k in range(4 * PARALLEL_MIN):
        (folder / f"{k}.png").symlink_to(SAMPLES / "mnist-7.png")
    run = subprocess.Popen([sys.executable, "-m", "mnist_edge", "predict", "--model", str(model), str(folder)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        workers = wait_for(lambda: children(run.pid))
        time.sleep(0.5)  # every worker started
        workers = children(run.pid)
    finally:
        run.kill()
        run.wait()
    assert workers
    assert_all_die(workers)


def upload_quietly(server, files) -> None:
    with contextlib.suppress(OSError):  # the server is killed before it answers
        server.upload(files)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads process trees from /proc (Linux)")
def test_the_worker_of_a_killed_server_dies_with_it(tmp_path):
    """A worker busy in a model that never finishes reads no closed pipe: it must die with the server."""
    pytest.importorskip("uvicorn", reason="the serve extra is not installed")
    onnx_graphs = pytest.importorskip("onnx_graphs", reason="builds the model with onnx")
    from serve_helpers import Server, samples

    model = onnx_graphs.endless(tmp_path / "endless.onnx")
    with Server(["--model", str(model), "--workers", "1"]) as server:
        worker = server.pids()[1:]
        threading.Thread(target=upload_quietly, args=(server, samples()[:1]), daemon=True).start()  # never answered
        time.sleep(1.0)
        server.stop(signal.SIGKILL)
    assert worker
    assert_all_die(worker)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks")
def test_where_the_kernel_cannot_kill_orphans_a_watch_ends_them(tmp_path):
    """The portable way (no prctl: macOS, BSD): a child whose parent is killed ends on its own."""
    code = """if True:
        import os, sys, time
        from mnist_edge.edge import lifetime
        lifetime._kernel_kills_orphan = lambda: False
        parent = os.getpid()
        child = os.fork()
        if child == 0:
            lifetime.die_with_parent(parent)
            time.sleep(60)
            os._exit(0)
        print(child, flush=True)
        time.sleep(60)
    """
    run = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert run.stdout is not None
        child = int(run.stdout.readline())
        time.sleep(0.2)
        assert alive(child)
    finally:
        run.kill()
        run.wait()
    assert_all_die([child], within_s=3 * lifetime.WATCH_INTERVAL_S + 1)


def raw_request(port: int, head: bytes) -> tuple[int, bytes]:
    """Send HEAD (a request's start line and headers) as it is; the status and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def test_bad_numbers_in_a_query_or_a_header_are_400_not_500():
    """str.isdigit() took '²' (int() refuses it) and int() parsed thousands of digits until Python's own limit."""
    pytest.importorskip("uvicorn", reason="the serve extra is not installed")
    from serve_helpers import Server, samples

    with Server(["--workers", "1"]) as server:
        for top in ("%C2%B2", "%D9%A3", "9" * 4400, "0" * 4400 + "3", "-1", "+3", "3.0", "", "%203"):
            reply = server.upload(samples()[:1], f"?top={top}")
            assert reply.status == 400 and "?top= takes a whole number" in reply.json()["error"], (top[:20], reply.body)
        assert server.upload(samples()[:1], "?top=0003").status == 200
        # httptools refuses a length over 64 bits itself, but not 5,000 digits of leading zeros.
        for length in (b"0" * 4999 + b"5", b"9" * 5000, "\u00b2".encode("utf-8"), b"12abc"):
            status, body = raw_request(server.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                                       b"Content-Length: " + length + b"\r\nConnection: close\r\n\r\n")
            assert status == 400, (length[:20], status, body)
        log = server.log()
    assert "Traceback" not in log, log


@given(st.text(max_size=60) | st.from_regex(r"[0-9]{1,5000}", fullmatch=True))
@example("\u00b2").via("the superscript two: isdigit() but not int()")
@example("\u0663").via("an Arabic-Indic three: int() reads it")
@example("9" * 4400).via("over int()'s digit limit")
@settings(max_examples=300, deadline=None)
def test_top_is_a_small_whole_number_or_400(text):
    pytest.importorskip("starlette", reason="the serve extra is not installed")
    from starlette.datastructures import QueryParams

    from mnist_edge.edge.serve.app import RequestError, _top

    small = text.isascii() and text.isdigit() and len(text) <= 20  # int() of it is safe
    expected = int(text) if small and 1 <= int(text) <= 10 else None
    try:
        assert _top(QueryParams({"top": text})) == expected
    except RequestError as exc:
        assert exc.status == 400 and expected is None


@given(st.binary(max_size=60) | st.from_regex(rb"[0-9]{1,5000}", fullmatch=True), st.integers(1, 2**40))
@settings(max_examples=300, deadline=None)
def test_a_content_length_is_read_or_refused_400_or_413(declared, max_body):
    pytest.importorskip("starlette", reason="the serve extra is not installed")
    from mnist_edge.edge.serve.app import BodyLimit

    refusal = BodyLimit(None, max_body).refusal(declared)  # type: ignore[arg-type]
    digits = declared.isdigit() and len(declared) <= 20
    if not digits:
        assert refusal is not None and refusal[0] == 400
    elif int(declared) > max_body:
        assert refusal is not None and refusal[0] == 413
    else:
        assert refusal is None


def test_every_input_gets_its_own_answer_whatever_is_wrong_with_its_path(tmp_path):
    """A name too long, a loop of links, an empty argument: each is its input's error, in order, beside the
    good ones. A name too long aborted the whole run with no JSON; "" predicted the current folder."""
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "seven.png").symlink_to(SAMPLES / "mnist-7.png")  # in the current folder: "" must not find it
    good = str(SAMPLES / "mnist-7.png")
    loop = "cannot read (Too many levels of symbolic links)"
    bad = {"x" * 300 + ".png": "cannot read (File name too long)", "loop": loop,
           "": "an empty argument names no file or folder", "loop/x.png": loop}
    args = [good, *bad, good.replace("mnist-7", "mnist-1")]
    result = run_predict("--json", *args, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    rows = json.loads(result.stdout)
    assert [row["file"] for row in rows] == args
    assert "digit" in rows[0] and "digit" in rows[-1]
    for row, problem in zip(rows[1:], bad.values()):
        assert set(row) == {"file", "error"} and row["error"].endswith(problem), row
    assert result.stderr.count("\n") == len(bad) and "Traceback" not in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_an_unreadable_folder_is_its_own_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "seven.png").symlink_to(SAMPLES / "mnist-7.png")
    locked.chmod(0)
    try:
        result = run_predict("--json", str(locked), str(SAMPLES / "mnist-7.png"))
    finally:
        locked.chmod(0o755)
    rows = json.loads(result.stdout)
    assert rows[0] == {"file": str(locked), "error": f"{locked}: cannot read (Permission denied)"}
    assert "digit" in rows[1]


def strictly_utf8(value) -> None:
    """VALUE (parsed JSON) holds only text that encodes as UTF-8: what strict parsers (serde_json) accept."""
    if isinstance(value, str):
        value.encode("utf-8")  # a lone surrogate raises
    elif isinstance(value, dict):
        for key, item in value.items():
            strictly_utf8(key), strictly_utf8(item)
    elif isinstance(value, list):
        for item in value:
            strictly_utf8(item)


def test_a_file_name_that_is_not_utf8_is_valid_json_with_escaped_bytes(tmp_path):
    good, bad = os.fsdecode(b"seven-\xff.png"), os.fsdecode(b"notes-\xfe.png")
    (tmp_path / good).symlink_to(SAMPLES / "mnist-7.png")
    (tmp_path / bad).write_bytes(b"not an image")
    result = subprocess.run([sys.executable, "-m", "mnist_edge", "predict", "--json", good, bad],
                            capture_output=True, cwd=tmp_path, timeout=120)
    rows = json.loads(result.stdout.decode("utf-8", "strict"))
    strictly_utf8(rows)
    assert [row["file"] for row in rows] == ["seven-\\xff.png", "notes-\\xfe.png"]
    assert rows[0]["digit"] == 7 and rows[1]["error"].startswith("notes-\\xfe.png: not a supported image format")


def bad_output_name(tmp_path: Path) -> Path:
    """A model whose output name holds a byte that is not UTF-8 (replaced in place: still valid protobuf)."""
    onnx_graphs = pytest.importorskip("onnx_graphs", reason="builds the model with onnx")
    data = onnx_graphs.log_of_first_pixels(tmp_path / "model.onnx").read_bytes()
    path = tmp_path / "bad-name.onnx"
    path.write_bytes(data.replace(b"logits", b"logit\xff"))
    return path


def test_a_model_with_a_name_that_is_not_utf8_is_one_line(tmp_path):
    model = bad_output_name(tmp_path)
    result = run_predict("--model", str(model), str(SAMPLES / "mnist-7.png"))
    assert result.returncode == 1 and result.stderr == f"error: {model}: not a usable ONNX model ({NOT_UTF8})\n"


def test_the_server_refuses_a_model_with_a_name_that_is_not_utf8_in_one_line(tmp_path):
    pytest.importorskip("uvicorn", reason="the serve extra is not installed")
    model = bad_output_name(tmp_path)
    result = subprocess.run([sys.executable, "-m", "mnist_edge", "serve", "--port", "0", "--model", str(model)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1].endswith(f"not a usable ONNX model ({NOT_UTF8})")


def empty_home(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A home folder that does not exist yet, and the XDG folders in an empty one: an environment for a run."""
    outside = tmp_path / "outside"
    outside.mkdir()
    env = {**os.environ, "HOME": str(outside / "home")}
    for var in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        env[var] = str(outside / var.lower())
    env.pop("ORT_DISABLE_TELEMETRY", None)  # this process set it, importing mnist_edge: the run must set it itself
    return outside, env


def test_predict_writes_nothing_outside_what_it_was_asked_to(tmp_path):
    """ONNX Runtime wrote a telemetry database into ~/.cache/Microsoft on every run (creating a missing home)."""
    outside, env = empty_home(tmp_path)
    folder = tmp_path / "many"
    folder.mkdir()
    for k in range(2 * PARALLEL_MIN + 1):  # worker processes too
        (folder / f"{k}.png").symlink_to(SAMPLES / "mnist-7.png")
    result = run_predict("--json", str(folder), env=env)
    assert result.returncode == 0, result.stderr
    assert list(outside.rglob("*")) == []


def test_serve_writes_nothing_outside_what_it_was_asked_to(tmp_path, monkeypatch):
    pytest.importorskip("uvicorn", reason="the serve extra is not installed")
    from serve_helpers import Server, samples

    outside, env = empty_home(tmp_path)
    for name, value in env.items():  # the server process and its workers inherit it
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ORT_DISABLE_TELEMETRY", raising=False)
    with Server(["--workers", "2"]) as server:
        assert server.upload(samples()).status == 200
    assert list(outside.rglob("*")) == []


def dead_pid() -> int:
    """The pid of a process that has ended."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_saved_copies_go_through_atomic_temporary_names_and_a_killed_runs_are_removed(tmp_path, monkeypatch):
    """--save-preprocessed wrote through `.NAME.<hex>.tmp`, which no run ever removed once a run was killed."""
    from mnist_edge.atomic import TMP_MARK
    from mnist_edge.edge.preprocess import preprocess, save_png

    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".mnist-7.png{TMP_MARK}{dead_pid()}-0123abcd"
    stale.write_bytes(b"half a png")
    running = out / f".mnist-7.png{TMP_MARK}{os.getppid()}-0123abcd"  # a live writer's: kept
    running.write_bytes(b"being written")
    result = run_predict("--save-preprocessed", str(out), str(SAMPLES / "mnist-7.png"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([running.name, "mnist-7.png"])

    linked = []
    real_link = os.link
    monkeypatch.setattr(os, "link", lambda src, dst: (linked.append(Path(src).name), real_link(src, dst)))
    assert save_png(preprocess(SAMPLES / "mnist-1.png"), iter([out / "one.png"])) == out / "one.png"
    assert len(linked) == 1 and linked[0].startswith(f".one.png{TMP_MARK}{os.getpid()}-"), linked


@pytest.mark.parametrize("text, expected", [
    ("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running If node. Name:'branch' "
     "Status Message: [ONNXRuntimeError] : 10 : INVALID_GRAPH : This is an invalid model. "
     "Error: Duplicate definition of name (y).",
     "If node 'branch': This is an invalid model. Error: Duplicate definition of name (y)."),
    ("[ONNXRuntimeError] : 1 : FAIL : Load model from /m.onnx failed: "
     "[ONNXRuntimeError] : 10 : INVALID_GRAPH : bad graph",
     "bad graph"),
])
def test_onnx_runtime_error_prefixes_are_stripped_wherever_they_are(text, expected):
    from mnist_edge.edge.runtime import ort_message

    assert ort_message(RuntimeError(text)) == expected


def external_model(path: Path, tensors: list[dict[str, str]], dims: int = 10) -> Path:
    """A model whose weights, added to the first 10 pixels, are TENSORS: each with these external-data entries."""
    onnx_graphs = pytest.importorskip("onnx_graphs", reason="builds the model with onnx")
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Add", ["picked", "w0"], [f"s{0}"])]
    nodes += [helper.make_node("Add", [f"s{k - 1}", f"w{k}"], [f"s{k}"]) for k in range(1, len(tensors))]
    nodes.append(helper.make_node("Identity", [f"s{len(tensors) - 1}"], ["logits"]))
    model = onnx.load_from_string(onnx_graphs.pixels_model(path, list(range(10)), nodes).read_bytes())
    for k, entries in enumerate(tensors):
        tensor = TensorProto(name=f"w{k}", data_type=TensorProto.FLOAT, dims=[dims])
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in entries.items():
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        model.graph.initializer.append(tensor)
    path.write_bytes(model.SerializeToString())  # onnx.save would read the external data
    return path


def test_external_data_counts_against_the_model_size_limit(tmp_path):
    """A 31 KB model with a 400 MB file beside it made ONNX Runtime take 848 MB (the OOM killer on a Pi)."""
    from mnist_edge.edge.external_data import external_bytes
    from mnist_edge.edge.runtime import MAX_MODEL_BYTES

    with open(tmp_path / "pad.bin", "wb") as pad:  # sparse: no disk used
        pad.truncate(MAX_MODEL_BYTES + 1)
    whole = external_model(tmp_path / "whole.onnx", [{"location": "pad.bin"}])
    declared = external_model(tmp_path / "declared.onnx", [{"location": "pad.bin", "length": str(MAX_MODEL_BYTES)}],
                              dims=MAX_MODEL_BYTES // 4)
    many = external_model(tmp_path / "many.onnx", [{"location": "pad.bin", "offset": "0", "length": str(2**26)}] * 4,
                          dims=2**24)  # the same 64 MiB four times: loaded four times
    small = external_model(tmp_path / "small.onnx", [{"location": "pad.bin", "offset": "64", "length": "40"}])
    assert external_bytes(whole) == MAX_MODEL_BYTES + 1 and external_bytes(many) == 2**28
    assert external_bytes(small) == 40
    for model in (whole, declared, many):
        result = run_predict("--model", str(model), str(SAMPLES / "mnist-7.png"))
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith(f"error: {model}: "), result.stderr
        assert "with its external data is over the" in result.stderr, result.stderr
    result = run_predict("--model", str(small), str(SAMPLES / "mnist-7.png"))
    assert result.returncode == 0, result.stderr  # a small slice of a big file is fine


def test_the_external_data_scan_never_fails_on_a_broken_file(tmp_path):
    from mnist_edge.edge.external_data import external_bytes

    model = external_model(tmp_path / "m.onnx", [{"location": "w.bin", "length": "40"}])
    (tmp_path / "w.bin").write_bytes(bytes(40))
    data = model.read_bytes()
    assert external_bytes(model) == 40
    for cut in range(0, len(data), 7):
        (tmp_path / "cut.onnx").write_bytes(data[:cut] + b"location")
        assert external_bytes(tmp_path / "cut.onnx") >= 0
