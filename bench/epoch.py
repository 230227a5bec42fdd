# SPDX-License-Identifier: Apache-2.0
"""Where one cpu-preset epoch on the real MVTec AD bottle goes: train steps, augmentation,
validation, checkpoint; the per-epoch evaluation before issue 15 and today's, side by side in one run.

Two layouts, each one real ``haloae.train.fit_epochs`` epoch on the same data and seed (so the
same training work and the same weights after it):

* ``before`` -- ``eval.epoch_metrics=full eval.epoch_norm_images=0``: the old loop, every epoch
  refitting the normalisation map on every train/good image and computing every Table S1 scoring,
  AUPRO and per-defect AUROC on validation;
* ``after``  -- the defaults: the map from a fixed subset (``eval.epoch_norm_images``), validation
  scored only for the objective and the cheap AUROCs (``haloae.evaluation.EpochValidation``).

Printed per layout: seconds and shares of the epoch for the optimiser steps (``time/train_step_s``),
augmentation (the rest of ``time/train_s``: CutPaste batches, the loop), validation
(``time/val_s`` minus the backbone features of the two image sets, computed once per run and
printed apart) and checkpoint (every ``save_checkpoint`` of the epoch: checkpoint.pt, best.pt).
Then the objective under both maps, and the one final evaluation (``finish``) that now carries the
full metrics. Target: validation + checkpoint <= 10% of the epoch.

Run::

    python bench/epoch.py --threads 1          # /work/shared/data/mvtec_ad/bottle, 25 steps
    python bench/epoch.py --steps 10 --set eval.epoch_norm_images=32
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import haloae.evaluation  # noqa: E402
import haloae.train  # noqa: E402
from bench.common import bench_args, print_header, variant_data  # noqa: E402
from haloae.config import HaloAEConfig  # noqa: E402
from haloae.vocab import DEFAULT_OBJECTIVE  # noqa: E402

LAYOUTS = {
    "before": ["eval.epoch_metrics=full", "eval.epoch_norm_images=0"],
    "after": [],
}


class Stopwatch:
    """Seconds spent in a wrapped function, summed over its calls."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        return timed


def one_epoch(cfg: HaloAEConfig, data, out: Path, final: bool) -> dict[str, float]:
    """One real epoch of ``fit_epochs`` with its checkpoint writes and feature-cache fills timed."""
    checkpoint, features = Stopwatch(), Stopwatch()
    save, get = haloae.train.save_checkpoint, haloae.evaluation.FeatureCache.get
    haloae.train.save_checkpoint = checkpoint.wrap(save)
    haloae.evaluation.FeatureCache.get = features.wrap(get)
    try:
        (_, metrics), *_ = list(haloae.train.fit_epochs(cfg, data, out, resume=False, progress=False))
    finally:
        haloae.train.save_checkpoint, haloae.evaluation.FeatureCache.get = save, get
    steps = metrics["time/train_step_s"] * cfg.train.steps_per_epoch
    row = {
        "train steps": steps,
        "augmentation": metrics["time/train_s"] - steps,
        "validation": metrics["time/val_s"] - features.seconds,
        "checkpoint": checkpoint.seconds,
        "features": features.seconds,
        "objective": metrics[DEFAULT_OBJECTIVE],
    }
    if final:
        t0 = time.perf_counter()
        haloae.train.finish(out, data, torch.device("cpu"))
        row["finish"] = time.perf_counter() - t0
    return row


def main(argv: list[str] | None = None) -> int:
    def steps(p: argparse.ArgumentParser) -> None:
        p.add_argument("--steps", type=int, default=None, help="optimiser steps per epoch (default: the cpu preset's)")

    args = bench_args(__doc__, argv, threads=2, extra=steps)
    common = ["train.epochs=1", "train.device=cpu", *args.sets]
    if args.steps is not None:
        common.append(f"train.steps_per_epoch={args.steps}")
    cfg, data = variant_data(None, common, args)
    print_header("bench/epoch.py", args, common)
    print(f"# torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; train {len(data.train)}, train/good {len(data.train_good)}, "
          f"validation {len(data.val)} images; {cfg.train.steps_per_epoch} steps x {cfg.train.batch_size} "
          f"originals (x3 with CutPaste)", flush=True)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="haloae-bench-epoch-") as tmp:
        for name, overrides in LAYOUTS.items():
            layout = HaloAEConfig.from_overrides("cpu", [*common, *overrides])
            rows[name] = one_epoch(layout, data, Path(tmp) / name, final=name == "after")
    parts = ("train steps", "augmentation", "validation", "checkpoint")
    print(f"{'layout':8s}" + "".join(f"{part:>20s}" for part in parts) + f"{'epoch':>9s}  validation + checkpoint")
    for name, row in rows.items():
        epoch = sum(row[part] for part in parts)
        cells = "".join(f"{row[part]:8.2f} s ({100 * row[part] / epoch:4.1f}%)" for part in parts)
        share = 100 * (row["validation"] + row["checkpoint"]) / epoch
        print(f"{name:8s}{cells}{epoch:7.1f} s  {share:4.1f}% of the epoch")
    after = HaloAEConfig.from_overrides("cpu", common).eval.epoch_norm_images
    print(f"backbone features of the map's images and validation, once per run (first epoch): "
          f"before {rows['before']['features']:.2f} s, after {rows['after']['features']:.2f} s")
    print(f"objective {DEFAULT_OBJECTIVE} after the epoch: {rows['before']['objective']:.4f} with the map of all "
          f"{len(data.train_good)} train/good images, {rows['after']['objective']:.4f} with {after or 'all'} of them")
    print(f"final evaluation (finish: map refitted on all train/good, every metric on validation and test), "
          f"once per run: {rows['after']['finish']:.1f} s; load average {os.getloadavg()[0]:.1f} after")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
