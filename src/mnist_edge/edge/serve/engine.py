"""Worker processes holding the model, fed by a micro-batcher: the server process's side of them.

Requests put their images in one queue. Whenever a worker has room, the images waiting (up to
MAX_BATCH) go to it as one batch: one message each way and one ONNX Runtime run, however many
requests they came from, and no added wait when the server is quiet. Each worker is given its next
batch while it runs one, so it never idles on the hand-over. Images are prepared (decoded, preprocessed)
in the workers; only while every worker is busy does this process prepare the waiting ones itself, one at a
time between its HTTP work, so the core it runs on never idles while images wait (on 2 CPUs, one worker
and this process share the images between both cores).

A worker is `python -m mnist_edge.edge.serve.worker MODEL SERVER_PID` talking over its stdin and stdout (a length,
then a pickle, each way; both ends are this package), so it imports only what it needs, and the server's
event loop reads its answers without any thread. A worker that dies fails only its own batches and is
replaced. The server process loads numpy and Pillow (prepare.py), never ONNX Runtime: it holds no model.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

from mnist_edge.errors import MnistEdgeError
from mnist_edge.edge.results import usable_cpus
from mnist_edge.edge.preprocess import WORK_SIZE, header_pixels
from mnist_edge.edge.serve.prepare import prepare
from mnist_edge.edge.serve.protocol import FRAME, Outcome, Upload, frame

log = logging.getLogger("mnist_edge.serve")

# Images per ONNX Runtime run: every request that 8-32 clients have waiting at once. Per image a
# bigger run is hardly cheaper, and the requests at its end would wait for all of it.
MAX_BATCH = 32
# Encoded bytes per batch, so one message stays small even when the images are large photos.
MAX_BATCH_BYTES = 8 * 1024 * 1024
# Batches given to one worker at a time: the one it runs and the next, already in its pipe.
BATCHES_PER_WORKER = 2
# Largest upload the server process prepares itself while the workers are busy: a drawing or a scan of a digit
# takes well under a millisecond; a phone photo could hold up HTTP for tens, so it always goes to a worker.
PREPARE_HERE_BYTES = 64 * 1024
# And the most pixels its header may claim: decoding costs per pixel, and a few KB of WebP or PNG can claim
# 64 million (a second of CPU and a GB of memory in the process every client depends on). At most
# WORK_SIZE x WORK_SIZE: an image preprocess does not have to reduce first.
PREPARE_HERE_PIXELS = WORK_SIZE * WORK_SIZE


def _cheap(data: bytes) -> bool:
    """Whether the image DATA is small enough, in bytes and in the pixels its header claims, to prepare between
    HTTP work."""
    return (
        len(data) <= PREPARE_HERE_BYTES
        and (pixels := header_pixels(data)) is not None
        and pixels <= PREPARE_HERE_PIXELS
    )


class WorkerDied(MnistEdgeError):
    """A worker process died (killed, out of memory) before it answered."""


def default_workers() -> int:
    """One worker per CPU this process may use, less the one the HTTP side keeps busy; at least one."""
    return max(1, usable_cpus() - 1)


class _Worker:
    """One worker process. It answers calls one at a time, in order, so answers need no ids."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def spawn(cls, model_path: Path) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mnist_edge.edge.serve.worker", str(model_path), str(os.getpid()),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            # Its own session: Ctrl-C in a terminal reaches the server only, which stops the workers
            # once the requests in flight are answered (closing their stdin).
            start_new_session=True,
        )
        return cls(process)

    @property
    def alive(self) -> bool:
        return not self.reader.done()

    def call(self, name: str, *args: Any) -> asyncio.Future[Any]:
        """worker.NAME(*ARGS) in the process; the future raises what it raised (MnistEdgeError), or WorkerDied."""
        future = asyncio.get_running_loop().create_future()
        if not self.alive:
            future.set_exception(WorkerDied("a worker process died; try again"))
            return future
        self.waiting.append(future)
        assert self.process.stdin is not None
        self.process.stdin.write(frame((name, args)))
        return future

    async def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            while True:
                size = FRAME.unpack(await stdout.readexactly(FRAME.size))[0]
                ok, value = pickle.loads(await stdout.readexactly(size))
                future = self.waiting.popleft()
                if future.done():  # its request was cancelled
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the process exited
        except Exception:  # an answer that does not unpickle: a broken worker is a dead one
            log.exception("unreadable answer from a worker process; stopping it")
            self.process.kill()
        finally:
            while self.waiting:
                future = self.waiting.popleft()
                if not future.done():
                    future.set_exception(
                        WorkerDied("a worker process died while preparing the images (out of memory?); try again")
                    )

    async def stop(self) -> None:
        """Close its stdin (it exits at the end of its input) and wait; kill it if it hangs."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), timeout=5)
        except asyncio.TimeoutError:
            self.process.kill()
            await self.process.wait()
        await self.reader


class Engine:
    """SPAWN(model_path) starts one worker: a process by default, anything with _Worker's interface in tests."""

    def __init__(self, model_path: Path, workers: int, max_batch: int = MAX_BATCH,
                 spawn: Callable[[Path], Awaitable[_Worker]] = _Worker.spawn) -> None:
        self.model_path = model_path
        self._spawn_worker = spawn
        self.workers = workers
        self.max_batch = max_batch
        self.model_info: dict[str, Any] = {}
        self._workers: list[_Worker] = []
        self._pending: deque[tuple[Upload, asyncio.Future[Outcome]]] = deque()
        self._changed = asyncio.Event()  # work arrived, a batch ended or a worker started: look again
        self._dispatcher: asyncio.Task[None] | None = None
        self._replacing: set[int] = set()  # indexes of dead workers being replaced
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to running tasks
        self._closing = False
        self.images = 0  # received so far
        self.prepared_here = 0  # of them, prepared by this process while the workers were busy

    async def _start_worker(self) -> _Worker:
        worker = await self._spawn_worker(self.model_path)
        try:
            self.model_info = await worker.call("model_facts")
        except BaseException:
            await worker.stop()
            raise
        return worker

    async def open(self) -> dict[str, Any]:
        """Start the workers, each with the model loaded, and the dispatcher; the model's facts (GET /model).

        Raises MnistEdgeError for a model the workers cannot open."""
        started = await asyncio.gather(*(self._start_worker() for _ in range(self.workers)), return_exceptions=True)
        self._workers = [w for w in started if not isinstance(w, BaseException)]
        failed = [e for e in started if isinstance(e, BaseException)]
        if failed:
            await self.close()
            if isinstance(failed[0], WorkerDied):
                raise MnistEdgeError("a worker process exited while opening the model (see the messages above)")
            raise failed[0]
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())
        return self.model_info

    async def close(self) -> None:
        self._closing = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        self._fail_pending(WorkerDied("the server is stopping"))
        await asyncio.gather(*(w.stop() for w in self._workers))
        self._workers = []

    def _fail_pending(self, error: MnistEdgeError) -> None:
        for _, future in self._pending:
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    async def predict(self, uploads: list[Upload]) -> list[Outcome]:
        """An Outcome per upload, in order. Raises WorkerDied if a worker died running them."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in uploads]
        self.images += len(uploads)
        self._pending.extend(zip(uploads, futures))
        self._changed.set()
        return list(await asyncio.gather(*futures))

    def _take_batch(self) -> list[tuple[Upload, asyncio.Future[Outcome]]]:
        batch: list[tuple[Upload, asyncio.Future[Outcome]]] = []
        size = 0
        while (
            self._pending
            and len(batch) < self.max_batch
            and (not batch or size + len(self._pending[0][0].data) <= MAX_BATCH_BYTES)
        ):
            upload, future = self._pending.popleft()
            if not future.done():  # a request whose gather was cancelled
                batch.append((upload, future))
                size += len(upload.data)
        return batch

    async def _dispatch(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            for k, dead in enumerate(self._workers):
                if not dead.alive and k not in self._replacing:
                    self._replacing.add(k)
                    self._spawn(self._replace(k))
            while self._pending:
                worker = self._with_room()
                if worker is not None:
                    batch = self._take_batch()
                    if batch:  # sent now, so it counts against the worker's room at once
                        answer = worker.call("predict_batch", [upload for upload, _ in batch])
                        self._spawn(self._settle(batch, answer))
                elif self._prepare_one_here():
                    await asyncio.sleep(0)  # HTTP first: whatever arrived meanwhile is read before the next image
                else:
                    break  # the workers have all they can take, and what waits is theirs to prepare

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _with_room(self) -> _Worker | None:
        """The least busy live worker, if it can take another batch (with none alive, requests wait for the
        replacements)."""
        worker = min((w for w in self._workers if w.alive), key=lambda w: len(w.waiting), default=None)
        return worker if worker is not None and len(worker.waiting) < BATCHES_PER_WORKER else None

    def _prepare_one_here(self) -> bool:
        """While every worker is busy, prepare the first waiting image in this process, whose core would
        otherwise idle until a worker answers; the worker then only runs the model on it. Only small
        images (drawings, scans), in bytes and in pixels: a large photo, or a small file that decodes to a huge
        image, would hold up HTTP for too long. False when none is left."""
        for k, (upload, future) in enumerate(self._pending):
            if upload.pixels is not None or upload.heavy or future.done():
                continue
            if not _cheap(upload.data):
                self._pending[k] = (replace(upload, heavy=True), future)  # its header is read once, not on every pass
                continue
            prepared = prepare(upload)
            self.prepared_here += 1
            if isinstance(prepared, Outcome):  # a bad image needs no worker at all
                del self._pending[k]
                future.set_result(prepared)
            else:
                self._pending[k] = (replace(upload, data=b"", pixels=prepared), future)
            return True
        return False

    async def _replace(self, k: int) -> None:
        log.error("a worker process died (exit status %s); starting a new one", self._workers[k].process.returncode)
        while not self._closing:
            try:
                worker = await self._start_worker()
            except MnistEdgeError as exc:  # e.g. the model file was removed meanwhile: keep trying, slowly
                log.error("cannot start a worker process: %s", exc)
                if not any(w.alive for w in self._workers):  # nobody can answer the waiting requests: say so now
                    self._fail_pending(WorkerDied(f"no worker process could be started ({exc}); try again later"))
                await asyncio.sleep(5)
                continue
            if self._closing:  # close() has stopped the others meanwhile
                await worker.stop()
            else:
                self._workers[k] = worker
            break
        self._replacing.discard(k)
        self._changed.set()

    async def _settle(self, batch: list[tuple[Upload, asyncio.Future[Outcome]]], answer: asyncio.Future[Any]) -> None:
        """Hand each request its images' outcomes once the worker answers."""
        try:
            outcomes = await answer
        except Exception as exc:  # WorkerDied, or the model failed (an ONNX Runtime error)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), outcome in zip(batch, outcomes):
                if not future.done():
                    future.set_result(outcome)
        finally:
            self._changed.set()
