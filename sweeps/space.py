# SPDX-License-Identifier: Apache-2.0
"""A sweep definition as a searcher's space: Ray Tune's ``param_space`` or Optuna's define-by-run.

Trial parameters keep the names of the definition everywhere: ``variant``, ``category``, ``seed``
and dotted config keys (``model.block_size``, ``loss.alpha.cls.c``); ``sweeps.trials.build_config``
turns one trial's parameters back into its ``HaloAEConfig``.

- grid / random: ``tune_param_space`` (grid and, for grid search, choice domains as
  ``tune.grid_search``; the others as Tune's sampling domains).
- optuna: ``optuna_define_by_run`` and ``optuna_sampler``. Ray's ``OptunaSearch`` refuses
  ``tune.grid_search`` and lets a define-by-run function return only constants, so everything
  searched is suggested there and ``tune_param_space`` is empty; grids go through Optuna's
  ``GridSampler``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna

from sweeps.domain import Domain
from sweeps.schema import SweepSpec
from sweeps.trials import encode_choice, enumerated_keys, search_domains


def tune_param_space(spec: SweepSpec) -> dict[str, Any]:
    """Ray Tune ``param_space`` for grid and random search ({} for optuna: see the module doc).

    ``variant`` (and ``category`` and ``seed`` with aggregate per_category) are grid dimensions,
    constants when they have one value; with aggregate mean a trial runs every category and
    seed itself.
    """
    from ray import tune

    if spec.search.algorithm == "optuna":
        return {}

    def grid(values: list[Any]) -> Any:
        return tune.grid_search(values) if len(values) > 1 else values[0]

    space: dict[str, Any] = {"variant": grid(list(spec.variants))}
    if spec.objective.aggregate == "per_category":
        space["category"] = grid(spec.categories())
        space["seed"] = grid(list(spec.seeds))
    enumerated = enumerated_keys(spec)
    for key, domain in spec.search.space.items():
        if key in enumerated:
            space[key] = tune.grid_search(list(domain.values))
        elif domain.kind == "choice":
            space[key] = tune.choice(list(domain.values))
        elif domain.kind == "uniform":
            space[key] = tune.uniform(domain.low, domain.high)
        elif domain.kind == "loguniform":
            space[key] = tune.loguniform(domain.low, domain.high)
        else:  # int: inclusive bounds; randint excludes its upper bound
            space[key] = tune.randint(domain.low, domain.high + 1)
    return space


class DefineByRun:
    """Optuna define-by-run space of a sweep: only ``trial.suggest_*`` calls, no computation.

    A module-level class, not a closure: Ray's ``OptunaSearch.save`` pickles it with the
    searcher state, and ``Tuner.restore`` needs it back.
    """

    def __init__(self, domains: dict[str, Domain], constants: dict[str, Any]) -> None:
        self.domains = dict(domains)
        self.constants = dict(constants)

    def __call__(self, trial: optuna.trial.Trial) -> dict[str, Any] | None:
        for name, domain in self.domains.items():
            if domain.discrete:
                trial.suggest_categorical(name, [encode_choice(v) for v in domain.values])
            elif domain.kind == "int":
                trial.suggest_int(name, domain.low, domain.high)
            else:
                trial.suggest_float(name, domain.low, domain.high, log=domain.kind == "loguniform")
        return dict(self.constants) or None

    def __repr__(self) -> str:
        return f"DefineByRun({', '.join(self.domains)}; constants {self.constants})"


def optuna_define_by_run(spec: SweepSpec) -> DefineByRun:
    """The space's dotted keys, the alpha terms (``loss.alpha.<term>.<a|b|c|d>``) and, with several
    variants, ``variant`` as suggestions; a single variant is returned as a constant."""
    constants = {"variant": spec.variants[0]} if len(spec.variants) == 1 else {}
    return DefineByRun(search_domains(spec), constants)


class TuneGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its ``study.stop()`` once the grid is done: that call raises
    outside ``study.optimize``, which is where Ray's ``OptunaSearch`` tells results. Ray stops
    after ``search.num_samples`` trials, which ``load_spec`` keeps within the grid."""

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        pass


def optuna_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    """TPE, CMA-ES or grid sampler seeded by ``search.seed`` (grid: over every discrete domain and
    the variants; a spec with continuous domains cannot get here, ``load_spec`` refuses it)."""
    sampler, seed = spec.search.effective_sampler, spec.search.seed
    if sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if sampler == "grid":
        grid = {name: [encode_choice(v) for v in d.values] for name, d in search_domains(spec).items()}
        return TuneGridSampler(grid, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def study_name(spec: SweepSpec) -> str:
    """One study per sweep: Ray's default name ("optuna", load_if_exists) would warm-start new
    sweeps from old ones."""
    return spec.name
