"""The one job-ad reader (pipeline.io.jobads): its policy for bad input, and that corpus and extract share it."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import pytest
from bad_input import NASTY_TEXTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.commands.extract import extract_file
from pipeline.corpus.build import build_corpus, load_corpus
from pipeline.errors import ConfigError, EscoDataError
from pipeline.io.jobads import NON_UTF8, AdFormat, JobAdInputWarning, ReadReport, read_ads, resolve_inputs
from pipeline.io.text import BYTE_ORDER_MARK, CONTROL_CHARACTER, LONE_SURROGATE, repair_text

AD = "We need someone to manage budgets. Python experience is a plus."
OTHER_AD = "<p>Strong communication skills &amp; a degree in computer science.</p>"
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


def line_of(item) -> bytes:
    return item if isinstance(item, bytes) else json.dumps(item).encode()


def write_jsonl(path: Path, lines, compress: bool = False) -> Path:
    data = b"".join(line_of(line) + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def truncated_gzip(path: Path, n_ads: int = 200) -> Path:
    """A gzip of n_ads distinct ads with its second half cut off: some ads decompress, then the stream breaks."""
    ads = [{"id": f"g{i}", "description": f"Ad {i}: the {WORDS[i % 10]} team {WORDS[i // 10 % 10]} "
                                          f"will manage budgets and use Python ({i * 7919 % 1000})."}
           for i in range(n_ads)]
    complete = gzip.compress(b"".join(line_of(ad) + b"\n" for ad in ads), mtime=0)
    path.write_bytes(complete[: len(complete) // 2])
    return path


def read_all(inputs, ad_format: AdFormat = AdFormat(), **kwargs):
    """(ads, report, warning messages) of reading ``inputs``."""
    report = ReadReport(**kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ads = list(read_ads(inputs, ad_format, report=report))
    return ads, report, [str(w.message) for w in caught if issubclass(w.category, JobAdInputWarning)]


def malformed_folder(folder: Path) -> Path:
    """Every kind of bad input the policy names, in one folder (written by the test, byte for byte)."""
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [
        {"id": "a1", "description": AD},
        b'{"id": "bad", "description": "unterminated',
        b'{"id": "a3", "description": "Caf\xe9 staff will provide first aid to patients every day."}',
        {"id": "a4", "description": "   "},
        {"id": "a5", "title": "no description"},
        {"id": "a6", "description": ["not", "a", "string"]},
        b"[1, 2]",
        b"",
        {"description": OTHER_AD},
    ])
    truncated_gzip(folder / "b.jsonl.gz")
    (folder / "c.txt").write_text("The post holder will manage budgets. They will also use Python daily.\n")
    (folder / "notes.csv").write_text("ignored: not a job-ad suffix\n")
    return folder


# ------------------------------------------------------------------------------------------ one policy
def test_corpus_and_extract_read_the_same_ads_and_count_the_same_problems(tmp_path, matcher_dir, matcher_nlp):
    folder = malformed_folder(tmp_path / "ads")
    with pytest.warns(JobAdInputWarning):
        manifest = build_corpus([folder], tmp_path / "corpus", pipeline_path=matcher_dir, workers=1,
                                dev_fraction=0.5, boilerplate_min_ads=1000, progress=False)
    output = tmp_path / "skills.jsonl"
    with pytest.warns(JobAdInputWarning):
        summary = extract_file(matcher_nlp, folder, output)
    extracted = [json.loads(line)["id"] for line in output.read_text().splitlines()]

    counts = manifest["counts"]
    assert counts["ads_read"] == summary.n_ads == len(extracted)
    assert counts["rejected_lines"] == summary.skipped == {
        "malformed JSON": 1, "empty text field 'description'": 1, "missing text field 'description'": 1,
        "text field 'description' is not a string": 1, "not a JSON object": 1}
    assert counts["repaired_lines"] == summary.repaired == {
        "non-UTF-8 bytes replaced with U+FFFD": 1, "missing id field 'id'": 1}
    assert counts["file_errors"] == summary.file_errors == {"truncated or corrupt gzip": 1}
    assert [f["path"] for f in manifest["inputs"]] == [str(folder / name) for name in ("a.jsonl", "b.jsonl.gz", "c.txt")]
    n_gzip = manifest["inputs"][1]["ads_read"]
    assert 1 <= n_gzip < 200
    assert extracted == ["a1", "a3", "a.jsonl:9"] + [f"g{i}" for i in range(n_gzip)] + ["c.txt"]
    corpus = load_corpus(tmp_path / "corpus")
    assert {row["ad_id"] for split in corpus.values() for row in split} <= set(extracted)


def test_bad_utf8_is_repaired_counted_and_warned_with_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "ads.jsonl", [{"id": "a1", "description": AD},
                                                b'{"id": "a2", "description": "Caf\xe9 au lait"}'])
    ads, report, warned = read_all(path)
    assert [ad.text for ad in ads] == [AD, "Caf\ufffd au lait"]
    assert report.totals()["repaired_lines"] == {"non-UTF-8 bytes replaced with U+FFFD": 1}
    assert any("ads.jsonl:2: non-UTF-8 bytes replaced with U+FFFD" in message for message in warned)


def test_bad_utf8_in_a_text_file_is_repaired_with_its_line(tmp_path):
    path = tmp_path / "ad.txt"
    path.write_bytes(b"First line.\nSecond caf\xe9 line.\n")
    ads, report, warned = read_all(path)
    assert [ad.text for ad in ads] == ["First line.\nSecond caf\ufffd line.\n"]
    assert any("ad.txt:2: non-UTF-8 bytes" in message for message in warned)


def test_text_no_string_should_carry_is_mended_and_counted_by_reason_with_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "ads.jsonl", [
        b'{"id": "s1", "description": "SQL \\ud83d and more"}',  # the ad: valid JSON, a lone surrogate
        b'{"id": "c2", "description": "Python\\u0000 and \x01SQL\tdaily"}',  # escaped NUL, raw controls
        b'{"id": "\\ufeffb3\\udc00", "description": "\\ufeffExcel", "source": "a\\u0000b"}',
        b'{"id": "w4", "description": "CESU-8 \xed\xa0\xbd is no UTF-8"}',  # a surrogate encoded as bytes
        b'{"id": "e5", "description": "\\u0000\\u0007 \\u001b"}',  # nothing left once mended
    ])
    ads, report, warned = read_all(path)
    assert [(ad.id, ad.text, ad.source, ad.file, ad.line) for ad in ads] == [
        ("s1", "SQL \ufffd and more", "ads", str(path), 1),
        ("c2", "Python and SQL\tdaily", "ads", str(path), 2),
        ("b3\ufffd", "Excel", "ab", str(path), 3),
        ("w4", "CESU-8 \ufffd\ufffd\ufffd is no UTF-8", "ads", str(path), 4)]
    assert all(ad.text.encode("utf-8") and ad.id.encode("utf-8") for ad in ads)
    assert report.totals()["repaired_lines"] == {LONE_SURROGATE: 2, CONTROL_CHARACTER: 2, BYTE_ORDER_MARK: 1,
                                                 NON_UTF8: 1}
    assert report.totals()["rejected_lines"] == {"empty text field 'description'": 1}
    assert any(f"ads.jsonl:1: {LONE_SURROGATE} (in 'description')" in message for message in warned)
    assert any(f"ads.jsonl:3: {LONE_SURROGATE} (in 'id')" in message for message in warned)
    assert any(f"ads.jsonl:3: {CONTROL_CHARACTER} (in 'source')" in message for message in warned)


def test_text_files_are_mended_by_the_same_rules(tmp_path):
    whole = tmp_path / "ad.txt"
    whole.write_bytes("Manage budgets\x00.\r\n\ufeffPython\u2028SQL\n".encode("utf-8"))
    lines = tmp_path / "lines.txt"
    lines.write_bytes(b"Python\x1b[0m daily\n\x00\x07\nSQL\n")
    ads, report, _ = read_all(whole)
    assert [(ad.id, ad.text, ad.line) for ad in ads] == [("ad.txt", "Manage budgets.\r\nPython\u2028SQL\n", 0)]
    assert report.totals()["repaired_lines"] == {CONTROL_CHARACTER: 1, BYTE_ORDER_MARK: 1}
    ads, report, _ = read_all(lines, AdFormat(one_per_line=True))
    assert [(ad.id, ad.text, ad.line) for ad in ads] == [("lines.txt:1", "Python[0m daily", 1),
                                                         ("lines.txt:3", "SQL", 3)]
    assert report.totals()["rejected_lines"] == {"no text once mended": 1}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.data_too_large])
@given(records=st.lists(st.tuples(NASTY_TEXTS, NASTY_TEXTS), min_size=1, max_size=8))
def test_json_escaped_nasty_text_is_read_whole_and_mended(tmp_path, records):
    """Every line is an ad, or rejected because nothing is left once mended; every ad can be written as UTF-8."""
    path = write_jsonl(tmp_path / "nasty.jsonl", [json.dumps({"id": ad_id, "description": text}).encode()
                                                  for ad_id, text in records])
    ads, report, _ = read_all(path)
    kept = [(line, ad_id, text) for line, (ad_id, text) in enumerate(records, start=1)
            if repair_text(text).text.strip()]
    assert [ad.line for ad in ads] == [line for line, _, _ in kept]
    assert report.totals()["rejected_lines"] == (
        {"empty text field 'description'": len(records) - len(kept)} if len(kept) < len(records) else {})
    for ad, (line, ad_id, text) in zip(ads, kept):
        assert ad.text == repair_text(text).text and ad.id == (repair_text(ad_id).text.strip() or f"nasty.jsonl:{line}")
        (ad.text + ad.id).encode("utf-8")
    n_lone = sum(LONE_SURROGATE in repair_text(text).reasons + repair_text(ad_id).reasons for _, ad_id, text in kept)
    assert report.totals()["repaired_lines"].get(LONE_SURROGATE, 0) == n_lone


def test_gzip_is_found_by_its_magic_bytes_not_its_name(tmp_path):
    disguised = write_jsonl(tmp_path / "gzipped.jsonl", [{"id": "z1", "description": AD}], compress=True)
    plain = write_jsonl(tmp_path / "plain.jsonl.gz", [{"id": "p1", "description": OTHER_AD}])
    ads, report, warned = read_all([disguised, plain])
    assert [(ad.id, ad.text) for ad in ads] == [("z1", AD), ("p1", OTHER_AD)]
    assert report.n_problems == 0 and warned == []


def test_a_truncated_gzip_keeps_the_ads_before_the_break_and_counts_the_rest(tmp_path):
    path = truncated_gzip(tmp_path / "ads.jsonl.gz")
    ads, report, warned = read_all(path)  # no exception: the break is a counted file error
    assert 1 <= len(ads) < 200 and [ad.id for ad in ads] == [f"g{i}" for i in range(len(ads))]
    assert report.totals()["file_errors"] == {"truncated or corrupt gzip": 1}
    assert any("ads.jsonl.gz:" in m and "truncated or corrupt gzip" in m and "rest of file skipped" in m
               for m in warned)


def test_a_truncated_gzip_text_file_gives_no_partial_ad(tmp_path):
    complete = gzip.compress((AD + "\n").encode() * 2000, mtime=0)
    path = tmp_path / "ad.txt.gz"
    path.write_bytes(complete[: len(complete) // 2])
    ads, report, _ = read_all(path)
    assert ads == [] and report.totals()["file_errors"] == {"truncated or corrupt gzip": 1}


def test_the_first_problems_are_warned_and_all_are_counted(tmp_path):
    path = write_jsonl(tmp_path / "ads.jsonl", [b"{broken"] * 7 + [{"id": "ok", "description": AD}])
    ads, report, warned = read_all(path, max_warnings=3, max_listed=5)
    assert [ad.id for ad in ads] == ["ok"]
    assert report.totals()["rejected_lines"] == {"malformed JSON": 7} and report.n_problems == 7
    assert [m.split(": ")[0] for m in warned[:3]] == [f"{path}:{n}" for n in (1, 2, 3)]
    assert len(warned) == 4 and warned[3].startswith("4 more input problems not shown")
    assert [p["line"] for p in report.problems] == [1, 2, 3, 4, 5]


def test_empty_files_and_blank_lines_are_counted(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "blank.txt").write_text("  \n\n")
    path = write_jsonl(tmp_path / "ads.jsonl", [b"", {"id": "a", "description": AD}, b"  "])
    ads, report, _ = read_all([tmp_path / "empty.jsonl", tmp_path / "blank.txt", path])
    assert [ad.id for ad in ads] == ["a"]
    assert report.totals()["file_errors"] == {"empty file": 2}
    assert report.file(path).blank_lines == 2


# ------------------------------------------------------------------------------------------ formats
def test_text_file_is_one_ad(tmp_path):
    path = tmp_path / "ad.txt"
    path.write_text(AD + "\n\nSecond paragraph.\n")
    ads, _, _ = read_all(path)
    assert [(ad.id, ad.text, ad.source) for ad in ads] == [("ad.txt", AD + "\n\nSecond paragraph.\n", "ad")]


def test_text_file_with_one_ad_per_line(tmp_path):
    path = tmp_path / "ads.txt"
    path.write_text(f"{AD}\n\n{OTHER_AD}\r\n")
    ads, report, _ = read_all(path, AdFormat(one_per_line=True))
    assert [(ad.id, ad.text) for ad in ads] == [("ads.txt:1", AD), ("ads.txt:3", OTHER_AD)]
    assert report.file(path).blank_lines == 1


def test_html_file_is_one_ad(tmp_path):
    path = tmp_path / "ad.html"
    path.write_text(OTHER_AD)
    assert [ad.id for ad in read_all(path)[0]] == ["ad.html"]


def test_fields_are_configurable(tmp_path):
    path = write_jsonl(tmp_path / "ads.ndjson.gz", [{"ref": "x1", "body": AD, "site": "nhs"}, {"ref": 7, "body": OTHER_AD}],
                       compress=True)
    ads, _, _ = read_all(path, AdFormat(text_field="body", id_field="ref", source_field="site"))
    assert [(ad.id, ad.source) for ad in ads] == [("x1", "nhs"), ("7", "ads")]


def test_empty_field_names_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="'text_field' must name a JSON field"):
        read_ads(tmp_path, AdFormat(text_field=""))


def test_limit_stops_reading(tmp_path):
    path = write_jsonl(tmp_path / "ads.jsonl", [{"id": "1", "description": AD}, {"id": "2", "description": AD},
                                                b"{broken"])
    report = ReadReport()
    assert [ad.id for ad in read_ads(path, report=report, limit=2)] == ["1", "2"]
    assert report.n_problems == 0  # the line after the limit is never read


# ------------------------------------------------------------------------------------------ inputs
def test_a_folder_stands_for_its_job_ad_files(tmp_path):
    folder = tmp_path / "adzuna"
    folder.mkdir()
    for name in ("b.jsonl", "a.txt", "c.htm", "d.json.gz", "skip.csv"):
        (folder / name).write_text("x")
    files = resolve_inputs([folder])
    assert [(f.path.name, f.kind, f.default_source) for f in files] == [
        ("a.txt", "text", "adzuna"), ("b.jsonl", "jsonl", "adzuna"), ("c.htm", "text", "adzuna"),
        ("d.json.gz", "jsonl", "adzuna")]


def test_inputs_that_cannot_be_read_fail_before_any_ad(tmp_path):
    with pytest.raises(EscoDataError, match="nope.jsonl' not found"):
        resolve_inputs([tmp_path / "nope.jsonl"])
    (tmp_path / "ads.csv").write_text("id,description\n")
    with pytest.raises(EscoDataError, match="ads.csv' is not a job-ad file"):
        resolve_inputs([tmp_path / "ads.csv"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(EscoDataError, match="'.*empty' holds no job-ad files"):
        resolve_inputs([tmp_path / "empty"])
    with pytest.raises(EscoDataError, match="No job-ad files given"):
        resolve_inputs([])
