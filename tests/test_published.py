# SPDX-License-Identifier: Apache-2.0
"""The ``paper_published`` preset: the authors' reflection-padded VGG19 extractor against a port
written here from original-code-notes.md and the authors' ``FeatureExtraction/vgg19.py``."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from haloae.backbone import FeatureExtractor
from haloae.config import HaloAEConfig
from haloae.errors import ConfigError
from haloae.presets import PRESET_LABELS, PRESETS

LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu3_4")


def published_fm(convs: list[nn.Conv2d], x: torch.Tensor, image_size: int, pool: int = 4) -> torch.Tensor:
    """The authors' extractor, step by step: ReflectionPad2d(1) before every 3x3 conv (padding 0);
    relu1_1, relu2_1 and relu3_1 are returned after the pad that precedes the next conv (the ring),
    relu3_4 before the max-pool; then DFR: nearest resize to the image size, pool x pool mean."""
    pad = nn.ReflectionPad2d(1)

    def conv(i: int, t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, convs[i].weight, convs[i].bias)  # padding 0

    relu1_1 = pad(F.relu(conv(0, pad(x))))
    relu1_2 = F.relu(conv(1, relu1_1))
    relu2_1 = pad(F.relu(conv(2, pad(F.max_pool2d(relu1_2, 2)))))
    relu2_2 = F.relu(conv(3, relu2_1))
    relu3_1 = pad(F.relu(conv(4, pad(F.max_pool2d(relu2_2, 2)))))
    relu3_2 = pad(F.relu(conv(5, relu3_1)))
    relu3_3 = pad(F.relu(conv(6, relu3_2)))
    relu3_4 = F.relu(conv(7, relu3_3))
    maps = []
    for m in (relu1_1, relu2_1, relu3_1, relu3_4):
        resized = F.interpolate(m, size=(image_size, image_size), mode="nearest")
        unfolded = F.unfold(resized, kernel_size=pool, stride=pool)  # (B, C*p*p, L), as AvgFeatAGG2d
        b, c = m.shape[:2]
        maps.append(unfolded.view(b, c, pool * pool, -1).mean(2).view(b, c, image_size // pool, image_size // pool))
    return torch.cat(maps, dim=1)


@pytest.fixture(scope="module")
def extractors():
    torch.manual_seed(0)
    published = FeatureExtractor("vgg19", LAYERS, "random", image_size=64, pool=4, padding="reflect_published")
    zeros = FeatureExtractor("vgg19", LAYERS, "random", image_size=64, pool=4)
    zeros.net.load_state_dict(published.net.state_dict())
    return published, zeros


def test_reflect_published_extractor_matches_the_port(extractors):
    published, _ = extractors
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    convs = [m for m in published.net if isinstance(m, nn.Conv2d)]
    expected = published_fm(convs, x, 64)
    fm = published(x)
    assert fm.shape == expected.shape == (2, 704, 16, 16)
    torch.testing.assert_close(fm, expected, rtol=1e-5, atol=1e-5)


def test_the_padding_ring_reaches_fm(extractors):
    """The two extractors differ, and not only at the image border: the ring shifts relu1_1-3_1."""
    published, zeros = extractors
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    diff = (published(x) - zeros(x)).abs()[:, :, 2:-2, 2:-2]  # interior cells only
    assert float(diff[:, :448].mean()) > 10 * float(diff[:, 448:].mean())  # ringed maps vs relu3_4


def test_paper_published_is_the_published_model_and_paper_has_the_fix():
    published = HaloAEConfig.from_overrides("paper_published")
    assert (published.model.attention, published.model.backbone.padding) == ("legacy", "reflect_published")
    paper = HaloAEConfig.from_overrides("paper")
    assert (paper.model.attention, paper.model.backbone.padding) == ("halo", "zeros")
    assert PRESET_LABELS["paper_published"] == "HaloAE as published"
    assert PRESET_LABELS["paper"] == "HaloAE, attention fixed"
    assert set(PRESET_LABELS) == set(PRESETS)
    # everything else is the paper preset
    differs = {k for k, v in published.flatten().items() if paper.flatten()[k] != v}
    assert differs == {"preset", "model.attention", "model.backbone.padding", "cutpaste.image_jitter_at"}
    assert (published.cutpaste.image_jitter_at, paper.cutpaste.image_jitter_at) == ("full_size", "resized")


def test_paper_published_takes_every_variant():
    from haloae.presets import VARIANTS

    for name in VARIANTS:
        cfg = HaloAEConfig.from_overrides("paper_published", variant=name)
        assert cfg.model.backbone.padding == ("reflect_published" if cfg.model.backbone.name == "vgg19" else "zeros")


def test_reflect_published_needs_vgg19():
    with pytest.raises(ConfigError, match=r"^model.backbone.padding: reflect_published is the authors' VGG19"):
        HaloAEConfig.from_overrides("cpu", ["model.backbone.padding=reflect_published"])
    with pytest.raises(ConfigError, match=r"^model.backbone.padding: unknown 'same'"):
        HaloAEConfig.from_overrides("paper", ["model.backbone.padding=same"])
