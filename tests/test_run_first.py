"""What a newcomer's `make run` shows (issue #21): the default pipeline, its decider calibrated on one benchmark
file without a corpus, commits implied skills of the sample ad with their evidence words, and the table says which
model made them: an untrained encoder never passes for the trained pipeline."""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import pytest

from pipeline.commands.extract import extract_file
from pipeline.training.decider_fit import calibrate

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "corpora" / "fixtures" / "sample_job_ad.html"
CALIBRATION_SECONDS = 60  # one small validation file, no corpus: what keeps `make run` under its 5 minutes


@pytest.fixture(scope="module")
def calibrated_dir(tmp_path_factory, pipeline_dir, shared_path) -> Path:
    """A copy of the assembled default pipeline, its decider calibrated on the house validation file alone."""
    model = tmp_path_factory.mktemp("run_first") / "base"
    shutil.copytree(pipeline_dir, model)
    started = time.perf_counter()
    calibrate(model, None, [shared_path / "benchmark" / "house_validation_annotations.csv"])
    seconds = time.perf_counter() - started
    assert seconds < CALIBRATION_SECONDS, f"calibrating on one validation file took {seconds:.0f} s"
    return model


def _table(model: Path) -> str:
    stream = io.StringIO()
    extract_file(model, SAMPLE, print_table=True, stream=stream)
    return stream.getvalue()


def test_the_table_says_the_assembled_pipeline_is_untrained_and_uncalibrated(pipeline_dir):
    table = _table(pipeline_dir)
    header = table.splitlines()[0]
    assert header.startswith("model: untrained encoder (sentence-transformers/all-MiniLM-L6-v2 as published)")
    assert "decider uncalibrated: literal matches only, no implied skill" in header
    assert "make corpus && make train" in table.splitlines()[1]
    assert "(6 explicit, 0 implied)" in table


def test_the_table_says_the_calibrated_pipeline_is_untrained_and_where_its_decisions_come_from(calibrated_dir):
    lines = _table(calibrated_dir).splitlines()
    assert lines[0] == ("model: untrained encoder (sentence-transformers/all-MiniLM-L6-v2 as published), decisions "
                        "calibrated on the benchmark files house (no corpus: boilerplate gate open)")
    assert lines[1].startswith("not the trained model: make corpus && make train")
    implied = lines[lines.index(next(line for line in lines if line.startswith("Implied: "))):]
    row = next(line for line in implied if "maintain healthcare user data confidentiality" in line)
    assert "confidentiality" in row.split("maintain healthcare user data confidentiality", 1)[1]  # the evidence


def test_the_calibrated_base_pipeline_commits_an_implied_skill_of_the_sample_ad_with_its_evidence(
        calibrated_dir, tmp_path, uri_of):
    output = tmp_path / "sample.jsonl"
    extract_file(calibrated_dir, SAMPLE, output)
    record = json.loads(output.read_text())
    implied = {skill["uri"]: skill for skill in record["skills"] if not skill["explicit"]}
    confidentiality = implied[uri_of("maintain healthcare user data confidentiality")]
    assert confidentiality["probability"] > 0 and confidentiality["evidence"]
    asking = [s for s in record["sentences"] if confidentiality["uri"] in {k["uri"] for k in s["skills"]}]
    assert [s["text"].strip() for s in asking] == [
        "Maintain confidentiality of health care user data at all times, in line with GDPR."]
    sentence = asking[0]
    for word in confidentiality["evidence"]:  # words of the sentence that asks for it, at their offsets
        assert sentence["start_char"] <= word["start_char"] < word["end_char"] <= sentence["end_char"]
        offset = word["start_char"] - sentence["start_char"]
        assert sentence["text"][offset:offset + len(word["text"])] == word["text"]
    assert "confidentiality" in {word["text"] for word in confidentiality["evidence"]}


def test_the_table_says_a_matcher_only_pipeline_finds_explicit_skills_only(matcher_dir):
    lines = _table(matcher_dir).splitlines()
    assert lines[0] == "model: literal matcher only (explicit skills, no implied ones)"
    assert lines[1].startswith("not the trained model: make corpus && make train")
