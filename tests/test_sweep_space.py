# SPDX-License-Identifier: Apache-2.0
"""Search spaces: the Ray Tune param_space objects (Ray is imported, never started) and the Optuna
define-by-run space and samplers on real in-memory studies."""

import pickle
from pathlib import Path

import optuna
import pytest
from ray import tune
from ray.tune.search.sample import Categorical, Float, Integer

from sweeps.loading import load_spec, parse_spec
from sweeps.space import DefineByRun, optuna_define_by_run, optuna_sampler, study_name, tune_param_space
from sweeps.trials import build_config

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def spec_of(**fields):
    raw = {"name": "s", "data": {"synthetic": {"categories": ["synth_disc", "synth_brick"]}}, "preset": "tiny",
           "purpose": "search", **fields}
    return parse_spec(raw)


SPACE = {
    "model.block_size": {"grid": [1, 2, 3]},
    "model.halo_size": {"choice": [0, 1]},
    "optim.lr": {"loguniform": [1e-4, 1e-2]},
    "optim.weight_decay": {"uniform": [0.0, 0.1]},
    "model.dim_head": {"int": [4, 8]},
}


# ---------------------------------------------------------------------- Ray Tune
def test_smoke_param_space():
    space = tune_param_space(load_spec(SWEEPS / "smoke.yaml"))
    assert space == {
        "variant": tune.grid_search(["attention_halo", "attention_none"]),
        "category": tune.grid_search(["synth_disc", "synth_brick"]),
        "seed": tune.grid_search([0, 1, 2]),
    }


def test_random_param_space_objects():
    space = tune_param_space(spec_of(variants=["haloae"], seeds=[0, 1], search={"algorithm": "random", "space": SPACE}))
    assert space["variant"] == "haloae" and space["seed"] == tune.grid_search([0, 1])
    assert space["model.block_size"] == tune.grid_search([1, 2, 3])  # grid stays a grid
    assert isinstance(space["model.halo_size"], Categorical) and space["model.halo_size"].categories == [0, 1]
    lr = space["optim.lr"]
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (1e-4, 1e-2)
    assert type(lr.get_sampler()) is type(tune.loguniform(1e-4, 1e-2).get_sampler())
    wd = space["optim.weight_decay"]
    assert isinstance(wd, Float) and (wd.lower, wd.upper) == (0.0, 0.1)
    assert type(wd.get_sampler()) is type(tune.uniform(0.0, 0.1).get_sampler())
    assert type(wd.get_sampler()) is not type(lr.get_sampler())
    heads = space["model.dim_head"]
    assert isinstance(heads, Integer) and (heads.lower, heads.upper) == (4, 9)  # inclusive 8: randint(4, 9)


def test_grid_search_enumerates_choice_and_lists():
    spec = spec_of(search={"space": {"model.halo_size": {"choice": [0, 1]}, "model.encoder_kernels": {"grid": [[3, 3], [5, 5]]}}})
    space = tune_param_space(spec)
    assert space["model.halo_size"] == tune.grid_search([0, 1])  # grid search is exhaustive
    assert space["model.encoder_kernels"] == tune.grid_search([[3, 3], [5, 5]])
    cfg = build_config(spec, {"variant": "haloae", "model.encoder_kernels": [5, 5]})
    assert cfg.model.encoder_kernels == (5, 5)


def test_mean_aggregate_and_optuna_param_spaces():
    mean = tune_param_space(spec_of(objective={"aggregate": "mean"}))
    assert set(mean) == {"variant"}  # a trial runs every category and seed itself
    optuna_spec = spec_of(objective={"aggregate": "mean"}, search={"algorithm": "optuna", "space": SPACE})
    assert tune_param_space(optuna_spec) == {}  # OptunaSearch owns the space


# ---------------------------------------------------------------------- Optuna
def test_alpha_define_by_run_on_a_real_study():
    spec = load_spec(SWEEPS / "alpha_optuna.yaml")
    define = optuna_define_by_run(spec)
    study = optuna.create_study(direction="maximize", sampler=optuna_sampler(spec), study_name=study_name(spec))
    assert study.study_name == "alpha_optuna"
    trial = study.ask()
    constants = define(trial)
    assert constants == {"variant": "haloae"}  # one variant: a constant, not a suggestion
    expected = [f"loss.alpha.{t}.{p}" for t in ("cls", "fm", "im") for p in "abcd"]
    assert list(trial.params) == expected
    epochs = spec.epochs()
    for term in ("cls", "fm", "im"):
        d = trial.distributions[f"loss.alpha.{term}.d"]
        assert d.log and (d.low, d.high) == pytest.approx((5 / epochs, 30 / epochs))
        c = trial.distributions[f"loss.alpha.{term}.c"]
        assert not c.log and (c.low, c.high) == pytest.approx((0.2 * epochs, 1.4 * epochs))
    cfg = build_config(spec, {**trial.params, **constants})
    assert cfg.loss.alpha.fm.c == trial.params["loss.alpha.fm.c"]
    study.tell(trial, 0.5)


def test_define_by_run_suggests_every_kind():
    spec = spec_of(
        variants=["haloae", "attention_none"], objective={"aggregate": "mean"},
        search={"algorithm": "optuna", "space": SPACE, "alpha": {"mode": "midpoint_slope", "terms": ["im"]}},
    )  # fmt: skip
    define = optuna_define_by_run(spec)
    trial = optuna.create_study(sampler=optuna_sampler(spec)).ask()
    assert define(trial) is None  # several variants: variant is suggested
    assert list(trial.params) == ["variant", *SPACE, "loss.alpha.im.c", "loss.alpha.im.d"]
    dist = trial.distributions
    assert isinstance(dist["variant"], optuna.distributions.CategoricalDistribution)
    assert dist["model.block_size"].choices == (1, 2, 3) and dist["model.halo_size"].choices == (0, 1)
    assert isinstance(dist["optim.lr"], optuna.distributions.FloatDistribution) and dist["optim.lr"].log
    assert isinstance(dist["optim.weight_decay"], optuna.distributions.FloatDistribution) and not dist["optim.weight_decay"].log
    assert isinstance(dist["model.dim_head"], optuna.distributions.IntDistribution)
    assert (dist["model.dim_head"].low, dist["model.dim_head"].high) == (4, 8)
    assert build_config(spec, trial.params).variant == trial.params["variant"]
    again = pickle.loads(pickle.dumps(define))  # OptunaSearch.save pickles it
    assert isinstance(again, DefineByRun) and again.domains == define.domains


def test_same_seed_same_draws():
    spec = spec_of(objective={"aggregate": "mean"}, search={"algorithm": "optuna", "seed": 3, "space": SPACE})
    draws = []
    for _ in range(2):
        study = optuna.create_study(sampler=optuna_sampler(spec))
        trial = study.ask()
        optuna_define_by_run(spec)(trial)
        draws.append(trial.params)
    assert draws[0] == draws[1]
    assert isinstance(optuna_sampler(spec), optuna.samplers.TPESampler)
    cmaes = spec_of(objective={"aggregate": "mean"}, search={"algorithm": "optuna", "sampler": "cmaes", "space": SPACE})
    assert isinstance(optuna_sampler(cmaes), optuna.samplers.CmaEsSampler)


def test_grid_sampler_visits_every_point_once():
    spec = spec_of(
        variants=["haloae", "attention_none"], objective={"aggregate": "mean"},
        search={"algorithm": "optuna", "sampler": "grid", "num_samples": 8,
                "space": {"model.encoder_kernels": {"grid": [[3, 3], [5, 5]]}, "model.block_size": {"choice": [1, 2]}}},
    )  # fmt: skip
    study = optuna.create_study(sampler=optuna_sampler(spec))
    define = optuna_define_by_run(spec)
    seen = set()
    for _ in range(8):
        trial = study.ask()
        assert define(trial) is None
        cfg = build_config(spec, trial.params)  # lists travel through Optuna as their JSON text
        seen.add((cfg.variant, cfg.model.encoder_kernels, cfg.model.block_size))
        study.tell(trial, 0.5)  # outside study.optimize, as Ray's OptunaSearch tells: must not raise
    assert len(seen) == 8
