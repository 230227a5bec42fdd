# SPDX-License-Identifier: Apache-2.0
"""Trials the scheduler stops are evaluated, logged and shown (``sweeps.stopped``): a real searching
sweep under ASHA (real Ray, MLflow, training) whose stopped trials appear in the tables with the
epoch they stopped at. (A *measuring* sweep with ASHA is refused at the dry run:
tests/test_sweep_protocol.py::test_a_measuring_sweep_that_would_lose_cells_is_refused_at_the_dry_run.)"""

from __future__ import annotations

import warnings

import pytest
from click.testing import CliRunner

from haloae.vocab import BEST_ARTIFACT, TAG_STOPPED_AT, TAG_STOPPED_BY, TAG_TRIAL_ID
from tests.helpers.sweeps import artifact_paths, run_spec_on_fresh_ray, tiny_spec, trial_runs

LRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
EPOCHS = 2


@pytest.mark.slow
def test_a_searching_sweeps_stopped_trials_appear_in_the_tables_with_their_epoch(tmp_path):
    pytest.importorskip("ray")
    from analysis import render, tables
    from analysis.runs import RunsWarning, load_runs
    from haloae.cli import main

    # one trial at a time in grid order: at rung 1 each trial below the rung's 95th percentile so
    # far stops, i.e. every trial that is not a new best (pixel AUROC: continuous, no ties)
    path = tiny_spec(
        tmp_path, "asha", purpose="search", max_concurrent_trials=1,
        data={"synthetic": {"categories": ["synth_disc"], "size": 32, "seed": 0}},
        overrides={"train.epochs": EPOCHS, "train.steps_per_epoch": 2},
        search={"algorithm": "grid", "space": {"optim.lr": {"grid": LRS}}},
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 20},
        objective={"metric": "val/pixel_auroc", "mode": "max", "aggregate": "per_category"},
    )  # fmt: skip
    spec, outcome = run_spec_on_fresh_ray(path)
    stopped = {t.trial_id for t in outcome.trials if t.status == "STOPPED"}
    assert stopped, f"ASHA stopped no trial: {[(t.params['optim.lr'], t.metrics.get('val/pixel_auroc')) for t in outcome.trials]}"

    uri = spec.tracking_uri()
    runs = trial_runs(uri, spec.experiment_name())
    assert len(runs) == len(LRS)
    for run in runs:  # every run FINISHED: stopped ones evaluated at their best checkpoint, with best.pt
        assert run.info.status == "FINISHED", (run.data.tags, run.info.status)
        assert "test/image_auroc" in run.data.metrics and "val/pixel_auroc" in run.data.metrics
        assert BEST_ARTIFACT in artifact_paths(uri, run.info.run_id)
        if run.data.tags[TAG_TRIAL_ID] in stopped:
            assert run.data.tags[TAG_STOPPED_BY] == "scheduler" and run.data.tags[TAG_STOPPED_AT] == "1"
        else:
            assert TAG_STOPPED_AT not in run.data.tags
    assert all("test/image_auroc" in t.metrics for t in outcome.trials)  # the summary quotes them too

    with warnings.catch_warnings():
        warnings.simplefilter("error", RunsWarning)  # nothing is left out
        frame = load_runs("asha", tracking_uri=uri)
    assert frame["status"].eq("FINISHED").all() and frame["stopped_at_epoch"].notna().sum() == len(stopped)
    assert f"{len(stopped)} stopped early by the scheduler" in frame.attrs["summary"]

    table = tables.table3(frame, "test")
    assert len(table.rows) == len(LRS)  # no configuration missing
    flagged = {r for r in table.rows if render.STOPPED in table.cell(r, "Mean").marks}
    assert len(flagged) == len(stopped)
    notes = " ".join(table.notes)
    assert notes.count("stopped at epoch 1 by the scheduler") == len(stopped)
    md = render.render(table, "md")
    assert md.count(render.STOPPED) >= 2 * len(stopped) and "stopped early by the scheduler" in md  # cell marks + legend

    printed = CliRunner().invoke(main, ["tables", "--sweep", "asha", "--tracking-uri", uri, "--table", "table2", "--no-stats"])
    assert printed.exit_code == 0, printed.output
    assert printed.output.count("stopped at epoch 1") == len(stopped)
