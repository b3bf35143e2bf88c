"""Negative samplers on the real ESCO taxonomy: counts, no gold ever, taxonomy only relatives, config errors."""

import random

import numpy as np
import pytest
from spacy.util import registry
from thinc.api import Config

from pipeline.errors import ConfigError
from pipeline.training.negatives import (
    HardNegatives,
    InBatchNegatives,
    MixtureNegatives,
    RandomNegatives,
    SamplingContext,
    TaxonomyNegatives,
)


@pytest.fixture(scope="module")
def uris(taxonomy):
    return list(taxonomy.skills)


@pytest.fixture(scope="module")
def batch(uris, uri_of):
    """Four real sentences' gold sets: positives plus a second gold skill for two of them."""
    pos = [uris.index(uri_of(label)) for label in ("manage budgets", "PostgreSQL", "work in teams", "Python (computer programming)")]
    extra = uris.index(uri_of("SQL"))
    gold = [frozenset([pos[0]]), frozenset([pos[1], extra]), frozenset([pos[2]]), frozenset([pos[3], extra])]
    return pos, gold


def bound(sampler, taxonomy, uris):
    sampler.bind(taxonomy, uris)
    return sampler


def test_random_negatives_have_asked_count_and_no_gold(taxonomy, uris, batch):
    pos, gold = batch
    sampler = bound(RandomNegatives(16), taxonomy, uris)
    out = sampler.sample(SamplingContext(pos, gold, random.Random(0)))
    assert [len(row) for row in out] == [16] * 4
    for row, g in zip(out, gold):
        assert not set(row) & g
        assert len(set(row)) == len(row)


def test_in_batch_negatives_are_other_positives_minus_gold(taxonomy, uris, batch):
    pos, gold = batch
    out = bound(InBatchNegatives(), taxonomy, uris).sample(SamplingContext(pos, gold, random.Random(0)))
    assert out[0] == [pos[1], pos[2], pos[3]]
    for row, g, p in zip(out, gold, pos):
        assert p not in row and not set(row) & g
        assert set(row) <= set(pos)


def test_taxonomy_negatives_are_relatives_of_the_positive(taxonomy, uris, batch):
    pos, gold = batch
    sampler = bound(TaxonomyNegatives(6), taxonomy, uris)
    out = sampler.sample(SamplingContext(pos, gold, random.Random(1)))
    for row, p, g in zip(out, pos, gold):
        assert len(row) == 6
        relatives = set(taxonomy.relatives(uris[p], min_count=6, max_levels=3))
        assert {uris[i] for i in row} <= relatives
        assert not set(row) & g
    # "manage budgets" negatives share a broader concept with it (siblings come first)
    parents = set(taxonomy.broader[uris[pos[0]]])
    assert all(parents & set(taxonomy.broader.get(uris[i], ())) for i in out[0])


def test_hard_negatives_are_nearest_non_gold_below_the_ceiling(taxonomy, uris, batch):
    pos, gold = batch
    rng = np.random.default_rng(0)
    skills = rng.normal(size=(len(uris), 16)).astype(np.float32)
    skills /= np.linalg.norm(skills, axis=1, keepdims=True)
    sentences = skills[pos] + 0.01  # each sentence sits on its positive
    sentences /= np.linalg.norm(sentences, axis=1, keepdims=True)
    sampler = bound(HardNegatives(5, candidates=40, skip_top=2, max_relative_score=0.9), taxonomy, uris)
    out = sampler.sample(SamplingContext(pos, gold, random.Random(0), sentences, skills))
    for row, p, g, vec in zip(out, pos, gold, sentences):
        assert len(row) == 5 and not set(row) & g
        sims = skills @ vec
        assert all(sims[i] < 0.9 * sims[p] for i in row)
        ranked = [i for i in np.argsort(-sims) if i not in g and sims[i] < 0.9 * sims[p]]
        assert set(row) <= set(ranked[:7])  # the nearest ones, minus at most skip_top


def test_mixture_unions_strategies_without_duplicates(taxonomy, uris, batch):
    pos, gold = batch
    sampler = bound(MixtureNegatives({"in_batch": InBatchNegatives(), "random": RandomNegatives(3),
                                      "taxonomy": TaxonomyNegatives(3)}), taxonomy, uris)
    out = sampler.sample(SamplingContext(pos, gold, random.Random(0)))
    for row, g in zip(out, gold):
        assert len(row) == len(set(row)) and not set(row) & g
        assert len(row) >= 3 + 3


def test_samplers_resolve_from_config_by_registered_name():
    cfg = Config().from_str("""
[negatives]
@negative_samplers = "esco.mixture_negatives.v1"

[negatives.samplers]

[negatives.samplers.tax]
@negative_samplers = "esco.taxonomy_negatives.v1"
num_negatives = 2

[negatives.samplers.hard]
@negative_samplers = "esco.hard_negatives.v1"
num_negatives = 2
refresh_every = 10
""")
    sampler = registry.resolve(cfg)["negatives"]
    assert isinstance(sampler, MixtureNegatives)
    assert sampler.needs_index and sampler.refresh_every == 10


@pytest.mark.parametrize(
    "make,key",
    [
        (lambda: RandomNegatives(-1), "num_negatives"),
        (lambda: HardNegatives(4, candidates=5, skip_top=3), "candidates"),
        (lambda: HardNegatives(4, max_relative_score=1.5), "max_relative_score"),
        (lambda: MixtureNegatives({}), "samplers"),
    ],
)
def test_bad_sampler_settings_name_the_key(make, key):
    with pytest.raises(ConfigError, match=key):
        make()
