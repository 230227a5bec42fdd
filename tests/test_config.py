# SPDX-License-Identifier: Apache-2.0
import pytest

from haloae.config import PRESETS, ConfigError, HaloAEConfig, parse_overrides
from haloae.variants import VARIANTS


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


def test_cpu_preset_standardises_features_it_can_reconstruct():
    cfg = HaloAEConfig.from_overrides("cpu")
    m = cfg.model
    assert m.backbone.name == "efficientnet_lite0" and m.backbone.standardize and not m.decoder_final_relu
    assert (cfg.optim.lr, cfg.eval.image_score) == (3e-3, "max")
    assert HaloAEConfig.from_overrides("paper_lean").model.backbone.standardize is False


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_builds(preset):
    assert HaloAEConfig.from_overrides(preset).preset == preset


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


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_builds_on_paper_and_cpu(name):
    for preset in ("paper", "cpu"):
        cfg = HaloAEConfig.from_overrides(preset, variant=name)
        assert cfg.variant == name


@pytest.mark.parametrize(
    "overrides,key,hint",
    [
        ({"model.block_size": 61}, "model.block_size", "cannot tile the encoded 60x60 map"),
        ({"model.attention": "legacy", "model.block_size": 7}, "model.block_size", "use one of [1, 2, 3, 4, 5, 6, 10"),
        ({"model.block_size": 0}, "model.block_size", ">= 1"),
        ({"model.halo_size": -1}, "model.halo_size", ">= 0"),
        ({"model.block_sise": 8}, "model.block_sise", "unknown config key"),
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
        ({"cutpaste.area_ratio": [0.3, 0.1]}, "cutpaste.area_ratio", "low <= high"),
        ({"train.epochs": 0}, "train.epochs", ">= 1"),
        ({"model.head_kernel": 99}, "model.head_kernel", "larger than the 64x64 feature map"),
        ({"eval.image_score": "median"}, "eval.image_score", "valid: mean, max"),
        ({"model.backbone.standardize": "yes"}, "model.backbone.standardize", "expected true or false"),
    ],
)
def test_invalid_values_fail_with_one_line_naming_the_key(overrides, key, hint):
    with pytest.raises(ConfigError) as err:
        HaloAEConfig.from_overrides("paper", overrides)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{key}: "), message
    assert hint in message, message


def test_unknown_preset_and_variant():
    with pytest.raises(ConfigError, match=r"^preset: unknown 'huge'; valid: paper"):
        HaloAEConfig.from_overrides("huge")
    with pytest.raises(ConfigError, match=r"^variant: unknown 'nope'"):
        HaloAEConfig.from_overrides("paper", variant="nope")


def test_override_syntax_error_names_the_item():
    with pytest.raises(ConfigError, match="model.block_size: overrides look like key=value"):
        parse_overrides(["model.block_size"])


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        HaloAEConfig().model.block_size = 3  # type: ignore[misc]
