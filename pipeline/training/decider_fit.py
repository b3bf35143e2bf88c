"""Calibrating ``esco_skill_decider`` from data: the gate from the corpus (``decider_gate``), the skill decisions
and thresholds from the benchmark validation files (``decider_search``), written into the pipeline. ``train``
runs it at the end; ``python -m pipeline calibrate`` runs it on a pipeline folder.

Boilerplate lines are run with the boilerplate filter off: it ships these very lines, so with it the share of them
given a skill would be zero by construction and say nothing about the decider. Some of them do ask for a skill (a
chain employer's repeated duty lines: "Supervise, support and develop junior members of staff."), so the share is
an upper bound on the decider's mistakes there.

Without ``<corpus>/boilerplate.jsonl`` (corpora built before it existed) the gate is not fitted: the report says
so and the decider ships with the gate open; the skill decisions are still calibrated. The report
(``evaluation/calibration_report.py``) scores each file with a fit on the others, against a global threshold,
and all of them pooled (``POOLED``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import srsly
from spacy.language import Language

from pipeline.components.decider import DecisionModels, DeciderSettings, SkillDecider, Thresholds
from pipeline.components.pipes import DECIDER, RANKER, find_taxonomy, load_pipeline
from pipeline.errors import ConfigError, EscoDataError
from pipeline.evaluation.calibration_report import (best_global_threshold, decided_sets, nonskill_report,
                                                    pooled_row, prf, ranked_scores, reliability_bins, rounded,
                                                    sentence_counts, set_sizes, threshold_sets, write_reliability)
from pipeline.evaluation.validation import validation_names
from pipeline.settings import Field, Settings, StrictBool, StrictFloat, StrictInt
from pipeline.training.decider_gate import (BoilerplateSplit, GateFit, boilerplate_negatives, corpus_sentences,
                                            fit_gate, gate_separation, states_a_requirement)
from pipeline.training.decider_search import (LabelledDocs, benchmark_docs, concat, fit_models, run_docs,
                                              search_thresholds, tabulate)

PathLike = Union[str, Path]
SECTION = "calibration"
POOLED = "pooled cross-file: each file scored by a fit on the others"  # the report's row of the splits together
CALIBRATION_KEY = "calibration"  # meta.json entry


class CalibrationSettings(Settings):
    """How the calibration is fitted (recorded in meta.json beside its results)."""

    max_skills_per_sentence: Optional[StrictInt] = DeciderSettings.model_fields["max_skills_per_sentence"]  # the decider's
    # Bound on the share of boilerplate lines (out-of-fold gate) given a skill; one point under the 5 % aim:
    # a share measured on ~200 held-back lines moves by about ±1.5 points (binomial sd).
    max_nonskill_share: StrictFloat = Field(0.04, ge=0.0, le=1.0)
    # A boilerplate line is a negative only if seen in this many ads (and without a skill); None: every line the
    # corpus' boilerplate.jsonl holds, i.e. the threshold the corpus was built with (boilerplate_min_ads).
    min_ads: Optional[StrictInt] = Field(None, ge=2)
    held_back_percent: StrictInt = Field(20, gt=0, lt=100)  # lines with key % 100 below this are held back
    # Leave boilerplate lines that state a requirement ("The ability to deputise ...") out of the gate's negatives
    # and the threshold search's boilerplate bound (decider_gate.states_a_requirement).
    drop_requirement_lines: StrictBool = False
    gate_positives: StrictInt = Field(4000, ge=10)  # corpus train sentences with a literal match
    masked_share: StrictFloat = Field(0.5, ge=0.0, le=1.0)  # of them with their mentions deleted (corpus_sentences)
    gate_report_positives: StrictInt = Field(1000, ge=0)  # corpus dev sentences, for the gate's held-back separation
    gate_l2: StrictFloat = Field(1e-2, gt=0.0)
    skill_l2: StrictFloat = Field(1e-2, gt=0.0)
    seed: StrictInt = 0


@dataclass
class CalibrationResult:
    config: Dict[str, Any]
    report: Dict[str, Any]
    reliability: Dict[str, List[Dict[str, float]]]
    gate: Optional[GateFit] = None
    # The pooled cross-file row sentence by sentence: {"sentences": texts, "decider"/"threshold": [[TP, FP, FN]]},
    # what a paired comparison of two calibrations needs (``calibrate --counts``, ``compare-sets``).
    counts: Optional[Dict[str, list]] = None


# ---------------------------------------------------------------------------------------------- the gate
@dataclass
class CorpusGate:
    gate: GateFit
    folds: List[GateFit]  # fold k fitted without the boilerplate lines i with i % len(folds) == k
    boilerplate: BoilerplateSplit

    def out_of_fold(self, line: int) -> GateFit:
        """The gate that never saw fitting line ``line`` (the threshold search's view of unseen boilerplate)."""
        return self.folds[line % len(self.folds)]


def fit_corpus_gate(encoder, corpus_dir: Optional[PathLike], settings: CalibrationSettings,
                    report: Dict[str, Any]) -> Optional[CorpusGate]:
    """The gate from the corpus, or ``None`` with the reason in the report's notes."""
    if encoder is None:
        report["notes"].append(f"no '{RANKER}' in the pipeline: no sentence vectors, the gate stays open")
        return None
    if corpus_dir is None:
        report["notes"].append("no corpus given: the gate is not fitted (open) and the boilerplate share not measured")
        return None
    try:
        boiler = boilerplate_negatives(corpus_dir, settings.min_ads, settings.held_back_percent,
                                       settings.drop_requirement_lines)
    except EscoDataError as err:
        report["notes"].append(f"gate not fitted (open): {err}")
        return None
    positives = corpus_sentences(corpus_dir, "train", settings.gate_positives, settings.seed, settings.masked_share)
    gate, folds = fit_gate(encoder, positives, boiler.fit, l2=settings.gate_l2)
    dev = corpus_sentences(corpus_dir, "dev", settings.gate_report_positives, settings.seed, settings.masked_share)
    gate.report.update(gate_separation(gate, encoder, dev, boiler.held_back))
    gate.report["requirement_lines_dropped"] = boiler.requirements_dropped
    report["gate"] = gate.report
    return CorpusGate(gate, folds, boiler)


# ---------------------------------------------------------------------------------------------- the decider
def install_decider(nlp: Language, config: Dict[str, Any], gate: Optional[GateFit]) -> SkillDecider:
    """Put a decider with ``config`` (and the gate) into ``nlp``: replacing the existing one, or after the
    ranker (the last pipe otherwise) in a pipeline built before the decider existed."""
    if DECIDER in nlp.pipe_names:
        nlp.replace_pipe(DECIDER, DECIDER, config=config)
    elif RANKER in nlp.pipe_names:
        nlp.add_pipe(DECIDER, after=RANKER, config=config)
    else:
        nlp.add_pipe(DECIDER, config=config)
    decider: SkillDecider = nlp.get_pipe(DECIDER)
    if gate is not None:
        decider.set_gate(gate.weights)
    return decider


def gate_config(gate: Optional[GateFit]) -> Dict[str, Any]:
    return {"gate_bias": round(gate.bias, 6) if gate is not None else 0.0}


def decider_config(models: DecisionModels, t: Thresholds, gate: Optional[GateFit],
                   settings: CalibrationSettings) -> Dict[str, Any]:
    """The component config the calibration ships (``calibrated = true``)."""
    return {"calibrated": True, "max_skills_per_sentence": settings.max_skills_per_sentence,
            **gate_config(gate), "gate_threshold": t.gate if gate is not None else 0.0,
            "gate_explicit": t.gate_explicit,
            "explicit_coefficients": [round(v, 6) for v in models.explicit.coefficients],
            "explicit_threshold": t.explicit,
            "implied_coefficients": [round(v, 6) for v in models.implied.coefficients], "implied_threshold": t.implied}


def fit_decisions(tables: Sequence[LabelledDocs], boilerplate: Optional[LabelledDocs], gate: Optional[GateFit],
                  settings: CalibrationSettings) -> Tuple[Dict[str, Any], DecisionModels, Dict[str, float]]:
    table = concat(tables) if len(tables) > 1 else tables[0]
    models = fit_models(table, settings.skill_l2)
    thresholds, fit_metrics = search_thresholds(table, models, boilerplate, settings.max_skills_per_sentence,
                                                settings.max_nonskill_share)
    return decider_config(models, thresholds, gate, settings), models, fit_metrics


def score_split(nlp: Language, config: Dict[str, Any], gate: Optional[GateFit], fit_on: Sequence[LabelledDocs],
                scored: LabelledDocs, taxonomy) -> Tuple[Dict[str, Any], Tuple[np.ndarray, np.ndarray]]:
    """The decided sets of ``config`` and the best global threshold chosen on ``fit_on``, both on ``scored``: the
    report's entry, and each side's per-sentence (TP, FP, FN) for the pooled row."""
    decider = install_decider(nlp, config, gate)
    threshold, _ = best_global_threshold([d for t in fit_on for d in t.docs], [g for t in fit_on for g in t.golds],
                                         taxonomy)
    decided = sentence_counts(decided_sets(decider, scored.docs, taxonomy), scored.golds)
    thresholded = sentence_counts(threshold_sets(ranked_scores(scored.docs, taxonomy), threshold), scored.golds)
    entry = {"decider": prf(*(int(v) for v in decided.sum(axis=0))),
             "global_threshold": {"threshold": threshold, **prf(*(int(v) for v in thresholded.sum(axis=0)))},
             "sentences": len(scored.docs)}
    return entry, (decided, thresholded)


# ---------------------------------------------------------------------------------------------- the whole run
def calibrate_pipeline(nlp: Language, corpus_dir: Optional[PathLike], validation: Sequence[PathLike],
                       settings: CalibrationSettings = CalibrationSettings()) -> CalibrationResult:
    """Fit the decider of ``nlp`` (added after the ranker if missing), install the shipped calibration in it
    and return the config, the report and the reliability bins. See the module docstring."""
    if not validation:
        raise ConfigError("calibration needs at least one benchmark validation file (--validation)")
    started = time.perf_counter()
    taxonomy = find_taxonomy(nlp)
    report: Dict[str, Any] = {"settings": settings.model_dump(), "validation": {}, "notes": []}
    encoder = nlp.get_pipe(RANKER).encoder if RANKER in nlp.pipe_names else None

    fitted = fit_corpus_gate(encoder, corpus_dir, settings, report)
    gate = fitted.gate if fitted else None
    decider = install_decider(nlp, {**gate_config(gate), "calibrated": False}, gate)
    files = {name: tabulate(benchmark_docs(nlp, path, name), decider, taxonomy,
                            (lambda _: gate) if gate is not None else None)
             for path, name in validation_names(validation).items()}
    # what the shipped fit saw, for whoever shows the model (extract's table says which model it is)
    report["fitted_on"] = {"validation": list(files), "corpus": str(corpus_dir) if corpus_dir is not None else None}
    boiler_fit = boiler_held = None
    if fitted is not None:
        lines = fitted.boilerplate
        boiler_fit = tabulate(run_docs(nlp, "boilerplate_fit", lines.fit, [None] * len(lines.fit),
                                       filter_boilerplate=False), decider, taxonomy, fitted.out_of_fold)
        boiler_held = run_docs(nlp, "boilerplate_held_back", lines.held_back, [None] * len(lines.held_back),
                               filter_boilerplate=False)

    reliability: Dict[str, List[np.ndarray]] = {"explicit": [], "implied": []}
    counts = None
    if len(files) > 1:  # each file scored by a calibration fitted on the others
        splits = []
        for name, held in files.items():
            rest = [t for n, t in files.items() if n != name]
            config, models, _ = fit_decisions(rest, boiler_fit, gate, settings)
            entry, counts = score_split(nlp, config, gate, rest, held, taxonomy)
            report["validation"][f"fit on {'+'.join(t.name for t in rest)}, scored on {name}"] = entry
            splits.append(counts)
            probs = models.probabilities(held.with_gate(), held.explicit)
            for kind, mask in (("explicit", held.explicit), ("implied", ~held.explicit)):
                reliability[kind].append(np.c_[probs[mask], held.correct[mask]])
        report["validation"][POOLED] = pooled_row(splits)
        counts = {"sentences": [doc.text for table in files.values() for doc in table.docs],
                  "decider": np.concatenate([d for d, _ in splits]).tolist(),
                  "threshold": np.concatenate([t for _, t in splits]).tolist()}
    else:
        report["notes"].append("one validation file: no cross-file scores (give two to score each on the other)")

    config, models, fit_metrics = fit_decisions(list(files.values()), boiler_fit, gate, settings)
    report["validation"]["shipped: fit on all, scored on each (in-sample)"] = {
        name: score_split(nlp, config, gate, list(files.values()), table, taxonomy)[0] for name, table in files.items()}
    report["search"] = fit_metrics
    decider = install_decider(nlp, config, gate)
    if boiler_held is not None:
        report["nonskill_held_back"] = nonskill_report(decider, boiler_held.docs)
        report["nonskill_held_back_without_requirements"] = nonskill_report(
            decider, [doc for doc in boiler_held.docs if not states_a_requirement(doc.text)])
    report["seconds"] = round(time.perf_counter() - started, 1)
    bins = {f"{kind} (cross-file)": reliability_bins(*np.concatenate(rows).T) for kind, rows in reliability.items()
            if rows and len(np.concatenate(rows))}
    report["reliability"] = bins
    return CalibrationResult(config, report, bins, gate, counts)


def calibrate(model: PathLike, corpus_dir: Optional[PathLike], validation: Sequence[PathLike], *,
              settings: CalibrationSettings = CalibrationSettings(), reliability_path: Optional[PathLike] = None,
              jobads: Sequence[PathLike] = (), n_ads: int = 1000) -> CalibrationResult:
    """``python -m pipeline calibrate``: calibrate the pipeline folder ``model`` and write the calibration into it
    (``config.cfg``, the decider's folder, a ``calibration`` entry in ``meta.json``); optionally the reliability
    diagram as SVG and the set size per ad over the first ``n_ads`` ads of ``jobads`` (slow)."""
    nlp = load_pipeline(model)
    result = calibrate_pipeline(nlp, corpus_dir, validation, settings)
    if jobads and n_ads:
        result.report["set_size_per_ad"] = set_sizes(nlp, jobads, n_ads)
    save_calibration(nlp, model, result)
    if reliability_path is not None:
        write_reliability(result.reliability, reliability_path,
                          f"{Path(model).name}: each file scored by a fit on the other")
    return result


def record(nlp: Language, result: CalibrationResult) -> None:
    """The report in ``nlp.meta["calibration"]`` (numbers rounded), where ``nlp.to_disk`` saves it."""
    nlp.meta[CALIBRATION_KEY] = rounded(result.report)


def save_calibration(nlp: Language, model_dir: PathLike, result: CalibrationResult) -> None:
    """Write only what calibration changes — the config, meta.json and the decider's folder — as ``nlp.to_disk``
    would, leaving the encoder weights untouched."""
    model_dir = Path(model_dir)
    record(nlp, result)
    nlp.config.to_disk(model_dir / "config.cfg")
    srsly.write_json(model_dir / "meta.json", nlp.meta)
    nlp.get_pipe(DECIDER).to_disk(model_dir / DECIDER)
