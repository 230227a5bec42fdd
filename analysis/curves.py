# SPDX-License-Identifier: Apache-2.0
"""Learning curves of a sweep: each run's per-epoch training loss and validation objective, read
from MLflow's metric histories, a line per configuration (the mean over its runs) over faint lines
per run.

The validation curve is ``curve/val/<metric>`` (``haloae.vocab.curve_key``: what a sweep logs per
epoch since the final ``val/*`` became the best checkpoint's); stores written before that have the
per-epoch history under ``val/<metric>`` itself, plus the best epoch's value logged again at step =
best epoch: there the first value logged at each step is the epoch's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis.runs import RunsFrame, SweepQueryError, client_for
from haloae.vocab import DEFAULT_OBJECTIVE, TRAIN, curve_key, metric_key

TRAIN_LOSS = metric_key(TRAIN, "loss")


def curve_metric(runs: RunsFrame, metric: str) -> str | None:
    """The key holding ``metric``'s per-epoch history in these runs: its curve key, else itself."""
    for key in (curve_key(metric), metric):
        if key in runs.columns:
            return key
    return None


def histories(runs: RunsFrame, keys: Sequence[str]) -> pd.DataFrame:
    """A row per (run, key, epoch): ``run_id, config, key, epoch, value`` for every run of ``runs``
    that has a ``config`` column (``analysis.tables.configurations``); one value per step."""
    client = client_for(runs.attrs["tracking_uri"])
    rows = []
    for run_id, config in zip(runs["run_id"], runs["config"], strict=True):
        for key in keys:
            seen: dict[int, tuple[int, float]] = {}
            for m in client.get_metric_history(run_id, key):
                if m.step not in seen or m.timestamp < seen[m.step][0]:  # the epoch's own value, not a re-log
                    seen[m.step] = (m.timestamp, m.value)
            rows += [{"run_id": run_id, "config": config, "key": key, "epoch": step, "value": value}
                     for step, (_, value) in sorted(seen.items())]  # fmt: skip
    return pd.DataFrame(rows, columns=["run_id", "config", "key", "epoch", "value"])


def learning_curves_figure(runs: RunsFrame, out: Path, objective: str = DEFAULT_OBJECTIVE, fmt: str = "png") -> Path:
    """``train/loss`` and the validation ``objective`` per epoch: a panel each, a colour per
    configuration (bold = mean over its runs, faint = one run). Every run counts, whatever its status:
    a failed or stopped run's curve shows where it ended."""
    from analysis.figures import _pyplot, _save, _slug
    from analysis.tables import configurations

    keys = [k for k in (TRAIN_LOSS if TRAIN_LOSS in runs.columns else None, curve_metric(runs, objective)) if k]
    if not keys:
        raise SweepQueryError(f"sweep {runs.attrs.get('sweep')}: no per-epoch {TRAIN_LOSS} or {objective} to draw curves of")
    labelled = _labelled(runs, configurations)
    data = histories(labelled, keys)
    configs = list(dict.fromkeys(labelled["config"]))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.4 * len(keys), 3.4), dpi=100, squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, key in zip(axes[0], keys, strict=True):
        for j, config in enumerate(configs):
            mine = data[(data["key"] == key) & (data["config"] == config)]
            for _, run in mine.groupby("run_id"):
                ax.plot(run["epoch"], run["value"], color=colours(j % 10), alpha=0.25, linewidth=0.8)
            mean = mine.groupby("epoch")["value"].mean()
            ax.plot(mean.index, mean.values, color=colours(j % 10), linewidth=2, label=config)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(key, fontsize=8)
    axes[0][-1].legend(fontsize=6)
    fig.suptitle(f"{runs.attrs.get('sweep')}: learning curves (bold = mean over runs, faint = a run)", fontsize=8)
    return _save(plt, fig, out / f"curves_{_slug(objective)}.{fmt}")


def _labelled(runs: RunsFrame, configurations) -> RunsFrame:
    """Every run with its configuration's label (FINISHED ones labelled as the tables label them;
    the others by their variant, so that failed runs still draw)."""
    done, _, _ = configurations(runs)
    labels = dict(zip(done["run_id"], done["config"], strict=True))
    out = runs.assign(config=[labels.get(r, f"{v} (not finished)") for r, v in zip(runs["run_id"], runs["variant"], strict=True)])
    out.attrs = dict(runs.attrs)
    return out
