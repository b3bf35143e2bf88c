"""Opening input files the same way everywhere: gzip is recognised by its magic bytes, not by the file name.

A ``.jsonl`` that is really gzip, or a ``.gz`` that is plain text, both read correctly. ``read_lines`` is the
strict reader (evaluation files must be read whole, so a truncated file raises); the job-ad reader
(``pipeline.io.jobads``) is the lenient one and catches ``READ_ERRORS`` itself.
"""

from __future__ import annotations

import gzip
import io
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, TextIO, Tuple, Union

from pipeline.errors import EscoDataError

GZIP_MAGIC = b"\x1f\x8b"
# What reading a file can raise halfway: a truncated gzip (EOFError), corrupt gzip data (zlib.error,
# gzip.BadGzipFile) or a plain I/O failure (OSError).
GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)
READ_ERRORS = (OSError, *GZIP_ERRORS)

PathLike = Union[str, Path]


def is_gzip(path: PathLike) -> bool:
    """Whether the file starts with the gzip magic bytes (names lie; content does not)."""
    with open(path, "rb") as raw:
        return raw.read(2) == GZIP_MAGIC


@contextmanager
def open_binary(path: PathLike) -> Iterator[IO[bytes]]:
    """Open a file for reading bytes, decompressing gzip (found by its magic bytes, not its name)."""
    path = Path(path)
    if not path.is_file():
        raise EscoDataError(f"Input file '{path}' not found (or not a file).")
    with (gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")) as handle:
        yield handle


@contextmanager
def open_text(path: PathLike) -> Iterator[TextIO]:
    """UTF-8 text (a BOM is dropped), gzip or not; ``newline=""`` as the csv module wants."""
    with open_binary(path) as binary, io.TextIOWrapper(binary, encoding="utf-8-sig", newline="") as text:
        yield text


def read_lines(path: PathLike) -> Iterator[Tuple[int, bytes]]:
    """(line number, raw line), split on newline bytes only; a truncated .gz raises an error naming the file."""
    with open_binary(path) as handle:
        try:
            yield from enumerate(handle, start=1)
        except READ_ERRORS as err:
            raise EscoDataError(f"'{path}' could not be read to the end (truncated or corrupt?): {err}") from err
