"""Helper processes that end with the process that started them, however it ends.

A parent killed by SIGKILL, `timeout` or the OOM killer runs no cleanup of its own: its worker processes
would live on, orphaned, each holding its memory. On Linux the kernel kills them (prctl PR_SET_PDEATHSIG);
elsewhere a thread in each one watches for its parent to change.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # linux/prctl.h
# How often the portable watch looks at the parent: the longest an orphan lives where prctl is missing.
WATCH_INTERVAL_S = 0.5


def die_with_parent(parent: int) -> None:
    """End this process as soon as PARENT (the pid that started it) is gone; at once if it is gone already."""
    if not _kernel_kills_orphan():
        threading.Thread(target=_watch, args=(parent,), name="mnist-edge-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # it died before the watch began
        os._exit(1)


def _kernel_kills_orphan() -> bool:
    """Ask Linux for SIGKILL when the parent dies: nothing a worker holds needs cleaning up by itself."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # here: only worker processes need it

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) == 0
    except (OSError, AttributeError):  # no libc to find, or one without prctl
        return False


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_INTERVAL_S)
    os._exit(1)
