# SPDX-License-Identifier: Apache-2.0
"""The test suite. A regular package, so ``tests.helpers`` resolves here and not to a top-level
``tests`` package that some wheels install (autorank does) into site-packages."""
