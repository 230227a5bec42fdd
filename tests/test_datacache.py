# SPDX-License-Identifier: Apache-2.0
"""sweeps.datacache: entries of tensors and plain values, verified, in a folder private to the user;
the backbone features beside them, read by a later trial only for the same data and extractor."""

from pathlib import Path

import pytest
import torch

from haloae.config import HaloAEConfig
from haloae.features import FeatureCache, RunFeatures
from haloae.model import HaloAE
from haloae.synth import generate
from haloae.train import finish, fit_epochs
from haloae.vocab import BEST_EPOCH
from sweeps.cache_dir import DataCacheError, private_dir
from sweeps.datacache import cache_key, cached_category_data, feature_store
from tests.helpers.crafted import damage, write_code_pickle

CATEGORY = "synth_disc"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate(root, categories=[CATEGORY], size=32, n_train=6, n_test_good=2, n_test_defect_per_type=1, seed=0)
    return root


@pytest.fixture(scope="module")
def cfg():
    return HaloAEConfig.from_overrides("tiny", {"model.backbone.weights": "random"})


def _entry(cfg, root, cache):
    return cache / f"{CATEGORY}-{cache_key(cfg, root, CATEGORY)[:24]}.pt"


def test_an_entry_is_tensors_and_plain_values_and_reads_back_equal(cfg, root, tmp_path):
    built = cached_category_data(cfg, root, CATEGORY, tmp_path / "cache")
    raw = torch.load(_entry(cfg, root, tmp_path / "cache"), weights_only=True)  # no pickled objects in it
    assert raw["key"] == cache_key(cfg, root, CATEGORY) and raw["data"]["category"] == CATEGORY
    read = cached_category_data(cfg, root, CATEGORY, tmp_path / "cache")
    assert torch.equal(read.train.images, built.train.images) and read.train.paths == built.train.paths
    for name in ("train_good", "val", "test"):
        a, b = getattr(read, name), getattr(built, name)
        assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks) and torch.equal(a.labels, b.labels)
        assert (a.defects, a.paths) == (b.defects, b.paths)
    torch.testing.assert_close(read.train[3][1], built.train[3][1], rtol=0, atol=0)  # same augmentation stream


def test_a_crafted_entry_is_refused_without_running_it(cfg, root, tmp_path):
    """What a sweep trial reads: a pickle that runs a command, planted under the entry's name."""
    cache, marker = private_dir(tmp_path / "cache"), tmp_path / "pwned"
    entry = write_code_pickle(_entry(cfg, root, cache), marker)
    with pytest.raises(DataCacheError) as err:
        cached_category_data(cfg, root, CATEGORY, cache)
    assert str(err.value).startswith(f"{entry}: refused: it holds a pickled object (posix.system)")
    assert "\n" not in str(err.value) and not marker.exists()


def test_a_damaged_or_misnamed_entry_is_refused_naming_it(cfg, root, tmp_path):
    cache = tmp_path / "cache"
    cached_category_data(cfg, root, CATEGORY, cache)
    entry = damage(_entry(cfg, root, cache), "overwritten")
    with pytest.raises(DataCacheError, match=f"^{entry}: corrupted .*; remove it to rebuild the entry$"):
        cached_category_data(cfg, root, CATEGORY, cache)
    other = cfg.replace(**{"train.seed": 1})
    cached_category_data(other, root, CATEGORY, cache)
    _entry(other, root, cache).replace(entry)  # another key's data under this key's name
    with pytest.raises(DataCacheError, match=f"^{entry}: a data cache entry for other data"):
        cached_category_data(cfg, root, CATEGORY, cache)


def test_full_size_images_have_their_own_entry_and_read_back_at_full_size(cfg, tmp_path):
    root = tmp_path / "data"  # images larger than the model's 32 px, so the two forms differ
    generate(root, categories=[CATEGORY], size=48, n_train=6, n_test_good=2, n_test_defect_per_type=1, seed=0)
    full = cfg.replace(**{"cutpaste.image_jitter_at": "full_size"})
    assert cache_key(full, root, CATEGORY) != cache_key(cfg, root, CATEGORY)
    cache = tmp_path / "cache"
    built = cached_category_data(full, root, CATEGORY, cache)
    read = cached_category_data(full, root, CATEGORY, cache)
    assert [tuple(image.shape) for image in read.train.images] == [(3, 48, 48)] * len(read.train)
    assert all(torch.equal(a, b) for a, b in zip(read.train.images, built.train.images, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(read.train[3], built.train[3], strict=True))
    resized = cached_category_data(cfg, root, CATEGORY, cache)  # the other entry, at the model's size
    assert resized.train.images.shape == (len(resized.train), 3, 32, 32)


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    """Enough images for finite AUROCs on every split (a metrics dict with NaN never equals itself)."""
    root = tmp_path_factory.mktemp("run-data")
    generate(root, categories=[CATEGORY], size=64, n_train=12, n_test_good=4, n_test_defect_per_type=2, seed=0)
    return root


def _count_images(monkeypatch) -> list[int]:
    """Images through the backbone, in every model instance (finish loads its own from best.pt)."""
    seen, features = [0], HaloAE.features

    def counting(self, x):
        seen[0] += len(x)
        return features(self, x)

    monkeypatch.setattr(HaloAE, "features", counting)
    return seen


def test_final_metrics_are_the_same_with_the_node_store_and_a_second_trial_runs_no_backbone(
    run_root, tmp_path, monkeypatch
):
    """Old code: no store, every trial computes every set's features again."""
    tiny = {"model.backbone.weights": "random", "train.epochs": 2, "train.steps_per_epoch": 1, "train.batch_size": 2}
    cfg = HaloAEConfig.from_overrides("tiny", tiny)
    cache, out = tmp_path / "cache", tmp_path / "run"
    data = cached_category_data(cfg, run_root, CATEGORY, cache)
    for _ in fit_epochs(cfg, data, out, progress=False):
        pass
    alone = finish(out, data, CPU).metrics  # no store: each set computed here, as before
    assert alone[BEST_EPOCH] in (0, 1) and all(v == v for v in alone.values())  # finite: == compares
    filled = finish(out, data, CPU, features=RunFeatures(feature_store(cfg, run_root, CATEGORY, cache))).metrics
    assert len(list(cache.glob(f"fm-{CATEGORY}-*.pt"))) == 3  # train/good, val, test
    seen = _count_images(monkeypatch)
    read = finish(out, data, CPU, features=RunFeatures(feature_store(cfg, run_root, CATEGORY, cache))).metrics
    assert seen[0] == 0
    assert filled == alone and read == alone


def test_a_knob_that_changes_the_features_never_reads_another_entry(cfg, root, tmp_path, monkeypatch):
    """Features of the same images under another extractor, other weights or bf16 autocast are
    computed, not read; knobs of what trains after the backbone read the entry back, bit for bit."""
    cache = tmp_path / "cache"
    data = cached_category_data(cfg, root, CATEGORY, cache)
    store = feature_store(cfg, root, CATEGORY, cache)

    def val_features(c, seed=0):
        torch.manual_seed(seed)  # the random backbone weights
        return FeatureCache(HaloAE(c), CPU, 16, RunFeatures(store)).get("val", data.val.images)

    stored = val_features(cfg)
    seen = _count_images(monkeypatch)
    for same in ({}, {"optim.lr": 1e-3, "loss.weighting": "equal", "model.block_size": 3}):
        assert torch.equal(val_features(cfg.replace(**same)), stored) and seen[0] == 0
    changed = {
        "padding": val_features(cfg.replace(**{"model.backbone.padding": "reflect_published"})),
        "layers": val_features(cfg.replace(**{"model.backbone.layers": ("relu1_1", "relu1_2")})),
        "weights": val_features(cfg, seed=1),
    }
    with torch.autocast("cpu", dtype=torch.bfloat16):
        changed["bf16"] = val_features(cfg)
    assert seen[0] == len(changed) * len(data.val)  # each computed
    assert all(not torch.equal(fm.float(), stored) for fm in changed.values() if fm.shape == stored.shape)
    assert torch.equal(val_features(cfg.replace(**{"model.backbone.padding": "reflect_published"})), changed["padding"])
    assert seen[0] == len(changed) * len(data.val)  # and then read back


def test_a_crafted_or_damaged_feature_entry_is_refused_naming_it(cfg, root, tmp_path):
    cache = private_dir(tmp_path / "cache")
    data = cached_category_data(cfg, root, CATEGORY, cache)
    store = feature_store(cfg, root, CATEGORY, cache)

    def val_features():
        torch.manual_seed(0)  # the same random backbone each time: the same entry
        return FeatureCache(HaloAE(cfg), CPU, 16, RunFeatures(store)).get("val", data.val.images)

    val_features()
    (entry,) = cache.glob("fm-*.pt")
    damage(entry, "overwritten")
    with pytest.raises(DataCacheError, match=f"^{entry}: corrupted .*; remove it to rebuild the entry$"):
        val_features()
    marker = tmp_path / "pwned"
    write_code_pickle(entry, marker)
    with pytest.raises(DataCacheError, match=f"^{entry}: refused: it holds a pickled object"):
        val_features()
    assert not marker.exists()


def test_a_feature_entry_that_cannot_be_written_is_a_warning_not_a_failed_trial(cfg, root, tmp_path, monkeypatch):
    import errno

    import sweeps.datacache

    def full(state, path):
        Path(str(path) + ".tmp").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    cache = tmp_path / "cache"
    data = cached_category_data(cfg, root, CATEGORY, cache)
    monkeypatch.setattr(sweeps.datacache, "save_checkpoint", full)
    with pytest.warns(UserWarning, match="feature cache entry not written .*No space left on device"):
        fm = FeatureCache(HaloAE(cfg), CPU, 16, RunFeatures(feature_store(cfg, root, CATEGORY, cache))).get(
            "val", data.val.images
        )
    assert len(fm) == len(data.val) and [p.suffix for p in cache.glob("fm-*")] == [".lock"]  # no .pt, no .tmp


def test_a_feature_entry_whose_torch_save_fails_is_a_warning_and_is_computed_again(cfg, root, tmp_path, monkeypatch):
    """torch.save reports a failed write as RuntimeError (PytorchStreamWriter), not OSError."""
    real_save = torch.save

    def failing(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file data/0")

    cache = tmp_path / "cache"
    data = cached_category_data(cfg, root, CATEGORY, cache)

    def val_features():
        torch.manual_seed(0)  # the same random backbone each time: the same entry
        return FeatureCache(HaloAE(cfg), CPU, 16, RunFeatures(feature_store(cfg, root, CATEGORY, cache))).get(
            "val", data.val.images
        )

    monkeypatch.setattr(torch, "save", failing)
    with pytest.warns(UserWarning, match="feature cache entry not written .*PytorchStreamWriter failed writing file"):
        fm = val_features()
    assert len(fm) == len(data.val) and [p.suffix for p in cache.glob("fm-*")] == [".lock"]  # no .pt, no .tmp
    monkeypatch.setattr(torch, "save", real_save)
    seen = _count_images(monkeypatch)
    assert torch.equal(val_features(), fm) and seen[0] == len(data.val)  # computed again, then written
    assert len(list(cache.glob("fm-*.pt"))) == 1
