# SPDX-License-Identifier: Apache-2.0
"""The import graph of ``haloae``, read from the source with ``ast`` (function-level imports included)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "haloae"


def _imports(path: Path) -> set[str]:
    """The haloae modules a file imports anywhere in it (module, function or TYPE_CHECKING level)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # "from haloae import attention" imports the module haloae.attention
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("haloae.") and (PACKAGE / f"{name[7:]}.py").is_file()}


GRAPH = {f"haloae.{path.stem}": _imports(path) for path in sorted(PACKAGE.glob("*.py")) if path.stem != "__init__"}


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for name in GRAPH[todo.pop()] - seen:
            seen.add(name)
            todo.append(name)
    return seen


def test_no_import_circle_inside_haloae():
    circles = sorted(name for name in GRAPH if name in _reachable(name))
    assert not circles, f"modules on an import circle: {circles}"


@pytest.mark.parametrize("module", ["haloae.config", "haloae.presets", "haloae.validation", "haloae.choices"])
def test_the_configuration_imports_no_layer_module(module):
    layers = {"haloae.attention", "haloae.backbone", "haloae.model", "haloae.efficientnet_lite"}
    assert not _reachable(module) & layers
