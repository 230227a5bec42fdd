# SPDX-License-Identifier: Apache-2.0
"""Anomaly-map overlays (paper Fig. 1 style): the image, its heat map blended on top, the mask outline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def heatmap_overlay(image01: torch.Tensor, amap: torch.Tensor, vmin: float, vmax: float, alpha: float = 0.5) -> Image.Image:
    """``image01`` (3, H, W) in [0, 1], ``amap`` (1, H, W) -> RGB PIL image with a jet heat map."""
    from matplotlib import colormaps

    img = image01.clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    a = ((amap[0].cpu().numpy() - vmin) / max(vmax - vmin, 1e-12)).clip(0, 1)
    heat = colormaps["jet"](a)[..., :3]
    return Image.fromarray(((1 - alpha) * img * 255 + alpha * heat * 255).astype(np.uint8))


def outline(mask: torch.Tensor) -> np.ndarray:
    """Boundary pixels of a (1, H, W) binary mask."""
    m = mask[0].cpu().numpy() > 0.5
    inner = m.copy()
    inner[1:-1, 1:-1] = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return m & ~inner


def save_overlays(data, maps: torch.Tensor, out_dir: str | Path, limit: int = 6) -> list[Path]:
    """Write side-by-side (image | overlay with the ground-truth outline in pink) PNGs for a few images:
    the most anomalous-scored defects first, then good ones. Colour scale shared across images."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores = maps.flatten(1).mean(1)
    defect_idx = [i for i in torch.argsort(scores, descending=True).tolist() if int(data.labels[i]) == 1]
    good_idx = [i for i in torch.argsort(scores).tolist() if int(data.labels[i]) == 0]
    chosen = (defect_idx[: max(1, limit - limit // 3)] + good_idx[: limit // 3])[:limit]
    vmin, vmax = float(maps.min()), float(torch.quantile(maps.flatten()[:: max(1, maps.numel() // 1_000_000)], 0.999))
    paths = []
    for i in chosen:
        over = np.asarray(heatmap_overlay(data.images[i], maps[i], vmin, vmax)).copy()
        over[outline(data.masks[i])] = (255, 64, 200)
        img = (data.images[i].clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        name = f"{i:03d}_{data.defects[i]}_{scores[i]:.4g}.png"
        path = out / name
        Image.fromarray(np.concatenate([img, over], axis=1)).save(path)
        paths.append(path)
    return paths
