# SPDX-License-Identifier: Apache-2.0
"""The setup the cpu-preset benches on the real MVTec AD bottle share: arguments, threads, config and data.

``bench/bottle.py``, ``bench/leak_audit.py`` and ``bench/epoch.py`` parse their command line with
``bench_args`` (which also sets the torch thread count), print their first line with
``print_header`` and prepare each variant's config and data with ``variant_data``.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch

from haloae.category_data import prepare_data
from haloae.config import HaloAEConfig

DEFAULT_ROOT = Path(os.environ.get("MVTEC_ROOT", "/work/shared/data/mvtec_ad"))
OUT_HELP = "run directories <out>/<variant> (new runs; files there are overwritten)"


def pct(value: float | None) -> str:
    """A fraction in percent with one decimal; ``-`` for a missing or NaN value."""
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def bench_args(
    doc: str,
    argv: list[str] | None,
    *,
    threads: int,
    data_help: str = "MVTec AD root (read only)",
    schedule: tuple[tuple[str, ...], int, int] | None = None,
    extra: Callable[[argparse.ArgumentParser], object] | None = None,
    out: Path | None = None,
) -> argparse.Namespace:
    """A bench's parsed command line, torch's intra-op thread count set to ``--threads``.

    Options, in this order: ``--data-root``, ``--category``; given ``schedule=(variants, epochs,
    steps)``, ``--variants`` (run in turn), ``--epochs`` and ``--steps``; whatever ``extra(parser)``
    adds; ``--set`` (extra dotted overrides), ``--threads``; given a default ``out``, ``--out``. The
    description is the first paragraph of ``doc`` (the bench's docstring)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=DEFAULT_ROOT, help=data_help)
    p.add_argument("--category", default="bottle")
    if schedule is not None:
        variants, epochs, steps = schedule
        p.add_argument("--variants", nargs="+", default=list(variants), help="haloae.presets variant names, run in turn")
        p.add_argument("--epochs", type=int, default=epochs)
        p.add_argument("--steps", type=int, default=steps, help="optimiser steps per epoch")
    if extra is not None:
        extra(p)
    p.add_argument("--set", action="append", default=[], dest="sets", help="extra dotted override (repeatable)")
    p.add_argument("--threads", type=int, default=threads)
    if out is not None:
        p.add_argument("--out", type=Path, default=out, help=OUT_HELP)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def schedule_overrides(args: argparse.Namespace) -> list[str]:
    """The overrides of ``bench_args``'s schedule options (``--epochs``, ``--steps``), on the CPU."""
    return [f"train.epochs={args.epochs}", f"train.steps_per_epoch={args.steps}", "train.device=cpu"]


def print_header(script: str, args: argparse.Namespace, overrides: list[str]) -> None:
    """The first printed line: the bench, the data and the cpu preset's overrides."""
    print(f"# {script}  {args.data_root / args.category}  preset=cpu {' '.join(overrides)}")


def variant_data(variant: str | None, overrides: list[str], args: argparse.Namespace):
    """``(cfg, data)``: the cpu preset with ``variant`` and ``overrides``, and its prepared category data."""
    cfg = HaloAEConfig.from_overrides("cpu", overrides, variant=variant)
    return cfg, prepare_data(cfg, args.data_root, args.category)
