# SPDX-License-Identifier: Apache-2.0
"""The MLflow UI's view of a sweep, and the link that opens it.

MLflow 3.17 opens an experiment in its GenAI view, shows a sweep's child runs folded under the
parent and no metric or parameter column. A sweep therefore stores a *shared view state* on its
experiment (the tag ``mlflow.sharedViewState.<key>``, what the UI's own "Share" button writes; the
URL parameter ``viewStateShareKey`` loads it): the parent run expanded, the runs sorted by the
objective, and as columns variant, category, seed, the varied knobs, the objective and the
headline test metrics. The printed link opens the runs table in the model-training view
(``workflowType=machine_learning``) with that view.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from mlflow.tracking import MlflowClient

from haloae.vocab import BEST_EPOCH, TAG_CATEGORY, TAG_SEED, TAG_VARIANT, UI_RUNS_FRAGMENT

SHARED_VIEW_TAG = "mlflow.sharedViewState."  # the UI's experiment-tag prefix for a shared view
SHARE_KEY_PARAM = "viewStateShareKey"
TEST_COLUMNS = ("test/image_auroc", "test/pixel_auroc", "test/aupro")


def share_key(sweep: str) -> str:
    return f"haloae-{sweep}"


def _column(kind: str, name: str) -> str:
    return f"{kind}.`{name}`"  # the UI's column key: attributes | params | metrics | tags


def view_state(parent_run_id: str, objective: str, mode: str, knobs: Iterable[str]) -> dict:
    """The runs table as a sweep wants it seen (search facets and table state, the UI's names)."""
    params = [TAG_VARIANT, TAG_CATEGORY, TAG_SEED, *(k for k in knobs if k not in (TAG_VARIANT, TAG_CATEGORY, TAG_SEED))]
    metrics = [objective, *(k for k in TEST_COLUMNS if k != objective), BEST_EPOCH]
    return {
        "searchFilter": "",
        "orderByKey": _column("metrics", objective),
        "orderByAsc": mode == "min",
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": [_column("params", p) for p in params] + [_column("metrics", m) for m in metrics],
        "runsExpanded": {parent_run_id: True},
    }


def store_view(mlf: MlflowClient, experiment_id: str, sweep: str, state: dict) -> None:
    mlf.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + share_key(sweep), json.dumps(state))


def runs_page(base_url: str, experiment_id: str, sweep: str | None = None) -> str:
    """The UI's runs table of an experiment in the model-training view; with ``sweep``, in that
    sweep's stored view."""
    url = base_url.rstrip("/") + "/" + UI_RUNS_FRAGMENT.format(experiment_id=experiment_id)
    return f"{url}&{SHARE_KEY_PARAM}={share_key(sweep)}" if sweep else url
