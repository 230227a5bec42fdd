# SPDX-License-Identifier: Apache-2.0
"""``haloae sweep SPEC --dry-run`` on definitions that could hurt: each is one line on stderr, exit 2,
naming the field, before Ray starts and without writing anything; a valid dry run writes nothing."""

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from haloae.cli import main
from tests.helpers.imports import cli_in_fresh_interpreter
from tests.helpers.sweeps import tiny_spec
from tests.test_sweep_loading import billion_laughs

BASE = "name: t\ndata: {synthetic: {categories: [synth_disc]}}\npreset: tiny\n"
NEST = 5000


def dry_run(spec: Path, *args: str):
    return CliRunner().invoke(main, ["sweep", str(spec), "--dry-run", *args])


def read_only_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root ignores modes; /proc/1 is read-only even for root
        folder = Path("/proc/1")
        if not folder.is_dir() or os.access(folder, os.W_OK):
            pytest.skip("no folder this user cannot write")
    return folder


HARMFUL = [
    # (case, YAML after BASE, extra arguments ({tmp}: the test's folder), expected in the one line)
    ("alias bomb", billion_laughs(), [], "lols.l5.0): aliases expand the document beyond"),
    ("5000-deep lists", "overrides: {model.block_size: " + "[" * NEST + "]" * NEST + "}\n", [], "(overrides.model.block_size.0.0"),
    ("5000-deep mappings", "overrides: " + "{a: " * NEST + "1" + "}" * NEST + "\n", [], "(overrides.a.a.a"),
    ("infinite learning rate", "overrides: {optim.lr: .inf}\n", [], "overrides.optim.lr: inf is not a finite number"),
    ("nan learning rate by --set", "", ["--set", "overrides.optim.lr=.nan"], "overrides.optim.lr: nan is not a finite number"),
    ("1e400 domain bound", "search: {algorithm: random, space: {optim.lr: {loguniform: [1e-4, 1e400]}}}\n", [],
     "search.space.optim.lr.loguniform.1: inf is not a finite number"),
    ("nan num_samples", "search: {num_samples: .nan}\n", [], "search.num_samples: nan is not a finite number"),
    ("infinite alpha range", "objective: {aggregate: mean}\nsearch: {algorithm: optuna, alpha: {ranges: {d: [0.1, .inf]}}}\n", [],
     "search.alpha.ranges.d.1: inf is not a finite number"),
    ("infinite resources", "resources: {cpu: .inf}\n", [], "resources.cpu: inf is not a finite number"),
    ("name ..", "", ["--set", "name=.."], "name: use letters"),
    ("name with a path separator", "", ["--set", "name=../../etc"], "name: use letters"),
    ("storage is a file", "", ["--set", "storage={tmp}/a-file"], "storage: {tmp}/a-file (on the way to {tmp}/a-file/t) is a file"),
    ("storage under a file", "", ["--set", "storage={tmp}/a-file/deeper"], "storage: {tmp}/a-file (on the way to"),
    ("storage read-only", "", ["--set", "storage={read_only}/sweeps"], "storage: {read_only} (on the way to"),
    ("more CPUs than the machine", "resources: {cpu: 4096}\n", [], "resources.cpu: a trial needs 4096 CPUs but this machine has"),
    ("a GPU where none is visible", "resources: {gpu: 0.5}\n", [], "resources.gpu: a trial needs 0.5 of a GPU but this machine has none"),
]  # fmt: skip


@pytest.mark.parametrize("case,text,args,expected", HARMFUL, ids=[h[0] for h in HARMFUL])
def test_harmful_definition_is_one_line_and_exit_2(case, text, args, expected, tmp_path):
    if "GPU" in case and torch.cuda.device_count() > 0:
        pytest.skip("this machine has a GPU")
    (tmp_path / "a-file").write_text("not a folder")
    places = {"tmp": str(tmp_path), "read_only": str(read_only_folder(tmp_path)) if "read-only" in case else ""}
    storage = tmp_path / "store"
    spec = tmp_path / "harmful.yaml"
    spec.write_text(BASE + f"storage: {storage}\n" + text)
    result = dry_run(spec, *(a.format(**places) for a in args))
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {spec}: "), result.stderr
    assert expected.format(**places) in lines[0]
    assert "Traceback" not in result.output and "dry run:" not in result.output
    assert not storage.exists() and not (tmp_path / "runs").exists()


def test_dry_run_writes_nothing(tmp_path):
    spec = tiny_spec(tmp_path, "quiet")
    result = dry_run(spec)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith("dry run: every trial's configuration and the data are valid")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quiet.yaml"]  # no storage, no generated data


def test_a_cluster_address_turns_the_resources_check_into_a_warning(tmp_path):
    spec = tiny_spec(tmp_path, "big", resources={"cpu": 4096})
    result = dry_run(spec, "--address", "auto")
    assert result.exit_code == 0, result.output
    warning = result.stderr.splitlines()
    assert len(warning) == 1 and warning[0].startswith(f"Warning: {spec}: resources.cpu: a trial needs 4096 CPUs")
    assert "the cluster at auto must have them" in warning[0]
    assert not (tmp_path / "sweeps").exists()


@pytest.mark.slow
def test_alias_bomb_through_the_installed_command(tmp_path):
    """The real process, refused with bounded memory: under an 8 GiB address-space limit (importing torch
    maps about 4 GiB; expanding the bomb, as a message once did, needs far more)."""
    spec = tmp_path / "bomb.yaml"
    spec.write_text(BASE + f"storage: {tmp_path / 'store'}\n" + billion_laughs())
    haloae = Path(sys.executable).with_name("haloae")

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    result = subprocess.run([str(haloae), "sweep", str(spec), "--dry-run"], capture_output=True, text=True, timeout=300,
                            preexec_fn=limit_memory)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "aliases expand the document beyond" in result.stderr
    assert "Traceback" not in result.stderr and not result.stdout


def test_the_dry_run_imports_neither_torch_nor_mlflow_nor_ray(tmp_path):
    """A fresh interpreter's dry run of a spec on a real dataset's layout (scanned in full): the
    driver validates, prices and checks the tracking server without torch, torchvision, scikit-learn,
    MLflow or Ray, whose imports once made up most of its 6 s (now about 0.5 s)."""
    from haloae.synth import generate

    generate(tmp_path / "data", categories=["synth_disc"], size=32, n_train=3, n_test_good=2, n_test_defect_per_type=1)
    spec = tmp_path / "real.yaml"
    spec.write_text(f"name: t\ndata: {{root: {tmp_path / 'data'}, categories: [synth_disc]}}\npreset: tiny\n"
                    f"storage: {tmp_path / 'store'}\n")
    watched = ("torch", "torchvision", "sklearn", "mlflow", "ray")
    last_lines, done = cli_in_fresh_interpreter(["sweep", str(spec), "--dry-run"], watched, 120)
    assert last_lines == ["exit 0", "[]"], (done.stdout[-1500:], done.stderr[-1500:])
    assert "dry run: every trial's configuration and the data are valid" in done.stdout
    assert not (tmp_path / "store").exists()
