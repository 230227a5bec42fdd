# SPDX-License-Identifier: Apache-2.0
"""Synthetic defects with exact masks, painted on any image: the synthetic test sets and the validation sets.

``synthesize_anomaly(image, gen, kind)`` paints one defect on a ``(3, H, W)`` image in [0, 1] and
returns its mask. It builds the defect types of ``haloae.synth``'s categories and, on real images,
the validation sets made from held-out train/good images (``haloae.data.make_validation_set``).
The kinds: ``scratch`` (thin random curve, darker or lighter than its surroundings), ``hole``
(dark ellipse with a soft edge), ``stain`` (blurred blob of a foreign colour), ``perlin`` (a
Perlin-noise-shaped region blended with a foreign texture, as DRAEM's anomalies but local) and
``cutpaste`` (a patch moved from elsewhere, flipped and re-lit). Each covers a few percent of the
image and its mask is exact: the pixels the defect changes visibly.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from scipy import ndimage

from haloae.choices import CLASSIC_ANOMALIES

ANOMALY_KINDS = CLASSIC_ANOMALIES  # the kinds painted here (haloae.realistic_defects has the validation set's)

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
def numpy_rng(gen: RngLike) -> np.random.Generator:
    """A numpy Generator from a numpy Generator, a torch.Generator (one draw) or a seed."""
    if isinstance(gen, np.random.Generator):
        return gen
    if isinstance(gen, torch.Generator):
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))
    return np.random.default_rng(gen)


def luminance(image: np.ndarray) -> np.ndarray:
    return image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as PIL's "L"


def _is_gray(image: np.ndarray) -> bool:
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


def _far_colours(image: np.ndarray, min_distance: float) -> np.ndarray:
    """Palette colours far from the image's mean colour (in luminance for a grayscale image)."""
    mean = image.reshape(-1, 3).mean(0)
    if _is_gray(image):
        distance = np.abs(luminance(_STAIN_PALETTE) - luminance(mean))
    else:
        distance = np.linalg.norm(_STAIN_PALETTE - mean, axis=1)
    far = _STAIN_PALETTE[distance > min_distance]
    # No palette colour is far enough: the farthest one.
    return far if len(far) else _STAIN_PALETTE[np.argmax(distance)][None]


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
def skimage_texture(name: str) -> np.ndarray:
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
    local = float(luminance(image)[mask].mean())
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
    source = skimage_texture(("brick", "grass", "gravel")[int(rng.integers(3))])
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
    rng = numpy_rng(gen)
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
            out = np.repeat(luminance(out)[..., None], 3, axis=-1)
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
