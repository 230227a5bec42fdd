# SPDX-License-Identifier: Apache-2.0
"""The tracking store answers before a sweep starts: an unreachable MLflow server or database is one
line within seconds, at the dry run and at the run, and nothing is written."""

from __future__ import annotations

import socket
import time

import pytest
from click.testing import CliRunner

from sweeps.reachable import TrackingUnreachableError, check_reachable
from tests.helpers.sweeps import tiny_spec


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is: nobody listens there


@pytest.mark.parametrize("scheme", ["http", "postgresql+psycopg2"])
def test_unreachable_server_is_one_line_naming_host_and_port_not_the_password(scheme):
    port = _closed_port()
    with pytest.raises(
        TrackingUnreachableError, match=f"mlflow.tracking_uri: .*127.0.0.1:{port} does not answer"
    ) as err:
        check_reachable(f"{scheme}://user:secret@127.0.0.1:{port}/db", "spec.yaml")
    assert "secret" not in str(err.value) and str(err.value).startswith("spec.yaml: ")


def test_a_server_that_never_answers_fails_within_the_timeout():
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        with pytest.raises(TrackingUnreachableError, match="does not answer"):
            check_reachable(f"http://127.0.0.1:{silent.getsockname()[1]}", "spec.yaml")
        assert time.monotonic() - started < 15


def test_local_stores_are_not_probed(tmp_path):
    check_reachable(f"sqlite:///{tmp_path}/mlflow.db", "spec.yaml")
    check_reachable(str(tmp_path / "mlruns"), "spec.yaml")


@pytest.mark.parametrize("dry_run", [True, False])
def test_sweep_with_unreachable_tracking_uri_fails_fast_and_writes_nothing(tmp_path, dry_run):
    from haloae.cli import main

    path = tiny_spec(tmp_path, "offline", mlflow={"tracking_uri": f"http://127.0.0.1:{_closed_port()}"})
    started = time.monotonic()
    result = CliRunner().invoke(main, ["sweep", str(path), *(["--dry-run"] if dry_run else [])])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "mlflow.tracking_uri" in lines[0] and "does not answer" in lines[0], result.stderr
    assert time.monotonic() - started < 15
    assert not (tmp_path / "sweeps").exists()


# ---------------------------------------------------------------------- one truth in MLflow
def _store(tmp_path):
    from sweeps import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # the sweep's artifact folder, as the runner passes it (MLflow's default is ./mlruns of the cwd)
    artifacts = tracking.artifact_location(uri, tmp_path)
    parent = tracking.ensure_parent_run(uri, "exp", "one-truth", "0" * 64, None, ["variant"], artifacts=artifacts)
    return uri, parent


def test_experiment_without_artifact_location_keeps_artifacts_beside_its_sqlite_store(tmp_path, monkeypatch):
    """No artifact location given: a sqlite store's experiment keeps its artifacts beside the
    database, wherever the caller runs from (MLflow's own default is ./mlruns of the cwd)."""
    from mlflow.tracking import MlflowClient

    from sweeps import stores, tracking

    sweep, elsewhere = tmp_path / "sweep", tmp_path / "elsewhere"
    sweep.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{sweep / 'mlflow.db'}"
    parent = tracking.ensure_parent_run(uri, "exp", "beside", "0" * 64, None, ["variant"], artifacts=None)
    exp = MlflowClient(uri).get_experiment_by_name("exp")
    assert exp.artifact_location == (sweep / "artifacts").as_uri()  # old code: <elsewhere>/mlruns/1
    assert exp.artifact_location == tracking.artifact_location(uri, sweep), "as the runner gives a local sweep"
    MlflowClient(uri).log_text(parent, "x", "note.txt")
    assert (sweep / "artifacts").is_dir() and not (elsewhere / "mlruns").exists()
    # a relative sqlite URI is relative to the cwd, and so are its artifacts; servers decide for themselves
    assert (
        stores.store_artifact_location("sqlite:///rel/mlflow.db?timeout=5")
        == (elsewhere / "rel" / "artifacts").as_uri()
    )
    assert stores.store_artifact_location("http://127.0.0.1:5000") is None
    assert stores.store_artifact_location("postgresql://u:p@db/mlflow") is None
    assert stores.store_artifact_location("sqlite:///:memory:") is None


def _out(folder):
    folder.mkdir(parents=True, exist_ok=True)  # a unit's run folder, as haloae.train leaves it
    return folder


def _unit(uri, parent, trial_id, variant, category, seed, **kwargs):
    from haloae.config import HaloAEConfig
    from sweeps.tracking import TrialRun

    cfg = HaloAEConfig.from_overrides("tiny", {"train.seed": seed}, variant=variant)
    return TrialRun(uri, "exp", parent, "one-truth", trial_id, category, seed, cfg, "/data", **kwargs), cfg


def test_latest_val_is_the_best_checkpoints_and_epochs_are_curves(tmp_path):
    from mlflow.tracking import MlflowClient

    uri, parent = _store(tmp_path)
    run, cfg = _unit(uri, parent, "abc_00000", "haloae", "synth_disc", 0)
    for epoch, auroc in enumerate([0.6, 0.9, 0.7]):  # the best epoch (1) is not the last
        run.log_epoch(
            epoch,
            {"train/loss": 1.0 / (epoch + 1), "val/image_auroc": auroc, "val/afm/image_auroc": auroc, "epoch": epoch},
        )
    final = {"val/image_auroc": 0.9, "val/afm/image_auroc": 0.9, "test/image_auroc": 0.8, "best_epoch": 1}
    run.finish(final, _out(tmp_path / "out"), cfg)
    client = MlflowClient(uri)
    logged = client.get_run(run.run_id)
    assert (
        logged.data.metrics["val/image_auroc"] == 0.9 and logged.data.metrics["val/afm/image_auroc"] == 0.9
    )  # old code: 0.7
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "val/image_auroc")] == [(1, 0.9)]
    curve = sorted((m.step, m.value) for m in client.get_metric_history(run.run_id, "curve/val/image_auroc"))
    assert curve == [(0, 0.6), (1, 0.9), (2, 0.7)]
    assert len(client.get_metric_history(run.run_id, "test/image_auroc")) == 1
    assert [m.step for m in client.get_metric_history(run.run_id, "train/loss")] == [0, 1, 2]


def test_a_restarted_trial_logs_no_epoch_its_killed_attempt_already_logged(tmp_path):
    """The driver SIGKILLed after epoch 1 was logged but before Tune recorded its checkpoint: the
    trial restarts from epoch 0's checkpoint and trains epoch 1 again; MLflow keeps each step once."""
    from mlflow.tracking import MlflowClient

    uri, parent = _store(tmp_path)
    first, cfg = _unit(uri, parent, "abc_00000", "haloae", "synth_disc", 0)
    for epoch in (0, 1):
        first.log_epoch(epoch, {"train/loss": 1.0 / (epoch + 1), "val/image_auroc": 0.5, "epoch": epoch})
    again, _ = _unit(uri, parent, "abc_00000", "haloae", "synth_disc", 0)  # the restarted attempt finds the run
    assert again.run_id == first.run_id
    for epoch in (1, 2):
        again.log_epoch(epoch, {"train/loss": 1.0 / (epoch + 1), "val/image_auroc": 0.5, "epoch": epoch})
    again.finish({"val/image_auroc": 0.5, "test/image_auroc": 0.8, "best_epoch": 2}, _out(tmp_path / "out"), cfg)
    client = MlflowClient(uri)
    for key in ("train/loss", "curve/val/image_auroc", "epoch"):
        assert sorted(m.step for m in client.get_metric_history(first.run_id, key)) == [0, 1, 2], (
            key
        )  # old code: [0, 1, 1, 2]
    assert client.get_run(first.run_id).info.status == "FINISHED"


def test_child_runs_are_named_by_variant_category_seed_with_those_as_params(tmp_path):
    from sweeps.tracking import run_name

    assert run_name("haloae", "synth_disc", 0) == "haloae/synth_disc/s0"
    assert run_name("haloae", "synth_disc", 1, "d9fea_00012", several=True) == "haloae/synth_disc/s1-t12"
    assert (
        run_name("haloae", "synth_disc", 1, "d9fea_00012", several=False, stage="confirm")
        == "haloae/synth_disc/s1-confirm"
    )
    uri, parent = _store(tmp_path)
    run, _ = _unit(uri, parent, "abc_00003", "equal_weights", "synth_brick", 2, name="equal_weights/synth_brick/s2")
    logged = run.mlf.get_run(run.run_id)
    assert logged.info.run_name == "equal_weights/synth_brick/s2"
    params = logged.data.params
    assert (params["variant"], params["category"], params["seed"], params["train.seed"]) == (
        "equal_weights",
        "synth_brick",
        "2",
        "2",
    )


def test_several_configurations_per_variant_get_the_trial_index(tmp_path):
    from sweeps.loading import load_spec
    from sweeps.trainable import several_configurations

    assert not several_configurations(
        load_spec(tiny_spec(tmp_path, "plain", variants=["haloae", "equal_weights"], seeds=[0, 1]))
    )
    grid = tiny_spec(tmp_path, "grid", search={"algorithm": "grid", "space": {"optim.lr": {"grid": [1e-3, 1e-2]}}})
    assert several_configurations(load_spec(grid))


def test_parent_run_holds_per_variant_means_of_finished_runs_recomputed_on_resume(tmp_path):
    from mlflow.tracking import MlflowClient

    from sweeps import tracking

    uri, parent = _store(tmp_path)
    values = {("haloae", 0): 0.8, ("haloae", 1): 0.6, ("equal_weights", 0): 0.5}
    for i, ((variant, seed), auroc) in enumerate(values.items()):
        run, cfg = _unit(uri, parent, f"abc_0000{i}", variant, "synth_disc", seed)
        run.finish({"val/image_auroc": auroc, "test/image_auroc": auroc - 0.1, "test/defect/x/image_auroc": 0.1, "best_epoch": 0},
                   _out(tmp_path / f"out{i}"), cfg)  # fmt: skip
    failed, _ = _unit(uri, parent, "abc_00009", "haloae", "synth_disc", 5)
    failed.log_epoch(0, {"val/image_auroc": 0.0})
    failed.fail("FloatingPointError: nan")
    tracking.finish_parent_run(uri, parent, failed=1)
    metrics = MlflowClient(uri).get_run(parent).data.metrics
    assert metrics["mean/haloae/val/image_auroc"] == pytest.approx(0.7)
    assert metrics["mean/haloae/test/image_auroc"] == pytest.approx(0.6)
    assert metrics["mean/equal_weights/val/image_auroc"] == pytest.approx(0.5)
    assert metrics["runs/haloae"] == 2 and metrics["runs/equal_weights"] == 1
    assert not any("defect" in k for k in metrics), "headline metrics only"

    # resumed: another run of equal_weights finishes, the means follow
    tracking.ensure_parent_run(uri, "exp", "one-truth", "0" * 64, None, ["variant"])
    run, cfg = _unit(uri, parent, "abc_00005", "equal_weights", "synth_disc", 1)
    run.finish({"val/image_auroc": 0.7, "test/image_auroc": 0.6, "best_epoch": 0}, _out(tmp_path / "out5"), cfg)
    tracking.finish_parent_run(uri, parent, failed=0)
    metrics = MlflowClient(uri).get_run(parent).data.metrics
    assert metrics["mean/equal_weights/val/image_auroc"] == pytest.approx(0.6) and metrics["runs/equal_weights"] == 2


def test_runs_page_link_opens_the_model_training_view_in_the_sweeps_stored_view(tmp_path):
    import json

    from mlflow.tracking import MlflowClient

    from sweeps.ui_view import runs_page

    assert (
        runs_page("http://127.0.0.1:5000/", "7")
        == "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    )
    assert runs_page("http://h:5000", "7", "s1").endswith(
        "/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=haloae-s1"
    )
    uri, parent = _store(tmp_path)
    client = MlflowClient(uri)
    state = json.loads(client.get_experiment_by_name("exp").tags["mlflow.sharedViewState.haloae-one-truth"])
    assert state["runsExpanded"] == {parent: True} and state["orderByKey"] == "metrics.`val/image_auroc`"
    assert {"params.`variant`", "params.`category`", "params.`seed`", "metrics.`test/image_auroc`"} <= set(
        state["selectedColumns"]
    )
