"""Ads whose processing raised: one record each, so that one bad ad costs one ad, never the run.

A reader *rejects* a line it cannot make an ad of (``io.jobads``, counted by reason); an ad it read but whose
processing raised an exception *failed*. Every engine (``extract``, ``extract --engine ray``, ``corpus``) records a
failed ad as a ``FailedAd`` — its input file, line and id, the error's class and message — in its summary (counts
by error class) and in a JSON Lines file beside its output, and goes on: ads in = ads out + failed, exactly.

Free of spaCy and torch: Ray's write tasks import it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, TextIO, Union

from pipeline.io.jobads import JobAd
from pipeline.io.text import repair_text

FAILED_FILE = "failed.jsonl"  # in an output folder (Ray's, the corpus's)
FAILED_SUFFIX = ".failed.jsonl"  # beside an output file: out.jsonl → out.failed.jsonl
MAX_MESSAGE = 1000  # characters of an error's message kept (a message may quote the whole ad)
_OUTPUT_SUFFIXES = (".gz", ".jsonl", ".ndjson", ".json")


@dataclass(frozen=True)
class FailedAd:
    """One ad whose processing raised: where it is (``line`` 0: the whole file), which one, and why."""

    file: str
    line: int
    id: str
    error: str  # the exception's class name: what the summary counts by
    message: str

    @classmethod
    def of(cls, ad: JobAd, err: BaseException) -> "FailedAd":
        """The record of ``ad`` failing with ``err``."""
        return cls.make(ad.file, ad.line, ad.id, type(err).__name__, str(err))

    @classmethod
    def make(cls, file: str, line: int, ad_id: str, error: str, message: str) -> "FailedAd":
        """A record with every field mended and the message clipped, so that the record itself can be written (a
        message may quote the text that made the ad fail)."""
        message = message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "…"
        return cls(_mended(file), line, _mended(ad_id), _mended(error), _mended(message))

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where} (id {self.id!r}): {self.error}: {self.message}"


def _mended(text: str) -> str:
    return repair_text(text).text


def failed_path(output: Union[str, Path]) -> Path:
    """Where the failed ads of a run writing the file ``output`` go: ``out.jsonl`` → ``out.failed.jsonl`` (a
    ``.gz`` and the JSON Lines suffix dropped), beside it."""
    path = Path(output)
    name = path.name
    for suffix in _OUTPUT_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return path.with_name(name + FAILED_SUFFIX)


class FailedAdsFile:
    """The failed ads of a run, one JSON object a line, in the order they failed, and their count by error class.
    Opened at once, so that a run leaves no stale file of an earlier one: an empty file says that no ad failed."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: Optional[TextIO] = open(self.path, "w", encoding="utf-8")
        self.by_error: Counter = Counter()

    def write(self, failed: FailedAd) -> None:
        assert self._handle is not None, "FailedAdsFile written after close"
        self._handle.write(json.dumps(failed.to_dict(), ensure_ascii=False) + "\n")
        self._handle.flush()  # a run that dies later still says which ads failed before
        self.by_error[failed.error] += 1

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "FailedAdsFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
