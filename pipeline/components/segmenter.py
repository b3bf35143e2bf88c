"""What turns a raw job ad into a spaCy Doc: HTML-aware tokenizer, sentence boundaries, language flag.

No trained spaCy model is needed: sentence boundaries come from rules — a line break (paragraph, list item,
bullet) always starts a sentence, and sentence-final punctuation followed by a non-punctuation token does too.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Tuple, Union

import numpy
from spacy.attrs import SENT_START
from spacy.language import Language
from spacy.tokenizer import Tokenizer
from spacy.tokens import Doc, Span
from spacy.util import registry

from pipeline.components.factory import component_factory, settings_signature
from pipeline.components.pipes import SEGMENTER
from pipeline.io.serialization import Part, Serializable
from pipeline.io.text import clean_job_ad, english_score, is_english, repair_text
from pipeline.settings import Field, Settings, StrictBool, StrictFloat, StrictInt, StrictStr

DEFAULT_PUNCT = (".", "!", "?", ";", "…", "。")
# spaCy's own guard (1M chars) protects parsers; our pipeline is linear in length, so allow far more.
DEFAULT_MAX_LENGTH = 100_000_000
# A job ad is a few thousand characters; 100k is ~20 pages. Longer "ads" are concatenations or repeated text
# (a 12 MB one took over 10 minutes): their tail is cut, warned about and recorded in doc._.truncated_chars.
DEFAULT_MAX_AD_CHARS = 100_000


class TokenizerSettings(Settings):
    """``[nlp.tokenizer]`` (``esco.job_ad_tokenizer.v1``): ``clean_html`` cleans HTML, entities, mojibake and
    bullets before tokenizing; ``max_chars`` caps the cleaned text of one document (0 = no cap)."""

    clean_html: StrictBool = True
    max_chars: StrictInt = Field(DEFAULT_MAX_AD_CHARS, ge=0)


class SegmenterSettings(Settings):
    """``[components.esco_job_ad_segmenter]``: the characters that end a sentence, and when a text is flagged as
    not English (``pipeline.io.text.is_english``: other languages' function words at least
    ``min_foreign_share`` of the words, in texts of ``min_words_for_language_check`` words or more)."""

    punct_chars: Tuple[StrictStr, ...] = DEFAULT_PUNCT
    min_foreign_share: StrictFloat = Field(0.1, ge=0.0, le=1.0)
    min_words_for_language_check: StrictInt = Field(8, ge=0)
    warn_non_english: StrictBool = True


class LongDocumentWarning(UserWarning):
    """A document was longer than the tokenizer's ``max_chars`` and its tail was cut."""


class JobAdTokenizer:
    """Wraps spaCy's rule tokenizer; cleans HTML, entities, mojibake and bullets first.

    ``doc.text`` is therefore the cleaned text: offsets in predictions refer to it, not to the raw HTML. Without
    the clean-up (``clean=False``) the text is still mended (``repair_text``): spaCy cannot hash a lone surrogate.
    """

    def __init__(self, tokenizer: Tokenizer, settings: TokenizerSettings = TokenizerSettings()):
        self.tokenizer = tokenizer
        self.clean = settings.clean_html
        self.max_chars = settings.max_chars
        register_segmenter_extensions()

    @property
    def vocab(self):  # noqa: ANN201 - mirrors spaCy's Tokenizer
        return self.tokenizer.vocab

    def __call__(self, text: str) -> Doc:
        text = clean_job_ad(text) if self.clean else repair_text(text).text
        text, cut = truncate_text(text, self.max_chars)
        doc = self.tokenizer(text)
        if cut:
            doc._.truncated_chars = cut
            warnings.warn(f"A document of {len(text) + cut:,} characters was cut to {len(text):,} "
                          f"([nlp.tokenizer] max_chars = {self.max_chars:,}); doc._.truncated_chars = {cut:,}.",
                          LongDocumentWarning, stacklevel=2)
        return doc

    def make_raw_doc(self, text: str) -> Doc:
        """Tokenize without the clean-up: for text that is clean already and whose offsets must not move."""
        return self.tokenizer(text)

    def pipe(self, texts: Iterable[str], batch_size: int = 1000) -> Iterable[Doc]:
        for text in texts:
            yield self(text)

    # The rules are the wrapped tokenizer's; clean-up and max_chars come from the config.
    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = ()) -> None:
        self.tokenizer.to_disk(path, exclude=exclude)

    def from_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = ()) -> "JobAdTokenizer":
        self.tokenizer.from_disk(path, exclude=exclude)
        return self

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        return self.tokenizer.to_bytes(exclude=exclude)

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = ()) -> "JobAdTokenizer":
        self.tokenizer.from_bytes(bytes_data, exclude=exclude)
        return self

    def __getattr__(self, name: str):  # noqa: ANN204 - rules, prefix_search etc. of the wrapped tokenizer
        if name == "tokenizer":
            raise AttributeError(name)
        return getattr(self.tokenizer, name)


def truncate_text(text: str, max_chars: int) -> tuple:
    """(kept text, number of characters cut): cut at the last line break before ``max_chars`` when there is
    one in the second half of the budget, so that no sentence is cut in two; ``max_chars = 0`` keeps all."""
    if not max_chars or len(text) <= max_chars:
        return text, 0
    end = text.rfind("\n", max_chars // 2, max_chars)
    end = end if end > 0 else max_chars
    return text[:end], len(text) - end


def create_job_ad_tokenizer(**values: Any) -> Callable[[Language], JobAdTokenizer]:
    """Registered as ``esco.job_ad_tokenizer.v1`` (entry point ``spacy_tokenizers``); its keys are
    ``TokenizerSettings``' fields."""
    settings = TokenizerSettings.load("nlp.tokenizer", values)

    def make(nlp: Language) -> JobAdTokenizer:
        base = registry.tokenizers.get("spacy.Tokenizer.v1")()(nlp)
        return JobAdTokenizer(base, settings)

    return make


create_job_ad_tokenizer.__signature__ = settings_signature(TokenizerSettings)  # type: ignore[attr-defined]


def create_allow_long_documents(max_length: int = DEFAULT_MAX_LENGTH) -> Callable[[Language], Language]:
    """``[nlp.after_creation]`` callback: raise spaCy's max_length so whole huge ads go through."""

    def after_creation(nlp: Language) -> Language:
        nlp.max_length = max_length
        return nlp

    return after_creation


class NonEnglishWarning(UserWarning):
    """A document does not look like English; filter by category (``warnings.simplefilter("ignore",
    NonEnglishWarning)``) rather than by message text."""


class JobAdSegmenter(Serializable):
    """Sets sentence starts and ``doc._.english_score`` / ``doc._.is_english``.

    Non-English text is not dropped (a user may still want the literal matches), but it is flagged and a
    ``UserWarning`` is raised once per document so that it never becomes silent garbage.
    """

    def __init__(self, name: str = SEGMENTER, settings: SegmenterSettings = SegmenterSettings()):
        self.name = name
        self.settings = settings
        self.punct_chars = frozenset(settings.punct_chars)
        register_segmenter_extensions()

    def __call__(self, doc: Doc) -> Doc:
        self.set_sentence_starts(doc)
        doc._.english_score = english_score(doc.text)
        settings = self.settings
        doc._.is_english = is_english(doc.text, settings.min_foreign_share, settings.min_words_for_language_check)
        if not doc._.is_english and settings.warn_non_english:
            warnings.warn(
                f"Text does not look like English (English function-word share {doc._.english_score:.2f}, "
                "other languages' function words more frequent): "
                f"'{doc.text[:60]}…'. ESCO labels here are English, so expect few and unreliable skills. "
                "Check doc._.is_english to filter such ads.",
                NonEnglishWarning,
                stacklevel=2,
            )
        return doc

    def set_sentence_starts(self, doc: Doc) -> None:
        # Written in one from_array call: Token.is_sent_start's setter scans the whole doc for a parse on
        # every call, which made long ads quadratic (minutes for a 1M-character ad).
        starts = []
        start_next = True
        for token in doc:
            if token.is_space:  # whitespace closes the sentence before it, never opens one
                starts.append(token.i == 0)
                if "\n" in token.text:
                    start_next = True
                continue
            starts.append(start_next)
            start_next = token.text in self.punct_chars or ("\n" in token.whitespace_)
            if start_next and token.i + 1 < len(doc) and doc[token.i + 1].text in self.punct_chars:
                start_next = False
        if starts:
            values = numpy.asarray([1 if start else -1 for start in starts], dtype=numpy.int64)
            doc.from_array([SENT_START], values.astype(numpy.uint64))

    def serialization_parts(self) -> Dict[str, Part]:
        """None: the segmenter is its config (an empty folder, an empty table in bytes)."""
        return {}


def sentences(doc: Doc) -> List[Span]:
    """The doc's sentences, as every component and view means them: a sentence's first token (``sent.start``) is
    the key that joins literal matches, rankings, skipped sentences and decisions, so all of them read it here.

    The whole doc is one sentence when nothing set sentence starts (a doc that did not pass the segmenter), an
    empty doc has none. Read from the SENT_START array: ``doc.sents`` and ``doc.has_annotation`` make a Python
    Token per token (they were 80 % of the boilerplate filter's time)."""
    if not len(doc):
        return []
    values = doc.to_array(SENT_START).astype(numpy.int64)  # 1 starts a sentence, -1 does not, 0 unknown
    starts = numpy.flatnonzero(values == 1).tolist()
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    return [doc[start:end] for start, end in zip(starts, starts[1:] + [len(doc)])]


def is_sentence(span: Span) -> bool:
    """Whether ``span`` is exactly one of ``sentences(span.doc)``: it starts one, the next starts where it ends, and
    none starts inside it. Read from its own tokens instead of listing the doc's sentences (``span.sent`` would
    raise on a doc without sentence starts)."""
    doc = span.doc
    starts_one = span.start == 0 or doc[span.start].is_sent_start is True
    ends_one = span.end == len(doc) or doc[span.end].is_sent_start is True
    return len(span) > 0 and starts_one and ends_one and not any(token.is_sent_start for token in span[1:])


def register_segmenter_extensions() -> None:
    for name, default in (("english_score", None), ("is_english", None), ("truncated_chars", 0)):
        if not Doc.has_extension(name):
            Doc.set_extension(name, default=default)


@component_factory(SEGMENTER, SegmenterSettings,
                   assigns=["token.is_sent_start", "doc._.is_english", "doc._.english_score"])
def make_job_ad_segmenter(nlp: Language, name: str, settings: SegmenterSettings) -> JobAdSegmenter:
    return JobAdSegmenter(name, settings)


registry.tokenizers.register("esco.job_ad_tokenizer.v1", func=create_job_ad_tokenizer)
registry.callbacks.register("esco.allow_long_documents.v1", func=create_allow_long_documents)
