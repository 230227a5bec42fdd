# SPDX-License-Identifier: Apache-2.0
"""Dotted keys, the one machinery behind ``--set KEY=VALUE``, config overrides, sweep overrides
and analysis filters: reading ``key=value`` items (values are YAML, ``1e-4`` a number), flattening
nested mappings to dotted keys, and "did you mean" hints.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml


class YamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads ``1e-4`` as a number (YAML 1.1 makes it a string, but every
    author of a sweep or an override means a number). Never constructs Python objects."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def yaml_value(text: str, loader: type[yaml.SafeLoader] = YamlLoader) -> Any:
    """One override value: YAML (``8`` -> 8, ``[3, 5]`` -> a list, ``1e-4`` -> 0.0001); text that is
    not valid YAML stays a string; an empty value is ``""``. ``loader``: a ``YamlLoader`` subclass
    with more checks (sweep definitions bound nesting and aliases)."""
    if not text.strip():
        return ""
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return text


class AssignmentError(ValueError):
    """An item is not ``key=value``; ``item`` is the offending text."""

    def __init__(self, item: str) -> None:
        super().__init__(f"{item!r}: expected key=value")
        self.item = item


def parse_assignments(
    items: Iterable[str], parse_values: bool = True, loader: type[yaml.SafeLoader] = YamlLoader
) -> dict[str, Any]:
    """``["model.block_size=8", "variant=haloae"]`` -> ``{"model.block_size": 8, "variant": "haloae"}``.

    Values are YAML (``yaml_value``) unless ``parse_values`` is false (then stripped text).
    Raises ``AssignmentError`` for an item without ``=`` or with an empty key; each caller turns it
    into its own one-line error naming the option.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise AssignmentError(str(item))
        out[key.strip()] = yaml_value(text, loader) if parse_values else text.strip()
    return out


def flatten(data: Mapping[str, Any], prefix: str = "", on_repeat=None) -> dict[str, Any]:
    """Nested mappings -> dotted keys: ``{"model": {"block_size": 8}}`` -> ``{"model.block_size": 8}``.

    Keys that are already dotted stay as they are. A key given both nested and dotted calls
    ``on_repeat(key)`` (which should raise), or the later one wins when it is None.
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            for sub, sub_value in flatten(value, name + ".", on_repeat).items():
                if sub in out and on_repeat is not None:
                    on_repeat(sub)
                out[sub] = sub_value
        else:
            if name in out and on_repeat is not None:
                on_repeat(name)
            out[name] = value
    return out


def did_you_mean(name: Any, valid: Sequence[str], by_last_part: bool = False) -> str | None:
    """The closest of ``valid`` to ``name`` (difflib, cutoff 0.6), or None. ``by_last_part``: when
    nothing is close, a dotted key with the same last part (a misplaced section)."""
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.6)
    if close:
        return close[0]
    if by_last_part:
        last = str(name).rsplit(".", 1)[-1]
        same = [k for k in valid if k.rsplit(".", 1)[-1] == last]
        if same:
            return same[0]
    return None


def hint(name: Any, valid: Sequence[str], by_last_part: bool = False) -> str:
    """``"did you mean model.block_size? "`` (with a trailing space), or ``""``."""
    close = did_you_mean(name, valid, by_last_part)
    return f"did you mean {close}? " if close else ""
