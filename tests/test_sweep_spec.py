# SPDX-License-Identifier: Apache-2.0
"""Sweep definitions: every shipped YAML loads, malformed ones give one-line errors naming the
path, trial configs are built in the documented order, and the trial counts of the cost estimate."""

import pickle
from pathlib import Path

import pytest

from haloae.synth import generate
from sweeps.cost import estimate, format_trials
from sweeps.errors import SpecError
from sweeps.loading import load_spec, parse_spec
from sweeps.trials import build_config, count_trials, trial_grid, validate_trials

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
DEFINITIONS = sorted(SWEEPS.glob("*.yaml"))
PAPER_SCALE = [p for p in DEFINITIONS if p.stem != "smoke"]

BASE = """\
name: t
data: {synthetic: {categories: [synth_disc, synth_brick]}}
preset: tiny
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run from tmp_path, so that default storage (runs/sweeps) lands there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---------------------------------------------------------------------- shipped definitions
def test_the_definitions_are_all_there():
    assert {p.stem for p in DEFINITIONS} >= {
        "smoke", "paper_table3_loss", "paper_table4_arch", "block_halo", "kernel_sizes", "alpha_optuna", "attention",
    }  # fmt: skip


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: p.stem)
def test_every_definition_loads(path, in_tmp):
    spec = load_spec(path)
    assert spec.name == path.stem
    assert spec.source == path and spec.yaml_text == path.read_text()
    assert len(spec.sha256()) == 64
    assert spec.categories() and spec.epochs() >= 1
    cost = estimate(spec)
    assert cost.trials == count_trials(spec) >= 1 and cost.total_hours > 0
    assert format_trials(spec).startswith(f"{spec.name}: {cost.trials} trials")


def test_smoke_validates_without_its_data(in_tmp):
    spec = load_spec(SWEEPS / "smoke.yaml")
    assert not spec.data_root().exists()  # generating it is the runner's job
    trials = validate_trials(spec)
    assert trials == [
        {"variant": v, "category": c, "seed": s}
        for v in ("attention_halo", "attention_none")
        for c in ("synth_disc", "synth_brick")
        for s in (0, 1, 2)  # 6 (category, seed) pairs: the fewest a paired Wilcoxon test can pass at 0.05
    ]
    assert spec.preset == "cpu" and spec.resources.gpu == 0 and spec.scheduler.type == "fifo"
    assert spec.purpose == "measure"
    cost = estimate(spec)
    assert cost.device == "cpu" and cost.trials == 12
    assert cost.total_hours * 3600 < 600  # training steps only: the demo stays under ~8 minutes on 2 cores


def test_smoke_paths(in_tmp):
    spec = load_spec(SWEEPS / "smoke.yaml")
    sweep_dir = in_tmp / "runs" / "sweeps" / "smoke"
    assert spec.sweep_dir() == sweep_dir
    assert spec.data_root() == sweep_dir / "data"
    assert spec.tracking_uri() == f"sqlite:///{sweep_dir}/mlflow.db"
    assert spec.tracking_uri().startswith("sqlite:////")  # absolute: trials chdir
    assert spec.optuna_storage() == f"sqlite:///{sweep_dir}/optuna.db"
    assert spec.experiment_name() == "smoke"
    assert spec.data.synthetic.generate_kwargs()["categories"] == ["synth_disc", "synth_brick"]


@pytest.mark.parametrize("path", PAPER_SCALE, ids=lambda p: p.stem)
def test_paper_scale_dry_run_needs_the_data_root(path, in_tmp):
    spec = load_spec(path)
    assert spec.data.root == "/data/mvtec_ad" and spec.resources.gpu > 0
    assert estimate(spec).gpu_hours > 0
    with pytest.raises(SpecError) as info:
        validate_trials(spec)
    assert "data.root: /data/mvtec_ad: dataset root not found" in str(info.value)
    assert "--set data.root=" in str(info.value)


def test_paper_scale_dry_run_with_a_data_root(tmp_path, in_tmp):
    root = tmp_path / "mvtec"
    generate(root, ["synth_disc"], size=32, n_train=3, n_test_good=1, n_test_defect_per_type=1)
    spec = load_spec(SWEEPS / "paper_table4_arch.yaml", [f"data.root={root}", "data.categories=[synth_disc]"])
    assert spec.data_root() == root
    trials = validate_trials(spec)  # every Table 4 variant builds on the paper preset; the data scans
    assert [t["variant"] for t in trials[::3]] == spec.variants
    # a broken image is found by the dry run, not hours into the sweep
    next((root / "synth_disc" / "train" / "good").glob("*.png")).write_bytes(b"not a png")
    with pytest.raises(SpecError, match=r"data.categories \(synth_disc\): .*unreadable image"):
        validate_trials(spec)


def test_table3_counts():
    spec = load_spec(SWEEPS / "paper_table3_loss.yaml")
    assert len(spec.categories()) == 15 and spec.seeds == [0, 1, 2] and len(spec.variants) == 8
    assert count_trials(spec) == 8 * 15 * 3
    assert spec.epochs() == 251


def test_table_sweeps_measure_and_screens_confirm(in_tmp):
    """Tables measure (every cell to the full budget); the hyperparameter grids screen then confirm."""
    for name in ("paper_table3_loss", "paper_table4_arch", "attention", "smoke"):
        spec = load_spec(SWEEPS / f"{name}.yaml")
        assert spec.purpose == "measure" and spec.scheduler.type == "fifo" and spec.protocol is None, name
    for name in ("block_halo", "kernel_sizes"):
        spec = load_spec(SWEEPS / f"{name}.yaml")
        assert spec.purpose == "search" and spec.protocol.screen.scheduler.type == "asha", name
        assert spec.protocol.confirm.top_k == 3 and spec.protocol.confirm.seeds == [0, 1, 2], name
    alpha = load_spec(SWEEPS / "alpha_optuna.yaml")
    assert alpha.purpose == "search" and alpha.protocol is None


# ---------------------------------------------------------------------- malformed definitions
SYNTH = "synthetic: {categories: [synth_disc, synth_brick]}"
ON_ROOT = BASE.replace(SYNTH, "root: /x, categories: [bottle]")  # MVTec data that need not exist before the dry run
SEARCH = BASE + "purpose: search\n"  # a searching sweep: ASHA, random and optuna allowed
OPTUNA = SEARCH + "objective: {aggregate: mean}\nsearch: {algorithm: optuna, "  # + the rest of the search section
LR_GRID = "search: {space: {optim.lr: {grid: [0.001, 0.01]}}}\n"  # two configurations
CONFIRM = "protocol: {confirm: {top_k: 1}}\n"
MALFORMED = [
    # (case, yaml, dotted path in the message, another expected part)
    ("unknown top-level key", BASE + "serach: {}\n", "serach: unknown key; did you mean search?", "valid: name"),
    ("unknown nested key", BASE + "search: {spaec: {}}\n", "search.spaec: unknown key; did you mean space?", "valid:"),
    ("wrong type", BASE + "retries: three\n", "retries:", "valid integer; got 'three'"),
    ("negative retries", BASE + "retries: -1\n", "retries:", "greater than or equal to 0"),
    ("gpu fraction above 1", BASE + "resources: {gpu: 1.5}\n", "resources.gpu:", "from 0 to 1"),
    ("gpu fraction below 0", BASE + "resources: {gpu: -0.5}\n", "resources.gpu:", "from 0 to 1"),
    ("unknown config key in space", BASE + "search: {space: {model.blok_size: {grid: [2]}}}\n", "search.space.model.blok_size: unknown config key", "did you mean model.block_size?"),
    ("unknown config key in nested overrides", BASE + "overrides: {train: {epoch: 3}}\n", "overrides.train.epoch: unknown config key", "did you mean train.epochs?"),
    ("key given nested and dotted", BASE + "overrides: {train: {epochs: 3}, train.epochs: 4}\n", "overrides.train.epochs:", "given twice"),
    ("unknown variant", BASE + "variants: [haloae, halo]\n", "variants.1: unknown variant 'halo'", "did you mean haloae?"),
    ("grid with a continuous domain", BASE + "search: {algorithm: grid, space: {optim.lr: {loguniform: [1e-4, 1e-2]}}}\n", "search.space.optim.lr:", "grid search cannot draw from loguniform"),
    ("optuna with per_category", SEARCH + "search: {algorithm: optuna, space: {optim.lr: {loguniform: [1e-4, 1e-2]}}}\n", "objective.aggregate:", "set objective.aggregate: mean"),
    ("alpha without optuna", BASE + "search: {algorithm: random, alpha: {}}\n", "search.alpha:", "needs algorithm optuna"),
    ("sampler without optuna", BASE + "search: {sampler: tpe}\n", "search.sampler:", "only for algorithm optuna"),
    ("test metric as objective", BASE + "objective: {metric: test/image_auroc}\n", "objective.metric:", "not a validation metric"),
    ("unknown metric", BASE + "objective: {metric: val/image_aurok}\n", "objective.metric:", "did you mean val/image_auroc?"),
    ("invalid block size combination", BASE + "variants: [haloae, attention_legacy]\nsearch: {space: {model.block_size: {grid: [2, 4]}}}\n", "search.space.model.block_size: 4 cannot tile the encoded 6x6 map with legacy attention", "variant=attention_legacy"),
    ("block size too large", BASE + "search: {space: {model.block_size: {grid: [2, 40]}}}\n", "search.space.model.block_size: 40 cannot tile", "use at most 6"),
    ("bad override value", BASE + "overrides: {model.block_size: 100}\n", "overrides.model.block_size:", "cannot tile"),
    ("missing data root", BASE.replace(SYNTH, "root: /no/such/mvtec, categories: [bottle]"), "data.root: /no/such/mvtec: dataset root not found", "--set data.root="),
    ("bad YAML syntax", BASE + "search: {space: [\n  a: : b\n", "line 5: invalid YAML", "expected"),
    ("duplicate key", BASE + "preset: cpu\n", "line 4: duplicate key 'preset'", ""),
    ("unhashable key", BASE + "overrides: {[a]: 1}\n", "line 4: invalid YAML: found unhashable key", ""),
    ("integer beyond Python's digit limit", BASE + "retries: " + "9" * 5000 + "\n", "line 4: cannot read the value '999", "4300 digits"),
    ("empty space domain list", BASE + "search: {space: {model.block_size: {grid: []}}}\n", "search.space.model.block_size: grid needs a non-empty list", ""),
    ("domain is not a mapping", BASE + "search: {space: {model.block_size: 7}}\n", "search.space.model.block_size: expected a mapping with one of grid, choice, uniform, loguniform, int; got 7", ""),
    ("unknown domain", BASE + "search: {space: {model.halo_size: {grd: [1]}}}\n", "search.space.model.halo_size:", "did you mean grid?"),
    ("uniform bounds reversed", BASE + "search: {algorithm: random, space: {optim.lr: {uniform: [0.2, 0.1]}}}\n", "search.space.optim.lr:", "low < high"),
    ("unknown synthetic category", BASE.replace(SYNTH, "synthetic: {categories: [synth_disc]}, categories: [synth_disk]"), "data.categories.0: 'synth_disk' is not generated by data.synthetic", "did you mean synth_disc?"),
    ("unknown MVTec category", BASE.replace(SYNTH, "root: /x, categories: [botle]"), "data.categories.0: 'botle' is not an MVTec AD category", "did you mean bottle?"),
    ("both data sources", BASE.replace("{synthetic:", "{root: /x, synthetic:"), "data: give root", "not both"),
    ("unknown preset", BASE.replace("preset: tiny", "preset: tyni"), "preset: unknown preset 'tyni'", "valid: paper"),
    ("bad name", BASE.replace("name: t", "name: my sweep"), "name: use letters, digits", "got 'my sweep'"),
    ("name ..", BASE.replace("name: t", "name: '..'"), "name: use letters, digits", "got '..'"),
    ("name with a path separator", BASE.replace("name: t", "name: a/b"), "name: use letters, digits", "got 'a/b'"),
    ("missing name", BASE.replace("name: t\n", ""), "name: required", ""),
    ("fifo with asha knobs", BASE + "scheduler: {type: fifo, grace_period: 2}\n", "scheduler.grace_period:", "only for type asha"),
    ("asha max_t beyond epochs", SEARCH + "scheduler: {type: asha, max_t: 50}\n", "scheduler.max_t:", "exceeds train.epochs=2"),
    ("seed in the space", BASE + "search: {space: {train.seed: {grid: [1, 2]}}}\n", "search.space.train.seed:", "seeds"),
    ("alpha search with equal weights", OPTUNA.replace(BASE, BASE + "variants: [equal_weights]\n") + "alpha: {}}\n", "search.alpha:", "alpha schedule is unused"),
    ("scoring the variant does not have", BASE + "variants: [fm_im]\nobjective: {metric: val/cls/image_auroc}\n", "objective.metric:", "no cls scoring"),
    ("s3 storage without a tracking URI", ON_ROOT + "storage: s3://b/sweeps\n", "mlflow.tracking_uri:", "required when storage is remote"),
    ("gs storage without a tracking URI", ON_ROOT + "storage: gs://b/sweeps\n", "mlflow.tracking_uri:", "required when storage is remote (gs://b/sweeps)"),
    ("optuna grid sampler with a continuous domain", OPTUNA + "sampler: grid, space: {optim.lr: {uniform: [0.1, 0.2]}}}\n", "search.space.optim.lr:", "grid sampler cannot draw from uniform"),
    # measuring (the default) vs searching, and the two-stage protocol
    ("measuring sweep with asha", BASE + "scheduler: {type: asha}\n", "scheduler.type: asha stops trials early", "purpose: search"),
    ("measuring sweep with random search", BASE + "search: {algorithm: random, space: {optim.lr: {uniform: [0.1, 0.2]}}}\n", "search.algorithm: random draws configurations", "use grid, or purpose: search"),
    ("measuring sweep with optuna", BASE + "objective: {aggregate: mean}\nsearch: {algorithm: optuna, space: {optim.lr: {uniform: [0.1, 0.2]}}}\n", "search.algorithm: optuna draws configurations", "purpose: search"),
    ("unknown purpose", BASE + "purpose: table\n", "purpose:", "'measure' or 'search'"),
    ("protocol in a measuring sweep", BASE + LR_GRID + CONFIRM, "purpose: the two-stage protocol searches before it measures", "set purpose: search"),
    ("protocol with a top-level scheduler", SEARCH + LR_GRID + CONFIRM + "scheduler: {type: asha}\n", "scheduler: with a protocol", "protocol.screen.scheduler"),
    ("protocol with top-level seeds", SEARCH + LR_GRID + CONFIRM + "seeds: [0, 1]\n", "seeds: with a protocol", "protocol.confirm.seeds"),
    ("protocol screening random draws", SEARCH + "search: {algorithm: random, space: {optim.lr: {uniform: [0.1, 0.2]}}}\n" + CONFIRM, "search.algorithm: the protocol screens a grid", "got random"),
    ("protocol top_k beyond the grid", SEARCH + LR_GRID + "protocol: {confirm: {top_k: 3}}\n", "protocol.confirm.top_k: 3 exceeds the 2 configurations", ""),
    ("protocol without top_k", SEARCH + LR_GRID + "protocol: {confirm: {seeds: [0, 1]}}\n", "protocol.confirm.top_k: required", ""),
    ("protocol per category from mean", SEARCH + LR_GRID + "objective: {aggregate: mean}\nprotocol: {confirm: {top_k: 1, select: per_category}}\n", "protocol.confirm.select:", "objective.aggregate: per_category"),
    ("protocol screen grace beyond epochs", SEARCH + LR_GRID + "protocol: {screen: {scheduler: {type: asha, grace_period: 5}}, confirm: {top_k: 1}}\n", "protocol.screen.scheduler.grace_period: 5 exceeds max_t=2", ""),
    ("protocol confirm seeds repeated", SEARCH + LR_GRID + "protocol: {confirm: {top_k: 1, seeds: [0, 0]}}\n", "protocol.confirm.seeds.1: 0 is listed twice", ""),
    ("top level is a list", "- name\n- data\n", "expected a mapping of sweep settings", ""),
    # numbers that are not numbers: YAML's .inf and .nan, and 1e400 (a float overflows to inf)
    ("infinite learning rate", BASE + "overrides: {optim.lr: .inf}\n", "overrides.optim.lr: inf is not a finite number", ""),
    ("nan in a nested override", BASE + "overrides: {loss: {alpha: {cls: {c: .nan}}}}\n", "overrides.loss.alpha.cls.c: nan is not a finite number", ""),
    ("1e400 as a domain bound", BASE + "search: {algorithm: random, space: {optim.lr: {uniform: [0.1, 1e400]}}}\n", "search.space.optim.lr.uniform.1: inf is not a finite number", ""),
    ("nan as a grid value", BASE + "search: {space: {optim.lr: {grid: [0.1, .nan]}}}\n", "search.space.optim.lr.grid.1: nan is not a finite number", ""),
    ("infinite alpha range", OPTUNA + "alpha: {ranges: {c: [1, .inf]}}}\n", "search.alpha.ranges.c.1: inf is not a finite number", ""),
    ("infinite cpus", BASE + "resources: {cpu: .inf}\n", "resources.cpu: inf is not a finite number", ""),
    ("negative infinite gpu", BASE + "resources: {gpu: -.inf}\n", "resources.gpu: -inf is not a finite number", ""),
    ("infinite num_samples", BASE + "search: {num_samples: .inf}\n", "search.num_samples: inf is not a finite number", ""),
    ("infinite reduction factor", BASE + "scheduler: {type: asha, reduction_factor: 1e400}\n", "scheduler.reduction_factor: inf is not a finite number", ""),
]  # fmt: skip


@pytest.mark.parametrize("case,text,path,detail", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_definitions_give_one_line(case, text, path, detail, tmp_path, in_tmp):
    spec_file = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        validate_trials(load_spec(spec_file))  # load (schema, rules) then the dry run (combinations, data)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{spec_file}: ")
    assert path in message and detail in message


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match=r"nope.yaml: no such file$"):
        load_spec(tmp_path / "nope.yaml")


def test_spec_error_is_an_input_error():
    from haloae.errors import InputError

    assert issubclass(SpecError, InputError)
    err = pickle.loads(pickle.dumps(SpecError("a.yaml: x: y", "x")))  # Ray ships errors between processes
    assert str(err) == "a.yaml: x: y"


# ---------------------------------------------------------------------- loading
def test_set_overrides_the_definition(tmp_path, in_tmp):
    spec = load_spec(
        SWEEPS / "smoke.yaml",
        ["storage=/tmp/elsewhere", "search.num_samples=2", "overrides.train.epochs=5", "search.space.model.block_size={grid: [4, 7]}"],
    )
    assert spec.storage == "/tmp/elsewhere" and spec.sweep_dir() == Path("/tmp/elsewhere/smoke")
    assert spec.search.num_samples == 2 and spec.epochs() == 5
    assert spec.search.space["model.block_size"].values == (4, 7)
    assert spec.overrides["train.steps_per_epoch"] == 25  # the other overrides stay
    assert count_trials(spec) == 2 * 2 * 2 * 2 * 3  # samples x block sizes x variants x categories x seeds
    assert spec.sha256() != load_spec(SWEEPS / "smoke.yaml").sha256()
    with pytest.raises(SpecError, match=r"smoke.yaml: serach: unknown key"):
        load_spec(SWEEPS / "smoke.yaml", ["serach.num_samples=2"])
    with pytest.raises(SpecError, match=r"--set: .*key=value"):
        load_spec(SWEEPS / "smoke.yaml", ["storage"])


def test_relative_paths(tmp_path, monkeypatch):
    folder = tmp_path / "defs"
    folder.mkdir()
    spec_file = write(folder, "name: rel\ndata: {root: ../mvtec, categories: [bottle]}\nstorage: out\n")
    monkeypatch.chdir(tmp_path)
    spec = load_spec(spec_file)
    assert spec.data_root() == tmp_path / "mvtec"  # against the YAML's folder
    assert spec.sweep_dir() == tmp_path / "out" / "rel"  # against the current folder
    spec = load_spec(spec_file, ["data.root=here"])
    assert spec.data_root() == tmp_path / "here"  # typed on the command line: the current folder


def test_nested_overrides_and_numbers(tmp_path, in_tmp):
    text = SEARCH + "overrides: {train: {epochs: 1, batch_size: 3}, optim.lr: 1e-3}\nsearch: {algorithm: random, space: {optim.weight_decay: {loguniform: [1e-6, 1e-3]}}}\n"
    spec = load_spec(write(tmp_path, text))
    assert spec.overrides == {"train.epochs": 1, "train.batch_size": 3, "optim.lr": 0.001}  # 1e-3 is a number
    assert spec.search.space["optim.weight_decay"].values == (1e-6, 1e-3)


def test_identity_ignores_where_it_came_from(tmp_path, in_tmp):
    a = load_spec(SWEEPS / "smoke.yaml")
    b = load_spec(write(tmp_path, (SWEEPS / "smoke.yaml").read_text() + "\n# a comment\n", "copy.yaml"))
    assert a == b and hash(a) == hash(b) and a.sha256() == b.sha256()
    assert a.source != b.source and a.yaml_text != b.yaml_text
    again = pickle.loads(pickle.dumps(a))  # sent to Ray workers
    assert again == a and again.source == a.source
    assert parse_spec(a.model_dump(mode="json")) == a  # the canonical form loads back unchanged


# ---------------------------------------------------------------------- trial configs
def test_build_config_order(in_tmp):
    spec = load_spec(SWEEPS / "smoke.yaml", ["overrides.model.block_size=14"])
    cfg = build_config(spec, {"variant": "attention_none", "category": "synth_disc", "seed": 3})
    assert cfg.preset == "cpu" and cfg.variant == "attention_none" and cfg.model.attention == "none"
    assert cfg.train.epochs == 3 and cfg.model.block_size == 14 and cfg.train.seed == 3  # overrides, then seed
    sampled = build_config(spec, {"variant": "attention_halo", "seed": 0, "model.block_size": 4})
    assert sampled.model.block_size == 4 and sampled.model.attention == "halo"  # sampled over overrides


def test_build_config_errors_name_the_key(in_tmp):
    spec = load_spec(SWEEPS / "smoke.yaml")
    with pytest.raises(SpecError, match=r"search.space.model.block_size: 100 cannot tile .*\(trial: variant=attention_halo"):
        build_config(spec, {"variant": "attention_halo", "model.block_size": 100})
    with pytest.raises(SpecError, match=r"variants: a trial must name its variant"):
        build_config(spec, {"model.block_size": 4})
    with pytest.raises(SpecError, match=r"search.space.model.blocksize: unknown config key"):
        build_config(spec, {"variant": "attention_halo", "model.blocksize": 4})


def test_alpha_defaults_scale_with_epochs():
    spec = parse_spec({
        "name": "a", "data": {"synthetic": {}}, "preset": "cpu", "purpose": "search", "objective": {"aggregate": "mean"},
        "search": {"algorithm": "optuna", "alpha": {"mode": "midpoint_slope", "terms": ["cls"], "ranges": {"c": [4, 10]}}},
    })  # fmt: skip
    domains = spec.search.alpha.domains(spec.epochs())
    assert list(domains) == ["loss.alpha.cls.c", "loss.alpha.cls.d"]
    assert domains["loss.alpha.cls.c"].values == (4.0, 10.0)  # given
    assert domains["loss.alpha.cls.d"].kind == "loguniform"
    assert domains["loss.alpha.cls.d"].values == pytest.approx((5 / 20, 30 / 20))  # cpu preset: 20 epochs
    with pytest.raises(SpecError, match=r"search.alpha.ranges.a: not searched in mode midpoint_slope"):
        parse_spec({
            "name": "a", "data": {"synthetic": {}}, "purpose": "search", "objective": {"aggregate": "mean"},
            "search": {"algorithm": "optuna", "alpha": {"mode": "midpoint_slope", "ranges": {"a": [0, 1]}}},
        })  # fmt: skip


# ---------------------------------------------------------------------- trial counts
def counted(**search) -> int:
    raw = {
        "name": "n", "data": {"synthetic": {"categories": ["synth_disc", "synth_brick"]}}, "preset": "tiny",
        "variants": ["haloae", "attention_none"], "seeds": [0, 1], "purpose": "search", **search,
    }  # fmt: skip
    spec = parse_spec(raw)
    assert estimate(spec).trials == count_trials(spec)
    assert sum(r.trials for r in estimate(spec).rows) == pytest.approx(count_trials(spec))
    return count_trials(spec)


def test_trial_counts():
    # grid: variants x categories x seeds x every grid and choice value, x num_samples repeats
    assert counted() == 2 * 2 * 2
    grid = {"model.block_size": {"grid": [1, 2, 3]}, "model.halo_size": {"choice": [0, 1]}}
    assert counted(search={"space": grid}) == 8 * 3 * 2
    assert counted(search={"space": grid, "num_samples": 2}) == 8 * 3 * 2 * 2
    # random: num_samples draws per grid point; choice and continuous domains are drawn
    space = {**grid, "optim.lr": {"loguniform": [1e-4, 1e-2]}}
    assert counted(search={"algorithm": "random", "num_samples": 5, "space": space}) == 5 * 8 * 3
    # aggregate mean: categories and seeds run inside a trial
    assert counted(search={"algorithm": "random", "num_samples": 5, "space": space}, objective={"aggregate": "mean"}) == 5 * 2 * 3
    # optuna: num_samples trials, whatever it searches
    assert counted(search={"algorithm": "optuna", "num_samples": 7, "space": space}, objective={"aggregate": "mean"}) == 7


def test_trial_grid_rows():
    spec = parse_spec({
        "name": "g", "data": {"synthetic": {"categories": ["synth_disc"]}}, "preset": "tiny", "purpose": "search",
        "search": {"algorithm": "random", "space": {"model.block_size": {"grid": [1, 2]}, "optim.lr": {"uniform": [0.1, 0.2]}}},
    })  # fmt: skip
    assert trial_grid(spec) == [
        {"variant": "haloae", "category": "synth_disc", "seed": 0, "model.block_size": b} for b in (1, 2)
    ]
    listing = format_trials(spec)
    assert "drawn per trial: optim.lr uniform(0.1, 0.2)" in listing


def test_cost_estimate_gpu_hours_and_listing(in_tmp):
    spec = load_spec(SWEEPS / "paper_table3_loss.yaml")
    cost = estimate(spec)
    assert cost.device == "gpu" and cost.trials == 360
    assert cost.epochs_per_trial == 251
    assert cost.gpu_hours == pytest.approx(cost.total_hours * 0.5)
    assert "ASSUMED" in cost.basis  # no GPU measurement yet: said so
    assert [r.label for r in cost.rows] == spec.variants
    text = cost.format()
    assert "GPU-hours" in text and "360 trials x 251 epochs" in text
    assert "... and 340 more grid points" in format_trials(spec, limit=20)
    mean = estimate(load_spec(SWEEPS / "alpha_optuna.yaml"))
    assert mean.trials == 40 and mean.epochs_per_trial == 251 * 4  # 4 categories per trial


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_remote_storage_is_a_uri_for_every_scheme(scheme, tmp_path, in_tmp):
    spec = load_spec(SWEEPS / "paper_table4_arch.yaml", [f"storage={scheme}://bucket/sweeps", "mlflow.tracking_uri=http://10.0.0.1:5000"])
    assert not spec.local_storage()
    assert spec.sweep_dir() == f"{scheme}://bucket/sweeps/paper_table4_arch"  # a string, never a local Path("gs:/...")
    with pytest.raises(SpecError, match=r"data.root: /data/mvtec_ad: dataset root not found"):
        validate_trials(spec)  # storage is not checked on the local disk
    assert list(in_tmp.iterdir()) == []
