# SPDX-License-Identifier: Apache-2.0
"""Paper-style tables from a run frame (``analysis.runs.load_runs``): mean +- std over seeds.

Shapes:
    table2       categories (textures, objects, others; then Mean Text., Mean Obj., Mean Other,
                 Mean) x configurations; cell = (image AUROC, pixel AUROC)
    table3/4     configurations x {Mean Text., Mean Obj., Mean}; cell = (image AUROC, pixel AUROC)
    tableS1      Table S1's scorings x categories (and the means), one table per configuration
    pivot        knob A x knob B, one metric averaged over every category

A *configuration* is one combination of the sweep's varied knobs (``frame.attrs["varied"]``; the
variant alone when nothing else varies); seeds are its repeats. Only FINISHED runs count.

Statistics: a category cell is the mean and sample std over seeds (n = seeds with a value). A
mean row or column (over a group of categories) has as value the mean of its category cells, as
the paper's, and as std the spread over seeds of the per-seed mean over those categories, counting
only the seeds that have every category (n = those seeds); ``(n=k)`` marks a cell whose n differs.

Bold marks the best configuration (highest mean at the printed precision; ties all bold): per row
where configurations are columns (Table 2), per column where they are rows (Tables 3/4), per
column in Table S1 (the best scoring per category) and in a pivot (per column). The paper's values
(``paper=True``) sit in their own column beside ours and are never bolded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from analysis import paper
from analysis.render import Cell, Stat, Table
from analysis.runs import GROUPS, RunsFrame, SweepQueryError, category_order, equals, finished, require_metric
from haloae.dotted import hint
from haloae.vocab import TAG_CATEGORY, TAG_SEED, TAG_VARIANT, TEST, VAL, metric_key

TABLES = ("table2", "table3", "table4", "tableS1", "pivot")
SPLITS = (TEST, VAL)
PAIR = ("image_auroc", "pixel_auroc")
PAIR_LABELS = ("image AUROC", "pixel AUROC")
GROUP_LABELS = {"texture": "Mean Text.", "object": "Mean Obj.", "other": "Mean Other", "all": "Mean"}


# ---------------------------------------------------------------------- statistics over seeds
def seed_stat(values: pd.Series, seeds: pd.Series) -> Stat | None:
    """Mean and sample std over seeds of one metric (runs of the same seed averaged first)."""
    per_seed = values.groupby(seeds.values).mean().dropna()
    if per_seed.empty:
        return None
    return Stat(float(per_seed.mean()), float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan, len(per_seed))


def seed_means(frame: pd.DataFrame, metric: str, categories: Sequence[str]) -> tuple[pd.Series, pd.Series]:
    """(mean over seeds per category, mean over ``categories`` per seed that has them all)."""
    sub = frame[frame["category"].isin(categories)]
    by_seed = sub.pivot_table(index="seed", columns="category", values=metric, aggfunc="mean")  # seed x category
    return by_seed.mean(axis=0), by_seed.reindex(columns=list(categories)).dropna().mean(axis=1)


def group_stat(frame: pd.DataFrame, metric: str, categories: Sequence[str]) -> Stat | None:
    """Over a group of categories: the mean of the category means, and the std over the seeds
    that have every category of the per-seed mean over them (n = those seeds)."""
    if metric not in frame.columns or frame.loc[frame["category"].isin(categories), metric].isna().all():
        return None
    per_category, per_seed = seed_means(frame, metric, categories)
    std = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan
    return Stat(float(per_category.mean()), std, len(per_seed))


def mark_best(cells: dict[tuple[str, str], Cell], lines: Iterable[Sequence[tuple[str, str]]]) -> dict[tuple[str, str], Cell]:
    """Flag, per metric, the cells of each line whose mean is the line's highest as printed."""
    flags = {key: list(cell.best or (False,) * len(cell.stats)) for key, cell in cells.items()}
    for line in lines:
        present = [k for k in line if k in cells]
        for i in range(max((len(cells[k].stats) for k in present), default=0)):
            shown = {k: round(100 * cells[k].stats[i].mean, 1) for k in present
                     if cells[k].stats[i] is not None and not math.isnan(cells[k].stats[i].mean)}  # fmt: skip
            if len(shown) < 2:
                continue  # nothing to compare
            top = max(shown.values())
            for k, value in shown.items():
                flags[k][i] = flags[k][i] or value == top
    return {k: Cell(c.stats, tuple(flags[k]), c.paper) for k, c in cells.items()}


# ---------------------------------------------------------------------- configurations
def _sort_key(value: Any) -> tuple:
    from haloae.presets import VARIANTS

    if isinstance(value, str) and value in VARIANTS:
        return 0, list(VARIANTS).index(value), ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return 1, value, ""
    return 2, 0, str(value)


def configurations(runs: RunsFrame) -> tuple[pd.DataFrame, list[str], dict[str, str | None]]:
    """FINISHED runs with a ``config`` label column; the labels in order; label -> variant name when
    the configuration is a variant alone (then the paper's rows apply), else None."""
    knobs = [k for k in runs.attrs.get("varied", []) if k in runs.columns] or [TAG_VARIANT]
    done = finished(runs).copy()
    by_variant = knobs == [TAG_VARIANT]
    keys = sorted({tuple(r) for r in done[knobs].itertuples(index=False)}, key=lambda t: tuple(_sort_key(v) for v in t))

    def label(values: tuple) -> str:
        if by_variant:
            return variant_label(values[0])
        # the full dotted key: loss.alpha.cls.c and loss.alpha.fm.c must not both print as c=
        return ", ".join(str(v) if k == TAG_VARIANT else f"{k}={v}" for k, v in zip(knobs, values, strict=True))

    labels = {key: label(key) for key in keys}
    done["config"] = [labels[tuple(r)] for r in done[knobs].itertuples(index=False)]
    variants = {labels[key]: (key[0] if by_variant else None) for key in keys}
    return done, [labels[k] for k in keys], variants


def variant_label(name: str) -> str:
    from haloae.presets import VARIANTS

    return VARIANTS[name].label if name in VARIANTS else str(name)


def _groups(categories: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(group, its categories) for each group present, then ("all", every category)."""
    from analysis.runs import category_group

    out = [(g, [c for c in categories if category_group(c) == g]) for g in GROUPS]
    return [(g, cs) for g, cs in out if cs] + [("all", list(categories))]


def _metric_keys(split: str, scoring: str | None = None) -> tuple[str, str]:
    return tuple(metric_key(split, m, scoring) for m in PAIR)  # type: ignore[return-value]


def _pair(frame: pd.DataFrame, keys: Sequence[str], categories: Sequence[str] | None = None) -> tuple[Stat | None, ...]:
    """Stats of each metric key: over seeds for one category, or a group stat over ``categories``."""
    out = []
    for key in keys:
        if key not in frame.columns:
            out.append(None)
        elif categories is None:
            out.append(seed_stat(frame[key], frame["seed"]))
        else:
            out.append(group_stat(frame, key, categories))
    return tuple(out)


def _notes(runs: RunsFrame, split: str) -> list[str]:
    return [f"{split} split; {runs.attrs.get('summary', '')}"]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise SweepQueryError(f"split: unknown {split!r}; valid: {', '.join(SPLITS)}")


# ---------------------------------------------------------------------- the shapes
def table2(runs: RunsFrame, split: str = "test", with_paper: bool = False) -> Table:
    """Categories x configurations, (image, pixel) AUROC; Mean rows per group and overall."""
    _check_split(split)
    done, configs, variants = configurations(runs)
    categories = category_order(done["category"])
    groups = _groups(categories)
    keys = _metric_keys(split)
    cells: dict[tuple[str, str], Cell] = {}
    for config in configs:
        mine = done[done["config"] == config]
        row_paper = paper.variant_row(variants[config], "table2") if variants[config] else None
        pairs = {c: paper.paper_pair("table2", row_paper, c) for c in categories}
        for category in categories:
            stats = _pair(mine[mine["category"] == category], keys)
            cells[(category, config)] = Cell(stats, paper=pairs[category] if with_paper else None)
        for group, members in groups:
            stats = _pair(mine, keys, members)
            cells[(GROUP_LABELS[group], config)] = Cell(stats, paper=paper.mean_of([pairs[c] for c in members]) if with_paper else None)
    rows = categories + [GROUP_LABELS[g] for g, _ in groups]
    cells = mark_best(cells, [[(r, c) for c in configs] for r in rows])
    return Table("table2", "Table 2 shape: per category", "category", rows, configs, PAIR_LABELS, cells, with_paper, _notes(runs, split))


def table3(runs: RunsFrame, split: str = "test", with_paper: bool = False, name: str = "table3") -> Table:
    """Configurations x {Mean Text., Mean Obj., Mean}: the shape of Tables 3 and 4."""
    _check_split(split)
    done, configs, variants = configurations(runs)
    groups = _groups(category_order(done["category"]))
    keys = _metric_keys(split)
    columns = [GROUP_LABELS[g] for g, _ in groups]
    cells: dict[tuple[str, str], Cell] = {}
    for config in configs:
        mine = done[done["config"] == config]
        variant = variants[config]
        table = paper.variant_table(variant) if variant else None
        row = paper.variant_row(variant, table) if table else None
        for group, members in groups:
            pair = paper.paper_pair(table, row, paper.GROUP_CATEGORIES[group]) if table and group in paper.GROUP_CATEGORIES else None
            cells[(config, GROUP_LABELS[group])] = Cell(_pair(mine, keys, members), paper=pair if with_paper else None)
    cells = mark_best(cells, [[(r, c) for r in configs] for c in columns])
    title = "Tables 3/4 shape: means over categories"
    return Table(name, title, "configuration", configs, columns, PAIR_LABELS, cells, with_paper, _notes(runs, split))


def table_s1(runs: RunsFrame, split: str = "test", with_paper: bool = False) -> list[Table]:
    """Table S1's scorings x categories (then the means), one table per configuration."""
    from haloae.scoring import SCORING_LABELS, SCORINGS

    _check_split(split)
    done, configs, _ = configurations(runs)
    categories = category_order(done["category"])
    groups = _groups(categories)
    tables = []
    for config in configs:
        mine = done[done["config"] == config]
        scorings = [s for s in SCORINGS if (key := metric_key(split, "image_auroc", s)) in mine.columns and mine[key].notna().any()]
        rows = [SCORING_LABELS[s] for s in scorings]
        columns = categories + [GROUP_LABELS[g] for g, _ in groups]
        cells: dict[tuple[str, str], Cell] = {}
        for scoring, row in zip(scorings, rows, strict=True):
            keys = _metric_keys(split, scoring)
            pairs = {c: paper.paper_pair("tableS1", row, c) for c in categories}
            for category in categories:
                stats = _pair(mine[mine["category"] == category], keys)
                cells[(row, category)] = Cell(stats, paper=pairs[category] if with_paper else None)
            for group, members in groups:
                pair = paper.mean_of([pairs[c] for c in members]) if with_paper else None
                cells[(row, GROUP_LABELS[group])] = Cell(_pair(mine, keys, members), paper=pair)
        cells = mark_best(cells, [[(r, c) for r in rows] for c in columns])
        suffix = "" if len(configs) == 1 else f"_{len(tables)}"
        title = f"Table S1 shape: scorings of {config}"
        tables.append(Table(f"tableS1{suffix}", title, "scoring", rows, columns, PAIR_LABELS, cells, with_paper, _notes(runs, split)))
    return tables


def pivot(runs: RunsFrame, rows: str, columns: str, metric: str | None = None, split: str = "test") -> Table:
    """``rows`` knob x ``columns`` knob; cell = ``metric`` (default ``<split>/image_auroc``) over every
    category, mean +- std over seeds. Other knobs must not vary (filter them with ``select``)."""
    _check_split(split)
    metric = require_metric(runs, metric or metric_key(split, "image_auroc"))
    done = finished(runs)
    for knob in (rows, columns):
        if knob not in done.columns:
            varied = runs.attrs.get("varied", [])
            axes = [*varied, TAG_CATEGORY, TAG_SEED]
            raise SweepQueryError(f"pivot: unknown knob {knob!r}; {hint(knob, axes, by_last_part=True)}the sweep's knobs: {', '.join(varied) or 'none'}")
    others = [k for k in runs.attrs.get("varied", []) if k not in (rows, columns) and done[k].astype(str).nunique() > 1]
    if others:
        raise SweepQueryError(f"pivot {rows} x {columns}: {', '.join(others)} also vary; fix them with --where KEY=VALUE")
    categories = category_order(done["category"])
    row_values = sorted(done[rows].dropna().unique(), key=_sort_key)
    column_values = sorted(done[columns].dropna().unique(), key=_sort_key)
    cells = {}
    for r in row_values:
        for c in column_values:
            sub = done[equals(done[rows], r) & equals(done[columns], c)]
            if not sub.empty:  # averaged over every category of the sweep, unless category is an axis
                over = category_order(sub["category"]) if "category" in (rows, columns) else categories
                cells[(str(r), str(c))] = Cell((group_stat(sub, metric, over),))
    row_labels, column_labels = [str(v) for v in row_values], [str(v) for v in column_values]
    cells = mark_best(cells, [[(r, c) for r in row_labels] for c in column_labels])
    name = f"pivot_{rows}_x_{columns}".replace(".", "-")
    over = "" if "category" in (rows, columns) else f", mean over {len(categories)} categor{'y' if len(categories) == 1 else 'ies'}"
    title = f"{metric} by {rows} (rows) x {columns} (columns){over}"
    return Table(name, title, rows, row_labels, column_labels, (metric,), cells, False, _notes(runs, split))


def build(runs: RunsFrame, which: Sequence[str], split: str = "test", with_paper: bool = False,
          pivot_knobs: tuple[str, str] | None = None, metric: str | None = None) -> list[Table]:  # fmt: skip
    """The requested tables, in the order asked (``pivot`` needs ``pivot_knobs``)."""
    tables: list[Table] = []
    for name in which:
        if name == "table2":
            tables.append(table2(runs, split, with_paper))
        elif name in ("table3", "table4"):
            if "table3" not in which or name == "table3":  # one summary table serves both names
                tables.append(table3(runs, split, with_paper, name))
        elif name == "tableS1":
            tables.extend(table_s1(runs, split, with_paper))
        elif name == "pivot":
            if pivot_knobs is None:
                raise SweepQueryError("pivot: give the two knobs, e.g. --pivot model.block_size,model.halo_size")
            tables.append(pivot(runs, *pivot_knobs, metric=metric, split=split))
        else:
            raise SweepQueryError(f"table: unknown {name!r}; valid: {', '.join(TABLES)}")
    return tables
