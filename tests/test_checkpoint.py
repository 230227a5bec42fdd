# SPDX-License-Identifier: Apache-2.0
"""haloae.checkpoint: tensors and plain values only, verified on load, refused in one line when
crafted or damaged, through every entry point that reads a checkpoint."""

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from analysis.checkpoints import load_run_checkpoint
from haloae.category_data import prepare_data
from haloae.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from haloae.cli import main
from haloae.train import fit
from haloae.vocab import BEST_ARTIFACT, BEST_FILE, CHECKPOINT_FILE
from tests.helpers.crafted import DAMAGES, damage, write_code_pickle

CATEGORY = "synth_disc"




def _one_line_error(result, *names: str) -> str:
    """The CLI refused: exit 2 and a single ``Error:`` line naming each of ``names``."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for name in names:
        assert name in lines[0]
    return lines[0]


# ---------------------------------------------------------------------- the format
def test_training_files_hold_tensors_and_plain_values_only(trained):
    _, trial = trained
    for name in (CHECKPOINT_FILE, BEST_FILE):
        raw = torch.load(trial.run_dir / name, weights_only=True)  # no allowlist: nothing else is pickled
        assert raw["format"] == "haloae-checkpoint" and len(raw["sha256"]) == 64
    assert isinstance(raw["metrics"]["val/image_auroc"], float)


def test_save_refuses_anything_but_tensors_and_plain_values(tmp_path):
    with pytest.raises(TypeError, match=r"history\[0\]\.auroc: a float64"):
        save_checkpoint({"history": [{"auroc": np.float64(0.5)}]}, tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()


def test_rng_state_round_trips_through_a_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # numpy's cached Gaussian is part of its state too
    save_checkpoint({"rng": rng_state()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.randn(), float(torch.rand(1)))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(read_checkpoint(tmp_path / "rng.pt")["rng"])
    assert (random.random(), np.random.randn(), float(torch.rand(1))) == expected


def test_a_checkpoint_of_an_older_haloae_still_resumes(trained, tmp_path):
    """Version 1 pickled numpy's RNG tuple and numpy float metrics, and had no format key."""
    root, trial = trained
    out = shutil.copytree(trial.run_dir, tmp_path / "old")
    state = read_checkpoint(out / CHECKPOINT_FILE)
    for key in ("format", "version", "objective", "mode"):
        state.pop(key)
    state["rng"]["numpy"] = np.random.get_state()
    state["history"] = [{k: np.float64(v) for k, v in m.items()} for m in state["history"]]
    state["best_value"] = np.float64(state["best_value"])
    torch.save(state, out / CHECKPOINT_FILE)
    upgraded = read_checkpoint(out / CHECKPOINT_FILE)
    assert type(upgraded["best_value"]) is float and isinstance(upgraded["rng"]["numpy"]["state"]["key"], torch.Tensor)
    cfg = trial.cfg.replace(**{"train.epochs": 2})
    result = fit(cfg, prepare_data(cfg, root, CATEGORY), out, progress=False)
    assert read_checkpoint(out / CHECKPOINT_FILE)["epoch"] == 1 and result.best_epoch in (0, 1)


def test_weights_that_do_not_fit_the_config_name_the_file(trained, tmp_path):
    _, trial = trained
    state = read_checkpoint(trial.run_dir / BEST_FILE)
    state["model"].pop(next(iter(state["model"])))
    save_checkpoint(state, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"partial\.pt: its weights do not fit its config \(RuntimeError: Error"):
        load_checkpoint(tmp_path / "partial.pt")


# ---------------------------------------------------------------------- crafted and damaged files
def test_a_pickle_that_runs_a_command_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = write_code_pickle(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert str(err.value).startswith(f"{path}: refused: it holds a pickled object (posix.system)")
    assert "\n" not in str(err.value) and not marker.exists()


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_checkpoint_is_one_line_naming_the_file(trained, tmp_path, how):
    _, trial = trained
    path = damage(shutil.copy(trial.run_dir / BEST_FILE, tmp_path / "best.pt"), how)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    assert {"zero-byte": "empty file", "truncated": "corrupted", "overwritten": "corrupted"}[how] in str(err.value)


# ---------------------------------------------------------------------- every entry point
def test_evaluate_refuses_a_crafted_checkpoint(trained, tmp_path):
    root, _ = trained
    marker = tmp_path / "pwned"
    path = write_code_pickle(tmp_path / "evil.pt", marker)
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(path), "--data-root", str(root), "--category", CATEGORY])
    _one_line_error(result, str(path), "refused")
    assert not marker.exists()


@pytest.mark.parametrize("how", DAMAGES)
def test_evaluate_refuses_a_damaged_checkpoint(trained, tmp_path, how):
    root, trial = trained
    path = damage(shutil.copy(trial.run_dir / BEST_FILE, tmp_path / "best.pt"), how)
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(path), "--data-root", str(root), "--category", CATEGORY])
    _one_line_error(result, str(path))


def test_evaluate_refuses_nan_scores_instead_of_reporting_them(trained, tmp_path):
    """Weights that are NaN but intact (a diverged run): an error, not an AUROC of NaN scores."""
    root, trial = trained
    state = read_checkpoint(trial.run_dir / BEST_FILE)
    state["model"] = {k: v.float().fill_(float("nan")) if v.is_floating_point() else v for k, v in state["model"].items()}
    save_checkpoint(state, tmp_path / "nan.pt")
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "nan.pt"), "--data-root", str(root), "--category", CATEGORY])
    _one_line_error(result, "nan.pt", "non-finite")


def test_train_refuses_to_resume_from_a_crafted_checkpoint(trained, tmp_path):
    root, _ = trained
    marker, out = tmp_path / "pwned", tmp_path / "run"
    out.mkdir()
    write_code_pickle(out / CHECKPOINT_FILE, marker)
    result = CliRunner().invoke(
        main, ["train", "--data-root", str(root), "--category", CATEGORY, "--preset", "tiny", "--out", str(out)]
    )
    _one_line_error(result, str(out / CHECKPOINT_FILE), "refused")
    assert not marker.exists()


class _ArtifactClient:
    """MLflow's ``download_artifacts`` serving one local file as every run's best.pt."""

    def __init__(self, source):
        self.source = source

    def download_artifacts(self, run_id, path, dst_path):
        target = Path(dst_path) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.source, target)
        return str(target)


def test_export_and_figures_refuse_a_crafted_artifact(tmp_path):
    """``haloae export`` and ``haloae figures`` read a run's best.pt through ``load_run_checkpoint``."""
    marker = tmp_path / "pwned"
    client = _ArtifactClient(write_code_pickle(tmp_path / "evil.pt", marker))
    with pytest.raises(CheckpointError) as err:
        load_run_checkpoint(client, "abc123", tmp_path / "download")
    assert str(err.value).startswith(f"run abc123: artifact {BEST_ARTIFACT}: {tmp_path / 'download' / BEST_ARTIFACT}: refused")
    assert "\n" not in str(err.value) and not marker.exists()


def test_run_checkpoint_rebuilds_the_trained_model(trained, tmp_path):
    _, trial = trained
    best = load_run_checkpoint(_ArtifactClient(trial.run_dir / BEST_FILE), "abc123", tmp_path)
    model, _, _ = load_checkpoint(trial.run_dir / BEST_FILE)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(best.model.state_dict()[key], value, rtol=0, atol=0)
    assert best.state["epoch"] == 0 and not best.model.training
