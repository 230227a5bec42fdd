# SPDX-License-Identifier: Apache-2.0
"""sweeps.cache_dir: the node's cache folder is the user's own, or refused by name."""

import os
import stat

import pytest

from sweeps.cache_dir import DEFAULT_DIR, DataCacheError, private_dir


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
