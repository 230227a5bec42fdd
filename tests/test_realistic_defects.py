# SPDX-License-Identifier: Apache-2.0
"""Realistic validation anomalies: exact masks, deterministic per seed, visible but subtle, sizes spread."""

import numpy as np
import pytest
import torch

from haloae.categories import SYNTH_CATEGORIES, SYNTH_OBJECTS, scan_category
from haloae.choices import CLASSIC_ANOMALIES, REALISTIC_ANOMALIES
from haloae.config import HaloAEConfig
from haloae.data import make_validation_set, split_train_val
from haloae.defects import synthesize_anomaly
from haloae.errors import ConfigError
from haloae.realistic_defects import AREA_RANGE, VISIBLE, object_foreground, synthesize_validation_anomaly
from haloae.synth import generate, render_normal


def _images(size: int = 64) -> list[torch.Tensor]:
    """One image of every synthetic category (objects on a plain background, and textures)."""
    return [torch.from_numpy(render_normal(c, np.random.default_rng(i), size)[0]).permute(2, 0, 1)
            for i, c in enumerate(SYNTH_CATEGORIES)]  # fmt: skip


@pytest.mark.parametrize("kind", REALISTIC_ANOMALIES)
def test_mask_is_exactly_the_changed_pixels(kind: str) -> None:
    images = _images()
    for i, image in enumerate(images):
        out, mask = synthesize_validation_anomaly(image, np.random.default_rng(i), kind, images[i - 1])
        assert out.shape == image.shape and mask.shape == (1, 64, 64) and set(mask.unique().tolist()) == {0.0, 1.0}
        inside = mask[0] > 0
        assert torch.equal(out[:, ~inside], image[:, ~inside]), f"{kind}: pixels outside the mask changed"
        change = (out - image).abs().amax(0)
        assert bool((change[inside] > VISIBLE).all()), f"{kind}: the mask holds pixels the defect left as they were"
        assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


@pytest.mark.parametrize("kind", REALISTIC_ANOMALIES)
def test_deterministic_per_seed(kind: str) -> None:
    image, donor = _images()[-2:]
    a = synthesize_validation_anomaly(image, np.random.default_rng(3), kind, donor)
    b = synthesize_validation_anomaly(image, np.random.default_rng(3), kind, donor)
    c = synthesize_validation_anomaly(image, np.random.default_rng(4), kind, donor)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    t = synthesize_validation_anomaly(image, torch.Generator().manual_seed(9), kind, donor)
    assert torch.equal(t[1], synthesize_validation_anomaly(image, torch.Generator().manual_seed(9), kind, donor)[1])


def _mean_change(kind: str, seeds: range) -> float:
    """Mean absolute change inside the mask (per channel), over seeds and every synthetic category."""
    images, changes = _images(), []
    for seed in seeds:
        for i, image in enumerate(images):
            out, mask = synthesize_validation_anomaly(image, np.random.default_rng([seed, i]), kind, images[i - 1])
            changes.append(float((out - image).abs().mean(0)[mask[0] > 0].mean()))
    return float(np.mean(changes))


def test_each_kind_visible_and_the_stain_subtle() -> None:
    change = {kind: _mean_change(kind, range(3)) for kind in REALISTIC_ANOMALIES}
    assert all(value > 0.02 for value in change.values()), change
    assert change["faint_stain"] < 0.1, change  # a few percent: subtle
    classic_stain = []
    for i, image in enumerate(_images()):
        out, mask, _ = synthesize_anomaly(image, np.random.default_rng(i), "stain")
        classic_stain.append(float((out - image).abs().mean(0)[mask[0] > 0].mean()))
    assert change["faint_stain"] < 0.5 * np.mean(classic_stain), (change, np.mean(classic_stain))


@pytest.mark.parametrize("kind", ["perlin_texture", "poisson_blend", "faint_stain"])
def test_sizes_spread_from_small_to_large(kind: str) -> None:
    image = _images(128)[len(SYNTH_CATEGORIES) - len(SYNTH_OBJECTS)]  # an object on a plain background
    areas = np.array([float(synthesize_validation_anomaly(image, np.random.default_rng(s), kind)[1].mean())
                      for s in range(40)])  # fmt: skip
    low, high = AREA_RANGE
    assert areas.min() < 2.5 * low and areas.max() > 0.4 * high, areas
    # log-uniform: as many below the geometric middle as above it (not all large, not all small)
    middle = np.sqrt(low * high)
    assert 0.25 < float((areas < middle).mean()) < 0.75, areas


def test_object_foreground_on_objects_only() -> None:
    images = _images(64)
    textures = len(SYNTH_CATEGORIES) - len(SYNTH_OBJECTS)
    for image in images[textures:]:
        foreground = object_foreground(image.permute(1, 2, 0).numpy())
        assert foreground is not None and 0.05 < foreground.mean() < 0.95
    noise = torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(0)).numpy()
    assert object_foreground(noise) is None


def test_val_anomalies_is_a_recorded_validated_knob() -> None:
    cfg = HaloAEConfig.from_overrides("tiny")
    assert cfg.train.val_anomalies == REALISTIC_ANOMALIES
    assert cfg.flatten()["train.val_anomalies"] == REALISTIC_ANOMALIES
    classic = HaloAEConfig.from_overrides("tiny", ["train.val_anomalies=[" + ",".join(CLASSIC_ANOMALIES) + "]"])
    assert classic.train.val_anomalies == CLASSIC_ANOMALIES
    assert HaloAEConfig.from_dict(classic.flatten()).train.val_anomalies == CLASSIC_ANOMALIES
    with pytest.raises(ConfigError, match=r"^train.val_anomalies: unknown 'smudge'; valid: scratch"):
        HaloAEConfig.from_overrides("tiny", ["train.val_anomalies=[crack,smudge]"])
    with pytest.raises(ConfigError, match=r"^train.val_anomalies: at least one"):
        HaloAEConfig.from_overrides("tiny", {"train.val_anomalies": []})
    with pytest.raises(ValueError, match="unknown anomaly"):
        synthesize_validation_anomaly(torch.rand(3, 16, 16), 0, "smudge")


def test_validation_set_takes_the_chosen_kinds_in_turn(tmp_path) -> None:
    generate(tmp_path, categories=["synth_disc"], size=32, n_train=10, n_test_good=1, n_test_defect_per_type=1)
    _, held_out = split_train_val(scan_category(tmp_path, "synth_disc").train, 0.5, seed=1)
    realistic = make_validation_set(held_out, 32, seed=1)  # the default: REALISTIC_ANOMALIES
    kinds = [d.removeprefix("synthetic_") for d in realistic.defects if d != "good"]
    assert kinds == [REALISTIC_ANOMALIES[(i + 1) % 4] for i in range(len(held_out))]
    anomalous = realistic.labels == 1
    changed = (realistic.images[anomalous] != realistic.images[~anomalous]).any(1, keepdim=True)
    assert torch.equal(changed, realistic.masks[anomalous].bool())  # exact masks in the validation set too
    classic = make_validation_set(held_out, 32, seed=1, anomalies=CLASSIC_ANOMALIES)  # the earlier set, as it was
    assert [d for d in classic.defects if d != "good"] == [f"synthetic_{CLASSIC_ANOMALIES[(i + 1) % 5]}" for i in range(5)]
    crack_only = make_validation_set(held_out, 32, seed=1, anomalies=("crack",))
    assert {d for d in crack_only.defects if d != "good"} == {"synthetic_crack"}
