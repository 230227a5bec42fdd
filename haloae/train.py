# SPDX-License-Identifier: Apache-2.0
"""The training loop of one HaloAE run on one category: optimiser, epochs, the best checkpoint.

    fit(cfg, data, out_dir, on_epoch)   fm's standardisation statistics (train/good), then Adam,
                                        CutPaste-expanded batches, the loss weighting of cfg.loss;
                                        per epoch: validation metrics, the objective's best epoch
                                        (best.pt, ties to the later epoch), a checkpoint that
                                        resumes exactly, a callback; then ``finish``
    fit_epochs(...)                     the same loop as a generator, one item per epoch
    finish(out_dir, data, device)       best.pt on validation and test: metrics.json, overlays

Backbone features of the fixed image sets (``haloae.features.RunFeatures``) are computed once per
run: ``fit`` hands one store to its epochs and to ``finish``; a caller driving ``fit_epochs`` and
``finish`` itself passes its own as ``features`` (the sweep's, backed by the per-node cache).

Data comes from ``haloae.category_data``, scoring from ``haloae.evaluation``, every file from
``haloae.checkpoint``. Nothing here imports Ray or MLflow: the sweep layer drives ``fit_epochs``.
The normalisation map and fm's standardisation come from train/good images only, and checkpoint
choice from validation only (the original used the test set for the map and the choice: defects 2
and 3 of original-code-notes.md).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from haloae.category_data import CategoryData
from haloae.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_states,
    read_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from haloae.choices import AUTO_SCORING
from haloae.config import HaloAEConfig
from haloae.data import EvalSet, TrainDataset, normalize
from haloae.errors import InputError
from haloae.evaluation import EpochValidation, evaluate_splits, final_scorer
from haloae.features import RunFeatures
from haloae.losses import HaloAELoss
from haloae.model import HaloAE, HaloAEOutput
from haloae.paper_protocol import paper_epoch_metrics, paper_run_metrics
from haloae.precision import autocast_for, with_applied_precision
from haloae.progress import RunProgress, phase
from haloae.scoring import AnomalyScorer, pick_scoring
from haloae.vocab import (
    BEST_EPOCH,
    BEST_FILE,
    CHECKPOINT_FILE,
    DEFAULT_OBJECTIVE,
    METRICS_FILE,
    OVERLAYS_DIR,
    VAL,
)

MODES = ("max", "min")
EpochCallback = Callable[[int, dict[str, float], Path], None]
StepForward = Callable[[HaloAE, torch.Tensor, int, bool], HaloAEOutput]  # step_outputs' signature


class ObjectiveError(InputError):
    """The objective that chooses best.pt is not a validation metric the run reports."""


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


def check_objective(objective: str, mode: str) -> None:
    """A validation metric (test data never chooses anything) and max or min; ``ObjectiveError`` otherwise."""
    if not objective.startswith(f"{VAL}/"):
        raise ObjectiveError(f"objective {objective!r}: must be a validation metric (val/...); test data is for reporting only")
    if mode not in MODES:
        raise ObjectiveError(f"objective mode {mode!r}: expected one of {', '.join(MODES)}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(cfg: HaloAEConfig, params) -> torch.optim.Optimizer:
    """``optim.name``'s optimiser. Adam and AdamW run fused (torch's ``fused=True``: one kernel
    over every parameter) where torch has that kernel (float parameters on CPU or CUDA); the
    default per-tensor loop launches several small kernels for each parameter tensor."""
    o = cfg.optim
    params = list(params)
    if o.name in ("adam", "adamw"):
        adam = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
        return adam(params, lr=o.lr, weight_decay=o.weight_decay, betas=o.betas, fused=fused)
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


def train_step(
    model, criterion, optimizer, images: torch.Tensor, n_originals: int, epoch: float, autocast, views_apart: bool = False,
    forward: StepForward | None = None,
) -> dict[str, float]:
    """One optimiser step on ``images`` ``(3n, 3, S, S)``; returns the loss parts as floats.

    ``views_apart`` (``train.views_apart``): the originals and the CutPaste views are two forward
    batches, so BatchNorm normalises the originals by their own statistics; with
    ``model.classifier_detach`` the views' auto-encoder pass then needs no backward
    (``HaloAE.forward_views``). ``forward``: ``step_outputs`` or its compiled form
    (``training_forward``); None is ``step_outputs``.
    A non-finite loss skips the update (the caller raises): weights stay those of the last good step.
    """
    forward = step_outputs if forward is None else forward
    with autocast:
        loss, parts = criterion(forward(model, images, n_originals, views_apart), images, n_originals, epoch)
    if math.isfinite(parts["loss"]):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return parts


def step_outputs(model, images: torch.Tensor, n_originals: int, views_apart: bool) -> HaloAEOutput:
    """The training forward of ``train_step``: one batch, or the originals and the views apart."""
    if views_apart and n_originals < len(images):
        return concat_outputs(model(images[:n_originals]), model.forward_views(images[n_originals:]))
    return model(images)


def training_forward(cfg: HaloAEConfig) -> StepForward:
    """``step_outputs``, through torch.compile under ``train.compile`` (both batches of
    ``train.views_apart`` in one compiled function; shapes static, one graph set per batch size;
    the attention's own kernels run between the graphs, see ``haloae.attention``). Only the
    training forward is compiled: the model itself is unchanged, so evaluation, its state_dict
    and checkpoints are those of an uncompiled run. The compilation happens in the run's first
    step, so epoch 0's ``time/train_step_s`` includes it."""
    return torch.compile(step_outputs, dynamic=False) if cfg.train.compile else step_outputs


def concat_outputs(first: HaloAEOutput, second: HaloAEOutput) -> HaloAEOutput:
    """Two forward passes' outputs as the one of their concatenated batch (absent parts stay None)."""
    return HaloAEOutput(*(None if a is None else torch.cat([a, b]) for a, b in zip(first, second, strict=True)))


def fit_standardization(model: HaloAE, good: EvalSet, device, batch_size: int) -> None:
    """fm's per-channel statistics (``model.backbone.standardize``) from train/good images only;
    must run before any fm is computed for training or cached for evaluation."""
    if not model.has_backbone or not model.backbone.standardize:
        return
    batches = (normalize(good.images[i : i + batch_size]).to(device) for i in range(0, len(good), batch_size))
    model.backbone.fit_standardization(batches)


def fit(
    cfg: HaloAEConfig,
    data: CategoryData,
    out_dir: str | Path,
    on_epoch: EpochCallback | None = None,
    resume: bool = True,
    progress: bool = True,
    eval_batch_size: int = 16,
    objective: str = DEFAULT_OBJECTIVE,
    mode: str = "max",
    features: RunFeatures | None = None,
) -> FitResult:
    """Train, validating and checkpointing every epoch; resume from ``out_dir`` if it has a checkpoint.
    best.pt is the epoch with the best ``objective`` (a validation metric; ``mode`` max or min)."""
    features = RunFeatures() if features is None else features  # the epochs' val features serve finish too
    for epoch, metrics in fit_epochs(cfg, data, out_dir, resume, progress, eval_batch_size, objective, mode, features):
        if on_epoch is not None:
            on_epoch(epoch, metrics, Path(out_dir))
    with phase(f"{data.category}: best.pt on validation and test", progress):
        return finish(Path(out_dir), data, pick_device(cfg.train.device), eval_batch_size, features)


def fit_epochs(
    cfg: HaloAEConfig,
    data: CategoryData,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    eval_batch_size: int = 16,
    objective: str = DEFAULT_OBJECTIVE,
    mode: str = "max",
    features: RunFeatures | None = None,
) -> Iterator[tuple[int, dict[str, float]]]:
    """The training loop as a generator: yields ``(epoch, metrics)`` once per epoch, *after* that
    epoch's checkpoint is on disk, so a caller may interleave several runs (a sweep trial that
    averages categories advances each run one epoch, then reports) or stop between epochs.
    Resumes from ``out_dir/checkpoint.pt`` when ``resume`` and it exists (with the same objective).
    ``objective`` must be reported by the first epoch's validation (``ObjectiveError`` otherwise).
    ``features``: the run's feature store, to share with ``finish`` (None: the epochs' own)."""
    check_objective(objective, mode)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.train.device)
    cfg = with_applied_precision(cfg, device)  # checkpoints record the precision applied, never "auto"
    seed_everything(cfg.train.seed)
    model = HaloAE(cfg).to(device)
    criterion = HaloAELoss(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad] + list(criterion.parameters())
    optimizer = build_optimizer(cfg, params)
    scorer = AnomalyScorer(cfg.model.image_size).to(device)
    sign = 1.0 if mode == "max" else -1.0  # compare sign * value: larger is better
    history: list[dict[str, float]] = []
    start_epoch, best_epoch, best_value = 0, -1, -math.inf * sign
    last = out / CHECKPOINT_FILE
    if resume and last.is_file():
        state = _resume(last, objective, mode, cfg, model, criterion, optimizer, scorer)
        start_epoch, best_epoch, best_value = state["epoch"] + 1, state["best_epoch"], state["best_value"]
        history = state["history"]
    else:
        fit_standardization(model, data.train_good, device, eval_batch_size)
    validate = EpochValidation(model, scorer, data, device, eval_batch_size, objective, features)
    autocast = autocast_for(device, cfg.train.precision)
    forward = training_forward(cfg)
    shown = RunProgress(cfg.train.epochs, start_epoch, cfg.train.steps_per_epoch, data.category, progress)
    for epoch in range(start_epoch, cfg.train.epochs):
        t0 = time.perf_counter()
        model.train()
        data.train.set_epoch(epoch)
        sums: dict[str, float] = {}
        step_s = 0.0  # optimiser steps only (no augmentation): what bench/bottle.py rates in GFLOP/s
        indices = epoch_indices(len(data.train), cfg, epoch)
        shown.start_epoch(epoch)
        for step in range(cfg.train.steps_per_epoch):
            batch = indices[step * cfg.train.batch_size : (step + 1) * cfg.train.batch_size]
            images, n = batch_views(data.train, batch)
            t_step = time.perf_counter()
            parts = train_step(
                model, criterion, optimizer, images.to(device, non_blocking=True), n, epoch, autocast, cfg.train.views_apart,
                forward,
            )
            step_s += time.perf_counter() - t_step  # parts are floats: the step has finished, also on CUDA
            if not math.isfinite(parts["loss"]):
                raise FloatingPointError(f"non-finite training loss {parts['loss']} at epoch {epoch}, step {step}")
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            shown.step(parts["loss"])
        metrics = {f"train/{k}": v / cfg.train.steps_per_epoch for k, v in sums.items()}
        metrics["time/train_step_s"] = step_s / cfg.train.steps_per_epoch
        metrics["time/train_s"] = time.perf_counter() - t0  # steps + augmentation, before validation
        shown.validating()
        t_val = time.perf_counter()
        metrics.update(validate())  # the objective and cheap AUROCs (eval.epoch_metrics); finish does the rest
        metrics["time/val_s"] = time.perf_counter() - t_val
        metrics.update(paper_epoch_metrics(cfg, model, data.test, epoch, device, eval_batch_size))  # {} unless eval.protocol=paper
        metrics["epoch"] = epoch
        metrics["time/epoch_s"] = time.perf_counter() - t0
        if objective not in metrics:
            known = ", ".join(sorted(k for k in metrics if k.startswith(f"{VAL}/") and k.count("/") == 1))
            raise ObjectiveError(f"objective {objective!r}: not a metric this run reports; e.g. {known}")
        value = metrics[objective]
        # ties go to the later epoch: small validation sets saturate (AUROC 1.0 for several
        # epochs), and of equally ranked checkpoints the later one has trained longer
        if best_epoch < 0 or (not math.isnan(value) and sign * value >= sign * best_value):
            best_epoch, best_value = epoch, value if not math.isnan(value) else best_value
        history.append(metrics)
        if best_epoch == epoch:
            best = {"model": model.state_dict(), "scorer": scorer.state_dict(), "config": cfg.to_dict()}
            chosen = {"epoch": epoch, "category": data.category, "metrics": metrics, "objective": objective, "mode": mode}
            save_checkpoint(best | chosen, out / BEST_FILE)
        save_checkpoint(
            {
                "model": model.state_dict(),
                "criterion": criterion.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scorer": scorer.state_dict(),
                "rng": rng_state(),
                "epoch": epoch,
                "best_epoch": best_epoch,
                "best_value": best_value,
                "objective": objective,
                "mode": mode,
                "history": history,
                "config": cfg.to_dict(),
                "category": data.category,
            },
            last,
        )
        shown.end_epoch(epoch, metrics, objective)
        yield epoch, metrics
    shown.close()


def read_resume_state(
    path: str | Path, objective: str = DEFAULT_OBJECTIVE, mode: str = "max", cfg: HaloAEConfig | None = None
) -> dict:
    """A run's last checkpoint, checked before any work: readable (``CheckpointError``), written for
    the same model configuration as ``cfg`` (its weights would not fit) and under the same objective
    (``ObjectiveError``: best.pt would mix two choices)."""
    keys = ("model", "criterion", "optimizer", "scorer", "rng", "epoch", "best_epoch", "best_value", "history")
    state = read_checkpoint(path, keys=keys)
    if cfg is not None and "config" in state:
        _check_same_model(path, HaloAEConfig.from_dict(state["config"]), cfg)
    # checkpoints of an older haloae chose best.pt by val/image_auroc (max), today's default
    chosen_by = (state.get("objective", DEFAULT_OBJECTIVE), state.get("mode", "max"))
    if chosen_by != (objective, mode):
        raise ObjectiveError(
            f"{path}: its best.pt was chosen by {chosen_by[0]} ({chosen_by[1]}), not {objective} ({mode}); "
            "resume with that objective, or start afresh (--no-resume or another --out)"
        )
    return state


def _check_same_model(path: str | Path, saved: HaloAEConfig, cfg: HaloAEConfig) -> None:
    """Refuse to resume a checkpoint written for another model or loss: its state would not fit (or,
    worse, fit with another meaning). Training-length knobs may change (a run can be extended)."""
    mine, theirs = cfg.flatten(), saved.flatten()
    differ = [k for k in sorted(mine) if k.startswith(("model.", "loss.")) and mine[k] != theirs.get(k)]
    if differ:
        key = differ[0]
        raise CheckpointError(
            f"{path}: written for another configuration ({key}: {theirs.get(key)!r} there, {mine[key]!r} now"
            f"{f' and {len(differ) - 1} more' if len(differ) > 1 else ''}); resume with the same settings, "
            "or start afresh (--no-resume or another --out)"
        )


def _resume(path: Path, objective: str, mode: str, cfg: HaloAEConfig, model, criterion, optimizer, scorer) -> dict:
    """Put the run's state back from its last checkpoint; returns the checkpoint dict."""
    state = read_resume_state(path, objective, mode, cfg)
    load_states(path, [(model, state["model"]), (criterion, state["criterion"]), (optimizer, state["optimizer"]),
                       (scorer, state["scorer"])])  # fmt: skip
    restore_rng_state(state["rng"])
    return state


def finish(
    out: Path, data: CategoryData, device, eval_batch_size: int = 16, features: RunFeatures | None = None
) -> FitResult:
    """Evaluate the best checkpoint on validation and test; write metrics.json and overlays.

    The normalisation map is refitted on every train/good image first (an epoch's may come from a
    subset: ``eval.epoch_norm_images``) and stored in best.pt, so that export and ``haloae evaluate``
    use the map behind these numbers. Running it again gives the same file and numbers, with or
    without ``features`` (the run's store: best.pt's backbone is the run's, so its sets are reused)."""
    model, _, best = load_checkpoint(out / BEST_FILE, device)
    scorer = final_scorer(model, data, device, eval_batch_size, features)
    kept = {k: v for k, v in best.items() if k not in ("format", "version")}  # save_checkpoint adds them
    save_checkpoint(kept | {"scorer": scorer.state_dict()}, out / BEST_FILE)
    metrics, maps = evaluate_splits(
        model, scorer, data, device, eval_batch_size, keep_test_maps=True, features=features
    )
    metrics[BEST_EPOCH] = best["epoch"]
    metrics.update(paper_run_metrics(model.cfg, out))  # leaky/... beside the honest numbers, eval.protocol=paper only
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True))
    if maps:
        from haloae.overlay import save_overlays

        scoring = model.cfg.eval.scoring  # the run's image score; cls has no map: then the default map
        save_overlays(data.test, maps[pick_scoring(list(maps), scoring if scoring in maps else AUTO_SCORING)],
                      out / OVERLAYS_DIR, limit=6)
    return FitResult(out, best["epoch"], metrics)

