"""Bad input for the tests of #23: text no string should carry, and a poison ad that makes a component raise.

``NASTY_TEXTS`` builds strings from explicit code points — lone surrogates, NUL and other controls, byte-order
marks, line and paragraph separators, bidi marks, combining sequences, very long tokens — as hypothesis' text
strategy leaves surrogates out.

``add_poison`` adds a component that raises on a marker word to a loaded pipeline (what ``extract`` runs, in any
engine); ``poisoned_normalizer`` saves a matcher pipeline whose token normalizer raises on it (the corpus calls its
components one by one, so an added component would never run there).
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import spacy
from hypothesis import strategies as st
from spacy.language import Language

from pipeline.components.factory import component_factory
from pipeline.components.normalizer import NormalizerSettings, TokenNormalizer
from pipeline.components.pipes import NORMALIZER

# ------------------------------------------------------------------------------------------ nasty text
SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
SURROGATE_PAIR = st.tuples(st.integers(0xD800, 0xDBFF), st.integers(0xDC00, 0xDFFF)).map(
    lambda p: chr(p[0]) + chr(p[1]))
CONTROLS = st.sampled_from([chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))])
SPECIALS = st.sampled_from([
    "\ufeff", "\u2028", "\u2029", "\u0085",  # BOM, line / paragraph separators, NEL
    "\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
    "\u2069",  # bidi marks, embeddings, overrides and isolates
    "\u200b", "\u200c", "\u200d", "\u00ad", "\u2060", "\ufffd", "\ufffe", "\uffff", "\U0010ffff",
    "\U0001f600", "\U0001f469\u200d\U0001f4bb", "\U0001f1ec\U0001f1e7"])  # emoji, ZWJ sequence, flag
COMBINING = st.tuples(st.sampled_from(["a", "e", "S", "Q", " ", "\u0915"]),
                      st.lists(st.integers(0x300, 0x36F).map(chr), min_size=1, max_size=12)).map(
    lambda p: p[0] + "".join(p[1]))
LONG_TOKENS = st.tuples(st.sampled_from(["a", "\u00e9", "x\u0301", "\U0001f600", "-", ".", "SQL", "\ud83d"]),
                        st.integers(200, 3000)).map(lambda p: p[0] * p[1])
WORDS = st.sampled_from(["manage budgets", "Python", "SQL", " ", "\n", "\t", "\r\n", ". ", "<p>", "</li>", "&amp;",
                         "&#0;", "&#xd83d;", "\u2022 ", "<![foo[", "<![if !supportLists]>", "]]>", "<!--", "&#x2028;"])
ANY_CODE_POINT = st.integers(0, 0x10FFFF).map(chr)  # surrogates included
PIECES = st.one_of(SURROGATES, SURROGATE_PAIR, CONTROLS, SPECIALS, COMBINING, LONG_TOKENS, WORDS, ANY_CODE_POINT)
NASTY_TEXTS = st.lists(PIECES, min_size=1, max_size=30).map("".join)


# ------------------------------------------------------------------------------------------ the poison ad
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
        component_factory(POISONED_NORMALIZER, NormalizerSettings)(
            lambda nlp, name, settings: PoisonedNormalizer(nlp.vocab, name, settings))


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
