"""Reading job-ad files, the JSONL / CSV / table output of `extract`, and the CLI command."""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
import spacy
from bad_input import PoisonedAdError, add_poison, ads_with_poison
from typer.testing import CliRunner

from pipeline.commands.cli import app
from pipeline.commands.extract import (CSV_COLUMNS, csv_rows, doc_to_record, extract_file, format_ad_table,
                                       pipe_records)
from pipeline.components.boilerplate import BoilerplateFilter
from pipeline.components.predictions import Evidence, SkillPrediction, set_decisions, set_predictions
from pipeline.components.segmenter import LongDocumentWarning, NonEnglishWarning
from pipeline.errors import ModelNotFoundError
from pipeline.io.jobads import JobAdInputWarning, read_ads

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_AD = ROOT / "corpora" / "fixtures" / "sample_job_ad.html"
AD = "We need someone to manage budgets. Python experience is a plus."
OTHER_AD = "<p>Strong communication skills &amp; a degree in computer science.</p>"
GERMAN_AD = "Wir suchen eine engagierte Pflegekraft für unser Team in der Klinik mit Erfahrung im Dienst."
# Two sentences asking for skills, a benefits section, and a heading.
SECTIONED_AD = ("Main duties\nYou will manage budgets for the ward.\nKeep patient files in order.\n"
                "What we offer:\nFree training in project management.\nA generous pension.")


def write_jsonl(path: Path, lines) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as handle:
        for line in lines:
            handle.write((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n")
    return path


# ------------------------------------------------------------------------------------------ reading
# The reader itself (pipeline.io.jobads, shared with the corpus) is tested in test_jobads.py.
def test_extract_skips_malformed_lines_and_counts_them_by_reason(tmp_path, matcher_nlp):
    path = write_jsonl(tmp_path / "ads.jsonl", [
        {"id": "a1", "description": AD},
        b"{not json",
        b"[1, 2]",
        {"id": "a4"},
        {"id": "a5", "description": "   "},
        b"\xff\xfe broken bytes",
        {"id": 7, "description": OTHER_AD},
    ])
    output = tmp_path / "out.jsonl"
    with pytest.warns(UserWarning) as record:
        summary = extract_file(matcher_nlp, path, output)
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == ["a1", "7"]
    assert summary.n_ads == 2 and summary.n_skipped == 5 and summary.n_repaired == 1
    assert summary.skipped == {"malformed JSON": 2, "not a JSON object": 1, "missing text field 'description'": 1,
                               "empty text field 'description'": 1}
    messages = [str(w.message) for w in record]
    for line, reason in [(2, "malformed JSON"), (3, "not a JSON object"), (4, "missing text field 'description'"),
                         (5, "empty text field 'description'"), (6, "non-UTF-8 bytes replaced")]:
        assert any(f"ads.jsonl:{line}: {reason}" in message for message in messages), (line, messages)
    assert any("skipped: 2 × malformed JSON" in message for message in messages)


def test_extract_keeps_the_ads_before_a_truncated_gzip(tmp_path, matcher_nlp):
    path = write_jsonl(tmp_path / "ads.jsonl.gz", [{"id": i, "description": AD * 50} for i in range(50)])
    path.write_bytes(path.read_bytes()[:-200])
    output = tmp_path / "out.jsonl"
    with pytest.warns(JobAdInputWarning, match="ads.jsonl.gz:.*truncated or corrupt gzip"):
        summary = extract_file(matcher_nlp, path, output)  # no exception halfway
    ids = [json.loads(line)["id"] for line in output.read_text().splitlines()]
    assert 1 <= len(ids) < 50 and ids == [str(i) for i in range(len(ids))]
    assert summary.n_ads == len(ids) and summary.file_errors == {"truncated or corrupt gzip": 1}


# ------------------------------------------------------------------------------------------ output
def test_extract_writes_one_json_line_per_ad(tmp_path, matcher_nlp, uri_of):
    path = write_jsonl(tmp_path / "ads.jsonl", [{"id": "a1", "description": AD}, {"id": "a2", "description": OTHER_AD}])
    output = tmp_path / "out" / "skills.jsonl"
    summary = extract_file(matcher_nlp, path, output)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["id"] for r in records] == ["a1", "a2"]
    assert summary.n_ads == 2 and summary.n_skipped == 0 and summary.n_with_skills == 2
    first = records[0]
    assert first["is_english"] is True
    assert {s["uri"] for s in first["skills"]} == {uri_of("manage budgets"), uri_of("Python (computer programming)")}
    texts = [s["text"] for s in first["sentences"]]
    assert texts == ["We need someone to manage budgets.", "Python experience is a plus."]
    sentence = first["sentences"][0]
    assert AD[sentence["start_char"]:sentence["end_char"]] == sentence["text"]
    (skill,) = sentence["skills"]
    assert skill["uri"] == uri_of("manage budgets") and skill["explicit"] is True
    assert skill["spans"] == [{"start_char": 19, "end_char": 33, "text": "manage budgets"}]
    assert skill["evidence"] == skill["spans"]  # a literal match's evidence is its mention
    assert "probability" not in skill  # no decider gave one
    assert sentence["ranking"] == sentence["skills"] and sentence["no_skill_reason"] is None  # matcher only
    assert first["ranking"] == first["skills"]
    assert {s["label"] for s in records[1]["skills"]} == {"communication", "computer science"}


def test_extract_writes_the_set_to_csv_and_every_ranked_row_with_ranking(tmp_path, pipeline_nlp, uri_of):
    path = write_jsonl(tmp_path / "ads.jsonl", [{"id": "a1", "description": AD}, {"id": "a2", "description": OTHER_AD}])
    set_csv, ranking_csv, output = tmp_path / "set.csv", tmp_path / "ranking.csv", tmp_path / "skills.jsonl"
    extract_file(pipeline_nlp, path, output, csv_path=set_csv)
    extract_file(pipeline_nlp, path, tmp_path / "again.jsonl", csv_path=ranking_csv, ranking=True)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    set_rows, ranked_rows = list(csv.reader(set_csv.open())), list(csv.reader(ranking_csv.open()))
    assert tuple(set_rows[0]) == tuple(ranked_rows[0]) == CSV_COLUMNS
    assert [row[1] for row in set_rows[1:]] == [s["uri"] for r in records for s in r["skills"]]
    assert [row[1] for row in ranked_rows[1:]] == [s["uri"] for r in records for s in r["ranking"]]
    assert len(ranked_rows) > len(set_rows) > 1  # the ranker's implied skills are ranked, not (uncalibrated) decided
    budgets = next(row for row in set_rows if row[1] == uri_of("manage budgets"))
    assert budgets[0] == "a1" and budgets[4] == "True" and budgets[6] == "manage budgets"  # evidence: the mention


def test_csv_rows_carry_probability_and_evidence_of_a_decided_set(matcher_nlp, uri_of):
    doc = with_implied(matcher_nlp(AD), 0, uri_of("financial management"), "financial management", "budgets", 0.81)
    record = doc_to_record(doc, "a1")
    rows = {row[1]: row for row in csv_rows(record)}
    assert rows[uri_of("financial management")][3:] == (0.42, False, 0.81, "budgets")
    assert rows[uri_of("manage budgets")][5:] == (0.97, "manage budgets")
    assert rows[uri_of("Python (computer programming)")][5:] == ("", "Python")  # literal, undecided sentence


def test_extract_without_output_writes_jsonl_to_the_stream(tmp_path, matcher_nlp):
    path = tmp_path / "ad.txt"
    path.write_text(AD)
    stream = io.StringIO()
    extract_file(matcher_nlp, path, stream=stream)
    (record,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert record["id"] == "ad.txt" and len(record["skills"]) == 2


def test_extract_table_shows_label_uri_and_the_sentence_asking(tmp_path, matcher_nlp, uri_of):
    path = tmp_path / "ad.txt"
    path.write_text("You managed budgets for five years.")
    stream = io.StringIO()
    extract_file(matcher_nlp, path, print_table=True, stream=stream)
    table = stream.getvalue()
    assert "ad ad.txt: 1 skill(s) asked for (1 explicit, 0 implied)" in table
    row = next(line for line in table.splitlines() if uri_of("manage budgets") in line)
    assert "manage budgets" in row and '"You managed budgets for five years."' in row
    assert "sentences: 1, asking for no skill: 0" in table
    assert "{" not in table  # no JSONL on the stream when a table is asked for


def test_table_summary_splits_explicit_and_implied_and_counts_skipped_sentences(matcher_nlp, uri_of):
    doc = BoilerplateFilter(matcher_nlp)(matcher_nlp(SECTIONED_AD))  # the filter without shipped lines
    doc = with_implied(doc, 2, uri_of("patient record storage"), "patient record storage", "patient files", 0.66)
    table = format_ad_table(doc_to_record(doc, "ad1"))
    assert "ad ad1: 2 skill(s) asked for (1 explicit, 1 implied)" in table
    explicit, implied = table.index("Explicit (named in the ad): 1"), table.index("Implied: 1")
    budgets, records = table.index(uri_of("manage budgets")), table.index(uri_of("patient record storage"))
    assert explicit < budgets < implied < records
    row = next(line for line in table.splitlines() if uri_of("patient record storage") in line)
    assert " 0.66 " in row and '"Keep patient files in order."' in row
    assert uri_of("project management") not in table  # named, but in the benefits section
    assert "sentences: 6, asking for no skill: 4 (section:benefits 3, heading 1)" in table


def test_table_of_an_ad_asking_for_nothing(matcher_nlp):
    doc = BoilerplateFilter(matcher_nlp)(matcher_nlp("About us\nWe are a great company.\nBenefits\nA pension."))
    table = format_ad_table(doc_to_record(doc, "ad1"))
    assert "ad ad1: 0 skill(s) asked for" in table and "(no ESCO skill asked for)" in table
    assert "asking for no skill: 4 (section:about_us 2, section:benefits 2)" in table


def test_extract_writes_an_html_page_of_every_ad(tmp_path, matcher_nlp):
    path = write_jsonl(tmp_path / "ads.jsonl", [{"id": "a1", "description": AD},
                                                 {"id": "a<2>", "description": OTHER_AD}])
    html_path = tmp_path / "ads.html"
    stream = io.StringIO()
    extract_file(matcher_nlp, path, html_path=html_path, stream=stream)
    html = html_path.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert html.index("<h2>Ad a1</h2>") < html.index("<h2>Ad a&lt;2&gt;</h2>")
    assert ">manage budgets</mark>" in html and stream.getvalue() == ""  # no JSONL on the stream either


def test_extract_flags_non_english_ads_once(tmp_path, matcher_nlp):
    path = tmp_path / "ads.txt"
    path.write_text(f"{AD}\n{GERMAN_AD}\n")
    output = tmp_path / "out.jsonl"
    with pytest.warns(UserWarning, match="1 of 2 ad\\(s\\) do not look like English") as record:
        summary = extract_file(matcher_nlp, path, output, lines=True)
    assert summary.n_non_english == 1
    assert len([w for w in record if "English" in str(w.message)]) == 1
    assert [json.loads(line)["is_english"] for line in output.read_text().splitlines()] == [True, False]


def test_extract_over_two_processes_gives_the_same_records(tmp_path, matcher_dir, matcher_nlp):
    path = write_jsonl(tmp_path / "ads.jsonl", [{"id": str(i), "description": ad} for i, ad in
                                                 enumerate([AD, OTHER_AD, AD, OTHER_AD, AD])])
    single, parallel = tmp_path / "single.jsonl", tmp_path / "parallel.jsonl"
    extract_file(matcher_nlp, path, single)
    extract_file(matcher_dir, path, parallel, n_process=2, batch_size=2)
    assert parallel.read_text() == single.read_text()


def test_extract_runs_a_loaded_pipeline_over_two_processes(tmp_path, matcher_nlp):
    """spaCy's own n_process: docs come back from the workers with their predictions (no private pool)."""
    path = write_jsonl(tmp_path / "ads.jsonl", [{"id": str(i), "description": ad} for i, ad in
                                                 enumerate([AD, OTHER_AD, AD])])
    single, parallel = tmp_path / "single.jsonl", tmp_path / "parallel.jsonl"
    extract_file(matcher_nlp, path, single)
    summary = extract_file(matcher_nlp, path, parallel, n_process=2, batch_size=1)
    assert summary.n_ads == 3 and summary.n_with_skills == 3
    assert parallel.read_text() == single.read_text()


def test_extract_counts_ads_cut_by_the_length_cap(tmp_path, matcher_nlp, monkeypatch):
    monkeypatch.setattr(matcher_nlp.tokenizer, "max_chars", 100)
    long_ad = " ".join([AD] * 4)
    path = tmp_path / "ads.txt"
    path.write_text(f"{AD}\n{long_ad}\n")
    output = tmp_path / "out.jsonl"
    with pytest.warns(UserWarning) as record:
        summary = extract_file(matcher_nlp, path, output, lines=True)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["truncated_chars"] for r in records] == [0, len(long_ad) - 100]
    assert summary.n_truncated == 1 and "1 truncated" in summary.describe()
    assert [str(w.message) for w in record if "longer than the tokenizer's cap" in str(w.message)]
    assert not [w for w in record if issubclass(w.category, (LongDocumentWarning, NonEnglishWarning))]


# ------------------------------------------------------------------------------------------ bad ads
# The issue's ad (#23): valid JSON holding a lone UTF-16 surrogate, between two good ads.
ISSUE_ADS = (b'{"id": "good1", "description": "We need someone to manage budgets."}\n'
             b'{"id": "bad", "description": "SQL \\ud83d and more"}\n'
             b'{"id": "good2", "description": "Python experience is a plus."}\n')


@pytest.fixture(scope="module")
def poisoned_nlp(matcher_dir):
    """The matcher pipeline with a component that raises on the poison ad's marker word."""
    return add_poison(spacy.load(matcher_dir))


def test_cli_extract_writes_every_ad_of_the_issues_file_and_exits_0(matcher_dir, tmp_path, uri_of):
    path = tmp_path / "ads.jsonl"
    path.write_bytes(ISSUE_ADS)
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["extract", str(matcher_dir), str(path), "--output", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == ["good1", "bad", "good2"]
    assert records[1]["sentences"][0]["text"] == "SQL \ufffd and more"
    assert [s["uri"] for s in records[1]["skills"]] == [uri_of("SQL")]
    assert "3 ad(s) in = 3 written + 0 failed; 3 with skills; 0 line(s) skipped, 1 repaired" in result.output
    assert (tmp_path / "out.failed.jsonl").read_text() == ""


@pytest.mark.parametrize("n_process", [1, 2])
def test_a_poison_ad_fails_alone_and_every_good_ad_is_written_once(tmp_path, poisoned_nlp, matcher_nlp, n_process):
    path = write_jsonl(tmp_path / "ads.jsonl", ads_with_poison(40, poison_at=17))
    output = tmp_path / "out.jsonl"
    with pytest.warns(UserWarning, match="1 ad\\(s\\) failed") as record:
        summary = extract_file(poisoned_nlp, path, output, batch_size=8, n_process=n_process)
    good = [ad for ad in read_ads(path) if ad.id != "poison"]
    assert output.read_text().splitlines() == [json.dumps(r, ensure_ascii=False)
                                               for r in pipe_records(matcher_nlp, good)]  # each once, in order
    (failed,) = [json.loads(line) for line in (tmp_path / "out.failed.jsonl").read_text().splitlines()]
    assert failed == {"file": str(path), "line": 18, "id": "poison", "error": "PoisonedAdError",
                      "message": failed["message"]} and "Poisonberry" in failed["message"]
    assert (summary.n_ads, summary.n_failed, summary.failed) == (40, 1, {"PoisonedAdError": 1})
    assert "41 ad(s) in = 40 written + 1 failed (1 × PoisonedAdError)" in summary.describe()
    (warned,) = [str(w.message) for w in record if "failed" in str(w.message)]
    assert f"listed in '{tmp_path / 'out.failed.jsonl'}'" in warned and f"{path}:18 (id 'poison')" in warned


def test_a_failed_ad_is_warned_about_without_an_output_file(tmp_path, poisoned_nlp):
    path = write_jsonl(tmp_path / "ads.jsonl", ads_with_poison(2, poison_at=0))
    stream = io.StringIO()
    with pytest.warns(UserWarning, match="not listed in a file .no --output.:\n  .*ads.jsonl:1 .id 'poison'.: "
                                         "PoisonedAdError"):
        summary = extract_file(poisoned_nlp, path, stream=stream)
    assert [json.loads(line)["id"] for line in stream.getvalue().splitlines()] == ["good0", "good1"]
    assert summary.n_failed == 1


def test_fail_fast_raises_the_first_exception_as_before(tmp_path, poisoned_nlp):
    path = write_jsonl(tmp_path / "ads.jsonl", ads_with_poison(3, poison_at=1))
    with pytest.raises(PoisonedAdError, match="Poisonberry"):
        extract_file(poisoned_nlp, path, tmp_path / "out.jsonl", fail_fast=True)


@pytest.mark.heavy  # 4 s or more: make test, not make test-fast
def test_cli_extract_lists_a_failed_ad_and_exits_0_or_stops_with_fail_fast(tmp_path, poisoned_nlp):
    model = tmp_path / "poisoned"
    poisoned_nlp.to_disk(model)
    path = write_jsonl(tmp_path / "ads.jsonl", ads_with_poison(3, poison_at=1))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["extract", str(model), str(path), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 ad(s) in = 3 written + 1 failed (1 × PoisonedAdError)" in result.output
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["good0", "good1", "good2"]
    result = CliRunner().invoke(app, ["extract", str(model), str(path), "--output", str(out), "--fail-fast"])
    assert result.exit_code == 1 and isinstance(result.exception, PoisonedAdError)


# ------------------------------------------------------------------------------------------ CLI
def test_cli_extract_table_of_the_sample_ad(matcher_dir, uri_of):
    result = CliRunner().invoke(app, ["extract", str(matcher_dir), str(SAMPLE_AD), "--table"])
    assert result.exit_code == 0, result.output
    assert "ad sample_job_ad.html" in result.output
    for label in ("manage budgets", "medical terminology", "use spreadsheets software"):
        assert uri_of(label) in result.output, label


def test_cli_extract_writes_jsonl_and_csv(matcher_dir, tmp_path):
    path = write_jsonl(tmp_path / "ads.jsonl", [{"id": "a1", "description": AD}])
    out, csv_path = tmp_path / "out.jsonl", tmp_path / "out.csv"
    result = CliRunner().invoke(app, ["extract", str(matcher_dir), str(path), "-o", str(out), "--csv", str(csv_path)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["id"] == "a1"
    assert len(csv_path.read_text().splitlines()) == 3


def test_cli_extract_reports_a_missing_model(tmp_path):
    path = tmp_path / "ad.txt"
    path.write_text(AD)
    result = CliRunner().invoke(app, ["extract", str(tmp_path / "no_model"), str(path)])
    assert result.exit_code == 2
    assert "Could not load a spaCy pipeline" in result.output and "no_model" in result.output


def test_extract_reports_a_missing_model_as_model_not_found(tmp_path):
    path = tmp_path / "ad.txt"
    path.write_text(AD)
    with pytest.raises(ModelNotFoundError, match="no_model"):
        extract_file(tmp_path / "no_model", path)


def test_cli_extract_reports_a_missing_input(matcher_dir, tmp_path):
    result = CliRunner().invoke(app, ["extract", str(matcher_dir), str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 2
    assert "missing.jsonl' not found" in result.output


def test_extract_with_the_ranker_ranks_implied_skills_and_decides_the_set(tmp_path, pipeline_nlp, uri_of):
    path = tmp_path / "ad.txt"
    path.write_text(SECTIONED_AD)
    output = tmp_path / "out.jsonl"
    extract_file(pipeline_nlp, path, output)
    record = json.loads(output.read_text())
    implicit = [s for s in record["ranking"] if not s["explicit"]]
    assert implicit and all(s["spans"] == [] and 0 <= s["score"] <= 1 for s in implicit)
    # The assembled pipeline's decider is uncalibrated: it commits the literal matches of the sentences asking.
    assert {s["uri"] for s in record["skills"]} == {uri_of("manage budgets")}
    reasons = {s["text"].strip(): s["no_skill_reason"] for s in record["sentences"]}
    assert reasons == {"Main duties": "heading", "You will manage budgets for the ward.": None,
                       "Keep patient files in order.": None, "What we offer:": "section:benefits",
                       "Free training in project management.": "section:benefits",
                       "A generous pension.": "section:benefits"}
    for sentence in record["sentences"]:
        ranked_implicit = [s for s in sentence["ranking"] if not s["explicit"]]
        assert bool(ranked_implicit) == (sentence["no_skill_reason"] is None)  # skipped sentences are not ranked
        assert sentence["no_skill_reason"] is None or sentence["skills"] == []


def with_implied(doc, sentence: int, uri: str, label: str, words: str, probability: float):
    """What a ranker and a decider write through the contract: ``label`` ranked in the sentence, then decided
    with ``words`` as evidence; the sentence's literal matches are decided too (probability 0.97)."""
    sent = [s for s in doc.sents if s.text.strip()][sentence]
    ranking = dict(doc._.esco_sentence_skills)
    implied = SkillPrediction(uri, label, 0.42, explicit=False)
    ranking[sent.start] = list(ranking.get(sent.start, [])) + [implied]
    set_predictions(doc, ranking)
    start = doc.text.index(words, sent.start_char)
    decided = replace(implied, probability=probability, evidence=[Evidence(start, start + len(words), words)])
    decisions = {int(k): ([], v) for k, v in (doc._.esco_skipped or {}).items()}
    literal = [replace(p, probability=0.97) for p in ranking[sent.start] if p.explicit]
    decisions[sent.start] = (literal + [decided], None)
    set_decisions(doc, decisions)
    return doc
