# SPDX-License-Identifier: Apache-2.0
"""The parent run's aggregates: per variant (and per stage in a two-stage sweep), the mean of each
final headline metric (``val/image_auroc``, ``test/aupro``, ...) over the sweep's FINISHED child
runs, as ``mean/[<stage>/]<variant>/<metric>``, and their number, ``runs/[<stage>/]<variant>``.
``sweeps.tracking.finish_parent_run`` logs them when the sweep (or a stage) ends, so a resumed
sweep recomputes them over every run that has finished by then."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

from mlflow.tracking import MlflowClient

from haloae.vocab import (
    PARENT_COUNT_PREFIX,
    PARENT_MEAN_PREFIX,
    ROLE_TRIAL,
    TAG_ROLE,
    TAG_STAGE,
    TAG_SWEEP,
    TAG_VARIANT,
    TEST,
    VAL,
    split_of,
)


def finished_children(mlf: MlflowClient, exp_id: str, sweep: str) -> list:
    """Every FINISHED child run of the sweep (all pages)."""
    quoted = sweep.replace("'", "\\'")
    query = f"tags.`{TAG_SWEEP}` = '{quoted}' and tags.`{TAG_ROLE}` = '{ROLE_TRIAL}' and attributes.status = 'FINISHED'"
    runs, token = [], None
    while True:
        page = mlf.search_runs([exp_id], filter_string=query, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def headline(key: str) -> bool:
    """``val/image_auroc``, ``test/aupro``: a final metric of the default scoring (no scoring or defect part)."""
    return split_of(key) in (VAL, TEST) and key.count("/") == 1


def variant_means(children: Iterable) -> dict[str, float]:
    """``mean/[<stage>/]<variant>/<metric>`` (the mean over the runs of each headline metric they
    have) and ``runs/[<stage>/]<variant>`` (how many runs), over the given (FINISHED) child runs."""
    groups: dict[str, list] = {}
    for run in children:
        tags = run.data.tags
        group = "/".join(part for part in (tags.get(TAG_STAGE), tags.get(TAG_VARIANT, "")) if part)
        groups.setdefault(group, []).append(run.data.metrics)
    out = {}
    for group, metrics in sorted(groups.items()):
        out[f"{PARENT_COUNT_PREFIX}{group}"] = float(len(metrics))
        for key in sorted({k for m in metrics for k in m if headline(k)}):
            values = [m[key] for m in metrics if key in m and not math.isnan(m[key])]
            if values:
                out[f"{PARENT_MEAN_PREFIX}{group}/{key}"] = statistics.fmean(values)
    return out
