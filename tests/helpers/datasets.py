# SPDX-License-Identifier: Apache-2.0
"""The datasets the data tests read: the real MVTec AD bottle when ``../shared`` has it, and a small
synthetic one in MVTec's layout."""

from __future__ import annotations

from pathlib import Path

import pytest

MVTEC_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "mvtec_ad"
needs_bottle = pytest.mark.skipif(
    not (MVTEC_ROOT / "bottle").is_dir(), reason=f"real MVTec AD bottle category not found at {MVTEC_ROOT / 'bottle'}"
)
CATEGORY = "synth_disc"  # the synthetic category the malformed-dataset tests break


def small_synthetic(root: Path) -> Path:
    """``CATEGORY`` and the grayscale ``synth_gravel`` at 32 px, a few images each, under ``root``."""
    from haloae.synth import generate

    generate(root, categories=[CATEGORY, "synth_gravel"], size=32, n_train=6, n_test_good=2, n_test_defect_per_type=2)
    return root
