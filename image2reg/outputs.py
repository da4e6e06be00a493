"""What a finished task wrote, by content; and a task's folder swapped so that a failure never loses the last good one.

**Content records.** The runbook records every output file of a finished task as ``[size, mtime_ns, sha256]``
(:func:`record_outputs`). A later check (:func:`check_outputs`) stats every file and hashes only those whose
size or modification time moved, so an edit that keeps the size is noticed (its content hash differs), a
``touch`` is not a change, and an up-to-date check of a large run stays a ``stat`` per file. The digest of
the current contents (:func:`content_digest`) enters the keys of the tasks that read the outputs, so a
changed raw image reruns every stage after it. Cost: sha256 runs at about 1.2 GB/s per core (measured on
the project's 2-core machine), once per file when a task finishes: the Rohban screen's ~54 GB of DNA fields
take about 45 s, or the disk's read time if that is slower; a later check is a ``stat`` per file (20,736 for
Rohban) plus the hashes of the files whose size or mtime moved. A copy that keeps modification times *and*
sizes but changes content (``rsync -t`` of other data) is trusted, as with ``make``.

**Swapped folders.** :class:`TaskFolder` runs a derived stage in a work folder beside its artifact folder,
so the artifact folder holds the outputs of the last successful run, untouched, until a new run completes
and the two are exchanged in one step. A run that fails or is stopped leaves its work folder (with its key)
for the next run of the same key to resume; ``--force`` or another key starts it empty.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from image2reg.layout import write_text_atomic

_CHUNK = 1 << 20


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def output_files(folder: Path, root: Path) -> list[tuple[str, Path]]:
    """Every regular, non-hidden file under ``folder``, as (path relative to ``root``, path), sorted."""
    if not folder.is_dir():
        return []
    return [(path.relative_to(root).as_posix(), path) for path in sorted(folder.rglob("*"))
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)]


def record_outputs(folder: Path, root: Path, previous: dict | None = None) -> dict[str, list]:
    """``{relative path: [size, mtime_ns, sha256]}`` of the files under ``folder``.

    A file whose size and mtime equal its entry in ``previous`` keeps that entry's hash without being read.
    """
    previous = previous or {}
    record = {}
    for relative, path in output_files(folder, root):
        stat = path.stat()
        old = previous.get(relative)
        if isinstance(old, list) and old[0] == stat.st_size and old[1] == stat.st_mtime_ns:
            record[relative] = old
        else:
            record[relative] = [stat.st_size, stat.st_mtime_ns, file_hash(path)]
    return record


def check_outputs(record: dict, root: Path) -> tuple[str | None, str | None]:
    """``(reason, digest)``: why the recorded outputs no longer match the disk (None if they do), and the digest
    of the current contents (None when a file is missing).

    Only files whose size or mtime moved are hashed. A record of sizes only (older manifests) is a change.
    """
    hashes = []
    reason = None
    for relative, entry in record.items():
        path = root / relative
        if not path.is_file():
            return f"outputs missing: {relative}", None
        if not isinstance(entry, list):
            reason = reason or "outputs recorded without content hashes"
            hashes.append((relative, file_hash(path)))
            continue
        size, mtime, digest = entry
        stat = path.stat()
        if stat.st_size != size:
            reason = reason or f"outputs changed: {relative} ({size} -> {stat.st_size} bytes)"
            digest = file_hash(path)
        elif stat.st_mtime_ns != mtime:
            current = file_hash(path)
            if current != digest:
                reason = reason or f"outputs changed: {relative} (same size, other content)"
            digest = current
        hashes.append((relative, digest))
    return reason, content_digest(hashes)


def content_digest(hashes: Iterable[tuple[str, str]]) -> str:
    """One digest of (relative path, sha256) pairs."""
    return hashlib.sha256(json.dumps(sorted(hashes)).encode()).hexdigest()


def recorded_digest(record: dict) -> str:
    """The content digest of a record as it was written (:func:`record_outputs`)."""
    return content_digest((relative, entry[2]) for relative, entry in record.items() if isinstance(entry, list))


@dataclass(frozen=True)
class TaskFolder:
    """A derived task's artifact folder (``final``) and the work folder beside it where a run writes.

    The work folder is a hidden sibling (``runs/demo/.02_screen.work``, ``runs/demo/04_loto/.fold-1.work``), at
    the same depth as ``final``, so paths stored relative to a task's folder mean the same in both. ``final``
    holds the last good outputs, untouched, until :meth:`commit` exchanges the two folders in one step.
    """

    final: Path

    @property
    def work(self) -> Path:
        return self.final.parent / f".{self.final.name}.work"

    @property
    def _key(self) -> Path:
        return self.work / ".key"

    def prepare(self, key: str, force: bool) -> str:
        """Make the work folder for a run of ``key``; returns what was done, in words.

        Work of an interrupted run with the same key is resumed unless ``force``; any other is discarded.
        """
        if not force and _read(self._key) == key:
            return "resuming the interrupted run's work"
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        write_text_atomic(self._key, key)
        return ("starting from an empty folder; the last outputs stay in place until this run completes"
                if self.final.exists() else "starting from an empty folder")

    def commit(self) -> None:
        """The run succeeded: its work folder becomes ``final`` in one step, and the old outputs go."""
        self._key.unlink(missing_ok=True)
        replace_folder(self.work, self.final)


def replace_folder(new: Path, target: Path) -> None:
    """Put folder ``new`` at ``target`` with no moment without a folder there: an atomic exchange of the two
    (:func:`exchange`), then the old one deleted; where the exchange is unsupported, two renames."""
    if not target.exists():
        new.rename(target)
        return
    if exchange(new, target):
        shutil.rmtree(new)  # after the exchange it holds the old folder
        return
    old = target.parent / f".{target.name}.old"
    if old.exists():
        shutil.rmtree(old)
    target.rename(old)
    new.rename(target)
    shutil.rmtree(old)


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None
