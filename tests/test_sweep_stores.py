# SPDX-License-Identifier: Apache-2.0
"""sweeps.stores: the sqlite store as the trials open it (WAL, busy timeout), and the warning
when a sweep's concurrent trials exceed what sqlite holds."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from sweeps import stores, tracking
from sweeps.loading import load_spec
from tests.helpers.sweeps import tiny_spec


def journal_mode(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]


def test_the_trials_client_opens_sqlite_in_wal_mode_with_a_busy_timeout(tmp_path):
    path = tmp_path / "mlflow.db"
    mlf = tracking.client(f"sqlite:///{path}")
    mlf.create_experiment("x")
    assert journal_mode(path) == "wal", "readers must not block the writing trials"
    engine = mlf._tracking_client.store.engine
    assert engine.dialect.create_connect_args(engine.url)[1]["timeout"] == stores.SQLITE_BUSY_TIMEOUT_S


def test_store_uri_keeps_a_given_timeout_and_leaves_servers_alone(tmp_path):
    given = f"sqlite:///{tmp_path}/a.db?timeout=7"
    assert stores.store_uri(given) == given
    assert stores.store_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert stores.store_uri("postgresql://u@db/mlflow") == "postgresql://u@db/mlflow"


def test_wal_is_left_off_on_a_network_filesystem(tmp_path, monkeypatch):
    monkeypatch.setattr(stores, "filesystem_type", lambda folder: "nfs4")
    path = tmp_path / "shared.db"
    tracking.client(f"sqlite:///{path}").create_experiment("x")
    assert journal_mode(path) == "delete"


def test_filesystem_type_reads_the_longest_mount_point():
    assert stores.filesystem_type(Path("/proc/self")) == "proc"


@pytest.mark.parametrize(
    ("cluster", "fields", "warned"),
    [
        ({"CPU": 64.0}, {}, True),  # 64 trials of 1 CPU on one sqlite file
        ({"CPU": 64.0}, {"max_concurrent_trials": 8}, False),
        ({"CPU": 8.0}, {}, False),
        ({"CPU": 64.0, "GPU": 4.0}, {"resources": {"cpu": 1, "gpu": 0.5}}, False),  # 8 fit the GPUs
        ({"CPU": 64.0}, {"mlflow": {"tracking_uri": "http://mlflow.example:5000"}}, False),
    ],
)
def test_a_sweep_beyond_what_sqlite_holds_is_pointed_at_the_server(tmp_path, cluster, fields, warned):
    fields = {"resources": {"cpu": 1}, **fields}
    spec = load_spec(tiny_spec(tmp_path, "wide", **fields))
    warning = stores.capacity_warning(spec, cluster)
    assert (warning is not None) == warned
    if warned:
        assert "64 concurrent trials" in warning and "cluster/mlflow/start-server.sh" in warning
        assert "\n" not in warning and "mlflow.tracking_uri" in warning


class Flaky:
    """A client method that finds the database locked ``locked`` times, then works."""

    def __init__(self, locked: int, message: str = "(sqlite3.OperationalError) database is locked") -> None:
        self.calls, self.locked, self.message = 0, locked, message

    def log_batch(self, run_id: str) -> str:
        self.calls += 1
        if self.calls <= self.locked:
            raise RuntimeError(self.message)
        return run_id


def retrying(flaky: Flaky, monkeypatch):
    monkeypatch.setattr(stores.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(stores, "MlflowClient", lambda tracking_uri: flaky)
    return stores.writer_client("sqlite:////tmp/haloae-unused.db")


def test_a_call_that_found_sqlite_locked_is_repeated(monkeypatch, tmp_path):
    monkeypatch.setattr(stores, "_use_wal", lambda path: None)
    flaky = Flaky(locked=2)
    assert retrying(flaky, monkeypatch).log_batch("r1") == "r1" and flaky.calls == 3


def test_retries_are_bounded_and_only_for_a_locked_database(monkeypatch):
    monkeypatch.setattr(stores, "_use_wal", lambda path: None)
    always = Flaky(locked=100)
    with pytest.raises(RuntimeError, match="database is locked"):
        retrying(always, monkeypatch).log_batch("r1")
    assert always.calls == stores.SQLITE_ATTEMPTS
    other = Flaky(locked=1, message="UNIQUE constraint failed")
    with pytest.raises(RuntimeError, match="UNIQUE"):
        retrying(other, monkeypatch).log_batch("r1")
    assert other.calls == 1


def test_a_server_client_is_not_wrapped():
    assert type(stores.writer_client("http://127.0.0.1:5000")).__name__ == "MlflowClient"


def test_a_new_sqlite_store_is_a_copy_of_the_migrated_template_not_a_new_migration(tmp_path, monkeypatch):
    import mlflow.store.db.utils as db_utils

    monkeypatch.setenv("HALOAE_DATA_CACHE", str(tmp_path / "cache"))
    tracking.client(f"sqlite:///{tmp_path}/first/mlflow.db").search_experiments()  # makes the template

    def no_migrations(engine):
        raise AssertionError("a new sqlite store ran MLflow's migrations")

    monkeypatch.setattr(db_utils, "_initialize_tables", no_migrations)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = tmp_path / "second" / "mlflow.db"
    mlf = tracking.client(f"sqlite:///{path}")
    [default] = mlf.search_experiments()
    # the Default experiment is MLflow's own, made for this file from this working directory
    assert (default.experiment_id, default.name) == ("0", "Default")
    assert default.artifact_location.rstrip("/").endswith(f"{elsewhere.name}/mlruns/0")
    run = mlf.create_run(mlf.create_experiment("x", artifact_location=str(tmp_path / "art")))
    mlf.log_metric(run.info.run_id, "m", 1.0)
    assert mlf.get_run(run.info.run_id).data.metrics == {"m": 1.0}
    assert journal_mode(path) == "wal"


def test_a_failed_template_leaves_the_store_to_mlflow(tmp_path, monkeypatch, capsys):
    def broken(cache_dir):
        raise OSError("disk full")

    monkeypatch.setattr(stores, "_store_template", broken)
    path = tmp_path / "mlflow.db"
    tracking.client(f"sqlite:///{path}").create_experiment("x")
    assert "migrated template failed: OSError: disk full" in capsys.readouterr().err
    assert [e.name for e in tracking.client(f"sqlite:///{path}").search_experiments()] == ["x", "Default"]


def _tables(path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_a_store_created_while_the_copy_was_made_is_left_alone(tmp_path, monkeypatch):
    """Another process creates the store between seed_store's check and its placement: theirs stays."""
    cache, path = tmp_path / "cache", tmp_path / "mlflow.db"
    stores._store_template(cache)  # made beforehand: only the copy's partial file is a .part below
    real_connect = sqlite3.connect

    def racing(database, *args, **kwargs):
        if str(database).endswith(".part") and not path.exists():  # the copy is being made
            with contextlib.closing(real_connect(path)) as theirs, theirs:
                theirs.execute("CREATE TABLE sentinel (x)")
                theirs.execute("INSERT INTO sentinel VALUES (1)")
        return real_connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", racing)
    stores.seed_store(path, cache)
    monkeypatch.setattr(sqlite3, "connect", real_connect)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT x FROM sentinel").fetchall() == [(1,)]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


@pytest.mark.parametrize("damage", ["empty", "garbage", "vanished"])
def test_an_empty_broken_or_vanished_template_is_never_copied_as_a_store(tmp_path, monkeypatch, capsys, damage):
    cache, path = tmp_path / "cache", tmp_path / "mlflow.db"
    template = stores._store_template(cache)
    if damage == "vanished":  # removed after it was found, before it is copied
        template.unlink()
        monkeypatch.setattr(stores, "_store_template", lambda cache_dir: template)
    else:
        template.write_bytes(b"" if damage == "empty" else b"not a database" * 100)
    stores.seed_store(path, cache)
    if path.exists():  # a copy of a rebuilt template
        assert {"alembic_version", "experiments", "runs"} <= _tables(path)
    else:
        assert "created by MLflow's migrations" in capsys.readouterr().err
    if damage == "vanished":
        assert not template.exists(), "a vanished template is not recreated empty"
    assert [e.name for e in tracking.client(f"sqlite:///{path}").search_experiments()] == ["Default"]


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:///rel.db",
        "sqlite:///sub/rel.db?timeout=5",
        "sqlite:////abs/x.db",
        "sqlite:////abs/dir/x.db?timeout=5",
    ],
)
def test_sqlite_path_reads_three_slashes_as_relative_and_four_as_absolute(uri):
    from sqlalchemy.engine import make_url

    assert stores.sqlite_path(uri) == Path(make_url(uri).database)


@pytest.mark.parametrize("uri", ["sqlite:///:memory:", "sqlite://", "http://127.0.0.1:5000", "postgresql://u@db/m"])
def test_sqlite_path_is_none_for_any_store_without_a_file(uri):
    assert stores.sqlite_path(uri) is None


def test_a_relative_sqlite_store_is_made_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HALOAE_DATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    tracking.client("sqlite:///rel.db").create_experiment("x")
    assert journal_mode(tmp_path / "rel.db") == "wal"


def test_without_hard_links_the_store_is_left_to_mlflow(tmp_path, monkeypatch, capsys):
    def unsupported(src, dst):
        raise PermissionError(1, "Operation not permitted", str(dst))

    monkeypatch.setenv("HALOAE_DATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(stores.os, "link", unsupported)
    path = tmp_path / "mlflow.db"
    stores.seed_store(path)
    assert "created by MLflow's migrations (the migrated template failed: PermissionError" in capsys.readouterr().err
    assert not path.exists() and [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []
    assert [e.name for e in tracking.client(f"sqlite:///{path}").search_experiments()] == ["Default"]


def test_the_store_opened_meanwhile_is_the_one_the_caller_then_writes_with(tmp_path, monkeypatch):
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    monkeypatch.setenv("HALOAE_DATA_CACHE", str(tmp_path / "cache"))
    uri, made = f"sqlite:///{tmp_path}/sweep/mlflow.db", []
    original = SqlAlchemyStore.__init__

    def counted(self, db_uri, *args, **kwargs):
        if "sweep/mlflow.db" in db_uri:  # not the migrated template's own store
            made.append(self)
        original(self, db_uri, *args, **kwargs)

    monkeypatch.setattr(SqlAlchemyStore, "__init__", counted)
    with stores.opened_meanwhile(uri):
        pass  # the caller's waiting (ray.init)
    assert len(made) == 1 and journal_mode(tmp_path / "sweep" / "mlflow.db") == "wal"
    assert [e.name for e in made[0].search_experiments()] == ["Default"], "opening records nothing"
    mlf = tracking.client(uri)
    assert mlf._tracking_client.store is made[0], "the caller's client reuses the store the thread opened"
    assert len(made) == 1


def test_a_store_that_does_not_open_meanwhile_raises_at_the_callers_own_use(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    uri = f"sqlite:///{tmp_path}/file/mlflow.db"
    with stores.opened_meanwhile(uri):
        pass  # nothing raised in the block, whatever the thread met
    with pytest.raises(Exception):  # noqa: B017 - MLflow's own error, in the caller's thread
        tracking.client(uri)
