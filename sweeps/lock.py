# SPDX-License-Identifier: Apache-2.0
"""The sweep lock: one running ``haloae sweep`` per sweep folder at a time.

``<sweep_dir>/.lock`` holds the owner's pid and host and is ``fcntl.flock``-ed for as long as the
sweep runs. The kernel drops a flock when its holder dies, so a lock file whose flock can be taken
is stale by proof, whatever pid it names, and is taken over. A second sweep on the same folder gets
one line naming the holder. The lock is taken before anything of the sweep is written (the data,
Tune's state, the MLflow store) and released at exit, also on an exception or a signal.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from haloae.errors import InputError
from haloae.vocab import SWEEP_LOCK_FILE


class SweepLockedError(InputError):
    """Another process runs a sweep in this folder."""


def _holder(text: str) -> str:
    """``"123 host"`` (a lock file's content) -> ``pid 123 on host host``."""
    fields = text.split()
    return f"pid {fields[0]} on host {fields[1]}" if len(fields) >= 2 else "another process"


class SweepLock:
    """``with SweepLock(sweep_dir, name):`` holds ``<sweep_dir>/.lock`` or raises ``SweepLockedError``."""

    def __init__(self, sweep_dir: str | Path, name: str) -> None:
        self.path = Path(sweep_dir) / SWEEP_LOCK_FILE
        self.name = name
        self._fd: int | None = None
        self.took_over = ""  # the holder named by a stale lock file this lock replaced

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace")
                os.close(fd)
                raise SweepLockedError(
                    f"{self.path}: sweep {self.name!r} is already running ({_holder(holder)}); "
                    "wait for it, or stop it, before starting it again"
                ) from None
            # the holder we waited for may have unlinked the file between our open and our flock:
            # then we hold a lock on a deleted file, and must lock the path's current file instead
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        self.took_over = _holder(previous) if previous else ""
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still locked: no one can lock this file meanwhile
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> SweepLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
