"""Write files so a crash or Ctrl-C never leaves a half-written file under the final name.

A temporary file beside the target takes the writes and replaces the target in one rename. Its name,
`.NAME.mnist-edge-tmp-PID-RANDOM`, says what it is and which process wrote it, so a temporary file left
by a killed writer (SIGKILL runs no cleanup) is removed the next time the same target is written. Modes are
what a plain open for writing gives: a new file's comes from the umask, a replaced file keeps its own.

Several files published together (Staged) replace their targets all or none; the link kept to each replaced file
while they are renamed has a temporary name too, so a killed publisher's leftovers go the same way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mnist_edge.errors import MnistEdgeError, mode_kind

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
    with staging() as staged:
        yield staged.path(path)
        staged.publish()


def kind_of(path: Path | str) -> str | None:
    """What the entry at PATH is when it is not a regular file or a symbolic link (a rename replaces the link, not
    what it points to): "a folder", "a pipe (FIFO)", "a socket" or "a device"; None for a file, a link or nothing."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    return None if stat.S_ISREG(mode) or stat.S_ISLNK(mode) else mode_kind(mode)


def require_replaceable(path: Path | str, what: str = "file") -> None:
    """One line unless PATH holds a regular file, a link or nothing: a folder, a FIFO or a device there (`/dev/null`,
    which root could replace) is the user's mistake, never something to replace with a WHAT."""
    if (kind := kind_of(path)) is not None:
        raise MnistEdgeError(f"{path}: is {kind}, not a {what}; choose another path")


class Staged:
    """Files written under temporary names and published together: every one replaces its target, or none does.

    `path` gives the temporary name to write for a target; `publish` checks every target first (a regular file or
    nothing), then renames the files into place one by one, keeping a hard link to each file it replaces, so a
    rename that fails midway puts back what the earlier ones replaced.
    """

    def __init__(self) -> None:
        self.temps: dict[Path, Path] = {}  # target -> its temporary file, in publishing order

    def path(self, target: Path | str) -> Path:
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target)
        self.temps[target] = _create_temp(target)
        return self.temps[target]

    def publish(self) -> None:
        for target in self.temps:
            require_replaceable(target)
        for target, tmp in self.temps.items():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            with contextlib.suppress(FileNotFoundError):  # a file replaced keeps its mode, as when opened for writing
                os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        replaced: list[tuple[Path, Path | None]] = []  # each target renamed so far, and a link to its previous file
        try:
            for target, tmp in self.temps.items():
                previous = _keep_previous(target)
                try:
                    os.replace(tmp, target)
                except BaseException:
                    if previous is not None:
                        previous.unlink(missing_ok=True)
                    raise
                replaced.append((target, previous))
        except BaseException:
            _put_back(replaced)
            raise
        for _, previous in replaced:
            if previous is not None:
                previous.unlink(missing_ok=True)
        self.temps.clear()

    def discard(self) -> None:
        for tmp in self.temps.values():
            tmp.unlink(missing_ok=True)


@contextmanager
def staging() -> Iterator[Staged]:
    """A Staged set of files; whatever was not published when the block ends (an error, a refusal) is removed."""
    staged = Staged()
    try:
        yield staged
    finally:
        staged.discard()


def _keep_previous(target: Path) -> Path | None:
    """A hard link to TARGET's current file under a temporary name (None when there is none), to put it back."""
    if not os.path.lexists(target):
        return None
    previous = _create_temp(target)
    try:
        previous.unlink()
        os.link(target, previous, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        shutil.copy2(target, previous, follow_symlinks=False)  # a filesystem without hard links (FAT on an SD card)
    return previous


def _put_back(replaced: list[tuple[Path, Path | None]]) -> None:
    """Undo the renames of REPLACED: each target gets its previous file back, or is removed if it had none."""
    failed = []
    for target, previous in reversed(replaced):
        try:
            if previous is None:
                target.unlink(missing_ok=True)
            else:
                os.replace(previous, target)
        except OSError:
            failed.append(f"{target} (its previous file is {previous})" if previous else str(target))
    if failed:
        raise MnistEdgeError(f"could not put back what a failed publish replaced: {', '.join(failed)}")


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


def fresh_temp(path: Path) -> Path:
    """A new, empty temporary file beside PATH, named as above, once the stale ones of PATH are removed: for a
    writer that publishes it in its own way (a hard link, which unlike a rename never replaces PATH)."""
    remove_stale_temps(path)
    return _create_temp(path)


def check_destinations(paths: list[Path], overwrite: bool, flag: str = "--overwrite") -> None:
    """Before the work: each of PATHS must hold a regular file or nothing, and no file unless OVERWRITE (FLAG)."""
    for path in paths:
        require_replaceable(path)
    if not overwrite:
        refuse_existing(paths, flag)


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


@contextmanager
def holding(path: Path | str) -> Iterator[None]:
    """Hold PATH for this process's writes for the whole block: a second run writing the same file fails at once,
    with one line naming this process, instead of both finishing and the file holding only the last one.

    An exclusive flock on `.NAME.lock` beside PATH, which holds the holder's pid. The kernel releases it when the
    holder dies (SIGKILL included), so a dead run's lock file never blocks the next. The holder removes the file while
    still holding it; a run that opened it just before tries the new one.
    """
    import fcntl  # POSIX only, as the training side is

    path = Path(path)
    lock = lock_path(path)
    while True:
        fd = open_lock_file(lock)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd) if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else None
            os.close(fd)
            if holder is None:
                raise MnistEdgeError(f"{lock}: cannot lock ({_reason(exc)})") from None
            raise MnistEdgeError(f"{path}: {holder} is writing it; wait for it to end, or choose another path") \
                from None
        if _same_file(fd, lock):
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def open_lock_file(lock: Path) -> int:
    """A descriptor of the lock file LOCK, created if need be; one line if something else is there: opening a FIFO
    left there (by mistake or malice) for writing would block forever, and a link could point anywhere."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise MnistEdgeError(f"{lock}: is a symbolic link, not a lock file; remove it") from None
        raise MnistEdgeError(f"{lock}: cannot create the lock file ({_reason(exc)})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise MnistEdgeError(f"{lock}: is {mode_kind(mode)}, not a lock file; remove it")
    return fd


def _holder(fd: int) -> str:
    """Who holds the lock open as FD, as its file says: "process PID", or "another process" before it wrote."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return f"process {text}" if text.isdigit() else "another process"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False
