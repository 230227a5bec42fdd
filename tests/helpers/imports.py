# SPDX-License-Identifier: Apache-2.0
"""``haloae`` CLI commands in a fresh interpreter, and which heavy modules they imported."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def cli_in_fresh_interpreter(
    args: Sequence[str], watched: Sequence[str], timeout: float
) -> tuple[list[str], subprocess.CompletedProcess]:
    """Run ``haloae ARGS`` in a new Python process; its last two stdout lines are ``exit <code>``
    and the sorted list of the ``watched`` modules it imported. ``(those two lines, the process)``."""
    code = (
        "import sys\nfrom haloae.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n"
        f"    print('exit', exc.code)\nprint(sorted(m for m in {tuple(watched)!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)
    return done.stdout.strip().splitlines()[-2:], done
