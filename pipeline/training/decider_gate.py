"""The decider's gate — P(a sentence asks for any skill) — fitted from the corpus, and the logistic fit that both
the gate and the skill decisions use.

No hand labels: positives are corpus sentences with a literal ESCO match (a seeded sample of the train split,
some with their mentions deleted), negatives are boilerplate lines — lines the corpus build found in ``min_ads``
or more ads without a literal skill (``<corpus>/boilerplate.jsonl``). A deterministic slice of those lines (by
their hash key) is held back from every fit and only reported on.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from pipeline.components.decider import encode_sentences, sentence_vector, sigmoid
from pipeline.corpus.masking import mask_with_offsets
from pipeline.corpus.storage import load_corpus
from pipeline.errors import EscoDataError
from pipeline.io.boilerplate import BOILERPLATE_FILE, read_boilerplate

PathLike = Union[str, Path]


# ---------------------------------------------------------------------------------------------- library fits
def fit_logistic(features: np.ndarray, labels: np.ndarray, *, l2: float,
                 sample_weight: Optional[np.ndarray] = None) -> np.ndarray:
    """L2-regularized logistic regression (scikit-learn); returns ``[bias, *weights]`` on the raw features, as the
    decider stores its models.

    Fitted on standardized features (so one penalty treats a cosine in [0, 1] and a log word count alike) and
    mapped back. Minimizes the weighted mean log loss + ``l2 / 2 · |standardized weights|²`` (bias free):
    scikit-learn minimizes ``C · Σ wᵢ · lossᵢ + |w|² / 2``, which with the weights summing to n is that objective
    times ``C · n`` for ``C = 1 / (l2 · n)``. Newton steps (``newton-cholesky``): a few hundred features at most."""
    raw = np.asarray(features, np.float64)
    n = len(raw)
    weight = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
    scaler = StandardScaler().fit(raw)
    model = LogisticRegression(C=1.0 / (l2 * n), solver="newton-cholesky", tol=1e-10, max_iter=100)
    model.fit(scaler.transform(raw), np.asarray(labels, int), sample_weight=weight * (n / weight.sum()))
    weights = model.coef_[0] / scaler.scale_
    return np.r_[model.intercept_[0] - weights @ scaler.mean_, weights]


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC AUC of scores of positives against negatives (ties count half); NaN when a side is empty (a report
    without held-back lines says so rather than failing)."""
    if not len(positive) or not len(negative):
        return float("nan")
    labels = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    return float(roc_auc_score(labels, np.r_[np.asarray(positive, np.float64), np.asarray(negative, np.float64)]))


# ---------------------------------------------------------------------------------------------- its data
# Words with which an ad states what it asks of a candidate. A template line repeated over many ads can still be a
# requirement ("The ability to deputise in a clinical lead role", "6 months previous care experience"): as a
# negative it teaches the gate that requirements are boilerplate. Generic English cue words, not read off the
# benchmark files; a line of three words or fewer ("Desirable:", "Preferred Qualifications") stays a negative.
REQUIREMENT_CUES = re.compile(
    r"\b(abilit(y|ies)|able to|capable|experienced?|skill(s|ed)?|knowledge(able)?|understanding|expertise|"
    r"proficien\w*|competen\w*|commitment|familiar\w*|qualifications?|qualified|degree|"
    r"registration|registered|certifi\w*|track record|background in)\b", re.IGNORECASE)


def states_a_requirement(text: str) -> bool:
    """Whether a line of more than three words names what a candidate must have or be (``REQUIREMENT_CUES``)."""
    return len(text.split()) > 3 and REQUIREMENT_CUES.search(text) is not None


@dataclass
class BoilerplateSplit:
    fit: List[str]
    held_back: List[str]
    requirements_dropped: int = 0  # fitting lines left out as stating a requirement (drop_requirements)


def boilerplate_negatives(corpus_dir: PathLike, min_ads: Optional[int], held_back_percent: int,
                          drop_requirements: bool = False) -> BoilerplateSplit:
    """Boilerplate lines without a literal skill seen in ``min_ads`` or more ads (``None``: every line of the file,
    which the corpus build wrote at its own threshold), split by key into a fitting part and a held-back part
    (``key % 100 < held_back_percent``), so the same lines are held back every run. ``drop_requirements``: the
    fitting part leaves out lines that ``states_a_requirement``; the held-back part keeps them (its share given a
    skill stays comparable between runs)."""
    rows = [r for r in read_boilerplate(corpus_dir) if r["ads"] >= (min_ads or 0) and not r["has_skill"]]
    if not rows:
        raise EscoDataError(f"'{Path(corpus_dir) / BOILERPLATE_FILE}' holds no line seen in "
                            f"{min_ads or 'enough'} ads without a skill: the gate has no negatives.")
    held = [r["text"] for r in rows if r["key"] % 100 < held_back_percent]
    fit = [r["text"] for r in rows if r["key"] % 100 >= held_back_percent]
    kept = [text for text in fit if not states_a_requirement(text)] if drop_requirements else fit
    return BoilerplateSplit(kept, held, len(fit) - len(kept))


def corpus_sentences(corpus_dir: PathLike, split: str, limit: int, seed: int, masked_share: float = 0.0) -> List[str]:
    """A seeded sample of a corpus split's sentences (every one has a literal match); in ``masked_share`` of them
    (every k-th) the mentions are deleted, as in the masked-mention dev signal: a sentence can ask for a skill
    without naming it, and a gate that only saw named skills would learn "contains a skill label" instead."""
    rows = load_corpus(Path(corpus_dir))[split]
    chosen = sorted(random.Random(seed).sample(range(len(rows)), min(limit, len(rows))))
    every = round(1 / masked_share) if masked_share else 0
    texts = []
    for n, i in enumerate(chosen):
        text = rows[i]["text"]
        if every and n % every == 0:
            masked = mask_with_offsets(text, rows[i]["mentions"], 1.0, random.Random(seed), mask_token="")[0]
            text = masked if len(masked.split()) >= 3 else text
        texts.append(text)
    return texts


def gate_inputs(encoder, texts: Sequence[str]) -> np.ndarray:
    """The gate's input as the decider computes it: sentence vectors [n, D]."""
    return np.stack([sentence_vector(e) for e in encode_sentences(encoder, texts)]) if texts else np.zeros((0, 0))


# ---------------------------------------------------------------------------------------------- the gate
@dataclass
class GateFit:
    weights: np.ndarray  # [D], over the sentence vector
    bias: float
    report: Dict[str, Any] = field(default_factory=dict)

    def probability(self, vectors: np.ndarray) -> np.ndarray:
        """The decider's ``gate_probability`` for many sentences at once."""
        return sigmoid(self.bias + vectors @ self.weights)


def _fit_gate_vectors(vectors: np.ndarray, labels: np.ndarray, l2: float) -> GateFit:
    n_pos, n_neg = int(labels.sum()), int(len(labels) - labels.sum())
    weights = np.where(labels == 1, 0.5 / n_pos, 0.5 / n_neg)  # both classes count the same
    beta = fit_logistic(vectors, labels, l2=l2, sample_weight=weights)
    return GateFit(beta[1:], float(beta[0]))


def fit_gate(encoder, positives: Sequence[str], negatives: Sequence[str], *, l2: float,
             folds: int = 5) -> Tuple[GateFit, List[GateFit]]:
    """Logistic regression over the sentence vector, classes weighted equally; also one model per fold of the
    negatives, each fitted without that fold, so that the threshold search can see the gate's out-of-fold
    probability of every boilerplate line it constrains (the gate fitted on a line is over-sure about it).
    Negative ``i`` is in fold ``i % folds``."""
    if folds < 2:  # each fold gate is fitted without one fold: with one fold it would see no negative
        raise ValueError(f"folds must be 2 or more, got {folds}")
    if not positives or len(negatives) < folds:
        raise EscoDataError(f"the gate needs both classes: {len(positives)} skill sentences, {len(negatives)} "
                            f"boilerplate lines (at least {folds})")
    vectors = gate_inputs(encoder, list(positives) + list(negatives))
    labels = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    gate = _fit_gate_vectors(vectors, labels, l2)
    fitted = gate.probability(vectors)
    fold = np.r_[np.full(len(positives), -1), np.arange(len(negatives)) % folds]
    by_fold = [_fit_gate_vectors(vectors[fold != k], labels[fold != k], l2) for k in range(folds)]
    out_of_fold = np.concatenate([by_fold[k].probability(vectors[fold == k]) for k in range(folds)])
    gate.report = {"positives": len(positives), "negatives": len(negatives),
                   "auc_fit": auc(fitted[labels == 1], fitted[labels == 0]),
                   "auc_negatives_out_of_fold": auc(fitted[labels == 1], out_of_fold)}
    return gate, by_fold


def gate_separation(gate: GateFit, encoder, positives: Sequence[str], negatives: Sequence[str]) -> Dict[str, float]:
    """AUC of the gate between held-out skill sentences and held-back boilerplate lines."""
    pos = gate.probability(gate_inputs(encoder, positives)) if positives else np.zeros(0)
    neg = gate.probability(gate_inputs(encoder, negatives)) if negatives else np.zeros(0)
    return {"auc_held_out": auc(pos, neg), "n_positives": len(pos), "n_negatives": len(neg)}
