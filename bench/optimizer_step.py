# SPDX-License-Identifier: Apache-2.0
"""One Adam step over a preset's trainable parameters: torch's per-tensor loop, foreach and fused.

``haloae.train.build_optimizer`` builds the fused form. The three run interleaved, ``--rounds``
times, each timing the mean of ``--steps`` steps on random gradients; the table gives each
form's median and its ratio to the loop.

Run::

    python bench/optimizer_step.py                  # cpu preset, 1 thread
    python bench/optimizer_step.py --preset paper --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from haloae.config import HaloAEConfig  # noqa: E402
from haloae.model import HaloAE  # noqa: E402

FORMS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = HaloAEConfig.from_overrides(args.preset, ["model.backbone.weights=random"])
    params = [q for q in HaloAE(cfg).parameters() if q.requires_grad]
    for q in params:
        q.grad = torch.randn_like(q)
    o = cfg.optim
    times: dict[str, list[float]] = {form: [] for form in FORMS}
    for _ in range(args.rounds):
        for form, kwargs in FORMS.items():
            optimizer = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay, betas=o.betas, **kwargs)
            optimizer.step()  # creates the state
            t0 = time.perf_counter()
            for _ in range(args.steps):
                optimizer.step()
            times[form].append((time.perf_counter() - t0) / args.steps)
    loop = statistics.median(times["loop"])
    print(f"# bench/optimizer_step.py  preset={args.preset}  {len(params)} tensors, "
          f"{sum(q.numel() for q in params):,} parameters, {args.threads} threads, torch {torch.__version__}")
    print(f"{'form':10s} {'ms/step':>8s} {'x loop':>7s}  rounds")
    for form, ts in times.items():
        print(f"{form:10s} {1e3 * statistics.median(ts):8.2f} {statistics.median(ts) / loop:7.2f}  "
              + " ".join(f"{1e3 * t:.2f}" for t in ts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
