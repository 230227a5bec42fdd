# SPDX-License-Identifier: Apache-2.0
"""The node's private cache folder, where the data cache (``sweeps.datacache``) and the migrated
MLflow store template (``sweeps.stores``) live.

The folder is the user's own: ``$HALOAE_DATA_CACHE`` or ``<tmp>/haloae-data-cache-<uid>``, created
with mode 0700; one owned by someone else, or writable by group or others, is refused
(``DataCacheError``), since whoever can write there chooses the data a trial trains on. Torch-free:
the sweep's driver seeds its MLflow store from here and never trains.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from haloae.errors import InputError
from haloae.vocab import ENV_DATA_CACHE

DEFAULT_DIR = Path(tempfile.gettempdir()) / f"haloae-data-cache-{os.getuid()}"


class DataCacheError(InputError):
    """The cache folder is not private to the user, or an entry is damaged; the message names it."""


def private_dir(cache_dir: str | Path | None = None) -> Path:
    """The cache folder (``cache_dir``, else ``$HALOAE_DATA_CACHE``, else ``DEFAULT_DIR``), created
    with mode 0700 if absent; ``DataCacheError`` if it is a link, not a folder, someone else's, or
    writable by group or others."""
    directory = Path(cache_dir or os.environ.get(ENV_DATA_CACHE) or DEFAULT_DIR)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(directory)
    fix = f"use a private folder of yours (set {ENV_DATA_CACHE})"
    if not stat.S_ISDIR(info.st_mode):
        raise DataCacheError(f"{directory}: the data cache must be a folder, not a link or a file; {fix}")
    if info.st_uid != os.getuid():
        raise DataCacheError(f"{directory}: the data cache folder belongs to uid {info.st_uid}, not to you; {fix}")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        mode = oct(stat.S_IMODE(info.st_mode))
        raise DataCacheError(
            f"{directory}: the data cache folder is writable by others (mode {mode}); chmod 700 it or {fix}"
        )
    return directory
