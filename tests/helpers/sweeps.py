# SPDX-License-Identifier: Apache-2.0
"""Shared pieces of the sweep tests: tiny sweep definitions and MLflow/Optuna readers."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from haloae.vocab import QUIET_ENV, ROLE_TRIAL, TAG_CATEGORY, TAG_ROLE, TAG_SEED, TAG_TRIAL_ID

os.environ.update(QUIET_ENV)


def tiny_spec(tmp_path: Path, name: str, **fields: Any) -> Path:
    """A sweep definition on synthetic 32 px data with the ``tiny`` preset: seconds per trial."""
    spec: dict[str, Any] = {
        "name": name,
        "data": {"synthetic": {"categories": ["synth_disc", "synth_brick"], "size": 32, "seed": 0}, "categories": "all"},
        "preset": "tiny",
        "overrides": {"train.epochs": 3, "train.steps_per_epoch": 2},
        "variants": ["haloae"],
        "seeds": [0],
        "search": {"algorithm": "grid", "space": {}},
        "resources": {"cpu": 0.5},
        "storage": str(tmp_path / "sweeps"),
    }
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_spec_on_fresh_ray(path: Path) -> tuple[Any, Any]:
    """Load the sweep definition at ``path`` and run it on a local Ray started for it (shut down
    before and after, even on failure); asserts no trial failed. ``(spec, outcome)``."""
    import ray

    from sweeps.loading import load_spec
    from sweeps.runner import run_sweep

    spec = load_spec(path)
    ray.shutdown()
    try:
        outcome = run_sweep(spec)
    finally:
        ray.shutdown()
    assert not outcome.failed, outcome.summary()
    return spec, outcome


def trial_runs(tracking_uri: str, experiment: str) -> list:
    """Every child (trial) run of an experiment, any status."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    return list(
        client.search_runs([exp.experiment_id], f"tags.`{TAG_ROLE}` = '{ROLE_TRIAL}'", run_view_type=ViewType.ALL, max_results=1000)
    )


def duplicates(runs: list) -> list[tuple[str, str, str]]:
    keys = Counter((r.data.tags[TAG_TRIAL_ID], r.data.tags[TAG_CATEGORY], r.data.tags[TAG_SEED]) for r in runs)
    return [k for k, n in keys.items() if n > 1]


def artifact_paths(tracking_uri: str, run_id: str) -> set[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found, stack = set(), [None]
    while stack:
        for item in client.list_artifacts(run_id, stack.pop()):
            found.add(item.path)
            if item.is_dir:
                stack.append(item.path)
    return found


def epoch_steps(tracking_uri: str, run_id: str, key: str = "train/loss") -> list[int]:
    from mlflow.tracking import MlflowClient

    return sorted(m.step for m in MlflowClient(tracking_uri).get_metric_history(run_id, key))
