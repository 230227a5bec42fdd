# SPDX-License-Identifier: Apache-2.0
"""The statistics block of a sweep's tables: each configuration's mean over categories with a 95%
t interval over seeds, its paired test against the reference configuration, who is best (or
which rows are tied), and whether validation predicts test; as a frame and as printable text.

It joins ``analysis.tables`` (the configurations and per-seed means) to ``analysis.stats`` and
``analysis.val_test`` (the numbers), so a table and its statistics are made from the same runs.
A group's interval is over the seeds that have every category of the group (as the tables' std),
centred on those seeds' mean.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

import pandas as pd

from analysis.runs import RunsFrame, SweepQueryError, category_order, require_metric
from analysis.stats import (
    ALPHA,
    Comparison,
    Ranking,
    compare_rows,
    comparison_caption,
    format_interval,
    interval_caption,
    rank_rows,
    t_interval,
)
from analysis.tables import GROUP_LABELS, category_groups, configurations, seed_means
from analysis.val_test import ValTestCorrelation, on_test_split, val_test_correlation
from haloae.vocab import DEFAULT_OBJECTIVE, TAG_CATEGORY, TEST, metric_key


@dataclass(frozen=True)
class SweepStatistics:
    metric: str
    reference: str
    table: pd.DataFrame  # configuration x (a column per category group, then the paired test's columns): strings
    comparisons: list[Comparison]  # every other configuration against the reference
    ranking: Ranking
    caption: str
    correlation: ValTestCorrelation | None  # None when the runs lack the objective or its test metric

    def text(self) -> str:
        """The table, its caption wrapped, then the val-vs-test correlation: what ``haloae tables`` prints."""
        caption = textwrap.fill(self.caption, width=120)
        parts = [f"Statistics of {self.metric} (reference: {self.reference})", self.table.to_string(), caption]
        return "\n\n".join(parts + ([self.correlation.text()] if self.correlation is not None else []))


def _p_text(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.3g}"


def sweep_statistics(runs: RunsFrame, split: str = TEST, metric: str | None = None, reference: str | None = None,
                     test: str = "wilcoxon", objective: str = DEFAULT_OBJECTIVE, alpha: float = ALPHA) -> SweepStatistics:  # fmt: skip
    """The statistics of ``metric`` (default ``<split>/image_auroc``) over the FINISHED runs;
    ``reference`` is a configuration label (default: the first configuration, the full model when
    the sweep varies the variant). Raises ``SweepQueryError`` for an unknown metric or reference."""
    metric = require_metric(runs, metric or metric_key(split, "image_auroc"))
    done, configs, _ = configurations(runs)
    if not configs:
        raise SweepQueryError(f"sweep {runs.attrs.get('sweep', '?')}: no FINISHED run to compute statistics on")
    reference = reference or configs[0]
    comparisons = compare_rows(done, metric, reference, configs, test=test, alpha=alpha)
    ranking = rank_rows(done, metric, configs, test=test, alpha=alpha)
    groups = category_groups(category_order(done[TAG_CATEGORY]))
    intervals = {(config, group): t_interval(seed_means(done[done["config"] == config], metric, members)[1])
                 for config in configs for group, members in groups}  # fmt: skip
    common = max((i.n for i in intervals.values() if i is not None), default=0)
    by_row = {c.row: c for c in comparisons}
    records = []
    for config in configs:
        record = {GROUP_LABELS[g]: format_interval(intervals[(config, g)], common_n=common) for g, _ in groups}
        versus = by_row.get(config)
        record.update({
            "vs reference (points)": "reference" if versus is None else f"{100 * versus.mean_difference:+.1f}{versus.marker}",
            "pairs": "" if versus is None else str(versus.n_pairs),
            "p": "" if versus is None else _p_text(versus.p_value),
            "p_holm": "" if versus is None else _p_text(versus.p_holm),
        })  # fmt: skip
        records.append(record)
    table = pd.DataFrame(records, index=pd.Index(configs, name="configuration"))
    caption = f"{interval_caption(common)} {comparison_caption(comparisons, ranking)}"
    has_correlation = {objective, on_test_split(objective)} <= set(runs.columns)
    correlation = val_test_correlation(runs, objective) if has_correlation else None
    return SweepStatistics(metric, reference, table, comparisons, ranking, caption, correlation)
