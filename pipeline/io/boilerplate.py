"""Boilerplate lines: the key that finds a line again across ads, and the ``boilerplate.jsonl`` format.

The corpus builder writes the file (every line found in many ads); the pipeline's boilerplate filter ships the
keys of its no-skill lines; the calibration holds some of them back as non-skill sentences. All three meet
here, below them, so that none imports another's layer.

``boilerplate.jsonl``: one JSON object per line, most frequent first: ``{"key": int, "text": str, "ads": int,
"has_skill": bool}``. ``key`` is ``line_key(text, fold_digits=True)`` (an unsigned 64-bit int), ``ads`` the
number of distinct ads the line is in, ``has_skill`` whether the literal matcher found a skill in it.

A line is compared lower-cased and without punctuation, so "Apply now!" and "apply now" are one line; for
boilerplate digits are also folded ("Closing date 12/03/2020" is one line across ads). Keys are 8-byte hashes,
so the sets that remember them stay small for millions of lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import List

from pipeline.errors import EscoDataError

BOILERPLATE_FILE = "boilerplate.jsonl"
BOILERPLATE_FIELDS = {"key": int, "text": str, "ads": int, "has_skill": bool}

_KEY_JUNK = re.compile(r"[\W_]+", re.UNICODE)
_DIGITS = re.compile(r"\d+")


def line_key(text: str, *, fold_digits: bool = False) -> int:
    """64-bit hash of a line compared lower-cased, without punctuation (digits folded to 0 if asked)."""
    norm = _KEY_JUNK.sub(" ", text.lower()).strip()
    if fold_digits:
        norm = _DIGITS.sub("0", norm)
    return int.from_bytes(hashlib.blake2b(norm.encode("utf-8"), digest_size=8).digest(), "big")


def write_boilerplate(path: Path, rows: List[dict]) -> None:
    """The boilerplate lines as JSON Lines, through a ``.partial`` file (see the module docstring)."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(partial, path)


def read_boilerplate(path: Path) -> List[dict]:
    """The rows of a ``boilerplate.jsonl`` (a corpus folder or the file itself), each checked field by field."""
    path = Path(path)
    file = path / BOILERPLATE_FILE if path.is_dir() else path
    if not file.is_file():
        raise EscoDataError(f"No boilerplate file at '{file}': build the corpus again with `python -m pipeline "
                            f"corpus JOBADS... --output DIR` (corpora built before it existed lack it).")
    rows = []
    with open(file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                rows.append(_boilerplate_row(line, f"{file}:{number}"))
    return rows


def _boilerplate_row(line: str, where: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise EscoDataError(f"{where}: not JSON ({err})") from err
    if not isinstance(row, dict):
        raise EscoDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key, kind in BOILERPLATE_FIELDS.items():
        value = row.get(key)
        # bool is an int to Python; a key or a count given as true/false is a broken file
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise EscoDataError(f"{where}: field '{key}' must be {kind.__name__}, got {value!r}")
    if not 0 <= row["key"] < 2**64:
        raise EscoDataError(f"{where}: field 'key' must be an unsigned 64-bit int, got {row['key']}")
    return row


