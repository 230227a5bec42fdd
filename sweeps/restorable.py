# SPDX-License-Identifier: Apache-2.0
"""Keep the checkpoint a restore needs until Tune's saved experiment state no longer names it.

Tune (2.60) deletes a trial's previous checkpoint (``CheckpointConfig(num_to_keep=1)``) the
moment it registers the new one, and only afterwards writes the experiment state that names the
new one, to a staging folder that a background thread then copies to storage. A driver SIGKILLed
in between leaves a state on storage naming a checkpoint that no longer exists, and
``Tuner.restore`` fails that trial ("Could not recover from checkpoint as it does not exist on
storage anymore"): a cell lost to an ordinary crash.

    KeepRestorable.on_checkpoint   just before Tune registers checkpoint N and deletes N-1: a
                                   complete copy of N-1 in ``<trial>/.restorable/`` (hard links
                                   on a local or NFS store, so no data is copied; a server-side
                                   copy on s3/gs), marked complete last
    KeepRestorable, every 30 s     what no restore can need goes: kept copies, and checkpoint
    and at the end                 folders Tune no longer tracks, below the saved state's name - 1
                                   (all of them once the state records the trial as finished)
    put_back_restorable            before ``Tuner.restore``: the kept copy of a checkpoint the
                                   saved state may name, where its folder is gone, goes back;
                                   newer kept copies (a dead run's) are dropped

Which checkpoint a restore resumes from: Tune's checkpoint manager inside the state is a pickle,
which nothing here loads. The state's ``last_result`` names the checkpoint of the trial's last
report, which is the manager's latest or, while Tune's save of that report is pending, one ahead
of it; so both N and N-1 count as named.

Assumes what ``sweeps.runner`` and ``sweeps.trainable`` set up: every report carries a
checkpoint (a trial whose last report has none is left alone, kept copies and all), ``num_to_keep=1``, no ``checkpoint_score_attribute``, FIFO
or ASHA (PBT points a trial at another trial's checkpoint, a pausing scheduler registers one
twice). Per trial the store holds the live checkpoint and one or two kept ones (as with
``num_to_keep=2``), and the experiment state stays as small as ``num_to_keep=1`` makes it
(keeping every checkpoint instead grows it by ~3 KB per report and trial). A failure in here is
logged, never raised: an exception in a callback's ``on_checkpoint`` makes Tune skip its own
registration of that checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import NamedTuple

import pyarrow.fs
from ray.tune import Callback

from sweeps.run_files import link_or_copy

log = logging.getLogger(__name__)

KEPT_DIR = ".restorable"  # in each trial folder, beside Tune's checkpoint_NNNNNN folders
COMPLETE = ".kept-complete"  # written last into a kept copy: one without it is never put back
PRUNE_EVERY_S = 30.0  # pruning reads the whole experiment state: not once per checkpoint
_CHECKPOINT_NAME = re.compile(r"checkpoint_(\d+)")


def checkpoint_index(name: str) -> int | None:
    match = _CHECKPOINT_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def checkpoint_name(index: int) -> str:
    return f"checkpoint_{index:06d}"  # Tune's own naming


class SavedTrial(NamedTuple):
    checkpoint: str  # of the trial's last report
    status: str  # Tune's: a TERMINATED trial is not resumed (``sweeps.runner`` resumes unfinished and errored ones)


def saved_checkpoints(experiment: str, fs: pyarrow.fs.FileSystem | None = None) -> dict[str, str]:
    """Trial folder name -> the checkpoint of the trial's last report, as the newest experiment
    state on storage (the file ``Tuner.restore`` reads) records it; trials without one are left out."""
    return {trial: saved.checkpoint for trial, saved in saved_trials(experiment, fs).items()}


def saved_trials(experiment: str, fs: pyarrow.fs.FileSystem | None = None) -> dict[str, SavedTrial]:
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    fs, path = _resolve(experiment, fs)
    newest = _find_newest_experiment_checkpoint(path, fs)
    if newest is None:
        return {}
    info = fs.get_file_info(newest)
    key = (newest, info.mtime_ns, info.size)
    if key not in _PARSED:  # once per saved state, not once per trial
        try:
            with fs.open_input_stream(newest) as f:
                text = f.readall()
        except OSError:  # replaced meanwhile: nothing is known to be safe to remove
            return {}
        _PARSED.clear()
        _PARSED[key] = _named_checkpoints(text)
    return _PARSED[key]


_PARSED: dict[tuple, dict[str, SavedTrial]] = {}


def _named_checkpoints(state_text: bytes) -> dict[str, SavedTrial]:
    try:
        state = json.loads(state_text)
    except ValueError:  # read while being written: names nothing, so nothing is removed
        return {}
    named = {}
    for trial_json, runtime_json in state.get("trial_data", []):
        trial, runtime = json.loads(trial_json), json.loads(runtime_json)
        checkpoint = (runtime.get("last_result") or {}).get("checkpoint_dir_name")
        if checkpoint and checkpoint_index(checkpoint) is not None:
            named[trial["relative_logdir"]] = SavedTrial(checkpoint, trial.get("status", ""))
    return named


def _resolve(experiment: str, fs: pyarrow.fs.FileSystem | None) -> tuple[pyarrow.fs.FileSystem, str]:
    from ray.train._internal.storage import get_fs_and_path

    return get_fs_and_path(experiment, fs)


def put_back_restorable(experiment: str, fs: pyarrow.fs.FileSystem | None = None) -> list[str]:
    """Before a restore: put each complete kept copy of a checkpoint the saved state may name (its
    last report's, or the one before) back where Tune looks for it, where that folder is gone or
    partly deleted; drop kept copies newer than that, and all of a finished trial's. Returns
    ``<trial>/<checkpoint>`` for each one put back."""
    fs, path = _resolve(experiment, fs)
    restored = []
    for trial_dir, saved in saved_trials(path, fs).items():
        trial_path, newest = f"{path}/{trial_dir}", checkpoint_index(saved.checkpoint)
        finished = saved.status == "TERMINATED"  # skipped by the restore: nothing to put back
        for kept in _listing(fs, f"{trial_path}/{KEPT_DIR}"):
            if finished or (checkpoint_index(kept.base_name) or 0) > newest:  # newer: the dead run's
                _drop_kept(fs, kept.path)
        for index in () if finished else (newest - 1, newest):
            target, kept = f"{trial_path}/{checkpoint_name(index)}", f"{trial_path}/{KEPT_DIR}/{checkpoint_name(index)}"
            if _is_complete(fs, kept) and _put_back(fs, kept, target):
                restored.append(f"{trial_dir}/{checkpoint_name(index)}")
    return restored


def _put_back(fs: pyarrow.fs.FileSystem, kept: str, target: str) -> bool:
    """Make ``target`` whole from the complete copy ``kept``; False where it already was."""
    if not isinstance(fs, pyarrow.fs.LocalFileSystem):  # object stores do not move folders
        pyarrow.fs.copy_files(kept, target, source_filesystem=fs, destination_filesystem=fs)
        fs.delete_file(f"{target}/{COMPLETE}")
        _drop_kept(fs, kept)  # last: a put-back cut short is redone from it
        return True
    if _missing(fs, target):
        fs.move(kept, target)  # a rename: atomic
        fs.delete_file(f"{target}/{COMPLETE}")
        return True
    # Tune's delete removes whole files one by one: a kill during it leaves some; link the rest
    absent = []
    for root, _, files in os.walk(kept):
        for name in files:
            relative = os.path.relpath(os.path.join(root, name), kept)
            if relative != COMPLETE and not os.path.exists(os.path.join(target, relative)):
                absent.append(relative)
    for relative in absent:
        os.makedirs(os.path.dirname(os.path.join(target, relative)), exist_ok=True)
        link_or_copy(Path(kept, relative), Path(target, relative))
    return bool(absent)


class KeepRestorable(Callback):
    """Tune callback (driver side) that keeps each trial's previous checkpoint while the
    experiment state on storage may still name it; see the module docstring."""

    def __init__(self):
        self._last_prune: float | None = None  # set at the first step

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        previous = trial.checkpoint  # Tune has not registered ``checkpoint`` yet
        if previous is None:
            return
        try:
            kept = f"{trial.storage.trial_fs_path}/{KEPT_DIR}/{os.path.basename(previous.path)}"
            keep_copy(previous.filesystem, previous.path, kept)
        except Exception:
            log.warning("could not keep a copy of %s for a restore", previous.path, exc_info=True)

    def on_step_end(self, iteration, trials, **info):
        if self._last_prune is None:
            self._last_prune = time.monotonic()
        elif time.monotonic() - self._last_prune >= PRUNE_EVERY_S:
            self._prune_all(trials)

    def on_experiment_end(self, trials, **info):
        self._prune_all(trials)  # Tune saved its final state just before

    def _prune_all(self, trials) -> None:
        self._last_prune = time.monotonic()
        for trial in trials:
            try:
                prune(trial)
            except Exception:
                log.warning("could not prune the kept checkpoints of %s", trial, exc_info=True)

    def __getstate__(self):  # pickled into Tune's tuner.pkl: a restored run starts its own clock
        return {**self.__dict__, "_last_prune": None}


def prune(trial) -> None:
    """Remove the trial's checkpoint folders that no restore can need: kept copies, and folders
    Tune no longer tracks (put back, or left by a dead run), below the saved state's name - 1, or
    all of them once the saved state records the trial as finished."""
    storage = trial.storage
    if storage.trial_dir_name is None:  # not started yet
        return
    fs = storage.storage_filesystem
    saved = saved_trials(storage.experiment_fs_path, fs).get(storage.trial_dir_name)
    if saved is None:  # no saved state names a checkpoint of this trial yet: keep everything
        return
    # a trial saved as finished is never resumed: none of its kept copies is needed any more
    below = float("inf") if saved.status == "TERMINATED" else checkpoint_index(saved.checkpoint) - 1
    live = os.path.basename(trial.checkpoint.path) if trial.checkpoint is not None else None
    for folder, spared in ((f"{storage.trial_fs_path}/{KEPT_DIR}", None), (storage.trial_fs_path, live)):
        for entry in _listing(fs, folder):
            index = checkpoint_index(entry.base_name)
            if index is None or index >= below or entry.base_name == spared:
                continue
            if folder.endswith(KEPT_DIR):
                _drop_kept(fs, entry.path)
            else:
                fs.delete_dir(entry.path)


def keep_copy(fs: pyarrow.fs.FileSystem, source: str, dest: str) -> None:
    """Copy the folder ``source`` to ``dest`` on ``fs`` and mark it complete last: hard links on
    a local filesystem (Tune's delete of ``source`` then frees nothing and costs no copy), a copy
    elsewhere. An existing ``dest`` (an earlier attempt, or a dead run's) is replaced."""
    if not _missing(fs, dest):
        _drop_kept(fs, dest)
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        _link_tree(source, dest)
    else:
        pyarrow.fs.copy_files(source, dest, source_filesystem=fs, destination_filesystem=fs)
    with fs.open_output_stream(f"{dest}/{COMPLETE}"):
        pass


def _link_tree(source: str, dest: str) -> None:
    for root, _, files in os.walk(source):
        target = os.path.join(dest, os.path.relpath(root, source))
        os.makedirs(target, exist_ok=True)
        for name in files:
            link_or_copy(Path(root, name), Path(target, name))


def _drop_kept(fs: pyarrow.fs.FileSystem, kept: str) -> None:
    """Delete a kept copy, its completeness marker first: one cut short is never taken as whole."""
    if _is_complete(fs, kept):
        fs.delete_file(f"{kept}/{COMPLETE}")
    fs.delete_dir(kept)


def _listing(fs: pyarrow.fs.FileSystem, folder: str) -> list[pyarrow.fs.FileInfo]:
    entries = fs.get_file_info(pyarrow.fs.FileSelector(folder, allow_not_found=True))
    return [e for e in entries if e.type == pyarrow.fs.FileType.Directory]


def _is_complete(fs: pyarrow.fs.FileSystem, kept: str) -> bool:
    return fs.get_file_info(f"{kept}/{COMPLETE}").type == pyarrow.fs.FileType.File


def _missing(fs: pyarrow.fs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound
