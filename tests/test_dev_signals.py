"""The development signals: a fixed held-out slice of ESCO text, masked-mention dev sentences, their scores."""

from __future__ import annotations

import random

from pipeline.corpus.build import load_corpus
from pipeline.esco.heldout import held_out_texts, is_held_out, skill_texts, training_texts
from pipeline.evaluation.dev_signals import (
    build_dev_signals,
    dev_signal_scores,
    masked_mention_examples,
    paraphrase_examples,
)
from pipeline.evaluation.report import dev_signal_columns


def test_held_out_slice_is_fixed_about_a_tenth_and_never_offered_for_training(taxonomy):
    held = held_out_texts(taxonomy)
    trainable = list(training_texts(taxonomy))
    total = len(held) + len(trainable)
    assert 0.08 < len(held) / total < 0.12
    assert not {(t.uri, t.text) for t in held} & {(t.uri, t.text) for t in trainable}
    assert held == held_out_texts(taxonomy)  # the same slice every time, no randomness
    assert is_held_out(held[0].uri, held[0].text.upper())  # case does not move a text out of the slice


def test_skill_texts_are_alt_labels_and_description_sentences(taxonomy, uri_of):
    texts = list(skill_texts(taxonomy[uri_of("manage staff")]))
    kinds = {t.kind for t in texts}
    assert kinds == {"alt_label", "description"}
    assert "manage team" in {t.text for t in texts} and all(t.text.lower() != "manage staff" for t in texts)


def test_masked_mention_examples_delete_every_mention(tiny_corpus):
    examples = masked_mention_examples(tiny_corpus, limit=40)
    rows = {row["text"]: row for row in load_corpus(tiny_corpus)["dev"]}
    assert 0 < len(examples) <= 40
    assert all("[MASK]" not in e.text for e in examples)
    by_uris = [row for row in rows.values()]
    for example in examples:
        source = next(r for r in by_uris if set(r["uris"]) == example.gold and len(example.text) < len(r["text"]))
        assert source is not None and len(example.text.split()) >= 3


def test_paraphrases_are_grouped_by_whether_the_corpus_names_the_skill(taxonomy):
    some = {t.uri for t in held_out_texts(taxonomy)[:50]}
    examples = paraphrase_examples(taxonomy, some, limit=300, seed=1)
    assert len(examples) == 300
    assert {e.group for e in examples} <= {"named", "unnamed"}
    assert all((e.group == "named") == bool(e.gold & some) or e.group == "unnamed" for e in examples)
    assert examples == paraphrase_examples(taxonomy, some, limit=300, seed=1)


def test_dev_signal_scores_rank_held_out_paraphrases_well_with_the_untrained_encoder(pipeline_nlp, taxonomy,
                                                                                   tiny_corpus):
    signals = build_dev_signals(taxonomy, tiny_corpus, max_masked=30, max_paraphrases=150)
    scores = dev_signal_scores(pipeline_nlp, signals)
    assert scores["masked/n_scored"] == len(signals.masked) > 0
    assert scores["paraphrase/n_scored"] == 150
    assert all(0.0 <= v <= 1.0 for k, v in scores.items() if not k.endswith("n_scored"))
    # Held-out alternative labels are paraphrases of the preferred label: a working ranker finds most of them,
    # a broken one (wrong index order, wrong pooling) would not.
    assert scores["paraphrase/rp@5"] > 0.6
    columns = dev_signal_columns(scores)
    assert set(columns) >= {"masked dev", "paraphrase dev"} and "rp@5" in columns["masked dev"]


def test_shuffled_skill_index_destroys_the_paraphrase_signal(pipeline_nlp, taxonomy, monkeypatch):
    """The signal measures the ranker, not the data: scores computed against the wrong skills collapse."""
    ranker = pipeline_nlp.get_pipe("esco_skill_ranker")
    signals = build_dev_signals(taxonomy, None, max_paraphrases=100)
    shuffled = list(ranker.index.uris)
    random.Random(0).shuffle(shuffled)
    monkeypatch.setattr(ranker.index, "uris", shuffled)
    assert dev_signal_scores(pipeline_nlp, signals)["paraphrase/rp@5"] < 0.05


def test_no_masked_examples_means_no_masked_scores(pipeline_nlp, taxonomy, tiny_corpus):
    signals = build_dev_signals(taxonomy, tiny_corpus, max_masked=0, max_paraphrases=20)
    assert signals.masked == [] and "masked/rp@5" not in dev_signal_scores(pipeline_nlp, signals)
