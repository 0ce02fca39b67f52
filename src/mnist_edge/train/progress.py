"""What a training run shows while it runs, and how Ctrl-C stops it after the current step."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any



Log = Callable[[str], None]
PROGRESS_EVERY_S = 10.0  # a progress line this often when the output is not a terminal (a pipe, a log file)


class Progress:
    """Live progress of an epoch: a rich bar on a terminal; elsewhere (a pipe, a log file) a line every few seconds."""

    def __init__(self, enabled: bool, every_s: float, log: Log) -> None:
        self.enabled, self.log, self.bar = enabled, log, None
        self.every_s = every_s
        if enabled and sys.stderr.isatty():  # the bar goes to stderr, so --json keeps stdout clean
            from rich.console import Console
            from rich.progress import (
                BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn,
            )

            self.every_s = 0.3  # .item() syncs with the device: only a few times a second
            self.bar = RichProgress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  {task.fields[speed]:,.0f} img/s"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )

    @contextmanager
    def epoch(self, label: str, total: int, done: int) -> Iterator[Callable[[int, float, float], None]]:
        if self.bar is None:
            yield lambda step, loss, speed: self.log(
                f"epoch {label}: step {step}/{total}, loss {loss:.4f}, {speed:,.0f} img/s"
            )
            return
        bar = self.bar
        with bar:
            task = bar.add_task("", total=total, completed=done, epoch=label, loss=float("nan"), speed=0.0)
            yield lambda step, loss, speed: bar.update(task, completed=step, loss=loss, speed=speed)
            bar.remove_task(task)


@contextmanager
def stop_on_interrupt(escalate: bool = True) -> Iterator[Callable[[], bool]]:
    """First Ctrl-C asks the loop to stop after the current step; a second one (if ESCALATE) interrupts at once.

    Under torchrun a worker gets Ctrl-C twice (from the terminal and forwarded by torchrun), so there it
    never escalates: torchrun kills workers that do not stop in time.
    """
    requested = False

    def handler(_signum: int, _frame: Any) -> None:
        nonlocal requested
        if requested and escalate:
            raise KeyboardInterrupt
        requested = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave Ctrl-C alone
        yield lambda: False
        return
    try:
        yield lambda: requested
    finally:
        signal.signal(signal.SIGINT, previous)
