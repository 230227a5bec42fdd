# SPDX-License-Identifier: Apache-2.0
"""The "leak" table: each configuration's honest test numbers beside its paper-protocol (leaky) ones, and the inflation.

A sweep run with ``eval.protocol: paper`` (``haloae.paper_protocol``) logs, beside the honest
``test/image_auroc`` and ``test/pixel_auroc`` of the checkpoint chosen on validation, the published
evaluation's ``leaky/test/*`` (checkpoint chosen and map normalised on the test set, AUCs flipped).
This table sets them side by side in the shape of Tables 3/4: configurations (rows) x category
groups (Mean Text., Mean Obj., Mean Other, Mean), each group as three columns: ``honest``,
``LEAKY`` and ``Δ`` = LEAKY - honest; a cell holds the table's cell metrics that have a leaky
counterpart (image / pixel AUROC). Every value is the statistic of the other tables
(``analysis.tables.group_stat``: the mean of the category means, 95% t interval over seeds); Δ is
taken per run and averaged the same way over the runs scored both ways, so when every run has both
it is the difference of the two means, and its interval is that of the paired difference.

Nothing is bold and no paired test is run: a leaky number is chosen on the test set, so it may rank
nothing (``haloae.vocab.leaky_refusal``); the honest comparison is Tables 3/4's.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from analysis import markers
from analysis.markers import ROW
from analysis.render import FAILED, Cell, Table
from analysis.runs import RunsFrame, SweepQueryError, category_order, finished
from analysis.stats import interval_caption
from analysis.tables import GROUP_LABELS, METRIC_LABELS, PAIR, category_groups, group_stat, labelled
from haloae.vocab import LEAKY, LEAKY_IMAGE_AUROC, LEAKY_LABEL, LEAKY_PIXEL_AUROC, TAG_CATEGORY, TEST, metric_key

NAME = "leak"
LEAKY_KEYS = {"image_auroc": LEAKY_IMAGE_AUROC, "pixel_auroc": LEAKY_PIXEL_AUROC}  # cell metric -> its leaky key
HONEST_COLUMN, LEAKY_COLUMN, DELTA_COLUMN = "honest", "LEAKY", "Δ"  # each group's three columns, in order
INFLATION_PREFIX = "inflation/"  # the frame's per-run leaky - honest columns (never an MLflow key)


def leaky_metrics(runs: RunsFrame) -> list[str]:
    """The ``leaky/test/*`` columns some FINISHED run has a value of."""
    done = finished(runs)
    return [c for c in done.columns if isinstance(c, str) and c.startswith(f"{LEAKY}/{TEST}/") and done[c].notna().any()]


def has_leaky(runs: RunsFrame) -> bool:
    """Whether the sweep has paper-protocol numbers to show: then ``all`` includes the leak table."""
    return bool(leaky_metrics(runs))


def require_leaky(runs: RunsFrame) -> None:
    if LEAKY_IMAGE_AUROC not in leaky_metrics(runs):
        sweep = runs.attrs.get("sweep", "?")
        raise SweepQueryError(f"leak: no FINISHED run of sweep {sweep} has {LEAKY_IMAGE_AUROC}; the leak table needs a sweep "
                              "run with eval.protocol: paper (which logs the published, leaky numbers beside the honest ones)")  # fmt: skip


def _with_inflation(done: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """``done`` plus a per-run leaky - honest column per metric that has both (NaN where a run lacks one)."""
    pairs = {m: (LEAKY_KEYS[m], metric_key(TEST, m)) for m in metrics}
    both = {INFLATION_PREFIX + m: done[leaky] - done[honest] for m, (leaky, honest) in pairs.items() if {leaky, honest} <= set(done.columns)}
    return done.assign(**both)


def leak_table(runs: RunsFrame, metrics: Sequence[str] = PAIR) -> Table:
    """Configurations x (group x honest | LEAKY | Δ) on the test split. Of ``metrics`` (the cell
    metrics) those with a leaky counterpart; when none has one (``aupro`` alone), image and pixel AUROC."""
    require_leaky(runs)
    shown = [m for m in metrics if m in LEAKY_KEYS] or list(PAIR)
    everything, configs, _ = labelled(runs)  # every configuration, also one whose runs all failed
    done = _with_inflation(finished(everything), shown)
    keys = {
        HONEST_COLUMN: [metric_key(TEST, m) for m in shown],
        LEAKY_COLUMN: [LEAKY_KEYS[m] for m in shown],
        DELTA_COLUMN: [INFLATION_PREFIX + m for m in shown],
    }
    columns: list[str] = []
    cells: dict[tuple[str, str], Cell] = {}
    for group, members in category_groups(category_order(everything[TAG_CATEGORY])):
        for kind, kind_keys in keys.items():
            column = f"{GROUP_LABELS[group]} {kind}"
            columns.append(column)
            for config in configs:
                mine = done[(done[ROW] == config) & done[TAG_CATEGORY].isin(members)]
                all_mine = everything[(everything[ROW] == config) & everything[TAG_CATEGORY].isin(members)]
                marks, failed = markers.run_marks(all_mine)
                # best and versus stay empty: no bold, no significance marker on a number chosen on test
                cells[(config, column)] = Cell(tuple(group_stat(mine, k, members) for k in kind_keys), marks=marks, failed=failed)
    labels = tuple(METRIC_LABELS[m] for m in shown)
    title = "Honest vs paper protocol (LEAKY): means over categories"
    table = Table(NAME, title, "configuration", configs, columns, labels, cells)
    table.legend = _legend(table)
    table.notes = [f"{TEST} split; {runs.attrs.get('summary', '')}", *_unscored_note(done), *dict.fromkeys(markers.run_notes(everything))]
    return table


def _legend(table: Table) -> list[str]:
    marks = "".join(c.marks + (FAILED if c.failed else "") for c in table.cells.values())
    return [
        f"Each cell: {' / '.join(table.metrics)} in percent.",
        interval_caption(table.common_n),
        f"{HONEST_COLUMN}: the run's test numbers at its checkpoint chosen on validation, as in the other tables.",
        f"{LEAKY_COLUMN}: {LEAKY_LABEL}.",
        f"{DELTA_COLUMN}: {LEAKY_COLUMN} - {HONEST_COLUMN} per run, the inflation of the published protocol, averaged the "
        "same way over the runs scored both ways.",
        "No bold and no significance marker: leaky numbers are chosen on the test set and rank nothing; "
        "compare configurations on the honest numbers (Tables 3/4).",
        *markers.mark_sentences(marks),
    ]  # fmt: skip


def _unscored_note(done: pd.DataFrame) -> list[str]:
    """Runs without a leaky number count in honest only: then the columns average different runs; say so."""
    unscored = done[LEAKY_IMAGE_AUROC].isna() if LEAKY_IMAGE_AUROC in done.columns else done[TAG_CATEGORY].notna()
    if not unscored.any():
        return []
    return [f"{int(unscored.sum())} of {len(done)} FINISHED runs have no {LEAKY_IMAGE_AUROC} (not run with eval.protocol: paper): "
            f"they count in {HONEST_COLUMN}, not in {LEAKY_COLUMN} or {DELTA_COLUMN}."]  # fmt: skip
