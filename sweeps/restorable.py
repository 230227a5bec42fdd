# SPDX-License-Identifier: Apache-2.0
"""Keep the checkpoint a restore needs until Tune's saved experiment state stops naming it.

Tune (2.60) deletes a trial's previous checkpoint (``CheckpointConfig(num_to_keep=1)``) the
moment it registers the new one, and only afterwards writes the experiment state that names the
new one, to a staging folder that a background thread then copies to storage. A driver SIGKILLed
in between leaves a state on storage naming a checkpoint that no longer exists, and
``Tuner.restore`` fails that trial ("Could not recover from checkpoint as it does not exist on
storage anymore"): a cell lost to an ordinary crash.

    KeepRestorable.on_checkpoint   just before Tune registers checkpoint N and deletes N-1: a
                                   copy of N-1 (hard links, no data copied on a local or NFS
                                   store) in ``<trial>/.restorable/``; kept copies older than
                                   what the state on storage names are removed
    put_back_restorable            before ``Tuner.restore``: where the saved state names a
                                   checkpoint that is gone, its kept copy is moved back

So at most the named checkpoint and the newest are on disk per trial, as with ``num_to_keep=2``,
and the experiment state stays as small as Tune's own ``num_to_keep=1`` makes it (keeping every
checkpoint would grow it by ~3 KB per report and trial: tens of MB for a long sweep).
"""

from __future__ import annotations

import json
import os
from pathlib import PurePosixPath

import pyarrow.fs
from ray.tune import Callback

KEPT_DIR = ".restorable"  # in each trial folder, beside Tune's checkpoint_NNNNNN folders


def saved_checkpoints(experiment: str, fs: pyarrow.fs.FileSystem | None = None) -> dict[str, str]:
    """Trial folder name -> the checkpoint folder that the newest experiment state on storage
    names for it (the one ``Tuner.restore`` resumes from); trials without one are left out."""
    from ray.train._internal.storage import get_fs_and_path
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    fs, path = get_fs_and_path(experiment, fs)
    newest = _find_newest_experiment_checkpoint(path, fs)  # the very file a restore reads
    if newest is None:
        return {}
    info = fs.get_file_info(newest)
    key = (newest, info.mtime_ns, info.size)
    if key not in _PARSED:  # once per saved state, not once per trial checkpoint
        try:
            with fs.open_input_stream(newest) as f:
                text = f.readall()
        except OSError:  # replaced meanwhile: nothing is known to be safe to remove
            return {}
        _PARSED.clear()
        _PARSED[key] = _named_checkpoints(text)
    return _PARSED[key]


_PARSED: dict[tuple, dict[str, str]] = {}


def _named_checkpoints(state_text: bytes) -> dict[str, str]:
    try:
        state = json.loads(state_text)
    except ValueError:  # read while being written
        return {}
    named = {}
    for trial_json, runtime_json in state.get("trial_data", []):
        trial, runtime = json.loads(trial_json), json.loads(runtime_json)
        checkpoint = _last_result(runtime).get("checkpoint_dir_name")
        if checkpoint:
            named[trial["relative_logdir"]] = checkpoint
    return named


def _last_result(runtime: dict) -> dict:
    last = runtime.get("last_result", {})
    if isinstance(last, str):  # Tune writes nested objects as JSON strings
        last = json.loads(last)
    return last


def put_back_restorable(experiment: str, fs: pyarrow.fs.FileSystem | None = None) -> list[str]:
    """Move each kept checkpoint the saved state names, but whose folder is gone, back in place.
    Returns ``<trial>/<checkpoint>`` for each one put back."""
    from ray.train._internal.storage import get_fs_and_path

    fs, path = get_fs_and_path(experiment, fs)
    restored = []
    for trial_dir, checkpoint in saved_checkpoints(experiment, fs).items():
        trial_path = f"{path}/{trial_dir}"
        target, kept = f"{trial_path}/{checkpoint}", f"{trial_path}/{KEPT_DIR}/{checkpoint}"
        if _missing(fs, target) and not _missing(fs, kept):
            fs.move(kept, target)
            restored.append(f"{trial_dir}/{checkpoint}")
    return restored


class KeepRestorable(Callback):
    """Tune callback (driver side) that keeps each trial's previous checkpoint while the
    experiment state on storage may still name it; see the module docstring."""

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        previous = trial.checkpoint  # Tune has not registered ``checkpoint`` yet
        if previous is not None:
            keep_copy(previous.filesystem, previous.path, _kept_path(trial, previous.path))
        self._prune(trial)

    def on_experiment_end(self, trials, **info):
        for trial in trials:
            self._prune(trial)

    @staticmethod
    def _prune(trial) -> None:
        storage = trial.storage
        named = saved_checkpoints(storage.experiment_fs_path, storage.storage_filesystem).get(trial.storage.trial_dir_name)
        if named is None:  # no state names a checkpoint of this trial yet: keep everything
            return
        fs, kept_dir = storage.storage_filesystem, f"{storage.trial_fs_path}/{KEPT_DIR}"
        for info in fs.get_file_info(pyarrow.fs.FileSelector(kept_dir, allow_not_found=True)):
            if info.type == pyarrow.fs.FileType.Directory and info.base_name < named:  # zero-padded: names sort as numbers
                fs.delete_dir(info.path)


def _kept_path(trial, checkpoint_path: str) -> str:
    return f"{trial.storage.trial_fs_path}/{KEPT_DIR}/{PurePosixPath(checkpoint_path).name}"


def keep_copy(fs: pyarrow.fs.FileSystem, source: str, dest: str) -> None:
    """Copy the folder ``source`` to ``dest`` on ``fs``: hard links on a local filesystem (the
    files are shared, so Tune's delete of ``source`` frees nothing and costs no copy), a real
    copy elsewhere. An existing ``dest`` is left as it is (an earlier attempt made it)."""
    if not _missing(fs, dest):
        return
    partial = f"{dest}.partial"  # renamed into place complete, so a kept copy is never half a checkpoint
    if not _missing(fs, partial):
        fs.delete_dir(partial)
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        _link_tree(source, partial)
    else:
        pyarrow.fs.copy_files(source, partial, source_filesystem=fs, destination_filesystem=fs)
    fs.move(partial, dest)


def _link_tree(source: str, dest: str) -> None:
    for root, _, files in os.walk(source):
        target = os.path.join(dest, os.path.relpath(root, source))
        os.makedirs(target, exist_ok=True)
        for name in files:
            try:
                os.link(os.path.join(root, name), os.path.join(target, name))
            except OSError:  # a filesystem without hard links
                import shutil

                shutil.copy2(os.path.join(root, name), os.path.join(target, name))


def _missing(fs: pyarrow.fs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound
