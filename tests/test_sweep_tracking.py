# SPDX-License-Identifier: Apache-2.0
"""The tracking store answers before a sweep starts: an unreachable MLflow server or database is one
line within seconds, at the dry run and at the run, and nothing is written."""

from __future__ import annotations

import socket
import time

import pytest
from click.testing import CliRunner

from sweeps.tracking import TrackingUnreachableError, check_reachable
from tests.helpers.sweeps import tiny_spec


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is: nobody listens there


@pytest.mark.parametrize("scheme", ["http", "postgresql+psycopg2"])
def test_unreachable_server_is_one_line_naming_host_and_port_not_the_password(scheme):
    port = _closed_port()
    with pytest.raises(TrackingUnreachableError, match=f"mlflow.tracking_uri: .*127.0.0.1:{port} does not answer") as err:
        check_reachable(f"{scheme}://user:secret@127.0.0.1:{port}/db", "spec.yaml")
    assert "secret" not in str(err.value) and str(err.value).startswith("spec.yaml: ")


def test_a_server_that_never_answers_fails_within_the_timeout():
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        with pytest.raises(TrackingUnreachableError, match="does not answer"):
            check_reachable(f"http://127.0.0.1:{silent.getsockname()[1]}", "spec.yaml")
        assert time.monotonic() - started < 15


def test_local_stores_are_not_probed(tmp_path):
    check_reachable(f"sqlite:///{tmp_path}/mlflow.db", "spec.yaml")
    check_reachable(str(tmp_path / "mlruns"), "spec.yaml")


@pytest.mark.parametrize("dry_run", [True, False])
def test_sweep_with_unreachable_tracking_uri_fails_fast_and_writes_nothing(tmp_path, dry_run):
    from haloae.cli import main

    path = tiny_spec(tmp_path, "offline", mlflow={"tracking_uri": f"http://127.0.0.1:{_closed_port()}"})
    started = time.monotonic()
    result = CliRunner().invoke(main, ["sweep", str(path), *(["--dry-run"] if dry_run else [])])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "mlflow.tracking_uri" in lines[0] and "does not answer" in lines[0], result.stderr
    assert time.monotonic() - started < 15
    assert not (tmp_path / "sweeps").exists()
