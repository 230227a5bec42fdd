# SPDX-License-Identifier: Apache-2.0
"""Benchmark of halo attention at the HaloAE stage shapes: ours vs timm vs an unfold port.

What is measured: wall time of one forward + backward pass (``model(x).sum().backward()``, input
gradient included) and its peak memory, for three implementations of the same layer on the same
input (batch 12, 60 x 60 map, block 12, halo 2, dim_head 16, the encoder (width, heads) stages):

* ``ours``   -- ``haloae.attention.HaloAttention`` (1x1-conv projections, channel-first halo windows; on
  CPU the chunked flash-style core, on CUDA fused SDPA).
* ``timm``   -- ``timm.layers.halo_attn.HaloAttn(width, dim_out=heads*16, num_heads=heads,
  dim_head=16)`` + ``Conv2d(heads*16, width, 1)``: timm has no output projection and ties the value
  width to dim_out, so this is the FLOP-matched equivalent (inner width heads*dim_head, projection back
  to width). timm lets padded keys into the softmax; the cost is the same.
* ``unfold`` -- a port of the published HaloAE / halonet-pytorch 0.0.4 layer (``F.unfold`` windows of
  the *input*, Linear projections of every overlapping window, 1-D rel-to-abs position logits), with
  the mask bug fixed. At start it is checked, in float64, to reproduce ``ours`` given ours' weights.

Time: median over ``--repeats`` timed steps after ``--warmup`` untimed ones, all three impls in one
process on one shared input, interleaved within every repeat (a background load hits all alike).
Memory: one step per (stage, impl) in a fresh subprocess; on CPU the growth of the resident
high-water mark (Linux ``VmHWM``, reset to the current RSS just before) over a full-size step that
follows one single-block step (which loads the kernels), on CUDA ``torch.cuda.max_memory_allocated``
above the memory held before the step. Both count activations and gradients, not the module or
the input; the CPU figure also counts allocator overhead.

Run::

    python bench/attention.py                  # CPU, 2 threads, encoder stages
    python bench/attention.py --quick          # smoke run: batch 2, 2 repeats
    python bench/attention.py --device cuda --bf16 --decoder
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # allow `python bench/attention.py` without PYTHONPATH
    sys.path.insert(0, str(REPO_ROOT))

from haloae.attention import HaloAttention  # noqa: E402

BLOCK, HALO, DIM_HEAD, MAP_SIZE = 12, 2, 16, 60
ENCODER_STAGES = ((234, 4), (117, 8), (58, 8), (29, 8))
DECODER_STAGES = ((29, 4), (58, 8), (118, 8), (236, 8), (703, 8))
IMPLS = ("ours", "timm", "unfold")


def rel_to_abs(logits: torch.Tensor) -> torch.Tensor:
    """(..., L, 2*win-1) relative logits -> (..., L, win) with out[x, j] = logits[x, j - x + win - 1].

    Pad one zero column (row length M+1), flatten, pad to (L+1)*M and re-read as rows of length M:
    element (x, c) lands at (x, x + c), so column k of row x holds logits[x, k - x]; the last win
    columns are k = j + win - 1.
    """
    *lead, length, m = logits.shape
    win = (m + 1) // 2
    flat = F.pad(logits, (0, 1)).flatten(-2)
    flat = F.pad(flat, (0, m - length))
    return flat.reshape(*lead, length + 1, m)[..., :length, m - win :]


class UnfoldHaloAttention(nn.Module):
    """halonet-pytorch 0.0.4 style halo attention (padding keys masked out), on (B, C, H, W)."""

    def __init__(self, dim: int, block_size: int, halo_size: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.block_size, self.halo_size, self.heads, self.dim_head = block_size, halo_size, heads, dim_head
        self.win_size = block_size + 2 * halo_size
        self.scale = dim_head**-0.5
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.rel_height = nn.Parameter(torch.randn(2 * self.win_size - 1, dim_head) * self.scale)
        self.rel_width = nn.Parameter(torch.randn(2 * self.win_size - 1, dim_head) * self.scale)

    def _rel_logits(self, q: torch.Tensor) -> torch.Tensor:
        """q (n, b*b, d) -> (n, b*b, win*win) content-geometry logits."""
        b, win = self.block_size, self.win_size
        qb = q.reshape(q.shape[0], b, b, self.dim_head)  # n, y, x, d
        cols = rel_to_abs(torch.einsum("nyxd,rd->nyxr", qb, self.rel_width))  # n, y, x, j
        rows = rel_to_abs(torch.einsum("nxyd,rd->nxyr", qb.transpose(1, 2), self.rel_height))
        rows = rows.transpose(1, 2)  # n, y, x, i
        return (rows[..., :, None] + cols[..., None, :]).reshape(q.shape[0], b * b, win * win)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        b, win, heads, d = self.block_size, self.win_size, self.heads, self.dim_head
        assert H % b == 0 and W % b == 0, "the port needs sides that are multiples of the block"
        n_h, n_w = H // b, W // b
        n = n_h * n_w
        xq = x.reshape(B, C, n_h, b, n_w, b).permute(0, 2, 4, 3, 5, 1).reshape(B * n, b * b, C)
        xkv = F.unfold(x, kernel_size=win, stride=b, padding=self.halo_size)  # B, C*win*win, n
        xkv = xkv.reshape(B, C, win * win, n).permute(0, 3, 2, 1).reshape(B * n, win * win, C)
        ones = x.new_ones(1, 1, H, W)
        valid = F.unfold(ones, kernel_size=win, stride=b, padding=self.halo_size)[0].t() > 0  # n, win*win

        k, v = self.to_kv(xkv).chunk(2, dim=-1)
        q, k, v = (
            t.reshape(B * n, -1, heads, d).transpose(1, 2).reshape(B * n * heads, -1, d) for t in (self.to_q(xq), k, v)
        )
        q = q * self.scale
        sim = torch.einsum("nid,njd->nij", q, k) + self._rel_logits(q)
        sim = sim.reshape(B, n, heads, b * b, win * win)
        sim = sim.masked_fill(~valid[None, :, None, None, :], -torch.finfo(sim.dtype).max)
        attn = sim.reshape(B * n * heads, b * b, win * win).softmax(dim=-1)
        out = torch.einsum("nij,njd->nid", attn, v)
        out = out.reshape(B * n, heads, b * b, d).transpose(1, 2).reshape(B * n, b * b, heads * d)
        out = self.to_out(out)  # B*n, b*b, C
        return out.reshape(B, n_h, n_w, b, b, C).permute(0, 5, 1, 3, 2, 4).reshape(B, C, H, W)


def build(impl: str, width: int, heads: int) -> nn.Module:
    if impl == "ours":
        return HaloAttention(width, BLOCK, HALO, heads, DIM_HEAD)
    if impl == "unfold":
        return UnfoldHaloAttention(width, BLOCK, HALO, heads, DIM_HEAD)
    if impl == "timm":
        from timm.layers.halo_attn import HaloAttn

        inner = heads * DIM_HEAD
        attn = HaloAttn(width, dim_out=inner, num_heads=heads, dim_head=DIM_HEAD, block_size=BLOCK, halo_size=HALO)
        return nn.Sequential(attn, nn.Conv2d(inner, width, 1))
    raise ValueError(f"unknown impl {impl!r}")


@torch.no_grad()
def copy_weights(ours: HaloAttention, port: UnfoldHaloAttention) -> None:
    """1x1 conv weights (out, in, 1, 1) -> Linear weights (out, in); same rel tables."""
    port.to_q.weight.copy_(ours.to_q.weight[:, :, 0, 0])
    port.to_kv.weight.copy_(ours.to_kv.weight[:, :, 0, 0])
    port.to_out.weight.copy_(ours.to_out.weight[:, :, 0, 0])
    port.to_out.bias.copy_(ours.to_out.bias)
    port.rel_height.copy_(ours.rel_height)
    port.rel_width.copy_(ours.rel_width)


def verify_port() -> tuple[float, float]:
    """Max relative error (output, input grad) of the unfold port vs ours, float64, small input."""
    torch.manual_seed(0)
    ours = HaloAttention(24, BLOCK, HALO, 2, DIM_HEAD).double()
    port = UnfoldHaloAttention(24, BLOCK, HALO, 2, DIM_HEAD).double()
    copy_weights(ours, port)
    x = torch.randn(2, 24, 36, 24, dtype=torch.float64)
    results = []
    for model in (ours, port):
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        results.append((out.detach(), xi.grad))
    errs = [((a - c).abs().max() / a.abs().max()).item() for a, c in zip(*results, strict=True)]
    return errs[0], errs[1]


def make_step(model: nn.Module, x: torch.Tensor, bf16: bool) -> Callable[[], None]:
    """One forward + backward of ``model(x).sum()``, gradients dropped afterwards."""

    def step() -> None:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        out.float().sum().backward()
        model.zero_grad(set_to_none=True)
        x.grad = None

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_memory(impl: str, width: int, heads: int, args: argparse.Namespace) -> float:
    """Peak MiB of one fwd+bwd step above what is held before it (call in a fresh process)."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build(impl, width, heads).to(device)
    # one step on a single block first, so that lazily loaded kernels/libraries are not counted
    make_step(model, torch.randn(1, width, BLOCK, BLOCK, device=device, requires_grad=True), args.bf16)()
    step = make_step(
        model, torch.randn(args.batch, width, MAP_SIZE, MAP_SIZE, device=device, requires_grad=True), args.bf16
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        sync(device)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    reset_peak_rss()
    base = peak_rss_kib()
    step()
    return (peak_rss_kib() - base) / 1024


def peak_rss_kib() -> int:
    """Resident high-water mark of this process (Linux ``VmHWM``). Unlike ``ru_maxrss`` it is not
    inherited across exec, so a child started by a big parent reads its own peak."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def reset_peak_rss() -> None:
    """Lower the high-water mark to the current RSS (Linux >= 4.0); harmless where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def memory_subprocess(impl: str, width: int, heads: int, args: argparse.Namespace) -> float:
    """measure_memory() in a fresh interpreter, so that the high-water mark is this step's alone."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        f"{impl},{width},{heads}",
        "--device",
        args.device,
        "--batch",
        str(args.batch),
        "--threads",
        str(args.threads),
    ]
    cmd += ["--bf16"] if args.bf16 else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker {impl} {width}/{heads} failed:\n{proc.stderr}")
    return float(proc.stdout.strip().splitlines()[-1])


def time_stage(width: int, heads: int, args: argparse.Namespace) -> dict[str, float]:
    """Median fwd+bwd ms of each impl on one shared input; impls interleaved within every repeat
    so that a background load hits all three alike."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch, width, MAP_SIZE, MAP_SIZE, device=device, requires_grad=True)
    steps = {impl: make_step(build(impl, width, heads).to(device), x, args.bf16) for impl in IMPLS}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    for _ in range(args.repeats):
        for impl, step in steps.items():
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            times[impl].append((time.perf_counter() - t0) * 1e3)
    return {impl: statistics.median(t) for impl, t in times.items()}


def print_report(
    stages: list[tuple[int, int]], ms: dict[tuple[int, str], float], mib: dict[tuple[int, str], float]
) -> None:
    print(f"{'stage':<16}{'impl':<8}{'ms fwd+bwd':>12}{'peak MiB':>10}{'impl/ours':>11}")
    totals = {impl: sum(ms[i, impl] for i in range(len(stages))) for impl in IMPLS}
    for i, (width, heads) in enumerate(stages):
        for impl in IMPLS:
            label = f"{i} w{width}/h{heads}" if impl == "ours" else ""
            print(f"{label:<16}{impl:<8}{ms[i, impl]:>12.1f}{mib[i, impl]:>10.0f}{ms[i, impl] / ms[i, 'ours']:>10.2f}x")
    for impl in IMPLS:
        peak = max(mib[i, impl] for i in range(len(stages)))
        label = "all (sum/max)" if impl == "ours" else ""
        print(f"{label:<16}{impl:<8}{totals[impl]:>12.1f}{peak:>10.0f}{totals[impl] / totals['ours']:>10.2f}x")
    timm_ratio, unfold_ratio = totals["timm"] / totals["ours"], totals["unfold"] / totals["ours"]
    print(f"ours no slower than timm: {'PASS' if timm_ratio >= 1.0 else 'FAIL'} (ratio {timm_ratio:.2f}x)")
    print(
        f"ours >= 2x faster than unfold port: {'PASS' if unfold_ratio >= 2.0 else 'FAIL'} (ratio {unfold_ratio:.2f}x)"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: batch 2, 2 repeats, 1 warmup")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per impl before timing")
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (meant for cuda)")
    p.add_argument("--decoder", action="store_true", help="also the decoder stages")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses (faster)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.repeats, args.warmup = 2, 2, 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        impl, width, heads = args.worker.split(",")
        print(measure_memory(impl, int(width), int(heads), args))
        return
    stages = list(ENCODER_STAGES) + (list(DECODER_STAGES) if args.decoder else [])
    out_err, grad_err = verify_port()
    print(f"port matches ours: max rel err {out_err:.2e} (output), {grad_err:.2e} (input grad), float64")
    assert out_err < 1e-6 and grad_err < 1e-6, "unfold port does not reproduce ours; comparison invalid"
    if args.no_memory:
        memory = "skipped"
    elif args.device == "cuda":
        memory = "cuda max_memory_allocated above the start of one step"
    else:
        memory = "VmHWM (peak RSS) growth over one step, fresh subprocess per (stage, impl)"
    print(
        f"halo attention fwd+bwd: batch {args.batch}, map {MAP_SIZE}x{MAP_SIZE}, block {BLOCK}, halo {HALO}, "
        f"dim_head {DIM_HEAD}, device {args.device}{' bf16 autocast' if args.bf16 else ''}, "
        f"threads {torch.get_num_threads()}, median of {args.repeats} after {args.warmup} warmup, impls interleaved"
    )
    print(
        "timm = HaloAttn(w, dim_out=heads*16, num_heads=heads, dim_head=16) + Conv2d(heads*16, w, 1) "
        "(FLOP-matched: timm has no out projection, v width = dim_out/heads)"
    )
    print(f"unfold = halonet-pytorch 0.0.4 style port, mask fixed; peak memory: {memory}")
    ms: dict[tuple[int, str], float] = {}
    for i, (width, heads) in enumerate(stages):
        ms.update({(i, impl): t for impl, t in time_stage(width, heads, args).items()})
    mib = {
        (i, impl): float("nan") if args.no_memory else memory_subprocess(impl, w, h, args)
        for i, (w, h) in enumerate(stages)
        for impl in IMPLS
    }
    print_report(stages, ms, mib)


if __name__ == "__main__":
    main()
