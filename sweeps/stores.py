# SPDX-License-Identifier: Apache-2.0
"""The tracking store under concurrent trials: the sqlite file made safe for one machine's
concurrency, and the warning when a sweep runs more concurrent trials than its store holds.

sqlite (the default, ``<sweep>/mlflow.db``) serialises writers on one file lock. MLflow opens it
with Python's 5 s lock wait and the rollback journal, where a reader also blocks the writer:
``bench/tracking_load.py`` measured what that loses (README, cluster section). The trials'
client therefore opens it with

- the WAL journal (readers and the one writer no longer block each other; a property of the
  file, set once; not on network filesystems, where WAL's shared memory does not work), and
- a busy timeout of ``SQLITE_BUSY_TIMEOUT_S``: sqlite's own bounded retry loop on the lock, and
- up to ``SQLITE_ATTEMPTS`` attempts of a logging call that still fails with "database is locked"
  (two transactions that both read before they write deadlock, and sqlite fails one at once
  instead of waiting; the failed call was rolled back, so it is repeated whole, after a jittered
  back-off).

Beyond ``SQLITE_WRITERS_HELD`` concurrent trials (measured) the sweep is warned to use an MLflow
server (``cluster/mlflow/start-server.sh``, PostgreSQL), which held 64 writers without a loss.
"""

from __future__ import annotations

import contextlib
import functools
import random
import sqlite3
import sys
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from mlflow.tracking import MlflowClient

from sweeps.schema import SweepSpec

SQLITE_BUSY_TIMEOUT_S = 60  # a writer queues this long for the lock before "database is locked"
SQLITE_ATTEMPTS = 6  # of one logging call, with back-offs of about 0.5, 1, 2, 4, 8 s between them
LOCKED = "database is locked"
SQLITE_WRITERS_HELD = 16  # concurrent trials on one sqlite file with these settings, 0 values lost
# WAL needs shared memory between the processes of one host: not on these
NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "beegfs", "ceph", "fuse.sshfs", "9p"})


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, None for any other store."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(urllib.parse.urlsplit(tracking_uri).path)


def writer_client(tracking_uri: str) -> MlflowClient:
    """The client a trial (or the driver) writes with: for a sqlite file, opened by ``store_uri``
    and repeating a call that hit a locked database; any other store's plain ``MlflowClient``."""
    client = MlflowClient(tracking_uri=store_uri(tracking_uri))
    return _RetryingClient(client) if sqlite_path(tracking_uri) is not None else client


class _RetryingClient:
    """An ``MlflowClient`` whose methods are attempted ``SQLITE_ATTEMPTS`` times on a locked database."""

    def __init__(self, client: MlflowClient) -> None:
        self._client = client

    def __getattr__(self, name: str):
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def attempted(*args, **kwargs):
            for attempt in range(SQLITE_ATTEMPTS - 1):
                try:
                    return attribute(*args, **kwargs)
                except Exception as exc:
                    if LOCKED not in str(exc):
                        raise
                time.sleep(0.5 * 2**attempt * random.uniform(0.5, 1.5))  # jitter: the losers do not collide again
            return attribute(*args, **kwargs)

        return attempted


def store_uri(tracking_uri: str) -> str:
    """The URI a writer opens: for a sqlite file, in WAL mode and with the busy timeout
    (``?timeout=``, unless the URI sets one); any other store unchanged."""
    path = sqlite_path(tracking_uri)
    if path is None:
        return tracking_uri
    _use_wal(path)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(tracking_uri).query)
    if "timeout" in query:
        return tracking_uri
    return f"{tracking_uri}{'&' if '?' in tracking_uri else '?'}timeout={SQLITE_BUSY_TIMEOUT_S}"


@functools.cache
def _use_wal(path: Path) -> None:
    """Switch the file to the WAL journal (persistent: later openers get it too), once per process."""
    if filesystem_type(path.parent) in NETWORK_FILESYSTEMS:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def filesystem_type(folder: Path) -> str:
    """The type of the filesystem ``folder`` is on (``/proc/mounts``: longest mount point), or ``""``."""
    best, kind = "", ""
    target = str(folder.resolve()) if folder.exists() else str(folder.absolute())
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            mount = fields[1]
            inside = target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > len(best):
                best, kind = mount, fields[2]
    return kind


def concurrent_trials(spec: SweepSpec, cluster: Mapping[str, float]) -> int:
    """How many trials can write at once: what the cluster's CPUs (and GPUs) fit, capped by
    ``max_concurrent_trials``."""
    need = spec.resources
    fits = [cluster.get("CPU", 0.0) / need.cpu] if need.cpu else []
    if need.gpu:
        fits.append(cluster.get("GPU", 0.0) / need.gpu)
    count = int(min(fits)) if fits else 1
    if spec.max_concurrent_trials:
        count = min(count, spec.max_concurrent_trials)
    return max(count, 1)


def capacity_warning(spec: SweepSpec, cluster: Mapping[str, float]) -> str | None:
    """One line when the sweep's concurrent trials exceed what its sqlite store holds, else None."""
    if sqlite_path(spec.tracking_uri()) is None:
        return None
    count = concurrent_trials(spec, cluster)
    if count <= SQLITE_WRITERS_HELD:
        return None
    return (
        f"Warning: {spec.where()}: mlflow.tracking_uri: up to {count} concurrent trials would write to one sqlite "
        f"file, which holds {SQLITE_WRITERS_HELD} (bench/tracking_load.py); start an MLflow server "
        "(cluster/mlflow/start-server.sh, PostgreSQL) and set mlflow.tracking_uri to its URL, "
        "or lower max_concurrent_trials"
    )


def warn_over_capacity(spec: SweepSpec) -> None:
    """``capacity_warning`` against the running Ray cluster's resources, on stderr."""
    import ray

    warning = capacity_warning(spec, ray.cluster_resources())
    if warning:
        print(warning, file=sys.stderr)
