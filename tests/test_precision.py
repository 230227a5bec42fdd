# SPDX-License-Identifier: Apache-2.0
"""``train.precision``: the losses stay fp32 under bf16 autocast (real bottle images), auto resolves per
device, an explicit bf16 is applied on the CPU too, and a run records the precision it applied."""

import contextlib
from pathlib import Path

import pytest
import torch

from haloae.checkpoint import read_checkpoint
from haloae.config import HaloAEConfig
from haloae.data import normalize
from haloae.errors import ConfigError
from haloae.images import load_image
from haloae.losses import HaloAELoss, ssim
from haloae.model import HaloAE, HaloAEOutput
from haloae.precision import applied_precision, autocast_for, with_applied_precision
from haloae.vocab import BEST_FILE

BOTTLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "mvtec_ad" / "bottle" / "train" / "good"


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
    assert cfg.train.precision == "auto" and cfg.flatten()["train.precision"] == "auto"
    assert HaloAEConfig.from_overrides("paper", ["train.precision=fp32"]).train.precision == "fp32"
    with pytest.raises(ConfigError, match=r"^train.precision: unknown 'fp16'; valid: auto, bf16, fp32$"):
        HaloAEConfig.from_overrides("paper", ["train.precision=fp16"])


def test_auto_is_bf16_on_cuda_and_fp32_on_the_cpu_and_explicit_values_apply_everywhere():
    assert applied_precision("auto", "cuda") == "bf16" and applied_precision("auto", "cpu") == "fp32"
    assert applied_precision("bf16", "cpu") == "bf16" and applied_precision("fp32", "cuda") == "fp32"
    assert isinstance(autocast_for(torch.device("cuda"), "fp32"), contextlib.nullcontext)
    assert isinstance(autocast_for(torch.device("cpu"), "auto"), contextlib.nullcontext)
    assert isinstance(autocast_for(torch.device("cpu")), contextlib.nullcontext)  # the default: auto


def test_explicit_bf16_runs_the_cpu_forward_in_bf16():
    """Old code: bf16 on the CPU was recorded but the forward ran in fp32 (a no-op context)."""
    cfg = HaloAEConfig.from_overrides("tiny", ["train.precision=bf16"])
    model = HaloAE(cfg).eval()
    with torch.no_grad(), autocast_for(torch.device("cpu"), cfg.train.precision):
        out = model(torch.randn(2, 3, 32, 32))
    assert out.fm_hat.dtype == torch.bfloat16


def test_a_run_records_the_precision_it_applied(tmp_path):
    """auto on the CPU is recorded as fp32; an explicit bf16 is recorded as bf16 *and* trains in bf16
    (its losses differ from the fp32 run's: old code recorded bf16 and trained in fp32, identically)."""
    from haloae.category_data import prepare_data
    from haloae.synth import generate
    from haloae.train import fit

    generate(tmp_path / "data", categories=["synth_disc"], size=32, n_train=6, n_test_good=2, n_test_defect_per_type=1, seed=0)
    recorded, losses = {}, {}
    for precision in ("auto", "bf16"):
        cfg = HaloAEConfig.from_overrides(
            "tiny", {"train.precision": precision, "train.epochs": 1, "train.steps_per_epoch": 2, "train.device": "cpu"}
        )
        data = prepare_data(cfg, tmp_path / "data", "synth_disc")
        fit(cfg, data, tmp_path / precision, progress=False)
        best = read_checkpoint(tmp_path / precision / BEST_FILE)
        recorded[precision], losses[precision] = best["config"]["train"]["precision"], best["metrics"]["train/loss"]
    assert recorded == {"auto": "fp32", "bf16": "bf16"}
    assert losses["auto"] != losses["bf16"]


def test_with_applied_precision_keeps_everything_else():
    cfg = HaloAEConfig.from_overrides("tiny", variant="fm_only")
    applied = with_applied_precision(cfg, "cpu")
    assert applied.train.precision == "fp32"
    assert {k: v for k, v in applied.flatten().items() if k != "train.precision"} == {
        k: v for k, v in cfg.flatten().items() if k != "train.precision"
    }
    assert with_applied_precision(applied, "cuda") is applied  # already concrete: kept
