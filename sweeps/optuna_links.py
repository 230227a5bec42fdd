# SPDX-License-Identifier: Apache-2.0
"""Optuna trials that name their MLflow runs: Ray's ``OptunaSearch``, which, as each Tune trial
completes, stores on its Optuna trial the user attributes ``tune_trial_id`` and ``mlflow_run_ids``
(the trial's child runs, by category then seed), so that the study (``optuna-dashboard``,
``study.trials_dataframe()``) leads to the runs and their artifacts.

The attributes are written just before ``OptunaSearch`` tells the study the trial's result: Optuna
refuses to change a finished trial, so they cannot be added after the sweep. The searcher's state
(this class's fields included) is what Tune saves and ``--resume`` restores.
"""

from __future__ import annotations

import logging

from ray.tune.search.optuna import OptunaSearch

from haloae.vocab import (
    OPTUNA_ATTR_RUN_IDS,
    OPTUNA_ATTR_TUNE_TRIAL,
    ROLE_TRIAL,
    TAG_CATEGORY,
    TAG_ROLE,
    TAG_SEED,
    TAG_SWEEP,
    TAG_TRIAL_ID,
)

logger = logging.getLogger(__name__)


class LinkedOptunaSearch(OptunaSearch):
    """``OptunaSearch`` (same arguments) plus where the sweep's MLflow runs are."""

    def __init__(self, *args, tracking_uri: str, experiment: str, sweep: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tracking_uri, self.experiment, self.sweep = tracking_uri, experiment, sweep

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._ot_trials and trial_id not in self._completed_trials:
            try:
                self._link(trial_id)
            except Exception as exc:  # a missing link must not cost the study its result
                logger.warning("Optuna trial of %s: MLflow run ids not stored (%s)", trial_id, exc)
        super().on_trial_complete(trial_id, result, error)

    def _link(self, trial_id: str) -> None:
        from sweeps.tracking import client, find_runs

        mlf = client(self.tracking_uri)
        exp = mlf.get_experiment_by_name(self.experiment)
        runs = [] if exp is None else find_runs(mlf, exp.experiment_id, {TAG_SWEEP: self.sweep, TAG_TRIAL_ID: trial_id, TAG_ROLE: ROLE_TRIAL})
        runs.sort(key=lambda r: (r.data.tags.get(TAG_CATEGORY, ""), int(r.data.tags.get(TAG_SEED, 0))))
        ot_trial = self._ot_trials[trial_id]
        ot_trial.set_user_attr(OPTUNA_ATTR_TUNE_TRIAL, trial_id)
        ot_trial.set_user_attr(OPTUNA_ATTR_RUN_IDS, [r.info.run_id for r in runs])
