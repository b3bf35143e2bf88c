"""The decider's skill decisions fitted from the benchmark validation files: the candidate table, one logistic model
per kind, and the threshold search.

Sentence → gold ESCO labels; a sentence whose rows are only ``LABEL NOT PRESENT`` / ``UNDERSPECIFIED`` asks for no
ESCO skill, so whatever is predicted there is a false positive. The thresholds aim at sentence-level micro F1 on the
fitting files while giving a skill to at most ``max_nonskill_share`` of the boilerplate lines the gate was fitted
on — judged by the gate's out-of-fold probabilities, since the gate is over-sure about lines it was fitted on. The
search decides with the component's own rule (``decide_candidates``), vectorized over every candidate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from spacy.language import Language
from spacy.tokens import Doc

from pipeline.components.decider import (SKILL_FEATURES, DecisionModels, LogisticModel, SkillDecider, Thresholds,
                                         decide_candidates, decision_order, encode_sentences, sentence_vector,
                                         with_gate)
from pipeline.components.pipes import BOILERPLATE, DECIDER
from pipeline.evaluation.benchmark import pipe_quietly, read_benchmark
from pipeline.evaluation.calibration_report import prf
from pipeline.training.decider_gate import GateFit, fit_logistic

PathLike = Union[str, Path]
GATE_GRID = tuple(round(float(x), 2) for x in np.arange(0.0, 0.91, 0.1))
EXPLICIT_GRID = tuple(round(float(x), 2) for x in np.arange(0.0, 0.96, 0.05))
IMPLIED_GRID = tuple(round(float(x), 3) for x in np.arange(0.05, 0.96, 0.025))
GATE_TOLERANCE = 0.005  # F1 within half a point (about one gold label on the two files) counts as a tie


# ---------------------------------------------------------------------------------------------- candidates
@dataclass
class LabelledDocs:
    """Texts run through the pipeline up to the decider, with their gold labels (``None``: not a benchmark) and
    every ranked candidate as one row of a table the threshold search works on."""

    name: str
    docs: List[Doc]
    golds: List[Optional[set]]
    features: np.ndarray = field(default_factory=lambda: np.zeros((0, len(SKILL_FEATURES) - 1)))  # skill_features
    explicit: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    gate: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the gate of the candidate's sentence
    correct: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    doc_id: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    sent_id: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    label_id: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    labels: List[str] = field(default_factory=list)  # label_id → ESCO label

    @property
    def n_gold(self) -> int:
        return sum(len(g) for g in self.golds if g)

    def with_gate(self) -> np.ndarray:
        """The models' input: the features with each candidate's gate column."""
        return with_gate(self.features, self.gate)


def run_docs(nlp: Language, name: str, texts: Sequence[str], golds: Sequence[Optional[set]], *,
             filter_boilerplate: bool = True) -> LabelledDocs:
    """The pipeline up to the decider over ``texts`` (the decider runs later, once per candidate calibration).

    ``filter_boilerplate=False`` for the boilerplate lines themselves: the boilerplate filter ships these very
    lines, so with it they would all be skipped and say nothing about the decider."""
    disabled = [p for p in (DECIDER, BOILERPLATE if not filter_boilerplate else None) if p in nlp.pipe_names]
    with nlp.select_pipes(disable=disabled):
        docs = pipe_quietly(nlp, list(texts))
    return LabelledDocs(name, docs, list(golds))


def benchmark_docs(nlp: Language, path: PathLike, name: str) -> LabelledDocs:
    benchmark = read_benchmark(path)
    sentences = list(benchmark.gold)
    return run_docs(nlp, name, sentences, [benchmark.gold[s] for s in sentences])


def tabulate(data: LabelledDocs, decider: SkillDecider, taxonomy,
             gate_of: Optional[Callable[[int], GateFit]] = None) -> LabelledDocs:
    """Fill the candidate table: features, the gate probability of the candidate's sentence (by the gate
    ``gate_of(document index)``; 1.0 without one, as in the component) and whether its ESCO label is gold.
    Every ranked sentence is encoded here (the component encodes only those that need it)."""
    per_doc = [decider.candidates(doc) for doc in data.docs]
    flat = [c for cands in per_doc for c in cands]
    encoder = decider.encoder
    encodings = encode_sentences(encoder, [c.sent.text for c in flat]) if encoder is not None and flat else []
    labels: Dict[str, int] = {}
    rows: List[Tuple] = []
    sent_id = 0
    for doc_id, cands in enumerate(per_doc):
        gold = data.golds[doc_id] or set()
        for c in cands:
            gate = 1.0
            if gate_of is not None and encodings:
                gate = float(gate_of(doc_id).probability(sentence_vector(encodings[sent_id])[None])[0])
            for pred, feats, explicit in zip(c.ranking, c.features, c.explicit):
                label = taxonomy.label(pred.uri) if pred.uri in taxonomy else pred.label
                label_id = labels.setdefault(label, len(labels))
                rows.append((feats, explicit, gate, label in gold, doc_id, sent_id, label_id))
            sent_id += 1
    data.labels = list(labels)
    if rows:
        feats, explicit, gate, correct, doc_ids, sent_ids, label_ids = zip(*rows)
        data.features, data.explicit, data.gate = np.array(feats), np.array(explicit, bool), np.array(gate)
        data.correct, data.doc_id = np.array(correct, bool), np.array(doc_ids)
        data.sent_id, data.label_id = np.array(sent_ids), np.array(label_ids)
    return data


def concat(parts: Sequence[LabelledDocs]) -> LabelledDocs:
    """Several tables as one (documents and sentences renumbered; label ids keep their table's numbering, as
    they are only compared within a document, and ``labels`` stays empty)."""
    out = LabelledDocs("+".join(p.name for p in parts), [d for p in parts for d in p.docs],
                       [g for p in parts for g in p.golds])
    doc_shift = sent_shift = 0
    columns: Dict[str, List[np.ndarray]] = {k: [] for k in ("features", "explicit", "gate", "correct", "doc_id",
                                                             "sent_id", "label_id")}
    for p in parts:
        for key in columns:
            value = getattr(p, key)
            columns[key].append(value + doc_shift if key == "doc_id" else value + sent_shift if key == "sent_id"
                                else value)
        doc_shift += len(p.docs)
        sent_shift += int(p.sent_id.max()) + 1 if len(p.sent_id) else 0
    for key, values in columns.items():
        setattr(out, key, np.concatenate(values) if values else getattr(out, key))
    return out


# ---------------------------------------------------------------------------------------------- the models
def fit_models(table: LabelledDocs, l2: float) -> DecisionModels:
    """One logistic model per kind over ``SKILL_FEATURES``; a kind without both outcomes gets a constant model
    at its observed rate."""
    x = table.with_gate()
    fitted = []
    for kind in (True, False):
        mask = table.explicit == kind
        y = table.correct[mask]
        if mask.sum() and 0 < y.mean() < 1:
            fitted.append(fit_logistic(x[mask], y, l2=l2))
        else:
            rate = float(np.clip(y.mean() if mask.sum() else 0.0, 1e-4, 1 - 1e-4))
            fitted.append(np.r_[math.log(rate / (1 - rate)), np.zeros(len(SKILL_FEATURES))])
    return DecisionModels(*(LogisticModel(tuple(float(v) for v in beta)) for beta in fitted))


# ---------------------------------------------------------------------------------------------- the search
def decisions(table: LabelledDocs, models: DecisionModels, max_k: Optional[int]) -> Callable[[Thresholds], np.ndarray]:
    """Which candidates the decider with ``models`` keeps under any thresholds: the component's rule
    (``decide_candidates``), with the probabilities and their order computed once for a whole search."""
    probs = models.probabilities(table.with_gate(), table.explicit)
    order = decision_order(table.sent_id, probs)
    return lambda t: decide_candidates(probs, table.explicit, table.gate, table.sent_id, t, max_k, order)[0]


def micro_counts(table: LabelledDocs, kept: np.ndarray) -> Tuple[int, int, int]:
    """(TP, FP, FN) over documents: a label predicted by several sentences of a document counts once."""
    pairs = np.unique(table.doc_id[kept] * 1_000_000 + table.label_id[kept])
    correct_pairs = np.unique(table.doc_id[kept & table.correct] * 1_000_000 + table.label_id[kept & table.correct])
    tp = len(correct_pairs)
    return tp, len(pairs) - tp, table.n_gold - tp


def nonskill_share(table: LabelledDocs, kept: np.ndarray) -> float:
    return len(np.unique(table.doc_id[kept])) / max(1, len(table.docs))


def search_thresholds(table: LabelledDocs, models: DecisionModels, boilerplate: Optional[LabelledDocs],
                      max_k: Optional[int], max_nonskill_share: float) -> Tuple[Thresholds, Dict[str, float]]:
    """The decision thresholds, in two steps.

    1. A grid search: gate threshold (and whether the gate also drops literal matches) × explicit × implied
       threshold, keeping only settings that give a skill to at most ``max_nonskill_share`` of the
       ``boilerplate`` lines. F1* = the best micro F1 on ``table``; the gate setting kept is the lowest one
       whose best F1 is within ``GATE_TOLERANCE`` of F1* (ties go to the open gate: see the comment below).
    2. The probability thresholds follow the rule for calibrated probabilities: a candidate belongs in a
       micro-F1-optimal set when its probability is above F1*/2 (Lipton et al. 2014, "Thresholding classifiers
       to maximize F1"), for both kinds; the implied one is raised to the lowest grid value that keeps the
       boilerplate share within bounds at that gate. Why not the argmax itself: on 100 sentences the F1 curve is
       noisy and its argmax overfits — on 20 random half splits of the two benchmark files (fit on one half,
       scored on the other; no gate) the rule scored 1 point of F1 above the argmax.
    """
    kept = decisions(table, models, max_k)
    boiler_kept = decisions(boilerplate, models, max_k) if boilerplate is not None else None
    gate_grid = GATE_GRID if boilerplate is not None and table.gate.min(initial=1.0) < 1.0 else (0.0,)

    def share(t: Thresholds) -> float:
        return nonskill_share(boilerplate, boiler_kept(t)) if boiler_kept is not None else 0.0

    def f1(t: Thresholds) -> Dict[str, float]:
        return prf(*micro_counts(table, kept(t)))

    best_f1: Dict[Tuple[float, bool], float] = {}  # per gate setting
    lowest_implied: Dict[Tuple[float, bool], float] = {}
    for gate in gate_grid:
        for gate_explicit in ((False, True) if gate > 0 else (False,)):
            for implied in IMPLIED_GRID:
                if share(Thresholds(gate, gate_explicit, 1.0, implied)) > max_nonskill_share:
                    continue
                lowest_implied.setdefault((gate, gate_explicit), implied)
                for explicit in EXPLICIT_GRID:
                    m = f1(Thresholds(gate, gate_explicit, explicit, implied))
                    best_f1[(gate, gate_explicit)] = max(best_f1.get((gate, gate_explicit), 0.0), m["f1"])
    f1_star = max(best_f1.values(), default=0.0)
    if f1_star == 0.0:  # nothing both right and within the boilerplate bound: no implied skill
        chosen = Thresholds(0.0, False, 0.5, 1.0)
    else:
        # The gate closes no further than the benchmark asks: the lowest setting within GATE_TOLERANCE of F1*.
        # (Its negatives include real duty lines a chain employer repeats, so an over-closed gate costs skill
        # sentences of a kind the benchmark files do not have, e.g. NHS care duties.)
        gate, gate_explicit = min(key for key, best in best_f1.items() if best >= f1_star - GATE_TOLERANCE)
        half = round(best_f1[(gate, gate_explicit)] / 2, 3)
        chosen = Thresholds(gate, gate_explicit, half, max(half, lowest_implied[(gate, gate_explicit)]))
    return chosen, {**f1(chosen), "best_f1_on_grid": f1_star, "boilerplate_share": share(chosen)}
