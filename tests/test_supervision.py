"""Positive pairs from ESCO's own text: every skill reachable, the held-out evaluation slice never used."""

from __future__ import annotations

import random

import pytest

from pipeline.esco.heldout import is_held_out
from pipeline.training.supervision import AltLabelPairs, DescriptionPairs, SupervisionContext


def context(taxonomy) -> SupervisionContext:
    return SupervisionContext(taxonomy, list(taxonomy.skills), None, random.Random(0))


def test_alt_label_and_description_pairs_skip_the_held_out_slice(taxonomy):
    ctx = context(taxonomy)
    for source in (AltLabelPairs(per_skill=3, max_pairs=0), DescriptionPairs(max_pairs=0, per_skill=2, max_chars=100_000)):
        pairs = source.pairs(ctx)
        assert len(pairs) > 10_000
        assert not any(is_held_out(ctx.uris[p.skill], p.text) for p in pairs)


def test_description_pairs_reach_skills_no_ad_names_and_keep_shared_labels_gold(taxonomy, uri_of):
    ctx = context(taxonomy)
    pairs = DescriptionPairs(max_pairs=0, per_skill=1).pairs(ctx)
    skills = {p.skill for p in pairs}
    assert len(skills) > 0.8 * len(taxonomy)  # one description sentence for (almost) every skill
    alt = AltLabelPairs(per_skill=5, max_pairs=0).pairs(ctx)
    assert all(p.skill in p.gold for p in alt)
    assert any(len(p.gold) > 1 for p in alt)  # a label shared by two skills is gold for both


def test_self_training_labels_only_confident_unmatched_train_sentences(taxonomy, tiny_corpus, pipeline_nlp):
    from pipeline.corpus.build import load_corpus
    from pipeline.errors import ConfigError
    from pipeline.training.supervision import SelfTrainingPairs

    ranker = pipeline_nlp.get_pipe("esco_skill_ranker")
    ctx = SupervisionContext(taxonomy, ranker.index.uris, tiny_corpus, random.Random(0), ranker=ranker)
    data = load_corpus(tiny_corpus)
    dev_ads = set(data["dev"]["ad_id"])
    dev_texts = {row["text"] for row in data["unmatched"] if row["ad_id"] in dev_ads}
    unmatched = {row["text"] for row in data["unmatched"] if row["ad_id"] not in dev_ads}
    loose = SelfTrainingPairs(max_sentences=150, min_score=0.0, min_margin=0.0, agreement_k=0, max_pairs_per_skill=0)
    everything = loose.pairs(ctx)
    assert len(everything) == len({p.text for p in everything}) > 100  # one pseudo-label per sentence
    assert {p.text for p in everything} <= unmatched and not {p.text for p in everything} & dev_texts
    strict = SelfTrainingPairs(max_sentences=150, min_score=0.55, min_margin=0.02, agreement_k=3,
                               max_pairs_per_skill=0).pairs(ctx)
    assert len(strict) < len(everything)
    scores = ranker.score_texts([p.text for p in strict])
    for pair, row in zip(strict, scores):
        assert pair.gold == {pair.skill} and pair.source == "self_training" and not pair.mentions
        assert row[pair.skill] >= 0.55 and row.argmax() == pair.skill
    with pytest.raises(ConfigError, match="self_training"):
        SelfTrainingPairs().pairs(SupervisionContext(taxonomy, ranker.index.uris, tiny_corpus, random.Random(0)))
    with pytest.raises(ConfigError, match="min_score"):
        SelfTrainingPairs(min_score=1.5)


def test_self_training_gate_keeps_skill_sentences_and_drops_more_unmatched_ones(taxonomy, nhs_corpus, pipeline_nlp,
                                                                                 tmp_path):
    """The gate fitted on the corpus keeps held-out sentences that name a skill more often than the unmatched
    sentences it filters, and only narrows the pseudo-labels the ungated source gives."""
    from conftest import NHS_MIN_ADS
    from pipeline.corpus.build import load_corpus
    from pipeline.errors import ConfigError
    from pipeline.training.supervision import SelfTrainingPairs

    ranker = pipeline_nlp.get_pipe("esco_skill_ranker")

    def fresh(corpus=nhs_corpus):  # the same seeded sample of sentences every call
        return SupervisionContext(taxonomy, ranker.index.uris, corpus, random.Random(0), ranker=ranker)

    ctx = fresh()
    settings = dict(max_sentences=200, min_score=0.0, min_margin=0.0, agreement_k=0, max_pairs_per_skill=0)
    gated = SelfTrainingPairs(min_gate=0.5, gate_min_ads=NHS_MIN_ADS, gate_positives=300, **settings)
    unmatched = gated.sentences(ctx)
    dev = [row["text"] for row in load_corpus(nhs_corpus)["dev"]][:200]  # name a skill; the gate fits on train
    kept_unmatched = gated.gated(ctx, unmatched)
    kept_dev = gated.gated(ctx, dev)
    assert set(kept_unmatched) <= set(unmatched) and 0 < len(kept_unmatched) < len(unmatched)
    assert len(kept_dev) / len(dev) > len(kept_unmatched) / len(unmatched) + 0.1

    everything = {(p.text, p.skill) for p in SelfTrainingPairs(**settings).pairs(fresh())}
    narrowed = {(p.text, p.skill) for p in gated.pairs(fresh())}
    assert narrowed < everything and {text for text, _ in narrowed} == set(kept_unmatched)

    with pytest.raises(ConfigError, match="min_gate"):
        gated.gated(fresh(tmp_path), ["Experience with PostgreSQL is essential."])
