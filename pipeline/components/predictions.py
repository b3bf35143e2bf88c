"""The output contract shared by the matcher and the ranker, and how sentence scores become ad scores.

- ``doc.spans["esco_skills"]``: explicit mentions (``kb_id_`` = ESCO URI, ``label_`` = ESCO skill type).
- ``doc._.esco_skills``: the ad's ranked ``SkillPrediction`` list.
- ``sent._.esco_skills``: the same for one sentence (any span that is a sentence of the doc).
- ``doc._.esco_skill_set`` / ``span._.esco_skill_set``: the predictions the pipeline commits to (the decided
  set), ranked, same fields plus ``probability`` and ``evidence``.
- ``span._.esco_no_skill_reason``: why a sentence got an empty set (``"boilerplate"``, ``"section:<name>"``,
  ``"no_skill"``, ...), ``None`` when it was decided on its predictions.
- ``doc._.esco_skipped``: ``{sentence start token: reason}`` for sentences a filter before the ranker marked as
  asking for no skill (boilerplate, a benefits section...); the ranker does not rank them.

Decisions are written by a decision component (``esco_skill_decider``) into ``doc._.esco_decisions``:
``{sentence start token: {"skills": [[uri, probability, [[start_char, end_char], ...]], ...], "reason": str|None}}``.
A sentence with no decision (a pipeline without that component) commits to its literal matches only: a literal
ESCO label in the text is the one prediction that needs no calibration.

Predictions are stored in ``doc.user_data`` as plain lists (URI, label, score, explicit, token offsets of the
mentions), and the extensions above are getters that rebuild ``SkillPrediction`` objects from them. So a
processed Doc survives ``to_bytes``/``DocBin`` and ``nlp.pipe(n_process=...)``, which pickle-free
serialization of Span objects in ``user_data`` would not.

Aggregation rule (stated once, tested): a skill's ad score is the maximum of its sentence scores; ties are
broken by the number of sentences that predict it, then by explicitness. Max, not mean, because one sentence
that clearly asks for a skill is enough — an ad does not ask for a skill less because it also lists others.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from spacy.tokens import Doc, Span

from pipeline.components.segmenter import is_sentence

SPANS_KEY = "esco_skills"
# Doc extension holding {sentence start token: [[uri, label, score, explicit, [[start, end], ...](, label_score)], ...]}
RAW_KEY = "esco_predictions"
DECISIONS_KEY = "esco_decisions"  # Doc extension holding the decided sets (see the module docstring)
SKIPPED_KEY = "esco_skipped"  # Doc extension {sentence start token: reason} for sentences no skill is looked for in


@dataclass(frozen=True)
class Evidence:
    """Words of ``doc.text`` that support a prediction: the mention for an explicit one, the sentence's most
    similar words for an implied one."""

    start_char: int
    end_char: int
    text: str

    def to_dict(self) -> dict:
        return {"start_char": self.start_char, "end_char": self.end_char, "text": self.text}


@dataclass
class SkillPrediction:
    uri: str
    label: str
    score: float
    explicit: bool = False
    spans: List[Span] = field(default_factory=list)
    probability: Optional[float] = None  # calibrated P(the sentence asks for this skill); set-members only
    evidence: List[Evidence] = field(default_factory=list)
    # The sentence's cosine with the skill's preferred label alone, when the ranker scores a skill by the best of
    # several texts (skill_text with alternative labels): a max over 30 labels is higher than over 1, so scores
    # of skills with many labels are not comparable across skills; the decider calibrates on this one.
    label_score: Optional[float] = None

    def to_dict(self) -> dict:
        out = {
            "uri": self.uri,
            "label": self.label,
            "score": round(float(self.score), 4),
            "explicit": self.explicit,
            "spans": [{"start_char": s.start_char, "end_char": s.end_char, "text": s.text} for s in self.spans],
            "evidence": [e.to_dict() for e in self.evidence],
        }
        if self.probability is not None:
            out["probability"] = round(float(self.probability), 4)
        if self.label_score is not None:
            out["label_score"] = round(float(self.label_score), 4)
        return out


def mention_evidence(spans: Sequence[Span]) -> List[Evidence]:
    return [Evidence(s.start_char, s.end_char, s.text) for s in spans]


def _rebuild(doc: Doc, rows: Sequence[list]) -> List[SkillPrediction]:
    preds = []
    for uri, label, score, explicit, spans, *label_score in rows:  # a sixth item only when the ranker gave one
        mentions = [doc[s:e] for s, e in spans]
        preds.append(SkillPrediction(uri, label, score, explicit, mentions, evidence=mention_evidence(mentions),
                                     label_score=label_score[0] if label_score else None))
    return preds


def _decided(doc: Doc, start: int, ranking: List[SkillPrediction]) -> List[SkillPrediction]:
    """The committed part of one sentence's ranking (see the module docstring for the no-decision rule)."""
    decision = (doc._.get(DECISIONS_KEY) or {}).get(str(start))
    if decision is None:
        return [p for p in ranking if p.explicit]
    by_uri = {p.uri: p for p in ranking}
    chosen = []
    for uri, probability, offsets in decision["skills"]:
        pred = by_uri.get(uri)
        if pred is None:  # a decision about a skill the ranking no longer holds: nothing to show for it
            continue
        evidence = [Evidence(s, e, doc.text[s:e]) for s, e in offsets] or list(pred.evidence)
        chosen.append(replace(pred, spans=list(pred.spans), probability=float(probability), evidence=evidence))
    return chosen


def _doc_sentence_sets(doc: Doc) -> Dict[int, List[SkillPrediction]]:
    return {start: _decided(doc, start, ranking) for start, ranking in _doc_sentence_skills(doc).items()}


def _doc_skill_set(doc: Doc) -> List[SkillPrediction]:
    return aggregate(_doc_sentence_sets(doc).values())


def _sentence_key(span: Span) -> Optional[str]:
    """The key of ``span`` in the stored predictions when it is exactly a sentence of the doc."""
    raw = span.doc._.get(RAW_KEY) or {}
    key = str(span.start)
    if key in raw and is_sentence(span):
        return key
    return None


def _span_skill_set(span: Span) -> List[SkillPrediction]:
    key = _sentence_key(span)
    if key is not None:
        return _decided(span.doc, span.start, _span_skills(span))
    return aggregate(preds for start, preds in _doc_sentence_sets(span.doc).items()
                     if span.start <= start < span.end)


def skipped_sentences(doc: Doc) -> Dict[int, str]:
    """Sentences (by first token) that a filter before the ranker marked as asking for no skill, with why."""
    return {int(start): reason for start, reason in (doc._.get(SKIPPED_KEY) or {}).items()}


def mark_skipped(doc: Doc, reasons: Dict[int, str]) -> None:
    doc._.set(SKIPPED_KEY, {str(start): reason for start, reason in reasons.items()})


def _span_no_skill_reason(span: Span) -> Optional[str]:
    """The decision's reason, else the filter's (a skipped sentence has no decision to make)."""
    if not len(span):
        return None
    decision = (span.doc._.get(DECISIONS_KEY) or {}).get(str(span.start))
    if decision and decision.get("reason"):
        return decision["reason"]
    if is_sentence(span):
        return skipped_sentences(span.doc).get(span.start)
    return None


def _doc_sentence_skills(doc: Doc) -> Dict[int, List[SkillPrediction]]:
    raw = doc._.get(RAW_KEY) or {}
    return {int(start): _rebuild(doc, rows) for start, rows in raw.items()}


def _doc_skills(doc: Doc) -> List[SkillPrediction]:
    return aggregate(_doc_sentence_skills(doc).values())


def _span_skills(span: Span) -> List[SkillPrediction]:
    raw = span.doc._.get(RAW_KEY) or {}
    key = _sentence_key(span)
    if key is not None:
        return _rebuild(span.doc, raw[key])
    # Not a sentence: the predictions of the sentences it covers, aggregated like an ad.
    inner = [_rebuild(span.doc, rows) for start, rows in raw.items() if span.start <= int(start) < span.end]
    return aggregate(inner)


def implied_scale(has_literal_match: bool, explicit_weight: float) -> float:
    """The factor the ranker's fusion applies to an implied skill's cosine: ``1 - explicit_weight`` in a sentence
    with a literal match, else 1 (``ranker.py``'s module docstring). One home for the rule, because the decider and
    the reranker undo it (divide by it when it is not 0) to compare implied skills across sentences."""
    return 1.0 - explicit_weight if has_literal_match else 1.0


def register_extensions() -> None:
    """Idempotent: every component calls it, so the extensions exist whichever component runs."""
    if not Doc.has_extension(RAW_KEY):
        Doc.set_extension(RAW_KEY, default=None)
    if not Doc.has_extension("esco_skills"):
        Doc.set_extension("esco_skills", getter=_doc_skills)
    if not Doc.has_extension("esco_sentence_skills"):
        Doc.set_extension("esco_sentence_skills", getter=_doc_sentence_skills)
    if not Span.has_extension("esco_skills"):
        Span.set_extension("esco_skills", getter=_span_skills)
    if not Doc.has_extension(SKIPPED_KEY):
        Doc.set_extension(SKIPPED_KEY, default=None)
    if not Doc.has_extension(DECISIONS_KEY):
        Doc.set_extension(DECISIONS_KEY, default=None)
    if not Doc.has_extension("esco_skill_set"):
        Doc.set_extension("esco_skill_set", getter=_doc_skill_set)
    if not Span.has_extension("esco_skill_set"):
        Span.set_extension("esco_skill_set", getter=_span_skill_set)
    if not Span.has_extension("esco_no_skill_reason"):
        Span.set_extension("esco_no_skill_reason", getter=_span_no_skill_reason)


def aggregate(per_sentence: Iterable[Sequence[SkillPrediction]]) -> List[SkillPrediction]:
    """Combine sentence predictions into one ranked list (see the module docstring for the rule)."""
    best: Dict[str, SkillPrediction] = {}
    counts: Dict[str, int] = defaultdict(int)
    for predictions in per_sentence:
        for pred in predictions:
            counts[pred.uri] += 1
            current = best.get(pred.uri)
            if current is None:
                best[pred.uri] = replace(pred, spans=list(pred.spans), evidence=list(pred.evidence))
            else:
                current.score = max(current.score, pred.score)
                current.explicit = current.explicit or pred.explicit
                current.spans.extend(pred.spans)
                current.evidence.extend(pred.evidence)
                if pred.probability is not None:
                    current.probability = max(current.probability or 0.0, pred.probability)
                if pred.label_score is not None:
                    current.label_score = max(current.label_score or 0.0, pred.label_score)
    return sorted(best.values(), key=lambda p: (-p.score, -counts[p.uri], not p.explicit, p.label))


def set_predictions(doc: Doc, per_sentence: Dict[int, List[SkillPrediction]]) -> None:
    """Store sentence predictions (keyed by the sentence's first token) in serializable form."""
    doc._.set(RAW_KEY, {
        str(start): [[p.uri, p.label, float(p.score), bool(p.explicit), [[s.start, s.end] for s in p.spans]]
                     + ([float(p.label_score)] if p.label_score is not None else []) for p in preds]
        for start, preds in per_sentence.items()
    })


def set_decisions(doc: Doc, decisions: Dict[int, Tuple[List[SkillPrediction], Optional[str]]]) -> None:
    """Store each sentence's decided set (predictions with ``probability`` and ``evidence``) and, for an empty
    set, the reason; keyed like :func:`set_predictions`."""
    doc._.set(DECISIONS_KEY, {
        str(start): {"skills": [[p.uri, float(p.probability if p.probability is not None else 1.0),
                                 [[e.start_char, e.end_char] for e in p.evidence]] for p in preds],
                     "reason": reason}
        for start, (preds, reason) in decisions.items()
    })


# The ranker's word pieces, handed to the decider: ``{sentence start token: (char offsets into sent.text [T, 2],
# unit vectors [T, D])}``. A private ``user_data`` entry, not an extension, and never part of the output: the
# decider takes it (``take_piece_vectors``) before any doc leaves the pipeline, so ``to_bytes`` and
# ``nlp.pipe(n_process=...)`` carry no arrays.
PIECES_KEY = "_esco_ranker_pieces"
TokenEncoding = Tuple[np.ndarray, np.ndarray]  # word-piece char offsets [T, 2], unit vectors [T, D]


def keep_piece_vectors(doc: Doc, pieces: Dict[int, TokenEncoding]) -> None:
    doc.user_data[PIECES_KEY] = pieces


def take_piece_vectors(doc: Doc) -> Dict[int, TokenEncoding]:
    """What the ranker left for this doc (``{}`` when nothing), removed from it."""
    return doc.user_data.pop(PIECES_KEY, None) or {}
