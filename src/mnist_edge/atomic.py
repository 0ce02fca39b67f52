"""Write files so a crash or Ctrl-C never leaves a half-written file under the final name.

A temporary file beside the target takes the writes and replaces the target in one rename. Its name,
`.NAME.mnist-edge-tmp-PID-RANDOM`, says what it is and which process wrote it, so a temporary file left
by a killed writer (SIGKILL runs no cleanup) is removed the next time the same target is written. Modes are
what a plain open for writing gives: a new file's comes from the umask, a replaced file keeps its own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mnist_edge.errors import MnistEdgeError

TMP_MARK = ".mnist-edge-tmp-"


def temp_prefix(path: Path) -> str:
    return f".{path.name}{TMP_MARK}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary files of PATH whose writing process is gone; returns what was removed."""
    removed: list[Path] = []
    prefix = temp_prefix(path)
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for candidate in candidates:
        pid_text, _, _ = candidate.name[len(prefix) :].partition("-")
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            candidate.unlink()
            removed.append(candidate)
    return removed


def _create_temp(path: Path) -> Path:
    """A new, empty temporary file beside PATH, created like any file the user's umask governs."""
    while True:
        tmp = path.with_name(f"{temp_prefix(path)}{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside PATH; on success it replaces PATH in one rename, on error it vanishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp_path = _create_temp(path)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        with contextlib.suppress(FileNotFoundError):  # a file replaced keeps its mode, as when opened for writing
            os.chmod(tmp_path, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path | str, text: str) -> None:
    write_bytes(path, text.encode())


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"no space for the file ({exc.strerror})"
    return exc.strerror or str(exc)


def probe_writable(path: Path | str, size: int = 0, what: str = "file") -> None:
    """Fail now, with one line, if PATH cannot be written atomically with SIZE bytes.

    Creates (and removes) a temporary file beside PATH and reserves SIZE bytes in it, so an unwritable
    folder, a path under a regular file, a read-only or full disk is found before hours of work, not after.
    """
    path = Path(path)
    if path.is_dir():
        raise MnistEdgeError(f"{path}: is a folder; give a {what} path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise MnistEdgeError(f"{path}: cannot write the {what}: a part of its folder is a regular file") from None
    except OSError as exc:
        raise MnistEdgeError(f"{path}: cannot create its folder ({_reason(exc)})") from None
    tmp = None
    try:
        tmp = _create_temp(path)
        if size > 0:
            fd = os.open(tmp, os.O_WRONLY)
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem that cannot reserve: skip
                    raise
            finally:
                os.close(fd)
    except OSError as exc:
        raise MnistEdgeError(f"{path}: cannot write the {what} ({_reason(exc)})") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def refuse_existing(paths: list[Path], flag: str = "--overwrite") -> None:
    """One line if any of PATHS already exists (a symlink included) and the user did not give FLAG: a file the
    user made is never replaced without asking. Called before the work, so the refusal costs nothing."""
    for path in paths:
        if os.path.lexists(path):
            raise MnistEdgeError(f"{path}: exists; give {flag} to replace it, or choose another path")
