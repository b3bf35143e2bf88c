"""The one reader of job-ad files, shared by ``corpus``, ``extract`` and ``bench`` so that they agree on every ad.

Policy (the same for every caller):

- **what is read**: ``.jsonl`` / ``.ndjson`` / ``.json`` are JSON Lines, one ad per object; ``.txt`` / ``.html`` /
  ``.htm`` hold one ad per file (or one per line with ``AdFormat.one_per_line``); either may end in ``.gz``. A
  folder stands for its files with those suffixes (sorted; the folder's name is their default source). Anything
  else is an ``EscoDataError`` before a single ad is read.
- **gzip** is recognised by its magic bytes, not its name.
- **bad UTF-8** bytes are replaced with U+FFFD and the line is counted as *repaired* (its ad is kept).
- **text no string should carry** in the text, id or source — lone UTF-16 surrogates (U+FFFD), control
  characters and stray byte-order marks (removed) — is mended by ``io.text.repair_text`` and the line counted as
  *repaired*, once per reason (the fields named in the detail); an ad whose text is empty once mended is rejected.
  JSON strings may hold raw control characters (tabs, NULs: invalid JSON, common in exports): parsed, then mended.
- **a truncated or corrupt gzip**: the ads before the break are kept; the rest of that file is counted as a
  *file error* and warned about. Reading never raises halfway through a file.
- **a bad line** (malformed JSON, not an object, missing / non-string / empty text field) is counted as
  *rejected* and warned about with ``file:line``; an ad without an id gets ``file:line`` as its id (*repaired*).

Every case is counted per file and reason in a ``ReadReport``; the first ``max_warnings`` are also warned
(``JobAdInputWarning``) and the first ``max_listed`` kept in ``ReadReport.problems``.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from pipeline.errors import ConfigError, EscoDataError
from pipeline.io.files import GZIP_ERRORS, READ_ERRORS, open_binary
from pipeline.io.text import repair_text

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
TEXT_SUFFIXES = (".txt", ".html", ".htm")
GZIP_SUFFIX = ".gz"
MAX_WARNINGS = 10
MAX_PROBLEMS_LISTED = 200

PathLike = Union[str, Path]
REJECTED, REPAIRED, FILE_ERROR = "rejected", "repaired", "file"
_ACTIONS = {REJECTED: "line skipped", REPAIRED: "line repaired", FILE_ERROR: "rest of file skipped"}
NON_UTF8 = "non-UTF-8 bytes replaced with U+FFFD"
# Where an ad is in a JSON record unless a caller says otherwise (``corpus``, ``extract``, ``bench`` read these).
TEXT_FIELD, ID_FIELD, SOURCE_FIELD = "description", "id", "source"


class JobAdInputWarning(UserWarning):
    """A line or file of the job-ad input was skipped or repaired (the ``ReadReport`` counts every case)."""


@dataclass(frozen=True)
class AdFormat:
    """Where the ad is in a record, and how a text file is split into ads."""

    text_field: str = TEXT_FIELD
    id_field: str = ID_FIELD
    source_field: str = SOURCE_FIELD
    one_per_line: bool = False  # a text file holds one ad per line (extract's ``--lines``)

    def validate(self) -> None:
        """Empty field names would silently reject every line: refuse them up front."""
        for key in ("text_field", "id_field", "source_field"):
            if not getattr(self, key):
                raise ConfigError(f"job-ad setting '{key}' must name a JSON field, got an empty string")


@dataclass(frozen=True)
class InputFile:
    """One file to read: its kind decides the parser; ``default_source`` is used when a record names none."""

    path: Path
    kind: str  # "jsonl" | "text"
    default_source: str


@dataclass(frozen=True)
class JobAd:
    id: str
    text: str
    source: str
    file: str = ""  # where the reader found it: a run names an ad that failed by file and line (and id)
    line: int = 0  # 1-based line (Parquet: row) of a JSON Lines / --lines file; 0: the whole file is the ad


# ---------------------------------------------------------------------------------------------------- report
@dataclass
class FileReport:
    """What reading one file gave: ads, blank lines, and problems by kind and reason."""

    path: str
    ads_read: int = 0
    blank_lines: int = 0
    rejected: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {"path": self.path, "ads_read": self.ads_read, "blank_lines": self.blank_lines,
                "rejected_lines": dict(self.rejected), "repaired_lines": dict(self.repaired),
                "file_errors": dict(self.errors)}

    def counter(self, kind: str) -> Counter:
        return {REJECTED: self.rejected, REPAIRED: self.repaired, FILE_ERROR: self.errors}[kind]


class ReadReport:
    """Problems with the input: each counted per file and reason, the first few warned, the first many listed."""

    def __init__(self, max_warnings: int = MAX_WARNINGS, max_listed: int = MAX_PROBLEMS_LISTED):
        self.files: Dict[str, FileReport] = {}
        self.problems: List[dict] = []
        self.n_problems = 0
        self.max_warnings = max_warnings
        self.max_listed = max_listed

    def file(self, path: PathLike) -> FileReport:
        key = str(path)
        if key not in self.files:
            self.files[key] = FileReport(key)
        return self.files[key]

    def problem(self, path: PathLike, line: int, kind: str, reason: str, detail: str = "") -> None:
        """kind: ``REJECTED`` (the line gave no ad), ``REPAIRED`` (used after a fix) or ``FILE_ERROR`` (the rest
        of the file is unreadable). ``line`` 0 means the whole file."""
        self.file(path).counter(kind)[reason] += 1
        self.n_problems += 1
        if len(self.problems) < self.max_listed:
            self.problems.append({"file": str(path), "line": line, "kind": kind, "reason": reason, "detail": detail})
        if self.n_problems <= self.max_warnings:
            where = f"{path}:{line}" if line else str(path)
            warnings.warn(f"{where}: {reason}{f' ({detail})' if detail else ''}; {_ACTIONS[kind]}.",
                          JobAdInputWarning, stacklevel=2)

    def finish(self) -> None:
        """Say how many problems were counted but not warned about, so that none goes unnoticed."""
        hidden = self.n_problems - self.max_warnings
        if hidden > 0:
            warnings.warn(f"{hidden} more input problems not shown (all are counted per file and reason).",
                          JobAdInputWarning, stacklevel=2)

    def totals(self) -> Dict[str, Any]:
        """Counts over all files: ``rejected_lines`` / ``repaired_lines`` / ``file_errors`` by reason, ``blank_lines``."""
        out: Dict[str, Any] = {"rejected_lines": Counter(), "repaired_lines": Counter(), "file_errors": Counter()}
        for report in self.files.values():
            out["rejected_lines"].update(report.rejected)
            out["repaired_lines"].update(report.repaired)
            out["file_errors"].update(report.errors)
        totals = {key: dict(value) for key, value in out.items()}
        totals["blank_lines"] = sum(report.blank_lines for report in self.files.values())
        return totals


# ---------------------------------------------------------------------------------------------------- inputs
def _split_name(path: Path) -> Optional[Tuple[str, str]]:
    """(stem, kind) when the name ends in a known suffix (optionally + .gz), else None."""
    name = path.name
    lower = name.lower()
    if lower.endswith(GZIP_SUFFIX):
        name, lower = name[: -len(GZIP_SUFFIX)], lower[: -len(GZIP_SUFFIX)]
    for kind, suffixes in (("jsonl", JSONL_SUFFIXES), ("text", TEXT_SUFFIXES)):
        for suffix in suffixes:
            if lower.endswith(suffix) and len(lower) > len(suffix):
                return name[: -len(suffix)], kind
    return None


def _accepted() -> str:
    return ", ".join(JSONL_SUFFIXES + TEXT_SUFFIXES) + f" (each optionally {GZIP_SUFFIX})"


def resolve_inputs(inputs: Union[PathLike, Iterable[PathLike]]) -> List[InputFile]:
    """Input files in order; a folder stands for its job-ad files (sorted, source = folder name).

    Raises ``EscoDataError`` for a missing path, an unknown suffix or a folder without job-ad files, so that a
    typo fails before any work is done.
    """
    paths = [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(p) for p in inputs]
    if not paths:
        raise EscoDataError(f"No job-ad files given: pass files ({_accepted()}) or folders of them.")
    files: List[InputFile] = []
    for path in paths:
        if path.is_dir():
            files += _folder_inputs(path)
        elif path.is_file():
            parts = _split_name(path)
            if parts is None:
                raise EscoDataError(f"Input '{path}' is not a job-ad file ({_accepted()}): convert it, or rename it "
                                    "if that is what it holds.")
            files.append(InputFile(path, parts[1], parts[0]))
        else:
            raise EscoDataError(f"Input '{path}' not found (no such file or folder).")
    return files


def _folder_inputs(folder: Path) -> List[InputFile]:
    found = sorted(p for p in folder.iterdir() if p.is_file() and _split_name(p))
    if not found:
        raise EscoDataError(f"Input folder '{folder}' holds no job-ad files ({_accepted()}).")
    return [InputFile(p, _split_name(p)[1], folder.name) for p in found]


# ---------------------------------------------------------------------------------------------------- reading
def read_ads(inputs: Union[PathLike, Iterable[PathLike]], ad_format: AdFormat = AdFormat(), *,
             report: Optional[ReadReport] = None, limit: Optional[int] = None) -> Iterator[JobAd]:
    """``iter_ads`` over ``resolve_inputs(inputs)``; the inputs are checked now, not at the first ``next()``."""
    ad_format.validate()
    files = resolve_inputs(inputs)
    return iter_ads(files, ad_format, report if report is not None else ReadReport(), limit=limit)


def iter_ads(files: Sequence[InputFile], ad_format: AdFormat, report: ReadReport, *,
             limit: Optional[int] = None) -> Iterator[JobAd]:
    """All ads of all files, in order, up to ``limit`` ads; ``report.finish()`` once all were read."""
    read = 0
    for file in files:
        report.file(file.path)  # every file has an entry, even one that gives no ad
        with contextlib.closing(_file_ads(file, ad_format, report)) as ads:
            for ad in ads:
                report.file(file.path).ads_read += 1
                read += 1
                yield ad
                if limit is not None and read >= limit:
                    report.finish()
                    return
    report.finish()


def _file_ads(file: InputFile, ad_format: AdFormat, report: ReadReport) -> Iterator[JobAd]:
    if file.kind == "jsonl":
        return _jsonl_ads(file, ad_format, report)
    if ad_format.one_per_line:
        return _line_ads(file, report)
    return _whole_file_ad(file, report)


def _raw_lines(file: InputFile, report: ReadReport) -> Iterator[Tuple[int, bytes]]:
    """(line number, bytes) of the non-blank lines; a read error ends the file as a counted, warned file error.

    Blank lines are counted; a file with no content at all is an "empty file" error.
    """
    line_no, content = 0, False
    try:
        with open_binary(file.path) as handle:
            for line_no, raw in enumerate(handle, start=1):
                if raw.strip():
                    content = True
                    yield line_no, raw
                else:
                    report.file(file.path).blank_lines += 1
    except READ_ERRORS as err:
        report.problem(file.path, line_no + 1, FILE_ERROR, _read_error(err), f"after line {line_no}: {err}")
        return
    if not content:
        report.problem(file.path, 0, FILE_ERROR, "empty file", "no ads in it")


def _read_error(err: BaseException) -> str:
    """The reason counted for a file that broke off (from the error, without touching the file again)."""
    return "truncated or corrupt gzip" if isinstance(err, GZIP_ERRORS) else "unreadable file"


def _decode(raw: bytes, path: Path, line_no: int, report: ReadReport) -> str:
    """UTF-8 text (BOM dropped); bad bytes become U+FFFD and the line is counted as repaired."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        where = line_no + raw[: err.start].count(b"\n")  # a whole file's line of the first bad byte
        report.problem(path, where, REPAIRED, NON_UTF8, f"byte {err.start}")
        return raw.decode("utf-8-sig", errors="replace")


def _jsonl_ads(file: InputFile, ad_format: AdFormat, report: ReadReport) -> Iterator[JobAd]:
    for line_no, raw in _raw_lines(file, report):
        record = _parse_json(_decode(raw, file.path, line_no, report), file.path, line_no, report)
        if record is None:
            continue
        ad = ad_from_record(record, ad_format, file.path, line_no, file.default_source, report)
        if ad is not None:
            yield ad


def _parse_json(line: str, path: Path, line_no: int, report: ReadReport) -> Optional[dict]:
    try:
        record = json.loads(line, strict=False)  # raw control characters in strings: mended, not a lost ad
    except json.JSONDecodeError as err:
        report.problem(path, line_no, REJECTED, "malformed JSON", f"{err.msg} at column {err.colno}")
        return None
    if not isinstance(record, dict):
        report.problem(path, line_no, REJECTED, "not a JSON object", type(record).__name__)
        return None
    return record


def ad_from_record(record: dict, ad_format: AdFormat, path: Path, line_no: int, default_source: str,
                   report: ReadReport) -> Optional[JobAd]:
    """One record (a JSON Lines object, a Parquet row) as an ad by the readers' shared rules: without usable text
    it is rejected (``None``, counted in ``report``), without an id it gets ``file:line`` as id; its fields are
    mended (``repair_text``) and the repairs counted once the ad is kept."""
    repairs = Repairs()
    text = _text_of(record, ad_format.text_field, path, line_no, report, repairs)
    if text is None:
        return None
    ad_id = _id_of(record, ad_format.id_field, path, line_no, report, repairs)
    source = _source_of(record, ad_format.source_field, default_source, repairs)
    repairs.count(path, line_no, report)
    return JobAd(ad_id, text, source, str(path), line_no)


class Repairs:
    """The fields of one line ``repair_text`` mended, by reason: counted once per reason if the line gives an ad."""

    def __init__(self) -> None:
        self.fields: Dict[str, List[str]] = {}

    def __call__(self, value: str, field_name: str) -> str:
        text, reasons = repair_text(value)
        for reason in reasons:
            self.fields.setdefault(reason, []).append(field_name)
        return text

    def count(self, path: PathLike, line_no: int, report: ReadReport) -> None:
        for reason, names in self.fields.items():
            report.problem(path, line_no, REPAIRED, reason, "in " + ", ".join(f"'{name}'" for name in names))


def _text_of(record: dict, key: str, path: Path, line_no: int, report: ReadReport,
             repairs: Repairs) -> Optional[str]:
    if key not in record:
        report.problem(path, line_no, REJECTED, f"missing text field '{key}'",
                       "set --text-field to the field that holds the ad")
        return None
    text = record[key]
    if not isinstance(text, str):
        report.problem(path, line_no, REJECTED, f"text field '{key}' is not a string", type(text).__name__)
        return None
    text = repairs(text, key)
    if not text.strip():
        report.problem(path, line_no, REJECTED, f"empty text field '{key}'")
        return None
    return text


def _id_of(record: dict, key: str, path: Path, line_no: int, report: ReadReport, repairs: Repairs) -> str:
    ad_id = record.get(key)
    if isinstance(ad_id, (str, int)) and not isinstance(ad_id, bool):
        ad_id = repairs(str(ad_id), key).strip()
        if ad_id:
            return ad_id
    fallback = _file_id(path, line_no)
    report.problem(path, line_no, REPAIRED, f"missing id field '{key}'", f"used '{fallback}'")
    return fallback


def _file_id(path: Path, line_no: Optional[int] = None) -> str:
    """``file:line`` (or the file's name) as an ad's id; mended, as a file name may hold undecodable bytes."""
    return repair_text(path.name if line_no is None else f"{path.name}:{line_no}").text


def _source_of(record: dict, key: str, default: str, repairs: Repairs) -> str:
    source = record.get(key)
    source = repairs(source, key).strip() if isinstance(source, str) else ""
    return source or default


def _line_ads(file: InputFile, report: ReadReport) -> Iterator[JobAd]:
    """One ad per non-blank line; its id is ``file:line``."""
    for line_no, raw in _raw_lines(file, report):
        text = _decode(raw, file.path, line_no, report).rstrip("\r\n")
        ad = _text_file_ad(file, text, line_no, report)
        if ad is not None:
            yield ad


def _whole_file_ad(file: InputFile, report: ReadReport) -> Iterator[JobAd]:
    """The whole file is one ad (blank lines and all); its id is the file name. A file that breaks off gives no
    ad: it would be a truncated one."""
    try:
        with open_binary(file.path) as handle:
            data = handle.read()
    except READ_ERRORS as err:
        report.problem(file.path, 0, FILE_ERROR, _read_error(err), str(err))
        return
    if not data.strip():
        report.problem(file.path, 0, FILE_ERROR, "empty file", "no ads in it")
        return
    ad = _text_file_ad(file, _decode(data, file.path, 1, report), 0, report)
    if ad is not None:
        yield ad


def _text_file_ad(file: InputFile, text: str, line_no: int, report: ReadReport) -> Optional[JobAd]:
    """The ad of a text file (``line_no`` 0: the whole file) by the rules of a JSON Lines one: mended, rejected
    when nothing is left."""
    repairs = Repairs()
    text = repairs(text, "text")
    if not text.strip():
        report.problem(file.path, line_no, REJECTED, "no text once mended", "only control characters")
        return None
    repairs.count(file.path, line_no, report)
    return JobAd(_file_id(file.path, line_no or None), text, file.default_source, str(file.path), line_no)
