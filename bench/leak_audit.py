# SPDX-License-Identifier: Apache-2.0
"""How many AUROC points the published evaluation adds: honest vs paper protocol on the real bottle.

One ``haloae.train.fit`` run per variant (the cpu preset; by default the full HaloAE loss and
Table 3's ``fm_only``) with ``eval.protocol=paper``: the honest numbers (normalisation map on
train/good, best.pt chosen on validation, no flipping) and, beside them, the published protocol's
(map on test/good, the best of the last three saved checkpoints by *test* image AUROC,
max(AUC, 1 - AUC), pixel AUROC at 128 px: ``haloae.paper_protocol``), which are LEAKY. Printed per
variant: both, the inflation (paper minus honest, in points), and the inflation attributed step by
step on the honest checkpoint (each leak added in turn, then the choice on test). The cpu preset's
images are 128 px, so its 128 px step adds nothing here; at the paper's 256 px it would.

The default schedule is short (8 epochs x 15 steps, a checkpoint every epoch: about 20 minutes
for both variants on a loaded 2-core machine); ``--epochs 20 --steps 25`` is the cpu preset's own,
``--checkpoint-every`` the spacing of the "saved checkpoints" (the code's 10 of 251 epochs).

Run::

    python bench/leak_audit.py                          # /work/shared/data/mvtec_ad/bottle, 1 thread
    python bench/leak_audit.py --epochs 20 --steps 25   # the cpu preset's full schedule
    python bench/leak_audit.py --variants haloae --set model.attention=none
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.common import bench_args, pct, print_header, schedule_overrides, variant_data  # noqa: E402
from haloae.checkpoint import load_checkpoint  # noqa: E402
from haloae.paper_protocol import PAPER_PIXEL_SIZE, paper_checkpoint_epochs, score_published  # noqa: E402
from haloae.train import fit  # noqa: E402
from haloae.vocab import BEST_FILE, LEAKY_BEST_EPOCH, LEAKY_IMAGE_AUROC, LEAKY_LABEL, LEAKY_PIXEL_AUROC  # noqa: E402

EPOCHS, STEPS, EVERY = 8, 15, 1
VARIANTS = ("haloae", "fm_only")


def _points(a: float | None, b: float | None) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{100 * (a - b):+.1f}"


def run_variant(variant: str, overrides: list[str], args: argparse.Namespace) -> dict:
    """Train one variant under both protocols; its honest and leaky numbers and the attribution."""
    cfg, data = variant_data(variant, overrides, args)
    scored = paper_checkpoint_epochs(cfg.train.epochs, cfg.eval.paper_checkpoint_every)
    print(f"# {variant}: train {len(data.train)}, validation {len(data.val)}, test {len(data.test)} images; "
          f"paper protocol scores the checkpoints of epochs {list(scored)} on test", flush=True)

    def report(epoch: int, m: dict[str, float], out_dir: Path) -> None:
        leaky = f"  [{LEAKY_LABEL.split()[0]} checkpoint image {pct(m['leaky/checkpoint/image_auroc'])}]" \
            if "leaky/checkpoint/image_auroc" in m else ""
        print(f"{variant} epoch {epoch:2d}  loss {m['train/loss']:.4f}  val image AUROC {pct(m['val/image_auroc'])}"
              f"  {m['time/epoch_s']:.0f} s{leaky}", flush=True)

    t0 = time.perf_counter()
    result = fit(cfg, data, args.out / variant, on_epoch=report, resume=False, progress=False)
    m = result.metrics
    model, _, _ = load_checkpoint(args.out / variant / BEST_FILE, torch.device("cpu"))
    steps = {  # on the honest checkpoint (best.pt), each leak added to the previous ones
        "honest, recomputed": score_published(model, data.test, "cpu", map_from=data.train_good, flip=False, pixel_size=0),
        "+ map on test/good": score_published(model, data.test, "cpu", flip=False, pixel_size=0),
        "+ max(AUC, 1 - AUC)": score_published(model, data.test, "cpu", pixel_size=0),
        f"+ pixels at {PAPER_PIXEL_SIZE} px": score_published(model, data.test, "cpu"),
    }
    return {"metrics": m, "best_epoch": result.best_epoch, "steps": steps, "minutes": (time.perf_counter() - t0) / 60}


def main(argv: list[str] | None = None) -> int:
    def checkpoint_every(p: argparse.ArgumentParser) -> None:
        p.add_argument("--checkpoint-every", type=int, default=EVERY, help="epochs between the paper protocol's saved checkpoints")

    args = bench_args(__doc__, argv, threads=1, schedule=(VARIANTS, EPOCHS, STEPS), extra=checkpoint_every,
                      out=REPO_ROOT / "runs" / "bench" / "leak_audit")
    overrides = [*schedule_overrides(args), "eval.protocol=paper",
                 f"eval.paper_checkpoint_every={args.checkpoint_every}", *args.sets]
    print_header("bench/leak_audit.py", args, overrides)
    print(f"# torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()[0]:.1f}", flush=True)
    t0 = time.perf_counter()
    runs = {variant: run_variant(variant, overrides, args) for variant in args.variants}

    print()
    print(f"{args.category}: honest vs paper protocol ({LEAKY_LABEL}), AUROC in percent; "
          f"{args.epochs} epochs x {args.steps} steps, {(time.perf_counter() - t0) / 60:.1f} min in all")
    print(f"{'':10s} {'image honest':>12s} {'paper':>6s} {'inflation':>9s}   {'pixel honest':>12s} {'paper':>6s} "
          f"{'inflation':>9s}   epoch honest / paper")
    for variant, run in runs.items():
        m = run["metrics"]
        image, pixel = m["test/image_auroc"], m.get("test/pixel_auroc")
        leaky_image, leaky_pixel = m.get(LEAKY_IMAGE_AUROC), m.get(LEAKY_PIXEL_AUROC)
        print(f"{variant:10s} {pct(image):>12s} {pct(leaky_image):>6s} {_points(leaky_image, image):>9s}   "
              f"{pct(pixel):>12s} {pct(leaky_pixel):>6s} {_points(leaky_pixel, pixel):>9s}   "
              f"{run['best_epoch']} / {int(m.get(LEAKY_BEST_EPOCH, -1))}")
    print("(honest: best.pt chosen by the validation image AUROC, map on train/good; paper: chosen on test)")
    print()
    print("the inflation step by step, on the honest checkpoint, then the checkpoint chosen on test:")
    for variant, run in runs.items():
        m, previous = run["metrics"], None
        rows = [*run["steps"].items(), ("+ checkpoint chosen on test", {"image_auroc": m.get(LEAKY_IMAGE_AUROC),
                                                                        "pixel_auroc": m.get(LEAKY_PIXEL_AUROC)})]
        print(f"  {variant}  (honest from metrics.json: image {pct(m['test/image_auroc'])}, "
              f"pixel {pct(m.get('test/pixel_auroc'))}; run {run['minutes']:.1f} min)")
        for name, values in rows:
            image, pixel = values.get("image_auroc"), values.get("pixel_auroc")
            delta = "" if previous is None else (f"  ({_points(image, previous.get('image_auroc'))}, "
                                                 f"{_points(pixel, previous.get('pixel_auroc'))})")
            print(f"    {name:30s} image {pct(image):>5s}  pixel {pct(pixel):>5s}{delta}")
            previous = values
    print(f"load average (1 min) at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
