# SPDX-License-Identifier: Apache-2.0
"""Evaluation of a trained model on image sets: the normalisation map, every Table S1 scoring,
image/pixel AUROC, AUPRO and per-defect AUROCs.

    fit_scorer(...)          the normalisation map ("_N" of Table S1) from train/good images only
    evaluate(...)            one image set -> flat ``<split>/...`` metrics (and its maps)
    EpochValidation          what each training epoch computes: the objective and cheap AUROCs,
                             the map from a fixed subset of train/good (``eval.epoch_*``)
    final_scorer(...)        the normalisation map refitted on every train/good image
    evaluate_splits(...)     validation and test of one category
    evaluate_checkpoint(...) a saved checkpoint on a category (``haloae evaluate``)

Per epoch only the choice of best.pt and the curves need numbers, so an epoch scores validation
with the scorings the objective and the unprefixed metrics use, without AUPRO or per-defect AUROCs
(unless the objective is one), and skips the model's blocks D and E where only fm scorings are
needed; the full evaluation (every Table S1 scoring, map refitted on all train/good images) runs
once on the chosen checkpoint (``haloae.train.finish``), and gives what the per-epoch full
evaluation of the same checkpoint gave.

Backbone features come from ``haloae.features``: pass one ``RunFeatures`` (``features=``) to
``EpochValidation``, ``final_scorer`` and ``evaluate_splits`` and each image set goes through the
backbone once per run (with a ``FeatureStore`` behind it, once per store); without one, each of
them computes its own sets, as before.

A non-finite anomaly score is an error (``NonFiniteScoreError``), never a metric: NaN scores
come from corrupted or diverged weights, and an AUROC over them would be a wrong answer.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import torch

from haloae.category_data import CategoryData, prepare_data
from haloae.checkpoint import CheckpointError, load_checkpoint
from haloae.choices import SCORINGS
from haloae.data import EvalSet, normalize
from haloae.errors import InputError
from haloae.features import FeatureCache, RunFeatures
from haloae.metrics import MAP_METRICS, evaluate_maps, image_auroc
from haloae.model import HaloAE, HaloAEOutput
from haloae.scoring import FM_SCORINGS, AnomalyScorer, fm_error_map, im_error_map, pick_scoring
from haloae.vocab import TEST, VAL


class NonFiniteScoreError(InputError):
    """An anomaly score is NaN or infinite: the weights are corrupted or training diverged."""


def _forward(model: HaloAE, x: torch.Tensor, fm: torch.Tensor | None, scorings: Sequence[str] | None) -> HaloAEOutput:
    """The model's output, without blocks D and E (im_hat, logits) when every scoring wanted reads
    only fm and fm_hat: the encoder and decoder are ``HaloAE.forward``'s first two steps."""
    if scorings is None or not model.has_backbone or model.image_autoencoder or not set(scorings) <= set(FM_SCORINGS):
        return model(x, fm=fm)
    fm = model.features(x) if fm is None else fm
    code = model.encoder(fm)
    return HaloAEOutput(fm, code, model.decoder(code), None, None)


@torch.no_grad()
def run_outputs(
    model: HaloAE, images01: torch.Tensor, fm: torch.Tensor | None, device, batch_size: int,
    scorings: Sequence[str] | None = None,
) -> Iterator[tuple[torch.Tensor, HaloAEOutput]]:  # fmt: skip
    """Yield (normalised images, HaloAEOutput) batch by batch, in eval mode; ``scorings`` (None =
    all) lets the output leave out what none of them reads."""
    model.eval()
    for i in range(0, len(images01), batch_size):
        x = normalize(images01[i : i + batch_size].to(device, non_blocking=True))
        f = fm[i : i + batch_size].to(device, non_blocking=True) if fm is not None else None
        yield x, _forward(model, x, f, scorings)


def fit_scorer(
    model, scorer: AnomalyScorer, good: EvalSet | torch.Tensor, fm: torch.Tensor | None, device, batch_size,
    scorings: Sequence[str] | None = None,
) -> None:  # fmt: skip
    """The normalisation map: mean raw map over train/good images (never validation or test), an
    ``EvalSet`` or its images ``(N, 3, S, S)`` in [0, 1]. With ``scorings`` of fm only, only the fm
    map is refitted (the image map keeps its value)."""
    images = good.images if isinstance(good, EvalSet) else good
    fm_maps, im_maps = [], []
    for x, out in run_outputs(model, images, fm, device, batch_size, scorings):
        if out.fm_hat is not None:
            fm_maps.append(fm_error_map(out.fm, out.fm_hat).cpu())
        if out.im_hat is not None:
            im_maps.append(im_error_map(x, out.im_hat).cpu())
    fitted = {"fm": torch.cat(fm_maps) if fm_maps else None, "im": torch.cat(im_maps) if im_maps else None}
    for name, maps in fitted.items():
        bad = 0 if maps is None else int((~torch.isfinite(maps.flatten(1))).any(dim=1).sum())
        if bad:  # NaN would leave the scorer unfitted and every normalised scoring failing to score
            raise NonFiniteScoreError(
                f"train/good: {bad} of {len(maps)} images have a non-finite {name} anomaly map "
                "(NaN or inf: corrupted or diverged weights)"
            )
    scorer.fit(fitted["fm"], fitted["im"])


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
    scorings: Sequence[str] | None = None,
    include: Collection[str] = MAP_METRICS,
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Every available Table S1 scoring on one image set -> flat ``<split>/...`` metrics (floats);
    ``scorings`` (None = every available one) and ``include`` (``metrics.evaluate_maps``) restrict
    them, for per-epoch validation (``EpochValidation``).

    The metrics of the model's ``eval.scoring`` (``scoring.pick_scoring``) are also given without
    the scoring prefix (``test/image_auroc`` = ``test/afm_norm_filter/image_auroc``). ``image_score``
    (``eval.image_score``) is the map reduction behind ``image_auroc`` and the per-defect AUROCs;
    both reductions are always reported as ``image_auroc_mean`` and ``image_auroc_max``.
    Raises ``NonFiniteScoreError`` when any image's score is NaN or infinite.
    """
    maps: dict[str, list[torch.Tensor]] = {}
    scores: dict[str, list[torch.Tensor]] = {}
    for x, out in run_outputs(model, data.images, fm, device, batch_size, scorings):
        batch_maps = scorer.maps(out, x, scorings)
        for name, value in batch_maps.items():
            maps.setdefault(name, []).append(value.cpu())
        logits = out.logits if scorings is None or "cls" in scorings else None
        for name, value in scorer.image_scores(batch_maps, logits).items():
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
            data.labels, data.masks, data.defects, all_maps.get(scoring), chosen, peak,
            pixel_size=model.cfg.eval.pixel_size, include=include,
        )  # fmt: skip
        if peak is not None:
            result["image_auroc_mean"] = image_auroc(data.labels, mean)
        metrics.update({f"{split}/{scoring}/{k}": float(v) for k, v in result.items()})
    default = pick_scoring(sorted({k.removesuffix("_max") for k in all_scores}), model.cfg.eval.scoring)
    if default is not None:
        prefix = f"{split}/{default}/"
        metrics.update(
            {f"{split}/{k.removeprefix(prefix)}": v for k, v in list(metrics.items()) if k.startswith(prefix)}
        )
    return metrics, (all_maps if keep_maps else {})


def epoch_norm_indices(n: int, count: int) -> torch.Tensor:
    """The train/good images behind the per-epoch normalisation map (``eval.epoch_norm_images``):
    ``count`` of the ``n`` spread evenly over the list, the same every epoch (a subset drawn anew
    would move the objective between epochs for no reason of the model's); all when count is 0 or >= n."""
    if count <= 0 or count >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, count).round().long()  # (count,) distinct: the spacing is >= 1


def epoch_plan(cfg, objective: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What an epoch scores (``eval.epoch_metrics=objective``): the unprefixed scoring and the
    objective's, and of ``MAP_METRICS`` the pixel AUROC (the curves) plus AUPRO or the per-defect
    AUROCs when the objective is one of them. Returns (scorings, include)."""
    parts = objective.split("/")
    default = pick_scoring(cfg.scorings, cfg.eval.scoring)
    scorings = {default} | ({parts[1]} if len(parts) > 2 and parts[1] in SCORINGS else set())
    include = ["pixel_auroc"] + ["aupro"] * (parts[-1] == "aupro") + ["defect"] * ("defect" in parts)
    return tuple(sorted(s for s in scorings if s is not None)), tuple(include)


class EpochValidation:
    """The validation metrics of each training epoch: what the checkpoint choice and the curves need.

    ``eval.epoch_metrics=objective``: the normalisation map from a fixed subset of the train/good
    images (``eval.epoch_norm_images``), then validation scored as ``epoch_plan`` says; ``full``:
    every scoring and metric of ``evaluate`` (before issue 15; with ``eval.epoch_norm_images=0``,
    exactly that loop). An objective the plan does not produce (misspelt, or one the model has no
    scoring for) turns the run to ``full``: the caller's error then lists every metric the run
    reports. Backbone features of both image sets are computed once per ``features`` (the run's).
    """

    def __init__(
        self, model: HaloAE, scorer: AnomalyScorer, data: CategoryData, device, batch_size: int, objective: str,
        features: RunFeatures | None = None,
    ):  # fmt: skip
        cfg = model.cfg
        self.model, self.scorer, self.data, self.device, self.batch_size = model, scorer, data, device, batch_size
        self.objective = objective
        self.full = cfg.eval.epoch_metrics == "full"
        self.scorings, self.include = epoch_plan(cfg, objective)
        self.good = data.train_good.images[epoch_norm_indices(len(data.train_good), cfg.eval.epoch_norm_images)]
        self.cache = FeatureCache(model, device, batch_size, features)

    def __call__(self) -> dict[str, float]:
        scorings = None if self.full else self.scorings
        good_fm = self.cache.get("train_good_epoch", self.good)
        fit_scorer(self.model, self.scorer, self.good, good_fm, self.device, self.batch_size, scorings)
        val = self.data.val
        metrics, _ = evaluate(
            self.model, self.scorer, val, self.cache.get(VAL, val.images), self.device, self.batch_size, VAL,
            image_score=self.model.cfg.eval.image_score, scorings=scorings,
            include=MAP_METRICS if self.full else self.include,
        )  # fmt: skip
        if not self.full and self.objective not in metrics:
            self.full = True  # from now on every epoch evaluates in full (the caller names an unknown objective)
            return self()
        return metrics


def final_scorer(
    model: HaloAE, data: CategoryData, device, batch_size: int = 16, features: RunFeatures | None = None
) -> AnomalyScorer:
    """A scorer fitted on every train/good image (the per-epoch map may have seen a subset): the
    normalisation map of the final metrics, of best.pt once the run is finished, and of export."""
    scorer = AnomalyScorer(model.cfg.model.image_size).to(device)
    # used once per run: not held in memory after (the store, if any, keeps it for the next run)
    fm = FeatureCache(model, device, batch_size, features).get("train_good", data.train_good.images, keep=False)
    fit_scorer(model, scorer, data.train_good, fm, device, batch_size)
    return scorer


def evaluate_splits(
    model: HaloAE, scorer: AnomalyScorer, data: CategoryData, device: torch.device, batch_size: int = 16,
    keep_test_maps: bool = False, features: RunFeatures | None = None,
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:  # fmt: skip
    """Validation and test metrics of a category (the model's ``eval.image_score``), and the test
    maps; val features come from ``features`` when the run's epochs computed them there."""
    cache = FeatureCache(model, device, batch_size, features)
    reduce = model.cfg.eval.image_score
    val_fm = cache.get(VAL, data.val.images, keep=False)  # the last use in a run: not kept after
    val, _ = evaluate(model, scorer, data.val, val_fm, device, batch_size, VAL, image_score=reduce)
    test_fm = cache.get(TEST, data.test.images, keep=False)
    test, maps = evaluate(
        model, scorer, data.test, test_fm, device, batch_size, TEST, keep_maps=keep_test_maps, image_score=reduce
    )
    return {**val, **test}, maps


def evaluate_checkpoint(
    path: str | Path, data_root: str | Path, category: str, device: torch.device, batch_size: int = 16
) -> dict[str, float]:
    """Validation and test metrics of a saved checkpoint (its config rebuilds the data split), the
    normalisation map refitted on every train/good image as at the end of training."""
    model, _, _ = load_checkpoint(path, device)
    data = prepare_data(model.cfg, data_root, category)
    try:
        metrics, _ = evaluate_splits(model, final_scorer(model, data, device, batch_size), data, device, batch_size)
    except NonFiniteScoreError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return metrics
