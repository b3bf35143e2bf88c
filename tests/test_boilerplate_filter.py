"""The boilerplate filter: the corpus' boilerplate lines, shipped as keys; recognised sections; what a skipped
sentence keeps (its literal matches in the ranking) and loses (its set)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import spacy

from pipeline.components.assembly import base_config, build_pipeline
from pipeline.components.boilerplate import KEYS_FILE, BoilerplateFilter, BoilerplateSettings
from pipeline.components.pipes import BOILERPLATE, SEGMENTER
from pipeline.corpus.build import build_corpus
from pipeline.corpus.storage import corpus_boilerplate
from pipeline.io.boilerplate import BOILERPLATE_FILE, line_key, read_boilerplate
from pipeline.errors import ConfigError, EscoDataError, IncompletePipelineError

EQUAL_OPPORTUNITIES = "We are an equal opportunity employer and welcome applications from all."
SKILL_LINE = "You will manage budgets for the ward."
CORPUS_ADS = [
    {"id": "b1", "description": f"<p>Staff nurse needed for the ward.</p><p>{SKILL_LINE}</p>"
                                f"<p>{EQUAL_OPPORTUNITIES}</p><p>Closing date 12/03/2020</p>"},
    {"id": "b2", "description": f"Healthcare assistant wanted.\n{SKILL_LINE}\n{EQUAL_OPPORTUNITIES}\n"
                                "Closing date 01/05/2021"},
    {"id": "b3", "description": f"Porter required for night shifts.\n{EQUAL_OPPORTUNITIES}"},
]
# An ad and the reason each of its sentences should get (None: a sentence the filter leaves to the ranker).
AD = [
    ("About us", "section:about_us"),
    ("We are a friendly community trust.", "section:about_us"),
    ("Main duties", "heading"),
    (SKILL_LINE, None),  # frequent, but it names a skill: not shipped
    ("We are an Equal Opportunity employer, and welcome applications from ALL!", "boilerplate"),
    ("Closing date 30/09/2019", "boilerplate"),  # digits folded, as in the corpus
    ("What we offer:", "section:benefits"),
    ("Free training in project management.", "section:benefits"),
    ("Salary: £25,000 a year", "section:salary"),  # a heading with its text marks its line only
    ("27 days annual leave.", "section:benefits"),  # ... and the benefits section goes on
    ("In this post you will:", None),  # an unknown heading ends the section
    ("Keep patient files in order.", None),
    ("How to apply", "section:how_to_apply"),
    ("Send your CV to the ward manager.", "section:how_to_apply"),
]
AD_TEXT = "\n".join(text for text, _ in AD)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory, matcher_dir) -> Path:
    folder = tmp_path_factory.mktemp("boilerplate_corpus")
    ads = folder / "ads.jsonl"
    ads.write_text("".join(json.dumps(ad) + "\n" for ad in CORPUS_ADS))
    build_corpus([ads], folder / "corpus", pipeline_path=matcher_dir, boilerplate_min_ads=2, dev_fraction=0.3,
                 workers=1, progress=False)
    return folder / "corpus"


@pytest.fixture(scope="module")
def filter_nlp(matcher_dir, corpus_dir):
    """The real matcher with the filter after it, its keys from the test's corpus."""
    nlp = spacy.load(matcher_dir)
    nlp.add_pipe(BOILERPLATE)
    nlp.get_pipe(BOILERPLATE).initialize(boilerplate_path=str(corpus_dir / BOILERPLATE_FILE))
    return nlp


def reasons_by_text(doc) -> dict:
    return {sent.text.strip(): sent._.esco_no_skill_reason for sent in doc.sents if sent.text.strip()}


# ------------------------------------------------------------------------------------------ the corpus' file
def test_corpus_writes_every_boilerplate_line_with_its_ads_and_skill_flag(corpus_dir, uri_of):
    rows = read_boilerplate(corpus_dir)
    by_key = {row["key"]: row for row in rows}
    eo_key, skill_key = line_key(EQUAL_OPPORTUNITIES, fold_digits=True), line_key(SKILL_LINE, fold_digits=True)
    closing_key = line_key("Closing date 99/99/9999", fold_digits=True)
    assert set(by_key) == {eo_key, skill_key, closing_key}
    assert [(by_key[k]["ads"], by_key[k]["has_skill"]) for k in (eo_key, skill_key, closing_key)] == \
        [(3, False), (2, True), (2, False)]
    assert all(line_key(row["text"], fold_digits=True) == row["key"] for row in rows)
    assert rows[0]["key"] == eo_key  # most frequent first
    manifest = json.loads((corpus_dir / "manifest.json").read_text())
    assert manifest["counts"]["boilerplate_saved"] == len(rows) == 3


def test_a_corpus_without_the_file_warns_and_ships_no_keys(tmp_path):
    assert corpus_boilerplate(None) is None
    with pytest.warns(UserWarning, match="boilerplate.jsonl' is missing"):
        assert corpus_boilerplate(tmp_path) is None


def test_a_malformed_boilerplate_file_is_an_error_naming_file_and_line(tmp_path):
    file = tmp_path / BOILERPLATE_FILE
    file.write_text('{"key": 1, "text": "a", "ads": 20, "has_skill": false}\n{"key": "x", "text": "b"}\n')
    with pytest.raises(EscoDataError, match=r"boilerplate.jsonl:2: field 'key' must be int"):
        read_boilerplate(file)


# ------------------------------------------------------------------------------------------ marking
def test_filter_marks_shipped_lines_and_sections_and_not_skill_lines(filter_nlp):
    doc = filter_nlp(AD_TEXT)
    assert reasons_by_text(doc) == {text: reason for text, reason in AD}
    assert doc._.esco_skipped == {str(sent.start): reason for sent in doc.sents
                                  if (reason := sent._.esco_no_skill_reason)}


def test_a_boilerplate_sentence_inside_a_longer_line_is_found_by_its_own_key(filter_nlp):
    doc = filter_nlp(f"Apply today. {EQUAL_OPPORTUNITIES}")
    assert reasons_by_text(doc) == {"Apply today.": None, EQUAL_OPPORTUNITIES: "boilerplate"}


def test_skipped_sentences_keep_literal_matches_in_the_ranking_but_not_in_the_set(filter_nlp, uri_of):
    doc = filter_nlp(AD_TEXT)
    benefits = next(sent for sent in doc.sents if sent.text.startswith("Free training"))
    project = uri_of("project management")
    assert project in {span.kb_id_ for span in doc.spans["esco_skills"]}
    assert project in {p.uri for p in benefits._.esco_skills} and project in {p.uri for p in doc._.esco_skills}
    assert benefits._.esco_skill_set == [] and benefits._.esco_no_skill_reason == "section:benefits"
    kept = {p.uri for sent in doc.sents if sent._.esco_no_skill_reason is None for p in sent._.esco_skills}
    assert uri_of("manage budgets") in kept
    assert {p.uri for p in doc._.esco_skill_set} == kept  # no decider: the literal matches of the kept sentences


def test_switches_turn_each_signal_off(filter_nlp, corpus_dir):
    doc = filter_nlp.make_doc(AD_TEXT)
    for _, proc in filter_nlp.pipeline:
        doc = proc(doc)  # the doc up to the filter; the switched filters below re-mark it
    no_sections = BoilerplateFilter(filter_nlp, settings=BoilerplateSettings(skip_sections=False, skip_headings=False))
    no_sections.initialize(boilerplate_path=str(corpus_dir))
    assert set(no_sections.reasons(doc).values()) == {"boilerplate"}
    no_boilerplate = BoilerplateFilter(filter_nlp, settings=BoilerplateSettings(skip_boilerplate=False))
    no_boilerplate.initialize(boilerplate_path=str(corpus_dir))
    assert "boilerplate" not in no_boilerplate.reasons(doc).values()
    unshipped = BoilerplateFilter(filter_nlp)  # no keys (a pipeline assembled without a corpus): sections only
    assert set(unshipped.reasons(doc).values()) == {r for _, r in AD if r and r != "boilerplate"}


@pytest.mark.parametrize("text", ["", "   \n  "])
def test_empty_docs_get_no_marks_and_an_empty_set(filter_nlp, text):
    doc = filter_nlp(text)
    assert doc._.esco_skipped == {} and doc._.esco_skill_set == [] and doc._.esco_skills == []


def test_a_doc_of_headings_only_asks_for_no_skill(filter_nlp):
    doc = filter_nlp("Benefits\nRequirements:\nHow to apply\nAbout you\nSkills/Responsibilities\nSalary & Benefits")
    assert reasons_by_text(doc) == {"Benefits": "section:benefits", "Requirements:": "heading",
                                    "How to apply": "section:how_to_apply", "About you": "heading",
                                    "Skills/Responsibilities": "heading", "Salary & Benefits": "section:salary"}
    assert doc._.esco_skill_set == []


def test_a_doc_with_no_sentence_asking_for_a_skill_has_an_empty_set(filter_nlp):
    doc = filter_nlp(f"About the company\nWe have 500 staff in communication roles.\nPerks\n"
                     f"A pension and free parking.\n{EQUAL_OPPORTUNITIES}")
    assert all(reasons_by_text(doc).values())
    assert doc.spans["esco_skills"]  # "communication" is named, in the company description
    assert doc._.esco_skill_set == []


# ------------------------------------------------------------------------------------------ saving, config
def test_keys_survive_to_disk_and_from_disk(filter_nlp, tmp_path):
    filter_nlp.to_disk(tmp_path / "pipeline")
    saved = np.load(tmp_path / "pipeline" / BOILERPLATE / KEYS_FILE, allow_pickle=False)
    assert saved.dtype == np.uint64 and {int(k) for k in saved} == filter_nlp.get_pipe(BOILERPLATE).keys
    reloaded = spacy.load(tmp_path / "pipeline")
    assert reloaded.get_pipe(BOILERPLATE).keys == filter_nlp.get_pipe(BOILERPLATE).keys
    assert reasons_by_text(reloaded(AD_TEXT)) == reasons_by_text(filter_nlp(AD_TEXT))


def test_missing_files_are_errors_that_name_them(filter_nlp, tmp_path):
    component = BoilerplateFilter(filter_nlp)
    with pytest.raises(EscoDataError, match="nowhere.jsonl"):
        component.initialize(boilerplate_path=str(tmp_path / "nowhere.jsonl"))
    with pytest.raises(IncompletePipelineError, match=KEYS_FILE):
        component.from_disk(tmp_path)


def test_build_pipeline_fills_the_keys_from_a_corpus(esco_path, corpus_dir):
    """What `train` does: [initialize] reads ${paths.boilerplate}; no file, no keys."""
    config = base_config()
    assert config["initialize"]["components"][BOILERPLATE] == {"boilerplate_path": "${paths.boilerplate}"}
    config["nlp"]["pipeline"] = [SEGMENTER, BOILERPLATE]
    config["components"] = {name: config["components"][name] for name in (SEGMENTER, BOILERPLATE)}
    config["initialize"]["components"] = {BOILERPLATE: config["initialize"]["components"][BOILERPLATE]}
    shipped = {row["key"] for row in read_boilerplate(corpus_dir) if not row["has_skill"]}
    nlp = build_pipeline(config, esco_path, boilerplate_path=corpus_boilerplate(corpus_dir))
    assert nlp.get_pipe(BOILERPLATE).keys == shipped and len(shipped) == 2
    assert build_pipeline(config, esco_path).get_pipe(BOILERPLATE).keys == frozenset()


@pytest.mark.parametrize("config, message", [
    ({"sections": {"benefits": ["(unclosed"]}}, r"sections\.benefits\[0\] is not a valid regular expression"),
    ({"sections": {"Our Perks": ["perks"]}}, "section name 'Our Perks'"),
    ({"skill_headings": ["requirements", " "]}, "skill_headings must be a list of regular expressions"),
    ({"max_heading_words": 0}, r"\[components.esco_boilerplate_filter\] max_heading_words must be >= 1, got 0"),
    ({"sections": {"benefits": "perks"}},
     r"\[components.esco_boilerplate_filter.sections\] benefits: input should be a valid tuple"),
])
def test_bad_config_values_fail_when_the_pipe_is_added(config, message):
    nlp = spacy.blank("en")
    with pytest.raises(ConfigError, match=message):
        nlp.add_pipe(BOILERPLATE, config=config)


def test_an_unknown_config_key_fails_when_the_pipe_is_added():
    with pytest.raises(ValueError, match="skip_benefits"):
        spacy.blank("en").add_pipe(BOILERPLATE, config={"skip_benefits": True})


def test_sections_in_the_config_add_to_the_defaults_and_an_empty_list_turns_one_off():
    nlp = spacy.blank("en")
    nlp.add_pipe("esco_job_ad_segmenter", config={"warn_non_english": False})
    nlp.add_pipe(BOILERPLATE, config={"sections": {"perks": ["goodies"], "benefits": []},
                                      "skill_headings": ["the job"]})
    doc = nlp("Goodies:\nFree fruit.\nThe job\nCook meals.\nBenefits\nA pension.\nHow to apply\nBy post.")
    assert reasons_by_text(doc) == {"Goodies:": "section:perks", "Free fruit.": "section:perks",
                                    "The job": "heading", "Cook meals.": None, "Benefits": None, "A pension.": None,
                                    "How to apply": "section:how_to_apply", "By post.": "section:how_to_apply"}


# ------------------------------------------------------------------------------------------ in the pipeline
def test_the_assembled_pipeline_does_not_rank_skipped_sentences(pipeline_nlp):
    assert pipeline_nlp.pipe_names.index(BOILERPLATE) == pipeline_nlp.pipe_names.index("esco_skill_ranker") - 1
    doc = pipeline_nlp("Main duties\nKeep patient files in order.\nBenefits\nA generous pension scheme.")
    sentences = {sent.text.strip(): sent for sent in doc.sents}
    assert sentences["Keep patient files in order."]._.esco_skills  # ranked
    for text in ("Main duties", "Benefits", "A generous pension scheme."):
        assert sentences[text]._.esco_skills == [] and sentences[text]._.esco_skill_set == []
        assert sentences[text]._.esco_no_skill_reason
