# SPDX-License-Identifier: Apache-2.0
"""The listening TCP sockets of a small local sweep (``ss -ltnp``): each with its owning process and
whether it is on loopback. Issue 12 item 7: on one machine every socket should be on 127.0.0.1.

    .venv/bin/python bench/listening_sockets.py              # `haloae sweep` (the CLI), about a minute on 2 cores
    .venv/bin/python bench/listening_sockets.py --in-process # run_sweep called from Python (Ray imported first)

Exit code 1 when any socket of the sweep's processes listens beyond loopback.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from haloae.vocab import QUIET_ENV  # noqa: E402
from tests.helpers.sockets import Listening, descendants, listening  # noqa: E402
from tests.helpers.sweeps import tiny_spec  # noqa: E402

ONE_CATEGORY = {"synthetic": {"categories": ["synth_disc"], "size": 32, "seed": 0}, "categories": "all"}


def _watch(pid: int, seen: set[Listening], done: threading.Event) -> None:
    while not done.wait(0.5):
        seen.update(listening(descendants(pid)))


def through_cli(spec: Path) -> tuple[set[Listening], int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | QUIET_ENV
    driver = subprocess.Popen([sys.executable, "-m", "haloae.cli", "sweep", str(spec)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    seen: set[Listening] = set()
    while driver.poll() is None:
        seen |= listening(descendants(driver.pid))
        time.sleep(0.5)
    return seen, driver.returncode


def in_process(spec: Path) -> tuple[set[Listening], int]:
    import ray  # noqa: F401  (first, as a notebook or script calling run_sweep would)

    from sweeps.loading import load_spec
    from sweeps.runner import run_sweep

    seen: set[Listening] = set()
    done = threading.Event()
    watcher = threading.Thread(target=_watch, args=(os.getpid(), seen, done), daemon=True)
    watcher.start()
    try:
        outcome = run_sweep(load_spec(spec))
        seen.update(listening(descendants(os.getpid())))
    finally:
        done.set()
        watcher.join()
    return seen, 1 if outcome.failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-process", action="store_true", help="Call sweeps.runner.run_sweep instead of the CLI.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="haloae-sockets-") as tmp:
        spec = tiny_spec(Path(tmp), "sockets", data=ONE_CATEGORY, overrides={"train.epochs": 3, "train.steps_per_epoch": 2})
        seen, code = (in_process if args.in_process else through_cli)(spec)
    print(f"listening TCP sockets of the sweep's processes ({'run_sweep in-process' if args.in_process else 'haloae sweep'}; sweep exit {code}):")
    print(f"{'address':28s} {'process':18s} loopback")
    for sock in sorted({(s.address, s.process, s.loopback) for s in seen}, key=lambda t: (t[1], t[0])):
        print(f"{sock[0]:28s} {sock[1]:18s} {'yes' if sock[2] else 'NO'}")
    public = [s for s in seen if not s.loopback]
    print(f"{len({s.address for s in seen})} sockets, {len({s.address for s in public})} beyond loopback")
    sys.exit(1 if public or code else 0)


if __name__ == "__main__":
    main()
