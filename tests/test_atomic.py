"""Atomic writes: the umask decides the mode, and a killed writer's temporary file is cleaned up by the next write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from mnist_edge.atomic import TMP_MARK, atomic_path, probe_writable, refuse_existing, write_text
from mnist_edge.errors import MnistEdgeError


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_files_get_the_mode_the_umask_gives(umask, tmp_path):
    previous = os.umask(umask)
    try:
        write_text(tmp_path / "f.txt", "x")
        probe_writable(tmp_path / "g.txt", 10)
    finally:
        os.umask(previous)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_a_replaced_file_keeps_its_mode(tmp_path):
    target = tmp_path / "private.pt"
    write_text(target, "v1")
    target.chmod(0o600)
    previous = os.umask(0o022)
    try:
        write_text(target, "v2")
    finally:
        os.umask(previous)
    assert target.read_text() == "v2" and target.stat().st_mode & 0o777 == 0o600


def test_refuse_existing_refuses_any_entry_even_a_dangling_symlink(tmp_path):
    """A symlink to nothing is the user's too: replacing it would write wherever it points."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for name in ("file", "dangling"):
        with pytest.raises(MnistEdgeError, match=f"{name}: exists; give --overwrite"):
            refuse_existing([tmp_path / "new", tmp_path / name])
    refuse_existing([tmp_path / "new"])


KILLED_WRITER = """
import sys, time
from mnist_edge.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half")
    print(tmp, flush=True)
    time.sleep(60)
"""


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "model.onnx"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    tmp = tmp_path / os.path.basename(writer.stdout.readline().strip())
    assert tmp.name.startswith(f".model.onnx{TMP_MARK}{writer.pid}-") and tmp.is_file()
    write_text(target, "live writer")  # the writer is alive: its temp file stays
    assert tmp.is_file()
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert tmp.is_file()  # SIGKILL ran no cleanup
    other = tmp_path / "other.txt"
    write_text(other, "another target")  # only the same target's temps are its business
    assert tmp.is_file()
    write_text(target, "complete")
    assert not tmp.exists() and target.read_text() == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "other.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "a.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("new, half")
        raise RuntimeError("crash")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_probe_says_why_a_target_cannot_be_written(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for target, reason in ((tmp_path, "is a folder"), (a_file / "x.pt", "regular file"), ("/proc/x.pt", "cannot write")):
        with pytest.raises(MnistEdgeError, match=reason):
            probe_writable(target)
    probe_writable(tmp_path / "new" / "x.pt", 1 << 20)  # reserving leaves nothing behind
    assert list((tmp_path / "new").iterdir()) == []
