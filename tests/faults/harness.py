# SPDX-License-Identifier: Apache-2.0
"""How the fault suite runs one malformed input: the valid artefacts it damages, the ``haloae`` CLI
run in-process, and the verdict.

Every case builds its command line in its own folder (copying and damaging the shared artefacts),
then ``run_case`` invokes ``haloae.cli.main`` with click's ``CliRunner`` (60 subprocesses importing
torch would take minutes) and sorts the result into one of ``OUTCOMES``:

    one-line   exit 2, exactly one stderr line starting ``Error:`` that names the field or file,
               no ``Traceback``, no marker file, and the watched folders unchanged (sha256 of every file)
    traceback  an exception escaped the CLI (a user would see a traceback), or ``Traceback`` was printed
    silent     exit 0: a wrong answer, or bad input taken as good
    executed   a crafted file ran code (its marker file exists)
    other      refused, but not as promised: another exit code, several or no ``Error:`` lines, the
               name missing, or something written on disk / in MLflow
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTCOMES = ("one-line", "traceback", "silent", "executed", "other")
CATEGORIES = ("spec", "override", "dataset", "checkpoint", "bundle")
CATEGORY = "synth_disc"  # the one category of the artefacts' dataset


@dataclass(frozen=True)
class Artefacts:
    """Valid inputs built once: a dataset, a trained run folder (checkpoint.pt, best.pt) and its bundle."""

    data_root: Path  # <data_root>/synth_disc in MVTec layout
    trial: Any  # tests.helpers.analysis.Trial of a tiny haloae.train.fit run (its run_dir: checkpoint.pt, best.pt, ...)
    bundle: Path  # haloae.bundle.save_bundle of the run's best.pt
    image: Path  # one test image of the dataset

    @property
    def run_dir(self) -> Path:
        return self.trial.run_dir


@dataclass(frozen=True)
class Invocation:
    """One command line and what its error must say: ``names`` all appear in the ``Error:`` line,
    ``watch`` are the files and folders that must be byte-identical (or still absent) afterwards."""

    args: Sequence[str]
    names: Sequence[str]
    watch: Sequence[Path] = ()
    marker: Path | None = None  # created if a crafted file runs code
    max_seconds: float = 60.0  # e.g. 2 s for an alias bomb


@dataclass(frozen=True)
class Case:
    id: str
    category: str  # one of CATEGORIES
    make: Callable[[Artefacts, Path], Invocation]  # (artefacts, an empty folder of its own) -> the command
    slow: bool = False  # writes a real MLflow store first (seconds per case)


@dataclass(frozen=True)
class Outcome:
    kind: str  # one of OUTCOMES
    detail: str  # why, for the assertion message
    seconds: float = 0.0


@dataclass
class Counts:
    """tried / one-line / traceback / silent / executed / other per category."""

    rows: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, category: str, kind: str) -> None:
        row = self.rows.setdefault(category, dict.fromkeys(OUTCOMES, 0))
        row[kind] += 1

    def table(self) -> str:
        lines = [f"| category | tried | {' | '.join(OUTCOMES)} |", "|---|" + "---:|" * (len(OUTCOMES) + 1)]
        total = dict.fromkeys(OUTCOMES, 0)
        for category in [c for c in CATEGORIES if c in self.rows]:
            row = self.rows[category]
            lines.append(f"| {category} | {sum(row.values())} | {' | '.join(str(row[k]) for k in OUTCOMES)} |")
            total = {k: total[k] + row[k] for k in OUTCOMES}
        lines.append(f"| all | {sum(total.values())} | {' | '.join(str(total[k]) for k in OUTCOMES)} |")
        return "\n".join(lines)


# ---------------------------------------------------------------------- the valid artefacts
def build_artefacts(root: Path) -> Artefacts:
    """A tiny synthetic dataset, a tiny trained run on it (1 epoch x 2 steps) and its bundle (about 20 s)."""
    from haloae.bundle import save_bundle
    from haloae.vocab import BEST_FILE
    from tests.helpers.analysis import synth_data, trained_trials

    data_root = synth_data(root / "data", (CATEGORY,))
    (trial,) = trained_trials(data_root, root / "train", CATEGORY, seeds=(0,))
    bundle = save_bundle(trial.run_dir / BEST_FILE, root / "bundle", threshold=0.5)
    image = sorted((data_root / CATEGORY / "test").glob("*/*.png"))[0]
    return Artefacts(data_root, trial, bundle, image)


# ---------------------------------------------------------------------- one run
def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(paths: Sequence[Path]) -> dict[str, str | None]:
    """path -> sha256 of a file, "folder" for a folder, None when absent; folders recursively."""
    state: dict[str, str | None] = {}
    for top in paths:
        if not top.exists():
            state[str(top)] = None
            continue
        for path in [top, *sorted(top.rglob("*"))] if top.is_dir() else [top]:
            state[str(path)] = "folder" if path.is_dir() else sha256_of(path)
    return state


def run_case(case: Case, artefacts: Artefacts, folder: Path) -> Outcome:
    """Build the case's command in ``folder``, run it in-process and sort the result."""
    from click.testing import CliRunner

    from haloae.cli import main

    invocation = case.make(artefacts, folder)
    before = snapshot(invocation.watch)
    start = time.monotonic()
    result = CliRunner().invoke(main, list(map(str, invocation.args)), catch_exceptions=True)
    seconds = time.monotonic() - start
    return judge(invocation, result, before, seconds)


def judge(invocation: Invocation, result, before: dict[str, str | None], seconds: float) -> Outcome:
    stderr = result.stderr
    if invocation.marker is not None and invocation.marker.exists():
        return Outcome("executed", f"code ran: {invocation.marker} exists", seconds)
    escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
    if escaped or "Traceback" in stderr + result.stdout:
        return Outcome("traceback", f"{type(result.exception).__name__}: {result.exception}"[:300], seconds)
    if result.exit_code == 0:
        return Outcome("silent", f"exit 0; stdout: {result.stdout.strip()[-200:]!r}", seconds)
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    problems = []
    if result.exit_code != 2:
        problems.append(f"exit {result.exit_code}")
    if len(errors) != 1:
        problems.append(f"{len(errors)} 'Error:' lines in stderr {stderr.strip()[-300:]!r}")
    else:
        missing = [name for name in invocation.names if str(name) not in errors[0]]
        if missing:
            problems.append(f"{errors[0]!r} does not name {missing}")
    after = snapshot(invocation.watch)
    changed = sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))
    if changed:
        problems.append(f"changed on disk: {changed[:8]}")
    if seconds > invocation.max_seconds:
        problems.append(f"took {seconds:.1f} s (limit {invocation.max_seconds:g} s)")
    if problems:
        return Outcome("other", "; ".join(problems), seconds)
    return Outcome("one-line", errors[0], seconds)
