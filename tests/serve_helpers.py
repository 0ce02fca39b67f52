"""A real `mnist-edge serve` process for tests and tools/bench_serve.py, and a plain HTTP client for it.

The server runs as the user runs it (`python -m mnist_edge serve`, its own worker processes); requests go
through the standard library's http.client, so the tests need nothing the serve extra does not bring.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "mnist_edge" / "samples"
SERVING = re.compile(r"on http://127\.0\.0\.1:(\d+)/")


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Server:
    """`mnist-edge serve --port 0 ARGS`, started and stopped by `with`; `port` once it is listening."""

    args: list[str] = field(default_factory=list)
    prefix: list[str] = field(default_factory=list)  # a command that runs it (it must exec, keeping the pid)
    process: subprocess.Popen | None = None
    log_file: Any = None
    port: int = 0
    started_s: float = 0.0  # from the command's start to the first answered GET /healthz

    def __enter__(self) -> Server:
        begin = time.perf_counter()
        # Its log goes to a file: a pipe nobody reads would fill up and stall the server.
        self.log_file = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "mnist_edge", "serve", "--port", "0", *self.args],
            stdout=subprocess.PIPE, stderr=self.log_file, text=True,
        )
        line = self._read_line(timeout=60)
        match = SERVING.search(line)
        if not match:
            self.stop()
            raise RuntimeError(f"the server did not start: {line!r}\n{self.log()}")
        self.port = int(match.group(1))
        while self.get("/healthz").status != 200:  # the first answer means Uvicorn is serving
            time.sleep(0.01)
        self.started_s = time.perf_counter() - begin
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _read_line(self, timeout: float) -> str:
        assert self.process is not None and self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        return self.process.stdout.readline() if ready else ""

    def log(self) -> str:
        """What the server and its workers wrote on stderr so far."""
        self.log_file.seek(0)
        return self.log_file.read()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send SIG and wait: the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def pids(self) -> list[int]:
        """The server process and its workers (its children)."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [self.process.pid, *map(int, children)]

    def rss_bytes(self) -> int:
        """Resident memory of the server and its workers, added up."""
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    def connect(self, timeout: float = 30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                connection: http.client.HTTPConnection | None = None) -> Response:
        conn = connection or self.connect()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            reply = conn.getresponse()
            return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())
        finally:
            if connection is None:
                conn.close()

    def get(self, path: str) -> Response:
        try:
            return self.request("GET", path)
        except OSError:
            return Response(0, {}, b"")

    def upload(self, files: list[tuple[str, bytes]], query: str = "", **kwargs: Any) -> Response:
        body, content_type = multipart(files)
        return self.request("POST", "/predict" + query, body, {"Content-Type": content_type}, **kwargs)


def multipart(files: list[tuple[str, bytes]], field_name: str = "file") -> tuple[bytes, str]:
    """A multipart/form-data body with one part per (file name, bytes), and its Content-Type."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
        for name, data in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def samples() -> list[tuple[str, bytes]]:
    """The shipped sample images as (file name, bytes), sorted."""
    return [(p.name, p.read_bytes()) for p in sorted(SAMPLES.glob("*.png"))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
