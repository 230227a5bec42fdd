# SPDX-License-Identifier: Apache-2.0
"""The fault suite's counts: every case of ``tests/faults/cases.py`` run through the ``haloae`` CLI
in-process, then "tried / one-line / traceback / silent / executed / other" per category.

    .venv/bin/python bench/fault_counts.py            # the table (Markdown), about a minute on 2 cores
    .venv/bin/python bench/fault_counts.py --verbose  # also each case that is not one-line, and why
    .venv/bin/python bench/fault_counts.py --slow     # also the cases that write an MLflow store first
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from haloae.vocab import QUIET_ENV  # noqa: E402
from tests.faults.cases import CASES  # noqa: E402
from tests.faults.harness import Counts, Outcome, build_artefacts, run_case  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="Print every case that is not one-line.")
    parser.add_argument("--slow", action="store_true", help="Include the cases that write an MLflow store first.")
    args = parser.parse_args()
    os.environ.update(QUIET_ENV)
    counts = Counts()
    with tempfile.TemporaryDirectory(prefix="haloae-faults-") as tmp:
        artefacts = build_artefacts(Path(tmp) / "valid")
        for i, case in enumerate(c for c in CASES if args.slow or not c.slow):
            folder = Path(tmp) / f"case{i:03d}"
            folder.mkdir()
            try:
                outcome = run_case(case, artefacts, folder)
            except Exception as exc:  # the case could not even be built against this tree
                outcome = Outcome("other", f"case not built: {type(exc).__name__}: {exc}")
            counts.add(case.category, outcome.kind)
            if args.verbose and outcome.kind != "one-line":
                print(f"{case.id}: {outcome.kind}: {outcome.detail}", file=sys.stderr)
    print(counts.table())


if __name__ == "__main__":
    main()
