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


@pytest.mark.parametrize("kept", [0, 20], ids=["empty", "cut"])
def test_a_file_that_ends_early_is_named_with_where_it_was_read_not_a_bare_aborted(tmp_path, monkeypatch, kept):
    """Click prints a bare "Aborted!" for an EOFError (as for Ctrl-C): a saved state cut short by a
    kill (an empty or truncated pickle) says so in one line, with the frame that read it."""
    import pickle

    from click.testing import CliRunner

    import sweeps.runner
    from haloae.cli import main
    from tests.helpers.sweeps import tiny_spec

    cut = tmp_path / "tuner.pkl"
    cut.write_bytes(pickle.dumps({"state": list(range(100))})[:kept])

    def restore(spec, resume=False, address=None):
        with open(cut, "rb") as f:
            return pickle.load(f)

    monkeypatch.setattr(sweeps.runner, "run_sweep", restore)
    result = CliRunner().invoke(main, ["sweep", str(tiny_spec(tmp_path, "cut")), "--resume"])
    assert result.exit_code == 1 and not isinstance(result.exception, (EOFError, pickle.UnpicklingError))
    (line,) = (result.stdout + result.stderr).strip().splitlines()
    assert line.startswith("sweep cut: a file ended early, read at ") and "test_sweep_signals.py" in line and "(restore)" in line
