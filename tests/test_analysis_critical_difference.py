# SPDX-License-Identifier: Apache-2.0
"""analysis.critical_difference: the ranks and Friedman's p equal scipy's on the per-category means,
the figure is written in every format, and the cases autorank refuses give a message, not a crash."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.critical_difference import blocks, critical_difference, sweep_critical_difference

METRIC = "test/image_auroc"
CATEGORIES = ("synth_brick", "synth_disc", "synth_grid", "synth_ring", "synth_weave", "synth_blob")


def runs(offsets: dict[str, float], categories=CATEGORIES, seeds=(0, 1), noise: float = 0.02) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"config": config, "category": category, "seed": seed, METRIC: 0.6 + 0.05 * i + offset + rng.normal(0, noise)}
            for config, offset in offsets.items() for i, category in enumerate(categories) for seed in seeds]  # fmt: skip
    return pd.DataFrame(rows)


def test_ranks_and_friedman_equal_scipys_on_the_means_over_seeds(tmp_path):
    frame = runs({"a": 0.0, "b": 0.03, "c": 0.06})
    result = critical_difference(frame, METRIC, tmp_path)
    means = frame.groupby(["category", "config"])[METRIC].mean().unstack("config")  # category x config
    ranks = pd.DataFrame(stats.rankdata(-means.to_numpy(), axis=1), index=means.index, columns=means.columns).mean()
    assert result.mean_ranks == pytest.approx(ranks.to_dict())
    assert result.friedman_p == pytest.approx(stats.friedmanchisquare(*means.to_numpy().T).pvalue)
    assert [p.suffix for p in result.paths] == [".png", ".pdf", ".svg"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in result.paths)
    assert "Demsar" in result.message and "Friedman p" in result.message and len(result.categories) == 6


def test_a_category_without_every_configuration_is_dropped_and_named(tmp_path):
    frame = runs({"a": 0.0, "b": 0.03, "c": 0.06})
    frame = frame[~((frame["config"] == "b") & (frame["category"] == "synth_blob"))]
    data, dropped = blocks(frame, METRIC)
    assert dropped == ["synth_blob"] and data.shape == (5, 3)
    result = critical_difference(frame, METRIC, tmp_path, formats=("png",))
    assert result.paths and result.dropped == ("synth_blob",) and "synth_blob" in result.message


def test_too_few_configurations_or_categories_is_a_message_not_a_crash(tmp_path):
    two = critical_difference(runs({"a": 0.0, "b": 0.03}), METRIC, tmp_path)
    assert not two.paths and "3 or more configurations" in two.message and "paired test" in two.message
    one = critical_difference(runs({"a": 0.0}), METRIC, tmp_path)
    assert not one.paths and "the sweep has 1" in one.message
    few = critical_difference(runs({"a": 0.0, "b": 0.03, "c": 0.06}, categories=CATEGORIES[:4]), METRIC, tmp_path)
    assert not few.paths and "5 or more categories" in few.message
    assert not list(tmp_path.iterdir())


def test_all_tied_configurations_still_draw_and_say_so(tmp_path):
    frame = runs({"a": 0.0, "b": 0.0, "c": 0.0}, noise=0.0)
    result = critical_difference(frame, METRIC, tmp_path, formats=("png",))
    assert result.paths and "no configuration differs" in result.message


def test_a_sweeps_diagram_ranks_its_finished_configurations(tmp_path):
    frame = runs({"haloae": 0.06, "equal_weights": 0.0, "uncertainty_weighting": 0.03}).rename(columns={"config": "variant"})
    failed = frame.iloc[:1].assign(status="FAILED", **{METRIC: 0.0})
    frame = pd.concat([frame.assign(status="FINISHED"), failed], ignore_index=True)
    frame.attrs["varied"] = ["variant"]
    result = sweep_critical_difference(frame, tmp_path)
    assert [p.name for p in result.paths] == ["cd_test-image_auroc.png", "cd_test-image_auroc.pdf", "cd_test-image_auroc.svg"]
    assert min(result.mean_ranks, key=result.mean_ranks.get).startswith("L_T(t)")  # haloae's label ranks first
