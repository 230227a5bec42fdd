# SPDX-License-Identifier: Apache-2.0
"""The registered model's pyfunc: base64 images in, and no file on the server read on a caller's request.

The real served model (through ``mlflow models serve``) is tested in ``test_analysis_export.py``;
here the pyfunc class runs on a stand-in predictor, and an audit hook watches every ``open``.
"""

import base64
import io
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from analysis.export import signature
from analysis.pyfunc_model import HaloAEModel
from haloae.bundle import BundleError, PredictResult

SECRET = "/etc/passwd"
_opened: list[str] | None = None  # paths opened while a test watches (audit hooks cannot be removed)


def _audit(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], str):
        _opened.append(args[0])


sys.addaudithook(_audit)


@pytest.fixture
def opened():
    global _opened
    _opened = []
    yield _opened
    _opened = None


class _RecordingPredictor:
    """Scores every image 0.5 and records what it was given."""

    def __init__(self) -> None:
        self.calls: list[list] = []

    def predict(self, images):
        self.calls.append(list(images))
        n = len(images)
        return PredictResult(torch.full((n,), 0.5), torch.zeros(n, 4, 4), torch.zeros(n, dtype=torch.bool))


def _model() -> HaloAEModel:
    model = HaloAEModel()
    model.predictor = _RecordingPredictor()
    return model


def _png_base64() -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.mark.parametrize(
    "columns",
    [{"path": [SECRET]}, {"image": [_png_base64()], "path": [SECRET]}],
    ids=["path-only", "image-and-path"],
)
def test_a_request_naming_a_server_file_is_refused_and_reads_nothing(opened, columns):
    model = _model()
    with pytest.raises(BundleError, match=r"column 'path': not accepted .*column 'image'"):
        model.predict(None, pd.DataFrame(columns))
    assert model.predictor.calls == []
    assert SECRET not in opened


def test_a_base64_image_is_scored():
    model = _model()
    out = model.predict(None, pd.DataFrame({"image": [_png_base64(), _png_base64()]}))
    assert out["score"].tolist() == [0.5, 0.5] and out["decision"].tolist() == [False, False]
    assert np.load(io.BytesIO(base64.b64decode(out["map"][0])), allow_pickle=False).shape == (4, 4)
    assert [image.size for image in model.predictor.calls[0]] == [(8, 8), (8, 8)]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"picture": ["x"]}, r"column 'image' \(base64 of an image file\) is required; got \['picture'\]"),
        ({"image": [""]}, r"row 0: column 'image' is empty"),
        ({"image": ["not base64!"]}, r"row 0: column 'image' is not a base64-encoded image \(Error\)"),
    ],
)
def test_bad_image_columns_are_one_line_errors(columns, message):
    with pytest.raises(BundleError, match=message):
        _model().predict(None, pd.DataFrame(columns))


def test_the_signature_takes_only_a_required_image_column():
    inputs = signature().inputs
    assert inputs.input_names() == ["image"] and all(spec.required for spec in inputs.inputs)
