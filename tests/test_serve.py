"""`mnist-edge serve`: the API contract, every bad request, slow and vanishing clients, workers dying,
clean shutdown, and a short load. Against a real server process (tests/serve_helpers.py)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import ROOT
from mnist_edge.edge.manifest import default_model_path, file_sha256, read_manifest
from mnist_edge.edge.preprocess import preprocess
from mnist_edge.edge.serve.app import BodyLimit, create_app
from mnist_edge.edge.serve.engine import MAX_BATCH, MAX_BATCH_BYTES, Engine
from mnist_edge.edge.serve.protocol import Outcome, Upload
from serve_helpers import SAMPLES, Server, multipart, samples

pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install -e '.[serve]' in the checkout")

# Small limits, so the tests reach them cheaply.
MAX_BODY = 200_000
MAX_FILES = 8
TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def server():
    with Server(["--max-body", str(MAX_BODY), "--max-files", str(MAX_FILES), "--timeout", str(TIMEOUT_S)]) as running:
        yield running
        log = running.log()
    assert "Traceback" not in log, log  # no request in this module may crash anything


def assert_healthy(server: Server) -> None:
    """The server still answers, and still predicts."""
    assert server.get("/healthz").status == 200
    reply = server.upload(samples()[:1])
    assert reply.status == 200 and reply.json()[0]["file"] == samples()[0][0]


def assert_refused(reply, status: int, words: str) -> None:
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers["content-type"] == "application/json"
    assert words in reply.json()["error"], reply.json()


def predict_json(*args: str) -> list[dict]:
    """What `mnist-edge predict --json` prints for the samples (named as the server names uploads)."""
    out = subprocess.run([sys.executable, "-m", "mnist_edge", "predict", "--json", *args], cwd=SAMPLES,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return json.loads(out)


# --- the contract ---


def test_healthz_and_model(server):
    health = server.get("/healthz")
    assert health.status == 200 and health.json()["status"] == "ok"
    model = server.get("/model").json()
    path = default_model_path()
    assert model["file"] == path.name and model["sha256"] == file_sha256(path)
    entry = next(a for a in read_manifest(path.parent)["artifacts"] if a["file"] == path.name)
    assert model["arch"] == entry["arch"] and model["quantization"] == entry["quantization"] == "static"
    assert 99 < model["test_accuracy"] <= 100
    assert "[N,1,28,28]" in model["input"] and model["labels"] == list(range(10))


def test_predictions_are_predict_json_objects(server):
    files = samples()
    reply = server.upload(files)
    assert reply.status == 200
    assert reply.json() == predict_json(*(name for name, _ in files))
    # The same objects one at a time, as raw bodies, named by ?name=
    for name, data in files[:2]:
        raw = server.request("POST", f"/predict?name={name}", data, {"Content-Type": "image/png"})
        assert raw.json() == predict_json(name)


def test_top_and_raw_options_match_predict(server):
    mnist = [f for f in samples() if f[0].startswith("mnist-")]
    reply = server.upload(mnist, "?top=10&raw=1")
    assert reply.json() == predict_json("--top", "10", "--raw", *(name for name, _ in mnist))
    assert all(len(row["top"]) == 10 for row in reply.json())


def test_preview_is_the_image_the_model_saw(server):
    name, data = samples()[-1]  # the photo of a 3 on paper: preprocessing changes it the most
    row = server.upload([(name, data)], "?preview=1").json()[0]
    prefix = "data:image/png;base64,"
    assert row["preview"].startswith(prefix)
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(row["preview"][len(prefix):]))))
    assert seen.shape == (28, 28) and seen.dtype == np.uint8
    np.testing.assert_array_equal(seen, np.round(preprocess(data) * 255).astype(np.uint8))
    assert "preview" not in server.upload([(name, data)]).json()[0]  # only when asked


def test_page_and_its_files_come_from_the_package(server):
    page = server.get("/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    html = page.body.decode()
    for ref in ("/static/app.js", "/static/style.css"):
        assert ref in html
        asset = server.get(ref)
        assert asset.status == 200 and asset.body
    assert "http://" not in html and "https://" not in html  # nothing from a CDN: the Pi may be offline
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert_refused(server.get("/static/../app.py"), 404, "")
    assert_refused(server.get("/static/nothing.js"), 404, "no such file")


def loaded_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_http_process_loads_no_onnx_runtime_and_no_process_loads_torch(server):
    """The HTTP side holds no model (the workers do), and nothing of serve needs torch."""
    http, *workers = server.pids()
    assert "onnxruntime" not in loaded_libraries(http)
    assert workers and all("onnxruntime" in loaded_libraries(w) for w in workers)
    for pid in (http, *workers):
        assert "libtorch" not in loaded_libraries(pid)


# --- bad requests: a 4xx with a JSON error, and the server unharmed ---


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def test_bad_images_are_422_naming_the_file(server):
    good = samples()[0]
    digit = good[1]
    bomb = png_bytes(Image.new("1", (8200, 8200)))  # 67 million pixels in a few kilobytes
    assert len(bomb) < MAX_BODY
    cases = {
        "notes.png": (b"not an image at all", "not a supported image format"),
        "cut.png": (digit[: len(digit) // 2], "unreadable image"),
        "bomb.png": (bomb, "decompression bomb"),
        "blank.png": (png_bytes(Image.new("L", (50, 50), 255)), "no digit found"),
    }
    for name, (data, words) in cases.items():
        reply = server.upload([(name, data)])
        assert_refused(reply, 422, words)
        assert reply.json()["error"].startswith(name)
    # One bad image among good ones: 422 naming it, and every image's own result, in order.
    reply = server.upload([good, ("notes.png", b"junk"), good])
    assert_refused(reply, 422, "notes.png")
    results = reply.json()["results"]
    assert [r["file"] for r in results] == [good[0], "notes.png", good[0]]
    assert "digit" in results[0] and "error" in results[1] and results[2] == results[0]
    assert_healthy(server)


def test_bad_requests_are_4xx(server):
    png = {"Content-Type": "image/png"}
    body, content_type = multipart([("a.png", b"x")], field_name="image")
    cases = [
        (server.request("POST", "/predict", b"", png), 400, "empty request body"),
        (server.upload([("empty.png", b"")]), 400, "empty.png: empty file"),
        (server.request("POST", "/predict", b"{}", {"Content-Type": "application/json"}), 415, "application/json"),
        (server.request("POST", "/predict", b"abc"), 415, "no Content-Type"),
        (server.request("POST", "/predict", body, {"Content-Type": content_type}), 400, "no part named 'file'"),
        (server.request("POST", "/predict", b"--x\r\n", {"Content-Type": "multipart/form-data"}), 400, "boundary"),
        (
            server.request("POST", "/predict", b"garbage", {"Content-Type": "multipart/form-data; boundary=x"}), 400,
            "multipart",
        ),
        (server.upload(samples()[:1] * (MAX_FILES + 1)), 400, f"Maximum number of files is {MAX_FILES}"),
        (server.upload(samples()[:1], "?top=0"), 400, "?top="),
        (server.upload(samples()[:1], "?top=eleven"), 400, "?top="),
        (server.upload(samples()[:1], "?preview=maybe"), 400, "?preview="),
        (server.get("/nowhere"), 404, "Not Found"),
        (server.get("/predict"), 405, "Method Not Allowed"),
    ]
    for reply, status, words in cases:
        assert_refused(reply, status, words)
    assert_healthy(server)


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
def test_an_upload_the_server_cannot_buffer_is_503():
    """Starlette spools a file part over 1 MB to a temporary file; a file-size limit makes writing it fail
    as a full disk would (Python ignores SIGXFSZ, so the write raises)."""
    noise = np.random.default_rng(0).integers(0, 256, (1200, 1200), np.uint8)
    photo = png_bytes(Image.fromarray(noise))
    assert 1024 * 1024 < len(photo) < 10 * 1024 * 1024
    with Server(prefix=["prlimit", f"--fsize={len(photo) // 2}", "--"]) as running:
        assert_refused(running.upload([("photo.png", photo)]), 503, "cannot hold the upload")
        assert running.upload(samples()[:1]).status == 200  # small uploads stay in memory: still served


def test_text_fields_are_refused(server):
    boundary = "b0undary"
    content_type = {"Content-Type": f"multipart/form-data; boundary={boundary}"}

    def fields(*names: str) -> bytes:
        return (
            "".join(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{n}"\r\n\r\nhello\r\n' for n in names
            ).encode()
            + f"--{boundary}--\r\n".encode()
        )

    assert_refused(server.request("POST", "/predict", fields("file"), content_type), 400, "text field")
    assert_refused(server.request("POST", "/predict", fields(*["x"] * 17), content_type), 400, "Too many fields")


def read_reply(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_body_over_the_limit_is_413_before_it_is_read(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        # Declares 50 MB and sends none of it: the answer comes from the Content-Length alone.
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 50000000\r\n\r\n"
        )
        reply = read_reply(sock)  # returns: the server closes the connection instead of draining 50 MB
    assert reply.startswith(b"HTTP/1.1 413") and b'"error"' in reply
    assert_healthy(server)


def test_chunked_body_over_the_limit_is_413_while_streaming(server):
    chunk = b"x" * 65536
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sent = 0
        # Sends until the answer comes (6.5 MB if it never did); loopback's buffers take the chunks fast.
        while sent < 100 * len(chunk) and not select.select([sock], [], [], 0.05)[0]:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        reply = read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert sent < MAX_BODY + 10 * len(chunk)  # answered soon after the limit, not at the end of the body
    assert_healthy(server)


def test_a_body_of_exactly_max_body_bytes_is_accepted(server):
    """The limit is inclusive, whether the body is declared by Content-Length or streamed in chunks."""
    name, png = samples()[0]
    body = png + b"\0" * (MAX_BODY - len(png))  # PNG readers stop at IEND: the padding is never read
    reply = server.request("POST", f"/predict?name={name}", body, {"Content-Type": "image/png"})
    assert reply.status == 200 and reply.json()[0]["file"] == name, reply.body[:300]
    half = MAX_BODY // 2
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nConnection: close\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        for chunk in (body[:half], body[half:]):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")
        reply_bytes = read_reply(sock)
    assert reply_bytes.startswith(b"HTTP/1.1 200"), reply_bytes[:300]


@pytest.mark.parametrize("declared", [b"-1", b"+5", b" 5", b"1e3", b"abc", b""])
def test_a_content_length_that_is_no_whole_number_is_400_and_never_reaches_the_app(declared):
    """Uvicorn parses Content-Length itself today; the limit must not depend on which server runs the app."""
    sent: list[dict] = []

    async def app(scope, receive, send) -> None:
        raise AssertionError("the app was called")

    async def send(message) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": [(b"content-length", declared)]}
    asyncio.run(BodyLimit(app, MAX_BODY)(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400  # a bad request, not a big one


def take_batch(sizes: list[int]) -> tuple[int, int]:
    """(images in the first batch, images left waiting) with uploads of SIZES bytes waiting."""
    async def take() -> tuple[int, int]:
        engine = Engine(Path("unused.onnx"), workers=1)
        loop = asyncio.get_running_loop()
        engine._pending.extend((Upload(f"{k}.png", b"x" * size), loop.create_future()) for k, size in enumerate(sizes))
        return len(engine._take_batch()), len(engine._pending)

    return asyncio.run(take())


def test_a_batch_holds_at_most_max_batch_images_and_max_batch_bytes():
    assert take_batch([1] * (MAX_BATCH + 1)) == (MAX_BATCH, 1)
    half = MAX_BATCH_BYTES // 2
    assert take_batch([half, half, 1]) == (2, 1)  # exactly the cap
    assert take_batch([half + 1, half]) == (1, 1)
    assert take_batch([MAX_BATCH_BYTES + 1, 1]) == (1, 1)  # one image over the cap still goes, alone


class FakeWorker:
    """_Worker's interface without a process: answers each batch at once, noting its size."""

    def __init__(self, batches: list[int]) -> None:
        self.batches, self.waiting, self.alive = batches, deque(), True
        self.process = SimpleNamespace(returncode=None)

    def call(self, name: str, *args) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        if name == "predict_batch":
            self.batches.append(len(args[0]))
        answer = (
            [Outcome(200, {"file": upload.name}) for upload in args[0]] if name == "predict_batch" else {"arch": "fake"}
        )
        asyncio.get_running_loop().call_soon(self._answer, future, answer)
        return future

    def _answer(self, future: asyncio.Future, answer) -> None:
        self.waiting.remove(future)
        future.set_result(answer)

    async def stop(self) -> None:
        self.alive = False


def test_the_engine_batches_what_waits_up_to_max_batch_and_answers_each_request_in_order():
    batches: list[int] = []

    async def spawn(_model: Path) -> FakeWorker:
        return FakeWorker(batches)

    async def serve() -> list[list[Outcome]]:
        engine = Engine(Path("fake.onnx"), workers=1, spawn=spawn)
        assert await engine.open() == {"arch": "fake"}
        requests = [[Upload(f"{r}-{k}.png", b"x") for k in range(n)] for r, n in enumerate((1, 30, 9, 5))]
        try:
            return await asyncio.gather(*(engine.predict(uploads) for uploads in requests))
        finally:
            await engine.close()

    answers = asyncio.run(serve())
    assert [[o.body["file"] for o in a] for a in answers] == [
        [f"{r}-{k}.png" for k in range(n)] for r, n in enumerate((1, 30, 9, 5))
    ]
    assert sum(batches) == 45 and max(batches) == MAX_BATCH and len(batches) == 2  # all that waited, in two runs


def asgi_get(app, path: str) -> tuple[int, dict]:
    """GET PATH from the ASGI APP in this process: its status and JSON body."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "server": ("test", 80),
        "client": ("test", 1),
    }
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def test_the_app_runs_in_process_on_the_engine_it_is_given():
    engine = SimpleNamespace(model_info={"file": "fake.onnx"}, workers=3, images=7, prepared_here=2)
    app = create_app(engine, MAX_BODY, MAX_FILES)
    assert asgi_get(app, "/healthz") == (
        200,
        {"status": "ok", "model": "fake.onnx", "workers": 3, "images": 7, "prepared_by_server": 2},
    )
    assert asgi_get(app, "/model") == (200, {"file": "fake.onnx"})
    status, body = asgi_get(app, "/static/nope.js")
    assert status == 404 and "no such file" in body["error"]


def test_slow_and_silent_clients_time_out_while_others_are_served(server):
    # One sends half its headers, one a header and part of its body, one nothing at all.
    starts = [
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Ty",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n" + b"\x89PNG",
        b"",
    ]
    stalled = [socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S * 4) for _ in starts]
    begin = time.monotonic()
    for sock, data in zip(stalled, starts):
        sock.sendall(data)
    assert_healthy(server)  # everyone else is served meanwhile
    for sock in stalled:
        with sock:
            assert sock.recv(65536) == b""  # closed by the server...
    assert TIMEOUT_S * 0.9 < time.monotonic() - begin < TIMEOUT_S * 3  # ...at its deadline, not before
    assert_healthy(server)


def test_a_slow_but_steady_upload_within_the_deadline_is_answered(server):
    name, data = samples()[0]
    body, content_type = multipart([(name, data)])
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        for k in range(0, len(body), len(body) // 4 + 1):
            time.sleep(TIMEOUT_S / 8)
            sock.sendall(body[k : k + len(body) // 4 + 1])
        reply = read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 200") and name.encode() in reply


def test_client_that_hangs_up_mid_upload_harms_nobody(server):
    name, data = samples()[-1]
    body, content_type = multipart([(name, data)] * 4)
    for cut in (10, len(body) // 2, len(body) - 1):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:cut])
    # And one that hangs up after sending everything, before its answer.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert_healthy(server)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=2000), content_type=st.sampled_from(
    ["image/png", "image/jpeg", "multipart/form-data; boundary=b", "text/plain", "", "image/"]))
def test_arbitrary_bodies_get_an_answer_never_a_crash(server, body, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    reply = server.request("POST", "/predict", body, headers)
    assert reply.status in (200, 400, 413, 415, 422), (reply.status, reply.body[:200])
    assert ("error" in reply.json()) == (reply.status != 200)


def test_keep_alive_connection_serves_many_requests(server):
    conn = server.connect()
    try:
        for name, data in samples():
            assert server.upload([(name, data)], connection=conn).status == 200
        assert server.request("POST", "/predict", b"junk", {"Content-Type": "image/png"}, connection=conn).status == 422
        assert server.upload(samples()[:1], connection=conn).status == 200  # a 422 keeps the connection usable
    finally:
        conn.close()


def test_a_worker_that_dies_is_replaced(server):
    _, worker = server.pids()
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # requests meanwhile get a 503 or wait for the new worker
        reply = server.upload(samples()[:1])
        assert reply.status in (200, 503), reply.body
        if reply.status == 200:
            break
    assert reply.status == 200
    assert len(server.pids()) == 2 and worker not in server.pids()
    assert "a worker process died" in server.log()


def test_no_worker_can_start_requests_get_503_then_it_recovers(tmp_path):
    """The model file vanishes and the worker dies: requests are refused with a 503 (not left hanging) until
    the file is back and a new worker starts."""
    model = tmp_path / "model.onnx"
    model.write_bytes(default_model_path().read_bytes())
    with Server(["--model", str(model)]) as running:
        _, worker = running.pids()
        hidden = model.rename(tmp_path / "hidden.onnx")
        os.kill(worker, signal.SIGKILL)
        errors = []
        while not any("no worker process could be started" in e for e in errors) and len(errors) < 10:
            reply = running.upload(samples()[:1])  # the first may still reach the dying worker: 503 too
            assert reply.status == 503, reply.body
            errors.append(reply.json()["error"])
        assert "no worker process could be started" in errors[-1], errors
        hidden.rename(model)
        deadline = time.monotonic() + 60
        while (reply := running.upload(samples()[:1])).status != 200 and time.monotonic() < deadline:
            assert reply.status == 503
            time.sleep(0.5)
        assert reply.status == 200


# --- load: a few hundred requests from 8 keep-alive clients ---


def test_short_load_no_errors_no_memory_growth(server):
    files = samples()
    # Under load, images are batched together and some are prepared by the server process instead of a
    # worker: every answer must still be the one the image gets alone.
    alone = {name: server.upload([(name, data)], "?preview=1").json()[0] for name, data in files}

    def client(requests: int, answers: list) -> None:
        conn = server.connect()
        try:
            for k in range(requests):
                reply = server.upload([files[k % len(files)]], "?preview=1", connection=conn)
                answers.append(reply.json()[0] if reply.status == 200 else reply.status)
        finally:
            conn.close()

    def load(requests_each: int) -> list:
        answers: list = []
        threads = [threading.Thread(target=client, args=(requests_each, answers)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        return answers

    load(15)  # warm: buffers and batch sizes reach their working size
    before, counts = server.rss_bytes(), server.get("/healthz").json()
    answers = load(50)
    after = server.rss_bytes()
    assert len(answers) == 400 and all(answer == alone[answer["file"]] for answer in answers)
    assert after - before < 4 * 1024 * 1024, (before, after)
    counted = server.get("/healthz").json()
    assert counted["images"] - counts["images"] == 400
    assert counted["prepared_by_server"] <= counted["images"]


def test_images_the_server_prepares_itself_get_the_same_answers():
    """80 images in one request: two batches of 32 fill the worker, and the server process prepares the
    rest itself meanwhile (at least the first, before it does anything else)."""
    files = samples()
    with Server(["--max-files", "100", "--workers", "1"]) as running:
        alone = {name: running.upload([(name, data)], "?preview=1").json()[0] for name, data in files}
        before = running.get("/healthz").json()["prepared_by_server"]
        many = [files[k % len(files)] for k in range(80)]
        reply = running.upload(many, "?preview=1")
        assert reply.status == 200
        assert reply.json() == [alone[name] for name, _ in many]
        assert running.get("/healthz").json()["prepared_by_server"] > before


def test_the_server_process_never_decodes_a_small_file_that_claims_many_pixels():
    """A few KB of lossless WebP can claim millions of pixels: decoding it in the server process would stall
    every client's HTTP (and, at 64 MP, take a GB). Such images go to the workers whatever their byte size."""
    buffer = io.BytesIO()
    image = Image.new("L", (1200, 1200), 255)
    image.paste(0, (500, 300, 700, 900))  # a bar: a "1"
    image.save(buffer, format="WEBP", lossless=True)
    assert len(buffer.getvalue()) < 8 * 1024  # small enough in bytes for the server process's own share
    with Server(["--max-files", "100", "--workers", "1"]) as running:
        before = running.get("/healthz").json()["prepared_by_server"]
        reply = running.upload([(f"{k}.webp", buffer.getvalue()) for k in range(80)])
        assert reply.status == 200 and len(reply.json()) == 80
        assert running.get("/healthz").json()["prepared_by_server"] == before


# --- the process: start-up errors, clean stops ---


def serve_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnist_edge", "serve", *args], capture_output=True, text=True, timeout=120
    )


def test_bad_model_is_one_error_line(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    for model, words in [
        (tmp_path / "junk.onnx", "not a usable ONNX model"),
        (tmp_path / "none.onnx", "no such model file"),
    ]:
        result = serve_process("--model", str(model), "--port", "0")
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1].startswith("error: ") and words in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flag", ["--timeout=nan", "--timeout=inf", "--timeout=0", "--port=70000", "--port=-1",
                                  "--workers=0", "--max-body=0", "--max-files=0", "--max-connections=0"])
def test_out_of_range_flags_are_one_usage_line(flag):
    result = serve_process(flag)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) <= 2  # the error, and where to look
    assert result.stderr.startswith(f"error: invalid value for '{flag.split('=')[0]}'")


def test_port_in_use_is_one_error_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = serve_process("--port", str(taken.getsockname()[1]))
    assert result.returncode == 1 and "error: cannot listen on 127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signals_shut_down_cleanly(sig):
    with Server() as running:
        pids = running.pids()
        assert len(pids) == 2
        # A request in flight when the signal comes is still answered.
        conn = running.connect()
        body, content_type = multipart(samples())
        conn.putrequest("POST", "/predict")
        conn.putheader("Content-Type", content_type)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        conn.send(body[:100])
        time.sleep(0.2)
        running.process.send_signal(sig)
        time.sleep(0.2)
        conn.send(body[100:])
        reply = conn.getresponse()
        assert reply.status == 200 and len(json.loads(reply.read())) == len(samples())
        assert running.process.wait(timeout=30) == 0
        log = running.log()
    assert "Traceback" not in log and "Finished server process" in log
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_a_stop_does_not_wait_forever_on_a_model_that_never_finishes(tmp_path):
    """A request stuck in a model that never returns held SIGTERM's graceful stop forever (only SIGKILL ended
    it). Past the grace, the workers are stopped and the stuck request gets its JSON 503; the exit is clean."""
    pytest.importorskip("onnx", reason="building the endless model needs onnx (the train extra)")
    from mnist_edge.edge.serve.server import SHUTDOWN_GRACE_S
    from onnx_graphs import endless

    with Server(["--model", str(endless(tmp_path / "endless.onnx"))]) as running:
        replies: list = []
        stuck = threading.Thread(target=lambda: replies.append(running.upload(samples()[:1])))
        stuck.start()
        time.sleep(0.5)
        assert running.get("/healthz").status == 200  # the HTTP side is not stuck meanwhile
        begin = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(timeout=30) == 0 and time.monotonic() - begin < SHUTDOWN_GRACE_S + 10
        stuck.join(10)
        assert replies and replies[0].status == 503 and "error" in replies[0].json()
        log = running.log()
    assert "Traceback" not in log


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on PORT, from /proc/net/tcp (hex IPv4, little-endian)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_listens_on_loopback_unless_told(server):
    assert listening_addresses(server.port) == {"127.0.0.1"}


def test_listening_socket_says_tcp_so_asyncio_turns_nagle_off():
    """asyncio sets TCP_NODELAY only on connections whose socket's protocol is TCP; with Nagle on, every
    response on a keep-alive connection waited ~40 ms for the client's delayed ACK."""
    from mnist_edge.edge.serve.server import listen

    with listen("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
        with socket.create_connection(sock.getsockname()):
            accepted, _ = sock.accept()
            with accepted:
                assert accepted.proto == socket.IPPROTO_TCP


def test_a_model_that_fails_at_run_time_fails_only_its_images(tmp_path):
    """500s naming the model, per image, from the same `infer` predict uses; the server stays up."""
    pytest.importorskip("onnx", reason="building the misbehaving models needs onnx (the train extra)")
    from onnx_graphs import bad_reshape, log_of_first_pixels

    lit = png_bytes(Image.fromarray(np.pad(np.full((1, 28), 255, np.uint8), ((0, 27), (0, 0)))))  # first row white
    dark = dict(samples())["mnist-7.png"]  # first row black: log(0) = -inf
    with Server(["--model", str(log_of_first_pixels(tmp_path / "log.onnx"))]) as running:
        reply = running.upload([("lit.png", lit), ("mnist-7.png", dark)], "?raw=1")
        assert_refused(reply, 500, "mnist-7.png: the model")
        lit_row, dark_row = reply.json()["results"]
        assert lit_row["file"] == "lit.png" and "digit" in lit_row
        assert "non-finite" in dark_row["error"]
    with Server(["--model", str(bad_reshape(tmp_path / "reshape.onnx"))]) as running:
        reply = running.upload(samples()[:2])
        assert_refused(reply, 500, "fails in ONNX Runtime")
        assert all("fails in ONNX Runtime" in r["error"] for r in reply.json()["results"])
        assert running.get("/healthz").status == 200


def test_without_the_serve_extra_it_says_what_to_install(tmp_path):
    (tmp_path / "uvicorn").mkdir()  # stands in for a missing package: importing it fails as a missing one does
    (tmp_path / "uvicorn" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'uvicorn'\", name='uvicorn')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "mnist_edge", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 1
    hint = result.stderr.strip().removeprefix("error: this command needs uvicorn: ")
    assert hint in (
        f"pip install -e '{ROOT}[serve]'",
        "pip install -e '.[serve]'",
        "pip install '.[serve]' in a checkout of mnist-edge",
    )
