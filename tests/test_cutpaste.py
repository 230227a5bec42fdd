# SPDX-License-Identifier: Apache-2.0
"""CutPaste and CutPaste-scar: sizes as configured, changes confined to the mask, determinism."""

import math

import pytest
import torch

from haloae.config import CutPasteConfig
from haloae.cutpaste import color_jitter, cutpaste, cutpaste_scar

CFG = CutPasteConfig()


def _image(size: int, seed: int = 0) -> torch.Tensor:
    # Random pixels: any pasted pixel almost surely differs from the one it replaces.
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


def _bbox(mask: torch.Tensor) -> tuple[int, int]:
    ys, xs = torch.nonzero(mask[0], as_tuple=True)
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


@pytest.mark.parametrize("seed", range(20))
def test_cutpaste_area_and_aspect_within_configured_bounds(seed: int) -> None:
    size = 64
    out, mask = cutpaste(_image(size), CFG, torch.Generator().manual_seed(seed))
    assert out.shape == (3, size, size) and mask.shape == (1, size, size)
    height, width = _bbox(mask)
    assert mask.sum() == height * width  # one rectangle
    # Rounding each side to whole pixels moves the area by at most half a pixel per side.
    slack = 0.5 * (height + width) + 0.25
    low, high = CFG.area_ratio
    assert low * size * size - slack <= mask.sum() <= high * size * size + slack
    aspect = width / height
    assert CFG.aspect_ratio * 0.8 <= aspect <= (1 / CFG.aspect_ratio) * 1.25


@pytest.mark.parametrize("augment", [cutpaste, cutpaste_scar])
@pytest.mark.parametrize("seed", range(8))
def test_pixels_outside_the_mask_are_unchanged(augment, seed: int) -> None:
    image = _image(64, seed)
    out, mask = augment(image, CFG, torch.Generator().manual_seed(seed))
    outside = mask[0] == 0
    assert torch.equal(out[:, outside], image[:, outside])
    assert mask.sum() > 0
    assert (out != image).any()
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("augment", [cutpaste, cutpaste_scar])
def test_same_generator_seed_gives_the_same_result(augment) -> None:
    image = _image(48)
    a = augment(image, CFG, torch.Generator().manual_seed(7))
    b = augment(image, CFG, torch.Generator().manual_seed(7))
    c = augment(image, CFG, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_global_rng_is_not_used() -> None:
    image = _image(48)
    torch.manual_seed(1)
    a = cutpaste(image, CFG, torch.Generator().manual_seed(3))
    torch.manual_seed(2)
    b = cutpaste(image, CFG, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0])


@pytest.mark.parametrize("seed", range(20))
def test_scar_size_within_configured_bounds_at_256(seed: int) -> None:
    size = 256  # the original's scar sizes are for 256x256: no scaling here
    _, mask = cutpaste_scar(_image(size), CFG, torch.Generator().manual_seed(seed))
    (w_lo, w_hi), (h_lo, h_hi) = CFG.scar_width, CFG.scar_height
    # Nearest-neighbour rotation keeps the area up to the pixels along the edges.
    area = float(mask.sum())
    assert 0.6 * w_lo * h_lo <= area <= 1.3 * w_hi * h_hi
    height, width = _bbox(mask)
    longest = math.hypot(w_hi, h_hi) + 2
    assert max(height, width) <= longest  # the rotated box never exceeds the scar's diagonal


def test_scar_scales_with_image_size() -> None:
    (_, w_hi), (_, h_hi) = CFG.scar_width, CFG.scar_height
    for seed in range(10):
        _, mask = cutpaste_scar(_image(64), CFG, torch.Generator().manual_seed(seed))
        assert 1 <= mask.sum() <= 1.3 * w_hi * h_hi / 16 + 4  # (64 / 256)^2 of the area


def test_color_jitter_bounds_identity_and_determinism() -> None:
    image = _image(32)
    assert torch.equal(color_jitter(image, 0.0, torch.Generator().manual_seed(0)), image)
    a = color_jitter(image, 0.1, torch.Generator().manual_seed(0))
    b = color_jitter(image, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert not torch.equal(a, image)
    # A 0.1 jitter is mild: pixels move by a fraction of the range, not across it.
    assert (a - image).abs().mean() < 0.15
