# SPDX-License-Identifier: Apache-2.0
"""sweeps.datacache: entries of tensors and plain values, verified, in a folder private to the user."""

import os
import stat

import pytest
import torch

from haloae.config import HaloAEConfig
from haloae.synth import generate
from sweeps.datacache import DEFAULT_DIR, DataCacheError, cache_key, cached_category_data, private_dir
from tests.helpers.crafted import damage, write_code_pickle

CATEGORY = "synth_disc"


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


def test_the_folder_is_created_private_and_someone_elses_or_a_shared_one_is_refused(tmp_path, monkeypatch):
    assert DEFAULT_DIR.name == f"haloae-data-cache-{os.getuid()}"
    made = private_dir(tmp_path / "mine")
    assert stat.S_IMODE(os.stat(made).st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(DataCacheError, match=r"shared: the data cache folder is writable by others \(mode 0o777\)"):
        private_dir(shared)
    (tmp_path / "link").symlink_to(made)
    with pytest.raises(DataCacheError, match="link: the data cache must be a folder, not a link"):
        private_dir(tmp_path / "link")
    monkeypatch.setenv("HALOAE_DATA_CACHE", str(made))
    assert private_dir() == made
    monkeypatch.setattr(os, "getuid", lambda: os.stat(made).st_uid + 1)
    with pytest.raises(DataCacheError, match=r"mine: the data cache folder belongs to uid \d+, not to you"):
        private_dir()


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
