# SPDX-License-Identifier: Apache-2.0
"""The fault suite's cases and harness, run by ``tests/test_faults.py`` and ``bench/fault_counts.py``.

harness   the valid artefacts, one case run in-process through the CLI, its verdict, the counts
specs     malformed sweep definitions and --set overrides
files     damaged datasets, checkpoints and bundles
cases     all of them, and the ones whose fix is still another module's
"""
