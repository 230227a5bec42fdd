# SPDX-License-Identifier: Apache-2.0
"""The statistics of an ablation table: intervals over seeds, paired tests against a reference row
(Holm-corrected across rows), who is "best", and the caption that explains them.

Every estimator is a library's (scipy, statsmodels); this module only pairs the values and words
the result. The frame is a run frame's FINISHED rows with a row-label column (``config``, as
``analysis.tables.configurations`` adds), ``category``, ``seed`` and the metric (fractions, higher
is better). Runs of the same (row, category, seed) are averaged first; a NaN metric is left out
and counted (``excluded``), never treated as a value.

Intervals: the mean over seeds with a 95% Student-t interval (``scipy.stats.ttest_1samp``'s), n
seeds; with n = 1 there is no interval, and the cell says so instead of printing a fake +- 0.

Paired tests: a row and the reference row are paired over the (category, seed) cells both have:
a seed fixes data order, augmentation, validation set and initialisation for every variant, so a
pair differs only in the variant. Wilcoxon signed-rank (``scipy.stats.wilcoxon``: exact, or
exhaustive permutations when there are ties or zeros, up to 50 pairs; Pratt's handling of zero
differences by default) or the paired t-test (``scipy.stats.ttest_rel``); the family of rows is
Holm-corrected (``statsmodels.stats.multitest.multipletests(method="holm")``).
"""

from __future__ import annotations

import gc
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.runs import SweepQueryError, require_metric
from haloae.dotted import hint
from haloae.vocab import TAG_CATEGORY, TAG_SEED

LEVEL = 0.95  # the intervals' confidence level
ALPHA = 0.05  # the paired tests' significance level, after Holm
TESTS = {"wilcoxon": "Wilcoxon signed-rank test", "ttest": "paired t-test"}
ZERO_METHODS = ("pratt", "wilcox", "zsplit")  # scipy.stats.wilcoxon's handling of zero differences
# Pratt keeps a pair with equal scores in the ranking: equal scores are evidence of no difference
ZERO_METHOD = "pratt"
MARKER = "*"  # p_holm < ALPHA
PAIR_KEYS = [TAG_CATEGORY, TAG_SEED]


# ---------------------------------------------------------------------- intervals over seeds
@dataclass(frozen=True)
class Interval:
    """A mean over n values (fractions) and its Student-t interval; ``low``/``high`` are NaN when
    n = 1 (no interval). ``excluded``: values left out because they were NaN."""

    mean: float
    low: float
    high: float
    n: int
    excluded: int = 0
    level: float = LEVEL

    @property
    def defined(self) -> bool:
        return self.n > 1

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2 if self.defined else math.nan


def t_interval(values: Sequence[float] | pd.Series, level: float = LEVEL) -> Interval | None:
    """The mean of ``values`` (NaN left out and counted) with its Student-t interval; None when no
    value is left. Equal values give a zero-width interval, as the t interval is then."""
    array = np.asarray(values, dtype=float)
    kept = array[~np.isnan(array)]
    excluded = len(array) - len(kept)
    if len(kept) == 0:
        return None
    mean = float(kept.mean())
    if len(kept) == 1:
        return Interval(mean, math.nan, math.nan, 1, excluded, level)
    from scipy import stats

    with warnings.catch_warnings():  # equal values: scipy warns about the zero variance, the interval is exact
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = stats.ttest_1samp(kept, popmean=mean).confidence_interval(confidence_level=level)
    return Interval(mean, float(low), float(high), len(kept), excluded, level)


def format_interval(interval: Interval | None, pm: str = "±", common_n: int | None = None) -> str:
    """``97.3 ± 1.2`` (percent; ± the interval's half-width), ``(n=k)`` when k differs from the
    table's n; a single seed prints ``97.3 (n=1, no interval)``; nothing measured prints ``–``."""
    if interval is None:
        return "–"
    text = f"{100 * interval.mean:.1f}"
    if not interval.defined:
        return f"{text} (n=1, no interval)"
    text += f" {pm} {100 * interval.half_width:.1f}"
    return text if interval.n == common_n else f"{text} (n={interval.n})"


def interval_caption(n: int, level: float = LEVEL) -> str:
    seeds = f"{n} seed{'s' if n != 1 else ''}"
    return (f"Cells: mean over {seeds} ± half-width of the {100 * level:g}% Student-t interval (t, n - 1 "
            f"degrees of freedom); a cell with one seed has no interval.")


# ---------------------------------------------------------------------- paired tests
@dataclass(frozen=True)
class Comparison:
    """One row against the reference row over their common (category, seed) pairs. Differences
    are row - reference (fractions); ``p_holm`` is Holm-corrected across the table's rows; a
    p-value is NaN when the test is undefined (fewer than 2 pairs)."""

    row: str
    reference: str
    test: str
    n_pairs: int
    excluded: int  # pairs left out: either side's metric was NaN
    mean_difference: float
    statistic: float
    p_value: float
    p_holm: float
    alpha: float = ALPHA

    @property
    def significant(self) -> bool:
        return self.p_holm < self.alpha  # False for NaN

    @property
    def marker(self) -> str:
        return MARKER if self.significant else ""


def _check_rows(frame: pd.DataFrame, row_column: str, wanted: Sequence[str]) -> list[str]:
    if row_column not in frame.columns:
        raise SweepQueryError(f"row column {row_column!r} is not in the runs; columns: {', '.join(map(str, frame.columns))}")
    present = list(dict.fromkeys(frame[row_column].astype(str)))
    for row in wanted:
        if row not in present:
            raise SweepQueryError(f"reference/row {row!r}: no such {row_column}; {hint(row, present)}the runs have: {', '.join(present)}")
    return present


def _cells(frame: pd.DataFrame, metric: str, row_column: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(category, seed) x row: the metric averaged over the runs of each cell (NaN where no run has
    a value), and whether the cell has a run at all."""
    labelled = frame.assign(**{row_column: frame[row_column].astype(str)})
    grouped = labelled.groupby([*PAIR_KEYS, row_column])[metric]
    return grouped.mean().unstack(row_column), grouped.size().unstack(row_column).notna()


def paired_test(row: Sequence[float], reference: Sequence[float], test: str = "wilcoxon",
                zero_method: str = ZERO_METHOD) -> tuple[float, float]:  # fmt: skip
    """(statistic, two-sided p) of the paired test of ``row`` against ``reference`` (same order)."""
    from scipy import stats

    if test not in TESTS:
        raise SweepQueryError(f"test: unknown {test!r}; valid: {', '.join(TESTS)}")
    if zero_method not in ZERO_METHODS:
        raise SweepQueryError(f"zero_method: unknown {zero_method!r}; valid: {', '.join(ZERO_METHODS)}")
    x, y = np.asarray(row, dtype=float), np.asarray(reference, dtype=float)
    if len(x) < 2:  # one pair: no test (scipy's Wilcoxon needs two; a t-test has no variance)
        return math.nan, math.nan
    with warnings.catch_warnings():  # all-equal differences: scipy warns and answers (p = 1, or t = inf)
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.wilcoxon(x, y, zero_method=zero_method) if test == "wilcoxon" else stats.ttest_rel(x, y)
    return float(result.statistic), float(result.pvalue)


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> list[float]:
    """Holm-corrected p-values; NaN ones (undefined tests) stay NaN and do not count in the family."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    corrected = np.full(len(p), math.nan)
    defined = ~np.isnan(p)
    if defined.any():
        # statsmodels' Holm branch ends in an explicit gc.collect(), 0.6 s with torch and MLflow
        # loaded, once per call; with the heap frozen the collection sees only new objects.
        gc.freeze()
        try:
            corrected[defined] = multipletests(p[defined], alpha=alpha, method="holm")[1]
        finally:
            gc.unfreeze()
    return [float(v) for v in corrected]


def compare_rows(frame: pd.DataFrame, metric: str, reference: str, rows: Sequence[str] | None = None,
                 row_column: str = "config", test: str = "wilcoxon", alpha: float = ALPHA,
                 zero_method: str = ZERO_METHOD) -> list[Comparison]:  # fmt: skip
    """Every row (default: every other row, in frame order) against ``reference``, paired over
    (category, seed), Holm-corrected across the rows compared."""
    require_metric(frame, metric)
    present = _check_rows(frame, row_column, [reference, *(rows or [])])
    rows = [r for r in (rows or present) if r != reference]
    values, has_run = _cells(frame, metric, row_column)
    raw = []
    for row in rows:
        pairs = values[[row, reference]].dropna()
        # a (category, seed) either side ran that is no pair: a NaN metric, or a run the other side lacks
        excluded = int(has_run[[row, reference]].any(axis=1).sum()) - len(pairs)
        statistic, p = paired_test(pairs[row], pairs[reference], test, zero_method)
        difference = float((pairs[row] - pairs[reference]).mean()) if len(pairs) else math.nan
        raw.append((row, len(pairs), excluded, difference, statistic, p))
    corrected = holm([r[-1] for r in raw], alpha)
    return [Comparison(row, reference, test, n, excluded, diff, statistic, p, p_holm, alpha)
            for (row, n, excluded, diff, statistic, p), p_holm in zip(raw, corrected, strict=True)]  # fmt: skip


# ---------------------------------------------------------------------- who is best
@dataclass(frozen=True)
class Ranking:
    """Rows by their mean over categories (of the per-category means over seeds), best first;
    ``best`` only when the top row beats every other row significantly (paired, Holm-corrected),
    else None and ``tied`` lists the top row and those not significantly below it."""

    order: list[str]
    means: dict[str, float]
    best: str | None
    tied: list[str]
    versus_top: list[Comparison]  # every other row against the top row


def rank_rows(frame: pd.DataFrame, metric: str, rows: Sequence[str] | None = None, row_column: str = "config",
              test: str = "wilcoxon", alpha: float = ALPHA, zero_method: str = ZERO_METHOD) -> Ranking:  # fmt: skip
    require_metric(frame, metric)
    present = _check_rows(frame, row_column, list(rows or []))
    rows = list(rows or present)
    by_category = _cells(frame, metric, row_column)[0].groupby(level=TAG_CATEGORY).mean()
    means = {r: float(by_category[r].mean()) for r in rows}
    order = sorted((r for r in rows if not math.isnan(means[r])), key=lambda r: -means[r])
    if not order:
        return Ranking([], means, None, [], [])
    top = order[0]
    versus = compare_rows(frame, metric, top, order[1:], row_column, test, alpha, zero_method) if len(order) > 1 else []
    worse = {c.row for c in versus if c.significant and c.mean_difference < 0}
    tied = [r for r in order if r not in worse]
    best = top if versus and not tied[1:] else None
    return Ranking(order, means, best, tied, versus)


# ---------------------------------------------------------------------- the caption
def smallest_p(n_pairs: int, test: str = "wilcoxon") -> float:
    """The smallest two-sided p the test can reach with ``n_pairs`` pairs (Wilcoxon: every pair on
    one side, distinct ranks), from scipy; 0 for the t-test, whose p has no floor."""
    from scipy import stats

    if test != "wilcoxon":
        return 0.0
    return float(stats.wilcoxon(np.arange(1, n_pairs + 1)).pvalue) if n_pairs else 1.0


def _p(value: float) -> str:
    return "undefined" if math.isnan(value) else f"{value:.3g}"


def comparison_caption(comparisons: Sequence[Comparison], ranking: Ranking | None = None,
                       zero_method: str = ZERO_METHOD) -> str:  # fmt: skip
    """What the markers mean, which test and correction, and who is best or which rows are tied."""
    if not comparisons:
        return "No paired test: the table has one row."
    first = comparisons[0]
    how = TESTS[first.test] + (f" (zero differences: {zero_method})" if first.test == "wilcoxon" else "")
    rows = f"{len(comparisons)} row{'s' if len(comparisons) != 1 else ''}"
    text = (f"{MARKER}: the row differs from {first.reference} by a two-sided {how} over (category, seed) pairs, "
            f"p < {first.alpha:g} after Holm's correction across the {rows}.")  # fmt: skip
    most = max(c.n_pairs for c in comparisons)
    floor = smallest_p(most, first.test)
    if floor >= first.alpha:
        text += f" With at most {most} pairs this test cannot reach p < {first.alpha:g} (smallest p = {floor:.3g}): add seeds or categories."
    if ranking is not None and ranking.versus_top:
        if ranking.best is not None:
            runner_up = next(c for c in ranking.versus_top if c.row == ranking.order[1])
            text += (f" Best: {ranking.best}, significantly above every other row (runner-up {runner_up.row}: "
                     f"{100 * runner_up.mean_difference:+.1f} points, p_holm = {_p(runner_up.p_holm)}).")  # fmt: skip
        else:
            text += (f" No row is best: {', '.join(ranking.tied)} are tied at the top (no significant paired "
                     f"difference from {ranking.order[0]} at {first.alpha:g}, Holm-corrected).")  # fmt: skip
    return text
