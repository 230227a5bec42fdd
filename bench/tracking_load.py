# SPDX-License-Identifier: Apache-2.0
"""How many concurrent trials a tracking store holds: K writer processes log like sweep trials.

Each writer runs the trials' own logging code (``sweeps.tracking.TrialRun``): the run found by
its tags and created with the flattened config as params (batches of 100), the node tag, one
batch of per-epoch metrics per epoch, then ``finish``: the final metrics, the artifacts
(config.json, metrics.json, alpha_schedule.png, two overlays, checkpoint/best.pt) and the run
end. All K start together (a barrier) and write as fast as they can, which is far denser than
real trials (an epoch takes seconds to hours), so a store that holds K here holds K trials.

Stores:
    sqlite-mlflow  the sweep's sqlite file as MLflow opens it by itself (rollback journal,
                   Python's 5 s lock wait): the baseline
    sqlite         the same file as the trials open it (``sweeps.stores``: WAL, busy timeout,
                   bounded retries of a call that found the database locked)
    server         ``cluster/mlflow/start-server.sh`` on a fresh PostgreSQL database (basic auth,
                   proxied artifacts), ``--server-workers`` uvicorn workers

Afterwards every expected value is read back (params, each metric point, artifacts, the
FINISHED status) and the missing ones counted as lost. Prints, per store and K: logging calls
per second, p50/p99 latency of a logging call (a ``TrialRun`` method: one or a few MLflow
requests), failed calls, and values lost of those expected.

Run::

    python bench/tracking_load.py                              # K = 1, 4, 16, 64 on all three stores
    python bench/tracking_load.py --k 1,4 --stores sqlite      # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import multiprocessing as mp
import os
import sqlite3
import sys
import tempfile
import time
import traceback
from contextlib import ExitStack
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.helpers.tracking_server: the PostgreSQL-backed server

from haloae.config import HaloAEConfig  # noqa: E402
from haloae.plots import plot_alpha_schedule  # noqa: E402, F401 - imported before the writers fork
from sweeps import stores, tracking  # noqa: E402

EPOCH_KEYS = [f"train/{k}" for k in ("loss", "loss_cls", "loss_fm", "loss_im", "alpha_cls", "alpha_fm", "alpha_im")] + [
    f"val/{s}/{m}" for s in ("afm_norm_filter", "afm", "aim") for m in ("image_auroc", "pixel_auroc", "aupro")
] + ["val/image_auroc", "val/pixel_auroc", "val/aupro", "epoch_time_s"]
FINAL_KEYS = ["best_epoch"] + [f"test/{m}" for m in ("image_auroc", "pixel_auroc", "aupro")] + [
    f"test/defect/d{i}/image_auroc" for i in range(6)
]
ARTIFACTS = {"config.json", "metrics.json", "alpha_schedule.png", "overlays/a.png", "overlays/b.png", "checkpoint/best.pt"}
SWEEP, EXPERIMENT = "load", "tracking-load"


def writer_files(folder: Path) -> Path:
    """A trial's output folder as ``TrialRun.finish`` finds it (sizes like the tiny preset's)."""
    rng = np.random.default_rng(0)
    (folder / "overlays").mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text("{}")
    (folder / "best.pt").write_bytes(rng.bytes(256 * 1024))
    for name in ("a.png", "b.png"):
        (folder / "overlays" / name).write_bytes(rng.bytes(16 * 1024))
    return folder


def setup(uri: str, folder: Path, out: mp.Queue) -> None:
    """The sweep's parent run, as the driver makes it before any trial (own process: no store is
    opened in the parent, whose connections the forked writers would share)."""
    artifacts = tracking.artifact_location(uri, folder)
    out.put(tracking.ensure_parent_run(uri, EXPERIMENT, SWEEP, "0" * 64, None, [], artifacts))


def writer(index: int, uri: str, parent: str, epochs: int, files: Path, barrier, out: mp.Queue, raw: bool) -> None:
    if raw:  # the baseline: MLflow's own client on the sqlite file
        from mlflow.tracking import MlflowClient

        stores.writer_client = lambda uri: MlflowClient(tracking_uri=uri)
    cfg = HaloAEConfig.from_overrides("tiny")
    rng = np.random.default_rng(index)
    calls: list[tuple[str, float, str]] = []  # (call, seconds, error or "")

    def timed(name: str, fn, *args):
        start = time.perf_counter()
        try:
            result = fn(*args)
            calls.append((name, time.perf_counter() - start, ""))
            return result
        except Exception as exc:
            calls.append((name, time.perf_counter() - start, f"{type(exc).__name__}: {_cause(exc)}"))
            return None

    barrier.wait()
    run = timed("create", tracking.TrialRun, uri, EXPERIMENT, parent, SWEEP, f"w{index:03d}", "synth", 0, cfg, "/data")
    if run is not None:
        timed("tag_node", run.tag_node, f"node{index % 4}")
        for epoch in range(epochs):
            timed("log_epoch", run.log_epoch, epoch, dict(zip(EPOCH_KEYS, rng.random(len(EPOCH_KEYS)), strict=True)))
        final = {**dict(zip(FINAL_KEYS, rng.random(len(FINAL_KEYS)), strict=True)), "best_epoch": epochs - 1}
        timed("finish", run.finish, final, files, cfg)
    out.put((index, calls))


def _cause(exc: BaseException) -> str:
    """The driver's own message (``database is locked``), not SQLAlchemy's wrapper text."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return " ".join(str(exc).split())[:160]


def read_back(db, artifact_root, k: int, epochs: int, cfg_params: int) -> tuple[int, int]:
    """(values lost, values expected) over every writer's run, read from the store's database and
    artifact folder directly (through the server, basic auth's per-request password hash would
    take longer than the writing)."""
    per_run = cfg_params + len(EPOCH_KEYS) * epochs + len(FINAL_KEYS) + len(ARTIFACTS) + 1  # + FINISHED
    runs = {trial: (run, status, uri) for run, status, uri, trial in db.execute(
        "SELECT r.run_uuid, r.status, r.artifact_uri, t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE t.key = 'trial_id'").fetchall()}
    params = dict(db.execute("SELECT run_uuid, count(*) FROM params GROUP BY run_uuid").fetchall())
    points = dict(db.execute("SELECT run_uuid, count(DISTINCT key || '@' || CAST(step AS TEXT)) FROM metrics "
                             "GROUP BY run_uuid").fetchall())
    found = 0
    for index in range(k):
        if f"w{index:03d}" not in runs:
            continue
        run, status, uri = runs[f"w{index:03d}"]
        folder = Path(uri.removeprefix("file://")) if uri.startswith("file://") else \
            artifact_root / uri.removeprefix("mlflow-artifacts:/")
        logged = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()
        found += params.get(run, 0) + points.get(run, 0) + len(ARTIFACTS & logged) + (status == "FINISHED")
    return k * per_run - found, k * per_run


def measure(store: str, k: int, epochs: int, folder: Path, server_workers: int) -> dict:
    ctx = mp.get_context("fork")
    with ExitStack() as stack:
        if store == "server":
            import psycopg

            from tests.helpers.tracking_server import scratch_database, tracking_server

            db_url = stack.enter_context(scratch_database("load"))
            srv = stack.enter_context(tracking_server(folder / "server", db_url, workers=server_workers))
            os.environ.update(srv.client_env())
            uri, artifact_root = srv.url, folder / "server" / "artifacts"
            connect = functools.partial(psycopg.connect, db_url)
        else:
            uri, artifact_root = f"sqlite:///{folder / 'mlflow.db'}", folder
            connect = functools.partial(sqlite3.connect, folder / "mlflow.db")
        queue = ctx.Queue()
        ctx.Process(target=setup, args=(uri, folder, queue)).start()
        parent = queue.get(timeout=300)
        files = writer_files(folder / "trial")
        barrier = ctx.Barrier(k + 1)
        procs = [ctx.Process(target=writer, args=(i, uri, parent, epochs, files, barrier, queue, store == "sqlite-mlflow"))
                 for i in range(k)]
        for p in procs:
            p.start()
        barrier.wait()
        start = time.perf_counter()
        results = [queue.get(timeout=3600) for _ in procs]
        wall = time.perf_counter() - start
        for p in procs:
            p.join()
        cfg_params = len(tracking.run_params(HaloAEConfig.from_overrides("tiny"), "synth", 0))
        with contextlib.closing(connect()) as db:
            lost, expected = read_back(db, artifact_root, k, epochs, cfg_params)
    calls = [c for _, writer_calls in results for c in writer_calls]
    ok = [seconds for _, seconds, error in calls if not error]
    errors = sorted({error for _, _, error in calls if error})
    return {
        "store": store, "k": k, "calls": len(calls), "calls_per_s": len(ok) / wall,
        "p50_ms": 1000 * float(np.percentile(ok, 50)) if ok else float("nan"),
        "p99_ms": 1000 * float(np.percentile(ok, 99)) if ok else float("nan"),
        "failed": len(calls) - len(ok), "lost": lost, "expected": expected, "wall_s": wall,
        "error": errors[0] if errors else "",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", default="1,4,16,64", help="writer counts, comma-separated")
    parser.add_argument("--stores", default="sqlite-mlflow,sqlite,server")
    parser.add_argument("--epochs", type=int, default=10, help="per-epoch metric batches per writer")
    parser.add_argument("--server-workers", type=int, default=4, help="the server's uvicorn workers (MLFLOW_WORKERS)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    print("| store | K | calls | calls/s | p50 ms | p99 ms | failed calls | values lost / expected | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for store in args.stores.split(","):
        for k in (int(x) for x in args.k.split(",")):
            with tempfile.TemporaryDirectory(prefix=f"haloae-load-{store}-{k}-") as tmp:
                try:
                    r = measure(store, k, args.epochs, Path(tmp), args.server_workers)
                except Exception:
                    print(f"| {store} | {k} | run failed: {traceback.format_exc().splitlines()[-1]} |||||||")
                    continue
            print(f"| {r['store']} | {k} | {r['calls']} | {r['calls_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} "
                  f"| {r['failed']} | {r['lost']} / {r['expected']} | {r['wall_s']:.0f} |", flush=True)
            if r["error"]:
                print(f"  first error: {r['error']}", flush=True)


if __name__ == "__main__":
    main()
