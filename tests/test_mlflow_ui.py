# SPDX-License-Identifier: Apache-2.0
"""One truth from MLflow to the table, on a real tiny sweep (local Ray, sqlite MLflow): every child
run's latest ``val/*`` (what the runs table, its sort and the compare view show) is the best
checkpoint's, the value ``analysis.runs.load_runs`` (the tables, the export) reads; runs are named
``<variant>/<category>/s<seed>``; the parent holds per-variant means; and headless Chromium sees
the variant names and the best-checkpoint values on the UI's runs page and compare view.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from analysis.runs import load_runs
from tests.helpers.sweeps import run_spec_on_fresh_ray, tiny_spec, trial_runs
from tests.helpers.tracking_server import free_port, http_status, stop_group

pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.soak]  # a real sweep, an MLflow server and Chromium

EPOCHS = 4
LR = 3e-3  # a fast rate: validation AUROC wanders, so best epochs before the last one occur (checked below)
VARIANTS = ("haloae", "equal_weights")
CATEGORY = "synth_disc"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """2 variants x 1 category x 2 seeds, 4 epochs: ``(spec, outcome, runs frame, child runs)``."""
    tmp = tmp_path_factory.mktemp("ui")
    path = tiny_spec(
        tmp, "uisweep", variants=list(VARIANTS), seeds=[0, 1],
        data={"synthetic": {"categories": [CATEGORY], "size": 32, "seed": 0}, "categories": "all"},
        overrides={"train.epochs": EPOCHS, "train.steps_per_epoch": 2, "optim.lr": LR},
        objective={"metric": "val/image_auroc", "mode": "max", "aggregate": "per_category"},
    )  # fmt: skip
    spec, outcome = run_spec_on_fresh_ray(path)
    frame = load_runs(spec.name, tracking_uri=spec.tracking_uri())
    return spec, outcome, frame, trial_runs(spec.tracking_uri(), spec.experiment_name())


def _history(uri: str, run_id: str, key: str) -> dict[int, float]:
    from mlflow.tracking import MlflowClient

    return {m.step: m.value for m in MlflowClient(uri).get_metric_history(run_id, key)}


def test_latest_val_equals_the_tables_value_for_every_run(sweep):
    from mlflow.tracking import MlflowClient

    spec, _, frame, runs = sweep
    uri = spec.tracking_uri()
    assert len(runs) == len(VARIANTS) * 2 and (frame["status"] == "FINISHED").all()
    rows = frame.set_index("run_id")
    best_before_last = 0
    for run in runs:
        latest, row = run.data.metrics, rows.loc[run.info.run_id]
        val_keys = sorted(k for k in latest if k.startswith("val/"))
        assert "val/image_auroc" in val_keys and "val/pixel_auroc" in val_keys
        for key in val_keys:
            assert latest[key] == row[key], f"{run.info.run_name}: MLflow shows {key}={latest[key]}, the tables {row[key]}"
        # ... and both are the best checkpoint's own evaluation (metrics.json of finish)
        local = MlflowClient(uri).download_artifacts(run.info.run_id, "metrics.json")
        evaluated = json.loads(Path(local).read_text())
        assert all(latest[k] == evaluated[k] for k in val_keys) and latest["test/image_auroc"] == evaluated["test/image_auroc"]
        best = int(latest["best_epoch"])
        curve = _history(uri, run.info.run_id, "curve/val/image_auroc")
        assert sorted(curve) == list(range(EPOCHS)), "the per-epoch curve keeps every epoch"
        assert curve[best] == max(curve.values()), "best.pt is the epoch with the best per-epoch objective"
        if best < EPOCHS - 1 and curve[EPOCHS - 1] != latest["val/image_auroc"]:
            best_before_last += 1  # the old logging (val/* every epoch, then at step best_epoch) showed the last epoch's
    assert best_before_last, "no run whose best epoch is not its last: the check could not tell the two apart"


def test_runs_are_named_by_variant_category_seed_with_those_as_params(sweep):
    _, _, _, runs = sweep
    names = sorted(r.info.run_name for r in runs)
    assert names == sorted(f"{v}/{CATEGORY}/s{s}" for v in VARIANTS for s in (0, 1))
    for run in runs:
        params, tags = run.data.params, run.data.tags
        assert (params["variant"], params["category"], params["seed"]) == (tags["variant"], tags["category"], tags["seed"])


def test_parent_run_holds_the_per_variant_means_of_the_tables_values(sweep):
    from mlflow.tracking import MlflowClient

    spec, outcome, frame, _ = sweep
    parent = MlflowClient(spec.tracking_uri()).get_run(outcome.parent_run_id).data.metrics
    for variant, rows in frame.groupby("variant"):
        assert parent[f"runs/{variant}"] == len(rows)
        for key in ("val/image_auroc", "test/image_auroc", "test/pixel_auroc", "test/aupro"):
            assert parent[f"mean/{variant}/{key}"] == pytest.approx(rows[key].mean(), abs=1e-12), (variant, key)


def test_summary_links_the_runs_table_in_the_model_training_view(sweep):
    spec, outcome, _, runs = sweep
    experiment_id = runs[0].info.experiment_id
    assert f"#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey=haloae-{spec.name}" in outcome.summary()


# ---------------------------------------------------------------------- the UI itself
@pytest.fixture(scope="module")
def ui(sweep, tmp_path_factory):
    """``mlflow server`` (one worker) on the sweep's store at a free loopback port."""
    spec = sweep[0]
    folder = tmp_path_factory.mktemp("ui-server")
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [str(bin_dir / "mlflow"), "server", "--backend-store-uri", spec.tracking_uri(), "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]  # fmt: skip
    log = folder / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while http_status(f"{url}/health") != 200:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"mlflow server did not answer in 120 s: {log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield url, folder
    finally:
        stop_group(server)


def rendered_text(url: str, profile: Path, window: str = "4000,1200") -> str:
    """The page's text after its scripts ran (headless Chromium's DOM, tags and scripts removed)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed (Debian: apt-get install -y chromium)"
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}",
         "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", f"--window-size={window}",
         "--virtual-time-budget=30000", "--dump-dom", url],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", result.stdout, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


def test_runs_page_shows_the_variants_and_best_checkpoint_values(sweep, ui):
    from sweeps.ui_view import runs_page

    spec, outcome, frame, runs = sweep
    url, folder = ui
    link = next(line for line in outcome.summary().splitlines() if "open the UI" in line).rpartition("-> ")[2]
    assert link == runs_page("http://127.0.0.1:5000", runs[0].info.experiment_id, spec.name)
    text = rendered_text(runs_page(url, runs[0].info.experiment_id, spec.name), folder / "profile-runs")
    assert "Model training" in text and "val/image_auroc" in text, text[:2000]
    for run in runs:
        assert run.info.run_name in text, f"{run.info.run_name} is not on the runs page"
    for variant in VARIANTS:
        assert variant in text
    for value in frame["val/image_auroc"]:  # the UI prints the shortest repr, as Python does
        assert repr(float(value)) in text, f"best-checkpoint val/image_auroc {value!r} is not on the runs page"
    # sorted by the objective: the page lists the runs in the order of the tables' values
    order = sorted(runs, key=lambda r: text.index(r.info.run_name))
    values = [r.data.metrics["val/image_auroc"] for r in order]
    assert values == sorted(values, reverse=True), values


def test_compare_view_shows_the_variants_and_best_epochs(sweep, ui):
    _, _, frame, runs = sweep
    url, folder = ui
    ids = urllib.parse.quote(json.dumps([r.info.run_id for r in runs]))
    experiments = urllib.parse.quote(json.dumps([runs[0].info.experiment_id]))
    text = rendered_text(f"{url}/#/compare-runs?runs={ids}&experiments={experiments}", folder / "profile-compare")
    assert f"Comparing {len(runs)} Runs" in text, text[:2000]
    names = text.index("Run Name:")
    shown = sorted(runs, key=lambda r: text.index(r.info.run_name, names))
    for variant in VARIANTS:
        assert variant in text
    # the metrics table (alphabetical, so best_epoch comes first) holds each run's best epoch, in column order
    metrics = text[text.index("Metrics Show diff only") :]
    best_epochs = " ".join(str(int(v)) for v in frame.set_index("run_id").loc[[r.info.run_id for r in shown], "best_epoch"])
    assert best_epochs in metrics, metrics[:1500]
