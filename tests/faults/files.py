# SPDX-License-Identifier: Apache-2.0
"""Fault cases of files: datasets, checkpoints and bundles, each a copy of a valid artefact damaged.

Datasets go through ``haloae train`` (the data check comes before training: ``--out`` must stay
absent) and the sweep dry run; checkpoints through ``haloae evaluate``, a resuming ``haloae train``
and (slow: an MLflow store is written first) ``haloae export`` / ``haloae figures``; bundles through
``haloae predict``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image

from haloae.vocab import BEST_FILE, CHECKPOINT_FILE
from tests.faults.harness import CATEGORY, Artefacts, Case, Invocation, sha256_of
from tests.faults.specs import TINY_SET, base_spec, sweep_invocation
from tests.helpers.crafted import DAMAGES, damage, write_code_pickle


# ---------------------------------------------------------------------- datasets
def dataset(id: str, damage_fn: Callable[[Path], Any], *names: str, via_sweep=False) -> Case:
    """A copy of the valid dataset damaged by ``damage_fn(<copy>/synth_disc)``; the error names ``names``
    (paths relative to the category folder, or plain text)."""

    def make(a: Artefacts, folder: Path) -> Invocation:
        root = shutil.copytree(a.data_root, folder / "data")
        damage_fn(root / CATEGORY)
        shown = [str(root / CATEGORY / n) if "/" in n else n for n in names]
        if via_sweep:
            spec = folder / "spec.yaml"
            spec.write_text(
                yaml.safe_dump({**base_spec(a, folder), "data": {"root": str(root), "categories": [CATEGORY]}})
            )
            invocation = sweep_invocation(spec, folder, shown)
            return Invocation(invocation.args, invocation.names, [*invocation.watch, root])
        out = folder / "out"
        args = ["train", "--data-root", root, "--category", CATEGORY, *TINY_SET, "--out", out]
        return Invocation(args, shown, watch=[root, out])

    return Case(f"dataset-{id}{'-dry-run' if via_sweep else ''}", "dataset", make)


def _broken_png(path: Path) -> None:
    """A valid PNG header and IHDR, then garbage where the image data should be."""
    data = path.read_bytes()
    path.write_bytes(data[:40] + bytes(len(data) - 40))


def _replace_with_file(path: Path, folder: bool = False) -> None:
    """``path`` (a folder) replaced by a file, or by an empty folder."""
    shutil.rmtree(path)
    if folder:
        path.mkdir()
    else:
        path.write_text("a file where a folder should be\n")


def _resize_mask(path: Path) -> None:
    Image.open(path).resize((16, 16)).save(path)


MASK = "ground_truth/hole/000_mask.png"
DATASET_CASES = [
    dataset("category-missing", lambda c: shutil.rmtree(c), CATEGORY),
    dataset("train-good-missing", lambda c: shutil.rmtree(c / "train" / "good"), "train/good"),
    dataset("train-good-empty", lambda c: _replace_with_file(c / "train" / "good", folder=True), "train/good"),
    dataset("test-missing", lambda c: shutil.rmtree(c / "test"), "test"),
    dataset("broken-png-data", lambda c: _broken_png(c / "train/good/003.png"), "train/good/003.png"),
    dataset("broken-png-data", lambda c: _broken_png(c / "test/good/001.png"), "test/good/001.png", via_sweep=True),
    dataset("text-as-png", lambda c: (c / "train/good/001.png").write_text("not an image"), "train/good/001.png"),
    dataset("zero-byte-png", lambda c: (c / "test/hole/000.png").write_bytes(b""), "test/hole/000.png"),
    dataset("truncated-png", lambda c: damage(c / "test/stain/001.png", "truncated"), "test/stain/001.png"),
    dataset("mask-wrong-size", lambda c: _resize_mask(c / MASK), MASK),
    dataset("mask-wrong-size", lambda c: _resize_mask(c / MASK), MASK, via_sweep=True),
    dataset("mask-missing", lambda c: (c / MASK).unlink(), "test/hole/000.png"),
    dataset("ground-truth-missing", lambda c: shutil.rmtree(c / "ground_truth"), "ground_truth"),
    dataset("category-is-file", _replace_with_file, CATEGORY),
]


# ---------------------------------------------------------------------- checkpoints
def _damaged(how: str) -> Callable[[Path, Path], None]:
    return lambda path, marker: damage(path, how)


def _code_pickle(path: Path, marker: Path) -> None:
    write_code_pickle(path, marker, format="haloae-checkpoint", version=2)


def _nan_weights(path: Path, marker: Path) -> None:
    """A well-formed checkpoint (its sha256 recomputed) whose weights are NaN."""
    from haloae.checkpoint import DIGEST_KEY, read_checkpoint, save_checkpoint

    state = read_checkpoint(path)
    state["model"] = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state["model"].items()
    }
    save_checkpoint({k: v for k, v in state.items() if k != DIGEST_KEY}, path)


def _misfit_weights(path: Path, marker: Path) -> None:
    """A well-formed checkpoint (sha256 recomputed) whose first weight has one row too many for its config."""
    from haloae.checkpoint import DIGEST_KEY, read_checkpoint, save_checkpoint

    state = read_checkpoint(path)
    name, weight = next((k, v) for k, v in state["model"].items() if v.dim() > 1)
    state["model"][name] = torch.zeros(weight.shape[0] + 1, *weight.shape[1:])
    save_checkpoint({k: v for k, v in state.items() if k != DIGEST_KEY}, path)


CHECKPOINT_FAULTS: dict[str, Callable[[Path, Path], None]] = {
    "code-pickle": _code_pickle,
    **{how: _damaged(how) for how in DAMAGES},
    "json-file": lambda path, marker: path.write_text(json.dumps({"model": {}})),
    "holds-a-list": lambda path, marker: torch.save([torch.zeros(2)], path),
    "state-dict-only": lambda path, marker: torch.save({"weight": torch.zeros(2)}, path),
    "weights-misfit-config": _misfit_weights,
    "nan-weights": _nan_weights,
}


def evaluate_checkpoint(fault: str) -> Case:
    def make(a: Artefacts, folder: Path) -> Invocation:
        path, marker = shutil.copy(a.run_dir / BEST_FILE, folder / BEST_FILE), folder / "code-ran"
        CHECKPOINT_FAULTS[fault](Path(path), marker)
        args = ["evaluate", "--checkpoint", path, "--data-root", a.data_root, "--category", CATEGORY]
        return Invocation(args, [str(path)], watch=[Path(path), a.data_root], marker=marker)

    return Case(f"checkpoint-evaluate-{fault}", "checkpoint", make)


def resume_checkpoint(fault: str) -> Case:
    def make(a: Artefacts, folder: Path) -> Invocation:
        out, marker = shutil.copytree(a.run_dir, folder / "run"), folder / "code-ran"
        CHECKPOINT_FAULTS[fault](out / CHECKPOINT_FILE, marker)
        args = ["train", "--data-root", a.data_root, "--category", CATEGORY, *TINY_SET, "--out", out]
        return Invocation(args, [str(out / CHECKPOINT_FILE)], watch=[out], marker=marker)

    return Case(f"checkpoint-resume-{fault}", "checkpoint", make)


def logged_checkpoint(command: str, fault: str) -> Case:
    """``haloae export`` / ``haloae figures`` of a sweep in MLflow whose trial's best.pt artifact is damaged."""

    def make(a: Artefacts, folder: Path) -> Invocation:
        from tests.helpers.analysis import log_sweep  # imports mlflow: only for these cases

        run_dir = shutil.copytree(a.run_dir, folder / "run")
        marker, out, storage = folder / "code-ran", folder / "out", folder / "sweeps"
        CHECKPOINT_FAULTS[fault](run_dir / BEST_FILE, marker)
        logged = log_sweep(storage, "fault", [dataclasses.replace(a.trial, run_dir=run_dir)], None, a.data_root)
        args = [command, "--sweep", "fault", "--storage", storage, "--out", out]
        if command == "figures":
            args += ["--run", logged.trials[0].run_id]
        return Invocation(args, [logged.trials[0].run_id, BEST_FILE], watch=[storage, out], marker=marker)

    return Case(f"checkpoint-{command}-{fault}", "checkpoint", make, slow=True)


CHECKPOINT_CASES = (
    [evaluate_checkpoint(fault) for fault in CHECKPOINT_FAULTS]
    + [resume_checkpoint(fault) for fault in ("code-pickle", *DAMAGES, "holds-a-list", "weights-misfit-config")]
    + [
        logged_checkpoint(command, fault)
        for command in ("export", "figures")
        for fault in ("code-pickle", "overwritten", "nan-weights")
    ]
)


# ---------------------------------------------------------------------- bundles
def _manifest(edit: Callable[[dict], Any]) -> Callable[[Path, Path], None]:
    def apply(bundle: Path, marker: Path) -> None:
        info = json.loads((bundle / "bundle.json").read_text())
        edit(info)
        (bundle / "bundle.json").write_text(json.dumps(info))

    return apply


def _rehashed(fault: Callable[[Path, Path], None], name: str) -> Callable[[Path, Path], None]:
    """``fault`` applied to the bundle's ``name``, its sha256 in bundle.json updated to match: the
    damage must be caught by loading, not by the checksum."""

    def apply(bundle: Path, marker: Path) -> None:
        fault(bundle / name, marker)
        _manifest(lambda info: info["files"].__setitem__(name, sha256_of(bundle / name)))(bundle, marker)

    return apply


def _nan_state(path: Path, marker: Path) -> None:
    state = torch.load(path, weights_only=True)
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}, path)


BUNDLE_FAULTS: dict[str, tuple[Callable[[Path, Path], None], str]] = {  # fault -> (apply, file the error names)
    "no-manifest": (lambda b, m: (b / "bundle.json").unlink(), "bundle.json"),
    "no-weights": (lambda b, m: (b / "weights.pt").unlink(), "weights.pt"),
    "no-scorer": (lambda b, m: (b / "scorer.pt").unlink(), "scorer.pt"),
    "manifest-invalid-json": (lambda b, m: (b / "bundle.json").write_text("{not json"), "bundle.json"),
    "manifest-a-list": (lambda b, m: (b / "bundle.json").write_text("[1, 2]"), "bundle.json"),
    "manifest-wrong-format": (_manifest(lambda i: i.__setitem__("format", "other")), "bundle.json"),
    "manifest-no-threshold": (_manifest(lambda i: i.pop("threshold")), "bundle.json"),
    "manifest-threshold-text": (_manifest(lambda i: i.__setitem__("threshold", "high")), "bundle.json"),
    "manifest-threshold-nan": (_manifest(lambda i: i.__setitem__("threshold", float("nan"))), "bundle.json"),
    "manifest-unknown-scoring": (_manifest(lambda i: i.__setitem__("scoring", "magic")), "bundle.json"),
    "manifest-bad-config": (_manifest(lambda i: i["config"]["model"].__setitem__("arch", "magic")), "bundle.json"),
    **{f"weights-{how}": (lambda b, m, how=how: damage(b / "weights.pt", how), "weights.pt") for how in DAMAGES},
    "scorer-sha256-mismatch": (lambda b, m: damage(b / "scorer.pt", "overwritten"), "scorer.pt"),
    "weights-truncated-rehashed": (_rehashed(lambda p, m: damage(p, "truncated"), "weights.pt"), "weights.pt"),
    "weights-code-pickle-rehashed": (_rehashed(lambda p, m: write_code_pickle(p, m), "weights.pt"), "weights.pt"),
    "weights-nan-rehashed": (_rehashed(_nan_state, "weights.pt"), "non-finite"),
}


def bundle(fault: str) -> Case:
    def make(a: Artefacts, folder: Path) -> Invocation:
        target, marker, out = shutil.copytree(a.bundle, folder / "bundle"), folder / "code-ran", folder / "pred"
        apply, named = BUNDLE_FAULTS[fault]
        apply(target, marker)
        args = ["predict", "--model", target, a.image, "--out", out]
        return Invocation(args, [named], watch=[target, out], marker=marker)

    return Case(f"bundle-{fault}", "bundle", make)


BUNDLE_CASES = [bundle(fault) for fault in BUNDLE_FAULTS]
