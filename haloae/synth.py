# SPDX-License-Identifier: Apache-2.0
"""A synthetic dataset in the MVTec AD layout, for the demo and the tests (seconds, deterministic).

``generate(out_dir)`` writes, per category::

    <out>/<category>/train/good/000.png ...
    <out>/<category>/test/good/000.png ...
    <out>/<category>/test/<defect>/000.png ...
    <out>/<category>/ground_truth/<defect>/000_mask.png ...   (0/255, exact defect pixels)

Categories (names start with ``synth_`` so they never collide with the 15 MVTec names):

- textures made from the 512x512 photographs that ship inside scikit-image (offline):
  ``synth_brick`` (``skimage.data.brick``), ``synth_grass`` (``grass``), ``synth_gravel``
  (``gravel``, written as grayscale, like MVTec's grid/screw/zipper); each sample is a random crop
  with random flips, so no two images are the same;
- a procedural texture, ``synth_weave``: over/under threads with fibre noise, at a random phase;
- two procedural objects on a plain background with slight pose and colour variation:
  ``synth_disc`` (a bottle-cap-like disc with a knurled rim) and ``synth_pill`` (a two-tone capsule).

Defects come from ``haloae.defects.synthesize_anomaly``, three kinds per category
(``DEFECT_TYPES``). ``generate`` writes each category into a hidden temporary folder next to its
target and renames it into place only when every file is written, so a run that fails midway (a
full disk) leaves no partial category that a later run would take for a complete one.
"""

from __future__ import annotations

import math
import shutil
import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from haloae.categories import DEFECT_TYPES, SYNTH_CATEGORIES, SYNTH_GRAYSCALE
from haloae.defects import RngLike, luminance, numpy_rng, skimage_texture, synthesize_anomaly_array
from haloae.errors import DatasetError, describe


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise, rescaled to zero mean and unit standard deviation."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (noise - noise.mean()) / (noise.std() + 1e-8)


# ---------------------------------------------------------------------- normal images
def _photo_texture(name: str, tint: Sequence[float]):
    def render(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray | None]:
        source = skimage_texture(name)
        crop = int(min(source.shape[0], 256 * rng.uniform(0.92, 1.0)))  # slight scale variation
        top, left = rng.integers(0, source.shape[0] - crop + 1, size=2)
        patch = source[top : top + crop, left : left + crop]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        if rng.random() < 0.5:
            patch = patch[::-1]
        pil = Image.fromarray(np.round(patch * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR)
        gray = np.asarray(pil, dtype=np.float32) / 255.0
        gain = rng.uniform(0.95, 1.05)
        return np.clip(gray[..., None] * np.asarray(tint, dtype=np.float32) * gain, 0, 1), None

    return render


def _weave(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    period = size / 16  # 16 threads across the image at any size
    oy, ox = rng.uniform(0, 2 * period, size=2)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    fy, fx = (y + oy) / period, (x + ox) / period
    over = (np.floor(fy) + np.floor(fx)) % 2 == 0  # which thread is on top in this cell
    across = np.where(over, np.sin(np.pi * (fy % 1)), np.sin(np.pi * (fx % 1)))  # round thread profile
    fibres = np.where(over, _smooth_noise(rng, (size, size), (0.4, 3.0)), _smooth_noise(rng, (size, size), (3.0, 0.4)))
    shade = 0.3 + 0.6 * np.sqrt(np.clip(across, 0, 1)) + 0.04 * fibres
    tint = np.array([0.85, 0.74, 0.55], dtype=np.float32) * rng.uniform(0.96, 1.04)
    return np.clip(shade[..., None] * tint, 0, 1).astype(np.float32), None


def _disc(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2 + rng.normal(0, 0.01 * size, size=2)
    radius_px = 0.33 * size * rng.uniform(0.98, 1.02)
    r = np.sqrt((y - cy) ** 2 + (x - cx) ** 2)
    angle = np.arctan2(y - cy, x - cx) + rng.uniform(0, 2 * np.pi)  # the pose: rotation of the knurl
    background = np.array([0.78, 0.78, 0.80], dtype=np.float32) + 0.008 * _smooth_noise(rng, (size, size), 2)[..., None]
    background *= np.clip(1 - 0.25 * np.exp(-((r - radius_px) ** 2) / (2 * (0.04 * size) ** 2)), 0, 1)[
        ..., None
    ]  # shadow
    base = np.array([0.72, 0.18, 0.14], dtype=np.float32) + rng.normal(0, 0.015, 3).astype(np.float32)
    rel = r / radius_px
    shade = np.ones_like(r)
    rim = rel > 0.84
    shade[rim] = 0.78 + 0.1 * np.sin(48 * angle[rim])  # knurled rim
    shade *= 1 - 0.12 * np.exp(-((rel - 0.5) ** 2) / 0.002)  # a pressed ring
    shade += 0.25 * np.exp(
        -((x - cx + 0.3 * radius_px) ** 2 + (y - cy + 0.3 * radius_px) ** 2) / (2 * (0.25 * radius_px) ** 2)
    )
    disc = np.clip(base * shade[..., None], 0, 1)
    alpha = np.clip(radius_px - r + 0.5, 0, 1)[..., None]
    image = disc * alpha + background * (1 - alpha)
    return image.astype(np.float32), rel < 0.8


def _pill(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2 + rng.normal(0, 0.012 * size, size=2)
    theta = math.radians(rng.uniform(-6, 6))
    length, half_width = 0.62 * size, 0.15 * size
    u = (x - cx) * math.cos(theta) + (y - cy) * math.sin(theta)  # along the capsule
    v = -(x - cx) * math.sin(theta) + (y - cy) * math.cos(theta)  # across it
    du = np.maximum(np.abs(u) - (length / 2 - half_width), 0)
    dist = np.sqrt(du**2 + v**2)  # distance to the capsule's axis segment
    height = np.sqrt(np.clip(1 - (dist / half_width) ** 2, 0, 1))  # a round body, lit from above
    left = np.array([0.92, 0.88, 0.78], dtype=np.float32) + rng.normal(0, 0.01, 3).astype(np.float32)
    right = np.array([0.80, 0.28, 0.22], dtype=np.float32) + rng.normal(0, 0.01, 3).astype(np.float32)
    half = np.clip(u / 1.5 + 0.5, 0, 1)[..., None]  # a 1.5 px seam between the two halves
    body = (left * (1 - half) + right * half) * (0.55 + 0.45 * height)[..., None]
    background = np.array([0.12, 0.12, 0.14], dtype=np.float32) + 0.01 * _smooth_noise(rng, (size, size), 2)[..., None]
    alpha = np.clip(half_width - dist + 0.5, 0, 1)[..., None]
    image = body * alpha + background * (1 - alpha)
    return np.clip(image, 0, 1).astype(np.float32), dist < 0.75 * half_width


_RENDERERS = {
    "synth_brick": _photo_texture("brick", (1.0, 0.72, 0.62)),
    "synth_grass": _photo_texture("grass", (0.62, 0.92, 0.45)),
    "synth_gravel": _photo_texture("gravel", (1.0, 1.0, 1.0)),
    "synth_weave": _weave,
    "synth_disc": _disc,
    "synth_pill": _pill,
}


def render_normal(category: str, rng: RngLike, size: int = 128) -> tuple[np.ndarray, np.ndarray | None]:
    """One defect-free image ``(size, size, 3)`` float in [0, 1] and its foreground (objects) or None."""
    if category not in _RENDERERS:
        raise ValueError(f"category: unknown synthetic category {category!r}; valid: {', '.join(SYNTH_CATEGORIES)}")
    return _RENDERERS[category](numpy_rng(rng), size)


# ---------------------------------------------------------------------- writing
def _save(image: np.ndarray, path: Path, grayscale: bool) -> None:
    pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    pil = Image.fromarray(pixels)
    (pil.convert("L") if grayscale else pil).save(path, format="PNG")


def _save_mask(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255).save(path, format="PNG")


def _write_category(root: Path, name: str, size: int, counts: tuple[int, int, int], seed: int) -> None:
    """Every file of category ``name`` under the new folder ``root``; ``counts`` = (train, test good, per defect)."""
    n_train, n_test_good, n_per_defect = counts
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(name.encode())]))
    gray = name in SYNTH_GRAYSCALE
    for split, count in (("train", n_train), ("test", n_test_good)):
        folder = root / split / "good"
        folder.mkdir(parents=True)
        for i in range(count):
            image, _ = render_normal(name, rng, size)
            _save(image, folder / f"{i:03d}.png", gray)
    for defect in DEFECT_TYPES[name]:
        folder, masks = root / "test" / defect, root / "ground_truth" / defect
        folder.mkdir(parents=True)
        masks.mkdir(parents=True)
        for i in range(n_per_defect):
            image, foreground = render_normal(name, rng, size)
            if gray:  # paint on what will be written, so the mask matches the saved pixels
                image = np.repeat(luminance(image)[..., None], 3, axis=-1)
            image, mask, _ = synthesize_anomaly_array(image, rng, defect, foreground)
            _save(image, folder / f"{i:03d}.png", gray)
            _save_mask(mask, masks / f"{i:03d}_mask.png")


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename the complete ``staging`` folder to ``target``, replacing an existing one."""
    if not target.exists():
        staging.rename(target)
        return
    retired = staging.with_name(staging.name.replace(".partial-", ".old-"))
    target.rename(retired)
    try:
        staging.rename(target)
    except OSError:
        retired.rename(target)  # the old category stays in place
        raise
    shutil.rmtree(retired, ignore_errors=True)


def generate(
    out_dir: str | Path,
    categories: Sequence[str] | None = None,
    size: int = 128,
    n_train: int = 30,
    n_test_good: int = 10,
    n_test_defect_per_type: int = 4,
    seed: int = 0,
    overwrite: bool = True,
) -> list[str]:
    """Write a synthetic MVTec-format dataset under ``out_dir``; returns the categories written.

    Deterministic: the same arguments give byte-identical PNGs. Each category draws from its own
    stream (seeded by ``seed`` and a hash of its name), so a subset of categories gives the same
    images as the full set. An existing ``<out_dir>/<category>`` folder is replaced when
    ``overwrite`` (the names are ``synth_*``, never a real MVTec category), else it is an error.

    Each category is written into ``<out_dir>/.<category>.partial-<random>`` and renamed to its
    name only when complete; on any failure that folder is removed and the error is raised (a
    write failure as a one-line ``DatasetError`` naming the category folder), so ``out_dir`` never
    holds a partial category and a later call writes it again.
    """
    names = list(SYNTH_CATEGORIES if categories is None else categories)
    for name in names:
        if name not in _RENDERERS:
            raise ValueError(f"categories: unknown synthetic category {name!r}; valid: {', '.join(SYNTH_CATEGORIES)}")
    if size < 16:
        raise ValueError(f"size: must be >= 16, got {size}")
    if min(n_train, n_test_good, n_test_defect_per_type) < 1:
        raise ValueError("n_train, n_test_good and n_test_defect_per_type must each be >= 1")
    out = Path(out_dir)
    for name in names:
        target = out / name
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target}: already exists (pass overwrite=True to replace it)")
        staging = out / f".{name}.partial-{uuid.uuid4().hex[:12]}"
        try:
            staging.mkdir(parents=True)
            _write_category(staging, name, size, (n_train, n_test_good, n_test_defect_per_type), seed)
            _move_into_place(staging, target)
        except OSError as exc:
            raise DatasetError(f"{target}: could not write the synthetic category ({describe(exc)})") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already when the rename succeeded
    return names
