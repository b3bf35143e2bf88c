"""A fixed slice of ESCO's own text (alternative labels, description sentences) that training never sees.

It is the *ESCO paraphrase dev* signal: "does the ranker map a way of saying a skill it was not trained on to that
skill?" — measured for skills the job-ad corpus names and for the ~12,000 it never names (where forgetting shows
first). The slice is chosen by a stable hash of (URI, text), so it is the same on every machine, for every seed
and every ESCO copy, and every supervision source that reads ESCO text skips it (``is_held_out``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Set

from pipeline.esco.taxonomy import EscoTaxonomy, Skill

HELD_OUT_PERCENT = 10
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


@dataclass(frozen=True)
class SkillText:
    """One way ESCO itself says a skill: ``kind`` is "alt_label" or "description"."""

    text: str
    uri: str
    kind: str


def is_held_out(uri: str, text: str, percent: int = HELD_OUT_PERCENT) -> bool:
    """True for the fixed ``percent`` % of (skill, text) pairs reserved for evaluation."""
    digest = hashlib.blake2b(f"{uri}\x1f{text.strip().lower()}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100 < percent


def description_sentences(description: str, min_words: int = 4) -> List[str]:
    """A description's sentences, the short fragments (headings, "e.g.") dropped."""
    return [s.strip() for s in _SENTENCE_END.split(description or "") if len(s.split()) >= min_words]


def skill_texts(skill: Skill) -> Iterator[SkillText]:
    """Every alternative label (other than the preferred one) and every description sentence of a skill."""
    preferred = skill.preferred_label.strip().lower()
    for label in dict.fromkeys(skill.alt_labels):
        if label.strip() and label.strip().lower() != preferred:
            yield SkillText(label.strip(), skill.uri, "alt_label")
    for sentence in description_sentences(skill.description):
        yield SkillText(sentence, skill.uri, "description")


def training_texts(taxonomy: EscoTaxonomy) -> Iterator[SkillText]:
    """ESCO text that supervision sources may use: everything but the held-out slice."""
    for skill in taxonomy.skills.values():
        for item in skill_texts(skill):
            if not is_held_out(item.uri, item.text):
                yield item


def held_out_texts(taxonomy: EscoTaxonomy) -> List[SkillText]:
    """The held-out slice, in taxonomy order (deterministic)."""
    return [item for skill in taxonomy.skills.values() for item in skill_texts(skill)
            if is_held_out(item.uri, item.text)]


def skills_by_text(taxonomy: EscoTaxonomy) -> Dict[str, Set[str]]:
    """Lower-cased label → every skill that has it (a label shared by skills makes each of them right)."""
    out: Dict[str, Set[str]] = {}
    for skill in taxonomy.skills.values():
        for label in skill.labels:
            out.setdefault(label.strip().lower(), set()).add(skill.uri)
    return out
