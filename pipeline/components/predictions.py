"""The output contract shared by the matcher and the ranker, and how sentence scores become ad scores.

- ``doc.spans["esco_skills"]``: explicit mentions (``kb_id_`` = ESCO URI, ``label_`` = ESCO skill type).
- ``doc._.esco_skills``: the ad's ranked ``SkillPrediction`` list.
- ``sent._.esco_skills``: the same for one sentence (any span that is a sentence of the doc).

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
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Sequence

from spacy.tokens import Doc, Span

SPANS_KEY = "esco_skills"
RAW_KEY = "esco_predictions"  # Doc extension holding {sentence start token: [[uri, label, score, explicit, [[start, end], ...]], ...]}


@dataclass
class SkillPrediction:
    uri: str
    label: str
    score: float
    explicit: bool = False
    spans: List[Span] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "uri": self.uri,
            "label": self.label,
            "score": round(float(self.score), 4),
            "explicit": self.explicit,
            "spans": [{"start_char": s.start_char, "end_char": s.end_char, "text": s.text} for s in self.spans],
        }


def _rebuild(doc: Doc, rows: Sequence[list]) -> List[SkillPrediction]:
    return [SkillPrediction(uri, label, score, explicit, [doc[s:e] for s, e in spans])
            for uri, label, score, explicit, spans in rows]


def _doc_sentence_skills(doc: Doc) -> Dict[int, List[SkillPrediction]]:
    raw = doc._.get(RAW_KEY) or {}
    return {int(start): _rebuild(doc, rows) for start, rows in raw.items()}


def _doc_skills(doc: Doc) -> List[SkillPrediction]:
    return aggregate(_doc_sentence_skills(doc).values())


def _span_skills(span: Span) -> List[SkillPrediction]:
    raw = span.doc._.get(RAW_KEY) or {}
    key = str(span.start)
    if key in raw and len(span) and span.end == span.doc[span.start].sent.end:
        return _rebuild(span.doc, raw[key])
    # Not a sentence: the predictions of the sentences it covers, aggregated like an ad.
    inner = [_rebuild(span.doc, rows) for start, rows in raw.items() if span.start <= int(start) < span.end]
    return aggregate(inner)


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


def aggregate(per_sentence: Iterable[Sequence[SkillPrediction]]) -> List[SkillPrediction]:
    """Combine sentence predictions into one ranked list (see the module docstring for the rule)."""
    best: Dict[str, SkillPrediction] = {}
    counts: Dict[str, int] = defaultdict(int)
    for predictions in per_sentence:
        for pred in predictions:
            counts[pred.uri] += 1
            current = best.get(pred.uri)
            if current is None:
                best[pred.uri] = SkillPrediction(pred.uri, pred.label, pred.score, pred.explicit, list(pred.spans))
            else:
                current.score = max(current.score, pred.score)
                current.explicit = current.explicit or pred.explicit
                current.spans.extend(pred.spans)
    return sorted(best.values(), key=lambda p: (-p.score, -counts[p.uri], not p.explicit, p.label))


def set_predictions(doc: Doc, per_sentence: Dict[int, List[SkillPrediction]]) -> None:
    """Store sentence predictions (keyed by the sentence's first token) in serializable form."""
    doc._.set(RAW_KEY, {
        str(start): [[p.uri, p.label, float(p.score), bool(p.explicit), [[s.start, s.end] for s in p.spans]]
                     for p in preds]
        for start, preds in per_sentence.items()
    })
