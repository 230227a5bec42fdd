# SPDX-License-Identifier: Apache-2.0
"""Anomaly maps and the image scorings of Table S1 (paper eq. 6, Sec. 4.1 and Fig. S1).

Raw maps (eq. 6, as the authors' ``inference.py`` computes it: the channel mean of the squared
error, a monotone function of the per-position L2 norm of the paper):

    A_fm = mean_c (fm - fm_hat)**2      (B, 1, h, w)   feature-map resolution (64x64)
    A_im = mean_c (im - im_hat)**2      (B, 1, S, S)   image resolution (256x256)
    A_im_SSIM = 1 - mean_c SSIM(im, im_hat)   (B, 1, S, S)   AE-SSIM's map (Bergmann et al., 2019:
                                        1 - the local SSIM, window 11, sigma 1.5; no post-processing)

Post-processing (Fig. S1, ``scores.py``), in this order and at the raw map's own resolution:

    _N       abs(A - mean_good_A)     mean_good_A = mean raw map of the train/good images (``fit``)
    +filter  3x3 Gaussian blur, sigma 0.8, reflect padding (cv2.GaussianBlur's border)

then every map is bilinearly upsampled (``align_corners=False``) to the image size. The authors
normalise and blur fm maps at 64x64 and only then resize them for evaluation; we keep that order.
Image score = mean of the map (``<scoring>``) or its max (``<scoring>_max``). Table S1's
``L_cls`` column is the classifier: its score is the softmax probability of class 1 (CutPaste-like);
the original instead ranked images by the cross-entropy against their *true* label, which uses the
test labels.

``eval.scoring`` picks the scoring reported without prefix (``pick_scoring``): ``auto`` is the
paper's ``afm_norm_filter`` where the model has it; the ``cls_only`` row of Table 3 uses ``cls``
(the paper's footnote 5) and AE-SSIM its SSIM map.

Defect 2 of the original: its "mean training map" came from the *test* set's good images. Here
``fit`` must be given maps of train/good images only; nothing from the test set is used.
cv2 with sigma 0 uses the fixed 3-tap kernel [1, 2, 1] / 4 (sigma about 0.85); a true Gaussian of
sigma 0.8 ([.239, .522, .239]) is used here, as the paper describes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from haloae.choices import AUTO_SCORING, SCORINGS
from haloae.losses import gaussian_window, ssim
from haloae.model import HaloAEOutput
from haloae.vocab import DEFAULT_SCORING as DEFAULT_SCORING  # the scoring evaluation reports unprefixed

SCORING_LABELS = {
    "cls": "L_cls",
    "aim_norm_filter": "A_im_N+filter",
    "aim_ssim": "1-SSIM_im",
    "afm": "A_fm",
    "afm_norm": "A_fm_N",
    "afm_norm_filter": "A_fm_N+filter",
}
MAP_SCORINGS = tuple(s for s in SCORINGS if s != "cls")
# the scorings of fm and fm_hat alone: the model's blocks D and E (im_hat, logits) are not needed
FM_SCORINGS = tuple(s for s in SCORINGS if s.startswith("afm"))


class ScoredBatch(NamedTuple):
    """Maps and image scores of one batch."""

    maps: dict[str, torch.Tensor]  # scoring -> (B, 1, S, S) anomaly map at image resolution
    scores: dict[str, torch.Tensor]  # scoring -> (B,) map mean; "<scoring>_max" -> (B,) map max; "cls" -> (B,)


# ---------------------------------------------------------------------- raw maps
def fm_error_map(fm: torch.Tensor, fm_hat: torch.Tensor) -> torch.Tensor:
    """Eq. 6: channel mean of the squared error, ``(B, C, h, w)`` x2 -> ``(B, 1, h, w)``."""
    if fm.shape != fm_hat.shape:
        raise ValueError(f"fm_error_map: fm {tuple(fm.shape)} and fm_hat {tuple(fm_hat.shape)} differ")
    return (fm - fm_hat).pow(2).mean(dim=1, keepdim=True)  # (B, 1, h, w)


def im_error_map(images: torch.Tensor, im_hat: torch.Tensor) -> torch.Tensor:
    """The image-space map: channel mean of the squared error, ``(B, 3, S, S)`` -> ``(B, 1, S, S)``.

    Also used for the image auto-encoders (AE-L2, AE-SSIM) of Table 4.
    """
    if images.shape != im_hat.shape:
        raise ValueError(f"im_error_map: images {tuple(images.shape)} and im_hat {tuple(im_hat.shape)} differ")
    return (images - im_hat).pow(2).mean(dim=1, keepdim=True)  # (B, 1, S, S)


def im_ssim_map(images: torch.Tensor, im_hat: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """AE-SSIM's anomaly map (Bergmann et al., 2019): ``1 - SSIM``, channel mean, ``(B, 3, S, S)`` -> ``(B, 1, S, S)``."""
    if images.shape != im_hat.shape:
        raise ValueError(f"im_ssim_map: images {tuple(images.shape)} and im_hat {tuple(im_hat.shape)} differ")
    return 1.0 - ssim(images, im_hat, window, sigma, reduction="none").mean(dim=1, keepdim=True)  # (B, 1, S, S)


def gaussian_blur(maps: torch.Tensor, size: int = 3, sigma: float = 0.8) -> torch.Tensor:
    """``size`` x ``size`` Gaussian blur of ``(B, 1, H, W)`` maps with reflect padding (cv2's default)."""
    if size == 1:
        return maps
    kernel = gaussian_window(size, sigma, dtype=maps.dtype, device=maps.device)[None, None]  # (1, 1, k, k)
    pad = size // 2
    channels = maps.shape[1]
    padded = F.pad(maps, (pad, pad, pad, pad), mode="reflect")  # (B, C, H + 2p, W + 2p)
    return F.conv2d(padded, kernel.expand(channels, 1, size, size), groups=channels)  # (B, C, H, W)


def available_scorings(out: HaloAEOutput) -> tuple[str, ...]:
    """The scorings a model output supports: ``cls`` needs logits, ``aim_*`` im_hat, ``afm*`` fm and fm_hat."""
    names = []
    if out.logits is not None:
        names.append("cls")
    if out.im_hat is not None:
        names += ["aim_norm_filter", "aim_ssim"]
    if out.fm is not None and out.fm_hat is not None:
        names += ["afm", "afm_norm", "afm_norm_filter"]
    return tuple(names)


def pick_scoring(available: Sequence[str], requested: str = AUTO_SCORING) -> str | None:
    """The scoring reported without prefix (``eval.scoring``): ``requested`` when the model has it;
    for ``auto`` the paper's (``DEFAULT_SCORING``) where available, else the first in sorted order.
    None when nothing is available; a requested scoring the model lacks is a ``ValueError``."""
    if requested != AUTO_SCORING:
        if requested not in available:
            raise ValueError(f"eval.scoring: the model does not report {requested!r}; it reports {', '.join(available)}")
        return requested
    if DEFAULT_SCORING in available:
        return DEFAULT_SCORING
    return min(available, default=None)


# ---------------------------------------------------------------------- scorer
class AnomalyScorer(nn.Module):
    """Turns a ``HaloAEOutput`` into the Table S1 anomaly maps and image scores.

    The mean raw maps of the train/good images are buffers (NaN until ``fit``, as anomalib's
    post-processor), so a fitted scorer travels with ``state_dict()`` and ``.to(device)``.

    Args:
        image_size (int): side S of the input images; every map is returned at S x S.
        filter_size (int): side of the Gaussian kernel of ``*_filter``. (default: 3)
        filter_sigma (float): its standard deviation. (default: 0.8)
    """

    mean_fm_map: torch.Tensor
    mean_im_map: torch.Tensor

    def __init__(self, image_size: int, filter_size: int = 3, filter_sigma: float = 0.8) -> None:
        super().__init__()
        if image_size < 1:
            raise ValueError(f"AnomalyScorer: image_size must be >= 1, got {image_size}")
        if filter_size < 1 or filter_size % 2 == 0:
            raise ValueError(f"AnomalyScorer: filter_size must be odd and >= 1, got {filter_size}")
        self.image_size = image_size
        self.filter_size = filter_size
        self.filter_sigma = filter_sigma
        # (1, 1, h, w) once fitted; a NaN scalar means "not fitted"
        self.register_buffer("mean_fm_map", torch.tensor(float("nan")))
        self.register_buffer("mean_im_map", torch.tensor(float("nan")))

    @property
    def fm_fitted(self) -> bool:
        return self.mean_fm_map.dim() == 4 and not bool(self.mean_fm_map.isnan().any())

    @property
    def im_fitted(self) -> bool:
        return self.mean_im_map.dim() == 4 and not bool(self.mean_im_map.isnan().any())

    # ------------------------------------------------------------------ fitting
    @staticmethod
    def raw_maps(out: HaloAEOutput, images: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(A_fm (B, 1, h, w) or None, A_im (B, 1, S, S) or None)`` at their native resolutions."""
        fm_map = fm_error_map(out.fm, out.fm_hat) if out.fm is not None and out.fm_hat is not None else None
        im_map = im_error_map(images, out.im_hat) if out.im_hat is not None else None
        return fm_map, im_map

    @torch.no_grad()
    def fit(
        self,
        raw_fm_maps: torch.Tensor | Sequence[torch.Tensor] | None,
        raw_im_maps: torch.Tensor | Sequence[torch.Tensor] | None = None,
    ) -> AnomalyScorer:
        """Store the mean raw maps of TRAIN/GOOD images (``(N, 1, h, w)`` or a list of batches).

        Only anomaly-free training images belong here (the paper's "training data"); the
        original used the test set's good images (defect 2), which leaks test data.
        """
        for name, maps in (("mean_fm_map", raw_fm_maps), ("mean_im_map", raw_im_maps)):
            if maps is None:
                continue
            stacked = torch.cat(list(maps)) if not isinstance(maps, torch.Tensor) else maps
            if stacked.dim() != 4 or stacked.shape[1] != 1 or stacked.shape[0] < 1:
                raise ValueError(
                    f"AnomalyScorer.fit: raw maps must be (N, 1, h, w) with N >= 1, got {tuple(stacked.shape)}"
                )
            mean = stacked.detach().double().mean(dim=0, keepdim=True)  # (1, 1, h, w)
            setattr(self, name, mean.to(device=getattr(self, name).device, dtype=torch.float32))
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # a fitted state has (1, 1, h, w) buffers where a fresh scorer has NaN scalars
        for name in ("mean_fm_map", "mean_im_map"):
            key = prefix + name
            if key in state_dict and state_dict[key].shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(state_dict[key], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ maps and scores
    def _upsample(self, maps: torch.Tensor) -> torch.Tensor:
        size = (self.image_size, self.image_size)
        if tuple(maps.shape[-2:]) == size:
            return maps
        return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)  # (B, 1, S, S)

    def _normalise(self, raw: torch.Tensor, mean: torch.Tensor, scoring: str) -> torch.Tensor:
        if mean.dim() != 4 or bool(mean.isnan().any()):
            source = "fm" if scoring.startswith("afm") else "im"
            raise ValueError(
                f"AnomalyScorer: scoring {scoring!r} needs the mean {source} anomaly map of the train/good images; "
                f"call fit() first (or ask only for un-normalised scorings, e.g. scorings=('afm',))"
            )
        if mean.shape[-2:] != raw.shape[-2:]:
            raise ValueError(
                f"AnomalyScorer: fitted mean map is {tuple(mean.shape[-2:])}, the raw maps are {tuple(raw.shape[-2:])}"
            )
        return (raw - mean.to(device=raw.device, dtype=raw.dtype)).abs()  # (B, 1, h, w)

    def _requested(self, out: HaloAEOutput, scorings: Sequence[str] | None) -> tuple[str, ...]:
        if scorings is None:
            return available_scorings(out)
        unknown = [s for s in scorings if s not in SCORINGS]
        if unknown:
            raise ValueError(f"AnomalyScorer: unknown scorings {unknown}; valid: {', '.join(SCORINGS)}")
        available = available_scorings(out)
        return tuple(s for s in scorings if s in available)

    @torch.no_grad()
    def maps(
        self, out: HaloAEOutput, images: torch.Tensor, scorings: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """scoring -> anomaly map ``(B, 1, S, S)`` for each requested map scoring the output supports.

        ``scorings=None`` asks for every available one. Scorings whose inputs are missing (no image
        decoder, no fm) are absent; ``cls`` has no map. Normalised scorings raise before ``fit``.
        """
        wanted = [s for s in self._requested(out, scorings) if s != "cls"]
        fm_raw, im_raw = self.raw_maps(out, images) if wanted else (None, None)
        result: dict[str, torch.Tensor] = {}
        for scoring in wanted:
            if scoring == "aim_ssim":
                assert out.im_hat is not None
                result[scoring] = im_ssim_map(images, out.im_hat)  # (B, 1, S, S), as Bergmann et al.: raw
                continue
            if scoring == "aim_norm_filter":
                assert im_raw is not None
                raw, mean = im_raw, self.mean_im_map
            else:
                assert fm_raw is not None
                raw, mean = fm_raw, self.mean_fm_map
            amap = raw
            if "_norm" in scoring:
                amap = self._normalise(raw, mean, scoring)
            if scoring.endswith("_filter"):
                amap = gaussian_blur(amap, self.filter_size, self.filter_sigma)
            result[scoring] = self._upsample(amap)  # (B, 1, S, S)
        return result

    @staticmethod
    def image_scores(
        maps: dict[str, torch.Tensor], logits: torch.Tensor | HaloAEOutput | None = None
    ) -> dict[str, torch.Tensor]:
        """``<scoring>`` = map mean and ``<scoring>_max`` = map max, each ``(B,)``; ``cls`` = p(class 1).

        ``logits`` ``(B, 2)`` (or the ``HaloAEOutput`` holding them) adds ``cls``; None leaves it out.
        """
        if isinstance(logits, HaloAEOutput):
            logits = logits.logits
        scores: dict[str, torch.Tensor] = {}
        for name, amap in maps.items():
            flat = amap.flatten(1)  # (B, S*S)
            scores[name] = flat.mean(dim=1)
            scores[f"{name}_max"] = flat.amax(dim=1)
        if logits is not None:
            scores["cls"] = torch.softmax(logits.detach().float(), dim=1)[:, 1]  # (B,)
        return scores

    @torch.no_grad()
    def score(self, out: HaloAEOutput, images: torch.Tensor, scorings: Sequence[str] | None = None) -> ScoredBatch:
        """Maps and image scores of every requested (default: available) scoring."""
        wanted = self._requested(out, scorings)
        maps = self.maps(out, images, [s for s in wanted if s != "cls"])
        return ScoredBatch(maps, self.image_scores(maps, out.logits if "cls" in wanted else None))

    def extra_repr(self) -> str:
        return (
            f"image_size={self.image_size}, filter={self.filter_size}x{self.filter_size} sigma {self.filter_sigma}, "
            f"fm_fitted={self.fm_fitted}, im_fitted={self.im_fitted}"
        )
