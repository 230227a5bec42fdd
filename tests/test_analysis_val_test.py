# SPDX-License-Identifier: Apache-2.0
"""analysis.val_test: the rank correlations equal scipy's on the raw runs, per category and pooled;
NaN and unfinished runs are left out (and counted); weak or undefined correlations warn."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.runs import SweepQueryError
from analysis.val_test import NO_PREDICTION, POOLED, on_test_split, val_test_correlation

VAL, TEST = "val/image_auroc", "test/image_auroc"


def runs(points: dict[str, list[tuple[float, float]]], status: str = "FINISHED") -> pd.DataFrame:
    """category -> [(val, test)] as run rows, one trial each."""
    rows = [{"trial_id": f"t{i}", "category": category, "seed": 0, "status": status, VAL: v, TEST: t}
            for category, pairs in points.items() for i, (v, t) in enumerate(pairs)]  # fmt: skip
    return pd.DataFrame(rows)


def noisy(n: int, noise: float, seed: int) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    val = rng.uniform(0.6, 1.0, n)
    return list(zip(val, val + rng.normal(0, noise, n), strict=True))


def test_correlations_equal_scipys_per_category_and_pooled():
    weak = [(0.6, 0.9), (0.7, 0.6), (0.8, 0.8), (0.9, 0.7), (0.65, 0.75), (0.75, 0.65), (0.85, 0.95), (0.95, 0.62)]
    points = {"synth_brick": weak, "synth_disc": noisy(7, 0.02, 2)}
    result = val_test_correlation(runs(points))
    table = result.table.set_index("category")
    assert list(table.index) == ["synth_brick", "synth_disc", POOLED]
    pooled = points["synth_brick"] + points["synth_disc"]
    for name, pairs in [*points.items(), (POOLED, pooled)]:
        val, test = zip(*pairs, strict=True)
        rho, tau = stats.spearmanr(val, test), stats.kendalltau(val, test)
        row = table.loc[name]
        assert row["n"] == len(pairs) and row["excluded"] == 0
        assert (row["spearman_rho"], row["spearman_p"]) == (pytest.approx(rho.statistic), pytest.approx(rho.pvalue))
        assert (row["kendall_tau"], row["kendall_p"]) == (pytest.approx(tau.statistic), pytest.approx(tau.pvalue))
    assert table.loc["synth_brick", "spearman_rho"] < 0.5 <= table.loc["synth_disc", "spearman_rho"]
    assert result.warning.startswith(NO_PREDICTION) and "synth_brick (rho" in result.warning
    assert "synth_disc" not in result.warning


def test_nan_and_unfinished_runs_are_left_out_and_nan_is_counted():
    pairs = noisy(6, 0.01, 3)
    frame = pd.concat([runs({"synth_disc": pairs + [(math.nan, 0.9), (0.8, math.nan)]}),
                       runs({"synth_disc": [(0.1, 0.99)]}, status="FAILED")])  # fmt: skip
    row = val_test_correlation(frame).table.set_index("category").loc["synth_disc"]
    val, test = zip(*pairs, strict=True)
    assert (row["n"], row["excluded"]) == (6, 2)
    assert row["spearman_rho"] == pytest.approx(stats.spearmanr(val, test).statistic)


def test_too_few_or_constant_runs_are_undefined_and_warn():
    result = val_test_correlation(runs({"synth_brick": noisy(2, 0.01, 4), "synth_disc": [(0.9, 0.5), (0.9, 0.7), (0.9, 0.6)]}))
    table = result.table.set_index("category")
    assert math.isnan(table.loc["synth_brick", "spearman_rho"]) and table.loc["synth_brick", "n"] == 2
    assert math.isnan(table.loc["synth_disc", "kendall_tau"])
    assert "synth_brick (n=2, undefined)" in result.warning and "synth_disc (n=3, undefined)" in result.warning
    assert "undefined" in result.text() and result.text().endswith(result.warning)


def test_a_strong_correlation_everywhere_does_not_warn():
    result = val_test_correlation(runs({"synth_brick": noisy(8, 0.005, 5), "synth_disc": noisy(8, 0.005, 6)}))
    assert result.warning is None and "Warning" not in result.text()


def test_the_test_metric_follows_the_objective_and_unknown_metrics_are_errors():
    assert on_test_split("val/afm_norm_filter/pixel_auroc") == "test/afm_norm_filter/pixel_auroc"
    with pytest.raises(SweepQueryError, match="unknown metric 'val/aupro'"):
        val_test_correlation(runs({"synth_disc": noisy(4, 0.01, 7)}), objective="val/aupro")
