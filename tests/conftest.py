# SPDX-License-Identifier: Apache-2.0
"""Session settings for every test: two torch threads (the machine is shared), and the ``device``
fixture: ``cpu`` unless ``TORCH_DEVICE`` names another (``TORCH_DEVICE=cuda pytest tests/test_model.py``
runs the device-agnostic model and loss tests on a GPU, as timm's tests do)."""

import os

import pytest
import torch

from haloae.vocab import ENV_TORCH_DEVICE

torch.set_num_threads(min(2, os.cpu_count() or 1))
DEVICE = os.environ.get(ENV_TORCH_DEVICE, "cpu")


def pytest_configure(config: pytest.Config) -> None:
    try:
        device = torch.device(DEVICE)
    except RuntimeError as exc:
        raise pytest.UsageError(f"{ENV_TORCH_DEVICE}={DEVICE}: not a torch device ({exc})") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        # asked for the GPU: running the tests on the CPU instead would report a GPU run that never happened
        raise pytest.UsageError(f"{ENV_TORCH_DEVICE}={DEVICE}: no CUDA device is available")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with a ``slow`` test first, each file's tests kept together and in order: the two
    workers (``-n 2 --dist loadfile``) take whole files in this order, so the long end-to-end files
    start early and the many short files fill in at the end, instead of one long file running on
    alone after the other worker has finished."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: collection order otherwise


# what MLflow writes into the working directory when a store is opened without its own places
STRAY_IN_CWD = ("mlruns", "mlflow.db")


@pytest.fixture(autouse=True)
def leaves_no_mlflow_files_in_the_working_directory():
    """A test (or the code under it) that lets MLflow fall back to ./mlruns or ./mlflow.db fails here,
    by name, instead of leaving files in the checkout; torch's thread count and the process
    environment are restored after each test."""
    before = {name for name in STRAY_IN_CWD if os.path.exists(name)}
    threads, environ = torch.get_num_threads(), dict(os.environ)
    yield
    # the sweep command run in this process sets what a driver process keeps for its life (the
    # loopback-only Ray flag, before Ray is imported); a later test's subprocesses (a `ray start`
    # worker node refuses to join with the flag) must not inherit it, in any order
    for name in set(os.environ) - set(environ):
        del os.environ[name]
    os.environ.update(environ)
    # a trial run in this process (sweeps.trainable) sets torch's threads to its CPUs; the next
    # test must not train with them (the cpu preset's 75-step test reads differently at 1 thread)
    torch.set_num_threads(threads)
    stray = [name for name in STRAY_IN_CWD if os.path.exists(name) and name not in before]
    assert not stray, f"left in {os.getcwd()}: {', '.join(stray)}"


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device(DEVICE)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``(data_root, trial)``: one tiny trained run on generated synth_disc data, once per test module
    (the bundle and checkpoint tests share it)."""
    from tests.helpers.analysis import synth_data, trained_trials

    root = synth_data(tmp_path_factory.mktemp("data"), ("synth_disc",))
    (trial,) = trained_trials(root, tmp_path_factory.mktemp("train"), "synth_disc", seeds=(0,))
    return root, trial
