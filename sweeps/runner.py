# SPDX-License-Identifier: Apache-2.0
"""Run a sweep definition with Ray Tune: searcher, scheduler, resources, resume, summary.

    load_spec -> validate every trial config and the data; the tracking store answers (no writes)
    -> the sweep lock (one run per sweep folder) -> "already ran?" -> synthetic data
    -> ray.init(address) -> cluster checks -> MLflow parent run -> Tuner (or Tuner.restore on --resume)
    -> tuner.fit() -> reconcile MLflow (no RUNNING runs left) -> summary

SIGINT/SIGTERM stop the trials (``sweeps.signals``): their runs and the parent run end KILLED and
``SweepInterrupted`` carries the exit code; ``--resume`` continues the sweep. The sweep directory
``<storage>/<name>/`` holds spec.yaml, .lock (while running), mlflow.db (default tracking store),
optuna.db (optuna search) and ray/ (the Tune experiment that --resume restores; ray-screen/ and
ray-confirm/ for the stages of ``sweeps.protocol``).
"""

from __future__ import annotations

import math
import os
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from haloae.vocab import (
    ENV_DATA_CACHE,
    ENV_INJECT_FAULT,
    ENV_RAY_SINGLE_MACHINE,
    ENV_TRACKING_URI,
    QUIET_ENV,
    SWEEP_SPEC_FILE,
)
from sweeps.errors import SpecError
from sweeps.lock import SweepLock
from sweeps.schema import SweepSpec
from sweeps.signals import StopSignals, SweepInterrupted
from sweeps.trials import check_resources, validate_trials

LOCAL_HOST = "127.0.0.1"  # the host of the URLs the summary prints
RAY_SINGLE_MACHINE_ENV = ENV_RAY_SINGLE_MACHINE  # the Ray this driver starts is on 127.0.0.1 (sweeps.loopback)


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
    experiment_id: str = ""  # MLflow's: the UI link of the summary

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
        lines.extend(self._ui_lines())
        return "\n".join(lines)

    def _ui_lines(self) -> list[str]:
        """How to open the sweep's runs table (the UI's model-training view, not its GenAI default)."""
        from sweeps.ui_view import runs_page

        uri, sweep = self.spec.tracking_uri(), self.spec.name
        if uri.startswith("sqlite:"):
            base = f"http://{LOCAL_HOST}:5000"
            link = f"  -> {runs_page(base, self.experiment_id, sweep)}" if self.experiment_id else f"  -> {base}"
            return [f"  open the UI: mlflow ui --backend-store-uri {uri} --host {LOCAL_HOST} --port 5000{link}"]
        if uri.startswith(("http://", "https://")) and self.experiment_id:
            return [f"  runs table: {runs_page(uri, self.experiment_id, sweep)}"]
        return []


def generate_data(spec: SweepSpec) -> None:
    """Write the synthetic dataset's missing categories (every ``data.synthetic`` field) under
    ``<sweep_dir>/data``; nothing for ``data.root``."""
    synthetic = spec.data.synthetic
    if synthetic is None:
        return
    root = spec.data_root()
    missing = [c for c in spec.categories() if not (root / c).is_dir()]
    if missing:
        from haloae.synth import generate  # torch: only where there is data to draw

        generate(root, **{**synthetic.generate_kwargs(), "categories": missing})


def prepare(spec: SweepSpec) -> list[dict[str, Any]]:
    """The trial configs (validated, with the data: no Ray) and the synthetic data generated."""
    trials = validate_trials(spec)
    generate_data(spec)
    return trials


def experiment_path(spec: SweepSpec) -> str:
    return f"{str(spec.sweep_dir()).rstrip('/')}/{spec.tune_dir_name()}"


# Tune adds a CSV, a JSON and a TensorBoard result logger unless this is "1"; the sweep names the
# first two itself. TensorBoard's (tensorboardX) imports torch into the driver, about 1.6 s as the
# first trial starts, and writes event files nobody reads: the sweep's metrics are in MLflow.
TUNE_OWN_LOGGERS_ENV = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"


@contextmanager
def driver_environ(spec: SweepSpec) -> Iterator[None]:
    """What the driver sets in its environment, for the span of the sweep only: Ray's quiet logging
    (read at ``ray.init``, and passed on to every worker), the tracking URI (MLflow's default for
    a client made without one) and Tune's result loggers as the sweep names them (``_tuner``). A
    value the caller set is left as it is; the ones added go again at the end, so a caller in a
    notebook or a later test does not keep them (a second sweep in the same process would otherwise
    default to the first one's store)."""
    wanted = {**QUIET_ENV, ENV_TRACKING_URI: spec.tracking_uri(), TUNE_OWN_LOGGERS_ENV: "1"}
    added = [key for key in wanted if key not in os.environ]
    os.environ.update({key: wanted[key] for key in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    passed = (*QUIET_ENV, ENV_TRACKING_URI, ENV_INJECT_FAULT, ENV_DATA_CACHE)
    runtime_env = {"env_vars": {k: os.environ[k] for k in passed if k in os.environ}}
    if _own_cluster(address):
        from sweeps.reporting import TRIAL_LOG_HOOK

        runtime_env["worker_process_setup_hook"] = TRIAL_LOG_HOOK  # a module path: needs this package, as here
        from sweeps.loopback import single_machine_ray

        with single_machine_ray():  # every socket on 127.0.0.1, whoever imported Ray first
            ray.init(address="local", include_dashboard=False, runtime_env=runtime_env, log_to_driver=True)
    else:
        ray.init(address=address, runtime_env=runtime_env)


def loopback_ray(address: str | None) -> None:
    """Before Ray is imported: a Ray this process starts itself listens on 127.0.0.1 only (its
    sockets would otherwise listen on every interface). A cluster (``--address``) is left alone."""
    if _own_cluster(address):
        os.environ.setdefault(RAY_SINGLE_MACHINE_ENV, "0")


def _own_cluster(address: str | None) -> bool:
    """The driver starts its own one-machine Ray (no ``--address``, or ``local``)."""
    return address in (None, "local")


def _search(spec: SweepSpec):
    """(search_alg, param_space) for the spec's algorithm; each honours ``max_concurrent_trials``
    itself (Tune ignores TuneConfig's for a search algorithm passed in)."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from sweeps.space import optuna_define_by_run, optuna_sampler, study_name, tune_param_space

    if spec.search.algorithm == "optuna":
        import optuna
        from ray.tune.search import ConcurrencyLimiter

        from sweeps.optuna_links import LinkedOptunaSearch

        storage = optuna.storages.RDBStorage(spec.optuna_storage())
        searcher = LinkedOptunaSearch(  # each Optuna trial stores its MLflow run ids
            space=optuna_define_by_run(spec),
            metric=spec.objective.metric,
            mode=spec.objective.mode,
            sampler=optuna_sampler(spec),
            study_name=study_name(spec),
            storage=storage,
            tracking_uri=spec.tracking_uri(), experiment=spec.experiment_name(), sweep=spec.name,
        )
        if spec.max_concurrent_trials:
            searcher = ConcurrencyLimiter(searcher, max_concurrent=spec.max_concurrent_trials)
        return searcher, {}
    generator = BasicVariantGenerator(
        points_to_evaluate=[dict(p) for p in spec.search.points or ()],  # each expands over the grid it leaves open
        random_state=spec.search.seed,
        max_concurrent=spec.max_concurrent_trials or 0,
    )
    return generator, tune_param_space(spec)


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


def run_trial(config: dict[str, Any], spec: SweepSpec, parent_run_id: str) -> None:
    """What Tune runs in the trial process: ``sweeps.trainable.run_trial``, imported there and not
    here (the driver never trains; haloae.train's imports would delay the first trial by ~1 s)."""
    from sweeps.trainable import run_trial as train

    train(config, spec, parent_run_id)


def build_trainable(spec: SweepSpec, parent_run_id: str):
    from ray import tune

    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    return tune.with_resources(tune.with_parameters(run_trial, spec=spec, parent_run_id=parent_run_id), resources)


def _tuner(spec: SweepSpec, trainable, restorable: bool):
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from sweeps.reporting import progress_reporter
    from sweeps.restorable import KeepRestorable, put_back_restorable

    if restorable:  # the callbacks come back with the run config Tune saved
        for put_back in put_back_restorable(experiment_path(spec)):
            print(f"note: put back {put_back} from the copy kept for a restore", file=sys.stderr)
        return tune.Tuner.restore(experiment_path(spec), trainable, resume_unfinished=True, resume_errored=True)
    search_alg, param_space = _search(spec)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=spec.objective.metric,
            mode=spec.objective.mode,
            search_alg=search_alg,
            scheduler=_scheduler(spec),
            num_samples=spec.search.tune_samples(),
            reuse_actors=True,  # a trial process imports torch once, not once per trial
        ),
        run_config=tune.RunConfig(
            name=spec.tune_dir_name(),
            storage_path=str(spec.sweep_dir()),
            failure_config=tune.FailureConfig(max_failures=spec.retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            # KeepRestorable: the checkpoint a restore needs survives a driver kill; each trial's
            # progress.csv and result.json as Tune writes them by default, without TensorBoard's files
            callbacks=[KeepRestorable(), CSVLoggerCallback(), JsonLoggerCallback()],
            verbose=1,
            progress_reporter=progress_reporter(spec),
        ),
    )


def run_sweep(spec: SweepSpec, resume: bool = False, address: str | None = None) -> SweepOutcome:
    """Run (or resume) the sweep to completion and return its outcome.

    Raises ``SweepLockedError`` while another process runs it, ``SweepInterrupted`` on SIGINT/SIGTERM."""
    from sweeps.reachable import check_reachable

    validate_trials(spec)
    if _own_cluster(address):  # a trial larger than this machine: refused before anything is written
        check_resources(spec, address)
    check_reachable(spec.tracking_uri(), spec.where())
    lock = SweepLock(spec.sweep_dir(), spec.name) if spec.local_storage() else None
    with lock or nullcontext(), StopSignals() as stop, driver_environ(spec):
        if lock is not None and lock.took_over:
            print(f"note: took over the stale lock of {lock.took_over} (that process is gone)", file=sys.stderr)
        return _run_locked(spec, resume, address, stop)


def _run_locked(spec: SweepSpec, resume: bool, address: str | None, stop: StopSignals) -> SweepOutcome:
    from ray import tune

    restorable = tune.Tuner.can_restore(experiment_path(spec))
    if restorable and not resume:
        raise SpecError(
            f"{spec.where()}: name: sweep {spec.name!r} already ran in {spec.sweep_dir()}; "
            "use --resume to continue it, or another name/storage"
        )
    generate_data(spec)
    from sweeps.stores import opened_meanwhile

    with opened_meanwhile(spec.tracking_uri()):  # the MLflow store opens while Ray's daemons start
        _init_ray(address)
    stop.install()  # again: ray.init's core worker installs a SIGTERM handler that aborts the driver
    return _run_on_ray(spec, address, restorable, stop)


def _run_on_ray(spec: SweepSpec, address: str | None, restorable: bool, stop: StopSignals) -> SweepOutcome:
    from sweeps import stores, tracking
    from sweeps.preflight import check_schedulable, check_shared_storage
    from sweeps.stopped import evaluate_stopped

    check_shared_storage(spec)
    check_schedulable(spec, _own_cluster(address))
    stores.warn_over_capacity(spec)
    spec_path = None
    if spec.local_storage():
        spec_path = Path(spec.sweep_dir()) / SWEEP_SPEC_FILE
        spec_path.write_text(spec.yaml_text)
    varied = sorted(spec.search.space) + (["variant"] if len(spec.variants) > 1 else [])
    parent = tracking.ensure_parent_run(
        spec.tracking_uri(), spec.experiment_name(), spec.name, spec.sha256(), spec_path, varied,
        tracking.artifact_location(spec.tracking_uri(), spec.sweep_dir()) if spec.local_storage() else None,
        objective=spec.objective.metric, mode=spec.objective.mode,
    )
    tuner = _tuner(spec, build_trainable(spec, parent), restorable)
    try:
        with stop.fitting():
            results = tuner.fit()
    except SweepInterrupted as exc:  # a second signal: no graceful stop, but no run left RUNNING either
        _end_interrupted(spec, parent, exc.signal_name, {})
        raise
    outcome = _outcome(spec, results, parent)
    outcome.experiment_id = tracking.experiment_of(spec.tracking_uri(), parent)
    errors = {t.trial_id: t.error for t in outcome.trials if t.status == "ERROR"}
    if stop.received is not None:
        interrupted = SweepInterrupted(stop.received)
        _end_interrupted(spec, parent, interrupted.signal_name, errors)
        raise interrupted
    stopped = [t.trial_id for t in outcome.trials if t.status == "STOPPED"]
    tracking.reconcile(spec.tracking_uri(), spec.experiment_name(), spec.name, errors, stopped)
    evaluate_stopped(spec, results, outcome.trials)  # their best checkpoints: no table cell goes missing
    tracking.finish_parent_run(spec.tracking_uri(), parent, len(errors))
    return outcome


def _end_interrupted(spec: SweepSpec, parent: str, signal_name: str, errors: dict[str, str]) -> None:
    from sweeps import tracking

    tracking.reconcile(spec.tracking_uri(), spec.experiment_name(), spec.name, errors, (), interrupted_by=signal_name)
    tracking.finish_parent_run(spec.tracking_uri(), parent, len(errors), status="KILLED")


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
