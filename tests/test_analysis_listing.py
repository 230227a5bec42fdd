# SPDX-License-Identifier: Apache-2.0
"""``haloae sweeps``: the state of each sweep folder, on crafted folders (a held lock, a stale one,
Tune's state files, the MLflow parent run's status); no Ray is started. The real sweep's folder is
listed in test_analysis_sweep.py."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
from click.testing import CliRunner

from analysis.listing import FAILED, FINISHED, INTERRUPTED, NOT_STARTED, RUNNING, list_sweeps, lock_holder, sweep_state
from haloae.cli import main
from haloae.vocab import (
    ROLE_PARENT,
    SWEEP_LOCK_FILE,
    SWEEP_SPEC_FILE,
    TAG_FAILED_TRIALS,
    TAG_ROLE,
    TAG_SWEEP,
    TRACKING_DB_FILE,
)
from sweeps.lock import SweepLock
from tests.helpers.sweeps import tiny_spec

TOTAL = 2  # tiny_spec: one variant x 2 categories x 1 seed, a trial per (category, seed)


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """An MLflow sqlite store with its schema, created once and copied into each crafted folder."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("store") / TRACKING_DB_FILE
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def craft(storage, name, *, spec=True, statuses=None, parent=None, failed=0, store=None):
    """A sweep folder: ``spec.yaml``, Tune's state with ``statuses`` (a list, or a list per state file,
    oldest first), and a parent run ending ``parent`` (RUNNING leaves it open)."""
    folder = storage / name
    folder.mkdir(parents=True)
    if spec:
        shutil.copy(tiny_spec(storage.parent, name), folder / SWEEP_SPEC_FILE)
    if statuses is not None:
        (folder / "ray").mkdir()
        files = statuses if statuses and isinstance(statuses[0], list) else [statuses]
        for i, states in enumerate(files):  # Tune's experiment_state-<time>.json layout
            trial_data = [[json.dumps({"trial_id": f"t{j}", "status": s, "config": {}}), json.dumps({"last_result_time": 0})]
                          for j, s in enumerate(states)]  # fmt: skip
            path = folder / "ray" / f"experiment_state-2026-12-02_01-00-0{i}.json"
            path.write_text(json.dumps({"trial_data": trial_data, "runner_data": {}, "stats": {"start_time": 0}}))
            os.utime(path, (1_000_000 + i, 1_000_000 + i))
    if parent is not None:
        from mlflow import MlflowClient

        shutil.copy(store, folder / TRACKING_DB_FILE)
        client = MlflowClient(f"sqlite:///{folder / TRACKING_DB_FILE}")
        experiment = client.create_experiment(name)
        run = client.create_run(experiment, tags={TAG_SWEEP: name, TAG_ROLE: ROLE_PARENT}, run_name=name).info.run_id
        client.set_tag(run, TAG_FAILED_TRIALS, str(failed))
        if parent != "RUNNING":
            client.set_terminated(run, parent)
    return folder


def test_a_held_lock_is_running_and_names_its_holder(tmp_path):
    folder = craft(tmp_path / "sweeps", "busy", statuses=["TERMINATED", "RUNNING"])
    with SweepLock(folder, "busy"):
        state = sweep_state(folder)
        assert state.state == RUNNING and (state.done, state.total) == (1, TOTAL)
        assert "lock held by pid" in state.detail
    assert lock_holder(folder) is None  # released: the probe itself held nothing


def test_a_stale_lock_file_is_not_running(tmp_path, empty_store):
    folder = craft(tmp_path / "sweeps", "done", statuses=["TERMINATED", "TERMINATED"], parent="FINISHED", store=empty_store)
    (folder / SWEEP_LOCK_FILE).write_text("999999 gone-host\n")  # its process died: the kernel dropped the flock
    state = sweep_state(folder)
    assert (state.state, state.done, state.total, state.failed) == (FINISHED, 2, TOTAL, 0)
    assert (folder / SWEEP_LOCK_FILE).read_text() == "999999 gone-host\n"  # the listing changed nothing


@pytest.mark.parametrize(
    ("parent", "statuses", "why"),
    [
        ("KILLED", ["TERMINATED", "PENDING"], "stopped by a signal"),  # SIGINT: the parent ended KILLED
        ("RUNNING", ["TERMINATED", "RUNNING"], "its driver is gone"),  # SIGKILL: the parent never ended
        ("FINISHED", ["TERMINATED"], "parent run FINISHED"),  # fewer trials than the definition has
    ],
)
def test_interrupted_sweeps(tmp_path, empty_store, parent, statuses, why):
    folder = craft(tmp_path / "sweeps", "stopped", statuses=statuses, parent=parent, store=empty_store)
    state = sweep_state(folder)
    assert state.state == INTERRUPTED and state.done == 1 and state.total == TOTAL
    assert why in state.detail and "--resume" in state.detail


def test_errored_trials_make_a_failed_sweep(tmp_path, empty_store):
    folder = craft(tmp_path / "sweeps", "bad", statuses=["TERMINATED", "ERROR"], parent="FINISHED", failed=1, store=empty_store)
    state = sweep_state(folder)
    assert (state.state, state.done, state.total, state.failed) == (FAILED, 2, TOTAL, 1)


def test_the_newest_tune_state_file_counts(tmp_path):
    folder = craft(tmp_path / "sweeps", "later", statuses=[["PENDING", "PENDING"], ["TERMINATED", "TERMINATED"]])
    state = sweep_state(folder)
    assert (state.state, state.done) == (FINISHED, 2)


def test_cli_lists_every_sweep_without_starting_ray(tmp_path, empty_store, monkeypatch):
    storage = tmp_path / "sweeps"
    craft(storage, "a_done", statuses=["TERMINATED", "TERMINATED"], parent="FINISHED", store=empty_store)
    craft(storage, "b_new")
    (storage / "not_a_sweep").mkdir()
    monkeypatch.setitem(sys.modules, "ray", None)  # any `import ray` (or ray.tune) inside now raises ImportError
    result = CliRunner().invoke(main, ["sweeps", "--storage", str(storage)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["a_done", FINISHED, f"2/{TOTAL}"]
    assert lines[1].startswith("b_new") and NOT_STARTED in lines[1] and f"0/{TOTAL}" in lines[1]
    assert len(lines) == 2  # not_a_sweep holds no sweep record
    assert [s.name for s in list_sweeps(storage)] == ["a_done", "b_new"]


def test_a_missing_storage_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["sweeps", "--storage", str(tmp_path / "nowhere")])
    assert result.exit_code == 2, result.output
    assert [line for line in result.output.splitlines() if line] == [f"Error: --storage {tmp_path / 'nowhere'}: no such folder (sweeps are written to <storage>/<name>/)"]
