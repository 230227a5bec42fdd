# SPDX-License-Identifier: Apache-2.0
"""The one image reader: every supported mode decoded by its real bit depth, the rest refused by name."""

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from haloae.errors import DatasetError
from haloae.images import check_image, load_image, load_mask, read_rgb, resize_rgb

# One row of 64 levels, 0..255, repeated over 64 rows: the 8-bit reference.
GRADIENT_8 = np.repeat(np.linspace(0, 255, 64).round().astype(np.uint8)[None], 64, axis=0)
GRADIENT_16 = GRADIENT_8.astype(np.uint16) * 257  # the same levels at 16 bits (255 -> 65535)


def _refused(source, *words: str) -> str:
    with pytest.raises(DatasetError) as info:
        load_image(source, 8)
    message = str(info.value)
    assert "\n" not in message and all(word in message for word in words), message
    return message


def corrupt_idat(path: Path) -> None:
    """Flip bytes in the middle of the first IDAT chunk and rewrite its CRC: a valid structure, broken data."""
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[start - 4 : start])
    middle = start + 4 + length // 2
    data[middle : middle + 4] = bytes(b ^ 0xFF for b in data[middle : middle + 4])
    data[start + 4 + length : start + 8 + length] = struct.pack(
        ">I", zlib.crc32(bytes(data[start : start + 4 + length]))
    )
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------- 16-bit grayscale
def test_16bit_png_is_the_same_gradient_as_its_8bit_version(tmp_path: Path) -> None:
    Image.fromarray(GRADIENT_8).save(tmp_path / "g8.png")
    Image.fromarray(GRADIENT_16).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as image:
        assert image.mode == "I;16"
    eight, sixteen = load_image(tmp_path / "g8.png", 32), load_image(tmp_path / "g16.png", 32)
    assert float(sixteen.mean()) < 0.6  # not the all-white image of a clipping conversion
    torch.testing.assert_close(sixteen, eight, atol=1 / 255, rtol=0)
    native = read_rgb(tmp_path / "g16.png", 64)
    assert np.array_equal(native[..., 0], GRADIENT_8) and np.array_equal(native[..., 0], native[..., 2])


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L"])
def test_16bit_pil_images_in_any_byte_order(mode: str) -> None:
    dtype = ">u2" if mode == "I;16B" else "<u2"
    image = Image.frombytes(mode, (64, 64), GRADIENT_16.astype(dtype).tobytes())
    assert np.array_equal(read_rgb(image, 64)[..., 1], GRADIENT_8)


def test_16bit_tiff_is_scaled_by_its_depth(tmp_path: Path) -> None:
    Image.fromarray(GRADIENT_16).save(tmp_path / "g16.tif")
    assert np.array_equal(read_rgb(tmp_path / "g16.tif", 64)[..., 0], GRADIENT_8)


def test_16bit_mask_any_value_above_zero_is_defect(tmp_path: Path) -> None:
    mask = np.zeros((8, 8), dtype=np.uint16)
    mask[2:4, 2:6] = [[1], [256]]  # 1 and 256 are black in 8 bits: they must still count
    mask[6, 6] = 65535
    Image.fromarray(mask).save(tmp_path / "m16.png")
    loaded = load_mask(tmp_path / "m16.png", 8)
    assert torch.equal(loaded[0], torch.from_numpy(mask > 0).float())


# ---------------------------------------------------------------------- 8-bit modes
def test_palette_with_and_without_transparency_gives_its_colours(tmp_path: Path) -> None:
    palette = [0, 0, 0, 200, 100, 50, 10, 250, 90] + [0] * (768 - 9)
    image = Image.new("P", (4, 4))
    image.putpalette(palette)
    image.putpixel((1, 0), 1)
    image.putpixel((2, 1), 2)
    image.save(tmp_path / "plain.png")
    image.info["transparency"] = bytes([0, 128, 255])  # per-entry alpha: what PIL warns about on RGB
    image.save(tmp_path / "transparent.png")
    for name in ("plain.png", "transparent.png"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            rgb = read_rgb(tmp_path / name, 4)
        assert rgb[0, 1].tolist() == [200, 100, 50] and rgb[1, 2].tolist() == [10, 250, 90], name
        assert rgb[0, 0].tolist() == [0, 0, 0], name  # a transparent pixel keeps its colour (alpha dropped)


def test_alpha_is_dropped_in_la_and_rgba(tmp_path: Path) -> None:
    Image.new("RGBA", (4, 4), (200, 100, 50, 0)).save(tmp_path / "rgba.png")
    Image.new("LA", (4, 4), (120, 30)).save(tmp_path / "la.png")
    assert read_rgb(tmp_path / "rgba.png", 4)[0, 0].tolist() == [200, 100, 50]
    assert read_rgb(tmp_path / "la.png", 4)[0, 0].tolist() == [120, 120, 120]


def test_grayscale_and_one_bit_images_become_three_equal_channels(tmp_path: Path) -> None:
    Image.fromarray(GRADIENT_8).save(tmp_path / "l.png")
    one_bit = Image.new("1", (4, 4), 0)
    one_bit.putpixel((1, 1), 1)
    one_bit.save(tmp_path / "1.png")
    gray = read_rgb(tmp_path / "l.png", 64)
    assert all(np.array_equal(gray[..., c], GRADIENT_8) for c in range(3))
    bits = read_rgb(tmp_path / "1.png", 4)
    assert bits[1, 1].tolist() == [255, 255, 255] and bits[0, 0].tolist() == [0, 0, 0]


def test_cmyk_is_converted_to_rgb(tmp_path: Path) -> None:
    image = Image.new("CMYK", (3, 1), (0, 0, 0, 0))  # no ink: white
    image.putpixel((1, 0), (0, 255, 255, 0))  # magenta + yellow: red
    image.putpixel((2, 0), (0, 0, 0, 255))  # black ink
    image.save(tmp_path / "cmyk.tif")
    expected = [[255, 255, 255], [255, 0, 0], [0, 0, 0]]
    assert read_rgb(image, 3)[0].tolist() == expected
    assert read_rgb(tmp_path / "cmyk.tif", 3)[0].tolist() == expected


def test_paths_and_pil_images_read_alike(tmp_path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    with Image.open(tmp_path / "x.png") as image:
        torch.testing.assert_close(load_image(image, 16), load_image(tmp_path / "x.png", 16), atol=0, rtol=0)


def test_grayscale_and_rgba_images_load_as_three_channels(tmp_path: Path) -> None:
    gray = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 256
    Image.fromarray(gray.astype(np.uint8)).save(tmp_path / "gray.png")
    Image.new("RGBA", (40, 40), (200, 100, 50, 128)).save(tmp_path / "rgba.png")
    image = load_image(tmp_path / "gray.png", 32)
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    rgba = load_image(tmp_path / "rgba.png", 16)
    assert rgba.shape == (3, 16, 16)
    assert torch.allclose(rgba[:, 0, 0], torch.tensor([200, 100, 50]) / 255.0)


def test_masks_load_binary(tmp_path: Path) -> None:
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[10:30, 20:40] = 255
    mask[0, 0] = 1  # any value > 0 is anomalous
    Image.fromarray(mask).save(tmp_path / "m.png")
    native = load_mask(tmp_path / "m.png", 64)
    assert native.shape == (1, 64, 64) and native.sum() == 20 * 20 + 1
    loaded = load_mask(tmp_path / "m.png", 32)  # nearest: no blended values
    assert loaded.shape == (1, 32, 32) and set(loaded.unique().tolist()) == {0.0, 1.0}
    assert loaded[0, 5:15, 10:20].sum() == 100


# ---------------------------------------------------------------------- refused
def test_float_and_32bit_images_are_refused_by_name(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4), dtype=np.float32)).save(tmp_path / "float.tif")
    Image.fromarray(np.zeros((4, 4), dtype=np.int32)).save(tmp_path / "int32.tif")
    _refused(tmp_path / "float.tif", "float.tif", "'F'")
    _refused(tmp_path / "int32.tif", "int32.tif", "'I'")
    _refused(Image.fromarray(np.zeros((4, 4), dtype=np.int32)), "image", "'I'")  # no file says its depth
    for path in (tmp_path / "float.tif", tmp_path / "int32.tif"):
        with pytest.raises(DatasetError, match=path.name):
            check_image(path)


def test_broken_pixel_data_behind_a_valid_structure_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    Image.fromarray(GRADIENT_8).save(bad)
    corrupt_idat(bad)
    with Image.open(bad) as image:
        image.verify()  # the checksums are fine: only decoding finds it
    for read in (check_image, lambda path: load_image(path, 8), lambda path: load_mask(path, 8)):
        with pytest.raises(DatasetError, match="broken.png: unreadable image") as info:
            read(bad)
        assert "\n" not in str(info.value)


def test_missing_and_foreign_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not an image")
    _refused(tmp_path / "notes.png", "notes.png", "unreadable image")
    _refused(tmp_path / "absent.png", "absent.png", "unreadable image")


def test_float_resize_is_the_8bit_filter_without_its_rounding() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    as_float = resize_rgb(pixels.astype(np.float32) / 255, 32)
    assert as_float.dtype == np.float32 and as_float.shape == (32, 32, 3)
    assert np.abs(as_float * 255 - resize_rgb(pixels, 32)).max() <= 1.0  # PIL's fixed-point rounding
    square = pixels[:32, :32].astype(np.float32)
    assert resize_rgb(square, 32) is square  # already at the size: untouched, not resampled
    assert np.array_equal(read_rgb(Image.fromarray(pixels), 32), resize_rgb(pixels, 32))
