# SPDX-License-Identifier: Apache-2.0
"""Honest anomaly-detection metrics: image AUROC, pixel AUROC, AUPRO, per-defect AUROC.

The paper reports image-level and pixel-wise ROC-AUC (Sec. 4.1, Tables 2-4 and S1) of the maps
of eq. 6. AUPRO follows Bergmann et al. (MVTec AD, IJCV 2021) and anomalib's ``AUPRO``: the mean
overlap of each connected ground-truth region with the thresholded map (PRO) against the false
positive rate on anomaly-free pixels, integrated up to ``fpr_limit`` (0.3) and divided by it.

Unlike the original ``scores.py`` (defect 3), no score is ever flipped: ``max(AUC, 1 - AUC)``
would turn a detector that ranks anomalies *below* normal images into a good one. A perfectly
inverted scorer gets 0.0 here. AUROCs are fractions in [0, 1]; a degenerate input (one class
only, no anomalous region, non-finite scores) gives NaN instead of raising, so that a sweep trial
with a diverged model still finishes and reports.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from sklearn.metrics import roc_auc_score

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]
# what ``evaluate_maps`` computes beyond the image AUROCs: "defect" = the per-defect image AUROCs
MAP_METRICS = ("pixel_auroc", "aupro", "defect")

# 8-connectivity inside each image, none across images: one ``ndimage.label`` call for a stack
_REGION_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_REGION_STRUCTURE[1] = True


def _numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _binary_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    labels = labels.astype(bool).ravel()
    scores = scores.ravel()
    if labels.size != scores.size:
        raise ValueError(f"AUROC: {labels.size} labels but {scores.size} scores")
    if labels.all() or not labels.any() or not np.isfinite(scores).all():
        return math.nan
    return float(roc_auc_score(labels, scores))


def image_auroc(labels: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC of image scores ``(N,)`` against labels ``(N,)`` (1 = anomalous); NaN if degenerate."""
    return _binary_auroc(_numpy(labels), _numpy(scores).astype(np.float64))


def _pixel_arrays(masks: ArrayLike, maps: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(N, H, W)`` bool masks and float maps; maps bilinearly resized to the masks' resolution."""
    m = _numpy(masks)
    a = maps if isinstance(maps, torch.Tensor) else torch.as_tensor(np.asarray(maps))
    if m.ndim == 4:
        m = m[:, 0]  # (N, H, W)
    if a.dim() == 3:
        a = a[:, None]  # (N, 1, h, w)
    if m.ndim != 3 or a.dim() != 4 or a.shape[1] != 1:
        raise ValueError(
            f"pixel metrics: masks (N, [1,] H, W) and maps (N, [1,] h, w), got {m.shape} and {tuple(a.shape)}"
        )
    if m.shape[0] != a.shape[0]:
        raise ValueError(f"pixel metrics: {m.shape[0]} masks but {a.shape[0]} maps")
    a = a.detach().float()
    if tuple(a.shape[-2:]) != m.shape[-2:]:
        a = F.interpolate(a, size=m.shape[-2:], mode="bilinear", align_corners=False)  # (N, 1, H, W)
    return m > 0.5, a[:, 0].cpu().numpy()


def at_pixel_size(masks: ArrayLike, maps: ArrayLike, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks and maps resized to ``size`` x ``size`` for the pixel metrics (``eval.pixel_size``), as the
    authors' ``scores.py`` at 128 px: both bilinearly; a pixel is anomalous where its resized mask is > 0."""
    if size < 1:
        raise ValueError(f"at_pixel_size: size must be >= 1, got {size}")
    m = torch.as_tensor(_numpy(masks)).float()
    a = (maps if isinstance(maps, torch.Tensor) else torch.as_tensor(np.asarray(maps))).detach().float()
    m, a = (m[:, None] if m.dim() == 3 else m), (a[:, None] if a.dim() == 3 else a)  # (N, 1, H, W), (N, 1, h, w)

    def resize(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)

    return (resize(m) > 0).float(), resize(a)  # (N, 1, size, size) each


def pixel_auroc(masks: ArrayLike, maps: ArrayLike) -> float:
    """Pixel-wise ROC AUC over all pixels of all images, at the masks' resolution (masks > 0.5)."""
    m, a = _pixel_arrays(masks, maps)
    return _binary_auroc(m, a)


def _trapezoid_until(fpr: np.ndarray, pro: np.ndarray, limit: float) -> float:
    """Area under the (non-decreasing in ``fpr``) curve from 0 to ``limit``, interpolating at it."""
    idx = int(np.searchsorted(fpr, limit, side="right"))  # points [0, idx) have fpr <= limit
    x, y = fpr[:idx], pro[:idx]
    if idx < fpr.size and (idx == 0 or fpr[idx - 1] < limit):
        x0, y0 = (fpr[idx - 1], pro[idx - 1]) if idx > 0 else (0.0, 0.0)
        x1, y1 = fpr[idx], pro[idx]
        y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        x, y = np.append(x, limit), np.append(y, y_lim)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def pro_curve(
    masks: ArrayLike, maps: ArrayLike, num_thresholds: int | None = None, fpr_limit: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, pro)``, both ``(K,)`` and sorted by fpr, starting at (0, 0).

    ``num_thresholds=None``: the exact curve, one point per distinct score (a pixel is positive
    when its score >= the threshold), computed with one sort of all pixels as the MVTec AD
    evaluation code does. An int: that many thresholds at quantiles of the anomaly-free pixels'
    scores, so that their FPRs step evenly through [0, fpr_limit] (a pixel is positive when its
    score > the threshold); a few points beyond fpr_limit and (1, 1) close the curve.
    """
    m, a = _pixel_arrays(masks, maps)
    regions, n_regions = ndimage.label(m, structure=_REGION_STRUCTURE)  # (N, H, W) ids, 0 = normal
    neg = ~m
    n_neg = int(neg.sum())
    if n_regions == 0 or n_neg == 0:
        raise ValueError("pro_curve: needs at least one anomalous region and one anomaly-free pixel")
    areas = np.bincount(regions.ravel()).astype(np.float64)  # (R + 1,), areas[0] = anomaly-free pixels
    if num_thresholds is None:
        scores = a.ravel()
        order = np.argsort(-scores, kind="stable")  # descending
        s_sorted = scores[order]
        r_sorted = regions.ravel()[order]
        fpr = np.cumsum(r_sorted == 0) / n_neg
        weights = np.where(r_sorted > 0, 1.0 / areas[r_sorted], 0.0) / n_regions  # each region sums to 1/R
        pro = np.cumsum(weights)
        last_of_tie = np.append(s_sorted[1:] != s_sorted[:-1], True)  # all pixels of a score go together
        fpr, pro = fpr[last_of_tie], pro[last_of_tie]
    else:
        if num_thresholds < 2:
            raise ValueError(f"pro_curve: num_thresholds must be >= 2 or None, got {num_thresholds}")
        step = fpr_limit / (num_thresholds - 1)
        targets = np.concatenate([np.linspace(0.0, fpr_limit, num_thresholds), fpr_limit + step * np.arange(1, 4)])
        targets = np.clip(targets, 0.0, 1.0)
        neg_sorted = np.sort(a[neg])  # (n_neg,)
        thresholds = np.quantile(neg_sorted, 1.0 - targets)  # descending
        t_asc = thresholds[::-1]  # ascending
        # fpr(t) = #(negative scores > t) / n_neg
        fpr = (n_neg - np.searchsorted(neg_sorted, t_asc, side="right")) / n_neg  # (K,) for t ascending
        pos_scores, pos_regions = a[m], regions[m]
        k = t_asc.size
        below = np.searchsorted(t_asc, pos_scores, side="left")  # number of thresholds < score
        hist = np.bincount(pos_regions * (k + 1) + below, minlength=(n_regions + 1) * (k + 1))
        hist = hist.reshape(n_regions + 1, k + 1)[1:]  # (R, K + 1): pixels positive for the first j thresholds
        above = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]  # (R, K): pixels with score > t_asc[j]
        pro = (above / areas[1:, None]).mean(axis=0)  # (K,)
        fpr, pro = fpr[::-1], pro[::-1]  # thresholds descending -> fpr ascending
        fpr, pro = np.append(fpr, 1.0), np.append(pro, 1.0)
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], pro])


def aupro(masks: ArrayLike, maps: ArrayLike, fpr_limit: float = 0.3, num_thresholds: int | None = None) -> float:
    """Area under the PRO curve up to ``fpr_limit``, divided by ``fpr_limit`` (1.0 = perfect).

    Regions are the 8-connected components of each mask (``scipy.ndimage.label``); maps are
    resized to the masks' resolution. See ``pro_curve`` for ``num_thresholds`` (None = exact).
    NaN when there is no anomalous region, no anomaly-free pixel or a non-finite score.
    """
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"aupro: fpr_limit must be in (0, 1], got {fpr_limit}")
    m, a = _pixel_arrays(masks, maps)
    if not m.any() or m.all() or not np.isfinite(a).all():
        return math.nan
    fpr, pro = pro_curve(m, a, num_thresholds, fpr_limit)
    return _trapezoid_until(fpr, pro, fpr_limit) / fpr_limit


def per_defect_image_auroc(labels: ArrayLike, scores: ArrayLike, defects: Sequence[str]) -> dict[str, float]:
    """defect type -> image AUROC of the images of that type against all good images (label 0)."""
    y = _numpy(labels).astype(bool).ravel()
    s = _numpy(scores).astype(np.float64).ravel()
    d = np.asarray(list(defects), dtype=object)
    if not y.size == s.size == d.size:
        raise ValueError(f"per_defect_image_auroc: {y.size} labels, {s.size} scores, {d.size} defects")
    result = {}
    for defect in sorted(set(d[y].tolist())):
        keep = ~y | (d == defect)
        result[str(defect)] = _binary_auroc(y[keep], s[keep])
    return result


def evaluate_maps(
    labels: ArrayLike,
    masks: ArrayLike | None,
    defects: Sequence[str] | None,
    maps: ArrayLike | None,
    scores: ArrayLike | None = None,
    scores_max: ArrayLike | None = None,
    *,
    fpr_limit: float = 0.3,
    num_thresholds: int | None = None,
    pixel_size: int = 0,
    include: Collection[str] = MAP_METRICS,
) -> dict[str, float]:
    """Every metric of one scoring as a flat dict (fractions in [0, 1], NaN if undefined).

    ``labels`` (N,), ``masks`` (N, [1,] H, W), ``maps`` (N, [1,] h, w), ``scores`` (N,) (default:
    the map means), ``scores_max`` (N,) (default: the map maxima). Keys: ``image_auroc``,
    ``image_auroc_max``, ``pixel_auroc``, ``aupro``, ``defect/<defect>/image_auroc`` (from
    ``scores``). Keys whose input is None (e.g. no map for the ``cls`` scoring, no masks) are
    left out. ``pixel_size`` (``eval.pixel_size``): the pixel metrics at that side
    (``at_pixel_size``); 0 = at the masks' resolution, maps resized to it. ``include``: which of
    ``MAP_METRICS`` to compute (the image AUROCs always are): a sort of every pixel each for
    ``pixel_auroc`` and ``aupro``, which per-epoch validation leaves out where nothing needs them.
    """
    if maps is None and scores is None:
        raise ValueError("evaluate_maps: needs maps, scores or both")
    per_image = None
    if maps is not None:
        flat = (maps if isinstance(maps, torch.Tensor) else torch.as_tensor(np.asarray(maps))).detach().float()
        per_image = flat.flatten(1)  # (N, h*w)
    image_scores = _numpy(scores) if scores is not None else per_image.mean(1).cpu().numpy()  # type: ignore[union-attr]
    out = {"image_auroc": image_auroc(labels, image_scores)}
    if scores_max is not None or per_image is not None:
        max_scores = _numpy(scores_max) if scores_max is not None else per_image.amax(1).cpu().numpy()  # type: ignore[union-attr]
        out["image_auroc_max"] = image_auroc(labels, max_scores)
    pixel_wise = [name for name in ("pixel_auroc", "aupro") if name in include]
    if maps is not None and masks is not None and pixel_wise:
        if pixel_size:
            masks, maps = at_pixel_size(masks, maps, pixel_size)
        if "pixel_auroc" in include:
            out["pixel_auroc"] = pixel_auroc(masks, maps)
        if "aupro" in include:
            out["aupro"] = aupro(masks, maps, fpr_limit, num_thresholds)
    if defects is not None and "defect" in include:
        for defect, value in per_defect_image_auroc(labels, image_scores, defects).items():
            out[f"defect/{defect}/image_auroc"] = value
    return out
