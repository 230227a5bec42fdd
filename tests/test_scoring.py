# SPDX-License-Identifier: Apache-2.0
import math

import pytest
import torch
import torch.nn.functional as F

from haloae.config import HaloAEConfig
from haloae.data import EvalSet
from haloae.evaluation import evaluate, fit_scorer
from haloae.losses import gaussian_window, ssim
from haloae.metrics import at_pixel_size, pixel_auroc
from haloae.model import HaloAE, HaloAEOutput
from haloae.scoring import (
    DEFAULT_SCORING,
    SCORING_LABELS,
    SCORINGS,
    AnomalyScorer,
    available_scorings,
    fm_error_map,
    gaussian_blur,
    im_error_map,
    im_ssim_map,
    pick_scoring,
)


def _output(b=3, c=4, fm_side=8, image=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, image, image, generator=g)
    out = HaloAEOutput(
        fm=torch.randn(b, c, fm_side, fm_side, generator=g),
        code=None,
        fm_hat=torch.randn(b, c, fm_side, fm_side, generator=g),
        im_hat=torch.randn(b, 3, image, image, generator=g),
        logits=torch.randn(b, 2, generator=g),
    )
    return out, images


def _fitted(out, images, image=32):
    fm_map, im_map = AnomalyScorer.raw_maps(out, images)
    return AnomalyScorer(image).fit(fm_map, im_map)


def test_names_and_labels():
    assert DEFAULT_SCORING in SCORINGS
    assert [SCORING_LABELS[s] for s in SCORINGS] == [
        "L_cls", "A_im_N+filter", "1-SSIM_im", "A_fm", "A_fm_N", "A_fm_N+filter",
    ]


def test_raw_maps_are_channel_mean_squared_error():
    out, images = _output()
    fm_map = fm_error_map(out.fm, out.fm_hat)
    assert fm_map.shape == (3, 1, 8, 8)
    torch.testing.assert_close(fm_map[1, 0, 2, 5], ((out.fm[1, :, 2, 5] - out.fm_hat[1, :, 2, 5]) ** 2).mean())
    assert im_error_map(images, out.im_hat).shape == (3, 1, 32, 32)


def test_maps_have_image_resolution():
    out, images = _output()
    scorer = _fitted(out, images)
    maps = scorer.maps(out, images)
    assert set(maps) == {"aim_norm_filter", "aim_ssim", "afm", "afm_norm", "afm_norm_filter"}
    for amap in maps.values():
        assert amap.shape == (3, 1, 32, 32)
    # bilinear, align_corners=False, of the 8x8 raw map
    raw = fm_error_map(out.fm, out.fm_hat)
    torch.testing.assert_close(maps["afm"], F.interpolate(raw, size=(32, 32), mode="bilinear", align_corners=False))


def test_normalisation_uses_the_fitted_mean_map():
    # image_size = fm side: no resampling, so the expected maps are exact
    fm = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).sqrt().expand(1, 3, 2, 2)  # raw map = [[1, 2], [3, 4]]
    out = HaloAEOutput(fm=fm, code=None, fm_hat=torch.zeros_like(fm), im_hat=None, logits=None)
    images = torch.zeros(1, 3, 2, 2)
    train_maps = torch.tensor([[[[0.0, 4.0], [2.0, 2.0]]], [[[2.0, 0.0], [2.0, 10.0]]]])  # mean [[1, 2], [2, 6]]
    scorer = AnomalyScorer(image_size=2).fit(train_maps)
    torch.testing.assert_close(scorer.mean_fm_map, torch.tensor([[[[1.0, 2.0], [2.0, 6.0]]]]))
    maps = scorer.maps(out, images)
    torch.testing.assert_close(maps["afm"], torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]))
    torch.testing.assert_close(maps["afm_norm"], torch.tensor([[[[0.0, 0.0], [1.0, 2.0]]]]))
    # filter after normalisation, reflect padding (2x2 reflects onto itself)
    torch.testing.assert_close(maps["afm_norm_filter"], gaussian_blur(maps["afm_norm"], 3, 0.8))
    scores = scorer.image_scores(maps)
    torch.testing.assert_close(scores["afm_norm"], torch.tensor([0.75]))
    torch.testing.assert_close(scores["afm_norm_max"], torch.tensor([2.0]))


def test_filter_then_upsample_order():
    out, images = _output()
    scorer = _fitted(out, images)
    other, other_images = _output(seed=1)
    maps = scorer.maps(other, other_images)
    norm = (fm_error_map(other.fm, other.fm_hat) - scorer.mean_fm_map).abs()  # (B, 1, 8, 8)
    want = F.interpolate(gaussian_blur(norm), size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(maps["afm_norm_filter"], want)
    im_norm = (im_error_map(other_images, other.im_hat) - scorer.mean_im_map).abs()
    torch.testing.assert_close(maps["aim_norm_filter"], gaussian_blur(im_norm))


def test_gaussian_filter_is_3x3_and_sums_to_one():
    k = gaussian_window(3, 0.8)
    assert k.shape == (3, 3)
    assert math.isclose(float(k.sum()), 1.0, rel_tol=1e-6)
    g = torch.tensor([math.exp(-1 / (2 * 0.64)), 1.0, math.exp(-1 / (2 * 0.64))])
    torch.testing.assert_close(k, torch.outer(g, g) / g.sum() ** 2)
    delta = torch.zeros(1, 1, 7, 7)
    delta[0, 0, 3, 3] = 1.0
    torch.testing.assert_close(gaussian_blur(delta)[0, 0, 2:5, 2:5], k)  # impulse response = kernel
    const = torch.full((2, 1, 5, 6), 3.0)
    torch.testing.assert_close(gaussian_blur(const), const)  # reflect padding keeps constants


def test_unfitted_scorer_raises_for_normalised_scorings():
    out, images = _output()
    scorer = AnomalyScorer(32)
    assert not scorer.fm_fitted and not scorer.im_fitted
    with pytest.raises(ValueError, match="fit"):
        scorer.maps(out, images)
    with pytest.raises(ValueError, match="fit"):
        scorer.maps(out, images, scorings=("afm_norm",))
    assert set(scorer.maps(out, images, scorings=("afm",))) == {"afm"}
    with pytest.raises(ValueError, match="unknown scorings"):
        scorer.maps(out, images, scorings=("afm_typo",))


def test_missing_outputs_drop_scorings():
    out, images = _output()
    scorer = _fitted(out, images)
    no_decoder = out._replace(im_hat=None, logits=None)
    assert available_scorings(no_decoder) == ("afm", "afm_norm", "afm_norm_filter")
    assert set(scorer.maps(no_decoder, images)) == {"afm", "afm_norm", "afm_norm_filter"}
    image_ae = HaloAEOutput(fm=None, code=None, fm_hat=None, im_hat=out.im_hat, logits=None)
    assert set(scorer.score(image_ae, images).scores) == {"aim_norm_filter", "aim_norm_filter_max", "aim_ssim", "aim_ssim_max"}
    batch = scorer.score(out, images)
    assert set(batch.scores) == {"cls"} | {f"{s}{m}" for s in SCORINGS[1:] for m in ("", "_max")}
    torch.testing.assert_close(batch.scores["cls"], torch.softmax(out.logits, 1)[:, 1])
    # logits or the whole output
    assert set(scorer.image_scores({}, out)) == {"cls"}
    torch.testing.assert_close(scorer.image_scores({}, out.logits)["cls"], batch.scores["cls"])
    only_cls = scorer.score(out, images, scorings=("cls",))
    assert only_cls.maps == {} and set(only_cls.scores) == {"cls"}


def test_fitted_scorer_round_trips_through_state_dict():
    out, images = _output()
    scorer = _fitted(out, images)
    fresh = AnomalyScorer(32)
    fresh.load_state_dict(scorer.state_dict())
    assert fresh.fm_fitted and fresh.im_fitted
    for name, amap in scorer.maps(out, images).items():
        torch.testing.assert_close(fresh.maps(out, images)[name], amap)


def test_fit_accepts_batches_and_checks_shapes():
    out, images = _output(b=4)
    fm_map, _ = AnomalyScorer.raw_maps(out, images)
    a = AnomalyScorer(32).fit([fm_map[:1], fm_map[1:]])
    torch.testing.assert_close(a.mean_fm_map, fm_map.mean(0, keepdim=True))
    assert a.fm_fitted and not a.im_fitted
    with pytest.raises(ValueError, match=r"\(N, 1, h, w\)"):
        AnomalyScorer(32).fit(fm_map[:, 0])
    small = AnomalyScorer(32).fit(fm_map[..., :4, :4])
    with pytest.raises(ValueError, match="fitted mean map"):
        small.maps(out, images, ("afm_norm",))


# ---------------------------------------------------------------------- rows scored as the paper defines them
def test_ae_ssim_is_scored_by_one_minus_its_local_ssim():
    out, images = _output()
    expected = 1.0 - ssim(images, out.im_hat, reduction="none").mean(dim=1, keepdim=True)
    torch.testing.assert_close(im_ssim_map(images, out.im_hat), expected)
    torch.testing.assert_close(AnomalyScorer(32).maps(out, images, scorings=("aim_ssim",))["aim_ssim"], expected)
    assert float(im_ssim_map(images, images).abs().max()) < 1e-5  # a perfect reconstruction scores 0


def test_pick_scoring_follows_eval_scoring():
    assert pick_scoring(["cls", "afm", "afm_norm_filter"]) == "afm_norm_filter"  # auto: the paper's
    assert pick_scoring(["aim_ssim", "aim_norm_filter"]) == "aim_norm_filter"  # auto: first in sorted order
    assert pick_scoring(["cls", "afm_norm_filter"], "cls") == "cls"
    assert pick_scoring([]) is None
    with pytest.raises(ValueError, match="eval.scoring: the model does not report 'cls'"):
        pick_scoring(["afm"], "cls")


def _eval_set(n=4, side=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(2 * n, 1, side, side)
    masks[n:, :, 8:16, 8:16] = 1.0
    return EvalSet(torch.rand(2 * n, 3, side, side, generator=g), masks, (masks.flatten(1).amax(1) > 0).long(),
                   ["good"] * n + ["bad"] * n, [f"{i}.png" for i in range(2 * n)])  # fmt: skip


@pytest.mark.parametrize(("variant", "scoring"), [("cls_only", "cls"), ("ae_ssim", "aim_ssim"), ("haloae", DEFAULT_SCORING)])
def test_each_row_reports_its_own_image_score_unprefixed(variant, scoring):
    """Footnote 5: the cls_only row's image AUROC is L_cls's; AE-SSIM's is its SSIM map's."""
    cfg = HaloAEConfig.from_overrides("tiny", variant=variant)
    assert cfg.eval.scoring == (scoring if variant != "haloae" else "auto")
    torch.manual_seed(0)
    model = HaloAE(cfg)
    scorer = AnomalyScorer(cfg.model.image_size)
    data = _eval_set()
    fit_scorer(model, scorer, _eval_set(seed=1), None, torch.device("cpu"), 8)
    metrics, _ = evaluate(model, scorer, data, None, torch.device("cpu"), 8, "test")
    assert metrics["test/image_auroc"] == metrics[f"test/{scoring}/image_auroc"]
    others = {k.split("/")[1] for k in metrics if k.count("/") == 2 and not k.startswith("test/defect/")} - {scoring}
    assert any(metrics["test/image_auroc"] != metrics[f"test/{s}/image_auroc"] for s in others)


def test_eval_pixel_size_sets_the_pixel_metrics_resolution():
    cfg = HaloAEConfig.from_overrides("tiny", ["eval.pixel_size=16"])
    torch.manual_seed(0)
    model, scorer, data = HaloAE(cfg), AnomalyScorer(cfg.model.image_size), _eval_set()
    fit_scorer(model, scorer, _eval_set(seed=1), None, torch.device("cpu"), 8)
    metrics, maps = evaluate(model, scorer, data, None, torch.device("cpu"), 8, "test", keep_maps=True)
    expected = pixel_auroc(*at_pixel_size(data.masks, maps[DEFAULT_SCORING], 16))
    assert metrics["test/pixel_auroc"] == expected != pixel_auroc(data.masks, maps[DEFAULT_SCORING])
