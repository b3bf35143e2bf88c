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
    from pipeline.esco.taxonomy import EscoTaxonomy

    return EscoTaxonomy.from_esco(esco_path)


@pytest.fixture(scope="session")
def uri_of(taxonomy):
    """Preferred label → URI, so tests name skills as people do and assert on the real URIs."""
    by_label = taxonomy.by_preferred_label()
    return lambda label: by_label[label]


def _assembled(tmp_path_factory, esco_path: Path, with_ranker: bool) -> Path:
    from pipeline.components.assembly import assemble

    out = tmp_path_factory.mktemp("pipeline_with_ranker" if with_ranker else "matcher_pipeline")
    assemble(esco_path, out, with_ranker=with_ranker)
    return out


@pytest.fixture(scope="session")
def matcher_dir(tmp_path_factory, esco_path) -> Path:
    """A matcher-only pipeline assembled from the real ESCO export and saved to disk."""
    return _assembled(tmp_path_factory, esco_path, with_ranker=False)


@pytest.fixture(scope="session")
def matcher_nlp(matcher_dir):
    import spacy

    return spacy.load(matcher_dir)


@pytest.fixture(scope="session")
def pipeline_dir(tmp_path_factory, esco_path) -> Path:
    """The default pipeline (matcher + untrained ranker) from the real ESCO export, saved to disk."""
    return _assembled(tmp_path_factory, esco_path, with_ranker=True)


@pytest.fixture(scope="session")
def pipeline_nlp(pipeline_dir):
    import spacy

    return spacy.load(pipeline_dir)


# A tiny real training run shared by the training and packaging tests (real ads, real ESCO, a few steps).
TINY = [
    "training.max_steps=12", "training.eval_every=6", "training.batch_size=16", "training.learning_rate=0.0001",
    "training.warmup_steps=2", "training.patience=0", "training.supervision.corpus.max_pairs=64",
    "training.supervision.alt_labels.max_pairs=16", 'training.device="cpu"', "training.dev_max_masked=20",
    "training.dev_max_paraphrases=40", 'training.selection="combined"', "training.interpolation=[0.5, 1.0]",
]


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory, shared_path, matcher_dir):
    from pipeline.corpus.build import build_corpus

    out = tmp_path_factory.mktemp("corpus")
    build_corpus([shared_path / "jobads" / "tech_and_general_jobs.jsonl.gz"], out, pipeline_path=matcher_dir, limit=300,
                 text_field="description", id_field="id", dev_fraction=0.1, seed=0, workers=1)
    return out


NHS_MIN_ADS = 8  # 400 ads hold few lines seen in 20 ads; the slice's boilerplate is the lines seen in 8 or more


@pytest.fixture(scope="session")
def nhs_corpus(tmp_path_factory, shared_path, matcher_dir):
    """400 real NHS ads as a corpus whose boilerplate.jsonl holds lines seen in ``NHS_MIN_ADS`` ads: enough
    boilerplate for a gate (the decider's, self-training's filter)."""
    from pipeline.corpus.build import build_corpus

    out = tmp_path_factory.mktemp("nhs_corpus")
    build_corpus([shared_path / "jobads" / "nhs_jobs_2020.jsonl.gz"], out, pipeline_path=matcher_dir, limit=400,
                 text_field="description", id_field="id", dev_fraction=0.2, seed=0, workers=1,
                 boilerplate_min_ads=NHS_MIN_ADS)
    return out


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_corpus, esco_path, shared_path):
    out = tmp_path_factory.mktemp("trained") / "model"
    from pipeline.training.trainer import train

    summary = train(str(ROOT / "configs" / "in_batch.cfg"), tiny_corpus, out, esco=esco_path,
                    validation=[shared_path / "benchmark" / "tech_validation_annotations.csv"], overrides=TINY)
    return out, summary


# The fast tier (`make test-fast`, under 3 minutes): every test outside the slow tier that needs none of these
# fixtures (each costs from half a minute to minutes: the 13,896 skills embedded, a corpus built, a training run,
# a Ray cluster). Marked at collection, so a new test joins the tier by what it uses, not by a list kept by hand.
HEAVY_FIXTURES = frozenset({"pipeline_dir", "pipeline_nlp", "trained", "tiny_corpus", "nhs_corpus", "ray_local"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        heavy = item.get_closest_marker("slow") or item.get_closest_marker("heavy")
        if not heavy and not HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.fast)
