# SPDX-License-Identifier: Apache-2.0
import math

import pytest
import torch
import torch.nn.functional as F

from haloae.config import LOSS_TERMS, AlphaConfig, HaloAEConfig, LossConfig
from haloae.losses import (
    HaloAELoss,
    LossWeighting,
    alpha_schedule,
    gaussian_window,
    logistic_alpha,
    reconstruction_loss,
    ssim,
)
from haloae.model import HaloAE, HaloAEOutput
from haloae.presets import VARIANTS

# original-code-notes.md: the authors' normalised (a1, a2, a3)
ALPHA_TABLE = {
    0: (0.971, 0.028, 0.001),
    40: (0.790, 0.201, 0.009),
    75: (0.409, 0.549, 0.042),
    100: (0.274, 0.625, 0.102),
    150: (0.156, 0.456, 0.389),
    250: (0.112, 0.335, 0.554),
}


@pytest.mark.parametrize("epoch", list(ALPHA_TABLE))
def test_alpha_schedule_reproduces_the_original_table(epoch):
    w = alpha_schedule(AlphaConfig(), epoch, LOSS_TERMS)
    for got, want in zip((w["cls"], w["fm"], w["im"]), ALPHA_TABLE[epoch], strict=True):
        assert abs(got - want) < 1e-3
    assert math.isclose(sum(w.values()), 1.0)


def test_logistic_alpha_shape_and_overflow():
    a = AlphaConfig().cls
    assert math.isclose(logistic_alpha(a, a.c / 2), (a.a + a.b) / 2)  # midpoint
    assert math.isclose(logistic_alpha(a, 1e6), a.b)  # no OverflowError far past the midpoint
    assert math.isclose(logistic_alpha(a, -1e6), a.a)


def test_alpha_subsets_renormalise():
    full = alpha_schedule(AlphaConfig(), 60, LOSS_TERMS)
    sub = alpha_schedule(AlphaConfig(), 60, ("cls", "fm"))
    assert set(sub) == {"cls", "fm"}
    assert math.isclose(sum(sub.values()), 1.0)
    assert math.isclose(sub["cls"] / sub["fm"], full["cls"] / full["fm"])
    assert alpha_schedule(AlphaConfig(), 60, ("im",)) == {"im": 1.0}


# ---------------------------------------------------------------------- SSIM
def _ssim_reference(x, y, window=11, sigma=1.5):
    """Straightforward SSIM map: unfold zero-padded windows and take weighted moments."""
    b, c, h, w = x.shape
    g = gaussian_window(window, sigma, dtype=torch.float64).reshape(-1)  # (k*k,)
    pad = window // 2

    def patches(t):
        return F.unfold(t.reshape(b * c, 1, h, w), window, padding=pad)  # (B*C, k*k, H*W)

    px, py = patches(x.double()), patches(y.double())
    mx = torch.einsum("k,nkp->np", g, px)
    my = torch.einsum("k,nkp->np", g, py)
    vx = torch.einsum("k,nkp->np", g, px * px) - mx**2
    vy = torch.einsum("k,nkp->np", g, py * py) - my**2
    cxy = torch.einsum("k,nkp->np", g, px * py) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.reshape(b, c, h, w)


def test_gaussian_window_matches_pytorch_ssim():
    w = gaussian_window(11, 1.5)
    assert w.shape == (11, 11)
    assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-6)
    g = torch.tensor([math.exp(-((i - 5) ** 2) / (2 * 1.5**2)) for i in range(11)])
    g = g / g.sum()
    torch.testing.assert_close(w, torch.outer(g, g))


def test_ssim_identity_and_reference():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 20)
    y = x + 0.3 * torch.randn_like(x)
    assert abs(float(ssim(x, x)) - 1.0) < 1e-5
    smap = ssim(x, y, reduction="none")
    assert smap.shape == x.shape
    torch.testing.assert_close(smap.double(), _ssim_reference(x, y), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ssim(x, y), smap.mean())
    with pytest.raises(ValueError, match="same shape|one shape"):
        ssim(x, y[:, :2])


def test_reconstruction_kinds():
    torch.manual_seed(0)
    t, r = torch.randn(2, 4, 12, 12), torch.randn(2, 4, 12, 12)
    mse, s = F.mse_loss(r, t), 1 - ssim(t, r)
    torch.testing.assert_close(reconstruction_loss(t, r, "mse"), mse)
    torch.testing.assert_close(reconstruction_loss(t, r, "ssim"), s)
    torch.testing.assert_close(reconstruction_loss(t, r, "mse+ssim"), mse + s)


# ---------------------------------------------------------------------- weighting
def _losses():
    return {"cls": torch.tensor(0.7, requires_grad=True), "fm": torch.tensor(2.0), "im": torch.tensor(0.3)}


def test_equal_weighting_is_plain_sum():
    weighting = LossWeighting(LossConfig(weighting="equal"))
    total, logs = weighting(_losses(), epoch=17)
    assert math.isclose(total.item(), 0.7 + 2.0 + 0.3, rel_tol=1e-6)
    assert logs == {"alpha_cls": 1.0, "alpha_fm": 1.0, "alpha_im": 1.0}


def test_adaptive_weighting_uses_schedule():
    weighting = LossWeighting(LossConfig())
    total, logs = weighting(_losses(), epoch=100)
    w = alpha_schedule(AlphaConfig(), 100)
    assert math.isclose(total.item(), w["cls"] * 0.7 + w["fm"] * 2.0 + w["im"] * 0.3, rel_tol=1e-6)
    assert logs == {f"alpha_{k}": v for k, v in w.items()}
    assert not list(weighting.parameters())


def test_uncertainty_weighting_learns_log_variances():
    weighting = LossWeighting(LossConfig(weighting="uncertainty"))
    params = dict(weighting.named_parameters())
    assert set(params) == {"log_vars.cls", "log_vars.fm", "log_vars.im"}
    total, logs = weighting(_losses(), epoch=0)
    # s = 0 at start: exp(-0) L + 0 = plain sum
    assert math.isclose(total.item(), 3.0, rel_tol=1e-6)
    total.backward()
    for name, p in params.items():
        assert p.grad is not None and float(p.grad.abs()) > 0, name
        # d/ds (exp(-s) L + s) at s = 0 is 1 - L
    assert math.isclose(float(params["log_vars.fm"].grad), 1 - 2.0, rel_tol=1e-6)
    with torch.no_grad():
        params["log_vars.fm"].fill_(math.log(2.0))
    assert math.isclose(weighting(_losses(), 0)[1]["alpha_fm"], 0.5, rel_tol=1e-6)


def test_weighting_rejects_other_terms():
    weighting = LossWeighting(LossConfig(terms=("cls", "fm")))
    with pytest.raises(ValueError, match="configured for"):
        weighting(_losses(), 0)


# ---------------------------------------------------------------------- HaloAELoss
def _cfg(**overrides):
    return HaloAEConfig.from_overrides("tiny", overrides)


def _fake_output(n=2, views=3, channels=5, fm_side=8, image=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = n * views
    images = torch.randn(b, 3, image, image, generator=g)
    out = HaloAEOutput(
        fm=torch.randn(b, channels, fm_side, fm_side, generator=g),
        code=None,
        fm_hat=torch.randn(b, channels, fm_side, fm_side, generator=g, requires_grad=True),
        im_hat=torch.randn(b, 3, image, image, generator=g, requires_grad=True),
        logits=torch.randn(b, 2, generator=g, requires_grad=True),
    )
    return out, images


def test_reconstruction_uses_only_the_originals():
    loss = HaloAELoss(_cfg())
    out, images = _fake_output()
    _, logs = loss(out, images, n_originals=2, epoch=10)
    # change every CutPaste view's reconstruction and input: reconstruction terms must not move
    fm_hat, im_hat = out.fm_hat.detach().clone(), out.im_hat.detach().clone()
    fm_hat[2:] += 5.0
    im_hat[2:] -= 3.0
    images2 = images.clone()
    images2[2:] = 0.0
    _, logs2 = loss(out._replace(fm_hat=fm_hat, im_hat=im_hat), images2, n_originals=2, epoch=10)
    assert logs2["loss_fm"] == logs["loss_fm"]
    assert logs2["loss_im"] == logs["loss_im"]
    want_fm = F.mse_loss(out.fm_hat[:2], out.fm[:2]) + 1 - ssim(out.fm[:2], out.fm_hat[:2])
    assert math.isclose(logs["loss_fm"], want_fm.item(), rel_tol=1e-5)
    want_im = F.mse_loss(out.im_hat[:2], images[:2]) + 1 - ssim(images[:2], out.im_hat[:2])
    assert math.isclose(logs["loss_im"], want_im.item(), rel_tol=1e-5)


def test_classification_labels_originals_zero_cutpaste_one():
    loss = HaloAELoss(_cfg())
    out, images = _fake_output()
    _, logs = loss(out, images, n_originals=2, epoch=0)
    labels = torch.tensor([0, 0, 1, 1, 1, 1])
    assert math.isclose(logs["loss_cls"], F.cross_entropy(out.logits, labels).item(), rel_tol=1e-6)
    confident = torch.tensor([[20.0, -20.0]] * 2 + [[-20.0, 20.0]] * 4)
    _, logs = loss(out._replace(logits=confident), images, n_originals=2, epoch=0)
    assert logs["loss_cls"] < 1e-6


def test_total_matches_weights_and_logs():
    loss = HaloAELoss(_cfg())
    out, images = _fake_output()
    total, logs = loss(out, images, n_originals=2, epoch=75)
    w = alpha_schedule(AlphaConfig(), 75)
    want = sum(w[t] * logs[f"loss_{t}"] for t in LOSS_TERMS)
    assert math.isclose(total.item(), want, rel_tol=1e-5)
    assert math.isclose(logs["loss"], total.item(), rel_tol=1e-6)
    assert {k for k in logs if k.startswith("alpha_")} == {"alpha_cls", "alpha_fm", "alpha_im"}
    total.backward()
    assert out.fm_hat.grad[2:].abs().sum() == 0  # no reconstruction gradient to the CutPaste views
    assert out.fm_hat.grad[:2].abs().sum() > 0
    assert out.logits.grad[2:].abs().sum() > 0


@pytest.mark.parametrize("terms", [("cls",), ("fm",), ("cls", "fm"), ("cls", "im"), ("fm", "im")])
def test_each_term_can_be_switched_off(terms):
    loss = HaloAELoss(_cfg(**{"loss.terms": terms}))
    out, images = _fake_output()
    total, logs = loss(out, images, n_originals=2, epoch=5)
    assert {k for k in logs if k.startswith("loss_")} == {f"loss_{t}" for t in terms}
    assert {k for k in logs if k.startswith("alpha_")} == {f"alpha_{t}" for t in terms}
    assert math.isclose(sum(logs[f"alpha_{t}"] for t in terms), 1.0)
    # a switched-off term's output may be missing
    missing = {"cls": "logits", "fm": "fm_hat", "im": "im_hat"}
    off = {missing[t]: None for t in LOSS_TERMS if t not in terms}
    total2, _ = loss(out._replace(**off), images, n_originals=2, epoch=5)
    assert total2.item() == total.item()


def test_missing_output_is_a_clear_error():
    loss = HaloAELoss(_cfg())
    out, images = _fake_output()
    with pytest.raises(ValueError, match="'im' needs out.im_hat"):
        loss(out._replace(im_hat=None), images, 2, 0)
    with pytest.raises(ValueError, match="n_originals"):
        loss(out, images, 0, 0)


def test_reconstruction_kind_from_config():
    out, images = _fake_output(views=1)
    mse = HaloAELoss(_cfg(**{"loss.reconstruction": "mse", "loss.terms": ("fm",), "cutpaste.enabled": False}))
    _, logs = mse(out, images, n_originals=2, epoch=0)
    assert math.isclose(logs["loss_fm"], F.mse_loss(out.fm_hat, out.fm).item(), rel_tol=1e-6)


@pytest.mark.parametrize("variant", ["haloae", "ae_ssim"])  # every output kind; ~2 s each on 2 cores
def test_loss_on_real_tiny_models(variant, device):
    over = (
        {} if VARIANTS[variant].overrides.get("model.backbone.name") == "none" else {"model.backbone.weights": "random"}
    )
    cfg = HaloAEConfig.from_overrides("tiny", over, variant=variant)
    torch.manual_seed(0)
    model, loss = HaloAE(cfg).to(device), HaloAELoss(cfg).to(device)
    n = 2
    views = 3 if cfg.cutpaste.enabled else 1
    images = torch.randn(n * views, 3, cfg.model.image_size, cfg.model.image_size, device=device)
    total, logs = loss(model(images), images, n_originals=n, epoch=3)
    assert torch.isfinite(total)
    assert {f"loss_{t}" for t in cfg.loss.terms} <= set(logs)
    total.backward()
    trainable = [p for p in [*model.parameters(), *loss.parameters()] if p.requires_grad]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)


@pytest.mark.parametrize("shape", [(2, 5, 16, 16), (1, 3, 12, 20), (2, 1, 6, 6)])
def test_separable_ssim_blur_matches_the_2d_window_convolution(shape):
    # ssim blurs with a row pass then a column pass; the 2-D window conv it replaces is the reference
    # (sides below the window included, where the zero padding does most of the work)
    import torch.nn.functional as F

    from haloae.losses import SSIM_C1, SSIM_C2, gaussian_window, ssim

    def ssim_2d(x, y, window=11, sigma=1.5):
        c = x.shape[1]
        kernel = gaussian_window(window, sigma).expand(c, 1, window, window)

        def blur(t):
            return F.conv2d(t, kernel, padding=window // 2, groups=c)

        mu_x, mu_y = blur(x), blur(y)
        var_x, var_y, cov = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2, blur(x * y) - mu_x * mu_y
        num = (2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)
        return (num / ((mu_x**2 + mu_y**2 + SSIM_C1) * (var_x + var_y + SSIM_C2))).mean()

    torch.manual_seed(0)
    x = torch.rand(shape)
    y = (x + 0.2 * torch.randn(shape)).requires_grad_()
    ref = ssim_2d(x, y)
    (ref_grad,) = torch.autograd.grad(ref, y)
    out = ssim(x, y)
    (grad,) = torch.autograd.grad(out, y)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-7)
