# SPDX-License-Identifier: Apache-2.0
"""Every knob a sweep sets reaches the code that uses it, on the real path: spec -> runner /
trainable -> what lands on disk or in MLflow (no Ray is started: the trainable runs in-process,
where ``tune.report`` only warns)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from haloae.vocab import BEST_EPOCH, ENV_DATA_CACHE, curve_key
from sweeps import tracking
from sweeps.loading import load_spec
from sweeps.runner import _search, generate_data
from sweeps.trainable import run_trial
from tests.helpers.sweeps import tiny_spec, trial_runs


def _pngs(folder) -> int:
    return len(list(folder.glob("*.png")))


def test_every_synthetic_field_reaches_the_generator(tmp_path):
    synthetic = {"categories": ["synth_disc"], "size": 24, "seed": 0, "n_train": 7, "n_test_good": 3, "n_test_defect_per_type": 2}
    spec = load_spec(tiny_spec(tmp_path, "synth", data={"synthetic": synthetic, "categories": "all"}))
    generate_data(spec)
    category = spec.data_root() / "synth_disc"
    assert _pngs(category / "train" / "good") == 7
    assert _pngs(category / "test" / "good") == 3
    defects = [d for d in (category / "test").iterdir() if d.name != "good"]
    assert defects and all(_pngs(d) == 2 for d in defects), {d.name: _pngs(d) for d in defects}
    assert Image.open(next((category / "train" / "good").glob("*.png"))).size == (24, 24)


def _best_epoch_and_history(tmp_path, name: str, metric: str, mode: str) -> tuple[int, list[float]]:
    """Run the trainable of a one-category, three-epoch tiny sweep; its MLflow run's best epoch and
    the objective's per-epoch values."""
    spec = load_spec(tiny_spec(
        tmp_path, name,
        data={"synthetic": {"categories": ["synth_disc"], "size": 32, "seed": 0}, "categories": "all"},
        objective={"metric": metric, "mode": mode, "aggregate": "per_category"},
    ))
    generate_data(spec)
    artifacts = tracking.artifact_location(spec.tracking_uri(), spec.sweep_dir())  # as the runner passes it
    parent = tracking.ensure_parent_run(
        spec.tracking_uri(), spec.experiment_name(), spec.name, spec.sha256(), None, [], artifacts=artifacts
    )
    run_trial({"variant": "haloae", "category": "synth_disc", "seed": 0}, spec=spec, parent_run_id=parent)
    (run,) = trial_runs(spec.tracking_uri(), spec.experiment_name())
    history = MlflowClient(spec.tracking_uri()).get_metric_history(run.info.run_id, curve_key(metric))  # per epoch
    per_epoch = {m.step: m.value for m in history}
    return int(run.data.metrics[BEST_EPOCH]), [per_epoch[e] for e in range(spec.epochs())]


@pytest.mark.slow  # two real trainings with final evaluation: about a minute on 2 cores
def test_best_checkpoint_follows_the_sweep_objective(tmp_path, monkeypatch):
    """``objective.metric`` and ``mode`` choose the trial's best.pt: the same training under max and
    min picks that metric's best and worst epoch (pixel AUROC: continuous, so no three-way tie)."""
    monkeypatch.setenv(ENV_DATA_CACHE, str(tmp_path / "cache"))
    metric = "val/pixel_auroc"
    best_max, history = _best_epoch_and_history(tmp_path, "best_max", metric, "max")
    best_min, history_min = _best_epoch_and_history(tmp_path, "best_min", metric, "min")
    assert history == history_min and len(history) == 3, "the same seed should train the same way"
    assert len(set(history)) == 3, f"tied objective values make the test moot: {history}"
    assert best_max == history.index(max(history))
    assert best_min == history.index(min(history))
    assert best_max != best_min


@pytest.mark.parametrize("algorithm", ["grid", "random"])
def test_max_concurrent_trials_reaches_grid_and_random_searches(tmp_path, algorithm):
    space = {"optim.lr": {"grid": [1e-3, 1e-2]}} if algorithm == "grid" else {"optim.lr": {"loguniform": [1e-4, 1e-2]}}
    spec = load_spec(tiny_spec(tmp_path, algorithm, search={"algorithm": algorithm, "num_samples": 2, "space": space},
                               max_concurrent_trials=3, purpose="search"))
    generator, _ = _search(spec)
    assert generator.max_concurrent == 3
