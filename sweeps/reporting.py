# SPDX-License-Identifier: Apache-2.0
"""The sweep's progress table (Ray Tune's CLIReporter) in words a person follows at a glance.

    progress_reporter(spec)     every 30 s: the knobs a trial varies, ``epoch k/N`` (epochs done of
                                the trial's budget), the objective and the training loss
    column_names(keys)          short headers: ``block_size`` for ``model.block_size``; the alpha
                                schedule's twelve ``loss.alpha.<term>.<a|b|c|d>`` keys as one column
                                per term (``alpha cls a/b/c/d``), values ``0.375/1.21/0.84/12.3``
    quiet_trial_logs()          Ray's worker setup hook (TRIAL_LOG_HOOK): no "Checkpoint successfully
                                created at ..." line per trial and epoch in the user's terminal

Tune's table reads ``trial.config`` and ``trial.last_result``; the formatted cells are computed on
a view of each trial (``TrialRow``) when the table is drawn, so nothing the sweep reports, checkpoints
or restores changes: the trial's own results stay numbers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from ray.tune import CLIReporter

from sweeps.schema import SweepSpec

EPOCH_COLUMN = "haloae.epoch_of"  # the table's own cell: "k/N"
ALPHA_KEY = re.compile(r"^loss\.alpha\.(?P<term>[^.]+)\.(?P<param>[^.]+)$")
ALPHA_COLUMN = "alpha.{term}"  # a config key no trial has: the grouped cell
REPORT_EVERY_S = 30
TRIAL_LOG_HOOK = "sweeps.reporting.quiet_trial_logs"  # runtime_env's worker_process_setup_hook
# Ray's storage loggers (Tune's function trainables; Train v2) say INFO on every checkpoint a trial reports
CHECKPOINT_LOGGERS = ("ray.train._internal.storage", "ray.train.v2._internal.execution.storage")
MAX_COLUMN = 28  # a grouped alpha cell, 4 values of up to 6 characters, fits


def quiet_trial_logs() -> None:
    """In every Ray worker of a sweep, before the trial runs: Ray's per-checkpoint INFO lines off
    (they reach the driver's terminal through log_to_driver); its warnings and errors stay."""
    for name in CHECKPOINT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _compact(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def alpha_groups(keys: Iterable[str]) -> dict[str, list[str]]:
    """Alpha-schedule keys by term, in their order: ``{"cls": ["loss.alpha.cls.a", ...]}``."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        match = ALPHA_KEY.match(key)
        if match:
            groups.setdefault(match["term"], []).append(key)
    return groups


def column_names(keys: Iterable[str]) -> dict[str, str]:
    """Table column -> header for trial parameters ``keys``: the last dotted part where that is
    unambiguous, the whole key otherwise; the alpha keys grouped per term (see the module doc)."""
    keys = list(keys)
    groups = alpha_groups(keys)
    grouped = {k for members in groups.values() for k in members}
    plain = [k for k in keys if k not in grouped]
    last = [k.rsplit(".", 1)[-1] for k in plain]
    names = {k: (short if last.count(short) == 1 else k) for k, short in zip(plain, last, strict=True)}
    for term, members in groups.items():
        names[ALPHA_COLUMN.format(term=term)] = f"alpha {term} " + "/".join(m.rsplit(".", 1)[-1] for m in members)
    return names


class TrialRow:
    """A Tune trial as the table sees it: the real trial, plus the formatted cells."""

    def __init__(self, trial, epochs: int, groups: dict[str, list[str]]) -> None:
        self._trial = trial
        config = dict(trial.config or {})
        for term, members in groups.items():
            config[ALPHA_COLUMN.format(term=term)] = "/".join(_compact(config.get(m, "?")) for m in members)
        self.config = config
        result = dict(trial.last_result or {})
        if isinstance(result.get("epoch"), (int, float)):
            budget = int(config.get("train.epochs", epochs))  # a searched train.epochs: the trial's own
            result[EPOCH_COLUMN] = f"{int(result['epoch']) + 1}/{budget}"
        result["config"] = config  # Tune's "Current best trial" line reads the parameters there
        self.last_result = result

    def __getattr__(self, name: str):
        return getattr(self._trial, name)

    def __str__(self) -> str:
        return str(self._trial)


class SweepReporter(CLIReporter):
    """CLIReporter that draws ``TrialRow`` views of the trials."""

    def __init__(self, epochs: int, groups: dict[str, list[str]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.epochs, self.groups = epochs, groups

    def report(self, trials, done: bool, *sys_info: str) -> None:
        super().report([TrialRow(t, self.epochs, self.groups) for t in trials], done, *sys_info)


def progress_reporter(spec: SweepSpec):
    """The CLIReporter of a sweep (``RunConfig(progress_reporter=...)``)."""
    from sweeps.space import tune_param_space
    from sweeps.trials import search_domains

    # keys every trial config has (a column missing from a config breaks Tune's table)
    keys = list(search_domains(spec)) if spec.search.algorithm == "optuna" else list(tune_param_space(spec))
    return SweepReporter(
        epochs=spec.epochs(),
        groups=alpha_groups(keys),
        metric_columns={EPOCH_COLUMN: "epoch", spec.objective.metric: "objective", "train/loss": "loss"},
        parameter_columns=column_names(keys),
        max_report_frequency=REPORT_EVERY_S,
        max_column_length=MAX_COLUMN,
        # the table on every report: Tune's default reads the process-wide verbosity when the reporter
        # is built, which an earlier Tuner.fit(verbose=1) in the same process has lowered
        print_intermediate_tables=True,
        sort_by_metric=True,  # by TuneConfig's metric and mode
    )
