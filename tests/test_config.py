"""Params files: every shipped file loads; every kind of mistake is an error naming file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from image2reg.config import ParamsError, RunParams, load_params

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yml"
    path.write_text(text)
    return path


def demo_with(tmp_path: Path, old: str, new: str) -> Path:
    text = (ROOT / "params" / "demo.yml").read_text()
    assert old in text
    return write(tmp_path, text.replace(old, new, 1))


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


@pytest.mark.parametrize("dataset", ["demo", "smoke", "rohban", "jump"])
def test_shipped_params_load(dataset):
    params = load_params(ROOT / "params" / f"{dataset}.yml")
    assert params.dataset == dataset
    assert params.stage_names()[0] == "data"


def test_unknown_key_names_file_line_key_and_suggests(tmp_path):
    path = demo_with(tmp_path, "n_cells: 600", "n_cell: 600")
    with pytest.raises(ParamsError) as error:
        load_params(path)
    message = str(error.value)
    assert str(path) in message
    assert f"line {line_of(path, 'n_cell:')}" in message
    assert "unknown key 'stages.data.synthetic.n_cell'" in message and "did you mean 'n_cells'" in message


def test_missing_key_is_named(tmp_path):
    text = (ROOT / "params" / "demo.yml").read_text()
    path = write(tmp_path, "\n".join(line for line in text.splitlines() if "sites_per_well" not in line))
    with pytest.raises(ParamsError, match=r"missing required key 'sites_per_well' in stages\.data\.synthetic\.screen"):
        load_params(path)


def test_wrong_type_and_out_of_range_values(tmp_path):
    path = demo_with(tmp_path, "field_size: 512", "field_size: large")
    with pytest.raises(ParamsError) as error:
        load_params(path)
    assert f"line {line_of(path, 'field_size')}: stages.data.synthetic.screen.field_size" in str(error.value)
    assert "'large'" in str(error.value)

    path = demo_with(tmp_path, "weak_effect: [0.7, 1.1]", "weak_effect: [1.1, 0.7]")
    with pytest.raises(ParamsError, match="weak_effect must be"):
        load_params(path)

    path = demo_with(tmp_path, "source: synthetic", "source: cellpainting")
    with pytest.raises(ParamsError, match="stages.data.source.*'synthetic', 'rohban', 'jump' or 'folder'"):
        load_params(path)


def test_max_bad_fraction_of_the_images_stage_defaults_to_five_percent_and_is_a_share(tmp_path):
    assert load_params(ROOT / "params" / "demo.yml").stage("images").max_bad_fraction == 0.05
    path = demo_with(tmp_path, "    shard_size: 16\n", "    shard_size: 16\n    max_bad_fraction: 0.2\n")
    assert load_params(path).stage("images").max_bad_fraction == 0.2
    path = demo_with(tmp_path, "    shard_size: 16\n", "    shard_size: 16\n    max_bad_fraction: 1.5\n")
    with pytest.raises(ParamsError) as error:
        load_params(path)
    assert f"line {line_of(path, 'max_bad_fraction')}: stages.images.max_bad_fraction" in str(error.value)


def test_duplicate_key_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match=r"line 3: key 'seed' is given twice \(first on line 2\)"):
        load_params(write(tmp_path, "dataset: x\nseed: 1\nseed: 2\n"))
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(write(tmp_path, "dataset: [x\n"))
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_params(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "absent.yml")


def test_yaml_tags_that_construct_objects_are_refused(tmp_path):
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(write(tmp_path, "dataset: !!python/object/apply:os.system ['true']\n"))


def test_source_and_synthetic_block_must_agree(tmp_path):
    path = demo_with(tmp_path, "source: synthetic", "source: rohban")
    with pytest.raises(ParamsError, match="only used with source 'synthetic'"):
        load_params(path)
    with pytest.raises(ParamsError, match="needs a 'synthetic' block"):
        load_params(write(tmp_path, "dataset: d\nseed: 0\nfolds: 1\nstages:\n  data:\n    source: synthetic\n"))


def test_the_validation_stage_needs_a_second_screen_exactly_on_synthetic_data(tmp_path):
    params = load_params(ROOT / "params" / "jump.yml").stage("validation")
    assert params.reference == "rohban" and params.second_screen is None
    path = demo_with(tmp_path, "    second_screen:\n", "    unused:\n")
    with pytest.raises(ParamsError, match="unused"):
        load_params(path)
    text = (ROOT / "params" / "demo.yml").read_text()
    start = text.index("    second_screen:")
    end = text.index("    n_folds: 4", start)
    with pytest.raises(ParamsError, match="synthetic data needs a 'second_screen' block"):
        load_params(write(tmp_path, text[:start] + text[end:]))
    jump = (ROOT / "params" / "jump.yml").read_text().replace("    reference: rohban",
                                                              "    second_screen: {}\n    reference: rohban", 1)
    with pytest.raises(ParamsError, match="'second_screen' is for synthetic data"):
        load_params(write(tmp_path, jump))
    with pytest.raises(ParamsError, match="effect"):
        load_params(demo_with(tmp_path, "effect: [1.2, 2.4]", "effect: [2.4, 1.2]"))


def test_fold_overrides_are_checked_before_anything_runs(tmp_path):
    base = (ROOT / "params" / "smoke.yml").read_text()
    out_of_range = write(tmp_path, base + "fold_overrides:\n  5:\n    data: {seed: 1}\n")
    with pytest.raises(ParamsError, match=r"fold_overrides\.5: fold 5 is outside 0\.\.1"):
        load_params(out_of_range)
    not_per_fold = write(tmp_path, base + "fold_overrides:\n  1:\n    data: {source: synthetic}\n")
    with pytest.raises(ParamsError, match="stage 'data' does not run per fold"):
        load_params(not_per_fold)
    unknown = write(tmp_path, base + "fold_overrides:\n  1:\n    screen: {lr: 0.1}\n")
    with pytest.raises(ParamsError, match="no stage 'screen' in this file"):
        load_params(unknown)


def test_fold_override_merges_one_key_and_revalidates():
    params = load_params(ROOT / "params" / "smoke.yml").model_dump()
    params["fold_overrides"] = {1: {"data": {"synthetic": {"screen": {"n_plates": 3}}}}}
    merged = RunParams.model_validate(params)
    assert merged.stage("data", fold=1).synthetic.screen.n_plates == 3
    overridden, default = merged.stage("data", fold=1).synthetic.screen, merged.stage("data").synthetic.screen
    assert overridden.sites_per_well == default.sites_per_well
    assert merged.stage("data", fold=0).synthetic.screen.n_plates == 1
    assert merged.fingerprint("data", 1) != merged.fingerprint("data", 0)

    params["fold_overrides"] = {1: {"data": {"synthetic": {"screen": {"n_plates": "many"}}}}}
    with pytest.raises(ValueError, match="n_plates"):
        RunParams.model_validate(params).stage("data", fold=1)


def test_fingerprint_tracks_stage_params_only(tmp_path):
    base = load_params(ROOT / "params" / "demo.yml")
    changed = load_params(demo_with(tmp_path, "nuclei_per_field: 40", "nuclei_per_field: 41"))
    assert base.fingerprint("data") != changed.fingerprint("data")
    same = load_params(demo_with(tmp_path, "# The built-in demo world", "# a comment edit"))
    assert base.fingerprint("data") == same.fingerprint("data")


def test_pretrained_weights_resolve_next_to_the_params_file_or_stop_before_training(tmp_path):
    from image2reg.config import PretrainedWeightsError, encoder_initialisation, resolve_pretrained

    params_dir = tmp_path / "params"
    params_dir.mkdir()
    text = (ROOT / "params" / "rohban.yml").read_text()
    path = params_dir / "rohban.yml"
    path.write_text(text)
    params = load_params(path)
    assert params.stages.screen.model.pretrained == "../weights/resnet18-f37072fd.pth"  # the reference setting
    assert resolve_pretrained(params, "data") is params  # stages without an encoder are not concerned
    with pytest.raises(PretrainedWeightsError) as error:
        resolve_pretrained(params, "screen")
    message = str(error.value)
    assert "stages.screen.model.pretrained" in message and str(path) in message
    assert str(tmp_path / "weights" / "resnet18-f37072fd.pth") in message
    assert "download.pytorch.org/models/resnet18-f37072fd.pth" in message and "null" in message
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "resnet18-f37072fd.pth").write_bytes(b"weights")
    resolved = resolve_pretrained(params, "screen")
    assert resolved.stages.screen.model.pretrained == str(tmp_path / "weights" / "resnet18-f37072fd.pth")
    assert resolved.stage("embeddings").model.pretrained == "../weights/resnet18-f37072fd.pth"  # only that stage
    assert "ImageNet weights from" in encoder_initialisation(resolved.stages.screen.model)
    scratch = load_params(write(tmp_path, text.replace("pretrained: ../weights/resnet18-f37072fd.pth",
                                                       "pretrained: null")))
    assert resolve_pretrained(scratch, "screen") is scratch
    assert "from scratch" in encoder_initialisation(scratch.stages.screen.model)


def test_self_supervised_weights_come_from_the_pretraining_stage_of_the_same_shape(tmp_path):
    from image2reg.config import PretrainedWeightsError, encoder_initialisation, resolve_pretrained

    text = (ROOT / "params" / "demo.yml").read_text()
    assert "pretrain:" in text  # the demo pretrains its encoder
    params = load_params(ROOT / "params" / "demo.yml")
    assert params.stages.embeddings.model.pretrained == "self_supervised"  # the demo starts from stage 01b
    assert resolve_pretrained(params, "screen") is params  # its screen (32 px) trains from scratch
    encoder = tmp_path / "runs" / "demo" / "01b_pretrain" / "encoder.pt"
    with pytest.raises(PretrainedWeightsError, match="run stage 01b"):
        resolve_pretrained(params, "embeddings", encoder)
    encoder.parent.mkdir(parents=True)
    encoder.write_bytes(b"weights")
    resolved = resolve_pretrained(params, "embeddings", encoder)
    assert resolved.stages.embeddings.model.pretrained == str(encoder)
    assert resolved.stages.loto.model.pretrained == "self_supervised"  # only that stage
    assert "self-supervised pretraining" in encoder_initialisation(resolved.stages.embeddings.model)
    other = params.stages.pretrain.model_copy(update={"width": params.stages.embeddings.model.width * 2})
    mismatched = params.model_copy(update={"stages": params.stages.model_copy(update={"pretrain": other})})
    with pytest.raises(ValueError, match=r"differ in width \(8 vs 16\)"):
        resolve_pretrained(mismatched, "embeddings", encoder)
    without = params.model_copy(update={"stages": params.stages.model_copy(update={"pretrain": None})})
    with pytest.raises(ValueError, match="has no 'pretrain' block"):
        resolve_pretrained(without, "embeddings", encoder)


def test_setup_stage_stops_before_training_without_the_weights(tmp_path):
    from image2reg.config import PretrainedWeightsError
    from image2reg.notebook import setup_stage

    path = tmp_path / "rohban.yml"
    path.write_text((ROOT / "params" / "rohban.yml").read_text())
    with pytest.raises(PretrainedWeightsError, match="stages.loto.model.pretrained"):
        setup_stage("loto", "rohban", params_path=path, runs_dir=tmp_path / "runs", reports_dir=tmp_path / "reports")


def test_loading_params_imports_no_deep_learning_library():
    """Stage 00 and the runbook's --list read params files: that must not cost torch's import."""
    import subprocess
    import sys

    code = ("import sys, image2reg.config; "
            "print(sorted(m for m in ('torch', 'torch_geometric', 'scanpy', 'anndata') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
