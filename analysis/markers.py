# SPDX-License-Identifier: Apache-2.0
"""What a table's cells say beyond their mean: the paired test of each row against the reference
row, which cell is *significantly* the best of its line, the runs stopped early or failed, and
the caption sentences that explain every marker.

A *line* is one family of cells that compares configurations (or scorings) on the same metric and
categories: a column of Tables 3/4 and S1, a row of Table 2. For each line and metric the rows are
paired over (category, seed) against the reference (``analysis.stats.compare_rows``: Wilcoxon
signed-rank or paired t, Holm across the line's rows) and the top row is bold only when it is
significantly above every other row of the line (``analysis.stats.rank_rows``); otherwise nothing
is bold and the notes name the tied rows. Stopped runs (tag ``haloae.stopped_at_epoch``, evaluated
at their best checkpoint) are counted and marked; failed ones are marked and left out, never dropped
silently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pandas as pd

from analysis.render import FAILED, LEFT_OUT, MISSING, SIGNIFICANT, STOPPED, Cell, Versus
from analysis.runs import FINISHED, STOPPED_AT
from analysis.stats import ALPHA, LEVEL, TESTS, ZERO_METHOD, compare_rows, rank_rows, smallest_p
from haloae.vocab import TAG_CATEGORY, TAG_SEED

ROW = "config"  # the row-label column of a line's frame (``analysis.tables.configurations``)


@dataclass(frozen=True)
class Line:
    """One family of cells: ``keys`` maps each row label to its cell; ``frames`` gives, per metric
    of the table, the usable runs of the line (a ``config`` column of row labels) and the column
    holding that metric."""

    name: str
    keys: dict[str, tuple[str, str]]
    frames: tuple[tuple[pd.DataFrame, str], ...]


@dataclass
class Annotated:
    cells: dict[tuple[str, str], Cell]
    ties: list[str]  # "<line> <metric>: A, B" for each line whose top rows are tied
    most_pairs: int  # the largest number of (category, seed) pairs of any test


def _present(frame: pd.DataFrame, column: str, labels: Sequence[str]) -> list[str]:
    have = set(frame.loc[frame[column].notna(), ROW].astype(str)) if column in frame.columns else set()
    return [label for label in labels if label in have]


def annotate(cells: dict[tuple[str, str], Cell], lines: Sequence[Line], metrics: Sequence[str], reference: str | None,
             test: str = "wilcoxon", alpha: float = ALPHA) -> Annotated:  # fmt: skip
    """Each line's paired tests against ``reference`` (a row label; None: no test) and its
    significant best, per metric, written into the cells."""
    versus = {key: [None] * len(metrics) for key in cells}
    best = {key: [False] * len(metrics) for key in cells}
    ties, most = [], 0
    for line in lines:
        for i, (frame, column) in enumerate(line.frames):
            rows = _present(frame, column, list(line.keys))
            if len(rows) < 2:
                continue  # nothing to compare
            if reference in rows:
                for c in compare_rows(frame, column, reference, rows, ROW, test, alpha, ZERO_METHOD):
                    versus[line.keys[c.row]][i] = Versus(c.p_holm, c.significant, c.mean_difference, c.n_pairs)
                    most = max(most, c.n_pairs)
            ranking = rank_rows(frame, column, rows, ROW, test, alpha, ZERO_METHOD)
            most = max([most, *(c.n_pairs for c in ranking.versus_top)])
            if ranking.best is not None:
                best[line.keys[ranking.best]][i] = True
            elif len(ranking.tied) > 1:
                ties.append(f"{line.name}, {metrics[i]}: {', '.join(ranking.tied)}")
    out = {key: replace(cell, versus=tuple(versus[key]), best=tuple(best[key])) for key, cell in cells.items()}
    return Annotated(out, ties, most)


# ---------------------------------------------------------------------- stopped and failed runs
def _who(run: pd.Series, label: str) -> str:
    return f"{label} / {run[TAG_CATEGORY]} / s{run[TAG_SEED]}"


def run_marks(runs: pd.DataFrame) -> tuple[str, bool]:
    """(marks, failed) of a cell from all its runs: ``†`` when a counted run was stopped early,
    ``‡`` when a run is left out; ``failed`` when runs exist but none is usable."""
    if runs.empty:
        return "", False
    usable = runs["status"] == FINISHED
    stopped = usable & runs[STOPPED_AT].notna() if STOPPED_AT in runs.columns else usable & False
    marks = (STOPPED if stopped.any() else "") + (LEFT_OUT if (~usable).any() else "")
    return marks, not usable.any()


def run_notes(runs: pd.DataFrame) -> list[str]:
    """A footnote per stopped run (its epoch) and per run left out (its status and error)."""
    notes = []
    for _, run in runs.iterrows():
        label = str(run[ROW])
        if run["status"] == FINISHED and STOPPED_AT in runs.columns and not _missing(run[STOPPED_AT]):
            notes.append(f"{STOPPED} {_who(run, label)}: stopped at epoch {int(run[STOPPED_AT])} by the scheduler; "
                         "evaluated at its best checkpoint up to then")  # fmt: skip
        elif run["status"] != FINISHED:
            why = f": {run['error']}" if run.get("error") else ""
            notes.append(f"{LEFT_OUT} {_who(run, label)}: {run['status']}{why}; left out")
    return notes


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# ---------------------------------------------------------------------- the caption
def legend(metrics: Sequence[str], common_n: int, reference: str | None, line: str, test: str, most_pairs: int,
           marks: str, alpha: float = ALPHA, level: float = LEVEL) -> list[str]:  # fmt: skip
    """The caption's sentences: what a cell is, which interval, what ``*`` and bold mean, the other marks."""
    seeds = f"{common_n} seed{'s' if common_n != 1 else ''}"
    out = [f"Cells: {' / '.join(metrics)} in percent, mean over {seeds} ± half-width of its {100 * level:g}% "
           f"Student-t interval (n - 1 degrees of freedom); (n=k): another number of seeds; one seed: no interval."]  # fmt: skip
    how = TESTS[test] + (f" (zero differences: {ZERO_METHOD})" if test == "wilcoxon" else "")
    if reference is not None:
        out.append(f"{SIGNIFICANT}: differs from the reference {reference} in the same {line} (two-sided {how} over "
                   f"(category, seed) pairs, p < {alpha:g} after Holm's correction across the rows of the {line}).")  # fmt: skip
    out.append(f"Bold: the best of its {line}, significantly above every other row of the {line} (same test, Holm); "
               f"a {line} without bold has tied top rows (see the notes).")  # fmt: skip
    floor = smallest_p(most_pairs, test) if most_pairs else 1.0
    if floor >= alpha:
        out.append(f"With at most {most_pairs} pairs this test cannot reach p < {alpha:g} (smallest p = {floor:.3g}): "
                   "no difference can be significant; add seeds or categories.")  # fmt: skip
    return out + mark_sentences(marks)


def mark_sentences(marks: str) -> list[str]:
    """The caption's sentences for the run marks that occur in ``marks`` (stopped, left out, failed)."""
    out = []
    if STOPPED in marks:
        out.append(f"{STOPPED}: includes a run stopped early by the scheduler, evaluated at its best checkpoint (notes: the epoch).")
    if LEFT_OUT in marks or FAILED in marks:
        out.append(f"{LEFT_OUT}: a run of the cell failed and is left out; {FAILED}: no run of the cell succeeded; {MISSING}: no run.")
    return out


def p_text(versus: Sequence[Versus | None], is_reference: bool) -> str:
    """``0.031 / 0.25``: the Holm-corrected p of each metric against the reference."""
    if is_reference:
        return "reference"
    return " / ".join(MISSING if v is None or math.isnan(v.p_holm) else f"{v.p_holm:.3g}{SIGNIFICANT if v.significant else ''}"
                      for v in versus)  # fmt: skip
