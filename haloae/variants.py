# SPDX-License-Identifier: Apache-2.0
"""The paper's ablation rows by name: each variant is a label plus dotted config overrides.

Table 3 (loss schemes and subsets), Table 4 (architectures), the structural switches of Table 3
(no image decoder, no classifier) and the attention kind (an ablation no one has published).
A variant is applied on top of a preset (``HaloAEConfig.from_overrides(preset, variant=name)``);
sweeps list variants by these names, MLflow tags runs with them, tables print their labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Variant:
    name: str  # short identifier: config value, MLflow tag, table row key
    label: str  # how the paper prints the row
    table: str  # "table3" | "table4" | "attention" | "structure"
    overrides: dict[str, Any] = field(default_factory=dict)
    paper_row: str | None = None  # row name in paper_tables.csv, where the paper reports it


_NO_IMAGE_DECODER = {"model.image_decoder": False}
_IMAGE_AE = {
    "model.backbone.name": "none",
    "model.backbone.layers": (),
    "model.backbone.pool": 1,
    "model.image_decoder": False,
    "model.classifier": False,
    "cutpaste.enabled": False,
    "loss.weighting": "equal",
}

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        # ---- Table 3: the loss function
        Variant("haloae", "L_T(t) = a1(t) L_cls + a2(t) L_fm + a3(t) L_im", "table3", {}, "adaptive_logistic (paper)"),
        Variant("equal_weights", "L_T = L_cls + L_fm + L_im", "table3", {"loss.weighting": "equal"}, "equal_weights"),
        Variant(
            "uncertainty_weighting", "L_T uncertainty weighting (Kendall et al.)", "table3",
            {"loss.weighting": "uncertainty"}, "uncertainty_weighting",
        ),
        Variant(
            "cls_fm", "L_T(t) = a1(t) L_cls + a2(t) L_fm (no image decoder)", "table3",
            {**_NO_IMAGE_DECODER, "loss.terms": ("cls", "fm")}, "cls+fm (no image decoder)",
        ),
        Variant("cls_im", "L_T(t) = a1(t) L_cls + a2(t) L_im", "table3", {"loss.terms": ("cls", "im")}, "cls+im (no fm loss)"),
        Variant(
            "fm_im", "L_T = L_fm + L_im (no SSL)", "table3",
            {"loss.terms": ("fm", "im"), "model.classifier": False, "cutpaste.enabled": False, "loss.weighting": "equal"},
            "fm+im (no SSL/cls)",
        ),
        Variant("cls_only", "L_T = L_cls", "table3", {"loss.terms": ("cls",), "loss.weighting": "equal"}, "cls only"),
        Variant(
            "fm_only", "L_T = L_fm", "table3",
            {**_NO_IMAGE_DECODER, "model.classifier": False, "cutpaste.enabled": False, "loss.terms": ("fm",),
             "loss.weighting": "equal"},
            "fm only",
        ),
        # ---- Table 4: the architecture
        Variant(
            "ae_l2", "AE-L2", "table4",
            {**_IMAGE_AE, "model.arch": "ae_l2", "loss.terms": ("im",), "loss.reconstruction": "mse"}, "AE-L2",
        ),
        Variant(
            "ae_ssim", "AE-SSIM", "table4",
            {**_IMAGE_AE, "model.arch": "ae_ssim", "loss.terms": ("im",), "loss.reconstruction": "ssim"}, "AE-SSIM",
        ),
        Variant(
            "block_c_only", "HaloAE - Block C only", "table4",
            {**_IMAGE_AE, "model.arch": "block_c_only", "loss.terms": ("fm",)}, "Block C only",
        ),
        Variant("block_c_cnn", "HaloAE - Block C as CNN", "table4", {"model.arch": "block_c_cnn"}, "Block C as CNN (DFR)"),
        # ---- structural switches (Table 3 removes these parts together with their loss terms)
        Variant("no_image_decoder", "no image decoder (block D)", "structure",
                {**_NO_IMAGE_DECODER, "loss.terms": ("cls", "fm")}),
        Variant("no_classifier", "no classifier (block E)", "structure",
                {"model.classifier": False, "loss.terms": ("fm", "im"), "loss.weighting": "equal"}),
        # ---- attention kind
        Variant("attention_halo", "HaloNet attention (working)", "attention", {"model.attention": "halo"}),
        Variant("attention_legacy", "published attention (inverted mask)", "attention", {"model.attention": "legacy"}),
        Variant("attention_none", "no attention (convolutions only)", "attention", {"model.attention": "none"}),
    )
}  # fmt: skip


def variant_overrides(name: str) -> dict[str, Any]:
    from haloae.config import ConfigError

    if name not in VARIANTS:
        raise ConfigError(f"variant: unknown {name!r}; valid: {', '.join(VARIANTS)}")
    return dict(VARIANTS[name].overrides)
