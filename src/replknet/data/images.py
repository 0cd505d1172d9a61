"""One image reader for the whole library: any file PIL opens, as an 8-bit RGB image, or a label map.

``read_image`` is what every dataset, ``predict``, the ERF and shape-bias tools and the bundled photos go through:

- 8-bit files are read as they are; 16-bit files (``I;16``/``I;16B`` grayscale, 48-bit RGB, 16-bit PGM/TIFF) keep
  their high byte (``value >> 8``): a 16-bit file whose values are ``v * 257`` reads exactly as its 8-bit ``v``.
- grayscale (``L``, ``1``) is repeated over the three channels; palette images are looked up;
- transparency (``RGBA``, ``LA``, a palette or colour with a transparent entry) is composited over a background,
  white by default;
- ``CMYK`` goes through PIL's conversion (``R = (255 - C) * (255 - K) / 255``, no colour profile);
- the EXIF orientation tag is applied, so the pixels are as a viewer shows them.

A file that cannot be read (missing, truncated, not an image, an unsupported pixel format) raises
``ImageReadError``, a ``ValueError`` whose message names the file; it pickles with its path and reason, so it
crosses DataLoader worker processes intact.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["WHITE", "ImageReadError", "image_loader", "read_image", "read_label", "to_rgb"]

WHITE = (255, 255, 255)

# PIL's modes for one channel of 16 bits ("I;16" little-endian, "I;16B" big-endian, "I;16N" native order).
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class ImageReadError(ValueError):
    """An image file that cannot be read; ``path`` is the file, ``reason`` what went wrong."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")

    def __reduce__(self):
        # Rebuilt from (path, reason), not from the formatted message, so that a copy pickled across a
        # DataLoader worker or a multiprocessing pool is the same error.
        return (type(self), (self.path, self.reason))


def _high_byte(image: Image.Image) -> Image.Image:
    """A 16-bit (or 32-bit integer) grayscale image as 8-bit ``L`` (``LA`` if it has a transparent value)."""
    values = np.asarray(image)  # (H, W): uint16 of either byte order, or int32 for mode "I"
    if image.mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
        # NOTE: a 32-bit integer image has no stated range; PIL opens 16-bit PNG/PGM files as "I" or "I;16",
        # so "I" is read as 16-bit and values outside it are refused rather than clipped.
        raise ValueError(
            f"32-bit integer pixels in [{values.min()}, {values.max()}] are outside the 16-bit range; "
            "save the image with 8 or 16 bits per channel"
        )
    gray = (values.astype(np.uint32) >> 8).astype(np.uint8)
    transparent = image.info.get("transparency")
    if isinstance(transparent, int):
        alpha = np.where(values == transparent, 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([gray, alpha], axis=-1))  # (H, W, 2) uint8 -> "LA"
    return Image.fromarray(gray)  # (H, W) uint8 -> "L"


def to_rgb(image: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Any PIL image as 8-bit RGB (see the module docstring for each mode); transparency over ``background``.

    Raises:
        ValueError: a pixel format without a defined 8-bit rendering (floating-point, out-of-range integers).
    """
    # NOTE: torchvision's and timm's loaders call ``convert("RGB")``: it saturates 16-bit grayscale (values above
    # 255 all become 255) and drops the alpha channel, showing whatever colour lies under transparent pixels.
    if image.mode in _SIXTEEN_BIT or image.mode == "I":
        image = _high_byte(image)
    if image.mode == "F":
        raise ValueError("32-bit floating-point pixels have no defined range; save the image with 8 or 16 bits")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        ground = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(ground, rgba).convert("RGB")
    if image.mode == "RGB":
        return image
    return image.convert("RGB")


def _open(path: Path, exif_orientation: bool) -> Image.Image:
    with Image.open(path) as image:
        image.load()  # decode now: a truncated file fails here, inside the caller's error handling
        if exif_orientation:
            # NOTE: the official evaluation (torchvision's loader) ignores the EXIF orientation; a phone photo
            # stored sideways with an orientation tag is classified upright here, as any viewer shows it.
            return ImageOps.exif_transpose(image)
        return image.copy()


def read_image(
    path: str | os.PathLike, background: tuple[int, int, int] = WHITE, exif_orientation: bool = True
) -> Image.Image:
    """Read an image file as an 8-bit RGB PIL image (any bit depth, mode and orientation; see the module docstring).

    Args:
        path: the file.
        background: the colour transparent pixels are composited over (white by default).
        exif_orientation: apply the EXIF orientation tag (the pixels as a viewer shows them).

    Raises:
        ImageReadError: the file is missing, truncated, not an image, or in a pixel format with no 8-bit rendering.
    """
    path = Path(path)
    try:
        return to_rgb(_open(path, exif_orientation), background)
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageReadError(path, "it is a folder") from None
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, struct.error, ...): all mean a bad file
        reason = str(error) or type(error).__name__
        raise ImageReadError(path, reason) from error


def image_loader(path: str) -> Image.Image:
    """``read_image`` with the signature of torchvision's ``ImageFolder(loader=...)`` and timm's datasets."""
    return read_image(path)


def read_label(path: str | os.PathLike) -> np.ndarray:
    """A segmentation label map: one class index per pixel, ``(H, W)`` uint8.

    Palette PNGs give their indices (not their colours), grayscale images their values; 16-bit files must hold
    values below 256. The EXIF orientation is not applied: label files carry none (mmseg reads them "unchanged").

    Raises:
        ImageReadError: unreadable, several channels, or values that do not fit 8 bits.
    """
    path = Path(path)
    try:
        image = _open(path, exif_orientation=False)
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except Exception as error:
        raise ImageReadError(path, str(error) or type(error).__name__) from error
    if image.mode not in ("P", "L", "1", "I", *_SIXTEEN_BIT):
        raise ImageReadError(path, f"expected a single-channel label image (palette or grayscale), got {image.mode}")
    values = np.asarray(image)
    if values.dtype != np.uint8:
        if values.size and (values.min() < 0 or values.max() > 255):
            raise ImageReadError(path, f"label values in [{values.min()}, {values.max()}] do not fit 8 bits")
        values = values.astype(np.uint8)
    return np.ascontiguousarray(values)
