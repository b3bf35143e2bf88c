"""Every component saves and loads its state as spaCy's own do, on the real ESCO data: ``from_bytes(to_bytes())``
of the whole pipeline predicts what the original does (a calibrated decider whose gate closes on real sentences, a
boilerplate filter with keys), ``exclude`` leaves a part out by name, and a folder without a part's file says which.
"""

from __future__ import annotations

import gc
import importlib.util
import re
import shutil

import numpy as np
import pytest
import spacy
import srsly

from pipeline.components.decider import GATE_FILE, encode_sentences, sentence_vector
from pipeline.components.encoder import DEFAULT_ENCODER, EncoderSettings, TransformerEncoder, resolve_model_path
from pipeline.components.matcher import KB_DIR, PATTERNS_FILE
from pipeline.components.normalizer import LOOKUPS_FILE
from pipeline.components.encoder import weights_fingerprint
from pipeline.components.onnx_backend import ONNX_META_FILE, ONNX_MODEL_FILE, OnnxInt8Model
from pipeline.components.pipes import ALL_PIPES, BOILERPLATE, DECIDER, MATCHER, NORMALIZER, RANKER, SEGMENTER
from pipeline.components.boilerplate import KEYS_FILE
from pipeline.components.ranker import ENCODER_DIR, INDEX_FILE, SKILLS_FILE
from pipeline.errors import IncompletePipelineError, NotInitializedError
from pipeline.esco.taxonomy import KB_FILE, EscoTaxonomy
from pipeline.io.boilerplate import line_key
from pipeline.io.jobads import read_ads

# Calibrated by hand so that every part of the decision runs: literal matches pass (sigmoid(1) > 0.5), an implied
# skill passes on its score, and the gate (weights set in the fixture) closes on sentences that read like BENEFITS.
DECIDER_CONFIG = {"calibrated": True, "gate_threshold": 0.5, "gate_bias": 3.0,
                  "explicit_coefficients": [1.0, 0, 0, 0, 0, 0, 0, 0],
                  "implied_coefficients": [-8.0, 14.0, 0, -1.0, 0, 0, 0, 2.0]}
BENEFITS = "We offer a company pension scheme, annual leave and flexible working."
SHARED_SENTENCE = "Knowing that you"  # a sentence that two of the NHS ads below both have: the filter's keys
# Today's saved layout of each component's folder (packaged and saved pipelines hold these names).
LAYOUT = {SEGMENTER: set(), NORMALIZER: {LOOKUPS_FILE}, MATCHER: {KB_DIR, PATTERNS_FILE}, BOILERPLATE: {KEYS_FILE},
          RANKER: {ENCODER_DIR, INDEX_FILE, SKILLS_FILE}, DECIDER: {GATE_FILE}}


@pytest.fixture(scope="module")
def ads(shared_path):
    jobads = shared_path / "jobads"
    return ([ad.text for ad in read_ads(jobads / "nhs_jobs_2020.jsonl.gz", limit=3)]
            + [ad.text for ad in read_ads(jobads / "tech_and_general_jobs.jsonl.gz", limit=1)])


@pytest.fixture(scope="module")
def nlp(pipeline_dir, ads):
    """The assembled pipeline (its own copy) with state in every component that has some."""
    nlp = spacy.load(pipeline_dir)
    nlp.replace_pipe(DECIDER, DECIDER, config=DECIDER_CONFIG)
    encoder = nlp.get_pipe(RANKER).encoder
    nlp.get_pipe(DECIDER).set_gate(-8.0 * sentence_vector(encode_sentences(encoder, [BENEFITS])[0]))
    nlp.get_pipe(BOILERPLATE).keys = frozenset(line_key(sent.text, fold_digits=True) for doc in nlp.pipe(ads)
                                               for sent in doc.sents if sent.text.startswith(SHARED_SENTENCE))
    return nlp


@pytest.fixture(scope="module")
def saved(nlp, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serialization") / "pipeline"
    nlp.to_disk(folder)
    return folder


def blank(nlp):
    """The same pipeline built from its config, nothing loaded: what ``from_bytes``/``from_disk`` fill."""
    return spacy.util.load_model_from_config(nlp.config, auto_fill=True)


def predictions(nlp, texts):
    """(what must be equal, the scores that must agree to 1e-5) over the docs."""
    exact, scores = [], []
    for doc in nlp.pipe(texts):
        exact.append(([(s.text, s.kb_id_, s.label_) for s in doc.spans["esco_skills"]],
                      [p.uri for p in doc._.esco_skills], [(p.uri, p.explicit) for p in doc._.esco_skill_set],
                      [(s.start, s._.esco_no_skill_reason) for s in doc.sents]))
        scores.extend(p.score for p in doc._.esco_skills)
        scores.extend(p.probability for p in doc._.esco_skill_set)
    return exact, scores


# ---------------------------------------------------------------------------------------------- the whole pipeline
def test_pipeline_from_bytes_predicts_like_the_original(nlp, ads):
    exact, scores = predictions(nlp, ads)
    reasons = {reason for _, _, _, sents in exact for _, reason in sents}
    assert {"boilerplate", "no_skill"} <= reasons  # the keys and the gate both decided something
    assert any(not explicit for _, _, members, _ in exact for _, explicit in members)  # implied skills committed
    assert any(explicit for _, _, members, _ in exact for _, explicit in members)

    copy = blank(nlp).from_bytes(nlp.to_bytes())
    copied_exact, copied_scores = predictions(copy, ads)
    assert copied_exact == exact
    np.testing.assert_allclose(copied_scores, scores, atol=1e-5)


def test_a_blank_pipeline_predicts_nothing_without_the_bytes(nlp, ads):
    """What the test above guards: without ``from_bytes`` the components have no state to predict with."""
    with pytest.raises(NotInitializedError):
        blank(nlp)(ads[0])


# ---------------------------------------------------------------------------------------------- each component
@pytest.mark.parametrize("name", ALL_PIPES)
def test_each_component_round_trips_through_disk_and_bytes(nlp, name, tmp_path):
    component = nlp.get_pipe(name)
    expected = component.to_bytes()
    assert set(srsly.msgpack_loads(expected)) == LAYOUT[name]
    component.to_disk(tmp_path / name)
    assert {path.name for path in (tmp_path / name).iterdir()} == LAYOUT[name]
    assert blank(nlp).get_pipe(name).from_disk(tmp_path / name).to_bytes() == expected
    assert blank(nlp).get_pipe(name).from_bytes(expected).to_bytes() == expected


def test_knowledge_base_round_trips_through_bytes(nlp):
    kb = nlp.get_pipe(MATCHER).taxonomy
    copy = EscoTaxonomy.from_bytes(kb.to_bytes())
    assert (copy.version, copy.skills, copy.broader, copy.group_labels, copy.occupations) == (
        kb.version, kb.skills, kb.broader, kb.group_labels, kb.occupations)


@pytest.mark.parametrize("name", [MATCHER, RANKER])
def test_an_uninitialized_component_refuses_to_save(nlp, name):
    with pytest.raises(NotInitializedError, match=name):
        blank(nlp).get_pipe(name).to_bytes()


# ---------------------------------------------------------------------------------------------- exclude
def test_exclude_leaves_a_part_out_by_name_and_keeps_the_loaded_one(nlp):
    matcher = nlp.get_pipe(MATCHER)
    assert set(srsly.msgpack_loads(matcher.to_bytes(exclude=["kb"]))) == {PATTERNS_FILE}
    assert set(srsly.msgpack_loads(matcher.to_bytes(exclude=["patterns"]))) == {KB_DIR}
    fresh = blank(nlp).get_pipe(MATCHER)
    kept = EscoTaxonomy.from_dict({"skills": [["urn:x", "Python", [], [], "", "knowledge", ""]], "broader": {},
                                   "group_labels": {}})
    fresh.taxonomy = kept
    fresh.from_bytes(matcher.to_bytes(), exclude=["kb"])
    assert fresh.taxonomy is kept
    assert fresh.patterns == matcher.patterns


def test_exclude_on_disk_writes_and_reads_no_encoder(nlp, tmp_path):
    ranker = nlp.get_pipe(RANKER)
    assert set(srsly.msgpack_loads(ranker.to_bytes(exclude=["encoder"]))) == {INDEX_FILE, SKILLS_FILE}
    ranker.to_disk(tmp_path, exclude=["encoder"])
    assert {path.name for path in tmp_path.iterdir()} == {INDEX_FILE, SKILLS_FILE}
    loaded = blank(nlp).get_pipe(RANKER).from_disk(tmp_path, exclude=["encoder"])
    assert loaded.encoder is None
    assert loaded.index.uris == ranker.index.uris
    np.testing.assert_array_equal(loaded.index.vectors, ranker.index.vectors)


# ---------------------------------------------------------------------------------------------- incomplete folders
@pytest.mark.parametrize(("name", "missing", "part"), [
    (NORMALIZER, LOOKUPS_FILE, "lookups"),
    (MATCHER, PATTERNS_FILE, "patterns"),
    (MATCHER, f"{KB_DIR}/{KB_FILE}", "kb"),
    (BOILERPLATE, KEYS_FILE, "boilerplate_keys"),
    (RANKER, f"{ENCODER_DIR}/config.json", "encoder"),
    (RANKER, INDEX_FILE, "skill_index"),
    (RANKER, SKILLS_FILE, "skills"),
    (DECIDER, GATE_FILE, "gate"),
])
def test_a_missing_file_is_named_unless_its_part_is_excluded(nlp, saved, tmp_path, name, missing, part):
    folder = tmp_path / name
    shutil.copytree(saved / name, folder)
    (folder / missing).unlink()
    with pytest.raises(IncompletePipelineError, match=re.escape(str(folder / missing)) + ".* incomplete"):
        blank(nlp).get_pipe(name).from_disk(folder)
    blank(nlp).get_pipe(name).from_disk(folder, exclude=[part])


# ---------------------------------------------------------------------------------------------- the encoder
@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnx")),
                    reason='onnxruntime is an optional extra: pip install ".[fast]"')
@pytest.mark.heavy  # 4 s or more: make test, not make test-fast
def test_encoder_bytes_carry_weights_tokenizer_and_int8_export(ads):
    encoder = TransformerEncoder(resolve_model_path(DEFAULT_ENCODER), EncoderSettings(backend="onnx-int8"))
    data = encoder.to_bytes()  # exports to int8 once, as saving to disk does
    assert {"config.json", "model.safetensors", "tokenizer.json", ONNX_MODEL_FILE, ONNX_META_FILE} <= set(
        srsly.msgpack_loads(data))
    copy = TransformerEncoder.from_bytes(data, encoder.settings)
    # the export is read at first use, beside the weights: there, and made from these weights
    assert OnnxInt8Model.from_disk(copy.path, weights_fingerprint(copy.model)) is not None
    sentences = [line for line in ads[1].splitlines() if line.strip()][:8]
    np.testing.assert_allclose(copy.encode(sentences), encoder.encode(sentences), atol=1e-6)
    folder = copy.path
    del copy
    gc.collect()
    assert not folder.exists()  # the temporary folder goes with the encoder
