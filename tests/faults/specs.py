# SPDX-License-Identifier: Apache-2.0
"""Fault cases of sweep definitions and ``--set`` overrides.

Specs and spec overrides go through ``haloae sweep SPEC --dry-run`` (a few through a real ``haloae
sweep``: refused before Ray starts); config overrides through ``haloae config`` and ``haloae train``
(refused before the data is read: ``--out`` stays absent), or a resuming ``haloae train``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from haloae.vocab import CHECKPOINT_FILE
from tests.faults.harness import CATEGORY, Artefacts, Case, Invocation

TINY_SET = ("--preset", "tiny", "--set", "model.backbone.weights=random", "--set", "train.epochs=1")
DELETE = object()  # a spec field to remove


# ---------------------------------------------------------------------- sweep specs
def base_spec(a: Artefacts, folder: Path) -> dict[str, Any]:
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


def sweep_invocation(spec: Path, folder: Path, names, extra=(), dry_run=True, max_seconds=60.0) -> Invocation:
    args = ["sweep", spec, *(["--dry-run"] if dry_run else []), *extra]
    return Invocation(args, [str(spec), *names], watch=[spec, folder / "sweeps"], max_seconds=max_seconds)


def spec_text(id: str, text: Callable[[str], str], *names: str, dry_run=True, max_seconds=60.0) -> Case:
    """A definition whose YAML text is ``text(valid YAML text)``."""

    def make(a: Artefacts, folder: Path) -> Invocation:
        spec = folder / "spec.yaml"
        spec.write_text(text(yaml.safe_dump(base_spec(a, folder), sort_keys=False)))
        return sweep_invocation(spec, folder, names, dry_run=dry_run, max_seconds=max_seconds)

    return Case(f"spec-{id}", "spec", make)


def spec_fields(id: str, fields: dict[str, Any], *names: str, dry_run=True) -> Case:
    """The valid definition with ``fields`` (dotted paths into the YAML; DELETE removes) changed."""

    def make(a: Artefacts, folder: Path) -> Invocation:
        raw = base_spec(a, folder)
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
        return sweep_invocation(spec, folder, names, dry_run=dry_run)

    return Case(f"spec-{id}", "spec", make)


def spec_file(id: str, write: Callable[[Path], Path], *names: str) -> Case:
    """A definition path that is not a readable YAML file (``write`` makes it)."""

    def make(a: Artefacts, folder: Path) -> Invocation:
        return sweep_invocation(write(folder), folder, names)

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
        spec.write_text(yaml.safe_dump(base_spec(a, folder), sort_keys=False))
        return sweep_invocation(spec, folder, names, extra=["--set", item])

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
