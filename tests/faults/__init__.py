# SPDX-License-Identifier: Apache-2.0
"""The fault suite's cases and harness (``tests/test_faults.py``, ``bench/fault_counts.py``)."""
