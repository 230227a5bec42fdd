# SPDX-License-Identifier: Apache-2.0
"""``haloae report``: one self-contained HTML file of a sweep, for a paper or a colleague.

Sections, in order: the runs (how many, which left out), the tables (``analysis.tables`` as
``analysis.render`` writes HTML; with ``eval.protocol: paper``, ``analysis.leak``'s honest beside
LEAKY numbers too), their statistics (intervals, paired tests, who is best:
``analysis.significance``), the figures (bars overall and per category with intervals, the
critical-difference diagram, a two-knob heat map), does validation predict test
(``analysis.val_test`` and its scatter), learning curves (``analysis.curves``), overlays of the best
run with the ground-truth contour and a colour bar (re-scored from its checkpoint; else the run's
own overlay artifacts), and the failed and stopped runs.

Self-contained: every figure is a PNG embedded as base64 (``data:`` URIs), the style sheet is
inline, and nothing refers to a URL, so the file opens offline and can be mailed. A part that
cannot be drawn (one configuration: no CD diagram; no checkpoint: no re-scored overlay) says why
in its place instead of failing the report.
"""

from __future__ import annotations

import base64
import html
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.runs import RunsFrame, client_for, finished
from haloae.errors import InputError
from haloae.vocab import DEFAULT_OBJECTIVE, OVERLAYS_DIR, TAG_STOPPED_BY, TAG_SWEEP, TEST, metric_key

STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-top: .6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: .2em .5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; margin: .4em 0; display: block; }
.note { color: #555; font-size: .9em; } .warning { color: #a40000; font-weight: bold; }
pre { background: #f6f6f6; padding: .5em; overflow-x: auto; font-size: .8em; }
nav a { margin-right: 1em; }
"""
TABLES = ("table2", "table3", "tableS1")


@dataclass
class Section:
    anchor: str
    title: str
    body: str


def embed_png(path: Path, alt: str) -> str:
    """An ``<img>`` whose source is the PNG itself (base64 ``data:`` URI)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def note(text: str, css: str = "note") -> str:
    return f'<p class="{css}">{html.escape(text)}</p>'


def frame_html(frame: pd.DataFrame, index: bool = True) -> str:
    return frame.to_html(index=index, escape=True, na_rep="–", border=0)


def _attempt(build: Callable[[], str]) -> str:
    """A section's body, or why it is missing: a part that cannot be drawn leaves a note, not a crash."""
    try:
        return build()
    except InputError as exc:
        return note(f"Not drawn: {exc}")


# ---------------------------------------------------------------------- the sections
def runs_section(runs: RunsFrame) -> Section:
    counts = runs["status"].value_counts().rename_axis("status").rename("runs").to_frame()
    body = note(runs.attrs.get("summary", "")) + frame_html(counts)
    return Section("runs", "Runs", body)


def tables_section(runs: RunsFrame, split: str, metric: str | None) -> Section:
    from analysis import render, tables
    from analysis.leak import has_leaky

    def build() -> str:
        if finished(runs).empty:
            return note("No FINISHED run: no table.")
        names = list(TABLES) + (["leak"] if has_leaky(runs) else [])  # eval.protocol: paper: honest beside LEAKY
        return "\n".join(render.html_table(t) for t in tables.build(runs, names, split, False, None, metric))

    return Section("tables", "Tables", _attempt(build))


def statistics_section(runs: RunsFrame, split: str, metric: str | None, reference: str | None, test: str) -> Section:
    from analysis.significance import sweep_statistics

    def build() -> str:
        if finished(runs).empty:
            return note("No FINISHED run: no statistics.")
        stats = sweep_statistics(runs, split, metric, reference, test)
        return f"<h3>{html.escape(stats.metric)} against {html.escape(stats.reference)}</h3>" + frame_html(stats.table) + note(stats.caption)

    return Section("statistics", "Statistics: intervals and paired tests", _attempt(build))


def figures_section(runs: RunsFrame, folder: Path, split: str, metric: str) -> Section:
    from analysis.critical_difference import sweep_critical_difference
    from analysis.figures import bar_figure, category_bars_figure, heatmap_figure

    parts = [_attempt(lambda: embed_png(bar_figure(runs, metric, folder), "bars")),
             _attempt(lambda: embed_png(category_bars_figure(runs, metric, folder), "bars per category"))]  # fmt: skip

    def cd() -> str:
        diagram = sweep_critical_difference(runs, folder, split, metric, formats=("png",))
        return (embed_png(diagram.paths[0], "critical-difference diagram") if diagram.paths else "") + note(diagram.message)

    parts.append("<h3>Critical-difference diagram</h3>" + _attempt(cd))
    varied = runs.attrs.get("varied", [])
    if len(varied) == 2:
        parts.append(_attempt(lambda: embed_png(heatmap_figure(runs, varied[0], varied[1], metric, folder, split), "heat map")))
    return Section("figures", "Figures", "\n".join(parts))


def val_test_section(runs: RunsFrame, folder: Path, objective: str) -> Section:
    from analysis.figures import val_test_figure
    from analysis.val_test import on_test_split, val_test_correlation

    def build() -> str:
        correlation = val_test_correlation(runs, objective)
        shown = correlation.table.copy()
        body = note(f"Rank correlation over runs between {correlation.objective} (validation) and {correlation.test_metric} (test).")
        body += frame_html(shown.round(3), index=False)
        body += note(f"Warning: {correlation.warning}", "warning") if correlation.warning else note("Validation predicts test in every row.")
        return body + embed_png(val_test_figure(runs, objective, on_test_split(objective), folder), "validation vs test")

    return Section("val-test", "Does validation predict test?", _attempt(build))


def curves_section(runs: RunsFrame, folder: Path, objective: str) -> Section:
    from analysis.curves import learning_curves_figure

    return Section("curves", "Learning curves", _attempt(lambda: embed_png(learning_curves_figure(runs, folder, objective), "learning curves")))


def overlays_section(runs: RunsFrame, folder: Path, run_id: str | None, images) -> Section:
    from analysis.figures import overlay_figure, overlay_scores

    done = finished(runs)
    chosen = run_id
    if chosen is None and DEFAULT_OBJECTIVE in done.columns and done[DEFAULT_OBJECTIVE].notna().any():
        chosen = done.loc[done[DEFAULT_OBJECTIVE].idxmax(), "run_id"]
    if chosen is None:
        return Section("overlays", "Overlays", note(f"No FINISHED run with {DEFAULT_OBJECTIVE}: no overlays."))
    title = f"Run {chosen[:8]}, the best by {DEFAULT_OBJECTIVE}" if run_id is None else f"Run {chosen[:8]}"
    try:
        figure = overlay_figure(runs, chosen, folder, scored=overlay_scores(runs, chosen, images))
        return Section("overlays", "Overlays", f"<h3>{html.escape(title)}</h3>" + embed_png(figure, "overlays"))
    except InputError as exc:
        why = str(exc)
    artifacts = _overlay_artifacts(runs, chosen, folder)
    if not artifacts:
        return Section("overlays", "Overlays", note(f"Not drawn: {why}; and the run logged no {OVERLAYS_DIR}/ artifacts."))
    body = note(f"Not re-scored ({why}): the run's own {OVERLAYS_DIR}/ artifacts (image | map, ground truth outlined in pink; "
                "no colour bar: the colour range is shared by the images of the run).")  # fmt: skip
    return Section("overlays", "Overlays", f"<h3>{html.escape(title)}</h3>" + body + "".join(embed_png(p, p.name) for p in artifacts))


def _overlay_artifacts(runs: RunsFrame, run_id: str, folder: Path) -> list[Path]:
    import mlflow

    client = client_for(runs.attrs["tracking_uri"])
    if not client.list_artifacts(run_id, OVERLAYS_DIR):
        return []
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=OVERLAYS_DIR, dst_path=str(folder / "artifacts"),
                                                tracking_uri=runs.attrs["tracking_uri"])  # fmt: skip
    return sorted(Path(local).glob("*.png"))


def stopped_by(runs: RunsFrame) -> dict[str, str]:
    """run id -> who stopped it (tag ``stopped_by``: the scheduler, or a signal), for the runs that have it."""
    client = client_for(runs.attrs["tracking_uri"])
    parent = runs.attrs.get("parent_run_id")
    experiments = [client.get_run(parent).info.experiment_id] if parent else [e.experiment_id for e in client.search_experiments()]
    query = f"tags.`{TAG_SWEEP}` = '{runs.attrs['sweep']}' and tags.`{TAG_STOPPED_BY}` LIKE '%'"
    return {r.info.run_id: r.data.tags[TAG_STOPPED_BY] for r in client.search_runs(experiments, query, max_results=50000)}


def failures_section(runs: RunsFrame) -> Section:
    from analysis.runs import STOPPED_AT

    who = stopped_by(runs)
    stopped = runs[STOPPED_AT].notna() if STOPPED_AT in runs.columns else runs["run_id"].isin([])
    listed = runs[(runs["status"] != "FINISHED") | runs["run_id"].isin(who) | stopped]
    if listed.empty:
        return Section("failures", "Failed and stopped runs", note("None: every run FINISHED its full budget."))
    columns = ["variant", "category", "seed", "status", "error"] + [c for c in (STOPPED_AT, "best_epoch") if c in listed.columns]
    table = listed[columns + ["run_id"]].copy()
    table["stopped by"] = [who.get(r, "") for r in table["run_id"]]
    table["run_id"] = table["run_id"].str[:8]
    body = note(f"{len(listed)} runs failed, were stopped, or have not finished: failed and unfinished runs are left out "
                f"of the tables' aggregates; stopped runs whose best checkpoint was evaluated enter them, marked "
                f"with the epoch they stopped at ({STOPPED_AT}).") + frame_html(table, index=False)  # fmt: skip
    return Section("failures", "Failed and stopped runs", body)


# ---------------------------------------------------------------------- the file
def page(title: str, sections: list[Section], header: str) -> str:
    nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    body = "\n".join(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>\n{s.body}\n</section>' for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n{header}\n<nav>{nav}</nav>\n{body}\n</body></html>\n")  # fmt: skip


def build_report(runs: RunsFrame, out: str | Path, split: str = TEST, metric: str | None = None, objective: str = DEFAULT_OBJECTIVE,
                 reference: str | None = None, test: str = "wilcoxon", run_id: str | None = None, images=None) -> Path:  # fmt: skip
    """Write the report of ``runs`` (``analysis.runs.load_runs``) to ``out`` (an .html file); returns its path."""
    from analysis.runs import require_metric

    metric = require_metric(runs, metric or metric_key(split, "image_auroc"))
    if run_id is not None and run_id not in set(runs["run_id"]):
        from analysis.runs import SweepQueryError

        raise SweepQueryError(f"--run {run_id}: not a run of sweep {runs.attrs.get('sweep')}")
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sections = [
            runs_section(runs),
            tables_section(runs, split, metric),
            statistics_section(runs, split, metric, reference, test),
            figures_section(runs, folder, split, metric),
            val_test_section(runs, folder, objective),
            curves_section(runs, folder, objective),
            overlays_section(runs, folder, run_id, images),
            failures_section(runs),
        ]
    sweep = runs.attrs.get("sweep", "?")
    header = note(f"Tracking store {runs.attrs.get('tracking_uri')}; parent run {runs.attrs.get('parent_run_id')}; "
                  f"metric {metric} ({split} split); written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.")  # fmt: skip
    target.write_text(page(f"Sweep {sweep}", sections, header), encoding="utf-8")
    return target
