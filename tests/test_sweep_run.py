# SPDX-License-Identifier: Apache-2.0
"""Sweeps end to end on real Ray (local), a real MLflow sqlite store and real Optuna studies."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from sweeps.loading import load_spec
from tests.helpers.imports import cli_in_fresh_interpreter
from tests.helpers.sockets import descendants
from tests.helpers.sweeps import artifact_paths, duplicates, epoch_steps, run_spec_on_fresh_ray, tiny_spec, trial_runs

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # every test starts a local Ray and runs a whole sweep


@pytest.fixture
def fresh_ray():
    """Each sweep starts its own local Ray (so env such as fault injection reaches the workers)."""
    ray.shutdown()
    yield
    ray.shutdown()


def test_smoke_sweep_runs_to_completion_with_mlflow_records(tmp_path, fresh_ray):
    from sweeps.runner import run_sweep

    # the demo's definition, its 2 variants on one category and seed (2 trials, run together), at a
    # fifth of its training (2 epochs x 4 steps): the records, artifacts and summary are what this
    # checks, and the demo's budget is the README's job
    overrides = [f"storage={tmp_path / 'sweeps'}", "seeds=[0]", "data.synthetic.categories=[synth_disc]",
                 "overrides.train.epochs=2", "overrides.train.steps_per_epoch=4"]
    spec = load_spec("sweeps/smoke.yaml", overrides)
    outcome = run_sweep(spec)
    assert not outcome.failed, outcome.summary()
    assert all(t.status == "TERMINATED" for t in outcome.trials)
    runs = trial_runs(spec.tracking_uri(), spec.experiment_name())
    units = len(spec.categories()) * len(spec.seeds) if spec.objective.aggregate == "mean" else 1
    assert len(runs) == len(outcome.trials) * units
    assert not duplicates(runs)
    for run in runs:
        assert run.info.status == "FINISHED", run.data.tags.get("error")
        tags, metrics = run.data.tags, run.data.metrics
        for tag in ("sweep", "trial_id", "category", "variant", "seed"):
            assert tags.get(tag), f"tag {tag} missing"
        assert tags["mlflow.parentRunId"] == outcome.parent_run_id
        for key in ("val/image_auroc", "val/pixel_auroc", "test/image_auroc", "test/pixel_auroc", "test/aupro"):
            assert 0.0 <= metrics[key] <= 1.0, key
        assert any(k.startswith("test/defect/") for k in metrics), "no per-defect metrics"
        from haloae.config import HaloAEConfig

        assert set(HaloAEConfig().flatten()) <= set(run.data.params), "params are not the flattened config"
        assert run.data.params["variant"] == tags["variant"] and run.data.params["train.seed"] == tags["seed"]
        assert run.data.params["train.precision"] == "fp32"  # auto on the CPU: the applied value is recorded
        assert epoch_steps(spec.tracking_uri(), run.info.run_id) == list(range(spec.epochs()))
        paths = artifact_paths(spec.tracking_uri(), run.info.run_id)
        for expected in ("config.json", "metrics.json", "alpha_schedule.png", "checkpoint/best.pt"):
            assert expected in paths, f"artifact {expected} missing: {sorted(paths)}"
        assert any(p.startswith("overlays/") and p.endswith(".png") for p in paths)
    summary = outcome.summary()
    assert "best" in summary and "mlflow ui" in summary and "--host 127.0.0.1" in summary


def test_failing_trial_is_recorded_and_retried_from_its_checkpoint(tmp_path, fresh_ray, monkeypatch):
    from sweeps.runner import run_sweep

    # attempt 1: every trial raises once at epoch 1 (after its epoch-0 checkpoint); retries: 1
    marker = tmp_path / "fault"
    monkeypatch.setenv("HALOAE_INJECT_FAULT", f"epoch=1,marker={marker}")
    path = tiny_spec(
        tmp_path, "retry", retries=1, search={"algorithm": "grid", "space": {"optim.lr": {"grid": [1e-3, 1e-2]}}},
        objective={"metric": "val/image_auroc", "mode": "max", "aggregate": "per_category"},
        data={"synthetic": {"categories": ["synth_disc"], "size": 32, "seed": 0}, "categories": "all"},
    )
    spec = load_spec(path)
    outcome = run_sweep(spec)
    assert marker.exists()
    assert not outcome.failed and len(outcome.trials) == 2, outcome.summary()
    runs = trial_runs(spec.tracking_uri(), spec.experiment_name())
    assert len(runs) == 2 and not duplicates(runs)
    for run in runs:
        assert run.info.status == "FINISHED"
        # the retried trial resumed at epoch 1 from its checkpoint: epoch 0 was trained (logged) once
        assert epoch_steps(spec.tracking_uri(), run.info.run_id).count(0) == 1


def test_trial_that_raises_ends_failed_with_its_reason_others_finish(tmp_path, fresh_ray):
    from sweeps.runner import run_sweep

    # a learning rate of 1e30 makes the loss non-finite within the first steps: a real NaN
    path = tiny_spec(
        tmp_path, "nan", search={"algorithm": "grid", "space": {"optim.lr": {"grid": [1e-3, 1e30]}}},
        objective={"metric": "val/image_auroc", "mode": "max", "aggregate": "per_category"},
        data={"synthetic": {"categories": ["synth_disc"], "size": 32, "seed": 0}, "categories": "all"},
    )
    spec = load_spec(path)
    outcome = run_sweep(spec)
    failed = outcome.failed
    assert len(failed) == 1 and failed[0].params["optim.lr"] == 1e30
    assert "non-finite training loss" in failed[0].error
    runs = {float(r.data.params["optim.lr"]): r for r in trial_runs(spec.tracking_uri(), spec.experiment_name())}
    assert runs[1e30].info.status == "FAILED"
    assert "non-finite training loss" in runs[1e30].data.tags["error"]
    assert runs[1e-3].info.status == "FINISHED"
    assert "FAILED" in outcome.summary()


def test_optuna_sweep_persists_its_study_and_resume_continues_it(tmp_path, fresh_ray, capfd):
    import optuna

    from sweeps.runner import run_sweep

    path = tiny_spec(
        tmp_path, "alpha", purpose="search",
        search={"algorithm": "optuna", "sampler": "tpe", "seed": 3, "num_samples": 3,
                "alpha": {"mode": "midpoint_slope", "terms": ["cls", "fm", "im"]}},
        objective={"metric": "val/image_auroc", "mode": "max", "aggregate": "mean"},
        overrides={"train.epochs": 2, "train.steps_per_epoch": 2},
        max_concurrent_trials=2,
    )
    spec = load_spec(path)
    outcome = run_sweep(spec)
    assert len(outcome.trials) == 3 and not outcome.failed, outcome.summary()
    shown = capfd.readouterr()  # the progress table (sweeps.reporting) and what Ray logged around it
    assert "alpha cls c/d" in shown.out and "| 2/2 " in shown.out and "loss.alpha.cls.c" not in shown.out
    assert "snapshotting" not in shown.out + shown.err and "Checkpoint successfully created" not in shown.out + shown.err
    storage = f"sqlite:///{spec.sweep_dir()}/optuna.db"
    study = optuna.load_study(study_name=spec.name, storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3
    assert {"loss.alpha.cls.c", "loss.alpha.fm.d"} <= set(done[0].params)
    # MLflow: one child run per trial and category, params = the sampled alpha values
    runs = trial_runs(spec.tracking_uri(), spec.experiment_name())
    assert len(runs) == 3 * 2 and not duplicates(runs)
    sampled = {round(t.params["loss.alpha.cls.c"], 6) for t in done}
    assert {round(float(r.data.params["loss.alpha.cls.c"]), 6) for r in runs} == sampled
    # each Optuna trial names its Tune trial and its MLflow child runs (one per category)
    by_trial: dict[str, set[str]] = {}
    for run in runs:
        by_trial.setdefault(run.data.tags["trial_id"], set()).add(run.info.run_id)
    assert {t.user_attrs["tune_trial_id"]: set(t.user_attrs["mlflow_run_ids"]) for t in done} == by_trial

    # resuming a finished sweep continues the same study: nothing is rerun or duplicated
    ray.shutdown()
    again = run_sweep(load_spec(path), resume=True)
    assert len(again.trials) == 3
    assert all(0 <= t.metrics["val/image_auroc"] <= 1 for t in again.trials), "restored results lost their metrics"
    study = optuna.load_study(study_name=spec.name, storage=storage)
    assert len(study.trials) == 3
    assert optuna.get_all_study_names(storage) == [spec.name]
    assert len(trial_runs(spec.tracking_uri(), spec.experiment_name())) == 6


class SerialSweep(NamedTuple):
    path: Path
    spec: Any
    outcome: Any
    environ_before: dict[str, str]  # os.environ around run_sweep
    environ_after: dict[str, str]


@pytest.fixture(scope="module")
def serial_sweep(tmp_path_factory) -> SerialSweep:
    """One finished grid sweep whose two half-CPU trials would fit the 2 CPUs together: only
    ``max_concurrent_trials: 1`` makes them run one after the other."""
    path = tiny_spec(
        tmp_path_factory.mktemp("serial"), "serial", search={"algorithm": "grid", "space": {"optim.lr": {"grid": [1e-3, 1e-2]}}},
        objective={"metric": "val/image_auroc", "mode": "max", "aggregate": "per_category"},
        data={"synthetic": {"categories": ["synth_disc"], "size": 32, "seed": 0}, "categories": "all"},
        overrides={"train.epochs": 2, "train.steps_per_epoch": 1}, max_concurrent_trials=1,
    )
    before = dict(os.environ)
    spec, outcome = run_spec_on_fresh_ray(path)
    return SerialSweep(path, spec, outcome, before, dict(os.environ))


def test_max_concurrent_trials_holds_for_a_grid_sweep(serial_sweep):
    spec, outcome = serial_sweep.spec, serial_sweep.outcome
    assert not outcome.failed and len(outcome.trials) == 2, outcome.summary()
    first, second = sorted(trial_runs(spec.tracking_uri(), spec.experiment_name()), key=lambda r: r.info.start_time)
    assert first.info.end_time <= second.info.start_time, "the two trials overlapped"


def test_rerun_without_resume_is_refused_and_keeps_records(serial_sweep):
    from sweeps.errors import SpecError
    from sweeps.runner import run_sweep

    path, spec = serial_sweep.path, serial_sweep.spec
    before = len(trial_runs(spec.tracking_uri(), spec.experiment_name()))
    with pytest.raises(SpecError, match="--resume"):
        run_sweep(load_spec(path))
    assert len(trial_runs(spec.tracking_uri(), spec.experiment_name())) == before == 2


def test_run_sweep_gives_its_caller_the_environment_back(serial_sweep):
    # in a notebook, a later sweep or analysis must not default to this sweep's store or logging;
    # what ray.init itself sets (KMP_*, RAY_AUTH_MODE, ...) is Ray's, for as long as it is connected
    from haloae.vocab import ENV_TRACKING_URI, QUIET_ENV

    before, after = serial_sweep.environ_before, serial_sweep.environ_after
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    ours = changed & {*QUIET_ENV, ENV_TRACKING_URI}
    assert not ours, f"left changed by run_sweep: {sorted(ours)}"


def _listening(pids: set[int]) -> set[str]:
    """Local addresses of the TCP sockets ``pids`` listen on (``ss -ltnp``)."""
    import re
    import subprocess

    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    return {line.split()[3] for line in out.splitlines() if {int(p) for p in re.findall(r"pid=(\d+)", line)} & pids}


@pytest.mark.soak  # through the installed command; CI keeps tests/test_sweep_loopback.py's run_sweep in-process
@pytest.mark.skipif(__import__("shutil").which("ss") is None, reason="needs ss (iproute2)")
def test_the_ray_a_sweep_starts_listens_on_loopback_only(tmp_path):
    import os
    import subprocess
    import sys
    import time

    from haloae.vocab import QUIET_ENV

    path = tiny_spec(tmp_path, "loopback", overrides={"train.epochs": 4, "train.steps_per_epoch": 2},
                     data={"synthetic": {"categories": ["synth_disc"], "size": 32, "seed": 0}, "categories": "all"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | QUIET_ENV
    driver = subprocess.Popen([sys.executable, "-m", "haloae.cli", "sweep", str(path)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sockets: set[str] = set()
    try:
        while driver.poll() is None:
            sockets |= _listening(descendants(driver.pid))
            time.sleep(1)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0
    assert len(sockets) >= 5, f"too few sockets seen to judge: {sockets}"  # GCS, raylet, agents, workers
    public = {s for s in sockets if s.rpartition(":")[0] not in ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]")}
    assert not public, f"listening beyond loopback: {sorted(public)}"


def test_the_tracking_store_opens_while_ray_starts_and_records_nothing_before(tmp_path, monkeypatch):
    """The driver's first MLflow use (~2 s of imports and the sqlite engine) overlaps ray.init, and
    a Ray that fails to start leaves the store without a run."""
    import time

    from sweeps import runner, stores, tracking

    spec = load_spec(tiny_spec(tmp_path, "overlap"))
    monkeypatch.setenv("HALOAE_DATA_CACHE", str(tmp_path / "cache"))
    store, seen = stores.sqlite_path(spec.tracking_uri()), {}

    def ray_that_fails_to_start(address):
        deadline = time.monotonic() + 60
        while not store.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        seen["store opened during ray.init"] = store.is_file()
        raise ConnectionError("ray did not start")

    monkeypatch.setattr(runner, "_init_ray", ray_that_fails_to_start)
    with pytest.raises(ConnectionError):
        runner.run_sweep(spec)
    assert seen == {"store opened during ray.init": True}
    mlf = tracking.client(spec.tracking_uri())
    assert mlf.search_runs([e.experiment_id for e in mlf.search_experiments()]) == []


@pytest.mark.slow
def test_a_sweeps_driver_never_imports_torch(tmp_path):
    """``haloae sweep`` from a fresh interpreter, a real sweep on a local Ray to its summary: the
    driver validates, scans the data, seeds the MLflow store, runs Tune and prints the table without
    torch, torchvision or scikit-learn (about 3 s of every command); the trials import them. The
    synthetic data exists beforehand, as a real dataset would (drawing it is torch's work)."""
    from sweeps.runner import prepare

    path = tiny_spec(tmp_path, "torch-free-driver", data={"synthetic": {"categories": ["synth_disc"], "size": 32, "seed": 0}})
    prepare(load_spec(path))
    last_lines, done = cli_in_fresh_interpreter(["sweep", str(path)], ("torch", "torchvision", "sklearn", "haloae.train"), 300)
    assert last_lines == ["exit 0", "[]"], (last_lines, done.stderr[-2000:])


def test_the_driver_hands_tune_a_trainable_without_importing_training(tmp_path):
    """The driver never trains: the trainable Tune pickles names the trial function by reference,
    and haloae.train (torch, torchvision, scikit-learn: ~1 s before the first trial) is imported in
    the trial's process only. In a fresh interpreter, where nothing imported it before."""
    import subprocess
    import sys

    path = tiny_spec(tmp_path, "lean-driver")
    code = (
        "import sys, cloudpickle; from sweeps.loading import load_spec; from sweeps.runner import build_trainable; "
        f"blob = cloudpickle.dumps(build_trainable(load_spec({str(path)!r}), 'parent')); "
        "print(sorted(m for m in ('haloae.train', 'sweeps.trainable') if m in sys.modules), len(blob))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, check=True)
    imported, size = done.stdout.split("]")[0] + "]", int(done.stdout.split("]")[1])
    assert imported == "[]", done.stdout
    assert size < 200_000  # the spec travels, not a by-value copy of the training code
