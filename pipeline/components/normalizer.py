"""Token normalization for literal matching: ``token.norm_`` = lookup lemma of the lower-cased word.

spaCy's lookup lemmatizer is case-sensitive ("Managed" stays "Managed") and English rule lemmatization needs a
tagger we don't have, so this component owns spacy-lookups-data's English lemma table (read at initialize,
stored in the pipeline folder so loading needs no lookups package) and writes the normal form into
``token.norm``, which the PhraseMatcher then matches on. Label patterns go through the same function, so
"Managed budgets" and "manage budgets" meet at "manage budget".
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Union

from spacy.language import Language
from spacy.lookups import Lookups, load_lookups
from spacy.tokens import Doc
from spacy.vocab import Vocab

from pipeline.errors import IncompletePipelineError, MissingDependencyError

TABLE_NAME = "lemma_lookup"


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


class TokenNormalizer:
    def __init__(self, vocab: Vocab, name: str = "esco_token_normalizer", *, lowercase: bool = True):
        self.vocab = vocab
        self.name = name
        self.lowercase = lowercase
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

    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = ()) -> None:
        self.lookups.to_disk(path)

    def from_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = ()) -> "TokenNormalizer":
        file = Path(path) / "lookups.bin"
        if not file.exists():
            raise IncompletePipelineError(f"'{file}' is missing: the pipeline folder for '{self.name}' is incomplete.")
        self.lookups = Lookups().from_disk(path)
        self.table = self.lookups.get_table(TABLE_NAME)
        self._cache.clear()
        return self


@Language.factory(
    "esco_token_normalizer",
    assigns=["token.norm"],
    default_config={"lowercase": True},
)
def make_token_normalizer(nlp: Language, name: str, lowercase: bool) -> TokenNormalizer:
    return TokenNormalizer(nlp.vocab, name, lowercase=lowercase)
