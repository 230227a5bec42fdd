# SPDX-License-Identifier: Apache-2.0
"""SIGINT/SIGTERM during a sweep (``sweeps.signals``), without Ray: Tune's stop handler is stood in
for by a recorder on the same signal."""

from __future__ import annotations

import os
import signal

import pytest

from sweeps.signals import TUNE_SIGINT_ENV, TUNE_STOP_SIGNAL, StopSignals, SweepInterrupted


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_while_fitting_becomes_tunes_graceful_stop(signum, code):
    seen = []
    with StopSignals() as stop:
        assert os.environ[TUNE_SIGINT_ENV] == "1"  # Tune leaves SIGINT to us
        with stop.fitting():
            signal.signal(TUNE_STOP_SIGNAL, lambda s, f: seen.append(s))  # what Tuner.fit installs
            os.kill(os.getpid(), signum)
            signal.sigtimedwait([], 0) if hasattr(signal, "sigtimedwait") else None  # let the handlers run
        assert seen == [TUNE_STOP_SIGNAL] and stop.received == signum
        assert SweepInterrupted(stop.received).exit_code == code
    assert signal.getsignal(TUNE_STOP_SIGNAL) == signal.SIG_DFL and signal.getsignal(signum) is not stop._on_signal
    assert TUNE_SIGINT_ENV not in os.environ


def test_signal_outside_fit_or_a_second_one_interrupts_at_once():
    with StopSignals() as stop, pytest.raises(SweepInterrupted, match="SIGTERM"):
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0)
    seen = []
    with StopSignals() as stop, stop.fitting():
        signal.signal(TUNE_STOP_SIGNAL, lambda s, f: seen.append(s))
        os.kill(os.getpid(), signal.SIGINT)
        signal.sigtimedwait([], 0)
        with pytest.raises(SweepInterrupted, match="SIGINT") as second:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0)
    assert second.value.exit_code == 130 and seen == [TUNE_STOP_SIGNAL]  # named by the first signal
