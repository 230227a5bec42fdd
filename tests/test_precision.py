# SPDX-License-Identifier: Apache-2.0
"""The losses stay fp32 under bf16 autocast (``train.precision``), on real bottle images."""

import contextlib
from pathlib import Path

import pytest
import torch

from haloae.config import HaloAEConfig
from haloae.data import normalize
from haloae.errors import ConfigError
from haloae.images import load_image
from haloae.losses import HaloAELoss, ssim
from haloae.model import HaloAEOutput
from haloae.train import autocast_for

BOTTLE = Path("/work/shared/data/mvtec_ad/bottle/train/good")


@pytest.fixture(scope="module")
def bottle_batch():
    """4 real bottle images (normalised, 128 px) and a noisy copy of each, as a reconstruction."""
    if not BOTTLE.is_dir():
        pytest.skip(f"needs the real MVTec bottle images at {BOTTLE}")
    images = normalize(torch.stack([load_image(p, 128) for p in sorted(BOTTLE.glob("*.png"))[:4]]))
    noisy = images + 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    return images, noisy


def _outputs(images: torch.Tensor, recon: torch.Tensor) -> tuple[HaloAEOutput, torch.Tensor]:
    """A model output for the batch (4 originals + 8 CutPaste views): fm = the 32 px images."""
    batch = torch.cat([images, recon, recon])  # (12, 3, S, S)
    fm, fm_hat = (torch.nn.functional.avg_pool2d(t, 4) for t in (batch, torch.cat([recon, images, images])))
    logits = torch.randn(12, 2, generator=torch.Generator().manual_seed(1)).to(images.device)
    return HaloAEOutput(fm, None, fm_hat, torch.cat([recon, images, images]), logits), batch


def test_ssim_under_cpu_bf16_autocast_matches_fp32(bottle_batch):
    images, noisy = bottle_batch
    reference = ssim(images, noisy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = ssim(images, noisy)
    assert abs(float(low) - float(reference)) < 1e-3, (float(low), float(reference))  # old: 0.387 vs 0.442
    assert low.dtype == torch.float32


def test_total_loss_under_cpu_bf16_autocast_matches_fp32(bottle_batch):
    images, noisy = bottle_batch
    criterion = HaloAELoss(HaloAEConfig())
    out, batch = _outputs(images, noisy)
    reference, ref_parts = criterion(out, batch, 4, epoch=100)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, parts = criterion(out, batch, 4, epoch=100)
    assert low.dtype == torch.float32
    for key, value in ref_parts.items():
        assert abs(parts[key] - value) < 1e-3, (key, parts[key], value)


def test_bf16_model_outputs_are_scored_in_fp32(bottle_batch):
    images, noisy = bottle_batch
    criterion = HaloAELoss(HaloAEConfig())
    out, batch = _outputs(images, noisy)
    as_bf16 = HaloAEOutput(*(t.bfloat16() if t is not None else None for t in out))
    total, _ = criterion(as_bf16, batch, 4, epoch=100)
    assert total.dtype == torch.float32


def test_precision_is_a_recorded_knob():
    cfg = HaloAEConfig()
    assert cfg.train.precision == "bf16" and cfg.flatten()["train.precision"] == "bf16"
    assert HaloAEConfig.from_overrides("paper", ["train.precision=fp32"]).train.precision == "fp32"
    with pytest.raises(ConfigError, match=r"^train.precision: unknown 'fp16'; valid: bf16, fp32$"):
        HaloAEConfig.from_overrides("paper", ["train.precision=fp16"])


def test_fp32_disables_autocast_and_cpu_stays_fp32():
    assert isinstance(autocast_for(torch.device("cuda"), "fp32"), contextlib.nullcontext)
    assert isinstance(autocast_for(torch.device("cpu"), "bf16"), contextlib.nullcontext)
