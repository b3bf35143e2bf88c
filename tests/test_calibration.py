"""The calibration's parts that need no pipeline: the fitting, the decision rule and the threshold search's
bookkeeping, the boilerplate split, the reliability diagram. (The fit on real ads and benchmark files, and the
agreement of the search's decisions with the component's, are in test_decider.py.)"""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from pipeline.components.decider import SKILL_FEATURES, DecisionModels, LogisticModel, Thresholds, decide_candidates
from pipeline.errors import ConfigError, EscoDataError
from pipeline.evaluation.calibration_report import (compare_counts, f1_bootstrap, format_report, pooled_row,
                                                    read_counts, reliability_bins, reliability_svg, score_sets,
                                                    sentence_counts)
from pipeline.training.decider_fit import SECTION, CalibrationSettings
from pipeline.training.decider_gate import (auc, boilerplate_negatives, fit_gate, fit_logistic,
                                            states_a_requirement)
from pipeline.training.decider_search import LabelledDocs, decisions, micro_counts, search_thresholds


def test_logistic_fit_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 2))
    truth = np.array([-0.5, 2.0, -1.0])
    y = rng.random(20000) < 1 / (1 + np.exp(-(truth[0] + x @ truth[1:])))
    beta = fit_logistic(x, y, l2=1e-6)
    assert beta == pytest.approx(truth, abs=0.1)
    shrunk = fit_logistic(x, y, l2=1.0)  # the penalty shrinks the weights, never the bias's freedom
    assert np.abs(shrunk[1:]).sum() < np.abs(beta[1:]).sum()


def test_logistic_penalty_is_on_the_weighted_mean_loss():
    """``l2`` means the same whatever the number of rows or the scale of the weights: doubling every row, or
    weighting every row 2, fits the same model; weighting one class up moves the bias."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 3))
    y = rng.random(300) < 1 / (1 + np.exp(-(x @ [1.0, -0.5, 0.0])))
    beta = fit_logistic(x, y, l2=0.1)
    assert fit_logistic(np.r_[x, x], np.r_[y, y], l2=0.1) == pytest.approx(beta, abs=1e-6)
    assert fit_logistic(x, y, l2=0.1, sample_weight=np.full(300, 2.0)) == pytest.approx(beta, abs=1e-6)
    assert fit_logistic(x, y, l2=0.1, sample_weight=np.where(y, 3.0, 1.0))[0] > beta[0]


def test_auc_counts_ties_half_and_orders():
    assert auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auc([0.1], [0.9]) == 0.0
    assert auc([0.5, 0.5], [0.5, 0.5]) == 0.5
    assert auc([0.3, 0.7], [0.5]) == 0.5
    assert np.isnan(auc([], [0.1]))


def table(rows):
    """A candidate table from (doc, sentence, label, explicit, gate, correct) rows."""
    doc, sent, label, explicit, gate, correct = (np.array(c) for c in zip(*rows))
    golds = [set() for _ in range(doc.max() + 1)]
    for d, lab, ok in zip(doc, label, correct):
        if ok:
            golds[d].add(lab)
    return LabelledDocs("t", [None] * len(golds), golds, features=np.zeros((len(rows), 3)),
                        explicit=explicit.astype(bool), gate=gate.astype(float), correct=correct.astype(bool),
                        doc_id=doc, sent_id=sent, label_id=label)


def test_the_decision_rule_applies_gate_kinds_and_the_cap_per_sentence():
    t = table([(0, 0, 1, True, 0.2, True), (0, 0, 2, False, 0.2, True), (0, 1, 3, False, 0.9, False),
               (0, 1, 4, False, 0.9, True), (0, 1, 5, False, 0.9, False), (0, 1, 6, False, 0.9, True)])
    probs = np.array([0.9, 0.9, 0.6, 0.7, 0.8, 0.3])

    def decide(thresholds):
        return decide_candidates(probs, t.explicit, t.gate, t.sent_id, thresholds, max_k=2)

    open_gate, order = decide(Thresholds(0.0, False, 0.5, 0.5))
    assert open_gate.tolist() == [True, True, False, True, True, False]  # sentence 1: its two most probable
    assert order.tolist() == [0, 1, 4, 3, 2, 5]  # by sentence, most probable first, ties in ranking order
    gated, _ = decide(Thresholds(0.5, False, 0.5, 0.5))
    assert gated.tolist() == [True, False, False, True, True, False]  # the gate drops sentence 0's implied skill
    strict, _ = decide(Thresholds(0.5, True, 0.5, 0.5))
    assert strict.tolist() == [False, False, False, True, True, False]  # ...and its literal match (gate_explicit)
    assert micro_counts(t, open_gate) == (3, 1, 1)  # label 6 is gold but fell below the threshold
    uncapped, uncapped_order = decide_candidates(probs, t.explicit, t.gate, t.sent_id, Thresholds(0.0, False, 0.5, 0.5),
                                                 max_k=None)
    assert uncapped.tolist() == [True, True, True, True, True, False]  # no cap: every candidate over its threshold
    assert uncapped_order.tolist() == order.tolist()


def test_calibration_ships_no_cap_by_default():
    assert CalibrationSettings().max_skills_per_sentence is None


def test_the_search_decides_with_the_rule_on_the_models_probabilities():
    t = table([(0, 0, 1, True, 1.0, True), (0, 0, 2, False, 1.0, True), (1, 1, 3, False, 0.1, False)])
    t.features = np.c_[[2.0, 0.5, 3.0], np.zeros((3, len(SKILL_FEATURES) - 2))]
    identity = LogisticModel((0.0, 1.0) + (0.0,) * (len(SKILL_FEATURES) - 1))  # probability = sigmoid(feature 1)
    kept = decisions(t, DecisionModels(identity, identity), max_k=5)
    assert kept(Thresholds(0.0, False, 0.5, 0.7)).tolist() == [True, False, True]  # sigmoid(0.5) = 0.62 < 0.7
    assert kept(Thresholds(0.5, False, 0.5, 0.6)).tolist() == [True, True, False]  # doc 1's gate is closed


def test_set_scores_count_predictions_on_sentences_without_gold_as_false_positives():
    m = score_sets([{"a", "b"}, {"c"}, set()], [{"a"}, None, {"d"}])
    assert (m["tp"], m["fp"], m["fn"]) == (1, 2, 1)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(0.5)


def test_sentence_counts_and_the_pooled_row_sum_the_splits_sentences():
    decided = sentence_counts([{"a"}, {"x"}, set()], [{"a", "b"}, None, {"c"}])
    assert decided.tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 1]]
    threshold = sentence_counts([{"a", "b", "y"}, set(), {"z"}], [{"a", "b"}, None, {"c"}])
    row = pooled_row([(decided[:2], threshold[:2]), (decided[2:], threshold[2:])])
    assert row["sentences"] == 3
    assert (row["decider"]["tp"], row["decider"]["fp"], row["decider"]["fn"]) == (1, 1, 2)
    assert (row["global_threshold"]["tp"], row["global_threshold"]["fp"], row["global_threshold"]["fn"]) == (2, 2, 1)
    assert row["decider"]["nonskill_sentences"] == {"sentences": 1, "share": 1.0}  # "x" on the sentence without gold
    assert row["global_threshold"]["nonskill_sentences"] == {"sentences": 1, "share": 0.0}
    # micro F1 = 2 TP / (2 TP + FP + FN): decider 2/5, threshold 4/7
    assert row["decider_minus_threshold_f1"]["diff"] == pytest.approx(2 / 5 - 4 / 7)
    text = format_report({"validation": {"pooled": row}})
    assert "-17.1 [" in text and "non-skill sentences given a skill 100.0% | 0.0%" in text


def test_f1_bootstrap_is_paired_over_sentences():
    rng = np.random.default_rng(0)
    a = np.c_[rng.integers(0, 3, 200), rng.integers(0, 3, 200), rng.integers(0, 3, 200)]
    same = f1_bootstrap(a, a.copy(), resamples=500)
    assert same["diff"] == same["low"] == same["high"] == 0.0 and same["p_b_greater"] == 0.0
    better = a.copy()
    better[:, 1] = 0  # B drops every false positive of A: better in every resample
    b = f1_bootstrap(a, better, resamples=500)
    assert 0 < b["low"] <= b["diff"] <= b["high"] and b["p_b_greater"] == 1.0
    assert f1_bootstrap(a, better, resamples=500) == b  # seeded
    with pytest.raises(ValueError):
        f1_bootstrap(a, a[:10])


def test_boilerplate_split_is_by_key_and_keeps_only_frequent_lines_without_a_skill(tmp_path):
    rows = [{"key": k, "text": f"line {k}", "ads": ads, "has_skill": skill}
            for k, ads, skill in [(5, 30, False), (19, 25, False), (20, 40, False), (77, 21, False),
                                  (3, 50, True), (8, 10, False), (2**64 - 1, 22, False)]]
    (tmp_path / "boilerplate.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    split = boilerplate_negatives(tmp_path, min_ads=20, held_back_percent=20)
    assert split.held_back == ["line 5", "line 19", f"line {2**64 - 1}"]  # key % 100 < 20 (2**64 - 1 ends in 15)
    assert split.fit == ["line 20", "line 77"]  # not the line with a skill, nor the one in 10 ads


def test_requirement_lines_leave_the_fitting_negatives_only(tmp_path):
    texts = {20: "The ability to deputise in a clinical lead role", 21: "6 months previous care experience",
             22: "Enhanced Maternity, Paternity & Adoption Leave", 23: "Preferred Qualifications",
             5: "A relevant nursing qualification and registration", 6: "Interview date: 16th November 2020"}
    rows = [{"key": k, "text": t, "ads": 30, "has_skill": False} for k, t in texts.items()]
    (tmp_path / "boilerplate.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept = boilerplate_negatives(tmp_path, min_ads=20, held_back_percent=20)
    dropped = boilerplate_negatives(tmp_path, min_ads=20, held_back_percent=20, drop_requirements=True)
    # a header of three words or fewer stays a negative; the held-back lines stay all (a comparable share)
    assert dropped.fit == [texts[22], texts[23]] and dropped.requirements_dropped == 2
    assert kept.fit == [texts[k] for k in (20, 21, 22, 23)] and kept.requirements_dropped == 0
    assert dropped.held_back == kept.held_back == [texts[5], texts[6]]
    assert states_a_requirement(texts[5]) and not states_a_requirement(texts[6])


def test_compare_sets_pairs_two_calibrations_sentence_by_sentence(tmp_path):
    from typer.testing import CliRunner

    from pipeline.commands.cli import app

    sentences = [f"sentence {i}" for i in range(60)]
    a = {"sentences": sentences, "decider": [[1, 1, 1]] * 60, "threshold": [[1, 2, 1]] * 60}
    b = {**a, "decider": [[1, 0, 1]] * 50 + [[0, 1, 0]] * 10}  # fewer false positives, but 10 on empty gold
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    result = compare_counts(read_counts(tmp_path / "a.json"), read_counts(tmp_path / "b.json"), resamples=300)
    assert result["A decider"]["f1"] == pytest.approx(0.5)  # 2 TP / (2 TP + FP + FN) = 120 / 240
    assert result["B decider"]["f1"] == pytest.approx(100 / (100 + 10 + 50))
    assert result["B decider"]["nonskill_sentences"] == {"sentences": 10, "share": 1.0}
    assert result["B - A decider f1"]["diff"] == pytest.approx(100 / 160 - 0.5)
    out = CliRunner().invoke(app, ["compare-sets", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                                   "--resamples", "300"])
    assert out.exit_code == 0 and "B - A decided set F1: +12.5 [" in out.output
    (tmp_path / "c.json").write_text(json.dumps({**a, "sentences": sentences[::-1]}))
    with pytest.raises(ConfigError, match="other sentences"):
        compare_counts(a, read_counts(tmp_path / "c.json"))
    (tmp_path / "bad.json").write_text('{"sentences": [1, 2], "decider": [[0, 0, 0]]}')
    bad = CliRunner().invoke(app, ["compare-sets", str(tmp_path / "a.json"), str(tmp_path / "bad.json")])
    assert bad.exit_code != 0 and "not a `calibrate --counts` file" in bad.output


def test_missing_boilerplate_file_names_it(tmp_path):
    with pytest.raises(EscoDataError, match="boilerplate.jsonl"):
        boilerplate_negatives(tmp_path, min_ads=20, held_back_percent=20)


@pytest.mark.parametrize("key,value", [("max_skills_per_sentence", 0), ("max_nonskill_share", 1.5),
                                       ("held_back_percent", 100), ("gate_l2", 0.0), ("min_ads", "20")])
def test_bad_calibration_settings_name_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"^\[calibration\] {key}\b"):
        CalibrationSettings.load(SECTION, {key: value})


def test_reliability_diagram_is_valid_svg_with_one_point_per_bin():
    rng = np.random.default_rng(1)
    probs = rng.random(500)
    correct = rng.random(500) < probs
    bins = reliability_bins(probs, correct, n_bins=5)
    assert [b["n"] for b in bins] == [int(((probs >= lo) & (probs < lo + 0.2)).sum()) for lo in (0, .2, .4, .6, .8)]
    assert bins[-1]["precision"] > bins[0]["precision"]
    root = ET.fromstring(reliability_svg({"implied": bins, "explicit": bins[:2]}, "a <title> & more"))
    circles = root.findall("{http://www.w3.org/2000/svg}circle")
    assert len(circles) == 5 + 2 + 2  # points of both series + their legend marks


def test_thresholds_follow_the_half_f1_rule_within_the_boilerplate_bound():
    rng = np.random.default_rng(2)
    n = 400  # one implied candidate per sentence, probabilities calibrated by construction
    probs = rng.random(n)
    t = table([(i, i, 0, False, 1.0, ok) for i, ok in enumerate(rng.random(n) < probs)])
    boiler = table([(i, i, 0, False, 1.0, False) for i in range(200)])
    t.features = np.c_[np.log(probs / (1 - probs)), np.zeros((n, len(SKILL_FEATURES) - 2))]
    boiler.features = np.c_[rng.normal(-2.0, 1.5, 200), np.zeros((200, len(SKILL_FEATURES) - 2))]
    identity = LogisticModel((0.0, 1.0) + (0.0,) * (len(SKILL_FEATURES) - 1))  # probability = sigmoid(feature 1)
    models = DecisionModels(identity, identity)
    free, found = search_thresholds(t, models, None, max_k=5, max_nonskill_share=1.0)
    assert free.implied == free.explicit == pytest.approx(found["best_f1_on_grid"] / 2, abs=1e-3)
    bounded, bound_found = search_thresholds(t, models, boiler, max_k=5, max_nonskill_share=0.05)
    assert bound_found["boilerplate_share"] <= 0.05 < search_thresholds(
        t, models, boiler, max_k=5, max_nonskill_share=1.0)[1]["boilerplate_share"]
    assert bounded.implied > free.implied  # the bound raised the implied threshold


@pytest.mark.heavy  # 4 s or more: make test, not make test-fast
def test_calibrate_command_writes_a_literal_only_calibration_into_a_matcher_pipeline(matcher_dir, shared_path,
                                                                                      tmp_path):
    """The whole command on the cheapest real pipeline: the matcher alone has no encoder, so no gate and no
    implied skill; its literal matches still get a fitted probability and threshold."""
    import shutil

    import spacy
    from typer.testing import CliRunner

    from pipeline.commands.cli import app

    model = tmp_path / "matcher"
    shutil.copytree(matcher_dir, model)
    files = [str(shared_path / "benchmark" / f"{n}_validation_annotations.csv") for n in ("tech", "house")]
    result = CliRunner().invoke(app, ["calibrate", str(model), "--validation", files[0], "--validation", files[1],
                                      "--reliability", str(tmp_path / "r.svg")])
    assert result.exit_code == 0, result.output
    assert "fit on house, scored on tech" in result.output and "the gate stays open" in result.output
    nlp = spacy.load(model)
    assert nlp.pipe_names[-1] == "esco_skill_decider" and nlp.get_pipe("esco_skill_decider").calibrated
    assert nlp.meta["calibration"]["validation"]["fit on tech, scored on house"]["decider"]["tp"] > 0
    ET.fromstring((tmp_path / "r.svg").read_text())
    missing = CliRunner().invoke(app, ["calibrate", str(tmp_path / "nowhere"), "--validation", files[0]])
    assert missing.exit_code == 2 and "nowhere" in missing.output


def test_the_gate_and_its_fold_gates_each_leave_out_what_they_must():
    from pipeline.components.encoder import DEFAULT_ENCODER, EncoderSettings, TransformerEncoder, resolve_model_path

    encoder = TransformerEncoder(resolve_model_path(DEFAULT_ENCODER), EncoderSettings())
    positives = ["Experience with PostgreSQL is essential.", "You will keep the ward's patient files in order.",
                 "Knowledge of Python and SQL is required.", "Provide personal care to the residents."]
    negatives = ["We offer 25 days of annual leave.", "Apply online by Friday.", "Salary: 25,000 per year.",
                 "Free parking on site."]
    l2 = CalibrationSettings().gate_l2
    gate, by_fold = fit_gate(encoder, positives, negatives, l2=l2, folds=2)
    assert len(by_fold) == 2 and set(gate.report) == {"positives", "negatives", "auc_fit",
                                                      "auc_negatives_out_of_fold"}
    assert gate.report["auc_fit"] == 1.0  # four of each, 384 dimensions: the fit separates what it saw
    assert not np.allclose(by_fold[0].weights, by_fold[1].weights)  # each fold gate saw other negatives
    with pytest.raises(ValueError, match="folds"):
        fit_gate(encoder, positives, negatives, l2=l2, folds=1)
    with pytest.raises(EscoDataError, match="both classes"):
        fit_gate(encoder, positives, negatives[:1], l2=l2, folds=2)


@pytest.mark.parametrize("override,message", [("foo.bar=1", "calibrate reads [calibration] keys only"),
                                              ("calibration.nope=1", "unknown key 'nope'"),
                                              ("calibration.drop_requirement_lines=maybe", "drop_requirement_lines")])
def test_calibrate_set_names_a_bad_setting_before_any_work(tmp_path, override, message):
    from typer.testing import CliRunner

    from pipeline.commands.cli import app

    out = CliRunner().invoke(app, ["calibrate", str(tmp_path / "no-model"), "--validation", "x.csv",
                                   "--set", override])
    assert out.exit_code != 0 and message in out.output
