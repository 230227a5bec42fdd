# SPDX-License-Identifier: Apache-2.0
"""The fault suite (issue 12, item 8): every malformed spec, override, dataset, checkpoint and
bundle of ``tests/faults/cases.py`` is refused by the ``haloae`` CLI with exit code 2 and one
``Error:`` line naming the field or file, no traceback, no code run and nothing changed on disk
or in MLflow.

The valid artefacts (dataset, trained run, bundle) are built once per session; each case damages
its own copy. ``bench/fault_counts.py`` prints the same cases as a table of counts.
"""

import shutil

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from haloae.cli import main
from haloae.images import load_image
from tests.faults.cases import CASES, KNOWN_FAULTS
from tests.faults.harness import CATEGORIES, CATEGORY, build_artefacts, run_case


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory):
    return build_artefacts(tmp_path_factory.mktemp("valid"))


def _param(case):
    marks = [pytest.mark.slow] if case.slow else []
    if case.id in KNOWN_FAULTS:
        marks.append(pytest.mark.xfail(strict=True, reason=f"not fixed yet: {KNOWN_FAULTS[case.id]}"))
    return pytest.param(case, marks=marks, id=case.id)


def test_the_table_covers_every_category_with_sixty_cases_or_more():
    assert len(CASES) >= 60 and {c.category for c in CASES} == set(CATEGORIES)
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
    assert set(KNOWN_FAULTS) <= {c.id for c in CASES}


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_a_malformed_input_is_one_line_naming_it(case, artefacts, tmp_path):
    outcome = run_case(case, artefacts, tmp_path)
    assert outcome.kind == "one-line", f"{outcome.kind}: {outcome.detail}"


def test_a_16_bit_png_is_accepted_and_read_by_its_bit_depth(artefacts, tmp_path):
    """Not a fault: a dataset with a 16-bit grayscale PNG passes the dry run's data check, and the
    image reads as its 8-bit original does (not all white)."""
    root = shutil.copytree(artefacts.data_root, tmp_path / "data")
    image = root / CATEGORY / "train" / "good" / "000.png"
    gray8 = np.asarray(Image.open(image).convert("L"))
    Image.fromarray(gray8.astype(np.uint16) * 257).save(image)  # 0..255 -> 0..65535
    assert Image.open(image).mode.startswith("I")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "sixteen", "data": {"root": str(root), "categories": [CATEGORY]}, "preset": "tiny",
                                    "overrides": {"model.backbone.weights": "random"}, "resources": {"cpu": 0.5},
                                    "storage": str(tmp_path / "sweeps")}))  # fmt: skip
    result = CliRunner().invoke(main, ["sweep", str(spec), "--dry-run"])
    assert result.exit_code == 0, result.output
    read = load_image(image, gray8.shape[0])  # (3, H, W) in [0, 1]
    np.testing.assert_allclose(read[0].numpy(), gray8 / 255.0, atol=1 / 255)
