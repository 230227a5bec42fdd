# SPDX-License-Identifier: Apache-2.0
"""Runs -> tidy frame -> paper-style tables and figures; every cell checked against a hand computation
from the raw values written to MLflow (``tests.helpers.analysis``)."""

import csv
import re
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis import render, tables
from analysis.figures import make_figures
from analysis.paper import PAPER_CSV
from analysis.runs import RunsWarning, SweepQueryError, category_group, client_for, load_runs, select, select_stage
from haloae.cli import main
from haloae.presets import VARIANTS
from haloae.scoring import SCORING_LABELS
from haloae.vocab import LEAKY_IMAGE_AUROC, LEAKY_LABEL, LEAKY_PIXEL_AUROC
from tests.helpers.analysis import (
    BEST_EPOCH,
    FAKE_CATEGORIES,
    FAKE_VARIANTS,
    assert_stat,
    cell_by_hand,
    fake_trials,
    grid_trials,
    group_by_hand,
    log_sweep,
    values_by_seed,
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
    finished_only = [t for t in fake_trials(categories=("synth_disc",), seeds=(0,)) if t.status == "FINISHED"]
    staged = log_sweep(storage, "staged", finished_only, "variant", tracking_uri=fake.tracking_uri)
    return fake, grid, notag, alpha_c, staged


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
    with pytest.raises(SweepQueryError, match=r"unknown sweep 'nope'.*sweeps found: alpha_c, fake, grid, notag, staged"):
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
    label_variant = dict(zip(labels, FAKE_VARIANTS, strict=True))
    assert table.columns == labels
    assert table.rows == ["synth_brick", "synth_disc", "Mean Text.", "Mean Obj.", "Mean"]
    groups = {"Mean Text.": ["synth_brick"], "Mean Obj.": ["synth_disc"], "Mean": list(FAKE_CATEGORIES)}
    for row in table.rows:
        for i, metric in enumerate(("image_auroc", "pixel_auroc")):
            key = f"{split}/{metric}"
            expected = [group_by_hand(trials, v, groups[row], key) if row in groups else cell_by_hand(trials, v, row, key) for v in FAKE_VARIANTS]
            for label, exp in zip(labels, expected, strict=True):
                assert_stat(table.cell(row, label).stats[i], exp)
                assert_interval(table.cell(row, label).stats[i], per_seed_by_hand(trials, label_variant[label], groups.get(row, [row]), key))
            assert not any(table.cell(row, label).best[i] for label in labels)  # 2 to 4 pairs: nothing can be significant
    assert "cannot reach p < 0.05" in render.caption(table, render.STYLES["md"]) and "Tied at the top" in table.notes[-1]


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
            assert_interval(cell.stats[0], per_seed_by_hand(trials, v, members[column], "test/image_auroc"))
        assert not any(table.cell(VARIANTS[v].label, column).best[0] for v in FAKE_VARIANTS)  # at most 4 pairs


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
        assert not any(first.cell(SCORING_LABELS[s], category).best[0] for s in scorings)  # 2 seeds: 2 pairs
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
        assert not any(table.cell(str(b), str(h)).best[0] for b in (1, 2, 3))  # 2 seeds: 2 pairs
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
    key = next(iter(table.cells))
    table.cells[key] = replace(table.cells[key], best=(True, False))  # as if significantly best
    md, latex, html = (render.render(table, f) for f in ("md", "latex", "html"))
    shown = render.format_stat(table.cell(*key).stats[0], render.STYLES["md"], table.common_n)
    assert f"**{shown}**" in md
    assert r"\textbf{" + shown.replace("±", r"$\pm$") + "}" in latex
    assert f"<b>{shown}</b>" in html and html.startswith('<table class="haloae-table"') and "<caption>" in html
    assert render.html_table(table) + "\n" == html
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


# ---------------------------------------------------------------------- intervals, paired tests, markers
def per_seed_by_hand(trials, variant, categories, key) -> list[float]:
    """Per seed that has every category: the mean over ``categories`` (one category: its values)."""
    by_category = [values_by_seed(trials, variant, c, key) for c in categories]
    seeds = sorted(set.intersection(*(set(b) for b in by_category)))
    return [float(np.mean([b[s] for b in by_category])) for s in seeds]


def assert_interval(stat, per_seed: list[float]) -> None:
    """The cell's interval is scipy's Student-t interval of the mean of the per-seed values."""
    low, high = stats.t.interval(0.95, len(per_seed) - 1, loc=np.mean(per_seed), scale=stats.sem(per_seed))
    assert stat.n == len(per_seed) and (stat.low, stat.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))


HAND_CATEGORIES = ("carpet", "grid", "leather", "bottle", "cable", "capsule")


def hand_frame(offsets: dict[str, float], seeds=(0, 1), extra: list[dict] | None = None) -> pd.DataFrame:
    """A run frame as ``load_runs`` returns it: variant x 6 categories x seeds, FINISHED, the metric
    = a per-(category, seed) base + the variant's offset + a small deterministic wobble."""
    rows = []
    for v, (variant, offset) in enumerate(offsets.items()):
        for c, category in enumerate(HAND_CATEGORIES):
            for seed in seeds:
                base = 0.6 + 0.05 * c + 0.02 * seed
                value = base + offset + 0.003 * ((v * 7 + c * 3 + seed * 5) % 4)
                rows.append({"run_id": f"r{v}{c}{seed}", "trial_id": f"t{v}", "category": category, "group": category_group(category),
                             "variant": variant, "seed": seed, "status": "FINISHED", "error": "", "stage": "", "stopped_at_epoch": None,
                             "test/image_auroc": value, "test/pixel_auroc": value - 0.1, "test/aupro": value - 0.3})  # fmt: skip
    frame = pd.DataFrame(rows + (extra or []))
    frame.attrs.update(sweep="hand", varied=["variant"], summary="hand-made")
    return frame


def test_cells_carry_scipys_interval_and_holm_corrected_wilcoxon_against_the_reference():
    offsets = {"haloae": 0.0, "equal_weights": 0.08, "uncertainty_weighting": 0.001}
    frame = hand_frame(offsets)
    table = tables.table3(frame, "test")
    labels = {v: VARIANTS[v].label for v in offsets}
    reference = labels["haloae"]
    for column, members in {"Mean Text.": HAND_CATEGORIES[:3], "Mean Obj.": HAND_CATEGORIES[3:], "Mean": HAND_CATEGORIES}.items():
        sub = frame[frame["category"].isin(members)]
        pivot = sub.pivot_table(index=["category", "seed"], columns="variant", values="test/image_auroc")
        raw = [stats.wilcoxon(pivot[v], pivot["haloae"], zero_method="pratt").pvalue for v in ("equal_weights", "uncertainty_weighting")]
        corrected = multipletests(raw, method="holm")[1]
        for v, p in zip(("equal_weights", "uncertainty_weighting"), corrected, strict=True):
            versus = table.cell(labels[v], column).versus[0]
            assert versus.p_holm == pytest.approx(p) and versus.n_pairs == len(pivot) and versus.significant == (p < 0.05)
        assert table.cell(reference, column).versus[0] is None
        for v in offsets:
            per_seed = sub[sub["variant"] == v].groupby("seed")["test/image_auroc"].mean().tolist()
            assert_interval(table.cell(labels[v], column).stats[0], per_seed)
    # Mean: 12 pairs, all above both others: significantly best, bold. A group: 6 pairs, smallest
    # p = 2/64 against each of 2 rows, 0.0625 after Holm: not bold, its top rows are tied
    assert table.cell(labels["equal_weights"], "Mean").versus[0].significant
    assert table.cell(labels["equal_weights"], "Mean").best == (True, True)
    assert not any(table.cell(labels[v], c).best[0] for v in offsets for c in ("Mean Text.", "Mean Obj."))
    assert not any(table.cell(labels[v], "Mean").best[0] for v in ("haloae", "uncertainty_weighting"))
    assert "Mean Text., image AUROC: " in table.notes[-1]
    md = render.render(table, "md")
    cell = table.cell(labels["equal_weights"], "Mean").stats[0]
    assert f"**{100 * cell.mean:.1f} ± {100 * cell.half_width:.1f}**\\*" in md  # bold, then the marker
    header, values = table.extra_column
    assert header == f"p vs {reference} (Holm), Mean" and values[reference] == "reference"
    assert values[labels["equal_weights"]].startswith(f"{table.cell(labels['equal_weights'], 'Mean').versus[0].p_holm:.3g}*")
    caption = render.caption(table, render.STYLES["md"])
    assert "95% Student-t interval" in caption and "Holm" in caption and f"reference {reference}" in caption


def test_close_top_rows_are_tied_not_bold():
    table = tables.table3(hand_frame({"haloae": 0.0, "equal_weights": 0.0005}), "test")
    assert not any(c.best[0] for c in table.cells.values())
    assert "Tied at the top" in table.notes[-1] and "Mean, image AUROC" in table.notes[-1]


def test_table2_has_a_p_value_row_and_aupro_is_a_cell_metric():
    frame = hand_frame({"haloae": 0.0, "equal_weights": 0.08})
    table = tables.table2(frame, "test", metrics=("image_auroc", "aupro"))
    assert table.metrics == ("image AUROC", "AUPRO")
    stat = table.cell("Mean", VARIANTS["haloae"].label).stats[1]
    assert stat.mean == pytest.approx(frame[frame["variant"] == "haloae"]["test/aupro"].mean())
    label, values = table.extra_row
    assert label == f"p vs {VARIANTS['haloae'].label} (Holm), Mean" and values[VARIANTS["haloae"].label] == "reference"
    md = render.render(table, "md")
    assert md.count(label) == 1 and "AUPRO" in md
    with pytest.raises(SweepQueryError, match="cell metric: unknown 'auprc'"):
        tables.table3(frame, "test", metrics=("auprc",))
    with pytest.raises(SweepQueryError, match="--reference 'nope'"):
        tables.table3(frame, "test", reference="nope")


def test_latex_is_booktabs_with_one_header_row():
    table = tables.table3(hand_frame({"haloae": 0.0, "equal_weights": 0.08}), "test")
    latex = render.render(table, "latex")
    lines = latex.splitlines()
    assert lines[0].startswith(r"% requires \usepackage{booktabs}")
    top, mid = lines.index(r"\toprule"), lines.index(r"\midrule")
    assert mid - top == 2 and lines[top + 1].startswith("configuration & Mean Text.")  # one header row, no index-name row
    assert r"\bottomrule" in lines and r"\caption{" in latex and "Student-t" in latex
    assert "±" not in latex and r"$^{*}$" in latex


def test_failed_runs_are_marked_and_listed_never_dropped(runs):
    table = tables.table2(runs, "test")
    haloae = VARIANTS["haloae"].label
    assert render.LEFT_OUT in table.cell("synth_disc", haloae).marks  # its seed-2 run FAILED
    assert any(n.startswith(f"{render.LEFT_OUT} {haloae} / synth_disc / s2: FAILED: FloatingPointError") for n in table.notes)
    assert any("RUNNING" in n for n in table.notes)
    # a configuration whose every run failed keeps its row: "failed" cells
    failed = {"run_id": "rf", "trial_id": "tf", "category": "carpet", "group": "texture", "variant": "uncertainty_weighting", "seed": 0,
              "status": "FAILED", "error": "FloatingPointError: nan", "stage": "", "stopped_at_epoch": None}  # fmt: skip
    three = tables.table3(hand_frame({"haloae": 0.0}, extra=[failed]), "test")
    row = VARIANTS["uncertainty_weighting"].label
    assert row in three.rows and three.cell(row, "Mean Text.").failed
    md = render.render(three, "md")
    assert f"| {row} | {render.FAILED}{render.LEFT_OUT}" in md and "no run of the cell succeeded" in md


def test_stopped_runs_count_and_say_their_epoch():
    frame = hand_frame({"haloae": 0.0, "equal_weights": 0.08})
    frame.loc[(frame["variant"] == "equal_weights") & (frame["category"] == "bottle") & (frame["seed"] == 1), "stopped_at_epoch"] = 3
    table = tables.table2(frame, "test")
    label = VARIANTS["equal_weights"].label
    assert render.STOPPED in table.cell("bottle", label).marks and render.STOPPED in table.cell("Mean", label).marks
    assert render.STOPPED not in table.cell("carpet", label).marks and table.cell("bottle", label).stats[0].n == 2
    assert f"{render.STOPPED} {label} / bottle / s1: stopped at epoch 3 by the scheduler" in " ".join(table.notes)
    assert "stopped early by the scheduler" in render.caption(table, render.STYLES["md"])


def test_tables_use_the_confirm_stage_unless_asked(store):
    frame = hand_frame({"haloae": 0.0, "equal_weights": 0.08})
    frame["stage"] = ["screen" if s == 0 else "confirm" for s in frame["seed"]]
    assert set(select_stage(frame)["stage"]) == {"confirm"} and select_stage(frame).attrs["other_stages"] == len(frame) // 2
    assert set(select_stage(frame, "screen")["seed"]) == {0} and len(select_stage(frame, "all")) == len(frame)
    with pytest.raises(SweepQueryError, match="no confirm-stage run yet"):
        select_stage(frame[frame["stage"] == "screen"])
    with pytest.raises(SweepQueryError, match="has no stages"):
        select_stage(hand_frame({"haloae": 0.0}), "screen")
    # from MLflow: a sweep whose runs carry haloae.stage
    client = client_for(store[0].tracking_uri)
    staged = store[4]
    for trial in staged.trials:
        client.set_tag(trial.run_id, "haloae.stage", "confirm" if trial.cfg.variant == "haloae" else "screen")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunsWarning)
        confirm = load_runs("staged", tracking_uri=store[0].tracking_uri)
        screen = load_runs("staged", tracking_uri=store[0].tracking_uri, stage="screen")
    assert set(confirm["variant"]) == {"haloae"} and "confirm stage" in confirm.attrs["summary"]
    assert "haloae" not in set(screen["variant"])
    result = CliRunner().invoke(main, ["tables", "--sweep", "staged", "--tracking-uri", store[0].tracking_uri, "--table", "table3", "--no-stats"])
    assert result.exit_code == 0, result.output
    assert "screen runs" not in result.output and VARIANTS["equal_weights"].label not in result.output
    shown = CliRunner().invoke(main, ["tables", "--sweep", "staged", "--tracking-uri", store[0].tracking_uri, "--table", "table3",
                                      "--no-stats", "--stage", "screen"])  # fmt: skip
    assert shown.exit_code == 0 and VARIANTS["equal_weights"].label in shown.output


# ---------------------------------------------------------------------- honest beside leaky (eval.protocol: paper)
def leaky_frame(offsets: dict[str, float]) -> pd.DataFrame:
    """``hand_frame`` whose runs also carry the paper protocol's numbers: honest + an inflation that
    differs per (category, seed), as ``leaky/test/*`` keys."""
    frame = hand_frame(offsets)
    codes = frame["category"].map({c: i for i, c in enumerate(HAND_CATEGORIES)})
    frame[LEAKY_IMAGE_AUROC] = frame["test/image_auroc"] + 0.05 + 0.01 * frame["seed"] + 0.004 * codes
    frame[LEAKY_PIXEL_AUROC] = frame["test/pixel_auroc"] + 0.02 + 0.003 * codes - 0.006 * frame["seed"]
    return frame


def test_leak_table_shows_honest_and_leaky_means_and_their_inflation_never_bold():
    offsets = {"haloae": 0.0, "equal_weights": 0.08}
    frame = leaky_frame(offsets)
    [table] = tables.build(frame, ["leak"])
    assert table.name == "leak" and table.metrics == ("image AUROC", "pixel AUROC")
    groups = {"Mean Text.": HAND_CATEGORIES[:3], "Mean Obj.": HAND_CATEGORIES[3:], "Mean": HAND_CATEGORIES}
    assert table.columns == [f"{g} {kind}" for g in groups for kind in ("honest", "LEAKY", "Δ")]
    for variant in offsets:
        mine = frame[frame["variant"] == variant]
        for group, members in groups.items():
            sub = mine[mine["category"].isin(members)]
            for i, (honest_key, leaky_key) in enumerate([("test/image_auroc", LEAKY_IMAGE_AUROC), ("test/pixel_auroc", LEAKY_PIXEL_AUROC)]):
                honest, leaky = np.mean(sub[honest_key].to_numpy()), np.mean(sub[leaky_key].to_numpy())
                row = VARIANTS[variant].label
                assert table.cell(row, f"{group} honest").stats[i].mean == pytest.approx(honest, abs=1e-12)
                assert table.cell(row, f"{group} LEAKY").stats[i].mean == pytest.approx(leaky, abs=1e-12)
                delta = table.cell(row, f"{group} Δ").stats[i]
                assert delta.mean == pytest.approx(leaky - honest, abs=1e-12)
                assert_interval(delta, (sub[leaky_key] - sub[honest_key]).groupby(sub["seed"]).mean().tolist())  # paired over seeds
    # leaky numbers are chosen on test: nothing is bold, nothing is tested against a reference
    assert all(not any(c.best) and not any(c.versus) for c in table.cells.values())
    texts = {fmt: render.render(table, fmt) for fmt in render.FORMATS}
    for fmt in ("md", "html", "latex"):
        assert LEAKY_LABEL in texts[fmt] and "Mean LEAKY" in texts[fmt]  # the header, and the label in the caption
    cell_lines = [line for line in texts["md"].splitlines() if line.startswith("|")]  # the caption line is bold as in every table
    assert not any("**" in line for line in cell_lines) and "<b>" not in texts["html"] and r"\textbf" not in texts["latex"]
    assert not any(render.SIGNIFICANT in line for line in cell_lines) and "$^{*}$" not in texts["latex"]  # no paired-test marker
    assert r"Mean $\Delta$" in texts["latex"] and "Δ" not in texts["latex"]
    tidy = pd.read_csv(pd.io.common.StringIO(texts["csv"]))
    assert len(tidy) == len(table.rows) * len(table.columns) * 2 and not tidy["best"].any()
    shown = tidy[(tidy["column"] == "Mean LEAKY") & (tidy["metric"] == "image AUROC")].set_index("row")["mean"]
    assert shown[VARIANTS["haloae"].label] == pytest.approx(100 * frame.loc[frame["variant"] == "haloae", LEAKY_IMAGE_AUROC].mean())
    # a cell metric without a leaky counterpart (AUPRO) is left out of this table only
    assert tables.build(frame, ["leak"], metrics=("image_auroc", "aupro"))[0].metrics == ("image AUROC",)
    # a configuration run without the paper protocol: honest only, and the notes say so
    frame.loc[frame["variant"] == "equal_weights", [LEAKY_IMAGE_AUROC, LEAKY_PIXEL_AUROC]] = np.nan
    [mixed] = tables.build(frame, ["leak"])
    assert mixed.cell(VARIANTS["equal_weights"].label, "Mean LEAKY").stats == (None, None)
    assert mixed.cell(VARIANTS["equal_weights"].label, "Mean honest").stats[0] == table.cell(VARIANTS["equal_weights"].label, "Mean honest").stats[0]
    assert any(n.startswith(f"12 of 24 FINISHED runs have no {LEAKY_IMAGE_AUROC}") for n in mixed.notes)


def test_leak_table_needs_a_sweep_run_with_the_paper_protocol(store):
    with pytest.raises(SweepQueryError, match=rf"{LEAKY_IMAGE_AUROC}.*eval.protocol: paper"):
        tables.build(hand_frame({"haloae": 0.0}), ["leak"])
    result = CliRunner().invoke(main, ["tables", "--sweep", "fake", "--storage", str(store[0].storage), "--table", "leak", "--no-stats"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and LEAKY_IMAGE_AUROC in errors[0] and "eval.protocol: paper" in errors[0]
    everything = CliRunner().invoke(main, ["tables", "--sweep", "fake", "--storage", str(store[0].storage), "--no-stats"])
    assert everything.exit_code == 0 and "LEAKY" not in everything.output  # all: no leak table without leaky numbers


def test_tables_all_adds_the_leak_table_of_a_paper_protocol_sweep(tmp_path):
    trials = fake_trials(categories=("synth_disc",), variants=("haloae", "equal_weights"))
    for trial in trials:
        if trial.status == "FINISHED":
            trial.final |= {LEAKY_IMAGE_AUROC: min(1.0, trial.final["test/image_auroc"] + 0.1), LEAKY_PIXEL_AUROC: trial.final["test/pixel_auroc"]}
    logged = log_sweep(tmp_path, "paper", trials, "variant")
    result = CliRunner().invoke(main, ["tables", "--sweep", "paper", "--storage", str(logged.storage), "--no-stats", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "out" / "leak.md").read_text()
    assert LEAKY_LABEL in md and "Mean LEAKY" in md and not any("**" in line for line in md.splitlines() if line.startswith("|"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunsWarning)
        [table] = tables.build(load_runs("paper", storage=logged.storage), ["leak"])
    expected = np.mean([t.final[LEAKY_IMAGE_AUROC] for t in trials if t.cfg.variant == "haloae" and LEAKY_IMAGE_AUROC in t.final])
    assert table.cell(VARIANTS["haloae"].label, "Mean LEAKY").stats[0].mean == pytest.approx(expected, abs=1e-12)
    assert render.LEFT_OUT in table.cell(VARIANTS["haloae"].label, "Mean LEAKY").marks  # its FAILED run is marked, as elsewhere
