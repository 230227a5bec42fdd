# SPDX-License-Identifier: Apache-2.0
"""The fault suite's table: every case of ``tests.faults.specs`` and ``tests.faults.files``, and the
ones still failing because their fix belongs to another module.

Each case's command must end in one ``Error:`` line naming the field or file (``tests.faults.harness``).
"""

from tests.faults.files import BUNDLE_CASES, CHECKPOINT_CASES, DATASET_CASES
from tests.faults.specs import OVERRIDE_CASES, SPEC_CASES

CASES = SPEC_CASES + OVERRIDE_CASES + DATASET_CASES + CHECKPOINT_CASES + BUNDLE_CASES

# Cases that still fail because their fix belongs to another module's owner: case id -> what must change
# where. The tests mark them xfail(strict=True): the day one is fixed, its entry must go.
KNOWN_FAULTS: dict[str, str] = {}
