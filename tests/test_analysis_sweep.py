# SPDX-License-Identifier: Apache-2.0
"""Tables on the MLflow records of a *real* small sweep (real Ray, real MLflow, real training):
every cell by hand from the raw runs, and ``--paper`` beside them (the export, serve and predict
tests run on a real sweep too: test_analysis_export.py)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis import tables
from analysis.paper import PAPER_CSV
from analysis.runs import load_runs
from haloae.cli import main
from haloae.presets import VARIANTS
from tests.helpers.analysis import assert_stat, group_by_hand, real_sweep

pytestmark = pytest.mark.slow  # a real sweep on local Ray
VARIANT_NAMES = ("haloae", "equal_weights")
CATEGORIES = ("synth_brick", "synth_disc")  # a texture and an object


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """2 variants x 2 categories x 2 seeds, the tiny preset at 32 px: 8 trials."""
    return real_sweep(tmp_path_factory.mktemp("analysis-sweep"), "real", CATEGORIES, VARIANT_NAMES, (0, 1))


def test_table3_cells_equal_the_raw_runs_by_hand(sweep):
    table = tables.table3(load_runs("real", tracking_uri=sweep.tracking_uri), "test", with_paper=True)
    members = {"Mean Text.": ["synth_brick"], "Mean Obj.": ["synth_disc"], "Mean": list(CATEGORIES)}
    for column in table.columns:
        expected = [group_by_hand(sweep.trials, v, members[column], "test/image_auroc") for v in VARIANT_NAMES]
        for v, exp in zip(VARIANT_NAMES, expected, strict=True):
            stat = table.cell(VARIANTS[v].label, column).stats[0]
            assert_stat(stat, exp)
            assert stat.n == 2
        # the interval is scipy's t interval of the per-seed means; the p-value scipy's Wilcoxon over (category, seed)
        by_hand = {v: {(t.category, t.seed): t.final["test/image_auroc"] for t in sweep.trials if t.cfg.variant == v
                       and t.category in members[column]} for v in VARIANT_NAMES}  # fmt: skip
        for v in VARIANT_NAMES:
            per_seed = [np.mean([by_hand[v][(c, s)] for c in members[column]]) for s in (0, 1)]
            if stats.sem(per_seed) == 0:  # equal seeds (tiny models can tie): the t interval has zero width
                low = high = np.mean(per_seed)
            else:
                low, high = stats.t.interval(0.95, 1, loc=np.mean(per_seed), scale=stats.sem(per_seed))
            cell = table.cell(VARIANTS[v].label, column).stats[0]
            assert (cell.low, cell.high) == (pytest.approx(low), pytest.approx(high))
        pairs = sorted(by_hand[VARIANT_NAMES[0]])
        other, reference = ([by_hand[v][k] for k in pairs] for v in (VARIANT_NAMES[1], VARIANT_NAMES[0]))
        versus = table.cell(VARIANTS[VARIANT_NAMES[1]].label, column).versus[0]
        if np.any(np.subtract(other, reference) != 0):
            p = multipletests([stats.wilcoxon(other, reference, zero_method="pratt").pvalue], method="holm")[1][0]
            assert versus.p_holm == pytest.approx(p) and versus.n_pairs == len(pairs)
        assert not any(table.cell(VARIANTS[v].label, column).best[0] for v in VARIANT_NAMES)  # <= 4 pairs: never significant


def test_table2_cells_are_seed_means_and_stds_of_the_raw_runs(sweep):
    table = tables.table2(load_runs("real", tracking_uri=sweep.tracking_uri), "test")
    for v in VARIANT_NAMES:
        for category in CATEGORIES:
            values = [t.final["test/pixel_auroc"] for t in sweep.trials if t.cfg.variant == v and t.category == category]
            stat = table.cell(category, VARIANTS[v].label).stats[1]
            assert stat.mean == pytest.approx(np.mean(values), abs=1e-12)
            assert stat.std == pytest.approx(np.std(values, ddof=1), abs=1e-12) and stat.n == 2


def test_paper_table3_shows_the_csv_rows_exactly(sweep):
    result = CliRunner().invoke(main, ["tables", "--sweep", "real", "--tracking-uri", sweep.tracking_uri,
                                       "--table", "table3", "--paper"])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = {line.split(" | ")[0].lstrip("| "): line.strip("| ").split(" | ") for line in result.output.splitlines() if line.startswith("| ")}
    header = lines["configuration"]
    rows = list(csv.DictReader(line for line in PAPER_CSV.read_text().splitlines() if not line.startswith("#")))
    for v in VARIANT_NAMES:
        paper = {r["category"]: f"{r['image_auroc']} / {r['pixel_auroc']}" for r in rows if r["table"] == "table3" and r["row"] == VARIANTS[v].paper_row}
        row = lines[VARIANTS[v].label]
        assert row[header.index("Mean Text. (paper)")] == paper["mean_texture"]
        assert row[header.index("Mean Obj. (paper)")] == paper["mean_object"]
        assert row[header.index("Mean (paper)")] == paper["mean"]


def test_report_and_listing_of_the_real_sweep(sweep, tmp_path):
    """``haloae report`` on the real sweep: its learning curves and re-scored overlays are drawn and
    nothing refers outside the file; ``haloae sweeps`` reads its folder (lock, Tune's state files,
    the parent run) as finished, every trial done."""
    import re

    from tests.test_analysis_report import external_references

    out = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["report", "--sweep", "real", "--storage", str(sweep.storage), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert external_references(page) == []
    for anchor in ("tables", "statistics", "figures", "val-test", "curves", "overlays", "failures"):
        body = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.S).group(1)
        assert "Not drawn" not in body or anchor == "figures", (anchor, body[:300])  # figures: the CD diagram needs 5 categories
    listed = CliRunner().invoke(main, ["sweeps", "--storage", str(sweep.storage)])
    assert listed.exit_code == 0, listed.output
    assert listed.output.split()[:3] == ["real", "finished", f"{len(sweep.trials)}/{len(sweep.trials)}"]
