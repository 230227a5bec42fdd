# SPDX-License-Identifier: Apache-2.0
"""The two-stage protocol of a sweep with a ``protocol`` section: screen, then confirm, as one run.

    screen    the definition's grid, every configuration on ``protocol.screen.seeds``, under
              ``protocol.screen.scheduler`` (ASHA by default): a search
    confirm   the ``top_k`` configurations of the screen stage by the validation objective, per
              category or overall (``protocol.confirm.select``), each re-run on every category with
              every ``protocol.confirm.seeds`` to the full epochs under FIFO: a measurement, the table

(Bouthillier et al. 2021, "Accounting for variance in machine learning benchmarks".) Each stage
is a ``SweepSpec`` derived from the definition and run by ``sweeps.runner.run_sweep``: its own
Tune experiment (``<sweep_dir>/ray-screen``, ``ray-confirm``), so ``--resume`` continues whichever
stage was interrupted; both share the sweep's MLflow parent run, and their child runs carry the tag
``haloae.stage``. The chosen configurations are logged on the parent as ``protocol/confirm.json``.
The test split never takes part in the choice.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from haloae.vocab import STAGE_CONFIRM, STAGE_SCREEN
from sweeps.loading import parse_spec
from sweeps.runner import SweepOutcome
from sweeps.schema import SweepSpec
from sweeps.sections import ProtocolSpec
from sweeps.trials import encode_choice

CONFIRMED_ARTIFACT = "protocol/confirm.json"  # on the parent run: what the confirm stage re-ran and why


def _protocol(spec: SweepSpec) -> ProtocolSpec:
    if spec.protocol is None:
        raise ValueError(f"{spec.where()}: has no protocol section")
    return spec.protocol


def _derive(spec: SweepSpec, stage: str, changes: dict[str, Any]) -> SweepSpec:
    """A stage of ``spec``: its fields with ``changes``, validated like a definition."""
    raw = {**spec.model_dump(), "protocol": None, **changes}
    return parse_spec(raw, spec.where()).as_stage(spec, stage)


def screen_spec(spec: SweepSpec) -> SweepSpec:
    """The screen stage: the whole grid, a search on the screen's seeds and scheduler."""
    screen = _protocol(spec).screen
    return _derive(spec, STAGE_SCREEN, {"purpose": "search", "scheduler": screen.scheduler.model_dump(), "seeds": screen.seeds})


def confirm_spec(spec: SweepSpec, points: list[dict[str, Any]]) -> SweepSpec:
    """The confirm stage: a measuring grid of just ``points`` (configurations, optionally with their
    category) x every category they leave open x the confirm seeds, FIFO, one cell per trial.

    Values that are lists (tuple config keys) travel as their JSON text, as Optuna's do: Tune
    cannot pre-set a list-valued parameter (``sweeps.trials.build_config`` decodes them)."""
    search = spec.search.model_dump()
    search["space"] = {key: {d.kind: [encode_choice(v) for v in d.values]} for key, d in spec.search.space.items()}
    search["points"] = [{k: encode_choice(v) for k, v in point.items()} for point in points]
    search["num_samples"] = 1
    return _derive(spec, STAGE_CONFIRM, {
        "purpose": "measure",
        "scheduler": {"type": "fifo"},
        "seeds": _protocol(spec).confirm.seeds,
        "objective": {**spec.objective.model_dump(), "aggregate": "per_category"},
        "search": search,
    })  # fmt: skip


def _key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def choose(spec: SweepSpec, screen: SweepOutcome) -> list[dict[str, Any]]:
    """The confirm stage's points: per category (with that category) or overall, the ``top_k``
    configurations of the screen stage by the validation objective ``objective.metric``.

    A configuration's trials that ASHA let train more epochs rank first (they won their rungs;
    a stopped trial's objective is from an earlier epoch), then by the objective, each averaged
    over the configuration's trials (categories and seeds); ties keep the grid's order. Failed
    trials and trials without an objective are no candidates."""
    protocol, metric = _protocol(spec), spec.objective.metric
    sign = 1 if spec.objective.mode == "max" else -1
    order = {_key(c): i for i, c in enumerate(spec.configurations())}
    # scope (a category, or None overall) -> configuration key -> (configuration, [(epoch, objective)])
    scopes: dict[str | None, dict[str, tuple[dict[str, Any], list[tuple[float, float]]]]] = {}
    for trial in screen.trials:
        value = trial.metrics.get(metric)
        if trial.status == "ERROR" or value is None or math.isnan(value):
            continue
        config = {k: v for k, v in trial.params.items() if k not in ("category", "seed")}
        scope = trial.params["category"] if protocol.confirm.select == "per_category" else None
        entry = scopes.setdefault(scope, {}).setdefault(_key(config), (config, []))
        entry[1].append((float(trial.metrics.get("epoch", 0)), float(value)))

    def rank(item: tuple[str, tuple[dict[str, Any], list[tuple[float, float]]]]) -> tuple[float, float, int]:
        key, (_, scores) = item
        epochs, values = zip(*scores, strict=True)
        return -sum(epochs) / len(epochs), -sign * sum(values) / len(values), order.get(key, len(order))

    categories = spec.categories()
    points = []
    for scope in sorted(scopes, key=lambda c: categories.index(c) if c is not None else -1):
        for _, (config, _) in sorted(scopes[scope].items(), key=rank)[: protocol.confirm.top_k]:
            points.append(config if scope is None else {**config, "category": scope})
    return points


def planned_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Stand-ins for the dry run, before any screening: the grid's first ``top_k`` configurations
    (per category with ``select: per_category``)."""
    protocol = _protocol(spec)
    first = spec.configurations()[: protocol.confirm.top_k]
    if protocol.confirm.select == "overall":
        return first
    return [{**config, "category": category} for category in spec.categories() for config in first]


def dry_run_stages(spec: SweepSpec) -> list[tuple[str, SweepSpec]]:
    """(heading, stage spec) of each stage the dry run lists, costs and validates; without a
    protocol the definition itself, with no heading."""
    if spec.protocol is None:
        return [("", spec)]
    screen, confirm = spec.protocol.screen, spec.protocol.confirm
    scope = "per category" if confirm.select == "per_category" else "overall"
    return [
        (f"stage 1 of 2, screen: every configuration on seeds {screen.seeds}, scheduler {screen.scheduler.type}",
         screen_spec(spec)),
        (f"stage 2 of 2, confirm: the top {confirm.top_k} configurations {scope} by {spec.objective.metric} "
         f"(validation), every category, seeds {confirm.seeds}, fifo to {spec.epochs()} epochs "
         f"(listed and costed here at the grid's first {confirm.top_k})",
         confirm_spec(spec, planned_points(spec))),
    ]  # fmt: skip


@dataclass
class ProtocolOutcome:
    screen: SweepOutcome
    chosen: list[dict[str, Any]]  # the confirm stage's points
    confirm: SweepOutcome | None  # None when the screen stage left no candidate

    @property
    def failed(self) -> list:
        return self.screen.failed + (self.confirm.failed if self.confirm is not None else [])

    def summary(self) -> str:
        lines = ["stage 1 of 2, screen:", self.screen.summary()]
        if self.confirm is None:
            lines.append("stage 2 of 2, confirm: not run: no screen trial reported the objective")
            return "\n".join(lines)
        lines.append(f"stage 2 of 2, confirm: {len(self.chosen)} configuration(s) re-run to the full budget:")
        lines += [f"  {', '.join(f'{k}={v}' for k, v in point.items())}" for point in self.chosen]
        lines.append(self.confirm.summary())
        return "\n".join(lines)


def run_protocol(spec: SweepSpec, resume: bool = False, address: str | None = None) -> ProtocolOutcome:
    """Screen, choose, confirm (see the module docstring); ``resume`` continues either stage."""
    from sweeps import tracking
    from sweeps.runner import run_sweep

    screen = run_sweep(screen_spec(spec), resume=resume, address=address)
    chosen = choose(spec, screen)
    if not chosen:
        return ProtocolOutcome(screen, [], None)
    record = {"select": _protocol(spec).confirm.select, "top_k": _protocol(spec).confirm.top_k,
              "objective": spec.objective.metric, "points": chosen}  # fmt: skip
    tracking.client(spec.tracking_uri()).log_dict(screen.parent_run_id, record, CONFIRMED_ARTIFACT)
    confirm = run_sweep(confirm_spec(spec, chosen), resume=resume, address=address)
    return ProtocolOutcome(screen, chosen, confirm)
