# SPDX-License-Identifier: Apache-2.0
"""haloae.bundle: a checkpoint as a self-contained folder that scores images as evaluation does,
verified file by file, and never a verdict from a NaN score."""

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from haloae.bundle import (
    MANIFEST,
    SCORER,
    WEIGHTS,
    BundleError,
    PredictResult,
    choose_scoring,
    load_bundle,
    read_image,
    save_bundle,
)
from haloae.category_data import prepare_data
from haloae.checkpoint import load_checkpoint
from haloae.cli import main
from haloae.data import load_image
from haloae.evaluation import evaluate
from haloae.scoring import DEFAULT_SCORING
from tests.helpers.crafted import DAMAGES, damage, write_code_pickle

CATEGORY = "synth_disc"




@pytest.fixture(scope="module")
def bundle_dir(trained, tmp_path_factory):
    _, trial = trained
    out = tmp_path_factory.mktemp("bundle")
    meta = {"category": CATEGORY, "source_run_id": "abc", "threshold_method": "test", "map_range": (0.0, 1.0), "extra": 1}
    return save_bundle(trial.run_dir / "best.pt", out, threshold=0.5, metadata=meta)


def test_bundle_holds_state_dicts_and_a_complete_manifest(bundle_dir):
    info = json.loads((bundle_dir / MANIFEST).read_text())
    assert info["format"] == "haloae-bundle" and info["scoring"] == DEFAULT_SCORING
    assert info["threshold"] == 0.5 and info["threshold_method"] == "test" and info["map_range"] == [0.0, 1.0]
    assert info["category"] == CATEGORY and info["source_run_id"] == "abc" and info["metadata"] == {"extra": 1}
    assert info["image_size"] == 32 and info["normalization"]["mean"] == [0.485, 0.456, 0.406]
    for name in ("weights.pt", "scorer.pt"):  # tensors only: loadable with weights_only=True
        state = torch.load(bundle_dir / name, weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_scores_equal_the_trials_own_evaluation(trained, bundle_dir):
    root, trial = trained
    model, scorer, ckpt = load_checkpoint(trial.run_dir / "best.pt")
    test = prepare_data(model.cfg, root, CATEGORY).test
    metrics, maps = evaluate(model, scorer, test, None, torch.device("cpu"), 4, "test", keep_maps=True)
    expected = maps[DEFAULT_SCORING].flatten(1).mean(1)  # the evaluation's image score: the map mean
    result = load_bundle(bundle_dir).predict(test.paths)
    assert isinstance(result, PredictResult)
    torch.testing.assert_close(result.scores, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.maps, maps[DEFAULT_SCORING][:, 0], atol=1e-5, rtol=0)
    assert result.decisions.dtype == torch.bool and torch.equal(result.decisions, result.scores > 0.5)
    assert metrics["test/image_auroc"] == pytest.approx(trial.final["test/image_auroc"], abs=1e-9)


def test_paths_pil_images_and_uint8_tensors_are_preprocessed_alike(trained, bundle_dir):
    root, _ = trained
    paths = sorted((root / CATEGORY / "test" / "good").glob("*.png"))[:2]
    predictor = load_bundle(bundle_dir)
    by_path = predictor.predict(paths).scores
    pils = [Image.open(p) for p in paths]
    torch.testing.assert_close(predictor.predict(pils).scores, by_path)
    uint8 = torch.stack([torch.from_numpy(np.array(p.convert("RGB"))).permute(2, 0, 1) for p in pils])
    torch.testing.assert_close(predictor.predict(uint8).scores, by_path)
    big = pils[0].convert("RGB").resize((48, 48))  # a resize goes through the same PIL path as evaluation
    big.save(root / "big.png")
    torch.testing.assert_close(read_image(big, 32), load_image(root / "big.png", 32))


def test_unreadable_image_and_bad_bundle_are_one_line_errors(tmp_path, bundle_dir):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(BundleError, match="broken.png: unreadable image") as err:
        load_bundle(bundle_dir).predict([bad])
    assert "\n" not in str(err.value)
    with pytest.raises(BundleError, match="not a HaloAE bundle"):
        load_bundle(tmp_path)


def test_choose_scoring_follows_evaluation():
    assert choose_scoring(["cls", "afm", "afm_norm_filter"]) == "afm_norm_filter"
    assert choose_scoring(["cls", "aim_norm_filter"]) == "aim_norm_filter"  # first in sorted order, as evaluate()


def test_loads_and_predicts_without_mlflow_or_ray(trained, bundle_dir):
    root, _ = trained
    image = next((root / CATEGORY / "test" / "good").glob("*.png"))
    code = (
        "import sys\n"
        "from haloae.bundle import load_bundle\n"
        f"r = load_bundle({str(bundle_dir)!r}).predict([{str(image)!r}])\n"
        "assert r.scores.shape == (1,) and r.maps.shape == (1, 32, 32)\n"
        "heavy = [m for m in ('mlflow', 'ray', 'optuna') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _copy(bundle_dir, tmp_path):
    return shutil.copytree(bundle_dir, tmp_path / "bundle")


def _rehash(folder):
    """Record the files' current sha256 in bundle.json, as a consistent (if hostile) bundle would."""
    info = json.loads((folder / MANIFEST).read_text())
    info["files"] = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in (WEIGHTS, SCORER)}
    (folder / MANIFEST).write_text(json.dumps(info))


def test_manifest_records_the_sha256_of_each_file(bundle_dir):
    files = json.loads((bundle_dir / MANIFEST).read_text())["files"]
    assert files == {name: hashlib.sha256((bundle_dir / name).read_bytes()).hexdigest() for name in (WEIGHTS, SCORER)}


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_weights_are_refused_naming_the_file(bundle_dir, tmp_path, how):
    folder = _copy(bundle_dir, tmp_path)
    damage(folder / WEIGHTS, how)
    with pytest.raises(BundleError) as err:
        load_bundle(folder)
    assert str(err.value) == f"{folder / WEIGHTS}: corrupted (its sha256 differs from the one in {MANIFEST})"


def test_a_crafted_weights_file_is_refused_even_with_a_matching_sha256(bundle_dir, tmp_path):
    folder, marker = _copy(bundle_dir, tmp_path), tmp_path / "pwned"
    write_code_pickle(folder / WEIGHTS, marker)
    _rehash(folder)
    with pytest.raises(BundleError, match=f"^{folder / WEIGHTS}: refused: it holds a pickled object"):
        load_bundle(folder)
    assert not marker.exists()


def test_predict_exits_2_on_corrupted_weights_and_on_nan_scores(trained, bundle_dir, tmp_path):
    """Before: ``score nan normal`` with exit 0. Now one line and exit 2, both for damaged bytes and
    for intact NaN weights (a diverged model), and no predictions.csv."""
    root, _ = trained
    image = str(next((root / CATEGORY / "test" / "good").glob("*.png")))
    folder = _copy(bundle_dir, tmp_path)
    damage(folder / WEIGHTS, "overwritten")
    for expected in (f"{folder / WEIGHTS}: corrupted", "non-finite"):
        result = CliRunner().invoke(main, ["predict", "--model", str(folder), image, "--out", str(tmp_path / "pred")])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], result.stderr
        assert not (tmp_path / "pred" / "predictions.csv").exists()
        state = torch.load(bundle_dir / WEIGHTS, weights_only=True)  # then: intact bytes, NaN weights
        torch.save({k: v.float().fill_(float("nan")) if v.is_floating_point() else v for k, v in state.items()}, folder / WEIGHTS)
        _rehash(folder)


def test_a_bundle_of_an_older_haloae_is_refused_with_what_to_do(bundle_dir, tmp_path):
    folder = _copy(bundle_dir, tmp_path)
    info = json.loads((folder / MANIFEST).read_text())
    info.update(version=1, files={"weights": WEIGHTS, "scorer": SCORER})
    (folder / MANIFEST).write_text(json.dumps(info))
    with pytest.raises(BundleError, match="v1, expected 'haloae-bundle' v2 .an older haloae's, without checksums: export it again"):
        load_bundle(folder)
