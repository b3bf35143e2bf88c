"""``esco_skill_decider``: from a ranking to a decision — the skills each sentence asks for, calibrated, with
the words that support them.

The ranker lists ten skills for every sentence, headings and benefits included. This component, placed after it
(or after the matcher alone), writes ``doc._.esco_decisions`` (read through ``doc._.esco_skill_set``,
``span._.esco_skill_set`` and ``span._.esco_no_skill_reason``, see ``predictions.py``). Per sentence:

1. **skipped** by a filter before the ranker (``doc._.esco_skipped``): empty set, the filter's reason;
2. **gate**: P(the sentence asks for any skill), a logistic regression over the sentence vector (weights in
   ``gate.npy``, bias in the config; cheap shape features — length, a trailing colon — were tried and did not
   separate boilerplate from skill sentences any better, so there are none). Below
   ``gate_threshold``: no implied skill, and no literal match either when ``gate_explicit`` — reason
   ``"no_skill"`` when the set ends up empty;
3. **explicit and implied predictions decided apart**: each gets a calibrated probability, a logistic model over
   ``SKILL_FEATURES`` (its score, its gap to and rank among the skills of its kind in the sentence, how
   skill-like the sentence reads, its literal matches and length, the gate probability; see
   ``skill_features``) with one coefficient vector per kind, and is kept at or above that kind's threshold;
   listed most probable first, at most ``max_skills_per_sentence`` when set (``decide_candidates``: the one
   decision rule, which the calibration's threshold search runs too). Calibration ships no cap: on the five
   benchmark files, cross-validated by file, a cap of 5 scored 0.1 F1 below none (1, 2 and 3 lower still);
4. **evidence** for each implied member: the sentence's words closest to the skill (contextual word-piece vectors
   from the ranker's encoder against the skill's index vectors, pieces merged into spaCy tokens, stop words,
   punctuation and words without letters skipped, the best ``evidence_words`` at or above ``evidence_floor``),
   as character offsets into ``doc.text``. Explicit members keep their mentions as evidence.

Cost: none in the encoder. The ranker's one pass per sentence (``TransformerEncoder.encode_with_tokens``) yields
both its sentence vector and the word-piece vectors, which it leaves on the doc for this component (a private
``user_data`` entry, ``take_piece_vectors``, removed here before the doc leaves the pipeline). The gate's sentence
vector is the normalized mean of those pieces, and the evidence reads them. Only a sentence the ranker did not
rank (too short, yet with a literal match) is encoded here, and only where the gate can change its answer: a
literal match, or an implied candidate that would pass its threshold at the most favourable gate value.
``make bench`` shows the cost.

Calibration (``pipeline/training/decider_fit.py``, ``python -m pipeline calibrate``, and the end of ``train``)
fits every number here from data and writes them into the config (``calibrated = true``); the pipeline ships
them. An **uncalibrated** decider (a fresh ``assemble``) has nothing to decide with: it commits literal matches
only (the contract's rule for a sentence without a decision) and only marks skipped sentences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.util import minibatch

from pipeline.components.factory import component_factory
from pipeline.components.pipes import DECIDER, RANKER
from pipeline.components.segmenter import sentences
from pipeline.components.predictions import (Evidence, SkillPrediction, TokenEncoding, implied_scale,
                                              register_extensions, set_decisions, skipped_sentences, take_piece_vectors)
from pipeline.errors import ConfigError, IncompletePipelineError
from pipeline.io.serialization import Part, Serializable, npy_bytes, read_npy
from pipeline.settings import Field, Settings, StrictBool, StrictFloat, StrictInt

GATE_FILE = "gate.npy"
SKILL_FEATURES = ("score", "gap", "log_rank", "sentence_top", "literal_matches", "log_words", "gate")  # per candidate;
# coefficients = [bias, *one per feature]. The gate comes last: the model is linear in it (see best_case).
NO_SKILL = "no_skill"

Finite = Annotated[StrictFloat, Field(allow_inf_nan=False)]
Probability = Annotated[StrictFloat, Field(ge=0.0, le=1.0)]
Coefficients = Annotated[Tuple[Finite, ...],
                         Field(min_length=len(SKILL_FEATURES) + 1, max_length=len(SKILL_FEATURES) + 1)]
UNFITTED = (0.0,) * (len(SKILL_FEATURES) + 1)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function (clipped: no overflow warning for a far-off logit). The one copy: the component,
    the gate and the calibration's fits all read probabilities through it."""
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0)))


# ---------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Thresholds:
    """The decision thresholds: the gate's (and whether it also drops literal matches), then each kind's."""

    gate: float
    gate_explicit: bool
    explicit: float
    implied: float


@dataclass(frozen=True)
class LogisticModel:
    """``sigmoid(bias + features · weights)``; ``coefficients = [bias, *weights]``."""

    coefficients: Tuple[float, ...]

    def probability(self, features: np.ndarray) -> np.ndarray:
        c = np.asarray(self.coefficients, np.float64)
        return sigmoid(c[0] + np.asarray(features, np.float64) @ c[1:])

    def best_case(self, features: np.ndarray) -> np.ndarray:
        """The probability at the most favourable gate value (0 or 1: the model is linear in it)."""
        return np.maximum(self.probability(with_gate(features, 0.0)), self.probability(with_gate(features, 1.0)))


@dataclass(frozen=True)
class DecisionModels:
    """One logistic model per kind of candidate (explicit: a literal match; implied: the ranker's)."""

    explicit: LogisticModel
    implied: LogisticModel

    def probabilities(self, features: np.ndarray, explicit: np.ndarray) -> np.ndarray:
        """[n] calibrated probabilities of candidates with features [n, len(SKILL_FEATURES)] (gate column last)."""
        return np.where(explicit, self.explicit.probability(features), self.implied.probability(features))


class DeciderSettings(Settings):
    """``[components.esco_skill_decider]``. Calibration writes every key but the evidence ones (with
    ``calibrated = true``); the defaults are an uncalibrated decider's."""

    calibrated: StrictBool = False  # False: decide nothing, commit literal matches (see the module docstring)
    max_skills_per_sentence: Optional[StrictInt] = Field(None, ge=1)  # None: no cap (see the module docstring)
    gate_threshold: Probability = 0.0  # 0: the gate never closes
    gate_bias: Finite = 0.0  # the gate's weights are in gate.npy
    gate_explicit: StrictBool = False  # a closed gate also drops literal matches
    explicit_coefficients: Coefficients = UNFITTED  # [bias, *one per SKILL_FEATURES]
    explicit_threshold: Probability = 0.5
    implied_coefficients: Coefficients = UNFITTED
    implied_threshold: Probability = 0.5
    evidence_words: StrictInt = Field(3, ge=0)  # 0: no evidence for implied members
    evidence_floor: Probability = 0.3  # a word's cosine to the skill must reach this to be evidence

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.gate_threshold, self.gate_explicit, self.explicit_threshold, self.implied_threshold)

    @property
    def models(self) -> DecisionModels:
        return DecisionModels(LogisticModel(self.explicit_coefficients), LogisticModel(self.implied_coefficients))


# ---------------------------------------------------------------------------------------------- the decision
def decision_order(sent_id: np.ndarray, probs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Candidates sorted by sentence, most probable first (ties keep the ranking's order), and where each sentence
    begins in that order. The same for every threshold, so a search over thresholds computes it once."""
    order = np.lexsort((-probs, sent_id))  # stable: equal probabilities stay in ranking order
    sents = sent_id[order]
    return order, np.r_[0, np.flatnonzero(np.diff(sents)) + 1] if len(order) else np.zeros(0, int)


def decide_candidates(probs: np.ndarray, explicit: np.ndarray, gate: np.ndarray, sent_id: np.ndarray,
                      thresholds: Thresholds, max_k: Optional[int],
                      order: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """THE decision rule, for any number of candidates of any number of sentences: which candidates are kept
    (``keep`` [n]) and the order they are listed in (``order`` [n], by sentence, most probable first).

    A candidate passes its kind's threshold; in a sentence whose gate is below the gate threshold only literal
    matches pass, and none when ``gate_explicit``; of the passing candidates of a sentence the ``max_k`` most
    probable are kept (all of them when ``max_k`` is ``None``). The component decides one sentence at a time with it, the calibration's threshold search
    thousands of settings over whole benchmark files (``order``: a ``decision_order`` computed once)."""
    passes = np.where(explicit, probs >= thresholds.explicit, probs >= thresholds.implied)
    passes &= (gate >= thresholds.gate) | (explicit & (not thresholds.gate_explicit))
    index, first = order if order is not None else decision_order(sent_id, probs)
    if max_k is None:
        return passes, index
    kept_sorted = passes[index]
    cum = np.cumsum(kept_sorted)
    before = np.repeat(np.r_[0, cum][first], np.diff(np.r_[first, len(index)]))  # kept in earlier sentences
    keep = np.zeros_like(passes)
    keep[index] = kept_sorted & ((cum - before) <= max_k)
    return keep, index


# ---------------------------------------------------------------------------------------------- features
def skill_features(ranking: Sequence[SkillPrediction], sent: Span, explicit_weight: float = 0.0) -> np.ndarray:
    """[n, len(SKILL_FEATURES) - 1] in ranking order; the gate column is appended once known (``with_gate``).

    - ``score``: an implied skill's ranker cosine — fusion scales implied scores by ``1 - explicit_weight`` in a
      sentence with a literal match, so that factor is undone and one threshold means the same everywhere; its
      cosine with the preferred label alone (``label_score``) when the ranker scored the best of several labels,
      which ranks better within a sentence but inflates skills with many labels across sentences (on the
      benchmark files the decided set lost 2–4 F1 points calibrated on that maximum); an explicit skill's fused
      score;
    - ``gap``: its distance to the best ``score`` among the skills of the same kind (explicit / implied) in the
      sentence: fusion puts every literal match first, so an implied skill is compared with the implied ones;
    - ``log_rank``: log(1 + its rank among the skills of the same kind in the ranker's order): the ranking's
      score orders a sentence's skills better than ``label_score`` (with every label and a quarter from the
      preferred one, MRR +3.6 on the benchmark files) while ``label_score`` compares across sentences; with
      the rank taken from ``label_score`` instead the decided set lost 1.1 F1 [0.2, 2.0] (3 seeds);
    - ``sentence_top``: the sentence's best implied cosine (how skill-like the sentence reads at all);
    - ``literal_matches``: log(1 + the sentence's literal matches); ``log_words``: log(1 + its words).
    """
    n_explicit = sum(p.explicit for p in ranking)
    scale = implied_scale(n_explicit > 0, explicit_weight)
    unfuse = 1.0 / scale if scale > 0.0 else 1.0
    scores = np.array([p.score if p.explicit else p.label_score if p.label_score is not None else p.score * unfuse
                       for p in ranking], np.float64)
    out = np.zeros((len(ranking), len(SKILL_FEATURES) - 1), np.float64)
    implied_top = max((s for s, p in zip(scores, ranking) if not p.explicit), default=0.0)
    for kind in (True, False):
        rows = sorted((i for i, p in enumerate(ranking) if p.explicit == kind), key=lambda i: -ranking[i].score)
        best = max((scores[i] for i in rows), default=0.0)
        for rank, i in enumerate(rows):
            out[i, :3] = (scores[i], best - scores[i], math.log1p(rank))
    out[:, 3] = implied_top
    out[:, 4] = math.log1p(n_explicit)
    out[:, 5] = math.log1p(len([t for t in sent if not (t.is_punct or t.is_space)]))
    return out


def with_gate(features: np.ndarray, gate: Union[float, np.ndarray]) -> np.ndarray:
    """``features`` with the gate column appended: one value for all rows, or one per row."""
    return np.hstack([features, np.broadcast_to(np.asarray(gate, np.float64), (len(features),))[:, None]])


def sentence_vector(encoding: TokenEncoding) -> np.ndarray:
    """The gate's sentence vector: the normalized mean of the word-piece vectors (zeros for no pieces)."""
    vectors = encoding[1]
    if not len(vectors):
        return np.zeros(vectors.shape[1] if vectors.ndim == 2 else 0, np.float32)
    mean = vectors.mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-9)


def encode_sentences(encoder, texts: Sequence[str]) -> List[TokenEncoding]:
    """``encode_tokens`` of each text, each distinct text encoded once (boilerplate repeats across ads), sorted by
    length so that a batch pads little (``encode_tokens`` batches in the order it is given; it runs in eval
    mode itself)."""
    unique = sorted(set(texts), key=len)
    if not unique:
        return []
    encoded = dict(zip(unique, encoder.encode_tokens(unique)))
    return [encoded[t] for t in texts]


@dataclass
class SentenceCandidates:
    """One sentence's ranking and what the decision needs about it."""

    sent: Span
    ranking: List[SkillPrediction]
    features: np.ndarray  # [n, len(SKILL_FEATURES) - 1] skill_features
    explicit: np.ndarray  # [n] bool
    gate: Optional[float] = None
    encoding: Optional[TokenEncoding] = field(default=None, repr=False)


# ---------------------------------------------------------------------------------------------- component
class SkillDecider(Serializable):
    def __init__(self, nlp: Language, name: str = DECIDER, settings: Optional[DeciderSettings] = None):
        """``settings``: checked (``DeciderSettings.load``, as the factory does); ``None``: the defaults."""
        self.nlp, self.name = nlp, name
        self.settings = settings if settings is not None else DeciderSettings()
        self.models, self.thresholds = self.settings.models, self.settings.thresholds
        self.gate_weights = np.zeros(0, np.float32)  # [D] over the sentence vector; empty = no gate
        register_extensions()

    @property
    def calibrated(self) -> bool:
        return self.settings.calibrated

    @property
    def gate_threshold(self) -> float:
        return self.settings.gate_threshold

    @property
    def max_skills(self) -> Optional[int]:
        return self.settings.max_skills_per_sentence

    # ------------------------------------------------------------------ setup
    def initialize(self, get_examples=None, *, nlp: Optional[Language] = None) -> None:
        """Nothing to load: a fresh decider is uncalibrated (literal matches only) until ``calibrate``."""

    def set_gate(self, weights: np.ndarray) -> None:
        self.gate_weights = np.asarray(weights, np.float32).reshape(-1)

    @property
    def has_gate(self) -> bool:
        return bool(self.gate_weights.size)

    @property
    def encoder(self):
        """The ranker's encoder (``None`` in a matcher-only pipeline): the gate and the evidence use it."""
        return self.nlp.get_pipe(RANKER).encoder if RANKER in self.nlp.pipe_names else None

    @property
    def explicit_weight(self) -> float:
        """The ranker's fusion weight (``skill_features`` undoes it); 0 without a ranker."""
        return float(self.nlp.get_pipe(RANKER).settings.explicit_weight) if RANKER in self.nlp.pipe_names else 0.0

    @property
    def index(self):
        return self.nlp.get_pipe(RANKER).index if RANKER in self.nlp.pipe_names else None

    # ------------------------------------------------------------------ running
    def __call__(self, doc: Doc) -> Doc:
        return next(iter(self.pipe([doc])))

    @property
    def reads_piece_vectors(self) -> bool:
        """Asks the ranker to keep its word pieces on the doc (``SkillRanker.pipe``): only a calibrated decider
        reads them."""
        return self.calibrated

    def pipe(self, docs: Iterable[Doc], batch_size: int = 64) -> Iterator[Doc]:
        """Decide a batch of docs; the sentences that need encoding are encoded together across the batch."""
        for batch in minibatch(docs, size=batch_size):
            per_doc = [self.candidates(doc, take_piece_vectors(doc)) for doc in batch]
            if self.calibrated:
                self.encode_needed([c for doc_cands in per_doc for c in doc_cands])
            for doc, doc_cands in zip(batch, per_doc):
                decisions = {start: ([], reason) for start, reason in skipped_sentences(doc).items()}
                if self.calibrated:
                    decisions.update({c.sent.start: self.decide(c) for c in doc_cands})
                set_decisions(doc, decisions)
                yield doc

    def candidates(self, doc: Doc, pieces: Optional[Dict[int, TokenEncoding]] = None) -> List[SentenceCandidates]:
        """The ranked sentences of ``doc`` that a filter did not skip, with the word pieces the ranker left for
        them (``pieces``, by sentence start)."""
        skipped = skipped_sentences(doc)
        rankings = doc._.esco_sentence_skills
        pieces = pieces or {}
        out = []
        for sent in sentences(doc):
            ranking = rankings.get(sent.start)
            if sent.start in skipped or not ranking:
                continue
            out.append(SentenceCandidates(sent, ranking, skill_features(ranking, sent, self.explicit_weight),
                                          np.array([p.explicit for p in ranking], bool),
                                          encoding=pieces.get(sent.start)))
        return out

    def needs_gate(self, cands: SentenceCandidates) -> bool:
        """Whether the gate can change this sentence's set: a literal match, or an implied candidate that passes
        its threshold at the most favourable gate value."""
        if cands.explicit.any():
            return True
        implied = cands.features[~cands.explicit]
        return bool(len(implied)) and bool((self.models.implied.best_case(implied) >= self.thresholds.implied).any())

    def encode_needed(self, sentences: List[SentenceCandidates]) -> None:
        """Set the gate probability of the sentences whose decision needs it (their implied members also need
        evidence); those the ranker left no word pieces for are encoded, in one pass."""
        encoder = self.encoder
        needed = [c for c in sentences if self.needs_gate(c)]
        missing = [c for c in needed if c.encoding is None]
        if encoder is not None and missing:
            for c, encoding in zip(missing, encode_sentences(encoder, [c.sent.text for c in missing])):
                c.encoding = encoding
        for c in needed:
            # Without an encoder (a matcher-only pipeline) or gate weights, the gate is open.
            c.gate = self.gate_probability(c.encoding) if c.encoding is not None and self.has_gate else 1.0

    def gate_probability(self, encoding: TokenEncoding) -> float:
        vector = sentence_vector(encoding)
        if vector.shape[0] != self.gate_weights.shape[0]:
            raise ConfigError(f"'{self.name}': {GATE_FILE} has {self.gate_weights.shape[0]} weights but the ranker's "
                              f"encoder gives {vector.shape[0]}-dimensional vectors; calibrate the pipeline again.")
        return float(sigmoid(np.asarray(self.settings.gate_bias + float(vector @ self.gate_weights))))

    def decide(self, cands: SentenceCandidates) -> Tuple[List[SkillPrediction], Optional[str]]:
        """The sentence's set (``decide_candidates``: most probable first, capped) and, when the gate emptied it,
        ``"no_skill"``."""
        if cands.gate is None:  # no candidate could pass: the gate was not needed
            return [], None
        n = len(cands.ranking)
        probs = self.models.probabilities(with_gate(cands.features, cands.gate), cands.explicit)
        keep, order = decide_candidates(probs, cands.explicit, np.full(n, cands.gate), np.zeros(n, int),
                                        self.thresholds, self.max_skills)
        chosen = [self._member(cands, int(i), float(probs[i])) for i in order if keep[i]]
        gated = cands.gate < self.gate_threshold
        return chosen, (NO_SKILL if gated and not chosen else None)

    def _member(self, cands: SentenceCandidates, i: int, probability: float) -> SkillPrediction:
        pred = cands.ranking[i]
        evidence = list(pred.evidence) if pred.explicit else self.evidence(cands, pred.uri)
        return SkillPrediction(pred.uri, pred.label, pred.score, pred.explicit, list(pred.spans),
                               probability=probability, evidence=evidence, label_score=pred.label_score)

    def evidence(self, cands: SentenceCandidates, uri: str) -> List[Evidence]:
        """The sentence's words most similar to the skill (see the module docstring)."""
        index = self.index
        if cands.encoding is None or index is None or uri not in index.position or not self.settings.evidence_words:
            return []
        offsets, vectors = cands.encoding
        if not len(offsets):
            return []
        i = index.position[uri]
        end = index.offsets[i + 1] if i + 1 < len(index.offsets) else len(index.vectors)
        piece_scores = (vectors @ index.vectors[index.offsets[i]:end].T).max(axis=1)  # [T]
        return word_evidence(cands.sent, offsets, piece_scores, self.settings.evidence_words,
                             self.settings.evidence_floor)

    # ------------------------------------------------------------------ serialization
    def serialization_parts(self) -> Dict[str, Part]:
        """The gate's weights (float32 ``.npy``); its bias, the coefficients and thresholds are the config's."""
        return {GATE_FILE: Part(lambda: npy_bytes(self.gate_weights.astype(np.float32)),
                                lambda data: self._load_gate(read_npy(data)))}

    def _load_gate(self, weights: np.ndarray) -> None:
        self.set_gate(weights)
        if self.calibrated and self.gate_threshold > 0 and not self.has_gate:
            raise IncompletePipelineError(f"'{self.name}': {GATE_FILE} holds no gate weights but [components."
                                          f"{self.name}] gate_threshold = {self.gate_threshold}: calibrate the "
                                          "pipeline again.")


def word_evidence(sent: Span, offsets: np.ndarray, piece_scores: np.ndarray, k: int, floor: float) -> List[Evidence]:
    """Merge word-piece scores into the sentence's tokens (max over a token's pieces) and keep the best ``k``
    content words at or above ``floor``, best first. ``offsets`` are relative to ``sent.text``."""
    starts = offsets[:, 0]
    order = np.argsort(starts, kind="stable")
    starts, scores = starts[order], piece_scores[order]
    words = []
    for token in sent:
        if token.is_stop or token.is_punct or token.is_space or not any(ch.isalpha() for ch in token.text):
            continue
        begin = token.idx - sent.start_char
        lo, hi = np.searchsorted(starts, [begin, begin + len(token.text)])
        if hi > lo:
            words.append((float(scores[lo:hi].max()), token))
    words = [w for w in sorted(words, key=lambda w: -w[0]) if w[0] >= floor][:k]
    return [Evidence(t.idx, t.idx + len(t.text), t.text) for _, t in words]


@component_factory(DECIDER, DeciderSettings, assigns=["doc._.esco_decisions"])
def make_skill_decider(nlp: Language, name: str, settings: DeciderSettings) -> SkillDecider:
    return SkillDecider(nlp, name, settings)
