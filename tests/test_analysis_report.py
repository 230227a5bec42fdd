# SPDX-License-Identifier: Apache-2.0
"""``haloae report``: one self-contained HTML file per sweep, on stores written in the sweep
layer's contract with MLflow directly (``tests.helpers.analysis``): every section present, nothing
that refers to a URL, failed and running runs listed; the overlays re-scored from a real tiny
run's checkpoint. The report of a real sweep is in test_analysis_sweep.py."""

from __future__ import annotations

import base64
import re
import warnings

import pytest
from click.testing import CliRunner

from analysis.curves import curve_metric, histories
from analysis.report import build_report
from analysis.runs import RunsWarning, load_runs
from analysis.tables import configurations
from haloae.cli import main
from tests.helpers.analysis import BEST_EPOCH, fake_trials, log_sweep

SECTIONS = ("runs", "tables", "statistics", "figures", "val-test", "curves", "overlays", "failures")


@pytest.fixture(scope="module")
def store(tmp_path_factory, trained):
    """Sweep "fake" (2 variants x 2 categories x 2 seeds, one FAILED, one RUNNING run) and, in the
    same store, sweep "trained" (one real tiny run with its checkpoint and data)."""
    storage = tmp_path_factory.mktemp("sweeps")
    fake = log_sweep(storage, "fake", fake_trials(variants=("haloae", "equal_weights")), "variant")
    root, trial = trained
    log_sweep(storage, "trained", [trial], None, data_root=root, tracking_uri=fake.tracking_uri)
    return fake


def _runs(name, store):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunsWarning)
        return load_runs(name, tracking_uri=store.tracking_uri)


def _section(page: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.S)
    assert match, f"no section {anchor}"
    return match.group(1)


def external_references(page: str) -> list[str]:
    """Every src/href that is not a data: URI or an anchor, every url(...), link or script tag, and
    any http(s) URL at all: what a browser would fetch from elsewhere."""
    found = re.findall(r'(?:src|href)\s*=\s*"(?!data:|#)[^"]*"', page)
    found += re.findall(r"url\([^)]*\)|<link\b[^>]*>|<script\b[^>]*>|https?://\S+", page)
    return found


def test_report_has_every_section_and_refers_to_nothing_outside(store, tmp_path):
    result = CliRunner().invoke(main, ["report", "--sweep", "fake", "--storage", str(store.storage), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == str(tmp_path / "r.html")  # prints the file's path
    page = (tmp_path / "r.html").read_text()
    assert external_references(page) == []
    for anchor in SECTIONS:
        _section(page, anchor)
    tables = _section(page, "tables")
    assert tables.count('<table class="haloae-table"') >= 3  # Table 2, Tables 3/4, Table S1 per configuration
    assert "±" in tables  # intervals in the cells
    statistics = _section(page, "statistics")
    assert "p_holm" in statistics and "Student-t interval" in statistics
    figures = _section(page, "figures")
    assert figures.count("data:image/png;base64,") == 2  # bars, bars per category
    assert "Critical-difference diagram" in figures and "CD diagram not drawn" in figures  # 2 configurations: says why
    for data in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page):
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "spearman_rho" in _section(page, "val-test") and "data:image/png" in _section(page, "val-test")
    assert "data:image/png" in _section(page, "curves")
    failures = _section(page, "failures")
    assert "FloatingPointError: non-finite training loss nan" in failures  # the FAILED run's error
    assert "FAILED" in failures and "RUNNING" in failures
    assert "Not drawn" in _section(page, "overlays")  # fake runs have no checkpoint: said, not crashed


def test_overlays_of_a_real_run_are_re_scored(store, tmp_path):
    page = build_report(_runs("trained", store), tmp_path / "t.html").read_text()
    overlays = _section(page, "overlays")
    assert "data:image/png" in overlays and "Not drawn" not in overlays and "Not re-scored" not in overlays
    assert external_references(page) == []


def test_learning_curves_read_each_epoch_once(store):
    runs = _runs("fake", store)
    assert curve_metric(runs, "val/image_auroc") == "val/image_auroc"  # an old store: no curve/ keys
    assert curve_metric(runs.assign(**{"curve/val/image_auroc": 0.0}), "val/image_auroc") == "curve/val/image_auroc"
    done, _, _ = configurations(runs)
    data = histories(done, ["val/image_auroc"])
    trial = next(t for t in store.trials if t.status == "FINISHED")
    mine = data[data["run_id"] == trial.run_id]
    assert list(mine["epoch"]) == [0, 1, 2]  # the best epoch's re-logged value is not a fourth point
    assert list(mine["value"]) == pytest.approx([e["val/image_auroc"] for e in trial.epochs])
    assert mine["value"].iloc[BEST_EPOCH] == pytest.approx(trial.final["val/image_auroc"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sweep", "nope"], "unknown sweep 'nope'"),
        (["--sweep", "fake", "--metric", "test/image_aurc"], "did you mean test/image_auroc?"),
        (["--sweep", "fake", "--run", "0123abcd"], "--run 0123abcd: not a run of sweep fake"),
    ],
)
def test_bad_report_requests_are_one_line_errors(store, tmp_path, args, message):
    result = CliRunner().invoke(main, ["report", *args, "--storage", str(store.storage), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "r.html").exists()


def test_a_missing_store_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["report", "--sweep", "fake", "--storage", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "unknown sweep 'fake'" in result.output and len([x for x in result.output.splitlines() if x.startswith("Error")]) == 1


def test_tables_section_adds_the_leak_table_when_the_sweep_has_leaky_numbers():
    from analysis.report import tables_section
    from haloae.vocab import LEAKY_LABEL
    from tests.test_analysis_tables import hand_frame, leaky_frame

    offsets = {"haloae": 0.0, "equal_weights": 0.08}
    with_leak = tables_section(leaky_frame(offsets), "test", None).body
    assert '<table class="haloae-table" id="leak">' in with_leak and LEAKY_LABEL in with_leak and "<b>" not in with_leak.split('id="leak"')[1]
    honest_only = tables_section(hand_frame(offsets), "test", None).body
    assert 'id="leak"' not in honest_only and 'id="table3"' in honest_only and "LEAKY" not in honest_only
