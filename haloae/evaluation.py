# SPDX-License-Identifier: Apache-2.0
"""Evaluation of a trained model on image sets: the normalisation map, every Table S1 scoring,
image/pixel AUROC, AUPRO and per-defect AUROCs.

    fit_scorer(...)          the normalisation map ("_N" of Table S1) from train/good images only
    evaluate(...)            one image set -> flat ``<split>/...`` metrics (and its maps)
    evaluate_splits(...)     validation and test of one category
    evaluate_checkpoint(...) a saved checkpoint on a category (``haloae evaluate``)

A non-finite anomaly score is an error (``NonFiniteScoreError``), never a metric: NaN scores
come from corrupted or diverged weights, and an AUROC over them would be a wrong answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from haloae.category_data import CategoryData, prepare_data
from haloae.checkpoint import CheckpointError, load_checkpoint
from haloae.data import EvalSet, normalize
from haloae.errors import InputError
from haloae.metrics import evaluate_maps, image_auroc
from haloae.model import HaloAE, HaloAEOutput
from haloae.scoring import AnomalyScorer, fm_error_map, im_error_map, pick_scoring
from haloae.vocab import TEST, VAL


class NonFiniteScoreError(InputError):
    """An anomaly score is NaN or infinite: the weights are corrupted or training diverged."""


class FeatureCache:
    """Frozen-backbone features of fixed image sets, computed once per run, not per epoch."""

    def __init__(self, model: HaloAE, device: torch.device, batch_size: int) -> None:
        self.model, self.device, self.batch_size = model, device, batch_size
        self._cache: dict[str, torch.Tensor] = {}

    def get(self, name: str, images01: torch.Tensor) -> torch.Tensor | None:
        if not self.model.has_backbone:
            return None
        if name not in self._cache:
            chunks = []
            with torch.no_grad():
                for i in range(0, len(images01), self.batch_size):
                    x = normalize(images01[i : i + self.batch_size]).to(self.device)
                    chunks.append(self.model.features(x).cpu())
            self._cache[name] = torch.cat(chunks)
        return self._cache[name]


@torch.no_grad()
def run_outputs(
    model: HaloAE, images01: torch.Tensor, fm: torch.Tensor | None, device, batch_size: int
) -> Iterator[tuple[torch.Tensor, HaloAEOutput]]:
    """Yield (normalised images, HaloAEOutput) batch by batch, in eval mode."""
    model.eval()
    for i in range(0, len(images01), batch_size):
        x = normalize(images01[i : i + batch_size]).to(device)
        f = fm[i : i + batch_size].to(device) if fm is not None else None
        yield x, model(x, fm=f)


def fit_scorer(model, scorer: AnomalyScorer, good: EvalSet, fm: torch.Tensor | None, device, batch_size) -> None:
    """The normalisation map: mean raw map over train/good images (never validation or test)."""
    fm_maps, im_maps = [], []
    for x, out in run_outputs(model, good.images, fm, device, batch_size):
        if out.fm_hat is not None:
            fm_maps.append(fm_error_map(out.fm, out.fm_hat).cpu())
        if out.im_hat is not None:
            im_maps.append(im_error_map(x, out.im_hat).cpu())
    scorer.fit(torch.cat(fm_maps) if fm_maps else None, torch.cat(im_maps) if im_maps else None)


def evaluate(
    model: HaloAE,
    scorer: AnomalyScorer,
    data: EvalSet,
    fm: torch.Tensor | None,
    device: torch.device,
    batch_size: int = 16,
    split: str = TEST,
    keep_maps: bool = False,
    image_score: str = "mean",
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Every available Table S1 scoring on one image set -> flat ``<split>/...`` metrics (floats).

    The metrics of the model's ``eval.scoring`` (``scoring.pick_scoring``) are also given without
    the scoring prefix (``test/image_auroc`` = ``test/afm_norm_filter/image_auroc``). ``image_score``
    (``eval.image_score``) is the map reduction behind ``image_auroc`` and the per-defect AUROCs;
    both reductions are always reported as ``image_auroc_mean`` and ``image_auroc_max``.
    Raises ``NonFiniteScoreError`` when any image's score is NaN or infinite.
    """
    maps: dict[str, list[torch.Tensor]] = {}
    scores: dict[str, list[torch.Tensor]] = {}
    for x, out in run_outputs(model, data.images, fm, device, batch_size):
        batch_maps = scorer.maps(out, x)
        for name, value in batch_maps.items():
            maps.setdefault(name, []).append(value.cpu())
        for name, value in scorer.image_scores(batch_maps, out).items():
            scores.setdefault(name, []).append(value.cpu())
    all_maps = {k: torch.cat(v) for k, v in maps.items()}
    all_scores = {k: torch.cat(v) for k, v in scores.items()}
    for name, values in sorted(all_scores.items()):
        bad = int((~torch.isfinite(values)).sum())
        if bad:
            raise NonFiniteScoreError(
                f"{split}: {bad} of {len(values)} images have a non-finite {name} anomaly score "
                "(NaN or inf: corrupted or diverged weights)"
            )
    metrics: dict[str, float] = {}
    for scoring in sorted({k.removesuffix("_max") for k in all_scores}):
        mean, peak = all_scores[scoring], all_scores.get(f"{scoring}_max")  # (N,) each; cls has no max
        chosen = peak if image_score == "max" and peak is not None else mean
        result = evaluate_maps(
            data.labels, data.masks, data.defects, all_maps.get(scoring), chosen, peak, pixel_size=model.cfg.eval.pixel_size
        )
        if peak is not None:
            result["image_auroc_mean"] = image_auroc(data.labels, mean)
        metrics.update({f"{split}/{scoring}/{k}": float(v) for k, v in result.items()})
    default = pick_scoring(sorted({k.removesuffix("_max") for k in all_scores}), model.cfg.eval.scoring)
    if default is not None:
        prefix = f"{split}/{default}/"
        metrics.update({f"{split}/{k.removeprefix(prefix)}": v for k, v in list(metrics.items()) if k.startswith(prefix)})
    return metrics, (all_maps if keep_maps else {})


def evaluate_splits(
    model: HaloAE, scorer: AnomalyScorer, data: CategoryData, device: torch.device, batch_size: int = 16,
    keep_test_maps: bool = False,
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:  # fmt: skip
    """Validation and test metrics of a category (the model's ``eval.image_score``), and the test maps."""
    cache = FeatureCache(model, device, batch_size)
    reduce = model.cfg.eval.image_score
    val, _ = evaluate(model, scorer, data.val, cache.get(VAL, data.val.images), device, batch_size, VAL, image_score=reduce)
    test, maps = evaluate(
        model, scorer, data.test, cache.get(TEST, data.test.images), device, batch_size, TEST, keep_maps=keep_test_maps,
        image_score=reduce,
    )
    return {**val, **test}, maps


def evaluate_checkpoint(
    path: str | Path, data_root: str | Path, category: str, device: torch.device, batch_size: int = 16
) -> dict[str, float]:
    """Validation and test metrics of a saved checkpoint (its config rebuilds the data split)."""
    model, scorer, _ = load_checkpoint(path, device)
    data = prepare_data(model.cfg, data_root, category)
    try:
        metrics, _ = evaluate_splits(model, scorer, data, device, batch_size)
    except NonFiniteScoreError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return metrics
