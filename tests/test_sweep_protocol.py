# SPDX-License-Identifier: Apache-2.0
"""Measuring vs searching sweeps and the screen -> confirm protocol (``sweeps.protocol``): what the
dry run refuses and lists, the stage specs, the choice of the top-k, and both stages end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from haloae.cli import main
from haloae.vocab import ROLE_PARENT, STAGE_CONFIRM, STAGE_SCREEN, TAG_PARENT_RUN, TAG_ROLE, TAG_STAGE
from sweeps.errors import SpecError
from sweeps.loading import load_spec
from sweeps.protocol import CONFIRMED_ARTIFACT, ProtocolOutcome, choose, confirm_spec, planned_points, screen_spec
from sweeps.runner import SweepOutcome, TrialOutcome
from sweeps.trials import build_config, trial_grid
from tests.helpers.sweeps import epoch_steps, tiny_spec, trial_runs

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"

LRS = [1e-4, 1e-3, 3e-3]
METRIC = "val/image_auroc"


def two_stage(tmp_path, name="proto", select="overall", **fields):
    """A tiny two-stage sweep: 3 learning rates screened under ASHA on seed 0, the top 2 confirmed on seeds 0, 1."""
    path = tiny_spec(
        tmp_path, name, purpose="search",
        search={"algorithm": "grid", "space": {"optim.lr": {"grid": LRS}}},
        protocol={
            "screen": {"scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2}, "seeds": [0]},
            "confirm": {"top_k": 2, "seeds": [0, 1], "select": select},
        },
        **fields,
    )  # fmt: skip
    raw = yaml.safe_load(path.read_text())
    del raw["seeds"]  # each stage has its own
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def dry_run(path, *args):
    return CliRunner().invoke(main, ["sweep", str(path), "--dry-run", *args])


# ---------------------------------------------------------------------- measure vs search at the dry run
@pytest.mark.parametrize("fields,path", [
    ({"scheduler": {"type": "asha", "grace_period": 1}}, "scheduler.type: asha stops trials early"),
    ({"search": {"algorithm": "random", "space": {"optim.lr": {"loguniform": [1e-4, 1e-2]}}}}, "search.algorithm: random draws"),
])  # fmt: skip
def test_a_measuring_sweep_that_would_lose_cells_is_refused_at_the_dry_run(tmp_path, fields, path):
    spec = tiny_spec(tmp_path, "table", **fields)  # no purpose: measure is the default
    result = dry_run(spec)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {spec}: {path}") and "purpose: search" in lines[0]
    assert not (tmp_path / "sweeps").exists()  # nothing written
    assert dry_run(tiny_spec(tmp_path, "search", purpose="search", **fields)).exit_code == 0  # allowed when searching


def test_the_dry_run_lists_and_costs_both_stages(tmp_path):
    result = dry_run(two_stage(tmp_path))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "stage 1 of 2, screen: every configuration on seeds [0], scheduler asha" in out
    assert "proto: 6 trials (grid search)" in out  # 3 learning rates x 2 categories x seed 0
    assert "stage 2 of 2, confirm: the top 2 configurations overall by val/image_auroc (validation)" in out
    assert "proto: 8 trials (grid search)" in out  # 2 configurations x 2 categories x 2 seeds
    assert out.count("estimated cost:") == 2 and not (tmp_path / "sweeps").exists()


def test_the_sweep_command_runs_a_protocol_as_its_two_stages(tmp_path, monkeypatch):
    import sweeps.protocol
    import sweeps.runner

    called = []
    monkeypatch.setattr(sweeps.runner, "loopback_ray", lambda address: None)
    monkeypatch.setattr(sweeps.runner, "run_sweep", lambda *a, **k: pytest.fail("a protocol runs its stages, not itself"))
    monkeypatch.setattr(sweeps.protocol, "run_protocol", lambda spec, **k: called.append(spec) or _outcome_without_confirm(spec))
    result = CliRunner().invoke(main, ["sweep", str(two_stage(tmp_path))])
    assert len(called) == 1 and called[0].protocol is not None
    assert "confirm: not run" in result.output and result.exit_code == 0


def _outcome_without_confirm(spec) -> ProtocolOutcome:
    return ProtocolOutcome(SweepOutcome(screen_spec(spec), [], "parent"), [], None)


# ---------------------------------------------------------------------- stage specs
def test_stage_specs(tmp_path):
    spec = load_spec(two_stage(tmp_path))
    screen = screen_spec(spec)
    assert screen.stage == STAGE_SCREEN and screen.purpose == "search" and screen.protocol is None
    assert screen.scheduler.type == "asha" and screen.seeds == [0] and len(trial_grid(screen)) == 3 * 2
    assert screen.tune_dir_name() == "ray-screen" and spec.tune_dir_name() == "ray"
    assert screen.sha256() == spec.sha256() and screen.name == spec.name and screen.yaml_text == spec.yaml_text

    confirm = confirm_spec(spec, [{"variant": "haloae", "optim.lr": 1e-3}])
    assert confirm.stage == STAGE_CONFIRM and confirm.purpose == "measure" and confirm.scheduler.type == "fifo"
    assert confirm.tune_dir_name() == "ray-confirm" and confirm.sha256() == spec.sha256()
    assert trial_grid(confirm) == [
        {"variant": "haloae", "category": c, "seed": s, "optim.lr": 1e-3} for c in ("synth_disc", "synth_brick") for s in (0, 1)
    ]
    assert confirm.search.tune_samples() == 1  # one point: Tune expands it over category x seed
    per_category = confirm_spec(spec, [{"variant": "haloae", "optim.lr": 3e-3, "category": "synth_brick"}])
    assert trial_grid(per_category) == [{"variant": "haloae", "category": "synth_brick", "seed": s, "optim.lr": 3e-3} for s in (0, 1)]


def test_confirm_points_with_list_values_build_their_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = load_spec(SWEEPS / "kernel_sizes.yaml")  # a grid of tuple-valued keys
    confirm = confirm_spec(spec, planned_points(spec))
    rows = trial_grid(confirm)
    assert len(rows) == 3 * len(spec.categories()) * 3  # top 3 x every category x 3 seeds
    cfg = build_config(confirm, rows[0])
    assert cfg.model.encoder_kernels == (3, 3, 3, 3) and cfg.model.decoder_kernels == (3, 3, 3, 3, 1)


# ---------------------------------------------------------------------- choosing the top-k
def trial(lr, category, epoch, val, test, status="TERMINATED"):
    params = {"variant": "haloae", "category": category, "seed": 0, "optim.lr": lr}
    return TrialOutcome(f"t{lr}-{category}", params, status, {"epoch": epoch, METRIC: val, "test/image_auroc": test})


def test_choose_ranks_by_validation_and_epochs_reached_never_by_test(tmp_path):
    spec = load_spec(two_stage(tmp_path))
    last = spec.epochs() - 1
    trials = [
        trial(1e-4, "synth_disc", last, 0.70, 0.99), trial(1e-4, "synth_brick", last, 0.70, 0.99),
        trial(1e-3, "synth_disc", last, 0.90, 0.10), trial(1e-3, "synth_brick", last, 0.80, 0.10),
        # stopped by ASHA after epoch 0 with a high early value: ranked below the trials that went on
        trial(3e-3, "synth_disc", 0, 0.99, 0.50, "STOPPED"), trial(3e-3, "synth_brick", 0, 0.99, 0.50, "STOPPED"),
    ]  # fmt: skip
    outcome = SweepOutcome(screen_spec(spec), trials, "p")
    assert choose(spec, outcome) == [{"variant": "haloae", "optim.lr": 1e-3}, {"variant": "haloae", "optim.lr": 1e-4}]
    # a failed trial is no candidate, whatever it reported
    failed = [*trials[:4], trial(3e-3, "synth_disc", last, 1.0, 1.0, "ERROR")]
    assert [p["optim.lr"] for p in choose(spec, SweepOutcome(screen_spec(spec), failed, "p"))] == [1e-3, 1e-4]

    per_category = load_spec(two_stage(tmp_path, "per_cat", select="per_category", objective={"mode": "min"}))
    points = choose(per_category, SweepOutcome(screen_spec(per_category), trials, "p"))
    assert points == [  # mode min: the lowest validation values first, per category
        {"variant": "haloae", "optim.lr": 1e-4, "category": "synth_disc"},
        {"variant": "haloae", "optim.lr": 1e-3, "category": "synth_disc"},
        {"variant": "haloae", "optim.lr": 1e-4, "category": "synth_brick"},
        {"variant": "haloae", "optim.lr": 1e-3, "category": "synth_brick"},
    ]


# ---------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_screen_then_confirm_end_to_end(tmp_path):
    ray = pytest.importorskip("ray")
    from mlflow.tracking import MlflowClient

    from sweeps.protocol import run_protocol

    ray.shutdown()
    spec = load_spec(two_stage(
        tmp_path, data={"synthetic": {"categories": ["synth_disc"], "size": 32, "seed": 0}}, overrides={"train.epochs": 2},
    ))
    try:
        outcome = run_protocol(spec)
    finally:
        ray.shutdown()
    assert not outcome.failed, outcome.summary()
    epochs = spec.epochs()

    # the top 2 of the screen by (epochs reached, validation objective)
    ranked = sorted(outcome.screen.trials, key=lambda t: (t.metrics["epoch"], t.metrics[METRIC]), reverse=True)
    top = [t.params["optim.lr"] for t in ranked[:2]]
    assert [p["optim.lr"] for p in outcome.chosen] == top
    confirmed = sorted((t.params["optim.lr"], t.params["seed"]) for t in outcome.confirm.trials)
    assert confirmed == sorted((lr, s) for lr in top for s in (0, 1))
    assert all(t.status == "TERMINATED" and t.metrics["epoch"] == epochs - 1 for t in outcome.confirm.trials)

    uri = spec.tracking_uri()
    runs = trial_runs(uri, spec.experiment_name())
    stages = [r.data.tags.get(TAG_STAGE) for r in runs]
    assert stages.count(STAGE_SCREEN) == len(LRS) and stages.count(STAGE_CONFIRM) == 2 * 2
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(spec.experiment_name())
    parents = client.search_runs([exp.experiment_id], f"tags.`{TAG_ROLE}` = '{ROLE_PARENT}'")
    assert len(parents) == 1 and {r.data.tags[TAG_PARENT_RUN] for r in runs} == {parents[0].info.run_id}
    for run in runs:
        if run.data.tags[TAG_STAGE] == STAGE_CONFIRM:  # the full budget, finished
            assert run.info.status == "FINISHED" and epoch_steps(uri, run.info.run_id) == list(range(epochs))
            assert float(run.data.params["optim.lr"]) in top
    saved = client.download_artifacts(parents[0].info.run_id, CONFIRMED_ARTIFACT, str(tmp_path))
    record = json.loads(Path(saved).read_text())
    assert [p["optim.lr"] for p in record["points"]] == top and record["objective"] == METRIC
    assert {p.name for p in spec.sweep_dir().iterdir() if p.name.startswith("ray")} == {"ray-screen", "ray-confirm"}

    # each stage is its own Tune experiment: run again, it needs --resume; resumed, both stages are kept as they ended
    with pytest.raises(SpecError, match="already ran"):
        run_protocol(spec)
    try:
        resumed = run_protocol(spec, resume=True)
    finally:
        ray.shutdown()
    assert resumed.chosen == outcome.chosen and len(resumed.confirm.trials) == len(outcome.confirm.trials)
    assert len(trial_runs(uri, spec.experiment_name())) == len(runs)  # nothing trained twice
