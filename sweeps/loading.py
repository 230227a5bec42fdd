# SPDX-License-Identifier: Apache-2.0
"""Reading a sweep definition: the YAML file (bounded), ``--set`` overrides, and pydantic's errors
turned into one-line ``SpecError``s; ``load_spec`` (a file) and ``parse_spec`` (a mapping).

``load_spec(path, overrides)`` reads the YAML (with line numbers for syntax errors and duplicate
keys), applies ``--set`` overrides of the definition itself (``data.root=/data/mvtec_ad``),
resolves paths and validates everything that needs neither data nor Ray (``sweeps.schema``).
The dry run (``sweeps.trials.validate_trials``) then checks every trial and the data.

A definition cannot hurt the machine that reads it: a file over 1 MiB, nesting deeper than
``MAX_DEPTH`` and aliases that expand to more than ``MAX_VALUES`` values (a "billion laughs"
document) or into themselves are refused while the YAML is composed, before anything is built::

    sweeps/bad.yaml: search.space.model.blok_size: unknown config key; did you mean model.block_size?
"""

from __future__ import annotations

import os
import stat
import types
import typing
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from haloae.dotted import AssignmentError, YamlLoader, flatten, hint, parse_assignments
from sweeps.errors import Problem, SpecError, show, spec_error
from sweeps.schema import SweepSpec, is_uri

MAX_BYTES = 1 << 20  # a definition is a few kB
MAX_DEPTH = 64  # nesting levels (the shipped definitions use 5)
MAX_VALUES = 100_000  # values in the document once every alias is expanded
_PATH_PARTS_SHOWN = 6  # of the dotted path in a message about deep nesting


class _Refused(Exception):
    """The YAML is refused (not a ``yaml.YAMLError``: ``yaml_value`` must not keep it as text)."""

    def __init__(self, line: int, path: str, message: str) -> None:
        super().__init__(message)
        self.place = f"line {line}" + (f" ({path})" if path else "")
        self.message = message


class SpecLoader(YamlLoader):
    """``YamlLoader`` that refuses duplicate keys, nesting deeper than ``MAX_DEPTH``, and aliases
    that expand beyond ``MAX_VALUES`` values or refer to the collection they are in.

    Aliases are counted while the document is composed: an alias adds the size of what it stands
    for, so a document of a few hundred bytes that would expand to a billion values stops after
    ``MAX_VALUES``, without any value having been copied.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._parts: list[str] = []  # the path being composed: keys and list positions
        self._values = 0  # values composed so far, an alias counted as all it stands for
        self._sizes: dict[int, int] = {}  # id(node) -> its size, aliases expanded, once composed

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if parent is not None:
            self._parts.append(index.value if isinstance(index, yaml.ScalarNode) else "(key)" if index is None else str(index))
        try:
            mark = self.peek_event().start_mark
            if self.check_event(yaml.AliasEvent):
                node = super().compose_node(parent, index)
                if id(node) not in self._sizes:
                    raise self._refuse(mark, "an alias refers to the collection it is in (a recursive structure)")
                self._count(self._sizes[id(node)], mark)
                return node
            if len(self._parts) > MAX_DEPTH:
                raise self._refuse(mark, f"nested deeper than {MAX_DEPTH} levels")
            before = self._values
            node = super().compose_node(parent, index)
            self._count(1, mark)
            self._sizes[id(node)] = self._values - before
            return node
        finally:
            if parent is not None:
                self._parts.pop()

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except ValueError as exc:  # YAML reads it but Python cannot build it: a 5000-digit integer, 2024-13-45
            raise _Refused(node.start_mark.line + 1, "", f"cannot read the value {show(node.value)} ({exc})") from None

    def _count(self, values: int, mark: yaml.Mark) -> None:
        self._values += values
        if self._values > MAX_VALUES:
            raise self._refuse(mark, f"aliases expand the document beyond {MAX_VALUES} values")

    def _refuse(self, mark: yaml.Mark, message: str) -> _Refused:
        parts = self._parts[:_PATH_PARTS_SHOWN] + (["..."] if len(self._parts) > _PATH_PARTS_SHOWN else [])
        return _Refused(mark.line + 1, ".".join(parts), message)


def _construct_mapping(loader: SpecLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable):  # an unhashable key is refused by construct_mapping itself
            if key in seen:
                raise _Refused(key_node.start_mark.line + 1, "", f"duplicate key {show(key)}")
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


SpecLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - a SafeLoader subclass
    except _Refused as exc:
        raise spec_error(where, exc.place, exc.message) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        raise spec_error(where, line, f"invalid YAML: {problem}" + (f" ({context})" if context else "")) from None


def _read_file(path: Path, where: str) -> str:
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise spec_error(where, "", "is a folder, not a sweep YAML")
        if not stat.S_ISREG(info.st_mode):  # a FIFO or a device (/dev/zero) would never end
            raise spec_error(where, "", "is not a regular file")
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise spec_error(where, "", "no such file") from None
    except OSError as exc:
        raise spec_error(where, "", f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise spec_error(where, "", f"larger than {MAX_BYTES >> 20} MiB: not a sweep definition")
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise spec_error(where, "", f"cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _absolute(path: Any, base: Path) -> Any:
    """A local path made absolute against ``base``; URIs and non-strings are left as they are."""
    if not isinstance(path, str) or not path or is_uri(path):
        return path
    return os.path.normpath(base / Path(path).expanduser())


def _parse_overrides(overrides: Sequence[str], where: str) -> dict[str, Any]:
    """``--set`` items -> {key: value}, values read as the file is (1e-4 a number, bounded)."""
    parsed: dict[str, Any] = {}
    for item in overrides:
        try:
            parsed.update(parse_assignments([item], loader=SpecLoader))
        except AssignmentError:
            raise spec_error(where, "--set", f"{show(item)}: expected key=value, e.g. search.num_samples=4") from None
        except _Refused as exc:
            raise spec_error(where, f"--set {item.partition('=')[0].strip()}", exc.message) from None
    return parsed


def _apply_overrides(raw: dict[str, Any], overrides: Sequence[str], where: str) -> set[str]:
    """``--set`` overrides of the definition (``search.num_samples=2``); returns the keys set.
    Keys under ``overrides.`` and ``search.space.`` are dotted config keys: the rest is one key."""
    parsed = _parse_overrides(overrides, where)

    def given_twice(key: str) -> None:
        raise spec_error(where, f"overrides.{key}", "given twice (dotted and nested)")

    for key, value in parsed.items():
        parts = key.split(".")
        for head in (("overrides",), ("search", "space")):
            if tuple(parts[: len(head)]) == head and len(parts) > len(head):
                parts = [*head, ".".join(parts[len(head) :])]
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise spec_error(where, f"--set {key}", f"{'.'.join(parts[: i + 1])} is not a mapping")
            if part == "overrides" and i == 0:
                child = node[part] = flatten(child, on_repeat=given_twice)  # so a dotted --set replaces a nested value
            node = child
        node[parts[-1]] = value
    return set(parsed)


def load_spec(path: str | Path, overrides: Sequence[str] | None = None) -> SweepSpec:
    """Read and validate a sweep YAML; ``overrides`` are ``--set`` items for the definition itself.

    ``data.root`` resolves against the YAML's folder (against the current folder when given by
    ``--set``), a local ``storage`` against the current folder. Raises a one-line ``SpecError``.
    """
    where = str(path)
    path = Path(path)
    text = _read_file(path, where)
    raw = _read_yaml(text, where)
    if raw is None:
        raise spec_error(where, "", "empty sweep definition (name and data are required)")
    if isinstance(raw, dict):
        if isinstance(raw.get("data"), dict):
            raw["data"]["root"] = _absolute(raw["data"].get("root"), path.parent.absolute())
        set_keys = _apply_overrides(raw, overrides or [], where)
        if "data.root" in set_keys:
            raw["data"]["root"] = _absolute(raw["data"]["root"], Path.cwd())
        raw["storage"] = _absolute(raw.get("storage", SweepSpec.model_fields["storage"].default), Path.cwd())
        tracking = (raw.get("mlflow") or {}).get("tracking_uri") if isinstance(raw.get("mlflow"), dict) else None
        if isinstance(tracking, str) and tracking.startswith("sqlite:///") and not tracking.startswith("sqlite:////"):
            # relative sqlite paths would follow Tune's per-trial chdir
            raw["mlflow"]["tracking_uri"] = "sqlite:///" + os.path.abspath(tracking.removeprefix("sqlite:///"))
    spec = parse_spec(raw, where)
    spec._source = path.absolute()
    spec._where = where
    spec._yaml_text = text
    return spec


def parse_spec(raw: Any, where: str = "<sweep spec>") -> SweepSpec:
    """A mapping (a parsed YAML document) -> ``SweepSpec``; SpecError on the first problem."""
    if not isinstance(raw, dict):
        raise spec_error(where, "", f"expected a mapping of sweep settings at the top level; got {show(raw)}")
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise _from_validation_error(exc, where) from None


def _from_validation_error(exc: ValidationError, where: str) -> SpecError:
    """pydantic's first error -> ``<file>: <dotted.path>: <message>``."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, Problem):
        loc += [str(p) for p in cause.path]
        message = cause.message
    elif isinstance(cause, SpecError):  # build_config inside a validator: its path is absolute
        loc += [cause.path] if cause.path else []
        message = cause.detail
    elif err["type"] == "extra_forbidden":
        valid = _fields_at(err["loc"][:-1])
        message = f"unknown key; {hint(loc[-1], valid)}valid: {', '.join(valid)}"
    elif err["type"] == "missing":
        message = "required"
    else:
        message = err["msg"]
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if not isinstance(cause, ValueError):  # pydantic's own messages do not show the value
            message += f"; got {show(err.get('input'))}"
    return spec_error(where, ".".join(loc), message)


def _fields_at(loc: Sequence[Any]) -> list[str]:
    """The keys valid at ``loc`` (for "unknown key" messages), walking the models' annotations."""
    tp: Any = SweepSpec
    for part in loc:
        tp = _unwrap_optional(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            tp = tp.model_fields[str(part)].annotation
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
    tp = _unwrap_optional(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _unwrap_optional(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp
