# SPDX-License-Identifier: Apache-2.0
"""The fault suite (issue 12, item 8): every malformed spec, override, dataset, checkpoint and
bundle of ``tests/faults/cases.py`` is refused by the ``haloae`` CLI with exit code 2 and one
``Error:`` line naming the field or file, no traceback, no code run and nothing changed on disk.

The valid artefacts (dataset, trained run, bundle) are built once per session; each case damages
its own copy. ``bench/fault_counts.py`` prints the same cases as a table of counts.
"""

import pytest

from tests.faults.cases import CASES
from tests.faults.harness import CATEGORIES, build_artefacts, run_case


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory):
    return build_artefacts(tmp_path_factory.mktemp("valid"))


def test_the_table_covers_every_category_with_sixty_cases_or_more():
    assert len(CASES) >= 60 and {c.category for c in CASES} == set(CATEGORIES)
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


@pytest.mark.parametrize("case", [pytest.param(c, marks=[pytest.mark.slow] if c.slow else []) for c in CASES], ids=lambda c: c.id)
def test_a_malformed_input_is_one_line_naming_it(case, artefacts, tmp_path):
    outcome = run_case(case, artefacts, tmp_path)
    assert outcome.kind == "one-line", f"{outcome.kind}: {outcome.detail}"
