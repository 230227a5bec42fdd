# SPDX-License-Identifier: Apache-2.0
"""haloae.data: the eval sets a scan lists as tensors, splits, validation set, training triplets.
Uses the real bottle category when ``../shared`` has it, else skips those tests."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from haloae.categories import Sample, scan_category
from haloae.config import CutPasteConfig, HaloAEConfig
from haloae.cutpaste import color_jitter, cutpaste, cutpaste_scar
from haloae.data import (
    DatasetError,
    EvalSet,
    TrainDataset,
    denormalize,
    load_eval_set,
    make_validation_set,
    normalize,
    split_train_val,
)
from haloae.images import read_rgb
from tests.helpers.datasets import CATEGORY, MVTEC_ROOT, needs_bottle, small_synthetic


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    return small_synthetic(tmp_path_factory.mktemp("synth"))


# ---------------------------------------------------------------------- loading what the scan lists
@needs_bottle
def test_real_bottle_eval_set_loads() -> None:
    files = scan_category(MVTEC_ROOT, "bottle")
    samples = [s for s in files.test if s.defect in ("good", "broken_small")][::4]
    data = load_eval_set(samples, 32)
    assert data.images.shape == (len(samples), 3, 32, 32) and data.masks.shape == (len(samples), 1, 32, 32)
    assert data.labels.tolist() == [s.label for s in samples]
    assert all((m.sum() > 0) == bool(label) for m, label in zip(data.masks, data.labels, strict=True))


def test_16bit_images_pass_the_check_and_load_as_their_8bit_version(synth_root: Path, tmp_path: Path) -> None:
    shutil.copytree(synth_root / "synth_gravel", tmp_path / "synth_gravel")
    image = tmp_path / "synth_gravel" / "test" / "good" / "000.png"
    eight = load_eval_set(scan_category(synth_root, "synth_gravel").test[:1], 32).images
    with Image.open(image) as gray:
        Image.fromarray(np.asarray(gray).astype(np.uint16) * 257).save(image)  # 255 -> 65535
    files = scan_category(tmp_path, "synth_gravel")
    assert files.test[0].path == image
    torch.testing.assert_close(load_eval_set(files.test[:1], 32).images, eight, atol=1 / 255, rtol=0)



# ---------------------------------------------------------------------- normalisation
def test_normalize_roundtrip() -> None:
    images = torch.rand(2, 3, 8, 8)
    assert torch.allclose(denormalize(normalize(images)), images, atol=1e-6)
    assert torch.allclose(normalize(images[0]), normalize(images)[0])


# ---------------------------------------------------------------------- splits and validation
def _samples(n: int) -> list[Sample]:
    return [Sample(Path(f"/data/c/train/good/{i:03d}.png"), "good", None) for i in range(n)]


def test_split_is_deterministic_disjoint_and_non_empty() -> None:
    samples = _samples(20)
    train, val = split_train_val(samples, 0.2, seed=0)
    assert len(val) == 4 and len(train) == 16
    assert not {s.path for s in train} & {s.path for s in val}
    assert {s.path for s in train} | {s.path for s in val} == {s.path for s in samples}
    assert split_train_val(list(reversed(samples)), 0.2, seed=0) == (train, val)  # input order is irrelevant
    assert split_train_val(samples, 0.2, seed=1) != (train, val)
    tiny_train, tiny_val = split_train_val(_samples(2), 0.01, seed=0)
    assert len(tiny_train) == 1 and len(tiny_val) == 1
    with pytest.raises(DatasetError):
        split_train_val(_samples(1), 0.2, seed=0)


def test_validation_set_from_held_out_good_images_only(synth_root: Path) -> None:
    files = scan_category(synth_root, CATEGORY)
    _, val = split_train_val(files.train, 0.5, seed=0)
    data = make_validation_set(val, 32, seed=0)
    assert isinstance(data, EvalSet) and len(data) == 2 * len(val)
    assert data.images.shape == (len(data), 3, 32, 32) and data.masks.shape == (len(data), 1, 32, 32)
    assert set(data.labels.tolist()) == {0, 1}
    has_mask = data.masks.flatten(1).sum(1) > 0
    assert torch.equal(has_mask, data.labels.bool())  # masks non-empty exactly for the anomalies
    assert all(d == "good" for d, label in zip(data.defects, data.labels, strict=True) if label == 0)
    assert all(d.startswith("synthetic_") for d, label in zip(data.defects, data.labels, strict=True) if label == 1)
    test_paths = {str(s.path) for s in files.test}
    assert not set(data.paths) & test_paths
    assert all(Path(p).parent.parent.name == "train" for p in data.paths)
    again = make_validation_set(list(reversed(val)), 32, seed=0)
    assert torch.equal(again.images, data.images) and torch.equal(again.masks, data.masks)
    with pytest.raises(DatasetError, match="train/good"):
        make_validation_set(files.test[:1], 32, seed=0)


# ---------------------------------------------------------------------- training data
@pytest.fixture(scope="module")
def train_samples(synth_root: Path) -> list[Sample]:
    return scan_category(synth_root, CATEGORY).train


def test_train_dataset_returns_three_normalised_views(train_samples: list[Sample]) -> None:
    dataset = TrainDataset(train_samples, 32, CutPasteConfig(), seed=0)
    assert len(dataset) == 6 and dataset.images.dtype == torch.uint8 and dataset.images.shape == (6, 3, 32, 32)
    item = dataset[2]
    assert len(item) == 3 and all(v.shape == (3, 32, 32) and v.dtype == torch.float32 for v in item)
    views, masks = dataset.views(2)
    for normalised, raw in zip(item, views, strict=True):
        assert torch.allclose(denormalize(normalised), raw, atol=1e-5)
    # CutPaste and scar copies differ from the original only inside their pasted regions.
    for view, mask in zip(views[1:], masks[1:], strict=True):
        outside = mask[0] == 0
        assert torch.equal(view[:, outside], views[0][:, outside])
        assert (view != views[0]).any()
    # The original is the colour-jittered image: close to, but not exactly, the cached pixels.
    cached = dataset.images[2].float() / 255
    assert not torch.equal(views[0], cached) and (views[0] - cached).abs().mean() < 0.15


def test_train_dataset_is_deterministic_by_seed_epoch_index(train_samples: list[Sample]) -> None:
    cfg = HaloAEConfig.from_overrides("tiny")
    a, b = TrainDataset.from_config(train_samples, cfg), TrainDataset.from_config(train_samples, cfg)
    assert a.image_size == 32 and a.seed == cfg.train.seed
    first = a[1]
    torch.manual_seed(123)  # the global RNG plays no part
    assert all(torch.equal(x, y) for x, y in zip(first, b[1], strict=True))
    assert not torch.equal(a[2][1], first[1])  # another index, another draw
    b.set_epoch(1)
    second_epoch = b[1]
    assert not torch.equal(second_epoch[1], first[1])
    assert all(torch.equal(x, y) for x, y in zip(second_epoch, a[(1, 1)], strict=True))  # (epoch, index)
    other_seed = TrainDataset(train_samples, 32, cfg.cutpaste, seed=cfg.train.seed + 1)
    assert not torch.equal(other_seed[1][1], first[1])
    # Indices beyond the images wrap around with their own random stream (repeated epochs).
    wrapped_views, _ = a.views(1 + len(a))
    assert not torch.equal(wrapped_views[1], a.views(1)[0][1])


def test_train_dataset_without_cutpaste(train_samples: list[Sample]) -> None:
    dataset = TrainDataset(train_samples, 32, CutPasteConfig(enabled=False), seed=0)
    item = dataset[0]
    assert len(item) == 1 and item[0].shape == (3, 32, 32)


# ---------------------------------------------------------------------- where the image is jittered
FULL_SIZE = CutPasteConfig(image_jitter_at="full_size")


def _write_images(folder: Path, sizes: list[tuple[int, int]]) -> list[Sample]:
    """Random RGB files of the given (width, height) under ``folder/train/good``, as Samples."""
    good = folder / "train" / "good"
    good.mkdir(parents=True)
    rng = np.random.default_rng(0)
    samples = []
    for i, (width, height) in enumerate(sizes):
        path = good / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        samples.append(Sample(path, "good", None))
    return samples


def _authors_order(path: Path, size: int, cp: CutPasteConfig, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """The authors' pipeline written out: the file at full size, ColorJitter, bilinear resize, CutPaste."""
    full = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1).float() / 255
    jittered = color_jitter(full, cp.image_jitter, gen)
    channels = [
        np.asarray(Image.fromarray(jittered[c].numpy()).resize((size, size), Image.Resampling.BILINEAR)) for c in range(3)
    ]
    original = torch.from_numpy(np.stack(channels)).clamp(0, 1)
    return original, cutpaste(original, cp, gen)[0], cutpaste_scar(original, cp, gen)[0]


def test_full_size_jitter_is_the_authors_order(tmp_path: Path) -> None:
    samples = _write_images(tmp_path, [(48, 40), (64, 64), (37, 53)])  # sizes differ: kept as a list
    dataset = TrainDataset(samples, 32, FULL_SIZE, seed=3)
    assert [tuple(image.shape) for image in dataset.images] == [(3, 40, 48), (3, 64, 64), (3, 53, 37)]
    assert all(image.dtype == torch.uint8 for image in dataset.images)
    for epoch, index in [(0, 0), (0, 1), (2, 2), (1, 4)]:  # 4 wraps to image 1 with its own stream
        views, _ = dataset.views((epoch, index))
        expected = _authors_order(samples[index % 3].path, 32, FULL_SIZE, dataset.generator(index, epoch))
        for view, manual in zip(views, expected, strict=True):
            torch.testing.assert_close(view, manual, rtol=0, atol=1e-6)
    again = TrainDataset(samples, 32, FULL_SIZE, seed=3)
    torch.manual_seed(7)  # the global RNG plays no part
    assert all(torch.equal(x, y) for x, y in zip(again[(2, 2)], dataset[(2, 2)], strict=True))


def test_full_size_and_resized_jitter_agree_on_images_at_the_model_size(tmp_path: Path) -> None:
    samples = _write_images(tmp_path, [(32, 32)] * 3)
    resized, full = TrainDataset(samples, 32, CutPasteConfig(), seed=1), TrainDataset(samples, 32, FULL_SIZE, seed=1)
    for index in range(5):
        a, b = resized.views((1, index)), full.views((1, index))
        assert all(torch.equal(x, y) for x, y in zip(a[0] + a[1], b[0] + b[1], strict=True))


def test_full_size_jitter_differs_on_larger_images_and_resized_is_unchanged(tmp_path: Path) -> None:
    samples = _write_images(tmp_path, [(96, 96), (80, 72)])
    resized, full = TrainDataset(samples, 32, CutPasteConfig(), seed=0), TrainDataset(samples, 32, FULL_SIZE, seed=0)
    assert CutPasteConfig().image_jitter_at == "resized" and resized.images.shape == (2, 3, 32, 32)
    for index in range(2):
        (a, *_), (b, *_) = resized.views(index)[0], full.views(index)[0]
        assert not torch.equal(a, b) and (a - b).abs().max() < 0.2  # the same draw, another order
        # the resized path is today's: decoded and resized once, jittered, then CutPaste
        gen = resized.generator(index)
        cp = resized.cutpaste
        today = color_jitter(torch.from_numpy(read_rgb(samples[index].path, 32).copy()).permute(2, 0, 1) / 255, cp.image_jitter, gen)
        expected = (today, cutpaste(today, cp, gen)[0], cutpaste_scar(today, cp, gen)[0])
        assert all(torch.equal(x, y) for x, y in zip(resized.views(index)[0], expected, strict=True))


def test_images_given_in_the_wrong_form_for_the_jitter_are_refused(tmp_path: Path) -> None:
    samples = _write_images(tmp_path, [(40, 40), (40, 40)])
    resized = TrainDataset(samples, 32, CutPasteConfig(), seed=0)
    full = TrainDataset(samples, 32, FULL_SIZE, seed=0)
    with pytest.raises(ValueError, match="image_jitter_at=full_size"):
        TrainDataset(samples, 32, FULL_SIZE, seed=0, images=resized.images)
    with pytest.raises(ValueError, match="image_jitter_at=resized"):
        TrainDataset(samples, 32, CutPasteConfig(), seed=0, images=full.images)


@needs_bottle
def test_full_size_jitter_changes_nothing_on_the_shared_256px_bottle() -> None:
    samples = scan_category(MVTEC_ROOT, "bottle").train[:2]
    resized, full = TrainDataset(samples, 256, CutPasteConfig(), seed=0), TrainDataset(samples, 256, FULL_SIZE, seed=0)
    assert [tuple(image.shape) for image in full.images] == [(3, 256, 256)] * 2  # the shared copy is 256 px
    for index in range(2):
        assert all(torch.equal(x, y) for x, y in zip(resized[index], full[index], strict=True))
