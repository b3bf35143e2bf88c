"""Run a pipeline over job-ad files: JSONL out (one line per ad), optional CSV and a printed table.

Inputs are read by ``pipeline.io.jobads`` (the corpus builder's reader too): text or HTML files (one ad, or one
ad per line with ``lines=True``), JSON Lines (``.jsonl``, ``.ndjson``, ``.json``, gzipped or not) with
configurable text and id fields, or a folder of them. A malformed line is skipped with a warning that names
``file:line`` and is counted in the returned summary: never a crash, never silent.

Output, one JSON object per ad::

    {"id": ..., "is_english": true, "truncated_chars": 0,
     "skills": [SkillPrediction.to_dict(), ...],                 # every ad-level prediction, best first
     "sentences": [{"text", "start_char", "end_char", "skills": [...]}, ...]}

Offsets refer to ``doc.text``, the cleaned ad (HTML stripped, entities decoded), not to the raw input;
``truncated_chars`` > 0 when the ad was longer than the tokenizer's cap and its tail was not read.
Only the output contract (``doc._.esco_skills``, ``sent._.esco_skills``) is read, so the matcher-only and the
full pipeline give the same shape.
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, TextIO, Tuple, Union

from spacy.language import Language
from spacy.tokens import Doc, Span
from tqdm import tqdm
from wasabi import table

from pipeline.components.pipes import load_pipeline
from pipeline.components.predictions import SkillPrediction
from pipeline.components.segmenter import LongDocumentWarning, NonEnglishWarning
from pipeline.errors import ConfigError
from pipeline.io.jobads import AdFormat, JobAd, ReadReport, iter_ads, resolve_inputs

CSV_COLUMNS = ("ad_id", "uri", "label", "score", "explicit")

PathLike = Union[str, Path]


# ---------------------------------------------------------------------------------------------- docs → records
def doc_to_record(doc: Doc, ad_id: str) -> Dict[str, Any]:
    """The JSON-able result for one ad (what a JSONL line holds)."""
    return {
        "id": ad_id,
        "is_english": doc._.is_english if doc.has_extension("is_english") else None,
        "truncated_chars": truncated_chars(doc),
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


def truncated_chars(doc: Doc) -> int:
    """Characters the tokenizer cut off a too-long ad (0 if none, or if the pipeline has no such cap)."""
    return int(doc._.truncated_chars or 0) if doc.has_extension("truncated_chars") else 0


def _predictions(doc: Doc) -> List[SkillPrediction]:
    return list(doc._.esco_skills or []) if doc.has_extension("esco_skills") else []


def _sentences(doc: Doc) -> Iterator[Span]:
    sentences = doc.sents if doc.has_annotation("SENT_START") else [doc[:]]
    return (sent for sent in sentences if sent.text.strip())


def pipe_records(nlp: Language, ads: Iterable[JobAd], *, batch_size: int = 32,
                 n_process: int = 1) -> Iterator[Dict[str, Any]]:
    """One record per ad, in order; ``n_process`` > 1 runs spaCy's own worker processes (predictions live in
    ``doc.user_data`` as plain lists, so docs survive the trip back)."""
    pairs = ((ad.text, ad.id) for ad in ads)
    for doc, ad_id in nlp.pipe(pairs, as_tuples=True, batch_size=batch_size, n_process=n_process):
        yield doc_to_record(doc, ad_id)


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
    """What one run did: ads written, and every ad or line that was skipped, repaired, truncated or flagged."""

    n_ads: int = 0
    n_skipped: int = 0
    n_repaired: int = 0
    n_file_errors: int = 0
    n_non_english: int = 0
    n_truncated: int = 0
    n_with_skills: int = 0
    skipped: Dict[str, int] = field(default_factory=dict)
    repaired: Dict[str, int] = field(default_factory=dict)
    file_errors: Dict[str, int] = field(default_factory=dict)

    def add_record(self, record: Dict[str, Any]) -> None:
        self.n_ads += 1
        self.n_non_english += record["is_english"] is False
        self.n_truncated += record.get("truncated_chars", 0) > 0
        self.n_with_skills += bool(record["skills"])

    def add_report(self, report: ReadReport) -> None:
        """The reader's counts by reason (rejected lines are the skipped ones)."""
        totals = report.totals()
        self.skipped, self.repaired, self.file_errors = (
            totals["rejected_lines"], totals["repaired_lines"], totals["file_errors"])
        self.n_skipped = sum(self.skipped.values())
        self.n_repaired = sum(self.repaired.values())
        self.n_file_errors = sum(self.file_errors.values())

    def describe(self) -> str:
        """One line with every count, for a log or the terminal."""
        return (f"{self.n_ads:,} ad(s), {self.n_with_skills:,} with skills; {self.n_skipped:,} line(s) skipped, "
                f"{self.n_repaired:,} repaired, {self.n_file_errors:,} file error(s); {self.n_non_english:,} not "
                f"English; {self.n_truncated:,} truncated")


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
    """Find the ESCO skills of every ad in `input` (a job-ad file or a folder of them).

    Writes JSONL to `output` (to `stream`, default stdout, when there is no output and no table), the top_k
    skills per ad to `csv_path`, and with `print_table` a table per ad to `stream`. `model` is a pipeline
    folder, an installed package name or a loaded Language; `n_process` > 1 uses spaCy's worker processes.
    """
    _check_options(top_k, batch_size, n_process)
    ad_format = AdFormat(text_field=text_field, id_field=id_field, one_per_line=lines)
    ad_format.validate()
    files = resolve_inputs(input)  # a missing or unknown input fails before the pipeline is loaded
    nlp = load_pipeline(model)
    report = ReadReport()
    summary = ExtractSummary()
    with warnings.catch_warnings():
        # Per-ad warnings become one line of the summary (each record carries is_english / truncated_chars).
        warnings.simplefilter("ignore", NonEnglishWarning)
        warnings.simplefilter("ignore", LongDocumentWarning)
        records = pipe_records(nlp, iter_ads(files, ad_format, report), batch_size=batch_size, n_process=n_process)
        _write_records(records, summary, Path(input).name, output, csv_path, top_k, print_table,
                       stream if stream is not None else sys.stdout)
    summary.add_report(report)
    _warn_summary(Path(input), summary)
    return summary


def _check_options(top_k: int, batch_size: int, n_process: int) -> None:
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    if batch_size < 1 or n_process < 1:
        raise ConfigError(f"batch_size and n_process must be >= 1, got {batch_size} and {n_process}")


def _write_records(records: Iterable[Dict[str, Any]], summary: ExtractSummary, desc: str,
                   output: Optional[PathLike], csv_path: Optional[PathLike], top_k: int, print_table: bool,
                   stream: TextIO) -> None:
    """Every record to the JSONL output (or the stream), its top_k skills to the CSV, and maybe a table."""
    jsonl_fallback = stream if output is None and not print_table else None
    with _open_output(output, jsonl_fallback) as jsonl, _open_output(csv_path, None) as csv_file:
        writer = csv.writer(csv_file) if csv_file is not None else None
        if writer is not None:
            writer.writerow(CSV_COLUMNS)
        with tqdm(records, unit="ad", desc=desc, disable=None, file=sys.stderr) as bar:
            for record in bar:
                summary.add_record(record)
                if jsonl is not None:
                    jsonl.write(json.dumps(record, ensure_ascii=False) + "\n")
                if writer is not None:
                    writer.writerows(csv_rows(record, top_k))
                if print_table:
                    bar.write(format_ad_table(record, top_k) + "\n", file=stream)


def _warn_summary(input: Path, summary: ExtractSummary) -> None:
    """One warning per kind of trouble for the whole input, with counts (the reader warned the first lines)."""
    for what, counts in (("skipped", summary.skipped), ("repaired", summary.repaired),
                         ("could not read to the end", summary.file_errors)):
        if counts:
            reasons = "; ".join(f"{n:,} × {reason}" for reason, n in Counter(counts).most_common())
            warnings.warn(f"'{input}': {what}: {reasons}.", UserWarning, stacklevel=3)
    if summary.n_non_english:
        warnings.warn(
            f"'{input}': {summary.n_non_english:,} of {summary.n_ads:,} ad(s) do not look like English "
            "(\"is_english\": false in the output); ESCO labels are English, so their skills are unreliable.",
            UserWarning,
            stacklevel=3,
        )
    if summary.n_truncated:
        warnings.warn(
            f"'{input}': {summary.n_truncated:,} of {summary.n_ads:,} ad(s) were longer than the tokenizer's cap "
            "and were cut (\"truncated_chars\" in the output); skills in the cut tail are not found.",
            UserWarning,
            stacklevel=3,
        )
    if summary.n_ads == 0:
        warnings.warn(f"'{input}': no ad was read.", UserWarning, stacklevel=3)
