"""The poison ad of the per-ad isolation tests (#23): a component that raises on a marker word, added in a test.

``add_poison`` adds it to a loaded pipeline (what ``extract`` runs, in any engine); ``poisoned_normalizer`` saves a
matcher pipeline whose token normalizer raises on the marker (the corpus calls its components one by one, so an
added component would never run there).
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import spacy
from spacy.language import Language

from pipeline.components.normalizer import TokenNormalizer
from pipeline.components.pipes import NORMALIZER

MARKER = "Poisonberry"  # a word no real ad holds
POISON = "test_poison"
POISONED_NORMALIZER = "test_poisoned_normalizer"


class PoisonedAdError(RuntimeError):
    """What the poison raises: its class name is what the summaries count."""


def raise_on_marker(text: str) -> None:
    if MARKER in text:
        raise PoisonedAdError(f"poisoned text: {text[:40]!r}")


def poison(doc):
    raise_on_marker(doc.text)
    return doc


class PoisonedNormalizer(TokenNormalizer):
    def __call__(self, doc):
        raise_on_marker(doc.text)
        return super().__call__(doc)


def register() -> None:
    """Register the test's component and factory (also in a Ray actor, where this module arrives by value)."""
    if not Language.has_factory(POISON):
        Language.component(POISON, func=poison)
    if not Language.has_factory(POISONED_NORMALIZER):
        Language.factory(POISONED_NORMALIZER, default_config={"lowercase": True},
                         func=lambda nlp, name, lowercase: PoisonedNormalizer(nlp.vocab, name, lowercase=lowercase))


def add_poison(nlp: Language) -> Language:
    register()
    nlp.add_pipe(POISON, last=True)
    return nlp


def poisoned_normalizer(matcher_dir: Path, folder: Path) -> Path:
    """The matcher pipeline saved to ``folder`` with its normalizer raising on the marker."""
    register()
    nlp = spacy.load(matcher_dir)
    nlp.replace_pipe(NORMALIZER, POISONED_NORMALIZER)
    nlp.get_pipe(NORMALIZER).from_disk(Path(matcher_dir) / NORMALIZER)
    nlp.to_disk(folder)
    return folder


def ads_with_poison(n_good: int, poison_at: int) -> List[dict]:
    """``n_good`` distinct good ads (each asks for budgets and Python) and one poison ad at index ``poison_at``."""
    ads = [{"id": f"good{i}", "source": "test", "description": f"Ad number {i}: the team {i} needs someone to "
                                                                 f"manage budgets.\nPython experience for project {i}."}
           for i in range(n_good)]
    ads.insert(poison_at, {"id": "poison", "source": "test", "description": f"You will manage budgets.\nA {MARKER} "
                                                                            "ad that makes a component raise."})
    return ads
