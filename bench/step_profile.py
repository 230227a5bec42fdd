# SPDX-License-Identifier: Apache-2.0
"""Where one training step's time goes: torch.profiler's top operators for a preset's step.

The step is ``haloae.train.train_step`` (forward, loss, backward, Adam) on a CutPaste-expanded
batch ``(3 * batch, 3, S, S)`` of random images, as ``bench/train_step.py`` times it. After
``--warmup`` untimed steps, ``--steps`` steps run under ``torch.profiler`` (CPU activities) and
the table lists the operators with the most self CPU time, then the share of the step spent in
dense work (convolutions, matmuls, the fused attention kernels) against everything else (copies,
layout changes, elementwise kernels, Python between kernels).

Run::

    python bench/step_profile.py                          # cpu preset, 1 thread
    python bench/step_profile.py --threads 2 --top 25
    python bench/step_profile.py --set model.classifier_detach=true
    python bench/step_profile.py --set train.compile=true     # the compiled step (minutes to compile)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.train_step import cpu_model, matmul_peak_gflops, step_flops, step_setup  # noqa: E402
from haloae.config import HaloAEConfig  # noqa: E402
from haloae.train import autocast_for, train_step, training_forward  # noqa: E402

# operators whose time is dense arithmetic (what a matmul peak measures); the rest is overhead
DENSE = ("conv", "mm", "matmul", "bmm", "addmm", "linear", "baddbmm", "mkldnn", "attention")


def is_dense(name: str) -> bool:
    return any(key in name.lower() for key in DENSE)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--set", action="append", default=[], dest="sets", help="dotted override (repeatable)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = HaloAEConfig.from_overrides(args.preset, ["model.backbone.weights=random", *args.sets])
    device = torch.device("cpu")
    n = cfg.train.batch_size
    model, criterion, optimizer, images = step_setup(cfg, device, n)
    model.train()
    views = len(images) // n
    autocast = autocast_for(device)
    forward = training_forward(cfg)  # compiled under --set train.compile=true, in the first warm-up step
    for _ in range(max(1, args.warmup)):
        train_step(model, criterion, optimizer, images, n, 0, autocast, cfg.train.views_apart, forward)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            train_step(model, criterion, optimizer, images, n, 0, autocast, cfg.train.views_apart, forward)
    wall = (time.perf_counter() - t0) / args.steps
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total_us = sum(e.self_cpu_time_total for e in events)
    dense_us = sum(e.self_cpu_time_total for e in events if is_dense(e.key))
    print(f"# bench/step_profile.py  preset={args.preset} {' '.join(args.sets)}  torch {torch.__version__}, {cpu_model()}, "
          f"{args.threads} threads, batch {views}x{n}, {args.steps} profiled steps")
    print(f"step {wall:.3f} s wall under the profiler; operators' self time {total_us / 1e6 / args.steps:.3f} s per step")
    print(f"{'operator':<48} {'self ms/step':>12} {'share':>7} {'calls/step':>10}")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        share = e.self_cpu_time_total / total_us
        print(f"{e.key[:48]:<48} {e.self_cpu_time_total / 1e3 / args.steps:>12.1f} {share:>6.1%} "
              f"{e.count / args.steps:>10.0f}")
    print(f"dense (conv/matmul/attention) {dense_us / total_us:.1%} of operator time; "
          f"everything else {1 - dense_us / total_us:.1%}")
    # the ceiling of "% of peak" for this step: its FLOPs over the dense operators' own time, that
    # is the fraction a step would reach with every non-dense operator and all Python gone
    flops = step_flops(model, criterion, images, n, device, cfg.train.views_apart)
    peaks = [matmul_peak_gflops(device) for _ in range(3)]
    dense_rate = flops / (dense_us / 1e6 / args.steps) / 1e9
    peak = sum(peaks) / len(peaks)
    print(f"dense operators' own rate {dense_rate:.1f} GFLOP/s ({flops / 1e9:.1f} GFLOP per step) against a matmul peak "
          f"of {peak:.0f} ({' '.join(f'{x:.0f}' for x in peaks)}): with nothing but them the step would reach "
          f"{dense_rate / peak:.1%} of the peak; it reaches {flops / wall / 1e9 / peak:.1%} under the profiler")
    return 0


if __name__ == "__main__":
    sys.exit(main())
