# SPDX-License-Identifier: Apache-2.0
"""Run a sweep definition with Ray Tune: searcher, scheduler, resources, resume, summary.

    load_spec -> prepare (synthetic data, validate every trial config and the data: no Ray yet)
    -> ray.init(address) -> MLflow parent run -> Tuner (or Tuner.restore on --resume)
    -> tuner.fit() -> reconcile MLflow (no RUNNING runs left) -> summary

The sweep directory ``<storage>/<name>/`` holds spec.yaml, mlflow.db (default tracking store),
optuna.db (optuna search) and ray/ (the Tune experiment that --resume restores).
"""

from __future__ import annotations

import math
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeps.spec import SpecError, SweepSpec, validate_trials

EXPERIMENT_DIR = "ray"  # <sweep_dir>/ray: Tune's experiment folder
QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_AIR_NEW_OUTPUT": "0",  # the classic progress table (CLIReporter)
}


@dataclass
class TrialOutcome:
    trial_id: str
    params: dict[str, Any]
    status: str  # TERMINATED | ERROR | STOPPED (early, by the scheduler)
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    node_id: str = ""  # the Ray node of its last reported epoch


@dataclass
class SweepOutcome:
    spec: SweepSpec
    trials: list[TrialOutcome]
    parent_run_id: str

    @property
    def failed(self) -> list[TrialOutcome]:
        return [t for t in self.trials if t.status == "ERROR"]

    def best_per_category(self) -> dict[str, TrialOutcome]:
        """Per category, the trial with the best objective (validation) among those that finished."""
        metric, sign = self.spec.objective.metric, (1 if self.spec.objective.mode == "max" else -1)
        best: dict[str, tuple[float, TrialOutcome]] = {}
        for trial in self.trials:
            value = trial.metrics.get(metric)
            if trial.status == "ERROR" or value is None or math.isnan(value):
                continue
            categories = [trial.params["category"]] if "category" in trial.params else ["(all, mean)"]
            for category in categories:
                if category not in best or sign * value > sign * best[category][0]:
                    best[category] = (value, trial)
        return {c: t for c, (_, t) in sorted(best.items())}

    def summary(self) -> str:
        spec, metric = self.spec, self.spec.objective.metric
        lines = [f"sweep {spec.name}: {len(self.trials)} trials, {len(self.failed)} failed; objective {metric} ({spec.objective.mode})"]
        for category, trial in self.best_per_category().items():
            knobs = ", ".join(f"{k}={v}" for k, v in sorted(trial.params.items()) if k != "category")
            test = trial.metrics.get("test/image_auroc", math.nan)
            lines.append(f"  best {category:16s} {trial.trial_id}  {metric}={trial.metrics[metric]:.4f}  test/image_auroc={test:.4f}  [{knobs}]")
        for trial in self.failed:
            lines.append(f"  FAILED {trial.trial_id} [{trial.params}]: {trial.error}")
        nodes = Counter(t.node_id for t in self.trials if t.node_id)
        if len(nodes) > 1:
            lines.append("  trials per Ray node: " + ", ".join(f"{n[:12]}={k}" for n, k in sorted(nodes.items())))
        lines.append(f"MLflow: {spec.tracking_uri()}  experiment {spec.experiment_name()!r}")
        if spec.tracking_uri().startswith("sqlite:"):
            lines.append(f"  open the UI: mlflow ui --backend-store-uri {spec.tracking_uri()} --port 5000  -> http://127.0.0.1:5000")
        return "\n".join(lines)


def prepare(spec: SweepSpec) -> list[dict[str, Any]]:
    """Everything that can fail before Ray starts: synthetic data, data folders, trial configs."""
    if spec.data.synthetic is not None:
        from haloae.synth import generate

        root = spec.data_root()
        missing = [c for c in spec.categories() if not (root / c).is_dir()]
        if missing:
            s = spec.data.synthetic
            generate(root, categories=missing, size=s.size, seed=s.seed)
    return validate_trials(spec)


def experiment_path(spec: SweepSpec) -> str:
    return f"{str(spec.sweep_dir()).rstrip('/')}/{EXPERIMENT_DIR}"


def _init_ray(address: str | None, spec: SweepSpec) -> None:
    import ray

    env = {**QUIET_ENV, "MLFLOW_TRACKING_URI": spec.tracking_uri()}
    for key, value in env.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        return
    runtime_env = {"env_vars": {k: os.environ[k] for k in (*env, "HALOAE_INJECT_FAULT", "HALOAE_DATA_CACHE") if k in os.environ}}
    if address in (None, "local"):
        ray.init(address="local", include_dashboard=False, runtime_env=runtime_env, log_to_driver=True)
    else:
        ray.init(address=address, runtime_env=runtime_env)


def _search(spec: SweepSpec):
    """(search_alg, param_space) for the spec's algorithm."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from sweeps.space import optuna_define_by_run, optuna_sampler, study_name, tune_param_space

    if spec.search.algorithm == "optuna":
        import optuna
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        storage = optuna.storages.RDBStorage(spec.optuna_storage())
        searcher = OptunaSearch(
            space=optuna_define_by_run(spec),
            metric=spec.objective.metric,
            mode=spec.objective.mode,
            sampler=optuna_sampler(spec),
            study_name=study_name(spec),
            storage=storage,
        )
        if spec.max_concurrent_trials:
            searcher = ConcurrencyLimiter(searcher, max_concurrent=spec.max_concurrent_trials)
        return searcher, {}
    return BasicVariantGenerator(random_state=spec.search.seed), tune_param_space(spec)


def _scheduler(spec: SweepSpec):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = spec.scheduler
    if s.type == "asha":
        return ASHAScheduler(
            time_attr="training_iteration",
            max_t=spec.max_t(),
            grace_period=s.grace_period,
            reduction_factor=s.reduction_factor,
        )
    return FIFOScheduler()


def _progress_table(spec: SweepSpec):
    """Ray's progress table, every 30 s: the varied knobs and the objective, not every metric."""
    from ray.tune import CLIReporter

    from sweeps.space import tune_param_space

    # the trial config's keys (a column missing from a config breaks the table); optuna: all
    knobs = list(tune_param_space(spec)) if spec.search.algorithm != "optuna" else None
    return CLIReporter(
        metric_columns={"epoch": "epoch", spec.objective.metric: "objective", "train/loss": "loss"},
        parameter_columns=knobs,
        max_report_frequency=30,
        sort_by_metric=True,  # by TuneConfig's metric and mode
    )


def build_trainable(spec: SweepSpec, parent_run_id: str):
    from ray import tune

    from sweeps.trainable import run_trial

    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    return tune.with_resources(tune.with_parameters(run_trial, spec=spec, parent_run_id=parent_run_id), resources)


def run_sweep(spec: SweepSpec, resume: bool = False, address: str | None = None) -> SweepOutcome:
    """Run (or resume) the sweep to completion and return its outcome."""
    from ray import tune

    from sweeps import tracking

    prepare(spec)
    sweep_dir = Path(str(spec.sweep_dir()))
    exp_path = experiment_path(spec)
    restorable = tune.Tuner.can_restore(exp_path)
    if restorable and not resume:
        raise SpecError(
            f"{spec.source or spec.name}: name: sweep {spec.name!r} already ran in {sweep_dir}; "
            "use --resume to continue it, or another name/storage"
        )
    _init_ray(address, spec)
    check_shared_storage(spec)
    if not str(spec.sweep_dir()).startswith("s3://"):
        sweep_dir.mkdir(parents=True, exist_ok=True)
        spec_path = sweep_dir / "spec.yaml"
        spec_path.write_text(spec.yaml_text)
    else:
        spec_path = None
    varied = sorted(spec.search.space) + (["variant"] if len(spec.variants) > 1 else [])
    parent = tracking.ensure_parent_run(
        spec.tracking_uri(), spec.experiment_name(), spec.name, spec.sha256(), spec_path, varied,
        tracking.artifact_location(spec.tracking_uri(), spec.sweep_dir()) if spec.local_storage() else None,
    )
    trainable = build_trainable(spec, parent)
    if restorable:
        tuner = tune.Tuner.restore(exp_path, trainable, resume_unfinished=True, resume_errored=True)
    else:
        search_alg, param_space = _search(spec)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=spec.objective.metric,
                mode=spec.objective.mode,
                search_alg=search_alg,
                scheduler=_scheduler(spec),
                num_samples=spec.search.num_samples,
                max_concurrent_trials=spec.max_concurrent_trials,
                reuse_actors=True,  # a trial process imports torch once, not once per trial
            ),
            run_config=tune.RunConfig(
                name=EXPERIMENT_DIR,
                storage_path=str(spec.sweep_dir()),
                failure_config=tune.FailureConfig(max_failures=spec.retries),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                verbose=1,
                progress_reporter=_progress_table(spec),
            ),
        )
    results = tuner.fit()
    outcome = _outcome(spec, results, parent)
    errors = {t.trial_id: t.error for t in outcome.trials if t.status == "ERROR"}
    stopped = [t.trial_id for t in outcome.trials if t.status == "STOPPED"]
    tracking.reconcile(spec.tracking_uri(), spec.experiment_name(), spec.name, errors, stopped)
    tracking.finish_parent_run(spec.tracking_uri(), parent, len(errors))
    return outcome


def _outcome(spec: SweepSpec, results, parent: str) -> SweepOutcome:
    from sweeps.tracking import one_line

    trials = []
    epochs = spec.epochs()
    for result in results:
        metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        params = dict(result.config or {})
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
        if result.error is not None:
            status, error = "ERROR", one_line(_root_cause(result.error))
        elif int(metrics.get("epoch", -1)) < epochs - 1:
            status, error = "STOPPED", ""
        else:
            status, error = "TERMINATED", ""
        node = str((result.metrics or {}).get("node_id", ""))
        trials.append(TrialOutcome(str(trial_id), params, status, metrics, error, node))
    return SweepOutcome(spec, trials, parent)


def _root_cause(error: BaseException) -> str:
    """The trial's own exception, not Ray's wrapper (its first line names the original error)."""
    cause = getattr(error, "cause", None) or error.__cause__ or error
    text = str(cause).strip().splitlines()
    # Ray's RayTaskError text ends with the original "ExcType: message" line
    for line in reversed(text):
        if ":" in line and not line.startswith(" "):
            return line
    return text[-1] if text else type(error).__name__


def check_shared_storage(spec: SweepSpec) -> None:
    """On a multi-node cluster, a local storage path must be visible to every node (NFS).

    A path only the head sees makes Ray fail mid-sweep; here a marker file written by the driver is
    looked for by a task pinned to each alive node, and a node that cannot see it is a one-line
    error at start.
    """
    import ray

    storage = str(spec.sweep_dir())
    if "://" in storage:
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) <= 1:
        return
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    marker = Path(storage) / ".shared-storage-check"
    marker.parent.mkdir(parents=True, exist_ok=True)
    token = os.urandom(8).hex()
    marker.write_text(token)

    @ray.remote(num_cpus=0)
    def sees(path: str) -> str:
        try:
            return Path(path).read_text()
        except OSError:
            return ""

    refs = [
        sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker))
        for n in nodes
    ]
    blind = [n["NodeManagerAddress"] for n, seen in zip(nodes, ray.get(refs, timeout=120), strict=True) if seen != token]
    marker.unlink(missing_ok=True)
    if blind:
        raise SpecError(
            f"{spec.source or spec.name}: storage: {storage} is local to the driver's machine but this cluster "
            f"has {len(nodes)} nodes and {', '.join(blind)} cannot see it; use a shared path (NFS) or s3://"
        )


def remove_sweep(spec: SweepSpec) -> None:
    """Delete a local sweep directory (tests, --fresh)."""
    shutil.rmtree(str(spec.sweep_dir()), ignore_errors=True)
