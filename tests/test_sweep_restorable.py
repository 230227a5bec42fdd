# SPDX-License-Identifier: Apache-2.0
"""sweeps.restorable: a driver SIGKILLed between Tune's checkpoint delete and its state save resumes.

The slow test makes the crash deterministic: a Tune callback SIGKILLs the driver in
``on_trial_save`` of the trial's second checkpoint, after Tune deleted the first one and before it
saved the experiment state naming the second, the window an ordinary kill lands in now and then.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.fs
import pytest

from sweeps.restorable import KEPT_DIR, keep_copy, put_back_restorable, saved_checkpoints
from tests.test_sweep_resume import env, start_ray_head, stop

DRIVER = '''
import json, os, signal, sys, tempfile, time
import ray
from ray import tune
from sweeps.restorable import KeepRestorable, put_back_restorable

EPOCHS = 4

def trainable(config):
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as saved:
            start = int(open(os.path.join(saved, "epoch")).read()) + 1
    for epoch in range(start, EPOCHS):
        time.sleep(1.5)  # the state naming the previous checkpoint reaches storage meanwhile
        with tempfile.TemporaryDirectory() as folder:
            open(os.path.join(folder, "epoch"), "w").write(str(epoch))
            tune.report({"epoch": epoch, "resumed_at": start}, checkpoint=tune.Checkpoint.from_directory(folder))

class KillInTheWindow(tune.Callback):
    def __init__(self, marker):
        self.marker = marker
    def on_trial_save(self, iteration, trials, trial, **info):
        if os.path.exists(self.marker):  # the restored run: Tune brought the callbacks back
            print("CALLBACKS RESTORED", flush=True)
        elif trial.checkpoint.path.endswith("checkpoint_000001"):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)

mode, storage, address, keep = sys.argv[1:5]
ray.init(address=address)
experiment = os.path.join(storage, "exp")
if mode == "start":
    callbacks = [KillInTheWindow(os.path.join(storage, "killed"))] + ([KeepRestorable()] if keep == "keep" else [])
    tune.Tuner(
        trainable, param_space={"x": tune.grid_search([0])},
        run_config=tune.RunConfig(
            name="exp", storage_path=storage, verbose=0, callbacks=callbacks,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    ).fit()
else:
    if keep == "keep":
        put_back_restorable(experiment)
    grid = tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=True).fit()
    (result,) = list(grid)
    print("RESULT " + json.dumps({"error": result.error is not None, "metrics": result.metrics}))
'''


def _driver(tmp_path: Path, mode: str, address: str, keep: str) -> subprocess.CompletedProcess:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    repo = str(Path(__file__).resolve().parents[1])
    environment = {**env(), "PYTHONPATH": repo, "RAY_CHDIR_TO_TRIAL_DIR": "0"}
    return subprocess.run(
        [sys.executable, str(script), mode, str(tmp_path / "store"), address, keep],
        env=environment, capture_output=True, text=True, timeout=240,
    )


@pytest.mark.slow
@pytest.mark.parametrize("keep", ["keep", "tune-alone"])
def test_a_driver_killed_after_tunes_checkpoint_delete_resumes_from_the_kept_copy(tmp_path, keep):
    head, address = start_ray_head(tmp_path / "ray-head.log")
    try:
        killed = _driver(tmp_path, "start", address, keep)
        assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-3000:]
        experiment = tmp_path / "store" / "exp"
        ((trial_dir, named),) = saved_checkpoints(str(experiment)).items()
        # the crash landed in the window: the saved state names a checkpoint Tune already deleted
        assert named == "checkpoint_000000"
        assert not (experiment / trial_dir / named).exists()
        assert (experiment / trial_dir / KEPT_DIR / named).is_dir() == (keep == "keep")

        resumed = _driver(tmp_path, "resume", address, keep)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        line = next(x for x in resumed.stdout.splitlines() if x.startswith("RESULT "))
        result = json.loads(line.removeprefix("RESULT "))
        assert "CALLBACKS RESTORED" in resumed.stdout  # so KeepRestorable guards the resumed run too
        if keep == "keep":
            assert not result["error"]
            assert result["metrics"]["epoch"] == 3
            assert result["metrics"]["resumed_at"] == 1  # went on after epoch 0, did not start over
            assert not list((experiment / trial_dir / KEPT_DIR).iterdir()), "kept copies outlived the sweep"
        else:  # what the kept copy prevents: Tune alone loses the trial
            assert result["error"]
            assert "does not exist on storage anymore" in resumed.stdout + resumed.stderr
    finally:
        stop(head)


def _write_state(experiment: Path, named: dict[str, str | None], stamp: str = "2026-12-03_10-00-00") -> None:
    trials = []
    for trial_dir, checkpoint in named.items():
        trial = {"trial_id": trial_dir[-5:], "relative_logdir": trial_dir}
        runtime = {"last_result": {"checkpoint_dir_name": checkpoint, "training_iteration": 1}}
        trials.append([json.dumps(trial), json.dumps(runtime)])
    (experiment / f"experiment_state-{stamp}.json").write_text(json.dumps({"trial_data": trials}))


def test_the_newest_saved_state_decides_which_checkpoint_is_named(tmp_path):
    _write_state(tmp_path, {"fn_00000": "checkpoint_000002", "fn_00001": None}, "2026-12-03_10-00-00")
    assert saved_checkpoints(str(tmp_path)) == {"fn_00000": "checkpoint_000002"}  # no checkpoint yet: left out
    _write_state(tmp_path, {"fn_00000": "checkpoint_000004"}, "2026-12-03_11-00-00")
    assert saved_checkpoints(str(tmp_path)) == {"fn_00000": "checkpoint_000004"}
    assert saved_checkpoints(str(tmp_path / "nowhere")) == {}


def test_a_kept_copy_shares_the_files_and_is_never_half_a_checkpoint(tmp_path):
    source = tmp_path / "trial" / "checkpoint_000001"
    (source / "unit-s0").mkdir(parents=True)
    (source / "unit-s0" / "checkpoint.pt").write_bytes(b"weights")
    dest = tmp_path / "trial" / KEPT_DIR / "checkpoint_000001"
    (dest.parent / "checkpoint_000001.partial" / "junk").mkdir(parents=True)  # an interrupted earlier copy
    keep_copy(pyarrow.fs.LocalFileSystem(), str(source), str(dest))
    kept = dest / "unit-s0" / "checkpoint.pt"
    assert kept.read_bytes() == b"weights"
    assert os.stat(kept).st_ino == os.stat(source / "unit-s0" / "checkpoint.pt").st_ino  # a hard link: no data copied
    assert sorted(p.name for p in dest.parent.iterdir()) == ["checkpoint_000001"]
    import shutil

    shutil.rmtree(source)  # what Tune's delete does
    assert kept.read_bytes() == b"weights"


def test_put_back_moves_only_a_named_checkpoint_that_is_gone(tmp_path):
    for trial_dir in ("fn_00000", "fn_00001"):
        (tmp_path / trial_dir / KEPT_DIR / "checkpoint_000003").mkdir(parents=True)
    (tmp_path / "fn_00001" / "checkpoint_000003").mkdir()  # still in place: nothing to do
    (tmp_path / "fn_00000" / "checkpoint_000004").mkdir()  # newer than the state: left alone
    _write_state(tmp_path, {"fn_00000": "checkpoint_000003", "fn_00001": "checkpoint_000003"})
    assert put_back_restorable(str(tmp_path)) == ["fn_00000/checkpoint_000003"]
    assert (tmp_path / "fn_00000" / "checkpoint_000003").is_dir()
    assert not (tmp_path / "fn_00000" / KEPT_DIR / "checkpoint_000003").exists()
    assert (tmp_path / "fn_00001" / KEPT_DIR / "checkpoint_000003").is_dir()
