# SPDX-License-Identifier: Apache-2.0
"""Checkpoints: the one save and the one load behind checkpoint.pt, best.pt, bundles and the data cache.

A checkpoint is a dict of tensors and plain values (str, int, float, bool, None and lists, tuples
and dicts of them), never a pickled object, so ``read_checkpoint`` loads it with
``torch.load(..., weights_only=True)``: a file whose pickle would run code (``__reduce__``) is
refused with one line naming it. The model is rebuilt from the config stored beside its weights
(nanoGPT's ``model_args`` idiom): ``HaloAEConfig.from_dict(ckpt["config"])``, backbone weights
``random`` (they come from the state dict), ``load_state_dict(strict=True)``.

    save_checkpoint(state, path)     tensors and plain values only; a sha256 over every value is
                                     stored in it; written to a temporary file, then renamed
    read_checkpoint(path)            weights_only load; the sha256 verified, so bytes overwritten
                                     in a tensor are an error, not silently wrong weights
    load_checkpoint(path, device)    model, scorer and the checkpoint dict
    rng_state / restore_rng_state    torch's, numpy's and Python's RNG state as tensors and plain values

Every problem (missing, empty, truncated, corrupted, pickled objects, weights that do not fit the
config) is a ``CheckpointError``: one line naming the file. Checkpoints of an older haloae
(version 1: no ``format`` key, no sha256) still load: they held numpy's RNG state and some metrics
as numpy arrays and scalars, which are data (their reconstruction runs no code) and are allowed,
then turned into today's tensors and Python numbers; nothing else is allowed.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from haloae.config import HaloAEConfig
from haloae.errors import InputError
from haloae.model import HaloAE
from haloae.scoring import AnomalyScorer

FORMAT = "haloae-checkpoint"
VERSION = 2  # 1: before the format key (pickled numpy RNG state, no sha256)
DIGEST_KEY = "sha256"
# numpy arrays, dtypes and scalars (under numpy 2's and numpy 1's module names): how version-1
# checkpoints stored numpy's RNG state and some metrics. Reconstructing them runs no code.
_NUMPY_DATA = [
    np.ndarray,
    np.dtype,
    np._core.multiarray._reconstruct,
    np._core.multiarray.scalar,
    (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
    (np._core.multiarray.scalar, "numpy.core.multiarray.scalar"),
    *(type(np.dtype(name)) for name in ("bool", "int32", "int64", "uint32", "float32", "float64")),
]
_PLAIN = (str, int, float, bool, type(None))


class CheckpointError(InputError):
    """A checkpoint cannot be used; the one-line message names the file."""


# ---------------------------------------------------------------------- one save, one load
def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``<path>.tmp``, then rename: a reader never sees a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` (tensors and plain values only: TypeError otherwise) with its sha256."""
    record = {"format": FORMAT, "version": VERSION, **state}
    record[DIGEST_KEY] = _digest(record)
    atomic_save(record, path)


def read_checkpoint(path: str | Path, keys: Sequence[str] = (), mmap: bool = False) -> dict[str, Any]:
    """The checkpoint dict at ``path`` (tensors on the CPU; memory-mapped with ``mmap``), its
    sha256 verified and ``keys`` present; ``CheckpointError`` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (not a checkpoint)")
    try:
        with torch.serialization.safe_globals(_NUMPY_DATA):
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found:
            raise CheckpointError(
                f"{path}: refused: it holds a pickled object ({found.group(1)}) that could run code; "
                "HaloAE checkpoints hold tensors and plain values only"
            ) from exc
        raise CheckpointError(f"{path}: corrupted or not a checkpoint (unpickling failed)") from exc
    except Exception as exc:  # torch raises RuntimeError, EOFError, KeyError... for damaged archives
        raise CheckpointError(f"{path}: corrupted or not a checkpoint ({_one_line(exc)})") from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a HaloAE checkpoint (holds a {type(ckpt).__name__}, not a dict)")
    if DIGEST_KEY in ckpt:
        recorded = ckpt.pop(DIGEST_KEY)
        try:
            actual = _digest(ckpt)
        except TypeError as exc:
            raise CheckpointError(f"{path}: not a HaloAE checkpoint ({exc})") from exc
        if recorded != actual:
            raise CheckpointError(f"{path}: corrupted (its contents do not match the sha256 recorded when it was written)")
    elif "format" not in ckpt:
        ckpt = _upgrade_version_1(ckpt)
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a HaloAE checkpoint of this kind (no {', '.join(map(repr, missing))})")
    return ckpt


# ---------------------------------------------------------------------- the model from its config
def rebuild(
    config: dict[str, Any], model_state: dict, scorer_state: dict, device: str | torch.device = "cpu", source: Any = "checkpoint"
) -> tuple[HaloAE, AnomalyScorer]:
    """Model (eval mode) and scorer from a config dict and their state dicts, strictly: a key or
    shape that does not fit is a ``CheckpointError`` naming ``source``, never silently dropped."""
    try:
        cfg = HaloAEConfig.from_dict(config).replace(**{"model.backbone.weights": "random"})
    except (InputError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{source}: its config is not valid ({_one_line(exc)})") from exc
    model = HaloAE(cfg).to(device)
    scorer = AnomalyScorer(cfg.model.image_size).to(device)
    load_states(source, [(model, model_state), (scorer, scorer_state)])
    return model.eval(), scorer


def load_states(source: Any, pairs: Sequence[tuple[Any, Any]]) -> None:
    """``load_state_dict`` of each (module or optimiser, state) pair, strictly for modules: a key or
    shape that does not fit is a ``CheckpointError`` naming ``source``."""
    try:
        for target, state in pairs:
            if isinstance(target, torch.nn.Module):
                target.load_state_dict(state, strict=True)
            else:
                target.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{source}: its weights do not fit its config ({_one_line(exc)})") from exc


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[HaloAE, AnomalyScorer, dict[str, Any]]:
    """Model, scorer and the checkpoint dict of a ``checkpoint.pt`` or ``best.pt``."""
    ckpt = read_checkpoint(path, keys=("config", "model", "scorer"))
    model, scorer = rebuild(ckpt["config"], ckpt["model"], ckpt["scorer"], device, source=path)
    return model, scorer, ckpt


# ---------------------------------------------------------------------- RNG state
def rng_state() -> dict[str, Any]:
    """torch's (a ByteTensor), numpy's (its dict form, the key as a tensor) and Python's (nested
    tuples of ints) global RNG states: what an exact resume restores."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"] = {**numpy_state["state"], "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64))}
    return {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    key = numpy_state["state"]["key"].numpy().astype(np.uint32)
    np.random.set_state({**numpy_state, "state": {**numpy_state["state"], "key": key}})
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# ---------------------------------------------------------------------- internals
def _upgrade_version_1(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A version-1 checkpoint in today's shape: numpy scalars as Python numbers, arrays as
    tensors, numpy's RNG tuple in its dict form (what ``rng_state`` stores)."""
    ckpt = _without_numpy(ckpt)
    rng = ckpt.get("rng")
    if isinstance(rng, dict) and isinstance(rng.get("numpy"), tuple):
        name, key, pos, has_gauss, gauss = rng["numpy"]
        rng["numpy"] = {"bit_generator": name, "state": {"key": key, "pos": pos}, "has_gauss": has_gauss, "gauss": gauss}
    return ckpt


def _without_numpy(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.astype(np.int64) if value.dtype == np.uint32 else value)
    if isinstance(value, dict):
        return {key: _without_numpy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_without_numpy(item) for item in value)
    return value


def _digest(value: Any) -> str:
    digest = hashlib.sha256()
    _feed(digest, value, "")
    return digest.hexdigest()


def _feed(digest, value: Any, where: str) -> None:
    """Hash ``value`` with its types and structure; TypeError for anything but tensors and plain values."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"tensor:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(f"dict:{len(value)};".encode())
        for key, item in value.items():
            _feed(digest, key, where)
            _feed(digest, item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__}:{len(value)};".encode())
        for i, item in enumerate(value):
            _feed(digest, item, f"{where}[{i}]")
    elif type(value) in _PLAIN:  # exact types: a numpy float64 is a float subclass but pickles as numpy
        digest.update(f"{type(value).__name__}:{value!r};".encode())
    else:
        raise TypeError(f"{where or 'value'}: a {type(value).__name__} is not a tensor or plain value")


def _one_line(exc: BaseException, limit: int = 240) -> str:
    """``Type: message`` on one line, whitespace collapsed and cut at ``limit`` characters
    (load_state_dict lists every missing key on lines of their own)."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
