# SPDX-License-Identifier: Apache-2.0
"""The Ray a sweep driver starts on its own machine listens on 127.0.0.1 only.

Ray 2.60 on Linux binds its processes (GCS, raylet, workers, dashboard and runtime-env agents, the
two metrics export ports) on every interface, and ``ray.init(_node_ip_address="127.0.0.1")`` or
``ray start --node-ip-address=127.0.0.1`` do not change that: Ray replaces a loopback address by
the machine's own (``ray._private.services.resolve_ip_for_localhost``). What keeps every socket on
loopback is Ray's single-machine mode, its default on macOS and Windows, switched on by
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (checked with ``ss -ltnp``: bench/listening_sockets.py).

Ray reads that variable when it is imported: in this process (perhaps long before, by a caller of
``sweeps.runner.run_sweep`` that imported Ray first) and in each process ``ray.init`` starts.
``single_machine_ray`` sets both, for the span of ``ray.init`` only: the node's address is fixed
once started, and a later ``ray.init`` on a cluster in the same process, or a ``ray start`` it
launches, gets its real address. A user who set the variable to 1 keeps every interface.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from haloae.vocab import ENV_RAY_SINGLE_MACHINE


def user_wants_every_interface() -> bool:
    """``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` set true by the user (Ray's own reading of it)."""
    return os.environ.get(ENV_RAY_SINGLE_MACHINE, "").strip().lower() in ("1", "true")


@contextmanager
def single_machine_ray() -> Iterator[None]:
    """``with single_machine_ray(): ray.init(address="local", ...)``: the Ray it starts is on loopback."""
    if user_wants_every_interface():
        yield
        return
    from ray._private import ray_constants  # the flag Ray read from the variable at import

    previous_env, previous_flag = os.environ.get(ENV_RAY_SINGLE_MACHINE), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[ENV_RAY_SINGLE_MACHINE] = "0"  # inherited by the GCS, raylet, agents and workers
    ray_constants.ENABLE_RAY_CLUSTER = False  # this process: the node IP becomes 127.0.0.1
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous_flag
        if previous_env is None:
            os.environ.pop(ENV_RAY_SINGLE_MACHINE, None)
        else:
            os.environ[ENV_RAY_SINGLE_MACHINE] = previous_env
