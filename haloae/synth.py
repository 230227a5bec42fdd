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

Defects come from ``synthesize_anomaly``, which is also used on real images to build validation
sets from held-out train/good images (``haloae.data.make_validation_set``): ``scratch`` (thin
random curve, darker or lighter than its surroundings), ``hole`` (dark ellipse with a soft edge),
``stain`` (blurred blob of a foreign colour), ``perlin`` (a Perlin-noise-shaped region blended with
a foreign texture, as DRAEM's anomalies but local) and ``cutpaste`` (a patch moved from elsewhere,
flipped and re-lit). Each covers a few percent of the image and its mask is exact: the pixels the
defect changes visibly.
"""

from __future__ import annotations

import functools
import math
import shutil
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

SYNTH_TEXTURES = ("synth_brick", "synth_grass", "synth_gravel", "synth_weave")
SYNTH_OBJECTS = ("synth_disc", "synth_pill")
SYNTH_CATEGORIES = SYNTH_TEXTURES + SYNTH_OBJECTS
SYNTH_GRAYSCALE = ("synth_gravel",)  # written as 8-bit grayscale PNGs
ANOMALY_KINDS = ("scratch", "hole", "stain", "perlin", "cutpaste")

# Three defect types per category, chosen to be plausible for it (no colour stain on grayscale).
DEFECT_TYPES: dict[str, tuple[str, ...]] = {
    "synth_brick": ("scratch", "hole", "stain"),
    "synth_grass": ("stain", "perlin", "cutpaste"),
    "synth_gravel": ("hole", "perlin", "scratch"),
    "synth_weave": ("hole", "perlin", "cutpaste"),
    "synth_disc": ("scratch", "hole", "stain"),
    "synth_pill": ("scratch", "stain", "perlin"),
}

# Stain colours: the one used is drawn among those far enough from the image's mean colour.
_STAIN_PALETTE = np.array(
    [
        (0.42, 0.26, 0.10),  # rust brown
        (0.15, 0.35, 0.12),  # dark green
        (0.92, 0.82, 0.20),  # yellow
        (0.30, 0.15, 0.45),  # purple
        (0.10, 0.25, 0.65),  # blue
        (0.95, 0.95, 0.92),  # white
        (0.08, 0.08, 0.08),  # black (oil)
    ],
    dtype=np.float32,
)

RngLike = np.random.Generator | torch.Generator | int


# ---------------------------------------------------------------------- helpers
def _rng(gen: RngLike) -> np.random.Generator:
    """A numpy Generator from a numpy Generator, a torch.Generator (one draw) or a seed."""
    if isinstance(gen, np.random.Generator):
        return gen
    if isinstance(gen, torch.Generator):
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))
    return np.random.default_rng(gen)


def _luminance(image: np.ndarray) -> np.ndarray:
    return image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as PIL's "L"


def _is_gray(image: np.ndarray) -> bool:
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


def _far_colours(image: np.ndarray, min_distance: float) -> np.ndarray:
    """Palette colours far from the image's mean colour (in luminance for a grayscale image)."""
    mean = image.reshape(-1, 3).mean(0)
    if _is_gray(image):
        distance = np.abs(_luminance(_STAIN_PALETTE) - _luminance(mean))
    else:
        distance = np.linalg.norm(_STAIN_PALETTE - mean, axis=1)
    far = _STAIN_PALETTE[distance > min_distance]
    # No palette colour is far enough: the farthest one.
    return far if len(far) else _STAIN_PALETTE[np.argmax(distance)][None]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise, rescaled to zero mean and unit standard deviation."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (noise - noise.mean()) / (noise.std() + 1e-8)


def perlin_noise(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """2-D Perlin gradient noise in about [-0.7, 0.7] with ``cells`` lattice cells along the short side."""
    height, width = shape
    step = min(height, width) / cells
    gy, gx = int(math.ceil(height / step)) + 1, int(math.ceil(width / step)) + 1
    angles = rng.uniform(0, 2 * math.pi, (gy, gx))
    grad = np.stack([np.cos(angles), np.sin(angles)], axis=-1).astype(np.float32)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) / step
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = y - y0, x - x0

    def corner(dy: int, dx: int) -> np.ndarray:
        g = grad[y0 + dy, x0 + dx]
        return g[..., 0] * (fx - dx) + g[..., 1] * (fy - dy)

    def fade(t: np.ndarray) -> np.ndarray:
        return t * t * t * (t * (t * 6 - 15) + 10)

    uy, ux = fade(fy), fade(fx)
    top = corner(0, 0) * (1 - ux) + corner(0, 1) * ux
    bottom = corner(1, 0) * (1 - ux) + corner(1, 1) * ux
    return top * (1 - uy) + bottom * uy


def _pick_centre(
    rng: np.random.Generator, shape: tuple[int, int], margin: float, where: np.ndarray | None
) -> tuple[float, float]:
    """A defect centre: uniform over ``where`` (a boolean foreground) or over the image minus a margin."""
    height, width = shape
    if where is not None and where.any():
        ys, xs = np.nonzero(where)
        i = int(rng.integers(len(ys)))
        return float(ys[i]), float(xs[i])
    return float(rng.uniform(margin, height - margin)), float(rng.uniform(margin, width - margin))


def _blend(image: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return image * (1 - alpha[..., None]) + colour * alpha[..., None]


@functools.cache
def _skimage_texture(name: str) -> np.ndarray:
    """A 512x512 grayscale photograph shipped with scikit-image, as float32 in [0, 1] (cached)."""
    import skimage.data

    return getattr(skimage.data, name)().astype(np.float32) / 255.0


# ---------------------------------------------------------------------- defects
def _scratch(image: np.ndarray, rng: np.random.Generator, where: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape[:2]
    side = min(height, width)
    length = rng.uniform(0.25, 0.45) * side
    half_width = rng.uniform(0.5, 1.0) * max(1.0, side / 128)
    # A smooth random walk: the heading turns a little at each step, so the curve bends gently.
    y, x = _pick_centre(rng, (height, width), 0.25 * side, where)
    heading = rng.uniform(0, 2 * math.pi)
    turn = rng.normal(0, 0.04)
    steps = int(length * 2)  # half-pixel steps: no gaps in the rasterised curve
    points = []
    for _ in range(steps):
        points.append((y, x))
        turn = 0.9 * turn + rng.normal(0, 0.02)
        heading += turn
        y = min(max(y + 0.5 * math.sin(heading), 0), height - 1)
        x = min(max(x + 0.5 * math.cos(heading), 0), width - 1)
    track = np.ones((height, width), dtype=bool)
    pts = np.round(np.array(points)).astype(int)
    track[pts[:, 0], pts[:, 1]] = False
    distance = ndimage.distance_transform_edt(track).astype(np.float32)
    alpha = np.clip(half_width + 0.5 - distance, 0.0, 1.0)  # 1 px anti-aliased edge
    mask = alpha >= 0.2  # the visible fringe too: a thin scratch is mostly edge
    # Darker on bright surfaces, lighter on dark ones: always visible.
    local = float(_luminance(image)[mask].mean())
    colour = np.full(3, rng.uniform(0.05, 0.15) if local > 0.45 else rng.uniform(0.85, 0.97), dtype=np.float32)
    strength = rng.uniform(0.8, 1.0)
    return _blend(image, colour, alpha * strength), mask


def _hole(image: np.ndarray, rng: np.random.Generator, where: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape[:2]
    side = min(height, width)
    cy, cx = _pick_centre(rng, (height, width), 0.12 * side, where)
    a, b = np.maximum(rng.uniform(0.035, 0.075, size=2) * side, 2.0)  # >= 2 px: small images too
    theta = rng.uniform(0, math.pi)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u = (x - cx) * math.cos(theta) + (y - cy) * math.sin(theta)
    v = -(x - cx) * math.sin(theta) + (y - cy) * math.cos(theta)
    radius = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    soft = 1.5 / min(a, b)  # soft edge about 1.5 px wide, whatever the hole's size
    alpha = np.clip((1 + soft / 2 - radius) / soft, 0.0, 1.0)
    mask = alpha >= 0.3
    # The inside is dark with a faint lighter rim (a torn edge catching the light).
    depth = np.clip(1 - radius, 0, 1)
    colour = (rng.uniform(0.03, 0.1) + 0.12 * (1 - depth)[..., None]) * np.array([1.0, 0.95, 0.9], dtype=np.float32)
    out = image * (1 - alpha[..., None]) + colour * alpha[..., None]
    return out, mask


def _stain(image: np.ndarray, rng: np.random.Generator, where: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape[:2]
    side = min(height, width)
    cy, cx = _pick_centre(rng, (height, width), 0.15 * side, where)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    # An irregular blob: a few Gaussian bumps around the centre, thresholded, then softened.
    field = np.zeros((height, width), dtype=np.float32)
    for _ in range(int(rng.integers(3, 6))):
        oy, ox = rng.normal(0, 0.04 * side, size=2)
        sigma = max(rng.uniform(0.03, 0.06) * side, 1.5)  # >= 1.5 px: small images too
        field += np.exp(-((y - cy - oy) ** 2 + (x - cx - ox) ** 2) / (2 * sigma**2))
    shape = field > 0.6 * field.max()
    alpha = ndimage.gaussian_filter(shape.astype(np.float32), max(0.5, 0.8 * side / 128))  # soft rim
    far = _far_colours(image, 0.45 if not _is_gray(image) else 0.3)
    colour = far[rng.integers(len(far))]
    opacity = rng.uniform(0.7, 0.9)
    out = _blend(image, colour, alpha * opacity)
    return out, alpha >= 0.25


def _foreign_texture(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """A crop of a photograph, contrast-stretched and tinted away from the image's colour."""
    height, width = image.shape[:2]
    source = _skimage_texture(("brick", "grass", "gravel")[int(rng.integers(3))])
    # Tiled when the image is larger than the 512x512 photograph (full-resolution MVTec images).
    source = np.tile(source, (math.ceil(height / source.shape[0]), math.ceil(width / source.shape[1])))
    top, left = rng.integers(0, source.shape[0] - height + 1), rng.integers(0, source.shape[1] - width + 1)
    crop = source[top : top + height, left : left + width]
    crop = (crop - crop.mean()) / (crop.std() + 1e-6)
    far = _far_colours(image, 0.45 if not _is_gray(image) else 0.3)
    tint = far[rng.integers(len(far))]
    return np.clip(tint + 0.18 * crop[..., None], 0.0, 1.0).astype(np.float32)


def _perlin(image: np.ndarray, rng: np.random.Generator, where: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape[:2]
    side = min(height, width)
    cy, cx = _pick_centre(rng, (height, width), 0.18 * side, where)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    # Perlin noise thresholded inside a disc around the centre: an irregular, local region
    # (DRAEM thresholds it over the whole image, which makes anomalies too large for a few %).
    envelope = np.sqrt((y - cy) ** 2 + (x - cx) ** 2) / (rng.uniform(0.11, 0.16) * side)
    for _ in range(8):
        noise = perlin_noise((height, width), int(rng.integers(4, 9)), rng)
        region = (noise - 0.25 * envelope**2) > 0.0
        region &= envelope < 1.0
        if region.sum() >= 0.005 * height * width:
            break
    else:  # noise gave too little inside the disc: fall back to the disc itself
        region = envelope < 0.6
    alpha = region.astype(np.float32)
    foreign = _foreign_texture(rng, image)
    beta = rng.uniform(0.6, 0.85)
    out = image * (1 - beta * alpha[..., None]) + foreign * beta * alpha[..., None]
    return out, region


def _cutpaste(image: np.ndarray, rng: np.random.Generator, where: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape[:2]
    side = min(height, width)
    ph, pw = (rng.uniform(0.12, 0.2, size=2) * side).astype(int).clip(3)
    cy, cx = _pick_centre(rng, (height, width), 0.12 * side, where)
    top = int(np.clip(cy - ph / 2, 0, height - ph))
    left = int(np.clip(cx - pw / 2, 0, width - pw))
    # The source is at least a patch size away, so the moved content does not match its new place.
    for _ in range(20):
        sy, sx = int(rng.integers(0, height - ph + 1)), int(rng.integers(0, width - pw + 1))
        if abs(sy - top) >= ph or abs(sx - left) >= pw:
            break
    patch = image[sy : sy + ph, sx : sx + pw].copy()
    patch = patch[::-1] if rng.random() < 0.5 else patch[:, ::-1]  # flipped: breaks the texture
    # Re-lit with a colour cast: on busy textures a moved patch alone can be invisible.
    gain = rng.choice([0.6, 1.45]) * rng.uniform(0.85, 1.15, size=3)
    patch = np.clip(patch * gain.astype(np.float32), 0.0, 1.0)
    out = image.copy()
    out[top : top + ph, left : left + pw] = patch
    mask = np.zeros((height, width), dtype=bool)
    mask[top : top + ph, left : left + pw] = True
    return out, mask


_DEFECTS = {"scratch": _scratch, "hole": _hole, "stain": _stain, "perlin": _perlin, "cutpaste": _cutpaste}


def synthesize_anomaly_array(
    image: np.ndarray, gen: RngLike, kind: str | None = None, where: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """``synthesize_anomaly`` on a numpy image ``(H, W, 3)`` float in [0, 1]; mask is ``(H, W)`` bool."""
    rng = _rng(gen)
    if kind is None:
        kind = ANOMALY_KINDS[int(rng.integers(len(ANOMALY_KINDS)))]
    if kind not in _DEFECTS:
        raise ValueError(f"kind: unknown anomaly {kind!r}; valid: {', '.join(ANOMALY_KINDS)}")
    image = np.asarray(image, dtype=np.float32)
    gray = _is_gray(image)
    for _ in range(10):  # a redraw only when a defect landed where it cannot be seen (rare)
        out, mask = _DEFECTS[kind](image, rng, where)
        out = np.clip(out, 0.0, 1.0).astype(np.float32)
        if gray:  # a grayscale category stays grayscale: its defects change luminance only
            out = np.repeat(_luminance(out)[..., None], 3, axis=-1)
        # Keep masks exact: pixels the defect did not change visibly (a dark scratch over an
        # already dark pixel, a re-lit patch of saturated pixels) are not anomalous ground truth.
        visible = mask & (np.abs(out - image).max(axis=-1) > 2.0 / 255)
        if visible.any():
            return out, visible, kind
    return out, mask, kind


def synthesize_anomaly(
    image: torch.Tensor, gen: RngLike, kind: str | None = None, where: torch.Tensor | np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Paint one realistic defect on ``image`` ``(3, H, W)`` float in [0, 1].

    Returns ``(image, mask, kind)``: the defective copy ``(3, H, W)``, its exact mask ``(1, H, W)``
    float in {0, 1} (never empty) and the kind painted. ``gen`` is a ``numpy.random.Generator``, a
    ``torch.Generator`` (one draw seeds a numpy generator) or an int seed; the result depends only
    on it. ``kind`` is one of ``ANOMALY_KINDS`` (random when None). ``where`` is an optional boolean
    ``(H, W)`` region the defect is centred in (an object's foreground).
    """
    array = image.detach().permute(1, 2, 0).cpu().numpy()
    region = where.cpu().numpy().astype(bool) if isinstance(where, torch.Tensor) else where
    out, mask, kind = synthesize_anomaly_array(array, gen, kind, region)
    out_t = torch.from_numpy(out).permute(2, 0, 1).contiguous().to(image.dtype)
    return out_t, torch.from_numpy(mask.astype(np.float32))[None].to(image.dtype), kind


# ---------------------------------------------------------------------- normal images
def _photo_texture(name: str, tint: Sequence[float]):
    def render(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray | None]:
        source = _skimage_texture(name)
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
    return _RENDERERS[category](_rng(rng), size)


# ---------------------------------------------------------------------- writing
def _save(image: np.ndarray, path: Path, grayscale: bool) -> None:
    pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    pil = Image.fromarray(pixels)
    (pil.convert("L") if grayscale else pil).save(path, format="PNG")


def _save_mask(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255).save(path, format="PNG")


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
        root = out / name
        if root.exists():
            if not overwrite:
                raise FileExistsError(f"{root}: already exists (pass overwrite=True to replace it)")
            shutil.rmtree(root)
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
            for i in range(n_test_defect_per_type):
                image, foreground = render_normal(name, rng, size)
                if gray:  # paint on what will be written, so the mask matches the saved pixels
                    image = np.repeat(_luminance(image)[..., None], 3, axis=-1)
                image, mask, _ = synthesize_anomaly_array(image, rng, defect, foreground)
                _save(image, folder / f"{i:03d}.png", gray)
                _save_mask(mask, masks / f"{i:03d}_mask.png")
    return names
