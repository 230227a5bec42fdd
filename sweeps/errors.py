# SPDX-License-Identifier: Apache-2.0
"""SpecError, the one-line error of a sweep definition, and the pieces its messages are made of.

Every problem reads ``<file>: <dotted.path>: <message>``. Values quoted in a message are walked
with a budget and cut (``show``): a value of a billion shared elements (a YAML alias bomb) costs
a few dozen steps, never its whole serialisation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from haloae.dotted import hint
from haloae.errors import InputError

SHOW_LIMIT = 80  # characters of a value quoted in a message


class SpecError(InputError):
    """A sweep definition is invalid; one line, ``<file>: <dotted.path>: <message>``."""

    def __init__(self, message: str, path: str = "", detail: str = "") -> None:
        # whitespace collapsed: the message is always one line, whatever was interpolated into it
        super().__init__(" ".join(str(message).split()))
        self.path = path  # the dotted path at fault ("" when the file as a whole is)
        self.detail = detail or str(message)  # the message without file and path


def spec_error(where: str, path: str, message: str) -> SpecError:
    """``SpecError`` for the definition ``where`` (its file), at the dotted ``path`` ("" = the whole file)."""
    return SpecError(f"{where}: {path}: {message}" if path else f"{where}: {message}", path, message)


class Problem(ValueError):
    """Raised inside validators: ``path`` (relative to the validator's location) and a message.
    A ValueError so that pydantic reports it with its location; the converter reads both back."""

    def __init__(self, path: Sequence[str | int], message: str) -> None:
        super().__init__(message)
        self.path, self.message = tuple(path), message


def show(value: Any, limit: int = SHOW_LIMIT) -> str:
    """``value`` for a message: a string as its repr, anything else JSON-like, cut to ``limit``."""
    pieces: list[str] = []
    size = 0
    for token in _tokens(value, limit, top=True):
        pieces.append(token)
        size += len(token)
        if size > limit:  # the rest of the value is never visited
            break
    text = "".join(pieces)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tokens(value: Any, limit: int, top: bool = False) -> Iterator[str]:
    """The text of ``value`` in small pieces, produced lazily (see ``show``)."""
    if isinstance(value, Mapping):
        yield "{"
        for i, (key, item) in enumerate(value.items()):
            yield from (", " if i else "", _scalar(str(key), limit), ": ")
            yield from _tokens(item, limit)
        yield "}"
    elif isinstance(value, (list, tuple, set, frozenset)):
        yield "["
        for i, item in enumerate(value):
            yield ", " if i else ""
            yield from _tokens(item, limit)
        yield "]"
    elif isinstance(value, str) and top:
        yield repr(value[: limit + 1])
    else:
        yield _scalar(value, limit)


def _scalar(value: Any, limit: int) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # inf, nan: what the user wrote (.inf, 1e400, .nan), not JSON's Infinity
    if isinstance(value, (str, bytes)):
        value = value[: limit + 1]
    try:
        return json.dumps(value, default=str)
    except ValueError:  # an integer beyond Python's digit limit for str()
        return f"<a {value.bit_length()}-bit integer>"


def unknown(what: str, name: Any, valid: Sequence[str]) -> str:
    """``unknown preset 'tyni'; did you mean tiny? valid: paper, ...``."""
    return f"unknown {what} {show(name)}; {hint(name, valid)}valid: {', '.join(valid)}"


def no_repeats(items: Sequence[Any]) -> None:
    """Problem at the first item listed a second time."""
    for i, item in enumerate(items):
        if item in items[:i]:
            raise Problem((i,), f"{show(item)} is listed twice")
