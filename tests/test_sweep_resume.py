# SPDX-License-Identifier: Apache-2.0
"""The sweep driver SIGKILLed mid-sweep, then ``haloae sweep --resume``: real processes throughout.

Ray runs as its own process (``ray start --head --block``), as on a cluster: a SIGKILLed driver
that had started Ray itself would leave raylets behind (ray-optuna-mlflow-notes.md). Every
process the test starts is stopped by its pid. The driver is SIGKILLed at three moments of one
sweep (the first trial's first epoch, between trials, the last trial's final evaluation), each
followed by ``--resume``; SIGTERM stops it with runs ended KILLED.
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
    # test cluster opts out (clusters in cluster/ keep it on). RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:
    # a SIGTERMed `ray start --block` would wait 30 s for Serve proxies to drain (there are none)
    return {**os.environ, **QUIET, "PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


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


def _last_results(experiment: Path) -> dict[str, dict]:
    """Each trial's last result as Tune's saved experiment state records it."""
    found = {}
    for state in experiment.glob("experiment_state-*.json"):
        for trial, runtime in json.loads(state.read_text())["trial_data"]:
            found[json.loads(trial)["trial_id"]] = json.loads(runtime).get("last_result", {})
    return found


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


MOMENT_EPOCHS = 2  # epochs per trial of the driver-kill sweep: the last has a checkpoint before its final evaluation


def _runs_now(spec) -> list:
    """The sweep's trial runs so far (none before the driver created the experiment)."""
    try:
        return trial_runs(spec.tracking_uri(), spec.experiment_name())
    except AssertionError:  # no experiment yet
        return []


def _during_first_epoch(spec) -> bool:
    """A trial's run exists and no epoch is logged yet: the first trial is in its first epoch."""
    runs = _runs_now(spec)
    return bool(runs) and all(not epoch_steps(spec.tracking_uri(), r.info.run_id) for r in runs)


def _between_trials(spec) -> bool:
    """A trial's run has just ended FINISHED (trials run one at a time) and the next is not training."""
    runs = _runs_now(spec)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    training = [r for r in runs if r.info.status == "RUNNING" and epoch_steps(spec.tracking_uri(), r.info.run_id)]
    return bool(finished) and len(runs) < 3 and not training


def _during_last_evaluation(spec) -> bool:
    """The last trial logged its last epoch and is still RUNNING: its final evaluation is under way."""
    runs = _runs_now(spec)
    last = [r for r in runs if r.info.status == "RUNNING"]
    return len(runs) == 3 and len(last) == 1 and MOMENT_EPOCHS - 1 in epoch_steps(spec.tracking_uri(), last[0].info.run_id)


def _kill_driver_when(moment, spec, path, address: str, log: Path, resume: bool) -> None:
    """Start ``haloae sweep`` (``--resume``), SIGKILL it as soon as ``moment(spec)`` holds."""
    command = [*HALOAE, "sweep", str(path), "--address", address, *(["--resume"] if resume else [])]
    with open(log, "w") as out:
        driver = subprocess.Popen(command, env=env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while not moment(spec):
            assert driver.poll() is None, f"the driver ended before {moment.__name__}: {log.read_text()[-3000:]}"
            assert time.time() < deadline, f"no {moment.__name__} within 180 s: {log.read_text()[-3000:]}"
            time.sleep(0.2)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()


def _ray_processes(port: int) -> list[str]:
    """Live processes (``pid command``) of the Ray cluster whose GCS listens on ``port``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):  # gone meanwhile, or not a process folder
            continue
        if f":{port}" in cmdline and state != "Z":
            found.append(f"{proc.name} {cmdline[:120]}")
    return found


@pytest.mark.soak  # 4 drivers and 3 trials (2 to 4 minutes); CI keeps the deterministic kill of test_sweep_restorable
def test_driver_sigkilled_at_three_moments_then_resumed_finishes_every_trial_once(tmp_path):
    """SIGKILL the driver during the first trial's first epoch, between trials, and during the last
    trial's final evaluation, ``--resume`` after each: every trial's run ends FINISHED once, no run
    stays RUNNING, no epoch is logged twice, and no Ray process outlives the cluster."""
    head, address = start_ray_head(tmp_path / "ray-head.log")
    port = int(address.rpartition(":")[2])
    try:
        path = tiny_spec(
            tmp_path, "killed",
            search={"algorithm": "grid", "space": {"optim.lr": {"grid": [1e-3, 2e-3, 5e-3]}}},
            objective={"metric": "val/image_auroc", "mode": "max", "aggregate": "per_category"},
            data={"synthetic": {"categories": ["synth_disc"], "size": 32, "seed": 0}, "categories": "all"},
            overrides={"train.epochs": MOMENT_EPOCHS, "train.steps_per_epoch": 1},
            resources={"cpu": 1}, max_concurrent_trials=1,
        )
        spec = load_spec(path)
        moments = (_during_first_epoch, _between_trials, _during_last_evaluation)
        for i, moment in enumerate(moments):
            _kill_driver_when(moment, spec, path, address, tmp_path / f"driver-{i}.log", resume=i > 0)
        experiment = Path(spec.sweep_dir()) / "ray"
        last_trial = max(_runs_now(spec), key=lambda r: r.info.start_time).data.tags["trial_id"]
        assert last_trial in checkpointed_trials(experiment), "the last kill came before the last trial's checkpoint was recorded"
        runs = _resume_to_the_end(path, address, spec, 3)
        # the last trial went on from its checkpoint: fewer reports since that restore than epochs
        assert _last_results(experiment)[last_trial]["iterations_since_restore"] < MOMENT_EPOCHS
        uri = spec.tracking_uri()
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        for run in runs:
            for key in run.data.metrics:
                steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
                assert len(steps) == len(set(steps)), f"{run.info.run_name}: {key} logged twice at a step: {sorted(steps)}"
            assert set(epoch_steps(uri, run.info.run_id)) == set(range(MOMENT_EPOCHS))
        assert _parent_status(uri, spec.experiment_name()) == "FINISHED"
    finally:
        stop(head)
    deadline = time.time() + 30
    while _ray_processes(port) and time.time() < deadline:
        time.sleep(1)
    assert not _ray_processes(port), f"Ray processes outlived the cluster: {_ray_processes(port)}"


def _parent_status(tracking_uri: str, experiment: str) -> str:
    from mlflow.tracking import MlflowClient

    from haloae.vocab import ROLE_PARENT, TAG_ROLE

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    (parent,) = client.search_runs([exp.experiment_id], f"tags.`{TAG_ROLE}` = '{ROLE_PARENT}'")
    return parent.info.status


def test_sigterm_stops_the_sweep_runs_end_killed_and_resume_finishes_it(tmp_path, ray_head):
    path = tiny_spec(  # one trial: what a signal does to a running trial, its run and the parent run
        tmp_path, "stopped",
        search={"algorithm": "grid", "space": {"optim.lr": {"grid": [1e-3]}}},
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

    _resume_to_the_end(path, ray_head, spec, 1)
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
