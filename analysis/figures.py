# SPDX-License-Identifier: Apache-2.0
"""Figures of a sweep (matplotlib; PNG, PDF or SVG: ``FORMATS``), written to a folder and logged
to the sweep's parent run under ``figures/``:

    alpha_<run>.<fmt>          the alpha schedule of a run (paper Fig. 3), from its config
    overlays_<run>.<fmt>       anomaly-map overlays of chosen images (Fig. 1 style), from its
                               checkpoint: the ground-truth contour and a colour bar of the map
    bars_<metric>.<fmt>        a bar per configuration: mean over categories, seed spread as error
                               bar (std) and one dot per seed
    category_bars_<metric>.<fmt>  a bar per (category, configuration): mean over seeds with its 95% t
                               interval (``analysis.stats.t_interval``)
    val_test_<metric>.<fmt>    each run's validation objective against its test metric
    heatmap_<a>_x_<b>.<fmt>    a two-knob pivot (``analysis.tables.pivot``) as a heat map

The statistics are those of the tables (``analysis.tables``), so a bar equals its table's "Mean".
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from analysis.runs import RunsFrame, SweepQueryError, category_order, client_for, finished, require_metric, run_config
from haloae.vocab import BEST_ARTIFACT, DEFAULT_OBJECTIVE, FIGURE_FORMATS, TAG_CATEGORY, TAG_DATA_ROOT, metric_key

FORMATS = FIGURE_FORMATS
CONTOUR_COLOUR = "#ff40c8"  # the ground truth's outline: pink, as haloae.overlay draws it


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
def alpha_figure(runs: RunsFrame, run_id: str, out: Path, fmt: str = "png") -> Path:
    """The run's alpha schedule (its config's ``loss.alpha`` over its epochs), as paper Fig. 3."""
    from haloae.plots import plot_alpha_schedule

    cfg = run_config(client_for(runs.attrs["tracking_uri"]), run_id)
    row = runs[runs["run_id"] == run_id].iloc[0]
    title = f"alpha: {row['variant']}, {row['category']}, seed {row['seed']} ({cfg.loss.weighting})"
    return plot_alpha_schedule(cfg, out / f"alpha_{run_id[:8]}.{fmt}", title=title)


def default_images(data_root: str | Path, category: str, limit: int = 6) -> list[Path]:
    """A few test images of a category: the first of each defect type, then good ones."""
    from haloae.categories import scan_category

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


def ground_truth_mask(image: str | Path, size: int):
    """The (size, size) mask of an MVTec-layout test image (``<cat>/test/<defect>/<stem>.png`` ->
    ``<cat>/ground_truth/<defect>/<stem>_mask.png``), or None (a good image, or another layout)."""
    from haloae.categories import MASK_SUFFIX
    from haloae.images import load_mask

    path = Path(image)
    if len(path.parents) < 3 or path.parents[1].name != "test":
        return None
    mask = path.parents[2] / "ground_truth" / path.parent.name / f"{path.stem}{MASK_SUFFIX}.png"
    return load_mask(mask, size)[0].numpy() if mask.is_file() else None


def overlay_figure(runs: RunsFrame, run_id: str, out: Path, images: Sequence[str | Path] | None = None,
                   scored=None, fmt: str = "png") -> Path:  # fmt: skip
    """Overlays of ``images`` by the run's best checkpoint (``scored``: ``overlay_scores``' result, if
    done): per image, the image and its anomaly map blended on it, the ground truth's contour, and
    one colour bar for the map's values (the bundle's validation range, shared by every image)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from analysis.predict import map_range_of

    images, batch, predictor, result = scored or overlay_scores(runs, run_id, images)
    category = runs[runs["run_id"] == run_id]["category"].iloc[0] if (runs["run_id"] == run_id).any() else ""
    low, high = map_range_of(predictor, result.maps)
    norm, cmap = Normalize(low, max(high, low + 1e-12)), colormaps["jet"]
    plt = _pyplot()
    fig, axes = plt.subplots(len(batch), 2, figsize=(5.2, 2.3 * len(batch)), dpi=100, squeeze=False)
    for i, (left, right) in enumerate(axes):
        picture = batch[i].clamp(0, 1).permute(1, 2, 0).numpy()  # (S, S, 3)
        left.imshow(picture)
        right.imshow(picture)
        if result.maps is not None:
            right.imshow(result.maps[i].numpy(), cmap=cmap, norm=norm, alpha=0.5)
        mask = ground_truth_mask(images[i], picture.shape[0])
        if mask is not None and mask.any():
            right.contour(mask, levels=[0.5], colors=CONTOUR_COLOUR, linewidths=1.0)
        left.set_title(f"{Path(images[i]).parent.name}/{Path(images[i]).name}", fontsize=7)
        right.set_title(f"score {float(result.scores[i]):.4g}", fontsize=7)
        left.axis("off")
        right.axis("off")
    fig.suptitle(f"{category}: {predictor.scoring} maps, run {run_id[:8]}; ground truth outlined", fontsize=8)
    fig.tight_layout()
    fig.colorbar(ScalarMappable(norm, cmap), ax=axes.ravel().tolist(), shrink=0.8, label="anomaly map value")
    fig.savefig(out / f"overlays_{run_id[:8]}.{fmt}")
    plt.close(fig)
    return out / f"overlays_{run_id[:8]}.{fmt}"


# ---------------------------------------------------------------------- across runs
def bar_figure(runs: RunsFrame, metric: str, out: Path, fmt: str = "png") -> Path:
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
    return _save(plt, fig, out / f"bars_{_slug(metric)}.{fmt}")


def category_bars_figure(runs: RunsFrame, metric: str, out: Path, fmt: str = "png") -> Path:
    """Per category, a bar per configuration: the mean over seeds with its 95% t interval as the
    error bar (none with one seed), a dot per seed."""
    from analysis.stats import LEVEL, t_interval
    from analysis.tables import configurations

    require_metric(runs, metric)
    done, configs, _ = configurations(runs)
    categories = category_order(done["category"])
    width = 0.8 / max(len(configs), 1)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(categories) * max(len(configs), 2) * 0.5 + 2), 3.8), dpi=100)
    colours = plt.get_cmap("tab10")
    for j, config in enumerate(configs):
        mine = done[done["config"] == config]
        for x, category in enumerate(categories):
            per_seed = mine[mine["category"] == category].groupby("seed")[metric].mean().dropna()
            interval = t_interval(per_seed)
            if interval is None:
                continue
            position = x - 0.4 + width * (j + 0.5)
            error = 100 * interval.half_width if interval.defined else None
            ax.bar(position, 100 * interval.mean, width, yerr=error, capsize=3, color=colours(j % 10),
                   label=config if x == 0 else None)  # fmt: skip
            ax.scatter(np.full(len(per_seed), position), 100 * per_seed.values, color="black", s=8, zorder=3)
    ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(f"{metric} (%)")
    ax.legend(fontsize=6, loc="lower right")
    ax.set_title(f"{runs.attrs.get('sweep')}: {metric} per category\nbar = mean over seeds, "
                 f"error bar = {100 * LEVEL:g}% t interval, dot = a seed", fontsize=8)  # fmt: skip
    return _save(plt, fig, out / f"category_bars_{_slug(metric)}.{fmt}")


def val_test_figure(runs: RunsFrame, objective: str, test_metric: str, out: Path, fmt: str = "png") -> Path:
    """Each FINISHED run's validation ``objective`` (x) against its ``test_metric`` (y), a colour
    per category: what ``analysis.val_test`` ranks."""
    require_metric(runs, objective)
    require_metric(runs, test_metric)
    done = finished(runs)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 3.8), dpi=100)
    for category in category_order(done["category"]):
        mine = done[done["category"] == category]
        ax.scatter(100 * mine[objective], 100 * mine[test_metric], s=14, label=category)
    ax.set_xlabel(f"{objective} (%, validation)")
    ax.set_ylabel(f"{test_metric} (%, test)")
    ax.legend(fontsize=6)
    ax.set_title(f"{runs.attrs.get('sweep')}: does validation predict test?\na dot = a run", fontsize=8)
    return _save(plt, fig, out / f"val_test_{_slug(test_metric)}.{fmt}")


def heatmap_figure(runs: RunsFrame, rows: str, columns: str, metric: str, out: Path, split: str = "test", fmt: str = "png") -> Path:
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
    return _save(plt, fig, out / f"heatmap_{_slug(rows)}_x_{_slug(columns)}.{fmt}")


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
                 log: bool = True, fmt: str = "png") -> list[Path]:  # fmt: skip
    """Every figure that applies, as ``fmt`` (png, pdf or svg): alpha + overlays of ``run_id``
    (default: the run with the best ``DEFAULT_OBJECTIVE``), bars of ``metric`` (default
    ``<split>/image_auroc``) overall and per category, and a heat map for ``pivot_knobs`` (default:
    the two knobs when exactly two vary)."""
    if fmt not in FORMATS:
        raise SweepQueryError(f"figure format: unknown {fmt!r}; valid: {', '.join(FORMATS)}")
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
    paths = [bar_figure(runs, metric, folder, fmt), category_bars_figure(runs, metric, folder, fmt)]
    knobs = pivot_knobs or (tuple(runs.attrs["varied"]) if len(runs.attrs.get("varied", [])) == 2 else None)
    if knobs:
        paths.append(heatmap_figure(runs, knobs[0], knobs[1], metric, folder, split, fmt))
    from analysis.val_test import on_test_split

    if {DEFAULT_OBJECTIVE, on_test_split(DEFAULT_OBJECTIVE)} <= set(runs.columns):
        paths.append(val_test_figure(runs, DEFAULT_OBJECTIVE, on_test_split(DEFAULT_OBJECTIVE), folder, fmt))
    if chosen is not None:
        paths.append(alpha_figure(runs, chosen, folder, fmt))
        if scored is not None:
            paths.append(overlay_figure(runs, chosen, folder, scored=scored, fmt=fmt))
    if log:
        log_to_parent(runs, paths)
    return paths
