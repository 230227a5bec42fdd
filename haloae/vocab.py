# SPDX-License-Identifier: Apache-2.0
"""The names every layer shares: metric keys, the default objective, MLflow tags, environment
variables and the files a run leaves. Strings only (no imports), so ``sweeps`` and ``analysis``
import them from here instead of spelling them again.

Metric keys are ``<split>/<metric>`` (``val/image_auroc``) or ``<split>/<scoring>/<metric>``
(``test/afm_norm_filter/pixel_auroc``); per defect type ``test/defect/<defect>/image_auroc``.
AUROCs are fractions in [0, 1]; tables print percent.
"""

from __future__ import annotations

# ---------------------------------------------------------------------- metrics
SPLITS = ("train", "val", "test")
VAL, TEST, TRAIN = "val", "test", "train"
DEFAULT_SCORING = "afm_norm_filter"  # the paper's scoring (Table S1): normalised, filtered fm map
# What evaluation reports per scoring that a sweep may optimise (haloae.metrics.evaluate_maps);
# the default scoring's metrics also come without the scoring prefix.
OBJECTIVE_METRICS = ("image_auroc", "pixel_auroc", "aupro", "image_auroc_max")
DEFAULT_OBJECTIVE = f"{VAL}/image_auroc"  # = val/afm_norm_filter/image_auroc where the model has that scoring
BEST_EPOCH = "best_epoch"  # the epoch whose checkpoint is best.pt (a final metric)
# A sweep's child run logs each epoch's validation under ``curve/val/...`` (step = epoch) and its
# final ``val/*`` (best checkpoint, step = best epoch) and ``test/*`` once: MLflow's "latest" value
# of ``val/*`` (runs table, sort, compare view) is then the best checkpoint's, as in the tables.
CURVE_PREFIX = "curve/"
# eval.protocol=paper (haloae.paper_protocol): the published, leaky evaluation. Its numbers live only
# under "leaky/", never under val/ or test/, and nothing may choose by them (objective, export).
LEAKY = "leaky"
LEAKY_CHECKPOINT_IMAGE_AUROC = f"{LEAKY}/checkpoint/image_auroc"  # per scored epoch ("saved checkpoint")
LEAKY_CHECKPOINT_PIXEL_AUROC = f"{LEAKY}/checkpoint/pixel_auroc"
LEAKY_IMAGE_AUROC = f"{LEAKY}/{TEST}/image_auroc"  # final: the checkpoint chosen on the test set
LEAKY_PIXEL_AUROC = f"{LEAKY}/{TEST}/pixel_auroc"
LEAKY_BEST_EPOCH = f"{LEAKY}/best_epoch"  # the epoch the paper protocol chose (on test)
LEAKY_LABEL = "LEAKY (paper protocol: chosen and normalised on test, AUC flipped)"  # wherever printed


def is_leaky(metric: str) -> bool:
    """A paper-protocol number (``leaky/...``): reported beside the honest ones, never a choice."""
    return metric.split("/", 1)[0] == LEAKY


def leaky_refusal(metric: str) -> str:
    """Why a leaky metric cannot be an objective or an export criterion (the caller names the field)."""
    return (
        f"{metric} is a leaky paper-protocol number (normalised and chosen on the test set): it is "
        "reported beside the honest numbers, never chosen by; use a validation metric (val/...)"
    )


def metric_key(split: str, metric: str, scoring: str | None = None) -> str:
    """``metric_key("val", "image_auroc")`` -> ``val/image_auroc``; with a scoring, ``val/<scoring>/...``."""
    return f"{split}/{scoring}/{metric}" if scoring else f"{split}/{metric}"


def scoring_of(metric: str) -> str | None:
    """``val/<scoring>/image_auroc`` -> that scoring; ``val/image_auroc`` -> None (the default scoring)."""
    parts = metric.split("/")
    return parts[1] if len(parts) == 3 else None


def split_of(metric: str) -> str:
    return metric.partition("/")[0]


def curve_key(metric: str) -> str:
    """``val/image_auroc`` -> ``curve/val/image_auroc``: the per-epoch history of a final metric."""
    return f"{CURVE_PREFIX}{metric}"


# ---------------------------------------------------------------------- MLflow tags
TAG_SWEEP = "sweep"
TAG_TRIAL_ID = "trial_id"
TAG_CATEGORY = "category"
TAG_VARIANT = "variant"
TAG_SEED = "seed"
TAG_ROLE = "haloae.role"  # parent | trial | export
TAG_VARIED = "haloae.varied"  # on the parent: the knobs the sweep varies, comma-separated
TAG_SPEC_SHA256 = "spec_sha256"
TAG_DATA_ROOT = "data_root"
TAG_ERROR = "error"
TAG_STOPPED_BY = "stopped_by"
TAG_FAILED_TRIALS = "failed_trials"
TAG_SOURCE_RUN = "source_run_id"
TAG_NODE_ID, TAG_NODE_IDS = "ray.node_id", "ray.node_ids"
TAG_PARENT_RUN = "mlflow.parentRunId"  # MLflow's own nesting tag
ROLE_PARENT, ROLE_TRIAL, ROLE_EXPORT = "parent", "trial", "export"
TAG_STAGE = "haloae.stage"  # on child runs of a two-stage sweep (sweeps.protocol): screen | confirm
STAGE_SCREEN, STAGE_CONFIRM = "screen", "confirm"
# on a child run the scheduler stopped early (ASHA), once its best checkpoint is evaluated (sweeps.stopped):
# the number of epochs it trained; tables count the run and mark its cells "stopped at epoch k"
TAG_STOPPED_AT = "haloae.stopped_at_epoch"
# on the parent run, when the sweep ends: per variant (and stage), the mean of the final headline
# metrics over its FINISHED child runs, ``mean/<variant>/test/image_auroc``, and their count ``runs/<variant>``
PARENT_MEAN_PREFIX, PARENT_COUNT_PREFIX = "mean/", "runs/"
# on a registered model version (``haloae export``): how it was chosen, its threshold, its trial run
TAG_OBJECTIVE, TAG_OBJECTIVE_VALUE, TAG_THRESHOLD = "objective", "objective_value", "threshold"
# user attributes of an Optuna trial (``sweeps.optuna_links``): its Tune trial and MLflow child runs
OPTUNA_ATTR_TUNE_TRIAL, OPTUNA_ATTR_RUN_IDS = "tune_trial_id", "mlflow_run_ids"
# the MLflow UI's runs table in its model-training view (MLflow 3.17; the bare page opens on GenAI)
UI_RUNS_FRAGMENT = "#/experiments/{experiment_id}/runs?workflowType=machine_learning"

# ---------------------------------------------------------------------- environment variables
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_DATA_CACHE = "HALOAE_DATA_CACHE"  # folder of the per-node data cache
ENV_INJECT_FAULT = "HALOAE_INJECT_FAULT"  # tests: "epoch=<n>,marker=<path>" raises once at that epoch
ENV_TORCH_DEVICE = "TORCH_DEVICE"  # tests: cpu (default) or cuda
ENV_RAY_SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's: 0 = one machine, on 127.0.0.1 (sweeps.loopback)
QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_AIR_NEW_OUTPUT": "0",  # Ray's classic progress table (CLIReporter)
    # Tune snapshots the experiment state whenever a trial has saved num_to_keep checkpoints since the
    # last one; short test and smoke epochs do that within 5 s, and Tune then warns on every snapshot
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}

# ---------------------------------------------------------------------- files a run leaves
CHECKPOINT_FILE = "checkpoint.pt"  # the last epoch: what resume restores
BEST_FILE = "best.pt"  # the best epoch by the run's objective: what evaluation and export use
METRICS_FILE = "metrics.json"  # final val/* and test/* of best.pt
CONFIG_FILE = "config.json"
OVERLAYS_DIR = "overlays"
ALPHA_PLOT_FILE = "alpha_schedule.png"
BEST_ARTIFACT = f"checkpoint/{BEST_FILE}"  # where a trial's MLflow run keeps best.pt
# a sweep's folder <storage>/<name>/ (the default storage is relative to the working directory)
DEFAULT_STORAGE = "runs/sweeps"
TRACKING_DB_FILE = "mlflow.db"  # the default sqlite tracking store of a sweep
SWEEP_SPEC_FILE = "spec.yaml"  # the definition as run
SWEEP_LOCK_FILE = ".lock"  # held (flock) by the running sweep: pid and host
SWEEP_RAY_DIR = "ray"  # Tune's experiment folder: what --resume restores
STATISTICS_FILE = "statistics.txt"  # `haloae tables --out`: intervals, paired tests, val-vs-test correlation
FIGURE_FORMATS = ("png", "pdf", "svg")  # `haloae figures --format`: the file types of a figure
REPORT_FILE = "report-{sweep}.html"  # `haloae report`'s default output (in the working directory)
# the registered pyfunc model's one input column: base64 of an image file (the server opens no file a request names)
PYFUNC_IMAGE_COLUMN = "image"
