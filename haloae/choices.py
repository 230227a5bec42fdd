# SPDX-License-Identifier: Apache-2.0
"""The valid values of the configuration's enumerated knobs and the backbone layer tables (data only).

The config (``haloae.config``), its validation and the presets read them; the layers
(``haloae.attention``, ``haloae.backbone``) import them from here, so the config tree never imports
a layer module.
"""

from __future__ import annotations

ARCHS = ("haloae", "ae_l2", "ae_ssim", "block_c_only", "block_c_cnn")  # model.arch: the rows of Table 4
IMAGE_AE_ARCHS = ("ae_l2", "ae_ssim")  # Bergmann et al.'s image auto-encoders: no backbone, no fm
ATTENTION_KINDS = ("halo", "legacy", "none")  # model.attention
BACKBONES = ("vgg19", "efficientnet_lite0", "none")  # model.backbone.name
LOSS_TERMS = ("cls", "fm", "im")  # loss.terms
WEIGHTINGS = ("adaptive_logistic", "equal", "uncertainty")  # loss.weighting
RECONSTRUCTIONS = ("mse+ssim", "mse", "ssim")  # loss.reconstruction
OPTIMIZERS = ("adam", "adamw", "sgd")  # optim.name
DEVICES = ("auto", "cpu", "cuda")  # train.device
IMAGE_SCORES = ("mean", "max")  # eval.image_score
# train.precision: the training forward's autocast (haloae.precision; the losses are always fp32):
# auto = bf16 on CUDA, fp32 on the CPU; bf16 and fp32 are applied on any device
PRECISIONS = ("auto", "bf16", "fp32")
# eval.epoch_metrics: what each epoch computes (haloae.evaluation.EpochValidation): the objective and
# cheap AUROCs, or every Table S1 scoring and metric (the per-epoch evaluation before issue 15)
EPOCH_METRICS = ("objective", "full")
EVAL_PROTOCOLS = ("honest", "paper")  # eval.protocol: paper adds the published, leaky numbers (haloae.paper_protocol)
# cutpaste.image_jitter_at: ColorJitter on the image resized to the model's size (cheap), or on the
# decoded full-size image before the resize (the authors' order, paper_published)
JITTER_STAGES = ("resized", "full_size")
PADDINGS = ("zeros", "reflect_published")  # model.backbone.padding: torchvision's VGG19 | the authors' DFR copy
# Synthetic defect kinds (haloae.defects, haloae.realistic_defects). train.val_anomalies lists the
# kinds a validation set takes in turn: any of VALIDATION_ANOMALIES; the realistic ones by default.
CLASSIC_ANOMALIES = ("scratch", "hole", "stain", "perlin", "cutpaste")  # the synthetic categories' defects
REALISTIC_ANOMALIES = ("perlin_texture", "poisson_blend", "crack", "faint_stain")  # DRAEM-, NSA-like, cracks, stains
VALIDATION_ANOMALIES = CLASSIC_ANOMALIES + REALISTIC_ANOMALIES
# The Table S1 scorings (haloae.scoring), and AE-SSIM's own (Bergmann et al.: 1 - local SSIM);
# eval.scoring picks the one reported without prefix, "auto" the paper's where the model has it.
SCORINGS = ("cls", "aim_norm_filter", "aim_ssim", "afm", "afm_norm", "afm_norm_filter")
AUTO_SCORING = "auto"

# torchvision vgg19.features index of each ReLU output, and its channels
VGG19_RELUS: dict[str, tuple[int, int]] = {
    "relu1_1": (1, 64), "relu1_2": (3, 64),
    "relu2_1": (6, 128), "relu2_2": (8, 128),
    "relu3_1": (11, 256), "relu3_2": (13, 256), "relu3_3": (15, 256), "relu3_4": (17, 256),
    "relu4_1": (20, 512), "relu4_2": (22, 512), "relu4_3": (24, 512), "relu4_4": (26, 512),
    "relu5_1": (29, 512), "relu5_2": (31, 512), "relu5_3": (33, 512), "relu5_4": (35, 512),
}  # fmt: skip

# EfficientNet-Lite0 stage outputs: channels (stride is in haloae.efficientnet_lite.STAGES)
EFFICIENTNET_LITE0_CHANNELS: dict[str, int] = {
    "stem": 32, "stage1": 16, "stage2": 24, "stage3": 40, "stage4": 80, "stage5": 112, "stage6": 192, "stage7": 320,
}  # fmt: skip

BACKBONE_STAGES: dict[str, tuple[str, ...]] = {
    "vgg19": tuple(VGG19_RELUS),
    "efficientnet_lite0": tuple(EFFICIENTNET_LITE0_CHANNELS),
    "none": (),
}

# Default multi-scale layers per backbone (DFR: shallow + middle layers, no very deep ones).
BACKBONE_LAYERS: dict[str, tuple[str, ...]] = {
    "vgg19": ("relu1_1", "relu2_1", "relu3_1", "relu3_4"),  # 64+128+256+256 = 704 channels
    "efficientnet_lite0": ("stage1", "stage2", "stage3", "stage5"),  # 16+24+40+112 = 192 channels
    "none": (),  # the image itself is the "feature map" (Table 4, Block C only)
}


def layer_channels(backbone: str, layer: str) -> int:
    """Channels of one backbone layer's output (``relu3_4`` of ``vgg19``: 256)."""
    if backbone == "vgg19":
        return VGG19_RELUS[layer][1]
    if backbone == "efficientnet_lite0":
        return EFFICIENTNET_LITE0_CHANNELS[layer]
    raise ValueError(f"backbone {backbone!r} has no layer {layer!r}")


def feature_channels(backbone: str, layers: tuple[str, ...]) -> int:
    """Channels of fm: the layers' channels summed (704 for the paper's VGG19 layers), 3 for the image."""
    return sum(layer_channels(backbone, layer) for layer in layers) if layers else 3


def model_scorings(model) -> tuple[str, ...]:
    """The scorings a ``ModelConfig``'s model reports, in ``SCORINGS`` order: ``cls`` with the
    classifier, ``aim_*`` with an image reconstruction, ``afm*`` with a feature map (all but the
    image auto-encoders). (The type is not imported: ``haloae.config`` imports this module.)"""
    has = {
        "cls": model.classifier,
        "aim": model.image_decoder or model.arch in IMAGE_AE_ARCHS,
        "afm": model.arch not in IMAGE_AE_ARCHS,
    }
    return tuple(s for s in SCORINGS if has[s.split("_")[0]])
