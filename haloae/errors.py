# SPDX-License-Identifier: Apache-2.0
"""The one error family the user sees as a single line (the CLI exits with code 2).

Every layer's input errors derive from ``InputError``: configuration keys (``ConfigError``),
datasets (``DatasetError``), backbone weights (``BackboneWeightsError``), sweep definitions
(``sweeps.spec.SpecError``), analysis queries. The message names the key, path or file at fault.
"""


class InputError(ValueError):
    """Bad input found before any expensive work: the message is one line naming what is wrong."""
