# SPDX-License-Identifier: Apache-2.0
"""Script entry for clusters: ``ray submit cluster.yaml sweeps/run.py -- SPEC.yaml [--resume] ...``.

Same options as ``haloae sweep``; on a cluster head the default address is ``auto`` (the running
cluster), not a new local Ray.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file by `ray submit`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> None:
    from haloae.cli import main as haloae_main

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--":
        args = args[1:]
    if "--address" not in args and "--dry-run" not in args:
        args += ["--address", "auto"]
    haloae_main(["sweep", *args], standalone_mode=True)


if __name__ == "__main__":
    main()
