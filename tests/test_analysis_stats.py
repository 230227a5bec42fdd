# SPDX-License-Identifier: Apache-2.0
"""analysis.stats: every interval and p-value equals scipy's/statsmodels' on the raw values, the
pairing is by (category, seed), Holm spans the rows, and "best" needs a significant difference."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis.runs import SweepQueryError
from analysis.stats import (
    compare_rows,
    comparison_caption,
    format_interval,
    holm,
    interval_caption,
    rank_rows,
    t_interval,
)

METRIC = "test/image_auroc"
CATEGORIES = ("synth_brick", "synth_disc", "synth_grid", "synth_ring")


def frame_of(values: dict[str, dict[tuple[str, int], float]], shuffle: int | None = 0) -> pd.DataFrame:
    """config -> {(category, seed): value} as run rows, in a shuffled order (pairing must not rely on it)."""
    rows = [{"config": config, "category": category, "seed": seed, "status": "FINISHED", METRIC: value}
            for config, cells in values.items() for (category, seed), value in cells.items()]  # fmt: skip
    frame = pd.DataFrame(rows)
    return frame.sample(frac=1, random_state=shuffle, ignore_index=True) if shuffle is not None else frame


def cells(offset: float, noise: float, seed: int, categories=CATEGORIES, seeds=(0, 1, 2)) -> dict[tuple[str, int], float]:
    """A strong category effect (so an unpaired test would see mostly it) plus offset and noise."""
    rng = np.random.default_rng(seed)
    return {(c, s): 0.6 + 0.08 * i + offset + rng.normal(0, noise) for i, c in enumerate(categories) for s in seeds}


def paired_arrays(values, row, reference):
    keys = sorted(set(values[row]) & set(values[reference]))
    return np.array([values[row][k] for k in keys]), np.array([values[reference][k] for k in keys])


# ---------------------------------------------------------------------- intervals
def test_t_interval_equals_scipys_student_t():
    values = [0.91, 0.87, 0.95, 0.9]
    interval = t_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert (interval.n, interval.excluded) == (4, 0)
    assert interval.mean == pytest.approx(np.mean(values))
    assert (interval.low, interval.high) == (pytest.approx(low), pytest.approx(high))
    assert interval.half_width == pytest.approx((high - low) / 2)


def test_t_interval_leaves_nan_out_and_counts_it():
    interval = t_interval([0.8, math.nan, 0.9, 0.7])
    low, high = stats.t.interval(0.95, 2, loc=0.8, scale=stats.sem([0.8, 0.9, 0.7]))
    assert (interval.n, interval.excluded) == (3, 1)
    assert (interval.low, interval.high) == (pytest.approx(low), pytest.approx(high))
    assert t_interval([math.nan]) is None


def test_one_seed_has_no_interval_and_says_so():
    interval = t_interval([0.9])
    assert not interval.defined and math.isnan(interval.low) and math.isnan(interval.half_width)
    assert format_interval(interval) == "90.0 (n=1, no interval)"
    assert "±" not in format_interval(interval)


def test_equal_values_give_a_zero_width_interval():
    interval = t_interval([0.5, 0.5, 0.5])
    assert (interval.low, interval.high) == (pytest.approx(0.5), pytest.approx(0.5))
    assert format_interval(interval, common_n=3) == "50.0 ± 0.0"


def test_format_interval_marks_a_differing_n_and_the_caption_says_t():
    interval = t_interval([0.9, 0.8])
    assert format_interval(interval, common_n=3).endswith("(n=2)")
    assert format_interval(None) == "–"
    assert "95% Student-t interval" in interval_caption(3)


# ---------------------------------------------------------------------- paired tests
@pytest.fixture
def three_rows():
    return {"base": cells(0.0, 0.02, 1), "better": cells(0.04, 0.01, 2), "same": cells(0.003, 0.02, 3)}


@pytest.mark.parametrize("test", ["wilcoxon", "ttest"])
def test_paired_p_values_equal_scipys_on_the_pairs_and_holm_across_rows(three_rows, test):
    comparisons = compare_rows(frame_of(three_rows), METRIC, "base", ["better", "same"], test=test)
    raw = []
    for row in ("better", "same"):
        x, y = paired_arrays(three_rows, row, "base")
        raw.append((stats.wilcoxon(x, y, zero_method="pratt") if test == "wilcoxon" else stats.ttest_rel(x, y)).pvalue)
    corrected = multipletests(raw, alpha=0.05, method="holm")[1]
    assert [c.row for c in comparisons] == ["better", "same"]
    for comparison, p, p_holm, row in zip(comparisons, raw, corrected, ("better", "same"), strict=True):
        x, y = paired_arrays(three_rows, row, "base")
        assert comparison.n_pairs == 12 and comparison.excluded == 0
        assert comparison.p_value == pytest.approx(p) and comparison.p_holm == pytest.approx(p_holm)
        assert comparison.mean_difference == pytest.approx(np.mean(x - y))
    assert comparisons[0].marker == "*" and comparisons[1].marker == ""
    assert comparisons[1].p_holm != pytest.approx(comparisons[1].p_value) or comparisons[0].p_holm != pytest.approx(comparisons[0].p_value)


def test_pairs_with_a_nan_metric_or_a_missing_run_are_left_out_and_counted(three_rows):
    three_rows["better"][("synth_disc", 1)] = math.nan
    del three_rows["better"][("synth_grid", 2)]
    (comparison,) = compare_rows(frame_of(three_rows), METRIC, "base", rows=["better"])
    x, y = paired_arrays(three_rows, "better", "base")
    keep = ~np.isnan(x)
    assert (comparison.n_pairs, comparison.excluded) == (10, 2)
    assert comparison.p_value == pytest.approx(stats.wilcoxon(x[keep], y[keep], zero_method="pratt").pvalue)


def test_runs_of_one_cell_are_averaged_before_pairing(three_rows):
    frame = frame_of(three_rows)
    duplicate = frame[(frame["config"] == "better") & (frame["category"] == "synth_brick") & (frame["seed"] == 0)].copy()
    duplicate[METRIC] += 0.1
    (comparison,) = compare_rows(pd.concat([frame, duplicate]), METRIC, "base", rows=["better"])
    three_rows["better"][("synth_brick", 0)] += 0.05
    x, y = paired_arrays(three_rows, "better", "base")
    assert comparison.n_pairs == 12 and comparison.mean_difference == pytest.approx(np.mean(x - y))


def test_all_equal_differences_and_all_zero_differences():
    base = cells(0.0, 0.02, 4, categories=CATEGORIES[:1])
    values = {"base": base, "up": {k: v + 0.1 for k, v in base.items()}, "equal": dict(base)}
    up, equal = compare_rows(frame_of(values), METRIC, "base", ["up", "equal"])
    assert up.p_value == pytest.approx(stats.wilcoxon([0.1] * 3, zero_method="pratt").pvalue)  # exact: 0.25
    assert up.mean_difference == pytest.approx(0.1)
    assert equal.p_value == pytest.approx(1.0) and equal.marker == ""


def test_an_undefined_test_stays_nan_and_out_of_the_holm_family():
    values = {"base": {("synth_brick", 0): 0.5, ("synth_disc", 0): 0.6, ("synth_grid", 0): 0.7},
              "one": {("synth_brick", 0): 0.6}, "all": {("synth_brick", 0): 0.6, ("synth_disc", 0): 0.8, ("synth_grid", 0): 0.75}}  # fmt: skip
    one, full = compare_rows(frame_of(values), METRIC, "base", ["one", "all"], test="ttest")
    assert math.isnan(one.p_value) and math.isnan(one.p_holm) and one.marker == ""
    assert full.p_holm == pytest.approx(full.p_value)  # the only defined test: a family of one
    corrected = holm([0.01, math.nan, 0.04])
    assert math.isnan(corrected[1])
    assert [corrected[0], corrected[2]] == pytest.approx(list(multipletests([0.01, 0.04], method="holm")[1]))


def test_bad_names_are_one_line_errors(three_rows):
    frame = frame_of(three_rows)
    with pytest.raises(SweepQueryError, match="did you mean base"):
        compare_rows(frame, METRIC, "bse")
    with pytest.raises(SweepQueryError, match="unknown metric"):
        compare_rows(frame, "test/nope", "base")
    with pytest.raises(SweepQueryError, match="test: unknown 'anova'"):
        compare_rows(frame, METRIC, "base", test="anova")


# ---------------------------------------------------------------------- best or tied
def test_a_row_is_best_only_when_it_beats_the_runner_up_significantly(three_rows):
    ranking = rank_rows(frame_of(three_rows), METRIC)
    assert ranking.order[0] == "better" and ranking.best == "better" and ranking.tied == ["better"]
    caption = comparison_caption(compare_rows(frame_of(three_rows), METRIC, "base"), ranking)
    assert "Best: better" in caption and "Holm" in caption and "Wilcoxon signed-rank" in caption


def test_close_top_rows_are_called_tied(three_rows):
    three_rows["close"] = cells(0.041, 0.01, 9)
    ranking = rank_rows(frame_of(three_rows), METRIC)
    assert ranking.best is None and set(ranking.tied[:2]) == {"better", "close"} and "base" not in ranking.tied
    runner_up = next(c for c in ranking.versus_top if c.row == ranking.order[1])
    x, y = paired_arrays(three_rows, runner_up.row, ranking.order[0])
    assert runner_up.p_value == pytest.approx(stats.wilcoxon(x, y, zero_method="pratt").pvalue)
    caption = comparison_caption(ranking.versus_top, ranking)
    assert "No row is best" in caption and "tied at the top" in caption


def test_the_caption_says_when_too_few_pairs_can_never_be_significant():
    few = {"base": cells(0.0, 0.01, 5, categories=CATEGORIES[:1], seeds=(0, 1, 2, 3, 4)),
           "up": cells(0.2, 0.01, 6, categories=CATEGORIES[:1], seeds=(0, 1, 2, 3, 4))}  # fmt: skip
    (comparison,) = compare_rows(frame_of(few), METRIC, "base")
    assert comparison.p_value == pytest.approx(0.0625) and comparison.marker == ""  # exact floor with 5 pairs
    assert "cannot reach p < 0.05" in comparison_caption([comparison])
    few["base"][("synth_disc", 0)], few["up"][("synth_disc", 0)] = 0.5, 0.7
    (six,) = compare_rows(frame_of(few), METRIC, "base")
    assert "cannot reach" not in comparison_caption([six])


@pytest.mark.parametrize("zero_method", ["pratt", "wilcox"])
def test_zero_differences_are_handled_as_scipys_zero_method(zero_method):
    differences = [0, 0, 0, 0.1, 0.2, -0.05, 0.3, 0.15, 0.25, 0.12, -0.02]  # Pratt: p 0.0625; dropping zeros: 0.039
    base = {("synth_brick", s): 0.5 + 0.01 * s for s in range(len(differences))}
    values = {"base": base, "up": {k: v + d for (k, v), d in zip(base.items(), differences, strict=True)}}
    (comparison,) = compare_rows(frame_of(values), METRIC, "base", zero_method=zero_method)
    x, y = paired_arrays(values, "up", "base")
    assert comparison.p_value == pytest.approx(stats.wilcoxon(x, y, zero_method=zero_method).pvalue)
    assert comparison.marker == ("" if zero_method == "pratt" else "*")
