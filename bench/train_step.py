# SPDX-License-Identifier: Apache-2.0
"""Training-step and evaluation throughput of HaloAE presets and variants, side by side in one run.

What is measured, per configuration (a preset, a variant, dotted overrides):

* ``step_s``   -- median wall time of one optimiser step (``haloae.train.train_step``: forward,
  loss, backward, Adam) on a CutPaste-expanded batch ``(3 * batch, 3, S, S)`` of random images,
  after ``--warmup`` untimed steps; bf16 autocast on CUDA, as ``fit`` does. Under
  ``train.compile=true`` the step's forward is compiled as ``fit`` compiles it; the compilation
  happens in the first warm-up step and is reported apart as ``compile_s`` (that step's time
  less ``step_s``), never in ``step_s``.
* ``eval_img_s`` -- images per second of the evaluation forward pass (eval mode, no grad).
* ``GFLOP/s``  -- the step's FLOPs (``torch.utils.flop_counter``: convs, matmuls, attention) over
  ``step_s``, beside a matmul peak measured in the same run (fp32 on CPU with the set threads,
  bf16 on CUDA) just before every timed step, so the achieved fraction of the machine is printed,
  not guessed: "% peak" is the median over the timed steps of each step's rate against the peak
  sampled next to it (a shared host's speed drifts by 10-30 % within seconds, and a ratio of
  two samples taken apart in time measures the drift as much as the step).
* ``peak MiB`` -- CUDA only: allocated-memory high-water mark over a timed step (model, optimiser
  state and activations), reset after each peak sample so that its two matrices never count.
* ``epoch_s`` / ``run_h`` -- step_s x steps_per_epoch (+ validation) and x epochs: what the sweep
  cost estimate uses (``haloae sweep --dry-run``) for a preset on this machine; run_h adds compile_s.

Backbone weights are set to ``random`` (timing is the same as with ImageNet weights, and no
download is needed). The first configuration is the reference of the ratio column.

Run::

    python bench/train_step.py                                   # cpu preset, halo/legacy/none
    python bench/train_step.py --preset paper --device cuda      # the paper's model on a GPU
    python bench/train_step.py --preset cpu --set model.block_size=4 --set model.block_size=8
    python bench/train_step.py --threads 1 --variants haloae --set train.compile=true   # eager, then compiled
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from haloae.config import HaloAEConfig  # noqa: E402
from haloae.losses import HaloAELoss  # noqa: E402
from haloae.model import HaloAE, count_parameters  # noqa: E402
from haloae.train import autocast_for, build_optimizer, step_outputs, train_step, training_forward  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak_gflops(device: torch.device, repeats: int = 10) -> float:
    """Measured dense matmul rate: fp32 on CPU (the set thread count), bf16 on CUDA."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def reset_memory_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def memory_peak_mib(device: torch.device) -> float:
    """The device's allocated-memory high-water mark since the last ``reset_memory_peak`` (NaN on CPU)."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def cpu_model() -> str:
    """The CPU's model name: "% peak" depends on it, as two hosts' matmul peaks can differ far
    more than their speeds on the conv-heavy step (README, "Performance")."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "CPU")
    except OSError:
        return "CPU"


def step_flops(model, criterion, images, n, device, views_apart: bool = False) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, autocast_for(device):
        out = step_outputs(model, images, n, views_apart)
        loss, _ = criterion(out, images, n, 0)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def step_setup(cfg: HaloAEConfig, device: torch.device, batch: int):
    """Model, loss, optimiser and a random CutPaste-expanded batch ``(3 * batch, 3, S, S)``
    (``(batch, ...)`` without CutPaste) for timing or profiling ``train_step``."""
    torch.manual_seed(0)
    model = HaloAE(cfg).to(device)
    criterion = HaloAELoss(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad] + list(criterion.parameters())
    optimizer = build_optimizer(cfg, params)
    size = cfg.model.image_size
    views = 3 if cfg.cutpaste.enabled else 1
    return model, criterion, optimizer, torch.randn(views * batch, 3, size, size, device=device)


def measure(label: str, cfg: HaloAEConfig, device: torch.device, batch: int, steps: int, warmup: int) -> dict:
    model, criterion, optimizer, images = step_setup(cfg, device, batch)
    size = cfg.model.image_size
    autocast = autocast_for(device)
    flops = step_flops(model, criterion, images, batch, device, cfg.train.views_apart)
    forward = training_forward(cfg)
    model.train()
    warm = []
    for _ in range(max(1, warmup)):  # the first one compiles under train.compile
        t0 = time.perf_counter()
        train_step(model, criterion, optimizer, images, batch, 0, autocast, cfg.train.views_apart, forward)
        sync(device)
        warm.append(time.perf_counter() - t0)
    times, peaks, mib = [], [], []
    for _ in range(steps):
        peaks.append(matmul_peak_gflops(device))
        reset_memory_peak(device)  # the peak sample's two matrices are no part of the step's memory
        t0 = time.perf_counter()
        train_step(model, criterion, optimizer, images, batch, 0, autocast, cfg.train.views_apart, forward)
        sync(device)
        times.append(time.perf_counter() - t0)
        mib.append(memory_peak_mib(device))
    step_s = statistics.median(times)
    model.eval()
    eval_batch = 16
    x = torch.randn(eval_batch, 3, size, size, device=device)
    with torch.no_grad(), autocast:
        model(x)
        sync(device)
        t0 = time.perf_counter()
        reps = max(2, steps // 2)
        for _ in range(reps):
            model(x)
        sync(device)
    eval_img_s = reps * eval_batch / (time.perf_counter() - t0)
    mib.append(memory_peak_mib(device))  # the last step and the evaluation passes
    peak_mib = max(mib)  # NaN on CPU, where every entry is
    return {
        "label": label,
        "params": count_parameters(model),
        "step_s": step_s,
        "compile_s": warm[0] - step_s if cfg.train.compile else 0.0,
        "eval_img_s": eval_img_s,
        "gflop_step": flops / 1e9,
        "gflops": flops / step_s / 1e9,
        "peak_samples": peaks,
        "pct_peak": 100 * statistics.median(flops / 1e9 / t / pk for t, pk in zip(times, peaks, strict=True)),
        "peak_mib": peak_mib,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--variants", nargs="+", default=["haloae", "attention_legacy", "attention_none"])
    p.add_argument("--set", action="append", default=[], dest="sets",
                   help="dotted overrides, ';' between several; each --set adds one configuration (after the variants)")
    p.add_argument("--base", action="append", default=[], help="dotted override applied to every configuration")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--batch", type=int, default=None, help="originals per step (default: the preset's)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps (at least 1; it compiles under train.compile)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    base = ["model.backbone.weights=random", *args.base]
    configs = [(v, HaloAEConfig.from_overrides(args.preset, base, variant=v)) for v in args.variants]
    configs += [(s, HaloAEConfig.from_overrides(args.preset, [*base, *s.split(";")])) for s in args.sets]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_model()}, {args.threads} threads"
    print(f"# bench/train_step.py  preset={args.preset}  device={name}  torch {torch.__version__}")
    rows = []
    for label, cfg in configs:
        batch = args.batch or cfg.train.batch_size
        row = measure(label, cfg, device, batch, args.steps, args.warmup)
        row["batch"] = batch
        # one epoch = its steps + a validation pass over ~60 images (fit's per-epoch evaluation)
        row["epoch_s"] = row["step_s"] * cfg.train.steps_per_epoch + 60 / row["eval_img_s"]
        row["run_h"] = (row["epoch_s"] * cfg.train.epochs + row["compile_s"]) / 3600  # a run compiles once
        rows.append(row)
    peaks = [pk for r in rows for pk in r["peak_samples"]]
    print(f"# matmul peak ({'bf16' if device.type == 'cuda' else 'fp32'}), sampled before each timed step: "
          f"{min(peaks):,.0f} to {max(peaks):,.0f} GFLOP/s, median {statistics.median(peaks):,.0f}")
    ref = rows[0]["step_s"]
    header = f"{'config':28s} {'params':>11s} {'batch':>5s} {'step_s':>8s} {'ratio':>6s} {'eval img/s':>10s} " \
             f"{'GFLOP/step':>10s} {'GFLOP/s':>9s} {'% peak':>6s} {'peak MiB':>8s} {'run h':>7s} {'compile_s':>9s}"
    print(header)
    for r in rows:
        print(f"{r['label']:28s} {r['params']:11,d} {r['batch']:5d} {r['step_s']:8.4f} {r['step_s'] / ref:6.2f} "
              f"{r['eval_img_s']:10.1f} {r['gflop_step']:10.1f} {r['gflops']:9.1f} {r['pct_peak']:6.1f} "
              f"{r['peak_mib']:8.0f} {r['run_h']:7.2f} {r['compile_s']:9.1f}")
    if args.json:
        args.json.write_text(json.dumps({"device": name, "peak_gflops": peaks, "preset": args.preset, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
