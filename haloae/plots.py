# SPDX-License-Identifier: Apache-2.0
"""Figures drawn from a configuration alone (no MLflow): the alpha schedule of paper Fig. 3."""

from __future__ import annotations

from pathlib import Path

from haloae.config import HaloAEConfig
from haloae.losses import alpha_schedule


def plot_alpha_schedule(cfg: HaloAEConfig, path: str | Path, epochs: int | None = None, title: str | None = None) -> Path:
    """The normalised logistic weights of ``cfg.loss.terms`` over ``epochs`` (default: the run's),
    as a PNG. With ``equal`` / ``uncertainty`` weighting the curve is what the logistic schedule
    *would* give; the title says which weighting the run used."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = epochs if epochs is not None else cfg.train.epochs
    xs = [e * max(n - 1, 1) / 200 for e in range(201)]
    curves = {t: [] for t in cfg.loss.terms}
    for x in xs:
        for term, value in alpha_schedule(cfg.loss.alpha, x, cfg.loss.terms).items():
            curves[term].append(value)
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    for term, ys in curves.items():
        ax.plot(xs, ys, label=f"alpha_{term}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("weight")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title(title or f"alpha schedule ({cfg.loss.weighting})", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
