# SPDX-License-Identifier: Apache-2.0
"""``haloae tables --paper`` says plainly when the paper reports none of the sweep's rows (a knob
grid), and which rows it lacks when it reports some (``analysis.paper.no_match_note``)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from analysis import tables
from analysis.paper import no_match_note, unmatched_rows
from analysis.runs import load_runs
from haloae.cli import main
from haloae.presets import VARIANTS
from tests.helpers.analysis import fake_trials, grid_trials, log_sweep

NONE_MATCH = "--paper: no paper row matches this sweep's rows"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Sweep "grid" (block x halo: no paper row) and sweep "mixed" (haloae, which Table 3 reports,
    and attention_none, which it does not), one store."""
    storage = tmp_path_factory.mktemp("sweeps")
    grid = log_sweep(storage, "grid", grid_trials({"model.block_size": (1, 2)}, seeds=(0,)), "model.block_size")
    mixed = [t for t in fake_trials(categories=("synth_disc",), variants=("haloae", "attention_none"), seeds=(0,)) if t.status == "FINISHED"]
    log_sweep(storage, "mixed", mixed, "variant", tracking_uri=grid.tracking_uri)
    return grid


def test_no_matching_row_is_said_in_one_line(store):
    result = CliRunner().invoke(main, ["tables", "--sweep", "grid", "--tracking-uri", store.tracking_uri, "--table", "table3",
                                       "--paper", "--no-stats"])  # fmt: skip
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if NONE_MATCH in line]
    assert len(notes) == 1 and "model.block_size=1, model.block_size=2" in notes[0]
    assert "(paper)" not in result.output  # and no empty paper column beside ours


def test_rows_without_a_paper_value_are_named(store):
    runs = load_runs("mixed", tracking_uri=store.tracking_uri)
    table = tables.table3(runs, "test", with_paper=True)
    label = VARIANTS["attention_none"].label
    assert unmatched_rows(table) == [label]
    assert no_match_note(table) == f"--paper: no paper value for {label} (the paper does not report these rows)."
    result = CliRunner().invoke(main, ["tables", "--sweep", "mixed", "--tracking-uri", store.tracking_uri, "--table", "table3",
                                       "--paper", "--no-stats"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"no paper value for {label}" in result.output and NONE_MATCH not in result.output
    assert no_match_note(tables.table3(runs, "test", with_paper=False)) is None  # without --paper: nothing to say
