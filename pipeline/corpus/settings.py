"""The corpus build's settings (``[corpus]``): one model read by the build, the labeller and the CLI.

A module of its own so that the CLI can show the defaults without importing spaCy and the build.
"""

from __future__ import annotations

import multiprocessing
from typing import Optional

from pydantic import ValidationInfo, field_validator

from pipeline.io.jobads import ID_FIELD, SOURCE_FIELD, TEXT_FIELD, AdFormat
from pipeline.settings import Field, Settings, StrictFloat, StrictInt, StrictStr


class CorpusSettings(Settings):
    """Every knob of the corpus build, checked before a file is read; recorded in the manifest. ``workers`` and
    ``start_method`` (``default_start_method()`` when unset) change how fast the corpus is built, never what."""

    text_field: StrictStr = Field(TEXT_FIELD, min_length=1)
    id_field: StrictStr = Field(ID_FIELD, min_length=1)
    source_field: StrictStr = Field(SOURCE_FIELD, min_length=1)
    limit: Optional[StrictInt] = Field(None, ge=1)  # read at most this many ads in total; None: all
    dev_fraction: StrictFloat = Field(0.05, ge=0.0, lt=1.0)
    seed: StrictInt = 0
    min_words: StrictInt = Field(3, ge=1)
    max_words: StrictInt = 100
    max_line_chars: StrictInt = Field(500, ge=20)
    boilerplate_min_ads: StrictInt = Field(20, ge=2)  # a line in this many distinct ads is boilerplate
    min_foreign_share: StrictFloat = Field(0.1, gt=0.0, le=1.0)
    workers: StrictInt = Field(2, ge=1)
    start_method: Optional[StrictStr] = None

    @field_validator("max_words")
    @classmethod
    def _at_least_min_words(cls, max_words: int, info: ValidationInfo) -> int:
        min_words = info.data.get("min_words", 1)
        if max_words < min_words:
            raise ValueError(f"must be >= min_words ({min_words})")
        return max_words

    @field_validator("start_method")
    @classmethod
    def _known_start_method(cls, method: Optional[str]) -> Optional[str]:
        if method is not None and method not in multiprocessing.get_all_start_methods():
            raise ValueError(f"must be one of {multiprocessing.get_all_start_methods()}")
        return method

    def ad_format(self) -> AdFormat:
        return AdFormat(text_field=self.text_field, id_field=self.id_field, source_field=self.source_field)
