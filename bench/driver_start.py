# SPDX-License-Identifier: Apache-2.0
"""What a ``haloae sweep`` command costs before any trial: the driver's own start, without torch or MLflow.

A sweep's driver validates the spec, scans the dataset, prices the trials, seeds the MLflow store
and runs Ray Tune; it never trains, so it never needs torch, torchvision or scikit-learn (the
trials import them in their own processes), and its dry run writes nothing to MLflow, so it does
not import MLflow either (the tracking server's check is a socket). Two layouts, alternating, each
a fresh process:

    driver      ``haloae sweep SPEC --dry-run`` as installed: validation, trial list and cost
    as before   the same command after ``import torch, torchvision, mlflow`` in that process: what
                every dry run paid while the spec's schema reached torch through ``haloae.data``
                and the tracking check was in ``sweeps.tracking``

The table gives each one's median wall time and the ratio, and the first layout's process is
asked whether torch was imported (it must not be).

Run::

    python bench/driver_start.py                     # 5 rounds: about a minute
    python bench/driver_start.py --spec sweeps/block_halo.yaml
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DRY_RUN = (
    "import sys\nfrom haloae.cli import main\ntry:\n    main(['sweep', sys.argv[1], '--dry-run'])\n"
    "except SystemExit as exc:\n    code = exc.code\n"
    "print('torch imported:', 'torch' in sys.modules, '| mlflow imported:', 'mlflow' in sys.modules, file=sys.stderr)\nsys.exit(code)"
)
LAYOUTS = {"driver": DRY_RUN, "as before": "import torch, torchvision, mlflow\n" + DRY_RUN}


def timed(code: str, spec: str) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, spec], cwd=REPO_ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{spec}: the dry run failed ({done.returncode}): {done.stderr.strip().splitlines()[-1]}")
    return elapsed, done.stderr.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--spec", default="sweeps/smoke.yaml")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    timed(LAYOUTS["driver"], args.spec)  # the page cache warm for both
    seen = ""
    for _ in range(args.rounds):
        for name, code in LAYOUTS.items():
            elapsed, last_line = timed(code, args.spec)
            times[name].append(elapsed)
            seen = last_line if name == "driver" else seen
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"haloae sweep {args.spec} --dry-run, {args.rounds} rounds each, alternating; the driver's process: {seen}")
    print(f"{'layout':<11} {'median s':>9}  all")
    for name, values in times.items():
        print(f"{name:<11} {medians[name]:>9.2f}  {', '.join(f'{t:.2f}' for t in values)}")
    print(f"driver / as before: {medians['driver'] / medians['as before']:.2f}x")


if __name__ == "__main__":
    main()
