# SPDX-License-Identifier: Apache-2.0
"""``haloae sweeps``: the sweeps under a storage and their state, read from their folders alone
(no Ray is started, nothing is written).

A sweep folder ``<storage>/<name>/`` (``sweeps.runner``) tells its state by three records:

    .lock              flock-ed while ``haloae sweep`` runs (``sweeps.lock``): held -> running; a
                       lock file whose flock can be taken was left by a process that is gone
    ray*/experiment_state-*.json   Tune's state (one folder per stage of a two-stage sweep): each
                       trial's status (TERMINATED, ERROR, RUNNING, PENDING, PAUSED)
    mlflow.db          the parent run's status: RUNNING, FINISHED, KILLED (stopped by a signal)

States: ``running`` (lock held); ``interrupted`` (not running, and the parent run ended KILLED or
never ended, or Tune left trials unfinished, or fewer trials than the definition has: ``--resume``
continues it); ``failed`` (ended, some trials errored); ``finished``; ``not started`` (no records).
The total is the definition's trial count (``spec.yaml``, ``sweeps.trials.count_trials``; a
two-stage sweep's confirm stage counts once Tune has its trials).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

from analysis.runs import SweepQueryError
from haloae.vocab import SWEEP_LOCK_FILE, SWEEP_RAY_DIR, SWEEP_SPEC_FILE, TAG_FAILED_TRIALS, TRACKING_DB_FILE

RUNNING, INTERRUPTED, FAILED, FINISHED, NOT_STARTED = "running", "interrupted", "failed", "finished", "not started"
TUNE_STATE_GLOB = "experiment_state-*.json"
ENDED = ("TERMINATED", "ERROR")  # Tune's statuses of a trial that will not run again unless resumed


@dataclass(frozen=True)
class SweepState:
    name: str
    state: str
    done: int  # trials that ended (finished or errored)
    total: int | None  # the definition's trials; None when it cannot be read
    failed: int  # trials that errored
    detail: str  # why: the lock's holder, the parent run's status, what Tune left

    def line(self) -> str:
        total = "?" if self.total is None else str(self.total)
        failed = f", {self.failed} failed" if self.failed else ""
        return f"{self.name:28s} {self.state:12s} {self.done}/{total} trials{failed}  {self.detail}".rstrip()


def lock_holder(folder: Path) -> str | None:
    """Who holds the sweep's lock (``pid P on host H``), or None when no process does. The flock is
    only tried (shared, non-blocking) and released at once: the folder is left as it was."""
    path = folder / SWEEP_LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            fields = os.pread(fd, 4096, 0).decode(errors="replace").split()
            return f"pid {fields[0]} on host {fields[1]}" if len(fields) >= 2 else "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def tune_statuses(folder: Path) -> list[str]:
    """The status of every trial in the newest Tune state file of each ``ray*`` folder (stages)."""
    statuses: list[str] = []
    for experiment in sorted(p for p in folder.glob(f"{SWEEP_RAY_DIR}*") if p.is_dir()):
        states = sorted(experiment.glob(TUNE_STATE_GLOB), key=lambda p: p.stat().st_mtime)
        if not states:
            continue
        try:
            # Tune's format: {"trial_data": [[<trial state as JSON text>, <run metadata JSON>], ...], ...}
            trial_data = json.loads(states[-1].read_text())["trial_data"]
            statuses += [json.loads(trial)["status"] for trial, _ in trial_data]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being rewritten, or another version's format: the other records still tell
    return statuses


def spec_total(folder: Path) -> int | None:
    """Trials of the definition the sweep ran (its ``spec.yaml``); a two-stage sweep's screen stage."""
    path = folder / SWEEP_SPEC_FILE
    if not path.is_file():
        return None
    from haloae.errors import InputError
    from sweeps.trials import count_trials

    try:
        from sweeps.loading import load_spec

        spec = load_spec(path)
        if spec.protocol is not None:
            from sweeps.protocol import screen_spec

            spec = screen_spec(spec)
        return count_trials(spec)
    except (InputError, ValueError, OSError):
        return None


def parent_status(folder: Path, name: str) -> tuple[str | None, int]:
    """The parent run's status in the folder's own MLflow store and its failed-trials tag (None, 0
    without a local store or parent run)."""
    db = folder / TRACKING_DB_FILE
    if not db.is_file():
        return None, 0
    from analysis.runs import client_for, find_parent

    with contextlib.suppress(SweepQueryError):
        parent = find_parent(client_for(f"sqlite:///{db.resolve()}"), name)
        if parent is not None:
            failed = parent.data.tags.get(TAG_FAILED_TRIALS, "0")
            return parent.info.status, int(failed) if failed.isdigit() else 0
    return None, 0


def sweep_state(folder: Path) -> SweepState:
    """The state of the sweep in ``folder`` (see the module's docstring)."""
    name = folder.name
    holder = lock_holder(folder)
    statuses = tune_statuses(folder)
    total = spec_total(folder)
    if total is not None and len(statuses) > total:  # the confirm stage's trials come on top
        total = len(statuses)
    done = sum(s in ENDED for s in statuses)
    errored = statuses.count("ERROR")
    parent, parent_failed = parent_status(folder, name)
    failed = max(errored, parent_failed)
    unfinished = len(statuses) - done
    parent_note = f"parent run {parent}" if parent else "no parent run"
    if holder is not None:
        return SweepState(name, RUNNING, done, total, failed, f"lock held by {holder}")
    if parent is None and not statuses:
        return SweepState(name, NOT_STARTED, 0, total, 0, "no Tune state, no parent run")
    short = bool(statuses) and total is not None and done < total
    if parent in ("KILLED", "RUNNING") or unfinished or short:
        why = [parent_note + (" (stopped by a signal)" if parent == "KILLED" else " (its driver is gone)" if parent == "RUNNING" else "")]
        if unfinished:
            why.append(f"{unfinished} trials unfinished in Tune")
        return SweepState(name, INTERRUPTED, done, total, failed, "; ".join(why) + "; continue it with haloae sweep <spec> --resume")
    if failed or parent == "FAILED":
        return SweepState(name, FAILED, done, total, failed, parent_note)
    return SweepState(name, FINISHED, done, total, failed, parent_note)


def is_sweep_folder(folder: Path) -> bool:
    records = any((folder / n).exists() for n in (SWEEP_SPEC_FILE, SWEEP_LOCK_FILE, TRACKING_DB_FILE))
    return folder.is_dir() and (records or any(p.is_dir() for p in folder.glob(f"{SWEEP_RAY_DIR}*")))


def list_sweeps(storage: str | Path) -> list[SweepState]:
    """Every sweep folder under ``storage``, by name; a missing storage is a one-line error."""
    root = Path(storage)
    if not root.is_dir():
        raise SweepQueryError(f"--storage {root}: no such folder (sweeps are written to <storage>/<name>/)")
    return [sweep_state(f) for f in sorted(root.iterdir()) if is_sweep_folder(f)]
