# SPDX-License-Identifier: Apache-2.0
import pytest
import torch

from haloae.config import PRESETS, HaloAEConfig
from haloae.model import HaloAE, HaloBottleneck, count_parameters
from haloae.variants import VARIANTS

ORIGINAL_TRAINABLE_PARAMETERS = 17.6e6  # original-code-notes.md: the authors' model built on CPU


def _tiny(variant=None, **overrides):
    return HaloAEConfig.from_overrides("tiny", overrides, variant=variant)


def test_paper_preset_shapes_and_parameter_count():
    cfg = HaloAEConfig.from_overrides("paper", {"model.backbone.weights": "random"})
    model = HaloAE(cfg).eval()
    n = count_parameters(model)
    parts = {p: count_parameters(getattr(model, p)) for p in ("encoder", "decoder", "image_decoder", "classifier")}
    print(f"paper preset: {n:,} trainable parameters ({n / 1e6:.2f}M) vs the original's ~17.6M; parts {parts}")
    assert abs(n - ORIGINAL_TRAINABLE_PARAMETERS) / ORIGINAL_TRAINABLE_PARAMETERS < 0.02
    # the notes' breakdown: encoder 5.8M, HaloNet decoder 8.2M, image decoder 3.3M, classifier 0.4M
    for part, millions in {"encoder": 5.8, "decoder": 8.2, "image_decoder": 3.3, "classifier": 0.4}.items():
        assert abs(parts[part] / 1e6 - millions) < 0.05, part
    lean = count_parameters(HaloAE(HaloAEConfig.from_overrides("paper_lean", {"model.backbone.weights": "random"})))
    print(f"without the original's never-called stride-2 convs: {lean:,}")
    assert n - lean > 5e6
    with torch.no_grad():
        out = model(torch.randn(2, 3, 256, 256))
    assert out.fm.shape == (2, 704, 64, 64)
    assert out.code.shape == (2, 29, 60, 60)
    assert out.fm_hat.shape == (2, 704, 64, 64)
    assert out.im_hat.shape == (2, 3, 256, 256)
    assert out.logits.shape == (2, 2)


def test_backbone_is_frozen_and_stays_in_eval_mode():
    model = HaloAE(_tiny(**{"model.backbone.weights": "random"})).train()
    assert not model.backbone.training
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert model.encoder.training


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_runs_forward_and_backward(variant):
    over = {} if VARIANTS[variant].overrides.get("model.backbone.name") == "none" else {"model.backbone.weights": "random"}
    cfg = _tiny(variant, **over)
    model = HaloAE(cfg)
    out = model(torch.randn(2, 3, cfg.model.image_size, cfg.model.image_size))
    produced = [t for t in (out.fm_hat, out.im_hat, out.logits) if t is not None]
    assert produced
    sum(t.float().square().mean() for t in produced).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    if cfg.model.arch in ("haloae", "block_c_only"):
        assert out.code.shape[-1] == cfg.code_size if cfg.model.arch == "haloae" else True


@pytest.mark.parametrize("preset", [p for p in PRESETS if p not in ("paper", "paper_lean")])
def test_small_presets_run_forward_and_backward(preset):
    cfg = HaloAEConfig.from_overrides(preset, {"model.backbone.weights": "random"})
    model = HaloAE(cfg)
    s = cfg.model.image_size
    out = model(torch.randn(2, 3, s, s))
    (out.fm_hat.square().mean() + out.im_hat.square().mean() + out.logits.square().mean()).backward()
    assert out.fm_hat.shape == out.fm.shape


@pytest.mark.parametrize("attention", ["halo", "legacy", "none"])
def test_attention_kind_reaches_every_bottleneck(attention):
    model = HaloAE(_tiny(**{"model.backbone.weights": "random", "model.attention": attention}))
    blocks = [m for m in model.modules() if isinstance(m, HaloBottleneck)]
    assert len(blocks) == 4
    for block in blocks:
        kind = getattr(block.attn, "kind", "none")
        assert kind == attention


def test_forward_accepts_precomputed_features():
    model = HaloAE(_tiny(**{"model.backbone.weights": "random"})).eval()
    x = torch.randn(2, 3, 32, 32)
    fm = model.features(x)
    torch.testing.assert_close(model(x, fm=fm).fm_hat, model(x).fm_hat)


def test_init_is_the_originals():
    model = HaloAE(_tiny(**{"model.backbone.weights": "random"}))
    conv = model.encoder.head[0]
    fan_in = conv.weight[0].numel()
    assert abs(conv.weight.std().item() - (2 / fan_in) ** 0.5) < 0.3 * (2 / fan_in) ** 0.5  # kaiming normal
    attn = model.encoder.stages[0].attn
    assert attn.to_out.bias.abs().max() == 0
    bn = model.encoder.head[1]
    assert bn.weight.eq(1).all() and bn.bias.eq(0).all()
