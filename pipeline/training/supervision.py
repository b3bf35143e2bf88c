"""Where positive (text → skill) pairs come from — pluggable like the negatives.

Job ads mention only ~1,200 of the 13,896 skills literally, so a ranker trained on the corpus alone can forget
the rest. ESCO's own text is weak supervision for every skill: an alternative label names its skill, a
description describes it, and an occupation's essential skills are what its ads ask for. Each source is a
registered function named in ``[training.supervision.<name>]``::

    [training.supervision.corpus]
    @supervision_sources = "esco.corpus_pairs.v1"
    max_pairs_per_skill = 50
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np

from spacy.util import registry

from pipeline.errors import ConfigError
from pipeline.esco.heldout import skills_by_text, training_texts
from pipeline.esco.taxonomy import EscoTaxonomy
from pipeline.constraints import NonNegativeFloat, NonNegativeInt, PositiveInt, Probability, checked

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
    ranker: Optional[Any] = None  # the pipeline's SkillRanker before training, for sources that label text

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
    def __init__(self, split: Split = "train", max_pairs_per_skill: NonNegativeInt = 50,
                 max_pairs: NonNegativeInt = 0):
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
    def __init__(self, per_skill: PositiveInt = 1, max_pairs: NonNegativeInt = 5000):
        self.per_skill, self.max_pairs = per_skill, max_pairs

    def pairs(self, ctx: SupervisionContext) -> List[TrainingPair]:
        return _cap(esco_text_pairs(ctx, "alt_label", self.per_skill, self.name), self.max_pairs, ctx.rng)


class DescriptionPairs(PairSource):
    """(a description sentence, its skill): how a skill is described rather than named — the closest ESCO text
    to an implied mention."""

    name = "descriptions"

    @checked(SECTION)
    def __init__(self, max_pairs: NonNegativeInt = 5000, max_chars: PositiveInt = 300, per_skill: PositiveInt = 1):
        self.max_pairs, self.max_chars, self.per_skill = max_pairs, max_chars, per_skill

    def pairs(self, ctx: SupervisionContext) -> List[TrainingPair]:
        pairs = esco_text_pairs(ctx, "description", self.per_skill, self.name, self.max_chars)
        return _cap(pairs, self.max_pairs, ctx.rng)


class OccupationPairs(PairSource):
    """(occupation label, one of its essential skills); every essential skill is gold for that text."""

    name = "occupations"

    @checked(SECTION)
    def __init__(self, per_occupation: PositiveInt = 2, max_pairs: NonNegativeInt = 5000):
        self.per_occupation, self.max_pairs = per_occupation, max_pairs

    def pairs(self, ctx: SupervisionContext) -> List[TrainingPair]:
        if not ctx.taxonomy.occupations:
            raise ConfigError("[training.supervision.occupations] the ESCO export has no occupation relations "
                              "(occupations_en.csv, occupationSkillRelations.csv)")
        pairs = []
        for occupation in ctx.taxonomy.occupations.values():
            skills = [ctx.position[u] for u in occupation.essential_skills if u in ctx.position]
            gold = frozenset(skills)
            for idx in ctx.rng.sample(skills, min(self.per_occupation, len(skills))):
                pairs.append(TrainingPair(occupation.preferred_label, idx, gold, (), self.name))
        return _cap(pairs, self.max_pairs, ctx.rng)


class SelfTrainingPairs(PairSource):
    """(an ad sentence no ESCO label matches, the skill the untrained ranker is sure of): supervision for the
    implied mentions that literal matching can never label.

    A pseudo-label is kept only when the label view (the ranker's index of ESCO labels) is confident
    (``min_score``) and unambiguous (``min_margin`` over the runner-up), and a second view agrees: re-ranking
    the label view's top ``agreement_k`` skills by their ESCO descriptions keeps the same first skill
    (``agreement_k`` ≤ 1: no second view). Sentences of dev-split ads are never used, so the masked-mention dev
    signal stays unseen. Frequent pseudo-labels are capped per skill like corpus pairs.

    ``min_gate`` > 0 first drops the sentences that ask for no skill: half the pseudo-labels of a hand-checked
    sample were wrong, two thirds of those on team, company and benefit lines, where the ranker's best skill is
    confident and meaningless. The filter is the decision component's gate (``evaluation/calibration.py``)
    fitted here on the same corpus — corpus sentences with a literal match (half of them with the mention
    deleted) against boilerplate lines seen in ``gate_min_ads`` ads — so it needs the corpus'
    ``boilerplate.jsonl`` and no calibrated pipeline.
    """

    name = "self_training"

    @checked(SECTION)
    def __init__(self, max_sentences: PositiveInt = 20000, min_score: Probability = 0.55,
                 min_margin: NonNegativeFloat = 0.02, agreement_k: NonNegativeInt = 3,
                 max_pairs_per_skill: NonNegativeInt = 20, max_pairs: NonNegativeInt = 0,
                 min_chars: NonNegativeInt = 30, min_gate: Probability = 0.0, gate_min_ads: PositiveInt = 20,
                 gate_positives: PositiveInt = 4000):
        self.max_sentences, self.min_score, self.min_margin = max_sentences, min_score, min_margin
        self.agreement_k, self.max_pairs_per_skill, self.max_pairs = agreement_k, max_pairs_per_skill, max_pairs
        self.min_chars, self.min_gate = min_chars, min_gate
        self.gate_min_ads, self.gate_positives = gate_min_ads, gate_positives

    def sentences(self, ctx: SupervisionContext) -> List[str]:
        """A seeded sample of unmatched sentences from train-split ads."""
        from pipeline.corpus.build import load_corpus

        if ctx.corpus_dir is None:
            raise ConfigError(f"[{SECTION}.{self.name}] needs a corpus folder (--corpus / CORPUS_DIR)")
        data = load_corpus(ctx.corpus_dir)
        if "unmatched" not in data:
            raise ConfigError(f"[{SECTION}.{self.name}] the corpus at '{ctx.corpus_dir}' has no 'unmatched' split")
        dev_ads = set(data["dev"]["ad_id"]) if "dev" in data else set()
        unmatched = data["unmatched"]
        order = list(range(len(unmatched)))
        ctx.rng.shuffle(order)
        texts: List[str] = []
        for start in range(0, len(order), 4 * self.max_sentences):  # read in slices: the split is ~200k rows
            for row in unmatched.select(order[start : start + 4 * self.max_sentences]):
                if row["ad_id"] not in dev_ads and len(row["text"]) >= self.min_chars:
                    texts.append(row["text"])
            if len(texts) >= self.max_sentences:
                break
        return list(dict.fromkeys(texts))[: self.max_sentences]

    def label(self, ctx: SupervisionContext, texts: Sequence[str]) -> List[Tuple[str, int]]:
        """(text, skill index) for the texts whose pseudo-label passes the confidence and agreement checks."""
        labels = self.ranker(ctx).score_texts(texts)  # [S, n_skills]
        top2 = np.argsort(-labels, axis=1)[:, :2]
        rows = np.arange(len(texts))
        best, runner_up = labels[rows, top2[:, 0]], labels[rows, top2[:, 1]]
        keep = np.flatnonzero((best >= self.min_score) & (best - runner_up >= self.min_margin))
        if self.agreement_k > 1 and len(keep):
            keep = keep[self._description_agrees(ctx, [texts[i] for i in keep], labels[keep])]
        return [(texts[i], int(top2[i, 0])) for i in keep]

    def _description_agrees(self, ctx: SupervisionContext, texts: Sequence[str], labels: np.ndarray) -> np.ndarray:
        """Whether the description view, re-ranking the label view's top ``agreement_k`` skills of each text,
        picks the label view's first. Only those candidates' descriptions are embedded."""
        candidates = np.argsort(-labels, axis=1)[:, : self.agreement_k]  # [S, k], the label view's first in col 0
        needed = np.unique(candidates)
        descriptions = [ctx.taxonomy.skills[ctx.uris[i]].description or ctx.taxonomy.skills[ctx.uris[i]].preferred_label
                        for i in needed]
        encoder = ctx.ranker.encoder
        skill_vectors = encoder.encode(descriptions, max_length=64)  # [n_needed, D]
        row_of = {int(skill): row for row, skill in enumerate(needed)}
        sentence_vectors = encoder.encode(list(texts))  # [S, D]
        agrees = np.zeros(len(texts), dtype=bool)
        for i, row in enumerate(candidates):
            sims = skill_vectors[[row_of[int(skill)] for skill in row]] @ sentence_vectors[i]  # [k]
            agrees[i] = int(np.argmax(sims)) == 0
        return agrees

    def ranker(self, ctx: SupervisionContext):
        ranker = ctx.ranker
        if ranker is None or ranker.index is None:
            raise ConfigError(f"[{SECTION}.{self.name}] needs the pipeline's initialized ranker to label sentences")
        if list(ranker.index.uris) != list(ctx.uris):
            raise ConfigError(f"[{SECTION}.{self.name}] the ranker's index does not hold the training skills")
        return ranker

    def gated(self, ctx: SupervisionContext, texts: Sequence[str]) -> List[str]:
        """The texts the gate fitted on this corpus says ask for a skill (all of them when ``min_gate`` is 0)."""
        from pipeline.evaluation.calibration import (CalibrationSettings, boilerplate_negatives, corpus_sentences,
                                                     fit_gate, gate_inputs)
        from pipeline.io.boilerplate import BOILERPLATE_FILE

        if not self.min_gate or not texts:
            return list(texts)
        if not (Path(ctx.corpus_dir) / BOILERPLATE_FILE).is_file():
            raise ConfigError(f"[{SECTION}.{self.name}] min_gate needs '{Path(ctx.corpus_dir) / BOILERPLATE_FILE}': "
                              "build the corpus again (make corpus), or set min_gate = 0")
        encoder = self.ranker(ctx).encoder
        settings = CalibrationSettings(min_ads=self.gate_min_ads, gate_positives=self.gate_positives)
        negatives = boilerplate_negatives(ctx.corpus_dir, settings)
        positives = corpus_sentences(ctx.corpus_dir, "train", settings.gate_positives, settings.seed,
                                     settings.masked_share)
        gate, _ = fit_gate(encoder, positives, negatives.fit + negatives.held_back, l2=settings.gate_l2, folds=0)
        keep = gate.probability(gate_inputs(encoder, texts)) >= self.min_gate
        return [text for text, kept in zip(texts, keep) if kept]

    def pairs(self, ctx: SupervisionContext) -> List[TrainingPair]:
        by_skill: Dict[int, List[TrainingPair]] = defaultdict(list)
        for text, skill in self.label(ctx, self.gated(ctx, self.sentences(ctx))):
            by_skill[skill].append(TrainingPair(text, skill, frozenset({skill}), (), self.name))
        pairs: List[TrainingPair] = []
        for skill_pairs in by_skill.values():
            pairs.extend(_cap(skill_pairs, self.max_pairs_per_skill, ctx.rng))
        return _cap(pairs, self.max_pairs, ctx.rng)


# Same constrained hints as the classes: confection checks base types and the split's Literal while resolving,
# the classes' ``checked`` constructors check the bounds.
@registry.supervision_sources("esco.corpus_pairs.v1")
def create_corpus_pairs(split: Split = "train", max_pairs_per_skill: NonNegativeInt = 50,
                        max_pairs: NonNegativeInt = 0) -> PairSource:
    return CorpusPairs(split, max_pairs_per_skill, max_pairs)


@registry.supervision_sources("esco.alt_label_pairs.v1")
def create_alt_label_pairs(per_skill: PositiveInt = 1, max_pairs: NonNegativeInt = 5000) -> PairSource:
    return AltLabelPairs(per_skill, max_pairs)


@registry.supervision_sources("esco.description_pairs.v1")
def create_description_pairs(max_pairs: NonNegativeInt = 5000, max_chars: PositiveInt = 300,
                             per_skill: PositiveInt = 1) -> PairSource:
    return DescriptionPairs(max_pairs, max_chars, per_skill)


@registry.supervision_sources("esco.occupation_pairs.v1")
def create_occupation_pairs(per_occupation: PositiveInt = 2, max_pairs: NonNegativeInt = 5000) -> PairSource:
    return OccupationPairs(per_occupation, max_pairs)


@registry.supervision_sources("esco.self_training_pairs.v1")
def create_self_training_pairs(max_sentences: PositiveInt = 20000, min_score: Probability = 0.55,
                               min_margin: NonNegativeFloat = 0.02, agreement_k: NonNegativeInt = 3,
                               max_pairs_per_skill: NonNegativeInt = 20, max_pairs: NonNegativeInt = 0,
                               min_chars: NonNegativeInt = 30, min_gate: Probability = 0.0,
                               gate_min_ads: PositiveInt = 20, gate_positives: PositiveInt = 4000) -> PairSource:
    return SelfTrainingPairs(max_sentences, min_score, min_margin, agreement_k, max_pairs_per_skill, max_pairs,
                             min_chars, min_gate, gate_min_ads, gate_positives)


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
