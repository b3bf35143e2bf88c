"""The decision component on the real ESCO data: a pipeline calibrated on a small real slice (400 NHS ads, the
benchmark validation files), then what it decides, the evidence it shows, and how it is saved."""

import math
import shutil

import numpy as np
import pytest
import spacy

from pipeline.components.assembly import base_config
from pipeline.components.decider import (GATE_FILE, NO_SKILL, SkillDecider, encode_sentences, skill_features,
                                         with_gate)
from pipeline.components.pipes import BOILERPLATE, DECIDER, RANKER, find_taxonomy
from pipeline.components.predictions import PIECES_KEY, SkillPrediction, mark_skipped, take_piece_vectors
from pipeline.errors import ConfigError, IncompletePipelineError
from pipeline.evaluation.calibration_report import decided_sets
from pipeline.training.decider_fit import POOLED, CalibrationSettings, calibrate_pipeline, save_calibration
from pipeline.training.decider_gate import GateFit
from pipeline.training.decider_search import benchmark_docs, decisions as search_decisions, tabulate
from conftest import NHS_MIN_ADS as MIN_ADS

SETTINGS = CalibrationSettings(min_ads=MIN_ADS, gate_positives=400, gate_report_positives=150)
EXPLICIT = "Experience with postgresql is essential."
IMPLIED = "You will keep the ward's patient files in order."
NO_SKILL_AD = ("About us:\nWe offer 27 days holiday plus bank holidays and a company pension scheme.\n"
               "For further details / informal visits contact:")


def benchmark(shared_path):
    return [shared_path / "benchmark" / f"{name}_validation_annotations.csv" for name in ("tech", "house")]


@pytest.fixture(scope="module")
def calibrated(pipeline_dir, nhs_corpus, shared_path):
    """The assembled pipeline (untrained ranker) with a decider calibrated on the slice; its own copy."""
    nlp = spacy.load(pipeline_dir)
    result = calibrate_pipeline(nlp, nhs_corpus, benchmark(shared_path), SETTINGS)
    return nlp, result


def decisions(nlp, texts):
    return decided(nlp.pipe(texts))


def decided(docs):
    return [[(s.start, [(p.uri, round(p.probability, 5), [(e.start_char, e.end_char) for e in p.evidence])
                        for p in s._.esco_skill_set], s._.esco_no_skill_reason) for s in doc.sents]
            for doc in docs]


def test_gate_fitted_on_the_slice_separates_held_back_boilerplate_from_skill_sentences(calibrated):
    _, result = calibrated
    gate = result.report["gate"]
    assert gate["n_negatives"] >= 10 and gate["n_positives"] >= 50  # held back / held out: never fitted on
    assert gate["auc_held_out"] > 0.75  # chance is 0.5


def test_uncalibrated_decider_commits_literal_matches_only(pipeline_nlp, uri_of):
    assert pipeline_nlp.config["components"][DECIDER]["calibrated"] is False
    doc = pipeline_nlp(f"{EXPLICIT}\n{IMPLIED}")
    explicit, implied = doc.sents
    assert [p.uri for p in explicit._.esco_skill_set] == [uri_of("PostgreSQL")]
    assert explicit._.esco_skill_set[0].probability is None  # nothing calibrated to say
    assert implied._.esco_skill_set == [] and implied._.esco_skills  # ranked, not committed
    assert [p.uri for p in doc._.esco_skill_set] == [uri_of("PostgreSQL")]


@pytest.mark.parametrize("text", ["", "   \n  ", "\n\n"])
def test_empty_text_gets_an_empty_set(calibrated, text):
    nlp, _ = calibrated
    doc = nlp(text)
    assert doc._.esco_skill_set == [] and doc[:]._.esco_skill_set == []


def without_filter(nlp):
    """The decider's own judgement: the boilerplate filter (when the pipeline has one) would skip some of these
    lines before the ranker."""
    return nlp.select_pipes(disable=[p for p in (BOILERPLATE,) if p in nlp.pipe_names])


def test_heading_alone_gets_no_skill(calibrated):
    nlp, _ = calibrated
    with without_filter(nlp):
        for heading in ("Main duties:", "About us:", "Benefits"):
            doc = nlp(heading)
            assert doc._.esco_skills  # the ranker still lists ten skills for it
            assert doc._.esco_skill_set == [], heading


def test_doc_with_no_sentence_asking_for_a_skill_gets_an_empty_set(calibrated):
    nlp, _ = calibrated
    with without_filter(nlp):
        doc = nlp(NO_SKILL_AD)
    assert len(list(doc.sents)) == 3
    assert doc._.esco_skill_set == []
    assert all(s._.esco_no_skill_reason in (None, NO_SKILL) for s in doc.sents)


def test_explicit_kept_and_implied_thresholded_by_their_own_models(calibrated, uri_of):
    nlp, result = calibrated
    decider: SkillDecider = nlp.get_pipe(DECIDER)
    config = nlp.config["components"][DECIDER]
    assert config["calibrated"] is True and config["implied_coefficients"] != config["explicit_coefficients"]
    doc = nlp(f"{EXPLICIT}\n{IMPLIED}")
    explicit_sent, implied_sent = doc.sents
    chosen = explicit_sent._.esco_skill_set
    assert chosen[0].uri == uri_of("PostgreSQL") and chosen[0].explicit
    assert chosen[0].probability >= decider.thresholds.explicit
    assert decider.max_skills is None  # calibration ships no cap (a cap of 5 did not beat none, cross-file)
    for sent in doc.sents:
        members = sent._.esco_skill_set
        assert {p.uri for p in members} <= {p.uri for p in sent._.esco_skills}
        for p in members:
            assert p.probability >= (decider.thresholds.explicit if p.explicit else decider.thresholds.implied)
    # the implied sentence's set is exactly its passing candidates, most probable first
    [cands] = [c for c in decider.candidates(doc) if c.sent.start == implied_sent.start]
    decider.encode_needed([cands])
    gate = cands.gate if cands.gate is not None else 1.0  # None: no candidate could pass at any gate value
    assert not cands.explicit.any()
    probs = decider.models.implied.probability(with_gate(cands.features, gate))
    passes = [gate >= decider.gate_threshold and p >= decider.thresholds.implied for p in probs]
    expected = [cands.ranking[i].uri for i in np.argsort(-probs, kind="stable") if passes[i]][: decider.max_skills]
    assert [p.uri for p in implied_sent._.esco_skill_set] == expected


def test_the_fits_simulated_sets_are_the_sets_the_component_decides(calibrated, shared_path):
    """The threshold search judges every setting by the sets it simulates over the candidate table; on the real
    validation sentences those sets are the ones the component decides: for the shipped config, and with the gate
    closing below 0.5 (the slice's fit leaves it open), with and without dropping literal matches."""
    nlp, _ = calibrated
    shipped: SkillDecider = nlp.get_pipe(DECIDER)
    taxonomy = find_taxonomy(nlp)
    gate = GateFit(shipped.gate_weights, shipped.settings.gate_bias)  # the shipped gate, as the component has it
    tables = [tabulate(benchmark_docs(nlp, path, path.stem), shipped, taxonomy, lambda _: gate)
              for path in benchmark(shared_path)]
    section = f"components.{DECIDER}"
    for settings in (shipped.settings, shipped.settings.replace(section, gate_threshold=0.5),
                     shipped.settings.replace(section, gate_threshold=0.5, gate_explicit=True)):
        decider = SkillDecider(nlp, DECIDER, settings)
        decider.set_gate(shipped.gate_weights)
        kept_kinds, gated = set(), 0
        for table in tables:
            kept = search_decisions(table, decider.models, decider.max_skills)(decider.thresholds)
            simulated = [{table.labels[i] for i in table.label_id[kept & (table.doc_id == d)]}
                         for d in range(len(table.docs))]
            assert simulated == decided_sets(decider, table.docs, taxonomy)
            kept_kinds |= set(table.explicit[kept].tolist())
            gated += len(np.unique(table.sent_id[table.gate < settings.gate_threshold]))
        assert kept_kinds == {True, False}  # literal matches and implied skills both decided
        assert gated > 0 or settings.gate_threshold == 0


def check_evidence(doc, sent, evidence, k):
    assert len(evidence) <= k
    for e in evidence:
        assert doc.text[e.start_char:e.end_char] == e.text
        assert sent.start_char <= e.start_char < e.end_char <= sent.end_char
        token = doc.char_span(e.start_char, e.end_char)
        assert token is not None and len(token) == 1 and not token[0].is_stop and not token[0].is_punct


def test_evidence_offsets_point_at_content_words_of_the_sentence(calibrated, uri_of):
    nlp, _ = calibrated
    decider = nlp.get_pipe(DECIDER)
    texts = [f"{EXPLICIT}\n{IMPLIED}", "You will manage the team's budget and prepare monthly financial reports.",
             "<ul><li>Support patients with their medication and keep accurate care records.</li></ul>"]
    found = {}
    for doc in nlp.pipe(texts):
        for sent in doc.sents:  # the set's members
            for p in sent._.esco_skill_set:
                if p.explicit:
                    assert [(e.start_char, e.end_char) for e in p.evidence] == [
                        (s.start_char, s.end_char) for s in p.spans]
                else:
                    assert p.evidence
                    check_evidence(doc, sent, p.evidence, decider.settings.evidence_words)
        for cands in decider.candidates(doc):  # and the evidence of every implied candidate, member or not
            [cands.encoding] = encode_sentences(decider.encoder, [cands.sent.text])
            for pred in cands.ranking:
                if not pred.explicit:
                    evidence = decider.evidence(cands, pred.uri)
                    check_evidence(doc, cands.sent, evidence, decider.settings.evidence_words)
                    found[pred.uri] = [e.text for e in evidence]
    assert "patient" in found[uri_of("patient record storage")]  # "keep the ward's patient files in order"
    assert "budget" in found[uri_of("manage budgets")]


def without_probabilities(decided_docs):
    return [[(start, [(uri, evidence) for uri, _, evidence in skills], reason) for start, skills, reason in doc]
            for doc in decided_docs]


def probabilities(decided_docs):
    return [p for doc in decided_docs for _, skills, _ in doc for _, p, _ in skills]


def test_decider_reads_the_rankers_word_pieces_and_decides_as_with_a_pass_of_its_own(calibrated):
    """The ranker's one pass leaves every ranked sentence's word pieces for a calibrated decider (its gate and
    evidence need no second pass); the sets, probabilities and evidence offsets (sentences after a blank line
    included) are those of the decider encoding the sentences itself, and no piece is left on a doc."""
    nlp, _ = calibrated
    decider, ranker = nlp.get_pipe(DECIDER), nlp.get_pipe(RANKER)
    texts = [f"{EXPLICIT}\n{IMPLIED}", NO_SKILL_AD, "Main duties:\n\n   You will manage the team's budget and "
             "prepare monthly financial reports.\n  \n Python and SQL.", f"{IMPLIED}\n{IMPLIED}"]
    shared = decisions(nlp, texts)
    with nlp.select_pipes(disable=[RANKER, DECIDER]):
        prepared = list(nlp.pipe(texts))
    for doc in ranker.pipe(prepared):  # the decider is in the pipeline: the ranker keeps the pieces
        cands = decider.candidates(doc, take_piece_vectors(doc))
        assert cands and all(c.encoding is not None and c.encoding[0].max() <= len(c.sent.text) for c in cands)
    with nlp.select_pipes(disable=[DECIDER]):  # no decider after it: the ranker keeps nothing
        ranked = list(nlp.pipe(texts))
    assert not any(PIECES_KEY in doc.user_data for doc in ranked)
    own = decided(decider.pipe(ranked))  # the decider encodes what it needs itself
    assert without_probabilities(shared) == without_probabilities(own) and any(s for d in shared for _, s, _ in d)
    assert probabilities(shared) == pytest.approx(probabilities(own), abs=2e-5)
    assert not any(PIECES_KEY in doc.user_data for doc in nlp.pipe(texts))


def test_skipped_sentence_gets_the_filter_reason_even_with_a_literal_match(calibrated, uri_of):
    nlp, _ = calibrated
    with nlp.select_pipes(disable=[DECIDER]):
        doc = nlp(f"{EXPLICIT}\n{IMPLIED}")
    first, second = doc.sents
    mark_skipped(doc, {first.start: "section:benefits"})
    doc = nlp.get_pipe(DECIDER)(doc)
    assert uri_of("PostgreSQL") in [p.uri for p in first._.esco_skills]
    assert first._.esco_skill_set == [] and first._.esco_no_skill_reason == "section:benefits"
    assert uri_of("PostgreSQL") not in [p.uri for p in doc._.esco_skill_set]


def test_round_trip_and_saved_calibration_keep_decisions_identical(calibrated, pipeline_dir, tmp_path):
    nlp, result = calibrated
    texts = [f"{EXPLICIT}\n{IMPLIED}", NO_SKILL_AD, "Python and SQL.", ""]
    before = decisions(nlp, texts)
    # nlp() and nlp.pipe() decide alike (batches pad differently, so compare the sets, not every float)
    assert [[[u for u, _, _ in skills] for _, skills, _ in doc] for doc in before] == [
        [[p.uri for p in s._.esco_skill_set] for s in nlp(t).sents] for t in texts]
    nlp.to_disk(tmp_path / "full")
    assert decisions(spacy.load(tmp_path / "full"), texts) == before
    # `calibrate` writes only config.cfg, meta.json and the decider folder into an existing pipeline folder
    shutil.copytree(pipeline_dir, tmp_path / "written")
    save_calibration(nlp, tmp_path / "written", result)
    reloaded = spacy.load(tmp_path / "written")
    assert decisions(reloaded, texts) == before
    saved_auc = reloaded.meta["calibration"]["gate"]["auc_held_out"]
    assert saved_auc == pytest.approx(result.report["gate"]["auc_held_out"], abs=1e-4)


def test_missing_gate_file_raises_naming_it(calibrated, tmp_path):
    nlp, _ = calibrated
    nlp.get_pipe(DECIDER).to_disk(tmp_path)
    (tmp_path / GATE_FILE).unlink()
    with pytest.raises(IncompletePipelineError, match=GATE_FILE):
        nlp.get_pipe(DECIDER).from_disk(tmp_path)


def test_report_scores_each_file_with_a_fit_on_the_other_against_the_global_threshold(calibrated):
    _, result = calibrated
    scored = result.report["validation"]
    splits = ("fit on house, scored on tech", "fit on tech, scored on house")
    assert set(scored) == {*splits, POOLED, "shipped: fit on all, scored on each (in-sample)"}
    for way in ("decider", "global_threshold"):
        for name in splits:
            m = scored[name][way]
            assert 0 <= m["precision"] <= 1 and m["tp"] + m["fn"] == 131  # both files have 131 gold labels
        pooled = scored[POOLED][way]  # the two splits' sentences together
        assert [pooled[k] for k in ("tp", "fp", "fn")] == [sum(scored[n][way][k] for n in splits)
                                                           for k in ("tp", "fp", "fn")]
        assert pooled["nonskill_sentences"]["sentences"] == 42  # TECH 26 + HOUSE 16 without a gold skill
    assert scored[POOLED]["sentences"] == sum(scored[n]["sentences"] for n in splits)
    gain = scored[POOLED]["decider_minus_threshold_f1"]
    assert gain["low"] <= gain["diff"] <= gain["high"]
    held = result.report["nonskill_held_back"]
    assert held["lines"] == result.report["gate"]["n_negatives"] and 0 <= held["share"] <= 1
    assert result.reliability and all(b["n"] > 0 for bins in result.reliability.values() for b in bins)


def test_implied_skills_are_calibrated_on_their_preferred_label_score_when_the_ranker_gives_one():
    """A ranker that scores the best of several labels inflates skills with many labels across sentences; the
    decider's features read the preferred label's cosine instead (``label_score``), and the fused score otherwise."""
    sent = spacy.blank("en")("Experience with PostgreSQL and keeping patient files in order.")[:]
    ranking = [SkillPrediction("a", "A", 0.95, True), SkillPrediction("b", "B", 0.35, False),
               SkillPrediction("c", "C", 0.30, False)]
    plain = skill_features(ranking, sent, explicit_weight=0.5)
    assert plain[:, 0] == pytest.approx([0.95, 0.7, 0.6])  # implied scores unfused (× 1 / 0.5)
    ranking[1].label_score, ranking[2].label_score = 0.5, 0.65
    labelled = skill_features(ranking, sent, explicit_weight=0.5)
    assert labelled[:, 0] == pytest.approx([0.95, 0.5, 0.65])
    # The gap among the implied follows the calibrated score (C is the best implied one), the rank the ranking (B
    # first): the ranking orders a sentence's skills better, label_score compares them across sentences.
    assert labelled[2, 1] == pytest.approx(0.0) and labelled[1, 1] == pytest.approx(0.15)
    assert labelled[1, 2] == pytest.approx(0.0) and labelled[2, 2] == pytest.approx(math.log1p(1))
    assert labelled[0, 3] == pytest.approx(0.65) and plain[0, 3] == pytest.approx(0.7)  # the best implied score


@pytest.mark.parametrize("override,key", [
    ({"gate_threshold": 1.5}, "gate_threshold"), ({"max_skills_per_sentence": 0}, "max_skills_per_sentence"),
    ({"implied_coefficients": [1.0, 2.0]}, "implied_coefficients"), ({"evidence_words": -1}, "evidence_words"),
    ({"explicit_coefficients": [0.0] * 9}, "explicit_coefficients"),
    ({"explicit_threshold": -0.1}, "explicit_threshold"),
])
def test_bad_decider_config_names_the_key(esco_path, override, key):
    config = base_config().merge({"components": {DECIDER: override}, "paths": {"esco": str(esco_path)}})
    with pytest.raises(ConfigError, match=key):
        spacy.util.load_model_from_config(config, auto_fill=True)


def test_calibration_without_boilerplate_file_says_so_and_leaves_the_gate_open(pipeline_dir, nhs_corpus, shared_path,
                                                                                 tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(nhs_corpus, corpus)
    (corpus / "boilerplate.jsonl").unlink()  # a corpus built before the file existed
    nlp = spacy.load(pipeline_dir)
    result = calibrate_pipeline(nlp, corpus, benchmark(shared_path)[:1], SETTINGS)
    assert any("boilerplate.jsonl" in note for note in result.report["notes"])
    assert any("no cross-file scores" in note for note in result.report["notes"])
    assert "gate" not in result.report and "nonskill_held_back" not in result.report
    decider = nlp.get_pipe(DECIDER)
    assert decider.calibrated and not decider.has_gate and decider.gate_threshold == 0.0
    doc = nlp(NO_SKILL_AD)
    assert all(s._.esco_no_skill_reason != NO_SKILL for s in doc.sents)  # nothing to say "no skill" with
