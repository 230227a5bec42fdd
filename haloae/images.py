# SPDX-License-Identifier: Apache-2.0
"""Image and mask files read one way: decoded by their real bit depth, or refused by name.

Everything that reads pixels goes through here: the dataset check (``haloae.categories.scan_category``),
the training and evaluation loaders (``haloae.data``) and prediction (``haloae.bundle``), so what
a model is trained on and what it scores are decoded identically. The rules:

- 8-bit modes: ``1`` (1 bit -> 0/255), ``L``, ``LA``, ``P`` (its palette colours), ``RGB``,
  ``RGBA``, ``RGBX``, ``CMYK`` and ``YCbCr`` (PIL's conversions; no colour profile is applied).
  Grayscale becomes three equal channels.
- 16-bit grayscale (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``; ``I`` when a PNG or TIFF says how
  deep it is) is scaled by its real full scale, 65535 for 16 bits (a TIFF's ``BitsPerSample`` when
  smaller), and rounded to 8 bits: the precision of MVTec AD and of the training cache. Pillow
  itself reduces 16-bit RGB and RGBA PNGs to 8 bits by their high byte.
- Alpha is dropped everywhere (the stored colour is kept, as if opaque): MVTec AD has none, and
  compositing would invent a background colour.
- Any other mode (32-bit integer or float samples, LAB, HSV, premultiplied alpha) is refused with a
  one-line ``DatasetError`` naming the file and its mode.
- Masks: a pixel is defect when any channel of its colour (alpha dropped) is > 0; a 16-bit mask
  is tested on its raw value, before any scaling, so its value 1 counts.

Resizing is PIL's bilinear filter, which widens its support when downscaling (antialiased), on
the 8-bit RGB image (``resize_rgb``; the training images jittered at full size go through the same
filter in float); masks use nearest so 0 and 1 never blend.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from haloae.errors import DatasetError, describe

if TYPE_CHECKING:
    import torch

ImageSource = str | Path | Image.Image
EIGHT_BIT_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_BITS_PER_SAMPLE = 258  # the TIFF tag


def _full_scale(image: Image.Image, name: str) -> int:
    """The raw sample value of full intensity: 255 for 8-bit modes, ``2**bits - 1`` for 16-bit grayscale."""
    if image.mode in EIGHT_BIT_MODES:
        return 255
    # Older Pillow opens 16-bit grayscale PNGs as "I" (32-bit): only the file format says how deep it is.
    if image.mode in SIXTEEN_BIT_MODES or (image.mode == "I" and image.format in ("PNG", "TIFF")):
        bits = 16
        if image.format == "TIFF":
            bits = int(image.tag_v2.get(_BITS_PER_SAMPLE, (16,))[0])
        if 1 <= bits <= 16:
            return 2**bits - 1
    supported = ", ".join((*EIGHT_BIT_MODES, "16-bit grayscale (I;16)"))
    raise DatasetError(f"{name}: unsupported image mode {image.mode!r}; supported: {supported}")


def _unreadable(name: str, exc: Exception) -> DatasetError:
    return DatasetError(f"{name}: unreadable image ({describe(exc)})")


def check_image(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file after verifying its checksums and decoding every pixel.

    A file with a valid header but broken data, or in a mode this module refuses, raises a
    one-line ``DatasetError`` here, so a dataset check catches it before training starts.
    """
    try:
        with Image.open(path) as image:
            image.verify()  # the file's structure and chunk checksums (PNG CRCs)
        with Image.open(path) as image:
            image.load()  # the pixels themselves: a corrupt compressed stream fails only here
            _full_scale(image, str(path))
            return image.size
    except DatasetError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error, zlib.error, ...
        raise _unreadable(str(path), exc) from exc


def _samples(image: Image.Image, name: str) -> tuple[np.ndarray, int]:
    """Raw samples ``(H, W)`` (16-bit grayscale) or ``(H, W, 3)`` (8-bit RGB, alpha dropped), and their full scale."""
    try:
        image.load()
    except Exception as exc:  # PIL's errors for truncated or corrupt pixel data
        raise _unreadable(name, exc) from exc
    full = _full_scale(image, name)
    if full != 255:
        return np.asarray(image), full
    # A palette's transparency can be a byte string, which PIL only resolves into an alpha channel.
    rgb = image.convert("RGBA") if image.mode == "P" else image.convert("RGB")
    return np.ascontiguousarray(np.asarray(rgb)[..., :3]), full


def _decoded(source: ImageSource) -> tuple[np.ndarray, int]:
    """``_samples`` of a PIL image or of a path, opened here."""
    if isinstance(source, Image.Image):
        return _samples(source, getattr(source, "filename", "") or "image")
    try:
        opened = Image.open(source)
    except Exception as exc:  # missing file, not an image, decompression bomb, ...
        raise _unreadable(str(source), exc) from exc
    with opened as image:
        return _samples(image, str(source))


def decode_rgb(source: ImageSource) -> np.ndarray:
    """An image as uint8 ``(H, W, 3)`` at its own size, by the rules above."""
    samples, full = _decoded(source)
    if samples.ndim == 2:  # 16-bit grayscale: scale by the real depth, round to 8 bits, 3 channels
        gray = np.rint(np.clip(samples.astype(np.float32) * (255.0 / full), 0, 255)).astype(np.uint8)
        samples = np.repeat(gray[..., None], 3, axis=-1)
    return samples


def resize_rgb(pixels: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` -> ``(size, size, 3)`` by PIL's bilinear filter (antialiased); unchanged when
    already that size. uint8 is resized as one RGB image; float32 (values in [0, 1], a colour-jittered
    training image) channel by channel as PIL ``F`` images: the same filter without the 8-bit
    rounding (the two agree to within 1/255), so jittering before or after it compares like for like."""
    if pixels.shape[:2] == (size, size):
        return pixels
    if pixels.dtype == np.uint8:
        return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR))
    channels = []
    for c in range(pixels.shape[-1]):
        channel = Image.fromarray(np.ascontiguousarray(pixels[..., c], dtype=np.float32))  # mode F
        channels.append(np.asarray(channel.resize((size, size), Image.Resampling.BILINEAR)))
    return np.stack(channels, axis=-1)


def read_rgb(source: ImageSource, size: int) -> np.ndarray:
    """An image as uint8 ``(size, size, 3)`` by the rules above (bilinear, antialiased resize)."""
    return resize_rgb(decode_rgb(source), size)


def load_image(source: ImageSource, size: int) -> torch.Tensor:
    """An image as float ``(3, size, size)`` in [0, 1]: ``read_rgb`` / 255."""
    import torch  # here, not above: the dataset check (``check_image``) runs in a sweep's driver, without torch

    return torch.from_numpy(read_rgb(source, size).copy()).permute(2, 0, 1).float().div_(255.0)


def load_mask(source: ImageSource, size: int) -> torch.Tensor:
    """A ground-truth mask as float ``(1, size, size)`` in {0, 1}: any channel > 0 is 1 (nearest resize)."""
    import torch

    samples, _ = _decoded(source)
    defect = samples > 0 if samples.ndim == 2 else (samples > 0).any(axis=-1)
    if defect.shape != (size, size):
        defect = np.asarray(Image.fromarray(defect).resize((size, size), Image.Resampling.NEAREST))
    return torch.from_numpy(defect.copy()).float()[None]
