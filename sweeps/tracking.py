# SPDX-License-Identifier: Apache-2.0
"""MLflow records of a sweep, written from inside the trials (not by a driver-side callback).

    parent run   one per sweep: tags sweep, spec_sha256, haloae.role=parent, haloae.varied; spec.yaml;
                 when the sweep ends, per variant the mean of the final headline val/test metrics
                 over its FINISHED child runs (``mean/<variant>/test/image_auroc``, count
                 ``runs/<variant>``; per stage in a two-stage sweep), recomputed on resume
    child run    one per (trial, category, seed), named ``<variant>/<category>/s<seed>`` (``-t<trial
                 index>`` when a variant has several configurations, ``-<stage>`` in a two-stage
                 sweep): tags sweep, trial_id, category, variant, seed, data_root, haloae.role=trial,
                 mlflow.parentRunId (haloae.stage: screen | confirm); params = the flattened config
                 (each knob under its dotted name, as in the YAML) plus category and seed (axes of
                 the UI's group-by and parallel coordinates); per-epoch metrics (step = epoch), the
                 epoch's validation under ``curve/val/*``; the best checkpoint's val/* (step = best
                 epoch) and test/* logged once, so MLflow's latest value is the one the tables and
                 the export use; artifacts config.json, metrics.json, alpha_schedule.png, overlays/,
                 checkpoint/best.pt

Runs are *found* by their tags before they are created, so a trial that Ray restarts (retries,
``--resume`` after a driver crash) continues its own run: no duplicates. Ray's driver-side
``MLflowLoggerCallback`` is not used: it is not restored by ``Tuner.restore`` and left duplicate
RUNNING runs after a driver kill (ray-optuna-mlflow-notes.md).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from haloae.config import HaloAEConfig
from haloae.vocab import (
    ALPHA_PLOT_FILE,
    BEST_ARTIFACT,
    BEST_EPOCH,
    BEST_FILE,
    CONFIG_FILE,
    DEFAULT_OBJECTIVE,
    METRICS_FILE,
    OVERLAYS_DIR,
    ROLE_PARENT,
    ROLE_TRIAL,
    TAG_CATEGORY,
    TAG_DATA_ROOT,
    TAG_ERROR,
    TAG_FAILED_TRIALS,
    TAG_NODE_ID,
    TAG_NODE_IDS,
    TAG_PARENT_RUN,
    TAG_ROLE,
    TAG_SEED,
    TAG_SPEC_SHA256,
    TAG_STAGE,
    TAG_STOPPED_BY,
    TAG_SWEEP,
    TAG_TRIAL_ID,
    TAG_VARIANT,
    TAG_VARIED,
    VAL,
    curve_key,
    split_of,
)
from sweeps import stores

MAX_PARAM_LENGTH = 6000  # MLflow 3 limit on a param value


def client(tracking_uri: str) -> MlflowClient:
    """A writer's client; a sqlite store opened for concurrent trials (``sweeps.stores``)."""
    return stores.writer_client(tracking_uri)


def artifact_location(tracking_uri: str, sweep_dir: str | Path) -> str | None:
    """Where a new experiment keeps its artifacts: beside a local store (``<sweep>/artifacts``);
    for a tracking server, wherever the server says (proxied artifacts). MLflow's own default for
    a sqlite store is ``./mlruns`` of the *current* directory, which differs per trial."""
    if tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri:
        return (Path(str(sweep_dir)) / "artifacts").resolve().as_uri()
    return None


def experiment_id(mlf: MlflowClient, name: str, artifacts: str | None = None) -> str:
    """The experiment's id, created when absent (two processes may race: the loser re-reads),
    with ``artifacts`` as its artifact location, by default the store's (``stores.store_artifact_location``)."""
    exp = mlf.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    if artifacts is None:
        artifacts = stores.store_artifact_location(mlf.tracking_uri)
    try:
        return mlf.create_experiment(name, artifact_location=artifacts)
    except Exception:  # created meanwhile by another trial
        exp = mlf.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


def find_runs(mlf: MlflowClient, exp_id: str, tags: Mapping[str, Any]) -> list:
    """Runs of the experiment whose tags equal ``tags`` (every status)."""
    query = " and ".join(f"tags.`{k}` = {_quote(v)}" for k, v in tags.items())
    from mlflow.entities import ViewType

    return list(mlf.search_runs([exp_id], filter_string=query, run_view_type=ViewType.ACTIVE_ONLY, max_results=1000))


def ensure_parent_run(
    tracking_uri: str,
    experiment: str,
    sweep: str,
    spec_sha256: str,
    spec_path: Path | None,
    varied: Iterable[str],
    artifacts: str | None = None,
    objective: str = DEFAULT_OBJECTIVE,
    mode: str = "max",
) -> str:
    """The sweep's parent run (reused on resume; set RUNNING again), with the spec as an artifact,
    and the UI's view of the sweep (``sweeps.ui_view``: sorted by ``objective``, the varied knobs
    as columns). Creates the experiment (with ``artifacts`` as its artifact location) before any
    trial runs; None: the store's own place, beside a sqlite file (``stores.store_artifact_location``)."""
    from sweeps.ui_view import store_view, view_state

    mlf = client(tracking_uri)
    exp_id = experiment_id(mlf, experiment, artifacts)
    found = find_runs(mlf, exp_id, {TAG_SWEEP: sweep, TAG_ROLE: ROLE_PARENT})
    if found:
        run_id = found[0].info.run_id
        mlf.update_run(run_id, status="RUNNING")
    else:
        tags = {TAG_SWEEP: sweep, TAG_ROLE: ROLE_PARENT, TAG_SPEC_SHA256: spec_sha256, TAG_VARIED: ",".join(varied)}
        run_id = mlf.create_run(exp_id, tags=tags, run_name=sweep).info.run_id
    if spec_path is not None and spec_path.is_file():
        mlf.log_artifact(run_id, str(spec_path))
    if found and found[0].data.tags.get(TAG_SPEC_SHA256) != spec_sha256:
        mlf.set_tag(run_id, TAG_SPEC_SHA256, spec_sha256)  # resumed with an edited definition: record it
    store_view(mlf, exp_id, sweep, view_state(run_id, objective, mode, varied))
    return run_id


def finish_parent_run(tracking_uri: str, run_id: str, failed: int, status: str = "FINISHED") -> None:
    """The parent run gets its per-variant means (``variant_means``) and ends FINISHED, or KILLED
    when the sweep was interrupted (``--resume`` reopens it and they are computed again)."""
    mlf = client(tracking_uri)
    from sweeps.parent_means import finished_children, variant_means

    parent = mlf.get_run(run_id)
    children = finished_children(mlf, parent.info.experiment_id, parent.data.tags.get(TAG_SWEEP, ""))
    means = _metrics(variant_means(children), 0)
    if means:
        mlf.log_batch(run_id, metrics=means)
    mlf.set_tag(run_id, TAG_FAILED_TRIALS, str(failed))
    mlf.set_terminated(run_id, status=status)


def experiment_of(tracking_uri: str, run_id: str) -> str:
    return client(tracking_uri).get_run(run_id).info.experiment_id


def run_name(
    variant: str, category: str, seed: int, trial_id: str = "", several: bool = False, stage: str | None = None
) -> str:
    """``<variant>/<category>/s<seed>``; ``-t<index>`` (Tune's trial index) when the variant has
    several configurations in the sweep, ``-<stage>`` in a two-stage sweep."""
    name = f"{variant}/{category}/s{seed}"
    if several and trial_id:
        index = trial_id.rpartition("_")[2]
        name += f"-t{int(index)}" if index.isdigit() else f"-{trial_id}"
    return f"{name}-{stage}" if stage else name


def run_params(cfg: HaloAEConfig, category: str, seed: int) -> list[Param]:
    """A child run's params: the flattened config, plus category and seed (the UI's axes)."""
    return _params(cfg) + [Param(TAG_CATEGORY, category), Param(TAG_SEED, str(seed))]


def _params(cfg: HaloAEConfig) -> list[Param]:
    flat = cfg.flatten()
    out = []
    for key, value in sorted(flat.items()):
        text = json.dumps(list(value)) if isinstance(value, tuple) else str(value)
        out.append(Param(key, text[:MAX_PARAM_LENGTH]))
    return out


def _metrics(metrics: Mapping[str, Any], step: int) -> list[Metric]:
    now = int(time.time() * 1000)
    out = []
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        value = float(value)
        if math.isnan(value):  # an undefined metric (e.g. AUROC of a one-class set) is not logged
            continue
        out.append(Metric(key, value, now, step))
    return out


class TrialRun:
    """The MLflow child run of one (trial, category, seed); found by tags, created once."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        parent_run_id: str,
        sweep: str,
        trial_id: str,
        category: str,
        seed: int,
        cfg: HaloAEConfig,
        data_root: str,
        stage: str | None = None,
        name: str | None = None,
    ) -> None:
        self.mlf = client(tracking_uri)
        exp_id = experiment_id(self.mlf, experiment)
        key = {
            TAG_SWEEP: sweep,
            TAG_TRIAL_ID: trial_id,
            TAG_CATEGORY: category,
            TAG_SEED: str(seed),
            TAG_ROLE: ROLE_TRIAL,
        }
        found = find_runs(self.mlf, exp_id, key)
        self._logged: set[tuple[str, int]] = set()  # (key, step) already in the run
        if found:
            self.run_id = found[0].info.run_id
            self._logged = self._logged_steps(found[0].data.metrics)
            self.mlf.update_run(self.run_id, status="RUNNING")
            for tag in {TAG_ERROR, TAG_STOPPED_BY} & set(found[0].data.tags):  # how its last attempt ended
                self.mlf.delete_tag(self.run_id, tag)
        else:
            tags = {
                **key,
                TAG_VARIANT: cfg.variant,
                TAG_DATA_ROOT: data_root,
                TAG_PARENT_RUN: parent_run_id,
                **({TAG_STAGE: stage} if stage else {}),
            }
            run = self.mlf.create_run(
                exp_id, tags=tags, run_name=name or run_name(cfg.variant, category, seed, stage=stage)
            )
            self.run_id = run.info.run_id
            # params are immutable in MLflow: logged once, at creation (in batches of 100)
            params = run_params(cfg, category, seed)
            for i in range(0, len(params), 100):
                self.mlf.log_batch(self.run_id, params=params[i : i + 100])

    def tag_node(self, node_id: str) -> None:
        """The Ray node of this attempt (``ray.node_id``; earlier attempts' nodes in ``ray.node_ids``)."""
        previous = self.mlf.get_run(self.run_id).data.tags.get(TAG_NODE_IDS, "")
        nodes = [n for n in previous.split(",") if n] + [node_id]
        tags = [RunTag(TAG_NODE_ID, node_id), RunTag(TAG_NODE_IDS, ",".join(nodes))]
        self.mlf.log_batch(self.run_id, tags=tags)  # one request, not one per tag

    def log_epoch(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """One epoch's metrics at step = epoch; its validation under ``curve/val/*``: ``val/*``
        itself is the best checkpoint's, logged once by ``finish``."""
        self._log(_metrics({curve_key(k) if split_of(k) == VAL else k: v for k, v in metrics.items()}, epoch))

    def _logged_steps(self, keys: Iterable[str]) -> set[tuple[str, int]]:
        """What an earlier attempt logged. A driver killed between an epoch's log and Tune's record
        of its checkpoint restarts the trial from the checkpoint before: it trains that epoch again
        (exactly: seeded, resumed RNG) and must not log it a second time."""
        return {(key, m.step) for key in keys for m in self.mlf.get_metric_history(self.run_id, key)}

    def _log(self, batch: list[Metric]) -> None:
        batch = [m for m in batch if (m.key, m.step) not in self._logged]
        for i in range(0, len(batch), 1000):
            self.mlf.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def finish(self, metrics: Mapping[str, Any], out_dir: Path, cfg: HaloAEConfig) -> None:
        """The best checkpoint's val/* and test/* (step = best epoch) and the artifacts, then FINISHED."""
        from sweeps.run_files import alpha_plot

        self._log(_metrics(metrics, int(metrics.get(BEST_EPOCH, 0))))
        (out_dir / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2, default=list))
        alpha_plot(cfg, out_dir / ALPHA_PLOT_FILE)
        for name in (CONFIG_FILE, METRICS_FILE, ALPHA_PLOT_FILE):
            if (out_dir / name).is_file():
                self.mlf.log_artifact(self.run_id, str(out_dir / name))
        if (out_dir / OVERLAYS_DIR).is_dir():
            self.mlf.log_artifacts(self.run_id, str(out_dir / OVERLAYS_DIR), OVERLAYS_DIR)
        if (out_dir / BEST_FILE).is_file():
            self.mlf.log_artifact(self.run_id, str(out_dir / BEST_FILE), BEST_ARTIFACT.rpartition("/")[0])
        self.mlf.set_terminated(self.run_id, status="FINISHED")

    def fail(self, reason: str) -> None:
        self.mlf.set_tag(self.run_id, TAG_ERROR, one_line(reason))
        self.mlf.set_terminated(self.run_id, status="FAILED")


def one_line(text: str, limit: int = 500) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def reconcile(
    tracking_uri: str,
    experiment: str,
    sweep: str,
    errors: Mapping[str, str],
    stopped: Iterable[str],
    interrupted_by: str = "",
) -> dict[str, int]:
    """After the Tuner returns: no child run of the sweep stays RUNNING.

    ``errors`` maps trial ids that ended in error to their reason (their runs become FAILED with
    the reason, if the trial could not say so itself, e.g. its process was killed); trials in
    ``stopped`` were stopped early by the scheduler (ASHA): their runs become KILLED with tag
    ``stopped_by=scheduler``. ``interrupted_by`` (a signal name): the sweep was stopped, and every
    other run still RUNNING becomes KILLED with ``stopped_by=<signal>``. Returns the count per
    final status change.
    """
    mlf = client(tracking_uri)
    exp = mlf.get_experiment_by_name(experiment)
    counts = {"FAILED": 0, "KILLED": 0}
    if exp is None:
        return counts
    stopped = set(stopped)
    for run in find_runs(mlf, exp.experiment_id, {TAG_SWEEP: sweep, TAG_ROLE: ROLE_TRIAL}):
        trial_id = run.data.tags.get(TAG_TRIAL_ID, "")
        if run.info.status != "RUNNING":
            continue
        if trial_id in errors:
            mlf.set_tag(run.info.run_id, TAG_ERROR, one_line(errors[trial_id]))
            mlf.set_terminated(run.info.run_id, status="FAILED")
            counts["FAILED"] += 1
        elif trial_id in stopped or interrupted_by:
            mlf.set_tag(run.info.run_id, TAG_STOPPED_BY, "scheduler" if trial_id in stopped else interrupted_by)
            mlf.set_terminated(run.info.run_id, status="KILLED")
            counts["KILLED"] += 1
    return counts
