# SPDX-License-Identifier: Apache-2.0
"""What one training run shows a person at a terminal: a step bar per epoch, a line per phase.

    RunProgress(epochs, start, steps, label)    the run's display; silent unless ``enabled`` and
                                                 its stream (stderr) is a terminal
      .start_epoch(epoch) / .step(loss)          tqdm's step bar of one epoch (rate, epoch ETA)
      .validating()                              the bar says the epoch has moved on to validation
      .end_epoch(epoch, metrics, objective)      one line: train and validation seconds, the loss,
                                                 the objective, the run's ETA
    phase(label, enabled)                        a context: "label ..." then "label: 12.3 s"

Sweep trials pass ``enabled=False`` (Ray's table is their display) and so does anything whose
stderr is a file or a pipe, where redrawn bars would only fill a log with carriage returns.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


def on_terminal(stream: TextIO | None) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def format_seconds(seconds: float) -> str:
    """``4.2 s``, ``42 s``, ``3 min 05 s``, ``1 h 02 min``: an ETA a person reads at a glance."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 9.95:
        return f"{max(seconds, 0.0):.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class RunProgress:
    """The display of one run (``label``: its category): ``epochs`` in all, from ``start`` (resumed)."""

    def __init__(self, epochs: int, start: int, steps: int, label: str, enabled: bool = True,
                 stream: TextIO | None = None) -> None:  # fmt: skip
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and on_terminal(self.stream)
        self.epochs, self.steps, self.label = epochs, steps, label
        self.done_epochs = start
        self.epoch_seconds: list[float] = []  # this process's epochs: the ETA's rate (resume-safe)
        self._bar = None
        self._epoch_t0 = self._validation_t0 = 0.0

    def _write(self, line: str) -> None:
        from tqdm import tqdm

        tqdm.write(line, file=self.stream)  # above a live bar, not through it

    def start_epoch(self, epoch: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        self._epoch_t0 = time.perf_counter()
        self._bar = tqdm(total=self.steps, desc=f"{self.label} epoch {epoch + 1}/{self.epochs}", unit="step",
                         leave=False, file=self.stream, dynamic_ncols=True)  # fmt: skip

    def step(self, loss: float) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def validating(self) -> None:
        if self._bar is not None:
            self._validation_t0 = time.perf_counter()
            self._bar.set_description_str(f"{self._bar.desc} validation")

    def end_epoch(self, epoch: int, metrics: dict[str, float], objective: str) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        validation_t0 = self._validation_t0 or now
        train_s, validation_s = validation_t0 - self._epoch_t0, now - validation_t0  # validation: + checkpoints
        self.epoch_seconds.append(now - self._epoch_t0)
        self.done_epochs = epoch + 1
        left = self.epochs - self.done_epochs
        eta = left * sum(self.epoch_seconds) / len(self.epoch_seconds)
        self._write(
            f"{self.label} epoch {epoch + 1}/{self.epochs}: train {format_seconds(train_s)} "
            f"(loss {metrics.get('train/loss', math.nan):.4f}), validation {format_seconds(validation_s)} "
            f"({objective} {metrics.get(objective, math.nan):.4f}); "
            + (f"ETA {format_seconds(eta)} for {left} more epoch{'s' if left != 1 else ''}" if left else "last epoch")
        )
        self._validation_t0 = 0.0

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextmanager
def phase(label: str, enabled: bool = True, stream: TextIO | None = None) -> Iterator[None]:
    """A phase without steps (the final evaluation): a line when it starts and one when it ends."""
    stream = stream if stream is not None else sys.stderr
    if not (enabled and on_terminal(stream)):
        yield
        return
    t0 = time.perf_counter()
    print(f"{label} ...", file=stream, flush=True)
    yield
    print(f"{label}: {format_seconds(time.perf_counter() - t0)}", file=stream, flush=True)
