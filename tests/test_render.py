"""The HTML view of an ad (``extract --html`` and ``serve``'s page): the ad as written with its explicit spans and
implied skills' evidence marked, each sentence's set beside it, skipped sentences greyed with their reason."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import replace
from urllib.parse import unquote

import pytest

from pipeline.commands.render import Mark, marked_text, render_ad
from pipeline.components.boilerplate import BoilerplateFilter
from pipeline.components.predictions import Evidence, SkillPrediction, set_decisions, set_predictions
from pipeline.io.records import CSV_COLUMNS

AD = "<p>Our R&amp;D team needs you to manage budgets, and reports.</p><p>Keep patient files in order.</p>"


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


def text_of(html: str) -> str:
    """What a reader sees of the sentence rows: the markup's text."""
    rows = re.findall(r'<div class="esco-sentence-text">(.*?)</div>', html, flags=re.S)
    return "\n".join(re.sub(r"<[^>]+>", "", row) for row in rows)


def test_render_ad_shows_the_ad_as_written_with_its_explicit_spans_marked(matcher_nlp, uri_of):
    html = render_ad(matcher_nlp(AD))
    uri = uri_of("manage budgets")
    # the text as written: no space before the comma or the full stop, "&" escaped, the HTML gone
    assert text_of(html) == "Our R&amp;D team needs you to manage budgets, and reports.\nKeep patient files in order."
    assert re.search(r'<mark class="esco-span skill" title="manage budgets \(ESCO skill/competence\)\n'
                     rf'names: manage budgets \(score [0-9.]+\)" data-uris="{uri}">manage budgets</mark>, and', html)
    assert html.count(f'href="{uri}"') == 2  # the ad's table and the sentence's chip
    assert "<p>" not in html and html.index("manage budgets") < html.index("Keep")


def test_render_ad_marks_an_implied_skills_evidence_and_lists_it_beside_its_sentence(matcher_nlp, uri_of):
    uri = uri_of("patient record storage")
    html = render_ad(decide_implied(matcher_nlp(AD), uri, "patient record storage", "patient files", 0.81), top_k=5)
    assert ('Keep <mark class="esco-evidence" title="suggests: patient record storage (probability 0.81)" '
            f'data-uris="{uri}">patient files</mark> in order.') in html
    row = html[html.index("Keep <mark"):]
    assert f'<span class="esco-chip implied" data-uri="{uri}"' in row and '<span class="p">0.81</span>' in row
    assert '<span class="esco-kind implied">implied</span>' in html  # in the ad's table too


def test_render_ad_greys_skipped_sentences_with_their_reason(matcher_nlp, uri_of):
    doc = BoilerplateFilter(matcher_nlp)(matcher_nlp("Manage budgets.\nBenefits\nFree training in project management."))
    html = render_ad(doc)
    assert html.count('class="esco-sentence esco-skipped"') == 2
    assert html.count("asks for no skill: in the “benefits” section") == 2
    # the literal match stays marked in the text, as dropped, but is in no set
    pm = uri_of("project management")
    assert f'class="esco-span knowledge dropped" title="project management (ESCO knowledge) — matched, not ' \
           f'asked for (section:benefits)" data-uris="{pm}">project management</mark>' in html
    assert f'href="{pm}"' not in html and html.count(f'href="{uri_of("manage budgets")}"') == 2


def test_marked_text_never_nests_overlapping_marks_and_loses_no_text():
    text = "use <b>spreadsheets</b> & budgets"
    marks = [Mark(4, 23, "a", "first", "u1"), Mark(7, 33, "b x", "second", "u2")]
    html = marked_text(text, 0, len(text), marks)
    assert html == ('use <mark class="a" title="first" data-uris="u1">&lt;b&gt;</mark>'
                    '<mark class="a b x" title="first\nsecond" data-uris="u1 u2">spreadsheets&lt;/b&gt;</mark>'
                    '<mark class="b x" title="second" data-uris="u2"> &amp; budgets</mark>')
    assert marked_text(text, 4, 11, marks) == '<mark class="a" title="first" data-uris="u1">&lt;b&gt;</mark>' \
                                              '<mark class="a b x" title="first\nsecond" data-uris="u1 u2">spre</mark>'


def test_render_ad_offers_the_set_as_extracts_csv(matcher_nlp, uri_of):
    html = render_ad(matcher_nlp(AD), ad_id="job <7>")
    assert "<h2>Ad job &lt;7&gt;</h2>" in html and 'download="job__7_-skills.csv"' in html
    data = unquote(re.search(r'href="data:text/csv;charset=utf-8,([^"]*)"', html).group(1))
    rows = list(csv.reader(io.StringIO(data)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(row[0], row[1]) for row in rows[1:]] == [("job <7>", uri_of("manage budgets"))]


def test_render_ad_as_a_page_and_top_k_checked(matcher_nlp):
    doc = matcher_nlp(AD)
    page = render_ad(doc, page=True)
    assert page.startswith("<!DOCTYPE html>") and "system-ui" in page and 'id="esco-form"' not in page
    assert "src=" not in page and "<link" not in page  # CSS and script inlined: no CDN, works offline
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        render_ad(doc, top_k=0)


@pytest.mark.parametrize("text", ["", "Benefits\nHow to apply"])
def test_render_ad_of_an_ad_asking_for_nothing(matcher_nlp, text):
    html = render_ad(BoilerplateFilter(matcher_nlp)(matcher_nlp(text)))
    assert "No skill asked for." in html and "0 skills asked for" in html and "class=\"esco-chip " not in html


def test_render_ad_of_the_full_pipeline(pipeline_nlp, uri_of):
    html = render_ad(pipeline_nlp(AD + "<p>How to apply</p><p>Send us your CV.</p>"), top_k=3)
    assert html.count('class="esco-sentence esco-skipped"') == 2
    assert f'data-uris="{uri_of("manage budgets")}">manage budgets</mark>' in html
