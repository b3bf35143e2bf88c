"""Cleaning an ad into lines with the keys that find a line again (``io.boilerplate.line_key``): the unit of
boilerplate and dedupe. Also ``isolated``: how a worker hands back an ad's exception as data (``Failure``)."""

from __future__ import annotations

from typing import Callable, List, NamedTuple, Tuple, TypeVar, Union

from pipeline.io.boilerplate import line_key
from pipeline.io.text import clean_job_ad, iter_lines, split_long_line

CleanedAd = Tuple[List[str], List[int], List[int], int]  # lines, dedupe keys, boilerplate keys, long lines split
T = TypeVar("T")


class Failure(NamedTuple):
    """The exception one ad (or line) raised, as data: a worker hands it back in place of the result, so that one
    bad ad fails alone (``io.failures``) instead of ending the build."""

    error: str  # the exception's class name
    message: str


def isolated(func: Callable[..., T], *args, fail_fast: bool = False) -> Union[T, Failure]:
    """``func(*args)``, or its exception as a ``Failure`` (raised instead with ``fail_fast``)."""
    try:
        return func(*args)
    except Exception as err:
        if fail_fast:
            raise
        return Failure(type(err).__name__, str(err))


def clean_lines(text: str, max_line_chars: int) -> Tuple[List[str], int]:
    """The cleaned ad as lines (sentence boundaries), over-long lines split; also how many lines were split."""
    lines: List[str] = []
    n_long = 0
    for line in iter_lines(clean_job_ad(text)):
        if len(line) <= max_line_chars:
            lines.append(line)
            continue
        n_long += 1
        lines.extend(piece.strip() for piece in split_long_line(line, max_line_chars) if piece.strip())
    return lines, n_long


def clean_ads(texts: List[str], max_line_chars: int, fail_fast: bool = False) -> List[Union[CleanedAd, Failure]]:
    """Per ad: lines, their dedupe keys, their boilerplate keys (digits folded), the number of long lines split;
    or the ``Failure`` of an ad whose cleaning raised."""
    return [isolated(clean_ad, text, max_line_chars, fail_fast=fail_fast) for text in texts]


def clean_ad(text: str, max_line_chars: int) -> CleanedAd:
    lines, n_long = clean_lines(text, max_line_chars)
    return lines, [line_key(x) for x in lines], [line_key(x, fold_digits=True) for x in lines], n_long
