# SPDX-License-Identifier: Apache-2.0
"""One HaloAE training run on one category: data, the loop, checkpoints, honest evaluation.

    prepare_data(cfg, root, category)   validate the folder first, split train/good into train and
                                        validation (held-out good + synthetic anomalies); test data
                                        is only ever *reported*
    fit(cfg, data, out_dir, on_epoch)   fm's standardisation statistics (train/good), then Adam,
                                        CutPaste-expanded batches, the loss weighting of cfg.loss;
                                        per epoch: validation metrics (drive the best checkpoint,
                                        ties to the later epoch), a checkpoint that resumes
                                        exactly, a callback
    evaluate(...)                       every Table S1 scoring, image/pixel AUROC, AUPRO, per defect

Nothing here imports Ray or MLflow: the sweep layer passes ``on_epoch`` and reports through it.
The normalisation map and fm's standardisation come from train/good images only, and checkpoint
choice from validation only (the original used the test set for the map and the choice: defects 2
and 3 of original-code-notes.md).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from haloae.config import HaloAEConfig
from haloae.data import (
    EvalSet,
    TrainDataset,
    load_eval_set,
    make_validation_set,
    normalize,
    scan_category,
    split_train_val,
)
from haloae.losses import HaloAELoss
from haloae.metrics import evaluate_maps, image_auroc
from haloae.model import HaloAE
from haloae.scoring import DEFAULT_SCORING, AnomalyScorer, fm_error_map, im_error_map

CHECKPOINT = "checkpoint.pt"  # last epoch: what resume restores
BEST = "best.pt"  # best epoch by the validation objective
OBJECTIVE = f"val/{DEFAULT_SCORING}/image_auroc"

EpochCallback = Callable[[int, dict[str, float], Path], None]


@dataclass
class CategoryData:
    category: str
    train: TrainDataset  # train/good minus the validation images, decoded once
    train_good: EvalSet  # the same images un-augmented: the normalisation map is fitted on them
    val: EvalSet  # held-out train/good + synthetic anomalies made from them
    test: EvalSet  # MVTec test split: reported, never used for any choice


@dataclass
class FitResult:
    out_dir: Path
    best_epoch: int
    metrics: dict[str, float] = field(default_factory=dict)  # final val/* and test/* of the best model


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


def prepare_data(cfg: HaloAEConfig, data_root: str | Path, category: str) -> CategoryData:
    """Scan and validate the category (fails before any training), then split and decode it."""
    files = scan_category(Path(data_root), category)
    size, seed = cfg.model.image_size, cfg.train.seed
    train, held_out = split_train_val(files.train, cfg.train.val_fraction, seed)
    return CategoryData(
        category=category,
        train=TrainDataset(train, size, cfg.cutpaste, seed),
        train_good=load_eval_set(train, size),
        val=make_validation_set(held_out, size, seed),
        test=load_eval_set(files.test, size),
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(cfg: HaloAEConfig, params) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay, betas=o.betas)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay, betas=o.betas)
    return torch.optim.SGD(params, lr=o.lr, weight_decay=o.weight_decay, momentum=o.betas[0])


def epoch_indices(n: int, cfg: HaloAEConfig, epoch: int) -> torch.Tensor:
    """The images of one epoch: the training set repeated and shuffled, as the original's
    ``Repeat(train, 3000)`` loader; seeded by (seed, epoch) so a resumed run draws the same.
    Index ``r * n + i`` is image ``i`` with its own augmentation stream (TrainDataset)."""
    need = cfg.train.steps_per_epoch * cfg.train.batch_size
    gen = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + epoch)
    repeats = -(-need // n)
    return torch.cat([torch.randperm(n, generator=gen) + r * n for r in range(repeats)])[:need]


def batch_views(dataset: TrainDataset, indices: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(n originals, n CutPaste, n scar) concatenated: ``(3n, 3, S, S)``, and n."""
    items = [dataset[int(i)] for i in indices]
    views = [torch.stack([item[v] for item in items]) for v in range(len(items[0]))]
    return torch.cat(views), len(items)


def train_step(model, criterion, optimizer, images: torch.Tensor, n_originals: int, epoch: float, autocast) -> dict[str, float]:
    """One optimiser step on ``images`` ``(3n, 3, S, S)``; returns the loss parts as floats.

    A non-finite loss skips the update (the caller raises): weights stay those of the last good step.
    """
    with autocast:
        output = model(images)
        loss, parts = criterion(output, images, n_originals, epoch)
    if math.isfinite(parts["loss"]):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return parts


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (as the issue asks), a no-op context elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()


class FeatureCache:
    """Frozen-backbone features of fixed image sets, computed once per run, not per epoch."""

    def __init__(self, model: HaloAE, device: torch.device, batch_size: int) -> None:
        self.model, self.device, self.batch_size = model, device, batch_size
        self._cache: dict[str, torch.Tensor] = {}

    def get(self, name: str, images01: torch.Tensor) -> torch.Tensor | None:
        if self.model.backbone is None:
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
def run_outputs(model: HaloAE, images01: torch.Tensor, fm: torch.Tensor | None, device, batch_size: int):
    """Yield (normalised images, HaloAEOutput) batch by batch, in eval mode."""
    model.eval()
    for i in range(0, len(images01), batch_size):
        x = normalize(images01[i : i + batch_size]).to(device)
        f = fm[i : i + batch_size].to(device) if fm is not None else None
        yield x, model(x, fm=f)


def fit_standardization(model: HaloAE, good: EvalSet, device, batch_size: int) -> None:
    """fm's per-channel statistics (``model.backbone.standardize``) from train/good images only;
    must run before any fm is computed for training or cached for evaluation."""
    if model.backbone is None or not model.backbone.standardize:
        return
    batches = (normalize(good.images[i : i + batch_size]).to(device) for i in range(0, len(good), batch_size))
    model.backbone.fit_standardization(batches)


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
    split: str = "test",
    keep_maps: bool = False,
    image_score: str = "mean",
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Every available Table S1 scoring on one image set -> flat ``<split>/...`` metrics.

    The default scoring's metrics are also given without the scoring prefix
    (``test/image_auroc`` = ``test/afm_norm_filter/image_auroc``). ``image_score``
    (``eval.image_score``) is the map reduction behind ``image_auroc`` and the per-defect AUROCs;
    both reductions are always reported as ``image_auroc_mean`` and ``image_auroc_max``.
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
    metrics: dict[str, float] = {}
    for scoring in sorted({k.removesuffix("_max") for k in all_scores}):
        mean, peak = all_scores[scoring], all_scores.get(f"{scoring}_max")  # (N,) each; cls has no max
        chosen = peak if image_score == "max" and peak is not None else mean
        result = evaluate_maps(data.labels, data.masks, data.defects, all_maps.get(scoring), chosen, peak)
        if peak is not None:
            result["image_auroc_mean"] = image_auroc(data.labels, mean)
        metrics.update({f"{split}/{scoring}/{k}": v for k, v in result.items()})
    default = DEFAULT_SCORING if DEFAULT_SCORING in all_scores else next(iter(sorted(all_scores)), None)
    if default is not None:
        prefix = f"{split}/{default}/"
        metrics.update({f"{split}/{k.removeprefix(prefix)}": v for k, v in list(metrics.items()) if k.startswith(prefix)})
    return metrics, (all_maps if keep_maps else {})


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[HaloAE, AnomalyScorer, dict]:
    """Rebuild model and scorer from a checkpoint's config (state dicts only, strict)."""
    ckpt = torch.load(path, map_location=device, weights_only=False)
    cfg = HaloAEConfig.from_dict(ckpt["config"])
    cfg = cfg.replace(**{"model.backbone.weights": "random"})  # weights come from the state dict
    model = HaloAE(cfg).to(device)
    model.load_state_dict(ckpt["model"], strict=True)
    scorer = AnomalyScorer(cfg.model.image_size).to(device)
    scorer.load_state_dict(ckpt["scorer"], strict=True)
    return model, scorer, ckpt


def fit(
    cfg: HaloAEConfig,
    data: CategoryData,
    out_dir: str | Path,
    on_epoch: EpochCallback | None = None,
    resume: bool = True,
    progress: bool = True,
    eval_batch_size: int = 16,
) -> FitResult:
    """Train, validating and checkpointing every epoch; resume from ``out_dir`` if it has a checkpoint."""
    for epoch, metrics in fit_epochs(cfg, data, out_dir, resume, progress, eval_batch_size):
        if on_epoch is not None:
            on_epoch(epoch, metrics, Path(out_dir))
    return finish(Path(out_dir), data, pick_device(cfg.train.device), eval_batch_size)


def fit_epochs(
    cfg: HaloAEConfig,
    data: CategoryData,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    eval_batch_size: int = 16,
) -> Iterator[tuple[int, dict[str, float]]]:
    """The training loop as a generator: yields ``(epoch, metrics)`` once per epoch, *after* that
    epoch's checkpoint is on disk, so a caller may interleave several runs (a sweep trial that
    averages categories advances each run one epoch, then reports) or stop between epochs.
    Resumes from ``out_dir/checkpoint.pt`` when ``resume`` and it exists."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    model = HaloAE(cfg).to(device)
    criterion = HaloAELoss(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad] + list(criterion.parameters())
    optimizer = build_optimizer(cfg, params)
    scorer = AnomalyScorer(cfg.model.image_size).to(device)
    history: list[dict[str, float]] = []
    start_epoch, best_epoch, best_value = 0, -1, -math.inf
    last = out / CHECKPOINT
    if resume and last.is_file():
        ckpt = torch.load(last, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"], strict=True)
        criterion.load_state_dict(ckpt["criterion"], strict=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        scorer.load_state_dict(ckpt["scorer"], strict=True)
        _set_rng_state(ckpt["rng"])
        start_epoch, best_epoch, best_value = ckpt["epoch"] + 1, ckpt["best_epoch"], ckpt["best_value"]
        history = ckpt["history"]
    else:
        fit_standardization(model, data.train_good, device, eval_batch_size)
    cache = FeatureCache(model, device, eval_batch_size)
    autocast = autocast_for(device)
    bar = _progress(progress, cfg.train.epochs, start_epoch, data.category)
    for epoch in range(start_epoch, cfg.train.epochs):
        t0 = time.perf_counter()
        model.train()
        data.train.set_epoch(epoch)
        sums: dict[str, float] = {}
        step_s = 0.0  # optimiser steps only (no augmentation): what bench/bottle.py rates in GFLOP/s
        indices = epoch_indices(len(data.train), cfg, epoch)
        for step in range(cfg.train.steps_per_epoch):
            batch = indices[step * cfg.train.batch_size : (step + 1) * cfg.train.batch_size]
            images, n = batch_views(data.train, batch)
            t_step = time.perf_counter()
            parts = train_step(model, criterion, optimizer, images.to(device, non_blocking=True), n, epoch, autocast)
            step_s += time.perf_counter() - t_step  # parts are floats: the step has finished, also on CUDA
            if not math.isfinite(parts["loss"]):
                raise FloatingPointError(f"non-finite training loss {parts['loss']} at epoch {epoch}, step {step}")
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value)
        metrics = {f"train/{k}": v / cfg.train.steps_per_epoch for k, v in sums.items()}
        metrics["time/train_step_s"] = step_s / cfg.train.steps_per_epoch
        metrics["time/train_s"] = time.perf_counter() - t0  # steps + augmentation, before validation
        fit_scorer(model, scorer, data.train_good, cache.get("train_good", data.train_good.images), device, eval_batch_size)
        val_metrics, _ = evaluate(
            model, scorer, data.val, cache.get("val", data.val.images), device, eval_batch_size, "val",
            image_score=cfg.eval.image_score,
        )
        metrics.update(val_metrics)
        metrics["epoch"] = epoch
        metrics["time/epoch_s"] = time.perf_counter() - t0
        value = metrics.get(OBJECTIVE, metrics.get("val/image_auroc", math.nan))
        # ties go to the later epoch: small validation sets saturate (AUROC 1.0 for several
        # epochs), and of equally ranked checkpoints the later one has trained longer
        improved = not math.isnan(value) and value >= best_value
        if improved or best_epoch < 0:
            best_epoch, best_value = epoch, value if not math.isnan(value) else best_value
        history.append(metrics)
        state = {
            "model": model.state_dict(),
            "criterion": criterion.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scorer": scorer.state_dict(),
            "rng": _rng_state(),
            "epoch": epoch,
            "best_epoch": best_epoch,
            "best_value": best_value,
            "history": history,
            "config": cfg.to_dict(),
            "category": data.category,
        }
        if best_epoch == epoch:
            _atomic_save({k: state[k] for k in ("model", "scorer", "epoch", "config", "category")} | {"metrics": metrics}, out / BEST)
        _atomic_save(state, last)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{metrics.get('train/loss', math.nan):.4f}", val_auroc=f"{value:.3f}")
        yield epoch, metrics
    if bar is not None:
        bar.close()


def finish(out: Path, data: CategoryData, device, eval_batch_size: int = 16) -> FitResult:
    """Evaluate the best checkpoint on validation and test; write metrics.json and overlays."""
    model, scorer, best = load_checkpoint(out / BEST, device)
    cache = FeatureCache(model, device, eval_batch_size)
    reduce = model.cfg.eval.image_score
    val_metrics, _ = evaluate(
        model, scorer, data.val, cache.get("val", data.val.images), device, eval_batch_size, "val", image_score=reduce
    )
    test_metrics, maps = evaluate(
        model, scorer, data.test, cache.get("test", data.test.images), device, eval_batch_size, "test", keep_maps=True,
        image_score=reduce,
    )
    metrics = {**val_metrics, **test_metrics, "best_epoch": best["epoch"]}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    if maps:
        from haloae.overlay import save_overlays

        default = DEFAULT_SCORING if DEFAULT_SCORING in maps else next(iter(maps))
        save_overlays(data.test, maps[default], out / "overlays", limit=6)
    return FitResult(out, best["epoch"], metrics)


def evaluate_checkpoint(path: str | Path, data_root: str | Path, category: str, batch_size: int = 16) -> dict[str, float]:
    """Validation and test metrics of a saved checkpoint (its config rebuilds the data split)."""
    device = pick_device("auto")
    model, scorer, ckpt = load_checkpoint(path, device)
    data = prepare_data(model.cfg, data_root, category)
    cache = FeatureCache(model, device, batch_size)
    reduce = model.cfg.eval.image_score
    val, _ = evaluate(model, scorer, data.val, cache.get("val", data.val.images), device, batch_size, "val", image_score=reduce)
    test, _ = evaluate(
        model, scorer, data.test, cache.get("test", data.test.images), device, batch_size, "test", image_score=reduce
    )
    return {**val, **test}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _progress(enabled: bool, total: int, initial: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="epoch", leave=False)
