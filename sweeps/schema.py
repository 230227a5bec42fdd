# SPDX-License-Identifier: Apache-2.0
"""``SweepSpec``, one typed and frozen sweep definition: its sections, the rules between them, and
the values derived from it (folders, tracking URI, Optuna storage, effective epochs).

A sweep *measures* (``purpose: measure``, the default: a table, every cell trained to the same
budget, so no scheduler that stops trials and no drawn configurations) or *searches*
(``purpose: search``: ASHA, random and Optuna allowed). A ``protocol`` section makes it two
stages, screen then confirm (``sweeps.protocol``), whose stage specs are derived from this one.

It is built by ``sweeps.loading`` (``load_spec`` from a YAML file, ``parse_spec`` from a mapping);
its trials are expanded and checked by ``sweeps.trials``.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, PrivateAttr, field_validator, model_validator

from haloae.config import HaloAEConfig
from haloae.dotted import flatten
from haloae.presets import PRESETS, VARIANTS
from haloae.vocab import SWEEP_RAY_DIR
from sweeps.domain import MODEL_CONFIG, config_key_problem
from sweeps.errors import Problem, no_repeats, show, unknown
from sweeps.sections import (
    DataSpec,
    MlflowSpec,
    ObjectiveSpec,
    ProtocolSpec,
    ResourcesSpec,
    SchedulerSpec,
    SearchSpec,
    check_seeds,
)
from sweeps.trials import build_config, trial_grid

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# It names folders, the MLflow experiment and the Optuna study: no path separators, not . or ..
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_uri(path: str) -> bool:
    """``s3://bucket/x``, ``gs://bucket/x`` and other remote locations (Ray storage, MLflow artifacts)."""
    return bool(_URI.match(path))


class SweepSpec(BaseModel):
    """One sweep definition (see the module docstring and ``sweeps/smoke.yaml``)."""

    model_config = MODEL_CONFIG
    name: str
    description: str | None = None
    purpose: Literal["measure", "search"] = "measure"
    data: DataSpec
    preset: str = "paper"
    overrides: dict[str, Any] = Field(default_factory=dict)  # fixed dotted config overrides
    variants: list[str] = Field(default_factory=lambda: ["haloae"])  # haloae.presets.VARIANTS names
    seeds: list[int] = Field(default_factory=lambda: [0])
    search: SearchSpec = Field(default_factory=SearchSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    max_concurrent_trials: int | None = Field(None, ge=1)
    retries: int = Field(0, ge=0)
    storage: str = "runs/sweeps"  # local folder (made absolute by load_spec), s3://..., gs://...
    mlflow: MlflowSpec = Field(default_factory=MlflowSpec)
    protocol: ProtocolSpec | None = None  # screen -> confirm (sweeps.protocol)

    _source: Path | None = PrivateAttr(None)
    _where: str | None = PrivateAttr(None)  # the path as the user gave it, for error messages
    _yaml_text: str = PrivateAttr("")
    _stage: str | None = PrivateAttr(None)  # screen | confirm: a stage derived by sweeps.protocol
    _definition_sha256: str | None = PrivateAttr(None)  # a stage's: the definition it came from

    # ------------------------------------------------------------------ field checks
    @model_validator(mode="before")
    @classmethod
    def _finite_numbers(cls, data: Any) -> Any:
        """inf and nan are never meant (``.inf``, ``1e400``, ``.nan``): refused wherever they are."""
        found = _non_finite(data)
        if found is not None:
            raise Problem(found[0], f"{show(found[1])} is not a finite number")
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(
                f"use letters, digits, _, . and - only, starting with a letter or digit (it names folders, "
                f"the MLflow experiment and the Optuna study); got {show(name)}"
            )
        return name

    @field_validator("preset")
    @classmethod
    def _preset(cls, preset: str) -> str:
        if preset not in PRESETS:
            raise ValueError(unknown("preset", preset, list(PRESETS)))
        return preset

    @field_validator("overrides", mode="before")
    @classmethod
    def _overrides(cls, overrides: Any) -> Any:
        if not isinstance(overrides, dict):
            return overrides  # pydantic reports the type
        flat = flatten(overrides, on_repeat=_given_twice)
        for key in flat:
            problem = config_key_problem(key)
            if problem:
                raise Problem((key,), problem)
        return flat

    @field_validator("variants")
    @classmethod
    def _variants(cls, variants: list[str]) -> list[str]:
        if not variants:
            raise ValueError("needs at least one variant (haloae is the paper's model)")
        for i, name in enumerate(variants):
            if name not in VARIANTS:
                raise Problem((i,), unknown("variant", name, list(VARIANTS)))
        no_repeats(variants)
        return variants

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        return check_seeds(seeds)

    @field_validator("storage")
    @classmethod
    def _storage(cls, storage: str) -> str:
        if not storage.strip():
            raise ValueError("needs a folder or a URI such as s3://bucket/sweeps or gs://bucket/sweeps")
        return storage

    # ------------------------------------------------------------------ rules between sections
    @model_validator(mode="after")
    def _cross_checks(self) -> SweepSpec:
        self._purpose_rules()
        search, objective = self.search, self.objective
        if search.algorithm == "optuna":
            if objective.aggregate != "mean":
                raise Problem(
                    ("objective", "aggregate"),
                    "search.algorithm optuna needs one objective per trial: set objective.aggregate: mean "
                    "(each trial then trains every category and seed and reports their mean)",
                )
            if not search.space and search.alpha is None and len(self.variants) == 1:
                raise Problem(("search",), "optuna has nothing to search: give search.space, search.alpha or several variants")
            points = len(trial_grid(self))
            if search.effective_sampler == "grid" and search.num_samples > points:
                raise Problem(
                    ("search", "num_samples"),
                    f"{search.num_samples} exceeds the {points} points of the optuna grid: the grid sampler would "
                    "repeat them (repeats go in seeds)",
                )
        if not self.local_storage():
            if self.data.synthetic is not None:
                raise Problem(("data", "synthetic"), "generated data is written under storage: use a local storage folder, or data.root")
            if self.mlflow.tracking_uri is None:
                raise Problem(("mlflow", "tracking_uri"), f"required when storage is remote ({self.storage}): sqlite needs a local file")
            if search.algorithm == "optuna" and search.storage is None:
                raise Problem(("search", "storage"), f"required when storage is remote ({self.storage}): an RDB URL for the Optuna study")
        # the first trial of every variant must build: catches bad overrides and variant clashes early
        for variant in self.variants:
            self.check_trial_config(self.first_config(variant))
        if self.protocol is not None:
            self._check_asha(self.protocol.screen.scheduler, ("protocol", "screen", "scheduler"))
            self._protocol_rules(self.protocol)
        else:
            self._check_asha(self.scheduler, ("scheduler",))
        if search.points is not None:
            self._check_points(search.points)
        return self

    def _purpose_rules(self) -> None:
        """A measuring sweep trains every cell of its grid to the same budget."""
        if self.purpose != "measure":
            return
        if self.protocol is not None:
            raise Problem(("purpose",), "the two-stage protocol searches before it measures: set purpose: search "
                          "(its confirm stage measures)")
        if self.scheduler.type != "fifo":
            raise Problem(("scheduler", "type"), f"{self.scheduler.type} stops trials early, so a measuring sweep "
                          "(purpose: measure) would lose table cells; use fifo, purpose: search, or a protocol")
        if self.search.algorithm != "grid":
            raise Problem(("search", "algorithm"), f"{self.search.algorithm} draws configurations, but a measuring sweep "
                          "(purpose: measure) is a grid over variants x categories x seeds; use grid, or purpose: search")

    def _check_asha(self, scheduler: SchedulerSpec, path: tuple[str, ...]) -> None:
        if scheduler.type != "asha":
            return
        max_t = self.max_t(scheduler)
        if scheduler.grace_period > max_t:
            raise Problem((*path, "grace_period"), f"{scheduler.grace_period} exceeds max_t={max_t}")
        if scheduler.max_t is not None and scheduler.max_t > self.epochs():
            raise Problem(
                (*path, "max_t"), f"{scheduler.max_t} exceeds train.epochs={self.epochs()} (trials report once per epoch)"
            )

    def _protocol_rules(self, protocol: ProtocolSpec) -> None:
        for given in ("scheduler", "seeds"):
            if given in self.model_fields_set:
                raise Problem((given,), f"with a protocol, each stage has its own: set protocol.screen.{given} "
                              f"(and protocol.confirm.seeds)")
        if self.search.algorithm != "grid":
            raise Problem(("search", "algorithm"), f"the protocol screens a grid (the confirm stage re-runs its points); "
                          f"got {self.search.algorithm}")
        if protocol.confirm.select == "per_category" and self.objective.aggregate == "mean":
            raise Problem(("protocol", "confirm", "select"), "per_category needs objective.aggregate: per_category "
                          "(with mean a screen trial scores every category together)")
        configurations = self.configurations()
        if protocol.confirm.top_k > len(configurations):
            raise Problem(("protocol", "confirm", "top_k"), f"{protocol.confirm.top_k} exceeds the {len(configurations)} "
                          "configurations of the grid: nothing would be screened out")

    def _check_points(self, points: list[dict[str, Any]]) -> None:
        known = {"variant": self.variants, "category": self.categories()}
        for i, point in enumerate(points):
            if "category" in point and self.objective.aggregate == "mean":
                raise Problem(("search", "points", i, "category"), "only with objective.aggregate: per_category")
            if "variant" not in point and len(self.variants) > 1:
                raise Problem(("search", "points", i), "fixes no variant")
            for key, values in known.items():
                if key in point and point[key] not in values:
                    raise Problem(("search", "points", i, key), unknown(key, point[key], values))

    def configurations(self) -> list[dict[str, Any]]:
        """The grid's distinct configurations: its trial parameters without category and seed."""
        found: dict[str, dict[str, Any]] = {}
        for row in trial_grid(self):
            config = {k: v for k, v in row.items() if k not in ("category", "seed")}
            found.setdefault(repr(sorted(config.items())), config)
        return list(found.values())

    def first_config(self, variant: str | None = None) -> HaloAEConfig:
        """The config of a variant's first trial (first value / low bound of every domain)."""
        first = {key: domain.values[0] for key, domain in self.search.space.items()}
        return build_config(self, {"variant": variant or self.variants[0], "seed": self.seeds[0], **first})

    def check_trial_config(self, cfg: HaloAEConfig, trial: str = "") -> None:
        """Rules between the objective / alpha search and one trial's configuration (``Problem`` if broken)."""
        scoring = self.objective.scoring()
        if scoring is not None and scoring not in scorings_for(cfg):
            raise Problem(
                ("objective", "metric"),
                f"variant {cfg.variant} does not report {self.objective.metric} (no {scoring} scoring: it has "
                f"{', '.join(scorings_for(cfg))}){trial}",
            )
        if self.search.alpha is not None and cfg.loss.weighting != "adaptive_logistic":
            raise Problem(
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
        """Of the canonical YAML; a protocol stage's is its definition's (they share one parent run)."""
        return self._definition_sha256 or hashlib.sha256(self.canonical_yaml().encode()).hexdigest()

    def as_stage(self, definition: SweepSpec, stage: str) -> SweepSpec:
        """This spec, derived from ``definition`` by ``sweeps.protocol``, marked as its ``stage``: it
        keeps the definition's file, text and sha256 (one parent run) and has its own Tune folder."""
        self._source, self._where, self._yaml_text = definition.source, definition.where(), definition.yaml_text
        self._stage, self._definition_sha256 = stage, definition.sha256()
        return self

    @property
    def stage(self) -> str | None:
        """``screen`` or ``confirm`` for a stage derived by ``sweeps.protocol``; None otherwise."""
        return self._stage

    def tune_dir_name(self) -> str:
        """Tune's experiment folder under the sweep folder (what --resume restores): one per stage."""
        return SWEEP_RAY_DIR if self._stage is None else f"{SWEEP_RAY_DIR}-{self._stage}"

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

    def max_t(self, scheduler: SchedulerSpec | None = None) -> int:
        """ASHA's max_t (of ``scheduler``, default the sweep's): given, or the most epochs any trial trains."""
        scheduler = scheduler or self.scheduler
        if scheduler.max_t is not None:
            return scheduler.max_t
        searched = self.search.space.get("train.epochs")
        return int(max(searched.values)) if searched is not None else self.epochs()

    def runs_per_trial(self) -> int:
        """Training runs inside one trial: categories x seeds with aggregate mean, else 1."""
        return len(self.categories()) * len(self.seeds) if self.objective.aggregate == "mean" else 1


def scorings_for(cfg: HaloAEConfig) -> tuple[str, ...]:
    """The Table S1 scorings a configuration's model reports, as ``haloae.scoring.available_scorings``
    derives them from its output: image AEs have only im_hat; others have fm and fm_hat, plus
    im_hat with the image decoder and logits with the classifier."""
    return cfg.scorings


def _given_twice(key: str) -> None:
    raise Problem((key,), "given twice (dotted and nested)")


def _non_finite(data: Any) -> tuple[list[str | int], float] | None:
    """(path, value) of the first inf or nan in nested mappings and lists, or None (iterative: any depth)."""
    stack: list[tuple[list[str | int], Any]] = [([], data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return path, value
        if isinstance(value, dict):
            stack += [([*path, str(k)], v) for k, v in reversed(value.items())]
        elif isinstance(value, (list, tuple)):
            stack += [([*path, i], v) for i, v in reversed(list(enumerate(value)))]
    return None
