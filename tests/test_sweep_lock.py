# SPDX-License-Identifier: Apache-2.0
"""One sweep per name at a time (``sweeps.lock``): the CLI refused while the lock is held, before
anything is written (the lock comes before Ray), a lock held by another process, a stale one taken over."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from haloae.vocab import SWEEP_LOCK_FILE
from sweeps.loading import load_spec
from sweeps.lock import SweepLock, SweepLockedError
from tests.helpers.sweeps import tiny_spec

HOLD = "import sys, time; from sweeps.lock import SweepLock; SweepLock(sys.argv[1], 'held').acquire(); print('held', flush=True); time.sleep(600)"


def _hold_in_another_process(sweep_dir) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(sweep_dir)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_second_sweep_on_the_same_name_is_refused_naming_the_holder(tmp_path):
    from haloae.cli import main

    spec = load_spec(tiny_spec(tmp_path, "busy"))
    with SweepLock(spec.sweep_dir(), spec.name):  # a second open file of the same lock: refused as another process is
        result = CliRunner().invoke(main, ["sweep", str(spec.source)])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.output
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in lines[0] and "already running" in lines[0]
        # refused before anything was written: no data, no tracking store, no Tune state
        assert sorted(p.name for p in spec.sweep_dir().iterdir()) == [SWEEP_LOCK_FILE]
    assert not (spec.sweep_dir() / SWEEP_LOCK_FILE).exists(), "released at exit"


@pytest.mark.slow  # starts a process
def test_lock_held_by_another_process_then_taken_over_when_it_died(tmp_path):
    sweep_dir = tmp_path / "sweeps" / "shared"
    holder = _hold_in_another_process(sweep_dir)
    try:
        with pytest.raises(SweepLockedError, match=f"pid {holder.pid} on host {socket.gethostname()}"):
            SweepLock(sweep_dir, "shared").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder died without releasing: its lock file names it, but nobody holds the flock
    assert (sweep_dir / SWEEP_LOCK_FILE).read_text().split()[0] == str(holder.pid)
    with SweepLock(sweep_dir, "shared") as lock:
        assert lock.took_over == f"pid {holder.pid} on host {socket.gethostname()}"
        assert (sweep_dir / SWEEP_LOCK_FILE).read_text().split()[0] == str(os.getpid())
    with SweepLock(sweep_dir, "shared") as again:  # released: free again, nothing to take over
        assert again.took_over == ""
