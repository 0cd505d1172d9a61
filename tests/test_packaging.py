"""The distribution: the wheel builds offline, carries its licence, ``py.typed`` and data, and works installed.

The wheel is built from a copy of the source (``pip wheel --no-build-isolation``: no network, nothing written into
the checkout) and installed, not editable, into a fresh virtual environment that sees the test interpreter's
packages (torch, timm, ...) through a ``.pth`` line. The installed package then reads its bundled photos and its
16-class table from a working directory outside the source tree, with no ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import replknet

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import json, sys
import replknet
from replknet.analysis import imagenet_16class_indices
from replknet.data.images import read_image
from replknet.data.photos import list_photos

photos = list_photos()
print(json.dumps({
    "file": replknet.__file__,
    "photos": [p.name for p in photos],
    "sizes": [list(read_image(p).size) for p in photos],
    "table": {name: len(indices) for name, indices in imagenet_16class_indices().items()},
}))
"""


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command[:3]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_source_tree(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PIP_INDEX_URL")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    source = tmp_path / "source"  # a copy: setuptools writes build/ and *.egg-info beside the sources
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
         tmp_path, env)  # fmt: skip
    (wheel,) = wheels.glob("replknet-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(info).decode())
        licence = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
        assert archive.read(licence).decode() == (ROOT / "LICENSE").read_text()
    assert "replknet/py.typed" in names and "replknet/analysis/imagenet_16class_indices.json" in names
    assert metadata["License-Expression"] == "MIT" and "MIT License" in (ROOT / "LICENSE").read_text()
    assert metadata["Version"] == replknet.__version__

    # A fresh environment that sees this interpreter's packages (no download) but not the source tree.
    environment = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(environment)
    python = environment / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        tmp_path, env).strip())  # fmt: skip
    ours = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    (purelib / "_test_interpreter_packages.pth").write_text("\n".join(sorted(ours)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
         tmp_path, env)  # fmt: skip

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = json.loads(_run([str(python), "-c", CHECK], elsewhere, env))
    assert Path(result["file"]).is_relative_to(purelib)  # the installed copy, not the checkout
    assert result["photos"] == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"]
    assert all(width >= 300 and height >= 300 for width, height in result["sizes"])
    assert len(result["table"]) == 16 and all(count > 0 for count in result["table"].values())
    version = _run([str(environment / "bin" / "replknet"), "--version"], elsewhere, env)
    assert version == f"replknet {replknet.__version__}\n"
