# SPDX-License-Identifier: Apache-2.0
"""The registry of named configurations: presets (model sizes) and variants (the paper's ablation rows).

Data only: each entry is dotted config overrides. ``HaloAEConfig.from_overrides(preset, variant=v)``
applies the preset, then the variant, then the caller's overrides.

Presets: ``paper_published`` (the model behind the published numbers: the authors' code exactly,
its inverted-mask attention, reflection-padded VGG19 and augmentation order included), ``paper``
(the same with the attention fixed, torchvision's VGG19 and the image jittered after the resize),
``paper_lean`` (``paper`` without the never-called convs), ``cpu`` (small images and widths with
offline ImageNet features), ``tiny`` (unit tests).
``PRESET_LABELS`` says how tables and sweeps name them.

Variants: Table 3 (loss schemes and subsets), Table 4 (architectures), the structural switches of
Table 3 (no image decoder, no classifier) and the attention kind (an ablation no one has published).
Sweeps list variants by these names, MLflow tags runs with them, tables print their labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from haloae.choices import BACKBONE_LAYERS
from haloae.errors import ConfigError

# ---------------------------------------------------------------------- presets
PRESETS: dict[str, dict[str, Any]] = {
    # The authors' code with its attention fixed (the defaults of haloae.config): working HaloNet
    # attention, torchvision's zero-padded VGG19, the image jittered after the resize (cheaper).
    "paper": {},
    # The model behind the published numbers, exactly: the layer of halonet-pytorch 0.0.4 with its
    # inverted padding mask (a block-average CNN in effect: original-code-notes.md, defect 1), the
    # DFR extractor (reflection padding, three maps with a padding ring; fm differs from
    # torchvision's by 6-11% inside) and their augmentation order, reproduced by
    # cutpaste.image_jitter_at=full_size: ColorJitter on the full-size image, resize to 256, then
    # CutPaste (data.TrainDataset; the other presets jitter the already resized image). The order
    # matters little: brightness, saturation and contrast commute with a bilinear resize up to the
    # clamp at 0 and 1, hue nearly; on bottle images scaled to MVTec's 900 px the two orders differ
    # by 0.0009 on average (pixels in [0, 1]) where the jitter itself moves them by 0.026, and on
    # images already at the model's size (the shared 256 px bottle) they are identical. It costs
    # memory (train images kept at full size: up to 1.2 GB a category) and time: jittering a
    # 900-1024 px image takes 0.2-0.3 s on one CPU core, against 0.01 s at 256 px (the hue shift,
    # mostly), and the training loop draws in its own process, so about 1 s per batch of 4.
    "paper_published": {
        "model.attention": "legacy",
        "model.backbone.padding": "reflect_published",
        "cutpaste.image_jitter_at": "full_size",
    },
    # the paper's model without the original's never-called convolutions (11.9M parameters)
    "paper_lean": {"model.unused_stride2_convs": False},
    # Small images and widths with the offline ImageNet backbone: ~1 s per step and 10-30 s per
    # epoch on 2 CPU cores. Unlike the paper: fm standardised per channel on train/good (raw
    # EfficientNet channels have stds of 2 to 14 and are half negative, so L_fm ~ 57, half of it
    # out of a ReLU decoder's reach, swamped the other terms and hardly moved), a decoder that
    # can output negative features, lr 3e-3 (short runs: 1e-3 left some textures unlearned after
    # 150 steps) and the map max as image score (a small defect dominates the max, while the
    # mean of a coarse, early reconstruction's map dilutes it).
    "cpu": {
        "model.image_size": 128,
        "model.backbone.name": "efficientnet_lite0",
        "model.backbone.layers": BACKBONE_LAYERS["efficientnet_lite0"],
        "model.backbone.standardize": True,
        "model.decoder_final_relu": False,
        "model.block_size": 7,  # 32 - 5 + 1 = 28 = 4 x 7
        "model.halo_size": 2,
        "model.dim_head": 8,
        "model.encoder_widths": (96, 48, 24, 12),
        "model.encoder_heads": (2, 4, 4, 4),
        "model.decoder_widths": (12, 24, 48, 96),
        "model.decoder_inner_widths": (),
        "model.decoder_heads": (2, 4, 4, 4, 4),
        "model.image_decoder_widths": (96, 48, 24, 12, 6),
        "model.image_decoder_final_relu": False,
        "model.unused_stride2_convs": False,
        "model.cae_latent_dim": 12,
        # L_cls trains the classifier only, and BatchNorm normalises the originals by their own
        # batch: on the real bottle the full loss's test pixel AUROC rises from 85.9 to 98.0
        # (bench/bottle.py; README "Training on the real bottle category")
        "model.classifier_detach": True,
        "train.views_apart": True,
        "train.epochs": 20,
        "train.steps_per_epoch": 25,
        "train.batch_size": 4,
        "optim.lr": 3e-3,
        "eval.image_score": "max",
        "loss.alpha.cls.c": 8.0,  # the paper's schedule compressed from 250 to 20 epochs
        "loss.alpha.cls.d": 0.875,
        "loss.alpha.fm.c": 12.0,
        "loss.alpha.fm.d": 0.625,
        "loss.alpha.im.c": 24.0,
        "loss.alpha.im.d": 0.625,
    },
    # the smallest thing that runs: unit tests
    "tiny": {
        "model.image_size": 32,
        "model.backbone.name": "vgg19",
        "model.backbone.weights": "random",
        "model.backbone.layers": ("relu1_1", "relu2_1"),
        "model.block_size": 2,
        "model.halo_size": 1,
        "model.dim_head": 4,
        "model.head_kernel": 3,  # 8 - 3 + 1 = 6 = 3 x 2
        "model.encoder_widths": (16, 8),
        "model.encoder_heads": (2, 2),
        "model.encoder_kernels": (3, 3),
        "model.decoder_widths": (8,),
        "model.decoder_inner_widths": (),
        "model.decoder_heads": (2, 2),
        "model.decoder_kernels": (3, 1),
        "model.image_decoder_widths": (16, 8),
        "model.unused_stride2_convs": False,
        "model.cae_latent_dim": 8,
        "model.ae_latent_dim": 16,
        "train.epochs": 2,
        "train.steps_per_epoch": 2,
        "train.batch_size": 2,
    },
}

# how tables, sweeps and reports name the presets; the two paper models side by side
PRESET_LABELS: dict[str, str] = {
    "paper_published": "HaloAE as published",
    "paper": "HaloAE, attention fixed",
    "paper_lean": "HaloAE, attention fixed, without the unused convs",
    "cpu": "CPU model (EfficientNet-Lite0 features)",
    "tiny": "unit-test model",
}


# ---------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """One ablation row: a name, how the paper prints it and the dotted overrides that make it."""

    name: str  # short identifier: config value, MLflow tag, table row key
    label: str  # how the paper prints the row
    table: str  # "table3" | "table4" | "attention" | "structure"
    overrides: dict[str, Any] = field(default_factory=dict)
    paper_row: str | None = None  # row name in paper_tables.csv, where the paper reports it


_NO_IMAGE_DECODER = {"model.image_decoder": False}
_IMAGE_AE = {
    "model.backbone.name": "none",
    "model.backbone.layers": (),
    "model.backbone.pool": 1,
    "model.backbone.padding": "zeros",  # no backbone, so none of paper_published's VGG19 padding
    "model.image_decoder": False,
    "model.classifier": False,
    "cutpaste.enabled": False,
    "loss.weighting": "equal",
}

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        # ---- Table 3: the loss function
        Variant("haloae", "L_T(t) = a1(t) L_cls + a2(t) L_fm + a3(t) L_im", "table3", {}, "adaptive_logistic (paper)"),
        Variant("equal_weights", "L_T = L_cls + L_fm + L_im", "table3", {"loss.weighting": "equal"}, "equal_weights"),
        Variant(
            "uncertainty_weighting", "L_T uncertainty weighting (Kendall et al.)", "table3",
            {"loss.weighting": "uncertainty"}, "uncertainty_weighting",
        ),
        Variant(
            "cls_fm", "L_T(t) = a1(t) L_cls + a2(t) L_fm (no image decoder)", "table3",
            {**_NO_IMAGE_DECODER, "loss.terms": ("cls", "fm")}, "cls+fm (no image decoder)",
        ),
        Variant("cls_im", "L_T(t) = a1(t) L_cls + a2(t) L_im", "table3", {"loss.terms": ("cls", "im")}, "cls+im (no fm loss)"),
        Variant(
            "fm_im", "L_T = L_fm + L_im (no SSL)", "table3",
            {"loss.terms": ("fm", "im"), "model.classifier": False, "cutpaste.enabled": False, "loss.weighting": "equal"},
            "fm+im (no SSL/cls)",
        ),
        # footnote 5: this row's image AUROC is the classifier's score, not a map's
        Variant(
            "cls_only", "L_T = L_cls", "table3",
            {"loss.terms": ("cls",), "loss.weighting": "equal", "eval.scoring": "cls", "model.classifier_detach": False},
            "cls only",
        ),
        Variant(
            "fm_only", "L_T = L_fm", "table3",
            {**_NO_IMAGE_DECODER, "model.classifier": False, "cutpaste.enabled": False, "loss.terms": ("fm",),
             "loss.weighting": "equal"},
            "fm only",
        ),
        # ---- Table 4: the architecture
        Variant(
            "ae_l2", "AE-L2", "table4",
            {**_IMAGE_AE, "model.arch": "ae_l2", "loss.terms": ("im",), "loss.reconstruction": "mse"}, "AE-L2",
        ),
        Variant(
            "ae_ssim", "AE-SSIM", "table4",
            # scored by its SSIM map, as Bergmann et al. define the model (1 - local SSIM)
            {**_IMAGE_AE, "model.arch": "ae_ssim", "loss.terms": ("im",), "loss.reconstruction": "ssim",
             "eval.scoring": "aim_ssim"}, "AE-SSIM",
        ),
        Variant(
            "block_c_only", "HaloAE - Block C only", "table4",
            # fm is the normalised image here, half negative: no final ReLU, or that half is out of reach
            {**_IMAGE_AE, "model.arch": "block_c_only", "loss.terms": ("fm",), "model.decoder_final_relu": False},
            "Block C only",
        ),
        Variant("block_c_cnn", "HaloAE - Block C as CNN", "table4", {"model.arch": "block_c_cnn"}, "Block C as CNN (DFR)"),
        # ---- structural switches (Table 3 removes these parts together with their loss terms)
        Variant("no_image_decoder", "no image decoder (block D)", "structure",
                {**_NO_IMAGE_DECODER, "loss.terms": ("cls", "fm")}),
        Variant("no_classifier", "no classifier (block E)", "structure",
                {"model.classifier": False, "loss.terms": ("fm", "im"), "loss.weighting": "equal"}),
        # ---- attention kind
        Variant("attention_halo", "HaloNet attention (working)", "attention", {"model.attention": "halo"}),
        Variant("attention_legacy", "published attention (inverted mask)", "attention", {"model.attention": "legacy"}),
        Variant("attention_none", "no attention (convolutions only)", "attention", {"model.attention": "none"}),
    )
}  # fmt: skip


def preset_overrides(name: str) -> dict[str, Any]:
    """The dotted overrides of a preset; an unknown name is a one-line ``ConfigError``."""
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown {name!r}; valid: {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def variant_overrides(name: str) -> dict[str, Any]:
    """The dotted overrides of a variant; an unknown name is a one-line ``ConfigError``."""
    if name not in VARIANTS:
        raise ConfigError(f"variant: unknown {name!r}; valid: {', '.join(VARIANTS)}")
    return dict(VARIANTS[name].overrides)
