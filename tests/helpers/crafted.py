# SPDX-License-Identifier: Apache-2.0
"""Crafted and damaged files for the tests of every loader: a pickle that runs a command when
unpickled, and the three ways a file gets damaged (zero bytes, truncated, bytes overwritten)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

DAMAGES = ("zero-byte", "truncated", "overwritten")


class RunsCommand:
    """Unpickling this runs ``touch <marker>``: the marker's existence shows that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_code_pickle(path: Path, marker: Path, **plain) -> Path:
    """A torch file whose ``model`` entry runs a command when loaded without ``weights_only``."""
    torch.save({**plain, "model": RunsCommand(marker)}, path)
    return path


def damage(path: Path, how: str) -> Path:
    """Damage ``path`` in place: ``zero-byte``, ``truncated`` (half kept) or ``overwritten`` (64
    bytes in the middle of the file inverted: inside tensor data, for a file that is mostly weights)."""
    data = path.read_bytes()
    if how == "zero-byte":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "overwritten":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :])
    else:
        raise ValueError(f"damage: unknown {how!r}; one of {DAMAGES}")
    return path
