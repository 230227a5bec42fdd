# SPDX-License-Identifier: Apache-2.0
"""Runs -> tidy frame -> paper-style tables and figures; every cell checked against a hand computation
from the raw values written to MLflow (``tests.helpers.analysis``)."""

import csv
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from analysis import render, tables
from analysis.figures import make_figures
from analysis.paper import PAPER_CSV
from analysis.runs import RunsWarning, SweepQueryError, client_for, load_runs, select
from haloae.cli import main
from haloae.presets import VARIANTS
from haloae.scoring import SCORING_LABELS
from tests.helpers.analysis import (
    BEST_EPOCH,
    FAKE_CATEGORIES,
    FAKE_VARIANTS,
    assert_stat,
    best_flags,
    cell_by_hand,
    fake_trials,
    grid_trials,
    group_by_hand,
    log_sweep,
)

ALPHA_C = {"loss.alpha.cls.c": (3.0, 5.0), "loss.alpha.fm.c": (2.0, 4.0)}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store: sweep "fake" (variants x categories x seeds, one FAILED, one RUNNING) in
    <storage>/fake/mlflow.db, and in it too sweeps "grid" (block x halo), "alpha_c" (two knobs whose
    keys end alike: loss.alpha.cls.c x loss.alpha.fm.c) and "notag" (no haloae.varied)."""
    storage = tmp_path_factory.mktemp("sweeps")
    fake = log_sweep(storage, "fake", fake_trials(), "variant")
    grid = log_sweep(storage, "grid", grid_trials(), "model.block_size,model.halo_size", tracking_uri=fake.tracking_uri)
    notag = log_sweep(storage, "notag", fake_trials(categories=("synth_disc",), seeds=(0,)), None, tracking_uri=fake.tracking_uri)
    alpha_c = log_sweep(storage, "alpha_c", grid_trials(ALPHA_C, seeds=(0,)), ",".join(ALPHA_C), tracking_uri=fake.tracking_uri)
    return fake, grid, notag, alpha_c


@pytest.fixture(scope="module")
def runs(store):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunsWarning)
        return load_runs("fake", storage=store[0].storage)


# ---------------------------------------------------------------------- the frame
def test_frame_has_a_row_per_run_with_failed_and_running_reported(store):
    fake = store[0]
    with pytest.warns(RunsWarning, match="1 FAILED, 1 RUNNING"):
        frame = load_runs("fake", storage=fake.storage)
    assert len(frame) == len(fake.trials) == 14
    assert list(frame.columns[:8]) == ["run_id", "trial_id", "category", "group", "variant", "seed", "status", "error"]
    assert frame.attrs["varied"] == ["variant"] and frame.attrs["parent_run_id"] == fake.parent_run_id
    failed = frame[frame["status"] == "FAILED"].iloc[0]
    assert failed["error"].startswith("FloatingPointError") and failed["seed"] == 2
    assert (frame["status"] == "RUNNING").sum() == 1
    assert "non-finite training loss" in frame.attrs["summary"]
    assert set(frame.loc[frame["category"] == "synth_brick", "group"]) == {"texture"}
    assert set(frame.loc[frame["category"] == "synth_disc", "group"]) == {"object"}


def test_val_metrics_are_the_best_epochs_not_the_last(runs, store):
    trials = store[0].trials
    for trial in trials:
        if trial.status == "FINISHED":
            row = runs[runs["run_id"] == trial.run_id].iloc[0]
            assert row["val/image_auroc"] == pytest.approx(trial.final["val/image_auroc"])  # epoch 2 logged 0.05 less
            assert row["val/image_auroc"] == pytest.approx(trial.epochs[BEST_EPOCH]["val/image_auroc"])
            assert row["test/image_auroc"] == pytest.approx(trial.final["test/image_auroc"])


def test_knobs_are_typed_and_found_without_the_varied_tag(store):
    grid = load_runs("grid", tracking_uri=store[0].tracking_uri)
    assert grid.attrs["varied"] == ["model.block_size", "model.halo_size"]
    assert sorted(grid["model.block_size"].unique()) == [1, 2, 3] and grid["model.block_size"].dtype.kind == "i"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunsWarning)
        notag = load_runs("notag", tracking_uri=store[0].tracking_uri)
    assert notag.attrs["varied"] == ["variant"]  # loss.weighting etc. follow the variant; train.seed is a repeat


def test_unknown_sweep_lists_the_sweeps_found(store):
    with pytest.raises(SweepQueryError, match=r"unknown sweep 'nope'.*sweeps found: alpha_c, fake, grid, notag"):
        load_runs("nope", tracking_uri=store[0].tracking_uri)
    with pytest.raises(SweepQueryError, match=r"sweeps under .*: fake"):
        load_runs("nope", storage=store[0].storage)
    with pytest.raises(SweepQueryError, match=r"unknown sweep 'fak'.*did you mean fake\?"):
        load_runs("fak", tracking_uri=store[0].tracking_uri)
    with pytest.raises(SweepQueryError, match=r"unknown sweep 'fak'.*did you mean fake\?"):
        load_runs("fak", storage=store[0].storage)


# ---------------------------------------------------------------------- the tables
@pytest.mark.parametrize("split", ["test", "val"])
def test_table2_cells_means_and_bold(runs, store, split):
    trials = store[0].trials
    table = tables.table2(runs, split)
    labels = [VARIANTS[v].label for v in FAKE_VARIANTS]
    assert table.columns == labels
    assert table.rows == ["synth_brick", "synth_disc", "Mean Text.", "Mean Obj.", "Mean"]
    groups = {"Mean Text.": ["synth_brick"], "Mean Obj.": ["synth_disc"], "Mean": list(FAKE_CATEGORIES)}
    for row in table.rows:
        for i, metric in enumerate(("image_auroc", "pixel_auroc")):
            key = f"{split}/{metric}"
            expected = [group_by_hand(trials, v, groups[row], key) if row in groups else cell_by_hand(trials, v, row, key) for v in FAKE_VARIANTS]
            for label, exp in zip(labels, expected, strict=True):
                assert_stat(table.cell(row, label).stats[i], exp)
            assert [table.cell(row, label).best[i] for label in labels] == best_flags([e[0] for e in expected])  # best of the row


def test_table3_cells_bold_and_paper_values(runs, store):
    trials = store[0].trials
    table = tables.table3(runs, "test", with_paper=True)
    assert table.rows == [VARIANTS[v].label for v in FAKE_VARIANTS]
    assert table.columns == ["Mean Text.", "Mean Obj.", "Mean"]
    members = {"Mean Text.": ["synth_brick"], "Mean Obj.": ["synth_disc"], "Mean": list(FAKE_CATEGORIES)}
    paper = {(r["row"], r["category"]): (r["image_auroc"], r["pixel_auroc"]) for r in csv.DictReader(l for l in PAPER_CSV.read_text().splitlines() if not l.startswith("#"))}
    paper_columns = {"Mean Text.": "mean_texture", "Mean Obj.": "mean_object", "Mean": "mean"}
    for column in table.columns:
        expected = [group_by_hand(trials, v, members[column], "test/image_auroc") for v in FAKE_VARIANTS]
        for v, exp in zip(FAKE_VARIANTS, expected, strict=True):
            cell = table.cell(VARIANTS[v].label, column)
            assert_stat(cell.stats[0], exp)
            assert cell.paper == paper[(VARIANTS[v].paper_row, paper_columns[column])]
        assert [table.cell(VARIANTS[v].label, column).best[0] for v in FAKE_VARIANTS] == best_flags([e[0] for e in expected])


def test_table3_paper_cli_shows_the_csv_values_exactly(store):
    result = CliRunner().invoke(main, ["tables", "--sweep", "fake", "--storage", str(store[0].storage), "--table", "table3", "--paper"])
    assert result.exit_code == 0, result.output
    lines = {line.split(" | ")[0].lstrip("| "): line.strip("| ").split(" | ") for line in result.output.splitlines() if line.startswith("| ")}
    header = lines["configuration"]
    row = lines[VARIANTS["uncertainty_weighting"].label]  # the paper prints 82.53 / 84.61 for its Mean Obj.
    assert row[header.index("Mean Text. (paper)")] == "97.2 / 87.9"
    assert row[header.index("Mean Obj. (paper)")] == "82.53 / 84.61"
    assert row[header.index("Mean (paper)")] == "88.2 / 85.9"
    assert "1 FAILED, 1 RUNNING" in result.output  # the summary line (stderr) and the table's note


def test_table_s1_scorings_by_category(runs, store):
    trials = store[0].trials
    (first, *_) = tables.table_s1(runs, "test")
    assert first.rows == list(SCORING_LABELS.values())
    scorings = list(SCORING_LABELS)
    for category in FAKE_CATEGORIES:
        expected = [cell_by_hand(trials, "haloae", category, f"test/{s}/image_auroc") for s in scorings]
        for s, exp in zip(scorings, expected, strict=True):
            assert_stat(first.cell(SCORING_LABELS[s], category).stats[0], exp)
        assert [first.cell(SCORING_LABELS[s], category).best[0] for s in scorings] == best_flags([e[0] for e in expected])
    assert first.cell("L_cls", "synth_disc").stats[1] is None  # the classifier has no map


def test_pivot_of_two_knobs(store):
    grid = load_runs("grid", tracking_uri=store[0].tracking_uri)
    table = tables.pivot(grid, "model.block_size", "model.halo_size")
    assert table.rows == ["1", "2", "3"] and table.columns == ["1", "2"]
    trials = store[1].trials
    for h in (1, 2):
        expected = []
        for b in (1, 2, 3):
            values = [t.final["test/image_auroc"] for t in trials if t.cfg.model.block_size == b and t.cfg.model.halo_size == h]
            expected.append((np.mean(values), np.std(values, ddof=1), len(values)))
            assert_stat(table.cell(str(b), str(h)).stats[0], expected[-1])
        assert [table.cell(str(b), str(h)).best[0] for b in (1, 2, 3)] == best_flags([e[0] for e in expected])
    with pytest.raises(SweepQueryError, match="unknown knob"):
        tables.pivot(grid, "model.block_size", "model.dim_head")


def test_knobs_whose_keys_end_alike_are_labelled_by_their_full_keys(store):
    result = CliRunner().invoke(main, ["tables", "--sweep", "alpha_c", "--tracking-uri", store[0].tracking_uri, "--table", "table3"])
    assert result.exit_code == 0, result.output
    rows = [line.split(" | ")[0].lstrip("| ") for line in result.output.splitlines() if line.startswith("| ")][1:]  # after the header
    assert rows == [f"loss.alpha.cls.c={cls}, loss.alpha.fm.c={fm}" for cls in (3.0, 5.0) for fm in (2.0, 4.0)]
    assert not re.search(r"(^|[\s,|])c=", result.output)  # no bare c= that both knobs would share


def test_where_filters_and_pivot_refuses_mixed_knobs(runs):
    only = select(runs, {"variant": "haloae", "seed": "1"})
    assert set(only["variant"]) == {"haloae"} and set(only["seed"]) == {1}
    with pytest.raises(SweepQueryError, match="no runs match"):
        select(runs, {"variant": "nope"})


def test_renderers_share_one_cell_model(runs):
    table = tables.table3(runs, "test", with_paper=True)
    md, latex, html = (render.render(table, f) for f in ("md", "latex", "html"))
    best = [(r, c) for (r, c), cell in table.cells.items() if cell.best[0]]
    shown = render.format_stat(table.cell(*best[0]).stats[0], render.STYLES["md"], table.common_n)
    assert f"**{shown}**" in md
    assert r"\textbf{" + shown.replace("±", r"$\pm$") + "}" in latex
    assert f"<b>{shown}</b>" in html
    tidy = pd.read_csv(pd.io.common.StringIO(render.render(table, "csv")))
    assert len(tidy) == len(table.rows) * len(table.columns) * 2
    first = tidy.iloc[0]
    stat = table.cell(first["row"], first["column"]).stats[0]
    assert first["mean"] == pytest.approx(100 * stat.mean) and first["n"] == stat.n


# ---------------------------------------------------------------------- CLI errors, files, figures
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sweep", "nope"], "unknown sweep 'nope'"),
        (["--sweep", "fake", "--format", "xml"], "--format: unknown 'xml'"),
        (["--sweep", "fake", "--split", "train"], "--split: unknown 'train'"),
        (["--sweep", "fake", "--table", "pivot", "--pivot", "model.block_size"], "--pivot: give two knobs"),
        (["--sweep", "fake", "--table", "pivot", "--pivot", "variant,model.block_size"], "unknown knob 'model.block_size'"),
        (["--sweep", "fake", "--format", "late"], "--format: unknown 'late'; did you mean latex?"),
        (["--sweep", "fake", "--where", "variant"], "--where 'variant': expected KEY=VALUE"),
        (["--sweep", "fake", "--where", "varaint=haloae"], "--where varaint: unknown column; did you mean variant?"),
        (["--sweep", "fake", "--table", "pivot", "--pivot", "variant,seeds"], "unknown knob 'seeds'; did you mean seed?"),
    ],
)
def test_bad_table_requests_are_one_line_errors(store, args, message):
    result = CliRunner().invoke(main, ["tables", *args, "--storage", str(store[0].storage)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and message in errors[0]


def test_tables_written_to_files_in_each_format(store, tmp_path):
    for fmt, ext in render.EXTENSIONS.items():
        result = CliRunner().invoke(main, ["tables", "--sweep", "fake", "--storage", str(store[0].storage), "--format", fmt, "--out", str(tmp_path)])
        assert result.exit_code == 0, result.output
        assert (tmp_path / f"table2.{ext}").is_file() and (tmp_path / f"table3.{ext}").is_file()


def test_figures_are_written_and_logged_to_the_parent_run(store, tmp_path):
    grid = load_runs("grid", tracking_uri=store[0].tracking_uri)
    paths = make_figures(grid, tmp_path, log=True)
    names = {p.name for p in paths}
    assert "bars_test-image_auroc.png" in names and "heatmap_model-block_size_x_model-halo_size.png" in names
    assert any(n.startswith("alpha_") for n in names)  # the best run's alpha schedule (no checkpoint: no overlays)
    for path in paths:
        assert Image.open(path).size[0] > 100
    logged = {f.path for f in client_for(store[0].tracking_uri).list_artifacts(store[1].parent_run_id, "figures")}
    assert logged == {f"figures/{n}" for n in names}
    result = CliRunner().invoke(main, ["figures", "--sweep", "grid", "--tracking-uri", store[0].tracking_uri, "--out", str(tmp_path / "cli"),
                                       "--no-log", "--where", "model.halo_size=1", "--pivot", "model.block_size,seed"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "heatmap_model-block_size_x_seed.png").is_file()


def test_paper_lookup_matches_rows_by_variant_and_scoring():
    from analysis import paper

    assert paper.variant_row("haloae", "table2") == "HaloAE"  # Table 2's name for the paper's own model
    assert paper.variant_row("ae_l2", "table2") == "AE-L2"
    assert paper.paper_pair("table2", "HaloAE", "carpet") == ("69.7", "89.4")
    assert paper.paper_pair("table2", "AE-L2", "carpet") == (None, "59.0")  # not reported: None, not 0
    assert paper.paper_pair("table4", paper.variant_row("block_c_cnn", "table4"), "mean") == ("85.0", "90.4")
    assert paper.paper_pair("tableS1", SCORING_LABELS["afm_norm"], "wood") == ("99.9", "90.3")
    assert paper.mean_of([("90.0", "80.0"), ("91.0", None)]) == ("90.5", None)
    assert paper.variant_row("attention_none", "table3") is None
