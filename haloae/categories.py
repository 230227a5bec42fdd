# SPDX-License-Identifier: Apache-2.0
"""The category names and one category's files: MVTec AD's 15, the synthetic ones, and ``scan_category``.

MVTec AD's layout (Bergmann et al., CVPR 2019)::

    <root>/<category>/train/good/*.png
    <root>/<category>/test/<defect>/*.png                  (defect "good" = normal)
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png (none for good)

``scan_category`` lists and validates *every* file before any training starts; each problem is a
one-line ``DatasetError`` naming the file or folder. Categories outside the 15 official names
(``haloae.synth``'s ``synth_*``) are accepted when they have the layout. Every image and mask is
decoded in full by ``haloae.images`` (the one reader), so broken pixel data and unsupported modes
are named here too.

Nothing here imports torch: a sweep's driver validates its spec and its dataset with these names
and this scan, and never trains (importing torch and torchvision would add about 3 s to every
``haloae sweep`` command).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from haloae.errors import DatasetError
from haloae.images import check_image

CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
)  # fmt: skip
TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
OBJECTS = tuple(c for c in CATEGORIES if c not in TEXTURES)
GRAYSCALE = ("grid", "screw", "zipper")  # stored as 1-channel images; loaded as 3 equal channels
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GOOD = "good"
MASK_SUFFIX = "_mask"

# The synthetic categories (``haloae.synth`` draws them) and the defect types of their test sets.
SYNTH_TEXTURES = ("synth_brick", "synth_grass", "synth_gravel", "synth_weave")
SYNTH_OBJECTS = ("synth_disc", "synth_pill")
SYNTH_CATEGORIES = SYNTH_TEXTURES + SYNTH_OBJECTS
SYNTH_GRAYSCALE = ("synth_gravel",)  # written as 8-bit grayscale PNGs

# Three defect types per category, chosen to be plausible for it (no colour stain on grayscale).
DEFECT_TYPES: dict[str, tuple[str, ...]] = {
    "synth_brick": ("scratch", "hole", "stain"),
    "synth_grass": ("stain", "perlin", "cutpaste"),
    "synth_gravel": ("hole", "perlin", "scratch"),
    "synth_weave": ("hole", "perlin", "cutpaste"),
    "synth_disc": ("scratch", "hole", "stain"),
    "synth_pill": ("scratch", "stain", "perlin"),
}


@dataclass(frozen=True)
class Sample:
    path: Path
    defect: str  # "good" or the name of the test/<defect> folder
    mask: Path | None  # ground-truth mask; None for good images

    @property
    def label(self) -> int:
        """0 for a good image, 1 for an anomalous one."""
        return int(self.defect != GOOD)


@dataclass(frozen=True)
class CategoryFiles:
    train: list[Sample]  # train/good, sorted by path
    test: list[Sample]  # test/<defect>, sorted by defect then path

    @property
    def defects(self) -> list[str]:
        """The anomalous defect types of the test set, sorted (``good`` excluded)."""
        return sorted({s.defect for s in self.test if s.defect != GOOD})


# ---------------------------------------------------------------------- scanning and validation
def _images_in(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted; hidden and non-image files are ignored."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def available_categories(root: str | Path) -> list[str]:
    """Folders under ``root`` that look like categories (they have a ``train`` folder), sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [p.name for p in _subfolders(root) if (p / "train").is_dir()]


def scan_category(root: str | Path, category: str, known_categories: Sequence[str] | None = None) -> CategoryFiles:
    """List and validate one category's files; raises a one-line ``DatasetError`` on the first problem.

    ``known_categories``, when given, restricts the accepted names (e.g. to ``CATEGORIES``);
    otherwise any folder under ``root`` with the MVTec layout is a category. Every image and mask
    is decoded in full (``haloae.images.check_image``) and each mask must have its image's size,
    so that a bad file fails here, in seconds (MVTec's bottle, 292 images at 256 px: about 0.5 s), not
    hours into a training run.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root not found")
    if known_categories is not None and category not in known_categories:
        raise DatasetError(f"{category}: unknown category; known: {', '.join(known_categories)}")
    folder = root / category
    if not folder.is_dir():
        available = ", ".join(available_categories(root)) or "none"
        raise DatasetError(
            f"{folder}: unknown category {category!r} (no such folder); available under {root}: {available}"
        )

    train_dir = folder / "train" / GOOD
    if not train_dir.is_dir():
        raise DatasetError(f"{train_dir}: missing folder (training images go in train/good)")
    train = [Sample(p, GOOD, None) for p in _images_in(train_dir)]
    if not train:
        raise DatasetError(f"{train_dir}: empty folder (no training images)")

    test_dir = folder / "test"
    if not test_dir.is_dir():
        raise DatasetError(f"{test_dir}: missing folder (test images go in test/<defect>)")
    defect_dirs = _subfolders(test_dir)
    if not defect_dirs:
        raise DatasetError(f"{test_dir}: empty folder (no test/<defect> folders)")

    # Every mask, keyed by (defect, image stem); pairing removes them, leftovers are unpaired.
    gt_dir = folder / "ground_truth"
    masks: dict[tuple[str, str], Path] = {}
    for mask_dir in _subfolders(gt_dir) if gt_dir.is_dir() else []:
        for mask in _images_in(mask_dir):
            if mask_dir.name == GOOD:
                raise DatasetError(f"{mask}: unexpected mask (good images have no masks)")
            if not mask.stem.endswith(MASK_SUFFIX):
                raise DatasetError(
                    f"{mask}: unexpected file in ground_truth (masks are named <image stem>{MASK_SUFFIX}.png)"
                )
            masks[(mask_dir.name, mask.stem[: -len(MASK_SUFFIX)])] = mask

    test: list[Sample] = []
    for defect_dir in defect_dirs:
        images = _images_in(defect_dir)
        if not images:
            raise DatasetError(f"{defect_dir}: empty folder (no test images)")
        for image in images:
            mask = None
            if defect_dir.name != GOOD:
                mask = masks.pop((defect_dir.name, image.stem), None)
                if mask is None:
                    expected = gt_dir / defect_dir.name / f"{image.stem}{MASK_SUFFIX}.png"
                    raise DatasetError(f"{image}: defect image without its mask (expected {expected})")
            test.append(Sample(image, defect_dir.name, mask))
    if masks:
        (defect, stem), mask = min(masks.items(), key=lambda item: item[1])
        raise DatasetError(f"{mask}: mask without its image (expected {test_dir / defect / stem}.png)")

    for sample in [*train, *test]:
        size = check_image(sample.path)
        if sample.mask is not None:
            mask_size = check_image(sample.mask)
            if mask_size != size:
                raise DatasetError(
                    f"{sample.mask}: mask is {mask_size[0]}x{mask_size[1]} but its image {sample.path.name} is {size[0]}x{size[1]}"
                )
    return CategoryFiles(train=train, test=test)
