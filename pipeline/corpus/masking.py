"""Mention masking: hide a literal mention so that the model must learn the skill from its context.

Examples keep their mention offsets in the corpus; masking happens at training time (``mask_probability``), drawn
afresh each time from a seeded ``random.Random``, so every epoch sees a different masking and runs are
reproducible.
"""

from __future__ import annotations

import random
from typing import Callable, Dict, List, Sequence, Tuple

def mask_mentions(
    text: str,
    mentions: Sequence[dict],
    probability: float,
    rng: random.Random,
    mask_token: str = "[MASK]",
) -> str:
    """Replace each mention by ``mask_token`` (or delete it when ``mask_token == ""``) with ``probability``.

    Mentions that share characters (one label linked to several skills) are masked together, with one draw. See
    ``mask_with_offsets`` for the details; this returns only the text.
    """
    return mask_with_offsets(text, mentions, probability, rng, mask_token)[0]


def mask_with_offsets(
    text: str,
    mentions: Sequence[dict],
    probability: float,
    rng: random.Random,
    mask_token: str = "[MASK]",
) -> Tuple[str, List[dict], List[str]]:
    """Mask mentions; return the new text, the mentions re-offset into it, and the URIs whose mention was masked.

    - One ``rng.random()`` draw per distinct mention region, left to right (none when ``probability`` is 0 or 1),
      so a seeded ``rng`` gives the same masks every time.
    - The text is rebuilt from its pieces, which is the same as replacing the regions right to left: offsets of
      the mentions not yet replaced stay valid.
    - A masked mention comes back with ``"masked": True`` and offsets of its mask token; with deletion it is
      dropped from the list, and a space before it goes too ("use Python daily" → "use daily").
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"mask probability must be in [0, 1], got {probability}")
    regions = _mention_regions(text, mentions)
    masked = [probability >= 1.0 or (probability > 0.0 and rng.random() < probability) for _ in regions]
    pieces: List[str] = []
    new_bounds: Dict[Tuple[int, int], Tuple[int, int]] = {}
    cursor = 0
    length = 0
    for (start, end), is_masked in zip(regions, masked):
        cut_start, cut_end = (start, end) if mask_token or not is_masked else _deletion_bounds(text, start, end)
        cut_start = max(cut_start, cursor)
        pieces.append(text[cursor:cut_start])
        length += cut_start - cursor
        if is_masked:
            pieces.append(mask_token)
            new_bounds[(start, end)] = (length, length + len(mask_token))
            length += len(mask_token)
        else:
            pieces.append(text[cut_start:cut_end])
            new_bounds[(start, end)] = (length, length + cut_end - cut_start)
            length += cut_end - cut_start
        cursor = cut_end
    pieces.append(text[cursor:])
    out_mentions: List[dict] = []
    masked_uris: List[str] = []
    region_of = _region_lookup(regions)
    for mention in mentions:
        region = region_of(mention["start"])
        is_masked = masked[regions.index(region)]
        if is_masked:
            masked_uris.append(mention["uri"])
            if not mask_token:
                continue
            start, end = new_bounds[region]
            out_mentions.append({"start": start, "end": end, "uri": mention["uri"], "masked": True})
        else:
            shift = new_bounds[region][0] - region[0]
            out_mentions.append({"start": mention["start"] + shift, "end": mention["end"] + shift,
                                 "uri": mention["uri"]})
    return "".join(pieces), out_mentions, list(dict.fromkeys(masked_uris))


def _mention_regions(text: str, mentions: Sequence[dict]) -> List[Tuple[int, int]]:
    """Distinct character regions of the mentions, overlapping ones merged, left to right."""
    regions: List[Tuple[int, int]] = []
    for mention in sorted(mentions, key=lambda m: (m["start"], m["end"])):
        start, end = int(mention["start"]), int(mention["end"])
        if not 0 <= start < end <= len(text):
            raise ValueError(f"mention {mention} does not fit a text of {len(text)} characters")
        if regions and start < regions[-1][1]:
            regions[-1] = (regions[-1][0], max(end, regions[-1][1]))
        else:
            regions.append((start, end))
    return regions


def _region_lookup(regions: List[Tuple[int, int]]) -> Callable[[int], Tuple[int, int]]:
    def find(start: int) -> Tuple[int, int]:
        for region in regions:
            if region[0] <= start < region[1]:
                return region
        raise ValueError(f"no mention region holds offset {start}")  # pragma: no cover - regions cover all

    return find


def _deletion_bounds(text: str, start: int, end: int) -> Tuple[int, int]:
    """Widen a deletion by one space so that no double space (or space before punctuation) is left."""
    if start > 0 and text[start - 1] == " " and (end == len(text) or text[end] in " ,.;:!?)"):
        return start - 1, end
    if start == 0 and end < len(text) and text[end] == " ":
        return start, end + 1
    return start, end
