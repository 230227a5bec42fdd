# SPDX-License-Identifier: Apache-2.0
"""Files a trial hands on, made without repeating work: checkpoints linked into Tune's report
folder instead of copied, and the alpha-schedule plot drawn once per process per schedule.

Both matter because a trial actor is reused (``reuse_actors``): it reports every epoch of every
trial, and its trials often share one loss schedule while their other knobs differ.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from haloae.config import HaloAEConfig

_ALPHA_PLOTS: dict[str, bytes] = {}  # schedule key -> the PNG drawn for it in this process


def link_or_copy(src: Path, dest: Path) -> None:
    """``dest`` as a hard link to ``src``; a copy where links fail (another filesystem, or one
    without hard links). The unit replaces its checkpoints by rename (``atomic_save``), never in
    place, so a link keeps the reported epoch's bytes while the next epoch is written."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def _schedule_key(cfg: HaloAEConfig) -> str:
    """What ``plot_alpha_schedule`` draws from: the logistic parameters, the terms, the weighting
    named in the title, and the run's epochs (the x axis)."""
    loss = cfg.loss
    return json.dumps([dataclasses.asdict(loss.alpha), list(loss.terms), loss.weighting, cfg.train.epochs], sort_keys=True)


def alpha_plot(cfg: HaloAEConfig, path: Path) -> Path:
    """``haloae.plots.plot_alpha_schedule(cfg, path)``; a schedule this process drew before is
    written from its bytes (matplotlib costs ~0.2 s a figure, in every trial)."""
    key = _schedule_key(cfg)
    drawn = _ALPHA_PLOTS.get(key)
    if drawn is None:
        from haloae.plots import plot_alpha_schedule

        plot_alpha_schedule(cfg, path)
        _ALPHA_PLOTS[key] = Path(path).read_bytes()
        return Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(drawn)
    return path
