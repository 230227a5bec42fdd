# SPDX-License-Identifier: Apache-2.0
"""A real tracking stack for tests and the tracking benchmark: a throwaway PostgreSQL database
and ``cluster/mlflow/start-server.sh`` serving it on a loopback port (basic auth, proxied
artifacts in a local folder).

PostgreSQL is the machine's own server (127.0.0.1:5432, trust authentication). Every database is
named ``haloae_<purpose>_<random>`` and dropped on exit, connections and all.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
START_SERVER = Path(__file__).resolve().parents[2] / "cluster" / "mlflow" / "start-server.sh"
ADMIN = "admin"


def postgres_reachable() -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((PG_HOST, PG_PORT)) == 0


def _admin_sql(statement: str, *params) -> list[tuple]:
    import psycopg

    # autocommit: CREATE/DROP DATABASE cannot run inside a transaction
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True) as conn:
        cur = conn.execute(statement, params or None)
        return cur.fetchall() if cur.description else []


@contextlib.contextmanager
def scratch_database(purpose: str) -> Iterator[str]:
    """A new, empty database; yields its SQLAlchemy URL (no password: trust auth); dropped at the end."""
    name = f"haloae_{purpose}_{secrets.token_hex(4)}"
    _admin_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        _admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_exists(url: str) -> bool:
    return bool(_admin_sql("SELECT 1 FROM pg_database WHERE datname = %s", url.rsplit("/", 1)[1]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    password: str  # the admin user's (clients: MLFLOW_TRACKING_USERNAME=admin, MLFLOW_TRACKING_PASSWORD)
    db_password: str  # what the server was given for the database (trust auth ignores it): must stay hidden
    log: Path
    process: subprocess.Popen

    def client_env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": self.password}


def http_status(url: str, auth: tuple[str, str] | None = None, host: str | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    if host:
        request.add_header("Host", host)
    try:
        # generous: basic auth hashes the password on every request (seconds on a loaded machine)
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


@contextlib.contextmanager
def tracking_server(folder: Path, backend_uri: str, workers: int = 1, timeout: float = 120) -> Iterator[Server]:
    """``start-server.sh`` on ``backend_uri`` at a free loopback port, the database password in a
    private file; yields once ``/health`` answers; stops the server's process group at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    password, db_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    password_file = folder / "db.password"
    password_file.write_text(db_password)
    password_file.chmod(0o600)
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "MLFLOW_BACKEND_STORE_URI": backend_uri,
        "MLFLOW_DB_PASSWORD_FILE": str(password_file),
        "MLFLOW_ARTIFACTS_DESTINATION": str(folder / "artifacts"),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": str(workers),
        "MLFLOW_SERVER_STATE_DIR": str(folder / "state"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    log = folder / "server.log"  # a file, not a pipe: a full pipe would block the server
    with log.open("w") as out:
        process = subprocess.Popen(
            ["bash", str(START_SERVER)], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the workers go with it
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while http_status(f"{url}/health") != 200:
            if process.poll() is not None:
                raise RuntimeError(f"start-server.sh exited {process.returncode}: {log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer /health in {timeout} s: {log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Server(url, password, db_password, log, process)
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM the process group, SIGKILL after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever of its group outlived it


def process_args_of_group(pgid: int) -> list[str]:
    """The command lines of every process in a process group (what ``ps`` shows every user)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.getpgid(int(proc.name)) == pgid:
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return found
