# SPDX-License-Identifier: Apache-2.0
"""The validation rules of a ``HaloAEConfig``: the first broken one is a one-line ``ConfigError``.

Choices, geometry, stage tables and the cross-field constraints of the architectures, loss terms,
augmentation and optimiser.

``HaloAEConfig.__post_init__`` runs ``validate``; the message names the dotted key and says what
would be valid.
"""

from __future__ import annotations

from typing import NoReturn

from haloae.choices import (
    ARCHS,
    ATTENTION_KINDS,
    AUTO_SCORING,
    BACKBONE_STAGES,
    BACKBONES,
    DEVICES,
    EPOCH_METRICS,
    EVAL_PROTOCOLS,
    IMAGE_AE_ARCHS,
    IMAGE_SCORES,
    JITTER_STAGES,
    LOSS_TERMS,
    OPTIMIZERS,
    PADDINGS,
    PRECISIONS,
    RECONSTRUCTIONS,
    SCORINGS,
    VALIDATION_ANOMALIES,
    WEIGHTINGS,
    model_scorings,
)
from haloae.errors import ConfigError


def fail(key: str, msg: str) -> NoReturn:
    """Raise the one-line ``ConfigError`` ``"<key>: <msg>"``."""
    raise ConfigError(f"{key}: {msg}")


def _choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        fail(key, f"unknown {value!r}; valid: {', '.join(valid)}")


def validate(cfg) -> None:
    """Check every value of a ``HaloAEConfig``; the first problem raises a one-line ``ConfigError``
    naming its key. (The type is not imported: ``haloae.config`` imports this module.)"""
    m, bb = cfg.model, cfg.model.backbone
    _choice("model.arch", m.arch, ARCHS)
    _choice("model.backbone.name", bb.name, BACKBONES)
    _choice("model.attention", m.attention, ATTENTION_KINDS)
    _choice("loss.weighting", cfg.loss.weighting, WEIGHTINGS)
    _choice("loss.reconstruction", cfg.loss.reconstruction, RECONSTRUCTIONS)
    _choice("optim.name", cfg.optim.name, OPTIMIZERS)
    _choice("train.device", cfg.train.device, DEVICES)
    _choice("eval.image_score", cfg.eval.image_score, IMAGE_SCORES)
    _choice("train.precision", cfg.train.precision, PRECISIONS)
    _choice("eval.protocol", cfg.eval.protocol, EVAL_PROTOCOLS)
    _choice("eval.epoch_metrics", cfg.eval.epoch_metrics, EPOCH_METRICS)
    if cfg.eval.epoch_norm_images < 0:
        fail("eval.epoch_norm_images", f"must be >= 0 (0 = every train/good image), got {cfg.eval.epoch_norm_images}")
    if cfg.eval.paper_checkpoint_every < 1:
        fail("eval.paper_checkpoint_every", f"must be >= 1, got {cfg.eval.paper_checkpoint_every}")
    _choice("model.backbone.padding", bb.padding, PADDINGS)
    _choice("eval.scoring", cfg.eval.scoring, (AUTO_SCORING, *SCORINGS))
    reported = model_scorings(m)
    if cfg.eval.scoring not in (AUTO_SCORING, *reported):
        fail("eval.scoring", f"{m.arch} with these parts does not report {cfg.eval.scoring}; it reports {', '.join(reported)}")
    if cfg.eval.pixel_size < 0 or cfg.eval.pixel_size > m.image_size:
        fail("eval.pixel_size", f"must be 0 (the image size) or 1..{m.image_size}, got {cfg.eval.pixel_size}")
    if bb.padding == "reflect_published" and bb.name != "vgg19":
        fail("model.backbone.padding", f"reflect_published is the authors' VGG19 extractor; {bb.name} has only zeros")
    known = BACKBONE_STAGES[bb.name]
    for layer in bb.layers:
        if layer not in known:
            fail("model.backbone.layers", f"unknown layer {layer!r} for {bb.name}; valid: {', '.join(known)}")
    if bb.name != "none" and not bb.layers:
        fail("model.backbone.layers", f"at least one layer of {bb.name} is needed")
    if bb.name == "none" and bb.layers:
        fail("model.backbone.layers", "must be empty when model.backbone.name is none")
    if bb.pool < 1 or (bb.pool & (bb.pool - 1)):
        fail("model.backbone.pool", f"must be a power of two >= 1, got {bb.pool}")
    if bb.name == "none" and bb.pool != 1:
        fail("model.backbone.pool", "must be 1 when model.backbone.name is none (fm is the image)")
    if m.image_size < 8 or m.image_size % bb.pool:
        fail("model.image_size", f"must be >= 8 and a multiple of model.backbone.pool={bb.pool}, got {m.image_size}")
    for key in ("dim_head", "cae_latent_dim", "ae_latent_dim"):
        if getattr(m, key) < 1:
            fail(f"model.{key}", f"must be >= 1, got {getattr(m, key)}")
    if m.head_kernel < 1 or m.head_kernel % 2 == 0:
        fail("model.head_kernel", f"must be an odd size >= 1, got {m.head_kernel}")
    if cfg.code_size < 1:
        fail("model.head_kernel", f"{m.head_kernel} is larger than the {cfg.fm_size}x{cfg.fm_size} feature map")
    if m.block_size < 1:
        fail("model.block_size", f"must be >= 1, got {m.block_size}")
    if m.halo_size < 0:
        fail("model.halo_size", f"must be >= 0, got {m.halo_size}")
    side = cfg.code_size if m.arch != "block_c_only" else m.image_size - m.head_kernel + 1
    if m.block_size > side:
        fail("model.block_size", f"{m.block_size} cannot tile the encoded {side}x{side} map; use at most {side}")
    if m.attention == "legacy" and side % m.block_size:
        divisors = [d for d in range(1, side + 1) if side % d == 0]
        fail(
            "model.block_size",
            f"{m.block_size} cannot tile the encoded {side}x{side} map with legacy attention "
            f"(the published layer asserts divisibility); use one of {divisors}",
        )
    _stages("model.encoder", m.encoder_widths, m.encoder_heads, m.encoder_kernels, len(m.encoder_widths))
    n_dec = len(m.decoder_widths) + 1
    _stages("model.decoder", m.decoder_widths, m.decoder_heads, m.decoder_kernels, n_dec)
    if m.decoder_inner_widths and len(m.decoder_inner_widths) != n_dec:
        fail("model.decoder_inner_widths", f"needs {n_dec} entries (one per decoder stage) or none, got {len(m.decoder_inner_widths)}")
    if any(w < 1 for w in m.decoder_inner_widths):
        fail("model.decoder_inner_widths", "widths must be >= 1")
    if not m.image_decoder_widths or any(w < 1 for w in m.image_decoder_widths):
        fail("model.image_decoder_widths", "needs at least one width, each >= 1")
    if m.arch in IMAGE_AE_ARCHS and (m.image_size % 16):
        fail("model.image_size", f"{m.arch} halves the image 4 times: use a multiple of 16, got {m.image_size}")
    if m.arch in ("haloae", "block_c_cnn") and bb.name == "none":
        fail("model.backbone.name", f"{m.arch} reconstructs backbone features; none is only for block_c_only")
    if m.arch in (*IMAGE_AE_ARCHS, "block_c_only") and (m.image_decoder or m.classifier):
        key = "model.image_decoder" if m.image_decoder else "model.classifier"
        fail(key, f"{m.arch} has no blocks D and E: set model.image_decoder=false and model.classifier=false")
    if m.arch == "block_c_only" and bb.name != "none":
        fail("model.backbone.name", "block_c_only reconstructs the image itself: set model.backbone.name=none")
    # loss
    if not cfg.loss.terms:
        fail("loss.terms", f"at least one of {', '.join(LOSS_TERMS)}")
    for term in cfg.loss.terms:
        _choice("loss.terms", term, LOSS_TERMS)
    if len(set(cfg.loss.terms)) != len(cfg.loss.terms):
        fail("loss.terms", f"repeated term in {list(cfg.loss.terms)}")
    has_im = m.image_decoder and m.arch not in ("block_c_only",)
    if "im" in cfg.loss.terms and not has_im and m.arch not in IMAGE_AE_ARCHS:
        fail("loss.terms", "im needs the image decoder (model.image_decoder=true)")
    if "cls" in cfg.loss.terms and not m.classifier:
        fail("loss.terms", "cls needs the classifier (model.classifier=true)")
    if m.classifier_detach and m.classifier and not set(cfg.loss.terms) & {"fm", "im"}:
        fail("model.classifier_detach", f"with loss.terms {','.join(cfg.loss.terms)} nothing would train the auto-encoder; set it false")
    if "cls" in cfg.loss.terms and not cfg.cutpaste.enabled:
        fail("loss.terms", "cls needs CutPaste (cutpaste.enabled=true): it classifies originals vs CutPaste")
    if m.arch in IMAGE_AE_ARCHS and tuple(cfg.loss.terms) != ("im",):
        fail("loss.terms", f"{m.arch} is an image auto-encoder: use [im]")
    if m.arch == "block_c_only" and tuple(cfg.loss.terms) != ("fm",):
        fail("loss.terms", "block_c_only reconstructs the image as its feature map: use [fm]")
    if cfg.loss.ssim_window < 1 or cfg.loss.ssim_window % 2 == 0:
        fail("loss.ssim_window", f"must be odd and >= 1, got {cfg.loss.ssim_window}")
    if cfg.loss.ssim_sigma <= 0:
        fail("loss.ssim_sigma", f"must be > 0, got {cfg.loss.ssim_sigma}")
    # augmentation
    cp = cfg.cutpaste
    lo, hi = cp.area_ratio
    if not 0 < lo <= hi < 1:
        fail("cutpaste.area_ratio", f"needs 0 < low <= high < 1, got {cp.area_ratio}")
    if not 0 < cp.aspect_ratio <= 1:
        fail("cutpaste.aspect_ratio", f"must be in (0, 1], got {cp.aspect_ratio}")
    for key in ("scar_width", "scar_height"):
        a, b = getattr(cp, key)
        if not 1 <= a <= b:
            fail(f"cutpaste.{key}", f"needs 1 <= low <= high, got {(a, b)}")
    _choice("cutpaste.image_jitter_at", cp.image_jitter_at, JITTER_STAGES)
    for key in ("patch_jitter", "image_jitter"):
        if not 0 <= getattr(cp, key) <= 0.5:
            fail(f"cutpaste.{key}", f"must be in [0, 0.5], got {getattr(cp, key)}")
    # optimiser and training
    if cfg.optim.lr <= 0:
        fail("optim.lr", f"must be > 0, got {cfg.optim.lr}")
    if cfg.optim.weight_decay < 0:
        fail("optim.weight_decay", f"must be >= 0, got {cfg.optim.weight_decay}")
    if not all(0 <= b < 1 for b in cfg.optim.betas):
        fail("optim.betas", f"each must be in [0, 1), got {cfg.optim.betas}")
    for key in ("epochs", "steps_per_epoch", "batch_size"):
        if getattr(cfg.train, key) < 1:
            fail(f"train.{key}", f"must be >= 1, got {getattr(cfg.train, key)}")
    if not 0 < cfg.train.val_fraction < 1:
        fail("train.val_fraction", f"must be in (0, 1), got {cfg.train.val_fraction}")
    if not cfg.train.val_anomalies:
        fail("train.val_anomalies", f"at least one of {', '.join(VALIDATION_ANOMALIES)}")
    for kind in cfg.train.val_anomalies:
        _choice("train.val_anomalies", kind, VALIDATION_ANOMALIES)


def _stages(prefix: str, widths, heads, kernels, n: int) -> None:
    if n < 1:
        fail(f"{prefix}_widths", "needs at least one stage")
    if len(heads) != n:
        fail(f"{prefix}_heads", f"needs {n} entries (one per stage), got {len(heads)}")
    if len(kernels) != n:
        fail(f"{prefix}_kernels", f"needs {n} entries (one per stage), got {len(kernels)}")
    if any(w < 1 for w in widths):
        fail(f"{prefix}_widths", f"widths must be >= 1, got {list(widths)}")
    if any(h < 1 for h in heads):
        fail(f"{prefix}_heads", f"heads must be >= 1, got {list(heads)}")
    if any(k < 1 or k % 2 == 0 for k in kernels):
        fail(f"{prefix}_kernels", f"kernel sizes must be odd and >= 1, got {list(kernels)}")
