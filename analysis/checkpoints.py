# SPDX-License-Identifier: Apache-2.0
"""A trial's best checkpoint from MLflow: downloaded and rebuilt (export and figures both use it).

The artifact ``checkpoint/best.pt`` of a trial's run goes through ``haloae.checkpoint``: a
``weights_only`` load, its sha256 verified, the model rebuilt from its stored config. A missing
artifact is a ``SweepQueryError``; a damaged or crafted one a ``CheckpointError`` naming the run
and the file; both are one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from analysis.runs import SweepQueryError
from haloae.vocab import BEST_ARTIFACT


class RunCheckpoint(NamedTuple):
    path: Path  # the downloaded best.pt
    model: Any  # haloae.model.HaloAE, eval mode
    scorer: Any  # haloae.scoring.AnomalyScorer
    state: dict[str, Any]  # the checkpoint dict (config, epoch, metrics...)


def load_run_checkpoint(client, run_id: str, folder: str | Path, what: str | None = None) -> RunCheckpoint:
    """Download ``run_id``'s best.pt into ``folder`` and rebuild its model and scorer on the CPU.
    ``what`` names the run in errors (default ``run <id>``)."""
    from haloae.checkpoint import CheckpointError, load_checkpoint

    what = what or f"run {run_id}"
    try:
        path = Path(client.download_artifacts(run_id, BEST_ARTIFACT, str(folder)))
    except Exception as exc:  # MlflowException / OSError: the artifact is missing
        raise SweepQueryError(f"{what}: no {BEST_ARTIFACT} artifact ({type(exc).__name__})") from exc
    try:
        model, scorer, state = load_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{what}: artifact {BEST_ARTIFACT}: {exc}") from exc
    return RunCheckpoint(path, model, scorer, state)
