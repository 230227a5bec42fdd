# SPDX-License-Identifier: Apache-2.0
"""The scripts of cluster/: node setup, run-sweep.sh, the SLURM batch script, the MLflow server's
start-server.sh and its compose file (the server for real, on PostgreSQL: tests/test_tracking_server.py).

- every script passes ``bash -n`` always and ``shellcheck`` when it is installed;
- the sbatch script runs under stub ``srun``/``scontrol``/``ray``/``haloae`` commands (no Ray is
  started or stopped: a real ``ray stop`` would stop every Ray on the machine);
- ``start-server.sh`` refuses incomplete settings and loose password files with one line.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_cluster_configs import CLUSTER, load

SCRIPTS = sorted(p for p in CLUSTER.rglob("*") if p.suffix in (".sh", ".sbatch"))


# ------------------------------------------------------------------------------ shell scripts
def test_there_are_scripts_to_check() -> None:
    names = {str(p.relative_to(CLUSTER)) for p in SCRIPTS}
    assert {"slurm/haloae-sweep.sbatch", "mlflow/start-server.sh", "setup-node.sh", "run-sweep.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(CLUSTER)))
def test_script_parses_with_bash(script: Path) -> None:
    assert script.read_text().startswith("#!"), "scripts need a shebang (shellcheck infers the shell from it)"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(CLUSTER)))
def test_script_is_shellcheck_clean(script: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian: apt-get install -y shellcheck)")
    result = subprocess.run(["shellcheck", "--format=gcc", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", ["setup-node.sh", "run-sweep.sh", "mlflow/start-server.sh"])
def test_script_is_executable(script: str) -> None:
    assert os.access(CLUSTER / script, os.X_OK), f"chmod +x cluster/{script}"


# ------------------------------------------------------------------------------ run-sweep.sh
def _write_stub(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


def test_run_sweep_passes_the_cluster_settings_to_haloae(tmp_path: Path) -> None:
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "haloae.args"
    _write_stub(stubs / "haloae", f'printf "%s\\n" "$@" > "{log}"\n')
    spec = tmp_path / "sweeps" / "x.yaml"
    spec.parent.mkdir()
    spec.write_text("name: x\n")
    env = {
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "HALOAE_STORAGE": "s3://bucket/sweeps",
        "MLFLOW_TRACKING_URI": "http://10.0.0.10:5000",
        "HALOAE_DATA_ROOT": "/data/mvtec ad",  # a space: arguments must stay whole
    }
    result = subprocess.run(
        ["bash", str(CLUSTER / "run-sweep.sh"), "sweeps/x.yaml", "--dry-run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [
        "sweep", "sweeps/x.yaml", "--address", "auto", "--resume",
        "--set", "storage=s3://bucket/sweeps",
        "--set", "mlflow.tracking_uri=http://10.0.0.10:5000",
        "--set", "data.root=/data/mvtec ad",
        "--dry-run",
    ]  # fmt: skip

    del env["HALOAE_STORAGE"]
    result = subprocess.run(
        ["bash", str(CLUSTER / "run-sweep.sh"), "sweeps/x.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "HALOAE_STORAGE is not set" in result.stderr


# ------------------------------------------------------------------------------ sbatch under stubs
def _fake_slurm(tmp_path: Path, haloae_mode: str) -> tuple[dict, Path, Path]:
    """A fake SLURM + Ray: stub commands that log their arguments; srun runs locally."""
    bin_dir, state, submit = tmp_path / "bin", tmp_path / "state", tmp_path / "submit"
    for d in (bin_dir, state, submit / "sweeps"):
        d.mkdir(parents=True)
    (submit / "sweeps" / "x.yaml").write_text("name: x\n")
    log = state / "calls.log"
    _write_stub(bin_dir / "scontrol", 'printf "%s\\n" $STUB_NODES\n')
    # srun: log, drop its options (and -w's value), run the command here
    _write_stub(
        bin_dir / "srun",
        'echo "srun $*" >> "$STUB_LOG"\n'
        'while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do\n'
        '  if [ "$1" = -w ]; then shift; fi; shift\n'
        "done\n"
        'exec "$@"\n',
    )
    # ray start --block: wait until `ray stop` (these stubs are the only "Ray" here)
    _write_stub(
        bin_dir / "ray",
        'echo "ray $*" >> "$STUB_LOG"\n'
        'if [ "$1" = start ] && [[ " $* " == *" --block "* ]]; then\n'
        '  echo $$ >> "$STUB_STATE/blockers"; trap "exit 0" TERM\n'
        "  while :; do sleep 0.1; done\n"
        "fi\n"
        'if [ "$1" = stop ] && [ -f "$STUB_STATE/blockers" ]; then\n'
        '  while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$STUB_STATE/blockers"\n'
        "fi\n",
    )
    wait_for_usr1 = 'trap \'echo "haloae got USR1" >> "$STUB_LOG"; exit 3\' USR1\nwhile :; do sleep 0.1; done\n'
    _write_stub(
        bin_dir / "haloae",
        'echo "haloae $*" >> "$STUB_LOG"\n' + (wait_for_usr1 if haloae_mode == "wait" else "exit 0\n"),
    )
    # python: the wait-for-nodes heredoc waits for the stub nodes; anything else is the real python
    _write_stub(
        bin_dir / "python",
        'if [ "${1:-}" = - ] && [ $# -eq 3 ]; then\n'
        "  cat > /dev/null\n"
        "  for _ in $(seq 200); do\n"
        '    [ "$(cat "$STUB_STATE/blockers" 2>/dev/null | wc -l)" -ge "$2" ] && { echo "stub: $2 nodes up"; exit 0; }\n'
        "    sleep 0.05\n"
        "  done\n"
        "  exit 1\n"
        "fi\n"
        f'exec "{sys.executable}" "$@"\n',
    )
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)
    (venv / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "STUB_LOG": str(log),
        "STUB_STATE": str(state),
        "STUB_NODES": "gpu01 gpu02 gpu03",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "gpu[01-03]",
        "SLURM_SUBMIT_DIR": str(submit),
        "SLURM_CPUS_PER_TASK": "32",
        "SLURM_GPUS_PER_TASK": "a100:4",
        "HALOAE_VENV": str(tmp_path / "venv"),
        "HALOAE_STORAGE": str(tmp_path / "shared" / "sweeps"),
        "MLFLOW_TRACKING_URI": "http://mlflow.hpc.example:5000",
        "RAY_HEAD_WAIT_S": "0",
    }
    return env, log, state


def _run_sbatch(env: dict, signal_after_line: str | None = None) -> tuple[int, str]:
    proc = subprocess.Popen(
        ["bash", str(CLUSTER / "slurm/haloae-sweep.sbatch"), "sweeps/x.yaml", "--set", "seeds=[0]"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        if signal_after_line:
            log = Path(env["STUB_LOG"])
            deadline = time.monotonic() + 30
            while not (log.exists() and signal_after_line in log.read_text()):
                assert time.monotonic() < deadline and proc.poll() is None, "the sweep driver never started"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)  # what SLURM sends (--signal=B:TERM) before the time limit
        out, _ = proc.communicate(timeout=60)
        return proc.returncode, out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _assert_ray_stopped_everywhere(calls: list[str], state: Path) -> None:
    stops = [c for c in calls if c.startswith("srun") and c.endswith("ray stop --grace-period 30")]
    assert sorted(c.split(" -w ")[1].split()[0] for c in stops) == ["gpu01", "gpu02", "gpu03"]
    assert all("--overlap" in c for c in stops), "ray stop must overlap the steps holding the nodes"
    for pid in (state / "blockers").read_text().split():
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)


def test_sbatch_starts_ray_on_every_node_runs_the_sweep_and_stops_ray(tmp_path: Path) -> None:
    env, log, state = _fake_slurm(tmp_path, haloae_mode="exit")
    rc, out = _run_sbatch(env)
    assert rc == 0, out
    calls = log.read_text().splitlines()
    starts = [c for c in calls if c.startswith("ray start")]  # background steps: any order
    assert len(starts) == 3
    (head,) = [c for c in starts if "--head" in c]
    assert "--num-cpus=32" in head and "--num-gpus=4" in head and "--block" in head
    address = re.search(r"--node-ip-address=(\S+) --port=(\d+)", head).expand(r"\1:\2")
    for worker in (c for c in starts if c != head):
        assert f"--address={address}" in worker and "--num-gpus=4" in worker
    worker_nodes = [c.split(" -w ")[1].split()[0] for c in calls if c.startswith("srun") and "ray start --address" in c]
    assert sorted(worker_nodes) == ["gpu02", "gpu03"]  # started in the background: any order
    (sweep,) = [c for c in calls if c.startswith("haloae ")]
    assert sweep == (
        f"haloae sweep sweeps/x.yaml --address auto --resume --set storage={env['HALOAE_STORAGE']} "
        "--set mlflow.tracking_uri=http://mlflow.hpc.example:5000 --set seeds=[0]"
    )
    assert calls.index(sweep) > max(calls.index(s) for s in starts)
    _assert_ray_stopped_everywhere(calls, state)
    assert Path(env["HALOAE_STORAGE"]).is_dir()


def test_sbatch_on_sigterm_stops_the_driver_gracefully_then_ray(tmp_path: Path) -> None:
    env, log, state = _fake_slurm(tmp_path, haloae_mode="wait")
    rc, out = _run_sbatch(env, signal_after_line="haloae sweep")
    assert rc != 0, out  # the next chained job (afternotok) resumes the sweep
    calls = log.read_text().splitlines()
    assert "haloae got USR1" in calls, "Tune saves the experiment state on SIGUSR1"
    assert calls.index("haloae got USR1") < min(i for i, c in enumerate(calls) if c.startswith("ray stop"))
    _assert_ray_stopped_everywhere(calls, state)


# ------------------------------------------------------------------------------ MLflow server
DB_PASSWORD = "db-secret-never-shown"
MLFLOW_REQUIRED = {
    "MLFLOW_BACKEND_STORE_URI": f"postgresql://mlflow:{DB_PASSWORD}@db:5432/mlflow",
    "MLFLOW_ARTIFACTS_DESTINATION": "s3://bucket/mlflow",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 32,
    "MLFLOW_AUTH_ADMIN_PASSWORD": "a-long-admin-password",
    "MLFLOW_ALLOWED_HOSTS": "mlflow.example.org,mlflow.example.org:*",
}


def _start_server(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER / "mlflow/start-server.sh")], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("unset", sorted(MLFLOW_REQUIRED))
def test_mlflow_server_script_needs_its_settings(unset: str, tmp_path: Path) -> None:
    # serving every interface: the Host allow-list is required too
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **MLFLOW_REQUIRED, "MLFLOW_HOST": "0.0.0.0"}
    del env[unset]
    result = _start_server(env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and unset in result.stderr, result.stderr


def test_mlflow_server_script_rejects_a_short_admin_password(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **MLFLOW_REQUIRED, "MLFLOW_AUTH_ADMIN_PASSWORD": "short"}
    result = _start_server(env)
    assert result.returncode == 2 and "at least 12 characters" in result.stderr


@pytest.mark.parametrize("var", ["MLFLOW_DB_PASSWORD_FILE", "PGPASSFILE"])
def test_mlflow_server_script_refuses_a_password_file_every_user_reads(var: str, tmp_path: Path) -> None:
    secret = tmp_path / "db.password"
    secret.write_text(DB_PASSWORD)
    secret.chmod(0o644)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **MLFLOW_REQUIRED, var: str(secret)}
    result = _start_server(env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert var in result.stderr and "chmod 600" in result.stderr and DB_PASSWORD not in result.stderr


def _stub_mlflow(tmp_path: Path) -> tuple[dict, Path]:
    """A PATH whose ``mlflow`` records its arguments and the database settings it was given."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    record = tmp_path / "mlflow.called"
    _write_stub(stubs / "mlflow", f'{{ printf "%s\\n" "$@"; echo "URI=$MLFLOW_BACKEND_STORE_URI"; '
                                  f'echo "PGPASSWORD=${{PGPASSWORD:-}}"; }} > "{record}"\n')
    _write_stub(stubs / "python", f'exec "{sys.executable}" "$@"\n')  # the script checks the drivers with it
    return {"PATH": f"{stubs}:{os.environ['PATH']}", "HOME": str(tmp_path)}, record


def test_mlflow_server_script_keeps_the_database_password_out_of_the_arguments(tmp_path: Path) -> None:
    pytest.importorskip("flask_wtf", reason='the basic-auth app needs pip install "mlflow[auth]"')
    pytest.importorskip("psycopg", reason='the Postgres store needs pip install "psycopg[binary]"')
    env, record = _stub_mlflow(tmp_path)
    secret = tmp_path / "db.password"
    secret.write_text(DB_PASSWORD)
    secret.chmod(0o600)
    settings = {**MLFLOW_REQUIRED, "MLFLOW_BACKEND_STORE_URI": "postgresql://mlflow@db:5432/mlflow",
                "MLFLOW_DB_PASSWORD_FILE": str(secret)}
    del settings["MLFLOW_ALLOWED_HOSTS"]  # loopback by default: the loopback names are allowed
    result = _start_server({**env, **settings, "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts")})
    assert result.returncode == 0, result.stderr
    args, _, passed = record.read_text().partition("URI=")
    assert "postgresql" not in args and DB_PASSWORD not in args, "the store URI goes through the environment"
    assert "--host\n127.0.0.1\n" in args and "--allowed-hosts\nlocalhost,localhost:*,127.0.0.1,127.0.0.1:*\n" in args
    assert passed.splitlines() == ["postgresql://mlflow@db:5432/mlflow", f"PGPASSWORD={DB_PASSWORD}"]
    assert DB_PASSWORD not in result.stderr
    ini = (tmp_path / ".mlflow-server" / "basic_auth.ini")
    assert ini.stat().st_mode & 0o077 == 0 and DB_PASSWORD not in ini.read_text()


def test_mlflow_server_script_says_that_every_interface_needs_tls(tmp_path: Path) -> None:
    pytest.importorskip("flask_wtf", reason='the basic-auth app needs pip install "mlflow[auth]"')
    pytest.importorskip("psycopg", reason='the Postgres store needs pip install "psycopg[binary]"')
    env, record = _stub_mlflow(tmp_path)
    result = _start_server({**env, **MLFLOW_REQUIRED, "MLFLOW_HOST": "0.0.0.0",
                            "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts")})
    assert result.returncode == 0, result.stderr
    assert "--host\n0.0.0.0\n" in record.read_text() and "TLS" in result.stderr
    assert DB_PASSWORD not in result.stderr


def test_mlflow_compose_wires_postgres_minio_and_the_script() -> None:
    compose = load("mlflow/docker-compose.yaml")
    services = compose["services"]
    assert {"postgres", "minio", "mlflow"} <= set(services)
    env = services["mlflow"]["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert (
        env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://") and env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    )
    for secret in ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        assert ":?" in env[secret], f"{secret} must be required, not defaulted"
    assert "start-server.sh" in (CLUSTER / "mlflow/Dockerfile").read_text()
