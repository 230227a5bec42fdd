# SPDX-License-Identifier: Apache-2.0
"""``eval.protocol: paper``: the published evaluation's numbers differ from the honest ones exactly as
defined (flipped AUC, map on test/good, checkpoint chosen on test), stay under leaky keys, leave the
honest numbers untouched, and are refused as a sweep objective and an export criterion."""

import math

import pytest
import torch

from haloae.category_data import prepare_data
from haloae.checkpoint import read_checkpoint
from haloae.cli import _print_metrics
from haloae.config import HaloAEConfig
from haloae.data import normalize
from haloae.errors import ConfigError
from haloae.model import HaloAE
from haloae.paper_protocol import (
    flipped,
    paper_checkpoint_epochs,
    paper_final_metrics,
    score_published,
    subset,
)
from haloae.scoring import fm_error_map
from haloae.synth import generate
from haloae.train import fit
from haloae.vocab import (
    BEST_FILE,
    CHECKPOINT_FILE,
    LEAKY_BEST_EPOCH,
    LEAKY_CHECKPOINT_IMAGE_AUROC,
    LEAKY_IMAGE_AUROC,
    LEAKY_LABEL,
    LEAKY_PIXEL_AUROC,
    METRICS_FILE,
    is_leaky,
)

CATEGORY = "synth_disc"


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root, categories=[CATEGORY], size=32, n_train=8, n_test_good=3, n_test_defect_per_type=1, seed=0)
    return root


def _cfg(**overrides):
    base = {"train.epochs": 3, "train.steps_per_epoch": 1, "train.batch_size": 2, "train.device": "cpu"}
    return HaloAEConfig.from_overrides("tiny", {**base, **overrides})


def test_the_saved_checkpoints_are_the_last_three_counted_back_from_the_last_epoch():
    assert paper_checkpoint_epochs(251, 10) == (230, 240, 250)  # the code's last three saves
    assert paper_checkpoint_epochs(8, 1) == (5, 6, 7)
    assert paper_checkpoint_epochs(5, 2) == (0, 2, 4)
    assert paper_checkpoint_epochs(2, 10) == (1,)


def test_protocol_is_a_checked_knob():
    assert HaloAEConfig().eval.protocol == "honest"
    with pytest.raises(ConfigError, match=r"^eval.protocol: unknown 'papr'; valid: honest, paper$"):
        _cfg(**{"eval.protocol": "papr"})
    with pytest.raises(ConfigError, match=r"^eval.paper_checkpoint_every: must be >= 1, got 0$"):
        _cfg(**{"eval.paper_checkpoint_every": 0})


def test_an_inverted_ranking_is_flipped_into_a_good_one(synth_root):
    """Crafted labels: the images the model scores lowest are called anomalous, so the honest AUROC
    is below 0.5; the paper protocol reports 1 - AUC."""
    cfg = _cfg(**{"eval.scoring": "afm"})  # the raw map: no normalisation, only the flip differs
    torch.manual_seed(0)
    model = HaloAE(cfg).eval()
    crafted = prepare_data(cfg, synth_root, CATEGORY).test
    with torch.no_grad():
        out = model(normalize(crafted.images))
    per_image = fm_error_map(out.fm, out.fm_hat).flatten(1).mean(1)  # the afm image score (map mean)
    crafted.labels = (per_image <= per_image.median()).long()  # the lowest half "anomalous": inverted
    honest = score_published(model, crafted, "cpu", flip=False, pixel_size=0)["image_auroc"]
    leaky = score_published(model, crafted, "cpu", pixel_size=0)["image_auroc"]
    assert honest == 0.0 and leaky == 1.0
    assert flipped(0.2) == 0.8 and flipped(0.7) == 0.7 and math.isnan(flipped(math.nan))


def test_the_normalisation_map_comes_from_the_test_sets_good_images(synth_root):
    cfg = _cfg()
    torch.manual_seed(0)
    model = HaloAE(cfg)
    data = prepare_data(cfg, synth_root, CATEGORY)
    test_good = subset(data.test, data.test.labels == 0)
    default = score_published(model, data.test, "cpu")
    assert default == score_published(model, data.test, "cpu", map_from=test_good)
    assert default != score_published(model, data.test, "cpu", map_from=data.train_good)


def test_paper_protocol_chooses_on_test_and_leaves_the_honest_numbers_unchanged(synth_root, tmp_path):
    honest_cfg = _cfg()
    paper_cfg = _cfg(**{"eval.protocol": "paper", "eval.paper_checkpoint_every": 1})
    data = prepare_data(honest_cfg, synth_root, CATEGORY)
    honest = fit(honest_cfg, data, tmp_path / "honest", progress=False)
    paper = fit(paper_cfg, data, tmp_path / "paper", progress=False)
    # honest numbers and weights: identical
    assert {k: v for k, v in paper.metrics.items() if not is_leaky(k)} == honest.metrics
    a, b = (read_checkpoint(tmp_path / run / CHECKPOINT_FILE) for run in ("honest", "paper"))
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    # the paper protocol scored the checkpoints of epochs 0, 1, 2 on test and reports the best
    scored = {m["epoch"]: m[LEAKY_CHECKPOINT_IMAGE_AUROC] for m in b["history"]}
    assert sorted(scored) == [0, 1, 2]
    chosen = max(scored, key=lambda e: (scored[e], e))
    assert paper.metrics[LEAKY_IMAGE_AUROC] == scored[chosen] and paper.metrics[LEAKY_BEST_EPOCH] == chosen
    assert LEAKY_PIXEL_AUROC in paper.metrics and not any(is_leaky(k) for k in honest.metrics)
    assert all(v >= 0.5 for v in scored.values())  # flipped
    assert (tmp_path / "paper" / METRICS_FILE).read_text().count("leaky/") == 3
    assert (tmp_path / "paper" / BEST_FILE).is_file()


def test_final_choice_is_the_best_scored_checkpoint_by_test_image_auroc():
    history = [
        {"epoch": 0, "val/image_auroc": 0.9},
        {"epoch": 1, LEAKY_CHECKPOINT_IMAGE_AUROC: 0.7, "leaky/checkpoint/pixel_auroc": 0.6},
        {"epoch": 2, LEAKY_CHECKPOINT_IMAGE_AUROC: 0.8, "leaky/checkpoint/pixel_auroc": 0.5},
        {"epoch": 3, LEAKY_CHECKPOINT_IMAGE_AUROC: 0.8, "leaky/checkpoint/pixel_auroc": 0.4},
    ]
    assert paper_final_metrics(history) == {LEAKY_IMAGE_AUROC: 0.8, LEAKY_PIXEL_AUROC: 0.4, LEAKY_BEST_EPOCH: 3.0}
    assert paper_final_metrics(history[:1]) == {}  # an honest run: nothing leaky


def test_leaky_numbers_are_printed_with_their_label(capsys):
    _print_metrics({"test/image_auroc": 0.6, LEAKY_IMAGE_AUROC: 0.9, LEAKY_BEST_EPOCH: 2.0})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("test/image_auroc") and LEAKY_LABEL not in lines[0]
    assert all(LEAKY_LABEL in line for line in lines[1:]) and len(lines) == 3


# ---------------------------------------------------------------------- refusals
def test_a_leaky_metric_is_refused_as_a_sweep_objective(tmp_path):
    """Old code: refused only as 'not a validation metric', without saying it is the leaky protocol's."""
    from sweeps.errors import SpecError
    from sweeps.loading import load_spec

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: t\ndata: {synthetic: {categories: [synth_disc]}}\npreset: tiny\n"
        f"overrides: {{eval.protocol: paper}}\nobjective: {{metric: {LEAKY_IMAGE_AUROC}}}\n"
    )
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    message = str(info.value)
    assert "\n" not in message and "objective.metric:" in message
    assert f"{LEAKY_IMAGE_AUROC} is a leaky paper-protocol number" in message


def test_a_leaky_metric_is_refused_as_an_export_criterion(tmp_path):
    """Refused before any store is read (old code: looked for the sweep first)."""
    from analysis.export import export_sweep
    from analysis.runs import SweepQueryError

    with pytest.raises(SweepQueryError, match=rf"^objective: {LEAKY_IMAGE_AUROC} is a leaky paper-protocol number"):
        export_sweep("no-such-sweep", tmp_path / "out", storage=tmp_path, objective=LEAKY_IMAGE_AUROC)
