# SPDX-License-Identifier: Apache-2.0
"""Synthetic defects: visible, mostly inside their exact masks, deterministic by the generator."""

import numpy as np
import pytest
import torch

from haloae.categories import SYNTH_CATEGORIES
from haloae.defects import ANOMALY_KINDS, synthesize_anomaly
from haloae.synth import render_normal


@pytest.mark.parametrize("kind", ANOMALY_KINDS)
def test_synthesize_anomaly_changes_pixels_mostly_inside_its_mask(kind: str) -> None:
    for i, category in enumerate(SYNTH_CATEGORIES):
        rng = np.random.default_rng(i)
        normal, foreground = render_normal(category, rng, 64)
        image = torch.from_numpy(normal).permute(2, 0, 1)
        out, mask, painted = synthesize_anomaly(image, rng, kind, where=foreground)
        assert painted == kind and out.shape == image.shape and mask.shape == (1, 64, 64)
        assert set(mask.unique().tolist()) == {0.0, 1.0}  # non-empty and binary
        change = (out - image).abs().sum(0)
        inside = mask[0] > 0
        assert change[inside].sum() / change.sum() > 0.75, f"{category}/{kind}"
        assert change[inside].mean() / 3 > 0.04, f"{category}/{kind}: defect barely visible"
        assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_synthesize_anomaly_is_deterministic_and_accepts_torch_generators() -> None:
    image = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0))
    a = synthesize_anomaly(image, torch.Generator().manual_seed(5))
    b = synthesize_anomaly(image, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    assert a[2] in ANOMALY_KINDS
    with pytest.raises(ValueError, match="unknown anomaly"):
        synthesize_anomaly(image, 0, "smudge")
