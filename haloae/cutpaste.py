# SPDX-License-Identifier: Apache-2.0
"""CutPaste and CutPaste-scar self-supervised anomalies (Li et al., CVPR 2021), on tensors.

Paper: `CutPaste: Self-Supervised Learning for Anomaly Detection and Localization`. HaloAE trains
its classifier (block E) to tell each original from its CutPaste and CutPaste-scar copies. The
published HaloAE code uses the PIL implementation of runinho/pytorch-cutpaste; this module follows
its parameterisation (see ``shared/reference/original-code-notes.md``, section Training):

- CutPaste: a rectangle whose area is ``U(area_ratio)`` of the image and whose aspect ratio is
  log-uniform in ``[aspect_ratio, 1/aspect_ratio]`` is cut at a uniform random place, colour
  jittered (``ColorJitter(patch_jitter)`` for brightness, contrast, saturation and hue) and pasted
  at another uniform random place.
- CutPaste-scar: a thin rectangle, width ``U(scar_width)`` and height ``U(scar_height)`` pixels,
  cut, jittered, rotated by ``U(-scar_rotation, +scar_rotation)`` degrees and pasted through its
  rotated alpha mask (nearest sampling, as ``PIL.Image.rotate(expand=True)``).

Differences from the original, all deliberate:
- Images are float tensors ``(C, H, W)`` in [0, 1], not PIL images, so augmentation can run on
  cached tensors inside a ``Dataset`` without PIL round trips.
- Every random draw comes from an explicit ``torch.Generator``: the same generator state gives the
  same result, whatever the worker count or the global RNG.
- Scar sizes are given for 256x256 images (the original's only size) and are scaled by
  ``min(H, W) / 256``, so a 128x128 image gets scars of the same *relative* size.
- Both functions also return the binary mask ``(1, H, W)`` of the pasted pixels (tests, figures).
"""

from __future__ import annotations

import math

import torch
import torchvision.transforms.functional as TF

from haloae.config import CutPasteConfig

REFERENCE_SIZE = 256  # the image side the original's scar sizes were chosen for


def _uniform(low: float, high: float, gen: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def _randint(low: int, high: int, gen: torch.Generator) -> int:
    """Uniform integer in ``[low, high]`` (both ends included)."""
    return int(torch.randint(low, high + 1, (), generator=gen))


def color_jitter(image: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """``torchvision.transforms.ColorJitter(s, s, s, s)`` with an explicit generator.

    Brightness, contrast and saturation factors are drawn from ``U(1 - s, 1 + s)``, the hue shift
    from ``U(-s, s)``, and the four adjustments are applied in a random order, as ColorJitter does.
    All five draws are always made, so the generator advances by the same amount for any image.
    ``image`` is ``(3, H, W)`` float in [0, 1]; the result is too.
    """
    if strength <= 0:
        return image
    low = max(0.0, 1.0 - strength)
    brightness = _uniform(low, 1.0 + strength, gen)
    contrast = _uniform(low, 1.0 + strength, gen)
    saturation = _uniform(low, 1.0 + strength, gen)
    hue = _uniform(-min(strength, 0.5), min(strength, 0.5), gen)
    order = torch.randperm(4, generator=gen).tolist()
    out = image
    for op in order:
        if op == 0:
            out = TF.adjust_brightness(out, brightness)
        elif op == 1:
            out = TF.adjust_contrast(out, contrast)
        elif op == 2:
            out = TF.adjust_saturation(out, saturation)
        else:
            out = TF.adjust_hue(out, hue)
    return out.clamp(0.0, 1.0)


def cutpaste(image: torch.Tensor, cfg: CutPasteConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """CutPaste (normal): returns the augmented copy ``(C, H, W)`` and the pasted area ``(1, H, W)``."""
    _, height, width = image.shape
    area = _uniform(*cfg.area_ratio, gen) * height * width
    log_low, log_high = math.log(cfg.aspect_ratio), math.log(1.0 / cfg.aspect_ratio)
    aspect = math.exp(_uniform(log_low, log_high, gen))  # width / height
    # Clamped because a large area with an extreme aspect ratio can exceed the image side.
    cut_w = min(width, max(1, round(math.sqrt(area * aspect))))
    cut_h = min(height, max(1, round(math.sqrt(area / aspect))))

    src_y, src_x = _randint(0, height - cut_h, gen), _randint(0, width - cut_w, gen)
    patch = image[:, src_y : src_y + cut_h, src_x : src_x + cut_w]
    patch = color_jitter(patch, cfg.patch_jitter, gen)
    dst_y, dst_x = _randint(0, height - cut_h, gen), _randint(0, width - cut_w, gen)

    out = image.clone()
    out[:, dst_y : dst_y + cut_h, dst_x : dst_x + cut_w] = patch
    mask = torch.zeros(1, height, width, dtype=image.dtype)
    mask[:, dst_y : dst_y + cut_h, dst_x : dst_x + cut_w] = 1.0
    return out, mask


def cutpaste_scar(image: torch.Tensor, cfg: CutPasteConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """CutPaste-scar: returns the augmented copy ``(C, H, W)`` and the scar's pixels ``(1, H, W)``."""
    _, height, width = image.shape
    # The original's sizes are pixels of a 256x256 image; keep the scar's size relative to the image.
    scale = min(height, width) / REFERENCE_SIZE
    cut_w = min(width, max(1, round(_uniform(*cfg.scar_width, gen) * scale)))
    cut_h = min(height, max(1, round(_uniform(*cfg.scar_height, gen) * scale)))
    src_y, src_x = _randint(0, height - cut_h, gen), _randint(0, width - cut_w, gen)
    patch = image[:, src_y : src_y + cut_h, src_x : src_x + cut_w]
    patch = color_jitter(patch, cfg.patch_jitter, gen)
    angle = math.radians(_uniform(-cfg.scar_rotation, cfg.scar_rotation, gen))

    # Bounding box of the rotated rectangle (PIL's expand=True), clipped to the image.
    cos, sin = math.cos(angle), math.sin(angle)
    box_w = min(width, math.ceil(abs(cut_w * cos) + abs(cut_h * sin) - 1e-6))
    box_h = min(height, math.ceil(abs(cut_w * sin) + abs(cut_h * cos) - 1e-6))
    dst_y, dst_x = _randint(0, height - box_h, gen), _randint(0, width - box_w, gen)

    # Inverse mapping: each output pixel centre, rotated back into the patch frame, samples the
    # patch pixel it falls in (nearest); pixels falling outside the patch are transparent.
    ys = torch.arange(box_h, dtype=torch.float32) + 0.5 - box_h / 2
    xs = torch.arange(box_w, dtype=torch.float32) + 0.5 - box_w / 2
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    patch_x = cos * grid_x + sin * grid_y + cut_w / 2
    patch_y = -sin * grid_x + cos * grid_y + cut_h / 2
    col, row = torch.floor(patch_x).long(), torch.floor(patch_y).long()
    alpha = (col >= 0) & (col < cut_w) & (row >= 0) & (row < cut_h)
    if not bool(alpha.any()):  # a 1-pixel scar can fall between pixel centres: keep its centre
        alpha[box_h // 2, box_w // 2] = True
    col, row = col.clamp(0, cut_w - 1), row.clamp(0, cut_h - 1)

    out = image.clone()
    region = out[:, dst_y : dst_y + box_h, dst_x : dst_x + box_w]  # a view into out
    region[:, alpha] = patch[:, row[alpha], col[alpha]]
    mask = torch.zeros(1, height, width, dtype=image.dtype)
    mask[0, dst_y : dst_y + box_h, dst_x : dst_x + box_w] = alpha.to(image.dtype)
    return out, mask
