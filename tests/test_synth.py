# SPDX-License-Identifier: Apache-2.0
"""The synthetic MVTec-format dataset: deterministic, fast, valid layout, exact defect masks."""

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from haloae.data import CATEGORIES, scan_category
from haloae.synth import (
    ANOMALY_KINDS,
    DEFECT_TYPES,
    SYNTH_CATEGORIES,
    SYNTH_GRAYSCALE,
    SYNTH_OBJECTS,
    SYNTH_TEXTURES,
    generate,
    render_normal,
    synthesize_anomaly,
)

SMALL = {"size": 48, "n_train": 3, "n_test_good": 2, "n_test_defect_per_type": 2}


@pytest.fixture(scope="module")
def default_dataset(tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("synth_default")
    start = time.perf_counter()
    generate(out)
    return out, time.perf_counter() - start


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_category_names() -> None:
    assert SYNTH_CATEGORIES == SYNTH_TEXTURES + SYNTH_OBJECTS
    assert len(SYNTH_TEXTURES) >= 4 and len(SYNTH_OBJECTS) >= 2
    assert not set(SYNTH_CATEGORIES) & set(CATEGORIES)  # never a real MVTec name
    assert all(len(DEFECT_TYPES[c]) == 3 and set(DEFECT_TYPES[c]) <= set(ANOMALY_KINDS) for c in SYNTH_CATEGORIES)


def test_defaults_generate_every_category(default_dataset) -> None:
    out, seconds = default_dataset
    print(f"default synthetic dataset generated in {seconds:.1f} s")  # a figure, not a timed assertion
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(SYNTH_CATEGORIES)


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    generate(tmp_path / "a", seed=3, **SMALL)
    generate(tmp_path / "b", seed=3, **SMALL)
    generate(tmp_path / "c", seed=4, **SMALL)
    a, b, c = (_tree_bytes(tmp_path / name) for name in "abc")
    assert a == b and len(a) > 0
    assert a.keys() == c.keys() and a != c


def test_subset_of_categories_gives_the_same_images(tmp_path: Path) -> None:
    generate(tmp_path / "all", categories=SYNTH_CATEGORIES[:3], **SMALL)
    generate(tmp_path / "one", categories=[SYNTH_CATEGORIES[2]], **SMALL)
    name = SYNTH_CATEGORIES[2]
    assert _tree_bytes(tmp_path / "all" / name) == _tree_bytes(tmp_path / "one" / name)


def test_layout_passes_scan_category(default_dataset) -> None:
    root, _ = default_dataset
    for category in SYNTH_CATEGORIES:
        files = scan_category(root, category)
        assert len(files.train) == 30
        assert sum(s.defect == "good" for s in files.test) == 10
        assert files.defects == sorted(DEFECT_TYPES[category])
        assert sum(s.mask is not None for s in files.test) == 4 * len(DEFECT_TYPES[category])


def test_masks_are_binary_nonempty_and_a_few_percent(default_dataset) -> None:
    root, _ = default_dataset
    n_masks = 0
    for mask_path in sorted(root.glob("*/ground_truth/*/*_mask.png")):
        mask = np.asarray(Image.open(mask_path))
        assert set(np.unique(mask).tolist()) <= {0, 255}, mask_path
        coverage = (mask > 0).mean()
        assert 0.001 <= coverage <= 0.20, f"{mask_path}: {coverage:.4f}"
        n_masks += 1
    assert n_masks == 4 * 3 * len(SYNTH_CATEGORIES)


def test_grayscale_categories_are_written_as_grayscale(default_dataset) -> None:
    root, _ = default_dataset
    for category in SYNTH_CATEGORIES:
        with Image.open(root / category / "train" / "good" / "000.png") as image:
            assert image.mode == ("L" if category in SYNTH_GRAYSCALE else "RGB")
            assert image.size == (128, 128)


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


def test_generate_rejects_unknown_categories(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bottle"):
        generate(tmp_path, categories=["bottle"])
