# SPDX-License-Identifier: Apache-2.0
"""haloae.categories: the category lists, and the scan that accepts MVTec's layout or names the one
bad file or folder in a one-line error. Uses the real bottle category when ``../shared`` has it."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from haloae.categories import CATEGORIES, GRAYSCALE, OBJECTS, TEXTURES, scan_category
from haloae.errors import DatasetError
from tests.helpers.datasets import CATEGORY, MVTEC_ROOT, needs_bottle, small_synthetic
from tests.test_images import corrupt_idat


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    return small_synthetic(tmp_path_factory.mktemp("synth"))


@pytest.fixture
def broken(synth_root: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic dataset for one test to break."""
    shutil.copytree(synth_root / CATEGORY, tmp_path / CATEGORY)
    return tmp_path


def _error(root: Path, category: str = CATEGORY) -> str:
    with pytest.raises(DatasetError) as info:
        scan_category(root, category)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------------- the category lists
def test_category_lists() -> None:
    assert len(CATEGORIES) == 15 and len(TEXTURES) == 5 and len(OBJECTS) == 10
    assert set(TEXTURES) | set(OBJECTS) == set(CATEGORIES) and not set(TEXTURES) & set(OBJECTS)
    assert set(GRAYSCALE) == {"grid", "screw", "zipper"}


# ---------------------------------------------------------------------- accepted datasets
@needs_bottle
def test_real_bottle_is_accepted() -> None:
    files = scan_category(MVTEC_ROOT, "bottle", known_categories=CATEGORIES)
    assert len(files.train) == 209 and len(files.test) == 83
    assert files.defects == ["broken_large", "broken_small", "contamination"]
    with_masks = [s for s in files.test if s.mask is not None]
    assert len(with_masks) == 63
    assert all(s.label == 1 and s.mask.name == f"{s.path.stem}_mask.png" for s in with_masks)
    assert all(s.mask.parent.name == s.defect for s in with_masks)
    assert {s.defect for s in files.test if s.mask is None} == {"good"}
    assert all(s.defect == "good" and s.label == 0 for s in files.train)


def test_synthetic_dataset_is_accepted(synth_root: Path) -> None:
    files = scan_category(synth_root, CATEGORY)
    assert len(files.train) == 6 and len(files.test) == 2 + 3 * 2
    assert len(files.defects) == 3
    assert all((s.mask is None) == (s.defect == "good") for s in files.test)


# ---------------------------------------------------------------------- malformed datasets
def _defect_folder(root: Path) -> Path:
    return next(p for p in sorted((root / CATEGORY / "test").iterdir()) if p.name != "good")


def test_missing_mask(broken: Path) -> None:
    defect = _defect_folder(broken)
    (broken / CATEGORY / "ground_truth" / defect.name / "000_mask.png").unlink()
    message = _error(broken)
    assert str(defect / "000.png") in message and "without its mask" in message


def test_unpaired_mask(broken: Path) -> None:
    defect = _defect_folder(broken)
    (defect / "001.png").unlink()
    message = _error(broken)
    assert str(broken / CATEGORY / "ground_truth" / defect.name / "001_mask.png") in message
    assert "mask without its image" in message


def test_masks_for_a_missing_defect_folder(broken: Path) -> None:
    defect = _defect_folder(broken)
    shutil.rmtree(defect)
    message = _error(broken)
    assert "mask without its image" in message and defect.name in message


def test_unreadable_image(broken: Path) -> None:
    bad = broken / CATEGORY / "train" / "good" / "003.png"
    bad.write_bytes(b"this is not a png at all")
    message = _error(broken)
    assert str(bad) in message and "unreadable image" in message


def test_truncated_image(broken: Path) -> None:
    bad = broken / CATEGORY / "test" / "good" / "000.png"
    bad.write_bytes(bad.read_bytes()[:60])
    assert str(bad) in _error(broken)


def test_broken_pixel_data_behind_valid_checksums(broken: Path) -> None:
    bad = broken / CATEGORY / "test" / "good" / "001.png"
    corrupt_idat(bad)
    message = _error(broken)
    assert str(bad) in message and "unreadable image" in message


def test_unsupported_image_mode_is_named(broken: Path) -> None:
    bad = broken / CATEGORY / "train" / "good" / "zz_depth.tif"
    Image.fromarray(np.zeros((32, 32), dtype=np.float32)).save(bad)
    message = _error(broken)
    assert str(bad) in message and "unsupported image mode 'F'" in message


def test_image_mask_size_mismatch(broken: Path) -> None:
    mask = broken / CATEGORY / "ground_truth" / _defect_folder(broken).name / "001_mask.png"
    Image.new("L", (16, 16)).save(mask)
    message = _error(broken)
    assert str(mask) in message and "16x16" in message and "32x32" in message


def test_empty_train_folder(broken: Path) -> None:
    train = broken / CATEGORY / "train" / "good"
    for image in train.iterdir():
        image.unlink()
    message = _error(broken)
    assert str(train) in message and "empty" in message


def test_missing_train_folder(broken: Path) -> None:
    shutil.rmtree(broken / CATEGORY / "train")
    assert "train/good" in _error(broken)


def test_unknown_category_lists_available_ones(synth_root: Path) -> None:
    message = _error(synth_root, "bottle")
    assert "unknown category" in message and "bottle" in message
    assert CATEGORY in message and "synth_gravel" in message  # what is there instead


def test_known_categories_restricts_names(synth_root: Path) -> None:
    with pytest.raises(DatasetError, match="unknown category"):
        scan_category(synth_root, CATEGORY, known_categories=CATEGORIES)


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        scan_category(tmp_path / "nowhere", "bottle")
