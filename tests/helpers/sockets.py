# SPDX-License-Identifier: Apache-2.0
"""Listening TCP sockets of a process tree (``ss -ltnpH``) and whether each is on loopback: what
the network-default tests and ``bench/listening_sockets.py`` check."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

LOOPBACK_HOSTS = ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]", "localhost")


@dataclass(frozen=True)
class Listening:
    address: str  # host:port as ss prints it (0.0.0.0:port, *:port, [::ffff:127.0.0.1]:port)
    process: str  # the owning process's name (ss's users:(("name",pid=...)))
    pid: int

    @property
    def loopback(self) -> bool:
        return self.address.rpartition(":")[0] in LOOPBACK_HOSTS


def descendants(pid: int) -> set[int]:
    """``pid`` and every process below it (``ps --ppid``, repeatedly)."""
    found, todo = {pid}, [pid]
    while todo:
        children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(todo.pop())], capture_output=True, text=True).stdout
        for child in map(int, children.split()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def listening(pids: set[int] | None = None) -> set[Listening]:
    """The listening TCP sockets owned by one of ``pids`` (every one ss can attribute when None)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        for name, pid in re.findall(r'\("([^"]*)",pid=(\d+)', line):
            if pids is None or int(pid) in pids:
                found.add(Listening(fields[3], name, int(pid)))
    return found
