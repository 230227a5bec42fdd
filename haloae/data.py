# SPDX-License-Identifier: Apache-2.0
"""MVTec AD data as tensors: split a category's files, load images and masks, augment.

Steps, in the order a run uses them:

1. ``haloae.categories.scan_category`` lists and validates *every* file before any training
   starts (torch-free, so a sweep's driver runs it too).
2. ``split_train_val`` holds out some train/good images. ``make_validation_set`` turns them into
   a labelled validation set (each image once as is and once with a synthetic defect and its
   exact mask), so checkpoints and hyperparameters are chosen without the test set (the original
   code chose them on the test set; see ``shared/reference/original-code-notes.md``, Defect 3).
3. ``TrainDataset`` serves (original, CutPaste, CutPaste-scar) triplets, normalised with the
   ImageNet statistics; ``load_eval_set`` loads test (or any) samples un-normalised in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from haloae.categories import GOOD, Sample
from haloae.choices import REALISTIC_ANOMALIES
from haloae.config import CutPasteConfig, HaloAEConfig
from haloae.cutpaste import color_jitter, cutpaste, cutpaste_scar
from haloae.errors import DatasetError
from haloae.images import decode_rgb, load_image, load_mask, read_rgb, resize_rgb
from haloae.realistic_defects import synthesize_validation_anomaly

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------- normalisation
def _stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return mean, std


def normalize(images: torch.Tensor) -> torch.Tensor:
    """``(..., 3, H, W)`` in [0, 1] -> ImageNet-normalised (the backbones' input)."""
    mean, std = _stats(images)
    return (images - mean) / std


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Inverse of ``normalize``."""
    mean, std = _stats(images)
    return images * std + mean


# ---------------------------------------------------------------------- splits and evaluation sets
def split_train_val(train: Sequence[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out ``val_fraction`` of the train/good images: (train, val), both sorted, disjoint, non-empty.

    Deterministic: the input is sorted by path first, then permuted by a generator seeded with
    ``seed``, so the split depends only on the file names and the seed.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction: must be in (0, 1), got {val_fraction}")
    ordered = sorted(train, key=lambda s: str(s.path))
    if len(ordered) < 2:
        where = ordered[0].path.parent if ordered else "train/good"
        raise DatasetError(
            f"{where}: at least 2 training images are needed to hold some out for validation, got {len(ordered)}"
        )
    n_val = min(len(ordered) - 1, max(1, round(len(ordered) * val_fraction)))
    held_out = set(np.random.default_rng(seed).permutation(len(ordered))[:n_val].tolist())
    kept = [s for i, s in enumerate(ordered) if i not in held_out]
    val = [s for i, s in enumerate(ordered) if i in held_out]
    return kept, val


@dataclass
class EvalSet:
    """Labelled images for scoring. Images are in [0, 1], *not* normalised."""

    images: torch.Tensor  # (N, 3, S, S) float in [0, 1]
    masks: torch.Tensor  # (N, 1, S, S) float in {0, 1}; zeros for good images
    labels: torch.Tensor  # (N,) long: 0 good, 1 anomalous
    defects: list[str]  # per image: "good", a test defect folder, or "synthetic_<kind>"
    paths: list[str]  # per image: the source file

    def __len__(self) -> int:
        return len(self.paths)


def load_eval_set(samples: Sequence[Sample], size: int) -> EvalSet:
    """Load samples (a test set, typically) with their masks at ``size`` x ``size``."""
    if not samples:
        raise ValueError("samples: an evaluation set needs at least one image")
    images = torch.stack([load_image(s.path, size) for s in samples])
    masks = torch.stack(
        [load_mask(s.mask, size) if s.mask is not None else torch.zeros(1, size, size) for s in samples]
    )
    labels = torch.tensor([s.label for s in samples], dtype=torch.long)
    return EvalSet(images, masks, labels, [s.defect for s in samples], [str(s.path) for s in samples])


def make_validation_set(
    val_samples: Sequence[Sample], size: int, seed: int, anomalies: Sequence[str] = REALISTIC_ANOMALIES
) -> EvalSet:
    """A validation set from held-out train/good images only: each appears once as good and once
    with a synthetic defect (``haloae.realistic_defects.synthesize_validation_anomaly``) and its
    exact mask.

    Deterministic by ``seed``. The defect kinds ``anomalies`` (``train.val_anomalies``) are taken in
    turn (offset by the seed), so every kind is represented once there are as many images; a
    ``poisson_blend`` takes its patch from the next held-out image. Test images are refused:
    anything selected on this set must not have seen the test set.
    """
    if not val_samples:
        raise ValueError("val_samples: a validation set needs at least one held-out image")
    ordered = sorted(val_samples, key=lambda s: str(s.path))
    for sample in ordered:
        if sample.defect != GOOD or sample.path.parent.parent.name != "train":
            raise DatasetError(f"{sample.path}: validation images must come from train/good, never from test")
    goods = [load_image(s.path, size) for s in ordered]
    defective, masks, kinds = [], [], []
    for i, image in enumerate(goods):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        kind = anomalies[(i + seed) % len(anomalies)]
        donor = goods[(i + 1) % len(goods)] if len(goods) > 1 else None
        anomalous, mask = synthesize_validation_anomaly(image, rng, kind, donor)
        defective.append(anomalous)
        masks.append(mask)
        kinds.append(f"synthetic_{kind}")
    n = len(ordered)
    paths = [str(s.path) for s in ordered]
    return EvalSet(
        images=torch.stack(goods + defective),
        masks=torch.cat([torch.zeros(n, 1, size, size), torch.stack(masks)]),
        labels=torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)]),
        defects=[GOOD] * n + kinds,
        paths=paths + paths,
    )


# ---------------------------------------------------------------------- training data
class TrainDataset(Dataset):
    """train/good images with the original's augmentation: ColorJitter, then CutPaste and scar.

    Images are decoded once, at construction. With ``cutpaste.image_jitter_at=resized`` (default)
    they are resized too, into a uint8 cache ``(N, 3, S, S)``, and each draw jitters the resized
    image. With ``full_size`` (the authors' order: ColorJitter, resize, CutPaste) they are kept at
    their decoded size, a list of uint8 ``(3, H, W)`` (sizes may differ), and each draw jitters the
    full-size image, then resizes it by ``haloae.images.resize_rgb``, the decoder's filter, so an
    image already at the model's size gives exactly the ``resized`` draw. ``dataset[i]`` returns
    normalised float tensors ``(original, cutpaste, scar)`` (or ``(original,)`` when CutPaste is
    disabled); the original is the colour-jittered image and the other two are made from it, so
    they differ from it only inside the pasted regions.

    Randomness comes only from a generator seeded with ``(seed, epoch, index)``: the same triple
    gives the same tensors whatever the worker count, process or global RNG. Call ``set_epoch``
    before each epoch's loader iterator is created (non-persistent workers copy the dataset then),
    or index with ``(epoch, index)`` to carry the epoch explicitly (persistent workers).
    ``index`` may be >= ``len(self)``: it picks image ``index % len(self)`` but keeps its own random
    stream, so a loop that draws more samples than images per epoch (the original repeats the
    training set to 3000 samples) gets a fresh augmentation for each draw.
    """

    def __init__(
        self, samples: Sequence[Sample], image_size: int, cutpaste: CutPasteConfig | None = None, seed: int = 0,
        images: torch.Tensor | list[torch.Tensor] | None = None,
    ):  # fmt: skip
        if not samples:
            raise ValueError("samples: a training set needs at least one image")
        self.paths = [s.path for s in samples]
        self.image_size = image_size
        self.cutpaste = cutpaste if cutpaste is not None else CutPasteConfig()
        self.seed = seed
        self.epoch = 0
        self.full_size = self.cutpaste.image_jitter_at == "full_size"
        if images is None:  # given: the samples' images decoded before (uint8, the data cache's)
            images = self._decode(samples)
        self._check(images)
        self.images = images

    def _decode(self, samples: Sequence[Sample]) -> torch.Tensor | list[torch.Tensor]:
        if not self.full_size:
            return torch.stack([_chw(read_rgb(s.path, self.image_size)) for s in samples])
        # Full size costs memory: MVTec AD's images are 700 to 1024 px, and its largest training
        # sets (hazelnut: 391 images at 1024 px) take about 1.2 GB as uint8 (bottle: 209 at 900 px,
        # 0.5 GB), against 0.08 GB at 256 px; acceptable for the preset that reproduces the paper.
        return [_chw(decode_rgb(s.path)) for s in samples]

    def _check(self, images: torch.Tensor | list[torch.Tensor]) -> None:
        """Refuse images in the other form (a stale cache entry, a wrong caller) rather than train on them."""
        n, size = len(self.paths), self.image_size
        if self.full_size:
            ok = isinstance(images, list) and len(images) == n
            ok = ok and all(i.dtype == torch.uint8 and i.dim() == 3 and i.shape[0] == 3 for i in images)
            form = f"a list of {n} uint8 (3, H, W) full-size images"
        else:
            ok = isinstance(images, torch.Tensor) and images.dtype == torch.uint8
            ok = ok and tuple(images.shape) == (n, 3, size, size)
            form = f"a uint8 ({n}, 3, {size}, {size}) tensor"
        if not ok:
            raise ValueError(f"images: cutpaste.image_jitter_at={self.cutpaste.image_jitter_at} needs {form}")

    @classmethod
    def from_config(cls, samples: Sequence[Sample], cfg: HaloAEConfig) -> TrainDataset:
        return cls(samples, cfg.model.image_size, cfg.cutpaste, cfg.train.seed)

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self, index: int, epoch: int | None = None) -> torch.Generator:
        """The generator of one draw, seeded from ``(seed, epoch, index)``."""
        epoch = self.epoch if epoch is None else epoch
        state = np.random.SeedSequence([self.seed, epoch, index]).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(state))

    def views(self, index: int | tuple[int, int]) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """Un-normalised views in [0, 1] ``(3, S, S)`` and their pasted-region masks ``(1, S, S)``."""
        epoch, index = index if isinstance(index, tuple) else (self.epoch, index)
        if index < 0 or epoch < 0:
            raise IndexError(f"index and epoch must be >= 0, got index={index}, epoch={epoch}")
        gen = self.generator(index, epoch)
        image = self.images[index % len(self)].float().div_(255.0)
        # The jitter makes the same five draws at any size, so both orders share the CutPaste draws.
        original = color_jitter(image, self.cutpaste.image_jitter, gen)
        if self.full_size:
            resized = resize_rgb(original.permute(1, 2, 0).numpy(), self.image_size)
            original = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).clamp(0.0, 1.0)
        empty = torch.zeros(1, self.image_size, self.image_size)
        if not self.cutpaste.enabled:
            return (original,), (empty,)
        patched, patch_mask = cutpaste(original, self.cutpaste, gen)
        scarred, scar_mask = cutpaste_scar(original, self.cutpaste, gen)
        return (original, patched, scarred), (empty, patch_mask, scar_mask)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, ...]:
        views, _ = self.views(index)
        return tuple(normalize(v) for v in views)


def _chw(pixels: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` (possibly a read-only PIL buffer) -> its own ``(3, H, W)`` tensor."""
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)
