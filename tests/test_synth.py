# SPDX-License-Identifier: Apache-2.0
"""The synthetic MVTec-format dataset: deterministic, fast, valid layout, exact defect masks."""

import errno
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from haloae import synth
from haloae.categories import (
    CATEGORIES,
    DEFECT_TYPES,
    SYNTH_CATEGORIES,
    SYNTH_GRAYSCALE,
    SYNTH_OBJECTS,
    SYNTH_TEXTURES,
    scan_category,
)
from haloae.cli import main
from haloae.defects import ANOMALY_KINDS
from haloae.errors import DatasetError
from haloae.synth import generate

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


def test_generate_rejects_unknown_categories(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bottle"):
        generate(tmp_path, categories=["bottle"])


# ---------------------------------------------------------------------- a category appears whole or not at all
def _fail_on_save(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """Make the ``call``-th image write of ``generate`` fail as a full disk does."""
    real_save, calls = synth._save, []

    def save(image, path, grayscale):
        calls.append(path)
        if len(calls) == call:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(image, path, grayscale)

    monkeypatch.setattr(synth, "_save", save)


def _images_per_category(category: str) -> int:
    return SMALL["n_train"] + SMALL["n_test_good"] + SMALL["n_test_defect_per_type"] * len(DEFECT_TYPES[category])


def test_a_write_failure_leaves_nothing_and_a_later_run_regenerates(tmp_path: Path, monkeypatch) -> None:
    category = "synth_disc"
    # The very last image: everything written before it would pass scan_category as a smaller dataset.
    _fail_on_save(monkeypatch, _images_per_category(category))
    with pytest.raises(DatasetError) as info:
        generate(tmp_path, categories=[category], **SMALL)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / category) in message and "No space left" in message
    assert list(tmp_path.iterdir()) == []  # no category and no staging folder
    monkeypatch.undo()
    generate(tmp_path, categories=[category], **SMALL)
    files = scan_category(tmp_path, category)
    assert len(files.train) == SMALL["n_train"] and len(files.test) == _images_per_category(category) - SMALL["n_train"]
    assert [p.name for p in tmp_path.iterdir()] == [category]


def test_a_failed_overwrite_keeps_the_previous_category(tmp_path: Path, monkeypatch) -> None:
    generate(tmp_path, categories=["synth_pill"], seed=1, **SMALL)
    before = _tree_bytes(tmp_path / "synth_pill")
    _fail_on_save(monkeypatch, 2)
    with pytest.raises(DatasetError, match="synth_pill"):
        generate(tmp_path, categories=["synth_pill"], seed=2, **SMALL)
    assert _tree_bytes(tmp_path / "synth_pill") == before
    assert [p.name for p in tmp_path.iterdir()] == ["synth_pill"]


def test_synth_command_failure_is_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    _fail_on_save(monkeypatch, 3)
    out = tmp_path / "data"
    result = CliRunner().invoke(main, ["synth", "--out", str(out), "--categories", "synth_weave", "--size", "32"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "synth_weave" in result.output and "No space left" in result.output
    assert list(out.iterdir()) == []


def test_synth_command_rejects_a_tiny_size(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path), "--size", "8"])
    assert result.exit_code == 2 and "--size" in result.output and "Traceback" not in result.output
