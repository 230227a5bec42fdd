# SPDX-License-Identifier: Apache-2.0
"""The sweep definition: a YAML file, validated into one typed, frozen ``SweepSpec``.

Steps, in the order a sweep uses them:

1. ``load_spec(path, overrides)`` reads the YAML (with line numbers for syntax errors and duplicate
   keys), applies ``--set`` overrides of the definition itself (``data.root=/data/mvtec_ad``),
   resolves paths and validates everything that needs neither data nor Ray: the schema (unknown
   keys, types), the rules between sections (optuna needs ``objective.aggregate: mean``, ...) and
   the first trial's configuration for every variant.
2. ``validate_trials(spec)`` is the dry run: every grid point (and both bounds of every continuous
   domain) builds a valid ``HaloAEConfig``, and every category is scanned on disk.
3. ``build_config(spec, params)`` turns one trial's parameters (``variant``, ``category``, ``seed``
   and dotted config keys, as Ray Tune or Optuna hand them over) into its ``HaloAEConfig``:
   preset -> variant -> ``overrides`` -> sampled keys -> ``train.seed``.

A trial is one sampled point of the space x one variant, x one category x one seed when
``objective.aggregate`` is ``per_category``; with ``mean`` a trial trains every category and seed
and reports their mean (one objective per Optuna trial).

Every problem is a ``SpecError`` of one line, ``<file>: <dotted.path>: <message>``::

    sweeps/bad.yaml: search.space.model.blok_size: unknown config key; did you mean model.block_size?
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import os
import re
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from haloae.config import LOSS_TERMS, PRESETS, ConfigError, HaloAEConfig, config_keys
from haloae.data import CATEGORIES, OBJECTS, TEXTURES, DatasetError, scan_category
from haloae.errors import InputError
from haloae.scoring import SCORINGS
from haloae.synth import SYNTH_CATEGORIES, SYNTH_OBJECTS, SYNTH_TEXTURES
from haloae.variants import VARIANTS

DOMAIN_KINDS = ("grid", "choice", "uniform", "loguniform", "int")
DISCRETE_KINDS = ("grid", "choice")
# What the trainable reports per scoring (haloae.metrics.evaluate_maps); the default scoring's
# metrics also come without the scoring prefix (haloae.train.evaluate).
OBJECTIVE_METRICS = ("image_auroc", "pixel_auroc", "aupro", "image_auroc_max")
TRIAL_KEYS = ("variant", "category", "seed")  # trial parameters that are not config keys
ALPHA_PARAMS = ("a", "b", "c", "d")
# Config keys that have their own place in a sweep definition.
RESERVED_KEYS = {
    "preset": "set the top-level preset: instead",
    "variant": "list variants under variants: instead",
    "train.seed": "list repeats under seeds: instead",
}
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True, strict=True)


class SpecError(InputError):
    """A sweep definition is invalid; one line, ``<file>: <dotted.path>: <message>``."""

    def __init__(self, message: str, path: str = "", detail: str = "") -> None:
        # whitespace collapsed: the message is always one line, whatever was interpolated into it
        super().__init__(" ".join(str(message).split()))
        self.path = path  # the dotted path at fault ("" when the file as a whole is)
        self.detail = detail or str(message)  # the message without file and path


def _spec_error(where: str, path: str, message: str) -> SpecError:
    return SpecError(f"{where}: {path}: {message}" if path else f"{where}: {message}", path, message)


class _Problem(ValueError):
    """Raised inside validators: ``path`` (relative to the validator's location) and a message.
    A ValueError so that pydantic reports it with its location; the converter reads both back."""

    def __init__(self, path: Sequence[str | int], message: str) -> None:
        super().__init__(message)
        self.path, self.message = tuple(path), message


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _suggest(name: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.6)
    return f"did you mean {close[0]}? " if close else ""


def _unknown(what: str, name: Any, valid: Sequence[str]) -> str:
    return f"unknown {what} {_show(name)}; {_suggest(name, valid)}valid: {', '.join(valid)}"


def is_uri(path: str) -> bool:
    """``s3://bucket/x`` and other remote locations (Ray storage, MLflow artifacts)."""
    return bool(_URI.match(path))


# ---------------------------------------------------------------------- search-space domains
def _bounds(kind: str, value: Any, integer: bool = False, positive: bool = False) -> tuple[float, float]:
    """``[low, high]`` of a continuous domain or an alpha range, checked."""
    number = int if integer else (int, float)
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, number) for v in value)
    ):
        kind_of = "integers" if integer else "numbers"
        raise _Problem((), f"{kind} needs [low, high] ({kind_of}); got {_show(value)}")
    low, high = value
    if not low < high:
        raise _Problem((), f"{kind} needs low < high; got {_show(list(value))}")
    if positive and low <= 0:
        raise _Problem((), f"{kind} needs low > 0; got {_show(list(value))}")
    return (low, high) if integer else (float(low), float(high))


class Domain(BaseModel):
    """One searched dimension, written ``{grid: [4, 6, 12]}``, ``{choice: [...]}``,
    ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}`` or ``{int: [lo, hi]}`` (inclusive)."""

    model_config = _MODEL_CONFIG
    kind: Literal["grid", "choice", "uniform", "loguniform", "int"]
    values: tuple[Any, ...]  # grid / choice: the values; uniform / loguniform / int: (low, high)

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, data: Any) -> Any:
        if isinstance(data, Domain):
            return data
        expected = f"expected a mapping with one of {', '.join(DOMAIN_KINDS)}; got {_show(data)}"
        if not isinstance(data, dict) or not data:
            raise _Problem((), expected)
        unknown = [k for k in data if k not in DOMAIN_KINDS]
        if unknown:
            raise _Problem((), _unknown("domain", unknown[0], DOMAIN_KINDS))
        if len(data) > 1:
            raise _Problem((), f"give one domain, got {', '.join(data)}")
        kind, values = next(iter(data.items()))
        if kind in DISCRETE_KINDS:
            if not isinstance(values, list) or not values:
                raise _Problem((), f"{kind} needs a non-empty list of values; got {_show(values)}")
            seen = [json.dumps(v, sort_keys=True, default=str) for v in values]
            repeated = next((v for v, s in zip(values, seen, strict=True) if seen.count(s) > 1), None)
            if repeated is not None:
                raise _Problem((), f"{kind} repeats the value {_show(repeated)}")
            return {"kind": kind, "values": tuple(values)}
        return {"kind": kind, "values": _bounds(kind, values, integer=kind == "int", positive=kind == "loguniform")}

    @classmethod
    def of(cls, kind: str, values: Sequence[Any]) -> Domain:
        """``Domain.of("uniform", (0.0, 1.0))``: built and checked as if read from YAML."""
        return cls.model_validate({kind: list(values)})

    @model_serializer
    def _to_yaml(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.values)}

    @property
    def discrete(self) -> bool:
        return self.kind in DISCRETE_KINDS

    @property
    def low(self) -> Any:
        return self.values[0]

    @property
    def high(self) -> Any:
        return self.values[-1]

    def points(self) -> list[Any]:
        """The values a dry run checks: every discrete value, or both bounds."""
        return list(self.values)

    def describe(self) -> str:
        if self.discrete:
            return f"{self.kind} {json.dumps(list(self.values), default=str)}"
        return f"{self.kind}({self.low:g}, {self.high:g})"


# ---------------------------------------------------------------------- sections
class SyntheticSpec(BaseModel):
    """Generated MVTec-format data (``haloae.synth.generate``) written to ``<sweep_dir>/data``."""

    model_config = _MODEL_CONFIG
    categories: list[str] = Field(default_factory=lambda: list(SYNTH_CATEGORIES))
    size: int = Field(128, ge=16)
    seed: int = 0
    n_train: int = Field(30, ge=1)
    n_test_good: int = Field(10, ge=1)
    n_test_defect_per_type: int = Field(4, ge=1)

    @field_validator("categories")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        if not names:
            raise ValueError(f"needs at least one of {', '.join(SYNTH_CATEGORIES)}")
        for i, name in enumerate(names):
            if name not in SYNTH_CATEGORIES:
                raise _Problem((i,), _unknown("synthetic category", name, SYNTH_CATEGORIES))
        _no_repeats(names)
        return names

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``haloae.synth.generate`` (after ``out_dir``)."""
        return self.model_dump()


def _no_repeats(items: Sequence[Any]) -> None:
    for i, item in enumerate(items):
        if item in items[:i]:
            raise _Problem((i,), f"{_show(item)} is listed twice")


class DataSpec(BaseModel):
    """MVTec AD (``root``) or generated data (``synthetic``), and the categories to run."""

    model_config = _MODEL_CONFIG
    root: str | None = Field(None, min_length=1)  # relative paths resolve against the YAML file's folder
    synthetic: SyntheticSpec | None = None
    categories: str | list[str] = "all"  # all | textures | objects | a list

    @field_validator("categories", mode="before")
    @classmethod
    def _shape(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in ("all", "textures", "objects"):
                raise ValueError(f"expected all, textures, objects or a list of categories; got {_show(value)}")
        elif not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected all, textures, objects or a non-empty list of categories; got {_show(value)}")
        else:
            _no_repeats(value)
        return value

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if (self.root is None) == (self.synthetic is None):
            both = "not both" if self.root is not None else "one is needed"
            raise _Problem((), f"give root (an MVTec AD folder) or synthetic (generated data), {both}")
        self.resolved_categories()  # raises on unknown names
        return self

    def resolved_categories(self) -> list[str]:
        """The category names to run, in the order given (MVTec's order for a group)."""
        if self.synthetic is not None:
            pool = self.synthetic.categories
            groups = {"all": pool, "textures": SYNTH_TEXTURES, "objects": SYNTH_OBJECTS}
            where = "generated by data.synthetic"
        else:
            pool = list(CATEGORIES)
            groups = {"all": CATEGORIES, "textures": TEXTURES, "objects": OBJECTS}
            where = "an MVTec AD category"
        if isinstance(self.categories, str):
            names = [c for c in groups[self.categories] if c in pool]
            if not names:
                raise _Problem(("categories",), f"{self.categories} selects none of {', '.join(pool)}")
            return names
        for i, name in enumerate(self.categories):
            # a real root may also hold other MVTec-format categories (haloae.data accepts them)
            custom = self.root is not None and (name in SYNTH_CATEGORIES or (Path(self.root) / name / "train").is_dir())
            if name not in pool and not custom:
                raise _Problem(("categories", i), f"{_show(name)} is not {where}; {_suggest(name, pool)}valid: {', '.join(pool)}")
        return list(self.categories)


class AlphaRanges(BaseModel):
    """``[low, high]`` of each logistic parameter; ``None`` = a default scaled to the run's epochs."""

    model_config = _MODEL_CONFIG
    a: tuple[float, float] | None = None
    b: tuple[float, float] | None = None
    c: tuple[float, float] | None = None
    d: tuple[float, float] | None = None

    @field_validator("a", "b", "c", "d", mode="before")
    @classmethod
    def _range(cls, value: Any, info: Any) -> Any:
        return None if value is None else _bounds(info.field_name, value, positive=info.field_name in ("c", "d"))


def default_alpha_range(param: str, epochs: int) -> tuple[float, float, bool]:
    """(low, high, log) around the paper's schedule, ``(a - b) / (1 + exp(d (epoch - c / 2))) + b``.

    Paper (251 epochs): a = 1 (cls), ~0 (fm, im); b = 0.4, 1.2, 2.0; c = 80, 150, 300 (the
    midpoint c/2 at 16 % to 60 % of training); d = 0.05 to 0.07. The cpu preset compresses the
    same shape into 20 epochs (c = 8, 12, 24; d = 0.625 to 0.875), so c scales with the epochs
    and d with their inverse (d x epochs = 12.5 to 17.5 in both).
    """
    return {
        "a": (0.0, 1.0, False),
        "b": (0.2, 2.0, False),
        "c": (0.2 * epochs, 1.4 * epochs, False),
        "d": (5.0 / epochs, 30.0 / epochs, True),  # a slope: log scale
    }[param]


class AlphaSearch(BaseModel):
    """The alpha-schedule search (Optuna only): ``loss.alpha.<term>.<a|b|c|d>`` per searched term."""

    model_config = _MODEL_CONFIG
    mode: Literal["per_term", "midpoint_slope"] = "per_term"  # per_term: a, b, c, d; midpoint_slope: c, d
    terms: list[Literal["cls", "fm", "im"]] = Field(default_factory=lambda: list(LOSS_TERMS))
    ranges: AlphaRanges = Field(default_factory=AlphaRanges)

    @field_validator("terms")
    @classmethod
    def _terms(cls, terms: list[str]) -> list[str]:
        if not terms:
            raise ValueError(f"needs at least one of {', '.join(LOSS_TERMS)}")
        _no_repeats(terms)
        return terms

    @model_validator(mode="after")
    def _ranges_used(self) -> AlphaSearch:
        for param in ALPHA_PARAMS:
            if getattr(self.ranges, param) is not None and param not in self.params():
                raise _Problem(("ranges", param), f"not searched in mode {self.mode} (only {', '.join(self.params())})")
        return self

    def params(self) -> tuple[str, ...]:
        return ALPHA_PARAMS if self.mode == "per_term" else ("c", "d")

    def keys(self) -> list[str]:
        return [f"loss.alpha.{term}.{p}" for term in self.terms for p in self.params()]

    def domains(self, epochs: int) -> dict[str, Domain]:
        """Each searched alpha key as a continuous domain (``d`` log-uniform)."""
        out = {}
        for term in self.terms:
            for p in self.params():
                low, high, log = default_alpha_range(p, epochs)
                given = getattr(self.ranges, p)
                if given is not None:
                    low, high = given
                out[f"loss.alpha.{term}.{p}"] = Domain.of("loguniform" if log else "uniform", (low, high))
        return out


class SearchSpec(BaseModel):
    model_config = _MODEL_CONFIG
    algorithm: Literal["grid", "random", "optuna"] = "grid"
    num_samples: int = Field(1, ge=1)  # random/optuna: trials drawn; grid: repeats of the grid
    seed: int = 0  # searcher / sampler seed
    sampler: Literal["tpe", "cmaes", "grid"] | None = None  # optuna only; default tpe
    space: dict[str, Domain] = Field(default_factory=dict)  # dotted config key -> domain
    alpha: AlphaSearch | None = None  # optuna only
    storage: str | None = None  # optuna RDB URL; default sqlite:///<sweep_dir>/optuna.db

    @field_validator("space", mode="before")
    @classmethod
    def _keys(cls, space: Any) -> Any:
        if isinstance(space, dict):
            for key in space:
                problem = _config_key_problem(key)
                if problem:
                    raise _Problem((key,), problem)
        return space

    @model_validator(mode="after")
    def _algorithm_rules(self) -> SearchSpec:
        if self.algorithm != "optuna":
            if self.sampler is not None:
                raise _Problem(("sampler",), f"only for algorithm optuna (algorithm is {self.algorithm})")
            if self.alpha is not None:
                raise _Problem(("alpha",), f"the alpha-schedule search needs algorithm optuna (algorithm is {self.algorithm})")
        if self.algorithm == "grid" or self.sampler == "grid":
            what = "grid search" if self.algorithm == "grid" else "the optuna grid sampler"
            for key, domain in self.space.items():
                if not domain.discrete:
                    raise _Problem(
                        ("space", key),
                        f"{what} cannot draw from {domain.kind}; use grid or choice, or search.algorithm random or optuna",
                    )
            if self.alpha is not None:
                raise _Problem(("alpha",), f"{what} cannot draw the continuous alpha ranges; use sampler tpe or cmaes")
        if self.alpha is not None:
            clash = sorted(set(self.alpha.keys()) & set(self.space))
            if clash:
                raise _Problem(("space", clash[0]), "also searched by search.alpha: search it in one place")
        return self

    @property
    def effective_sampler(self) -> str | None:
        return (self.sampler or "tpe") if self.algorithm == "optuna" else None


class SchedulerSpec(BaseModel):
    model_config = _MODEL_CONFIG
    type: Literal["fifo", "asha"] = "fifo"
    grace_period: int = Field(1, ge=1)  # asha: epochs before a trial may be stopped
    reduction_factor: float = Field(2.0, gt=1)
    max_t: int | None = Field(None, ge=1)  # asha: None = the effective train.epochs

    @model_validator(mode="after")
    def _asha_knobs(self) -> SchedulerSpec:
        if self.type == "fifo":
            knobs = sorted(self.model_fields_set - {"type"})
            if knobs:
                raise _Problem((knobs[0],), "only for type asha")
        return self

    @model_serializer(mode="wrap")
    def _without_unused_knobs(self, handler: Any) -> dict[str, Any]:
        return {"type": "fifo"} if self.type == "fifo" else handler(self)  # fifo refuses asha knobs


class ObjectiveSpec(BaseModel):
    model_config = _MODEL_CONFIG
    metric: str = "val/image_auroc"
    mode: Literal["max", "min"] = "max"
    aggregate: Literal["per_category", "mean"] = "per_category"

    @field_validator("metric")
    @classmethod
    def _validation_metric(cls, metric: str) -> str:
        split, _, rest = metric.partition("/")
        if split != "val":
            raise ValueError(
                f"{_show(metric)} is not a validation metric: trials are chosen on val/... only "
                f"(the test split is reported, never used to choose); e.g. val/{rest or 'image_auroc'}"
            )
        valid = objective_metrics()
        if metric not in valid:
            raise ValueError(f"{_show(metric)} is not reported by the trials; {_suggest(metric, valid)}valid: val/<metric> "
                             f"or val/<scoring>/<metric> with metric in {', '.join(OBJECTIVE_METRICS)} and scoring in "
                             f"{', '.join(SCORINGS)} (cls: image_auroc only)")
        return metric

    def scoring(self) -> str | None:
        """The scoring the metric names, or None for the default scoring's unprefixed metric."""
        parts = self.metric.split("/")
        return parts[1] if len(parts) == 3 else None


def objective_metrics() -> list[str]:
    """Every metric a trial reports that can be an objective."""
    names = [f"val/{m}" for m in OBJECTIVE_METRICS]
    for scoring in SCORINGS:
        # the classifier gives one score per image: no map, so no pixel metrics and no max
        names += [f"val/{scoring}/{m}" for m in (("image_auroc",) if scoring == "cls" else OBJECTIVE_METRICS)]
    return names


class ResourcesSpec(BaseModel):
    model_config = _MODEL_CONFIG
    cpu: float = Field(1.0, gt=0)
    gpu: float = 0.0  # a fraction of one GPU per trial, 0 to 1

    @field_validator("gpu")
    @classmethod
    def _fraction(cls, gpu: float) -> float:
        if not 0 <= gpu <= 1:
            raise ValueError(f"a trial uses a fraction of one GPU, from 0 to 1; got {gpu:g}")
        return gpu


class MlflowSpec(BaseModel):
    model_config = _MODEL_CONFIG
    tracking_uri: str | None = None  # default: sqlite:///<sweep_dir>/mlflow.db (absolute)
    experiment: str | None = Field(None, min_length=1)  # default: the sweep's name


def _config_key_problem(key: Any) -> str | None:
    """Why ``key`` cannot be set by a sweep, or None when it is a config key it may set."""
    if key in RESERVED_KEYS:
        return RESERVED_KEYS[key]
    keys = config_keys()
    if key not in keys:
        valid = [k for k in keys if k not in RESERVED_KEYS]
        close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
        if not close:  # a misplaced or misspelled section: match on the last part
            close = [k for k in valid if k.rsplit(".", 1)[-1] == str(key).rsplit(".", 1)[-1]][:1]
        hint = f"; did you mean {close[0]}?" if close else " (haloae config --preset paper lists them)"
        return f"unknown config key{hint}"
    return None


def _flatten_mapping(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> dotted keys (config values are never mappings)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten_mapping(value, name + "."))
        elif name in out:
            raise _Problem((name,), "given twice (dotted and nested)")
        else:
            out[name] = value
    return out


# ---------------------------------------------------------------------- the definition
class SweepSpec(BaseModel):
    """One sweep definition (see the module docstring and ``sweeps/smoke.yaml``)."""

    model_config = _MODEL_CONFIG
    name: str
    description: str | None = None
    data: DataSpec
    preset: str = "paper"
    overrides: dict[str, Any] = Field(default_factory=dict)  # fixed dotted config overrides
    variants: list[str] = Field(default_factory=lambda: ["haloae"])  # haloae.variants names
    seeds: list[int] = Field(default_factory=lambda: [0])
    search: SearchSpec = Field(default_factory=SearchSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    max_concurrent_trials: int | None = Field(None, ge=1)
    retries: int = Field(0, ge=0)
    storage: str = "runs/sweeps"  # local folder (made absolute by load_spec) or s3://...
    mlflow: MlflowSpec = Field(default_factory=MlflowSpec)

    _source: Path | None = PrivateAttr(None)
    _where: str | None = PrivateAttr(None)  # the path as the user gave it, for error messages
    _yaml_text: str = PrivateAttr("")

    # ------------------------------------------------------------------ field checks
    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(
                f"use letters, digits, _, . and - only (it names folders, the MLflow experiment and the "
                f"Optuna study); got {_show(name)}"
            )
        return name

    @field_validator("preset")
    @classmethod
    def _preset(cls, preset: str) -> str:
        if preset not in PRESETS:
            raise ValueError(_unknown("preset", preset, list(PRESETS)))
        return preset

    @field_validator("overrides", mode="before")
    @classmethod
    def _overrides(cls, overrides: Any) -> Any:
        if not isinstance(overrides, dict):
            return overrides  # pydantic reports the type
        flat = _flatten_mapping(overrides)
        for key in flat:
            problem = _config_key_problem(key)
            if problem:
                raise _Problem((key,), problem)
        return flat

    @field_validator("variants")
    @classmethod
    def _variants(cls, variants: list[str]) -> list[str]:
        if not variants:
            raise ValueError("needs at least one variant (haloae is the paper's model)")
        for i, name in enumerate(variants):
            if name not in VARIANTS:
                raise _Problem((i,), _unknown("variant", name, list(VARIANTS)))
        _no_repeats(variants)
        return variants

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise ValueError("needs at least one seed")
        _no_repeats(seeds)
        return seeds

    @field_validator("storage")
    @classmethod
    def _storage(cls, storage: str) -> str:
        if not storage.strip():
            raise ValueError("needs a folder or a URI such as s3://bucket/sweeps")
        return storage

    # ------------------------------------------------------------------ rules between sections
    @model_validator(mode="after")
    def _cross_checks(self) -> SweepSpec:
        search, objective = self.search, self.objective
        if search.algorithm == "optuna":
            if objective.aggregate != "mean":
                raise _Problem(
                    ("objective", "aggregate"),
                    "search.algorithm optuna needs one objective per trial: set objective.aggregate: mean "
                    "(each trial then trains every category and seed and reports their mean)",
                )
            if not search.space and search.alpha is None and len(self.variants) == 1:
                raise _Problem(("search",), "optuna has nothing to search: give search.space, search.alpha or several variants")
            points = len(trial_grid(self))
            if search.effective_sampler == "grid" and search.num_samples > points:
                raise _Problem(
                    ("search", "num_samples"),
                    f"{search.num_samples} exceeds the {points} points of the optuna grid: the grid sampler would "
                    "repeat them (repeats go in seeds)",
                )
        if not self.local_storage():
            if self.data.synthetic is not None:
                raise _Problem(("data", "synthetic"), "generated data is written under storage: use a local storage folder, or data.root")
            if self.mlflow.tracking_uri is None:
                raise _Problem(("mlflow", "tracking_uri"), f"required when storage is remote ({self.storage}): sqlite needs a local file")
            if search.algorithm == "optuna" and search.storage is None:
                raise _Problem(("search", "storage"), f"required when storage is remote ({self.storage}): an RDB URL for the Optuna study")
        # the first trial of every variant must build: catches bad overrides and variant clashes early
        for variant in self.variants:
            self._check_trial_config(self.first_config(variant))
        if self.scheduler.type == "asha":
            max_t = self.max_t()
            if self.scheduler.grace_period > max_t:
                raise _Problem(("scheduler", "grace_period"), f"{self.scheduler.grace_period} exceeds max_t={max_t}")
            if self.scheduler.max_t is not None and self.scheduler.max_t > self.epochs():
                raise _Problem(
                    ("scheduler", "max_t"),
                    f"{self.scheduler.max_t} exceeds train.epochs={self.epochs()} (trials report once per epoch)",
                )
        return self

    def first_config(self, variant: str | None = None) -> HaloAEConfig:
        """The config of a variant's first trial (first value / low bound of every domain)."""
        first = {key: domain.values[0] for key, domain in self.search.space.items()}
        return build_config(self, {"variant": variant or self.variants[0], "seed": self.seeds[0], **first})

    def _check_trial_config(self, cfg: HaloAEConfig, trial: str = "") -> None:
        """Rules between the objective / alpha search and one trial's configuration."""
        scoring = self.objective.scoring()
        if scoring is not None and scoring not in scorings_for(cfg):
            raise _Problem(
                ("objective", "metric"),
                f"variant {cfg.variant} does not report {self.objective.metric} (no {scoring} scoring: it has "
                f"{', '.join(scorings_for(cfg))}){trial}",
            )
        if self.search.alpha is not None and cfg.loss.weighting != "adaptive_logistic":
            raise _Problem(
                ("search", "alpha"),
                f"variant {cfg.variant} weights its losses with {cfg.loss.weighting}: the alpha schedule is "
                f"unused (it needs loss.weighting adaptive_logistic){trial}",
            )

    # ------------------------------------------------------------------ identity
    @property
    def source(self) -> Path | None:
        """The YAML file it was loaded from (absolute), or None."""
        return self._source

    @property
    def yaml_text(self) -> str:
        """The file's text as loaded (before ``--set`` overrides)."""
        return self._yaml_text

    def where(self) -> str:
        """How errors name this definition: its path as given to ``load_spec``."""
        return self._where or f"sweep {self.name}"

    def canonical_yaml(self) -> str:
        """The definition as run: every default filled in, paths resolved, overrides applied."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, default_flow_style=None)

    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_yaml().encode()).hexdigest()

    def __eq__(self, other: object) -> bool:
        # source and yaml_text say where a definition came from, not what it is
        return isinstance(other, SweepSpec) and self.canonical_yaml() == other.canonical_yaml()

    def __hash__(self) -> int:
        return hash(self.canonical_yaml())

    # ------------------------------------------------------------------ derived values
    def local_storage(self) -> bool:
        return not is_uri(self.storage) or self.storage.startswith("file://")

    def sweep_dir(self) -> Path | str:
        """``<storage>/<name>``: a Path for local storage, a URI string otherwise."""
        if self.local_storage():
            return Path(self.storage.removeprefix("file://")).absolute() / self.name
        return f"{self.storage.rstrip('/')}/{self.name}"

    def data_root(self) -> Path:
        """The MVTec-format folder the trials read: ``data.root`` or ``<sweep_dir>/data``."""
        if self.data.root is not None:
            return Path(self.data.root)
        return Path(self.sweep_dir()) / "data"

    def categories(self) -> list[str]:
        return self.data.resolved_categories()

    def tracking_uri(self) -> str:
        """MLflow tracking URI; by default an absolute sqlite file in the sweep folder (Tune
        chdirs every trial, so a relative one would give each trial its own database)."""
        if self.mlflow.tracking_uri is not None:
            return self.mlflow.tracking_uri
        return f"sqlite:///{Path(self.sweep_dir()) / 'mlflow.db'}"

    def experiment_name(self) -> str:
        return self.mlflow.experiment or self.name

    def optuna_storage(self) -> str:
        """RDB URL of the Optuna study: ``search.storage`` or ``sqlite:///<sweep_dir>/optuna.db``."""
        if self.search.storage is not None:
            return self.search.storage
        return f"sqlite:///{Path(self.sweep_dir()) / 'optuna.db'}"

    def epochs(self) -> int:
        """Effective ``train.epochs`` (preset + variant + overrides; the first value if searched)."""
        return self.first_config().train.epochs

    def max_t(self) -> int:
        """ASHA's max_t: given, or the most epochs any trial trains."""
        if self.scheduler.max_t is not None:
            return self.scheduler.max_t
        searched = self.search.space.get("train.epochs")
        return int(max(searched.values)) if searched is not None else self.epochs()

    def runs_per_trial(self) -> int:
        """Training runs inside one trial: categories x seeds with aggregate mean, else 1."""
        return len(self.categories()) * len(self.seeds) if self.objective.aggregate == "mean" else 1


def scorings_for(cfg: HaloAEConfig) -> tuple[str, ...]:
    """The Table S1 scorings a configuration's model reports, as ``haloae.scoring.available_scorings``
    derives them from its output: image AEs have only im_hat; others have fm and fm_hat, plus
    im_hat with the image decoder and logits with the classifier."""
    m = cfg.model
    if m.arch in ("ae_l2", "ae_ssim"):
        return ("aim_norm_filter",)
    names = ["cls"] if m.classifier else []
    if m.image_decoder:
        names.append("aim_norm_filter")
    return (*names, "afm", "afm_norm", "afm_norm_filter")


# ---------------------------------------------------------------------- parsing
def _from_validation_error(exc: ValidationError, where: str) -> SpecError:
    """pydantic's first error -> ``<file>: <dotted.path>: <message>``."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, _Problem):
        loc += [str(p) for p in cause.path]
        message = cause.message
    elif isinstance(cause, SpecError):  # build_config inside a validator: its path is absolute
        loc += [cause.path] if cause.path else []
        message = cause.detail
    elif err["type"] == "extra_forbidden":
        valid = _fields_at(err["loc"][:-1])
        message = f"unknown key; {_suggest(loc[-1], valid)}valid: {', '.join(valid)}"
    elif err["type"] == "missing":
        message = "required"
    else:
        message = err["msg"]
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if not isinstance(cause, ValueError):  # pydantic's own messages do not show the value
            message += f"; got {_show(err.get('input'))}"
    return _spec_error(where, ".".join(loc), message)


def _fields_at(loc: Sequence[Any]) -> list[str]:
    """The keys valid at ``loc`` (for "unknown key" messages), walking the models' annotations."""
    tp: Any = SweepSpec
    for part in loc:
        tp = _unwrap_optional(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            tp = tp.model_fields[str(part)].annotation
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
    tp = _unwrap_optional(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _unwrap_optional(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp


def parse_spec(raw: Any, where: str = "<sweep spec>") -> SweepSpec:
    """A mapping (a parsed YAML document) -> ``SweepSpec``; SpecError on the first problem."""
    if not isinstance(raw, dict):
        raise _spec_error(where, "", f"expected a mapping of sweep settings at the top level; got {_show(raw)}")
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise _from_validation_error(exc, where) from None


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads ``1e-4`` as a number."""


# PyYAML follows YAML 1.1, where 1e-4 (no dot) is a string; sweep authors mean a number.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(f"duplicate key {_show(key)}")
        self.line = line


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise _DuplicateKey(key, key_node.start_mark.line + 1)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise _spec_error(where, f"line {exc.line}", str(exc)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        raise _spec_error(where, line, f"invalid YAML: {problem}" + (f" ({context})" if context else "")) from None


def _absolute(path: Any, base: Path) -> Any:
    """A local path made absolute against ``base``; URIs and non-strings are left as they are."""
    if not isinstance(path, str) or not path or is_uri(path):
        return path
    return os.path.normpath(base / Path(path).expanduser())


def _apply_overrides(raw: dict[str, Any], overrides: Sequence[str], where: str) -> set[str]:
    """``--set`` overrides of the definition (``search.num_samples=2``); returns the keys set.
    Keys under ``overrides.`` and ``search.space.`` are dotted config keys: the rest is one key."""
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise _spec_error(where, "--set", f"{_show(item)}: expected key=value, e.g. search.num_samples=4")
        try:  # values are YAML, read as the file is (1e-4 is a number)
            parsed[key.strip()] = yaml.load(text, Loader=_Loader) if text.strip() else ""  # noqa: S506
        except yaml.YAMLError:
            parsed[key.strip()] = text
    for key, value in parsed.items():
        parts = key.split(".")
        for head in (("overrides",), ("search", "space")):
            if tuple(parts[: len(head)]) == head and len(parts) > len(head):
                parts = [*head, ".".join(parts[len(head) :])]
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise _spec_error(where, f"--set {key}", f"{'.'.join(parts[: i + 1])} is not a mapping")
            if part == "overrides" and i == 0:
                child = node[part] = _flatten_mapping(child)  # so a dotted --set replaces a nested value
            node = child
        node[parts[-1]] = value
    return set(parsed)


def load_spec(path: str | Path, overrides: Sequence[str] | None = None) -> SweepSpec:
    """Read and validate a sweep YAML; ``overrides`` are ``--set`` items for the definition itself.

    ``data.root`` resolves against the YAML's folder (against the current folder when given by
    ``--set``), a local ``storage`` against the current folder. Raises a one-line ``SpecError``.
    """
    where = str(path)
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise _spec_error(where, "", "no such file") from None
    except IsADirectoryError:
        raise _spec_error(where, "", "is a folder, not a sweep YAML") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _spec_error(where, "", f"cannot read: {exc}") from None
    raw = _read_yaml(text, where)
    if raw is None:
        raise _spec_error(where, "", "empty sweep definition (name and data are required)")
    if isinstance(raw, dict):
        if isinstance(raw.get("data"), dict):
            raw["data"]["root"] = _absolute(raw["data"].get("root"), path.parent.absolute())
        set_keys = _apply_overrides(raw, overrides or [], where)
        if "data.root" in set_keys:
            raw["data"]["root"] = _absolute(raw["data"]["root"], Path.cwd())
        raw["storage"] = _absolute(raw.get("storage", SweepSpec.model_fields["storage"].default), Path.cwd())
        tracking = (raw.get("mlflow") or {}).get("tracking_uri") if isinstance(raw.get("mlflow"), dict) else None
        if isinstance(tracking, str) and tracking.startswith("sqlite:///") and not tracking.startswith("sqlite:////"):
            # relative sqlite paths would follow Tune's per-trial chdir
            raw["mlflow"]["tracking_uri"] = "sqlite:///" + os.path.abspath(tracking.removeprefix("sqlite:///"))
    spec = parse_spec(raw, where)
    spec._source = path.absolute()
    spec._where = where
    spec._yaml_text = text
    return spec


# ---------------------------------------------------------------------- trials
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
            raise _spec_error(where, "variants", f"a trial must name its variant (one of {', '.join(spec.variants)})")
        variant = spec.variants[0]
    for key in sampled:
        problem = _config_key_problem(key)
        if problem:
            raise _spec_error(where, f"search.space.{key}", problem)
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
        raise _spec_error(where, path, message + trial) from None


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
    enumerated space values, as trial-parameter dicts. Drawn keys are absent (see ``search_domains``)."""
    dims: list[tuple[str, list[Any]]] = []
    if spec.search.algorithm != "optuna" or len(spec.variants) == 1 or spec.search.effective_sampler == "grid":
        dims.append(("variant", list(spec.variants)))
    if spec.objective.aggregate == "per_category":
        dims += [("category", spec.categories()), ("seed", list(spec.seeds))]
    dims += [(k, list(spec.search.space[k].values)) for k in enumerated_keys(spec)]
    names = [name for name, _ in dims]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(values for _, values in dims))]


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

    Starts nothing and trains nothing. Synthetic data is not required to exist yet (the runner
    generates it); a ``data.root`` is scanned category by category (``haloae.data.scan_category``
    opens every image, so a bad file fails here and not hours into a sweep).
    """
    where = spec.where()
    for params in _check_points(spec):
        cfg = build_config(spec, params)
        try:
            spec._check_trial_config(cfg, f" (trial: {_describe_trial(params)})")
        except _Problem as exc:
            raise _spec_error(where, ".".join(map(str, exc.path)), exc.message) from None
    if spec.search.effective_sampler == "cmaes":
        import importlib.util

        if importlib.util.find_spec("cmaes") is None:
            raise _spec_error(where, "search.sampler", "cmaes needs the cmaes package (pip install cmaes), or use tpe")
    if spec.data.root is not None:
        root = spec.data_root()
        if not root.is_dir():
            raise _spec_error(where, "data.root", f"{root}: dataset root not found (point it at MVTec AD, e.g. --set data.root=PATH)")
        for category in spec.categories():
            try:
                scan_category(root, category)
            except DatasetError as exc:
                raise _spec_error(where, f"data.categories ({category})", str(exc)) from None
    return trial_grid(spec)
