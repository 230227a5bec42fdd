# SPDX-License-Identifier: Apache-2.0
"""One searched dimension of a sweep (``Domain``) and the dotted config keys a sweep may set.

A domain is written ``{grid: [4, 6, 12]}``, ``{choice: [...]}``, ``{uniform: [lo, hi]}``,
``{loguniform: [lo, hi]}`` or ``{int: [lo, hi]}`` (inclusive); the keys it searches are the
config's own dotted keys (``model.block_size``), except those a definition sets in its own place.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_serializer, model_validator

from haloae.config import config_keys
from haloae.dotted import did_you_mean
from sweeps.errors import Problem, show, unknown

MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True, strict=True)  # every model of a sweep definition
DOMAIN_KINDS = ("grid", "choice", "uniform", "loguniform", "int")
DISCRETE_KINDS = ("grid", "choice")
# Config keys that have their own place in a sweep definition.
RESERVED_KEYS = {
    "preset": "set the top-level preset: instead",
    "variant": "list variants under variants: instead",
    "train.seed": "list repeats under seeds: instead",
}


def config_key_problem(key: Any) -> str | None:
    """Why ``key`` cannot be set by a sweep, or None when it is a config key it may set."""
    if key in RESERVED_KEYS:
        return RESERVED_KEYS[key]
    keys = config_keys()
    if key not in keys:
        close = did_you_mean(key, [k for k in keys if k not in RESERVED_KEYS], by_last_part=True)
        return f"unknown config key{f'; did you mean {close}?' if close else ' (haloae config --preset paper lists them)'}"
    return None


def bounds(kind: str, value: Any, integer: bool = False, positive: bool = False) -> tuple[float, float]:
    """``[low, high]`` of a continuous domain or an alpha range, checked."""
    number = int if integer else (int, float)
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, number) for v in value)
    ):
        kind_of = "integers" if integer else "numbers"
        raise Problem((), f"{kind} needs [low, high] ({kind_of}); got {show(value)}")
    low, high = value
    if not low < high:
        raise Problem((), f"{kind} needs low < high; got {show(list(value))}")
    if positive and low <= 0:
        raise Problem((), f"{kind} needs low > 0; got {show(list(value))}")
    return (low, high) if integer else (float(low), float(high))


class Domain(BaseModel):
    """One searched dimension (see the module docstring)."""

    model_config = MODEL_CONFIG
    kind: Literal["grid", "choice", "uniform", "loguniform", "int"]
    values: tuple[Any, ...]  # grid / choice: the values; uniform / loguniform / int: (low, high)

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, data: Any) -> Any:
        if isinstance(data, Domain):
            return data
        expected = f"expected a mapping with one of {', '.join(DOMAIN_KINDS)}; got {show(data)}"
        if not isinstance(data, dict) or not data:
            raise Problem((), expected)
        unknown_kinds = [k for k in data if k not in DOMAIN_KINDS]
        if unknown_kinds:
            raise Problem((), unknown("domain", unknown_kinds[0], DOMAIN_KINDS))
        if len(data) > 1:
            raise Problem((), f"give one domain, got {', '.join(data)}")
        kind, values = next(iter(data.items()))
        if kind in DISCRETE_KINDS:
            if not isinstance(values, list) or not values:
                raise Problem((), f"{kind} needs a non-empty list of values; got {show(values)}")
            seen = [json.dumps(v, sort_keys=True, default=str) for v in values]
            repeated = next((v for v, s in zip(values, seen, strict=True) if seen.count(s) > 1), None)
            if repeated is not None:
                raise Problem((), f"{kind} repeats the value {show(repeated)}")
            return {"kind": kind, "values": tuple(values)}
        return {"kind": kind, "values": bounds(kind, values, integer=kind == "int", positive=kind == "loguniform")}

    @classmethod
    def of(cls, kind: str, values: Sequence[Any]) -> Domain:
        """``Domain.of("uniform", (0.0, 1.0))``: built and checked as if read from YAML."""
        return cls.model_validate({kind: list(values)})

    @model_serializer
    def _to_yaml(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.values)}

    @property
    def discrete(self) -> bool:
        return self.kind in DISCRETE_KINDS

    @property
    def low(self) -> Any:
        return self.values[0]

    @property
    def high(self) -> Any:
        return self.values[-1]

    def points(self) -> list[Any]:
        """The values a dry run checks: every discrete value, or both bounds."""
        return list(self.values)

    def describe(self) -> str:
        if self.discrete:
            return f"{self.kind} {json.dumps(list(self.values), default=str)}"
        return f"{self.kind}({self.low:g}, {self.high:g})"
