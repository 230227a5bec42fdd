# SPDX-License-Identifier: Apache-2.0
"""One category's data for a run: validated, split into train / validation / test, decoded once.

    prepare_data(cfg, root, category)   validate the folder first (``haloae.categories.scan_category``),
                                        split train/good into train and validation (held-out good
                                        images + synthetic anomalies made from them); test data is
                                        only ever *reported*
    CategoryData.to_state / from_state  the same as tensors and plain values (lists of str), what
                                        the per-node data cache stores (``sweeps.datacache``)
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from haloae.categories import GOOD, Sample, scan_category
from haloae.config import HaloAEConfig
from haloae.data import EvalSet, TrainDataset, load_eval_set, make_validation_set, split_train_val

_EVAL_SETS = ("train_good", "val", "test")


@dataclass
class CategoryData:
    category: str
    train: TrainDataset  # train/good minus the validation images, decoded once
    train_good: EvalSet  # the same images un-augmented: the normalisation map is fitted on them
    val: EvalSet  # held-out train/good + synthetic anomalies made from them
    test: EvalSet  # MVTec test split: reported, never used for any choice

    def to_state(self) -> dict[str, Any]:
        """Tensors and plain values only (loads with ``torch.load(..., weights_only=True)``)."""
        state: dict[str, Any] = {
            "category": self.category,
            "train": {"paths": [str(p) for p in self.train.paths], "images": self.train.images},
        }
        for name in _EVAL_SETS:
            evalset = getattr(self, name)
            state[name] = {f.name: getattr(evalset, f.name) for f in fields(EvalSet)}
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], cfg: HaloAEConfig) -> CategoryData:
        """Inverse of ``to_state``; ``cfg`` gives the augmentation (the cache key covers it)."""
        train = state["train"]
        samples = [Sample(Path(p), GOOD, None) for p in train["paths"]]
        return cls(
            category=state["category"],
            train=TrainDataset(samples, cfg.model.image_size, cfg.cutpaste, cfg.train.seed, images=train["images"]),
            **{name: EvalSet(**state[name]) for name in _EVAL_SETS},
        )


def prepare_data(cfg: HaloAEConfig, data_root: str | Path, category: str) -> CategoryData:
    """Scan and validate the category (fails before any training), then split and decode it."""
    files = scan_category(Path(data_root), category)
    size, seed = cfg.model.image_size, cfg.train.seed
    train, held_out = split_train_val(files.train, cfg.train.val_fraction, seed)
    return CategoryData(
        category=category,
        train=TrainDataset(train, size, cfg.cutpaste, seed),
        train_good=load_eval_set(train, size),
        val=make_validation_set(held_out, size, seed, cfg.train.val_anomalies),
        test=load_eval_set(files.test, size),
    )
