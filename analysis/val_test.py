# SPDX-License-Identifier: Apache-2.0
"""Does validation predict test? Rank correlations between the runs' validation objective and their
test metric, per category and pooled, and the warning to print when they are weak.

A sweep chooses by the validation objective (synthetic defects on held-out good images); the
table reports the test metric (the real defects). If the two rank the runs differently, the
sweep's choice is no better than chance on real defects. Each FINISHED run (a trial in one
category with one seed) is a point; a run whose objective or test metric is NaN is left out and
counted. Spearman's rho and Kendall's tau come from ``scipy.stats.spearmanr``/``kendalltau``.

Pooled mixes categories: easy categories are easy on both splits, which raises the pooled rho
by itself, so the per-category rows are the ones that speak for the sweep's choice.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import pandas as pd

from analysis.runs import RunsFrame, category_order, finished, require_metric
from haloae.vocab import DEFAULT_OBJECTIVE, TAG_CATEGORY, TEST, VAL

WEAK = 0.5  # Spearman's rho below this: validation does not predict test
MIN_POINTS = 3  # fewer runs rank trivially (rho = +-1 from two points): undefined
POOLED = "pooled"
NO_PREDICTION = "validation does not predict test: the sweep's choices are no better than chance on real defects"
COLUMNS = [TAG_CATEGORY, "n", "excluded", "spearman_rho", "spearman_p", "kendall_tau", "kendall_p"]


@dataclass(frozen=True)
class ValTestCorrelation:
    objective: str  # the validation metric the sweep chose by
    test_metric: str
    table: pd.DataFrame  # COLUMNS: a row per category, then the pooled row
    warning: str | None  # NO_PREDICTION and which rows are weak or undefined; None when all are strong

    def text(self) -> str:
        """The table as plain lines, then the warning (if any): what the CLI and the report print."""
        shown = self.table.copy()
        for column in ("spearman_rho", "spearman_p", "kendall_tau", "kendall_p"):
            shown[column] = shown[column].map(lambda v: "undefined" if math.isnan(v) else f"{v:.3f}")
        lines = [f"{self.objective} (validation) vs {self.test_metric} (test), rank correlation over runs:",
                 shown.to_string(index=False)]  # fmt: skip
        return "\n".join(lines + ([f"Warning: {self.warning}"] if self.warning else []))


def on_test_split(objective: str) -> str:
    """``val/image_auroc`` -> ``test/image_auroc``: the same metric on the test split."""
    split, _, rest = objective.partition("/")
    return f"{TEST}/{rest}" if split == VAL else objective


def _correlate(name: str, points: pd.DataFrame, objective: str, test_metric: str) -> dict:
    from scipy import stats

    kept = points[[objective, test_metric]].dropna()
    row = {TAG_CATEGORY: name, "n": len(kept), "excluded": len(points) - len(kept),
           "spearman_rho": math.nan, "spearman_p": math.nan, "kendall_tau": math.nan, "kendall_p": math.nan}  # fmt: skip
    if len(kept) >= MIN_POINTS:
        with warnings.catch_warnings():  # a constant column: scipy warns and answers NaN (undefined)
            warnings.simplefilter("ignore", stats.ConstantInputWarning)
            rho = stats.spearmanr(kept[objective], kept[test_metric])
            tau = stats.kendalltau(kept[objective], kept[test_metric])
        row.update(spearman_rho=float(rho.statistic), spearman_p=float(rho.pvalue),
                   kendall_tau=float(tau.statistic), kendall_p=float(tau.pvalue))  # fmt: skip
    return row


def _weakness(row: dict) -> str | None:
    rho = row["spearman_rho"]
    if math.isnan(rho):
        return f"{row[TAG_CATEGORY]} (n={row['n']}, undefined)"
    return f"{row[TAG_CATEGORY]} (rho {rho:.2f})" if rho < WEAK else None


def val_test_correlation(runs: RunsFrame, objective: str = DEFAULT_OBJECTIVE, test_metric: str | None = None) -> ValTestCorrelation:
    """Spearman and Kendall between ``objective`` and ``test_metric`` (default: the objective's
    metric on the test split) over the FINISHED runs, per category and pooled; the warning names
    every row whose rho is below ``WEAK`` or undefined (fewer than ``MIN_POINTS`` runs, or constant)."""
    test_metric = test_metric or on_test_split(objective)
    require_metric(runs, objective)
    require_metric(runs, test_metric)
    done = finished(runs)
    rows = [_correlate(c, done[done[TAG_CATEGORY] == c], objective, test_metric) for c in category_order(done[TAG_CATEGORY])]
    rows.append(_correlate(POOLED, done, objective, test_metric))
    weak = [w for w in map(_weakness, rows) if w]
    warning = f"{NO_PREDICTION} (weak or undefined: {', '.join(weak)})" if weak else None
    return ValTestCorrelation(objective, test_metric, pd.DataFrame(rows, columns=COLUMNS), warning)
