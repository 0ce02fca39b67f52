"""Run the app on Uvicorn: the workers first (a bad model fails before the port is bound), then HTTP.

Uvicorn times out idle keep-alive connections but not a request that never finishes arriving: a client
that sends half its headers, or a body slower than a trickle, would hold its connection forever. The
protocol below gives every request a deadline instead.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from mnist_edge.errors import MnistEdgeError
from mnist_edge.edge.serve.app import create_app
from mnist_edge.edge.serve.engine import Engine

log = logging.getLogger("mnist_edge.serve")
# Seconds a stop (SIGTERM, Ctrl-C) waits for the requests in flight: they take milliseconds, unless a model
# never finishes, which held the stop forever. Then the workers are stopped (killed 5 s later if they hang),
# which answers what they held with a 503; Uvicorn cancels whatever is left a little later still.
SHUTDOWN_GRACE_S = 5.0


@dataclass(frozen=True)
class ServeConfig:
    model: Path
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_body: int = 10 * 1024 * 1024
    max_files: int = 64
    request_timeout: float = 15.0
    max_connections: int = 128
    access_log: bool = False
    always_digit: bool = False  # answer a digit even for what the model says is not one


def deadline_protocol(timeout: float) -> type[asyncio.Protocol]:
    """Uvicorn's HTTP protocol (httptools if installed, else h11) where, from the moment a connection
    opens or its last response ends, the client has TIMEOUT seconds to deliver a whole request
    (headers and body); else the connection is closed. Idle keep-alive connections still close sooner,
    at Uvicorn's keep-alive timeout. Only the arrival is timed: the app's own work is not."""
    base: Any = import_from_string(HTTP_PROTOCOLS["auto"])

    class DeadlineProtocol(base):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(timeout, self._expire)

        def _expire(self) -> None:
            self._deadline = None
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete and not cycle.more_body:
                return  # the whole request is in: the app is answering it
            log.info("closing a connection from %s: no complete request within %gs", self.client, timeout)
            self.transport.close()

    return DeadlineProtocol


def _raise_open_files_limit() -> None:
    """Each connection holds a file descriptor: allow as many as the hard limit does (often 1024 soft)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a taken port or an unknown host is one clear error.

    Its protocol must say TCP (as getaddrinfo's does, and socket.create_server's 0 does not): asyncio turns
    Nagle's algorithm off only on connections whose socket says so, and with it on, a response written in
    two pieces waits for the client's delayed ACK, ~40 ms a request on a keep-alive connection."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise MnistEdgeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart at once, whatever TIME_WAIT is left
        sock.bind(address)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise MnistEdgeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, engine: Engine) -> None:
        super().__init__(config)
        self.engine = engine

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Uvicorn's: stop listening, wait for the requests in flight; past SHUTDOWN_GRACE_S, stop the engine,
        so requests that wait on a worker that never answers get their 503."""
        loop = asyncio.get_running_loop()
        give_up = loop.call_later(SHUTDOWN_GRACE_S, lambda: loop.create_task(self.engine.close()))
        try:
            await super().shutdown(sockets)
        finally:
            give_up.cancel()

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM start Uvicorn's graceful shutdown. Uvicorn's own version also re-raises the
        signal afterwards, for the handler installed before it, which for SIGTERM kills the process
        before the workers are stopped: here stopping is the normal end, and the command exits 0."""
        handlers = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)


async def _serve(config: ServeConfig, sock: socket.socket, echo: Callable[[str], Any]) -> None:
    engine = Engine(config.model, config.workers)
    try:
        info = await engine.open()  # MnistEdgeError (one line for the CLI) for a model the workers cannot use
        server = _Server(
            uvicorn.Config(
                create_app(engine, config.max_body, config.max_files, config.always_digit),
                http=deadline_protocol(config.request_timeout),
                lifespan="off",  # the engine is opened and closed around the server, here
                access_log=config.access_log,
                limit_concurrency=config.max_connections,
                proxy_headers=False,  # no proxy is assumed: X-Forwarded-* headers are a client's to forge
                server_header=False,
                log_level="info",
                timeout_graceful_shutdown=int(3 * SHUTDOWN_GRACE_S),
            ),
            engine,
        )
        host, port = sock.getsockname()[:2]
        echo(
            f"serving {info['file']} ({info['arch'] or 'unknown architecture'}, {info['quantization']}) on "
            f"http://{f'[{host}]' if ':' in host else host}:{port}/ with {config.workers} worker "
            f"process{'es' if config.workers > 1 else ''}; Ctrl-C stops"
        )
        await server.serve(sockets=[sock])
    finally:
        await engine.close()


def serve(config: ServeConfig, echo: Callable[[str], Any] = print) -> None:
    """Serve until SIGTERM or Ctrl-C, then answer the requests in flight and stop the workers."""
    sock = listen(config.host, config.port)
    _raise_open_files_limit()
    try:
        asyncio.run(_serve(config, sock, echo))
    except KeyboardInterrupt:  # Ctrl-C while the workers were starting: nothing was served yet
        pass
    finally:
        sock.close()
