"""Cleaning an ad into lines with the keys that find a line again (``io.boilerplate.line_key``): the unit of
boilerplate and dedupe."""

from __future__ import annotations

from typing import List, Tuple

from pipeline.io.boilerplate import line_key
from pipeline.io.text import clean_job_ad, iter_lines, split_long_line

CleanedAd = Tuple[List[str], List[int], List[int], int]  # lines, dedupe keys, boilerplate keys, long lines split


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
