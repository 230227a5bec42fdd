# SPDX-License-Identifier: Apache-2.0
"""The paper's reported numbers (Mathian et al., 2022, Tables 2, 3, 4 and S1), for ``--paper``.

``paper_tables.csv`` (next to this module, copied from ``shared/reference``) is tidy:
``table,row,category,image_auroc,pixel_auroc`` in percent, with Table 3/4 means under the
categories ``mean_texture``, ``mean_object`` and ``mean``. Values are kept as the *strings* the
CSV holds, so a table shows them exactly as the paper printed them (``82.53`` stays ``82.53``).

Rows are matched by ``VARIANTS[v].paper_row`` in the variant's own table (Table 3 or 4), by the
scoring's label for Table S1, and for Table 2 by the same row name or, for the paper's own model,
``HaloAE`` (Table 2 names it so; Table 3 calls the same run ``adaptive_logistic (paper)``).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pandas as pd

PAPER_CSV = Path(__file__).with_name("paper_tables.csv")
GROUP_CATEGORIES = {"texture": "mean_texture", "object": "mean_object", "all": "mean"}
TABLE2_OWN_ROW = {"haloae": "HaloAE"}
Pair = tuple[str | None, str | None]  # (image AUROC, pixel AUROC) as printed, None where not reported


@cache
def paper_table() -> pd.DataFrame:
    return pd.read_csv(PAPER_CSV, comment="#", dtype=str, keep_default_na=False)


def paper_pair(table: str, row: str | None, category: str) -> Pair | None:
    """The paper's (image, pixel) AUROC strings for one row and category, or None if not reported."""
    if row is None:
        return None
    df = paper_table()
    hit = df[(df["table"] == table) & (df["row"] == row) & (df["category"] == category)]
    if hit.empty:
        return None
    first = hit.iloc[0]
    return first["image_auroc"] or None, first["pixel_auroc"] or None


def variant_row(variant: str, table: str) -> str | None:
    """The paper's row name for a variant in ``table`` (table2, table3 or table4)."""
    from haloae.presets import VARIANTS

    v = VARIANTS.get(variant)
    if v is None:
        return None
    if table == "table2":
        return v.paper_row if paper_pair("table2", v.paper_row, "carpet") else TABLE2_OWN_ROW.get(variant)
    return v.paper_row if v.table == table else None


def variant_table(variant: str) -> str | None:
    """The paper table (table3 | table4) that reports a variant's means, if any."""
    from haloae.presets import VARIANTS

    v = VARIANTS.get(variant)
    return v.table if v is not None and v.table in ("table3", "table4") and v.paper_row else None


def mean_of(pairs: list[Pair | None]) -> Pair | None:
    """Mean over categories of the paper's values (for Table 2's Mean rows, which the paper omits):
    one decimal, None unless every category has a value."""
    if not pairs or any(p is None for p in pairs):
        return None
    out = []
    for i in range(2):
        values = [p[i] for p in pairs]  # type: ignore[index]
        out.append(f"{sum(float(v) for v in values) / len(values):.1f}" if all(values) else None)
    return out[0], out[1]


def unmatched_rows(table) -> list[str]:
    """The rows of an ``analysis.render.Table`` built with the paper's values that got none of them."""
    return [r for r in table.rows if not any((c := table.cell(r, col)) is not None and c.paper and any(c.paper) for col in table.columns)]


def no_match_note(table) -> str | None:
    """What ``--paper`` says beside a table: that no paper row matches its rows (then nothing of the
    paper is shown), or which rows have no paper counterpart; None when every row has one."""
    if not table.paper:
        return None
    missing = unmatched_rows(table)
    if not missing:
        return None
    if len(missing) == len(table.rows):
        return (f"--paper: no row of the paper's tables matches this table's rows ({', '.join(table.rows)}), so no paper value "
                "is shown; the paper reports named variants (`haloae variants`: Tables 3 and 4) and Table S1's scorings.")  # fmt: skip
    return f"--paper: no paper value for {', '.join(missing)} (the paper does not report these rows)."
