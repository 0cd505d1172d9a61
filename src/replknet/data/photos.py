"""The real photographs bundled with the package (public domain / CC0; see ``assets/photos/LICENSES.md``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


def photos_dir() -> Path:
    """The folder holding the bundled photographs."""
    return Path(str(resources.files("replknet") / "data" / "assets" / "photos"))


def list_photos() -> list[Path]:
    """The bundled photographs, sorted by file name."""
    folder = photos_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"bundled photographs not found at {folder} (is the package installed completely?)")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
