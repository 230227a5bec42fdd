# SPDX-License-Identifier: Apache-2.0
"""The registered model's code (MLflow "models from code"): a pyfunc around a ``haloae.bundle``.

MLflow copies this file into the model; at load time it runs it and ``set_model`` hands over the
instance, whose ``load_context`` loads the bundle shipped as the model's artifact ``bundle``.

Input: a DataFrame with one image per row in the column ``image``: base64 of the encoded file (PNG,
JPEG, ...), what a JSON request to ``mlflow models serve`` can carry. The model never opens a file
named by a request: a column ``path`` would let any caller of the server read the server's files,
so a request that has one is refused. Output: a DataFrame with ``score`` (float), ``decision``
(bool: score > threshold) and ``map`` (base64 of the (S, S) float32 anomaly map in ``.npy``
format, or "" for a map-less scoring): ``np.load(io.BytesIO(base64.b64decode(text)))`` turns it
back into an array.
"""

from __future__ import annotations

import base64
import io

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from haloae.vocab import PYFUNC_IMAGE_COLUMN

REFUSED_COLUMNS = ("path",)  # file names the server would open on a caller's behalf


def encode_map(amap: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(amap, dtype=np.float32), allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def check_columns(model_input: pd.DataFrame) -> None:
    """Refuse a request that names files, before anything is read."""
    from haloae.bundle import BundleError

    refused = [c for c in REFUSED_COLUMNS if c in model_input.columns]
    if refused:
        raise BundleError(f"column {refused[0]!r}: not accepted (the model server reads no files on request); "
                          f"send the image file's bytes, base64-encoded, in column {PYFUNC_IMAGE_COLUMN!r}")  # fmt: skip
    if PYFUNC_IMAGE_COLUMN not in model_input.columns:
        raise BundleError(
            f"column {PYFUNC_IMAGE_COLUMN!r} (base64 of an image file) is required; got {list(model_input.columns)}"
        )


def _image(row: pd.Series):
    from PIL import Image

    from haloae.bundle import BundleError

    encoded = row[PYFUNC_IMAGE_COLUMN]
    if not isinstance(encoded, str) or not encoded:
        raise BundleError(f"row {row.name}: column {PYFUNC_IMAGE_COLUMN!r} is empty; give the base64 of an image file")
    try:
        return Image.open(io.BytesIO(base64.b64decode(encoded, validate=True)))
    except Exception as exc:  # binascii.Error, PIL.UnidentifiedImageError, ...
        raise BundleError(
            f"row {row.name}: column {PYFUNC_IMAGE_COLUMN!r} is not a base64-encoded image ({type(exc).__name__})"
        ) from exc


class HaloAEModel(PythonModel):
    """Anomaly score, decision and map per input image, from the bundle artifact."""

    def load_context(self, context) -> None:
        from haloae.bundle import load_bundle

        self.predictor = load_bundle(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        check_columns(model_input)
        images = [_image(row) for _, row in model_input.iterrows()]
        result = self.predictor.predict(images)
        maps = [encode_map(m.numpy()) for m in result.maps] if result.maps is not None else [""] * len(images)
        return pd.DataFrame(
            {"score": result.scores.double().numpy(), "decision": result.decisions.numpy(), "map": maps}
        )


mlflow.models.set_model(HaloAEModel())
