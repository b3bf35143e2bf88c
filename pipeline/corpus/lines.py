"""Cleaning an ad into lines, and the hashes that find a line again: the unit of boilerplate and dedupe.

A line is compared lower-cased and without punctuation, so "Apply now!" and "apply now" are one line; for
boilerplate digits are also folded ("Closing date 12/03/2020" is one line across ads). Keys are 8-byte hashes,
so the sets that remember them stay small for millions of lines.
"""

from __future__ import annotations

import hashlib
import re
from typing import List, Tuple

from pipeline.io.text import clean_job_ad, iter_lines, split_long_line

CleanedAd = Tuple[List[str], List[int], List[int], int]  # lines, dedupe keys, boilerplate keys, long lines split

_KEY_JUNK = re.compile(r"[\W_]+", re.UNICODE)
_DIGITS = re.compile(r"\d+")


def line_key(text: str, *, fold_digits: bool = False) -> int:
    """64-bit hash of a line compared lower-cased, without punctuation (digits folded to 0 if asked)."""
    norm = _KEY_JUNK.sub(" ", text.lower()).strip()
    if fold_digits:
        norm = _DIGITS.sub("0", norm)
    return int.from_bytes(hashlib.blake2b(norm.encode("utf-8"), digest_size=8).digest(), "big")


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


def clean_ads(texts: List[str], max_line_chars: int) -> List[CleanedAd]:
    """Per ad: lines, their dedupe keys, their boilerplate keys (digits folded), the number of long lines split."""
    out = []
    for text in texts:
        lines, n_long = clean_lines(text, max_line_chars)
        out.append((lines, [line_key(x) for x in lines], [line_key(x, fold_digits=True) for x in lines], n_long))
    return out
