# SPDX-License-Identifier: Apache-2.0
"""``haloae tables | figures | report | sweeps | export | predict``: the analysis layer's commands
(loaded lazily by ``haloae.cli``). Heavy imports (pandas, MLflow, torch) happen inside the commands.

Bad input (unknown sweep, category, knob, metric or format) raises an ``InputError`` subclass,
which the ``haloae`` group prints as one line with exit code 2; choices are checked the same way
rather than by ``click.Choice`` so that they too fail in one line.
"""

from __future__ import annotations

import sys

import click

from haloae.dotted import AssignmentError, hint, parse_assignments
from haloae.errors import InputError
from haloae.vocab import (
    DEFAULT_OBJECTIVE,
    DEFAULT_STORAGE,
    ENV_TRACKING_URI,
    FIGURE_FORMATS,
    REPORT_FILE,
    TEST,
    TRACKING_DB_FILE,
    VAL,
)


class ChoiceError(InputError):
    """An option value outside its choices."""


def _choice(name: str, valid: tuple[str, ...]):
    def check(ctx, param, value):
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if v is not None and v not in valid:
                raise ChoiceError(f"{name}: unknown {v!r}; {hint(v, valid)}valid: {', '.join(valid)}")
        return value

    return check


def _pair(name: str):
    def check(ctx, param, value):
        if value is None:
            return None
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if len(parts) != 2:
            raise ChoiceError(f"{name}: give two knobs separated by a comma, e.g. model.block_size,model.halo_size; got {value!r}")
        return parts[0], parts[1]

    return check


def _where(ctx, param, value):
    try:
        return parse_assignments(value, parse_values=False)  # compared as text and as a literal (runs.select)
    except AssignmentError as exc:
        raise ChoiceError(f"--where {exc.item!r}: expected KEY=VALUE, e.g. variant=haloae") from exc


FORMATS = ("md", "latex", "csv", "html")
SPLITS = (TEST, VAL)
TABLE_CHOICES = ("all", "table2", "table3", "table4", "tableS1", "pivot", "leak")

SWEEP = click.option("--sweep", required=True, help="Sweep name (its MLflow parent run's `sweep` tag).")
TRACKING = click.option("--tracking-uri", default=None, help=f"MLflow tracking URI (default: --storage, ${ENV_TRACKING_URI}, {DEFAULT_STORAGE}).")
STORAGE = click.option("--storage", default=None, type=click.Path(file_okay=False), help=f"Sweep storage root holding <sweep>/{TRACKING_DB_FILE}.")
SPLIT = click.option("--split", default=TEST, show_default=True, callback=_choice("--split", SPLITS), help="Metrics of: test | val.")
PIVOT = click.option("--pivot", "pivot_knobs", default=None, callback=_pair("--pivot"), metavar="ROWS,COLUMNS", help="Two knobs for a pivot table / heat map.")
METRIC = click.option("--metric", default=None, help="Metric of pivots and bars (default: <split>/image_auroc).")
WHERE = click.option("--where", multiple=True, callback=_where, metavar="KEY=VALUE", help="Keep runs whose column equals VALUE (repeatable).")


def _runs(sweep, tracking_uri, storage, where, stage=None):
    import warnings

    from analysis.runs import RunsWarning, load_runs, select

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunsWarning)  # said once, below
        runs = load_runs(sweep, tracking_uri, storage, stage)
    click.echo(runs.attrs["summary"], err=True)
    return select(runs, where) if where else runs


@click.command()
@SWEEP
@TRACKING
@STORAGE
@click.option("--table", "which", multiple=True, default=("all",), callback=_choice("--table", TABLE_CHOICES),
              help="all | table2 | table3 | table4 | tableS1 | pivot | leak (repeatable; all = 2, 3/4, S1, pivot if --pivot, "
                   "leak if the sweep ran eval.protocol: paper: honest beside LEAKY test numbers).")  # fmt: skip
@click.option("--format", "fmt", default="md", show_default=True, callback=_choice("--format", FORMATS), help="md | latex | csv | html.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False), help="Write <out>/<table>.<ext> instead of printing.")
@click.option("--paper", is_flag=True, help="Put the paper's reported numbers beside ours.")
@SPLIT
@PIVOT
@METRIC
@WHERE
@click.option("--stats/--no-stats", default=True, show_default=True,
              help="Then the statistics of --metric: 95% t intervals, paired tests against --reference (Holm), val-vs-test rank correlation.")  # fmt: skip
@click.option("--reference", default=None, help="Configuration the paired tests compare against (default: the first row).")
@click.option("--test", "paired", default="wilcoxon", show_default=True, help="Paired test over (category, seed): wilcoxon | ttest.")
@click.option("--stage", default="auto", show_default=True, help="Two-stage sweeps: auto (= confirm) | screen | confirm | all.")
@click.option("--cell-metrics", default="image_auroc,pixel_auroc", show_default=True, help="Metrics of each cell: image_auroc, pixel_auroc, aupro.")
def tables(sweep, tracking_uri, storage, which, fmt, out_dir, paper, split, pivot_knobs, metric, where, stats, reference, paired, stage, cell_metrics) -> None:
    """Paper-style tables of a sweep: mean ± 95% t interval over seeds, * vs --reference (Holm), bold only when significantly best; then their statistics."""
    from pathlib import Path

    from analysis import render
    from analysis import tables as shapes
    from analysis.leak import has_leaky
    from analysis.runs import finished
    from analysis.significance import sweep_statistics
    from haloae.vocab import STATISTICS_FILE

    runs = _runs(sweep, tracking_uri, storage, where, stage)
    names = list(which)
    if "all" in names:
        names = ["table2", "table3", "tableS1"] + (["pivot"] if pivot_knobs else []) + (["leak"] if has_leaky(runs) else [])
    built = shapes.build(runs, names, split, paper, pivot_knobs, metric, tuple(m.strip() for m in cell_metrics.split(",") if m.strip()), reference, paired)
    if paper:
        _note_paper_matches(built)
    texts = [(t, render.render(t, fmt)) for t in built]
    statistics = None
    if stats and not finished(runs).empty:
        statistics = sweep_statistics(runs, split, metric, reference, paired).text()
    if out_dir is None:
        click.echo("\n".join(text for _, text in texts))
        if statistics:  # plain text: beside Markdown on stdout, else on stderr so the table stays parseable
            click.echo("\n" + statistics, err=fmt != "md")
        return
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for table, text in texts:
        path = folder / f"{table.name}.{render.EXTENSIONS[fmt]}"
        path.write_text(text)
        click.echo(str(path))
    if statistics:
        (folder / STATISTICS_FILE).write_text(statistics + "\n")
        click.echo(str(folder / STATISTICS_FILE))


def _note_paper_matches(built) -> None:
    """``--paper`` says which rows the paper does not report: in each table's notes, and on stderr
    in one line when no row of any table matched (then the output holds nothing of the paper)."""
    from analysis.paper import no_match_note, unmatched_rows

    for table in built:
        text = no_match_note(table)
        if text:
            table.notes.append(text)
    papered = [t for t in built if t.paper]
    if papered and all(len(unmatched_rows(t)) == len(t.rows) for t in papered):
        rows = next((t.rows for t in papered if t.name in ("table3", "table4")), papered[0].rows)  # the configurations
        click.echo(f"Note: --paper: no paper row matches this sweep's rows ({', '.join(rows)}); the paper reports named "
                   "variants (see `haloae variants`) and Table S1's scorings, so no paper value is shown.", err=True)  # fmt: skip


@click.command()
@SWEEP
@TRACKING
@STORAGE
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the figures.")
@click.option("--run", "run_id", default=None, help=f"Run for the alpha schedule and overlays (default: best {DEFAULT_OBJECTIVE}).")
@click.option("--images", multiple=True, type=click.Path(dir_okay=False), help="Images for the overlays (repeatable; default: a few test images).")
@PIVOT
@METRIC
@SPLIT
@WHERE
@click.option("--log/--no-log", default=True, show_default=True, help="Also log the figures to the sweep's parent run (figures/).")
@click.option("--format", "fmt", default="png", show_default=True, callback=_choice("--format", FIGURE_FORMATS), help="png | pdf | svg.")
def figures(sweep, tracking_uri, storage, out_dir, run_id, images, pivot_knobs, metric, split, where, log, fmt) -> None:
    """Figures of a sweep: alpha schedule, overlays, bars (overall and per category, with intervals),
    validation vs test, pivot heat map, critical-difference diagram; as PNG, PDF or SVG."""
    from analysis.critical_difference import sweep_critical_difference
    from analysis.figures import make_figures

    runs = _runs(sweep, tracking_uri, storage, where)
    for path in make_figures(runs, out_dir, run_id, list(images) or None, pivot_knobs, metric, split, log, fmt):
        click.echo(str(path))
    diagram = sweep_critical_difference(runs, out_dir, split, metric, formats=(fmt,))
    for path in diagram.paths:
        click.echo(str(path))
    click.echo(diagram.message, err=True)  # the caption, or why no diagram was drawn


@click.command()
@SWEEP
@click.option("--categories", default=None, help="Comma-separated categories (default: every category of the sweep).")
@TRACKING
@STORAGE
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Bundles go to <out>/<category>/.")
@click.option("--objective", default=DEFAULT_OBJECTIVE, show_default=True, help="Validation metric that picks the run.")
@click.option("--data-root", default=None, type=click.Path(file_okay=False), help="Dataset root (default: the run's data_root tag).")
@click.option("--register/--no-register", default=True, show_default=True, help="Register haloae-<category> with alias champion.")
def export(sweep, categories, tracking_uri, storage, out_dir, objective, data_root, register) -> None:
    """Export the best run per category (by a validation metric): bundle + registered model."""
    from analysis.export import export_sweep

    names = [c.strip() for c in categories.split(",") if c.strip()] if categories else None
    for e in export_sweep(sweep, out_dir, names, tracking_uri, storage, objective, data_root, register):
        where = f" -> {e.model_uri} (version {e.version})" if e.model_uri else ""
        click.echo(f"{e.category}: run {e.run_id} {e.objective}={e.value:.4f} threshold={e.threshold:.6g} bundle {e.bundle}{where}")


@click.command()
@click.option("--model", required=True, help="A bundle folder or models:/haloae-<category>@champion.")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for overlays and predictions.csv.")
@TRACKING
def predict(model, images, out_dir, tracking_uri) -> None:
    """Score images: an overlay PNG per image and predictions.csv (image, score, decision)."""
    from analysis.predict import predict_files

    report = predict_files(model, list(images), out_dir, tracking_uri)
    for row in report.table.itertuples(index=False):
        click.echo(f"{row.image}: score {row.score:.6g} {'ANOMALOUS' if row.decision else 'normal'}")
    click.echo(str(report.csv))
    for error in report.errors:
        click.echo(f"Error: {error}", err=True)
    if report.errors:
        sys.exit(2)


@click.command()
@SWEEP
@TRACKING
@STORAGE
@click.option("--out", "out_file", default=None, type=click.Path(dir_okay=False), help=f"The HTML file (default: ./{REPORT_FILE}).")
@SPLIT
@METRIC
@click.option("--reference", default=None, help="Configuration the paired tests compare against (default: the first row).")
@click.option("--test", "paired", default="wilcoxon", show_default=True, help="Paired test over (category, seed): wilcoxon | ttest.")
@click.option("--run", "run_id", default=None, help=f"Run for the overlays (default: best {DEFAULT_OBJECTIVE}).")
@click.option("--images", multiple=True, type=click.Path(dir_okay=False), help="Images for the overlays (repeatable; default: a few test images).")
@WHERE
def report(sweep, tracking_uri, storage, out_file, split, metric, reference, paired, run_id, images, where) -> None:
    """One self-contained HTML report of a sweep: tables with intervals and tests, figures, CD diagram,
    val-vs-test correlation, learning curves, overlays, failed and stopped runs. Prints its path."""
    from analysis.report import build_report

    runs = _runs(sweep, tracking_uri, storage, where)
    target = out_file or REPORT_FILE.format(sweep=sweep)
    click.echo(str(build_report(runs, target, split, metric, reference=reference, test=paired, run_id=run_id, images=list(images) or None)))


@click.command("sweeps")
@click.option("--storage", default=DEFAULT_STORAGE, show_default=True, type=click.Path(file_okay=False), help="Sweep storage root.")
def sweeps_list(storage) -> None:
    """List the sweeps under a storage and their state (running / finished / interrupted / failed,
    trials done/total), from their folders alone: no Ray is started."""
    from analysis.listing import list_sweeps

    states = list_sweeps(storage)
    if not states:
        click.echo(f"no sweeps under {storage}")
    for state in states:
        click.echo(state.line())
