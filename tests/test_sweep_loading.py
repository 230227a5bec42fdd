# SPDX-License-Identifier: Apache-2.0
"""Reading a sweep definition cannot hurt: alias bombs, deep nesting, recursive aliases, huge files
and devices are one-line errors within moments, and a value quoted in a message is never
serialised whole."""

import time
from pathlib import Path

import pytest

from sweeps.errors import SpecError, show
from sweeps.loading import MAX_DEPTH, MAX_VALUES, load_spec

BASE = "name: t\ndata: {synthetic: {categories: [synth_disc]}}\npreset: tiny\n"


def billion_laughs(levels: int = 9, fan_out: int = 9) -> str:
    """``fan_out ** levels`` values (9 x 9: 387 million) in a few hundred bytes of YAML."""
    lines = [f"  l0: &l0 [{', '.join(['lol'] * fan_out)}]"]
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan_out)}]" for i in range(1, levels)]
    return "lols:\n" + "\n".join(lines) + f"\ndescription: *l{levels - 1}\n"  # a message once showed it whole


def refused(tmp_path: Path, text: str, overrides: list[str] | None = None) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    started = time.monotonic()
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides)
    assert time.monotonic() - started < 2, "refusing takes moments, whatever the document expands to"
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


def test_alias_bomb_is_refused_while_composing(tmp_path):
    message = refused(tmp_path, BASE + billion_laughs())
    assert f"aliases expand the document beyond {MAX_VALUES} values" in message
    assert "(lols.l5.0)" in message  # where the expansion crossed the bound


def test_aliases_within_the_bound_still_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "spec.yaml"
    path.write_text(BASE + "search: {space: {model.block_size: &sizes {grid: [1, 2]}, model.halo_size: *sizes}}\n")
    spec = load_spec(path)
    assert spec.search.space["model.halo_size"].values == (1, 2)


def test_recursive_alias(tmp_path):
    message = refused(tmp_path, BASE + "overrides: &self {x: *self}\n")
    assert "line 4 (overrides.x): an alias refers to the collection it is in" in message


@pytest.mark.parametrize("open_, close", [("[", "]"), ("{a: ", "}")], ids=["lists", "mappings"])
def test_5000_deep_nesting(tmp_path, open_, close):
    message = refused(tmp_path, BASE + "overrides: {model.block_size: " + open_ * 5000 + "1" + close * 5000 + "}\n")
    assert f"nested deeper than {MAX_DEPTH} levels" in message
    assert "(overrides.model.block_size." in message  # the field, then a short piece of the path


def test_set_values_are_read_with_the_same_bounds(tmp_path):
    message = refused(tmp_path, BASE, ["overrides.model.block_size=" + "[" * 5000 + "]" * 5000])
    assert "--set overrides.model.block_size: nested deeper than" in message
    message = refused(tmp_path, BASE, ["overrides={a: 1, a: 2}"])
    assert "--set overrides: duplicate key 'a'" in message
    message = refused(tmp_path, BASE, ["overrides.optim.lr=.inf"])
    assert "overrides.optim.lr: inf is not a finite number" in message


def test_not_a_regular_file(tmp_path):
    if Path("/dev/zero").exists():  # read whole, it would never end
        with pytest.raises(SpecError, match=r"^/dev/zero: is not a regular file$"):
            load_spec("/dev/zero")
    with pytest.raises(SpecError, match=r": is a folder, not a sweep YAML$"):
        load_spec(tmp_path)
    big = tmp_path / "big.yaml"
    big.write_text(BASE + "description: '" + "x" * (1 << 20) + "'\n")
    with pytest.raises(SpecError, match=r"big.yaml: larger than 1 MiB"):
        load_spec(big)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(SpecError, match=r"binary.yaml: cannot read: not UTF-8 text"):
        load_spec(binary)


def test_show_walks_a_huge_value_with_a_budget():
    value: list = ["lol"] * 9
    for _ in range(9):  # 387 million elements, sharing nine lists
        value = [value] * 9
    started = time.monotonic()
    text = show(value)
    assert time.monotonic() - started < 0.1
    assert text.startswith('[[[[[[[[[["lol", "lol"') and text.endswith("...") and len(text) == 80
    assert show("x" * 10**7) == "'" + "x" * 76 + "..."
    assert show(float("inf")) == "inf" and show([float("nan")]) == "[nan]"
    assert show({"a": [1, 2]}) == '{"a": [1, 2]}' and show("a b") == "'a b'"
