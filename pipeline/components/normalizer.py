"""Token normalization for literal matching: ``token.norm_`` = lookup lemma of the lower-cased word.

spaCy's lookup lemmatizer is case-sensitive ("Managed" stays "Managed") and English rule lemmatization needs a
tagger we don't have, so this component owns spacy-lookups-data's English lemma table (read at initialize,
stored in the pipeline folder so loading needs no lookups package) and writes the normal form into
``token.norm``, which the PhraseMatcher then matches on. Label patterns go through the same function, so
"Managed budgets" and "manage budgets" meet at "manage budget".
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

from spacy.language import Language
from spacy.lookups import Lookups, load_lookups
from spacy.tokens import Doc
from spacy.vocab import Vocab

from pipeline.components.factory import component_factory
from pipeline.components.pipes import NORMALIZER
from pipeline.settings import Settings, StrictBool
from pipeline.io.serialization import Part, Serializable
from pipeline.errors import MissingDependencyError

TABLE_NAME = "lemma_lookup"
LOOKUPS_FILE = "lookups.bin"


def load_lookup_table(lang: str = "en", table: str = "lemma_lookup") -> Lookups:
    """The lookups holding ``table``; a MissingDependencyError saying what to install when they are not there
    (spaCy raises a bare ValueError, which the CLI would show as a traceback)."""
    try:
        lookups = load_lookups(lang, [table])
    except ValueError as err:
        raise MissingDependencyError(
            f"The '{table}' table for '{lang}' was not found: install spacy-lookups-data "
            "(pip install spacy-lookups-data) before initializing the pipeline."
        ) from err
    return lookups


class NormalizerSettings(Settings):
    """``[components.esco_token_normalizer]``: ``lowercase`` lower-cases a word before its lemma is looked up."""

    lowercase: StrictBool = True


class TokenNormalizer(Serializable):
    def __init__(self, vocab: Vocab, name: str = NORMALIZER, settings: NormalizerSettings = NormalizerSettings()):
        self.vocab = vocab
        self.name = name
        self.lowercase = settings.lowercase
        self.lookups = Lookups()
        self.table = self.lookups.add_table(TABLE_NAME)
        self._cache: Dict[int, str] = {}

    def initialize(self, get_examples: Optional[Callable] = None, *, nlp: Optional[Language] = None,
                   lang: str = "en") -> None:
        self.lookups = load_lookup_table(lang, TABLE_NAME)
        self.table = self.lookups.get_table(TABLE_NAME)
        self._cache.clear()

    def normal_form(self, text: str) -> str:
        lower = text.lower() if self.lowercase else text
        return self.table.get(lower, lower)

    def __call__(self, doc: Doc) -> Doc:
        cache = self._cache
        for token in doc:
            norm = cache.get(token.orth)
            if norm is None:
                norm = cache[token.orth] = self.normal_form(token.text)
            token.norm_ = norm
        return doc

    def serialization_parts(self) -> Dict[str, Part]:
        """The lemma table, in the file ``Lookups.to_disk`` writes (so loading needs no lookups package)."""
        return {LOOKUPS_FILE: Part(self.lookups.to_bytes, self._set_lookups)}

    def _set_lookups(self, data: bytes) -> None:
        self.lookups = Lookups().from_bytes(data)
        self.table = self.lookups.get_table(TABLE_NAME)
        self._cache.clear()


@component_factory(NORMALIZER, NormalizerSettings, assigns=["token.norm"])
def make_token_normalizer(nlp: Language, name: str, settings: NormalizerSettings) -> TokenNormalizer:
    return TokenNormalizer(nlp.vocab, name, settings)
