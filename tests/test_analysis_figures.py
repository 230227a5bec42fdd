# SPDX-License-Identifier: Apache-2.0
"""``haloae figures --format png|pdf|svg``: every figure in the asked file type, and the overlays of
a real tiny run with the ground truth's contour and a colour bar (read back from the SVG)."""

from __future__ import annotations

import warnings

import pytest
from click.testing import CliRunner

from analysis.figures import CONTOUR_COLOUR, default_images, make_figures, overlay_figure
from analysis.runs import RunsWarning, SweepQueryError, load_runs
from haloae.cli import main
from tests.helpers.analysis import fake_trials, log_sweep

MAGIC = {"png": b"\x89PNG", "pdf": b"%PDF", "svg": b"<?xml"}


@pytest.fixture(scope="module")
def store(tmp_path_factory, trained):
    """Sweep "fake" (2 variants x 2 categories x 2 seeds) and sweep "trained" (a real tiny run)."""
    storage = tmp_path_factory.mktemp("sweeps")
    fake = log_sweep(storage, "fake", fake_trials(variants=("haloae", "equal_weights")), "variant")
    root, trial = trained
    log_sweep(storage, "trained", [trial], None, data_root=root, tracking_uri=fake.tracking_uri)
    return fake


@pytest.mark.parametrize("fmt", ["pdf", "svg"])
def test_figures_in_the_asked_format(store, tmp_path, fmt):
    result = CliRunner().invoke(main, ["figures", "--sweep", "fake", "--storage", str(store.storage), "--out", str(tmp_path),
                                       "--format", fmt, "--no-log"])  # fmt: skip
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written and all(name.endswith(f".{fmt}") for name in written), written
    assert {"bars_test-image_auroc", "category_bars_test-image_auroc", "val_test_test-image_auroc"} <= {n.rsplit(".", 1)[0] for n in written}
    for path in tmp_path.iterdir():
        assert path.read_bytes()[: len(MAGIC[fmt])] == MAGIC[fmt]
    assert "CD diagram not drawn" in result.output  # 2 configurations x 2 categories: the reason instead


def test_an_unknown_format_is_one_line_exit_2(store, tmp_path):
    result = CliRunner().invoke(main, ["figures", "--sweep", "fake", "--storage", str(store.storage), "--out", str(tmp_path), "--format", "jpg"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and errors[0].startswith("Error: --format: unknown 'jpg'") and errors[0].endswith("valid: png, pdf, svg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunsWarning)
        runs = load_runs("fake", tracking_uri=store.tracking_uri)
    with pytest.raises(SweepQueryError, match="figure format: unknown 'eps'"):
        make_figures(runs, tmp_path, fmt="eps", log=False)


def test_overlays_show_the_ground_truth_contour_and_a_colour_bar(store, trained, tmp_path):
    root, trial = trained
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunsWarning)
        runs = load_runs("trained", tracking_uri=store.tracking_uri)
    images = default_images(root, "synth_disc", limit=2)  # a defect image first: it has a mask
    svg = overlay_figure(runs, trial.run_id, tmp_path, images, fmt="svg").read_text()
    assert f"stroke: {CONTOUR_COLOUR}" in svg  # the mask's contour line
    assert "anomaly map value" in svg  # the colour bar's label (matplotlib keeps text as a comment)
