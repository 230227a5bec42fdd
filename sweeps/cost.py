# SPDX-License-Identifier: Apache-2.0
"""What a sweep costs before it runs: trial counts, epochs and device-hours, for ``--dry-run``.

One training run (a category and a seed) costs, per epoch, ``steps_per_epoch`` optimiser steps and
an evaluation pass (the scorer is refitted on the training images and the validation set is
scored: ``haloae.train.fit_epochs``), then one final evaluation on validation and test. Step times
come from measurements kept below, per (preset, device), each with its source; nothing is measured
at import or call time. Without a measurement for a (preset, device), the step time is scaled by
FLOPs from a measured entry on the same device, or from an assumed GPU rate (marked as such in
``CostEstimate.basis``). The estimate ignores early stopping by ASHA: it is an upper bound.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from haloae.categories import CATEGORIES, DEFECT_TYPES
from haloae.config import HaloAEConfig
from haloae.presets import PRESETS
from sweeps.schema import SweepSpec
from sweeps.trials import build_config, count_trials, search_domains, trial_grid


@dataclass(frozen=True)
class StepCost:
    """Measured median seconds per optimiser step of a preset's model (halo attention)."""

    step_s: float | None  # None: not measured yet (a placeholder)
    batch: int  # originals per step it was measured at (x3 images with CutPaste)
    eval_img_s: float | None  # evaluation forward pass, images per second
    source: str


STEP_COSTS: dict[tuple[str, str], StepCost] = {
    ("cpu", "cpu"): StepCost(
        0.79, 4, 38.7,
        "bench/train_step.py --preset cpu --steps 9 on the project's 2-core CPU machine, 2 threads, median "
        "of 9 (attention_legacy: 0.87 s/step, attention_none: 0.44 s/step)",
    ),
    # PLACEHOLDER - the paper preset on a GPU is not measured yet: fill in step_s and eval_img_s from
    # `python bench/train_step.py --preset paper --device cuda` (until then: FLOP-scaled, assumed rate)
    ("paper", "gpu"): StepCost(None, 4, None, "not measured yet (bench/train_step.py --preset paper --device cuda)"),
}  # fmt: skip

# FLOPs of one training step (forward, loss, backward) per image in the batch, at the preset's
# image size, halo attention; torch.utils.flop_counter as bench/train_step.py counts them (cpu:
# 72.4 GFLOP/step, paper: 3246.1 GFLOP/step, both at batch 4 with CutPaste = 12 images).
# paper_lean runs the same computation as paper: its dropped convolutions are never called.
GFLOP_PER_IMAGE = {"cpu": 72.36 / 12, "paper": 3246.08 / 12, "paper_lean": 3246.08 / 12}
# Step time relative to halo attention, per device: measured on the CPU (legacy 0.87 / 0.79, none
# 0.44 / 0.79); on a GPU, until measured, the FLOP ratio (none: 2909.2 / 3246.1 on paper: 0.90).
ATTENTION_FACTOR = {
    "cpu": {"halo": 1.0, "legacy": 0.87 / 0.79, "none": 0.44 / 0.79},
    "gpu": {"halo": 1.0, "legacy": 1.0, "none": 0.90},
}
# PLACEHOLDER - achieved (not peak) bf16 rate of one data-centre GPU on this model, used only while
# STEP_COSTS has no GPU measurement: attention-heavy small convolutions reach a small share of peak.
ASSUMED_GPU_GFLOPS = 40_000.0
# An evaluation forward pass costs about a third of a training step per image (forward vs forward
# and backward); checked on the cpu preset: 0.79 s / 12 images / 3 = 22 ms, measured 26 ms.
FORWARD_SHARE = 1 / 3
# MVTec AD images per category (train/good, test), Bergmann et al. 2019, Table 1.
MVTEC_IMAGES = {
    "bottle": (209, 83), "cable": (224, 150), "capsule": (219, 132), "carpet": (280, 117), "grid": (264, 78),
    "hazelnut": (391, 110), "leather": (245, 124), "metal_nut": (220, 115), "pill": (267, 167),
    "screw": (320, 160), "tile": (230, 117), "toothbrush": (60, 42), "transistor": (213, 100),
    "wood": (247, 79), "zipper": (240, 151),
}  # fmt: skip


@dataclass(frozen=True)
class StepTime:
    step_s: float  # seconds per optimiser step
    eval_s: float  # seconds per evaluated image
    basis: str  # how it was obtained


@dataclass(frozen=True)
class CostRow:
    label: str  # the trials' variant and enumerated values
    trials: float  # optuna spreads its draws over the rows: may be fractional
    seconds_per_step: float
    seconds_per_epoch: float  # mean over the row's categories
    hours: float  # all the row's trials, one after another


@dataclass(frozen=True)
class CostEstimate:
    trials: int
    epochs_per_trial: int  # epochs trained by one trial (x categories x seeds with aggregate mean)
    seconds_per_epoch: float  # one run's epoch, averaged over the trials
    total_hours: float  # trial-hours: every trial one after another
    device: str  # "cpu" | "gpu"
    device_hours: float  # GPU-hours (trial-hours x resources.gpu) or CPU-core-hours
    basis: str
    rows: list[CostRow] = field(default_factory=list)

    @property
    def gpu_hours(self) -> float:
        return self.device_hours if self.device == "gpu" else 0.0

    def __str__(self) -> str:
        return self.format()

    def format(self, limit: int = 20) -> str:
        unit = "GPU-hours" if self.device == "gpu" else "CPU-core-hours"
        lines = [
            f"estimated cost: {self.trials} trials x {self.epochs_per_trial} epochs, {self.seconds_per_epoch:.1f} s per "
            f"epoch on {self.device}: {self.total_hours:.2f} trial-hours = {self.device_hours:.2f} {unit}",
            f"  step times: {self.basis}; trial start-up not included",
        ]
        table = [
            (r.label, _g(r.trials), f"{r.seconds_per_step:.3g}", f"{r.seconds_per_epoch:.1f}", f"{r.hours:.2f}")
            for r in self.rows[:limit]
        ]
        lines += ["  " + line for line in _table(("trials of", "trials", "s/step", "s/epoch", "hours"), table)]
        if len(self.rows) > limit:
            lines.append(f"  ... and {len(self.rows) - limit} more rows")
        return "\n".join(lines)


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, tuple)) else str(value)


def _g(x: float) -> str:
    return f"{x:d}" if isinstance(x, int) else f"{x:.3g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]


# ---------------------------------------------------------------------- one run
def _gflop_per_image(cfg: HaloAEConfig) -> float:
    """Per image of a step's batch; presets without a count scale the cpu preset's by pixels."""
    size = PRESETS[cfg.preset].get("model.image_size", HaloAEConfig().model.image_size)
    base = GFLOP_PER_IMAGE.get(cfg.preset)
    if base is None:
        base, size = GFLOP_PER_IMAGE["cpu"], PRESETS["cpu"]["model.image_size"]
    return base * (cfg.model.image_size / size) ** 2


def step_time(cfg: HaloAEConfig, device: str) -> StepTime:
    """Seconds per step and per evaluated image of one trial configuration on ``device``."""
    factor = ATTENTION_FACTOR[device].get(cfg.model.attention, 1.0)
    images = (3 if cfg.cutpaste.enabled else 1) * cfg.train.batch_size
    measured = STEP_COSTS.get((cfg.preset, device))
    if measured is not None and measured.step_s is not None:
        step = measured.step_s * images / (3 * measured.batch) * factor  # measured with CutPaste
        eval_s = 1 / measured.eval_img_s if measured.eval_img_s else step / images * FORWARD_SHARE
        return StepTime(step, eval_s, f"measured ({cfg.preset} on {device}: {measured.source})")
    reference = [(p, c) for (p, d), c in STEP_COSTS.items() if d == device and c.step_s is not None and p in GFLOP_PER_IMAGE]
    if reference:
        preset, c = reference[0]
        rate = GFLOP_PER_IMAGE[preset] * 3 * c.batch / c.step_s
        basis = f"scaled by FLOPs from the measured {preset} preset on {device}"
    else:
        rate = ASSUMED_GPU_GFLOPS
        basis = f"scaled by FLOPs at an ASSUMED {rate / 1000:g} TFLOP/s (no {device} measurement yet: see sweeps/cost.py)"
    step = _gflop_per_image(cfg) * images / rate * factor
    return StepTime(step, step / images * FORWARD_SHARE, basis)


def category_images(spec: SweepSpec, category: str) -> tuple[int, int]:
    """(train/good, test) image counts: MVTec AD's, the synthetic generator's, or MVTec's mean."""
    synth = spec.data.synthetic
    if synth is not None:
        return synth.n_train, synth.n_test_good + len(DEFECT_TYPES[category]) * synth.n_test_defect_per_type
    if category in MVTEC_IMAGES:
        return MVTEC_IMAGES[category]
    n = len(CATEGORIES)
    return round(sum(t for t, _ in MVTEC_IMAGES.values()) / n), round(sum(t for _, t in MVTEC_IMAGES.values()) / n)


def run_seconds(cfg: HaloAEConfig, time: StepTime, images: tuple[int, int]) -> tuple[float, float]:
    """(seconds per epoch, seconds for the whole run) of one category and seed."""
    n_train, n_test = images
    held_out = max(1, round(n_train * cfg.train.val_fraction))
    # per epoch: the scorer is refitted on the kept training images, the validation set (each
    # held-out image as is and with a synthetic defect) is scored
    eval_per_epoch = (n_train - held_out) + 2 * held_out
    epoch = cfg.train.steps_per_epoch * time.step_s + eval_per_epoch * time.eval_s
    # once: feature standardisation on the training images, final validation and test
    once = ((n_train - held_out) + 2 * held_out + n_test) * time.eval_s
    return epoch, cfg.train.epochs * epoch + once


# ---------------------------------------------------------------------- a sweep
def estimate(spec: SweepSpec) -> CostEstimate:
    """Trials, epochs and hours of a sweep, per enumerated grid point (variant x enumerated values).

    Drawn values (random / optuna) are costed at their first value or lower bound; optuna's
    draws are spread evenly over the variants it picks from.
    """
    device = "gpu" if spec.resources.gpu > 0 else "cpu"
    trials = count_trials(spec)
    grid = trial_grid(spec)
    per_point = spec.search.num_samples if spec.search.algorithm != "optuna" else trials / len(grid)
    first = {k: d.values[0] for k, d in search_domains(spec).items() if k != "variant"}
    rows: dict[str, list[float]] = {}  # label -> [trials, step_s, epoch_s sum, epochs counted, seconds]
    bases: set[str] = set()
    for point in grid:
        label = " ".join(str(v) if k == "variant" else f"{k}={_text(v)}" for k, v in point.items() if k not in ("category", "seed"))
        label = label or "drawn by optuna"
        variants = [point["variant"]] if "variant" in point else list(spec.variants)
        runs = [(point["category"], point["seed"])] if "category" in point else [(c, s) for c in spec.categories() for s in spec.seeds]
        for variant in variants:
            share = per_point / len(variants)
            for category, seed in runs:
                cfg = build_config(spec, {**first, **point, "variant": variant, "category": category, "seed": seed})
                time = step_time(cfg, device)
                bases.add(time.basis)
                epoch_s, run_s = run_seconds(cfg, time, category_images(spec, category))
                row = rows.setdefault(label, [0.0, 0.0, 0.0, 0.0, 0.0])
                row[1] = max(row[1], time.step_s)
                row[2] += epoch_s
                row[3] += 1
                row[4] += share * run_s
            rows[label][0] += share
    cost_rows = [
        CostRow(label, int(t) if float(t).is_integer() else t, step, epoch_sum / n, seconds / 3600)
        for label, (t, step, epoch_sum, n, seconds) in rows.items()
    ]
    total_hours = sum(r.hours for r in cost_rows)
    mean_epoch = sum(r.seconds_per_epoch * r.trials for r in cost_rows) / max(sum(r.trials for r in cost_rows), 1e-9)
    share = spec.resources.gpu if device == "gpu" else spec.resources.cpu
    return CostEstimate(
        trials=trials,
        epochs_per_trial=spec.epochs() * spec.runs_per_trial(),
        seconds_per_epoch=mean_epoch,
        total_hours=total_hours,
        device=device,
        device_hours=total_hours * share,
        basis="; ".join(sorted(bases)) + ("; an upper bound: ASHA stops some trials early" if spec.scheduler.type == "asha" else ""),
        rows=cost_rows,
    )


def format_trials(spec: SweepSpec, limit: int = 20) -> str:
    """The dry-run listing: what the searcher enumerates (first ``limit`` rows) and what it draws."""
    search = spec.search
    grid = trial_grid(spec)
    trials = count_trials(spec)
    if search.algorithm == "optuna":
        head = f"{spec.name}: {trials} trials drawn by optuna ({search.effective_sampler} sampler, seed {search.seed})"
    elif search.num_samples > 1:
        head = f"{spec.name}: {trials} trials ({search.algorithm} search: {len(grid)} grid points x {search.num_samples} samples)"
    else:
        head = f"{spec.name}: {trials} trials ({search.algorithm} search)"
    lines = [head]
    enumerated = grid if grid and grid[0] else []
    if enumerated:
        keys = list(enumerated[0])
        rows = [[i + 1, *(_text(p[k]) for k in keys)] for i, p in enumerate(enumerated[:limit])]
        lines += ["  " + line for line in _table(("#", *keys), rows)]
        if len(enumerated) > limit:
            lines.append(f"  ... and {len(enumerated) - limit} more grid points")
    drawn = {k: d for k, d in search_domains(spec).items() if not any(k in p for p in enumerated)}
    if drawn:
        lines.append("  drawn per trial: " + "; ".join(f"{k} {d.describe()}" for k, d in drawn.items()))
    if spec.objective.aggregate == "mean":
        lines.append(
            f"  each trial trains {len(spec.categories())} categories x {len(spec.seeds)} seed(s) and reports the mean "
            f"{spec.objective.metric} ({', '.join(spec.categories())})"
        )
    lines.append(
        f"  objective: {spec.objective.mode} {spec.objective.metric}; scheduler {spec.scheduler.type}"
        + (f" (grace {spec.scheduler.grace_period}, factor {spec.scheduler.reduction_factor:g}, max_t {spec.max_t()})"
           if spec.scheduler.type == "asha" else "")
    )
    return "\n".join(lines)
