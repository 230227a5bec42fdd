# SPDX-License-Identifier: Apache-2.0
"""Analysis on the MLflow records of a *real* small sweep (real Ray, real MLflow, real training):
table cells by hand from the raw runs, and export -> reload equal to the trial's own evaluation."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from test_analysis_tables import _assert_stat, _best, _group

from analysis import tables
from analysis.export import ALIAS
from analysis.runs import load_runs
from haloae.bundle import load_bundle
from haloae.cli import main
from haloae.scoring import DEFAULT_SCORING
from haloae.train import evaluate, load_checkpoint, prepare_data
from haloae.variants import VARIANTS
from sweeps.spec import load_spec
from tests.sweeps_helpers import tiny_spec, trial_runs

VARIANT_NAMES = ("haloae", "equal_weights")
CATEGORIES = ("synth_brick", "synth_disc")  # a texture and an object


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """variants x 2 categories x 2 seeds, the tiny preset at 32 px: 8 trials, then export once."""
    import ray

    from sweeps.runner import run_sweep

    tmp = tmp_path_factory.mktemp("analysis-sweep")
    path = tiny_spec(
        tmp, "real", variants=list(VARIANT_NAMES), seeds=[0, 1],
        data={"synthetic": {"categories": list(CATEGORIES), "size": 32, "seed": 0}, "categories": "all"},
        overrides={"train.epochs": 2, "train.steps_per_epoch": 2},
        objective={"metric": "val/image_auroc", "mode": "max", "aggregate": "per_category"},
    )
    spec = load_spec(path)
    ray.shutdown()
    outcome = run_sweep(spec)
    ray.shutdown()
    assert not outcome.failed and len(outcome.trials) == 8, outcome.summary()
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = spec.tracking_uri()  # registry URIs resolve against it
    out = tmp / "exported"
    result = CliRunner().invoke(main, ["export", "--sweep", "real", "--storage", str(tmp / "sweeps"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    yield spec, out
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def raw_trials(spec) -> list[SimpleNamespace]:
    """The child runs as the hand computations of test_analysis_tables expect them."""
    return [
        SimpleNamespace(
            seed=int(r.data.tags["seed"]), category=r.data.tags["category"], status=r.info.status,
            cfg=SimpleNamespace(variant=r.data.tags["variant"]), final=dict(r.data.metrics), run_id=r.info.run_id,
        )
        for r in trial_runs(spec.tracking_uri(), spec.experiment_name())
    ]


def test_table3_cells_equal_the_raw_runs_by_hand(sweep):
    spec, _ = sweep
    trials = raw_trials(spec)
    table = tables.table3(load_runs("real", tracking_uri=spec.tracking_uri()), "test", with_paper=True)
    members = {"Mean Text.": ["synth_brick"], "Mean Obj.": ["synth_disc"], "Mean": list(CATEGORIES)}
    for column in table.columns:
        expected = [_group(trials, v, members[column], "test/image_auroc") for v in VARIANT_NAMES]
        for v, exp in zip(VARIANT_NAMES, expected, strict=True):
            stat = table.cell(VARIANTS[v].label, column).stats[0]
            _assert_stat(stat, exp)
            assert stat.n == 2
        assert [table.cell(VARIANTS[v].label, column).best[0] for v in VARIANT_NAMES] == _best([e[0] for e in expected])


def test_table2_cells_are_seed_means_and_stds_of_the_raw_runs(sweep):
    spec, _ = sweep
    trials = raw_trials(spec)
    table = tables.table2(load_runs("real", tracking_uri=spec.tracking_uri()), "test")
    for v in VARIANT_NAMES:
        for category in CATEGORIES:
            values = [t.final["test/pixel_auroc"] for t in trials if t.cfg.variant == v and t.category == category]
            stat = table.cell(category, VARIANTS[v].label).stats[1]
            assert stat.mean == pytest.approx(np.mean(values), abs=1e-12)
            assert stat.std == pytest.approx(np.std(values, ddof=1), abs=1e-12) and stat.n == 2


def test_export_reload_gives_the_trials_own_scores(sweep, tmp_path):
    import mlflow

    from analysis.pyfunc_model import encode_image

    spec, out = sweep
    category = "synth_disc"
    trials = [t for t in raw_trials(spec) if t.category == category]
    best = max(t.final["val/image_auroc"] for t in trials)
    assert math.isfinite(best)
    predictor = load_bundle(out / category)
    chosen = next(t for t in trials if t.run_id == predictor.info["source_run_id"])
    assert chosen.final["val/image_auroc"] == best  # chosen on validation
    # the trial's own evaluation, from its logged checkpoint artifact
    checkpoint = mlflow.artifacts.download_artifacts(
        run_id=chosen.run_id, artifact_path="checkpoint/best.pt", dst_path=str(tmp_path), tracking_uri=spec.tracking_uri()
    )
    model, scorer, _ = load_checkpoint(checkpoint)
    test = prepare_data(model.cfg, spec.data_root(), category).test
    _, maps = evaluate(model, scorer, test, None, torch.device("cpu"), 4, "test", keep_maps=True)
    expected = maps[DEFAULT_SCORING].flatten(1).mean(1)
    torch.testing.assert_close(predictor.predict(test.paths).scores, expected, atol=1e-5, rtol=0)
    served = mlflow.pyfunc.load_model(f"models:/haloae-{category}@{ALIAS}").predict(
        pd.DataFrame({"image": [encode_image(p) for p in test.paths]})
    )
    np.testing.assert_allclose(served["score"].to_numpy(), expected.numpy(), atol=1e-5, rtol=0)
