# SPDX-License-Identifier: Apache-2.0
"""Trials the scheduler stopped early (ASHA) are evaluated in the driver, so no cell goes missing.

A trial evaluates its units (``haloae.train.finish``) only at its last epoch; one that ASHA stops
at a rung never gets there, and its MLflow runs end KILLED with ``stopped_by=scheduler``
(``sweeps.tracking.reconcile``). After ``tune.fit`` this module takes each stopped trial's last
Tune checkpoint (it holds every unit's ``best.pt``: ``sweeps.trainable._report``; else the trial's
``units`` folder), evaluates the best checkpoint on validation and test exactly as a finished
trial would (``finish``, data from ``sweeps.datacache``), logs the final metrics, overlays and
best.pt to the unit's run (``TrialRun.finish``: the run becomes FINISHED) and tags it
``haloae.stopped_at_epoch`` = the epochs it trained, keeping ``stopped_by=scheduler``. Tables
count such runs and mark their cells "stopped at epoch k" (``analysis.markers``).

It is idempotent: a run already tagged is skipped, so ``--resume`` after a driver crash between
``tune.fit`` and this step finishes the job. A unit whose evaluation fails keeps its KILLED run,
with the reason in its ``error`` tag: the tables show it as a failed cell, never drop it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from haloae.vocab import (
    BEST_FILE,
    ROLE_TRIAL,
    TAG_CATEGORY,
    TAG_ERROR,
    TAG_ROLE,
    TAG_SEED,
    TAG_STOPPED_AT,
    TAG_STOPPED_BY,
    TAG_SWEEP,
    TAG_TRIAL_ID,
)

STOPPED = "STOPPED"  # sweeps.runner.TrialOutcome.status of a trial the scheduler stopped
BY_SCHEDULER = "scheduler"  # the stopped_by tag reconcile gives those trials' runs


@dataclass
class StoppedUnit:
    trial_id: str
    category: str
    seed: int
    epochs: int  # epochs trained before the stop
    run_id: str
    metrics: dict[str, float]  # the best checkpoint's final val/* and test/*; empty if it failed
    error: str = ""


def _unit_dir(checkpoint_dir: Path | None, trial_path: Path, unit: str) -> Path | None:
    """The folder holding a unit's best.pt: in the trial's last checkpoint, else its units folder."""
    for folder in ([checkpoint_dir / unit] if checkpoint_dir else []) + [trial_path / "units" / unit]:
        if (folder / BEST_FILE).is_file():
            return folder
    return None


def _find_run(spec, trial_id: str, category: str, seed: int):
    from sweeps import tracking

    mlf = tracking.client(spec.tracking_uri())
    exp = mlf.get_experiment_by_name(spec.experiment_name())
    if exp is None:
        return None
    key = {TAG_SWEEP: spec.name, TAG_TRIAL_ID: trial_id, TAG_CATEGORY: category, TAG_SEED: str(seed), TAG_ROLE: ROLE_TRIAL}
    found = tracking.find_runs(mlf, exp.experiment_id, key)
    return found[0] if found else None


def evaluate_unit(spec, trial_id: str, params: dict[str, Any], category: str, seed: int, epochs: int,
                  source: Path, run) -> StoppedUnit:  # fmt: skip
    """Evaluate one unit's best.pt (a copy: ``finish`` writes beside it) and log it to its run."""
    from haloae.precision import with_applied_precision
    from haloae.train import finish, pick_device
    from sweeps.datacache import cached_category_data
    from sweeps.tracking import TrialRun, run_name
    from sweeps.trainable import several_configurations
    from sweeps.trials import build_config

    cfg = build_config(spec, {**params, "category": category, "seed": seed})
    device = pick_device(cfg.train.device)
    cfg = with_applied_precision(cfg, device)
    data = cached_category_data(cfg, spec.data_root(), category)
    with tempfile.TemporaryDirectory(prefix="haloae-stopped-") as tmp:
        out = Path(tmp)
        shutil.copy2(source / BEST_FILE, out / BEST_FILE)
        metrics = finish(out, data, device).metrics  # before the run is touched: a failure leaves it KILLED
        trial_run = TrialRun(
            spec.tracking_uri(), spec.experiment_name(), run.data.tags.get("mlflow.parentRunId", ""), spec.name, trial_id,
            category, seed, cfg, str(spec.data_root()), stage=spec.stage,
            name=run_name(cfg.variant, category, seed, trial_id, several_configurations(spec), spec.stage),
        )  # fmt: skip
        trial_run.finish(metrics, out, cfg)
    for tag, value in ((TAG_STOPPED_BY, BY_SCHEDULER), (TAG_STOPPED_AT, str(epochs))):
        trial_run.mlf.set_tag(trial_run.run_id, tag, value)
    return StoppedUnit(trial_id, category, seed, epochs, trial_run.run_id, dict(metrics))


def evaluate_stopped(spec, results, trials) -> list[StoppedUnit]:
    """Every unit of every STOPPED trial (``trials``: the ``TrialOutcome`` of each Tune result in
    ``results``, same order) evaluated at its best checkpoint and logged; see the module doc."""
    from sweeps import tracking

    done: list[StoppedUnit] = []
    for result, trial in zip(results, trials, strict=True):
        if trial.status != STOPPED:
            continue
        from sweeps.trainable import trial_units  # haloae.train's imports (~1 s): only for a stopped trial

        epochs = int(trial.metrics.get("epoch", 0)) + 1  # the last reported epoch, counted from 1
        with ExitStack() as stack:
            checkpoint = Path(stack.enter_context(result.checkpoint.as_directory())) if result.checkpoint else None
            for category, seed in trial_units(spec, trial.params):
                run = _find_run(spec, trial.trial_id, category, seed)
                if run is None or TAG_STOPPED_AT in run.data.tags:
                    continue  # no run to complete, or evaluated already (a resumed sweep)
                source = _unit_dir(checkpoint, Path(result.path), f"{category}-s{seed}")
                try:
                    if source is None:
                        raise FileNotFoundError(f"no {BEST_FILE} in the trial's checkpoint or units folder")
                    unit = evaluate_unit(spec, trial.trial_id, trial.params, category, seed, epochs, source, run)
                except Exception as exc:  # the run stays KILLED and says why: a failed cell, not a missing one
                    reason = tracking.one_line(f"stopped at epoch {epochs}; evaluating its best checkpoint failed: {type(exc).__name__}: {exc}")
                    mlf = tracking.client(spec.tracking_uri())
                    mlf.set_tag(run.info.run_id, TAG_ERROR, reason)
                    if mlf.get_run(run.info.run_id).info.status == "RUNNING":
                        mlf.set_terminated(run.info.run_id, status="KILLED")
                    print(f"warning: trial {trial.trial_id} {category} seed {seed}: {reason}", file=sys.stderr)
                    unit = StoppedUnit(trial.trial_id, category, seed, epochs, run.info.run_id, {}, reason)
                done.append(unit)
        _add_test_metrics(trial, [u for u in done if u.trial_id == trial.trial_id and u.metrics])
    return done


def _add_test_metrics(trial, units: list[StoppedUnit]) -> None:
    """The outcome's summary quotes test metrics: the stopped trial's, averaged over its units."""
    keys = set.intersection(*(set(u.metrics) for u in units)) if units else set()
    for key in sorted(k for k in keys if k.startswith("test/")):
        trial.metrics.setdefault(key, sum(u.metrics[key] for u in units) / len(units))


__all__ = ["StoppedUnit", "evaluate_stopped", "evaluate_unit"]
