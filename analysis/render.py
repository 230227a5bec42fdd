# SPDX-License-Identifier: Apache-2.0
"""One table model, four renderers: Markdown, LaTeX (booktabs), HTML (display strings) and CSV (tidy numbers).

A ``Table`` is rows x columns of ``Cell``s; a cell holds one ``Stat`` per metric of the table
(Table 2 pairs image and pixel AUROC): the mean over seeds with its 95% Student-t interval and n,
the paired test of its row against the reference row (``Versus``, Holm-corrected; ``*`` when
significant), whether it is the *significantly* best of its line (bold; else nothing is bold and
the caption says the top rows are tied), footnote marks (``†`` a run stopped early by the
scheduler, ``‡`` a failed run left out) and optionally the paper's values as printed. Every
display format goes through ``cell_text`` (differing only in the ``Style``: bold markup, marks,
the +- sign, escaping), so the formats cannot drift apart; CSV is the long form of the same cells,
in percent.
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
MISSING = "–"  # no run at all
FAILED = "failed"  # runs, none of them usable (failed, killed before evaluation, still running)
SIGNIFICANT = "*"  # differs from the reference row: paired test, p < alpha after Holm
STOPPED = "†"  # includes a run the scheduler stopped early (evaluated at its best checkpoint)
LEFT_OUT = "‡"  # a run of this cell failed and is left out (n counts the others)
LATEX_PACKAGES = ("booktabs",)  # what the LaTeX output needs: \toprule, \midrule, \bottomrule


@dataclass(frozen=True)
class Stat:
    """One metric over seeds, as fractions: mean, sample std (NaN when n < 2), n, and the 95%
    Student-t interval ``low``..``high`` of the mean (NaN when n < 2)."""

    mean: float
    std: float
    n: int
    low: float = math.nan
    high: float = math.nan

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class Versus:
    """A cell's row against the reference row of its line, paired over (category, seed)."""

    p_holm: float  # Holm-corrected across the rows of the line; NaN when the test is undefined
    significant: bool
    difference: float  # mean of row - reference over the pairs (fractions)
    n_pairs: int


@dataclass(frozen=True)
class Cell:
    stats: tuple[Stat | None, ...]  # one per metric of the table; None where nothing was measured
    best: tuple[bool, ...] = ()  # per metric: significantly the best of its line (bold)
    paper: tuple[str | None, ...] | None = None  # the paper's values as printed (percent), per metric
    versus: tuple[Versus | None, ...] = ()  # per metric: the paired test against the reference; None for it
    marks: str = ""  # footnote marks of the cell's runs: STOPPED, LEFT_OUT
    failed: bool = False  # no usable run, but runs that failed: prints FAILED, not MISSING


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
    notes: list[str] = field(default_factory=list)  # footnotes: the split, stopped and failed runs, ties
    legend: list[str] = field(default_factory=list)  # caption sentences: interval, test, markers, bold
    extra_column: tuple[str, dict[str, str]] | None = None  # (header, row -> text): e.g. p vs reference
    extra_row: tuple[str, dict[str, str]] | None = None  # (label, column -> text): the same, configurations as columns

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
    mark: Callable[[str], str]  # footnote / significance marks


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "±": r"$\pm$", "–": "--", "†": r"\dag{}",
          "‡": r"\ddag{}", "ρ": r"$\rho$", "τ": r"$\tau$", "Δ": r"$\Delta$", "≥": r"$\geq$", "<": r"$<$", ">": r"$>$"}  # fmt: skip
_LATEX_MARKS = {"*": "*", "†": r"\dagger", "‡": r"\ddagger"}


def _latex_escape(text: str) -> str:
    return re.sub(r"[\\&%$#_{}~^±–†‡ρτΔ≥<>]", lambda m: _LATEX[m.group()], text)


def _latex_mark(marks: str) -> str:
    return f"$^{{{''.join(_LATEX_MARKS[m] for m in marks)}}}$" if marks else ""


STYLES = {
    "md": Style(lambda s: f"**{s}**", "±", lambda s: s.replace("|", r"\|").replace("*", r"\*"), lambda s: s.replace("*", r"\*")),
    "latex": Style(lambda s: rf"\textbf{{{s}}}", r"$\pm$", _latex_escape, _latex_mark),
    "html": Style(lambda s: f"<b>{s}</b>", "±", html.escape, lambda s: f"<sup>{html.escape(s)}</sup>" if s else ""),
}


def format_stat(stat: Stat | None, style: Style, common_n: int, best: bool = False, marks: str = "") -> str:
    """``97.3 ± 1.2`` in percent, one decimal as the paper: the mean ± the half-width of its 95% t
    interval; bold when best, then ``marks``; ``(n=k)`` when k differs from the table's n."""
    if stat is None or math.isnan(stat.mean):
        return MISSING
    text = f"{100 * stat.mean:.1f}"
    if stat.n > 1 and not math.isnan(stat.half_width):
        text += f" {style.pm} {100 * stat.half_width:.1f}"
    text = (style.bold(text) if best else text) + style.mark(marks)
    return text if stat.n == common_n else f"{text} (n={stat.n})"


def format_cell(cell: Cell | None, style: Style, common_n: int, n_metrics: int) -> str:
    if cell is None:
        return " / ".join([MISSING] * n_metrics)
    if cell.failed and all(s is None for s in cell.stats):
        return FAILED + style.mark(cell.marks)
    best = cell.best or (False,) * len(cell.stats)
    versus = cell.versus or (None,) * len(cell.stats)
    parts = []
    for stat, b, v in zip(cell.stats, best, versus, strict=True):
        marks = (SIGNIFICANT if v is not None and v.significant else "") + (cell.marks if stat is not None else "")
        parts.append(format_stat(stat, style, common_n, b, marks))
    return " / ".join(parts)


def format_paper(cell: Cell | None, style: Style, n_metrics: int) -> str:
    values = cell.paper if cell is not None and cell.paper is not None else (None,) * n_metrics
    return " / ".join(style.escape(v) if v else MISSING for v in values)


def display_frame(table: Table, style: Style) -> pd.DataFrame:
    """The table as strings in ``style``: index = rows (then the extra row), a column per column
    (and its paper column), then the extra column."""
    n = table.common_n
    data: dict[str, list[str]] = {}
    extra_row = [table.extra_row[1].get(c, "") for c in table.columns] if table.extra_row else None
    for i, column in enumerate(table.columns):
        values = [format_cell(table.cell(r, column), style, n, len(table.metrics)) for r in table.rows]
        data[style.escape(column)] = values + ([style.escape(extra_row[i])] if extra_row else [])
        if table.paper and any((c := table.cell(r, column)) is not None and c.paper and any(c.paper) for r in table.rows):
            paper = [format_paper(table.cell(r, column), style, len(table.metrics)) for r in table.rows]
            data[style.escape(f"{column} (paper)")] = paper + ([""] if extra_row else [])
    if table.extra_column:
        header, values = table.extra_column
        data[style.escape(header)] = [style.escape(values.get(r, "")) for r in table.rows] + ([""] if extra_row else [])
    index = [style.escape(r) for r in table.rows] + ([style.escape(table.extra_row[0])] if table.extra_row else [])
    frame = pd.DataFrame(data, index=index)
    frame.index.name = style.escape(table.row_header)
    return frame


def caption(table: Table, style: Style) -> str:
    """The title, then what the cells are and what every marker means (``table.legend``)."""
    return " ".join([f"{style.escape(table.title)}.", *(style.escape(s) for s in table.legend)])


def tidy(table: Table) -> pd.DataFrame:
    """The long form: a row per (row, column, metric) with mean, std and the 95% t interval in
    percent, n, the paired test against the reference (p_holm, significant), best, marks, paper."""
    records = []
    for (row, column), cell in table.cells.items():
        for i, metric in enumerate(table.metrics):
            stat = cell.stats[i]
            versus = cell.versus[i] if cell.versus else None
            records.append({
                "table": table.name, "row": row, "column": column, "metric": metric,
                "mean": 100 * stat.mean if stat else math.nan, "std": 100 * stat.std if stat else math.nan,
                "low": 100 * stat.low if stat else math.nan, "high": 100 * stat.high if stat else math.nan,
                "n": stat.n if stat else 0,
                "p_holm": versus.p_holm if versus else math.nan, "significant": bool(versus and versus.significant),
                "best": bool(cell.best[i]) if cell.best else False,
                "marks": cell.marks + (FAILED if cell.failed and stat is None else ""),
                "paper": (cell.paper[i] if cell.paper else None) or "",
            })  # fmt: skip
    order = {r: i for i, r in enumerate(table.rows)}
    corder = {c: i for i, c in enumerate(table.columns)}
    columns = ["table", "row", "column", "metric", "mean", "std", "low", "high", "n", "p_holm", "significant", "best", "marks", "paper"]
    frame = pd.DataFrame.from_records(records, columns=columns)
    return frame.sort_values(["row", "column"], key=lambda s: s.map(order if s.name == "row" else corder), kind="stable")


def _body_rows(frame: pd.DataFrame) -> list[list[str]]:
    return [[str(i), *row] for i, row in zip(frame.index, frame.itertuples(index=False), strict=True)]


def _markdown(frame: pd.DataFrame) -> str:
    header = [frame.index.name or ""] + list(frame.columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":---:"] * len(frame.columns)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in _body_rows(frame)]
    return "\n".join(lines)


def _latex(table: Table, frame: pd.DataFrame, style: Style) -> str:
    """A booktabs table: one header row (the row header names the first column), the rules, the
    caption above, the footnotes below the tabular."""
    rows = _body_rows(frame)
    body = [" & ".join(row) + r" \\" for row in rows]
    if table.extra_row:  # set off from the cells by a rule
        body.insert(len(rows) - 1, r"\midrule")
    lines = [
        f"% requires \\usepackage{{{','.join(LATEX_PACKAGES)}}} (\\toprule, \\midrule, \\bottomrule)",
        r"\begin{table}[t]", r"\centering",
        rf"\caption{{{caption(table, style)}}}", rf"\label{{tab:{table.name}}}",
        rf"\begin{{tabular}}{{l{'c' * len(frame.columns)}}}", r"\toprule",
        " & ".join([frame.index.name or "", *frame.columns]) + r" \\", r"\midrule",
        *body, r"\bottomrule", r"\end{tabular}",
    ]  # fmt: skip
    if table.notes:
        lines += [r"\par\smallskip", r"{\footnotesize " + r" \\ ".join(style.escape(n) for n in table.notes) + "}"]
    return "\n".join([*lines, r"\end{table}"]) + "\n"


def html_table(table: Table) -> str:
    """The table as one self-contained HTML ``<table>``: caption, header, cells, footnotes in
    ``<tfoot>`` (what ``haloae report`` embeds; no style sheet or script needed)."""
    style = STYLES["html"]
    frame = display_frame(table, style)
    width = len(frame.columns) + 1
    head = "".join(f"<th>{h}</th>" for h in [frame.index.name or "", *frame.columns])
    body = "\n".join("<tr>" + f"<th>{row[0]}</th>" + "".join(f"<td>{v}</td>" for v in row[1:]) + "</tr>" for row in _body_rows(frame))
    foot = "".join(f'<tr><td colspan="{width}">{style.escape(n)}</td></tr>' for n in table.notes)
    return (f'<table class="haloae-table" id="{html.escape(table.name)}">\n<caption>{caption(table, style)}</caption>\n'
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n"
            + (f"<tfoot>{foot}</tfoot>\n" if foot else "") + "</table>")  # fmt: skip


def render(table: Table, fmt: str) -> str:
    """The table as text in ``fmt`` (md, latex, csv, html), with its caption and notes."""
    if fmt == "csv":
        return tidy(table).to_csv(index=False)
    if fmt == "html":
        return html_table(table) + "\n"
    style = STYLES[fmt]
    frame = display_frame(table, style)
    if fmt == "latex":
        return _latex(table, frame, style)
    notes = [f"_{style.escape(n)}_" for n in table.notes]
    return "\n\n".join([f"**{caption(table, style)}**", _markdown(frame), *notes]) + "\n"
