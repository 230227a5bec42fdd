# SPDX-License-Identifier: Apache-2.0
"""The trainable's pieces that need no Ray: units of a trial, aggregation, resource limits, the
per-node data cache."""

from __future__ import annotations

import math

import pytest
import torch

from sweeps.datacache import cached_category_data
from sweeps.loading import load_spec
from sweeps.trainable import _limit_resources, aggregate, trial_units
from sweeps.trials import build_config
from tests.helpers.sweeps import tiny_spec


def test_units_per_category_and_mean(tmp_path):
    per_category = load_spec(
        tiny_spec(tmp_path, "a", objective={"metric": "val/image_auroc", "mode": "max", "aggregate": "per_category"})
    )
    assert trial_units(per_category, {"category": "synth_disc", "seed": 0}) == [("synth_disc", 0)]
    mean = load_spec(
        tiny_spec(
            tmp_path,
            "b",
            seeds=[0, 1],
            search={"algorithm": "optuna", "num_samples": 1, "space": {"optim.lr": {"loguniform": [1e-4, 1e-2]}}},
            objective={"metric": "val/image_auroc", "mode": "max", "aggregate": "mean"},
            purpose="search",
        )
    )
    assert sorted(trial_units(mean, {})) == [
        ("synth_brick", 0),
        ("synth_brick", 1),
        ("synth_disc", 0),
        ("synth_disc", 1),
    ]


def test_aggregate_is_the_mean_of_shared_finite_metrics():
    out = aggregate([{"val/image_auroc": 0.5, "x": 1.0, "only_a": 3.0}, {"val/image_auroc": 1.0, "x": math.nan}])
    assert out == {"val/image_auroc": 0.75, "x": 1.0}
    assert aggregate([{"a": 1.0}]) == {"a": 1.0}


def test_booked_cpus_limit_torch_threads(tmp_path):
    before = torch.get_num_threads()
    try:
        spec = load_spec(tiny_spec(tmp_path, "c", resources={"cpu": 1}))
        _limit_resources(spec)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("fails", [False, True], ids=["finished", "failed"])
def test_a_trial_run_in_process_gives_the_caller_its_thread_count_back(tmp_path, monkeypatch, fails):
    """The trial trains with its booked CPUs (1 here) as in a Ray actor, but called in-process (a
    test, a notebook) it leaves the caller's torch threads as they were, also when it fails.
    Checked here in the body: the autouse fixture of conftest restores the count only afterwards."""
    from haloae.vocab import ENV_DATA_CACHE, ENV_INJECT_FAULT
    from sweeps import tracking, trainable
    from sweeps.runner import generate_data
    from tests.helpers.sweeps import trial_runs

    monkeypatch.setenv(ENV_DATA_CACHE, str(tmp_path / "cache"))
    if fails:
        monkeypatch.setenv(ENV_INJECT_FAULT, f"epoch=0,marker={tmp_path / 'fault'}")
    spec = load_spec(
        tiny_spec(
            tmp_path,
            "threads",
            resources={"cpu": 1},
            overrides={"train.epochs": 1, "train.steps_per_epoch": 1},
            data={"synthetic": {"categories": ["synth_disc"], "size": 32, "seed": 0}, "categories": "all"},
        )
    )
    generate_data(spec)
    parent = tracking.ensure_parent_run(
        spec.tracking_uri(),
        spec.experiment_name(),
        spec.name,
        spec.sha256(),
        None,
        [],
        artifacts=tracking.artifact_location(spec.tracking_uri(), spec.sweep_dir()),
    )
    seen = []
    train = trainable._train
    monkeypatch.setattr(trainable, "_train", lambda *a, **k: (seen.append(torch.get_num_threads()), train(*a, **k)))
    torch.set_num_threads(2)  # the caller's own count, not the booked one
    if fails:
        with pytest.raises(FloatingPointError, match="injected"):
            trainable.run_trial(
                {"variant": "haloae", "category": "synth_disc", "seed": 0}, spec=spec, parent_run_id=parent
            )
    else:
        trainable.run_trial({"variant": "haloae", "category": "synth_disc", "seed": 0}, spec=spec, parent_run_id=parent)
    assert seen == [1], "the trial trains with its booked CPUs"
    assert torch.get_num_threads() == 2  # old code: 1, for the rest of the session
    (run,) = trial_runs(spec.tracking_uri(), spec.experiment_name())
    assert run.info.status == ("FAILED" if fails else "FINISHED")


def test_the_gpu_memory_share_of_an_in_process_trial_is_put_back(tmp_path, monkeypatch):
    """The booked GPU fraction caps the trial, then the caller's cap is back (CUDA faked: no GPU here)."""
    from sweeps.trainable import _process_limits_restored

    fractions = [0.5]  # the caller's own cap
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device=None: fractions[-1])
    monkeypatch.setattr(
        torch.cuda, "set_per_process_memory_fraction", lambda fraction, device=None: fractions.append(fraction)
    )
    spec = load_spec(tiny_spec(tmp_path, "gpu", resources={"cpu": 1, "gpu": 0.25}))
    during = _process_limits_restored(lambda: (_limit_resources(spec), fractions[-1])[1])()
    assert during == 0.25 and fractions[-1] == 0.5


def test_data_cache_builds_once_then_memory_maps(tmp_path):
    from haloae.synth import generate

    spec = load_spec(tiny_spec(tmp_path, "d"))
    generate(spec.data_root(), categories=["synth_disc"], size=32, seed=0)
    cfg = build_config(spec, {"variant": "haloae", "category": "synth_disc", "seed": 0})
    first = cached_category_data(cfg, spec.data_root(), "synth_disc", tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("synth_disc-*.pt"))) == 1
    second = cached_category_data(cfg, spec.data_root(), "synth_disc", tmp_path / "cache")
    torch.testing.assert_close(second.test.images, first.test.images)
    torch.testing.assert_close(second.val.masks, first.val.masks)
    assert torch.equal(second.train.images, first.train.images)
    # another split seed is another entry, never a stale one
    other = build_config(spec, {"variant": "haloae", "category": "synth_disc", "seed": 1})
    cached_category_data(other, spec.data_root(), "synth_disc", tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("synth_disc-*.pt"))) == 2


@pytest.mark.parametrize("rule", ["epoch=0,marker={m}"])
def test_fault_injection_raises_once(tmp_path, monkeypatch, rule):
    from haloae.vocab import ENV_INJECT_FAULT
    from sweeps.trainable import _maybe_inject_fault

    monkeypatch.setenv(ENV_INJECT_FAULT, rule.format(m=tmp_path / "m"))
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        _maybe_inject_fault(0)
    _maybe_inject_fault(0)  # the marker exists: the retry goes through


def test_reported_checkpoints_are_links_and_copies_where_links_fail(tmp_path, monkeypatch):
    import os

    from sweeps.run_files import link_or_copy

    src = tmp_path / "checkpoint.pt"
    src.write_bytes(b"epoch 3")
    link_or_copy(src, tmp_path / "linked.pt")
    assert (tmp_path / "linked.pt").stat().st_ino == src.stat().st_ino

    def no_links(*_):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    link_or_copy(src, tmp_path / "copied.pt")
    assert (tmp_path / "copied.pt").read_bytes() == b"epoch 3"
    assert (tmp_path / "copied.pt").stat().st_ino != src.stat().st_ino


def test_an_alpha_plot_drawn_before_is_written_from_its_bytes(tmp_path, monkeypatch):
    """The same schedule in a later trial of the actor: the first drawing's bytes, not a new
    figure; another schedule (other epochs) is drawn."""
    import dataclasses

    import haloae.plots
    from sweeps import run_files

    monkeypatch.setattr(run_files, "_ALPHA_PLOTS", {})
    spec = load_spec(tiny_spec(tmp_path, "plots"))
    cfg = build_config(spec, {"variant": "haloae", "category": "synth_disc", "seed": 0})
    drawn = []
    draw = haloae.plots.plot_alpha_schedule
    monkeypatch.setattr(haloae.plots, "plot_alpha_schedule", lambda *a, **k: (drawn.append(a), draw(*a, **k))[1])
    first = run_files.alpha_plot(cfg, tmp_path / "a" / "alpha.png")
    other_lr = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=cfg.optim.lr * 3))
    again = run_files.alpha_plot(other_lr, tmp_path / "b" / "alpha.png")
    assert len(drawn) == 1 and again.read_bytes() == first.read_bytes()
    longer = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=cfg.train.epochs + 5))
    run_files.alpha_plot(longer, tmp_path / "c" / "alpha.png")
    assert len(drawn) == 2
    draw(cfg, tmp_path / "fresh.png")
    assert (tmp_path / "fresh.png").read_bytes() == first.read_bytes()  # what a fresh drawing gives
