# SPDX-License-Identifier: Apache-2.0
"""Stopping a sweep on SIGINT (Ctrl-C) or SIGTERM: Tune's graceful stop, then an honest exit.

While ``Tuner.fit`` runs, the first signal becomes Tune's own graceful stop (Tune listens on
SIGUSR1): the trials are stopped, the experiment state is saved for ``--resume``, and ``fit``
returns; the runner then ends the MLflow runs KILLED and raises ``SweepInterrupted``, which the CLI
turns into exit code 128 + signal (130 for SIGINT, 143 for SIGTERM). Outside ``fit``, or on a
second signal, ``SweepInterrupted`` is raised at once. Tune's own SIGINT handler is switched off
(``TUNE_DISABLE_SIGINT_HANDLER``) so that SIGINT and SIGTERM take the same path. ``install`` again
after ``ray.init``: Ray's core worker installs its own SIGTERM handler there, which aborts the driver.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
TUNE_STOP_SIGNAL = signal.SIGUSR1  # ray.tune.tune._setup_signal_catching: always installed by fit
TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"


class SweepInterrupted(BaseException):
    """The sweep was stopped by a signal (a BaseException, as KeyboardInterrupt: no ``except
    Exception`` swallows it)."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"interrupted by {self.signal_name}")

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """``with StopSignals() as stop: ... with stop.fitting(): tuner.fit()``; ``stop.received`` is
    the first signal that arrived (None when none did)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._fitting = False
        self._previous: dict[int, object] = {}
        self._previous_env: str | None = None

    def __enter__(self) -> StopSignals:
        for signum in (*STOP_SIGNALS, TUNE_STOP_SIGNAL):
            self._previous[signum] = signal.getsignal(signum)
        self.install()
        self._previous_env = os.environ.get(TUNE_SIGINT_ENV)
        os.environ[TUNE_SIGINT_ENV] = "1"
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._previous_env is None:
            os.environ.pop(TUNE_SIGINT_ENV, None)
        else:
            os.environ[TUNE_SIGINT_ENV] = self._previous_env

    def install(self) -> None:
        """(Re)installs the handlers: ``ray.init`` replaces the SIGTERM one."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)

    @contextmanager
    def fitting(self) -> Iterator[None]:
        """Marks the span where Tune's stop handler is the one to call."""
        self._fitting = True
        try:
            yield
        finally:
            self._fitting = False

    def _on_signal(self, signum: int, frame: object) -> None:
        first = self.received is None
        if first:
            self.received = signum
        tune_listens = signal.getsignal(TUNE_STOP_SIGNAL) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        if first and self._fitting and tune_listens:
            signal.raise_signal(TUNE_STOP_SIGNAL)
            return
        raise SweepInterrupted(self.received)
