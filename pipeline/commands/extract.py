"""Run a pipeline over job-ad files: JSONL out (one line per ad), optional CSV and a printed table.

Inputs: a text or HTML file (one ad, or one ad per line with ``lines=True``), ``.jsonl`` / ``.jsonl.gz``
(any ``.json`` / ``.ndjson`` too) with configurable text and id fields. A malformed line is skipped with a
warning that names ``file:line`` and is counted in the returned summary: never a crash, never silent.

Output, one JSON object per ad::

    {"id": ..., "is_english": true,
     "skills": [SkillPrediction.to_dict(), ...],                 # every ad-level prediction, best first
     "sentences": [{"text", "start_char", "end_char", "skills": [...]}, ...]}

Offsets refer to ``doc.text``, the cleaned ad (HTML stripped, entities decoded), not to the raw input.
Only the output contract (``doc._.esco_skills``, ``sent._.esco_skills``) is read, so the matcher-only and the
full pipeline give the same shape.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import multiprocessing
import sys
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Dict, Iterable, Iterator, List, Optional, TextIO, Tuple, Union

import spacy
from spacy.language import Language
from spacy.tokens import Doc, Span
from tqdm import tqdm
from wasabi import table

from pipeline.errors import ConfigError, EscoDataError
from pipeline.components.predictions import SkillPrediction

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_COLUMNS = ("ad_id", "uri", "label", "score", "explicit")
MAX_LINE_WARNINGS = 20
NON_ENGLISH_WARNING = "Text does not look like English"
GZIP_MAGIC = b"\x1f\x8b"

PathLike = Union[str, Path]


# ---------------------------------------------------------------------------------------------- loading
def load_pipeline(model: Union[PathLike, Language]) -> Language:
    """A pipeline folder or the name of an installed pipeline package (``spacy.load`` handles both)."""
    if isinstance(model, Language):
        return model
    try:
        return spacy.load(str(model))  # a str, so that a package name given as a CLI Path still resolves
    except OSError as err:
        raise FileNotFoundError(
            f"Could not load a spaCy pipeline from '{model}': give a folder written by `assemble` or `train`, "
            f"or the name of an installed pipeline package. ({err})"
        ) from err


@contextmanager
def open_binary(path: PathLike) -> Iterator[IO[bytes]]:
    """Open a file for reading bytes, decompressing gzip (found by its magic bytes, not its name)."""
    path = Path(path)
    if not path.is_file():
        raise EscoDataError(f"Input file '{path}' not found (or not a file).")
    with open(path, "rb") as raw:
        compressed = raw.read(2) == GZIP_MAGIC
    with (gzip.open(path, "rb") if compressed else open(path, "rb")) as handle:
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
        except (OSError, EOFError) as err:
            raise EscoDataError(f"'{path}' could not be read to the end (truncated or corrupt?): {err}") from err


# ---------------------------------------------------------------------------------------------- reading
@dataclass
class Ad:
    id: str
    text: str


@dataclass
class ReadReport:
    """What was skipped while reading, by reason; the first lines are also warned about one by one."""

    skipped: Counter = field(default_factory=Counter)
    warned: int = 0

    def skip(self, where: str, reason: str) -> None:
        self.skipped[reason] += 1
        if self.warned < MAX_LINE_WARNINGS:
            self.warned += 1
            warnings.warn(f"{where}: {reason}; skipped.", UserWarning, stacklevel=3)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())


def is_jsonl(path: PathLike) -> bool:
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] in JSONL_SUFFIXES


def iter_ads(
    path: PathLike,
    *,
    text_field: str = "description",
    id_field: str = "id",
    lines: bool = False,
    report: Optional[ReadReport] = None,
) -> Iterator[Ad]:
    """Ads from a JSONL file (by suffix) or a text/HTML file (whole file, or one ad per line)."""
    path = Path(path)
    report = report if report is not None else ReadReport()
    if is_jsonl(path):
        yield from _iter_jsonl(path, text_field, id_field, report)
        return
    if not lines:
        with open_binary(path) as handle:
            data = handle.read()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise EscoDataError(f"'{path}' is not UTF-8 text: {err}") from err
        if text.strip():
            yield Ad(path.name, text)
        else:
            report.skip(str(path), "the file is empty")
        return
    for number, text in _decoded_lines(path, report):
        if text.strip():
            yield Ad(f"{path.name}:{number}", text)


def _decoded_lines(path: Path, report: ReadReport) -> Iterator[Tuple[int, str]]:
    for number, raw in read_lines(path):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            report.skip(f"{path}:{number}", f"not UTF-8 ({err.reason} at byte {err.start})")
            continue
        yield number, text.rstrip("\r\n")


def _iter_jsonl(path: Path, text_field: str, id_field: str, report: ReadReport) -> Iterator[Ad]:
    for number, line in _decoded_lines(path, report):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            report.skip(where, f"not valid JSON ({err.msg})")
            continue
        if not isinstance(record, dict):
            report.skip(where, f"a JSON {type(record).__name__}, not an object")
            continue
        text = record.get(text_field)
        if not isinstance(text, str):
            report.skip(where, f"no text field '{text_field}'" if text is None else f"'{text_field}' is not a string")
            continue
        if not text.strip():
            report.skip(where, f"'{text_field}' is empty")
            continue
        ad_id = record.get(id_field)
        yield Ad(str(ad_id) if ad_id is not None else f"{path.name}:{number}", text)


# ---------------------------------------------------------------------------------------------- docs → records
def doc_to_record(doc: Doc, ad_id: str) -> Dict[str, Any]:
    """The JSON-able result for one ad (what a JSONL line holds)."""
    return {
        "id": ad_id,
        "is_english": doc._.is_english if doc.has_extension("is_english") else None,
        "skills": [pred.to_dict() for pred in _predictions(doc)],
        "sentences": [
            {
                "text": sent.text,
                "start_char": sent.start_char,
                "end_char": sent.end_char,
                "skills": [pred.to_dict() for pred in (sent._.esco_skills or [])],
            }
            for sent in _sentences(doc)
        ],
    }


def _predictions(doc: Doc) -> List[SkillPrediction]:
    return list(doc._.esco_skills or []) if doc.has_extension("esco_skills") else []


def _sentences(doc: Doc) -> Iterator[Span]:
    sentences = doc.sents if doc.has_annotation("SENT_START") else [doc[:]]
    return (sent for sent in sentences if sent.text.strip())


def pipe_records(nlp: Language, ads: Iterable[Ad], *, batch_size: int = 32) -> Iterator[Dict[str, Any]]:
    """One record per ad, in order, in this process."""
    pairs = ((ad.text, ad.id) for ad in ads)
    for doc, ad_id in nlp.pipe(pairs, as_tuples=True, batch_size=batch_size):
        yield doc_to_record(doc, ad_id)


def _quiet_language_warning() -> None:
    """Inside ``warnings.catch_warnings()``: the segmenter warns once per non-English ad; extract_file
    counts those ads (``is_english`` in each record) and warns once for the file instead."""
    warnings.filterwarnings("ignore", message=NON_ENGLISH_WARNING)


# Multi-process: spaCy's own n_process ships Docs between processes as bytes, and the SkillPrediction objects
# in doc._ do not serialize; here each worker loads the pipeline once and sends back plain records.
_WORKER_NLP: Optional[Language] = None


def _init_worker(model: str) -> None:
    global _WORKER_NLP
    _WORKER_NLP = load_pipeline(model)


def _records_for_batch(args: Tuple[List[Ad], int]) -> List[Dict[str, Any]]:
    ads, batch_size = args
    assert _WORKER_NLP is not None, "worker not initialized"
    with warnings.catch_warnings():
        _quiet_language_warning()
        return list(pipe_records(_WORKER_NLP, ads, batch_size=batch_size))


def _batches(ads: Iterable[Ad], size: int) -> Iterator[List[Ad]]:
    batch: List[Ad] = []
    for ad in ads:
        batch.append(ad)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def pipe_records_parallel(
    model: PathLike, ads: Iterable[Ad], *, batch_size: int = 32, n_process: int = 2
) -> Iterator[Dict[str, Any]]:
    """Like ``pipe_records`` over ``n_process`` worker processes (each loads the pipeline once); order kept."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(n_process, initializer=_init_worker, initargs=(str(model),)) as pool:
        jobs = ((batch, batch_size) for batch in _batches(ads, batch_size))
        for records in pool.imap(_records_for_batch, jobs):
            yield from records


# ---------------------------------------------------------------------------------------------- output
def format_ad_table(record: Dict[str, Any], top_k: int = 10) -> str:
    """A readable table of one ad's top_k skills: label, explicit/implicit, score, mention, ESCO URI."""
    skills = record["skills"][:top_k]
    title = f"ad {record['id']}: {len(record['skills'])} skill(s)"
    if len(record["skills"]) > top_k:
        title += f", top {top_k} shown"
    if record.get("is_english") is False:
        title += " (does not look like English)"
    if not skills:
        return f"{title}\n  (no ESCO skill found)"
    rows = [
        (
            str(rank),
            _clip(skill["label"], 50),
            "explicit" if skill["explicit"] else "implicit",
            f"{skill['score']:.3f}",
            _clip(" | ".join(dict.fromkeys(span["text"] for span in skill["spans"])) or "-", 40),
            skill["uri"],
        )
        for rank, skill in enumerate(skills, start=1)
    ]
    header = ("#", "ESCO skill", "kind", "score", "mention", "ESCO URI")
    return title + "\n" + table(rows, header=header, divider=True, aligns=("r", "l", "l", "r", "l", "l"),
                                max_col=100)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def csv_rows(record: Dict[str, Any], top_k: int) -> Iterator[Tuple[str, str, str, float, bool]]:
    for skill in record["skills"][:top_k]:
        yield record["id"], skill["uri"], skill["label"], skill["score"], skill["explicit"]


@contextmanager
def _open_output(path: Optional[PathLike], fallback: Optional[TextIO]) -> Iterator[Optional[TextIO]]:
    if path is None:
        yield fallback
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gz":
        with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
            yield handle
    else:
        with open(path, "w", encoding="utf-8", newline="") as handle:
            yield handle


@dataclass
class ExtractSummary:
    n_ads: int = 0
    n_skipped: int = 0
    n_non_english: int = 0
    n_with_skills: int = 0
    skipped: Dict[str, int] = field(default_factory=dict)


def extract_file(
    model: Union[PathLike, Language],
    input: PathLike,
    output: Optional[PathLike] = None,
    *,
    csv_path: Optional[PathLike] = None,
    text_field: str = "description",
    id_field: str = "id",
    lines: bool = False,
    top_k: int = 10,
    print_table: bool = False,
    batch_size: int = 32,
    n_process: int = 1,
    stream: Optional[TextIO] = None,
) -> ExtractSummary:
    """Find the ESCO skills of every ad in `input`.

    Writes JSONL to `output` (to `stream`, default stdout, when there is no output and no table), the top_k
    skills per ad to `csv_path`, and with `print_table` a table per ad to `stream`. `model` is a pipeline
    folder, an installed package name or (single process only) a loaded Language.
    """
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    if batch_size < 1 or n_process < 1:
        raise ConfigError(f"batch_size and n_process must be >= 1, got {batch_size} and {n_process}")
    if n_process > 1 and isinstance(model, Language):
        raise ConfigError("n_process > 1 needs the pipeline's folder or package name, not a loaded pipeline")
    input = Path(input)
    if not input.is_file():
        raise EscoDataError(f"Input file '{input}' not found (or not a file).")
    stream = stream if stream is not None else sys.stdout
    report = ReadReport()
    ads = iter_ads(input, text_field=text_field, id_field=id_field, lines=lines, report=report)
    if n_process > 1:
        _check_model(model)  # fail here, with a clear message, rather than in every worker
        records = pipe_records_parallel(model, ads, batch_size=batch_size, n_process=n_process)
    else:
        records = pipe_records(load_pipeline(model), ads, batch_size=batch_size)
    summary = ExtractSummary()
    jsonl_fallback = stream if output is None and not print_table else None
    with warnings.catch_warnings(), _open_output(output, jsonl_fallback) as jsonl, \
            _open_output(csv_path, None) as csv_file:
        _quiet_language_warning()
        writer = csv.writer(csv_file) if csv_file is not None else None
        if writer is not None:
            writer.writerow(CSV_COLUMNS)
        with tqdm(records, unit="ad", desc=input.name, disable=None, file=sys.stderr) as bar:
            for record in bar:
                summary.n_ads += 1
                summary.n_non_english += record["is_english"] is False
                summary.n_with_skills += bool(record["skills"])
                if jsonl is not None:
                    jsonl.write(json.dumps(record, ensure_ascii=False) + "\n")
                if writer is not None:
                    writer.writerows(csv_rows(record, top_k))
                if print_table:
                    bar.write(format_ad_table(record, top_k) + "\n", file=stream)
    summary.n_skipped = report.n_skipped
    summary.skipped = dict(report.skipped)
    _warn_summary(input, summary)
    return summary


def _check_model(model: PathLike) -> None:
    if not (Path(model).exists() or spacy.util.is_package(str(model))):
        raise FileNotFoundError(
            f"Could not load a spaCy pipeline from '{model}': no such folder and no installed package of that name."
        )


def _warn_summary(input: Path, summary: ExtractSummary) -> None:
    if summary.n_skipped:
        reasons = "; ".join(f"{n:,} × {reason}" for reason, n in Counter(summary.skipped).most_common())
        warnings.warn(f"'{input}': skipped {summary.n_skipped:,} line(s): {reasons}.", UserWarning, stacklevel=3)
    if summary.n_non_english:
        warnings.warn(
            f"'{input}': {summary.n_non_english:,} of {summary.n_ads:,} ad(s) do not look like English "
            "(\"is_english\": false in the output); ESCO labels are English, so their skills are unreliable.",
            UserWarning,
            stacklevel=3,
        )
    if summary.n_ads == 0:
        warnings.warn(f"'{input}': no ad was read.", UserWarning, stacklevel=3)
