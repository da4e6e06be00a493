"""ResNet18 (torchvision names, weight loading), the nucleus + region ensemble, batch augmentations."""

from __future__ import annotations

import pickle

import pytest
import torch

from image2reg.cnn.augment import GREY_MEAN, GREY_STD, random_flips, scale_percentiles, standardize, to_unit_interval
from image2reg.cnn.ensemble import ImageEnsemble
from image2reg.cnn.resnet import load_pretrained, resnet18

# torchvision.models.resnet18(): each module in state-dict order with its weight's shape. A
# BatchNorm2d stores weight, bias, running_mean and running_var of shape (C,) and a scalar
# num_batches_tracked; a convolution stores only its weight (bias=False); fc stores weight and bias.
TORCHVISION_RESNET18 = [
    ("conv1", (64, 3, 7, 7)), ("bn1", (64,)),
    ("layer1.0.conv1", (64, 64, 3, 3)), ("layer1.0.bn1", (64,)),
    ("layer1.0.conv2", (64, 64, 3, 3)), ("layer1.0.bn2", (64,)),
    ("layer1.1.conv1", (64, 64, 3, 3)), ("layer1.1.bn1", (64,)),
    ("layer1.1.conv2", (64, 64, 3, 3)), ("layer1.1.bn2", (64,)),
    ("layer2.0.conv1", (128, 64, 3, 3)), ("layer2.0.bn1", (128,)),
    ("layer2.0.conv2", (128, 128, 3, 3)), ("layer2.0.bn2", (128,)),
    ("layer2.0.downsample.0", (128, 64, 1, 1)), ("layer2.0.downsample.1", (128,)),
    ("layer2.1.conv1", (128, 128, 3, 3)), ("layer2.1.bn1", (128,)),
    ("layer2.1.conv2", (128, 128, 3, 3)), ("layer2.1.bn2", (128,)),
    ("layer3.0.conv1", (256, 128, 3, 3)), ("layer3.0.bn1", (256,)),
    ("layer3.0.conv2", (256, 256, 3, 3)), ("layer3.0.bn2", (256,)),
    ("layer3.0.downsample.0", (256, 128, 1, 1)), ("layer3.0.downsample.1", (256,)),
    ("layer3.1.conv1", (256, 256, 3, 3)), ("layer3.1.bn1", (256,)),
    ("layer3.1.conv2", (256, 256, 3, 3)), ("layer3.1.bn2", (256,)),
    ("layer4.0.conv1", (512, 256, 3, 3)), ("layer4.0.bn1", (512,)),
    ("layer4.0.conv2", (512, 512, 3, 3)), ("layer4.0.bn2", (512,)),
    ("layer4.0.downsample.0", (512, 256, 1, 1)), ("layer4.0.downsample.1", (512,)),
    ("layer4.1.conv1", (512, 512, 3, 3)), ("layer4.1.bn1", (512,)),
    ("layer4.1.conv2", (512, 512, 3, 3)), ("layer4.1.bn2", (512,)),
    ("fc", (1000, 512)),
]


def torchvision_state_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """The entries of torchvision's resnet18 state dict with their shapes, in order."""
    entries = []
    for module, shape in TORCHVISION_RESNET18:
        if module == "fc":
            entries += [("fc.weight", shape), ("fc.bias", shape[:1])]
        elif len(shape) == 4:
            entries.append((f"{module}.weight", shape))
        else:
            entries += [(f"{module}.{name}", shape) for name in ("weight", "bias", "running_mean", "running_var")]
            entries.append((f"{module}.num_batches_tracked", ()))
    return entries


def shapes(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(key, tuple(value.shape)) for key, value in model.state_dict().items()]


def test_resnet18_has_torchvision_names_and_shapes():
    expected = torchvision_state_shapes()
    assert len(expected) == 122  # 20 convolutions, 20 BatchNorms × 5, fc weight and bias
    model = resnet18(num_classes=1000)
    assert shapes(model) == expected
    assert len(list(model.parameters())) == 62
    assert sum(p.numel() for p in model.parameters()) == 11_689_512  # torchvision's documented count
    assert shapes(resnet18()) == expected[:-2]  # a trunk has no fc


def test_resnet18_initialisation_and_features():
    torch.manual_seed(0)
    model = resnet18(width=16)
    conv = model.layer3[0].conv1.weight  # 64 out-channels × 3 × 3: fan-out 576
    assert conv.std().item() == pytest.approx((2 / 576) ** 0.5, rel=0.1)
    assert torch.all(model.layer2[1].bn2.weight == 1) and torch.all(model.layer2[1].bn2.bias == 0)
    x = torch.randn(2, 3, 40, 40)
    assert model.features(x).shape == (2, 128) == model(x).shape
    assert resnet18(in_channels=1, num_classes=5, width=8)(torch.randn(2, 1, 32, 32)).shape == (2, 5)


def test_load_pretrained_round_trip(tmp_path):
    torch.manual_seed(1)
    source = resnet18(num_classes=10, width=8).eval()
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    target = resnet18(num_classes=10, width=8).eval()
    x = torch.randn(2, 3, 32, 32)
    assert not torch.equal(source(x), target(x))
    load_pretrained(target, path)
    assert torch.equal(source(x), target(x))


def test_load_pretrained_adapts_to_one_channel_and_other_classes(tmp_path):
    torch.manual_seed(2)
    source = resnet18(num_classes=1000, width=8).eval()
    path = tmp_path / "imagenet.pth"
    torch.save(source.state_dict(), path)
    grey = resnet18(in_channels=1, num_classes=7, width=8).eval()
    fc = grey.fc.weight.detach().clone()
    load_pretrained(grey, path)
    assert torch.equal(grey.conv1.weight, source.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(grey.fc.weight, fc)
    # A grey image through the summed filters = that image replicated over RGB through the originals.
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(grey.features(x), source.features(x.repeat(1, 3, 1, 1)), atol=1e-5)
    trunk = resnet18(width=8)
    load_pretrained(trunk, path)
    assert torch.equal(trunk.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


def test_load_pretrained_tolerates_files_without_num_batches_tracked(tmp_path):
    source = resnet18(width=8)
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    load_pretrained(resnet18(width=8), path)


def test_load_pretrained_names_missing_and_mismatched_keys(tmp_path):
    state = resnet18(width=8).state_dict()
    del state["layer2.0.downsample.0.weight"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"broken\.pth.*layer2\.0\.downsample\.0\.weight"):
        load_pretrained(resnet18(width=8), path)
    with pytest.raises(ValueError, match=r"broken\.pth.*layer1\.0\.conv1\.weight"):
        load_pretrained(resnet18(width=16), path)


class Payload:
    """Anything but a tensor: unpickling it would run arbitrary code in a hostile file."""


def test_load_pretrained_refuses_pickled_objects(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": Payload()}, path)
    with pytest.raises(pickle.UnpicklingError, match=r"pickled\.pth"):
        load_pretrained(resnet18(width=8), path)


def batch(branches, n=4, region=48):
    generator = torch.Generator().manual_seed(3)
    sizes = {"nucleus": 64, "region": region}
    return {name: torch.randn(n, 1, sizes[name], sizes[name], generator=generator) for name in branches}


@pytest.mark.parametrize("branches", [("nucleus",), ("region",), ("nucleus", "region"), ("region", "nucleus")])
@pytest.mark.parametrize("width", [4, 8])
def test_ensemble_shapes(branches, width):
    model = ImageEnsemble(3, branches=branches, latent_dim=24, input_size=32, width=width, branch_dim=16)
    logits, latent = model(batch(branches))
    assert logits.shape == (4, 3) and latent.shape == (4, 24)
    assert model.latent.in_features == 16 * len(branches)
    assert list(model.trunks) == list(branches)


def test_ensemble_is_the_reference_layout_and_takes_imagenet_weights(tmp_path):
    model = ImageEnsemble(42)
    assert model.latent.in_features == 1024 and model.latent.out_features == 1024
    assert [type(layer).__name__ for layer in model.head] == ["BatchNorm1d", "PReLU", "Linear"]
    assert model.trunks["region"].fc.in_features == 512 and model.trunks["region"].fc.out_features == 512
    assert model.trunks["nucleus"].conv1.in_channels == 1
    imagenet = resnet18(num_classes=1000)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(imagenet.state_dict(), path)
    model.load_pretrained(path)
    for trunk in model.trunks.values():
        assert torch.equal(trunk.conv1.weight, imagenet.conv1.weight.sum(dim=1, keepdim=True))
        assert torch.equal(trunk.layer3[0].downsample[1].running_var, imagenet.layer3[0].downsample[1].running_var)
        assert trunk.fc.out_features == 512


def test_ensemble_rejects_unknown_branches():
    with pytest.raises(ValueError, match="branches"):
        ImageEnsemble(2, branches=("nucleus", "field"))
    with pytest.raises(ValueError, match="branches"):
        ImageEnsemble(2, branches=())


def test_ensemble_eval_is_deterministic_and_per_sample():
    torch.manual_seed(4)
    model = ImageEnsemble(5, latent_dim=16, input_size=32, width=4, branch_dim=8).eval()
    inputs = batch(("nucleus", "region"), n=6)
    with torch.no_grad():
        logits, latent = model(inputs)
        again, _ = model(inputs)
        single, _ = model({name: images[2:3] for name, images in inputs.items()})
        assert torch.equal(logits, again)
        assert torch.allclose(single, logits[2:3], atol=1e-5)
        assert torch.allclose(model.head(latent), logits)


def test_ensemble_gradients_reach_both_branches():
    torch.manual_seed(5)
    model = ImageEnsemble(3, latent_dim=16, input_size=32, width=4, branch_dim=8).train()
    logits, _ = model(batch(("nucleus", "region")))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    for trunk in model.trunks.values():
        assert trunk.conv1.weight.grad.abs().sum() > 0
    assert model.head[2].weight.grad.abs().sum() > 0


def test_ensemble_resizes_region_patches_by_two_by_two_means():
    model = ImageEnsemble(2, input_size=4, width=4, branch_dim=4)
    patch = torch.arange(64.0).reshape(1, 1, 8, 8)
    assert torch.equal(model.resize(patch), torch.nn.functional.avg_pool2d(patch, 2))


def dihedral(image: torch.Tensor) -> list[torch.Tensor]:
    """The eight symmetries of a square image."""
    rotations = [torch.rot90(image, k, dims=(-2, -1)) for k in range(4)]
    return rotations + [rotation.flip(-1) for rotation in rotations]


@pytest.mark.parametrize("rotate90", [False, True])
def test_random_flips(rotate90):
    images = torch.randint(0, 256, (128, 2, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(8))
    out = random_flips(images, torch.Generator().manual_seed(6), rotate90=rotate90)
    assert out.dtype == images.dtype and out.shape == images.shape
    assert torch.equal(out.flatten(1).sort(dim=1).values, images.flatten(1).sort(dim=1).values)
    allowed = 8 if rotate90 else 4
    seen = set()
    for image, result in zip(images, out):
        matches = [k for k, candidate in enumerate(dihedral(image)) if torch.equal(candidate, result)]
        assert matches
        seen.add(matches[0])
    flips_only = {0, 2, 4, 6}  # identity, both flips (rot180), horizontal, vertical (rot180 + horizontal)
    assert seen <= (set(range(8)) if rotate90 else flips_only)
    assert len(seen) == allowed  # each is drawn ~16 times out of 128
    assert torch.equal(out, random_flips(images, torch.Generator().manual_seed(6), rotate90=rotate90))
    assert not torch.equal(out, random_flips(images, torch.Generator().manual_seed(7), rotate90=rotate90))


def test_random_flips_needs_square_images_to_rotate():
    with pytest.raises(ValueError, match="square"):
        random_flips(torch.zeros(2, 1, 4, 6), rotate90=True)
    assert random_flips(torch.zeros(2, 1, 4, 6)).shape == (2, 1, 4, 6)


def test_normalisation_of_a_known_image():
    image = torch.tensor([[0, 51], [102, 255]], dtype=torch.uint8).reshape(1, 1, 2, 2)
    unit = to_unit_interval(image)
    assert torch.allclose(unit, torch.tensor([[0.0, 0.2], [0.4, 1.0]]).reshape(1, 1, 2, 2))
    expected = torch.tensor([[-2.0, -1.2], [-0.4, 2.0]]).reshape(1, 1, 2, 2)
    assert torch.allclose(standardize(unit, 0.5, 0.25), expected)
    rgb = standardize(unit.repeat(1, 3, 1, 1), (0.0, 0.5, 1.0), (1.0, 0.5, 0.25))
    assert torch.allclose(rgb[0, :, 1, 1], torch.tensor([1.0, 1.0, 0.0]))
    assert GREY_MEAN == pytest.approx(0.449) and GREY_STD == pytest.approx(0.226)
    with pytest.raises(TypeError, match="uint8"):
        to_unit_interval(unit)


def test_scale_percentiles():
    field = torch.arange(1001, dtype=torch.int32).reshape(1, 1, 7, 143) * 60  # 0 … 60,000, 16-bit range
    scaled = scale_percentiles(field, low=10, high=90)
    assert scaled.dtype == torch.float32
    assert scaled.flatten()[100].item() == 0 and scaled.flatten()[900].item() == 1
    assert scaled.flatten()[500].item() == pytest.approx(0.5)
    assert scaled.min() == 0 and scaled.max() == 1
    both = scale_percentiles(torch.stack([field[0], field[0] // 2 + 7]), low=10, high=90)
    assert torch.allclose(both[0], both[1])  # per image: an affine change of intensity is undone
    assert torch.equal(scale_percentiles(torch.full((1, 1, 3, 3), 9.0)), torch.zeros(1, 1, 3, 3))


def torchvision_resnet18_state(num_classes: int = 1000) -> dict[str, torch.Tensor]:
    """A state dict with the keys and shapes of torchvision's ``resnet18-f37072fd.pth``, written out by hand
    from torchvision's architecture (not from our model), with random values and no ``num_batches_tracked``."""
    generator = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}

    def conv(name, out_channels, in_channels, k):
        state[f"{name}.weight"] = torch.randn(out_channels, in_channels, k, k, generator=generator) * 0.05

    def bn(name, channels):
        state[f"{name}.weight"] = torch.rand(channels, generator=generator) + 0.5
        state[f"{name}.bias"] = torch.randn(channels, generator=generator) * 0.1
        state[f"{name}.running_mean"] = torch.randn(channels, generator=generator) * 0.1
        state[f"{name}.running_var"] = torch.rand(channels, generator=generator) + 0.5

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    in_channels = 64
    for layer, channels in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            prefix = f"layer{layer}.{block}"
            conv(f"{prefix}.conv1", channels, in_channels if block == 0 else channels, 3)
            bn(f"{prefix}.bn1", channels)
            conv(f"{prefix}.conv2", channels, channels, 3)
            bn(f"{prefix}.bn2", channels)
            if block == 0 and layer > 1:
                conv(f"{prefix}.downsample.0", channels, in_channels, 1)
                bn(f"{prefix}.downsample.1", channels)
        in_channels = channels
    state["fc.weight"] = torch.randn(num_classes, 512, generator=generator) * 0.01
    state["fc.bias"] = torch.zeros(num_classes)
    return state


def test_torchvision_imagenet_key_names_load_into_our_resnet(tmp_path):
    state = torchvision_resnet18_state()
    assert len(state) == 102  # 20 convolutions, 20 BatchNorms x 4 tensors, fc weight and bias
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(state, path)
    model = resnet18(num_classes=2)  # our classes, full width
    load_pretrained(model, path)
    own = model.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key
    assert own["fc.weight"].shape == (2, 512)  # ImageNet's 1000-class head is not ours
    grey = resnet18(in_channels=1, num_classes=2)
    load_pretrained(grey, path)
    assert torch.allclose(grey.state_dict()["conv1.weight"], state["conv1.weight"].sum(1, keepdim=True))
    # files saved by newer torchvision carry num_batches_tracked too
    with_counts = state | {key.replace("running_mean", "num_batches_tracked"): torch.tensor(0)
                           for key in state if key.endswith("running_mean")}
    torch.save(with_counts, path)
    load_pretrained(resnet18(num_classes=2), path)


def test_ensemble_loads_a_pretraining_stages_trunk_into_its_branch(tmp_path, caplog):
    torch.manual_seed(0)
    pretrained = resnet18(in_channels=1, num_classes=32, width=4)
    path = tmp_path / "encoder.pt"
    torch.save({f"trunks.nucleus.{key}": value for key, value in pretrained.state_dict().items()}, path)
    both = ImageEnsemble(3, branches=("nucleus", "region"), latent_dim=8, input_size=32, width=4, branch_dim=32)
    region_before = {key: value.clone() for key, value in both.trunks["region"].state_dict().items()}
    with caplog.at_level("WARNING", logger="image2reg"):
        both.load_pretrained(path)
    for key, value in pretrained.state_dict().items():
        assert torch.equal(both.trunks["nucleus"].state_dict()[key], value)
        assert torch.equal(both.trunks["region"].state_dict()[key], region_before[key])  # no region trunk in the file
    assert "no pretrained region trunk" in caplog.text
    wider = ImageEnsemble(3, branches=("nucleus",), latent_dim=8, input_size=32, width=8, branch_dim=32)
    with pytest.raises(ValueError, match="does not fit the nucleus branch"):
        wider.load_pretrained(path)
    region_only = ImageEnsemble(3, branches=("region",), latent_dim=8, input_size=32, width=4, branch_dim=32)
    with pytest.raises(ValueError, match="no branch of this model"):
        region_only.load_pretrained(path)
