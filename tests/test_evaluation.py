# SPDX-License-Identifier: Apache-2.0
"""Per-epoch validation computes what the checkpoint choice and the curves need; the final
evaluation of best.pt is complete and gives the numbers of the full evaluation of that checkpoint;
backbone features of an image set are computed once per run, and read from a store after."""

import pytest
import torch

from haloae.category_data import prepare_data
from haloae.checkpoint import load_checkpoint, read_checkpoint
from haloae.config import HaloAEConfig
from haloae.data import normalize
from haloae.evaluation import (
    EpochValidation,
    _forward,
    epoch_norm_indices,
    evaluate,
    evaluate_splits,
    fit_scorer,
)
from haloae.features import FeatureCache, RunFeatures
from haloae.metrics import evaluate_maps
from haloae.model import HaloAE
from haloae.scoring import AnomalyScorer
from haloae.synth import generate
from haloae.train import finish, fit, fit_epochs, fit_standardization
from haloae.vocab import BEST_EPOCH, BEST_FILE, DEFAULT_OBJECTIVE, VAL

CATEGORY = "synth_disc"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root, categories=[CATEGORY], size=64, n_train=12, n_test_good=4, n_test_defect_per_type=2, seed=0)
    return root


def _cfg(**overrides):
    base = {"model.backbone.weights": "random", "train.epochs": 2, "train.steps_per_epoch": 1, "train.batch_size": 2}
    return HaloAEConfig.from_overrides("tiny", {**base, **overrides})


def _fresh(cfg, data):
    torch.manual_seed(0)
    model = HaloAE(cfg)
    fit_standardization(model, data.train_good, CPU, 16)
    return model, AnomalyScorer(cfg.model.image_size)


def test_epoch_norm_images_are_a_fixed_even_spread():
    assert epoch_norm_indices(167, 16).tolist() == sorted(set(epoch_norm_indices(167, 16).tolist()))
    assert len(epoch_norm_indices(167, 16)) == 16 and epoch_norm_indices(167, 16)[[0, -1]].tolist() == [0, 166]
    assert epoch_norm_indices(10, 0).tolist() == list(range(10)) == epoch_norm_indices(10, 99).tolist()
    assert epoch_norm_indices(10, 1).tolist() == [0]


def test_fm_only_forward_skips_blocks_d_and_e_with_the_same_fm_hat():
    cfg = _cfg()
    model = HaloAE(cfg).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full, lean = model(x), _forward(model, x, None, ("afm", "afm_norm_filter"))
    assert lean.im_hat is None and lean.logits is None
    torch.testing.assert_close(lean.fm_hat, full.fm_hat, rtol=0, atol=0)
    assert _forward(model, x, None, ("afm", "cls")).logits is not None  # cls needs block E


def test_evaluate_maps_leaves_out_what_it_is_not_asked_for():
    labels, masks = torch.tensor([0, 1, 1]), torch.zeros(3, 1, 8, 8)
    masks[1:, :, 2:5, 2:5] = 1
    maps = torch.rand(3, 1, 8, 8)
    full = evaluate_maps(labels, masks, ["good", "a", "b"], maps)
    cheap = evaluate_maps(labels, masks, ["good", "a", "b"], maps, include=("pixel_auroc",))
    assert set(cheap) == {"image_auroc", "image_auroc_max", "pixel_auroc"} < set(full)
    assert all(cheap[k] == full[k] for k in cheap)


def test_epoch_validation_computes_the_objective_and_cheap_aurocs_only(synth_root):
    """Old code: every Table S1 scoring, AUPRO and per-defect AUROC every epoch."""
    cfg = _cfg()
    data = prepare_data(cfg, synth_root, CATEGORY)
    model, scorer = _fresh(cfg, data)
    fit_scorer(model, scorer, data.train_good, None, CPU, 16)  # both maps: the full evaluation below needs them
    metrics = EpochValidation(model, scorer, data, CPU, 16, DEFAULT_OBJECTIVE)()  # refits the fm map: the same
    assert {"val/image_auroc", "val/image_auroc_max", "val/image_auroc_mean", "val/pixel_auroc"} <= set(metrics)
    assert not [
        k for k in metrics if "aupro" in k or "/defect/" in k or k.startswith(("val/aim", "val/cls", "val/afm/"))
    ]
    full, _ = evaluate(
        model, scorer, data.val, FeatureCache(model, CPU, 16).get("val", data.val.images), CPU, 16, "val"
    )
    assert all(metrics[k] == full[k] for k in metrics)  # the same numbers, for the same map
    aupro = EpochValidation(model, scorer, data, CPU, 16, "val/afm/aupro")()
    assert "val/afm/aupro" in aupro and "val/afm/image_auroc" in aupro and not [k for k in aupro if "/defect/" in k]
    defect = next(k for k in full if k.startswith("val/aim_ssim/defect/"))
    assert defect in EpochValidation(model, scorer, data, CPU, 16, defect)()
    unknown = EpochValidation(model, scorer, data, CPU, 16, "val/pixel_aurok")  # the caller's error lists what is known
    assert unknown() == full and unknown.full


def test_epoch_map_comes_from_the_fixed_subset_and_full_mode_is_the_old_loop(synth_root):
    cfg = _cfg(**{"eval.epoch_norm_images": 3})
    data = prepare_data(cfg, synth_root, CATEGORY)
    model, scorer = _fresh(cfg, data)
    EpochValidation(model, scorer, data, CPU, 16, DEFAULT_OBJECTIVE)()
    expected = AnomalyScorer(cfg.model.image_size)
    fit_scorer(model, expected, data.train_good.images[epoch_norm_indices(len(data.train_good), 3)], None, CPU, 16)
    torch.testing.assert_close(scorer.mean_fm_map, expected.mean_fm_map, rtol=0, atol=0)

    old = _cfg(**{"eval.epoch_metrics": "full", "eval.epoch_norm_images": 0})
    model, scorer = _fresh(old, data)
    metrics = EpochValidation(model, scorer, data, CPU, 16, DEFAULT_OBJECTIVE)()
    reference = AnomalyScorer(old.model.image_size)
    fm = FeatureCache(model, CPU, 16)
    fit_scorer(model, reference, data.train_good, fm.get("tg", data.train_good.images), CPU, 16)
    full, _ = evaluate(model, reference, data.val, fm.get("val", data.val.images), CPU, 16, "val")
    assert metrics == full


def test_finish_gives_the_full_evaluation_of_the_same_checkpoint(synth_root, tmp_path):
    """best.pt written with a per-epoch map of 2 images: finish's numbers are those of the old
    path (map fitted on every train/good image, then validation and test), to the bit, and best.pt
    then holds that map. Old code: finish scored with the stored map."""
    cfg = _cfg(**{"eval.epoch_norm_images": 2})
    data = prepare_data(cfg, synth_root, CATEGORY)
    for _ in fit_epochs(cfg, data, tmp_path, progress=False):
        pass
    model, epoch_scorer, best = load_checkpoint(tmp_path / BEST_FILE)
    result = finish(tmp_path, data, CPU)

    reference = AnomalyScorer(cfg.model.image_size)
    fm = FeatureCache(model, CPU, 16).get("train_good", data.train_good.images)
    fit_scorer(model, reference, data.train_good, fm, CPU, 16)
    expected, _ = evaluate_splits(model, reference, data, CPU, 16)
    assert not torch.equal(epoch_scorer.mean_fm_map, reference.mean_fm_map)  # the epoch's map was a subset's
    assert {k: v for k, v in result.metrics.items() if k != BEST_EPOCH} == expected

    stored = read_checkpoint(tmp_path / BEST_FILE)
    torch.testing.assert_close(stored["scorer"]["mean_fm_map"], reference.mean_fm_map, rtol=0, atol=0)
    torch.testing.assert_close(stored["scorer"]["mean_im_map"], reference.mean_im_map, rtol=0, atol=0)
    assert stored["epoch"] == best["epoch"] and stored["metrics"] == best["metrics"]
    assert finish(tmp_path, data, CPU).metrics == result.metrics  # again: the same numbers


def _count_batches(monkeypatch, batch: torch.Tensor | None = None) -> list[int]:
    """How often ``batch`` (normalised images) goes through the backbone, in every model instance
    (finish loads its own from best.pt); without ``batch``, how many images do."""
    seen, features = [0], HaloAE.features

    def counting(self, x):
        seen[0] += len(x) if batch is None else x.shape == batch.shape and torch.equal(x, batch)
        return features(self, x)

    monkeypatch.setattr(HaloAE, "features", counting)
    return seen


def test_one_run_computes_the_validation_features_once(synth_root, tmp_path, monkeypatch):
    """Epoch validation (every epoch) and the final evaluation of best.pt share one set of val
    features. Old code: once in the first epoch's validation and again in evaluate_splits."""
    cfg = _cfg()
    data = prepare_data(cfg, synth_root, CATEGORY)
    seen = _count_batches(monkeypatch, normalize(data.val.images[:16]))
    result = fit(cfg, data, tmp_path, progress=False)
    assert seen[0] == 1 and "test/image_auroc" in result.metrics


class DictStore:
    """A ``FeatureStore`` in memory: what ``sweeps.datacache.FeatureDiskStore`` is on disk."""

    def __init__(self) -> None:
        self.saved: dict[str, torch.Tensor] = {}

    def load(self, key: str) -> torch.Tensor | None:
        return self.saved.get(key)

    def save(self, key: str, features: torch.Tensor) -> None:
        self.saved[key] = features


def test_a_store_serves_another_instance_of_the_backbone_and_never_a_training_one(synth_root, monkeypatch):
    """Another run (or best.pt's model) with the same backbone reads the stored set; a backbone with
    a parameter that trains is computed on every call and never stored. Old code: no store."""
    cfg = _cfg()
    data = prepare_data(cfg, synth_root, CATEGORY)
    model, _ = _fresh(cfg, data)
    store = DictStore()
    first = FeatureCache(model, CPU, 16, RunFeatures(store)).get(VAL, data.val.images)
    seen = _count_batches(monkeypatch)
    other = HaloAE(cfg.replace(**{"optim.lr": 1e-3, "model.block_size": 3}))  # other knobs after the backbone
    other.backbone.load_state_dict(model.backbone.state_dict())
    assert torch.equal(FeatureCache(other, CPU, 16, RunFeatures(store)).get(VAL, data.val.images), first)
    assert seen[0] == 0 and len(store.saved) == 1
    next(model.backbone.parameters()).requires_grad_(True)
    cache = FeatureCache(model, CPU, 16, RunFeatures(store))
    assert torch.equal(cache.get(VAL, data.val.images), first) and torch.equal(cache.get(VAL, data.val.images), first)
    assert seen[0] == 2 * len(data.val) and len(store.saved) == 1
