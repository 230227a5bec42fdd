# SPDX-License-Identifier: Apache-2.0
"""The tracking store under concurrent trials: the sqlite file (its path, its artifacts folder, its
creation from a migrated template) made safe for one machine's concurrency, and the warning when a
sweep runs more concurrent trials than its store holds.

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
import os
import random
import secrets
import sqlite3
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path

from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from sweeps.schema import SweepSpec

SQLITE_BUSY_TIMEOUT_S = 60  # a writer queues this long for the lock before "database is locked"
SQLITE_ATTEMPTS = 6  # of one logging call, with back-offs of about 0.5, 1, 2, 4, 8 s between them
LOCKED = "database is locked"
SQLITE_WRITERS_HELD = 16  # concurrent trials on one sqlite file with these settings, 0 values lost
# WAL needs shared memory between the processes of one host: not on these
NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "beegfs", "ceph", "fuse.sshfs", "9p"})


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a sqlite URI as SQLAlchemy (and so MLflow) reads it: ``sqlite:///rel.db``
    is relative to the working directory, ``sqlite:////abs/x.db`` absolute; None for an in-memory
    database and for any other store."""
    if not tracking_uri.startswith("sqlite"):
        return None
    try:
        url = make_url(tracking_uri)
    except ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def store_artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts when the caller names no place: for a sqlite
    file, the ``artifacts`` folder beside the database (``<sweep>/artifacts`` for the default
    ``<sweep>/mlflow.db``), instead of MLflow's ``./mlruns`` of whatever the current directory is.
    None for any other store: a tracking server decides (proxied artifacts), a file store keeps them
    under its own root, an in-memory sqlite has no file."""
    path = sqlite_path(tracking_uri)
    return None if path is None else (path.parent / "artifacts").resolve().as_uri()


def writer_client(tracking_uri: str) -> MlflowClient:
    """The client a trial (or the driver) writes with: for a sqlite file, opened by ``store_uri``
    and repeating a call that hit a locked database; any other store's plain ``MlflowClient``."""
    client = MlflowClient(tracking_uri=store_uri(tracking_uri))
    return _RetryingClient(client) if sqlite_path(tracking_uri) is not None else client


@contextlib.contextmanager
def opened_meanwhile(tracking_uri: str) -> Iterator[None]:
    """The block runs while a thread opens the store of ``tracking_uri`` the way a writer does
    (``writer_client``): MLflow's store modules imported and, for a sqlite file, the file seeded,
    switched to WAL and its engine and schema checked, about 2 s on 2 cores. MLflow keeps the store
    it made per URI, so the caller's first write after the block finds it open. Meant for a block
    that mostly waits: the driver's ``ray.init``, waiting for Ray's daemons. Nothing is recorded;
    an error is not raised here but again by the caller's own first use, in its own thread."""
    opener = threading.Thread(target=_open_quietly, args=(tracking_uri,), name="open-tracking-store", daemon=True)
    opener.start()
    try:
        yield
    finally:
        opener.join()  # one thread at a time makes MLflow's cached store


def _open_quietly(tracking_uri: str) -> None:
    with contextlib.suppress(Exception):  # noqa: BLE001 - the caller's own first use raises it
        writer_client(tracking_uri)


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
    _use_wal(path.absolute())  # the file a relative URI names now: a later chdir names another
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(tracking_uri).query)
    if "timeout" in query:
        return tracking_uri
    return f"{tracking_uri}{'&' if '?' in tracking_uri else '?'}timeout={SQLITE_BUSY_TIMEOUT_S}"


@functools.cache
def _use_wal(path: Path) -> None:
    """Switch the file to the WAL journal (persistent: later openers get it too), once per process;
    a file that does not exist yet starts as a copy of the migrated empty store (``seed_store``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        seed_store(path)
    if filesystem_type(path.parent) in NETWORK_FILESYSTEMS:
        return
    with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def seed_store(path: Path, cache_dir: str | Path | None = None) -> None:
    """Create the sqlite store ``path`` as a copy of an empty store that this MLflow version has
    already migrated, kept in the user's private cache folder (``sweeps.cache_dir.private_dir``).

    MLflow creates a new sqlite store by running every one of its schema migrations (alembic: ~1 s
    of a sweep's start, paid by every sweep); a copy of the migrated file costs milliseconds. The
    template is made by MLflow itself, once per MLflow version and schema head, without its Default
    experiment, whose artifact location MLflow derives from the working directory: the first open
    of the copy creates it, as for a new file. The copy is linked into place, never over a store
    that another process created meanwhile. A failure here leaves MLflow to create the file."""
    try:
        template = _store_template(cache_dir)
        partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
        try:
            with contextlib.closing(_read_only(template)) as src, contextlib.closing(sqlite3.connect(partial)) as dst:
                src.backup(dst)
            if not _migrated(partial):
                raise sqlite3.DatabaseError(f"{template}: not a migrated MLflow store")
            # whole or absent, and never over another's: a store created since the caller looked (by a
            # concurrent trial's seed or by MLflow) may already hold runs. No hard links on this
            # filesystem (an OSError): the note below, and MLflow creates the file where it is absent
            with contextlib.suppress(FileExistsError):
                os.link(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    except Exception as exc:  # noqa: BLE001 - the template is a shortcut; MLflow's own creation stays
        from sweeps.tracking import one_line

        reason = one_line(f"{type(exc).__name__}: {exc}", 300)
        print(f"note: {path}: created by MLflow's migrations (the migrated template failed: {reason})", file=sys.stderr)


def _store_template(cache_dir: str | Path | None) -> Path:
    import hashlib

    import mlflow.store.db_migrations
    from filelock import FileLock
    from mlflow.tracking import MlflowClient
    from mlflow.version import VERSION

    from sweeps.cache_dir import private_dir

    # the schema is the installed MLflow's migration scripts: their names key the template (reading
    # alembic's head revision would parse every script, which is what the template saves)
    versions = Path(mlflow.store.db_migrations.__file__).parent / "versions"
    scripts = hashlib.sha256("\n".join(sorted(p.name for p in versions.glob("*.py"))).encode()).hexdigest()[:12]
    template = private_dir(cache_dir) / f"mlflow-store-{VERSION}-{scripts}.db"
    with FileLock(f"{template}.lock"):
        if not _migrated(template):  # absent, or left empty or damaged: built again
            building = template.with_suffix(f".{os.getpid()}.part")
            building.unlink(missing_ok=True)
            client = MlflowClient(tracking_uri=f"sqlite:///{building}")
            client.search_experiments()  # the store exists and is migrated once this answers
            client._tracking_client.store.engine.dispose()
            with contextlib.closing(sqlite3.connect(building)) as conn, conn:
                conn.execute("DELETE FROM experiment_tags WHERE experiment_id = 0")
                conn.execute("DELETE FROM experiments WHERE experiment_id = 0")
            os.replace(building, template)
    return template


def _read_only(database: Path) -> sqlite3.Connection:
    """``database`` opened read-only: one that is absent is an error, not created empty."""
    return sqlite3.connect(f"file:{urllib.parse.quote(str(database.absolute()))}?mode=ro", uri=True)


def _migrated(database: Path) -> bool:
    """Whether ``database`` is a store that MLflow's migrations made (alembic recorded a revision)."""
    try:
        with contextlib.closing(_read_only(database)) as conn:
            return conn.execute("SELECT version_num FROM alembic_version").fetchone() is not None
    except sqlite3.Error:
        return False


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
