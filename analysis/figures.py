# SPDX-License-Identifier: Apache-2.0
"""Figures of a sweep (matplotlib, PNG), written to a folder and logged to the sweep's parent run
under ``figures/``:

    alpha_<run>.png          the alpha schedule of a run (paper Fig. 3), from its config
    overlays_<run>.png       anomaly-map overlays of chosen images (Fig. 1 style), from its checkpoint
    bars_<metric>.png        a bar per configuration: mean over categories, seed spread as error
                             bar (std) and one dot per seed
    heatmap_<a>_x_<b>.png    a two-knob pivot (``analysis.tables.pivot``) as a heat map

The statistics are those of the tables (``analysis.tables``), so a bar equals its table's "Mean".
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from analysis.runs import RunsFrame, SweepQueryError, category_order, client_for, require_metric, run_config
from haloae.vocab import BEST_ARTIFACT, DEFAULT_OBJECTIVE, TAG_CATEGORY, TAG_DATA_ROOT, metric_key


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, target: Path) -> Path:
    fig.tight_layout()
    fig.savefig(target)
    plt.close(fig)
    return target


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-")


# ---------------------------------------------------------------------- one run
def alpha_figure(runs: RunsFrame, run_id: str, out: Path) -> Path:
    """The run's alpha schedule (its config's ``loss.alpha`` over its epochs), as paper Fig. 3."""
    from haloae.plots import plot_alpha_schedule

    cfg = run_config(client_for(runs.attrs["tracking_uri"]), run_id)
    row = runs[runs["run_id"] == run_id].iloc[0]
    title = f"alpha: {row['variant']}, {row['category']}, seed {row['seed']} ({cfg.loss.weighting})"
    return plot_alpha_schedule(cfg, out / f"alpha_{run_id[:8]}.png", title=title)


def default_images(data_root: str | Path, category: str, limit: int = 6) -> list[Path]:
    """A few test images of a category: the first of each defect type, then good ones."""
    from haloae.data import scan_category

    test = scan_category(Path(data_root), category).test
    firsts = {}
    for sample in test:
        firsts.setdefault(sample.defect, sample.path)
    defects = [p for d, p in firsts.items() if d != "good"]
    goods = [s.path for s in test if s.defect == "good"]
    return (defects + goods)[:limit]


def overlay_scores(runs: RunsFrame, run_id: str, images: Sequence[str | Path] | None = None):
    """The run's best checkpoint scored on ``images`` (default: ``default_images`` of the run's data):
    ``(images, batch, predictor, result)``. Writes nothing, so a bad checkpoint fails before any figure."""
    import torch

    from analysis.checkpoints import load_run_checkpoint
    from haloae.bundle import Predictor, read_image

    client = client_for(runs.attrs["tracking_uri"])
    run = client.get_run(run_id)
    if not images:
        root = run.data.tags.get(TAG_DATA_ROOT)
        if not root:
            raise SweepQueryError(f"run {run_id}: no data_root tag; pass --images")
        images = default_images(root, run.data.tags.get(TAG_CATEGORY, ""))
    with tempfile.TemporaryDirectory() as tmp:
        best = load_run_checkpoint(client, run_id, tmp)
    predictor = Predictor(best.model, best.scorer, source=f"run {run_id} {BEST_ARTIFACT}")
    batch = torch.stack([read_image(p, predictor.image_size) for p in images])
    return list(images), batch, predictor, predictor.predict(batch)


def overlay_figure(runs: RunsFrame, run_id: str, out: Path, images: Sequence[str | Path] | None = None,
                   scored=None) -> Path:  # fmt: skip
    """Overlays of ``images`` by the run's best checkpoint (``scored``: ``overlay_scores``' result, if done)."""
    from analysis.predict import map_range_of, overlay_panel

    images, batch, predictor, result = scored or overlay_scores(runs, run_id, images)
    category = runs[runs["run_id"] == run_id]["category"].iloc[0] if (runs["run_id"] == run_id).any() else ""
    colour_range = map_range_of(predictor, result.maps)
    plt = _pyplot()
    fig, axes = plt.subplots(len(batch), 1, figsize=(4, 2.1 * len(batch)), dpi=100, squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        amap = result.maps[i] if result.maps is not None else None
        ax.imshow(overlay_panel(batch[i], amap, colour_range))
        ax.set_title(f"{Path(images[i]).parent.name}/{Path(images[i]).name}: score {float(result.scores[i]):.4g}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{category}: {predictor.scoring} maps, run {run_id[:8]}", fontsize=9)
    return _save(plt, fig, out / f"overlays_{run_id[:8]}.png")


# ---------------------------------------------------------------------- across runs
def bar_figure(runs: RunsFrame, metric: str, out: Path) -> Path:
    """A bar per configuration: the mean over categories, std over seeds, a dot per seed."""
    from analysis.tables import configurations, group_stat, seed_means

    require_metric(runs, metric)
    done, configs, _ = configurations(runs)
    categories = category_order(done["category"])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(configs) + 1.5), 3.6), dpi=100)
    for x, config in enumerate(configs):
        mine = done[done["config"] == config]
        stat = group_stat(mine, metric, categories)
        if stat is None:
            continue
        _, per_seed = seed_means(mine, metric, categories)
        ax.bar(x, 100 * stat.mean, yerr=100 * stat.std if stat.n > 1 else None, capsize=4, color="#7fa7d9")
        ax.scatter(np.full(len(per_seed), x), 100 * per_seed.values, color="black", s=12, zorder=3)
    ax.set_xticks(range(len(configs)))
    ax.set_xticklabels([c.replace(", ", "\n") for c in configs], rotation=30, ha="right", fontsize=7)  # a knob per line, keys whole
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"{runs.attrs.get('sweep')}: {metric}\nmean over {len(categories)} categories, bar = std over seeds, dot = a seed", fontsize=8)
    return _save(plt, fig, out / f"bars_{_slug(metric)}.png")


def heatmap_figure(runs: RunsFrame, rows: str, columns: str, metric: str, out: Path, split: str = "test") -> Path:
    """The pivot table ``rows`` x ``columns`` of ``metric`` as a heat map annotated mean ± std."""
    from analysis.tables import pivot

    table = pivot(runs, rows, columns, metric, split)
    values = np.full((len(table.rows), len(table.columns)), np.nan)
    for (r, c), cell in table.cells.items():
        stat = cell.stats[0]
        if stat is not None:
            values[table.rows.index(r), table.columns.index(c)] = 100 * stat.mean
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * len(table.columns) + 2.5, 0.8 * len(table.rows) + 1.8), dpi=100)
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    for (r, c), cell in table.cells.items():
        stat = cell.stats[0]
        if stat is not None:
            text = f"{100 * stat.mean:.1f}" + (f"\n±{100 * stat.std:.1f}" if stat.n > 1 else "")
            colour = "black" if image.norm(100 * stat.mean) > 0.6 else "white"  # readable on viridis' light end
            ax.text(table.columns.index(c), table.rows.index(r), text, ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(len(table.columns)), table.columns)
    ax.set_yticks(range(len(table.rows)), table.rows)
    ax.set_xlabel(columns)
    ax.set_ylabel(rows)
    fig.colorbar(image, ax=ax, label=f"{metric} (%)")
    ax.set_title(f"{runs.attrs.get('sweep')}: {metric}", fontsize=9)
    return _save(plt, fig, out / f"heatmap_{_slug(rows)}_x_{_slug(columns)}.png")


def log_to_parent(runs: RunsFrame, paths: Sequence[Path]) -> None:
    """Attach figures to the sweep's parent run under ``figures/``."""
    parent = runs.attrs.get("parent_run_id")
    if parent is None:
        raise SweepQueryError(f"sweep {runs.attrs.get('sweep')}: no parent run to log figures to (use --no-log)")
    client = client_for(runs.attrs["tracking_uri"])
    for path in paths:
        client.log_artifact(parent, str(path), "figures")


def make_figures(runs: RunsFrame, out: str | Path, run_id: str | None = None, images: Sequence[str | Path] | None = None,
                 pivot_knobs: tuple[str, str] | None = None, metric: str | None = None, split: str = "test",
                 log: bool = True) -> list[Path]:  # fmt: skip
    """Every figure that applies: alpha + overlays of ``run_id`` (default: the run with the best
    ``DEFAULT_OBJECTIVE``), bars of ``metric`` (default ``<split>/image_auroc``), and a heat map for
    ``pivot_knobs`` (default: the two knobs when exactly two vary)."""
    from analysis.runs import finished

    metric = metric or metric_key(split, "image_auroc")
    chosen = run_id
    if chosen is None:
        done = finished(runs)
        if DEFAULT_OBJECTIVE in done.columns and done[DEFAULT_OBJECTIVE].notna().any():
            chosen = done.loc[done[DEFAULT_OBJECTIVE].idxmax(), "run_id"]
    elif chosen not in set(runs["run_id"]):
        raise SweepQueryError(f"--run {chosen}: not a run of sweep {runs.attrs.get('sweep')}")
    scored = None
    if chosen is not None:  # the checkpoint first: a bad one fails before any file is written
        try:
            scored = overlay_scores(runs, chosen, images)
        except SweepQueryError:
            if run_id is not None:  # asked for explicitly: say why not; the default run may just lack a checkpoint
                raise
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [bar_figure(runs, metric, folder)]
    knobs = pivot_knobs or (tuple(runs.attrs["varied"]) if len(runs.attrs.get("varied", [])) == 2 else None)
    if knobs:
        paths.append(heatmap_figure(runs, knobs[0], knobs[1], metric, folder, split))
    if chosen is not None:
        paths.append(alpha_figure(runs, chosen, folder))
        if scored is not None:
            paths.append(overlay_figure(runs, chosen, folder, scored=scored))
    if log:
        log_to_parent(runs, paths)
    return paths
