# SPDX-License-Identifier: Apache-2.0
"""The sweep's progress table: ``epoch k/N``, short knob headers, the alpha schedule grouped per
term; drawn by Ray Tune's own table code from real (stub) Tune trials, no Ray started."""

import pytest

from sweeps.reporting import EPOCH_COLUMN, TrialRow, alpha_groups, column_names, progress_reporter

tune = pytest.importorskip("ray.tune")
from ray.tune.experiment import Trial  # noqa: E402
from ray.tune.progress_reporter import _best_trial_str, _trial_progress_str, _trial_progress_table  # noqa: E402

ALPHA_KEYS = [f"loss.alpha.{term}.{p}" for term in ("cls", "fm", "im") for p in "abcd"]


def _trial(index: int, config: dict, result: dict | None, status: str = Trial.RUNNING) -> Trial:
    trial = Trial("run_trial", config=config, stub=True, trial_id=f"5e33d_{index:05d}")
    if result is not None:
        trial.update_last_result(result | {"config": config})
    trial.set_status(status)
    return trial


def _table(trials, reporter, epochs) -> str:
    rows = [TrialRow(t, epochs, reporter.groups) for t in trials]
    return "\n".join(_trial_progress_table(rows, reporter._metric_columns, reporter._parameter_columns,
                                           max_column_length=reporter._max_column_length))  # fmt: skip


def test_headers_are_short_and_alpha_keys_group_per_term():
    names = column_names(["variant", "model.block_size", "model.halo_size", "a.size", "b.size", *ALPHA_KEYS])
    assert names["model.block_size"] == "block_size" and names["variant"] == "variant"
    assert names["a.size"] == "a.size" and names["b.size"] == "b.size"  # ambiguous: kept whole
    assert names["alpha.cls"] == "alpha cls a/b/c/d" and not any(k in names for k in ALPHA_KEYS)
    assert list(alpha_groups(ALPHA_KEYS)) == ["cls", "fm", "im"]


def test_table_shows_epoch_of_budget_and_one_readable_alpha_cell_per_term(tmp_path):
    from sweeps.loading import load_spec
    from tests.helpers.sweeps import tiny_spec

    spec = load_spec(tiny_spec(tmp_path, "alpha", purpose="search",
                               search={"algorithm": "optuna", "sampler": "tpe", "num_samples": 3,
                                       "alpha": {"mode": "per_term", "terms": ["cls", "fm", "im"]}},
                               objective={"metric": "val/image_auroc", "mode": "max", "aggregate": "mean"},
                               overrides={"train.epochs": 20}))  # fmt: skip
    reporter = progress_reporter(spec)
    config = {key: 0.123456 * (i + 1) for i, key in enumerate(ALPHA_KEYS)}
    trials = [
        _trial(0, config, {"epoch": 2, "val/image_auroc": 0.8123, "train/loss": 0.1234}),
        _trial(1, config, {"epoch": 19, "val/image_auroc": 0.9, "train/loss": 0.1}, Trial.TERMINATED),
        _trial(2, config, None, Trial.PENDING),
    ]
    table = _table(trials, reporter, spec.epochs())
    assert "| epoch " in table and "| 3/20 " in table and "| 20/20 " in table
    assert "alpha cls a/b/c/d" in table and "0.123/0.247/0.37/0.494" in table
    assert "loss.alpha" not in table  # twelve truncated columns before
    assert max(len(line) for line in table.splitlines()) < 160
    best = _best_trial_str(TrialRow(trials[1], spec.epochs(), reporter.groups), spec.objective.metric, reporter._parameter_columns)
    assert "'alpha.fm': '0.617/0.741/0.864/0.988'" in best
    assert trials[0].last_result["epoch"] == 2 and EPOCH_COLUMN not in trials[0].last_result  # the trial is untouched


def test_a_searched_epoch_budget_is_each_trials_own(tmp_path):
    from sweeps.loading import load_spec
    from tests.helpers.sweeps import tiny_spec

    spec = load_spec(tiny_spec(tmp_path, "budget", search={"algorithm": "grid", "space": {"train.epochs": {"grid": [2, 4]}}}))
    reporter = progress_reporter(spec)
    trials = [_trial(i, {"variant": "haloae", "category": "synth_disc", "seed": 0, "train.epochs": n},
                     {"epoch": 1, "val/image_auroc": 0.5, "train/loss": 1.0}) for i, n in enumerate((2, 4))]  # fmt: skip
    table = _table(trials, reporter, spec.epochs())
    assert "| 2/2 " in table and "| 2/4 " in table and " epochs |" in table


def test_the_table_is_drawn_after_an_earlier_fit_lowered_tunes_verbosity(tmp_path):
    """Tuner.fit(verbose=1) sets Tune's process-wide verbosity; a reporter built after it (the next
    sweep of a driver, or of a test session) drew "Number of trials" and no table before."""
    from ray.tune.utils import log as tune_log

    from sweeps.loading import load_spec
    from tests.helpers.sweeps import tiny_spec

    spec = load_spec(tiny_spec(tmp_path, "again", search={"algorithm": "grid", "space": {"train.epochs": {"grid": [2]}}}))
    before = tune_log.verbosity
    tune_log.set_verbosity(1)
    try:
        reporter = progress_reporter(spec)
        trial = _trial(0, {"variant": "haloae", "category": "synth_disc", "seed": 0, "train.epochs": 2},
                       {"epoch": 1, "val/image_auroc": 0.5, "train/loss": 1.0})  # fmt: skip
        # what CLIReporter._progress_str draws below its header (that header needs a started sweep)
        row = TrialRow(trial, spec.epochs(), reporter.groups)
        row.local_experiment_path = str(tmp_path)  # a stub trial has no storage
        shown = _trial_progress_str([row], reporter._metric_columns,
                                    reporter._parameter_columns, force_table=reporter._print_intermediate_tables,
                                    max_column_length=reporter._max_column_length, done=False)  # fmt: skip
    finally:
        tune_log.set_verbosity(before)
    assert "Number of trials: 1" in shown and "| 2/2 " in shown and "| epoch " in shown, shown
