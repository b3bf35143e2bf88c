"""The cross-encoder reranker on the real ESCO taxonomy and the real all-MiniLM-L6-v2 weights (offline): a tiny
``rerank-train`` run on the assembled pipeline (its untrained ranker is the first stage), then the component's
contract, fusion, serialization and errors."""

import numpy as np
import pytest
import spacy
from safetensors.numpy import load_file

from pipeline.components.encoder import DEFAULT_ENCODER, resolve_model_path
from pipeline.components.pipes import DECIDER, RANKER, RERANKER, load_pipeline
from pipeline.components.reranker import MODEL_DIR, RerankerSettings, SkillReranker
from pipeline.errors import ConfigError, NotInitializedError
from pipeline.training.reranker_training import install_reranker, listwise_loss, rerank_train

# Two sentences, one with literal matches (PostgreSQL, SQL), one with none.
TEXT = "Experience with postgresql and SQL is essential.\nYou will keep the ward's patient files in order."
K, TOP_K = 6, 5
TINY = {"rerank.max_steps": 3, "rerank.batch_size": 2, "rerank.negatives": 2, "rerank.eval_every": 3,
        "rerank.sources": ["alt_labels"], "rerank.calibrate": False, "rerank.first_stage_weights": [0.0],
        "rerank.learning_rate": 1e-3, f"components.{RERANKER}.candidates": K, f"components.{RERANKER}.top_k": TOP_K}


@pytest.fixture(scope="module")
def reranked(pipeline_dir, shared_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("reranked") / "model"
    summary = rerank_train(pipeline_dir, None, out, overrides=TINY,
                           validation=[shared_path / "benchmark" / "tech_validation_annotations.csv"])
    return out, summary


@pytest.fixture(scope="module")
def nlp(reranked):
    return spacy.load(reranked[0])


def by_sentence(doc):
    return [sent._.esco_skills for sent in doc.sents]


@pytest.mark.slow  # make test-all: the optional second stage's tiny training run
def test_tiny_training_changes_the_weights_and_writes_a_loadable_pipeline(reranked, nlp):
    out, summary = reranked
    assert nlp.pipe_names.index(RANKER) + 1 == nlp.pipe_names.index(RERANKER) < nlp.pipe_names.index(DECIDER)
    assert nlp.get_pipe(RANKER).settings.top_k == K  # the ranker keeps the K the reranker re-scores
    assert summary["steps"] == 3 and np.isfinite(summary["last_loss"])
    assert {"pooled/rp@5"} <= set(summary["first_stage_metrics"]) & set(summary["best_metrics"])
    assert nlp.meta["esco"]["reranker_training"]["steps"] == 3
    trained = load_file(str(out / RERANKER / MODEL_DIR / "model.safetensors"))
    base = load_file(str(resolve_model_path(DEFAULT_ENCODER) / "model.safetensors"))
    name = next(k for k in trained if k.endswith("encoder.layer.5.output.dense.weight"))
    assert not np.allclose(trained[name], base[name.removeprefix("bert.")])  # the encoder itself was trained
    assert "classifier.weight" in trained  # and the new head saved beside it


@pytest.mark.slow  # make test-all: the optional second stage's tiny training run
def test_reranks_only_the_first_stage_top_k_in_the_contract_form(nlp):
    doc = nlp(TEXT)
    with nlp.select_pipes(disable=[RERANKER]):
        first = nlp(TEXT)
    for before, after in zip(by_sentence(first), by_sentence(doc)):
        allowed = {p.uri for p in before[:K]}
        assert after and {p.uri for p in after} <= allowed
        assert len([p for p in after if not p.explicit]) <= TOP_K - len([p for p in after if p.explicit])
        assert [p.score for p in after] == sorted((p.score for p in after), reverse=True)
        assert all(0.0 <= p.score <= 1.0 and p.label for p in after)
    assert {p.uri for p in doc._.esco_skills} == {p.uri for preds in by_sentence(doc) for p in preds}


@pytest.mark.slow  # make test-all: the optional second stage's tiny training run
def test_literal_matches_keep_their_fused_score_and_implied_ones_are_fused_alike(nlp, uri_of):
    doc = nlp(TEXT)
    with nlp.select_pipes(disable=[RERANKER]):
        first = nlp(TEXT)
    sent, before, after = next(doc.sents), by_sentence(first)[0], by_sentence(doc)[0]
    explicit = [(p.uri, p.score, [s.text for s in p.spans]) for p in after if p.explicit]
    assert uri_of("PostgreSQL") in [uri for uri, _, _ in explicit]
    assert explicit == [(p.uri, p.score, [s.text for s in p.spans]) for p in before if p.explicit]
    reranker, w = nlp.get_pipe(RERANKER), nlp.get_pipe(RANKER).settings.explicit_weight
    implied = [p for p in after if not p.explicit]
    probs = reranker.model.probabilities([(sent.text.strip(), p.label) for p in implied], batch_size=8)
    assert [p.score for p in implied] == pytest.approx(list((1.0 - w) * probs), abs=1e-6)  # first_stage_weight 0
    postgresql = next(score for uri, score, _ in explicit if uri == uri_of("PostgreSQL"))
    assert postgresql > max(p.score for p in implied)  # w = 0.5: a literal preferred label ranks first


@pytest.mark.slow  # make test-all: the optional second stage's tiny training run
def test_round_trip_through_disk_and_bytes_predicts_the_same(nlp, tmp_path):
    expected = [(p.uri, round(p.score, 5)) for p in nlp(TEXT)._.esco_skills]
    nlp.to_disk(tmp_path / "copy")
    assert [(p.uri, round(p.score, 5)) for p in spacy.load(tmp_path / "copy")(TEXT)._.esco_skills] == expected
    fresh = SkillReranker(nlp, RERANKER, nlp.get_pipe(RERANKER).settings)
    fresh.from_bytes(nlp.get_pipe(RERANKER).to_bytes())
    doc = fresh(nlp(TEXT, disable=[RERANKER, DECIDER]))
    assert [(p.uri, round(p.score, 5)) for p in doc._.esco_skills] == expected


@pytest.mark.slow  # make test-all: the optional second stage's tiny training run
def test_an_untrained_or_uninitialized_reranker_refuses_to_run(reranked):
    nlp = load_pipeline(reranked[0])
    with pytest.raises(NotInitializedError, match="nothing to save"):
        SkillReranker(nlp).to_bytes()
    install_reranker(nlp, RerankerSettings(candidates=K))
    with pytest.raises(NotInitializedError, match="untrained classification head"):
        nlp(TEXT)


@pytest.mark.slow  # make test-all: the optional second stage's tiny training run
def test_a_ranker_keeping_fewer_than_k_is_a_config_error_naming_both_keys(reranked):
    nlp = load_pipeline(reranked[0], config={"components": {RANKER: {"top_k": K - 1}}})
    with pytest.raises(ConfigError, match=rf"candidates = {K} but \[components.{RANKER}\] top_k = {K - 1}"):
        nlp(TEXT)


def test_bad_settings_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=rf"\[components.{RERANKER}\] candidates must be >= 1, got 0"):
        spacy.blank("en").add_pipe(RERANKER, config={"candidates": 0})
    with pytest.raises(ConfigError, match=rf"\[components.{RERANKER}\] first_stage_weight must be <= 1"):
        RerankerSettings.load(f"components.{RERANKER}", {"first_stage_weight": 1.5})
    for overrides, message in (({"rerank.max_steps": 0}, r"\[rerank\] max_steps must be >= 1, got 0"),
                               ({"rerank.sources": ["web"]}, r"\[rerank\] sources\[0\] must be"),
                               ({"training.max_steps": 5}, r"--set training.max_steps: rerank-train reads")):
        with pytest.raises(ConfigError, match=message):  # checked before any pipeline is loaded
            rerank_train(tmp_path / "none", None, tmp_path / "out", validation=[], overrides=overrides)


def test_listwise_loss_prefers_the_positive_first():
    import torch

    right, wrong = torch.tensor([[3.0, 0.0, -1.0]]), torch.tensor([[-1.0, 0.0, 3.0]])
    assert listwise_loss(right, 0.1) < listwise_loss(wrong, 0.1)
    assert listwise_loss(right, 0.0) == pytest.approx(torch.nn.functional.cross_entropy(right, torch.tensor([0])))
