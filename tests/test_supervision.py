"""Positive pairs from ESCO's own text: every skill reachable, the held-out evaluation slice never used."""

from __future__ import annotations

import random

import pytest

from pipeline.errors import ConfigError
from pipeline.esco.heldout import is_held_out
from pipeline.training.supervision import AltLabelPairs, CorpusPairs, DescriptionPairs, SupervisionContext


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


@pytest.mark.parametrize("source,values,key", [
    (AltLabelPairs, {"per_skill": 0}, "per_skill"), (DescriptionPairs, {"max_pairs": -1}, "max_pairs"),
    (CorpusPairs, {"split": "unmatched"}, "split"), (CorpusPairs, {"max_pairs_per_skill": True}, "max_pairs_per_skill"),
])
def test_bad_source_settings_raise_config_errors_naming_section_and_key(source, values, key):
    with pytest.raises(ConfigError, match=rf"^\[training\.supervision\] {key}\b"):
        source(**values)
