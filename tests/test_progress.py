# SPDX-License-Identifier: Apache-2.0
"""The training display: a step bar and a line per epoch with the ETA, a line per final phase;
nothing when stderr is not a terminal or the caller (a sweep trial) turns it off."""

import io
import sys

import pytest

from haloae.category_data import prepare_data
from haloae.config import HaloAEConfig
from haloae.progress import RunProgress, format_seconds, phase
from haloae.synth import generate
from haloae.train import fit

CATEGORY = "synth_disc"


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as stderr does in an interactive shell."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root, categories=[CATEGORY], size=32, n_train=6, n_test_good=2, n_test_defect_per_type=1, seed=0)
    return root


def _tiny_fit(root, out, progress=True):
    cfg = HaloAEConfig.from_overrides("tiny", {"model.backbone.weights": "random", "train.epochs": 2,
                                               "train.steps_per_epoch": 3, "train.batch_size": 2})  # fmt: skip
    return fit(cfg, prepare_data(cfg, root, CATEGORY), out, progress=progress)


def test_format_seconds_reads_at_a_glance():
    assert [format_seconds(s) for s in (4.44, 42.4, 65, 3725, float("nan"))] == ["4.4 s", "42 s", "1 min 05 s", "1 h 02 min", "?"]


def test_train_shows_steps_each_epoch_with_eta_and_the_final_phase(synth_root, tmp_path, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    _tiny_fit(synth_root, tmp_path)
    shown = terminal.getvalue()
    assert "synth_disc epoch 1/2" in shown and "3/3" in shown  # tqdm's step bar: steps of the epoch
    lines = [line.strip("\r\x1b[A ") for line in shown.splitlines()]
    epoch_lines = [line for line in lines if line.startswith("synth_disc epoch") and ": train " in line]
    assert len(epoch_lines) == 2, shown
    assert "validation" in epoch_lines[0] and "val/image_auroc" in epoch_lines[0]
    assert "ETA" in epoch_lines[0] and "for 1 more epoch" in epoch_lines[0] and "last epoch" in epoch_lines[1]
    assert "synth_disc: best.pt on validation and test ..." in lines
    assert any(line.startswith("synth_disc: best.pt on validation and test: ") for line in lines)


@pytest.mark.parametrize("where", ["pipe", "off"])
def test_no_display_in_a_log_or_a_sweep_trial(where, synth_root, tmp_path, monkeypatch):
    stream = io.StringIO() if where == "pipe" else Terminal()  # StringIO.isatty() is False, like a pipe
    monkeypatch.setattr(sys, "stderr", stream)
    _tiny_fit(synth_root, tmp_path, progress=where == "pipe")
    assert stream.getvalue() == ""


def test_eta_comes_from_this_process_epochs_after_a_resume():
    terminal = Terminal()
    shown = RunProgress(epochs=10, start=7, steps=1, label="bottle", stream=terminal)  # resumed after epoch 7
    shown.start_epoch(7)
    shown.step(0.5)
    shown.validating()
    shown.end_epoch(7, {"train/loss": 0.5, "val/image_auroc": 0.9}, "val/image_auroc")
    assert "bottle epoch 8/10" in terminal.getvalue() and "for 2 more epochs" in terminal.getvalue()
    with phase("bottle: test", stream=terminal):
        pass
    assert "bottle: test ...\nbottle: test: 0.0 s\n" in terminal.getvalue()
