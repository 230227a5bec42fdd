# SPDX-License-Identifier: Apache-2.0
"""The Ray a sweep starts on its own machine listens on 127.0.0.1 only, also for an in-process
caller of ``run_sweep`` that imported Ray first (the CLI's case: tests/test_sweep_run.py)."""

from __future__ import annotations

import os
import shutil
import threading

import pytest

from haloae.vocab import ENV_RAY_SINGLE_MACHINE
from sweeps.loading import load_spec
from sweeps.loopback import single_machine_ray
from tests.helpers.sockets import descendants, listening
from tests.helpers.sweeps import tiny_spec

ray = pytest.importorskip("ray")  # imported before the sweep code runs: the case to cover
from ray._private import ray_constants  # noqa: E402


def test_single_machine_mode_holds_for_ray_init_only(monkeypatch):
    monkeypatch.delenv(ENV_RAY_SINGLE_MACHINE, raising=False)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)  # as Ray read it at import on Linux
    with single_machine_ray():
        assert os.environ[ENV_RAY_SINGLE_MACHINE] == "0" and ray_constants.ENABLE_RAY_CLUSTER is False
        from ray._private.services import get_node_ip_address

        assert get_node_ip_address() == "127.0.0.1"
    # afterwards a ray.init on a cluster, or a `ray start` this process launches, gets the real address
    assert ENV_RAY_SINGLE_MACHINE not in os.environ and ray_constants.ENABLE_RAY_CLUSTER is True


def test_a_user_who_asks_for_every_interface_keeps_it(monkeypatch):
    monkeypatch.setenv(ENV_RAY_SINGLE_MACHINE, "1")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    with single_machine_ray():
        assert os.environ[ENV_RAY_SINGLE_MACHINE] == "1" and ray_constants.ENABLE_RAY_CLUSTER is True


@pytest.mark.slow  # a local Ray and a one-trial sweep
@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_in_process_run_sweep_starts_a_ray_that_listens_on_loopback_only(tmp_path, monkeypatch):
    from sweeps.runner import run_sweep

    monkeypatch.delenv(ENV_RAY_SINGLE_MACHINE, raising=False)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)  # Ray imported first, in its Linux default
    path = tiny_spec(tmp_path, "inproc", overrides={"train.epochs": 2, "train.steps_per_epoch": 1},
                     data={"synthetic": {"categories": ["synth_disc"], "size": 32, "seed": 0}, "categories": "all"})
    seen, done = set(), threading.Event()

    def watch() -> None:  # the trial workers come and go: look every half second while the sweep runs
        while not done.wait(0.5):
            seen.update(listening(descendants(os.getpid())))

    ray.shutdown()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        outcome = run_sweep(load_spec(path))
        seen.update(listening(descendants(os.getpid())))  # Ray is still up: its sockets at the end
    finally:
        done.set()
        watcher.join()
        ray.shutdown()
    assert not outcome.failed, outcome.summary()
    names = {s.process for s in seen}
    assert {"gcs_server", "raylet"} <= names and len(seen) >= 5, f"too few sockets seen to judge: {sorted(seen, key=str)}"
    public = sorted(f"{s.address} ({s.process})" for s in seen if not s.loopback)
    assert not public, f"listening beyond loopback: {public}"
