# SPDX-License-Identifier: Apache-2.0
"""A sweep definition's trials: one trial's config (``build_config``), the expansion into trials
(``trial_grid``, ``count_trials``, ``search_domains``, ``enumerated_keys``) and the dry run
(``validate_trials``, ``check_resources``). Nothing here starts Ray or writes a file.

A trial is one sampled point of the space x one variant, x one category x one seed when
``objective.aggregate`` is ``per_category``; with ``mean`` a trial trains every category and seed
and reports their mean (one objective per Optuna trial).
"""

from __future__ import annotations

import itertools
import json
import os
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from haloae.categories import scan_category
from haloae.config import ConfigError, HaloAEConfig, config_keys
from haloae.errors import DatasetError
from sweeps.domain import Domain, config_key_problem
from sweeps.errors import Problem, spec_error

if TYPE_CHECKING:  # the schema builds its first trial's config with build_config: no import at run time
    from sweeps.schema import SweepSpec

TRIAL_KEYS = ("variant", "category", "seed")  # trial parameters that are not config keys


def encode_choice(value: Any) -> Any:
    """A categorical value Optuna can store: lists (tuple config keys) become their JSON text."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value


def _decode_choice(key: str, value: Any) -> Any:
    hint = config_keys().get(key)
    if isinstance(value, str) and typing.get_origin(hint) is tuple and value.startswith("["):
        return json.loads(value)
    return value


def _describe_trial(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v, default=str)}" for k, v in params.items())


def build_config(spec: SweepSpec, params: dict[str, Any], where: str | None = None) -> HaloAEConfig:
    """One trial's ``HaloAEConfig``: preset -> variant -> spec.overrides -> sampled keys -> train.seed.

    ``params`` holds ``variant`` (optional with one variant), ``category`` (ignored here),
    ``seed`` (optional: sets ``train.seed``) and dotted config keys. A configuration error
    becomes a SpecError naming the search-space key (or override, or variant) at fault.
    """
    where = spec.where() if where is None else where
    sampled = {k: v for k, v in params.items() if k not in TRIAL_KEYS}
    variant = params.get("variant")
    if variant is None:
        if len(spec.variants) != 1:
            raise spec_error(where, "variants", f"a trial must name its variant (one of {', '.join(spec.variants)})")
        variant = spec.variants[0]
    for key in sampled:
        problem = config_key_problem(key)
        if problem:
            raise spec_error(where, f"search.space.{key}", problem)
    sampled = {k: _decode_choice(k, v) for k, v in sampled.items()}
    overrides = {**spec.overrides, **sampled}
    if params.get("seed") is not None:
        overrides["train.seed"] = params["seed"]
    try:
        return HaloAEConfig.from_overrides(spec.preset, overrides, variant=variant)
    except ConfigError as exc:
        key, _, message = str(exc).partition(": ")
        alpha_keys = spec.search.alpha.keys() if spec.search.alpha is not None else []
        trial = f" (trial: {_describe_trial({'variant': variant, **sampled})})"
        if key in sampled:
            path = f"search.alpha ({key})" if key in alpha_keys else f"search.space.{key}"
        elif key in spec.overrides:
            path = f"overrides.{key}"
        elif key == "variant":
            path, trial = "variants", ""
        elif sampled:  # a combination of sampled values broke another key
            path, message = "search.space", f"{key}: {message}"
        else:
            index = spec.variants.index(variant) if variant in spec.variants else 0
            path, message, trial = f"variants.{index}", f"{variant} on preset {spec.preset}: {key}: {message}", ""
        raise spec_error(where, path, message + trial) from None


def search_domains(spec: SweepSpec) -> dict[str, Domain]:
    """Every dimension a searcher draws or enumerates, by trial-parameter name: ``variant`` (when
    Optuna picks it among several), the space's dotted keys, the alpha terms' keys."""
    out: dict[str, Domain] = {}
    if spec.search.algorithm == "optuna" and len(spec.variants) > 1:
        out["variant"] = Domain.of("choice", spec.variants)
    out.update(spec.search.space)
    if spec.search.alpha is not None:
        out.update(spec.search.alpha.domains(spec.epochs()))
    return out


def enumerated_keys(spec: SweepSpec) -> list[str]:
    """Space keys whose values are enumerated (every value gets its trials) rather than drawn:
    grid search enumerates grid and choice domains (a random pick would make it non-exhaustive),
    random search only grid domains (Ray's grid_search), optuna's grid sampler all of them."""
    search = spec.search
    if search.algorithm == "grid" or search.effective_sampler == "grid":
        return list(search.space)
    if search.algorithm == "random":
        return [k for k, d in search.space.items() if d.kind == "grid"]
    return []


def trial_grid(spec: SweepSpec) -> list[dict[str, Any]]:
    """The enumerated part of the trials: variant x (category x seed with aggregate per_category) x
    enumerated space values, as trial-parameter dicts, only those of ``search.points`` when given.
    Drawn keys are absent (see ``search_domains``)."""
    dims: list[tuple[str, list[Any]]] = []
    if spec.search.algorithm != "optuna" or len(spec.variants) == 1 or spec.search.effective_sampler == "grid":
        dims.append(("variant", list(spec.variants)))
    if spec.objective.aggregate == "per_category":
        dims += [("category", spec.categories()), ("seed", list(spec.seeds))]
    dims += [(k, list(spec.search.space[k].values)) for k in enumerated_keys(spec)]
    names = [name for name, _ in dims]
    rows = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(values for _, values in dims))]
    points = spec.search.points
    if points:  # only the rows of these configurations (the protocol's confirm stage)
        rows = [row for row in rows if any(all(row.get(k) == v for k, v in p.items()) for p in points)]
    return rows


def count_trials(spec: SweepSpec) -> int:
    """Trials Ray Tune will run: optuna draws num_samples; grid and random run num_samples per grid point."""
    if spec.search.algorithm == "optuna":
        return spec.search.num_samples
    return spec.search.num_samples * len(trial_grid(spec))


def _check_points(spec: SweepSpec) -> Iterable[dict[str, Any]]:
    """Every configuration a trial may get, up to the values of continuous domains: variants x seeds x
    every discrete value and both bounds of every space key; the alpha terms at their low and high
    corners (the config does not constrain them, only their types)."""
    space = spec.search.space
    alpha = spec.search.alpha.domains(spec.epochs()) if spec.search.alpha is not None else {}
    corners = [{k: d.low for k, d in alpha.items()}, {k: d.high for k, d in alpha.items()}] if alpha else [{}]
    keys = list(space)
    for variant, seed, *values in itertools.product(spec.variants, spec.seeds, *(space[k].points() for k in keys)):
        for corner in corners:
            yield {"variant": variant, "seed": seed, **dict(zip(keys, values, strict=True)), **corner}


def validate_trials(spec: SweepSpec) -> list[dict[str, Any]]:
    """The dry run: every trial configuration builds, the data is there; returns ``trial_grid(spec)``.

    Starts nothing, trains nothing and writes nothing. A local storage must be a folder this user
    may write (or create). Synthetic data is not required to exist yet (the runner generates it);
    a ``data.root`` is scanned category by category (``haloae.categories.scan_category`` opens every
    image, so a bad file fails here and not hours into a sweep).
    """
    where = spec.where()
    _check_storage(spec)
    for params in _check_points(spec):
        cfg = build_config(spec, params)
        try:
            spec.check_trial_config(cfg, f" (trial: {_describe_trial(params)})")
        except Problem as exc:
            raise spec_error(where, ".".join(map(str, exc.path)), exc.message) from None
    if spec.search.effective_sampler == "cmaes":
        import importlib.util

        if importlib.util.find_spec("cmaes") is None:
            raise spec_error(where, "search.sampler", "cmaes needs the cmaes package (pip install cmaes), or use tpe")
    if spec.data.root is not None:
        root = spec.data_root()
        if not root.is_dir():
            raise spec_error(where, "data.root", f"{root}: dataset root not found (point it at MVTec AD, e.g. --set data.root=PATH)")
        for category in spec.categories():
            try:
                scan_category(root, category)
            except DatasetError as exc:
                raise spec_error(where, f"data.categories ({category})", str(exc)) from None
    return trial_grid(spec)


def _check_storage(spec: SweepSpec) -> None:
    """``<storage>/<name>``, or its nearest existing parent, is a folder this user can write in:
    asked of the file system (``os.access``), without creating anything."""
    if not spec.local_storage():
        return
    target = existing = Path(spec.sweep_dir())
    try:
        while not existing.exists():
            existing = existing.parent
        is_folder = existing.is_dir()
    except OSError as exc:  # a parent this user may not even look into
        raise spec_error(spec.where(), "storage", f"{target}: cannot be checked ({exc.strerror or exc})") from None
    shown = f"{existing}" if existing == target else f"{existing} (on the way to {target})"
    if not is_folder:
        raise spec_error(spec.where(), "storage", f"{shown} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise spec_error(spec.where(), "storage", f"{shown} is not writable by this user")


def _visible_gpus() -> int:
    """CUDA devices this process sees; torch is imported for a trial that books a GPU only (the
    driver of a CPU sweep never imports it: about 2 s of every command)."""
    import torch

    return torch.cuda.device_count()


def check_resources(spec: SweepSpec, address: str | None) -> str | None:
    """One trial's ``resources`` against this machine's CPUs and visible GPUs, for the dry run.

    On a local Ray (``address`` None or ``local``) a trial larger than the machine would pend
    forever: a SpecError. With a cluster address the cluster may well be larger (the dry run starts
    no Ray to ask it): the one-line warning is returned, None when the trial fits here.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    need = spec.resources
    if need.cpu > cpus:
        path, problem = "resources.cpu", f"a trial needs {need.cpu:g} CPUs but this machine has {cpus}"
    elif need.gpu > 0 and _visible_gpus() == 0:
        path, problem = "resources.gpu", f"a trial needs {need.gpu:g} of a GPU but this machine has none visible"
    else:
        return None
    if address in (None, "local"):
        raise spec_error(spec.where(), path, f"{problem}; lower it, or give --address of a cluster that has them")
    return f"Warning: {spec.where()}: {path}: {problem}; the cluster at {address} must have them (not checked: no Ray)"
