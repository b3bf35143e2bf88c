"""Bad and odd input: generated texts never crash the pipeline, huge ads are capped, repeats are embedded once."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import spacy
from bad_input import NASTY_TEXTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.commands.extract import extract_file
from pipeline.components.predictions import SPANS_KEY
from pipeline.components.segmenter import LongDocumentWarning, NonEnglishWarning, truncate_text
from pipeline.errors import ConfigError

HTML_FRAGMENTS = ["<p>", "</p>", "<li>", "</li>", "<ul>", "<br/>", "<b>", "&amp;", "&nbsp;", "&#8226;", "<script>x</script>",
                  "<div class='a'>", "</div>", "&lt;", "<!-- c -->", "<", ">", "&"]
SKILL_WORDS = ["Experience with postgresql.", "Manage budgets", "Python", "R.", "C#", "work in teams", "• bullet",
               "- dash item", "\n\n", "\r\n", "\t", " ", "…", "。", "é", "😀", "\u200b", "\x00", "\x0c", "\u2028"]
LONG_TOKEN = st.text(alphabet=st.characters(codec="utf-8"), min_size=100, max_size=600).map(lambda t: t.replace(" ", ""))
PIECES = st.one_of(st.text(max_size=40), st.sampled_from(HTML_FRAGMENTS), st.sampled_from(SKILL_WORDS), LONG_TOKEN)
TEXTS = st.lists(PIECES, max_size=25).map("".join)


def assert_offsets_inside(doc) -> None:
    n = len(doc.text)
    for span in doc.spans[SPANS_KEY]:
        assert 0 <= span.start_char < span.end_char <= n and span.kb_id_
    for sent in doc.sents if doc.has_annotation("SENT_START") else []:
        assert 0 <= sent.start_char <= sent.end_char <= n
        for pred in sent._.esco_skills:
            assert 0.0 <= pred.score <= 1.0 + 1e-6
    for pred in doc._.esco_skills:
        for span in pred.to_dict()["spans"]:
            assert 0 <= span["start_char"] < span["end_char"] <= n
            assert doc.text[span["start_char"]:span["end_char"]] == span["text"]


BATCH = 25  # texts per example, run through nlp.pipe as users do
# 16 examples (400 texts) in `make test`; `make test-all` sets 40 (1,000 texts).
EXAMPLES = int(os.environ.get("ROBUSTNESS_EXAMPLES", "16"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
@given(texts=st.lists(TEXTS, min_size=BATCH, max_size=BATCH))
def test_generated_texts_never_crash_and_every_offset_is_inside_the_text(pipeline_nlp, texts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonEnglishWarning)
        docs = list(pipeline_nlp.pipe(texts))
    assert len(docs) == BATCH
    for doc in docs:
        assert_offsets_inside(doc)


NASTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.heavy  # 4 s or more: make test, not make test-fast
@NASTY_SETTINGS
@given(texts=st.lists(NASTY_TEXTS, min_size=1, max_size=10))
def test_text_no_string_should_carry_never_crashes_the_pipeline(matcher_nlp, texts):
    """Lone surrogates, NUL, BOMs, separators, bidi marks, combining runs and long tokens given to ``nlp`` directly
    (no reader mended them): the tokenizer's clean-up does, and every doc can be written as UTF-8."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonEnglishWarning)
        docs = list(matcher_nlp.pipe(texts)) + [matcher_nlp(texts[0])]
    assert len(docs) == len(texts) + 1 and docs[0].text == docs[-1].text
    for doc in docs:
        doc.text.encode("utf-8")
        assert "\x00" not in doc.text and "\ufeff" not in doc.text
        assert_offsets_inside(doc)


@pytest.mark.heavy  # 4 s or more: make test, not make test-fast
@NASTY_SETTINGS
@given(texts=st.lists(NASTY_TEXTS, min_size=1, max_size=10))
def test_json_escaped_nasty_ads_are_all_extracted(tmp_path, matcher_nlp, texts):
    """The same texts as JSON Lines through ``extract``: no ad fails, every one is written (or rejected as empty
    once mended), and the output is valid UTF-8 JSON."""
    path = tmp_path / "nasty.jsonl"
    path.write_text("".join(json.dumps({"id": f"n{i}", "description": text}) + "\n" for i, text in enumerate(texts)))
    output = tmp_path / "out.jsonl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = extract_file(matcher_nlp, path, output)
    records = [json.loads(line) for line in output.read_bytes().decode("utf-8").splitlines()]
    assert summary.n_failed == 0 and summary.n_ads == len(records) == len(texts) - summary.n_skipped
    assert set(summary.skipped) <= {"empty text field 'description'"}
    assert (tmp_path / "out.failed.jsonl").read_text() == ""


def test_the_tokenizer_mends_text_without_its_clean_up(matcher_dir):
    """``clean_html = false`` keeps the text as given, but spaCy cannot hash a lone surrogate: it is mended."""
    nlp = spacy.load(matcher_dir, config={"nlp": {"tokenizer": {"clean_html": False}}})
    doc = nlp("SQL \ud83d and <b>Python</b>\x00")
    assert doc.text == "SQL \ufffd and <b>Python</b>"
    assert [span.text for span in doc.spans[SPANS_KEY]] == ["SQL"]


def test_huge_ad_is_cut_at_a_line_break_warned_and_recorded(matcher_dir):
    nlp = spacy.load(matcher_dir, config={"nlp": {"tokenizer": {"max_chars": 1000}}})
    ad = "\n".join(f"Line {i}: you will manage budgets for the ward." for i in range(200))
    with pytest.warns(LongDocumentWarning, match="max_chars = 1,000"):
        doc = nlp(ad)
    assert 500 <= len(doc.text) <= 1000 and ad.startswith(doc.text)
    assert doc._.truncated_chars == len(ad) - len(doc.text)
    assert ad[len(doc.text)] == "\n"  # cut between lines, no half sentence kept
    assert all(span.text == "manage budgets" for span in doc.spans[SPANS_KEY]) and len(doc.spans[SPANS_KEY]) > 5
    assert nlp("A short ad: manage budgets.")._.truncated_chars == 0


def test_cap_zero_keeps_everything_and_negative_cap_is_refused(matcher_dir):
    assert truncate_text("x" * 50, 0) == ("x" * 50, 0)
    assert truncate_text("x" * 50, 20) == ("x" * 20, 30)  # no line break: cut at the cap
    with pytest.raises(ConfigError, match="max_chars"):
        spacy.load(matcher_dir, config={"nlp": {"tokenizer": {"max_chars": -1}}})


def test_repeated_sentences_are_embedded_once(pipeline_nlp, monkeypatch):
    ranker = pipeline_nlp.get_pipe("esco_skill_ranker")
    seen = []
    original = ranker.encoder.encode

    def counting(texts, *args, **kwargs):
        seen.append(list(texts))
        return original(texts, *args, **kwargs)

    monkeypatch.setattr(ranker.encoder, "encode", counting)
    doc = pipeline_nlp("\n".join(["You will keep the ward's patient files in order."] * 40 + ["Manage budgets."]))
    assert sorted(seen[0]) == ["Manage budgets.", "You will keep the ward's patient files in order."]
    rankings = {tuple((p.uri, round(p.score, 6)) for p in sent._.esco_skills) for sent in list(doc.sents)[:40]}
    assert len(rankings) == 1
