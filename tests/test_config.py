# SPDX-License-Identifier: Apache-2.0
import pytest

import haloae.errors
from haloae.config import ConfigError, HaloAEConfig, config_keys, parse_overrides


def test_defaults_are_the_original_code():
    cfg = HaloAEConfig()
    m = cfg.model
    assert (m.image_size, cfg.fm_channels, cfg.fm_size, cfg.code_size) == (256, 704, 64, 60)
    assert (m.block_size, m.halo_size, m.dim_head, m.head_kernel) == (12, 2, 16, 5)
    assert m.encoder_widths == (234, 117, 58, 29) and m.encoder_heads == (4, 8, 8, 8)
    assert m.encoder_kernels == (3, 3, 5, 5) and m.decoder_kernels == (3, 3, 3, 5, 1)
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.train.batch_size) == (1e-4, 1e-5, 4)
    assert cfg.loss.alpha.cls.d == 0.07 and cfg.loss.alpha.im.c == 300
    # raw VGG19 features, the decoder's final ReLU, the map mean as image score: as the original
    assert not m.backbone.standardize and m.decoder_final_relu and cfg.eval.image_score == "mean"
    # today's scoring and pixel resolution, torchvision's VGG19; auto precision (bf16 on CUDA, fp32
    # losses), the honest evaluation
    assert (cfg.eval.scoring, cfg.eval.pixel_size, m.backbone.padding, cfg.train.precision) == ("auto", 0, "zeros", "auto")
    assert cfg.eval.protocol == "honest"


def test_cpu_preset_standardises_features_it_can_reconstruct():
    cfg = HaloAEConfig.from_overrides("cpu")
    m = cfg.model
    assert m.backbone.name == "efficientnet_lite0" and m.backbone.standardize and not m.decoder_final_relu
    assert (cfg.optim.lr, cfg.eval.image_score) == (3e-3, "max")
    assert m.classifier_detach and cfg.train.views_apart  # what makes its full loss score real defects
    paper = HaloAEConfig.from_overrides("paper")
    assert not paper.model.classifier_detach and not paper.train.views_apart  # the authors' training
    assert not HaloAEConfig.from_overrides("cpu", variant="cls_only").model.classifier_detach
    assert HaloAEConfig.from_overrides("paper_lean").model.backbone.standardize is False


def test_dotted_overrides_from_strings_and_dicts():
    cfg = HaloAEConfig.from_overrides(
        "paper", ["model.block_size=6", "model.attention=legacy", "loss.terms=[cls, fm]", "loss.alpha.cls.c=90"]
    )
    assert cfg.model.block_size == 6 and cfg.model.attention == "legacy"
    assert cfg.loss.terms == ("cls", "fm") and cfg.loss.alpha.cls.c == 90.0
    assert cfg.loss.alpha.cls.a == 1.0  # siblings keep their defaults
    same = HaloAEConfig.from_overrides("paper", {"model.block_size": 6, "model.attention": "legacy",
                                                 "loss.terms": ["cls", "fm"], "loss.alpha.cls.c": 90})
    assert same == cfg


def test_flatten_round_trips_and_names_every_knob_once():
    cfg = HaloAEConfig.from_overrides("cpu", variant="uncertainty_weighting")
    flat = cfg.flatten()
    assert flat["model.block_size"] == 7 and flat["loss.weighting"] == "uncertainty"
    assert flat["variant"] == "uncertainty_weighting" and flat["preset"] == "cpu"
    assert HaloAEConfig.from_dict(flat) == cfg
    assert HaloAEConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(**{"model.halo_size": 1}).model.halo_size == 1


@pytest.mark.parametrize(
    "overrides,key,hint",
    [
        ({"model.block_size": 61}, "model.block_size", "cannot tile the encoded 60x60 map"),
        ({"model.attention": "legacy", "model.block_size": 7}, "model.block_size", "use one of [1, 2, 3, 4, 5, 6, 10"),
        ({"model.block_size": 0}, "model.block_size", ">= 1"),
        ({"model.halo_size": -1}, "model.halo_size", ">= 0"),
        ({"model.block_sise": 8}, "model.block_sise", "unknown config key; did you mean model.block_size?"),
        ({"block_size": 8}, "block_size", "did you mean model.block_size"),
        ({"model.block_size": "big"}, "model.block_size", "expected an integer"),
        ({"model.block_size": 2.5}, "model.block_size", "expected an integer"),
        ({"model.attention": "global"}, "model.attention", "valid: halo, legacy, none"),
        ({"model.encoder_heads": [4, 8]}, "model.encoder_heads", "needs 4 entries"),
        ({"model.encoder_kernels": [3, 3, 4, 5]}, "model.encoder_kernels", "odd"),
        ({"model.backbone.layers": ["relu9_9"]}, "model.backbone.layers", "unknown layer 'relu9_9'"),
        ({"model.image_size": 250}, "model.image_size", "multiple of model.backbone.pool=4"),
        ({"loss.terms": ["cls", "pixels"]}, "loss.terms", "unknown 'pixels'"),
        ({"loss.terms": []}, "loss.terms", "at least one"),
        ({"loss.weighting": "magic"}, "loss.weighting", "adaptive_logistic, equal, uncertainty"),
        ({"model.image_decoder": False}, "loss.terms", "im needs the image decoder"),
        ({"model.classifier": "maybe"}, "model.classifier", "expected true or false"),
        ({"optim.lr": -1}, "optim.lr", "> 0"),
        ({"optim.lr": float("inf")}, "optim.lr", "must be a finite number, got inf"),
        ({"optim.lr": "nan"}, "optim.lr", "must be a finite number, got nan"),
        ({"optim.lr": 10**400}, "optim.lr", "must be a finite number"),
        ({"train.epochs": float("inf")}, "train.epochs", "expected an integer, got inf"),
        ({"model.block_size": float("nan")}, "model.block_size", "expected an integer, got nan"),
        ({"cutpaste.area_ratio": [0.3, 0.1]}, "cutpaste.area_ratio", "low <= high"),
        ({"train.epochs": 0}, "train.epochs", ">= 1"),
        ({"model.head_kernel": 99}, "model.head_kernel", "larger than the 64x64 feature map"),
        ({"eval.image_score": "median"}, "eval.image_score", "valid: mean, max"),
        ({"model.backbone.standardize": "yes"}, "model.backbone.standardize", "expected true or false"),
        ({"eval.scoring": "afm_max"}, "eval.scoring", "valid: auto, cls, aim_norm_filter, aim_ssim, afm"),
        ({"eval.scoring": "aim_ssim", "model.image_decoder": False, "loss.terms": ["cls", "fm"]}, "eval.scoring",
         "does not report aim_ssim; it reports cls, afm, afm_norm, afm_norm_filter"),
        ({"eval.pixel_size": 512}, "eval.pixel_size", "0 (the image size) or 1..256"),
        ({"eval.pixel_size": -1}, "eval.pixel_size", "0 (the image size) or 1..256"),
        ({"model.classifier_detach": True, "loss.terms": ["cls"]}, "model.classifier_detach",
         "with loss.terms cls nothing would train the auto-encoder"),
    ],
)
def test_invalid_values_fail_with_one_line_naming_the_key(overrides, key, hint):
    with pytest.raises(ConfigError) as err:
        HaloAEConfig.from_overrides("paper", overrides)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{key}: "), message
    assert hint in message, message


def test_override_syntax_error_names_the_item():
    with pytest.raises(ConfigError, match="model.block_size: overrides look like key=value"):
        parse_overrides(["model.block_size"])


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        HaloAEConfig().model.block_size = 3  # type: ignore[misc]


FLOAT_KEYS = [k for k, hint in config_keys().items() if hint is float or float in getattr(hint, "__args__", ())]


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("text", [".inf", "-.inf", ".nan", "1e400"])
def test_every_float_key_refuses_non_finite_numbers(key, text):
    default = HaloAEConfig().flatten()[key]
    value = f"[{text}, {text}]" if isinstance(default, tuple) else text
    with pytest.raises(ConfigError, match=rf"^{key}: must be a finite number, got (-?inf|nan)$"):
        HaloAEConfig.from_overrides("paper", [f"{key}={value}"])


def test_float_keys_cover_the_optimiser_alpha_and_cutpaste():
    assert {"optim.lr", "optim.betas", "loss.alpha.cls.c", "cutpaste.area_ratio", "train.val_fraction"} <= set(FLOAT_KEYS)


def test_a_key_given_nested_and_dotted_is_refused():
    with pytest.raises(ConfigError, match=r"^model.block_size: given twice"):
        HaloAEConfig.from_dict({"model": {"block_size": 6}, "model.block_size": 8})


def test_config_error_is_the_errors_module_input_error():
    assert ConfigError is haloae.errors.ConfigError and issubclass(ConfigError, haloae.errors.InputError)
