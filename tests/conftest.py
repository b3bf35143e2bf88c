"""Shared fixtures: the real ESCO export from ../shared (CI has it), expensive objects built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED", ROOT.parent / "shared")).resolve()
ESCO = Path(os.environ.get("ESCO", SHARED / "esco" / "v1.1.1")).resolve()


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data not found at {path}: put ../shared beside the checkout or set SHARED=/ESCO=")
    return path


@pytest.fixture(scope="session")
def shared_path() -> Path:
    return _require(SHARED)


@pytest.fixture(scope="session")
def esco_path() -> Path:
    return _require(ESCO)


@pytest.fixture(scope="session")
def taxonomy(esco_path):
    from pipeline.taxonomy import EscoTaxonomy

    return EscoTaxonomy.from_esco(esco_path)


@pytest.fixture(scope="session")
def uri_of(taxonomy):
    """Preferred label → URI, so tests name skills as people do and assert on the real URIs."""
    by_label = taxonomy.by_preferred_label()
    return lambda label: by_label[label]


@pytest.fixture(scope="session")
def matcher_dir(tmp_path_factory, esco_path) -> Path:
    """A matcher-only pipeline assembled from the real ESCO export and saved to disk."""
    from pipeline.assemble import assemble

    out = tmp_path_factory.mktemp("matcher_pipeline")
    assemble(esco_path, out, with_ranker=False)
    return out


@pytest.fixture(scope="session")
def matcher_nlp(matcher_dir):
    import spacy

    return spacy.load(matcher_dir)


@pytest.fixture(scope="session")
def pipeline_dir(tmp_path_factory, esco_path) -> Path:
    """The default pipeline (matcher + untrained ranker) from the real ESCO export, saved to disk."""
    from pipeline.assemble import assemble

    out = tmp_path_factory.mktemp("full_pipeline")
    assemble(esco_path, out, with_ranker=True)
    return out


@pytest.fixture(scope="session")
def pipeline_nlp(pipeline_dir):
    import spacy

    return spacy.load(pipeline_dir)
