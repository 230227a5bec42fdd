# SPDX-License-Identifier: Apache-2.0
"""Checks of the Ray cluster a sweep is about to use, run after ``ray.init`` and before any trial:
every node sees the storage, and some node is large enough for one trial."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sweeps.errors import SpecError
from sweeps.schema import SweepSpec


def check_shared_storage(spec: SweepSpec) -> None:
    """On a multi-node cluster, a local storage path must be visible to every node (NFS).

    A path only the head sees makes Ray fail mid-sweep; here a marker file written by the driver is
    looked for by a task pinned to each alive node, and a node that cannot see it is a one-line
    error at start.
    """
    import ray

    if not spec.local_storage():
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) <= 1:
        return
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    storage = str(spec.sweep_dir())
    marker = Path(storage) / ".shared-storage-check"
    marker.parent.mkdir(parents=True, exist_ok=True)
    token = os.urandom(8).hex()
    marker.write_text(token)

    @ray.remote(num_cpus=0)
    def sees(path: str) -> str:
        try:
            return Path(path).read_text()
        except OSError:
            return ""

    refs = [
        sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker))
        for n in nodes
    ]
    blind = [n["NodeManagerAddress"] for n, seen in zip(nodes, ray.get(refs, timeout=120), strict=True) if seen != token]
    marker.unlink(missing_ok=True)
    if blind:
        raise SpecError(
            f"{spec.where()}: storage: {storage} is local to the driver's machine but this cluster "
            f"has {len(nodes)} nodes and {', '.join(blind)} cannot see it; use a shared path (NFS), s3:// or gs://"
        )


def check_schedulable(spec: SweepSpec, own_cluster: bool) -> None:
    """Some alive node can hold one trial's ``resources``, else the trials would pend forever.

    On a Ray this driver started (``own_cluster``) that is a one-line error; on a cluster given by
    ``--address`` an autoscaler may still add such a node, so it is a warning on stderr.
    """
    import ray

    need = {"CPU": spec.resources.cpu, "GPU": spec.resources.gpu}
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(all(node.get(kind, 0.0) >= amount for kind, amount in need.items() if amount) for node in nodes):
        return
    largest = max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})
    message = (
        f"{spec.where()}: resources: a trial needs {need['CPU']:g} CPU and {need['GPU']:g} GPU, but no node of "
        f"this Ray cluster has that much (largest: {largest.get('CPU', 0.0):g} CPU, {largest.get('GPU', 0.0):g} GPU)"
    )
    if own_cluster:
        raise SpecError(message + "; lower resources.cpu / resources.gpu, or run on a cluster with --address")
    print(f"Warning: {message}; the trials wait until the cluster adds such a node", file=sys.stderr)
