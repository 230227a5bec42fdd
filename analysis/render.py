# SPDX-License-Identifier: Apache-2.0
"""One table model, four renderers: Markdown, LaTeX, HTML (display strings) and CSV (tidy numbers).

A ``Table`` is rows x columns of ``Cell``s; a cell holds one ``Stat`` (mean, std, n over seeds) per
metric of the table (Table 2 pairs image and pixel AUROC), which of them is the best of its line,
and optionally the paper's values as printed. Every display format goes through ``display_frame``
(one DataFrame of strings, differing only in the ``Style``: bold markup, the +- sign, escaping), so
the formats cannot drift apart; CSV is the long form of the same cells, in percent.
"""

from __future__ import annotations

import html
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

FORMATS = ("md", "latex", "csv", "html")
EXTENSIONS = {"md": "md", "latex": "tex", "csv": "csv", "html": "html"}
MISSING = "–"


@dataclass(frozen=True)
class Stat:
    """One metric over seeds, as fractions: mean, sample std (NaN when n < 2) and n."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Cell:
    stats: tuple[Stat | None, ...]  # one per metric of the table; None where nothing was measured
    best: tuple[bool, ...] = ()  # per metric: the best of its line (row or column, by table)
    paper: tuple[str | None, ...] | None = None  # the paper's values as printed (percent), per metric


@dataclass
class Table:
    name: str  # file stem: table2, table3, tableS1_haloae, pivot_...
    title: str
    row_header: str
    rows: list[str]
    columns: list[str]
    metrics: tuple[str, ...]  # display names of the cell's metrics: ("image AUROC", "pixel AUROC")
    cells: dict[tuple[str, str], Cell]
    paper: bool = False  # add a "<column> (paper)" column beside each column the paper reports
    notes: list[str] = field(default_factory=list)

    def cell(self, row: str, column: str) -> Cell | None:
        return self.cells.get((row, column))

    @property
    def common_n(self) -> int:
        """The usual number of seeds per cell; cells with another n say so."""
        counts = Counter(s.n for c in self.cells.values() for s in c.stats if s is not None)
        return counts.most_common(1)[0][0] if counts else 0


@dataclass(frozen=True)
class Style:
    bold: Callable[[str], str]
    pm: str
    escape: Callable[[str], str]


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}  # fmt: skip


def _latex_escape(text: str) -> str:
    return re.sub(r"[\\&%$#_{}~^]", lambda m: _LATEX[m.group()], text)


STYLES = {
    "md": Style(lambda s: f"**{s}**", "±", lambda s: s.replace("|", r"\|")),
    "latex": Style(lambda s: rf"\textbf{{{s}}}", r"$\pm$", _latex_escape),
    "html": Style(lambda s: f"<b>{s}</b>", "±", html.escape),
}


def format_stat(stat: Stat | None, style: Style, common_n: int, best: bool = False) -> str:
    """``97.3 ± 0.4`` in percent, one decimal as the paper; ``(n=k)`` when k differs from the table's n."""
    if stat is None or math.isnan(stat.mean):
        return MISSING
    text = f"{100 * stat.mean:.1f}"
    if stat.n > 1 and not math.isnan(stat.std):
        text += f" {style.pm} {100 * stat.std:.1f}"
    text = style.bold(text) if best else text
    return text if stat.n == common_n else f"{text} (n={stat.n})"


def format_cell(cell: Cell | None, style: Style, common_n: int, n_metrics: int) -> str:
    if cell is None:
        return " / ".join([MISSING] * n_metrics)
    best = cell.best or (False,) * len(cell.stats)
    return " / ".join(format_stat(s, style, common_n, b) for s, b in zip(cell.stats, best, strict=True))


def format_paper(cell: Cell | None, style: Style, n_metrics: int) -> str:
    values = cell.paper if cell is not None and cell.paper is not None else (None,) * n_metrics
    return " / ".join(style.escape(v) if v else MISSING for v in values)


def display_frame(table: Table, style: Style) -> pd.DataFrame:
    """The table as strings in ``style``: index = rows, a column per column (and its paper column)."""
    n = table.common_n
    data: dict[str, list[str]] = {}
    for column in table.columns:
        data[style.escape(column)] = [format_cell(table.cell(r, column), style, n, len(table.metrics)) for r in table.rows]
        if table.paper and any((c := table.cell(r, column)) is not None and c.paper and any(c.paper) for r in table.rows):
            data[style.escape(f"{column} (paper)")] = [format_paper(table.cell(r, column), style, len(table.metrics)) for r in table.rows]
    frame = pd.DataFrame(data, index=[style.escape(r) for r in table.rows])
    frame.index.name = style.escape(table.row_header)
    return frame


def caption(table: Table, style: Style) -> str:
    n = table.common_n
    what = style.escape(" / ".join(table.metrics))
    seeds = f"{n} seed{'s' if n != 1 else ''}"
    return f"{style.escape(table.title)}. Cells: {what} in percent, mean {style.pm} std over {seeds}; best in bold."


def tidy(table: Table) -> pd.DataFrame:
    """The long form: a row per (row, column, metric) with mean/std in percent, n, best, paper."""
    records = []
    for (row, column), cell in table.cells.items():
        for i, metric in enumerate(table.metrics):
            stat = cell.stats[i]
            records.append({
                "table": table.name, "row": row, "column": column, "metric": metric,
                "mean": 100 * stat.mean if stat else math.nan, "std": 100 * stat.std if stat else math.nan,
                "n": stat.n if stat else 0, "best": bool(cell.best[i]) if cell.best else False,
                "paper": (cell.paper[i] if cell.paper else None) or "",
            })  # fmt: skip
    order = {r: i for i, r in enumerate(table.rows)}
    corder = {c: i for i, c in enumerate(table.columns)}
    frame = pd.DataFrame.from_records(records, columns=["table", "row", "column", "metric", "mean", "std", "n", "best", "paper"])
    return frame.sort_values(["row", "column"], key=lambda s: s.map(order if s.name == "row" else corder), kind="stable")


def _markdown(frame: pd.DataFrame) -> str:
    header = [frame.index.name or ""] + list(frame.columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":---:"] * len(frame.columns)) + "|"]
    lines += ["| " + " | ".join([str(i), *row]) + " |" for i, row in zip(frame.index, frame.itertuples(index=False), strict=True)]
    return "\n".join(lines)


def render(table: Table, fmt: str) -> str:
    """The table as text in ``fmt`` (md, latex, csv, html), with its caption and notes."""
    if fmt == "csv":
        return tidy(table).to_csv(index=False)
    style = STYLES[fmt]
    frame = display_frame(table, style)
    notes = table.notes
    if fmt == "md":
        body = _markdown(frame)
        return "\n\n".join([f"**{caption(table, style)}**", body, *(f"_{style.escape(n)}_" for n in notes)]) + "\n"
    if fmt == "latex":
        body = frame.to_latex(escape=False, caption=caption(table, style), label=f"tab:{table.name}")
        return body + "".join(f"% {n}\n" for n in notes)
    body = frame.to_html(escape=False)
    return f"<h3>{caption(table, style)}</h3>\n{body}\n" + "".join(f"<p>{style.escape(n)}</p>\n" for n in notes)
