# SPDX-License-Identifier: Apache-2.0
"""The registered model's code (MLflow "models from code"): a pyfunc around a ``haloae.bundle``.

MLflow copies this file into the model; at load time it runs it and ``set_model`` hands over the
instance, whose ``load_context`` loads the bundle shipped as the model's artifact ``bundle``.

Input: a DataFrame with one image per row, in a column ``image`` (base64 of the encoded file:
PNG, JPEG, ...; what a JSON request to ``mlflow models serve`` can carry) or ``path`` (a file the
server can read). Output: a DataFrame with ``score`` (float), ``decision`` (bool: score >
threshold) and ``map`` (base64 of the (S, S) float32 anomaly map in ``.npy`` format, or "" for a
map-less scoring); ``decode_map`` turns it back into an array.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

INPUT_COLUMNS = ("image", "path")


def encode_image(path: str | Path) -> str:
    """An image file as the base64 text of the ``image`` column."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def encode_map(amap: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(amap, dtype=np.float32), allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_map(text: str) -> np.ndarray:
    """The ``map`` column back to an (S, S) float32 array."""
    return np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)


def _image(row: pd.Series):
    from PIL import Image

    from haloae.bundle import BundleError

    encoded = row.get("image")
    if isinstance(encoded, str) and encoded:
        try:
            return Image.open(io.BytesIO(base64.b64decode(encoded, validate=True)))
        except Exception as exc:  # binascii.Error, PIL.UnidentifiedImageError, ...
            raise BundleError(f"row {row.name}: column 'image' is not a base64-encoded image ({type(exc).__name__})") from exc
    path = row.get("path")
    if isinstance(path, str) and path:
        return path
    raise BundleError(f"row {row.name}: give a base64 image in column 'image' or a file in column 'path'")


class HaloAEModel(PythonModel):
    """Anomaly score, decision and map per input image, from the bundle artifact."""

    def load_context(self, context) -> None:
        from haloae.bundle import load_bundle

        self.predictor = load_bundle(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        images = [_image(row) for _, row in model_input.iterrows()]
        result = self.predictor.predict(images)
        maps = [encode_map(m.numpy()) for m in result.maps] if result.maps is not None else [""] * len(images)
        return pd.DataFrame({"score": result.scores.double().numpy(), "decision": result.decisions.numpy(), "map": maps})


mlflow.models.set_model(HaloAEModel())
