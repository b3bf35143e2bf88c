"""spaCy corpus reader for the distant-supervision corpus (``esco.distant_supervision_corpus.v1``).

A training config names the corpus like any other reader::

    [corpora.train]
    @readers = "esco.distant_supervision_corpus.v1"
    path = ${paths.corpus}
    split = "train"
    mask_probability = 0.3

Each row becomes an ``Example`` whose reference doc carries:

- ``doc.spans["esco_skills"]``: the mentions still in the text (``kb_id_`` = ESCO URI, label ``ESCO_SKILL``);
- ``doc.spans["esco_skills_masked"]``: the mask tokens that replaced mentions (same ``kb_id_``), if any;
- ``doc.user_data["esco_uris"]``: every skill of the sentence, masked or not — the sentence-level label;
  ``"esco_masked_uris"``, ``"ad_id"`` and ``"source"`` as well.

Masking is drawn afresh on every pass over the corpus from one ``random.Random(seed)``, so training sees a
different masking each epoch but the whole run is reproducible.
"""

from __future__ import annotations

import random
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator, List, Union

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import registry

from pipeline.corpus.build import SPLITS, load_corpus
from pipeline.corpus.masking import mask_with_offsets
from pipeline.components.pipes import make_clean_doc
from pipeline.components.predictions import SPANS_KEY
from pipeline.errors import ConfigError

READER_NAME = "esco.distant_supervision_corpus.v1"
MASKED_SPANS_KEY = "esco_skills_masked"
SPAN_LABEL = "ESCO_SKILL"


def create_distant_supervision_reader(
    path: Union[str, Path],
    split: str = "train",
    limit: int = 0,
    mask_probability: float = 0.0,
    seed: int = 0,
    mask_token: str = "[MASK]",
) -> Callable[[Language], Iterator[Example]]:
    """Read one split of a corpus folder from ``build_corpus``; ``limit`` = 0 reads all rows.

    ``mask_token = ""`` deletes masked mentions instead of replacing them.
    """
    if split not in SPLITS:
        raise ConfigError(f"[corpora] {READER_NAME}: split must be one of {SPLITS}, got '{split}'")
    if limit < 0:
        raise ConfigError(f"[corpora] {READER_NAME}: limit must be >= 0 (0 = all), got {limit}")
    if not 0.0 <= mask_probability <= 1.0:
        raise ConfigError(f"[corpora] {READER_NAME}: mask_probability must be in [0, 1], got {mask_probability}")
    rows = load_corpus(Path(path))[split]
    rng = random.Random(seed)

    def read(nlp: Language) -> Iterator[Example]:
        for row in islice(rows, limit or None):
            yield row_to_example(nlp, row, mask_probability, rng, mask_token)

    return read


def row_to_example(nlp: Language, row: dict, mask_probability: float, rng: random.Random,
                   mask_token: str = "[MASK]") -> Example:
    mentions: List[dict] = list(row.get("mentions") or [])
    text, mentions, masked_uris = mask_with_offsets(row["text"], mentions, mask_probability, rng, mask_token)
    reference = make_clean_doc(nlp, text)
    reference.spans[SPANS_KEY] = _spans(reference, [m for m in mentions if not m.get("masked")])
    reference.spans[MASKED_SPANS_KEY] = _spans(reference, [m for m in mentions if m.get("masked")])
    reference.user_data["esco_uris"] = list(row.get("uris") or [])
    reference.user_data["esco_masked_uris"] = masked_uris
    reference.user_data["ad_id"] = row.get("ad_id", "")
    reference.user_data["source"] = row.get("source", "")
    return Example(make_clean_doc(nlp, text), reference)


def _spans(doc: Doc, mentions: List[dict]) -> List[Span]:
    spans = []
    for mention in mentions:
        span = doc.char_span(mention["start"], mention["end"], label=SPAN_LABEL, kb_id=mention["uri"],
                             alignment_mode="expand")
        if span is not None:
            spans.append(span)
    return spans


registry.readers.register(READER_NAME, func=create_distant_supervision_reader)
