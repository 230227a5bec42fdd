# SPDX-License-Identifier: Apache-2.0
"""The ``haloae`` command: bad input is one line on stderr and exit code 2, before any work."""

import json

from click.testing import CliRunner

from haloae.cli import main


def _run(*args):
    return CliRunner().invoke(main, list(args))


def test_config_prints_the_flat_effective_config():
    result = _run("config", "--preset", "cpu", "--set", "model.block_size=4", "--variant", "ae_l2")
    assert result.exit_code == 0, result.output
    flat = json.loads(result.output)
    assert flat["model.block_size"] == 4 and flat["model.arch"] == "ae_l2" and flat["variant"] == "ae_l2"


def test_bad_override_is_one_line_and_exit_2():
    result = _run("config", "--set", "model.block_size=61")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [lines[0]] and "model.block_size: 61 cannot tile" in lines[0]


def test_train_rejects_a_missing_category_before_training(tmp_path):
    (tmp_path / "data" / "real").mkdir(parents=True)
    result = _run("train", "--data-root", str(tmp_path / "data"), "--category", "nope", "--preset", "tiny",
                  "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "nope" in result.output and len([x for x in result.output.splitlines() if x.strip()]) == 1
    assert not (tmp_path / "run").exists()


def test_synth_then_train_then_evaluate(tmp_path):
    assert _run("synth", "--out", str(tmp_path / "d"), "--categories", "synth_pill", "--size", "64").exit_code == 0
    args = ["--data-root", str(tmp_path / "d"), "--category", "synth_pill"]
    result = _run("train", *args, "--preset", "tiny", "--set", "model.backbone.weights=random",
                  "--set", "train.epochs=1", "--set", "train.steps_per_epoch=1", "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "test/image_auroc" in result.output
    result = _run("evaluate", "--checkpoint", str(tmp_path / "run" / "best.pt"), *args, "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert abs(metrics["test/image_auroc"] - saved["test/image_auroc"]) < 1e-6


def test_unknown_synth_category_is_a_usage_error(tmp_path):
    result = _run("synth", "--out", str(tmp_path), "--categories", "synth_nope")
    assert result.exit_code == 2 and "synth_nope" in result.output
