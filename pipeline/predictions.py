"""The output contract shared by the matcher and the ranker, and how sentence scores become ad scores.

- ``doc.spans["esco_skills"]``: explicit mentions (``kb_id_`` = ESCO URI, ``label_`` = ESCO skill type).
- ``doc._.esco_skills``: the ad's ranked ``SkillPrediction`` list.
- ``sent._.esco_skills``: the same for one sentence (any span that is a sentence of the doc).

Aggregation rule (stated once, tested): a skill's ad score is the maximum of its sentence scores; ties are
broken by the number of sentences that predict it, then by explicitness. Max, not mean, because one sentence
that clearly asks for a skill is enough — an ad does not ask for a skill less because it also lists others.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

from spacy.tokens import Doc, Span

SPANS_KEY = "esco_skills"


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


def _sentence_skills(span: Span) -> List[SkillPrediction]:
    by_start: Dict[int, List[SkillPrediction]] = span.doc._.esco_sentence_skills or {}
    if span.start in by_start and span.end == _sentence_end(span):
        return by_start[span.start]
    # Not a sentence: the predictions of the sentences it covers, aggregated like an ad.
    inner = [preds for start, preds in by_start.items() if span.start <= start < span.end]
    return aggregate(inner)


def _sentence_end(span: Span) -> int:
    return span.doc[span.start].sent.end


def register_extensions() -> None:
    """Idempotent: every component calls it, so the extensions exist whichever component runs."""
    if not Doc.has_extension("esco_skills"):
        Doc.set_extension("esco_skills", default=None)
    if not Doc.has_extension("esco_sentence_skills"):
        Doc.set_extension("esco_sentence_skills", default=None)
    if not Span.has_extension("esco_skills"):
        Span.set_extension("esco_skills", getter=_sentence_skills)


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
    """Write sentence predictions (keyed by the sentence's first token) and their ad aggregate."""
    doc._.esco_sentence_skills = per_sentence
    doc._.esco_skills = aggregate(per_sentence.values())


def doc_skills(doc: Doc) -> List[SkillPrediction]:
    return doc._.esco_skills or []


def sentence_of(doc: Doc, token_index: int) -> Optional[Span]:
    if not len(doc):
        return None
    return doc[token_index].sent
