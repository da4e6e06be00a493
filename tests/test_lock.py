"""One writer per folder: a second holder is refused with the first one's PID; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from image2reg.lock import LOCK_FILE, FolderLock, LockHeldError

HOLD = """
import sys, time
from image2reg.lock import FolderLock
lock = FolderLock(sys.argv[1], what="holder").acquire()
print("locked", flush=True)
time.sleep(60)
"""


def _holder(folder):
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    process = _holder(tmp_path)
    try:
        with pytest.raises(LockHeldError, match=rf"in use by PID {process.pid} \(started .*: holder\)"):
            FolderLock(tmp_path).acquire()
    finally:
        process.kill()
        process.wait()


def test_the_lock_of_a_killed_holder_is_taken_over_with_a_note(tmp_path, capsys):
    process = _holder(tmp_path)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    with FolderLock(tmp_path, what="second") as lock:
        assert lock.previous["pid"] == process.pid
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert f"PID {process.pid}" in capsys.readouterr().err
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released cleanly: the next holder has nothing to take over
    with FolderLock(tmp_path) as lock:
        assert lock.previous is None


def test_the_lock_is_not_inherited_by_children(tmp_path):
    with FolderLock(tmp_path):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.2)
        with FolderLock(tmp_path):  # the child still runs, but the lock is free
            pass
    finally:
        child.kill()
        child.wait()
