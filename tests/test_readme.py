# SPDX-License-Identifier: Apache-2.0
"""The README's `haloae` command lines name commands and options that exist (parsed by click, not run)."""

import re
import shlex
from pathlib import Path

import click
import pytest

from haloae.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def _command_lines() -> list[str]:
    """Every `haloae ...` line of the README's bash blocks, continuations joined, comments cut."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if re.match(r"^(\.venv/bin/)?haloae ", line):
                lines.append(line)
    return lines


def test_the_readme_shows_haloae_commands():
    assert len(_command_lines()) >= 10


@pytest.mark.parametrize("line", _command_lines())
def test_each_readme_command_parses(line):
    words = shlex.split(line)[1:]
    ctx = click.Context(main)
    command = main.get_command(ctx, words[0])
    assert command is not None, f"{line}: no command {words[0]!r}"
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    unknown = [w.split("=", 1)[0] for w in words[1:] if w.startswith("--") and w.split("=", 1)[0] not in known]
    assert not unknown, f"{line}: unknown options {unknown}"
