# SPDX-License-Identifier: Apache-2.0
import pytest

from haloae.config import ConfigError, HaloAEConfig, config_keys
from haloae.presets import PRESETS, VARIANTS, preset_overrides, variant_overrides


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_builds(preset):
    assert HaloAEConfig.from_overrides(preset).preset == preset


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_builds_on_paper_and_cpu(name):
    for preset in ("paper", "cpu"):
        cfg = HaloAEConfig.from_overrides(preset, variant=name)
        assert cfg.variant == name
        flat = cfg.flatten()
        assert {key: flat[key] for key in VARIANTS[name].overrides} == VARIANTS[name].overrides


def test_registry_names_only_config_keys():
    keys = config_keys()
    for name, overrides in [*PRESETS.items(), *((v.name, v.overrides) for v in VARIANTS.values())]:
        unknown = set(overrides) - set(keys)
        assert not unknown, f"{name}: {unknown}"


def test_applying_a_preset_and_variant_leaves_the_registry_unchanged():
    before = {name: dict(p) for name, p in PRESETS.items()}
    HaloAEConfig.from_overrides("paper", {"model.block_size": 6}, variant="cls_fm")
    assert PRESETS == before and "model.block_size" not in VARIANTS["cls_fm"].overrides
    preset_overrides("tiny")["model.block_size"] = 99
    variant_overrides("fm_only")["loss.terms"] = ("cls",)
    assert PRESETS["tiny"]["model.block_size"] == 2 and VARIANTS["fm_only"].overrides["loss.terms"] == ("fm",)


def test_unknown_preset_and_variant():
    with pytest.raises(ConfigError, match=r"^preset: unknown 'huge'; valid: paper"):
        HaloAEConfig.from_overrides("huge")
    with pytest.raises(ConfigError, match=r"^variant: unknown 'nope'"):
        HaloAEConfig.from_overrides("paper", variant="nope")


def test_paper_published_jitters_at_full_size_and_paper_after_the_resize():
    assert HaloAEConfig.from_overrides("paper_published").cutpaste.image_jitter_at == "full_size"
    assert HaloAEConfig.from_overrides("paper").cutpaste.image_jitter_at == "resized"
    assert HaloAEConfig.from_overrides("paper_published").flatten()["cutpaste.image_jitter_at"] == "full_size"
    with pytest.raises(ConfigError) as err:
        HaloAEConfig.from_overrides("paper", {"cutpaste.image_jitter_at": "before"})
    assert str(err.value) == "cutpaste.image_jitter_at: unknown 'before'; valid: resized, full_size"
