# SPDX-License-Identifier: Apache-2.0
"""Score image files with an exported model: an overlay PNG per image and one CSV.

``--model`` is a bundle folder (``haloae export``'s ``<out>/<category>``) or a registry URI such
as ``models:/haloae-bottle@champion`` (its bundle artifact is fetched; the model runs locally
through ``haloae.bundle``, the same code the served pyfunc runs). An unreadable image is reported
on its own line and skipped; the others are still scored. A bundle whose files fail their sha256,
or a NaN / infinite score (corrupted or diverged weights), is a ``BundleError`` for the whole call
(exit 2): no verdict and no CSV is written from a score that is not a number.

    <out>/<stem>_overlay.png   image | heat-map overlay, framed red when anomalous, green if not
    <out>/predictions.csv      image, score, decision, overlay
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

CSV_NAME = "predictions.csv"
FRAME = {True: (220, 30, 30), False: (30, 170, 60)}  # decision -> RGB frame colour


@dataclass
class PredictReport:
    table: pd.DataFrame  # image, score, decision, overlay: one row per scored image
    errors: list[str] = field(default_factory=list)  # one line per image that could not be read
    csv: Path | None = None


def overlay_panel(image01: torch.Tensor, amap: torch.Tensor | None, map_range: tuple[float, float], decision: bool | None = None) -> np.ndarray:
    """``image | overlay`` side by side as uint8 ``(S, 2S, 3)``; a 2-px frame when ``decision`` is given."""
    from haloae.overlay import heatmap_overlay

    image = (image01.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)  # (S, S, 3)
    over = np.asarray(heatmap_overlay(image01, amap[None], *map_range)) if amap is not None else image
    panel = np.concatenate([image, over], axis=1).copy()
    if decision is not None:
        panel[:2], panel[-2:], panel[:, :2], panel[:, -2:] = (FRAME[bool(decision)],) * 4
    return panel


def map_range_of(predictor, maps: torch.Tensor | None) -> tuple[float, float]:
    """The bundle's validation colour range, else this batch's (min, max)."""
    stored = predictor.info.get("map_range")
    if stored:
        return float(stored[0]), float(stored[1])
    if maps is None:
        return 0.0, 1.0
    return float(maps.min()), float(maps.max())


def _unique_names(paths: list[Path]) -> list[str]:
    """File stems; stems shared by several inputs (``test/<defect>/000.png``) get their folder's
    name in front, and any remaining clash a counter."""
    stems = Counter(p.stem for p in paths)
    names = [p.stem if stems[p.stem] == 1 else f"{p.parent.name}_{p.stem}" for p in paths]
    seen: Counter[str] = Counter()
    unique = []
    for name in names:
        seen[name] += 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name] - 1}")
    return unique


def predict_files(model: str, images: list[str | Path], out: str | Path, tracking_uri: str | None = None) -> PredictReport:
    """Score ``images`` with ``model`` (bundle folder or ``models:/`` URI); write overlays and the CSV."""
    from analysis.export import resolve_bundle
    from haloae.bundle import BundleError, load_bundle, read_image

    predictor = load_bundle(resolve_bundle(model, tracking_uri))
    size = predictor.image_size
    loaded, paths, errors = [], [], []
    for image in images:
        try:
            loaded.append(read_image(image, size))
            paths.append(Path(image))
        except BundleError as exc:
            errors.append(str(exc))
    rows = []
    result = predictor.predict(torch.stack(loaded)) if loaded else None  # may refuse (NaN): before any write
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    if result is not None:
        batch = torch.stack(loaded)  # (N, 3, S, S) in [0, 1]
        colour_range = map_range_of(predictor, result.maps)
        for i, (path, name) in enumerate(zip(paths, _unique_names(paths), strict=True)):
            amap = result.maps[i] if result.maps is not None else None
            decision = bool(result.decisions[i])
            target = folder / f"{name}_overlay.png"
            Image.fromarray(overlay_panel(batch[i], amap, colour_range, decision)).save(target)
            rows.append({"image": str(path), "score": float(result.scores[i]), "decision": decision, "overlay": str(target)})
    table = pd.DataFrame(rows, columns=["image", "score", "decision", "overlay"])
    csv = folder / CSV_NAME
    table.to_csv(csv, index=False)
    return PredictReport(table, errors, csv)
