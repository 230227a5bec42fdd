# SPDX-License-Identifier: Apache-2.0
"""Paper-style tables from a run frame (``analysis.runs.load_runs``): mean with a 95% t interval
over seeds, paired tests against a reference row, bold only when significantly best.

Shapes:
    table2       categories (textures, objects, others; then Mean Text., Mean Obj., Mean Other,
                 Mean) x configurations; cell = (image AUROC, pixel AUROC)
    table3/4     configurations x {Mean Text., Mean Obj., Mean}; cell = (image AUROC, pixel AUROC)
    tableS1      Table S1's scorings x categories (and the means), one table per configuration
    pivot        knob A x knob B, one metric averaged over every category
    leak         configurations x groups, honest | LEAKY | Δ (``analysis.leak``): sweeps with eval.protocol: paper

``metrics`` chooses the cell's metrics (default image and pixel AUROC; ``aupro`` too). A
*configuration* is one combination of the sweep's varied knobs (``frame.attrs["varied"]``; the
variant alone when nothing else varies); seeds are its repeats. Only FINISHED runs count (a run
the scheduler stopped early is FINISHED once its best checkpoint is evaluated, and is marked);
runs that failed are marked in their cells and listed in the notes, a cell with only failed runs
reads "failed", never nothing.

Statistics: a category cell is the mean over seeds with the 95% Student-t interval of that mean
(``analysis.stats.t_interval``: scipy's), n = seeds with a value. A mean row or column (over a
group of categories) has as value the mean of its category cells, as the paper's, and as interval
(and std) those of the per-seed mean over the group, over the seeds that have every category (n =
those seeds); ``(n=k)`` marks a cell whose n differs. Paired tests, the significant best and the
markers: ``analysis.markers`` (a line = a column of Tables 3/4, S1 and pivots, a row of Table 2).
The paper's values (``paper=True``) sit in their own column beside ours and are never bolded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from analysis import markers, paper
from analysis.markers import ROW, Line
from analysis.render import Cell, Stat, Table
from analysis.runs import GROUPS, RunsFrame, SweepQueryError, category_order, equals, finished, require_metric
from analysis.stats import ALPHA, t_interval
from haloae.dotted import hint
from haloae.vocab import TAG_CATEGORY, TAG_SEED, TAG_VARIANT, TEST, VAL, metric_key

TABLES = ("table2", "table3", "table4", "tableS1", "pivot", "leak")
SPLITS = (TEST, VAL)
PAIR = ("image_auroc", "pixel_auroc")
METRIC_LABELS = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "aupro": "AUPRO"}
PAIR_LABELS = tuple(METRIC_LABELS[m] for m in PAIR)
GROUP_LABELS = {"texture": "Mean Text.", "object": "Mean Obj.", "other": "Mean Other", "all": "Mean"}
P_HEADER = "p vs {reference} (Holm), Mean"


# ---------------------------------------------------------------------- statistics over seeds
def _stat(per_seed: pd.Series, mean: float | None = None) -> Stat | None:
    interval = t_interval(per_seed)
    if interval is None:
        return None
    std = float(per_seed.std(ddof=1)) if interval.n > 1 else math.nan
    return Stat(interval.mean if mean is None else mean, std, interval.n, interval.low, interval.high)


def seed_stat(values: pd.Series, seeds: pd.Series) -> Stat | None:
    """Mean, sample std and 95% t interval over seeds of one metric (runs of a seed averaged first)."""
    return _stat(values.groupby(seeds.values).mean().dropna())


def seed_means(frame: pd.DataFrame, metric: str, categories: Sequence[str]) -> tuple[pd.Series, pd.Series]:
    """(mean over seeds per category, mean over ``categories`` per seed that has them all)."""
    sub = frame[frame["category"].isin(categories)]
    by_seed = sub.pivot_table(index="seed", columns="category", values=metric, aggfunc="mean")  # seed x category
    return by_seed.mean(axis=0), by_seed.reindex(columns=list(categories)).dropna().mean(axis=1)


def group_stat(frame: pd.DataFrame, metric: str, categories: Sequence[str]) -> Stat | None:
    """Over a group of categories: the mean of the category means, and the std and t interval over
    the seeds that have every category of the per-seed mean over them (n = those seeds)."""
    if metric not in frame.columns or frame.loc[frame["category"].isin(categories), metric].isna().all():
        return None
    per_category, per_seed = seed_means(frame, metric, categories)
    if per_seed.empty:
        return Stat(float(per_category.mean()), math.nan, 0)
    return _stat(per_seed, float(per_category.mean()))


# ---------------------------------------------------------------------- configurations
def _sort_key(value: Any) -> tuple:
    from haloae.presets import VARIANTS

    if isinstance(value, str) and value in VARIANTS:
        return 0, list(VARIANTS).index(value), ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return 1, value, ""
    return 2, 0, str(value)


def labelled(runs: RunsFrame) -> tuple[pd.DataFrame, list[str], dict[str, str | None]]:
    """Every run with a ``config`` label column; the labels in order; label -> variant name when
    the configuration is a variant alone (then the paper's rows apply), else None."""
    knobs = [k for k in runs.attrs.get("varied", []) if k in runs.columns] or [TAG_VARIANT]
    out = runs.copy()
    by_variant = knobs == [TAG_VARIANT]
    keys = sorted({tuple(r) for r in out[knobs].itertuples(index=False)}, key=lambda t: tuple(_sort_key(v) for v in t))

    def label(values: tuple) -> str:
        if by_variant:
            return variant_label(values[0])
        # the full dotted key: loss.alpha.cls.c and loss.alpha.fm.c must not both print as c=
        return ", ".join(str(v) if k == TAG_VARIANT else f"{k}={v}" for k, v in zip(knobs, values, strict=True))

    labels = {key: label(key) for key in keys}
    out[ROW] = [labels[tuple(r)] for r in out[knobs].itertuples(index=False)]
    variants = {labels[key]: (key[0] if by_variant else None) for key in keys}
    return out, [labels[k] for k in keys], variants


def configurations(runs: RunsFrame) -> tuple[pd.DataFrame, list[str], dict[str, str | None]]:
    """FINISHED runs with a ``config`` label column, the labels that have such runs, in order, and
    label -> variant (see ``labelled``)."""
    everything, labels, variants = labelled(runs)
    done = finished(everything)
    have = set(done[ROW])
    return done, [c for c in labels if c in have], {c: v for c, v in variants.items() if c in have}


def variant_label(name: str) -> str:
    from haloae.presets import VARIANTS

    return VARIANTS[name].label if name in VARIANTS else str(name)


def category_groups(categories: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(group, its categories) for each group present, then ("all", every category)."""
    from analysis.runs import category_group

    out = [(g, [c for c in categories if category_group(c) == g]) for g in GROUPS]
    return [(g, cs) for g, cs in out if cs] + [("all", list(categories))]


def _check(split: str, metrics: Sequence[str]) -> None:
    if split not in SPLITS:
        raise SweepQueryError(f"split: unknown {split!r}; valid: {', '.join(SPLITS)}")
    for m in metrics:
        if m not in METRIC_LABELS:
            raise SweepQueryError(f"cell metric: unknown {m!r}; {hint(m, list(METRIC_LABELS))}valid: {', '.join(METRIC_LABELS)}")


def _stats(frame: pd.DataFrame, keys: Sequence[str], categories: Sequence[str] | None = None) -> tuple[Stat | None, ...]:
    """Stats of each metric key: over seeds for one category, or a group stat over ``categories``."""
    out = []
    for key in keys:
        if key not in frame.columns:
            out.append(None)
        elif categories is None:
            out.append(seed_stat(frame[key], frame[TAG_SEED]))
        else:
            out.append(group_stat(frame, key, categories))
    return tuple(out)


def _paper(pair: paper.Pair | None, metrics: Sequence[str]) -> tuple[str | None, ...] | None:
    """The paper's values of the cell's metrics (it reports image and pixel AUROC only)."""
    if pair is None:
        return None
    by_name = dict(zip(PAIR, pair, strict=True))
    return tuple(by_name.get(m) for m in metrics)


def _reference(reference: str | None, rows: Sequence[str]) -> str | None:
    if reference is None:
        return rows[0] if rows else None
    if reference not in rows:
        raise SweepQueryError(f"--reference {reference!r}: no such row; {hint(reference, list(rows))}the rows: {', '.join(rows)}")
    return reference


def _in(frame: pd.DataFrame, categories: Sequence[str]) -> pd.DataFrame:
    return frame[frame[TAG_CATEGORY].isin(categories)]


def _marked(cell: Cell, runs: pd.DataFrame) -> Cell:
    marks, failed = markers.run_marks(runs)
    return Cell(cell.stats, paper=cell.paper, marks=marks, failed=failed)


def _finish(table: Table, lines: Sequence[Line], reference: str | None, line: str, test: str, alpha: float,
            runs: pd.DataFrame, notes: list[str]) -> Table:  # fmt: skip
    """Paired tests and bold into the cells; caption sentences, footnotes (stopped, failed, ties)."""
    labels = [METRIC_LABELS.get(m, m) for m in table.metrics]
    done = markers.annotate(table.cells, lines, labels, reference, test, alpha)
    table.cells = done.cells
    marks = "".join(c.marks + ("failed" if c.failed else "") for c in done.cells.values())
    table.legend = markers.legend(labels, table.common_n, reference, line, test, done.most_pairs, marks, alpha)
    ties = [f"Tied at the top (no significant paired difference, so no bold): {'; '.join(done.ties)}"] if done.ties else []
    table.notes = notes + list(dict.fromkeys(markers.run_notes(runs))) + ties
    return table


def _notes(runs: RunsFrame, split: str) -> list[str]:
    return [f"{split} split; {runs.attrs.get('summary', '')}"]


# ---------------------------------------------------------------------- the shapes
def table2(runs: RunsFrame, split: str = "test", with_paper: bool = False, metrics: Sequence[str] = PAIR,
           reference: str | None = None, test: str = "wilcoxon", alpha: float = ALPHA) -> Table:  # fmt: skip
    """Categories x configurations; Mean rows per group and overall. Lines are rows."""
    _check(split, metrics)
    everything, configs, variants = labelled(runs)  # every configuration, also one whose runs all failed
    done = finished(everything)
    categories = category_order(everything[TAG_CATEGORY])
    groups = category_groups(categories)
    keys = [metric_key(split, m) for m in metrics]
    reference = _reference(reference, [c for c in configs if c in set(done[ROW])])
    cells: dict[tuple[str, str], Cell] = {}
    for config in configs:
        mine, all_mine = done[done[ROW] == config], everything[everything[ROW] == config]
        row_paper = paper.variant_row(variants[config], "table2") if variants[config] else None
        pairs = {c: paper.paper_pair("table2", row_paper, c) for c in categories}
        for category in categories:
            cell = Cell(_stats(_in(mine, [category]), keys), paper=_paper(pairs[category], metrics) if with_paper else None)
            cells[(category, config)] = _marked(cell, _in(all_mine, [category]))
        for group, members in groups:
            cell = Cell(_stats(mine, keys, members), paper=_paper(paper.mean_of([pairs[c] for c in members]), metrics) if with_paper else None)
            cells[(GROUP_LABELS[group], config)] = _marked(cell, _in(all_mine, members))
    scopes = [(c, [c]) for c in categories] + [(GROUP_LABELS[g], members) for g, members in groups]
    lines = [Line(row, {c: (row, c) for c in configs}, tuple((_in(done, members), k) for k in keys)) for row, members in scopes]
    rows = [row for row, _ in scopes]
    table = Table("table2", "Table 2 shape: per category", "category", rows, configs, tuple(METRIC_LABELS[m] for m in metrics),
                  cells, with_paper)  # fmt: skip
    table = _finish(table, lines, reference, "row", test, alpha, everything, _notes(runs, split))
    mean = GROUP_LABELS["all"]
    if reference is not None and len(configs) > 1:
        versus = {c: markers.p_text(table.cells[(mean, c)].versus, c == reference) for c in configs}
        table.extra_row = (P_HEADER.format(reference=reference), versus)
    return table


def table3(runs: RunsFrame, split: str = "test", with_paper: bool = False, name: str = "table3", metrics: Sequence[str] = PAIR,
           reference: str | None = None, test: str = "wilcoxon", alpha: float = ALPHA) -> Table:  # fmt: skip
    """Configurations x {Mean Text., Mean Obj., Mean}: the shape of Tables 3 and 4. Lines are columns."""
    _check(split, metrics)
    everything, configs, variants = labelled(runs)  # every configuration, also one whose runs all failed
    done = finished(everything)
    groups = category_groups(category_order(everything[TAG_CATEGORY]))
    keys = [metric_key(split, m) for m in metrics]
    reference = _reference(reference, [c for c in configs if c in set(done[ROW])])
    columns = [GROUP_LABELS[g] for g, _ in groups]
    cells: dict[tuple[str, str], Cell] = {}
    for config in configs:
        mine, all_mine = done[done[ROW] == config], everything[everything[ROW] == config]
        variant = variants[config]
        source = paper.variant_table(variant) if variant else None
        row = paper.variant_row(variant, source) if source else None
        for group, members in groups:
            pair = paper.paper_pair(source, row, paper.GROUP_CATEGORIES[group]) if source and group in paper.GROUP_CATEGORIES else None
            cell = Cell(_stats(mine, keys, members), paper=_paper(pair, metrics) if with_paper else None)
            cells[(config, GROUP_LABELS[group])] = _marked(cell, _in(all_mine, members))
    lines = [Line(GROUP_LABELS[g], {c: (c, GROUP_LABELS[g]) for c in configs}, tuple((_in(done, members), k) for k in keys))
             for g, members in groups]  # fmt: skip
    title = "Tables 3/4 shape: means over categories"
    table = Table(name, title, "configuration", configs, columns, tuple(METRIC_LABELS[m] for m in metrics), cells, with_paper)
    table = _finish(table, lines, reference, "column", test, alpha, everything, _notes(runs, split))
    if reference is not None and len(configs) > 1:
        mean = GROUP_LABELS["all"]
        versus = {c: markers.p_text(table.cells[(c, mean)].versus, c == reference) for c in configs}
        table.extra_column = (P_HEADER.format(reference=reference), versus)
    return table


def table_s1(runs: RunsFrame, split: str = "test", with_paper: bool = False, metrics: Sequence[str] = PAIR,
             reference: str | None = None, test: str = "wilcoxon", alpha: float = ALPHA) -> list[Table]:  # fmt: skip
    """Table S1's scorings x categories (then the means), one table per configuration; lines are
    columns, the reference row is the paper's scoring (else the first)."""
    from haloae.scoring import SCORING_LABELS, SCORINGS
    from haloae.vocab import DEFAULT_SCORING

    _check(split, metrics)
    everything, _, _ = labelled(runs)
    done, configs, _ = configurations(runs)
    categories = category_order(everything[TAG_CATEGORY])
    groups = category_groups(categories)
    tables = []
    for config in configs:
        mine, all_mine = done[done[ROW] == config], everything[everything[ROW] == config]
        scorings = [s for s in SCORINGS if (key := metric_key(split, "image_auroc", s)) in mine.columns and mine[key].notna().any()]
        rows = [SCORING_LABELS[s] for s in scorings]
        columns = categories + [GROUP_LABELS[g] for g, _ in groups]
        # one long frame per metric: a row per (scoring, run), the scoring's label as the row label
        long = [pd.concat([mine.assign(**{ROW: SCORING_LABELS[s], "value": mine.get(metric_key(split, m, s), math.nan)}) for s in scorings])
                if scorings else mine.assign(value=math.nan) for m in metrics]  # fmt: skip
        cells: dict[tuple[str, str], Cell] = {}
        for scoring, row in zip(scorings, rows, strict=True):
            keys = [metric_key(split, m, scoring) for m in metrics]
            pairs = {c: paper.paper_pair("tableS1", row, c) for c in categories}
            for category in categories:
                cell = Cell(_stats(_in(mine, [category]), keys), paper=_paper(pairs[category], metrics) if with_paper else None)
                cells[(row, category)] = _marked(cell, _in(all_mine, [category]))
            for group, members in groups:
                pair = _paper(paper.mean_of([pairs[c] for c in members]), metrics) if with_paper else None
                cells[(row, GROUP_LABELS[group])] = _marked(Cell(_stats(mine, keys, members), paper=pair), _in(all_mine, members))
        scopes = [(c, [c]) for c in categories] + [(GROUP_LABELS[g], members) for g, members in groups]
        lines = [Line(col, {r: (r, col) for r in rows}, tuple((_in(frame, members), "value") for frame in long)) for col, members in scopes]
        own = SCORING_LABELS.get(DEFAULT_SCORING)
        suffix = "" if len(configs) == 1 else f"_{len(tables)}"
        title = f"Table S1 shape: scorings of {config}"
        table = Table(f"tableS1{suffix}", title, "scoring", rows, columns, tuple(METRIC_LABELS[m] for m in metrics), cells, with_paper)
        reference_row = reference if reference in rows else (own if own in rows else (rows[0] if rows else None))
        tables.append(_finish(table, lines, reference_row, "column", test, alpha, all_mine, _notes(runs, split)))
    return tables


def pivot(runs: RunsFrame, rows: str, columns: str, metric: str | None = None, split: str = "test",
          test: str = "wilcoxon", alpha: float = ALPHA) -> Table:  # fmt: skip
    """``rows`` knob x ``columns`` knob; cell = ``metric`` (default ``<split>/image_auroc``) over every
    category, mean and t interval over seeds; lines are columns, the first row the reference. Other
    knobs must not vary (filter them with ``select``)."""
    _check(split, ())
    metric = require_metric(runs, metric or metric_key(split, "image_auroc"))
    everything = runs
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
    row_values = sorted(everything[rows].dropna().unique(), key=_sort_key)
    column_values = sorted(everything[columns].dropna().unique(), key=_sort_key)
    cells = {}
    for r in row_values:
        for c in column_values:
            sub = done[equals(done[rows], r) & equals(done[columns], c)]
            all_sub = everything[equals(everything[rows], r) & equals(everything[columns], c)]
            if not all_sub.empty:  # averaged over every category of the sweep, unless category is an axis
                over = category_order(sub["category"]) if "category" in (rows, columns) else categories
                stat = group_stat(sub, metric, over) if not sub.empty else None
                cells[(str(r), str(c))] = _marked(Cell((stat,)), all_sub)
    row_labels, column_labels = [str(v) for v in row_values], [str(v) for v in column_values]
    lines = []
    if "category" not in (rows, columns):  # pairs are (category, seed): a category axis has none to pair
        for c in column_values:
            sub = done[equals(done[columns], c)]
            lines.append(Line(f"{columns}={c}", {str(r): (str(r), str(c)) for r in row_values}, ((sub.assign(**{ROW: sub[rows].astype(str)}), metric),)))
    name = f"pivot_{rows}_x_{columns}".replace(".", "-")
    over = "" if "category" in (rows, columns) else f", mean over {len(categories)} categor{'y' if len(categories) == 1 else 'ies'}"
    title = f"{metric} by {rows} (rows) x {columns} (columns){over}"
    table = Table(name, title, rows, row_labels, column_labels, (metric,), cells, False)
    labelled_runs = everything.assign(**{ROW: everything[rows].astype(str)})
    reference = row_labels[0] if lines and row_labels else None
    return _finish(table, lines, reference, "column", test, alpha, labelled_runs, _notes(runs, split))


def build(runs: RunsFrame, which: Sequence[str], split: str = "test", with_paper: bool = False,
          pivot_knobs: tuple[str, str] | None = None, metric: str | None = None, metrics: Sequence[str] = PAIR,
          reference: str | None = None, test: str = "wilcoxon") -> list[Table]:  # fmt: skip
    """The requested tables, in the order asked (``pivot`` needs ``pivot_knobs``; ``leak`` a sweep
    with leaky numbers, always on the test split)."""
    tables: list[Table] = []
    common = {"metrics": metrics, "reference": reference, "test": test}
    for name in which:
        if name == "table2":
            tables.append(table2(runs, split, with_paper, **common))
        elif name in ("table3", "table4"):
            if "table3" not in which or name == "table3":  # one summary table serves both names
                tables.append(table3(runs, split, with_paper, name, **common))
        elif name == "tableS1":
            tables.extend(table_s1(runs, split, with_paper, metrics=metrics, test=test))
        elif name == "pivot":
            if pivot_knobs is None:
                raise SweepQueryError("pivot: give the two knobs, e.g. --pivot model.block_size,model.halo_size")
            tables.append(pivot(runs, *pivot_knobs, metric=metric, split=split, test=test))
        elif name == "leak":
            from analysis.leak import leak_table  # it builds on this module

            tables.append(leak_table(runs, metrics))
        else:
            raise SweepQueryError(f"table: unknown {name!r}; valid: {', '.join(TABLES)}")
    return tables
