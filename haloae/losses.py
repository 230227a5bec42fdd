# SPDX-License-Identifier: Apache-2.0
"""HaloAE training loss: paper eq. 2, 3 (reconstruction), 5 (adaptive weighting) and 7 (uncertainty).

Per step the batch is ``[originals (n), CutPaste (n), CutPaste-scar (n)]`` (only the originals
when CutPaste is off), as the authors' ``train.py``:

    L_cls    cross-entropy over all images; label 0 for the n originals, 1 for the rest  (eq. 1)
    L_fm     MSE(fm_hat, fm) + (1 - SSIM(fm, fm_hat)) on the n originals only              (eq. 2)
    L_im     MSE(im_hat, im) + (1 - SSIM(im_hat, im)) on the n originals only              (eq. 3)
    L_T(t)   a1(t) L_cls + a2(t) L_fm + a3(t) L_im                                         (eq. 5)

``im`` is the ImageNet-normalised input, so neither tensor lies in [0, 1]; SSIM still uses the
constants of data range 1 (C1 = 0.01**2, C2 = 0.03**2), exactly as the ``pytorch_ssim`` copy the
authors train with. ``loss.reconstruction`` keeps only the MSE (AE-L2) or only the SSIM (AE-SSIM)
part. The weights a_i(t) are logistic curves of the epoch normalised to sum to 1 (paper Fig. 3;
the code's slope 0.07 for a1). Table 3's other schemes: ``equal`` (plain sum) and ``uncertainty``
(Kendall et al., 2018; eq. 7) with learned log-variances.

Precision: every loss is computed in fp32, whatever autocast the model ran under
(``train.precision``): ``ssim`` and ``HaloAELoss`` cast half and bf16 inputs to float32 and switch
autocast off inside. SSIM's variances are differences of nearly equal blurred moments, which cancel in bf16:
on 4 real bottle images plus noise, SSIM was 0.416 in fp32 and -0.492 under CUDA bf16 autocast
(issue 14); under CPU autocast (128 px, noise 0.3) 0.442 and 0.387 (tests/test_precision.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from haloae.config import LOSS_TERMS, AlphaConfig, AlphaTerm, HaloAEConfig, LossConfig
from haloae.model import HaloAEOutput

RECONSTRUCTIONS = ("mse+ssim", "mse", "ssim")
SSIM_C1 = 0.01**2  # (K1 * L)**2 with data range L = 1, as pytorch_ssim
SSIM_C2 = 0.03**2  # (K2 * L)**2


# ---------------------------------------------------------------------- SSIM
def gaussian_window(
    size: int, sigma: float, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Normalised 2-D Gaussian ``(size, size)``: outer product of the normalised 1-D kernel.

    Taps are centred on ``size // 2`` (pytorch_ssim's ``gaussian``); the result sums to 1.
    """
    _check_gaussian("gaussian_window", size, sigma)
    g = gaussian_taps(size, sigma, dtype=torch.float64)
    return torch.outer(g, g).to(dtype=dtype, device=device)  # (size, size)


def gaussian_taps(
    size: int, sigma: float, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """The normalised 1-D Gaussian ``(size,)`` whose outer product is ``gaussian_window``."""
    _check_gaussian("gaussian_taps", size, sigma)
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)  # (size,)


def _check_gaussian(who: str, size: int, sigma: float) -> None:
    if size < 1:
        raise ValueError(f"{who}: size must be >= 1, got {size}")
    if sigma <= 0:
        raise ValueError(f"{who}: sigma must be > 0, got {sigma}")


def ssim(
    x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5, reduction: str = "mean"
) -> torch.Tensor:
    """Per-channel Gaussian-window SSIM of ``x`` and ``y`` ``(B, C, H, W)``, as pytorch_ssim.

    A depthwise (grouped) convolution with zero padding ``window // 2`` computes the local means,
    variances and covariance; C1 = 0.01**2, C2 = 0.03**2 (data range 1, whatever the inputs'
    range, as the original). ``reduction="mean"`` returns a scalar (mean over every position and
    channel, i.e. ``size_average=True``), ``"none"`` the SSIM map ``(B, C, H, W)``. Computed in
    fp32 with autocast off, whatever the inputs' dtype (see the module docstring).
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(
            f"ssim: expects two (B, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if reduction not in ("mean", "none"):
        raise ValueError(f"ssim: reduction must be 'mean' or 'none', got {reduction!r}")
    with torch.autocast(x.device.type, enabled=False):
        return _ssim_full_precision(at_least_fp32(x), at_least_fp32(y), window, sigma, reduction)


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """``t`` as float32 when it is a half or bfloat16 tensor (an autocast output), else unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _ssim_full_precision(x: torch.Tensor, y: torch.Tensor, window: int, sigma: float, reduction: str) -> torch.Tensor:
    """``ssim`` once the inputs are at least fp32 and autocast is off."""
    channels = x.shape[1]
    # the window is the outer product of a 1-D Gaussian, so the blur is a row pass then a column
    # pass: 2k taps a pixel instead of k**2, the same sums up to rounding (zero padding included)
    taps = gaussian_taps(window, sigma, dtype=x.dtype, device=x.device)
    along_w = taps.view(1, 1, 1, window).expand(channels, 1, 1, window)  # one filter per channel
    along_h = taps.view(1, 1, window, 1).expand(channels, 1, window, 1)
    pad = window // 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.conv2d(t, along_w, padding=(0, pad), groups=channels)
        return F.conv2d(t, along_h, padding=(pad, 0), groups=channels)  # (B, C, H, W)

    mu_x, mu_y = blur(x), blur(y)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x = blur(x * x) - mu_xx
    var_y = blur(y * y) - mu_yy
    cov_xy = blur(x * y) - mu_xy
    ssim_map = ((2 * mu_xy + SSIM_C1) * (2 * cov_xy + SSIM_C2)) / (
        (mu_xx + mu_yy + SSIM_C1) * (var_x + var_y + SSIM_C2)
    )  # (B, C, H, W)
    return ssim_map.mean() if reduction == "mean" else ssim_map


def reconstruction_loss(
    target: torch.Tensor, recon: torch.Tensor, kind: str = "mse+ssim", window: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """Eq. 2 / 3 as the code computes them: ``MSE + (1 - SSIM)`` (means over all elements).

    ``kind``: ``mse+ssim`` (paper), ``mse`` (AE-L2) or ``ssim`` (AE-SSIM: ``1 - SSIM`` only).
    """
    if kind not in RECONSTRUCTIONS:
        raise ValueError(f"reconstruction_loss: kind must be one of {', '.join(RECONSTRUCTIONS)}, got {kind!r}")
    if target.shape != recon.shape:
        raise ValueError(
            f"reconstruction_loss: reconstruction {tuple(recon.shape)} does not match its target {tuple(target.shape)}"
        )
    loss = recon.new_zeros(())
    if kind in ("mse+ssim", "mse"):
        loss = loss + F.mse_loss(recon, target)
    if kind in ("mse+ssim", "ssim"):
        loss = loss + (1.0 - ssim(target, recon, window, sigma))
    return loss


# ---------------------------------------------------------------------- weighting
def logistic_alpha(term: AlphaTerm, epoch: float) -> float:
    """``(a - b) / (1 + exp(d * (epoch - c / 2))) + b``: from a at epoch 0 towards b, midpoint c/2."""
    z = term.d * (epoch - term.c / 2.0)
    # exp overflows past ~709; the curve has reached b long before
    return term.b if z > 700 else (term.a - term.b) / (1.0 + math.exp(z)) + term.b


def alpha_schedule(alpha: AlphaConfig, epoch: float, terms: tuple[str, ...] = LOSS_TERMS) -> dict[str, float]:
    """The logistic weights of ``terms`` at ``epoch``, normalised to sum to 1 over those terms.

    With all three terms and the default ``AlphaConfig`` this is the authors' table (epoch 0:
    .971, .028, .001; epoch 250: .112, .335, .554). A subset is renormalised over itself (the
    original's fm-only run kept the three-term normalisation; here every subset sums to 1).
    """
    if not terms:
        raise ValueError("alpha_schedule: needs at least one term")
    raw = {}
    for name in terms:
        if name not in LOSS_TERMS:
            raise ValueError(f"alpha_schedule: unknown term {name!r}; valid: {', '.join(LOSS_TERMS)}")
        raw[name] = logistic_alpha(getattr(alpha, name), epoch)
    total = sum(raw.values())
    if not math.isfinite(total) or total <= 0:
        raise ValueError(f"alpha_schedule: weights {raw} at epoch {epoch} do not have a positive sum")
    return {name: value / total for name, value in raw.items()}


class LossWeighting(nn.Module):
    """Combines the per-term losses into L_T (paper eq. 4, 5, 7; Table 3 rows 1-3).

    ``loss.weighting``:
        ``adaptive_logistic``  L_T = sum_i alpha_i(t) L_i with ``alpha_schedule`` (eq. 5)
        ``equal``              L_T = sum_i L_i (weight 1 each, no normalisation; Table 3 row 2)
        ``uncertainty``        L_T = sum_i exp(-s_i) L_i + s_i, s_i = log sigma_i**2 learned (eq. 7)

    For ``uncertainty`` we implement eq. 7 of the paper literally, ``L_i / sigma_i**2 +
    log sigma_i**2``, parametrised by the log-variance ``s_i`` (one ``nn.Parameter`` per term,
    initialised to 0, i.e. starting as ``equal``), which Kendall et al. (sec. 3.2) recommend for
    numerical stability. Their regression form ``0.5 exp(-s) L + 0.5 s`` differs only by the
    global factor 1/2 (same minimiser s_i = log L_i, and Adam is invariant to that scale), so the
    paper's form was kept; the classification term uses the same form (Kendall's approximation
    for a softmax likelihood is also ``exp(-s) L + s`` up to the 1/2). The effective weight
    reported as ``alpha_<term>`` is ``exp(-s_i)``. The s_i are parameters of this module: add
    ``loss.parameters()`` to the optimiser.
    """

    def __init__(self, cfg: LossConfig) -> None:
        super().__init__()
        if cfg.weighting not in ("adaptive_logistic", "equal", "uncertainty"):
            raise ValueError(f"loss.weighting: unknown {cfg.weighting!r}; valid: adaptive_logistic, equal, uncertainty")
        self.kind = cfg.weighting
        self.terms: tuple[str, ...] = tuple(cfg.terms)
        self.alpha = cfg.alpha
        self.log_vars: nn.ParameterDict | None = None
        if self.kind == "uncertainty":
            self.log_vars = nn.ParameterDict({t: nn.Parameter(torch.zeros(())) for t in self.terms})

    def weights(self, epoch: float) -> dict[str, float]:
        """The effective weight of each term at ``epoch`` (what is logged as ``alpha_<term>``)."""
        if self.kind == "adaptive_logistic":
            return alpha_schedule(self.alpha, epoch, self.terms)
        if self.kind == "equal":
            return dict.fromkeys(self.terms, 1.0)
        assert self.log_vars is not None
        return {t: math.exp(-float(self.log_vars[t].detach())) for t in self.terms}

    def forward(self, losses: dict[str, torch.Tensor], epoch: float) -> tuple[torch.Tensor, dict[str, float]]:
        """``losses`` term -> scalar tensor (exactly the configured terms); returns (L_T, weights)."""
        if set(losses) != set(self.terms):
            raise ValueError(f"LossWeighting: got terms {sorted(losses)}, configured for {list(self.terms)}")
        if self.kind == "uncertainty":
            assert self.log_vars is not None
            parts = [torch.exp(-self.log_vars[t]) * losses[t] + self.log_vars[t] for t in self.terms]
        else:
            w = self.weights(epoch)
            parts = [w[t] * losses[t] for t in self.terms]
        total = torch.stack(parts).sum()  # ()
        logs = {f"alpha_{t}": v for t, v in self.weights(epoch).items()}
        return total, logs

    def extra_repr(self) -> str:
        return f"kind={self.kind}, terms={self.terms}"


# ---------------------------------------------------------------------- HaloAE loss
class HaloAELoss(nn.Module):
    """L_T for one ``HaloAEConfig``: the configured terms of eq. 1-3, weighted by ``LossWeighting``.

    ``forward(out, images, n_originals, epoch)``: ``images`` ``(B, 3, S, S)`` are the normalised
    model inputs, the first ``n_originals`` of them unaltered and the rest CutPaste views. The
    classification term uses every image (label 0 for the originals, 1 otherwise); the
    reconstruction terms only the originals. ``fm`` compares ``out.fm_hat`` with ``out.fm`` (for
    ``block_c_only`` fm is the image itself); ``im`` compares ``out.im_hat`` with ``images`` (for
    ``ae_l2`` / ``ae_ssim`` im_hat is the image AE's output). Returns the total and a dict of
    floats: ``loss``, ``loss_<term>`` for each computed term and ``alpha_<term>``.
    """

    def __init__(self, cfg: HaloAEConfig) -> None:
        super().__init__()
        lc = cfg.loss
        if lc.reconstruction not in RECONSTRUCTIONS:
            raise ValueError(f"loss.reconstruction: unknown {lc.reconstruction!r}; valid: {', '.join(RECONSTRUCTIONS)}")
        self.terms: tuple[str, ...] = tuple(lc.terms)
        self.reconstruction = lc.reconstruction
        self.ssim_window = lc.ssim_window
        self.ssim_sigma = lc.ssim_sigma
        self.weighting = LossWeighting(lc)

    def term_losses(self, out: HaloAEOutput, images: torch.Tensor, n_originals: int) -> dict[str, torch.Tensor]:
        """The unweighted scalar loss of each configured term (differentiable)."""
        if images.dim() != 4:
            raise ValueError(f"HaloAELoss: images must be (B, C, H, W), got {tuple(images.shape)}")
        batch = images.shape[0]
        if not 1 <= n_originals <= batch:
            raise ValueError(
                f"HaloAELoss: n_originals must be in [1, {batch}] for a batch of {batch}, got {n_originals}"
            )
        n = n_originals
        losses: dict[str, torch.Tensor] = {}
        if "cls" in self.terms:
            logits = _need(out.logits, "cls", "out.logits (the classifier, model.classifier=true)")
            if logits.shape[0] != batch:
                raise ValueError(f"HaloAELoss: logits for {logits.shape[0]} images, batch has {batch}")
            labels = torch.ones(batch, dtype=torch.long, device=logits.device)  # (B,) CutPaste = 1
            labels[:n] = 0  # originals
            losses["cls"] = F.cross_entropy(logits, labels)
        if "fm" in self.terms:
            fm = _need(out.fm, "fm", "out.fm (the target feature map)")
            fm_hat = _need(out.fm_hat, "fm", "out.fm_hat (the feature reconstruction)")
            losses["fm"] = self._reconstruction(fm[:n].detach(), fm_hat[:n])  # (n, C, h, w) originals only
        if "im" in self.terms:
            im_hat = _need(out.im_hat, "im", "out.im_hat (the image decoder, model.image_decoder=true)")
            losses["im"] = self._reconstruction(images[:n].detach(), im_hat[:n])  # (n, 3, S, S)
        return losses

    def _reconstruction(self, target: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        return reconstruction_loss(target, recon, self.reconstruction, self.ssim_window, self.ssim_sigma)

    def forward(
        self, out: HaloAEOutput, images: torch.Tensor, n_originals: int, epoch: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """L_T in fp32 with autocast off, whatever precision the model ran in (``train.precision``)."""
        with torch.autocast(images.device.type, enabled=False):
            fp32 = HaloAEOutput(*(at_least_fp32(t) if t is not None else None for t in out))
            losses = self.term_losses(fp32, at_least_fp32(images), n_originals)
            total, weights = self.weighting(losses, epoch)
        logs: dict[str, float] = {"loss": float(total.detach())}
        logs.update({f"loss_{t}": float(v.detach()) for t, v in losses.items()})
        logs.update(weights)
        return total, logs


def _need(value: torch.Tensor | None, term: str, what: str) -> torch.Tensor:
    if value is None:
        raise ValueError(
            f"HaloAELoss: loss term {term!r} needs {what}, but the model output has None; "
            f"remove {term!r} from loss.terms or enable that part of the model"
        )
    return value
