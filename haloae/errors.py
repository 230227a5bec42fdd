# SPDX-License-Identifier: Apache-2.0
"""The one error family the user sees as a single line (the CLI exits with code 2).

Every layer's input errors derive from ``InputError``: configuration keys (``ConfigError``),
datasets (``DatasetError``), backbone weights (``BackboneWeightsError``), sweep definitions
(``sweeps.errors.SpecError``), analysis queries. The message names the key, path or file at fault.
"""


class InputError(ValueError):
    """Bad input found before any expensive work: the message is one line naming what is wrong."""


class ConfigError(InputError):
    """A configuration value is invalid; the message names the dotted key."""


class DatasetError(InputError):
    """A dataset or image file cannot be used; the message names the offending file or folder."""


def describe(exc: BaseException) -> str:
    """``"OSError: <message>"`` on one line, for the reason part of an error message."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())
