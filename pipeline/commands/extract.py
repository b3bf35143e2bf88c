"""Run a pipeline over job-ad files: JSONL out (one line per ad), optional CSV, HTML and a printed table.

Inputs are read by ``pipeline.io.jobads`` (the corpus builder's reader too): text or HTML files (one ad, or one
ad per line with ``lines=True``), JSON Lines (``.jsonl``, ``.ndjson``, ``.json``, gzipped or not) with
configurable text and id fields, or a folder of them. A malformed line is skipped with a warning that names
``file:line`` and is counted in the returned summary: never a crash, never silent. An ad whose processing raises
fails alone (``commands.isolation``): it is counted by error class in the summary, warned about and written to
``<output>.failed.jsonl`` (``io.failures``), and the run goes on; ``fail_fast`` raises instead.

Output, one JSON object per ad::

    {"id": ..., "is_english": true, "truncated_chars": 0,
     "skills": [SkillPrediction.to_dict(), ...],     # the decided set: what the ad asks for, best first
     "ranking": [SkillPrediction.to_dict(), ...],    # every ranked prediction of the ad, best first
     "sentences": [{"text", "start_char", "end_char",
                    "skills": [...],                 # the sentence's decided set
                    "ranking": [...],                # the sentence's ranking
                    "no_skill_reason": str | null}, ...]}

A prediction is ``{"uri", "label", "score", "explicit", "spans": [{"start_char", "end_char", "text"}],
"evidence": [{"start_char", "end_char", "text"}], "probability", "label_score"}``: ``probability`` (calibrated) is
there for set members a decider decided, ``label_score`` (the cosine with the preferred label alone) when the
ranker scores a skill over several of its labels, ``evidence`` holds the words that support the prediction (the
mention of a literal one). ``no_skill_reason`` says why a sentence's set is empty when something decided so:
``"boilerplate"``, ``"section:<name>"``, ``"heading"`` (the boilerplate filter), ``"no_skill"`` (the decider's
gate); ``null`` otherwise. Without a decider the set holds the literal matches of sentences no filter skipped.

Offsets refer to ``doc.text``, the cleaned ad (HTML stripped, entities decoded), not to the raw input;
``truncated_chars`` > 0 when the ad was longer than the tokenizer's cap and its tail was not read.
Only the output contract (``doc._.esco_skill_set``, ``doc._.esco_skills`` and their sentence versions) is read,
so the matcher-only and the full pipeline give the same shape.

The CSV holds the set, one row per (ad, skill): ``ad_id, uri, label, score, explicit, probability, evidence``
(evidence words joined by `` | ``); ``ranking=True`` writes every ranked row instead. The table (``--table``) is
an ad-level summary of the set (each skill with its evidence words), under a line that says which model made it
(``describe_model``: trained or not, calibrated or not, and how to get the trained one); ``html_path`` writes
the view of every ad (``commands.render``).
"""

from __future__ import annotations

import csv
import functools
import gzip
import json
import sys
import warnings
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, TextIO, Tuple, Union

from spacy.language import Language
from spacy.tokens import Doc, Span
from tqdm import tqdm
from wasabi import table

from pipeline.commands.isolation import AdOutcome, pipe_isolated
from pipeline.commands.render import CONTENT_SLOT, PAGE, render_ad, sentences_of
from pipeline.components.pipes import DECIDER, RANKER, RERANKER, load_pipeline
from pipeline.components.predictions import SkillPrediction
from pipeline.components.segmenter import LongDocumentWarning, NonEnglishWarning
from pipeline.errors import ConfigError
from pipeline.io.failures import FailedAd, FailedAdsFile, failed_path
from pipeline.io.jobads import ID_FIELD, TEXT_FIELD, AdFormat, JobAd, ReadReport, iter_ads, resolve_inputs
from pipeline.io.records import CSV_COLUMNS, ExtractSummary, csv_rows, evidence_text

SENTENCE_CLIP = 60  # characters of a sentence shown in the table
SENTENCES_SHOWN = 2  # sentences shown per skill in the table
EVIDENCE_CLIP = 40  # characters of a skill's evidence words shown in the table
FAILURES_WARNED = 10  # failed ads named one by one in the run's warning (all are in the failed file and counts)

PathLike = Union[str, Path]


# ---------------------------------------------------------------------------------------------- docs → records
def doc_to_record(doc: Doc, ad_id: str) -> Dict[str, Any]:
    """The JSON-able result for one ad (what a JSONL line holds; see the module docstring)."""
    return {
        "id": ad_id,
        "is_english": doc._.is_english if doc.has_extension("is_english") else None,
        "truncated_chars": truncated_chars(doc),
        "skills": [pred.to_dict() for pred in _contract(doc, "esco_skill_set")],
        "ranking": [pred.to_dict() for pred in _contract(doc, "esco_skills")],
        "sentences": [
            {
                "text": sent.text,
                "start_char": sent.start_char,
                "end_char": sent.end_char,
                "skills": [pred.to_dict() for pred in _contract(sent, "esco_skill_set")],
                "ranking": [pred.to_dict() for pred in _contract(sent, "esco_skills")],
                "no_skill_reason": sent._.esco_no_skill_reason if sent.has_extension("esco_no_skill_reason")
                else None,
            }
            for sent in sentences_of(doc)
        ],
    }


def truncated_chars(doc: Doc) -> int:
    """Characters the tokenizer cut off a too-long ad (0 if none, or if the pipeline has no such cap)."""
    return int(doc._.truncated_chars or 0) if doc.has_extension("truncated_chars") else 0


def _contract(item: Union[Doc, Span], extension: str) -> List[SkillPrediction]:
    """The predictions under ``extension`` of a doc or a span; none when no component registered it."""
    return list(item._.get(extension) or []) if item.has_extension(extension) else []


@contextmanager
def per_ad_warnings_silenced() -> Iterator[None]:
    """Silence the segmenter's per-ad warnings (non-English, truncated): a run counts them instead, as every
    record carries ``is_english`` and ``truncated_chars`` (one line of the summary, not one warning per ad)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonEnglishWarning)
        warnings.simplefilter("ignore", LongDocumentWarning)
        yield


def pipe_docs(nlp: Language, ads: Iterable[JobAd], *, batch_size: int = 32,
              n_process: int = 1) -> Iterator[Tuple[Doc, str]]:
    """(doc, ad id) per ad, in order; ``n_process`` > 1 runs spaCy's own worker processes (predictions live in
    ``doc.user_data`` as plain lists, so docs survive the trip back)."""
    pairs = ((ad.text, ad.id) for ad in ads)
    yield from nlp.pipe(pairs, as_tuples=True, batch_size=batch_size, n_process=n_process)


def pipe_records(nlp: Language, ads: Iterable[JobAd], *, batch_size: int = 32,
                 n_process: int = 1) -> Iterator[Dict[str, Any]]:
    """One record per ad, in order (see :func:`pipe_docs`)."""
    for doc, ad_id in pipe_docs(nlp, ads, batch_size=batch_size, n_process=n_process):
        yield doc_to_record(doc, ad_id)


# ---------------------------------------------------------------------------------------------- the table
TRAIN_HINT = ("not the trained model: make corpus && make train trains it (about 35 minutes), then make run uses "
              "build/model")


def describe_model(nlp: Language) -> str:
    """Which model the table's predictions come from, read from what the pipeline holds (its pipes, the training
    summary and the calibration in its meta): an untrained encoder must not pass for the trained pipeline."""
    if RANKER not in nlp.pipe_names:
        return f"model: literal matcher only (explicit skills, no implied ones)\n{TRAIN_HINT}"
    training = (nlp.meta.get("esco") or {}).get("training")
    name = nlp.config["components"][RANKER]["encoder"]["name"]
    encoder = f"trained encoder (from {name}, seed {training.get('seed')})" if training \
        else f"untrained encoder ({name} as published)"
    reranker = " + cross-encoder reranker" if RERANKER in nlp.pipe_names else ""
    return f"model: {encoder}{reranker}, {_decider_description(nlp)}" + ("" if training else f"\n{TRAIN_HINT}")


def _decider_description(nlp: Language) -> str:
    if DECIDER not in nlp.pipe_names or not nlp.get_pipe(DECIDER).calibrated:
        return ("decider uncalibrated: literal matches only, no implied skill (python -m pipeline calibrate MODEL "
                "--validation <benchmark file> calibrates it)")
    calibration = nlp.meta.get("calibration") or {}
    files = (calibration.get("fitted_on") or {}).get("validation")
    gate = "boilerplate gate fitted on a corpus" if "gate" in calibration else "no corpus: boilerplate gate open"
    return f"decisions calibrated on the benchmark files{' ' + ' + '.join(files) if files else ''} ({gate})"


def format_ad_table(record: Dict[str, Any], top_k: int = 10) -> str:
    """An ad-level summary of one record: the skills the ad asks for (its set), explicit and implied apart, each
    with its probability and the sentences that ask for it; then the sentences that ask for none, by reason."""
    skills = record["skills"]
    explicit = [skill for skill in skills if skill["explicit"]]
    implied = [skill for skill in skills if not skill["explicit"]]
    title = f"ad {record['id']}: {len(skills)} skill(s) asked for ({len(explicit)} explicit, {len(implied)} implied)"
    if record.get("is_english") is False:
        title += " (does not look like English)"
    parts = [title]
    if not skills:
        parts.append("  (no ESCO skill asked for)")
    for name, group in (("Explicit (named in the ad)", explicit), ("Implied", implied)):
        if group:
            parts.append(_skill_table(name, group, _asking_sentences(record), top_k))
    parts.append(_reasons_line(record))
    return "\n".join(parts)


def _skill_table(name: str, skills: List[Dict[str, Any]], asking: Dict[str, List[str]], top_k: int) -> str:
    title = f"{name}: {len(skills)}" + (f", top {top_k} shown" if len(skills) > top_k else "")
    rows = [
        (
            str(rank),
            _clip(skill["label"], 45),
            _probability(skill),
            _clip(evidence_text(skill), EVIDENCE_CLIP) or "-",
            _sentence_cell(asking.get(skill["uri"], [])),
            skill["uri"],
        )
        for rank, skill in enumerate(skills[:top_k], start=1)
    ]
    header = ("#", "ESCO skill", "prob.", "evidence", "asked for in", "ESCO URI")
    return title + "\n" + table(rows, header=header, divider=True, aligns=("r", "l", "r", "l", "l", "l"), max_col=100)


def _asking_sentences(record: Dict[str, Any]) -> Dict[str, List[str]]:
    """URI → the texts of the sentences whose set holds it, in order."""
    asking: Dict[str, List[str]] = {}
    for sentence in record["sentences"]:
        for skill in sentence["skills"]:
            asking.setdefault(skill["uri"], []).append(sentence["text"])
    return asking


def _sentence_cell(texts: List[str]) -> str:
    if not texts:
        return "-"
    cell = " | ".join(f'"{_clip(text, SENTENCE_CLIP)}"' for text in texts[:SENTENCES_SHOWN])
    return cell + (f" (+{len(texts) - SENTENCES_SHOWN} more)" if len(texts) > SENTENCES_SHOWN else "")


def _probability(skill: Dict[str, Any]) -> str:
    """The calibrated probability; "-" for a member no decider gave one (a literal match without a decider)."""
    return f"{skill['probability']:.2f}" if skill.get("probability") is not None else "-"


def _reasons_line(record: Dict[str, Any]) -> str:
    reasons = Counter(s["no_skill_reason"] for s in record["sentences"] if s.get("no_skill_reason"))
    described = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    line = f"sentences: {len(record['sentences'])}, asking for no skill: {sum(reasons.values())}"
    return line + (f" ({described})" if described else "")


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# ---------------------------------------------------------------------------------------------- files
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


class HtmlWriter:
    """One standalone page with every ad's view (``html_section``), written as the ads come."""

    def __init__(self, handle: TextIO):
        self.handle = handle
        head, self.tail = PAGE.split(CONTENT_SLOT)
        handle.write(head)

    def write(self, section: str) -> None:
        self.handle.write(section)

    def close(self) -> None:
        self.handle.write(self.tail)


def html_section(doc: Doc, ad_id: str, top_k: int) -> str:
    """One ad's part of the HTML page: its view under its id (``render_ad``, what ``serve``'s page shows)."""
    return render_ad(doc, top_k, ad_id=ad_id) + "\n"


@dataclass
class Outputs:
    """Where records go: JSONL, CSV (the set, or every ranked row), HTML, a table per ad."""

    output: Optional[PathLike] = None
    csv_path: Optional[PathLike] = None
    html_path: Optional[PathLike] = None
    ranking: bool = False
    print_table: bool = False
    top_k: int = 10


@dataclass
class AdOutput:
    """Everything one ad writes, made before any of it is written: an ad that fails leaves no half trace."""

    record: Dict[str, Any]
    csv_rows: List[tuple] = field(default_factory=list)
    html: Optional[str] = None
    table: Optional[str] = None


def ad_output(doc: Doc, ad: JobAd, outputs: Outputs) -> AdOutput:
    """The record of one ad and what the other outputs asked for make of it."""
    record = doc_to_record(doc, ad.id)
    return AdOutput(record, list(csv_rows(record, outputs.ranking)) if outputs.csv_path is not None else [],
                    html_section(doc, ad.id, outputs.top_k) if outputs.html_path is not None else None,
                    format_ad_table(record, outputs.top_k) if outputs.print_table else None)


def extract_file(
    model: Union[PathLike, Language],
    input: PathLike,
    output: Optional[PathLike] = None,
    *,
    csv_path: Optional[PathLike] = None,
    html_path: Optional[PathLike] = None,
    ranking: bool = False,
    text_field: str = TEXT_FIELD,
    id_field: str = ID_FIELD,
    lines: bool = False,
    top_k: int = 10,
    print_table: bool = False,
    batch_size: int = 32,
    n_process: int = 1,
    stream: Optional[TextIO] = None,
    fail_fast: bool = False,
) -> ExtractSummary:
    """Find the ESCO skills of every ad in `input` (a job-ad file or a folder of them).

    Writes JSONL to `output` (to `stream`, default stdout, when there is no output, no table and no HTML), each
    ad's set to `csv_path` (every ranked row with `ranking`), the view of every ad to `html_path`, and
    with `print_table` a summary per ad (at most `top_k` skills of each kind) to `stream`. `model` is a pipeline
    folder, an installed package name or a loaded Language; `n_process` > 1 uses spaCy's worker processes.
    An ad whose processing raises is counted, warned about and written to ``failed_path(output)`` (with an
    `output`); `fail_fast` raises the first such exception instead.
    """
    _check_options(top_k, batch_size, n_process)
    ad_format = AdFormat(text_field=text_field, id_field=id_field, one_per_line=lines)
    ad_format.validate()
    files = resolve_inputs(input)  # a missing or unknown input fails before the pipeline is loaded
    nlp = load_pipeline(model)
    report = ReadReport()
    summary = ExtractSummary()
    outputs = Outputs(output, csv_path, html_path, ranking, print_table, top_k)
    failures: List[FailedAd] = []
    stream = stream if stream is not None else sys.stdout
    if print_table:
        stream.write(describe_model(nlp) + "\n\n")
    with per_ad_warnings_silenced(), ExitStack() as stack:
        failed_file = stack.enter_context(FailedAdsFile(failed_path(output))) if output is not None else None
        outcomes = pipe_isolated(nlp, iter_ads(files, ad_format, report),
                                 functools.partial(ad_output, outputs=outputs), batch_size=batch_size,
                                 n_process=n_process, fail_fast=fail_fast)
        for failure in _write_outcomes(outcomes, summary, Path(input).name, outputs, stream):
            summary.add_failed(failure)
            if failed_file is not None:
                failed_file.write(failure)
            if len(failures) < FAILURES_WARNED:
                failures.append(failure)
    summary.add_report(report)
    _warn_summary(Path(input), summary)
    _warn_failures(failures, summary, failed_path(output) if output is not None else None)
    return summary


def _check_options(top_k: int, batch_size: int, n_process: int) -> None:
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    if batch_size < 1 or n_process < 1:
        raise ConfigError(f"batch_size and n_process must be >= 1, got {batch_size} and {n_process}")


def _write_outcomes(outcomes: Iterable[AdOutcome[AdOutput]], summary: ExtractSummary, desc: str, outputs: Outputs,
                    stream: TextIO) -> Iterator[FailedAd]:
    """Every ad's record to the JSONL output (or the stream), its rows to the CSV, its view to the HTML page, and
    maybe a table; the failed ads are handed back, in order."""
    jsonl_fallback = stream if outputs.output is None and not outputs.print_table and outputs.html_path is None \
        else None
    with ExitStack() as stack:
        jsonl = stack.enter_context(_open_output(outputs.output, jsonl_fallback))
        csv_file = stack.enter_context(_open_output(outputs.csv_path, None))
        html_file = stack.enter_context(_open_output(outputs.html_path, None))
        writer = csv.writer(csv_file) if csv_file is not None else None
        if writer is not None:
            writer.writerow(CSV_COLUMNS)
        html = HtmlWriter(html_file) if html_file is not None else None
        with tqdm(outcomes, unit="ad", desc=desc, disable=None, file=sys.stderr) as bar:
            for outcome in bar:
                if outcome.failure is not None:
                    yield outcome.failure
                    continue
                out = outcome.result
                summary.add_record(out.record)
                if jsonl is not None:
                    jsonl.write(json.dumps(out.record, ensure_ascii=False) + "\n")
                if writer is not None:
                    writer.writerows(out.csv_rows)
                if html is not None:
                    html.write(out.html)
                if out.table is not None:
                    bar.write(out.table + "\n", file=stream)
        if html is not None:
            html.close()


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
    if summary.n_ads == 0 and summary.n_failed == 0:
        warnings.warn(f"'{input}': no ad was read.", UserWarning, stacklevel=3)


def _warn_failures(first: List[FailedAd], summary: ExtractSummary, path: Optional[Path]) -> None:
    """One warning for the ads that failed: how many by error class, where they are listed, the first few."""
    if not summary.n_failed:
        return
    by_error = "; ".join(f"{n:,} × {error}" for error, n in Counter(summary.failed).most_common())
    listed = f"listed in '{path}'" if path is not None else "not listed in a file (no --output)"
    shown = "".join(f"\n  {failure.describe()}" for failure in first)
    more = f"\n  … and {summary.n_failed - len(first):,} more" if summary.n_failed > len(first) else ""
    warnings.warn(f"{summary.n_failed:,} ad(s) failed and were left out ({by_error}), {listed}:{shown}{more}",
                  UserWarning, stacklevel=3)
