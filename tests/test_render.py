"""The HTML view of an ad: explicit spans with ESCO labels, implicit skills under their sentence."""

from __future__ import annotations

import pytest

from pipeline.components.predictions import SkillPrediction, set_predictions
from pipeline.commands.render import render_ad

AD = "<p>Our R&amp;D team needs you to manage budgets.</p><p>Keep patient files in order.</p>"


def test_render_ad_labels_explicit_spans_with_esco_label_and_uri(matcher_nlp, uri_of):
    html = render_ad(matcher_nlp(AD))
    uri = uri_of("manage budgets")
    assert html.count(f'href="{uri}"') == 2  # the ad's top skills and the span's knowledge-base link
    assert "manage budgets" in html
    assert "R&amp;D" in html and "<p>" not in html
    assert html.index("manage budgets") < html.index("Keep")


def test_render_ad_lists_implicit_skills_under_their_sentence(matcher_nlp, uri_of):
    doc = matcher_nlp(AD)
    second = list(doc.sents)[-1]
    per_sentence = dict(doc._.esco_sentence_skills)
    implicit = SkillPrediction(uri_of("patient record storage"), "patient record storage", 0.42, explicit=False)
    per_sentence[second.start] = [implicit]
    set_predictions(doc, per_sentence)  # what the ranker does through the same contract
    html = render_ad(doc, top_k=5)
    position = html.rindex("patient record storage")
    assert html.index("Keep") < position
    assert "(implicit, 0.42)" in html


def test_render_ad_as_a_page_and_top_k_checked(matcher_nlp):
    doc = matcher_nlp(AD)
    assert render_ad(doc, page=True).startswith("<!DOCTYPE html>")
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        render_ad(doc, top_k=0)


def test_render_ad_of_the_full_pipeline_lists_ranker_skills(pipeline_nlp, uri_of):
    html = render_ad(pipeline_nlp(AD), top_k=3)
    assert html.count('class="esco-implicit"') == 2  # one list under each sentence
    assert f'href="{uri_of("manage budgets")}"' in html
