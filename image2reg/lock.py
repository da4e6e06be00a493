"""One writer per folder: a run of a dataset, or a predict writing a work folder, holds a lock file there.

A second runbook on the same dataset (or a second predict on the same work folder) is refused at once,
with the holder's PID, start time and command. The lock is an advisory ``flock`` on ``<folder>/.lock``: the
kernel releases it when its holder dies however it dies, so a lock left by a killed process is simply taken
over, with a note naming the dead holder (its record is still in the file). The file descriptor is not
inherited by child processes, so a stage's kernel or workers never keep a run's lock alive.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import time
from pathlib import Path

logger = logging.getLogger("image2reg")

LOCK_FILE = ".lock"


class LockHeldError(RuntimeError):
    """Another live process holds the lock; the message names it."""


class FolderLock:
    """Exclusive lock of ``folder`` (created if missing) for this process, as a context manager.

    Parameters
    ----------
    folder
        The folder to lock (e.g. ``runs/<dataset>``); the lock file is ``<folder>/.lock``.
    what
        What the holder does, shown to a process that is refused (e.g. ``"runbook --dataset demo"``).
    """

    def __init__(self, folder: str | Path, what: str = "") -> None:
        self.path = Path(folder) / LOCK_FILE
        self.what = what or " ".join(sys.argv)
        self._fd: int | None = None
        self.previous: dict | None = None  #: the record of a dead holder whose lock was taken over

    def acquire(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_record(fd)
            os.close(fd)
            raise LockHeldError(f"{self.path.parent} is in use by PID {holder.get('pid', '?')} (started "
                                f"{holder.get('started', '?')}: {holder.get('what', '?')}); wait for it to "
                                f"finish or stop it, then run again") from None
        previous = _read_record(fd)
        if previous:
            self.previous = previous
            logger.warning("taking over the lock of %s from PID %s (started %s), which is no longer running",
                           self.path.parent, previous.get("pid", "?"), previous.get("started", "?"))
            print(f"note: PID {previous.get('pid', '?')} (started {previous.get('started', '?')}) left "
                  f"{self.path.parent} without finishing; taking over its lock", file=sys.stderr, flush=True)
        record = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "what": self.what}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # an empty lock file: released cleanly, nothing to take over
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_record(fd: int) -> dict:
    text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    if not text:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"what": text}
