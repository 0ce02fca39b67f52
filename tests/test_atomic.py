"""Atomic writes: the umask decides the mode, and a killed writer's temporary file is cleaned up by the next write."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from mnist_edge.atomic import TMP_MARK, atomic_path, probe_writable, refuse_existing, staging, write_text
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
    for target, reason in (
        (tmp_path, "is a folder"), (a_file / "x.pt", "regular file"), ("/proc/x.pt", "cannot write"),
    ):
        with pytest.raises(MnistEdgeError, match=reason):
            probe_writable(target)
    probe_writable(tmp_path / "new" / "x.pt", 1 << 20)  # reserving leaves nothing behind
    assert list((tmp_path / "new").iterdir()) == []


def test_publish_checks_every_target_before_replacing_any(tmp_path):
    (tmp_path / "a.txt").write_text("old a")
    (tmp_path / "b.txt").mkdir()  # something no file may replace
    with pytest.raises(MnistEdgeError, match="b.txt: is a folder"), staging() as staged:
        staged.path(tmp_path / "a.txt").write_text("new a")
        staged.path(tmp_path / "b.txt").write_text("new b")
        staged.publish()
    assert (tmp_path / "a.txt").read_text() == "old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_a_device_is_never_replaced(kind, tmp_path):
    target = tmp_path / "x"
    if kind == "fifo":
        os.mkfifo(target)
    elif os.geteuid() == 0:
        os.mknod(target, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own
    else:
        target = Path("/dev/null")
    with pytest.raises(MnistEdgeError, match=f"{target}: is a (pipe|device)"):
        write_text(target, "x")
    assert not stat.S_ISREG(os.lstat(target).st_mode)


@settings(max_examples=60, deadline=None)
@given(existing=st.lists(st.booleans(), min_size=1, max_size=4), data=st.data())
def test_a_rename_failing_midway_puts_back_every_file_it_replaced(existing, data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("publish")
    targets = [folder / f"{i}.bin" for i in range(len(existing))]
    for target, exists in zip(targets, existing):
        if exists:
            target.write_text(f"old {target.name}")
    failing = data.draw(st.sampled_from(targets))
    real_replace = os.replace

    def replace(src, dst):  # the disk fills (or the folder goes away) just at this rename
        if Path(dst) == failing and TMP_MARK in Path(src).name and Path(src).name.startswith(f".{failing.name}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", replace)
        with pytest.raises(OSError, match="No space"), staging() as staged:
            for target in targets:
                staged.path(target).write_text(f"new {target.name}")
            staged.publish()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # every old file back, no new one, no temp
