"""The HTML view of an ad: explicit spans with ESCO labels, each sentence's set with its evidence marked, skipped
sentences greyed with their reason."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.commands.render import marked_context, render_ad
from pipeline.components.boilerplate import BoilerplateFilter
from pipeline.components.pipes import make_clean_doc
from pipeline.components.predictions import Evidence, SkillPrediction, set_decisions, set_predictions

AD = "<p>Our R&amp;D team needs you to manage budgets.</p><p>Keep patient files in order.</p>"


def decide_implied(doc, uri: str, label: str, words: str, probability: float):
    """What the ranker and a decider write through the contract: ``label`` ranked in the last sentence, then
    decided with ``words`` as its evidence."""
    last = list(doc.sents)[-1]
    ranking = dict(doc._.esco_sentence_skills)
    implied = SkillPrediction(uri, label, 0.42, explicit=False)
    ranking[last.start] = [implied]
    set_predictions(doc, ranking)
    start = doc.text.index(words)
    evidence = [Evidence(start, start + len(words), words)]
    set_decisions(doc, {last.start: ([replace(implied, probability=probability, evidence=evidence)], None)})
    return doc


def test_render_ad_labels_explicit_spans_with_esco_label_and_uri(matcher_nlp, uri_of):
    html = render_ad(matcher_nlp(AD))
    uri = uri_of("manage budgets")
    assert html.count(f'href="{uri}"') == 3  # the ad's set, the sentence's set, the span's knowledge-base link
    assert "manage budgets" in html
    assert "R&amp;D" in html and "<p>" not in html
    assert html.index("manage budgets") < html.index("Keep")
    assert "to <mark>manage budgets</mark>." in html  # a literal match's evidence is its mention


def test_render_ad_lists_the_decided_set_with_evidence_under_its_sentence(matcher_nlp, uri_of):
    doc = decide_implied(matcher_nlp(AD), uri_of("patient record storage"), "patient record storage",
                         "patient files", 0.81)
    html = render_ad(doc, top_k=5)
    position = html.rindex("patient record storage")
    assert html.index("Keep") < position
    assert "(implied, p 0.81)" in html
    assert 'Keep <mark>patient files</mark> in order.' in html[position:]


def test_render_ad_greys_skipped_sentences_with_their_reason(matcher_nlp, uri_of):
    doc = BoilerplateFilter(matcher_nlp)(matcher_nlp("Manage budgets.\nBenefits\nFree training in project management."))
    html = render_ad(doc)
    assert html.count('class="esco-sentence esco-skipped"') == 2
    assert html.count("asks for no skill: section:benefits") == 2
    # the literal match stays highlighted in the text (a span with its link) but is in no set
    assert html.count(f'href="{uri_of("project management")}"') == 1
    assert html.count(f'href="{uri_of("manage budgets")}"') == 3


def test_marked_context_clips_long_sentences_around_the_evidence(matcher_nlp):
    text = "Filler words " * 20 + "with <b>patient files</b> kept. " + "More filler " * 20
    doc = make_clean_doc(matcher_nlp, text)  # no HTML clean-up: the <b> stays text to escape
    start = text.index("patient files")
    marked = marked_context(doc[:], [Evidence(start, start + 13, "patient files")], context=10)
    assert marked.startswith("…") and marked.endswith("…") and "Filler words Filler" not in marked
    assert "&lt;b&gt;<mark>patient files</mark>&lt;/b&gt;" in marked  # the text is escaped, the marks are not
    assert marked_context(doc[4:], [Evidence(0, 6, "Filler")]) == ""  # evidence outside the span is left out


def test_render_ad_as_a_page_and_top_k_checked(matcher_nlp):
    doc = matcher_nlp(AD)
    assert render_ad(doc, page=True).startswith("<!DOCTYPE html>")
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        render_ad(doc, top_k=0)


@pytest.mark.parametrize("text", ["", "Benefits\nHow to apply"])
def test_render_ad_of_an_ad_asking_for_nothing(matcher_nlp, text):
    html = render_ad(BoilerplateFilter(matcher_nlp)(matcher_nlp(text)))
    assert "Skills asked for: none" in html and "<mark>" not in html


def test_render_ad_of_the_full_pipeline(pipeline_nlp, uri_of):
    html = render_ad(pipeline_nlp(AD + "<p>How to apply</p><p>Send us your CV.</p>"), top_k=3)
    assert html.count('class="esco-sentence esco-skipped"') == 2
    assert f'href="{uri_of("manage budgets")}"' in html and "<mark>manage budgets</mark>" in html
