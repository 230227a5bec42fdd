# SPDX-License-Identifier: Apache-2.0
import pytest
import torch

from haloae.attention import HaloAttention
from haloae.config import HaloAEConfig
from haloae.model import Absent, HaloAE, HaloBottleneck, count_parameters
from haloae.presets import PRESETS, VARIANTS

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


def _zero_gradient_parameters(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_runs_forward_and_backward(variant):
    over = {} if VARIANTS[variant].overrides.get("model.backbone.name") == "none" else {"model.backbone.weights": "random"}
    cfg = _tiny(variant, **over)
    model = HaloAE(cfg)
    images = torch.randn(2, 3, cfg.model.image_size, cfg.model.image_size)
    out = model(images)
    m = cfg.model
    image_ae = m.arch in ("ae_l2", "ae_ssim")
    # the outputs a variant has, and only those, are produced, with their shapes
    assert (out.fm is None, out.fm_hat is None) == (image_ae, image_ae)
    assert (out.im_hat is None) == (not m.image_decoder and not image_ae)
    assert (out.logits is None) == (not m.classifier)
    if not image_ae:
        assert out.fm_hat.shape == out.fm.shape == (2, cfg.fm_channels, cfg.fm_size, cfg.fm_size)
    if m.arch in ("haloae", "block_c_only"):
        assert out.code.shape[-2:] == (cfg.code_size, cfg.code_size)
    if out.im_hat is not None:
        assert out.im_hat.shape == images.shape
    if out.logits is not None:
        assert out.logits.shape == (2, 2)
    sum(t.float().square().mean() for t in (out.fm_hat, out.im_hat, out.logits) if t is not None).backward()
    # every trainable parameter learns, except what the published (inverted-mask) attention starves
    dead = _zero_gradient_parameters(model)
    if m.attention == "legacy":
        assert dead and all(n.split(".attn.")[-1] in ("to_q.weight", "rel_height", "rel_width") for n in dead), dead
    else:
        assert dead == set()


@pytest.mark.parametrize("attention", ["halo", "legacy"])
def test_working_attention_trains_q_k_and_position_tables_and_legacy_does_not(attention):
    model = HaloAE(_tiny(**{"model.backbone.weights": "random", "model.attention": attention}))
    out = model(torch.randn(2, 3, 32, 32))
    (out.fm_hat.square().mean() + out.im_hat.square().mean() + out.logits.square().mean()).backward()
    layers = [m for m in model.modules() if isinstance(m, HaloAttention)]
    assert len(layers) == 4
    for layer in layers:
        inner = layer.heads * layer.dim_head
        grads = {
            "q": layer.to_q.weight.grad, "k": layer.to_kv.weight.grad[:inner], "v": layer.to_kv.weight.grad[inner:],
            "rel_height": layer.rel_height.grad, "rel_width": layer.rel_width.grad, "out": layer.to_out.weight.grad,
        }
        starved = {"q", "k", "rel_height", "rel_width"} if attention == "legacy" else set()
        for name, grad in grads.items():
            if name in starved:
                assert grad.abs().max() == 0, f"{attention} {name}: expected exactly zero gradient"
            else:
                assert grad.abs().sum() > 0, f"{attention} {name}: no gradient"


@pytest.mark.parametrize("preset", [pytest.param(p, marks=pytest.mark.slow) if p.startswith("paper") else p  # paper-sized: slow
                                    for p in PRESETS if p not in ("paper", "paper_lean")])
def test_small_presets_run_forward_and_backward(preset, device):
    cfg = HaloAEConfig.from_overrides(preset, {"model.backbone.weights": "random"})
    model = HaloAE(cfg).to(device)
    s = cfg.model.image_size
    out = model(torch.randn(2, 3, s, s, device=device))
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


@pytest.mark.parametrize(
    "variant,absent",
    [("fm_only", {"image_decoder", "classifier"}), ("cls_fm", {"image_decoder"}), ("ae_l2", {"backbone", "classifier", "image_decoder"})],
)
def test_parts_a_variant_lacks_are_absent(variant, absent):
    over = {} if variant == "ae_l2" else {"model.backbone.weights": "random"}
    model = HaloAE(_tiny(variant, **over))
    parts = {"backbone", "image_decoder", "classifier"}
    assert {p for p in parts if isinstance(getattr(model, p), Absent)} == absent
    assert model.has_backbone == ("backbone" not in absent)
    for part in absent:
        assert count_parameters(getattr(model, part)) == 0
        assert not any(key.startswith(part + ".") for key in model.state_dict())
    assert (model.features(torch.randn(1, 3, 32, 32)) is None) == ("backbone" in absent)


def test_block_c_only_can_reconstruct_negative_normalised_pixels():
    """Its fm is the normalised image, half negative: the decoder must not end in a ReLU."""
    torch.manual_seed(0)
    model = HaloAE(_tiny("block_c_only")).eval()
    assert not model.decoder.stages[-1].final_relu
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.fm_hat.shape == out.fm.shape and float(out.fm_hat.min()) < 0


def test_published_extractor_reaches_the_model():
    x = torch.randn(1, 3, 32, 32)
    fms = []
    for padding in ("zeros", "reflect_published"):
        torch.manual_seed(0)  # the same random VGG19 weights
        fms.append(HaloAE(_tiny(**{"model.backbone.weights": "random", "model.backbone.padding": padding})).features(x))
    assert fms[0].shape == fms[1].shape == (1, 192, 8, 8)
    assert not torch.allclose(fms[0], fms[1])


def test_classifier_keeps_the_originals_state_dict_keys():
    keys = [k for k in HaloAE(_tiny(**{"model.backbone.weights": "random"})).state_dict() if k.startswith("classifier")]
    assert keys == ["classifier.weight", "classifier.bias"]


def test_bottleneck_takes_its_sizes_by_keyword():
    with pytest.raises(TypeError):
        HaloBottleneck(8, 8, 8, 3, 2)  # type: ignore[misc]
    block = HaloBottleneck(8, 8, 8, kernel=3, heads=2, dim_head=4, block_size=2, halo_size=1)
    assert block(torch.randn(1, 8, 4, 4)).shape == (1, 8, 4, 4)


def test_summary_counts_an_absent_part_as_zero():
    from click.testing import CliRunner

    from haloae.cli import main

    result = CliRunner().invoke(main, ["summary", "--preset", "tiny", "--variant", "fm_only"])
    assert result.exit_code == 0, result.output
    counts = {line.split()[0]: line.split()[-1] for line in result.output.splitlines()}
    assert counts["im_hat"] == counts["logits"] == "-"
    assert counts["image_decoder"] == counts["classifier"] == "0" and counts["encoder"] != "0"


@pytest.mark.parametrize("detach", [False, True])
def test_classifier_detach_keeps_l_cls_out_of_the_auto_encoder(detach):
    """``model.classifier_detach``: L_cls's gradient stops at block E's input, so the encoder,
    decoders and image decoder learn from the reconstruction terms only; off, it reaches them all."""
    torch.manual_seed(0)
    model = HaloAE(_tiny(**{"model.backbone.weights": "random", "model.classifier_detach": detach})).train()
    logits = model(torch.randn(4, 3, 32, 32)).logits
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0, 1, 1])).backward()
    assert model.classifier.weight.grad is not None and model.classifier.weight.grad.abs().sum() > 0
    for part in ("encoder", "decoder", "image_decoder"):
        grads = [p.grad for p in getattr(model, part).parameters() if p.requires_grad]
        reached = any(g is not None and bool(g.abs().sum() > 0) for g in grads)
        assert reached is not detach, part


def test_forward_views_gives_forwards_gradients_without_the_auto_encoders_graph():
    """Under ``model.classifier_detach`` the CutPaste views' pass (``forward_views``) records no
    auto-encoder graph, yet one step's gradients and BatchNorm running statistics are ``forward``'s."""
    from haloae.losses import HaloAELoss
    from haloae.train import concat_outputs

    cfg = _tiny(**{"model.backbone.weights": "random", "model.classifier_detach": True})
    images = torch.randn(6, 3, cfg.model.image_size, cfg.model.image_size)
    results = []
    for views in ("forward", "forward_views"):
        torch.manual_seed(0)
        model = HaloAE(cfg).train()
        view_out = getattr(model, views)(images[2:])
        assert (view_out.fm_hat.requires_grad, view_out.logits.requires_grad) == (views == "forward", True)
        loss, _ = HaloAELoss(cfg)(concat_outputs(model(images[:2]), view_out), images, 2, 0)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads, {n: b.clone() for n, b in model.named_buffers()}))
    (loss_a, grads_a, buffers_a), (loss_b, grads_b, buffers_b) = results
    assert torch.allclose(loss_a, loss_b) and grads_a.keys() == grads_b.keys() and "classifier.weight" in grads_a
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-6), name
    for name in buffers_a:
        assert torch.allclose(buffers_a[name].float(), buffers_b[name].float()), name
