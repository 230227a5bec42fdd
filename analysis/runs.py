# SPDX-License-Identifier: Apache-2.0
"""A sweep's MLflow runs as one tidy pandas DataFrame: a row per trial x category x seed.

The sweep layer leaves (see ``sweeps``): one parent run tagged ``sweep=<name>``,
``haloae.role=parent``; one child run per (trial, category, seed) tagged ``sweep``, ``trial_id``,
``category``, ``variant``, ``seed``, ``haloae.role=trial`` (``error`` on failure), with the
flattened config as params, per-epoch metrics (step = epoch) and the final ``val/*`` and
``test/*`` metrics of the best checkpoint (step = ``best_epoch``).

``load_runs`` returns every child run, whatever its status; only FINISHED runs enter aggregates
(``finished``), and ``describe`` says how many were left out and why, so a failed trial is
reported rather than silently missing from a table. A run the scheduler stopped early is FINISHED
once ``sweeps.stopped`` has evaluated its best checkpoint; its ``stopped_at_epoch`` column says
after how many epochs (tag ``haloae.stopped_at_epoch``), so tables count it and mark it.

A two-stage sweep (``sweeps.protocol``) tags its runs ``haloae.stage``: screen | confirm. By
default the frame holds the confirm stage only (the measurement: every cell to the full budget on
every seed); ``stage="screen"`` or ``"all"`` asks for the search stage too (``select_stage``).

Where the tracking store is: ``tracking_uri`` if given, else ``<storage>/<sweep>/mlflow.db`` if
``storage`` is given, else ``$MLFLOW_TRACKING_URI``, else ``runs/sweeps/<sweep>/mlflow.db``
(explicit arguments beat the environment, which beats the default).
"""

from __future__ import annotations

import ast
import os
import re
import warnings
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

from haloae.dotted import hint
from haloae.errors import InputError
from haloae.vocab import (
    CURVE_PREFIX,
    DEFAULT_OBJECTIVE,
    DEFAULT_STORAGE,
    ENV_TRACKING_URI,
    ROLE_PARENT,
    ROLE_TRIAL,
    STAGE_CONFIRM,
    STAGE_SCREEN,
    TAG_CATEGORY,
    TAG_DATA_ROOT,
    TAG_ERROR,
    TAG_ROLE,
    TAG_SEED,
    TAG_STAGE,
    TAG_STOPPED_AT,
    TAG_SWEEP,
    TAG_TRIAL_ID,
    TAG_VARIANT,
    TAG_VARIED,
    TEST,
    TRACKING_DB_FILE,
    VAL,
    split_of,
)

FINISHED = "FINISHED"
GROUPS = ("texture", "object", "other")  # table order
# Columns that identify a row but are never "knobs" of a configuration.
STAGE = "stage"  # column: the run's haloae.stage ("" outside a two-stage sweep)
STOPPED_AT = "stopped_at_epoch"  # column: epochs trained by a run the scheduler stopped (None: it was not)
ID_COLUMNS = ("run_id", TAG_TRIAL_ID, TAG_CATEGORY, "group", TAG_VARIANT, TAG_SEED, "status", TAG_ERROR, STAGE, STOPPED_AT)
STAGES = ("auto", STAGE_SCREEN, STAGE_CONFIRM, "all")  # auto: confirm when the sweep has stages, else every run
NOT_KNOBS = {TAG_CATEGORY, TAG_SEED, "train.seed", TAG_DATA_ROOT}

# A run frame is a plain DataFrame; ``frame.attrs`` carries: sweep, tracking_uri, parent_run_id,
# varied (the knob columns, in order) and summary (one line: counts by status).
RunsFrame = pd.DataFrame


class RunsWarning(UserWarning):
    """Some runs of a sweep are not FINISHED: they are kept in the frame but left out of aggregates."""


class SweepQueryError(InputError):
    """An analysis query names something the tracking store does not have (sweep, category, metric)."""


# ---------------------------------------------------------------------- where the runs are
def resolve_tracking_uri(sweep: str, tracking_uri: str | None = None, storage: str | Path | None = None) -> str:
    """The tracking URI of a sweep; a missing local store is a one-line error listing the sweeps found."""
    if tracking_uri:
        return tracking_uri
    if storage is None and os.environ.get(ENV_TRACKING_URI):
        return os.environ[ENV_TRACKING_URI]
    root = Path(storage if storage is not None else DEFAULT_STORAGE)
    db = root / sweep / TRACKING_DB_FILE
    if not db.is_file():
        found = sorted(p.parent.name for p in root.glob(f"*/{TRACKING_DB_FILE}")) if root.is_dir() else []
        raise SweepQueryError(
            f"unknown sweep {sweep!r}: {hint(sweep, found)}no {db}; sweeps under {root}: {', '.join(found) or 'none'} "
            f"(or pass --tracking-uri / set {ENV_TRACKING_URI})"
        )
    return f"sqlite:///{db.resolve()}"


def client_for(tracking_uri: str):
    """An ``MlflowClient`` on an existing store (a missing sqlite file is an error, not a new store)."""
    from mlflow import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise SweepQueryError(f"{tracking_uri}: no MLflow store at {path}")
    return MlflowClient(tracking_uri=tracking_uri)


def _check_name(sweep: str) -> str:
    # the name goes into an MLflow filter string: keep it to characters that need no quoting
    if not re.fullmatch(r"[\w.\-]+", sweep):
        raise SweepQueryError(f"sweep name {sweep!r}: only letters, digits, '_', '.', '-' are allowed")
    return sweep


def _search(client, experiment_ids: list[str], filter_string: str) -> list:
    """Every matching active run, following MLflow's pagination."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _role_filter(sweep: str, role: str) -> str:
    return f"tags.`{TAG_SWEEP}` = '{_check_name(sweep)}' and tags.`{TAG_ROLE}` = '{role}'"


def _all_experiment_ids(client) -> list[str]:
    return [e.experiment_id for e in client.search_experiments()]


def sweeps_in(client) -> list[str]:
    """Names of the sweeps with a parent run in this tracking store."""
    parents = _search(client, _all_experiment_ids(client), f"tags.`{TAG_ROLE}` = '{ROLE_PARENT}'")
    return sorted({r.data.tags.get(TAG_SWEEP, "") for r in parents} - {""})


def find_parent(client, sweep: str):
    """The sweep's parent run (the newest if the name was reused) or None."""
    parents = _search(client, _all_experiment_ids(client), _role_filter(sweep, ROLE_PARENT))
    return max(parents, key=lambda r: r.info.start_time or 0) if parents else None


# ---------------------------------------------------------------------- params typed back
def category_group(category: str) -> str:
    """texture | object | other: MVTec's grouping, then ``haloae.synth``'s for synthetic categories."""
    from haloae.categories import OBJECTS, SYNTH_OBJECTS, SYNTH_TEXTURES, TEXTURES

    if category in TEXTURES or category in SYNTH_TEXTURES:
        return "texture"
    if category in OBJECTS or category in SYNTH_OBJECTS:
        return "object"
    return "other"


def category_order(categories: Iterable[str]) -> list[str]:
    """Textures, then objects, then others; MVTec's order first, then synthetic, then by name."""
    from haloae.categories import CATEGORIES, SYNTH_CATEGORIES

    known = list(CATEGORIES) + list(SYNTH_CATEGORIES)

    def key(c: str) -> tuple[int, int, str]:
        return GROUPS.index(category_group(c)), known.index(c) if c in known else len(known), c

    return sorted(set(categories), key=key)


def _literal(text: str) -> Any:
    """An MLflow param string back to the Python value ``str()`` made it from ("7", "(1, 2)", "True")."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def config_from_params(params: dict[str, str]):
    """The ``HaloAEConfig`` a run's params (its flattened config, as strings) describe."""
    from haloae.config import HaloAEConfig, config_keys

    keys = config_keys()
    return HaloAEConfig.from_dict({k: _literal(v) for k, v in params.items() if k in keys})


@cache
def _typed_params(items: frozenset[tuple[str, str]]) -> dict[str, Any]:
    """Params with the config's types (tuples stay tuples, ints ints) when they form a valid
    config, else literal-parsed key by key."""
    literal = {k: _literal(v) for k, v in items}
    try:
        cfg = config_from_params(dict(items))
    except (ValueError, TypeError):  # partial or foreign params: keep the literal values
        return literal
    return {**literal, **cfg.flatten()}


def run_config(client, run_id: str):
    """The ``HaloAEConfig`` of a run, from its params."""
    try:
        return config_from_params(client.get_run(run_id).data.params)
    except (ValueError, TypeError) as exc:
        raise SweepQueryError(f"run {run_id}: its params do not form a valid config ({' '.join(str(exc).split())})") from exc


# ---------------------------------------------------------------------- final metrics
def _headline(key: str) -> bool:
    """``val/<metric>`` and ``val/<scoring>/<metric>``: what tables and export read (not per defect)."""
    return key.startswith(f"{VAL}/") and key.count("/") <= 2


def _values_at_best_epoch(client, run_id: str, metrics: dict[str, float]) -> dict[str, float]:
    """Corrections to MLflow's latest ``val/*`` values, for stores of older sweeps.

    Today a run logs its epochs' validation as ``curve/val/*`` and ``val/*`` once, for the best
    checkpoint: latest = best, nothing to read (no query). Older runs logged ``val/*`` every epoch
    *and* once more at step ``best_epoch``, so their latest value is the last epoch's: one history
    query tells whether the last epoch is the best one; only otherwise are the headline val keys'
    histories read for the best epoch's values.
    """
    best = metrics.get("best_epoch")
    keys = sorted(k for k in metrics if _headline(k))
    if best is None or not keys or any(k.startswith(CURVE_PREFIX) for k in metrics):
        return {}
    probe = DEFAULT_OBJECTIVE if DEFAULT_OBJECTIVE in keys else keys[0]
    probed = client.get_metric_history(run_id, probe)
    if probed and max(m.step for m in probed) == int(best):
        return {}
    fixed = {}
    for key in keys:
        history = probed if key == probe else client.get_metric_history(run_id, key)
        at_best = [m for m in history if m.step == int(best)]
        if at_best:
            fixed[key] = max(at_best, key=lambda m: m.timestamp).value
    return fixed


# ---------------------------------------------------------------------- the frame
def _varied(parent, children: list, params: dict[str, dict[str, Any]]) -> list[str]:
    """The knob columns: the ``haloae.varied`` tag (parent first, then children), else the params
    that differ across runs, minus seeds and minus keys implied by the variant."""
    for run in ([parent] if parent is not None else []) + children:
        tag = run.data.tags.get(TAG_VARIED)
        if tag:
            return [k.strip() for k in tag.split(",") if k.strip() and k.strip() not in NOT_KNOBS]
    frame = pd.DataFrame(params.values())
    if frame.empty:
        return []
    differing = [c for c in frame.columns if c not in NOT_KNOBS and frame[c].astype(str).nunique() > 1]
    if TAG_VARIANT in differing:  # keys a variant sets (loss.terms, ...) are not knobs of their own
        by_variant = frame.astype(str).groupby(TAG_VARIANT)
        differing = [TAG_VARIANT] + [c for c in differing if c != TAG_VARIANT and (by_variant[c].nunique() > 1).any()]
    return differing


def load_runs(sweep: str, tracking_uri: str | None = None, storage: str | Path | None = None,
              stage: str | None = None) -> RunsFrame:  # fmt: skip
    """Every child run of ``sweep`` -> a DataFrame, a row per (trial, category, seed).

    Columns: run_id, trial_id, category, group (texture|object|other), variant, seed, status,
    error, the varied knobs (typed as the config says: int, float, tuple, ...), then every metric
    (fractions; ``val/*`` at the best epoch, ``test/*`` as logged once). Raises a one-line
    ``SweepQueryError`` when the sweep is unknown, listing the sweeps the store has.
    """
    uri = resolve_tracking_uri(sweep, tracking_uri, storage)
    client = client_for(uri)
    parent = find_parent(client, sweep)
    experiments = [parent.info.experiment_id] if parent is not None else _all_experiment_ids(client)
    children = _search(client, experiments, _role_filter(sweep, ROLE_TRIAL))
    if parent is None and not children:
        found = sweeps_in(client)
        raise SweepQueryError(f"unknown sweep {sweep!r} in {uri}; {hint(sweep, found)}sweeps found: {', '.join(found) or 'none'}")

    params = {r.info.run_id: _typed_params(frozenset(r.data.params.items())) for r in children}
    varied = _varied(parent, children, params)
    rows = []
    for run in children:
        tags, p = run.data.tags, params[run.info.run_id]
        metrics = dict(run.data.metrics)
        if run.info.status == FINISHED:
            metrics.update(_values_at_best_epoch(client, run.info.run_id, metrics))
        seed = tags.get(TAG_SEED, p.get("train.seed"))
        category = tags.get(TAG_CATEGORY, "")
        row = {
            "run_id": run.info.run_id,
            TAG_TRIAL_ID: tags.get(TAG_TRIAL_ID, ""),
            TAG_CATEGORY: category,
            "group": category_group(category),
            TAG_VARIANT: tags.get(TAG_VARIANT, p.get("variant", "")),
            TAG_SEED: int(seed) if seed is not None and str(seed).lstrip("-").isdigit() else seed,
            "status": run.info.status,
            TAG_ERROR: tags.get(TAG_ERROR, ""),
            STAGE: tags.get(TAG_STAGE, ""),
            STOPPED_AT: int(tags[TAG_STOPPED_AT]) if tags.get(TAG_STOPPED_AT, "").isdigit() else None,
        }
        row.update({k: p.get(k, _literal(tags[k]) if k in tags else None) for k in varied if k not in row})
        row.update(metrics)
        rows.append(row)
    knobs = [k for k in varied if k not in ID_COLUMNS]
    frame = pd.DataFrame(rows, columns=None if rows else list(ID_COLUMNS) + knobs)
    if rows:
        metric_columns = sorted(set(frame.columns) - set(ID_COLUMNS) - set(knobs))
        frame = frame[list(ID_COLUMNS) + knobs + metric_columns]
        frame = frame.sort_values(["trial_id", "category", "seed"], key=lambda s: s.astype(str), ignore_index=True)
    frame.attrs.update(
        sweep=sweep,
        tracking_uri=uri,
        parent_run_id=parent.info.run_id if parent is not None else None,
        varied=[k for k in varied if k not in ("category", "seed")],
    )
    frame = select_stage(frame, stage)
    frame.attrs["summary"] = describe(frame)
    if (frame["status"] != FINISHED).any():
        warnings.warn(frame.attrs["summary"], RunsWarning, stacklevel=2)
    return frame


def finished(runs: RunsFrame) -> RunsFrame:
    """The runs that enter aggregates (status FINISHED)."""
    return runs[runs["status"] == FINISHED]


def select_stage(runs: RunsFrame, stage: str | None = None) -> RunsFrame:
    """The runs of one stage of a two-stage sweep: ``auto`` (None) = confirm when the sweep has
    stages, else every run; ``screen`` | ``confirm``; ``all`` = both. ``attrs["stage"]`` says
    which, ``attrs["other_stages"]`` how many runs were left out."""
    stage = stage or "auto"
    if stage not in STAGES:
        raise SweepQueryError(f"--stage: unknown {stage!r}; {hint(stage, STAGES)}valid: {', '.join(STAGES)}")
    staged = runs[STAGE].astype(str) != "" if STAGE in runs.columns else pd.Series(False, index=runs.index)
    sweep = runs.attrs.get("sweep", "?")
    if stage in (STAGE_SCREEN, STAGE_CONFIRM) and not staged.any():
        raise SweepQueryError(f"--stage {stage}: sweep {sweep} has no stages (no protocol section); use --stage all")
    if stage == "all" or not staged.any():
        out, chosen = runs, "all"
    else:
        chosen = STAGE_CONFIRM if stage == "auto" else stage
        out = runs[runs[STAGE] == chosen]
        if out.empty:
            others = ", ".join(f"{n} {s}" for s, n in runs[STAGE].value_counts().sort_index().items())
            raise SweepQueryError(f"sweep {sweep}: no {chosen}-stage run yet (it has {others}); ask for another with --stage screen|all")
    out = out.copy()
    out.attrs = {**runs.attrs, "stage": chosen, "other_stages": len(runs) - len(out)}
    return out


def describe(runs: RunsFrame) -> str:
    """One line: how many runs (of which stage), how many stopped early and counted, how many left
    out of aggregates, and why (first error quoted)."""
    sweep = runs.attrs.get("sweep", "?")
    total = len(runs)
    stage = runs.attrs.get("stage", "all")
    if stage != "all":
        sweep += f" ({stage} stage; {runs.attrs.get('other_stages', 0)} runs of the other stage not shown: --stage)"
    if STOPPED_AT in runs.columns and (stopped := int(((runs["status"] == FINISHED) & runs[STOPPED_AT].notna()).sum())):
        sweep += f"; {stopped} stopped early by the scheduler, evaluated at their best checkpoint and counted"
    left = runs[runs["status"] != FINISHED]
    if left.empty:
        return f"sweep {sweep}: {total} runs, all FINISHED"
    counts = ", ".join(f"{n} {status}" for status, n in left["status"].value_counts().sort_index().items())
    errors = left[left["error"].astype(bool)]
    why = ""
    if not errors.empty:
        first = errors.iloc[0]
        why = f"; e.g. {first['category']} seed {first['seed']} (trial {first['trial_id']}): {first['error']}"
    return f"sweep {sweep}: {total} runs; excluded from aggregates: {counts}{why}"


def require_categories(runs: RunsFrame, categories: Iterable[str] | None) -> list[str]:
    """The requested categories (default: all of the sweep), each checked to exist in it."""
    have = category_order(runs["category"])
    if categories is None:
        return have
    wanted = list(categories)
    unknown = [c for c in wanted if c not in have]
    if unknown:
        raise SweepQueryError(f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; {hint(unknown[0], have)}"
                              f"sweep {runs.attrs.get('sweep')} has: {', '.join(have)}")  # fmt: skip
    return wanted


def require_metric(runs: RunsFrame, metric: str) -> str:
    if metric not in runs.columns:
        metrics = [c for c in runs.columns if isinstance(c, str) and split_of(c) in (VAL, TEST) and "/" in c]
        headline = sorted(c for c in metrics if c.count("/") == 1)
        raise SweepQueryError(f"unknown metric {metric!r}; {hint(metric, metrics)}the runs have e.g.: {', '.join(headline) or 'none'}")
    return metric


def equals(series: pd.Series, value: Any) -> pd.Series:
    """Element-wise ``==`` that treats tuple values (``loss.terms``) as scalars."""
    return series.map(lambda v: v == value)


def select(runs: RunsFrame, where: dict[str, str]) -> RunsFrame:
    """Rows whose columns equal the given values (``{"variant": "haloae", "model.block_size": "6"}``);
    each value is compared as text and as its Python literal, so ``6`` matches the int 6."""
    out = runs
    for key, text in where.items():
        if key not in runs.columns:
            knobs = ", ".join(runs.attrs.get("varied", [])) or "none"
            raise SweepQueryError(f"--where {key}: unknown column; {hint(key, list(runs.columns), by_last_part=True)}knobs: {knobs}")
        value = _literal(text)
        out = out[equals(out[key], value) | (out[key].astype(str) == text)]
    if out.empty:
        raise SweepQueryError(f"--where {', '.join(f'{k}={v}' for k, v in where.items())}: no runs match")
    out.attrs = dict(runs.attrs)
    return out
