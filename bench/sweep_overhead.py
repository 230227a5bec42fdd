# SPDX-License-Identifier: Apache-2.0
"""What running trials as a sweep costs: the same 8 small trials directly in a loop and as a sweep.

    loop    one process: for each trial, ``build_config`` -> ``fit`` (data decoded once per
            category and reused, torch on 2 threads). No Ray, no MLflow, no checkpoints shipped.
    sweep   ``run_sweep`` of the same definition on a local Ray with 2 CPUs: Ray start, a trial
            actor per trial (actors reused), per-epoch ``tune.report`` with a checkpoint copied to
            storage, MLflow child runs with per-epoch metrics and artifacts, per-node data cache
            (the bench's own temporary folder, never ``$HALOAE_DATA_CACHE``: emptied before each
            layout, except the migrated MLflow store template, made once before the layouts: a
            user's machine makes it once per MLflow version, so it is no cost of a sweep; its time
            is printed).
            Two layouts: one trial at a time on 2 CPUs (pure overhead), and two concurrent trials
            on 1 CPU each (what a user would run on 2 cores).

All run in this one process, one after the other, on the same definition: loop, serial sweep, loop,
concurrent sweep, loop. Each sweep's ratio is against the mean of the two loop runs around it (on a
shared host the machine's speed drifts 10-20 % within minutes; the drift across each pair is
printed). The bar: the serial layout at most 1.05x the loop, the concurrent one no worse than 0.75x.

A sweep's overhead is a fixed cost (Ray start, the MLflow parent run and store, the trial actor's
imports) plus a small cost per trial (its MLflow run and artifacts, Tune's report and checkpoint
copy, Ray's daemons sharing the cores). For the serial layout the table splits the two, from
Tune's own per-trial ``time_total_s``: "start" is the wall time outside any trial, "per trial" the
mean in-trial time above the loop's. The ratio therefore depends on trial length: the default
trials (3 epochs x 120 steps, ~25 s each on 2 cores) are still far shorter than any real one
(the smoke sweep's take a minute, the paper's hours).

Run::

    python bench/sweep_overhead.py                    # 8 trials of the tiny preset, ~25 s each; ~20 min
    python bench/sweep_overhead.py --steps 40         # ~10 s trials: the fixed costs weigh more
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

os.environ.update({"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"})
STORE_TEMPLATE = "mlflow-store-"  # sweeps.stores.seed_store's file in the cache folder


def definition(storage: Path, name: str, epochs: int, steps: int, cpu: float, concurrent: int) -> Path:
    spec = {
        "name": name,
        "data": {"synthetic": {"categories": ["synth_disc", "synth_brick"], "size": 64, "seed": 0}, "categories": "all"},
        "preset": "tiny",
        "overrides": {"model.image_size": 64, "train.epochs": epochs, "train.steps_per_epoch": steps},
        "search": {"algorithm": "grid", "space": {"optim.lr": {"grid": [1e-3, 3e-3]}, "model.halo_size": {"grid": [1, 2]}}},
        "objective": {"metric": "val/image_auroc", "mode": "max", "aggregate": "per_category"},
        "resources": {"cpu": cpu},
        "max_concurrent_trials": concurrent,
        "storage": str(storage),
    }
    path = storage / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_loop(spec) -> tuple[float, int, None]:
    import torch

    from haloae.category_data import prepare_data
    from haloae.train import fit
    from sweeps.runner import prepare
    from sweeps.trials import build_config

    trials = prepare(spec)
    torch.set_num_threads(2)
    data = {}
    t0 = time.perf_counter()
    for i, params in enumerate(trials):
        cfg = build_config(spec, params)
        key = (params["category"], cfg.train.seed)
        if key not in data:
            data[key] = prepare_data(cfg, spec.data_root(), params["category"])
        out = Path(tempfile.mkdtemp(prefix=f"loop-{i}-"))
        fit(cfg, data[key], out, progress=False)
        shutil.rmtree(out)
    return time.perf_counter() - t0, len(trials), None


def run_as_sweep(spec, cache: Path) -> tuple[float, int, float]:
    import ray

    from sweeps.runner import run_sweep

    for entry in cache.iterdir():  # a cold data and feature cache (fair to the loop); the migrated
        if not entry.name.startswith(STORE_TEMPLATE):  # store template is made once per MLflow version
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    t0, cpu0 = time.perf_counter(), time.process_time()
    outcome = run_sweep(spec)
    elapsed, driver_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    ray.shutdown()
    # the driver's own CPU (Tune's loop, the progress table, MLflow's parent run) shares the cores
    # with the trials; Ray's daemons are other processes and are not in it
    print(f"# driver CPU during the sweep of {spec.max_concurrent_trials or 'any'} at a time: {driver_cpu:.1f} s of {elapsed:.1f} s")
    assert not outcome.failed, outcome.summary()
    in_trials = sum(t.metrics.get("time_total_s", 0.0) for t in outcome.trials)
    return elapsed, len(outcome.trials), in_trials


def main(argv: list[str] | None = None) -> int:
    from haloae.vocab import ENV_DATA_CACHE

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=120)
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="sweep-overhead-"))
    # the trials' cache is always the bench's own (it is emptied below): a user's $HALOAE_DATA_CACHE
    # is set aside for the run and given back after; the trials inherit the variable from here
    cache, users_cache = Path(tempfile.mkdtemp(prefix="haloae-cache-")), os.environ.get(ENV_DATA_CACHE)
    os.environ[ENV_DATA_CACHE] = str(cache)
    try:
        template_s = make_store_template(root, cache)
        rows = run_layouts(root, cache, args.epochs, args.steps)
    finally:
        if users_cache is None:
            os.environ.pop(ENV_DATA_CACHE, None)
        else:
            os.environ[ENV_DATA_CACHE] = users_cache
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    report(rows, args.epochs, args.steps)
    print(f"# not in any layout: the migrated MLflow store template, made once per MLflow version ({template_s:.1f} s)")
    return 0


def make_store_template(root: Path, cache: Path) -> float:
    """The migrated store template in the bench's cache (``sweeps.stores.seed_store``), and the
    seconds it took: made before the layouts, so that neither sweep layout pays it alone. In a
    child process: importing MLflow here would take the driver's own import of it out of the
    first sweep's time, and that import is a cost of every sweep."""
    import subprocess

    code = (
        "import sys, time; from pathlib import Path; from sweeps.stores import seed_store; t0 = time.perf_counter(); "
        "seed_store(Path(sys.argv[1]), sys.argv[2]); print(time.perf_counter() - t0)"
    )
    args = [sys.executable, "-c", code, str(root / "template-warmup.db"), str(cache)]
    done = subprocess.run(args, cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    return float(done.stdout.split()[-1])


def run_layouts(root: Path, cache: Path, epochs: int, steps: int) -> list[tuple[str, float, int, float | None]]:
    from sweeps.loading import load_spec
    from sweeps.runner import prepare

    # a loop runs before, between and after the sweeps: the machine's speed drifts (shared hosts,
    # 10-20 % within minutes), and each sweep is compared with the mean of the two loops around it
    layouts = [("loop", 2.0, 1), ("sweep 1x2cpu", 2.0, 1), ("loop", 2.0, 1), ("sweep 2x1cpu", 1.0, 2), ("loop", 2.0, 1)]
    rows = []
    for label, cpu, concurrent in layouts:
        spec = load_spec(definition(root / f"{len(rows)}_{label.replace(' ', '_')}", "overhead", epochs, steps, cpu, concurrent))
        prepare(spec)  # synthetic data generated outside the timed region, for both
        seconds, n, in_trials = run_loop(spec) if label.startswith("loop") else run_as_sweep(spec, cache)
        rows.append((label, seconds, n, in_trials))
    return rows


def report(rows: list[tuple[str, float, int, float | None]], epochs: int, steps: int) -> None:
    loops = [seconds for label, seconds, _, _ in rows if label == "loop"]
    n = rows[0][2]
    print(f"# bench/sweep_overhead.py: {n} trials (tiny preset, 64 px, {epochs} epochs x {steps} steps), 2 CPUs")
    print(f"# each sweep's ratio is against the mean of the loop runs just before and after it; the loops "
          f"took {' '.join(f'{x:.1f}' for x in loops)} s (the loops' own ratio: against the mean of all {len(loops)})")
    print(f"{'layout':14s} {'trials':>6s} {'wall s':>8s} {'ratio':>6s} {'overhead':>9s} {'drift':>7s} {'start s':>8s} {'per trial s':>12s}")
    for i, (label, seconds, n, in_trials) in enumerate(rows):
        if label == "loop":
            base, drift = sum(loops) / len(loops), ""
        else:  # a sweep sits between two loops
            before, after = rows[i - 1][1], rows[i + 1][1]
            base, drift = (before + after) / 2, f"{100 * (after / before - 1):+6.1f}%"
        split = ""
        if in_trials is not None and label.startswith("sweep 1x"):  # serial: wall = start + trials
            split = f" {seconds - in_trials:8.1f} {(in_trials - base) / n:12.2f}"
        print(f"{label:14s} {n:6d} {seconds:8.1f} {seconds / base:6.2f} {100 * (seconds / base - 1):8.1f}% {drift:>7s}{split}")


if __name__ == "__main__":
    raise SystemExit(main())
