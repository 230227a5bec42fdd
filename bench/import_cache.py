# SPDX-License-Identifier: Apache-2.0
"""What a fresh process pays to import the stack, with and without the byte code cache.

Every process of a sweep (the driver, each Ray worker, a CLI subprocess in the tests) imports
torch, Ray and MLflow. Where ``PYTHONDONTWRITEBYTECODE`` is set (as on the project's machines),
Python never writes the ``.pyc`` files it compiles, so an install made with ``pip --no-compile``
and nothing after it compiles those packages from source in every process. ``scripts/setup.sh``
therefore runs ``compileall`` once after installing.

    cached      the venv as set-up leaves it (``__pycache__`` next to each module)
    uncached    the same imports with ``PYTHONPYCACHEPREFIX`` set to an empty folder and
                ``PYTHONDONTWRITEBYTECODE=1``: nothing read from or written to a cache, which is
                what a ``--no-compile`` install gives there

The two alternate, ``--rounds`` times each, in this one run; the table gives each one's median
wall time and the ratio.

Run::

    python bench/import_cache.py              # 3 rounds: about a minute
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

# what a trial process imports before it trains
IMPORTS = "import torch, mlflow, ray.tune, haloae.train"


def timed_import(env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", IMPORTS], env=env, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"} | {"PYTHONDONTWRITEBYTECODE": "1"}
    times: dict[str, list[float]] = {"cached": [], "uncached": []}
    timed_import(base)  # the page cache warm for both
    for _ in range(args.rounds):
        times["cached"].append(timed_import(base))
        with tempfile.TemporaryDirectory() as empty:
            times["uncached"].append(timed_import(base | {"PYTHONPYCACHEPREFIX": empty}))
    cached, uncached = (statistics.median(times[k]) for k in ("cached", "uncached"))
    print(f"python -c {IMPORTS!r}, {args.rounds} rounds each, alternating")
    print(f"{'layout':<10} {'median s':>9}  all")
    for name, value in (("cached", cached), ("uncached", uncached)):
        print(f"{name:<10} {value:>9.2f}  {', '.join(f'{t:.2f}' for t in times[name])}")
    print(f"uncached / cached: {uncached / cached:.2f}x")


if __name__ == "__main__":
    main()
