"""What a finished task wrote, by content; and a task's folder swapped so that a failure never loses the last good one.

**Content records.** The runbook records every output file of a finished task as ``[size, mtime_ns, sha256]``
(:func:`record_outputs`). A later check (:func:`check_outputs`) stats every file and hashes only those whose
size or modification time moved, so an edit that keeps the size is noticed (its content hash differs), a
``touch`` is not a change, and an up-to-date check of a large run stays a ``stat`` per file. The digest of
the current contents (:func:`content_digest`) enters the keys of the tasks that read the outputs, so a
changed raw image reruns every stage after it. Cost: hashing runs at about 1 GB/s per core, once per file
when a task finishes (the Rohban screen's ~40 GB of DNA images: under a minute; a later check hashes only
what changed). A copy that keeps modification times *and* sizes but changes content (``rsync -t`` of other
data) is trusted, as with ``make``.

**Swapped folders.** :class:`TaskFolder` runs a derived stage so that its folder holds the outputs of the
last successful run until a new run completes: a new run (new key, or ``--force``) moves the last good
folder aside (``.previous/<task>``) and starts from an empty folder; success deletes the old one, failure
or interruption moves the new partial work to ``.partial/<task>`` (with its key) and puts the last good
folder back. A later run with the same key resumes the partial work; a killed run (no chance to swap back)
is found and handled the same way by the next run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

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
    """The folders of one derived task: its artifacts (``final``), the last good ones set aside, and partial work.

    Parameters
    ----------
    final
        The task's artifact folder, e.g. ``runs/demo/02_screen``.
    root
        The dataset's runs folder (``runs/demo``): ``.previous/`` and ``.partial/`` live here.
    name
        The task's name (``02_screen``, ``04_loto__fold-1``).
    """

    final: Path
    root: Path
    name: str

    @property
    def previous(self) -> Path:
        return self.root / ".previous" / self.name

    @property
    def previous_manifest(self) -> Path:
        return self.root / ".previous" / f"{self.name}.json"

    @property
    def partial(self) -> Path:
        return self.root / ".partial" / self.name

    @property
    def partial_key(self) -> Path:
        return self.root / ".partial" / f"{self.name}.key"

    def prepare(self, key: str, manifest: dict | None, force: bool) -> str:
        """Make ``final`` the folder to run in; returns what was done, in words.

        ``manifest`` is the task's manifest before this run. Its own partial work of the same key is
        resumed unless ``force``; the last good outputs are set aside, never deleted.
        """
        status = manifest.get("status") if manifest else None
        if not force and status == "started" and manifest.get("key") == key and self.final.exists():
            return "resuming the interrupted run's work"
        if status == "complete" and self.final.exists():
            _replace(self.final, self.previous)
            _write(self.previous_manifest, json.dumps(manifest))
        elif self.final.exists():
            shutil.rmtree(self.final)  # unfinished work of another key (or of no record): never a result
        resumed = False
        if not force and self.partial.exists() and _read(self.partial_key) == key:
            _replace(self.partial, self.final)
            resumed = True
        self._drop_partial()
        self.final.mkdir(parents=True, exist_ok=True)
        if resumed:
            return "resuming the interrupted run's work"
        return "starting from an empty folder" + (" (the last good outputs set aside)" if self.previous.exists()
                                                 else "")

    def commit(self) -> None:
        """The run succeeded: the outputs set aside are no longer needed."""
        if self.previous.exists():
            shutil.rmtree(self.previous)
        self.previous_manifest.unlink(missing_ok=True)

    def rollback(self, key: str) -> dict | None:
        """The run failed or was interrupted: keep its work as partial (for a rerun of the same key) and put the
        last good outputs back. Returns the last good manifest to restore, or None when there is none."""
        if not self.previous.exists():
            return None  # nothing to protect: the partial work stays in place, the manifest says 'started'
        if self.final.exists():
            _replace(self.final, self.partial)
            _write(self.partial_key, key)
        _replace(self.previous, self.final)
        manifest = json.loads(self.previous_manifest.read_text())
        self.previous_manifest.unlink()
        return manifest

    def _drop_partial(self) -> None:
        if self.partial.exists():
            shutil.rmtree(self.partial)
        self.partial_key.unlink(missing_ok=True)


def _replace(source: Path, target: Path) -> None:
    """Move folder ``source`` to ``target``, replacing what is there."""
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    source.rename(target)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None
