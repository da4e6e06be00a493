"""predict never answers from stale work: a cache keyed by the query's content and the models, bad files named
and skipped, one predict per work folder.

The trained models are replaced by a fake encoder (a CNN's latent → three measures of the query's nuclei), so the
real preprocessing (stage 01 on tiny synthetic fields), the cache, the lock and the translation run in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

from image2reg import predict
from image2reg.config import StagesParams
from image2reg.images.io import ImageReadError
from image2reg.layout import RunLayout, TaskFiles, artifact_name, write_text_atomic
from image2reg.lock import LockHeldError

REPO = Path(__file__).resolve().parents[1]
GENES = [f"G{k:02d}" for k in range(12)]

HOLD = """
import sys, time
from image2reg.lock import FolderLock
lock = FolderLock(sys.argv[1], what="first predict").acquire()
print("locked", flush=True)
time.sleep(60)
"""


def _field(seed: int, size: int = 160, n: int = 6) -> np.ndarray:
    """A 16-bit field of ``n`` bright disks (nuclei) on a noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = 200 + rng.normal(0, 10, (size, size))
    centres: list[np.ndarray] = []
    while len(centres) < n:
        centre = rng.uniform(25, size - 25, 2)
        if all(np.hypot(*(centre - other)) > 28 for other in centres):
            centres.append(centre)
    for cy, cx in centres:
        radius = rng.uniform(9, 12)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius] += rng.uniform(1200, 2400)
    return np.clip(image, 0, 4000).astype(np.uint16)


def _query(folder: Path, seeds=(0, 1, 2)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, seed in enumerate(seeds):
        tifffile.imwrite(folder / f"f{k}.tif", _field(seed))
    return folder


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def world(tmp_path, monkeypatch):
    """Params (the smoke preprocessing, in-process), a fake trained encoder, and a counter of preprocessings."""
    params = yaml.safe_load((REPO / "params" / "smoke.yml").read_text())
    for stage in list(StagesParams.model_fields)[:-1]:  # every stage up to the translation
        params["stages"].setdefault(stage, {})
    params["stages"]["images"]["execution"] = {"backend": "inprocess"}
    params_path = tmp_path / "params.yml"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))

    rng = np.random.default_rng(0)
    regulatory = rng.normal(size=(len(GENES), 3))
    regulatory = pd.DataFrame(regulatory / np.linalg.norm(regulatory, axis=1, keepdims=True), index=GENES)
    image = pd.DataFrame(rng.normal(size=(6, 3)), index=GENES[:6])
    weights = tmp_path / "best_model.pt"
    weights.write_bytes(b"weights of the fold model")
    encoder = predict.TrainedEncoder("fold-0", weights, ["EMPTY", *GENES[:6]], image, regulatory)
    monkeypatch.setattr(predict, "encoders", lambda layout, params, model: [encoder])
    layout = RunLayout(dataset=params["dataset"], runs_dir=tmp_path / "runs", reports_dir=tmp_path / "reports")
    write_text_atomic(layout.artifact("screen", "impactful_genes"), "\n".join(GENES[:6]) + "\n")

    def embed(work, encoder, stage, illumination):
        nuclei = pd.read_parquet(work / artifact_name("images", "nuclei"))
        nuclei = nuclei[nuclei["QC_pass"]]
        if nuclei.empty:
            raise ValueError("no nucleus passed QC")
        return np.array([nuclei["area"].mean() / 400, nuclei["mean_intensity"].mean() / 1000, len(nuclei) / 10])

    monkeypatch.setattr(predict, "embed_query", embed)
    calls = []
    real = predict.preprocess_images

    def counted(fields, out_dir, params, **options):
        calls.append(Path(out_dir))
        return real(fields, out_dir, params, **options)

    monkeypatch.setattr(predict, "preprocess_images", counted)

    def run(images: Path, work: Path, **options):
        return predict.predict_condition(images, params_path=params_path, runs_dir=tmp_path / "runs",
                                         work_dir=work, **options)

    run.calls, run.weights, run.params_path = calls, weights, params_path
    return run


def test_an_unchanged_folder_reuses_its_preprocessing(world, tmp_path):
    query = _query(tmp_path / "q")
    first = world(query, tmp_path / "work")
    assert not first.reused and len(world.calls) == 1 and first.fields == 3 and first.failed_fields == {}
    assert first.work_dir == tmp_path / "work" / first.key[:16]
    recorded = json.loads((first.work_dir / TaskFiles.DONE).read_text())
    assert recorded["key"] == first.key and [f["name"] for f in recorded["files"]] == ["f0.tif", "f1.tif", "f2.tif"]
    again = world(query, tmp_path / "work")
    assert again.reused and len(world.calls) == 1 and again.key == first.key
    pd.testing.assert_frame_equal(again.ranking, first.ranking)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == sorted([".lock", first.key[:16]])

    world.weights.write_bytes(b"weights of a retrained fold model")  # another model: the key changes
    retrained = world(query, tmp_path / "work")
    assert not retrained.reused and retrained.key != first.key and len(world.calls) == 2
    assert not first.work_dir.exists()  # the old key's cache is gone once the new one is complete


def test_a_replaced_image_of_the_same_size_and_time_is_recomputed(world, tmp_path):
    query = _query(tmp_path / "q")
    first = world(query, tmp_path / "work")
    target = query / "f1.tif"
    size, stat = target.stat().st_size, target.stat()
    tifffile.imwrite(target, _field(99))  # other nuclei, same shape and dtype
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even the time says nothing changed
    assert target.stat().st_size == size and target.stat().st_mtime_ns == stat.st_mtime_ns
    second = world(query, tmp_path / "work")
    assert not second.reused and second.key != first.key and len(world.calls) == 2
    assert not np.allclose(second.ranking["distance"].sort_values(), first.ranking["distance"].sort_values())
    fresh = world(query, tmp_path / "fresh_work")  # what a predict that never saw the old images answers
    pd.testing.assert_frame_equal(second.ranking, fresh.ranking)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == sorted([".lock", second.key[:16]])


def test_a_truncated_or_wrong_shape_file_is_named_and_skipped(world, tmp_path, caplog, capsys):
    query = _query(tmp_path / "q", seeds=(0, 1, 2, 3))
    _truncate(query / "f3.tif")
    tifffile.imwrite(query / "f4.tif", _field(4, size=120))  # another camera's field
    found = world(query, tmp_path / "work")
    bad = [str((query / name).resolve()) for name in ("f3.tif", "f4.tif")]
    assert found.fields == 5 and sorted(found.failed_fields) == bad
    assert "f3.tif" in found.failed_fields[bad[0]] and "(120, 120)" in found.failed_fields[bad[1]]
    assert any("skipping query field f3.tif" in record.getMessage() for record in caplog.records)  # as it happens
    assert found.to_dict(3)["failed_fields"] == found.failed_fields
    good = world(_query(tmp_path / "good", seeds=(0, 1, 2)), tmp_path / "good_work")
    pd.testing.assert_frame_equal(found.ranking, good.ranking)  # the other fields answer as if alone
    args = ["--images", str(query), "--params", str(world.params_path), "--runs-dir", str(tmp_path / "runs"),
            "--work-dir", str(tmp_path / "work"), "--top", "3"]
    assert predict.main(args) == 0
    printed = capsys.readouterr().out
    assert "query: 5 fields of view; 2 skipped" in printed and "  f3.tif: " in printed and "  f4.tif: " in printed

    tifffile.imwrite(query / "f3.tif", _field(3))  # repaired: its content is in the key, so it is used now
    repaired = world(query, tmp_path / "work")
    assert not repaired.reused and list(repaired.failed_fields) == bad[1:]
    assert repaired.nuclei_used > found.nuclei_used


def test_a_folder_of_only_bad_files_fails_naming_every_one(world, tmp_path, capsys):
    query = _query(tmp_path / "q", seeds=(0,))
    _truncate(query / "f0.tif")
    (query / "notes.tif").write_text("not an image")
    tifffile.imwrite(query / "rgb.tif", np.zeros((40, 40, 3), np.uint8), photometric="rgb")
    (query / "gone.tif").symlink_to(tmp_path / "moved_away.tif")  # a broken link
    with pytest.raises(ImageReadError, match="none of the 4 query fields can be read") as error:
        world(query, tmp_path / "work")
    assert all(name in str(error.value) for name in ("f0.tif", "notes.tif", "rgb.tif", "gone.tif"))
    assert world.calls == []
    args = ["--images", str(query), "--params", str(world.params_path), "--runs-dir", str(tmp_path / "runs"),
            "--work-dir", str(tmp_path / "work")]
    assert predict.main(args) == 2
    err = capsys.readouterr().err
    assert "error: none of the 4 query fields can be read" in err
    assert all(name in err for name in ("f0.tif", "notes.tif", "rgb.tif", "gone.tif"))


def test_a_second_predict_on_the_same_work_folder_is_refused_naming_the_first(world, tmp_path, capsys):
    query = _query(tmp_path / "q", seeds=(0,))
    work = tmp_path / "work"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(work)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeldError, match=rf"in use by PID {holder.pid} \(started .*: first predict\)"):
            world(query, work)
        args = ["--images", str(query), "--params", str(world.params_path), "--runs-dir", str(tmp_path / "runs"),
                "--work-dir", str(work)]
        assert predict.main(args) == 2
        assert f"in use by PID {holder.pid}" in capsys.readouterr().err
        assert world.calls == [] and [p.name for p in work.iterdir()] == [".lock"]  # refused before any work
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock is taken over with a note
    found = world(query, work)
    assert not found.reused and f"PID {holder.pid}" in capsys.readouterr().err
    assert (work / ".lock").read_text() == ""  # released when the predict ends


def test_the_key_changes_with_any_byte_of_the_query_and_with_the_params(tmp_path):
    query = _query(tmp_path / "q", seeds=(0, 1))
    paths = predict.query_files(query)
    weights = {"fold-0": query / "f0.tif"}  # any file stands for a model's weights
    key, record = predict.query_key(paths, "params", weights)
    assert predict.query_key(paths, "params", weights)[0] == key  # deterministic
    assert predict.query_key(paths, "other params", weights)[0] != key
    assert [entry["size"] for entry in record["files"]] == [p.stat().st_size for p in paths]
    data = bytearray(paths[1].read_bytes())
    data[-1] ^= 1  # one bit of one file
    paths[1].write_bytes(bytes(data))
    assert predict.query_key(paths, "params", weights)[0] != key


def test_a_killed_preprocessing_leaves_no_cache_to_answer_from(world, tmp_path, monkeypatch):
    query = _query(tmp_path / "q", seeds=(0, 1))
    real = predict.preprocess_images

    def killed(fields, out_dir, params, **options):
        real(fields, out_dir, params, **options)
        raise KeyboardInterrupt  # after the pipeline, before the cache is marked done and renamed into place

    monkeypatch.setattr(predict, "preprocess_images", killed)
    with pytest.raises(KeyboardInterrupt):
        world(query, tmp_path / "work")
    assert [p.name for p in (tmp_path / "work").iterdir() if not p.name.startswith(".")] == []  # no cache
    assert any(p.name.endswith(".partial") for p in (tmp_path / "work").iterdir())  # the work so far, resumable
    monkeypatch.setattr(predict, "preprocess_images", real)
    resumed = world(query, tmp_path / "work")
    assert not resumed.reused and (resumed.work_dir / TaskFiles.DONE).is_file()
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == sorted([".lock", resumed.key[:16]])
    pd.testing.assert_frame_equal(resumed.ranking, world(query, tmp_path / "fresh_work").ranking)


def test_a_dataset_not_run_is_said_before_any_work_folder_is_made(world, tmp_path):
    query = _query(tmp_path / "q", seeds=(0,))
    with pytest.raises(predict.StageNotRunError, match="run stage 02_screen first"):
        predict.predict_condition(query, params_path=world.params_path, runs_dir=tmp_path / "no_runs")
    assert not (tmp_path / "no_runs").exists()
