# SPDX-License-Identifier: Apache-2.0
"""A sweep across a real multi-node Ray cluster on loopback, logging to the cluster's MLflow server on PostgreSQL.

    ray start --head (0 CPUs: runs no trials, hosts the job driver and the dashboard)
    + two ``ray start --address`` worker nodes with 1 CPU each
    + ``cluster/mlflow/start-server.sh`` (PostgreSQL store, basic auth, proxied artifacts) on a
      loopback port, in a database of its own that is dropped at the end
    -> ``ray job submit -- haloae sweep SPEC --address auto`` (trials log to the server)
    -> trials run on both workers (node ids in Ray's results and on the MLflow runs)
    -> one worker's processes are SIGKILLed mid-sweep: its trials move to the other node and
       resume from their checkpoints (retries), and the sweep completes
Every process the test starts is stopped by its pid (process group) at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.sweeps import duplicates, epoch_steps, tiny_spec, trial_runs
from tests.helpers.tracking_server import database_exists, scratch_database, tracking_server
from tests.test_sweep_resume import RAY, env, free_port, stop

pytestmark = pytest.mark.slow


def start(args: list[str], log: Path, **kwargs) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(args, env=env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)


def wait_for(check, what: str, timeout: float, processes: list[subprocess.Popen], logs: list[Path]) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        for p, log in zip(processes, logs, strict=True):
            assert p.poll() is None, f"{log.name} exited: {log.read_text()[-3000:]}"
        time.sleep(1)
    raise AssertionError(f"{what} not ready within {timeout} s")


def alive_nodes(address: str) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-c", f"import ray, json; ray.init(address={address!r}, logging_level='ERROR'); "
         "print(json.dumps([n for n in ray.nodes() if n['Alive']], default=str))"],
        env=env(), capture_output=True, text=True, timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else []


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    """The cluster's MLflow server: start-server.sh on a PostgreSQL database of this test (dropped at
    the end); this process and the Ray nodes it starts (so every trial) authenticate as its admin."""
    with scratch_database("multinode") as db, tracking_server(tmp_path / "mlflow", db) as srv:
        for key, value in srv.client_env().items():
            monkeypatch.setenv(key, value)
        yield srv.url
    assert not database_exists(db)


@pytest.fixture
def cluster(tmp_path, tracking):
    """(ray address, dashboard url, mlflow url, {name: process}, {worker: node id}) of a 3-node loopback cluster."""
    procs: dict[str, subprocess.Popen] = {}
    port, dash = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    # its own temp folder: `ray job submit`'s supervisor resolves "auto" (the job's RAY_ADDRESS) to
    # the cluster last started in its temp folder, and with the shared /tmp/ray that is any head
    # another test (the other pytest worker) started meanwhile: the trials then ran on that
    # cluster, without this test's MLflow credentials. Short: Ray's socket paths must fit 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    common = ["--node-ip-address=127.0.0.1", "--num-gpus=0", "--disable-usage-stats", "--block", f"--temp-dir={temp_dir}"]

    def own_ports() -> list[str]:
        # nodes sharing one host must not share the per-node agent ports (fixed defaults in Ray)
        return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]

    try:
        procs["head"] = start(
            [RAY, "start", "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", *common, *own_ports()], tmp_path / "head.log")
        wait_for(lambda: len(alive_nodes(address)) == 1, "ray head", 120, [procs["head"]], [tmp_path / "head.log"])
        node_ids = {}
        for n, name in enumerate(("worker1", "worker2"), start=2):  # one at a time: 2 cores
            before = {node["NodeID"] for node in alive_nodes(address)}
            procs[name] = start([RAY, "start", f"--address={address}", "--num-cpus=1", *common, *own_ports()],
                                tmp_path / f"{name}.log")
            wait_for(lambda n=n: len(alive_nodes(address)) == n, name, 120, [procs[name]], [tmp_path / f"{name}.log"])
            node_ids[name] = ({node["NodeID"] for node in alive_nodes(address)} - before).pop()
        wait_for(lambda: http_ok(f"http://127.0.0.1:{dash}/api/version"), "ray dashboard", 120, [procs["head"]],
                 [tmp_path / "head.log"])
        yield address, f"http://127.0.0.1:{dash}", tracking, procs, node_ids
    finally:
        for name in ("worker1", "worker2", "head"):
            if name in procs:
                stop(procs[name])
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_sweep_runs_across_nodes_and_survives_losing_one(tmp_path, cluster):
    address, dashboard, mlflow_url, procs, node_ids = cluster
    path = tiny_spec(
        tmp_path, "multinode",
        search={"algorithm": "grid", "space": {"optim.lr": {"grid": [1e-3, 2e-3, 5e-3, 1e-2]}}},
        objective={"metric": "val/image_auroc", "mode": "max", "aggregate": "per_category"},
        data={"synthetic": {"categories": ["synth_disc"], "size": 32, "seed": 0}, "categories": "all"},
        overrides={"train.epochs": 12, "train.steps_per_epoch": 3},
        resources={"cpu": 1},
        retries=2,
        mlflow={"tracking_uri": mlflow_url, "experiment": "multinode"},
    )
    submit = start(
        [RAY, "job", "submit", "--address", dashboard, "--submission-id", "haloae-multinode", "--",
         sys.executable, "-m", "haloae.cli", "sweep", str(path), "--address", "auto"],
        tmp_path / "job.log", cwd=os.getcwd(),
    )
    victim: dict[str, str] = {}

    def worker2_trial_has_a_checkpoint() -> bool:
        # a trial running on worker 2 that has reported epoch >= 1 (so its epoch-0 checkpoint is persisted)
        for run in trial_runs(mlflow_url, "multinode") if http_ok(f"{mlflow_url}/health") else []:
            on_worker2 = run.info.status == "RUNNING" and run.data.tags.get("ray.node_id") == node_ids["worker2"]
            if on_worker2 and max(epoch_steps(mlflow_url, run.info.run_id), default=-1) >= 1:
                victim["run_id"] = run.info.run_id
                return True
        return False

    try:
        wait_for(lambda: _experiment_exists(mlflow_url) and worker2_trial_has_a_checkpoint(),
                 "a checkpointed trial on worker 2", 300, [submit], [tmp_path / "job.log"])
        os.killpg(procs["worker2"].pid, signal.SIGKILL)  # the raylet and the trial processes it started
        procs["worker2"].wait()
        submit.wait(timeout=600)
    finally:
        stop(submit, grace=5)
    log = (tmp_path / "job.log").read_text()
    assert submit.returncode == 0, log[-4000:]
    assert "4 trials, 0 failed" in log, log[-4000:]

    runs = trial_runs(mlflow_url, "multinode")
    assert len(runs) == 4 and not duplicates(runs)
    assert all(r.info.status == "FINISHED" for r in runs), [r.info.status for r in runs]
    for run in runs:
        assert 0.0 <= run.data.metrics["test/image_auroc"] <= 1.0
        assert set(epoch_steps(mlflow_url, run.info.run_id)) == set(range(12))
    nodes = {n for r in runs for n in r.data.tags["ray.node_ids"].split(",")}
    assert nodes == {node_ids["worker1"], node_ids["worker2"]}, "trials ran on both workers"
    moved = next(r for r in runs if r.info.run_id == victim["run_id"])
    assert moved.data.tags["ray.node_ids"].split(",") == [node_ids["worker2"], node_ids["worker1"]]
    # resumed on worker 1 from the checkpoint it made on worker 2: epoch 0 was trained once
    assert epoch_steps(mlflow_url, moved.info.run_id).count(0) == 1


def _experiment_exists(mlflow_url: str) -> bool:
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(mlflow_url).get_experiment_by_name("multinode") is not None
    except Exception:
        return False
