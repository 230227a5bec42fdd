# SPDX-License-Identifier: Apache-2.0
"""Export the best run per category and use it: bundle, registry URI, a served model, ``haloae predict``.

The MLflow data comes from a real small sweep (``tests.helpers.analysis.real_sweep``): every score is
compared with the trial's own evaluation (``haloae.evaluation.evaluate`` of its logged checkpoint) on
the same images.
"""

import base64
import csv
import io
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from analysis.export import ALIAS, f1_threshold
from analysis.runs import client_for, load_runs
from haloae.bundle import load_bundle
from haloae.category_data import prepare_data
from haloae.checkpoint import load_checkpoint
from haloae.cli import main
from haloae.evaluation import evaluate
from haloae.scoring import DEFAULT_SCORING
from tests.helpers.analysis import real_sweep
from tests.helpers.sockets import descendants, listening

CATEGORY = "synth_disc"
MODEL = f"haloae-{CATEGORY}"
URI = f"models:/{MODEL}@{ALIAS}"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real small sweep (Ray Tune + MLflow: seeds 0, 1 on one category), exported once through the CLI."""
    tmp = tmp_path_factory.mktemp("export")
    logged = real_sweep(tmp, "real", (CATEGORY,))
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = logged.tracking_uri  # registry URIs resolve against it
    result = CliRunner().invoke(main, ["export", "--sweep", "real", "--storage", str(logged.storage), "--out", str(tmp / "out")])
    assert result.exit_code == 0, result.output
    yield logged, tmp / "out" / CATEGORY, result.output
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def _chosen(logged):
    """The trial with the best validation AUROC (ties: the first by run id), by hand."""
    best = max(t.final["val/image_auroc"] for t in logged.trials)
    return min((t for t in logged.trials if t.final["val/image_auroc"] == best), key=lambda t: t.run_id)


def _test_images(logged):
    return sorted((logged.data_root / CATEGORY / "test").glob("*/*.png"))


def _own_evaluation(trial, data_root):
    """Scores and maps of the test images by the trial's own evaluation code."""
    model, scorer, _ = load_checkpoint(trial.run_dir / "best.pt")
    test = prepare_data(model.cfg, data_root, CATEGORY).test
    _, maps = evaluate(model, scorer, test, None, torch.device("cpu"), 4, "test", keep_maps=True)
    return test.paths, maps[DEFAULT_SCORING].flatten(1).mean(1), maps[DEFAULT_SCORING][:, 0]


def test_f1_threshold_by_hand():
    threshold, f1 = f1_threshold(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 1, 1]))
    assert threshold == pytest.approx(0.25) and f1 == 1.0
    threshold, f1 = f1_threshold(np.array([0.1, 0.3, 0.2, 0.4]), np.array([0, 0, 1, 1]))
    assert threshold == pytest.approx(0.15) and f1 == pytest.approx(0.8)  # flag 0.2, 0.3, 0.4: P 2/3, R 1


@pytest.mark.slow
def test_export_picks_the_best_validation_run_and_sets_the_champion(sweep):
    logged, bundle, output = sweep
    info = json.loads((bundle / "bundle.json").read_text())
    chosen = _chosen(logged)
    assert info["source_run_id"] == chosen.run_id and info["category"] == CATEGORY
    assert info["metadata"]["selection"]["objective"] == "val/image_auroc"
    assert info["metrics"]["test/image_auroc"] == pytest.approx(chosen.final["test/image_auroc"])
    client = client_for(logged.tracking_uri)
    version = client.get_model_version_by_alias(MODEL, ALIAS)
    assert f"{URI} (version {version.version})" in output
    export_run = client.get_run(version.run_id)
    assert export_run.data.tags["haloae.role"] == "export" and export_run.data.tags["source_run_id"] == chosen.run_id
    assert export_run.data.tags["mlflow.parentRunId"] == logged.parent_run_id
    # the registry version says how it was chosen, its threshold and its source run
    tags = version.tags
    assert tags["objective"] == "val/image_auroc" and float(tags["objective_value"]) == chosen.final["val/image_auroc"]
    assert float(tags["threshold"]) == info["threshold"] and tags["source_run_id"] == chosen.run_id
    assert tags["sweep"] == "real" and tags["category"] == CATEGORY
    assert "val/image_auroc" in version.description and chosen.run_id in version.description and "threshold" in version.description


@pytest.mark.slow
def test_threshold_is_the_f1_cut_on_the_validation_set(sweep):
    logged, bundle, _ = sweep
    predictor = load_bundle(bundle)
    val = prepare_data(predictor.model.cfg, logged.data_root, CATEGORY).val
    scores, labels = predictor.predict(val.images).scores.numpy(), val.labels.numpy().astype(bool)

    def f1(cut):
        flagged = scores > cut
        return 2 * (flagged & labels).sum() / (flagged.sum() + labels.sum())

    cuts = [(a + b) / 2 for a, b in zip(np.sort(scores)[:-1], np.sort(scores)[1:], strict=True)]
    assert f1(predictor.threshold) == pytest.approx(max(f1(c) for c in cuts))
    assert predictor.info["threshold_method"].startswith("max F1 on the validation set")


@pytest.mark.slow
def test_bundle_and_registry_model_give_the_trials_scores(sweep):
    import mlflow

    logged, bundle, _ = sweep
    paths, expected, expected_maps = _own_evaluation(_chosen(logged), logged.data_root)
    result = load_bundle(bundle).predict(paths)
    torch.testing.assert_close(result.scores, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.maps, expected_maps, atol=1e-5, rtol=0)

    model = mlflow.pyfunc.load_model(URI)
    served = model.predict(pd.DataFrame({"image": [_base64(p) for p in paths]}))
    np.testing.assert_allclose(served["score"].to_numpy(), expected.numpy(), atol=1e-5, rtol=0)
    assert served["decision"].tolist() == result.decisions.tolist()
    served_map = np.load(io.BytesIO(base64.b64decode(served["map"][0])), allow_pickle=False)  # the column's .npy format
    np.testing.assert_allclose(served_map, expected_maps[0].numpy(), atol=1e-5, rtol=0)
    with pytest.raises(mlflow.exceptions.MlflowException, match=r"missing inputs \['image'\]"):  # no file names
        model.predict(pd.DataFrame({"path": ["/etc/passwd"]}))


def _base64(path: Path) -> str:
    """An image file as a client sends it to the served model (its ``image`` column)."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _readme_serve_command(model_uri: str, port: int) -> list[str]:
    """The README's ``mlflow models serve`` command, for this model and port."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (line,) = [ln for ln in readme.splitlines() if ln.strip().startswith("mlflow models serve")]
    words = shlex.split(line)
    words = words[: next((i for i, w in enumerate(words) if w in ("&", "&&", ";", "|")), len(words))]  # the shell's part
    for flag, value in (("-m", model_uri), ("-p", str(port))):
        words[words.index(flag) + 1] = value
    return words


def test_the_readme_serve_command_binds_loopback_whatever_mlflow_host_says():
    """MLflow's ``--host`` wins over ``MLFLOW_HOST``: the README's command names 127.0.0.1 itself."""
    words = _readme_serve_command(URI, 5001)
    hosts = [value for flag, value in zip(words, words[1:], strict=False) if flag in ("-h", "--host")]
    assert hosts == ["127.0.0.1"], f"README: {' '.join(words)} names no -h 127.0.0.1"


@pytest.mark.slow
def test_served_champion_answers_http_with_the_bundles_scores(sweep):
    logged, bundle, _ = sweep
    images = _test_images(logged)[:3]
    expected = load_bundle(bundle).predict(images).scores.numpy()
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)  # `mlflow models serve` execs uvicorn from PATH
    # MLFLOW_HOST=0.0.0.0: a shell that sourced cluster/mlflow/mlflow.env (the tracking server's
    # settings) has it, and `mlflow models serve` reads it: the README's command must still stay on loopback
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "MLFLOW_TRACKING_URI": logged.tracking_uri,
           "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_HOST": "0.0.0.0"}  # fmt: skip
    command = _readme_serve_command(URI, port)
    command[0] = str(Path(bin_dir) / "mlflow")
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "the model server did not answer /ping within 90 s"
                time.sleep(0.5)
        sockets = listening(descendants(server.pid))
        assert sockets and all(s.loopback for s in sockets), f"the model server listens beyond loopback: {sorted(sockets, key=str)}"
        rows = [[_base64(p)] for p in images]
        body = json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            predictions = json.loads(response.read())["predictions"]
        by_path = json.dumps({"dataframe_split": {"columns": ["path"], "data": [["/etc/passwd"]]}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", by_path, {"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:  # the server reads no file a request names
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 400 and "root:" not in refused.value.read().decode()
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server's own process group: it and its uvicorn worker
        server.wait(timeout=30)
    np.testing.assert_allclose([p["score"] for p in predictions], expected, atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["bundle", "registry"])
def test_predict_writes_overlays_and_csv_and_skips_a_corrupt_image(sweep, tmp_path, source):
    logged, bundle, _ = sweep
    images = _test_images(logged)[:3]
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    model = str(bundle) if source == "bundle" else URI
    out = tmp_path / "pred"
    result = CliRunner().invoke(main, ["predict", "--model", model, str(images[0]), str(corrupt), *map(str, images[1:]),
                                       "--out", str(out), "--tracking-uri", logged.tracking_uri])  # fmt: skip
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and str(corrupt) in errors[0] and "unreadable image" in errors[0]
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == [str(p) for p in images]
    expected = load_bundle(bundle).predict(images)
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected.scores.numpy(), atol=1e-6, rtol=0)
    assert [r["decision"] == "True" for r in rows] == expected.decisions.tolist()
    overlays = [Path(r["overlay"]) for r in rows]  # test/<defect>/000.png share a stem: names are made unique
    assert len(set(overlays)) == 3 and all(p.is_file() and p.parent == out for p in overlays)
    assert sorted(out.glob("*_overlay.png")) == sorted(overlays)


@pytest.mark.slow
def test_overlay_figure_of_a_real_run(sweep, tmp_path):
    from analysis.figures import make_figures

    logged, _, _ = sweep
    runs = load_runs("real", storage=logged.storage)
    chosen = _chosen(logged)
    paths = make_figures(runs, tmp_path, run_id=chosen.run_id, log=False)
    assert {p.name for p in paths} >= {f"overlays_{chosen.run_id[:8]}.png", f"alpha_{chosen.run_id[:8]}.png"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sweep", "nope"], "unknown sweep 'nope'"),
        (["--sweep", "real", "--categories", "synth_nope"], "unknown category synth_nope"),
        (["--sweep", "real", "--objective", "test/image_auroc"], "must be a validation metric"),
        (["--sweep", "real", "--objective", "val/image_aurc"], "did you mean val/image_auroc?"),
        (["--sweep", "real", "--categories", "synth_dsc"], "did you mean synth_disc?"),
    ],
)
def test_bad_export_requests_are_one_line_errors(sweep, tmp_path, args, message):
    logged, _, _ = sweep
    result = CliRunner().invoke(main, ["export", *args, "--storage", str(logged.storage), "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and message in errors[0]


@pytest.mark.slow
def test_a_second_export_moves_the_champion_to_a_new_version(sweep, tmp_path):
    logged, _, _ = sweep
    client = client_for(logged.tracking_uri)
    old = int(client.get_model_version_by_alias(MODEL, ALIAS).version)
    result = CliRunner().invoke(main, ["export", "--sweep", "real", "--categories", CATEGORY, "--out", str(tmp_path)])  # via $MLFLOW_TRACKING_URI
    assert result.exit_code == 0, result.output
    assert int(client.get_model_version_by_alias(MODEL, ALIAS).version) == old + 1


@pytest.mark.parametrize("given", ["nothing", "a missing store"])
def test_predict_from_the_registry_needs_a_store_and_creates_none(given, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # MLflow's default: sqlite:///<cwd>/mlflow.db
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    store = ["--tracking-uri", f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"] if given == "a missing store" else []
    result = CliRunner().invoke(main, ["predict", "--model", URI, str(image), "--out", "pred", *store])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and ("--tracking-uri" in errors[0] if given == "nothing" else "no MLflow store" in errors[0])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.png"]  # no stray mlflow.db, no folders
