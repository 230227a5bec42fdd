# SPDX-License-Identifier: Apache-2.0
"""The cluster's tracking for real: ``cluster/mlflow/start-server.sh`` on PostgreSQL, and an
Optuna study in PostgreSQL.

    a database of its own -> start-server.sh (basic auth, proxied artifacts, 127.0.0.1; MLflow's
    migrations) -> a tiny sweep logs into it -> ``haloae tables`` and ``haloae export`` (model
    registry in PostgreSQL) read it back -> a trial's page of the MLflow UI in headless Chromium

    a sweep with ``search.storage: postgresql://...`` -> the driver SIGKILLed -> ``--resume``
    continues the same study

Each test creates its databases and drops them at the end (checked). PostgreSQL is a real
component of these tests (``.ci/run`` checks it is reachable), so they fail, not skip, without it.
"""

from __future__ import annotations

import base64
import http.server
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from sweeps.loading import load_spec
from tests.helpers.sweeps import duplicates, tiny_spec, trial_runs
from tests.helpers.tracking_server import (
    ADMIN,
    database_exists,
    http_status,
    process_args_of_group,
    scratch_database,
    tracking_server,
)
from tests.test_sweep_resume import HALOAE, checkpointed_trials, env, ray_head  # noqa: F401 - ray_head: a fixture

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A PostgreSQL-backed server from start-server.sh; clients of this process authenticate as admin."""
    with scratch_database("e2e") as db, tracking_server(tmp_path / "server", db) as srv:
        for key, value in srv.client_env().items():
            monkeypatch.setenv(key, value)
        yield srv, db
    assert not database_exists(db), "the test's database is dropped"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([*HALOAE, *args], env=env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_sweep_into_the_postgres_server_reads_back_in_tables_export_registry_and_ui(tmp_path, server):
    srv, db = server
    assert not any(srv.db_password in args for args in process_args_of_group(srv.process.pid))
    search = f"{srv.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_status(search) == 401, "basic auth is on"
    assert http_status(search, auth=(ADMIN, srv.password)) == 200
    assert http_status(search, auth=(ADMIN, srv.password), host="evil.example.com") == 403, "Host allow-list"
    assert (srv.log.parent / "state" / "basic_auth.ini").stat().st_mode & 0o077 == 0
    path = tiny_spec(tmp_path, "pgsweep", mlflow={"tracking_uri": srv.url, "experiment": "pgsweep"},
                     search={"algorithm": "grid", "space": {"optim.lr": {"grid": [1e-3, 2e-3]}}},
                     data={"synthetic": {"categories": ["synth_disc"], "size": 32, "seed": 0}, "categories": "all"},
                     overrides={"train.epochs": 2, "train.steps_per_epoch": 2})
    run_cli("sweep", str(path))

    runs = trial_runs(srv.url, "pgsweep")
    assert len(runs) == 2 and not duplicates(runs)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in runs), "artifacts go through the server"
    # the runs are rows of PostgreSQL, written by MLflow's migrated schema
    counted = _sql(db, "SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                       "WHERE t.key = 'haloae.role' AND t.value = 'trial' AND r.status = 'FINISHED'")
    assert counted == [(2,)]

    table = run_cli("tables", "--sweep", "pgsweep", "--tracking-uri", srv.url, "--table", "table2").stdout
    for run in runs:
        assert f"{100 * run.data.metrics['test/image_auroc']:.1f}" in table, table

    run_cli("export", "--sweep", "pgsweep", "--tracking-uri", srv.url, "--out", str(tmp_path / "exported"))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(srv.url)
    assert (tmp_path / "exported" / "synth_disc" / "bundle.json").is_file()
    champion = client.get_model_version_by_alias("haloae-synth_disc", "champion")
    export_run = client.get_run(champion.run_id)
    assert export_run.data.tags["haloae.role"] == "export", "registered from an export run, trial runs untouched"
    best = max(runs, key=lambda r: r.data.metrics["val/image_auroc"])
    assert export_run.data.tags["source_run_id"] == best.info.run_id, "the best run by the validation objective"
    aliases = _sql(db, "SELECT name, alias FROM registered_model_aliases")
    assert aliases == [("haloae-synth_disc", "champion")], "the registry lives in PostgreSQL"

    # a trial's run page (the runs table shows the trials folded under the sweep's parent run)
    trial = runs[0].info
    dom = ui_page(srv, f"#/experiments/{trial.experiment_id}/runs/{trial.run_id}")
    assert trial.run_name in dom and "pgsweep" in dom, "the UI shows the trial run under its sweep"
    assert "test/image_auroc" in dom and "optim.lr" in dom, "with what the trial logged"
    assert srv.db_password not in srv.log.read_text(), "the database password stays out of the server's log"


def _sql(db_url: str, query: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(db_url) as conn:
        return conn.execute(query).fetchall()


def ui_page(srv, fragment: str) -> str:
    """The UI page's DOM after its scripts ran (headless Chromium), through a loopback proxy that
    adds the admin's basic-auth header: no password on Chromium's command line."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed (Debian: apt-get install -y chromium)"
    header = "Basic " + base64.b64encode(f"{ADMIN}:{srv.password}".encode()).decode()

    class AuthProxy(http.server.BaseHTTPRequestHandler):
        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
            request = urllib.request.Request(srv.url + self.path, data=body, method=self.command)
            for key in ("Content-Type", "Accept"):
                if self.headers.get(key):
                    request.add_header(key, self.headers[key])
            request.add_header("Authorization", header)
            try:
                response = urllib.request.urlopen(request, timeout=60)
            except urllib.error.HTTPError as e:
                response = e
            payload = response.read()
            self.send_response(response.status)
            for key in ("Content-Type",):
                if response.headers.get(key):
                    self.send_header(key, response.headers[key])
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _forward

        def log_message(self, *args) -> None:
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AuthProxy)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        profile = Path(srv.log.parent / "chromium-profile")
        result = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
             "--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}",
             "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--virtual-time-budget=30000",
             "--dump-dom", f"http://127.0.0.1:{proxy.server_address[1]}/{fragment}"],
            capture_output=True, text=True, timeout=180,
        )
    finally:
        proxy.shutdown()
        thread.join()
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.soak  # CI keeps the Optuna resume on SQLite (test_sweep_run) and the sweep into PostgreSQL above
def test_optuna_study_on_postgres_resumes_after_a_driver_sigkill(tmp_path, ray_head):  # noqa: F811 - the fixture
    with scratch_database("optuna") as db:
        path = tiny_spec(
            tmp_path, "pgstudy", purpose="search",
            search={"algorithm": "optuna", "sampler": "tpe", "seed": 3, "num_samples": 3, "storage": db,
                    "alpha": {"mode": "midpoint_slope", "terms": ["cls", "fm", "im"]}},
            objective={"metric": "val/image_auroc", "mode": "max", "aggregate": "mean"},
            data={"synthetic": {"categories": ["synth_disc"], "size": 32, "seed": 0}, "categories": "all"},
            overrides={"train.epochs": 6, "train.steps_per_epoch": 3},
            resources={"cpu": 1}, max_concurrent_trials=2,
        )
        spec = load_spec(path)
        experiment = Path(spec.sweep_dir()) / "ray"
        with open(tmp_path / "driver-1.log", "w") as log:
            driver = subprocess.Popen([*HALOAE, "sweep", str(path), "--address", ray_head], env=env(),
                                      stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 240
            while time.time() < deadline and not checkpointed_trials(experiment):
                assert driver.poll() is None, (tmp_path / "driver-1.log").read_text()[-3000:]
                time.sleep(0.5)
            assert checkpointed_trials(experiment), "no trial checkpointed within 240 s"
        finally:
            driver.send_signal(signal.SIGKILL)
            driver.wait()
        assert not (Path(spec.sweep_dir()) / "optuna.db").exists(), "the study is not in the sweep folder"
        before = _study_trials(db)
        assert "RUNNING" in {state for _, state in before}, before

        resumed = subprocess.run([*HALOAE, "sweep", str(path), "--resume", "--address", ray_head], env=env(),
                                 capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        after = _study_trials(db)
        assert [n for n, _ in after[: len(before)]] == [n for n, _ in before], "the same study, continued"
        assert sum(state == "COMPLETE" for _, state in after) == 3, after
        runs = trial_runs(spec.tracking_uri(), spec.experiment_name())
        assert len(runs) == 3 and not duplicates(runs)
        assert all(r.info.status == "FINISHED" for r in runs)
    assert not database_exists(db), "the study's database is dropped"


def _study_trials(db_url: str) -> list[tuple[int, str]]:
    """(number, state) of every trial of the one study in the database, in order."""
    import psycopg

    with psycopg.connect(db_url) as conn:
        (studies,) = conn.execute("SELECT count(*) FROM studies").fetchone()
        assert studies == 1, "one study per sweep"
        return [(n, str(s)) for n, s in conn.execute("SELECT number, state FROM trials ORDER BY number").fetchall()]
