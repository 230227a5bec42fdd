# SPDX-License-Identifier: Apache-2.0
import os

import pytest
import torch

# CPU by default, as timm's tests; TORCH_DEVICE=cuda runs the same tests on a GPU
DEVICE = os.environ.get("TORCH_DEVICE", "cpu")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def device() -> str:
    return DEVICE
