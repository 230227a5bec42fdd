# SPDX-License-Identifier: Apache-2.0
import math
import time

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from haloae.metrics import (
    at_pixel_size,
    aupro,
    evaluate_maps,
    image_auroc,
    per_defect_image_auroc,
    pixel_auroc,
    pro_curve,
)


def _pixel_data(n=6, side=32, seed=0, noise=0.6):
    """Masks with 1-3 rectangles per anomalous image (two good images) and noisy maps."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, side, side), dtype=np.float32)
    for i in range(2, n):
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, side - 4, size=2)
            h, w = rng.integers(2, side // 3, size=2)
            masks[i, y : y + h, x : x + w] = 1.0
    maps = masks * 0.5 + noise * rng.random(masks.shape).astype(np.float32)
    return masks, maps


def _aupro_reference(masks, maps, fpr_limit=0.3, steps=2000):
    """Slow PRO: loop over thresholds, then over every 8-connected region of every image."""
    masks = masks > 0.5
    regions = []
    for i in range(len(masks)):
        labelled, k = ndimage.label(masks[i], structure=np.ones((3, 3)))
        regions += [(i, labelled == r) for r in range(1, k + 1)]
    fprs, pros = [], []
    for t in np.linspace(maps.max(), maps.min(), steps):
        pred = maps >= t
        fprs.append((pred & ~masks).sum() / (~masks).sum())
        pros.append(np.mean([(pred[i] & region).sum() / region.sum() for i, region in regions]))
    fprs, pros = np.array([0.0, *fprs]), np.array([0.0, *pros])
    keep = fprs <= fpr_limit
    x, y = fprs[keep], pros[keep]
    j = keep.sum()  # first point past the limit: interpolate at it
    y_lim = y[-1] + (pros[j] - y[-1]) * (fpr_limit - x[-1]) / (fprs[j] - x[-1])
    x, y = np.append(x, fpr_limit), np.append(y, y_lim)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2)) / fpr_limit


# ---------------------------------------------------------------------- image AUROC
def test_image_auroc_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(labels * 0.3 + rng.random(200), 1)  # with ties
    assert math.isclose(image_auroc(labels, scores), roc_auc_score(labels, scores))
    assert math.isclose(image_auroc(torch.as_tensor(labels), torch.as_tensor(scores)), roc_auc_score(labels, scores))


def test_no_label_flipping():
    labels = np.array([0, 0, 0, 1, 1])
    assert image_auroc(labels, [0.1, 0.2, 0.3, 0.8, 0.9]) == 1.0
    assert image_auroc(labels, [0.9, 0.8, 0.7, 0.2, 0.1]) == 0.0  # never max(AUC, 1 - AUC)
    masks = np.zeros((2, 4, 4))
    masks[1, :2] = 1
    assert pixel_auroc(masks, 1.0 - masks) == 0.0


def test_degenerate_inputs_give_nan():
    assert math.isnan(image_auroc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(image_auroc([0, 1, 1], [0.1, float("nan"), 0.3]))
    assert math.isnan(pixel_auroc(np.zeros((2, 4, 4)), np.random.rand(2, 4, 4)))
    assert math.isnan(aupro(np.zeros((2, 4, 4)), np.random.rand(2, 4, 4)))


# ---------------------------------------------------------------------- pixel metrics
def test_pixel_auroc_matches_sklearn_and_resizes_maps():
    masks, maps = _pixel_data()
    want = roc_auc_score(masks.ravel() > 0.5, maps.ravel())
    assert math.isclose(pixel_auroc(masks, maps), want)
    assert math.isclose(pixel_auroc(torch.as_tensor(masks)[:, None], torch.as_tensor(maps)[:, None]), want)
    # maps at a coarser resolution are bilinearly resized to the masks'
    coarse = torch.nn.functional.avg_pool2d(torch.as_tensor(maps)[:, None], 2)
    up = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    assert math.isclose(pixel_auroc(masks, coarse), roc_auc_score(masks.ravel() > 0.5, up.numpy().ravel()))


@pytest.mark.parametrize("num_thresholds", [None, 100])
def test_aupro_is_one_for_a_perfect_map(num_thresholds):
    masks, _ = _pixel_data()
    assert math.isclose(aupro(masks, masks, num_thresholds=num_thresholds), 1.0)
    assert math.isclose(aupro(masks, masks * 5.0 + 2.0, num_thresholds=num_thresholds), 1.0)


@pytest.mark.parametrize(("seed", "noise"), [(0, 0.6), (1, 1.5)])  # AUPRO about 0.94 and 0.46
@pytest.mark.parametrize("num_thresholds", [None, 200])
def test_aupro_matches_slow_reference(seed, noise, num_thresholds):
    masks, maps = _pixel_data(seed=seed, noise=noise)
    want = _aupro_reference(masks, maps)
    got = aupro(masks, maps, num_thresholds=num_thresholds)
    assert 0.0 < want < 1.0
    assert abs(got - want) < 1e-2, (got, want)


def test_pro_curve_regions_do_not_connect_across_images():
    masks = np.zeros((2, 4, 4))
    masks[0, :, 3] = 1  # touches the next image's column 0 if the stack were flattened
    masks[1, :, 0] = 1
    masks[1, 0, 2] = 1  # a second, separate region (one pixel)
    maps = masks.copy()
    maps[1, 0, 2] = 0.0  # missed region
    fpr, pro = pro_curve(masks, maps)
    assert math.isclose(pro[-1], 1.0)
    # at the threshold 1 (fpr 0): two of three regions fully detected
    assert math.isclose(pro[fpr == 0].max(), 2 / 3)


def test_aupro_thresholded_matches_exact():
    masks, maps = _pixel_data(n=20, side=256, seed=3)
    start = time.perf_counter()
    exact = aupro(masks, maps)
    mid = time.perf_counter()
    approx = aupro(masks, maps, num_thresholds=500)
    end = time.perf_counter()
    print(f"aupro on 20x256x256: exact {mid - start:.2f}s, 500 thresholds {end - mid:.2f}s")
    assert abs(exact - approx) < 5e-3


# ---------------------------------------------------------------------- per defect, summary
def test_per_defect_image_auroc():
    labels = [0, 0, 0, 1, 1, 1, 1]
    defects = ["good", "good", "good", "crack", "crack", "hole", "hole"]
    scores = [0.1, 0.2, 0.3, 0.9, 0.8, 0.0, 0.25]
    result = per_defect_image_auroc(labels, scores, defects)
    assert result == {"crack": 1.0, "hole": pytest.approx(roc_auc_score([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.0, 0.25]))}


def test_evaluate_maps_keys_and_values():
    masks, maps = _pixel_data()
    labels = (masks.reshape(len(masks), -1).max(1) > 0).astype(int)
    defects = ["good", "good", "crack", "crack", "hole", "hole"]
    result = evaluate_maps(labels, masks, defects, maps[:, None])
    assert set(result) == {
        "image_auroc",
        "image_auroc_max",
        "pixel_auroc",
        "aupro",
        "defect/crack/image_auroc",
        "defect/hole/image_auroc",
    }
    assert math.isclose(result["image_auroc"], image_auroc(labels, maps.reshape(6, -1).mean(1)))
    assert math.isclose(result["image_auroc_max"], image_auroc(labels, maps.reshape(6, -1).max(1)))
    assert math.isclose(result["pixel_auroc"], pixel_auroc(masks, maps))
    assert math.isclose(result["aupro"], aupro(masks, maps))
    assert all(0.0 <= v <= 1.0 for v in result.values())
    # a scoring without a map (the classifier): image metrics only
    cls_only = evaluate_maps(labels, masks, defects, None, scores=np.linspace(0, 1, 6))
    assert set(cls_only) == {"image_auroc", "defect/crack/image_auroc", "defect/hole/image_auroc"}
    assert cls_only["image_auroc"] == 1.0
    # precomputed max scores (positional, as train.evaluate passes them) replace the map max
    given = evaluate_maps(labels, None, None, maps, maps.reshape(6, -1).mean(1), -maps.reshape(6, -1).max(1))
    assert set(given) == {"image_auroc", "image_auroc_max"}
    assert math.isclose(given["image_auroc_max"], 1.0 - result["image_auroc_max"])


def test_pixel_metrics_at_the_papers_128_px():
    """eval.pixel_size: maps and masks bilinearly resized, anomalous where the resized mask is > 0."""
    masks, maps = _pixel_data(side=32)
    labels = (masks.reshape(len(masks), -1).max(1) > 0).astype(int)
    at16 = evaluate_maps(labels, masks, None, maps[:, None], pixel_size=16)
    m = torch.nn.functional.interpolate(torch.from_numpy(masks)[:, None], size=(16, 16), mode="bilinear")
    a = torch.nn.functional.interpolate(torch.from_numpy(maps)[:, None], size=(16, 16), mode="bilinear")
    assert math.isclose(at16["pixel_auroc"], roc_auc_score((m > 0).numpy().ravel(), a.numpy().ravel()))
    assert math.isclose(at16["aupro"], aupro((m > 0).float(), a))
    assert at16["pixel_auroc"] != evaluate_maps(labels, masks, None, maps[:, None])["pixel_auroc"]
    assert at16["image_auroc"] == evaluate_maps(labels, masks, None, maps[:, None])["image_auroc"]  # image scores as given
    resized_masks, resized_maps = at_pixel_size(masks, maps, 16)
    assert resized_masks.shape == resized_maps.shape == (6, 1, 16, 16)
    assert float(resized_masks.sum()) > float(masks.sum()) / 4  # "> 0": any overlap marks the pixel
