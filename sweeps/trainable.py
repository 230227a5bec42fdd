# SPDX-License-Identifier: Apache-2.0
"""The Ray Tune function trainable: one trial = one or more HaloAE runs of ``haloae.train``.

A trial's *units* are the (category, seed) runs it trains: one with ``objective.aggregate:
per_category`` (category and seed are trial parameters), every category x seed of the sweep with
``aggregate: mean`` (the trial reports their mean, the one objective Optuna needs). Each epoch:

    every unit advances one epoch (``fit_epochs``: it checkpoints itself first)
    -> its metrics go to its MLflow child run (``sweeps.tracking.TrialRun``; validation as the
       curve ``curve/val/*``)
    -> on the last epoch each unit's best checkpoint is evaluated on validation and test
       (``finish``): its val/* and test/* and its artifacts are logged, *before* the report, so a scheduler stopping the trial at max_t loses
       nothing
    -> ``tune.report(metrics, checkpoint)``: the units' checkpoint.pt and best.pt in one directory

A restarted trial (a retry after an error, ``--resume`` after a driver crash) copies Tune's last
checkpoint back and resumes every unit exactly where it stopped. Data comes from the per-node
cache (``sweeps.datacache``), and so do the backbone features of its image sets: each unit's one
feature store (its epochs' validation features serve its ``finish``) reads and fills the node's.
CPU threads and the GPU memory share follow the trial's resources.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from haloae.features import RunFeatures
from haloae.precision import with_applied_precision
from haloae.train import finish, fit_epochs, pick_device
from haloae.vocab import BEST_FILE, CHECKPOINT_FILE, ENV_INJECT_FAULT
from sweeps.datacache import cached_category_data, feature_store
from sweeps.run_files import link_or_copy
from sweeps.schema import SweepSpec
from sweeps.tracking import TrialRun, run_name
from sweeps.trials import build_config


def trial_units(spec: SweepSpec, params: dict[str, Any]) -> list[tuple[str, int]]:
    """The (category, seed) runs of one trial."""
    if spec.objective.aggregate == "per_category":
        return [(params["category"], int(params["seed"]))]
    return [(c, s) for c in spec.categories() for s in spec.seeds]


def several_configurations(spec: SweepSpec) -> bool:
    """Whether a variant trains more than one configuration per category and seed (then its run
    names carry the trial index): a search space with choices, repeats, or several points."""
    search = spec.search
    if search.points:
        per_cell = Counter((p.get("variant"), p.get("category")) for p in search.points)
        return max(per_cell.values()) > 1 or search.num_samples > 1
    if search.algorithm == "grid":
        return search.num_samples > 1 or any(len(d.values) > 1 for d in search.space.values())
    return search.num_samples > 1


def aggregate(per_unit: list[dict[str, float]]) -> dict[str, float]:
    """Mean over units of every metric they all have (a unit's own values when there is one)."""
    if len(per_unit) == 1:
        return dict(per_unit[0])
    keys = set.intersection(*(set(m) for m in per_unit))
    out = {}
    for key in keys:
        values = [m[key] for m in per_unit if isinstance(m[key], (int, float)) and not math.isnan(m[key])]
        if values:
            out[key] = sum(values) / len(values)
    return out


def _limit_resources(spec: SweepSpec) -> None:
    """Make the booked share real: torch threads = booked CPUs, a GPU memory cap = the booked
    fraction (Ray's fractional GPUs are bookkeeping only)."""
    import torch

    torch.set_num_threads(max(1, int(spec.resources.cpu)))
    gpu = spec.resources.gpu
    if 0 < gpu < 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(gpu)


def _process_limits_restored(trial):
    """``trial`` (run_trial) with the process-wide settings ``_limit_resources`` makes put back when
    it ends, however it ends: torch's thread count and the current GPU's memory fraction.

    In a Ray trial actor the process is the trial's and restoring is harmless; called in-process
    (tests, a notebook) the caller keeps its own threads instead of the trial's booked CPUs for the
    rest of the session. Restoring, rather than limiting only inside a Ray worker (a check on Ray's
    private worker mode), keeps the trial itself the same wherever it runs: it trains with its
    booked threads in-process too."""
    import functools

    @functools.wraps(trial)
    def scoped(*args, **kwargs):
        import torch

        threads = torch.get_num_threads()
        # read only where CUDA is already up: reading it would initialise CUDA in the caller
        fraction = torch.cuda.get_per_process_memory_fraction() if torch.cuda.is_initialized() else 1.0
        try:
            return trial(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
            if torch.cuda.is_initialized():
                torch.cuda.set_per_process_memory_fraction(fraction)

    return scoped


def _maybe_inject_fault(epoch: int) -> None:
    rule = os.environ.get(ENV_INJECT_FAULT)
    if not rule:
        return
    fields = dict(part.split("=", 1) for part in rule.split(","))
    marker = Path(fields["marker"])
    if epoch == int(fields["epoch"]) and not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("injected")
        raise FloatingPointError(f"non-finite training loss nan at epoch {epoch} (injected by {ENV_INJECT_FAULT})")


def _trial_identity() -> tuple[str, Path]:
    """Tune's trial id and a local working directory for the units' run folders."""
    from ray import tune

    try:
        ctx = tune.get_context()
        trial_id, trial_dir = ctx.get_trial_id(), ctx.get_trial_dir()
    except Exception:  # outside a Tune session (unit tests call the trainable directly)
        trial_id, trial_dir = None, None
    if not trial_id:
        return "local", Path(tempfile.mkdtemp(prefix="haloae-trial-"))
    return trial_id, Path(trial_dir) / "units"


@_process_limits_restored
def run_trial(config: dict[str, Any], spec: SweepSpec, parent_run_id: str) -> None:
    """Train the trial's units epoch by epoch, report to Tune and log to MLflow from here."""
    from ray import tune

    _limit_resources(spec)
    trial_id, work = _trial_identity()
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a restarted trial: put every unit's last state back
        with checkpoint.as_directory() as saved:
            shutil.copytree(saved, work, dirs_exist_ok=True)

    units = []
    several = several_configurations(spec)
    for category, seed in trial_units(spec, config):
        params = {**config, "category": category, "seed": seed}
        cfg = build_config(spec, params)
        cfg = with_applied_precision(cfg, pick_device(cfg.train.device))  # params record what is applied, not auto
        data = cached_category_data(cfg, spec.data_root(), category)
        out_dir = work / f"{category}-s{seed}"
        run = TrialRun(
            spec.tracking_uri(), spec.experiment_name(), parent_run_id, spec.name, trial_id,
            category, seed, cfg, str(spec.data_root()), stage=spec.stage,
            name=run_name(cfg.variant, category, seed, trial_id, several, spec.stage),
        )
        run.tag_node(_node_id())
        units.append((cfg, data, out_dir, run))

    try:
        _train(spec, units, work)
    except Exception as exc:  # not KeyboardInterrupt: a stopped sweep ends its runs KILLED (sweeps.signals)
        reason = f"{type(exc).__name__}: {exc}"
        for *_, run in units:
            run.fail(reason)
        raise


def _node_features(cfg, spec: SweepSpec, category: str):
    """The node's feature store for a CPU trial, None on an accelerator: on a CPU a backbone pass
    costs ~0.2 s per image against ~6 ms to read its features back, on a GPU well under a
    millisecond, while the paper preset's features fill ~11.5 MB per image of the node's disk."""
    if pick_device(cfg.train.device).type != "cpu":
        return None
    return feature_store(cfg, spec.data_root(), category)


def _train(spec: SweepSpec, units: list, work: Path) -> None:
    epochs = units[0][0].train.epochs
    objective = {"objective": spec.objective.metric, "mode": spec.objective.mode}  # what best.pt is best by
    stores = [RunFeatures(_node_features(cfg, spec, data.category)) for cfg, data, _, _ in units]
    loops = [
        fit_epochs(cfg, data, out, resume=True, progress=False, **objective, features=features)
        for (cfg, data, out, _), features in zip(units, stores, strict=True)
    ]
    reported = False
    for loop_items in zip(*loops, strict=True):
        epoch = loop_items[0][0]
        _maybe_inject_fault(epoch)
        per_unit = []
        for (cfg, data, out, run), (_, metrics), features in zip(units, loop_items, stores, strict=True):
            run.log_epoch(epoch, metrics)
            if epoch == epochs - 1:  # evaluate and log before the last report (see module doc)
                metrics = {**metrics, **_finish_unit(cfg, data, out, run, features)}
            per_unit.append(metrics)
        _report(aggregate(per_unit) | {"epoch": epoch}, units)
        reported = True
    if not reported:  # restarted after its last epoch's checkpoint: only the final evaluation is left
        final = [_finish_unit(*unit, features) for unit, features in zip(units, stores, strict=True)]
        _report(aggregate(final) | {"epoch": epochs - 1}, units)


def _finish_unit(cfg, data, out: Path, run: TrialRun, features: RunFeatures | None = None) -> dict[str, float]:
    final = finish(out, data, pick_device(cfg.train.device), features=features).metrics
    run.finish(final, out, cfg)
    return final


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


def _report(metrics: dict[str, float], units: list) -> None:
    """``tune.report`` with a checkpoint holding every unit's checkpoint.pt and best.pt, and the
    Ray node the epoch ran on (``node_id``: on a cluster, where each trial went)."""
    from ray import tune

    metrics = {**metrics, "node_id": _node_id()}

    with tempfile.TemporaryDirectory(prefix="haloae-ckpt-") as tmp:
        for _, _, out, _ in units:
            dest = Path(tmp) / out.name
            dest.mkdir()
            for name in (CHECKPOINT_FILE, BEST_FILE):
                if (out / name).is_file():
                    link_or_copy(out / name, dest / name)  # Tune copies the folder into storage itself
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


__all__ = ["aggregate", "run_trial", "several_configurations", "trial_units"]
