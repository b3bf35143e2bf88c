"""Where positive (text → skill) pairs come from — pluggable like the negatives.

Job ads mention only ~1,200 of the 13,896 skills literally, so a ranker trained on the corpus alone can forget
the rest. ESCO's own text is weak supervision for every skill: an alternative label names its skill, a
description describes it. Each source is a registered function named in ``[training.supervision.<name>]``::

    [training.supervision.corpus]
    @supervision_sources = "esco.corpus_pairs.v1"
    max_pairs_per_skill = 50
"""

import random
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple

from spacy.util import registry

from pipeline.errors import ConfigError
from pipeline.esco.heldout import skills_by_text, training_texts
from pipeline.esco.taxonomy import EscoTaxonomy, TaxonomyWarning
from pipeline.settings import checked
from pipeline.training.negatives import Count, PositiveCount

SECTION = "training.supervision"
Split = Literal["train", "dev"]  # the corpus splits that hold matched sentences (build.SPLITS minus "unmatched")

if not hasattr(registry, "supervision_sources"):
    registry.create("supervision_sources", entry_points=True)


@dataclass(frozen=True)
class TrainingPair:
    text: str
    skill: int  # index of the positive skill
    gold: frozenset  # every skill index that is right for this text (never used as a negative)
    mentions: Tuple[Tuple[int, int, str], ...] = ()  # (start, end, uri) character offsets the trainer may mask
    source: str = ""


@dataclass
class SupervisionContext:
    taxonomy: EscoTaxonomy
    uris: Sequence[str]
    corpus_dir: Optional[Path]
    rng: random.Random

    def __post_init__(self) -> None:
        self.position = {uri: i for i, uri in enumerate(self.uris)}


class PairSource:
    name = "base"

    def pairs(self, ctx: SupervisionContext) -> List[TrainingPair]:
        raise NotImplementedError


def _cap(pairs: List[TrainingPair], max_pairs: int, rng: random.Random) -> List[TrainingPair]:
    rng.shuffle(pairs)
    return pairs[:max_pairs] if max_pairs else pairs


class CorpusPairs(PairSource):
    """(sentence, mentioned skill) from the distant-supervision corpus, frequent skills capped."""

    name = "corpus"

    @checked(SECTION)
    def __init__(self, split: Split = "train", max_pairs_per_skill: Count = 50,
                 max_pairs: Count = 0):
        self.split, self.max_pairs_per_skill, self.max_pairs = split, max_pairs_per_skill, max_pairs

    def pairs(self, ctx: SupervisionContext) -> List[TrainingPair]:
        from pipeline.corpus.build import load_corpus

        if ctx.corpus_dir is None:
            raise ConfigError("[training.supervision.corpus] needs a corpus folder (--corpus / CORPUS_DIR)")
        data = load_corpus(ctx.corpus_dir)
        if self.split not in data:
            raise ConfigError(f"[training.supervision.corpus] split '{self.split}' not in {list(data)}")
        by_skill: Dict[int, List[TrainingPair]] = defaultdict(list)
        for row in data[self.split]:
            gold = frozenset(ctx.position[u] for u in row["uris"] if u in ctx.position)
            spans = tuple((m["start"], m["end"], m["uri"]) for m in row["mentions"])
            for uri in row["uris"]:
                if uri in ctx.position:
                    by_skill[ctx.position[uri]].append(TrainingPair(row["text"], ctx.position[uri], gold, spans,
                                                                    self.name))
        pairs: List[TrainingPair] = []
        for skill_pairs in by_skill.values():
            pairs.extend(_cap(skill_pairs, self.max_pairs_per_skill, ctx.rng))
        return _cap(pairs, self.max_pairs, ctx.rng)


def esco_text_pairs(ctx: SupervisionContext, kind: str, per_skill: int, name: str,
                    max_chars: int = 0) -> List[TrainingPair]:
    """Up to ``per_skill`` texts of one kind per skill, the held-out evaluation slice never among them.

    A text that is a label of several skills is gold for each of them (never one's negative)."""
    by_skill: Dict[str, List[str]] = defaultdict(list)
    for item in training_texts(ctx.taxonomy):
        if item.kind == kind:
            by_skill[item.uri].append(item.text[:max_chars] if max_chars else item.text)
    shared = skills_by_text(ctx.taxonomy)
    pairs = []
    for uri, texts in by_skill.items():
        idx = ctx.position[uri]
        for text in ctx.rng.sample(texts, min(per_skill, len(texts))):
            gold = frozenset({idx} | {ctx.position[u] for u in shared.get(text.lower(), ()) if u in ctx.position})
            pairs.append(TrainingPair(text, idx, gold, (), name))
    return pairs


class AltLabelPairs(PairSource):
    """(alternative label, its skill): teaches every skill's vocabulary, including the 12k no ad mentions."""

    name = "alt_labels"

    @checked(SECTION)
    def __init__(self, per_skill: PositiveCount = 1, max_pairs: Count = 5000):
        self.per_skill, self.max_pairs = per_skill, max_pairs

    def pairs(self, ctx: SupervisionContext) -> List[TrainingPair]:
        return _cap(esco_text_pairs(ctx, "alt_label", self.per_skill, self.name), self.max_pairs, ctx.rng)


class DescriptionPairs(PairSource):
    """(a description sentence, its skill): how a skill is described rather than named — the closest ESCO text
    to an implied mention."""

    name = "descriptions"

    @checked(SECTION)
    def __init__(self, max_pairs: Count = 5000, max_chars: PositiveCount = 300, per_skill: PositiveCount = 1):
        self.max_pairs, self.max_chars, self.per_skill = max_pairs, max_chars, per_skill

    def pairs(self, ctx: SupervisionContext) -> List[TrainingPair]:
        if not ctx.taxonomy.has_descriptions:
            warnings.warn(f"[{SECTION}] esco.description_pairs.v1 is off: the taxonomy '{ctx.taxonomy.name}' has no "
                          "descriptions.", TaxonomyWarning, stacklevel=2)
            return []
        pairs = esco_text_pairs(ctx, "description", self.per_skill, self.name, self.max_chars)
        return _cap(pairs, self.max_pairs, ctx.rng)


# The registered functions are the classes themselves (as the negative samplers are): each key's type, bound and
# default is written once, in the constructor; confection fills and type-checks from it, ``checked`` the bounds.
registry.supervision_sources.register("esco.corpus_pairs.v1", func=CorpusPairs)
registry.supervision_sources.register("esco.alt_label_pairs.v1", func=AltLabelPairs)
registry.supervision_sources.register("esco.description_pairs.v1", func=DescriptionPairs)


def collect_pairs(sources: Dict[str, PairSource], ctx: SupervisionContext) -> Tuple[List[TrainingPair], Dict[str, int]]:
    """All sources' pairs, shuffled together, with a count per source for the training log."""
    pairs: List[TrainingPair] = []
    counts: Dict[str, int] = {}
    for key, source in sources.items():
        if not isinstance(source, PairSource):
            raise ConfigError(f"[training.supervision.{key}] is not a supervision source: {source!r}")
        got = source.pairs(ctx)
        counts[key] = len(got)
        pairs.extend(got)
    if not pairs:
        raise ConfigError("[training.supervision] produced no training pairs: is the corpus empty?")
    ctx.rng.shuffle(pairs)
    return pairs, counts
