"""Mention masking (pipeline.corpus.masking): hide a literal mention so that the model learns from its context."""

from __future__ import annotations

import random

import pytest

from pipeline.corpus.masking import mask_mentions, mask_with_offsets

SENTENCE = "You will manage budgets and use Python daily."
MENTIONS = [{"start": 9, "end": 23, "uri": "u:budgets"}, {"start": 32, "end": 38, "uri": "u:python"}]


def test_mask_mentions_replaces_or_deletes_every_mention():
    assert mask_mentions(SENTENCE, MENTIONS, 1.0, random.Random(0)) == "You will [MASK] and use [MASK] daily."
    assert mask_mentions(SENTENCE, MENTIONS, 1.0, random.Random(0), mask_token="<mask>") \
        == "You will <mask> and use <mask> daily."
    assert mask_mentions(SENTENCE, MENTIONS, 1.0, random.Random(0), mask_token="") == "You will and use daily."


def test_mask_mentions_with_probability_zero_changes_nothing_and_draws_nothing():
    rng = random.Random(3)
    assert mask_mentions(SENTENCE, MENTIONS, 0.0, rng) == SENTENCE
    assert rng.random() == random.Random(3).random()


def test_mask_mentions_is_reproducible_and_independent_per_mention():
    outputs = {mask_mentions(SENTENCE, MENTIONS, 0.5, random.Random(seed)) for seed in range(40)}
    assert outputs == {SENTENCE, "You will [MASK] and use Python daily.",
                       "You will manage budgets and use [MASK] daily.", "You will [MASK] and use [MASK] daily."}
    assert mask_mentions(SENTENCE, MENTIONS, 0.5, random.Random(7)) == mask_mentions(SENTENCE, MENTIONS, 0.5,
                                                                                     random.Random(7))


def test_mask_mentions_masks_a_shared_label_once():
    shared = MENTIONS[:1] + [{"start": 9, "end": 23, "uri": "u:other"}]
    assert mask_mentions(SENTENCE, shared, 1.0, random.Random(0)) == "You will [MASK] and use Python daily."


def test_mask_with_offsets_reoffsets_the_kept_mentions():
    text, mentions, masked = mask_with_offsets(SENTENCE, MENTIONS, 1.0, random.Random(0), mask_token="[M]")
    assert masked == ["u:budgets", "u:python"]
    assert [text[m["start"] : m["end"]] for m in mentions] == ["[M]", "[M]"]
    rng = next(random.Random(seed) for seed in range(100)
               if mask_mentions(SENTENCE, MENTIONS, 0.5, random.Random(seed)).startswith("You will [MASK] and use P"))
    text, mentions, masked = mask_with_offsets(SENTENCE, MENTIONS, 0.5, rng, mask_token="")
    assert (text, masked) == ("You will and use Python daily.", ["u:budgets"])
    assert [(text[m["start"] : m["end"]], m["uri"]) for m in mentions] == [("Python", "u:python")]


def test_mask_mentions_rejects_a_bad_probability():
    with pytest.raises(ValueError, match=r"mask probability must be in \[0, 1\], got 1.5"):
        mask_mentions(SENTENCE, MENTIONS, 1.5, random.Random(0))
