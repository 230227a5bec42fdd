# SPDX-License-Identifier: Apache-2.0
"""The cpu preset on the real MVTec AD bottle, beside the paper's bottle row (Table 2: 100.0 / 91.9).

One ``haloae.train.fit`` run per variant, exactly as ``haloae train --preset cpu [--variant V]``
does it (offline ImageNet EfficientNet-Lite0 features, standardised on train/good): by default
the full HaloAE loss (``haloae``) and Table 3's ``fm_only`` row, 20 epochs x 25 steps each, about
22 minutes in all at 1 thread. Each checkpoint is chosen on the validation split (held-out
train/good images plus synthetic defects); the test split is evaluated once, at the end, and only
reported. Printed:

* per epoch: training loss, validation image AUROC (map mean and max), pixel AUROC, seconds;
* per variant, validation and test image AUROC (map mean, the paper's score, and max), pixel
  AUROC and AUPRO up to FPR 0.3, in percent, beside the paper's HaloAE bottle row (selected and
  normalised on the test set: shared/reference/original-code-notes.md, defects 2 and 3);
* per variant, the training step's achieved GFLOP/s (its FLOPs, counted by
  ``torch.utils.flop_counter``, over the measured mean optimiser-step time, augmentation
  excluded) against a dense fp32 matmul peak measured with the same thread count
  (``bench/train_step.py``; the better of a measurement before and one after training);
* the 1-minute load average before and after: the CPUs may be shared, and every time scales with it.

Run::

    python bench/bottle.py                                   # /work/shared/data/mvtec_ad, 2 threads
    python bench/bottle.py --variants haloae --steps 50      # only the full loss, longer
    python bench/bottle.py --data-root ~/mvtec_ad --set model.attention=none
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from analysis.paper import paper_pair  # noqa: E402
from bench.common import bench_args, pct, print_header, schedule_overrides, variant_data  # noqa: E402
from bench.train_step import matmul_peak_gflops, step_flops  # noqa: E402
from haloae.losses import HaloAELoss  # noqa: E402
from haloae.model import HaloAE  # noqa: E402
from haloae.train import batch_views, epoch_indices, fit  # noqa: E402

# The cpu preset's own length (its alpha schedule spans 20 epochs). Measured on the idle 2-core
# machine with 1 thread: a full-loss epoch (25 steps + validation) 42 s, an fm-only one 20 s:
# ~22 min for both variants. When other jobs share the cores, --threads 1 avoids the stalls of two
# threads waiting on each other.
EPOCHS, STEPS = 20, 25
VARIANTS = ("haloae", "fm_only")


def run_variant(variant: str, overrides: list[str], args: argparse.Namespace) -> dict:
    """Train and evaluate one variant; returns its final metrics, best epoch and step rate."""
    cfg, data = variant_data(variant, overrides, args)
    print(f"# {variant}: train {len(data.train)} images, validation {len(data.val)} "
          f"(held-out good + synthetic defects), test {len(data.test)}", flush=True)
    epochs: list[dict[str, float]] = []

    def report(epoch: int, m: dict[str, float], out_dir: Path) -> None:
        epochs.append(m)
        print(f"{variant} epoch {epoch:2d}  loss {m['train/loss']:.4f}  val image AUROC mean "
              f"{pct(m['val/image_auroc_mean'])} max {pct(m['val/image_auroc_max'])}  "
              f"pixel {pct(m['val/pixel_auroc'])}  {m['time/epoch_s']:.0f} s", flush=True)

    t0 = time.perf_counter()
    result = fit(cfg, data, args.out / variant, on_epoch=report, resume=False, progress=False)
    minutes = (time.perf_counter() - t0) / 60
    # FLOPs of one optimiser step on a real batch (the weights do not change the count)
    model = HaloAE(cfg.replace(**{"model.backbone.weights": "random"})).train()
    images, n = batch_views(data.train, epoch_indices(len(data.train), cfg, 0)[: cfg.train.batch_size])
    flops = step_flops(model, HaloAELoss(cfg), images, n, torch.device("cpu"), cfg.train.views_apart)
    step_s = statistics.mean(m["time/train_step_s"] for m in epochs)
    return {"metrics": result.metrics, "best_epoch": result.best_epoch, "minutes": minutes, "flops": flops,
            "step_s": step_s, "image_score": cfg.eval.image_score}


def main(argv: list[str] | None = None) -> int:
    args = bench_args(__doc__, argv, threads=2, data_help="MVTec AD root (read only, never copied)",
                      schedule=(VARIANTS, EPOCHS, STEPS), out=REPO_ROOT / "runs" / "bench" / "bottle")
    overrides = [*schedule_overrides(args), *args.sets]
    load_before = os.getloadavg()[0]
    peak_before = matmul_peak_gflops(torch.device("cpu"))
    print_header("bench/bottle.py", args, overrides)
    print(f"# torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, "
          f"load average {load_before:.1f}", flush=True)
    t0 = time.perf_counter()
    runs = {variant: run_variant(variant, overrides, args) for variant in args.variants}
    peak_after = matmul_peak_gflops(torch.device("cpu"))
    peak = max(peak_before, peak_after)  # the less contended of the two measurements

    paper = paper_pair("table2", "HaloAE", args.category) or (None, None)
    print()
    print(f"{args.category}, {args.epochs} epochs x {args.steps} steps per variant, "
          f"{(time.perf_counter() - t0) / 60:.1f} min in all; checkpoints chosen on validation")
    header = f"{'':26s} {'image AUROC mean':>16s} {'max':>5s} {'pixel AUROC':>11s} {'AUPRO':>5s}  best epoch"
    print(header)
    print(f"{'paper, HaloAE (Table 2)':26s} {paper[0] or '-':>16s} {'-':>5s} {paper[1] or '-':>11s} {'-':>5s}")
    for variant, run in runs.items():
        m = run["metrics"]
        for split in ("val", "test"):
            print(f"{f'{variant}, {split}':26s} {pct(m[f'{split}/image_auroc_mean']):>16s} "
                  f"{pct(m[f'{split}/image_auroc_max']):>5s} {pct(m[f'{split}/pixel_auroc']):>11s} "
                  f"{pct(m[f'{split}/aupro']):>5s}  {run['best_epoch']}")
    print(f"(the checkpoint was chosen by the validation image AUROC of the map {run['image_score']}, "
          f"eval.image_score; the paper scores images by the map mean)")
    for variant, run in runs.items():
        achieved = run["flops"] / run["step_s"] / 1e9
        print(f"{variant} training step: {run['flops'] / 1e9:.1f} GFLOP in {run['step_s']:.3f} s = "
              f"{achieved:.1f} GFLOP/s, {100 * achieved / peak:.0f} % of the {args.threads}-thread fp32 matmul peak "
              f"of {peak:.0f} GFLOP/s; run {run['minutes']:.1f} min")
    print(f"matmul peak measured {peak_before:.0f} GFLOP/s before and {peak_after:.0f} after; load average "
          f"(1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
