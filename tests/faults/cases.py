# SPDX-License-Identifier: Apache-2.0
"""The fault suite's table: malformed sweep specs, ``--set`` overrides, datasets, checkpoints and
bundles, each a ``Case`` whose command must end in one ``Error:`` line naming the field or file.

Specs and spec overrides go through ``haloae sweep SPEC --dry-run`` (and a few through a real
``haloae sweep``: refused before Ray starts), config overrides through ``haloae config`` and
``haloae train``, datasets through ``haloae train`` (the data check comes before training: ``--out``
must stay absent) and the dry run, checkpoints through ``haloae evaluate`` and a resuming
``haloae train``, bundles through ``haloae predict``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image

from haloae.vocab import BEST_FILE, CHECKPOINT_FILE
from tests.faults.harness import CATEGORY, Artefacts, Case, Invocation
from tests.helpers.crafted import DAMAGES, damage, write_code_pickle

TINY_SET = ("--preset", "tiny", "--set", "model.backbone.weights=random", "--set", "train.epochs=1")
DELETE = object()  # a spec field to remove


# ---------------------------------------------------------------------- sweep specs
def _base_spec(a: Artefacts, folder: Path) -> dict[str, Any]:
    """A valid tiny definition on the artefacts' dataset; storage in the case's own folder."""
    return {
        "name": "fault",
        "data": {"root": str(a.data_root), "categories": [CATEGORY]},
        "preset": "tiny",
        "overrides": {"model.backbone.weights": "random", "train.epochs": 1, "train.steps_per_epoch": 2},
        "variants": ["haloae"],
        "seeds": [0],
        "search": {"algorithm": "grid", "space": {}},
        "resources": {"cpu": 0.5},
        "storage": str(folder / "sweeps"),
    }


def _sweep(spec: Path, folder: Path, names, extra=(), dry_run=True, max_seconds=60.0) -> Invocation:
    args = ["sweep", spec, *(["--dry-run"] if dry_run else []), *extra]
    return Invocation(args, [str(spec), *names], watch=[spec, folder / "sweeps"], max_seconds=max_seconds)


def spec_text(id: str, text: Callable[[str], str], *names: str, dry_run=True, max_seconds=60.0) -> Case:
    """A definition whose YAML text is ``text(valid YAML text)``."""

    def make(a: Artefacts, folder: Path) -> Invocation:
        spec = folder / "spec.yaml"
        spec.write_text(text(yaml.safe_dump(_base_spec(a, folder), sort_keys=False)))
        return _sweep(spec, folder, names, dry_run=dry_run, max_seconds=max_seconds)

    return Case(f"spec-{id}", "spec", make)


def spec_fields(id: str, fields: dict[str, Any], *names: str, dry_run=True) -> Case:
    """The valid definition with ``fields`` (dotted paths into the YAML; DELETE removes) changed."""

    def make(a: Artefacts, folder: Path) -> Invocation:
        raw = _base_spec(a, folder)
        for dotted, value in fields.items():
            *parents, last = dotted.split(".")
            node = raw
            for part in parents:
                node = node.setdefault(part, {})
            if value is DELETE:
                del node[last]
            else:
                node[last] = value(folder) if callable(value) else value
        spec = folder / "spec.yaml"
        spec.write_text(yaml.safe_dump(raw, sort_keys=False))
        return _sweep(spec, folder, names, dry_run=dry_run)

    return Case(f"spec-{id}", "spec", make)


def spec_file(id: str, write: Callable[[Path], Path], *names: str) -> Case:
    """A definition path that is not a readable YAML file (``write`` makes it)."""

    def make(a: Artefacts, folder: Path) -> Invocation:
        return _sweep(write(folder), folder, names)

    return Case(f"spec-{id}", "spec", make)


def _alias_bomb(text: str) -> str:
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(levels) + "\n" + text  # 9**10 values once expanded


def _folder_spec(folder: Path) -> Path:
    (folder / "dir.yaml").mkdir()
    return folder / "dir.yaml"


def _file_spec(folder: Path, data: bytes) -> Path:
    (folder / "spec.yaml").write_bytes(data)
    return folder / "spec.yaml"


def _storage_file(folder: Path) -> str:
    (folder / "taken").write_text("a file where the storage folder should be\n")
    return str(folder / "taken")


SPEC_CASES = [
    spec_text("yaml-syntax", lambda t: t + "search: {algorithm: grid\n", "invalid YAML", "line"),
    spec_text("yaml-tab", lambda t: t + "\tseeds: [1]\n", "invalid YAML"),
    spec_text("duplicate-key", lambda t: t + "name: again\n", "duplicate key 'name'"),
    spec_text("top-level-list", lambda t: "- name: fault\n", "top level"),
    spec_text("empty", lambda t: "", "empty sweep definition"),
    spec_text("only-comment", lambda t: "# nothing here\n", "empty sweep definition"),
    spec_text("alias-bomb", _alias_bomb, "aliases expand", max_seconds=2.0),
    spec_text("recursive-alias", lambda t: t + "description: &d [*d]\n", "alias"),
    spec_text("deep-nesting", lambda t: t + "description: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper"),
    spec_text("huge-integer", lambda t: t + "retries: " + "9" * 5000 + "\n", "cannot read the value"),
    spec_text(
        "inf-number", lambda t: t.replace("train.epochs: 1", "train.epochs: 1\n  optim.lr: .inf"), "optim.lr", "finite"
    ),
    spec_text(
        "1e400", lambda t: t.replace("train.epochs: 1", "train.epochs: 1\n  optim.lr: 1e400"), "optim.lr", "finite"
    ),
    spec_text("nan-number", lambda t: t.replace("cpu: 0.5", "cpu: .nan"), "resources.cpu", "finite"),
    spec_text("name-dotdot-real-run", lambda t: t.replace("name: fault", "name: '..'"), "name", dry_run=False),
    spec_fields("name-slash", {"name": "a/b"}, "name"),
    spec_fields("name-missing", {"name": DELETE}, "name", "required"),
    spec_fields("unknown-top-key", {"nmae": "x"}, "nmae", "unknown key"),
    spec_fields("unknown-nested-key", {"search.algoritm": "grid"}, "search.algoritm", "did you mean"),
    spec_fields("seeds-wrong-type", {"seeds": "zero"}, "seeds"),
    spec_fields("seeds-repeated", {"seeds": [0, 0]}, "seeds"),
    spec_fields("retries-negative", {"retries": -1}, "retries"),
    spec_fields("num-samples-text", {"search.num_samples": "many"}, "search.num_samples"),
    spec_fields("algorithm-unknown", {"search.algorithm": "bayes"}, "search.algorithm"),
    spec_fields("domain-not-mapping", {"search.space": {"model.block_size": 7}}, "search.space.model.block_size"),
    spec_fields("domain-unknown-key", {"search.space": {"model.blok_size": {"grid": [2, 4]}}}, "model.blok_size"),
    spec_fields(
        "domain-bad-bounds", {"search.space": {"optim.lr": {"loguniform": [1e-2, 1e-4]}}}, "search.space.optim.lr"
    ),
    spec_fields(
        "domain-empty-grid", {"search.space": {"model.block_size": {"grid": []}}}, "search.space.model.block_size"
    ),
    spec_fields("variant-unknown", {"variants": ["haloae", "nope"]}, "variants", "nope"),
    spec_fields("variants-empty", {"variants": []}, "variants"),
    spec_fields("category-unknown", {"data.categories": ["synth_nope"]}, "data.categories", "synth_nope"),
    spec_fields("preset-unknown", {"preset": "huge"}, "preset", "huge"),
    spec_fields("override-unknown-key", {"overrides.model.blok_size": 4}, "model.blok_size"),
    spec_fields(
        "override-bad-value", {"overrides": {"model.backbone.weights": "random", "train.epochs": 0}}, "train.epochs"
    ),
    spec_fields("objective-test-metric", {"objective": {"metric": "test/image_auroc"}}, "objective.metric"),
    spec_fields("data-root-missing", {"data.root": lambda f: str(f / "nowhere")}, "data.root", "nowhere"),
    spec_fields("storage-is-file", {"storage": _storage_file}, "storage", "taken"),
    spec_fields("storage-is-file-real-run", {"storage": _storage_file}, "storage", dry_run=False),
    spec_fields("resources-too-many-cpus", {"resources.cpu": 4096}, "resources.cpu", "4096"),
    spec_fields("resources-gpu-none-here", {"resources.gpu": 1}, "resources.gpu"),
    spec_fields("tracking-unreachable", {"mlflow.tracking_uri": "http://127.0.0.1:9"}, "mlflow.tracking_uri"),
    spec_file("missing-file", lambda f: f / "absent.yaml", "no such file"),
    spec_file("a-folder", _folder_spec, "is a directory"),
    spec_file("not-utf8", lambda f: _file_spec(f, b"name: \xff\xfe\n"), "UTF-8"),
    spec_file("over-1-mib", lambda f: _file_spec(f, b"#" * (2 << 20)), "MiB"),
]


# ---------------------------------------------------------------------- --set overrides
def config_set(id: str, args: tuple[str, ...], *names: str) -> Case:
    return Case(f"override-config-{id}", "override", lambda a, folder: Invocation(["config", *args], names))


def train_set(id: str, item: str, *names: str) -> Case:
    """``haloae train --set ITEM`` on valid data: refused before the data is read or OUT made."""

    def make(a: Artefacts, folder: Path) -> Invocation:
        out = folder / "out"
        args = ["train", "--data-root", a.data_root, "--category", CATEGORY, *TINY_SET, "--set", item, "--out", out]
        return Invocation(args, names, watch=[out])

    return Case(f"override-train-{id}", "override", make)


def spec_set(id: str, item: str, *names: str) -> Case:
    """``haloae sweep SPEC --dry-run --set ITEM`` on the valid definition."""

    def make(a: Artefacts, folder: Path) -> Invocation:
        spec = folder / "spec.yaml"
        spec.write_text(yaml.safe_dump(_base_spec(a, folder), sort_keys=False))
        return _sweep(spec, folder, names, extra=["--set", item])

    return Case(f"override-spec-{id}", "override", make)


def resume_set(id: str, item: str, *names: str) -> Case:
    """``haloae train --set ITEM`` resuming the valid run: a config its checkpoint does not fit."""

    def make(a: Artefacts, folder: Path) -> Invocation:
        out = shutil.copytree(a.run_dir, folder / "run")
        args = ["train", "--data-root", a.data_root, "--category", CATEGORY, *TINY_SET, "--set", item, "--out", out]
        return Invocation(args, [str(out / CHECKPOINT_FILE), *names], watch=[out])

    return Case(f"override-resume-{id}", "override", make)


OVERRIDE_CASES = [
    config_set("unknown-key", ("--set", "model.blok_size=4"), "model.blok_size", "did you mean"),
    config_set("no-equals", ("--set", "model.block_size"), "model.block_size"),
    config_set("wrong-type", ("--set", "model.block_size=big"), "model.block_size"),
    config_set("inf", ("--set", "optim.lr=.inf"), "optim.lr"),
    config_set("1e400", ("--set", "optim.lr=1e400"), "optim.lr"),
    config_set("nan", ("--set", "optim.lr=nan"), "optim.lr"),
    config_set("negative-lr", ("--set", "optim.lr=-1"), "optim.lr"),
    config_set("bad-choice", ("--set", "model.attention=magic"), "model.attention", "magic"),
    config_set("preset-unknown", ("--preset", "huge"), "huge"),
    config_set("variant-unknown", ("--variant", "nope"), "nope"),
    train_set("epochs-zero", "train.epochs=0", "train.epochs"),
    train_set("batch-text", "train.batch_size=two", "train.batch_size"),
    resume_set("other-widths", "model.encoder_widths=[24,8]", "model.encoder_widths"),
    spec_set("unknown-key", "nmae=x", "nmae"),
    spec_set("no-equals", "search.num_samples", "search.num_samples"),
    spec_set("num-samples-text", "search.num_samples=many", "search.num_samples"),
    spec_set("name-dotdot", "name=..", "name"),
    spec_set("cpu-inf", "resources.cpu=.inf", "resources.cpu"),
    spec_set("config-key-unknown", "overrides.model.blok_size=4", "model.blok_size"),
    spec_set("data-root-missing", "data.root=/nonexistent/mvtec", "data.root"),
    spec_set("not-a-mapping", "seeds.first=1", "seeds"),
]


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
                yaml.safe_dump({**_base_spec(a, folder), "data": {"root": str(root), "categories": [CATEGORY]}})
            )
            invocation = _sweep(spec, folder, shown)
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
    import dataclasses

    from tests.helpers.analysis import log_sweep

    def make(a: Artefacts, folder: Path) -> Invocation:
        run_dir, marker, out, storage = (
            shutil.copytree(a.run_dir, folder / "run"),
            folder / "code-ran",
            folder / "out",
            folder / "sweeps",
        )
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
    from haloae.bundle import _sha256

    def apply(bundle: Path, marker: Path) -> None:
        fault(bundle / name, marker)
        _manifest(lambda info: info["files"].__setitem__(name, _sha256(bundle / name)))(bundle, marker)

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

CASES = SPEC_CASES + OVERRIDE_CASES + DATASET_CASES + CHECKPOINT_CASES + BUNDLE_CASES

# Cases that still fail because their fix belongs to another module's owner: case id -> what must change
# where. The tests mark them xfail(strict=True): the day one is fixed, its entry must go.
_BUNDLE_MANIFEST = "haloae/bundle.py load_bundle: check bundle.json's fields (an object; threshold a finite number; "
_BUNDLE_MANIFEST += "scoring one the model has) as a BundleError naming bundle.json"
_RESUME = "haloae/train.py: a resumed checkpoint.pt whose weights do not fit the run's config must be a CheckpointError "
_RESUME += "naming it (read_resume_state, before the data is decoded), not load_state_dict's RuntimeError"
_FIGURES = "analysis/figures.py make_figures: load the run's best.pt (and score it) before writing any PNG into --out"
KNOWN_FAULTS = {
    "bundle-manifest-a-list": _BUNDLE_MANIFEST,
    "bundle-manifest-no-threshold": _BUNDLE_MANIFEST,
    "bundle-manifest-threshold-text": _BUNDLE_MANIFEST,
    "bundle-manifest-threshold-nan": _BUNDLE_MANIFEST,
    "bundle-manifest-unknown-scoring": _BUNDLE_MANIFEST,
    "bundle-weights-nan-rehashed": "analysis/predict.py predict_files: create --out only after predictor.predict succeeded",
    "checkpoint-resume-weights-misfit-config": _RESUME,
    "override-resume-other-widths": _RESUME,
    "checkpoint-figures-code-pickle": _FIGURES,
    "checkpoint-figures-overwritten": _FIGURES,
    "checkpoint-figures-nan-weights": _FIGURES,
}
