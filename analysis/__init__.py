# SPDX-License-Identifier: Apache-2.0
"""Analysis of HaloAE sweeps recorded in MLflow: tidy runs, paper-style tables, figures, exports.

    runs      a sweep's child runs -> one pandas DataFrame (a row per trial x category x seed)
    paper     the paper's reported numbers (``paper_tables.csv``), looked up by row and category
    tables    Table 2 / 3 / 4 / S1 shapes and a two-knob pivot: mean +- std over seeds, best in bold
    leak      honest beside paper-protocol (LEAKY) test numbers and their gap, for eval.protocol: paper sweeps
    render    one table model -> Markdown, LaTeX, CSV or HTML
    figures   alpha schedules, anomaly-map overlays, bar charts with seed spread, pivot heat maps
    export    the best run per category by a *validation* metric -> bundle on disk + registered model
    predict   a bundle or ``models:/`` URI on image files -> overlay PNGs and a CSV of scores
    cli       the ``haloae tables|figures|export|predict`` commands

This layer reads MLflow; the model it ships (``haloae.bundle``) loads without MLflow or Ray.
"""
