# SPDX-License-Identifier: Apache-2.0
"""Ship the winners: per category, the best FINISHED run by a *validation* metric, as a bundle on
disk (``haloae.bundle``: loads without MLflow or Ray) and a registered pyfunc model
``haloae-<category>`` with alias ``champion``.

Nothing here looks at test data. The run is chosen by ``objective`` (default ``val/image_auroc``,
at the best epoch); the decision threshold is chosen on the run's own validation set, rebuilt
deterministically by ``haloae.category_data.prepare_data(cfg, data_root, category)`` (held-out train/good
images, each once as is and once with a synthetic defect):

    threshold = the one maximising F1 on the validation scores (anomalous = positive), placed
    halfway between the lowest score it flags and the highest score it does not.

F1 rather than Youden's J: with as many anomalies as good images in the validation set both pick
similar points, and F1 does not reward flagging everything when anomalies are rare at test time.
The overlay colour range (``map_range``: min and 99.9% quantile of the validation maps) is
stored too, so overlays of different images share one scale.

The registered model is logged in a new run (tag ``haloae.role=export``) nested under the
sweep's parent run: trial runs are never modified. Each registered version says where it came
from: tags ``objective``, ``objective_value``, ``threshold``, ``source_run_id``, ``sweep``,
``category``, and the same in words in its description.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from analysis.runs import (
    RunsFrame,
    SweepQueryError,
    client_for,
    finished,
    load_runs,
    require_categories,
    run_config,
)
from haloae.dotted import hint
from haloae.vocab import (
    BEST_ARTIFACT,
    DEFAULT_OBJECTIVE,
    ENV_TRACKING_URI,
    ROLE_EXPORT,
    TAG_CATEGORY,
    TAG_DATA_ROOT,
    TAG_OBJECTIVE,
    TAG_OBJECTIVE_VALUE,
    TAG_PARENT_RUN,
    TAG_ROLE,
    TAG_SOURCE_RUN,
    TAG_SWEEP,
    TAG_THRESHOLD,
    TEST,
    VAL,
    is_leaky,
    leaky_refusal,
    scoring_of,
)

ALIAS = "champion"
THRESHOLD_METHOD = "max F1 on the validation set (held-out train/good + synthetic anomalies), midway to the next lower score"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
REQUIREMENTS = ("torch", "torchvision", "numpy", "pillow", "pandas", "pyyaml", "mlflow")


@dataclass(frozen=True)
class Exported:
    category: str
    run_id: str  # the trial's child run
    objective: str
    value: float
    bundle: Path
    threshold: float
    model_name: str | None = None  # registered model, when registered
    version: str | None = None

    @property
    def model_uri(self) -> str | None:
        return f"models:/{self.model_name}@{ALIAS}" if self.model_name else None


def model_name(category: str) -> str:
    """Registered model name of a category (MLflow forbids '/' and ':')."""
    return f"haloae-{category}".replace("/", "-").replace(":", "-")


# ---------------------------------------------------------------------- choosing
def best_runs(runs: RunsFrame, objective: str = DEFAULT_OBJECTIVE, categories=None) -> dict[str, pd.Series]:
    """category -> the FINISHED run with the highest ``objective`` (ties: the first by run id)."""
    if is_leaky(objective):  # eval.protocol=paper's numbers: chosen and normalised on test
        raise SweepQueryError(f"objective: {leaky_refusal(objective)}")
    if not objective.startswith(f"{VAL}/"):
        raise SweepQueryError(f"objective {objective!r}: must be a validation metric (val/...); test data is for reporting only")
    wanted = require_categories(runs, categories)
    done = finished(runs)
    if objective not in done.columns:
        val_metrics = [c for c in done.columns if isinstance(c, str) and c.startswith(f"{VAL}/")]
        raise SweepQueryError(f"objective {objective!r}: no FINISHED run has it; {hint(objective, val_metrics)}e.g. {', '.join(val_metrics)[:200]}")
    chosen = {}
    for category in wanted:
        candidates = done[(done["category"] == category) & done[objective].notna()].sort_values("run_id")
        if candidates.empty:
            raise SweepQueryError(f"category {category}: no FINISHED run with {objective} ({runs.attrs.get('summary', '')})")
        chosen[category] = candidates.loc[candidates[objective].idxmax()]
    return chosen


def f1_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(threshold, F1): the F1-maximising cut, midway between the lowest flagged score and the
    highest unflagged one (ties in F1 go to the higher cut: fewer false alarms)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    if not labels.any() or labels.all():
        raise ValueError("f1_threshold: needs both good and anomalous validation images")
    best_f1, best_cut = -1.0, 0.0
    for cut in np.unique(scores):
        flagged = scores >= cut
        tp = int((flagged & labels).sum())
        f1 = 2 * tp / (int(flagged.sum()) + int(labels.sum()))
        if f1 >= best_f1:
            best_f1, best_cut = f1, float(cut)
    below = scores[scores < best_cut]
    threshold = (best_cut + float(below.max())) / 2 if below.size else best_cut - max(abs(best_cut), 1.0) * 1e-6
    return threshold, best_f1


def calibrate(predictor, images01: torch.Tensor, labels: torch.Tensor) -> dict:
    """Threshold, validation F1 and overlay colour range from validation images."""
    from haloae.metrics import image_auroc

    result = predictor.predict(images01)
    threshold, f1 = f1_threshold(result.scores.numpy(), labels.numpy())
    out = {"threshold": threshold, "val_f1": f1, "val_image_auroc": image_auroc(labels, result.scores)}
    if result.maps is not None:
        flat = result.maps.flatten()
        out["map_range"] = (float(flat.min()), float(torch.quantile(flat[:: max(1, flat.numel() // 1_000_000)], 0.999)))
    return out


# ---------------------------------------------------------------------- exporting
def export_sweep(
    sweep: str,
    out: str | Path,
    categories=None,
    tracking_uri: str | None = None,
    storage: str | Path | None = None,
    objective: str = DEFAULT_OBJECTIVE,
    data_root: str | Path | None = None,
    register: bool = True,
) -> list[Exported]:
    """Bundle (``<out>/<category>/``) and register the best run of each category."""
    if is_leaky(objective):  # refused before any store is read
        raise SweepQueryError(f"objective: {leaky_refusal(objective)}")
    runs = load_runs(sweep, tracking_uri, storage)
    chosen = best_runs(runs, objective, categories)
    client = client_for(runs.attrs["tracking_uri"])
    exported = []
    for category, row in chosen.items():
        exported.append(_export_one(client, runs, row, Path(out) / category, objective, data_root, register))
    return exported


def _export_one(client, runs: RunsFrame, row: pd.Series, folder: Path, objective: str, data_root, register: bool) -> Exported:
    from analysis.checkpoints import load_run_checkpoint
    from haloae.bundle import Predictor, load_bundle, save_bundle
    from haloae.category_data import prepare_data

    run_id, category = row["run_id"], row["category"]
    run = client.get_run(run_id)
    root = data_root or run.data.tags.get(TAG_DATA_ROOT) or run.data.params.get(TAG_DATA_ROOT)
    if not root:
        raise SweepQueryError(f"run {run_id} ({category}): no data_root tag to rebuild its validation set; pass --data-root")
    cfg = run_config(client, run_id)
    with tempfile.TemporaryDirectory() as tmp:
        best = load_run_checkpoint(client, run_id, tmp, f"run {run_id} ({category})")
        source = f"run {run_id} ({category}): artifact {BEST_ARTIFACT}"  # what a non-finite score's error names
        predictor = Predictor(best.model, best.scorer, scoring=scoring_of(objective), source=source)
        val = prepare_data(cfg, root, category).val
        calibration = calibrate(predictor, val.images, val.labels)
        metrics = {k: float(v) for k, v in row.items() if isinstance(k, str) and k.startswith((f"{VAL}/", f"{TEST}/")) and pd.notna(v)}
        metadata = {
            "scoring": predictor.scoring,
            "threshold_method": THRESHOLD_METHOD,
            "map_range": calibration.get("map_range"),
            "category": category,
            "source_run_id": run_id,
            "metrics": metrics,
            "selection": {"objective": objective, "value": float(row[objective]), "sweep": runs.attrs["sweep"]},
            "calibration": {k: calibration[k] for k in ("val_f1", "val_image_auroc")},
            "data_root": str(root),
        }
        save_bundle(best.path, folder, calibration["threshold"], metadata)
    load_bundle(folder)  # fail here, not at serving time, if the bundle does not load
    result = Exported(category, run_id, objective, float(row[objective]), folder, calibration["threshold"])
    if not register:
        return result
    name, version = register_bundle(runs, folder, category, run_id, result)
    return dataclasses.replace(result, model_name=name, version=version)


@contextlib.contextmanager
def _tracking(uri: str):
    """MLflow's fluent API on ``uri`` for the duration. ``set_tracking_uri`` also sets the
    environment variable, so restoring it (or unsetting it: None) restores the process's state.
    The registry follows the tracking URI unless the user configured one (MLFLOW_REGISTRY_URI)."""
    import mlflow

    before = os.environ.get(ENV_TRACKING_URI)
    mlflow.set_tracking_uri(uri)
    try:
        yield mlflow
    finally:
        mlflow.set_tracking_uri(before)


def _requirements() -> list[str]:
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from haloae.vocab import PYFUNC_IMAGE_COLUMN

    inputs = Schema([ColSpec("string", PYFUNC_IMAGE_COLUMN)])  # base64 image bytes only: no file names
    outputs = Schema([ColSpec("double", "score"), ColSpec("boolean", "decision"), ColSpec("string", "map")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def register_bundle(runs: RunsFrame, bundle: Path, category: str, source_run_id: str, chosen: Exported | None = None) -> tuple[str, str]:
    """Log the bundle as a pyfunc model in an export run under the sweep's parent, register it as
    ``haloae-<category>`` and point the alias ``champion`` at the new version. The version carries
    how it was chosen (``chosen``: the validation objective and its value, the threshold) and its
    source trial run, as tags and in its description."""

    uri, parent = runs.attrs["tracking_uri"], runs.attrs.get("parent_run_id")
    client = client_for(uri)
    experiment_id = client.get_run(source_run_id).info.experiment_id
    name = model_name(category)
    tags = {TAG_SWEEP: runs.attrs["sweep"], TAG_ROLE: ROLE_EXPORT, TAG_CATEGORY: category, TAG_SOURCE_RUN: source_run_id}
    if parent:
        tags[TAG_PARENT_RUN] = parent
    with _tracking(uri) as mlflow, mlflow.start_run(experiment_id=experiment_id, run_name=f"export-{category}", tags=tags):
        mlflow.log_dict(json.loads((bundle / "bundle.json").read_text()), "bundle.json")
        with warnings.catch_warnings():  # the signature is explicit; an input example would run the model
            warnings.filterwarnings("ignore", message=".*input example.*", category=UserWarning)
            info = _log_pyfunc(mlflow, bundle, name)
    version = str(info.registered_model_version)
    _describe_version(client, name, version, runs.attrs["sweep"], category, source_run_id, chosen)
    client.set_registered_model_alias(name, ALIAS, version)
    return name, version


def _describe_version(client, name: str, version: str, sweep: str, category: str, source_run_id: str, chosen: Exported | None) -> None:
    tags = {TAG_SWEEP: sweep, TAG_CATEGORY: category, TAG_SOURCE_RUN: source_run_id}
    text = f"{category}: the best run of sweep {sweep} (source run {source_run_id})"
    if chosen is not None:
        tags |= {TAG_OBJECTIVE: chosen.objective, TAG_OBJECTIVE_VALUE: repr(chosen.value), TAG_THRESHOLD: repr(chosen.threshold)}
        text = (f"{category}: the best run of sweep {sweep} by {chosen.objective} = {chosen.value:.4f} (validation; "
                f"source run {source_run_id}); decision threshold {chosen.threshold:.6g}: {THRESHOLD_METHOD}")  # fmt: skip
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(name, version, description=text)


def _log_pyfunc(mlflow, bundle: Path, name: str):
    import haloae

    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(PYFUNC_CODE),
        artifacts={"bundle": str(bundle)},
        code_paths=[str(Path(haloae.__file__).parent)],  # the registered model carries the library
        signature=signature(),
        pip_requirements=_requirements(),
        registered_model_name=name,
    )


def resolve_bundle(model: str, tracking_uri: str | None = None) -> Path:
    """A bundle folder from a folder path or a ``models:/`` URI (its ``bundle`` artifact is fetched)."""
    if not model.startswith("models:/"):
        folder = Path(model)
        if not (folder / "bundle.json").is_file():
            raise SweepQueryError(f"--model {model}: not a bundle folder (no bundle.json) nor a models:/ URI")
        return folder
    import mlflow

    # never MLflow's default (sqlite:///<cwd>/mlflow.db): it would create an empty store right here
    uri = tracking_uri or os.environ.get(ENV_TRACKING_URI)
    if not uri:
        raise SweepQueryError(
            f"--model {model}: which MLflow store holds the registry? pass --tracking-uri "
            f"(e.g. sqlite:///$PWD/runs/sweeps/<sweep>/mlflow.db) or set {ENV_TRACKING_URI}"
        )
    client_for(uri)  # a sqlite file that does not exist is an error, not a new store
    target = Path(tempfile.mkdtemp(prefix="haloae-model-"))
    try:
        with _tracking(uri):
            local = mlflow.artifacts.download_artifacts(artifact_uri=model, dst_path=str(target))
    except Exception as exc:  # MlflowException: unknown model, version or alias
        raise SweepQueryError(f"--model {model}: cannot fetch it ({' '.join(str(exc).split())[:200]})") from exc
    found = sorted(Path(local).rglob("bundle.json"))
    if not found:
        raise SweepQueryError(f"--model {model}: no bundle inside the model's artifacts")
    return found[0].parent
