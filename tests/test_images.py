"""The one image reader: every bit depth and mode as 8-bit RGB, EXIF orientation, and one error for a bad file."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from replknet.data.images import ImageReadError, image_loader, read_image, read_label, to_rgb


def _pixels(height: int = 12, width: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _rgb(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


# ---------------------------------------------------------------------------------------------- bit depth
def test_16_bit_files_read_as_their_8_bit_rendering(tmp_path, write_png):
    rgb8 = _pixels()
    gray8 = rgb8[..., 0]
    expected_gray = np.repeat(gray8[..., None], 3, axis=-1)
    # v * 257 is the 16-bit value of the 8-bit v (0 -> 0, 255 -> 65535).
    files = {
        "I;16 png": Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "g16.png") or tmp_path / "g16.png",
        "I;16B tiff": Image.fromarray((gray8.astype(np.uint16) * 257).astype(">u2")).save(tmp_path / "g16b.tif")
        or tmp_path / "g16b.tif",
        "16-bit pgm": Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "g16.pgm") or tmp_path / "g16.pgm",
    }
    assert Image.open(files["I;16 png"]).mode == "I;16" and Image.open(files["I;16B tiff"]).mode == "I;16B"
    for name, path in files.items():
        assert np.array_equal(_rgb(read_image(path)), expected_gray), name
    rgb48 = write_png(tmp_path / "rgb48.png", rgb8.astype(np.uint16) * 257, bit_depth=16, color_type=2)
    assert np.array_equal(_rgb(read_image(rgb48)), rgb8)
    # Before: PIL's convert("RGB") saturated almost every 16-bit gray pixel to 255.
    assert (np.asarray(Image.open(files["I;16 png"]).convert("RGB")) == 255).mean() > 0.9


def test_16_bit_values_keep_their_high_byte(tmp_path, write_png):
    values = np.array([[0, 255, 256, 511, 32767], [32768, 40000, 65279, 65280, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g.png")
    expected = values >> 8  # [0, 0, 1, 1, 127], [128, 156, 254, 255, 255]
    assert np.array_equal(_rgb(read_image(tmp_path / "g.png"))[..., 1], expected)
    rgb48 = np.stack([values, values[::-1], 65535 - values], axis=-1)
    write_png(tmp_path / "c.png", rgb48, bit_depth=16, color_type=2)
    assert np.array_equal(_rgb(read_image(tmp_path / "c.png")), rgb48 >> 8)  # PIL's own 48-bit RGB path agrees


def test_32_bit_integer_and_float_images():
    values = np.array([[0, 257 * 10], [257 * 200, 65535]], dtype=np.int32)
    assert np.array_equal(_rgb(to_rgb(Image.fromarray(values)))[..., 0], [[0, 10], [200, 255]])
    with pytest.raises(ValueError, match="outside the 16-bit range"):
        to_rgb(Image.fromarray(np.array([[0, 70000]], dtype=np.int32)))
    with pytest.raises(ValueError, match="floating-point"):
        to_rgb(Image.fromarray(np.zeros((2, 2), dtype=np.float32)))


# ---------------------------------------------------------------------------------------------- modes
def test_grayscale_and_bilevel(tmp_path):
    gray = _pixels()[..., 0]
    Image.fromarray(gray).save(tmp_path / "l.png")
    assert np.array_equal(_rgb(read_image(tmp_path / "l.png")), np.repeat(gray[..., None], 3, axis=-1))
    Image.fromarray(gray > 127).save(tmp_path / "one.png")
    assert Image.open(tmp_path / "one.png").mode == "1"
    assert np.array_equal(_rgb(read_image(tmp_path / "one.png"))[..., 2], np.where(gray > 127, 255, 0))


def test_palette_with_and_without_transparency(tmp_path):
    colours = np.array([[10, 20, 30], [200, 100, 0], [0, 255, 64], [90, 90, 90]], dtype=np.uint8)
    indices = np.random.default_rng(1).integers(0, 4, size=(9, 7), dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(colours.flatten().tolist())
    image.save(tmp_path / "p.png")
    assert np.array_equal(_rgb(read_image(tmp_path / "p.png")), colours[indices])
    image.save(tmp_path / "pt.png", transparency=2)  # entry 2 fully transparent: the background shows
    assert Image.open(tmp_path / "pt.png").info["transparency"] == 2
    expected = colours[indices].copy()
    expected[indices == 2] = (255, 255, 255)
    assert np.array_equal(_rgb(read_image(tmp_path / "pt.png")), expected)
    expected[indices == 2] = (0, 0, 0)
    assert np.array_equal(_rgb(read_image(tmp_path / "pt.png", background=(0, 0, 0))), expected)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_over_white(tmp_path, mode):
    rgb = _pixels(seed=2)
    if mode == "LA":
        rgb = np.repeat(rgb[..., :1], 3, axis=-1)
    alpha = np.random.default_rng(3).integers(0, 256, size=rgb.shape[:2], dtype=np.uint8)
    alpha[0, 0], alpha[0, 1] = 0, 255
    channels = rgb if mode == "RGBA" else rgb[..., :1]
    Image.fromarray(np.concatenate([channels, alpha[..., None]], axis=-1), mode=mode).save(tmp_path / "a.png")
    a = alpha[..., None] / 255.0
    expected = a * rgb + (1 - a) * 255.0  # straight alpha over an opaque white ground
    got = _rgb(read_image(tmp_path / "a.png")).astype(np.float64)
    assert np.abs(got - expected).max() <= 1.0  # PIL's integer compositing rounds
    assert tuple(got[0, 0]) == (255, 255, 255) and np.array_equal(got[0, 1], rgb[0, 1])


def test_cmyk(tmp_path):
    rgb = _pixels(seed=4)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.tif")  # C = 255 - R, M = 255 - G, Y = 255 - B, K = 0
    assert Image.open(tmp_path / "c.tif").mode == "CMYK"
    assert np.array_equal(_rgb(read_image(tmp_path / "c.tif")), rgb)
    # With black: R = (255 - C) (255 - K) / 255 (PIL's conversion, no colour profile).
    cmyk = np.array([[[0, 0, 0, 128], [255, 0, 0, 0], [51, 102, 0, 51]]], dtype=np.uint8)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "k.tif")
    expected = (255 - cmyk[..., :3].astype(np.float64)) * (255 - cmyk[..., 3:].astype(np.float64)) / 255
    assert np.abs(_rgb(read_image(tmp_path / "k.tif")) - expected).max() <= 1.0
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)  # a CMYK JPEG (lossy)
    assert np.abs(_rgb(read_image(tmp_path / "c.jpg")).astype(int) - rgb).mean() < 12


# The EXIF orientations (TIFF 6.0 / EXIF 2.3): where the stored row 0 / column 0 are shown.
_ORIENTED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # transposed
    6: lambda a: np.rot90(a, k=-1),  # stored rotated 90 counter-clockwise: shown turned 90 clockwise
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],  # transverse (row 0 shown as the right column, bottom up)
    8: lambda a: np.rot90(a, k=1),  # shown turned 90 counter-clockwise
}


@pytest.mark.parametrize("orientation", sorted(_ORIENTED))
def test_exif_orientation_is_applied(tmp_path, orientation):
    stored = _pixels(height=4, width=6, seed=5)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "o.png", exif=exif)
    assert np.array_equal(_rgb(read_image(tmp_path / "o.png")), _ORIENTED[orientation](stored))
    assert np.array_equal(_rgb(read_image(tmp_path / "o.png", exif_orientation=False)), stored)


# ---------------------------------------------------------------------------------------------- bad files
def _bad_files(tmp_path: Path) -> dict[str, Path]:
    Image.fromarray(_pixels(64, 64)).save(tmp_path / "good.jpg", quality=90)
    data = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.png").write_text("not an image at all")
    (tmp_path / "empty.jpg").write_bytes(b"")
    return {
        "truncated": tmp_path / "truncated.jpg",
        "not an image": tmp_path / "notes.png",
        "empty": tmp_path / "empty.jpg",
        "missing": tmp_path / "missing.png",
        "folder": tmp_path,
    }


def test_unreadable_files_raise_one_error_naming_them(tmp_path):
    for name, path in _bad_files(tmp_path).items():
        with pytest.raises(ImageReadError, match=f"cannot read image {path}: ") as caught:
            read_image(path)
        error = caught.value
        assert isinstance(error, ValueError) and error.path == str(path), name
        assert "\n" not in str(error), name
        copy = pickle.loads(pickle.dumps(error))  # crosses process boundaries as itself
        assert type(copy) is ImageReadError and (copy.path, copy.reason, str(copy)) == (
            error.path,
            error.reason,
            str(error),
        )
    assert "truncated" in str(pytest.raises(ImageReadError, read_image, tmp_path / "truncated.jpg").value)
    assert _rgb(image_loader(str(tmp_path / "good.jpg"))).shape == (64, 64, 3)


# ---------------------------------------------------------------------------------------------- labels
def test_label_maps(tmp_path):
    labels = np.random.default_rng(6).integers(0, 5, size=(6, 8), dtype=np.uint8)
    labels[0, 0] = 255
    palette_image = Image.fromarray(labels, mode="P")
    palette_image.putpalette([value for index in range(256) for value in (index, 255 - index, 7)])
    palette_image.save(tmp_path / "p.png")
    assert np.array_equal(read_label(tmp_path / "p.png"), labels)  # indices, not colours
    Image.fromarray(labels).save(tmp_path / "l.png")
    assert np.array_equal(read_label(tmp_path / "l.png"), labels)
    Image.fromarray(labels.astype(np.uint16)).save(tmp_path / "w.png")
    assert read_label(tmp_path / "w.png").dtype == np.uint8
    assert np.array_equal(read_label(tmp_path / "w.png"), labels)
    Image.fromarray(np.full((2, 2), 300, dtype=np.uint16)).save(tmp_path / "big.png")
    with pytest.raises(ImageReadError, match=r"big.png: label values in \[300, 300\] do not fit 8 bits"):
        read_label(tmp_path / "big.png")
    Image.fromarray(_pixels()).save(tmp_path / "rgb.png")
    with pytest.raises(ImageReadError, match="rgb.png: expected a single-channel label image"):
        read_label(tmp_path / "rgb.png")
    with pytest.raises(ImageReadError, match="missing.png: no such file"):
        read_label(tmp_path / "missing.png")
