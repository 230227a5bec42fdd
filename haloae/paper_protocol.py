# SPDX-License-Identifier: Apache-2.0
"""The published evaluation, reproduced to measure its leak (``eval.protocol: paper``): leaky numbers only.

What the authors' ``inference.py`` / ``scores.py`` did (original-code-notes.md, defects 2 and 3),
each step a way test data reaches the number:

    normalisation map   the mean raw map of the *test* set's good images (honest: train/good)
    checkpoint choice   of the saved checkpoints (one every 10 epochs), the three last, the best by
                        *test* image AUROC (honest: best.pt by a validation metric)
    flipping            max(AUC, 1 - AUC), image and pixel (honest: a ranking below chance stays low)
    pixel AUROC         at 128 x 128, maps and masks bilinearly resized, anomalous where the mask > 0

Everything else is the run's own: its scoring (``eval.scoring``, the paper's A_fm_N+filter by
default) and image score (``eval.image_score``), so the gap to the honest numbers is the leak alone.
The numbers go under ``leaky/...`` keys only (``haloae.vocab``), never val/ or test/: nothing honest
changes, and objectives and export criteria refuse them (``leaky_refusal``).

    paper_checkpoint_epochs(epochs, every)        the epochs whose "saved checkpoint" is scored
    score_published(model, test, device, ...)     one model on the test set, as published
    paper_epoch_metrics(cfg, model, test, epoch, ...)  training: leaky/checkpoint/* at those epochs
    paper_final_metrics(history)                  the best of them by test image AUROC: leaky/test/*
    paper_run_metrics(cfg, out_dir)               the same from a run folder's checkpoint.pt (finish)

The checkpoint at epoch e is the model right after epoch e's training, scored in eval mode without
gradients: scoring it changes no weight, statistic or random stream of the run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from haloae.checkpoint import read_checkpoint
from haloae.config import HaloAEConfig
from haloae.data import EvalSet, normalize
from haloae.metrics import at_pixel_size, image_auroc, pixel_auroc
from haloae.model import HaloAE, HaloAEOutput
from haloae.scoring import AnomalyScorer, available_scorings, pick_scoring
from haloae.vocab import (
    CHECKPOINT_FILE,
    LEAKY_BEST_EPOCH,
    LEAKY_CHECKPOINT_IMAGE_AUROC,
    LEAKY_CHECKPOINT_PIXEL_AUROC,
    LEAKY_IMAGE_AUROC,
    LEAKY_PIXEL_AUROC,
)

PAPER_PROTOCOL = "paper"
PAPER_CHECKPOINTS = 3  # "the best of three checkpoints by test AUROC"
PAPER_PIXEL_SIZE = 128  # scores.py resizes maps and masks to 128 x 128


def paper_checkpoint_epochs(epochs: int, every: int) -> tuple[int, ...]:
    """The last ``PAPER_CHECKPOINTS`` epochs of a checkpoint every ``every`` epochs counted back from
    the last (251 epochs, every 10: 230, 240, 250, as the code's last three saves), ascending."""
    if epochs < 1 or every < 1:
        raise ValueError(f"paper_checkpoint_epochs: epochs and every must be >= 1, got {epochs} and {every}")
    return tuple(sorted(e for e in range(epochs - 1, -1, -every)[:PAPER_CHECKPOINTS]))


def flipped(auc: float) -> float:
    """``max(AUC, 1 - AUC)``: the published flip (an inverted ranking scores as a good one)."""
    return auc if math.isnan(auc) else max(auc, 1.0 - auc)


def subset(data: EvalSet, keep: torch.Tensor) -> EvalSet:
    """The images of ``data`` where ``keep`` ``(N,)`` is true."""
    index = keep.nonzero().flatten().tolist()
    return EvalSet(
        data.images[index], data.masks[index], data.labels[index],
        [data.defects[i] for i in index], [data.paths[i] for i in index],
    )  # fmt: skip


@torch.no_grad()
def _outputs(model: HaloAE, images01: torch.Tensor, device, batch_size: int) -> Iterator[tuple[torch.Tensor, HaloAEOutput]]:
    """(normalised images, output) per batch, in eval mode, in fp32 (the backbone runs inside)."""
    model.eval()
    for i in range(0, len(images01), batch_size):
        x = normalize(images01[i : i + batch_size]).to(device)
        yield x, model(x)


def score_published(
    model: HaloAE,
    test: EvalSet,
    device,
    batch_size: int = 16,
    *,
    map_from: EvalSet | None = None,
    flip: bool = True,
    pixel_size: int = PAPER_PIXEL_SIZE,
) -> dict[str, float]:
    """``{"image_auroc", "pixel_auroc"}`` of ``model`` on ``test`` as published: the normalisation map
    of ``map_from`` (default: test's own good images), flipped AUCs, pixels at ``pixel_size``.
    The keyword arguments turn single leaks off (bench/leak_audit.py attributes the inflation);
    ``pixel_auroc`` is absent for a scoring without a map (``cls``)."""
    good = map_from if map_from is not None else subset(test, test.labels == 0)
    scorer = AnomalyScorer(model.cfg.model.image_size).to(device)
    fm_maps, im_maps = [], []
    for x, out in _outputs(model, good.images, device, batch_size):
        fm_map, im_map = scorer.raw_maps(out, x)
        fm_maps += [fm_map.cpu()] if fm_map is not None else []
        im_maps += [im_map.cpu()] if im_map is not None else []
    scorer.fit(fm_maps or None, im_maps or None)
    scoring, maps, scores = None, [], []
    reduce = "_max" if model.cfg.eval.image_score == "max" else ""
    for x, out in _outputs(model, test.images, device, batch_size):
        scoring = scoring or pick_scoring(available_scorings(out), model.cfg.eval.scoring)
        batch_maps = scorer.maps(out, x, [scoring] if scoring != "cls" else [])
        batch_scores = scorer.image_scores(batch_maps, out)
        scores.append(batch_scores[scoring if scoring == "cls" else scoring + reduce].cpu())
        if scoring in batch_maps:
            maps.append(batch_maps[scoring].cpu())
    image = image_auroc(test.labels, torch.cat(scores))
    result = {"image_auroc": flipped(image) if flip else image}
    if maps:
        masks, all_maps = test.masks, torch.cat(maps)
        if pixel_size:
            masks, all_maps = at_pixel_size(masks, all_maps, pixel_size)
        pixel = pixel_auroc(masks, all_maps)
        result["pixel_auroc"] = flipped(pixel) if flip else pixel
    return result


def paper_epoch_metrics(
    cfg: HaloAEConfig, model: HaloAE, test: EvalSet, epoch: int, device, batch_size: int = 16
) -> dict[str, float]:
    """``leaky/checkpoint/*`` of this epoch's model when ``eval.protocol`` is paper and the epoch is
    one whose checkpoint the published protocol scores; ``{}`` otherwise (the honest default)."""
    if cfg.eval.protocol != PAPER_PROTOCOL or epoch not in paper_checkpoint_epochs(
        cfg.train.epochs, cfg.eval.paper_checkpoint_every
    ):
        return {}
    scored = score_published(model, test, device, batch_size)
    out = {LEAKY_CHECKPOINT_IMAGE_AUROC: scored["image_auroc"]}
    if "pixel_auroc" in scored:
        out[LEAKY_CHECKPOINT_PIXEL_AUROC] = scored["pixel_auroc"]
    return out


def paper_final_metrics(history: Sequence[dict[str, float]]) -> dict[str, float]:
    """Of the scored checkpoints in a run's per-epoch ``history``, the best by leaky test image
    AUROC (ties: the later): ``leaky/test/image_auroc``, ``leaky/test/pixel_auroc`` (that same
    checkpoint's) and ``leaky/best_epoch``; ``{}`` when no epoch was scored (honest runs)."""
    scored = [m for m in history if LEAKY_CHECKPOINT_IMAGE_AUROC in m and not math.isnan(m[LEAKY_CHECKPOINT_IMAGE_AUROC])]
    if not scored:
        return {}
    best = max(scored, key=lambda m: (m[LEAKY_CHECKPOINT_IMAGE_AUROC], m["epoch"]))
    out = {LEAKY_IMAGE_AUROC: best[LEAKY_CHECKPOINT_IMAGE_AUROC], LEAKY_BEST_EPOCH: float(best["epoch"])}
    if LEAKY_CHECKPOINT_PIXEL_AUROC in best:
        out[LEAKY_PIXEL_AUROC] = best[LEAKY_CHECKPOINT_PIXEL_AUROC]
    return out


def paper_run_metrics(cfg: HaloAEConfig, out_dir: str | Path) -> dict[str, float]:
    """``paper_final_metrics`` of the run in ``out_dir`` (its last checkpoint keeps every epoch's
    metrics, resumed runs included); ``{}`` for an honest run, without reading anything."""
    if cfg.eval.protocol != PAPER_PROTOCOL:
        return {}
    return paper_final_metrics(read_checkpoint(Path(out_dir) / CHECKPOINT_FILE, keys=("history",))["history"])
