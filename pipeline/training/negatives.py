"""Negative sampling strategies for the contrastive ranker — one registered function per strategy.

A strategy is named in the training config::

    [training.negatives]
    @negative_samplers = "esco.taxonomy_negatives.v1"
    num_negatives = 4

Each returns a ``NegativeSampler``: given a batch (positives, every gold skill of each sentence, and — for
samplers that need it — the current embeddings), it returns skill indices per example that are never a gold
skill of that example. Other packages can add strategies through the ``thinc_negative_samplers`` entry point.

The registered functions are the sampler classes themselves: a key's type, bounds and default are written once,
in the constructor's signature. Confection reads it to fill a config's missing keys and check base types, and
``checked`` enforces the bounds (which confection ignores). No ``from __future__ import annotations`` here:
confection reads the constructors' hints as objects.
"""

import random
from dataclasses import dataclass
from typing import Annotated, Any, Dict, List, Optional, Sequence

import numpy as np
from spacy.util import registry

from pipeline.errors import ConfigError
from pipeline.esco.taxonomy import EscoTaxonomy
from pipeline.settings import Field, checked

SECTION = "training.negatives"
Count = Annotated[int, Field(ge=0)]
PositiveCount = Annotated[int, Field(ge=1)]
RelativeScore = Annotated[float, Field(gt=0.0, le=1.0)]

if not hasattr(registry, "negative_samplers"):
    registry.create("negative_samplers", entry_points=True)


@dataclass
class SamplingContext:
    """What a sampler may look at for one training batch.

    positives[i]: skill index of example i's positive; gold[i]: every gold skill index of its sentence.
    sentence_vectors: [B, D] detached sentence embeddings of this step (for hard negatives);
    skill_vectors: [n_skills, D] the skill index as of the last refresh (None if not needed/available).
    """

    positives: Sequence[int]
    gold: Sequence[frozenset]
    rng: random.Random
    sentence_vectors: Optional[np.ndarray] = None
    skill_vectors: Optional[np.ndarray] = None


class NegativeSampler:
    """Base class: subclasses implement ``sample``; ``needs_index`` asks the trainer for skill embeddings."""

    name = "base"
    needs_index = False
    section = SECTION  # the config block it was built from (a mixture names its samplers' blocks)

    def bind(self, taxonomy: EscoTaxonomy, uris: Sequence[str]) -> None:
        """Called once before training with the skill order used for indices."""
        self.taxonomy = taxonomy
        self.uris = list(uris)
        self.position = {uri: i for i, uri in enumerate(self.uris)}

    def sample(self, ctx: SamplingContext) -> List[List[int]]:
        raise NotImplementedError

    def describe(self) -> Dict[str, object]:
        return {"strategy": self.name}


def _fill_random(chosen: List[int], n: int, n_skills: int, forbidden: frozenset, rng: random.Random) -> List[int]:
    """Top up with uniform random skills (never gold, never repeated)."""
    taken = set(chosen)
    while len(chosen) < n:
        candidate = rng.randrange(n_skills)
        if candidate not in forbidden and candidate not in taken:
            chosen.append(candidate)
            taken.add(candidate)
    return chosen


class RandomNegatives(NegativeSampler):
    name = "random"

    @checked(SECTION)
    def __init__(self, num_negatives: Count = 4):
        self.num_negatives = num_negatives

    def sample(self, ctx: SamplingContext) -> List[List[int]]:
        return [_fill_random([], self.num_negatives, len(self.uris), gold, ctx.rng) for gold in ctx.gold]

    def describe(self) -> Dict[str, object]:
        return {"strategy": self.name, "num_negatives": self.num_negatives}


class InBatchNegatives(NegativeSampler):
    """The other examples' positives (minus this sentence's gold skills): free, already embedded."""

    name = "in_batch"

    @checked(SECTION)
    def __init__(self, max_negatives: Count = 0):
        self.max_negatives = max_negatives  # 0 = all

    def sample(self, ctx: SamplingContext) -> List[List[int]]:
        out = []
        unique = list(dict.fromkeys(ctx.positives))
        for pos, gold in zip(ctx.positives, ctx.gold):
            others = [p for p in unique if p != pos and p not in gold]
            if self.max_negatives and len(others) > self.max_negatives:
                others = ctx.rng.sample(others, self.max_negatives)
            out.append(others)
        return out

    def describe(self) -> Dict[str, object]:
        return {"strategy": self.name, "max_negatives": self.max_negatives}


class TaxonomyNegatives(NegativeSampler):
    """Skills sharing a broader ESCO concept with the positive; further up the hierarchy when too few."""

    name = "taxonomy"

    @checked(SECTION)
    def __init__(self, num_negatives: Count = 4, max_levels: Count = 3):
        self.num_negatives, self.max_levels = num_negatives, max_levels
        self._cache: Dict[int, List[int]] = {}

    def bind(self, taxonomy: EscoTaxonomy, uris: Sequence[str]) -> None:
        """Refuses a taxonomy without a hierarchy (unless asked for no negatives): every draw would come back
        empty, and training would go on with fewer negatives than the config says, unnoticed."""
        if self.num_negatives and not taxonomy.has_hierarchy:
            raise ConfigError(
                f"[{self.section}] esco.taxonomy_negatives.v1 draws its negatives from the taxonomy's hierarchy, "
                f"and '{taxonomy.name}' has none (no concept has a broader one). Use esco.in_batch_negatives.v1, "
                "esco.hard_negatives.v1 or esco.random_negatives.v1 there instead, or num_negatives = 0 in a "
                "mixture: configs/flat.cfg is the default recipe so (make train CONFIG=configs/flat.cfg).")
        super().bind(taxonomy, uris)

    def relatives(self, skill: int) -> List[int]:
        if skill not in self._cache:
            uris = self.taxonomy.relatives(self.uris[skill], min_count=self.num_negatives, max_levels=self.max_levels)
            self._cache[skill] = [self.position[u] for u in uris if u in self.position]
        return self._cache[skill]

    def sample(self, ctx: SamplingContext) -> List[List[int]]:
        out = []
        for pos, gold in zip(ctx.positives, ctx.gold):
            pool = [s for s in self.relatives(pos) if s not in gold]
            out.append(ctx.rng.sample(pool, min(self.num_negatives, len(pool))))
        return out

    def describe(self) -> Dict[str, object]:
        return {"strategy": self.name, "num_negatives": self.num_negatives, "max_levels": self.max_levels}


class HardNegatives(NegativeSampler):
    """Skills nearest to the sentence by the current encoder, gold excluded, likely false negatives skipped.

    A candidate is skipped when its similarity exceeds ``max_relative_score`` × the positive's similarity
    (sentence-transformers' ``relative_margin`` idea): the nearest skills are often right but unlabelled.
    ``skip_top`` drops the very nearest ranks for the same reason. The trainer refreshes the index every
    ``refresh_every`` steps.
    """

    name = "hard"
    needs_index = True

    @checked(SECTION)
    def __init__(self, num_negatives: Count = 4, candidates: PositiveCount = 50, skip_top: Count = 3,
                 max_relative_score: RelativeScore = 0.95, refresh_every: PositiveCount = 50):
        if candidates < num_negatives + skip_top:  # a relation between keys: no type hint can say it
            raise ConfigError(f"[{SECTION}] candidates must be >= num_negatives + skip_top "
                              f"({num_negatives} + {skip_top}), got {candidates}")
        self.num_negatives, self.candidates, self.skip_top = num_negatives, candidates, skip_top
        self.max_relative_score, self.refresh_every = max_relative_score, refresh_every

    def sample(self, ctx: SamplingContext) -> List[List[int]]:
        if ctx.sentence_vectors is None or ctx.skill_vectors is None:
            raise ValueError("hard negatives need the sentence and skill embeddings of the step")
        sims = ctx.sentence_vectors @ ctx.skill_vectors.T  # [B, n_skills]
        k = min(self.candidates, sims.shape[1] - 1)
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        out = []
        for row, (pos, gold) in enumerate(zip(ctx.positives, ctx.gold)):
            ranked = top[row][np.argsort(-sims[row, top[row]])]
            ceiling = self.max_relative_score * float(sims[row, pos])
            pool = [int(s) for s in ranked[self.skip_top:] if s not in gold and sims[row, s] < ceiling]
            out.append(pool[: self.num_negatives])
        return out

    def describe(self) -> Dict[str, object]:
        return {"strategy": self.name, "num_negatives": self.num_negatives, "candidates": self.candidates,
                "skip_top": self.skip_top, "max_relative_score": self.max_relative_score,
                "refresh_every": self.refresh_every}


class MixtureNegatives(NegativeSampler):
    """Union of several strategies; each contributes its own share, duplicates removed."""

    name = "mixture"

    def __init__(self, samplers: Dict[str, Any]):  # Any: confection checks hints before it resolves the samplers
        if not samplers:
            raise ConfigError(f"[{SECTION}.samplers] a mixture needs at least one strategy")
        for key, sampler in samplers.items():
            if not isinstance(sampler, NegativeSampler):
                raise ConfigError(f"[{SECTION}.samplers.{key}] is not a negative sampler: {sampler!r}")
            sampler.section = f"{SECTION}.samplers.{key}"
        self.samplers = dict(samplers)
        self.needs_index = any(s.needs_index for s in self.samplers.values())
        self.refresh_every = min((getattr(s, "refresh_every", 10**9) for s in self.samplers.values()))

    def bind(self, taxonomy: EscoTaxonomy, uris: Sequence[str]) -> None:
        super().bind(taxonomy, uris)
        for sampler in self.samplers.values():
            sampler.bind(taxonomy, uris)

    def sample(self, ctx: SamplingContext) -> List[List[int]]:
        merged: List[List[int]] = [[] for _ in ctx.positives]
        for sampler in self.samplers.values():
            for row, negatives in enumerate(sampler.sample(ctx)):
                merged[row].extend(negatives)
        return [list(dict.fromkeys(row)) for row in merged]

    def describe(self) -> Dict[str, object]:
        return {"strategy": self.name, "samplers": {k: s.describe() for k, s in self.samplers.items()}}


# Registered as the classes (see the module docstring); the mixture's samplers are resolved before it is built.
registry.negative_samplers.register("esco.random_negatives.v1", func=RandomNegatives)
registry.negative_samplers.register("esco.in_batch_negatives.v1", func=InBatchNegatives)
registry.negative_samplers.register("esco.taxonomy_negatives.v1", func=TaxonomyNegatives)
registry.negative_samplers.register("esco.hard_negatives.v1", func=HardNegatives)
registry.negative_samplers.register("esco.mixture_negatives.v1", func=MixtureNegatives)
