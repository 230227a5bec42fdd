# SPDX-License-Identifier: Apache-2.0
"""A trained HaloAE as a self-contained folder that scores new images, without Ray or MLflow.

    <dir>/weights.pt    the model's state dict (tensors only: loads with ``weights_only=True``)
    <dir>/scorer.pt     the AnomalyScorer's buffers: the mean anomaly maps of the train/good
                        images, i.e. the "_N" normalisation of Table S1
    <dir>/bundle.json   the HaloAEConfig (nested dict), image size, input normalisation (ImageNet
                        mean/std), the scoring, the decision threshold and how it was chosen, the
                        overlay colour range, category, source run id, metrics, and the sha256 of
                        weights.pt and scorer.pt (``files``): ``load_bundle`` refuses a bundle
                        whose files do not match, with one line naming the file

``load_bundle(dir).predict(images)`` applies the preprocessing of evaluation exactly (RGB, PIL
bilinear antialiased resize to S x S as ``haloae.images.load_image``, [0, 1], ``normalize``), runs
the model and returns a ``PredictResult``: image scores (N,), anomaly maps (N, S, S) and
decisions (N,) = score > threshold. The scoring is the one evaluation reports as ``image_auroc``:
``afm_norm_filter`` when the model has it, else the first available (``haloae.evaluation.evaluate``).
A non-finite score is a ``BundleError``, never a decision.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from haloae.checkpoint import CheckpointError, atomic_save, read_checkpoint, rebuild
from haloae.choices import AUTO_SCORING
from haloae.data import IMAGENET_MEAN, IMAGENET_STD, normalize
from haloae.errors import DatasetError, InputError
from haloae.images import load_image
from haloae.model import HaloAE
from haloae.scoring import AnomalyScorer, available_scorings, pick_scoring

FORMAT = "haloae-bundle"
VERSION = 2  # 1: without the files' sha256
WEIGHTS, SCORER, MANIFEST = "weights.pt", "scorer.pt", "bundle.json"
ImageLike = str | Path | Image.Image


class BundleError(InputError):
    """A bundle folder or an input image cannot be used; the message names the file."""


class PredictResult(NamedTuple):
    scores: torch.Tensor  # (N,) image anomaly scores (the bundle's scoring)
    maps: torch.Tensor | None  # (N, S, S) anomaly maps; None for the map-less ``cls`` scoring
    decisions: torch.Tensor  # (N,) bool: score > threshold


def choose_scoring(available: Sequence[str], requested: str = AUTO_SCORING) -> str:
    """The scoring evaluation reports without prefix (``scoring.pick_scoring`` of ``eval.scoring``)."""
    chosen = pick_scoring(available, requested)
    if chosen is None:
        raise BundleError("the model produces no anomaly scoring (no fm, image decoder or classifier)")
    return chosen


# ---------------------------------------------------------------------- images in
def read_image(source: ImageLike, size: int) -> torch.Tensor:
    """One image (a path or a PIL image) as float ``(3, size, size)`` in [0, 1], exactly as evaluation
    loads it (``haloae.images.load_image``: by its real bit depth, alpha dropped, bilinear antialiased
    resize). Unreadable files and unsupported modes raise ``BundleError`` naming the file."""
    try:
        return load_image(source, size)
    except DatasetError as exc:
        raise BundleError(str(exc)) from exc


def to_batch(images: Sequence[ImageLike] | torch.Tensor, size: int) -> torch.Tensor:
    """Images -> float ``(N, 3, size, size)`` in [0, 1]: a list of paths / PIL images, or a uint8
    ``(N, 3, H, W)`` (or ``(3, H, W)``) tensor, or a float one in [0, 1] already at ``size``."""
    if isinstance(images, torch.Tensor):
        batch = images[None] if images.dim() == 3 else images
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise BundleError(f"images: expected a (N, 3, H, W) tensor, got {tuple(images.shape)}")
        if batch.dtype == torch.uint8:
            if tuple(batch.shape[-2:]) == (size, size):
                return batch.float().div(255.0)
            return torch.stack([read_image(Image.fromarray(b.permute(1, 2, 0).cpu().numpy()), size) for b in batch])
        if tuple(batch.shape[-2:]) != (size, size):
            raise BundleError(f"images: a float tensor must already be {size}x{size} in [0, 1], got {tuple(batch.shape)}")
        return batch.float()
    if not len(images):
        raise BundleError("images: nothing to predict")
    return torch.stack([read_image(image, size) for image in images])


# ---------------------------------------------------------------------- the predictor
class Predictor:
    """Scores images with a trained model and its fitted scorer.

    Args:
        model (HaloAE): the trained model (put in eval mode here).
        scorer (AnomalyScorer): its fitted scorer (the normalisation maps).
        scoring (str | None): a Table S1 scoring; None picks ``choose_scoring`` of the model.
        threshold (float): decision threshold on the image score. (default: inf, nothing flagged)
        info (dict | None): the bundle's manifest, for callers (category, metrics, map_range...).
        batch_size (int): images per forward pass. (default: 16)
        source (str): what error messages call the model, e.g. its bundle folder. (default: "the model")
    """

    def __init__(self, model: HaloAE, scorer: AnomalyScorer, scoring: str | None = None, threshold: float = math.inf,
                 info: dict[str, Any] | None = None, batch_size: int = 16, source: str = "the model") -> None:  # fmt: skip
        self.model, self.scorer = model.eval(), scorer
        self.device = next(iter(model.parameters()), torch.empty(0)).device
        self.image_size = model.cfg.model.image_size
        available = self.available_scorings()
        if scoring is not None and scoring not in available:
            raise BundleError(f"scoring {scoring!r}: the model does not produce it; it has {', '.join(available)}")
        self.scoring = scoring or choose_scoring(available, model.cfg.eval.scoring)
        self.threshold = float(threshold)
        self.info = dict(info or {})
        self.batch_size = batch_size
        self.source = source

    @torch.no_grad()
    def available_scorings(self) -> tuple[str, ...]:
        s = self.image_size
        return available_scorings(self.model(torch.zeros(1, 3, s, s, device=self.device)))

    @torch.no_grad()
    def predict(self, images: Sequence[ImageLike] | torch.Tensor) -> PredictResult:
        """Scores, maps and decisions for images (paths, PIL images or a uint8 tensor); a NaN or
        infinite score (corrupted or diverged weights) is a ``BundleError``, not a decision."""
        batch = to_batch(images, self.image_size)  # (N, 3, S, S) in [0, 1]
        scores, maps = [], []
        for i in range(0, len(batch), self.batch_size):
            x = normalize(batch[i : i + self.batch_size]).to(self.device)
            out = self.model(x)
            batch_maps = self.scorer.maps(out, x, [self.scoring])  # scoring -> (B, 1, S, S); empty for cls
            scores.append(self.scorer.image_scores(batch_maps, out)[self.scoring].float().cpu())
            if self.scoring in batch_maps:
                maps.append(batch_maps[self.scoring][:, 0].float().cpu())  # (B, S, S)
        all_scores = torch.cat(scores)
        bad = int((~torch.isfinite(all_scores)).sum())
        if bad:
            raise BundleError(f"{self.source}: {bad} of {len(all_scores)} images got a non-finite {self.scoring} score "
                              "(NaN or inf: its weights are corrupted or diverged)")  # fmt: skip
        return PredictResult(all_scores, torch.cat(maps) if maps else None, all_scores > self.threshold)


# ---------------------------------------------------------------------- on disk
def save_bundle(checkpoint_path: str | Path, out_dir: str | Path, threshold: float, metadata: dict[str, Any] | None = None) -> Path:
    """Write a bundle from a ``haloae.train`` checkpoint (``best.pt``).

    ``metadata`` may hold ``scoring`` (default: ``choose_scoring``), ``threshold_method`` (how the
    threshold was chosen), ``map_range`` ((lo, hi) for overlays), ``category``, ``source_run_id``,
    ``metrics``; anything else is kept under ``metadata``.
    """
    ckpt = read_checkpoint(checkpoint_path, keys=("config", "model", "scorer"))
    model, scorer = rebuild(ckpt["config"], ckpt["model"], ckpt["scorer"], source=checkpoint_path)
    meta = dict(metadata or {})
    scoring = meta.pop("scoring", None) or Predictor(model, scorer).scoring
    map_range = meta.pop("map_range", None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_save(ckpt["model"], out / WEIGHTS)
    atomic_save(ckpt["scorer"], out / SCORER)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "config": ckpt["config"],
        "image_size": model.cfg.model.image_size,
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "preprocessing": "RGB; PIL bilinear (antialiased) resize to image_size; [0, 1]; (x - mean) / std",
        "scoring": scoring,
        "threshold": float(threshold),
        "threshold_method": meta.pop("threshold_method", "given"),
        "decision": "anomalous when score > threshold",
        "map_range": [float(v) for v in map_range] if map_range is not None else None,
        "category": meta.pop("category", ckpt.get("category")),
        "source_run_id": meta.pop("source_run_id", None),
        "epoch": ckpt.get("epoch"),
        "metrics": meta.pop("metrics", {}),
        "files": {name: _sha256(out / name) for name in (WEIGHTS, SCORER)},
        "metadata": meta,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=_json_default))
    return out


def load_bundle(path: str | Path, device: str | torch.device = "cpu", batch_size: int = 16) -> Predictor:
    """A ``Predictor`` from a bundle folder (tensors loaded with ``weights_only=True``)."""
    folder = Path(path)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{folder}: not a HaloAE bundle (no {MANIFEST})")
    try:
        info = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{manifest_path}: invalid JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise BundleError(f"{manifest_path}: expected a JSON object, got {type(info).__name__}")
    if info.get("format") != FORMAT or info.get("version") != VERSION:
        older = " (an older haloae's, without checksums: export it again)" if info.get("format") == FORMAT else ""
        raise BundleError(
            f"{manifest_path}: format {info.get('format')!r} v{info.get('version')}, expected {FORMAT!r} v{VERSION}{older}"
        )
    states = []
    for name in (WEIGHTS, SCORER):
        file = folder / name
        if not file.is_file():
            raise BundleError(f"{file}: missing (the bundle is incomplete)")
        if _sha256(file) != info.get("files", {}).get(name):
            raise BundleError(f"{file}: corrupted (its sha256 differs from the one in {MANIFEST})")
        try:
            states.append(read_checkpoint(file))
        except CheckpointError as exc:
            raise BundleError(str(exc)) from exc
    try:
        model, scorer = rebuild(info.get("config"), *states, device, source=manifest_path)
    except CheckpointError as exc:
        raise BundleError(str(exc)) from exc
    threshold = info.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise BundleError(f"{manifest_path}: threshold must be a finite number, got {threshold!r}")
    try:
        return Predictor(model, scorer, info.get("scoring"), threshold, info, batch_size, source=str(folder))
    except BundleError as exc:  # a scoring the model does not produce
        raise BundleError(f"{manifest_path}: {exc}") from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray, torch.Tensor)):
        return value.tolist()
    raise TypeError(f"bundle.json: cannot store {type(value).__name__}")
