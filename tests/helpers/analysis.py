# SPDX-License-Identifier: Apache-2.0
"""MLflow data for the analysis tests, written in exactly the sweep layer's contract, in ONE place.

``log_sweep`` writes what one sweep leaves in MLflow: a parent run (tags ``sweep``,
``spec_sha256``, ``haloae.role=parent``, ``haloae.varied``; artifact ``spec.yaml``) and a nested
child run per (trial, category, seed) (tags ``sweep``, ``trial_id``, ``category``, ``variant``,
``seed``, ``data_root``, ``haloae.role=trial``, ``error`` on failure; params = ``cfg.flatten()``
as strings; per-epoch metrics at step = epoch; the final ``val/*`` and ``test/*`` metrics at step
= best epoch; artifacts ``config.json``, ``metrics.json``, ``checkpoint/best.pt``, ``overlays/``).

Two trial sources feed it: ``fake_trials`` (metric values chosen here, so tables can be checked
by hand, with FAILED and RUNNING runs) and ``trained_trials`` (real tiny ``haloae.train.fit``
runs). ``real_sweep`` runs a real small sweep (Ray Tune + MLflow) and describes it the same way:
the export, serve and predict tests use it. ``cell_by_hand`` / ``group_by_hand`` compute a table's
statistics from the raw trials, independently of ``analysis.tables``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from haloae.categories import DEFECT_TYPES
from haloae.config import HaloAEConfig
from haloae.scoring import MAP_SCORINGS, SCORINGS
from haloae.vocab import (
    CONFIG_FILE,
    METRICS_FILE,
    QUIET_ENV,
    ROLE_PARENT,
    ROLE_TRIAL,
    TAG_CATEGORY,
    TAG_DATA_ROOT,
    TAG_ERROR,
    TAG_PARENT_RUN,
    TAG_ROLE,
    TAG_SEED,
    TAG_SPEC_SHA256,
    TAG_SWEEP,
    TAG_TRIAL_ID,
    TAG_VARIANT,
    TAG_VARIED,
)

os.environ.update(QUIET_ENV)

FAKE_VARIANTS = ("haloae", "equal_weights", "uncertainty_weighting")
FAKE_CATEGORIES = ("synth_brick", "synth_disc")  # a texture and an object
SEEDS = (0, 1)
BEST_EPOCH = 1  # of epochs 0, 1, 2: the last epoch is *not* the best, as in real runs
TINY = {"model.backbone.weights": "random", "train.epochs": 1, "train.steps_per_epoch": 2, "train.batch_size": 2}


@dataclass
class Trial:
    """One child run: its identity, status, metrics and artifact files."""

    trial_id: str
    category: str
    seed: int
    cfg: HaloAEConfig
    status: str = "FINISHED"  # FINISHED | FAILED | RUNNING
    epochs: list[dict[str, float]] = field(default_factory=list)  # per-epoch metrics, step = index
    final: dict[str, float] = field(default_factory=dict)  # val/* test/* best_epoch; step = best epoch
    error: str = ""
    run_dir: Path | None = None  # a haloae.train output folder (best.pt, metrics.json, overlays/)
    run_id: str = ""  # filled by log_sweep


@dataclass
class LoggedSweep:
    name: str
    tracking_uri: str
    storage: Path
    parent_run_id: str
    trials: list[Trial]
    data_root: Path | None = None


def log_sweep(storage: Path, name: str, trials: list[Trial], varied: str | None, data_root: Path | None = None,
              tracking_uri: str | None = None) -> LoggedSweep:  # fmt: skip
    """Write a sweep's parent and child runs into ``<storage>/<name>/mlflow.db`` (or ``tracking_uri``)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    folder = storage / name
    folder.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri or f"sqlite:///{(folder / 'mlflow.db').resolve()}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name, artifact_location=(folder / "artifacts").resolve().as_uri())
    spec = folder / "spec.yaml"
    spec.write_text(f"name: {name}\n")
    parent_tags = {TAG_SWEEP: name, TAG_SPEC_SHA256: hashlib.sha256(spec.read_bytes()).hexdigest(), TAG_ROLE: ROLE_PARENT}
    if varied is not None:
        parent_tags[TAG_VARIED] = varied
    parent = client.create_run(experiment_id, run_name=name, tags=parent_tags).info.run_id
    client.log_artifact(parent, str(spec))
    now = int(time.time() * 1000)
    for trial in trials:
        tags = {
            TAG_PARENT_RUN: parent, TAG_SWEEP: name, TAG_TRIAL_ID: trial.trial_id, TAG_CATEGORY: trial.category,
            TAG_VARIANT: trial.cfg.variant, TAG_SEED: str(trial.seed), TAG_ROLE: ROLE_TRIAL,
        }  # fmt: skip
        if data_root is not None:
            tags[TAG_DATA_ROOT] = str(data_root)
        if trial.error:
            tags[TAG_ERROR] = trial.error
        run = client.create_run(experiment_id, run_name=f"{trial.trial_id}-{trial.category}-{trial.seed}", tags=tags)
        trial.run_id = run.info.run_id
        # as the sweep layer logs them: tuples as JSON lists, everything else str()
        params = [Param(k, json.dumps(list(v)) if isinstance(v, tuple) else str(v)) for k, v in trial.cfg.flatten().items()]
        metrics = [Metric(k, float(v), now + step, step) for step, epoch in enumerate(trial.epochs) for k, v in epoch.items()]
        best = int(trial.final.get("best_epoch", 0))
        metrics += [Metric(k, float(v), now + 100, best) for k, v in trial.final.items()]
        client.log_batch(trial.run_id, metrics=metrics, params=params)
        client.log_dict(trial.run_id, trial.cfg.to_dict(), CONFIG_FILE)
        if trial.final:
            client.log_dict(trial.run_id, trial.final, METRICS_FILE)
        if trial.run_dir is not None:
            client.log_artifact(trial.run_id, str(trial.run_dir / "best.pt"), "checkpoint")
            if (trial.run_dir / "overlays").is_dir():
                client.log_artifacts(trial.run_id, str(trial.run_dir / "overlays"), "overlays")
        if trial.status != "RUNNING":
            client.set_terminated(trial.run_id, trial.status)
    client.set_terminated(parent, "FINISHED")
    return LoggedSweep(name, uri, storage, parent, trials, data_root)


# ---------------------------------------------------------------------- trials with chosen metrics
def _fake_metrics(rng: np.random.Generator, category: str) -> dict[str, float]:
    """One run's final metrics for one split-less set of names (values in [0.5, 1], 4 decimals)."""
    out: dict[str, float] = {}
    for scoring in SCORINGS:
        out[f"{scoring}/image_auroc"] = round(float(rng.uniform(0.5, 1.0)), 4)
        if scoring in MAP_SCORINGS:
            out[f"{scoring}/pixel_auroc"] = round(float(rng.uniform(0.5, 1.0)), 4)
            out[f"{scoring}/aupro"] = round(float(rng.uniform(0.2, 0.9)), 4)
    for key in ("image_auroc", "pixel_auroc", "aupro"):  # the default scoring without its prefix
        out[key] = out[f"afm_norm_filter/{key}"]
    for defect in DEFECT_TYPES[category]:
        out[f"defect/{defect}/image_auroc"] = round(float(rng.uniform(0.5, 1.0)), 4)
    return out


def fake_trials(categories=FAKE_CATEGORIES, variants=FAKE_VARIANTS, seeds=SEEDS, overrides=None) -> list[Trial]:
    """Variants x categories x seeds FINISHED, plus one FAILED and one RUNNING run."""
    trials = []
    for v, variant in enumerate(variants):
        for c, category in enumerate(categories):
            for seed in seeds:
                rng = np.random.default_rng([v, c, seed])
                cfg = HaloAEConfig.from_overrides("tiny", {**TINY, **(overrides or {}), "train.seed": seed}, variant=variant)
                val, test = _fake_metrics(rng, category), _fake_metrics(rng, category)
                final = {f"val/{k}": x for k, x in val.items()} | {f"test/{k}": x for k, x in test.items()}
                final["best_epoch"] = BEST_EPOCH
                epochs = []
                for epoch in range(3):
                    drop = 0.0 if epoch == BEST_EPOCH else 0.05  # other epochs validate worse
                    e = {f"val/{k}": x - drop for k, x in val.items() if k.count("/") <= 1}
                    e.update({"train/loss": 1.0 / (epoch + 1), "train/alpha_cls": 0.9 - 0.1 * epoch})
                    epochs.append(e)
                trials.append(Trial(f"t{v}", category, seed, cfg, epochs=epochs, final=final))
    failed_cfg = HaloAEConfig.from_overrides("tiny", {**TINY, "train.seed": 2}, variant=variants[0])
    trials.append(Trial("t0", categories[-1], 2, failed_cfg, "FAILED", epochs=[{"train/loss": float("nan")}],
                        error="FloatingPointError: non-finite training loss nan at epoch 0, step 1"))  # fmt: skip
    running_cfg = HaloAEConfig.from_overrides("tiny", {**TINY, "train.seed": 2}, variant=variants[1])
    trials.append(Trial("t1", categories[0], 2, running_cfg, "RUNNING", epochs=[{"train/loss": 0.5, "val/image_auroc": 0.7}]))
    return trials


GRID = {"model.block_size": (1, 2, 3), "model.halo_size": (1, 2)}


def grid_trials(knobs: dict[str, tuple] = GRID, category="synth_disc", seeds=SEEDS) -> list[Trial]:
    """A grid over ``knobs`` (dotted key -> values) of FINISHED runs, for pivots and knob labels."""
    trials = []
    for point, values in enumerate(itertools.product(*knobs.values())):
        for seed in seeds:
            rng = np.random.default_rng([point, seed])
            cfg = HaloAEConfig.from_overrides("tiny", {**TINY, "train.seed": seed, **dict(zip(knobs, values, strict=True))})
            val, test = _fake_metrics(rng, category), _fake_metrics(rng, category)
            final = {f"val/{k}": x for k, x in val.items()} | {f"test/{k}": x for k, x in test.items()} | {"best_epoch": 0}
            trials.append(Trial(f"g{point}", category, seed, cfg, final=final))
    return trials


# ---------------------------------------------------------------------- real tiny training runs
def trained_trials(data_root: Path, out: Path, category: str = "synth_disc", seeds=(0, 1)) -> list[Trial]:
    """Real ``haloae.train.fit`` runs (preset tiny, 1 epoch x 2 steps) on synthetic data at 32 px."""
    from haloae.category_data import prepare_data
    from haloae.train import fit

    trials = []
    for seed in seeds:
        cfg = HaloAEConfig.from_overrides("tiny", {**TINY, "train.seed": seed})
        data = prepare_data(cfg, data_root, category)
        epochs: list[dict[str, Any]] = []
        result = fit(cfg, data, out / f"{category}-{seed}", on_epoch=lambda e, m, d, log=epochs: log.append(m), progress=False)
        trials.append(Trial(f"t{seed}", category, seed, cfg, epochs=epochs, final=dict(result.metrics), run_dir=result.out_dir))
    return trials


def synth_data(root: Path, categories=("synth_disc",)) -> Path:
    from haloae.synth import generate

    generate(root, categories=list(categories), size=32, n_train=10, n_test_good=4, n_test_defect_per_type=2, seed=0)
    return root


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------------- a real small sweep
def real_sweep(tmp: Path, name: str, categories=("synth_disc",), variants=("haloae",), seeds=(0, 1),
               epochs: int = 2) -> LoggedSweep:  # fmt: skip
    """Run a real sweep (local Ray, sqlite MLflow, tiny preset at 32 px) and describe it as a
    ``LoggedSweep``: each trial's ``final`` = its MLflow metrics, ``run_dir`` = its downloaded
    ``checkpoint/best.pt`` folder."""
    import mlflow
    import ray

    from sweeps.loading import load_spec
    from sweeps.runner import run_sweep
    from tests.helpers.sweeps import tiny_spec, trial_runs

    path = tiny_spec(
        tmp, name, variants=list(variants), seeds=list(seeds),
        data={"synthetic": {"categories": list(categories), "size": 32, "seed": 0}, "categories": "all"},
        overrides={"train.epochs": epochs, "train.steps_per_epoch": 2},
        objective={"metric": "val/image_auroc", "mode": "max", "aggregate": "per_category"},
    )  # fmt: skip
    spec = load_spec(path)
    ray.shutdown()
    outcome = run_sweep(spec)
    ray.shutdown()
    assert not outcome.failed, outcome.summary()
    trials = []
    for run in trial_runs(spec.tracking_uri(), spec.experiment_name()):
        run_dir = tmp / "downloaded" / run.info.run_id
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="checkpoint", dst_path=str(run_dir), tracking_uri=spec.tracking_uri()
        )
        trial = Trial(run.data.tags[TAG_TRIAL_ID], run.data.tags[TAG_CATEGORY], int(run.data.tags[TAG_SEED]),
                      HaloAEConfig.from_dict(read_json_artifact(spec.tracking_uri(), run.info.run_id, CONFIG_FILE)),
                      final=dict(run.data.metrics), run_dir=run_dir / "checkpoint", run_id=run.info.run_id)  # fmt: skip
        trials.append(trial)
    return LoggedSweep(name, spec.tracking_uri(), tmp / "sweeps", outcome.parent_run_id, trials, spec.data_root())


def read_json_artifact(tracking_uri: str, run_id: str, path: str) -> dict:
    import mlflow

    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, tracking_uri=tracking_uri)
    return json.loads(Path(local).read_text())


# ---------------------------------------------------------------------- the tables' statistics, by hand
def values_by_seed(trials: list[Trial], variant: str, category: str, key: str) -> dict[int, float]:
    """seed -> value of ``key`` in the FINISHED trials of one variant and category."""
    return {t.seed: t.final[key] for t in trials
            if t.status == "FINISHED" and t.cfg.variant == variant and t.category == category and key in t.final}  # fmt: skip


def cell_by_hand(trials: list[Trial], variant: str, category: str, key: str) -> tuple[float, float, int]:
    """(mean, sample std, n) over seeds of one category."""
    v = list(values_by_seed(trials, variant, category, key).values())
    return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else math.nan), len(v)


def group_by_hand(trials: list[Trial], variant: str, categories, key: str) -> tuple[float, float, int]:
    """A group's (mean of the category means, std of the per-seed means over the seeds that have
    every category, n = those seeds)."""
    per_category = [values_by_seed(trials, variant, c, key) for c in categories]
    seeds = sorted(set.intersection(*(set(p) for p in per_category)))
    per_seed = [np.mean([p[s] for p in per_category]) for s in seeds]
    return float(np.mean([np.mean(list(p.values())) for p in per_category])), float(np.std(per_seed, ddof=1)), len(seeds)


def assert_stat(stat, expected: tuple[float, float, int]) -> None:
    mean, std, n = expected
    assert stat.mean == pytest.approx(mean, abs=1e-12) and stat.n == n
    assert (math.isnan(stat.std) and math.isnan(std)) or stat.std == pytest.approx(std, abs=1e-12)


def best_flags(means: list[float]) -> list[bool]:
    """Which means are the best as printed (percent, one decimal; ties all best)."""
    shown = [round(100 * v, 1) for v in means]
    return [s == max(shown) for s in shown]
