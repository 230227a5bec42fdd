# SPDX-License-Identifier: Apache-2.0
"""HaloAE (Mathian et al., 2022) and the architectures of its Table 4 ablation, as pure nn.Modules.

Blocks (paper Fig. 2), with the numbers of the authors' code for a 256x256 input:
    B  frozen VGG19 -> fm (B, 704, 64, 64)                         haloae.backbone
    C  HaloNet encoder: 5x5 conv (pad 0) 704->234, 64->60; one bottleneck per stage
       234 -> 234 -> 117 -> 58 -> 29                       -> code (B, 29, 60, 60)
       "transposed" HaloNet decoder 29 -> 29 -> 59 -> 118 -> 237 -> 704, nearest 60->64
                                                           -> fm_hat (B, 704, 64, 64)
    D  image decoder: reflection-pad 3x3 conv + ReLU 704->380->190->95->47->23->3, two x2 nearest
                                                           -> im_hat (B, 3, 256, 256)
    E  classifier: Linear(3*256*256, 2) on the flattened im_hat (on fm_hat without block D)

Other rows of Table 4 (``model.arch``): ``ae_l2`` / ``ae_ssim`` (Bergmann et al.'s convolutional
image AE), ``block_c_only`` (the HaloNet AE on the image, no backbone), ``block_c_cnn`` (DFR's 1x1
convolutional feature AE in place of block C). ``model.attention`` = ``halo`` | ``legacy`` | ``none``.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from haloae.attention import make_attention
from haloae.backbone import FeatureExtractor
from haloae.choices import IMAGE_AE_ARCHS
from haloae.config import HaloAEConfig


class HaloAEOutput(NamedTuple):
    """What one forward pass produces; outputs of parts a variant lacks are None."""

    fm: torch.Tensor | None  # (B, C, S/4, S/4) target features (no grad)
    code: torch.Tensor | None  # (B, C_code, h, w) encoded map
    fm_hat: torch.Tensor | None  # reconstruction of fm
    im_hat: torch.Tensor | None  # (B, 3, S, S) reconstructed image
    logits: torch.Tensor | None  # (B, 2) original (0) vs CutPaste (1)


def _conv(transposed: bool, c_in: int, c_out: int, kernel: int, bias: bool = False) -> nn.Module:
    # at stride 1 a ConvTranspose2d with padding k//2 keeps the size (it is a convolution with a
    # flipped kernel); kept as ConvTranspose2d so weights match the original decoder
    cls = nn.ConvTranspose2d if transposed else nn.Conv2d
    return cls(c_in, c_out, kernel, stride=1, padding=kernel // 2, bias=bias)


class Absent(nn.Module):
    """The form of a part that a variant lacks (no backbone, image decoder or classifier).

    timm's ``nn.Identity`` idiom for a part whose output does not exist: no parameters, no
    state-dict keys, and ``None`` out, so ``HaloAE.forward`` calls every part unconditionally and
    the missing output lands as None in ``HaloAEOutput``.
    """

    def forward(self, *inputs: torch.Tensor) -> None:
        return None


class HaloBottleneck(nn.Module):
    """One HaloNet bottleneck as HaloAE builds it (Table 1), encoder or transposed decoder.

    1x1 conv, BN, ReLU -> attention -> ReLU -> kxk conv, BN -> + identity (1x1 conv + BN when the
    width changes) -> ReLU. No BN after the attention, as in the original. ``final_relu=False``
    drops the last ReLU (the decoder's last block, ``model.decoder_final_relu``): fm_hat must be
    able to go negative when its target does (standardised or EfficientNet features; VGG's ReLU
    outputs are >= 0, so the original's ReLU cost nothing there).
    """

    def __init__(
        self,
        c_in: int,
        inner: int,
        c_out: int,
        *,
        kernel: int = 3,
        heads: int = 8,
        dim_head: int = 16,
        block_size: int = 12,
        halo_size: int = 2,
        attention: str = "halo",
        transposed: bool = False,
        unused_stride2_conv: bool = False,
        final_relu: bool = True,
    ) -> None:
        super().__init__()
        self.final_relu = final_relu
        self.conv1 = _conv(transposed, c_in, inner, 1)
        self.bn1 = nn.BatchNorm2d(inner)
        self.attn = make_attention(
            attention, inner, block_size=block_size, halo_size=halo_size, heads=heads, dim_head=dim_head
        )
        self.conv2 = _conv(transposed, inner, c_out, kernel)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (
            nn.Identity() if c_in == c_out else nn.Sequential(_conv(transposed, c_in, c_out, 1), nn.BatchNorm2d(c_out))
        )
        if unused_stride2_conv:
            # the original builds this 3x3 stride-2 conv in every block and never calls it
            self.unused_conv = _conv(transposed, c_out, c_out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.attn(out))
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        return F.relu(out) if self.final_relu else out


def _stages(
    c_in: int,
    *,
    inner: tuple[int, ...],
    outs: tuple[int, ...],
    kernels: tuple[int, ...],
    heads: tuple[int, ...],
    cfg: HaloAEConfig,
    transposed: bool,
    last_relu: bool = True,
) -> nn.Sequential:
    """One bottleneck per stage; ``last_relu=False`` drops the last block's final ReLU."""
    m = cfg.model
    blocks = []
    for i, (w_inner, w_out, k, h) in enumerate(zip(inner, outs, kernels, heads, strict=True)):
        blocks.append(
            HaloBottleneck(
                c_in, w_inner, w_out, kernel=k, heads=h, dim_head=m.dim_head, block_size=m.block_size,
                halo_size=m.halo_size, attention=m.attention, transposed=transposed,
                unused_stride2_conv=m.unused_stride2_convs, final_relu=last_relu or i < len(outs) - 1,
            )
        )
        c_in = w_out
    return nn.Sequential(*blocks)


class HaloNetEncoder(nn.Module):
    """Block C, first half: head conv (no padding: 64 -> 60) + one bottleneck per stage."""

    def __init__(self, c_in: int, cfg: HaloAEConfig) -> None:
        super().__init__()
        m = cfg.model
        widths = m.encoder_widths
        self.head = nn.Sequential(
            nn.Conv2d(c_in, widths[0], m.head_kernel, padding=0, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        self.stages = _stages(
            widths[0], inner=widths, outs=widths, kernels=m.encoder_kernels, heads=m.encoder_heads, cfg=cfg,
            transposed=False,
        )
        self.out_channels = widths[-1]

    def forward(self, fm: torch.Tensor) -> torch.Tensor:
        return self.stages(self.head(fm))


class HaloNetDecoder(nn.Module):
    """Block C, second half: the "transposed" HaloNet, then nearest upsampling to fm's size."""

    def __init__(self, c_in: int, c_out: int, out_size: int, cfg: HaloAEConfig) -> None:
        super().__init__()
        m = cfg.model
        outs = (*m.decoder_widths, c_out)
        inner = m.decoder_inner_widths or outs
        self.stages = _stages(
            c_in, inner=inner, outs=outs, kernels=m.decoder_kernels, heads=m.decoder_heads, cfg=cfg, transposed=True,
            last_relu=m.decoder_final_relu,
        )
        self.out_size = out_size

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.stages(code), size=(self.out_size, self.out_size), mode="nearest")


class FeatureCAE(nn.Module):
    """DFR's convolutional feature AE (1x1 convs), "Block C as CNN" in Table 4.

    C -> (C + 2d)/2 -> 2d -> d (code) -> 2d -> (C + 2d)/2 -> C, BN + ReLU between (Shi et al., 2021).
    """

    def __init__(self, channels: int, latent: int) -> None:
        super().__init__()
        mid = (channels + 2 * latent) // 2

        def layer(a: int, b: int) -> list[nn.Module]:
            return [nn.Conv2d(a, b, 1), nn.BatchNorm2d(b), nn.ReLU()]

        self.encoder = nn.Sequential(*layer(channels, mid), *layer(mid, 2 * latent), nn.Conv2d(2 * latent, latent, 1))
        self.decoder = nn.Sequential(*layer(latent, 2 * latent), *layer(2 * latent, mid), nn.Conv2d(mid, channels, 1))


class ImageDecoder(nn.Module):
    """Block D: fm_hat -> im_hat with reflection-padded 3x3 convs + ReLU and x2 nearest upsampling."""

    def __init__(self, c_in: int, *, widths: tuple[int, ...], upscale: int, final_relu: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for w in widths:
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(c_in, w, 3), nn.ReLU()]
            c_in = w
        # tails: c_in -> 3 then 3 -> 3, each followed by x2 nearest (two tails for the paper's 4x)
        n_tails = max(1, upscale.bit_length() - 1)
        for i in range(n_tails):
            last = i == n_tails - 1
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(c_in, 3, 3)]
            if final_relu or not last:
                layers.append(nn.ReLU())
            if upscale > 1:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            c_in = 3
        self.net = nn.Sequential(*layers)

    def forward(self, fm_hat: torch.Tensor) -> torch.Tensor:
        return self.net(fm_hat)


class Classifier(nn.Linear):
    """Block E: ``Linear(C*H*W, 2)`` on the flattened reconstruction, original (0) vs CutPaste (1).

    An ``nn.Linear`` itself, so its state-dict keys stay the original's ``classifier.weight`` / ``.bias``.
    """

    def __init__(self, in_features: int) -> None:
        super().__init__(in_features, 2)

    def forward(self, reconstruction: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.flatten(reconstruction, 1))


class ConvImageAE(nn.Module):
    """Bergmann et al. (2019)'s convolutional AE on images: AE-L2 / AE-SSIM of Table 4.

    Four stride-2 4x4 convs halve the image to S/16, 3x3 convs refine, a valid S/16 conv makes a
    ``latent``-dim code; the decoder mirrors it with transposed convs. LeakyReLU(0.2).
    """

    def __init__(self, image_size: int, latent: int = 100) -> None:
        super().__init__()
        spec = [(32, 4, 2), (32, 4, 2), (32, 3, 1), (64, 4, 2), (64, 3, 1), (128, 4, 2), (64, 3, 1), (32, 3, 1)]
        enc: list[nn.Module] = []
        c = 3
        for w, k, s in spec:
            enc += [nn.Conv2d(c, w, k, s, padding=1), nn.LeakyReLU(0.2)]
            c = w
        side = image_size // 16
        enc.append(nn.Conv2d(c, latent, side))  # (B, latent, 1, 1)
        dec: list[nn.Module] = [nn.ConvTranspose2d(latent, c, side), nn.LeakyReLU(0.2)]
        for (w, k, s), (w_next, _, _) in zip(reversed(spec), [*reversed(spec[:-1]), (3, 0, 0)], strict=True):
            dec.append(nn.ConvTranspose2d(w, w_next, k, s, padding=1))
            if w_next != 3:
                dec.append(nn.LeakyReLU(0.2))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)


class HaloAE(nn.Module):
    """The whole model for one ``HaloAEConfig``; ``forward(images) -> HaloAEOutput``.

    Inputs are ImageNet-normalised images ``(B, 3, S, S)``. The backbone is frozen; everything else
    trains. ``model.arch`` picks the Table 4 row. Parts a variant lacks are ``Absent``: the image
    auto-encoders (AE-L2, AE-SSIM) have no backbone, ``model.image_decoder=false`` no block D,
    ``model.classifier=false`` no block E.
    """

    def __init__(self, cfg: HaloAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        m, bb = cfg.model, cfg.model.backbone
        self.arch = m.arch
        self.image_autoencoder = m.arch in IMAGE_AE_ARCHS  # image in, image out: no fm
        # block E reads im_hat, or fm_hat where there is no block D (Table 3's "no image decoder")
        self.classifies_image = m.image_decoder
        self.classifier_detach = m.classifier_detach
        backbone, image_decoder, classifier = Absent(), Absent(), Absent()
        if self.image_autoencoder:
            ae = ConvImageAE(m.image_size, m.ae_latent_dim)
            encoder, decoder = ae.encoder, ae.decoder
        else:
            backbone = FeatureExtractor(
                bb.name, bb.layers, bb.weights, image_size=m.image_size, pool=bb.pool, standardize=bb.standardize,
                padding=bb.padding,
            )
            channels, side = backbone.out_channels, cfg.fm_size
            if m.arch == "block_c_cnn":
                cae = FeatureCAE(channels, m.cae_latent_dim)
                encoder, decoder = cae.encoder, cae.decoder
            else:  # haloae, block_c_only
                encoder = HaloNetEncoder(channels, cfg)
                decoder = HaloNetDecoder(encoder.out_channels, channels, side, cfg)
            if m.image_decoder:
                image_decoder = ImageDecoder(
                    channels, widths=m.image_decoder_widths, upscale=bb.pool, final_relu=m.image_decoder_final_relu
                )
            if m.classifier:
                classifier = Classifier(3 * m.image_size**2 if m.image_decoder else channels * side**2)
        # registration order = parameters() order, which the optimiser states of checkpoints follow
        self.encoder, self.decoder = encoder, decoder
        self.backbone, self.image_decoder, self.classifier = backbone, image_decoder, classifier
        self.init_weights()

    @property
    def has_backbone(self) -> bool:
        """Whether the model computes a feature map fm (all but the image auto-encoders)."""
        return not isinstance(self.backbone, Absent)

    def init_weights(self) -> None:
        """As the original ``initialize_weights``: kaiming normal (fan_in) on every conv, transposed
        conv and linear of blocks C and D (attention projections included), zero biases, BN (1, 0).
        The classifier keeps PyTorch's default init, as the original (it is not in that call).

        Each layer draws from its own stream, seeded by ``train.seed`` and the layer's name
        (``module_seed``): variants that share a layer start it from the same weights (common random
        numbers, so the paired comparisons of a sweep compare the variants, not their draws), where
        one global stream would shift every later layer by the parameters an earlier one adds."""
        seed = self.cfg.train.seed
        for prefix, part in (("encoder", self.encoder), ("decoder", self.decoder), ("image_decoder", self.image_decoder)):
            for name, module in part.named_modules(prefix=prefix):
                if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                    stream = torch.Generator().manual_seed(module_seed(seed, name))
                    nn.init.kaiming_normal_(module.weight, generator=stream)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
                elif isinstance(module, nn.BatchNorm2d):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
        for name, module in self.classifier.named_modules(prefix="classifier"):
            if isinstance(module, (nn.Linear, nn.Conv2d)):  # PyTorch's default init, from the layer's own stream
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(module_seed(seed, name))
                    module.reset_parameters()

    def features(self, images: torch.Tensor) -> torch.Tensor | None:
        """fm for a batch of images (frozen backbone, no grad; cacheable by callers); None for
        the image auto-encoders, which have no feature map."""
        return self.backbone(images)

    def forward(self, images: torch.Tensor, fm: torch.Tensor | None = None) -> HaloAEOutput:
        """``images`` (B, 3, S, S); pass ``fm`` when the frozen features are already computed."""
        if self.image_autoencoder:  # AE-L2 / AE-SSIM reconstruct the image itself
            code = self.encoder(images)
            return HaloAEOutput(None, code, None, self.decoder(code), None)
        return self._classified(*self._reconstructed(images, fm))

    def forward_views(self, images: torch.Tensor) -> HaloAEOutput:
        """``forward`` for CutPaste views, which only L_cls reads: under ``model.classifier_detach``
        its gradient stops at block E, so the auto-encoder runs without autograd (no graph and no
        backward for these images) and only block E records one. Outputs and gradients are those
        of ``forward``; without the detach (or for the image auto-encoders) it is ``forward``."""
        if not self.classifier_detach or self.image_autoencoder:
            return self.forward(images)
        with torch.no_grad():
            parts = self._reconstructed(images, None)
        return self._classified(*parts)

    def _reconstructed(self, images: torch.Tensor, fm: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """fm, code, fm_hat and im_hat (None without block D) of a feature-map model."""
        fm = self.features(images) if fm is None else fm
        code = self.encoder(fm)
        fm_hat = self.decoder(code)
        return fm, code, fm_hat, self.image_decoder(fm_hat)

    def _classified(self, fm, code, fm_hat, im_hat) -> HaloAEOutput:
        """The output with block E's logits on the reconstruction (through a stop-gradient under
        ``model.classifier_detach``)."""
        reconstruction = im_hat if self.classifies_image else fm_hat
        logits = self.classifier(reconstruction.detach() if self.classifier_detach else reconstruction)
        return HaloAEOutput(fm, code, fm_hat, im_hat, logits)


def module_seed(seed: int, name: str) -> int:
    """The seed of layer ``name``'s initial weights in a run seeded ``seed`` (stable across processes)."""
    return int(np.random.SeedSequence([seed % 2**32, zlib.crc32(name.encode())]).generate_state(1, np.uint64)[0])


def count_parameters(module: nn.Module, trainable: bool = True) -> int:
    """Parameters of a module (0 for an ``Absent`` part): trainable ones, or all with ``trainable=False``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)
