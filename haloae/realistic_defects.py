# SPDX-License-Identifier: Apache-2.0
"""Validation anomalies that look like real defects, not like the training augmentation (CutPaste).

``synthesize_validation_anomaly(image, gen, kind, donor)`` paints one defect of any
``VALIDATION_ANOMALIES`` kind; ``haloae.data.make_validation_set`` takes the kinds of
``train.val_anomalies`` in turn. The realistic kinds (``REALISTIC_ANOMALIES``):

* ``perlin_texture``: a Perlin-noise region filled, part-transparent, with a foreign photograph
  (DRAEM, Zavrtanik et al., ICCV 2021);
* ``poisson_blend``: a patch of another good image (``donor``) pasted elsewhere and Poisson-blended
  so that its edges vanish and only its misplaced structure remains (NSA, Schlüter et al., ECCV 2022);
* ``crack``: a thin jagged crack or scratch, a little darker or lighter, sometimes branched;
* ``faint_stain``: an irregular blob that shifts the colour by a few percent, darker at its rim.

Sizes are drawn log-uniform between ``AREA_RANGE`` (MVTec's masks on bottle cover 0.6-27% of the
image, median 5%), so small and large defects are equally represented per decade. Masks are
exact: a pixel is in the mask if and only if the defect changed it visibly (> 2/255 in some
channel); pixels outside the mask are the input's, bit for bit. The classic kinds
(``haloae.defects``: the synthetic categories' defects) keep their own behaviour.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from scipy import ndimage, sparse
from scipy.sparse.linalg import splu

from haloae.choices import REALISTIC_ANOMALIES, VALIDATION_ANOMALIES
from haloae.defects import ANOMALY_KINDS, RngLike, luminance, numpy_rng, perlin_noise, synthesize_anomaly

AREA_RANGE = (0.004, 0.2)  # defect area as a fraction of the image, log-uniform
VISIBLE = 2.0 / 255  # the smallest change that counts as part of the defect (one 8-bit level is not)
_COLOUR_PHOTOS = ("coffee", "chelsea", "immunohistochemistry", "rocket", "astronaut")  # shipped with skimage
_GRAY_PHOTOS = ("brick", "grass", "gravel")


@functools.cache
def _photograph(name: str) -> np.ndarray:
    """A photograph shipped with scikit-image as float32 ``(H, W, 3)`` in [0, 1] (cached)."""
    import skimage.data

    array = getattr(skimage.data, name)().astype(np.float32) / 255.0
    return np.repeat(array[..., None], 3, axis=-1) if array.ndim == 2 else array[..., :3]


def defect_area(rng: np.random.Generator, shape: tuple[int, int]) -> int:
    """A defect's area in pixels: log-uniform over ``AREA_RANGE`` of the image, at least 4 pixels."""
    low, high = np.log(AREA_RANGE)
    return max(4, round(math.exp(rng.uniform(low, high)) * shape[0] * shape[1]))


def _centre(rng: np.random.Generator, shape: tuple[int, int], radius: float, where: np.ndarray | None):
    """A centre inside ``where`` (a boolean foreground) or anywhere the defect fits in the image."""
    if where is not None and where.any():
        ys, xs = np.nonzero(where)
        i = int(rng.integers(len(ys)))
        return float(ys[i]), float(xs[i])
    height, width = shape
    my, mx = min(radius, height / 2), min(radius, width / 2)
    return float(rng.uniform(my, height - my)), float(rng.uniform(mx, width - mx))


def object_foreground(image: np.ndarray) -> np.ndarray | None:
    """Where an object sits on a plain background (MVTec's objects): the pixels far from the
    border's colour, holes filled; None when the border is busy or nothing stands out (a texture)."""
    border = np.concatenate([image[:3].reshape(-1, 3), image[-3:].reshape(-1, 3),
                             image[:, :3].reshape(-1, 3), image[:, -3:].reshape(-1, 3)])  # fmt: skip
    if float(border.std(axis=0).max()) > 0.08:
        return None
    far = np.abs(image - np.median(border, axis=0)).max(axis=-1) > 0.15
    foreground = ndimage.binary_fill_holes(ndimage.binary_opening(far, iterations=2))
    return foreground if 0.05 < foreground.mean() < 0.95 else None


def _blob_site(rng: np.random.Generator, shape: tuple[int, int], where: np.ndarray | None):
    """Where a blob-shaped defect goes: ``(area, radius, distance)``, its area in pixels
    (``defect_area``), the radius of a disc of that area, and every pixel's distance from its centre."""
    height, width = shape
    area = defect_area(rng, shape)
    radius = math.sqrt(area / math.pi)
    cy, cx = _centre(rng, shape, radius, where)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return area, radius, np.sqrt((y - cy) ** 2 + (x - cx) ** 2)


def _largest_region(score: np.ndarray, area: int) -> np.ndarray:
    """The ``area`` pixels of highest ``score``: one irregular region of exactly that size."""
    order = np.argsort(score, axis=None, kind="stable")[::-1][:area]
    region = np.zeros(score.size, dtype=bool)
    region[order] = True
    return region.reshape(score.shape)


def _foreign_crop(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A random crop of a photograph (colour, or a grey texture tinted), scaled to ``shape``."""
    names = _COLOUR_PHOTOS + _GRAY_PHOTOS
    photo = _photograph(names[int(rng.integers(len(names)))])
    if np.array_equal(photo[..., 0], photo[..., 1]):
        photo = photo * rng.uniform(0.4, 1.0, size=3).astype(np.float32)  # grey texture: a random tint
    height, width = shape
    scale = rng.uniform(0.5, 1.5) * max(height / photo.shape[0], width / photo.shape[1], 0.25)
    side_y, side_x = min(photo.shape[0], math.ceil(height / scale)), min(photo.shape[1], math.ceil(width / scale))
    top, left = int(rng.integers(0, photo.shape[0] - side_y + 1)), int(rng.integers(0, photo.shape[1] - side_x + 1))
    crop = photo[top : top + side_y, left : left + side_x]
    zoom = (height / crop.shape[0], width / crop.shape[1], 1)
    return np.clip(ndimage.zoom(crop, zoom, order=1), 0, 1)[:height, :width]


# ---------------------------------------------------------------------- defects
def _perlin_texture(image, rng, where, donor) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape[:2]
    area, radius, distance = _blob_site(rng, (height, width), where)
    distance = distance / (1.5 * radius)
    # Perlin noise at a scale of the defect (DRAEM draws 2^0..2^5 cells), kept near the centre.
    cells = max(1, round(min(height, width) / (radius * rng.uniform(0.5, 2.0))))
    region = _largest_region(perlin_noise((height, width), min(cells, 64), rng) - 0.5 * distance**2, area)
    foreign = _foreign_crop(rng, (height, width))
    opacity = rng.uniform(0.25, 1.0)  # DRAEM: 1 - beta, beta in [0, 0.8)
    alpha = region[..., None] * opacity
    return image * (1 - alpha) + foreign * alpha, region


def _poisson_blend(image, rng, where, donor) -> tuple[np.ndarray, np.ndarray]:
    """NSA's patch: a rectangle of the donor, resized a little, blended by a Poisson solve."""
    source = image if donor is None else donor
    height, width = image.shape[:2]
    area = defect_area(rng, (height, width))
    aspect = math.exp(rng.uniform(math.log(0.4), math.log(2.5)))
    ph = int(np.clip(round(math.sqrt(area * aspect)), 3, height - 2))
    pw = int(np.clip(round(area / ph), 3, width - 2))
    cy, cx = _centre(rng, (height, width), max(ph, pw) / 2, where)
    top, left = int(np.clip(cy - ph / 2, 1, height - ph - 1)), int(np.clip(cx - pw / 2, 1, width - pw - 1))
    # the source rectangle: scaled by 0.8-1.25, from anywhere but the destination's place
    scale = rng.uniform(0.8, 1.25)
    sh, sw = min(height, max(3, round(ph * scale))), min(width, max(3, round(pw * scale)))
    for _ in range(20):
        sy, sx = int(rng.integers(0, height - sh + 1)), int(rng.integers(0, width - sw + 1))
        if abs(sy - top) >= ph / 2 or abs(sx - left) >= pw / 2:
            break
    patch = ndimage.zoom(source[sy : sy + sh, sx : sx + sw], (ph / sh, pw / sw, 1), order=1)[:ph, :pw]
    patch = np.pad(patch, ((0, ph - patch.shape[0]), (0, pw - patch.shape[1]), (0, 0)), mode="edge")
    window = image[top - 1 : top + ph + 1, left - 1 : left + pw + 1]
    blended = poisson_clone(window, patch)
    out = image.copy()
    out[top : top + ph, left : left + pw] = blended
    region = np.zeros((height, width), dtype=bool)
    region[top : top + ph, left : left + pw] = True
    return out, region


def poisson_clone(window: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """``patch`` ``(h, w, C)`` blended into ``window`` ``(h + 2, w + 2, C)`` (its 1-pixel frame is the
    boundary): the solution of Laplace(f) = Laplace(patch) inside, f = window on the frame (Pérez
    et al., SIGGRAPH 2003, seamless cloning with the source's gradients)."""
    h, w = patch.shape[:2]
    n = h * w
    index = np.arange(n).reshape(h, w)
    rows, cols, vals = [np.arange(n)], [np.arange(n)], [np.full(n, 4.0)]
    rhs = 4 * patch.reshape(n, -1).astype(np.float64)
    padded = np.pad(patch, ((1, 1), (1, 1), (0, 0)), mode="edge").astype(np.float64)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        neighbour = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w].reshape(n, -1)
        rhs -= neighbour  # the guidance: the patch's own Laplacian
        ys, xs = np.mgrid[0:h, 0:w]
        ny, nx = (ys + dy).ravel(), (xs + dx).ravel()
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        rows.append(index.ravel()[inside])
        cols.append(index[ny[inside], nx[inside]])
        vals.append(np.full(int(inside.sum()), -1.0))
        # neighbours on the frame are known: they move to the right-hand side
        frame = window[1 + ny[~inside], 1 + nx[~inside]]
        np.add.at(rhs, index.ravel()[~inside], frame.astype(np.float64))
    matrix = sparse.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    solution = splu(matrix).solve(rhs)
    return np.clip(solution.reshape(h, w, -1), 0.0, 1.0).astype(np.float32)


def _crack(image, rng, where, donor) -> tuple[np.ndarray, np.ndarray]:
    """A jagged random walk (a crack), or a straighter one (a scratch), 1-3 px wide, with branches."""
    height, width = image.shape[:2]
    side = min(height, width)
    length = math.exp(rng.uniform(math.log(0.08), math.log(0.5))) * side
    jagged = rng.random() < 0.5
    # at least about 2 px wide at the model's size: a thinner line vanishes in the backbone's first
    # stride-2 layers (1-px cracks scored at chance, image AUROC 50, in bench/proxy.py on bottle)
    half_width = rng.uniform(0.6, 1.5) * max(1.0, side / 256)
    y, x = _centre(rng, (height, width), 0.1 * side, where)
    track = np.ones((height, width), dtype=bool)
    walks = [(y, x, rng.uniform(0, 2 * math.pi), length)]
    while walks:
        y, x, heading, remaining = walks.pop()
        turn = 0.0
        for _ in range(int(remaining * 2)):  # half-pixel steps: no gaps
            track[int(round(y)), int(round(x))] = False
            if jagged:
                heading += rng.normal(0, 0.35) if rng.random() < 0.15 else 0.0
            else:
                turn = 0.9 * turn + rng.normal(0, 0.01)
                heading += turn
            y = min(max(y + 0.5 * math.sin(heading), 0), height - 1)
            x = min(max(x + 0.5 * math.cos(heading), 0), width - 1)
            if jagged and len(walks) < 3 and rng.random() < 0.01:
                walks.append((y, x, heading + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0), remaining * 0.4))
    distance = ndimage.distance_transform_edt(track).astype(np.float32)
    alpha = np.clip(half_width + 0.5 - distance, 0.0, 1.0)
    # darker (a crack's shadow) or lighter (a scratch catching the light) by 25-60% of the way, mostly
    # (4 in 5) away from the surface's own brightness: a shadow on a dark surface (bottle's) is lost
    strength = rng.uniform(0.25, 0.6)
    surface = float(luminance(image)[alpha > 0].mean()) if (alpha > 0).any() else 0.5
    darker = (surface > 0.5) == (rng.random() < 0.8)
    target = np.zeros(3, np.float32) if darker else np.ones(3, np.float32)
    return image + (target - image) * (alpha * strength)[..., None], alpha > 0


def _faint_stain(image, rng, where, donor) -> tuple[np.ndarray, np.ndarray]:
    """A low-contrast blob: a few percent of colour shift, a darker rim where a drop dried."""
    height, width = image.shape[:2]
    area, radius, distance = _blob_site(rng, (height, width), where)
    distance = distance / radius
    cells = max(1, round(min(height, width) / (2 * radius)))
    region = _largest_region(0.4 * perlin_noise((height, width), min(cells, 64), rng) - distance, area)
    soft = ndimage.gaussian_filter(region.astype(np.float32), max(0.5, 0.15 * radius))
    rim = np.clip(soft * (1 - soft) * 4, 0, 1)  # 1 halfway up the soft edge, 0 inside and outside
    shade = rng.uniform(0.04, 0.12)  # a few percent: as subtle as a water mark
    direction = rng.normal(0, 1, 3).astype(np.float32)
    direction = -np.abs(direction) if rng.random() < 0.6 else direction  # mostly darker
    colour = shade * direction / np.linalg.norm(direction)
    change = (soft + 0.5 * rim)[..., None] * colour * math.sqrt(3)
    return image + change, soft > 0


_REALISTIC = {
    "perlin_texture": _perlin_texture,
    "poisson_blend": _poisson_blend,
    "crack": _crack,
    "faint_stain": _faint_stain,
}
assert tuple(_REALISTIC) == REALISTIC_ANOMALIES


def realistic_anomaly_array(
    image: np.ndarray, gen: RngLike, kind: str, where: np.ndarray | None = None, donor: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One realistic defect on ``(H, W, 3)`` float in [0, 1]: ``(image, mask)``, the mask exact."""
    if kind not in _REALISTIC:
        raise ValueError(f"kind: unknown realistic anomaly {kind!r}; valid: {', '.join(REALISTIC_ANOMALIES)}")
    rng = numpy_rng(gen)
    image = np.asarray(image, dtype=np.float32)
    gray = bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))
    for _ in range(10):  # a redraw only when nothing visible was painted (a crack along a black border)
        out, region = _REALISTIC[kind](image, rng, where, donor)
        out = np.clip(out, 0.0, 1.0).astype(np.float32)
        if gray:  # a grayscale category stays grayscale
            out = np.repeat(luminance(out)[..., None], 3, axis=-1)
        mask = region & (np.abs(out - image).max(axis=-1) > VISIBLE)
        if mask.any():
            return np.where(mask[..., None], out, image), mask
    return np.where(mask[..., None], out, image), mask


def synthesize_validation_anomaly(
    image: torch.Tensor, gen: RngLike, kind: str, donor: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One defect of ``kind`` (any of ``VALIDATION_ANOMALIES``) on ``(3, H, W)`` in [0, 1].

    Returns the defective copy and its mask ``(1, H, W)`` in {0, 1}. ``donor`` (another good image
    of the category) is where ``poisson_blend`` takes its patch; the image itself without one.
    Realistic defects are centred on the object where the image has one on a plain background
    (``object_foreground``), as MVTec's are; the classic kinds anywhere, as before."""
    if kind not in VALIDATION_ANOMALIES:
        raise ValueError(f"kind: unknown anomaly {kind!r}; valid: {', '.join(VALIDATION_ANOMALIES)}")
    if kind in ANOMALY_KINDS:
        out, mask, _ = synthesize_anomaly(image, gen, kind)
        return out, mask
    array = image.detach().permute(1, 2, 0).cpu().numpy()
    other = donor.detach().permute(1, 2, 0).cpu().numpy() if donor is not None else None
    out, mask = realistic_anomaly_array(array, gen, kind, object_foreground(array), other)
    out_t = torch.from_numpy(out).permute(2, 0, 1).contiguous().to(image.dtype)
    return out_t, torch.from_numpy(mask.astype(np.float32))[None].to(image.dtype)
