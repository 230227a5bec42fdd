# SPDX-License-Identifier: Apache-2.0
"""The critical-difference diagram of a sweep (Demsar 2006): configurations ranked within each
category, the Friedman test over categories, and Nemenyi's critical distance, drawn by autorank.

Each category is one block: its value per configuration is the mean over seeds. A category that
lacks a configuration's value is dropped (and named), since the ranks need every configuration in
every block. autorank runs with ``force_mode="nonparametric"`` so the omnibus test is always
Friedman's and the post-hoc always Nemenyi's, which is what the diagram draws; configurations
joined by a bar are not significantly different. The figure is saved as PNG, PDF and SVG.

autorank needs at least 5 blocks, and a CD diagram compares at least 3 configurations (two are
compared by the table's paired test): below that no figure is drawn and ``message`` says why.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.runs import RunsFrame, category_order, require_metric
from analysis.stats import ALPHA
from analysis.tables import configurations
from haloae.vocab import TAG_CATEGORY, TEST, metric_key

MIN_CONFIGURATIONS = 3
MIN_CATEGORIES = 5  # autorank refuses fewer "performance estimations"
FORMATS = ("png", "pdf", "svg")


@dataclass(frozen=True)
class CriticalDifference:
    """The ranking (mean rank per configuration, 1 = best), Friedman's p and Nemenyi's critical
    distance; ``paths`` are empty when no diagram was drawn, and ``message`` says why, or else
    is the figure's caption."""

    message: str
    paths: tuple[Path, ...] = ()
    mean_ranks: dict[str, float] = field(default_factory=dict)
    friedman_p: float = math.nan
    critical_distance: float = math.nan
    categories: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()  # categories left out: a configuration has no value there


def blocks(frame: pd.DataFrame, metric: str, row_column: str = "config") -> tuple[pd.DataFrame, list[str]]:
    """category x configuration: the mean over seeds, complete categories only; and the dropped ones."""
    require_metric(frame, metric)
    labelled = frame.assign(**{row_column: frame[row_column].astype(str)})
    means = labelled.groupby([TAG_CATEGORY, row_column])[metric].mean().unstack(row_column)
    columns = list(dict.fromkeys(labelled[row_column]))
    means = means.reindex(index=category_order(means.index), columns=columns)
    complete = means.dropna()
    return complete, [c for c in means.index if c not in complete.index]


def _not_drawn(why: str, data: pd.DataFrame, dropped: list[str]) -> CriticalDifference:
    dropped_note = f" (dropped, a configuration has no value: {', '.join(dropped)})" if dropped else ""
    return CriticalDifference(f"CD diagram not drawn: {why}{dropped_note}.", categories=tuple(data.index), dropped=tuple(dropped))


def critical_difference(frame: pd.DataFrame, metric: str, out: Path, name: str = "cd_diagram",
                        row_column: str = "config", alpha: float = ALPHA,
                        formats: Sequence[str] = FORMATS) -> CriticalDifference:  # fmt: skip
    """Rank ``frame``'s configurations on ``metric`` (higher is better) across categories and draw
    the diagram as ``out/<name>.<format>``; too few configurations or categories give no figure and
    a message instead of an error, so a report can print it in the figure's place."""
    data, dropped = blocks(frame, metric, row_column)
    if data.shape[1] < MIN_CONFIGURATIONS:
        why = f"it ranks {MIN_CONFIGURATIONS} or more configurations, the sweep has {data.shape[1]}"
        return _not_drawn(why + (" (the table's paired test compares two)" if data.shape[1] == 2 else ""), data, dropped)
    if len(data) < MIN_CATEGORIES:
        return _not_drawn(f"Friedman's test needs {MIN_CATEGORIES} or more categories with every configuration, "
                          f"the sweep has {len(data)}", data, dropped)  # fmt: skip
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from autorank import autorank, plot_stats

    # autorank prints that forcing the mode skips its normality and variance pre-tests (on constant
    # columns they also warn): their results are not used here
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        result = autorank(data.reset_index(drop=True), alpha=alpha, verbose=False, order="descending",
                          force_mode="nonparametric")  # fmt: skip
        plot_stats(result, allow_insignificant=True)
    figure = plt.gcf()
    verdict = (f"the configurations differ (Friedman p = {result.pvalue:.3g} < {alpha:g})" if result.pvalue < alpha else
               f"no configuration differs (Friedman p = {result.pvalue:.3g} >= {alpha:g}): all are tied")  # fmt: skip
    caption = (f"Critical-difference diagram (Demsar 2006) of {metric} over {len(data)} categories: mean rank per "
               f"configuration (1 = best); a bar joins configurations within Nemenyi's critical distance "
               f"{result.cd:.2f} (alpha {alpha:g}), which do not differ significantly; {verdict}.")  # fmt: skip
    if dropped:
        caption += f" Dropped (a configuration has no value): {', '.join(dropped)}."
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        paths.append(out / f"{name}.{fmt}")
        figure.savefig(paths[-1], bbox_inches="tight")
    plt.close(figure)
    ranks = {str(k): float(v) for k, v in result.rankdf["meanrank"].items()}
    return CriticalDifference(caption, tuple(paths), ranks, float(result.pvalue), float(result.cd), tuple(data.index), tuple(dropped))


def sweep_critical_difference(runs: RunsFrame, out: Path, split: str = TEST, metric: str | None = None,
                              alpha: float = ALPHA, formats: Sequence[str] = FORMATS) -> CriticalDifference:  # fmt: skip
    """The diagram of a sweep's configurations (``analysis.tables.configurations``, FINISHED runs)
    on ``metric`` (default ``<split>/image_auroc``), as ``out/cd_<metric>.<format>`` per format."""
    metric = require_metric(runs, metric or metric_key(split, "image_auroc"))
    done, _, _ = configurations(runs)
    return critical_difference(done, metric, Path(out), name=f"cd_{metric.replace('/', '-')}", alpha=alpha, formats=formats)
