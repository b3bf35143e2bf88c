"""The distant-supervision corpus: bad input in the manifest, cleaning, boilerplate, dedupe, labels, splits and
storage. The reader of job-ad files is tested in test_jobads.py, masking in test_masking.py."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest
from bad_input import PoisonedAdError, ads_with_poison, poisoned_normalizer
from typer.testing import CliRunner

from pipeline.commands.cli import app
from pipeline.corpus.build import MANIFEST_FILE, SPLITS, build_corpus, load_corpus
from pipeline.corpus.settings import CorpusSettings
from pipeline.corpus.labelling import SentenceLabeller
from pipeline.corpus.lines import Failure, isolated
from pipeline.corpus.storage import SplitSpill, save_dataset, split_features
from pipeline.io.boilerplate import BOILERPLATE_FILE, line_key, read_boilerplate
from pipeline.errors import ConfigError, EscoDataError
from pipeline.io.jobads import JobAdInputWarning

BOILERPLATE = "We are an equal opportunity employer and value diversity."
BUDGETS = "You will manage budgets for the ward and supervise staff."
FRENCH = "Bonjour, nous recherchons un développeur pour notre équipe à Paris et nous sommes là."
TOO_LONG = " ".join(["Reliable"] + ["and"] * 22 + ["punctual staff."])  # 25 words > max_words = 20
TEAMS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "granite", "hotel", "india", "juliet", "kilo",
         "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango"]


def write_lines(path: Path, lines) -> Path:
    data = b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def fixture_inputs(folder: Path) -> list:
    """Ads with HTML, a duplicate line, boilerplate, French, bad lines, an empty file, a truncated gzip, a .txt."""
    ads = write_lines(folder / "ads_a.jsonl", [
        {"id": "a1", "source": "nhs", "description": f"<p>{BUDGETS}</p><ul><li>Experience with Python &amp; SQL "
                                                      f"is essential.</li><li>{BOILERPLATE}</li></ul>"},
        {"id": "a2", "source": "nhs", "description": f"Strong communication skills are required for this role.\n"
                                                      f"{BUDGETS}\n{BOILERPLATE}\nApply now!\n{TOO_LONG}"},
        b'{"id": "bad", "description": "unterminated',
        {"id": "a4", "title": "Nurse (no description)"},
        b'{"id": "a5", "source": "nhs", "description": "Caf\xe9 staff will provide first aid to patients."}',
        {"source": "nhs", "description": "Knowledge of project management is desirable."},
        b"",
        {"id": "a8", "description": FRENCH},
    ])
    (folder / "empty.jsonl").write_bytes(b"")
    complete = gzip.compress(b"".join(
        json.dumps({"id": f"t{i}", "source": "tech", "description": f"The {team} team works across several "
                                                                      "sites in the region."}).encode() + b"\n"
        for i, team in enumerate(TEAMS)), mtime=0)
    (folder / "truncated.jsonl.gz").write_bytes(complete[: len(complete) - 40])
    (folder / "ad.txt").write_text("The post holder will manage budgets. They will also use Python daily.\n")
    return [ads, folder / "empty.jsonl", folder / "truncated.jsonl.gz", folder / "ad.txt"]


def build(inputs, output: Path, matcher_dir: Path, **kwargs) -> dict:
    options = dict(limit=None, text_field="description", id_field="id", dev_fraction=0.5, seed=0, workers=1,
                   boilerplate_min_ads=2, max_words=20, pipeline_path=matcher_dir, progress=False)
    options.update(kwargs)
    return build_corpus(inputs, output, **options)


@pytest.fixture(scope="module")
def fixture_corpus(tmp_path_factory, matcher_dir):
    folder = tmp_path_factory.mktemp("corpus_inputs")
    inputs = fixture_inputs(folder)
    output = tmp_path_factory.mktemp("corpus") / "out"
    with pytest.warns(JobAdInputWarning) as warned:
        manifest = build(inputs, output, matcher_dir)
    return {"inputs": inputs, "output": output, "manifest": manifest,
            "warnings": [str(w.message) for w in warned if w.category is JobAdInputWarning]}


def examples_of(corpus) -> list:
    return list(corpus["train"]) + list(corpus["dev"])


# ------------------------------------------------------------------------------------------ labels
def test_corpus_examples_carry_exact_uris_and_offsets(fixture_corpus, uri_of):
    corpus = load_corpus(fixture_corpus["output"])
    by_text = {row["text"]: row for row in examples_of(corpus)}
    expected = {
        BUDGETS: ["manage budgets", "supervise staff"],
        "Experience with Python & SQL is essential.": ["Python (computer programming)", "SQL"],
        "Strong communication skills are required for this role.": ["communication"],
        "Caf\ufffd staff will provide first aid to patients.": ["provide first aid"],
        "Knowledge of project management is desirable.": ["project management"],
        "The post holder will manage budgets.": ["manage budgets"],
        "They will also use Python daily.": ["Python (computer programming)"],
    }
    assert set(by_text) == set(expected)
    for text, labels in expected.items():
        assert by_text[text]["uris"] == [uri_of(label) for label in labels]
    mention_texts = {(m["uri"], text[m["start"] : m["end"]]) for text, row in by_text.items() for m in row["mentions"]}
    assert (uri_of("manage budgets"), "manage budgets") in mention_texts
    assert (uri_of("Python (computer programming)"), "Python") in mention_texts
    assert (uri_of("provide first aid"), "provide first aid") in mention_texts
    for row in by_text.values():
        assert [m["uri"] for m in row["mentions"]] == row["uris"]


def test_corpus_rows_name_their_ad_and_source(fixture_corpus):
    corpus = load_corpus(fixture_corpus["output"])
    by_text = {row["text"]: row for row in examples_of(corpus)}
    assert (by_text[BUDGETS]["ad_id"], by_text[BUDGETS]["source"]) == ("a1", "nhs")  # first occurrence wins
    assert by_text["Knowledge of project management is desirable."]["ad_id"] == "ads_a.jsonl:6"
    python_row = by_text["They will also use Python daily."]
    assert (python_row["ad_id"], python_row["source"]) == ("ad.txt", "ad")
    unmatched = {row["text"]: row for row in corpus["unmatched"]}
    assert unmatched["The alpha team works across several sites in the region."]["source"] == "tech"
    assert BOILERPLATE not in unmatched and FRENCH not in unmatched


def test_corpus_manifest_counts_every_stage(fixture_corpus):
    manifest = fixture_corpus["manifest"]
    counts = manifest["counts"]
    corpus = load_corpus(fixture_corpus["output"])
    truncated_ads = counts["ads_read"] - 6
    assert 1 <= truncated_ads < len(TEAMS)
    assert counts["rejected_lines"] == {"malformed JSON": 1, "missing text field 'description'": 1}
    assert counts["ads_rejected"] == counts["rejected_lines"]
    assert counts["repaired_lines"] == {"non-UTF-8 bytes replaced with U+FFFD": 1, "missing id field 'id'": 1}
    assert counts["file_errors"] == {"empty file": 1, "truncated or corrupt gzip": 1}
    assert counts["blank_lines"] == 1
    assert (counts["boilerplate_lines"], counts["boilerplate_distinct"], counts["boilerplate_kept_with_match"],
            counts["boilerplate_saved"]) == (2, 1, 1, 2)
    assert counts["duplicate_lines"] == 1
    assert (counts["non_english"], counts["too_short"], counts["too_long"]) == (1, 1, 1)
    assert counts["examples"] == counts["sentences_matched"] == len(corpus["train"]) + len(corpus["dev"]) == 7
    assert counts["sentences_unmatched"] == len(corpus["unmatched"]) == truncated_ads
    assert counts["sentences_kept"] == counts["examples"] + counts["sentences_unmatched"]
    assert counts["mentions"] == 9
    assert manifest["skills"]["skills_covered"] == 7
    assert manifest["skills"]["top"][0]["label"] in {"manage budgets", "Python (computer programming)"}
    assert manifest["by_source"]["nhs"]["counts"]["ads_read"] == 4
    assert manifest["by_source"]["tech"]["counts"]["examples"] == 0
    assert json.loads((fixture_corpus["output"] / MANIFEST_FILE).read_text())["counts"] == counts


def test_corpus_saves_every_frequent_line_with_its_ads_and_skill_flag(fixture_corpus):
    """Dropped boilerplate and the frequent line that names a skill (kept in the corpus) are both saved."""
    rows = read_boilerplate(fixture_corpus["output"] / BOILERPLATE_FILE)
    expected = [{"key": line_key(text, fold_digits=True), "text": text, "ads": 2, "has_skill": has_skill}
                for text, has_skill in ((BOILERPLATE, False), (BUDGETS, True))]
    assert rows == sorted(expected, key=lambda row: row["key"])  # most ads first, then by key


def test_bad_input_is_warned_with_file_and_line(fixture_corpus):
    warned = "\n".join(fixture_corpus["warnings"])
    assert "ads_a.jsonl:3: malformed JSON" in warned
    assert "ads_a.jsonl:4: missing text field 'description'" in warned
    assert "ads_a.jsonl:5: non-UTF-8 bytes replaced with U+FFFD" in warned
    assert "empty.jsonl: empty file" in warned
    assert "truncated.jsonl.gz:" in warned and "truncated or corrupt gzip" in warned
    problems = fixture_corpus["manifest"]["problems"]
    assert {"file": str(fixture_corpus["inputs"][0]), "line": 3, "kind": "rejected", "reason": "malformed JSON"} \
        .items() <= problems[0].items()


# ------------------------------------------------------------------------------------------ splits
def test_corpus_splits_by_ad_deterministically(fixture_corpus, tmp_path, matcher_dir):
    first = load_corpus(fixture_corpus["output"])
    train_ads, dev_ads = set(first["train"]["ad_id"]), set(first["dev"]["ad_id"])
    assert train_ads and dev_ads and not train_ads & dev_ads
    counts = fixture_corpus["manifest"]["counts"]
    assert counts["ads_dev"] == round(0.5 * (counts["ads_train"] + counts["ads_dev"]))
    with pytest.warns(JobAdInputWarning):
        build(fixture_corpus["inputs"], tmp_path / "again", matcher_dir)
    again = load_corpus(tmp_path / "again")
    for split in ("train", "dev", "unmatched"):
        assert again[split].to_list() == first[split].to_list()


def test_corpus_is_the_same_with_two_workers(fixture_corpus, tmp_path, matcher_dir):
    with pytest.warns(JobAdInputWarning):
        build(fixture_corpus["inputs"], tmp_path / "parallel", matcher_dir, workers=2)
    first, parallel = load_corpus(fixture_corpus["output"]), load_corpus(tmp_path / "parallel")
    for split in ("train", "dev", "unmatched"):
        assert parallel[split].to_list() == first[split].to_list()


def test_limit_counts_ads_read(fixture_corpus, tmp_path, matcher_dir):
    manifest = build(fixture_corpus["inputs"], tmp_path / "limited", matcher_dir, limit=2)
    assert manifest["counts"]["ads_read"] == 2
    assert [f["ads_read"] for f in manifest["inputs"]] == [2, 0, 0, 0]


# ------------------------------------------------------------------------------------------ errors
def test_missing_input_is_an_error_before_any_work(tmp_path, matcher_dir):
    with pytest.raises(EscoDataError, match="nope.jsonl' not found"):
        build([tmp_path / "nope.jsonl"], tmp_path / "out", matcher_dir)
    (tmp_path / "ads.csv").write_text("id,description\n")
    with pytest.raises(EscoDataError, match="ads.csv' is not a job-ad file"):
        build([tmp_path / "ads.csv"], tmp_path / "out", matcher_dir)


def test_input_without_usable_ads_is_an_error(tmp_path, matcher_dir):
    path = write_lines(tmp_path / "ads.jsonl", [{"id": "1", "text": "Manage budgets daily."}])
    with pytest.warns(JobAdInputWarning), pytest.raises(EscoDataError, match="No usable ads in .*ads.jsonl"):
        build([path], tmp_path / "out", matcher_dir)


def test_out_of_range_settings_are_config_errors(tmp_path, matcher_dir):
    with pytest.raises(ConfigError, match=r"\[corpus\] dev_fraction must be < 1\.0, got 1\.5"):
        build([tmp_path], tmp_path / "out", matcher_dir, dev_fraction=1.5)
    with pytest.raises(ConfigError, match=r"\[corpus\] limit must be >= 1"):
        build([tmp_path], tmp_path / "out", matcher_dir, limit=0)
    with pytest.raises(ConfigError, match=r"\[corpus\] max_words must be >= min_words \(5\), got 4"):
        build([tmp_path], tmp_path / "out", matcher_dir, min_words=5, max_words=4)
    with pytest.raises(ConfigError, match=r"\[corpus\] text_field: string should have at least 1 character"):
        build([tmp_path], tmp_path / "out", matcher_dir, text_field="")
    with pytest.raises(ConfigError, match=r"\[corpus\] unknown key 'min_ads'"):
        build([tmp_path], tmp_path / "out", matcher_dir, min_ads=3)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_load_corpus_names_the_missing_part(tmp_path, fixture_corpus):
    with pytest.raises(EscoDataError, match="No corpus at .*nowhere"):
        load_corpus(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    with pytest.raises(EscoDataError, match="incomplete: .*manifest.json' is missing"):
        load_corpus(tmp_path / "half")


# ------------------------------------------------------------------------------------------ storage
def test_splits_are_saved_with_the_public_datasets_api(tmp_path, monkeypatch):
    import datasets.arrow_writer

    monkeypatch.setattr(datasets.arrow_writer, "ArrowWriter", None)  # private API: the build must not need it
    (tmp_path / "work").mkdir()
    rows = SplitSpill(tmp_path / "work")
    row = {"text": "You will manage budgets.", "uris": ["u:b"], "mentions": [{"start": 9, "end": 23, "uri": "u:b"}],
           "ad_id": "a1", "source": "nhs"}
    rows.write("train", row)
    rows.write("train", {**row, "ad_id": "a2"})
    rows.write("unmatched", {"text": "Hello there, all.", "ad_id": "a1", "source": "nhs"})
    save_dataset(rows, tmp_path / "out" / "dataset", tmp_path / "work" / "arrow", progress=False)
    (tmp_path / "out" / MANIFEST_FILE).write_text("{}")
    corpus = load_corpus(tmp_path / "out")  # what the training code reads
    assert [len(corpus[split]) for split in SPLITS] == [2, 0, 1]  # an empty split is saved too
    assert corpus["train"].to_list() == [row, {**row, "ad_id": "a2"}]
    assert all(corpus[split].features == split_features(split) for split in SPLITS)


def test_build_keeps_exporting_what_training_imports():
    from pipeline.corpus import build, storage

    assert (build.load_corpus, build.SPLITS, build.MANIFEST_FILE) == (storage.load_corpus, storage.SPLITS,
                                                                      storage.MANIFEST_FILE)
    assert CorpusSettings().ad_format().text_field == "description"


def test_labeller_keeps_offsets_into_the_clean_line(matcher_nlp, uri_of):
    """Corpus lines are clean already: the labeller must not clean them again (which would move offsets)."""
    labeller = SentenceLabeller(matcher_nlp, CorpusSettings())
    line = "CafÃ© staff at the <b>cafe</b> need Python and SQL experience."  # cleaning would change both
    n_matches, [(_, status, text, mentions)] = labeller.label_line(line)
    assert (n_matches, status, text) == (2, "ok", line)
    assert [(text[s:e], uri) for s, e, uri in mentions] == [("Python", uri_of("Python (computer programming)")),
                                                            ("SQL", uri_of("SQL"))]


# ------------------------------------------------------------------------------------------ a poison ad
@pytest.fixture(scope="module")
def poisoned_matcher(tmp_path_factory, matcher_dir):
    """The matcher pipeline with a normalizer that raises on the poison ad's marker word (a saved pipeline, as the
    corpus takes one with --pipeline)."""
    return poisoned_normalizer(matcher_dir, tmp_path_factory.mktemp("poisoned") / "matcher")


@pytest.mark.heavy  # 4 s or more: make test, not make test-fast
@pytest.mark.parametrize("workers", [1, 2])
def test_a_poison_ad_fails_alone_and_every_good_ad_is_in_the_corpus(tmp_path, poisoned_matcher, workers):
    path = write_lines(tmp_path / "ads.jsonl", ads_with_poison(30, poison_at=12))
    manifest = build([path], tmp_path / "out", poisoned_matcher, workers=workers)
    counts = manifest["counts"]
    assert (counts["ads_failed"], counts["ads_failed_by_error"]) == (1, {"PoisonedAdError": 1})
    assert counts["ads_read"] == 31 == (counts["ads_empty_after_cleaning"] + counts["ads_failed"]
                                        + counts["ads_train"] + counts["ads_dev"])
    (failed,) = [json.loads(line) for line in (tmp_path / "out" / "failed.jsonl").read_text().splitlines()]
    assert {k: failed[k] for k in ("file", "line", "id", "error")} == {
        "file": str(path), "line": 13, "id": "poison", "error": "PoisonedAdError"}
    corpus = load_corpus(tmp_path / "out")
    rows = [row["ad_id"] for split in ("train", "dev", "unmatched") for row in corpus[split]]
    assert Counter(rows) == {f"good{i}": 2 for i in range(30)}  # both sentences of every good ad, once


def test_fail_fast_stops_the_corpus_at_the_poison_ad(tmp_path, poisoned_matcher):
    path = write_lines(tmp_path / "ads.jsonl", ads_with_poison(3, poison_at=1))
    with pytest.raises(PoisonedAdError, match="Poisonberry"):
        build([path], tmp_path / "out", poisoned_matcher, fail_fast=True)
    assert not (tmp_path / "out" / MANIFEST_FILE).exists()


def test_isolated_hands_back_an_exception_as_data_or_raises_it_with_fail_fast():
    assert isolated(int, "12") == 12
    assert isolated(int, "twelve") == Failure("ValueError", "invalid literal for int() with base 10: 'twelve'")
    with pytest.raises(ValueError):
        isolated(int, "twelve", fail_fast=True)


# ------------------------------------------------------------------------------------------ real ads
@pytest.mark.heavy  # 4 s or more: make test, not make test-fast
def test_cli_builds_a_corpus_from_200_real_ads(shared_path, esco_path, tmp_path):
    jobads = shared_path / "jobads" / "tech_and_general_jobs.jsonl.gz"
    output = tmp_path / "corpus"
    result = CliRunner().invoke(app, ["corpus", str(jobads), "--esco", str(esco_path), "--output", str(output),
                                      "--limit", "200", "--workers", "2"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((output / MANIFEST_FILE).read_text())
    counts = manifest["counts"]
    assert counts["ads_read"] == 200 and counts["rejected_lines"] == {} and counts["file_errors"] == {}
    assert counts["duplicate_lines"] > 0 and counts["examples"] > 200
    corpus = load_corpus(output)
    assert len(corpus["train"]) + len(corpus["dev"]) == counts["examples"]
    assert not set(corpus["train"]["ad_id"]) & set(corpus["dev"]["ad_id"])
    for row in corpus["train"].select(range(100)):
        assert row["mentions"] and all(0 <= m["start"] < m["end"] <= len(row["text"]) for m in row["mentions"])
        assert all(row["text"][m["start"] : m["end"]].strip() == row["text"][m["start"] : m["end"]]
                   for m in row["mentions"])
    assert manifest["skills"]["skills_covered"] > 100
    boilerplate = read_boilerplate(output)  # the file is there even when no line is in 20 of 200 ads
    assert len(boilerplate) == counts["boilerplate_saved"]
    assert sum(not row["has_skill"] for row in boilerplate) == counts["boilerplate_distinct"]
    assert set(manifest["by_source"]) <= {"linkedin-indeed-ca-2018", "google-careers", "adzuna-uk", "glassdoor-ds"}
