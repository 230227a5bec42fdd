# SPDX-License-Identifier: Apache-2.0
"""The CUDA paths (fused SDPA halo attention, bf16 autocast training, fp32 losses under it) on a GPU;
skipped without one."""

import pytest
import torch

from haloae.config import HaloAEConfig
from haloae.losses import HaloAELoss, ssim
from haloae.model import HaloAE
from haloae.train import autocast_for, build_optimizer, train_step
from tests.test_attention import _layer, naive_halo_attention
from tests.test_precision import _outputs, bottle_batch  # noqa: F401 - bottle_batch is a fixture

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _no_tf32():
    # fp32 comparisons at 1e-5 need true fp32 matmuls
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("H,W,block,halo", [(8, 8, 4, 1), (6, 9, 3, 2), (5, 11, 4, 2), (12, 12, 12, 2), (3, 3, 5, 1)])
def test_sdpa_path_matches_naive_window_attention(H, W, block, halo):
    attn = _layer(dim=6, block=block, halo=halo)
    x = torch.randn(2, 6, H, W)
    ref = naive_halo_attention(attn, x)
    ours = attn.cuda()(x.cuda()).cpu()
    rel = (ours - ref).abs().max() / ref.abs().max()
    assert rel < 1e-5, f"relative error {rel:.2e}"


def test_sdpa_path_gradients_match_the_cpu_path():
    attn = _layer(dim=29, block=4, halo=2, heads=8, dim_head=16)
    x = torch.randn(2, 29, 10, 13)
    grads = []
    for device in ("cpu", "cuda"):
        layer = attn.to(device)
        layer.zero_grad(set_to_none=True)
        xi = x.to(device).requires_grad_(True)
        layer(xi).square().sum().backward()
        grads.append([t.grad.cpu() for t in (xi, layer.to_q.weight, layer.to_kv.weight, layer.rel_height, layer.rel_width)])
    for name, cpu, cuda in zip(("x", "q", "kv", "rel_height", "rel_width"), *grads, strict=True):
        assert cuda.abs().sum() > 0, f"{name} got no gradient on CUDA"
        torch.testing.assert_close(cuda, cpu, rtol=1e-4, atol=1e-4, msg=f"{name} gradient differs")


def test_bf16_autocast_attention_is_close_to_fp32():
    attn = _layer(dim=32, block=12, halo=2, heads=4, dim_head=16).cuda()
    x = torch.randn(2, 32, 60, 60, device="cuda")
    ref = attn(x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = attn(x).float()
    assert ((low - ref).abs().max() / ref.abs().max()) < 3e-2


@pytest.mark.parametrize("preset", ["paper", "cpu"])
def test_training_steps_reduce_the_loss_on_cuda(preset):
    cfg = HaloAEConfig.from_overrides(preset, ["model.backbone.weights=random", "train.batch_size=2"])
    torch.manual_seed(0)
    device = torch.device("cuda")
    model, criterion = HaloAE(cfg).to(device), HaloAELoss(cfg).to(device)
    optimizer = build_optimizer(cfg, [p for p in model.parameters() if p.requires_grad] + list(criterion.parameters()))
    size = cfg.model.image_size
    images = torch.randn(6, 3, size, size, device=device)
    losses = [train_step(model, criterion, optimizer, images, 2, 0, autocast_for(device))["loss"] for _ in range(6)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0], losses
    out = model.eval()(images[:2])
    assert out.fm_hat.shape == out.fm.shape and out.im_hat.shape == (2, 3, size, size)


def test_ssim_and_total_loss_under_cuda_bf16_autocast_match_fp32(bottle_batch):  # noqa: F811
    images, noisy = (t.cuda() for t in bottle_batch)
    criterion = HaloAELoss(HaloAEConfig()).cuda()
    out, batch = _outputs(images, noisy)
    reference, ref_parts = ssim(images, noisy), criterion(out, batch, 4, epoch=100)[1]
    with autocast_for(torch.device("cuda"), "bf16"):
        low, parts = ssim(images, noisy), criterion(out, batch, 4, epoch=100)[1]
    assert abs(float(low) - float(reference)) < 1e-3, (float(low), float(reference))
    for key, value in ref_parts.items():
        assert abs(parts[key] - value) < 1e-3, (key, parts[key], value)


def test_fp32_precision_runs_the_model_without_autocast():
    cfg = HaloAEConfig.from_overrides("cpu", ["model.backbone.weights=random", "train.precision=fp32"])
    model = HaloAE(cfg).cuda().eval()
    with torch.no_grad(), autocast_for(torch.device("cuda"), cfg.train.precision):
        out = model(torch.randn(2, 3, cfg.model.image_size, cfg.model.image_size, device="cuda"))
    assert out.fm_hat.dtype == out.im_hat.dtype == torch.float32
