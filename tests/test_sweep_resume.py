# SPDX-License-Identifier: Apache-2.0
"""The sweep driver SIGKILLed mid-sweep, then ``haloae sweep --resume``: real processes throughout.

Ray runs as its own process (``ray start --head --block``), as on a cluster: a SIGKILLed driver
that had started Ray itself would leave raylets behind (ray-optuna-mlflow-notes.md). Every
process the test starts is stopped by its pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from haloae.vocab import QUIET_ENV as QUIET
from sweeps.loading import load_spec
from tests.helpers.sweeps import duplicates, epoch_steps, tiny_spec, trial_runs

pytestmark = pytest.mark.slow  # a Ray head process, sweep drivers as processes
HALOAE = [sys.executable, "-m", "haloae.cli"]
RAY = str(Path(sys.executable).parent / "ray")  # the venv's CLI: the tests may run with the venv not on PATH


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    # RAY_AUTH_MODE: Ray 2.60's `ray start` turns token authentication on by default; a loopback
    # test cluster opts out (clusters in cluster/ keep it on)
    return {**os.environ, **QUIET, "PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"}


def stop(process: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM the process group (``ray start --block`` then stops what it started), SIGKILL after ``grace``."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def start_ray_head(log: Path, num_cpus: int = 2) -> tuple[subprocess.Popen, str]:
    """``ray start --head --block`` on loopback in its own process group; returns it and its address."""
    port = free_port()
    with open(log, "w") as out:  # the child keeps its own descriptor
        head = subprocess.Popen(
            [RAY, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
             f"--num-cpus={num_cpus}", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats"],
            env=env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            probe = subprocess.run([RAY, "status", f"--address={address}"], env=env(), capture_output=True, text=True)
            if probe.returncode == 0:
                return head, address
            assert head.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
        raise AssertionError(f"ray head did not come up in 120 s: {log.read_text()[-3000:]}")
    except BaseException:
        stop(head)
        raise


@pytest.fixture
def ray_head(tmp_path):
    """A one-node Ray cluster in its own processes; stopped by pid at the end."""
    head, address = start_ray_head(tmp_path / "ray-head.log")
    yield address
    stop(head)


def checkpointed_trials(experiment: Path) -> set[str]:
    """Trial ids whose checkpoint Tune's saved experiment state records: what a restore resumes from
    (a checkpoint folder on disk may be newer than the state the driver last saved)."""
    found = set()
    for state in experiment.glob("experiment_state-*.json"):
        try:
            trials = json.loads(state.read_text())["trial_data"]
        except (OSError, ValueError, KeyError):  # being written
            continue
        for trial, runtime in trials:
            if json.loads(runtime).get("last_result", {}).get("checkpoint_dir_name"):
                found.add(json.loads(trial)["trial_id"])
    return found


def test_driver_sigkill_then_resume_completes_without_restarts_or_duplicates(tmp_path, ray_head):
    path = tiny_spec(
        tmp_path, "killed",
        search={"algorithm": "grid", "space": {"optim.lr": {"grid": [1e-3, 2e-3, 5e-3, 1e-2]}}},
        objective={"metric": "val/image_auroc", "mode": "max", "aggregate": "per_category"},
        data={"synthetic": {"categories": ["synth_disc"], "size": 32, "seed": 0}, "categories": "all"},
        overrides={"train.epochs": 8, "train.steps_per_epoch": 3},
        resources={"cpu": 1},
    )
    spec = load_spec(path)
    experiment = Path(spec.sweep_dir()) / "ray"
    with open(tmp_path / "driver-1.log", "w") as log:
        driver = subprocess.Popen(
            [*HALOAE, "sweep", str(path), "--address", ray_head], env=env(), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(checkpointed_trials(experiment)) < 2:
            assert driver.poll() is None, (tmp_path / "driver-1.log").read_text()[-3000:]
            time.sleep(0.5)
        had_checkpoint = checkpointed_trials(experiment)
        assert len(had_checkpoint) >= 2, "no trial checkpointed within 240 s"
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    running_before = [r for r in trial_runs(spec.tracking_uri(), spec.experiment_name()) if r.info.status == "RUNNING"]
    assert running_before, "the kill should have left RUNNING runs behind"

    runs = _resume_to_the_end(path, ray_head, spec, 4)
    for run in runs:
        steps = epoch_steps(spec.tracking_uri(), run.info.run_id)
        assert set(steps) == set(range(8)), steps
        if run.data.tags["trial_id"] in had_checkpoint:
            # resumed from its checkpoint: epoch 0 was trained once, not again after the kill
            assert steps.count(0) == 1, f"{run.data.tags['trial_id']} restarted from epoch 0: {steps}"


def _parent_status(tracking_uri: str, experiment: str) -> str:
    from mlflow.tracking import MlflowClient

    from haloae.vocab import ROLE_PARENT, TAG_ROLE

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    (parent,) = client.search_runs([exp.experiment_id], f"tags.`{TAG_ROLE}` = '{ROLE_PARENT}'")
    return parent.info.status


def test_sigterm_stops_the_sweep_runs_end_killed_and_resume_finishes_it(tmp_path, ray_head):
    path = tiny_spec(
        tmp_path, "stopped",
        search={"algorithm": "grid", "space": {"optim.lr": {"grid": [1e-3, 1e-2]}}},
        objective={"metric": "val/image_auroc", "mode": "max", "aggregate": "per_category"},
        data={"synthetic": {"categories": ["synth_disc"], "size": 32, "seed": 0}, "categories": "all"},
        overrides={"train.epochs": 8, "train.steps_per_epoch": 3},
        resources={"cpu": 1},
    )
    spec = load_spec(path)
    experiment = Path(spec.sweep_dir()) / "ray"
    log = tmp_path / "driver.log"
    with open(log, "w") as out:
        driver = subprocess.Popen([*HALOAE, "sweep", str(path), "--address", ray_head], env=env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not checkpointed_trials(experiment):
            assert driver.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        assert checkpointed_trials(experiment), "no trial checkpointed within 240 s"
        driver.send_signal(signal.SIGTERM)
        code = driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    text = log.read_text()
    assert code == 143, text[-3000:]
    assert "interrupted by SIGTERM" in text and "--resume" in text, text[-3000:]
    statuses = [r.info.status for r in trial_runs(spec.tracking_uri(), spec.experiment_name())]
    assert "RUNNING" not in statuses and "KILLED" in statuses, statuses
    assert _parent_status(spec.tracking_uri(), spec.experiment_name()) == "KILLED"
    assert not (Path(spec.sweep_dir()) / ".lock").exists(), "the lock is released on a signal"

    _resume_to_the_end(path, ray_head, spec, 2)
    assert _parent_status(spec.tracking_uri(), spec.experiment_name()) == "FINISHED"


def _resume_to_the_end(path, ray_head: str, spec, n_runs: int) -> list:
    """``haloae sweep --resume`` on the running head: exit 0, and ``n_runs`` trial runs, each FINISHED once."""
    resumed = subprocess.run(
        [*HALOAE, "sweep", str(path), "--resume", "--address", ray_head], env=env(), capture_output=True, text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    runs = trial_runs(spec.tracking_uri(), spec.experiment_name())
    assert len(runs) == n_runs and not duplicates(runs)
    assert [r.info.status for r in runs] == ["FINISHED"] * n_runs
    return runs
