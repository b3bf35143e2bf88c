"""A saved matcher pipeline loads with plain ``spacy.load`` (entry points, no import of ours) and round-trips."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import spacy

from pipeline.errors import IncompletePipelineError
from pipeline.components.predictions import SPANS_KEY

AD = (
    "<p>The post holder will:</p><ul><li>Manage budgets for the ward</li>"
    "<li>Work in teams with nurses &amp; doctors</li></ul>"
    "<p>Experience with postgresql, Python and R is desirable.</p>"
)
TEXTS = [
    AD,
    "",
    "Experience in enterprise risk management. Ensure customer satisfaction at all times.",
    "Daily work with R and C# on our models.\nReports in MS Access.",
]

# Runs in a fresh interpreter: only spaCy is imported, the components come from our entry points.
FRESH_PROCESS_CODE = """
import json, sys
import spacy
imported_before = any(name == "pipeline" or name.startswith("pipeline.") for name in sys.modules)
nlp = spacy.load(sys.argv[1])
doc = nlp(sys.argv[2])
print(json.dumps({
    "imported_before_load": imported_before,
    "pipe_names": nlp.pipe_names,
    "spans": [[span.text, span.label_, span.kb_id_] for span in doc.spans["esco_skills"]],
}))
"""


def span_tuples(doc) -> list:
    return [(span.start_char, span.end_char, span.label_, span.kb_id_) for span in doc.spans[SPANS_KEY]]


@pytest.mark.heavy  # 4 s or more: make test, not make test-fast
def test_saved_pipeline_loads_in_a_fresh_process_through_entry_points(matcher_dir, matcher_nlp, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_CODE, str(matcher_dir), AD],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["imported_before_load"] is False
    assert loaded["pipe_names"] == ["esco_job_ad_segmenter", "esco_token_normalizer", "esco_skill_matcher"]
    doc = matcher_nlp(AD)  # keep the Doc alive while its SpanGroup is read
    expected = [[span.text, span.label_, span.kb_id_] for span in doc.spans[SPANS_KEY]]
    assert loaded["spans"] == expected
    assert [text for text, _, _ in loaded["spans"]] == ["Manage budgets", "Work in teams", "postgresql", "Python", "R"]


def test_saved_config_names_the_registered_tokenizer_and_long_document_callback(matcher_nlp):
    config = matcher_nlp.config
    assert config["nlp"]["tokenizer"]["@tokenizers"] == "esco.job_ad_tokenizer.v1"
    assert config["nlp"]["after_creation"]["@callbacks"] == "esco.allow_long_documents.v1"
    assert config["components"]["esco_skill_matcher"]["label_policy"]["@misc"] == "esco.label_policy.v1"
    assert matcher_nlp.max_length > 1_000_000


def test_pipeline_round_trips_through_disk_with_identical_spans(matcher_nlp, tmp_path):
    matcher_nlp.to_disk(tmp_path / "copy")
    reloaded = spacy.load(tmp_path / "copy")
    for text in TEXTS:
        original, copy = matcher_nlp(text), reloaded(text)
        assert copy.text == original.text
        assert span_tuples(copy) == span_tuples(original)
        assert [p.to_dict() for p in copy._.esco_skills] == [p.to_dict() for p in original._.esco_skills]
    assert any(span_tuples(matcher_nlp(text)) for text in TEXTS)

    matcher, copied = matcher_nlp.get_pipe("esco_skill_matcher"), reloaded.get_pipe("esco_skill_matcher")
    assert copied.patterns == matcher.patterns
    assert copied.policy_report == matcher.policy_report
    assert copied.taxonomy.skills == matcher.taxonomy.skills


@pytest.mark.parametrize(
    ("missing", "error"),
    [
        ("patterns.msgpack", IncompletePipelineError),
        ("esco_kb.msgpack", IncompletePipelineError),
        ("lookups.bin", IncompletePipelineError),
    ],
)
def test_incomplete_pipeline_folder_names_the_missing_file(matcher_dir, tmp_path, missing, error):
    broken = tmp_path / "broken"
    shutil.copytree(matcher_dir, broken, ignore=shutil.ignore_patterns(missing))
    with pytest.raises(error, match=rf"{missing}.* incomplete"):
        spacy.load(broken)
