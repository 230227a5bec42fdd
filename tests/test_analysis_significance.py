# SPDX-License-Identifier: Apache-2.0
"""analysis.significance: from the runs in MLflow to the statistics block, every interval and
p-value equal to scipy's/statsmodels' on the raw values the sweep fake."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis.runs import RunsWarning, SweepQueryError, category_group, load_runs
from analysis.significance import sweep_statistics
from analysis.stats import format_interval, t_interval
from analysis.tables import variant_label
from analysis.val_test import NO_PREDICTION
from haloae.cli import main
from haloae.vocab import STATISTICS_FILE
from tests.helpers.analysis import FAKE_CATEGORIES, FAKE_VARIANTS, fake_trials, log_sweep, values_by_seed

METRIC = "test/image_auroc"


def frame_of(trials) -> pd.DataFrame:
    """The trials as ``load_runs`` returns them (a row per run, final metrics as columns), without MLflow."""
    rows = [{"run_id": f"r{i}", "trial_id": t.trial_id, "category": t.category, "group": category_group(t.category),
             "variant": t.cfg.variant, "seed": t.seed, "status": t.status, "error": t.error, **t.final}
            for i, t in enumerate(trials)]  # fmt: skip
    frame = pd.DataFrame(rows)
    frame.attrs.update(sweep="fake", varied=["variant"])
    return frame


@pytest.fixture(scope="module")
def fake():
    """Variants x 2 categories x 2 seeds FINISHED, one FAILED and one RUNNING run."""
    trials = fake_trials()
    return SimpleNamespace(trials=trials), frame_of(trials)


def pairs_by_hand(trials, variant, reference):
    """The (category, seed) pairs both variants finished, in one order for both."""
    x, y = [], []
    for category in FAKE_CATEGORIES:
        mine, theirs = values_by_seed(trials, variant, category, METRIC), values_by_seed(trials, reference, category, METRIC)
        for seed in sorted(set(mine) & set(theirs)):
            x.append(mine[seed])
            y.append(theirs[seed])
    return np.array(x), np.array(y)


def test_intervals_and_paired_tests_equal_scipys_on_the_logged_values(fake):
    sweep, runs = fake
    result = sweep_statistics(runs)
    reference, others = FAKE_VARIANTS[0], FAKE_VARIANTS[1:]
    assert result.reference == variant_label(reference)
    raw = [stats.wilcoxon(*pairs_by_hand(sweep.trials, v, reference), zero_method="pratt").pvalue for v in others]
    corrected = multipletests(raw, method="holm")[1]
    for comparison, variant, p, p_holm in zip(result.comparisons, others, raw, corrected, strict=True):
        x, y = pairs_by_hand(sweep.trials, variant, reference)
        assert comparison.row == variant_label(variant) and comparison.n_pairs == len(x) == 4
        assert comparison.p_value == pytest.approx(p) and comparison.p_holm == pytest.approx(p_holm)
        assert comparison.mean_difference == pytest.approx(np.mean(x - y))
        assert result.table.loc[comparison.row, "p_holm"] == f"{p_holm:.3g}"
    for variant in FAKE_VARIANTS:
        per_category = [values_by_seed(sweep.trials, variant, c, METRIC) for c in FAKE_CATEGORIES]
        per_seed = [np.mean([p[s] for p in per_category]) for s in sorted(set.intersection(*map(set, per_category)))]
        low, high = stats.t.interval(0.95, len(per_seed) - 1, loc=np.mean(per_seed), scale=stats.sem(per_seed))
        interval = t_interval(per_seed)
        assert (interval.low, interval.high) == (pytest.approx(low), pytest.approx(high))
        assert result.table.loc[variant_label(variant), "Mean"] == format_interval(interval, common_n=2)
    assert result.table.loc[result.reference, "vs reference (points)"] == "reference"


def test_the_caption_explains_and_four_pairs_cannot_be_significant(fake):
    result = sweep_statistics(fake[1])
    assert "Student-t" in result.caption and "Holm" in result.caption and "cannot reach p < 0.05" in result.caption
    assert result.ranking.best is None and "No row is best" in result.caption  # 4 pairs: Wilcoxon's p >= 0.125
    text = result.text()
    assert "Holm's correction" in text and f"reference: {result.reference}" in text and "val/image_auroc (validation) vs test/image_auroc (test)" in text


def test_the_val_test_correlation_rides_along_and_equals_scipys(fake):
    sweep, runs = fake
    table = sweep_statistics(runs).correlation.table.set_index("category")
    done = [t for t in sweep.trials if t.status == "FINISHED" and t.category == "synth_disc"]
    rho = stats.spearmanr([t.final["val/image_auroc"] for t in done], [t.final[METRIC] for t in done])
    assert table.loc["synth_disc", "n"] == len(done) and table.loc["synth_disc", "spearman_rho"] == pytest.approx(rho.statistic)


def test_a_chosen_reference_and_the_t_test(fake):
    sweep, runs = fake
    reference = variant_label(FAKE_VARIANTS[1])
    result = sweep_statistics(runs, reference=reference, test="ttest")
    assert {c.reference for c in result.comparisons} == {reference}
    x, y = pairs_by_hand(sweep.trials, FAKE_VARIANTS[0], FAKE_VARIANTS[1])
    first = next(c for c in result.comparisons if c.row == variant_label(FAKE_VARIANTS[0]))
    assert first.p_value == pytest.approx(stats.ttest_rel(x, y).pvalue)
    with pytest.raises(SweepQueryError, match="reference/row 'HaloAE-x'"):
        sweep_statistics(runs, reference="HaloAE-x")


@pytest.mark.slow
def test_from_mlflow_the_statistics_are_those_of_the_logged_values(tmp_path):
    trials = fake_trials()
    sweep = log_sweep(tmp_path, "fake", trials, "variant")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunsWarning)
        runs = load_runs("fake", storage=sweep.storage)
    from_mlflow, by_hand = sweep_statistics(runs), sweep_statistics(frame_of(trials))
    assert from_mlflow.table.equals(by_hand.table) and from_mlflow.caption == by_hand.caption
    assert from_mlflow.correlation.table.equals(by_hand.correlation.table)

    tables = ["tables", "--sweep", "fake", "--storage", str(sweep.storage), "--table", "table3"]
    printed = CliRunner().invoke(main, tables)
    assert printed.exit_code == 0, printed.output
    assert by_hand.table.to_string() in printed.output and NO_PREDICTION in printed.output
    written = CliRunner().invoke(main, [*tables, "--format", "csv", "--out", str(tmp_path / "out")])
    assert written.exit_code == 0 and (tmp_path / "out" / STATISTICS_FILE).read_text().startswith(f"Statistics of {METRIC}")
    bad = CliRunner().invoke(main, [*tables, "--test", "anova"])
    assert bad.exit_code == 2 and "Error: test: unknown 'anova'" in bad.output
    drawn = CliRunner().invoke(main, ["figures", "--sweep", "fake", "--storage", str(sweep.storage), "--out", str(tmp_path / "fig"), "--no-log"])
    assert drawn.exit_code == 0, drawn.output
    assert "CD diagram not drawn: Friedman's test needs 5 or more categories" in drawn.output  # 2 categories: a message


def test_one_configuration_has_intervals_but_no_paired_test():
    frame = frame_of([t for t in fake_trials() if t.cfg.variant == FAKE_VARIANTS[0]])
    result = sweep_statistics(frame)
    assert result.comparisons == [] and result.ranking.best is None
    assert "No paired test" in result.caption and result.table.loc[result.reference, "Mean"].count("±") == 1
