"""Reading job-ad files, the JSONL / CSV / table output of `extract`, and the CLI command."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.commands.cli import app
from pipeline.commands.extract import CSV_COLUMNS, extract_file
from pipeline.components.segmenter import LongDocumentWarning, NonEnglishWarning
from pipeline.errors import ModelNotFoundError
from pipeline.io.jobads import JobAdInputWarning

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_AD = ROOT / "corpora" / "fixtures" / "sample_job_ad.html"
AD = "We need someone to manage budgets. Python experience is a plus."
OTHER_AD = "<p>Strong communication skills &amp; a degree in computer science.</p>"
GERMAN_AD = "Wir suchen eine engagierte Pflegekraft für unser Team in der Klinik mit Erfahrung im Dienst."


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
    assert {s["label"] for s in records[1]["skills"]} == {"communication", "computer science"}


def test_extract_writes_top_k_rows_per_ad_to_csv(tmp_path, matcher_nlp):
    path = write_jsonl(tmp_path / "ads.jsonl", [{"id": "a1", "description": AD}, {"id": "a2", "description": OTHER_AD}])
    csv_path = tmp_path / "skills.csv"
    extract_file(matcher_nlp, path, tmp_path / "skills.jsonl", csv_path=csv_path, top_k=1)
    rows = list(csv.reader(csv_path.open()))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [row[0] for row in rows[1:]] == ["a1", "a2"]
    assert all(row[4] == "True" and 0 < float(row[3]) <= 1 for row in rows[1:])


def test_extract_without_output_writes_jsonl_to_the_stream(tmp_path, matcher_nlp):
    path = tmp_path / "ad.txt"
    path.write_text(AD)
    stream = io.StringIO()
    extract_file(matcher_nlp, path, stream=stream)
    (record,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert record["id"] == "ad.txt" and len(record["skills"]) == 2


def test_extract_table_shows_label_uri_kind_and_mention(tmp_path, matcher_nlp, uri_of):
    path = tmp_path / "ad.txt"
    path.write_text("You managed budgets for five years.")
    stream = io.StringIO()
    extract_file(matcher_nlp, path, print_table=True, stream=stream)
    table = stream.getvalue()
    assert "ad ad.txt: 1 skill(s)" in table
    row = next(line for line in table.splitlines() if uri_of("manage budgets") in line)
    assert "manage budgets" in row and "explicit" in row and "managed budgets" in row
    assert "{" not in table  # no JSONL on the stream when a table is asked for


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


def test_extract_with_the_ranker_keeps_the_shape_and_adds_implicit_skills(tmp_path, pipeline_nlp, uri_of):
    path = tmp_path / "ad.txt"
    path.write_text(AD)
    output = tmp_path / "out.jsonl"
    extract_file(pipeline_nlp, path, output)
    record = json.loads(output.read_text())
    explicit = [s for s in record["skills"] if s["explicit"]]
    implicit = [s for s in record["skills"] if not s["explicit"]]
    assert {s["uri"] for s in explicit} == {uri_of("manage budgets"), uri_of("Python (computer programming)")}
    assert implicit and all(s["spans"] == [] and 0 <= s["score"] <= 1 for s in implicit)
    assert all(any(not s["explicit"] for s in sentence["skills"]) for sentence in record["sentences"])
