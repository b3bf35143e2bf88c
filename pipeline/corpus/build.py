"""The distant-supervision corpus: job ads → sentences labelled with the ESCO skills the literal matcher finds.

``build_corpus`` streams the ads twice and writes ``OUTPUT/dataset`` (a ``datasets.DatasetDict`` on disk: splits
``train``, ``dev``, ``unmatched``) and ``OUTPUT/manifest.json`` (counts of every stage, skill coverage, overall and
per source; ``corpora/README.md`` describes it). Stages, in order — each drop is counted, never silent:

1. **read** JSON Lines (``.jsonl``, ``.jsonl.gz``; configurable text / id / source fields) and plain-text files
   (one ad per file). Malformed JSON, a missing or empty text field, non-UTF-8 bytes (replaced), an empty file or
   a truncated gzip are reported with file and line, counted and skipped: they never stop the run halfway.
2. **clean** ``clean_job_ad`` (HTML, entities, mojibake; paragraphs, list items and bullets become line breaks);
   lines over ``max_line_chars`` are split with ``split_long_line``. Cleaned lines are spilled to a temporary file
   so that the second pass does not clean again.
3. **boilerplate** a line found in ``boilerplate_min_ads`` or more distinct ads (compared lower-cased, without
   punctuation, digits folded: "Closing date 12/03/2020" is one line) is boilerplate — equal-opportunity
   statements, "apply now" — unless the matcher finds a skill in it. Boilerplate is dropped.
4. **dedupe** lines, then the sentences of the remaining lines, are deduplicated over the whole corpus (same
   normalization, digits kept). The first occurrence wins; later ones are counted.
5. **filter** sentences (the segmenter's: line breaks and sentence punctuation) must look English and have
   ``min_words``..``max_words`` words.
6. **match** the literal matcher runs over unique lines only. A sentence with a match is an example (``train`` or
   ``dev``, split by ad with a seeded hash, so no ad is in both); the others go to ``unmatched``.

Memory stays flat in the number of ads except for sets of 8-byte line hashes (bounded by the distinct lines) and
one float per ad (to size the dev split exactly). Masking is not baked in: examples keep their mention offsets and
``pipeline.training.masking`` masks them at training time.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
import zlib
from array import array
from collections import Counter, defaultdict, deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from pipeline import ESCO_ATTRIBUTION, __version__
from pipeline.errors import ConfigError, EscoDataError
from pipeline.io.text import clean_job_ad, is_english, iter_lines, split_long_line

if TYPE_CHECKING:  # pragma: no cover
    from datasets import DatasetDict
    from spacy.language import Language

MANIFEST_FILE = "manifest.json"
DATASET_DIR = "dataset"
SPLITS = ("train", "dev", "unmatched")
MATCHED_COLUMNS = ("text", "uris", "mentions", "ad_id", "source")
UNMATCHED_COLUMNS = ("text", "ad_id", "source")
SCHEMA_VERSION = 1
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
TEXT_SUFFIXES = (".txt",)
MATCHER_PIPES = ("esco_job_ad_segmenter", "esco_token_normalizer", "esco_skill_matcher")
MAX_WARNINGS = 10
MAX_PROBLEMS_LISTED = 200
TOP_SKILLS = 50
TOP_BOILERPLATE = 20
FREQUENCY_BUCKETS = ((1, 1), (2, 4), (5, 9), (10, 49), (50, 99), (100, 999), (1000, None))
ADS_PER_CLEAN_TASK = 64
LINES_PER_MATCH_TASK = 512
MAX_SHARD_BYTES = 500 * 1024 * 1024

Mention = Tuple[int, int, str]  # start, end, uri (character offsets into the sentence)
SentenceResult = Tuple[int, str, Optional[str], Optional[List[Mention]]]  # key, status, text, mentions
LineResult = Tuple[int, List[SentenceResult]]  # matches in the whole line, its sentences


class CorpusInputWarning(UserWarning):
    """A line or file of the job-ad input was skipped or repaired (the manifest counts every case)."""


# ---------------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class CorpusSettings:
    """Every knob of the corpus build; recorded in the manifest."""

    text_field: str = "description"
    id_field: str = "id"
    source_field: str = "source"
    limit: Optional[int] = None
    dev_fraction: float = 0.05
    seed: int = 0
    min_words: int = 3
    max_words: int = 100
    max_line_chars: int = 500
    boilerplate_min_ads: int = 20
    min_foreign_share: float = 0.1

    def validate(self) -> None:
        checks = (
            (self.limit is None or self.limit >= 1, "limit", "must be >= 1 (leave it unset for all ads)"),
            (0.0 <= self.dev_fraction < 1.0, "dev_fraction", "must be in [0, 1)"),
            (1 <= self.min_words <= self.max_words, "min_words", "must be >= 1 and <= max_words"),
            (self.max_line_chars >= 20, "max_line_chars", "must be >= 20"),
            (self.boilerplate_min_ads >= 2, "boilerplate_min_ads", "must be >= 2"),
            (0.0 < self.min_foreign_share <= 1.0, "min_foreign_share", "must be in (0, 1]"),
        )
        for ok, key, rule in checks:
            if not ok:
                raise ConfigError(f"corpus setting '{key}' {rule}, got {getattr(self, key)!r}")
        for key in ("text_field", "id_field", "source_field"):
            if not getattr(self, key):
                raise ConfigError(f"corpus setting '{key}' must name a JSON field, got an empty string")


# ---------------------------------------------------------------------------------------------------- input
@dataclass(frozen=True)
class InputFile:
    path: Path
    kind: str  # "jsonl" | "text"
    default_source: str  # used when a record has no source field


@dataclass
class RawAd:
    ad_id: str
    source: str
    text: str


@dataclass
class FileReport:
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


class InputReport:
    """Problems with the input: each counted per file and reason, the first few warned, the first many listed."""

    def __init__(self, max_warnings: int = MAX_WARNINGS, max_listed: int = MAX_PROBLEMS_LISTED):
        self.files: Dict[str, FileReport] = {}
        self.problems: List[dict] = []
        self.n_problems = 0
        self.max_warnings = max_warnings
        self.max_listed = max_listed

    def file(self, path: Path) -> FileReport:
        key = str(path)
        if key not in self.files:
            self.files[key] = FileReport(key)
        return self.files[key]

    def problem(self, path: Path, line: int, kind: str, reason: str, detail: str = "") -> None:
        """kind: "rejected" (the line gave no ad), "repaired" (used after a fix) or "file" (the rest is unreadable)."""
        report = self.file(path)
        {"rejected": report.rejected, "repaired": report.repaired, "file": report.errors}[kind][reason] += 1
        self.n_problems += 1
        where = f"{path}:{line}" if line else str(path)
        if len(self.problems) < self.max_listed:
            self.problems.append({"file": str(path), "line": line, "kind": kind, "reason": reason, "detail": detail})
        if self.n_problems <= self.max_warnings:
            action = {"rejected": "line skipped", "repaired": "line repaired", "file": "rest of file skipped"}[kind]
            warnings.warn(f"{where}: {reason}{f' ({detail})' if detail else ''}; {action}.", CorpusInputWarning,
                          stacklevel=2)

    def finish(self) -> None:
        hidden = self.n_problems - self.max_warnings
        if hidden > 0:
            warnings.warn(f"{hidden} more input problems not shown; the manifest counts all of them and lists the "
                          f"first {self.max_listed} under 'problems'.", CorpusInputWarning, stacklevel=2)

    def totals(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"rejected_lines": Counter(), "repaired_lines": Counter(), "file_errors": Counter(),
                               "blank_lines": 0}
        for report in self.files.values():
            out["rejected_lines"].update(report.rejected)
            out["repaired_lines"].update(report.repaired)
            out["file_errors"].update(report.errors)
            out["blank_lines"] += report.blank_lines
        return {key: dict(value) if isinstance(value, Counter) else value for key, value in out.items()}


def _input_kind(path: Path) -> Optional[str]:
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    return None


def _input_stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(JSONL_SUFFIXES + TEXT_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def resolve_inputs(inputs: Sequence[Path]) -> List[InputFile]:
    """Input files in order; a folder stands for its .jsonl / .jsonl.gz / .txt files (sorted, source = folder name)."""
    if not inputs:
        raise EscoDataError("No job-ad files given: pass .jsonl, .jsonl.gz or .txt files (or folders of them).")
    files: List[InputFile] = []
    for path in map(Path, inputs):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and _input_kind(p))
            if not found:
                raise EscoDataError(f"Input folder '{path}' holds no .jsonl, .jsonl.gz or .txt files.")
            files += [InputFile(p, _input_kind(p), path.name) for p in found]
        elif path.is_file():
            kind = _input_kind(path)
            if kind is None:
                raise EscoDataError(f"Input '{path}' is not a .jsonl, .jsonl.gz, .ndjson or .txt file: "
                                    "convert it, or rename it if that is what it holds.")
            files.append(InputFile(path, kind, _input_stem(path)))
        else:
            raise EscoDataError(f"Input '{path}' does not exist.")
    return files


def iter_ads(files: Sequence[InputFile], settings: CorpusSettings, report: InputReport) -> Iterator[RawAd]:
    """All ads of all files, in order, up to ``settings.limit`` ads."""
    read = 0
    for file in files:
        reader = iter_jsonl_ads if file.kind == "jsonl" else iter_text_ads
        with contextlib.closing(reader(file, settings, report)) as ads:
            for ad in ads:
                report.file(file.path).ads_read += 1
                read += 1
                yield ad
                if settings.limit is not None and read >= settings.limit:
                    return


def iter_jsonl_ads(file: InputFile, settings: CorpusSettings, report: InputReport) -> Iterator[RawAd]:
    line_no = 0
    content = False
    try:
        with (gzip.open(file.path, "rb") if file.path.name.lower().endswith(".gz") else open(file.path, "rb")) as fh:
            for line_no, raw in enumerate(fh, start=1):
                if not raw.strip():
                    report.file(file.path).blank_lines += 1
                    continue
                content = True
                ad = _parse_record(raw, file, line_no, settings, report)
                if ad is not None:
                    yield ad
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as err:
        what = "truncated or corrupt gzip" if file.path.name.lower().endswith(".gz") else "unreadable file"
        report.problem(file.path, line_no + 1, "file", what, f"after line {line_no}: {err}")
        return
    if not content:
        report.problem(file.path, 0, "file", "empty file", "no ads in it")


def _parse_record(raw: bytes, file: InputFile, line_no: int, settings: CorpusSettings,
                  report: InputReport) -> Optional[RawAd]:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.decode("utf-8", errors="replace")
        report.problem(file.path, line_no, "repaired", "non-UTF-8 bytes replaced with U+FFFD", f"byte {err.start}")
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        report.problem(file.path, line_no, "rejected", "malformed JSON", f"{err.msg} at column {err.colno}")
        return None
    if not isinstance(record, dict):
        report.problem(file.path, line_no, "rejected", "not a JSON object", type(record).__name__)
        return None
    if settings.text_field not in record:
        report.problem(file.path, line_no, "rejected", f"missing text field '{settings.text_field}'",
                       "set --text-field to the field that holds the ad")
        return None
    text = record[settings.text_field]
    if not isinstance(text, str):
        report.problem(file.path, line_no, "rejected", f"text field '{settings.text_field}' is not a string",
                       type(text).__name__)
        return None
    if not text.strip():
        report.problem(file.path, line_no, "rejected", f"empty text field '{settings.text_field}'")
        return None
    ad_id = record.get(settings.id_field)
    if isinstance(ad_id, (str, int)) and str(ad_id).strip():
        ad_id = str(ad_id).strip()
    else:
        ad_id = f"{file.path.name}:{line_no}"
        report.problem(file.path, line_no, "repaired", f"missing id field '{settings.id_field}'",
                       f"used '{ad_id}'")
    source = record.get(settings.source_field)
    if not isinstance(source, str) or not source.strip():
        source = file.default_source
    return RawAd(ad_id, source.strip(), text)


def iter_text_ads(file: InputFile, settings: CorpusSettings, report: InputReport) -> Iterator[RawAd]:
    """A plain-text file is one ad; its id is the file name."""
    try:
        data = file.path.read_bytes()
    except OSError as err:
        report.problem(file.path, 0, "file", "unreadable file", str(err))
        return
    if not data.strip():
        report.problem(file.path, 0, "file", "empty file", "no text in it")
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        report.problem(file.path, line, "repaired", "non-UTF-8 bytes replaced with U+FFFD", f"byte {err.start}")
        text = data.decode("utf-8", errors="replace")
    yield RawAd(file.path.name, file.default_source, text)


# ---------------------------------------------------------------------------------------------------- cleaning
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


def clean_ads(texts: List[str], max_line_chars: int) -> List[Tuple[List[str], List[int], List[int], int]]:
    """Per ad: lines, their dedupe keys, their boilerplate keys (digits folded), the number of long lines split."""
    out = []
    for text in texts:
        lines, n_long = clean_lines(text, max_line_chars)
        out.append((lines, [line_key(x) for x in lines], [line_key(x, fold_digits=True) for x in lines], n_long))
    return out


# ---------------------------------------------------------------------------------------------------- matching
def load_matcher_pipeline(path: Path) -> "Language":
    """A saved pipeline's segmenter → normalizer → matcher (any other component, e.g. a ranker, is excluded)."""
    import spacy
    from spacy.util import load_config

    config_file = Path(path) / "config.cfg"
    if not config_file.exists():
        raise EscoDataError(f"'{config_file}' is missing: '{path}' is not a saved spaCy pipeline.")
    pipes = list(load_config(config_file)["nlp"]["pipeline"])
    absent = [name for name in MATCHER_PIPES if name not in pipes]
    if absent:
        raise EscoDataError(f"The pipeline at '{path}' has no {absent}: the corpus needs the literal matcher "
                            "(build one with `python -m pipeline assemble --no-ranker`).")
    return spacy.load(path, exclude=[name for name in pipes if name not in MATCHER_PIPES])


class SentenceLabeller:
    """Runs the matcher over cleaned lines; splits each line into sentences, then labels and filters each one.

    It calls the components' own methods (``set_sentence_starts``, the normalizer, ``match``) rather than
    ``nlp.pipe``: the corpus needs neither the ad-level language score nor the sentence predictions, and reading
    sentences and word counts from ``doc.to_array`` avoids a Python ``Token`` per token — twice as fast.
    """

    def __init__(self, nlp: "Language", settings: CorpusSettings):
        self.settings = settings
        tokenizer = nlp.tokenizer
        # Lines are cleaned already; the job-ad tokenizer would clean again (and could move offsets).
        self.tokenize = tokenizer.tokenizer if hasattr(tokenizer, "clean") else tokenizer
        self.segmenter = nlp.get_pipe("esco_job_ad_segmenter")
        self.normalizer = nlp.get_pipe("esco_token_normalizer")
        self.matcher = nlp.get_pipe("esco_skill_matcher")

    def label_lines(self, lines: List[str]) -> List[LineResult]:
        return [self.label_line(line) for line in lines]

    def label_line(self, line: str) -> LineResult:
        from spacy.attrs import IDX, IS_PUNCT, IS_SPACE, SENT_START

        doc = self.tokenize(line)
        if not len(doc):
            return 0, []
        self.segmenter.set_sentence_starts(doc)
        self.normalizer(doc)
        spans = sorted((span for span, _ in self.matcher.match(doc)), key=lambda s: (s.start, s.end))
        rows = doc.to_array([SENT_START, IS_PUNCT, IS_SPACE, IDX]).tolist()
        starts = [i for i, row in enumerate(rows) if row[0] == 1 or i == 0] + [len(rows)]
        sentences: List[SentenceResult] = []
        j = 0
        for first, end in zip(starts, starts[1:]):
            while j < len(spans) and spans[j].start < first:
                j += 1
            inside = []
            while j < len(spans) and spans[j].start < end:
                inside.append(spans[j])
                j += 1
            start_char = rows[first][3]
            end_char = rows[end][3] if end < len(rows) else len(doc.text)
            n_words = sum(1 for row in rows[first:end] if not (row[1] or row[2]))
            sentences.append(self.label_sentence(doc.text, start_char, end_char, end, n_words, inside))
        return len(spans), sentences

    def label_sentence(self, line: str, start_char: int, end_char: int, end_token: int, n_words: int,
                       spans: List[Any]) -> SentenceResult:
        raw = line[start_char:end_char]
        text = raw.strip()
        base = start_char + len(raw) - len(raw.lstrip())
        key = line_key(text)
        mentions = [(s.start_char - base, s.end_char - base, s.kb_id_) for s in spans if s.end <= end_token]
        if not is_english(text, self.settings.min_foreign_share):
            return key, "non_english", None, None
        if n_words < self.settings.min_words:
            return key, "too_short_with_match" if mentions else "too_short", None, None
        if n_words > self.settings.max_words:
            return key, "too_long", None, None
        if len(mentions) < len(spans):
            return key, "ok_cut_mention", text, mentions
        return key, "ok", text, mentions


_WORKER: Optional[SentenceLabeller] = None


def _init_worker(pipeline_dir: str, settings: CorpusSettings) -> None:
    global _WORKER
    _WORKER = SentenceLabeller(load_matcher_pipeline(Path(pipeline_dir)), settings)


def _worker_label(lines: List[str]) -> List[LineResult]:
    assert _WORKER is not None, "worker not initialized"
    return _WORKER.label_lines(lines)


def _worker_clean(args: Tuple[List[str], int]) -> List[Tuple[List[str], List[int], List[int], int]]:
    return clean_ads(*args)


def default_start_method() -> str:
    """``fork`` where it is safe and available (Linux): workers start at once and share the loaded matcher;
    ``spawn`` elsewhere (macOS, Windows), where each worker loads the saved matcher."""
    return "fork" if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods() else "spawn"


class WorkPool:
    """Runs tasks in worker processes or, with one worker, in this process.

    Forked workers inherit the loaded matcher; spawned ones load it once from ``pipeline_dir``. Results come
    back in task order, so the corpus is the same for any number of workers; at most ``4 × workers`` tasks are
    in flight, so memory does not grow with the input.
    """

    def __init__(self, workers: int, pipeline_dir: Optional[Path], labeller: SentenceLabeller,
                 start_method: Optional[str] = None):
        self.workers = workers
        self.labeller = labeller
        self.pool = None
        if workers == 1:
            return
        method = start_method or default_start_method()
        context = multiprocessing.get_context(method)
        if method == "fork":
            # Forked workers inherit the loaded matcher: no import or load per worker.
            global _WORKER
            _WORKER = labeller
            self.pool = context.Pool(workers)
        else:
            if pipeline_dir is None:
                raise ValueError(f"start method '{method}' needs the matcher saved to a folder")
            self.pool = context.Pool(workers, initializer=_init_worker,
                                     initargs=(str(pipeline_dir), labeller.settings))

    def clean(self, tasks: Iterable[Tuple[Any, List[str]]], max_line_chars: int) -> Iterator[Tuple[Any, list]]:
        if self.pool is None:
            return ((meta, clean_ads(texts, max_line_chars)) for meta, texts in tasks)
        return self._ordered(_worker_clean, ((meta, (texts, max_line_chars)) for meta, texts in tasks))

    def label(self, tasks: Iterable[Tuple[Any, List[str]]]) -> Iterator[Tuple[Any, List[LineResult]]]:
        if self.pool is None:
            return ((meta, self.labeller.label_lines(lines)) for meta, lines in tasks)
        return self._ordered(_worker_label, tasks)

    def _ordered(self, func: Callable, tasks: Iterable[Tuple[Any, Any]]) -> Iterator[Tuple[Any, Any]]:
        pending: deque = deque()
        for meta, payload in tasks:
            pending.append((meta, self.pool.apply_async(func, (payload,))))
            if len(pending) >= 4 * self.workers:
                meta_done, result = pending.popleft()
                yield meta_done, result.get()
        while pending:
            meta_done, result = pending.popleft()
            yield meta_done, result.get()

    def close(self) -> None:
        self._shut(terminate=False)

    def terminate(self) -> None:
        self._shut(terminate=True)

    def _shut(self, terminate: bool) -> None:
        global _WORKER
        if self.pool is not None:
            if terminate:
                self.pool.terminate()
            else:
                self.pool.close()
            self.pool.join()
            self.pool = None
        _WORKER = None  # the forked workers' copy; don't keep the matcher alive here


# ---------------------------------------------------------------------------------------------------- statistics
STAGE_KEYS = (
    "ads_read", "ads_empty_after_cleaning", "lines", "long_lines_split", "boilerplate_lines", "duplicate_lines",
    "sentences", "duplicate_sentences", "non_english", "too_short", "too_short_with_match", "too_long",
    "sentences_kept", "sentences_matched", "sentences_unmatched", "examples_train", "examples_dev", "mentions",
    "sentences_with_cut_mention", "ads_train", "ads_dev", "ads_with_examples",
)


class CorpusStats:
    """Stage counts and skill frequencies per source; totals are their sums."""

    def __init__(self) -> None:
        self.counts: Dict[str, Counter] = defaultdict(Counter)
        self.skill_examples: Dict[str, Counter] = defaultdict(Counter)
        self.skill_mentions: Dict[str, Counter] = defaultdict(Counter)

    def add(self, source: str, key: str, n: int = 1) -> None:
        self.counts[source][key] += n

    def add_example(self, source: str, mentions: Sequence[Mention]) -> None:
        self.skill_examples[source].update({uri for _, _, uri in mentions})
        self.skill_mentions[source].update(uri for _, _, uri in mentions)

    @staticmethod
    def _sum(per_source: Dict[str, Counter]) -> Counter:
        total: Counter = Counter()
        for counter in per_source.values():
            total.update(counter)
        return total

    def stage_counts(self, source: Optional[str] = None) -> Dict[str, int]:
        counts = self.counts[source] if source is not None else self._sum(self.counts)
        out = {key: int(counts.get(key, 0)) for key in STAGE_KEYS}
        out["examples"] = out["examples_train"] + out["examples_dev"]
        return out

    def coverage(self, taxonomy: Any, source: Optional[str] = None, top_n: int = TOP_SKILLS) -> dict:
        examples = self.skill_examples[source] if source is not None else self._sum(self.skill_examples)
        mentions = self.skill_mentions[source] if source is not None else self._sum(self.skill_mentions)
        return skill_coverage(examples, mentions, taxonomy, top_n)


def skill_coverage(examples: Counter, mentions: Counter, taxonomy: Any, top_n: int = TOP_SKILLS) -> dict:
    """How many ESCO skills occur at all, how often (examples per skill, bucketed), and the most frequent ones."""
    buckets = {}
    for low, high in FREQUENCY_BUCKETS:
        name = f"{low}+" if high is None else (str(low) if low == high else f"{low}-{high}")
        buckets[name] = sum(1 for n in examples.values() if n >= low and (high is None or n <= high))
    total = len(taxonomy)
    ranked = sorted(examples.items(), key=lambda item: (-item[1], item[0]))[:top_n]
    return {
        "skills_in_taxonomy": total,
        "skills_covered": len(examples),
        "coverage": round(len(examples) / total, 4) if total else 0.0,
        "examples_per_skill": buckets,
        "top": [{"uri": uri, "label": taxonomy.label(uri), "examples": n, "mentions": int(mentions[uri])}
                for uri, n in ranked],
    }


# ---------------------------------------------------------------------------------------------------- the build
def _unit_hash(seed: int, ad_id: str) -> float:
    digest = hashlib.blake2b(f"{seed}\x1f{ad_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _dev_threshold(units: array, dev_fraction: float) -> float:
    """The dev split is the ads with the k smallest seeded hashes, k = round(fraction × ads), at least one."""
    n = len(units)
    if dev_fraction <= 0 or n < 2:
        return -1.0
    k = min(n - 1, max(1, round(dev_fraction * n)))
    return sorted(units)[k - 1]


class _Writers:
    """One Arrow file per split, written as examples stream in."""

    def __init__(self, folder: Path):
        from datasets import Features, Value
        from datasets.arrow_writer import ArrowWriter

        # [feature] is a list of that feature in every datasets version (datasets.List exists from 4.0 only).
        mention = {"start": Value("int32"), "end": Value("int32"), "uri": Value("string")}
        matched = Features({"text": Value("string"), "uris": [Value("string")], "mentions": [mention],
                            "ad_id": Value("string"), "source": Value("string")})
        unmatched = Features({"text": Value("string"), "ad_id": Value("string"), "source": Value("string")})
        self.paths = {split: folder / f"{split}.arrow" for split in SPLITS}
        self.writers = {split: ArrowWriter(features=unmatched if split == "unmatched" else matched,
                                           path=str(self.paths[split])) for split in SPLITS}

    def write(self, split: str, row: dict) -> None:
        self.writers[split].write(row)

    def finish(self) -> Dict[str, Path]:
        for writer in self.writers.values():
            writer.finalize()
            writer.close()
        return self.paths


class CorpusBuilder:
    """The two passes of ``build_corpus``; see the module docstring for the stages."""

    def __init__(self, settings: CorpusSettings, pool: WorkPool, work_dir: Path, progress: bool = True):
        self.settings = settings
        self.pool = pool
        self.work_dir = work_dir
        self.progress = progress
        self.stats = CorpusStats()
        self.report = InputReport()
        self.spill = work_dir / "cleaned.jsonl"
        self.ads_per_line: Counter = Counter()  # boilerplate key → distinct ads
        self.candidates: Dict[int, str] = {}  # boilerplate key → text, once it reaches boilerplate_min_ads
        self.boilerplate: Dict[int, str] = {}
        self.boilerplate_kept = 0
        self.units = array("d")
        self.timing: Dict[str, float] = {}

    # -- pass 1: read, clean, spill, count lines per ad
    def read_and_clean(self, files: Sequence[InputFile]) -> None:
        from tqdm import tqdm

        start = time.perf_counter()
        ads = iter_ads(files, self.settings, self.report)
        bar = tqdm(total=self.settings.limit, unit=" ads", desc="read + clean", disable=not self.progress)
        with open(self.spill, "w", encoding="utf-8") as spill:
            for metas, cleaned in self.pool.clean(self._clean_tasks(ads), self.settings.max_line_chars):
                for (ad_id, source), (lines, dkeys, bkeys, n_long) in zip(metas, cleaned):
                    self._count_ad(ad_id, source, lines, bkeys, n_long)
                    if lines:
                        spill.write(json.dumps([ad_id, source, lines, dkeys, bkeys], ensure_ascii=False) + "\n")
                bar.update(len(metas))
        bar.close()
        self.report.finish()
        self.timing["read_and_clean"] = time.perf_counter() - start

    @staticmethod
    def _clean_tasks(ads: Iterator[RawAd]) -> Iterator[Tuple[List[Tuple[str, str]], List[str]]]:
        metas: List[Tuple[str, str]] = []
        texts: List[str] = []
        for ad in ads:
            metas.append((ad.ad_id, ad.source))
            texts.append(ad.text)
            if len(texts) >= ADS_PER_CLEAN_TASK:
                yield metas, texts
                metas, texts = [], []
        if texts:
            yield metas, texts

    def _count_ad(self, ad_id: str, source: str, lines: List[str], bkeys: List[int], n_long: int) -> None:
        self.stats.add(source, "ads_read")
        self.stats.add(source, "long_lines_split", n_long)
        if not lines:
            self.stats.add(source, "ads_empty_after_cleaning")
            return
        self.units.append(_unit_hash(self.settings.seed, ad_id))
        threshold = self.settings.boilerplate_min_ads
        for key, line in dict(zip(bkeys, lines)).items():
            self.ads_per_line[key] += 1
            if self.ads_per_line[key] == threshold:
                self.candidates[key] = line

    # -- between the passes: which frequent lines are boilerplate
    def find_boilerplate(self) -> None:
        start = time.perf_counter()
        keys = list(self.candidates)
        texts = [self.candidates[key] for key in keys]
        tasks = ((keys[i : i + LINES_PER_MATCH_TASK], texts[i : i + LINES_PER_MATCH_TASK])
                 for i in range(0, len(texts), LINES_PER_MATCH_TASK))
        for batch_keys, results in self.pool.label(tasks):
            for key, (n_matches, _) in zip(batch_keys, results):
                if n_matches:
                    self.boilerplate_kept += 1
                else:
                    self.boilerplate[key] = self.candidates[key]
        self.timing["boilerplate"] = time.perf_counter() - start

    # -- pass 2: drop boilerplate and duplicate lines, match unique lines, write examples
    def label_and_write(self, writers: _Writers) -> None:
        from tqdm import tqdm

        start = time.perf_counter()
        threshold = _dev_threshold(self.units, self.settings.dev_fraction)
        self.units = array("d")
        seen_sentences: set = set()
        bar = tqdm(total=self.ads_with_lines(), unit=" ads", desc="match + write", disable=not self.progress)
        for metas, results in self.pool.label(self._label_tasks(threshold)):
            offset = 0
            for ad_id, source, split, n_lines in metas:
                self._write_ad(writers, ad_id, source, split, results[offset : offset + n_lines], seen_sentences)
                offset += n_lines
            bar.update(len(metas))
        bar.close()
        self.timing["match_and_write"] = time.perf_counter() - start

    def ads_with_lines(self) -> int:
        return sum(c["ads_read"] - c["ads_empty_after_cleaning"] for c in self.stats.counts.values())

    def _label_tasks(self, threshold: float) -> Iterator[Tuple[list, List[str]]]:
        seen_lines: set = set()
        metas: list = []
        lines_out: List[str] = []
        with open(self.spill, encoding="utf-8") as spill:
            for row in spill:
                ad_id, source, lines, dkeys, bkeys = json.loads(row)
                split = "dev" if _unit_hash(self.settings.seed, ad_id) <= threshold else "train"
                self.stats.add(source, f"ads_{split}")
                kept = self._unique_lines(source, lines, dkeys, bkeys, seen_lines)
                metas.append((ad_id, source, split, len(kept)))
                lines_out.extend(kept)
                if len(lines_out) >= LINES_PER_MATCH_TASK:
                    yield metas, lines_out
                    metas, lines_out = [], []
        if metas:
            yield metas, lines_out

    def _unique_lines(self, source: str, lines: List[str], dkeys: List[int], bkeys: List[int],
                      seen: set) -> List[str]:
        kept = []
        for line, dkey, bkey in zip(lines, dkeys, bkeys):
            self.stats.add(source, "lines")
            if bkey in self.boilerplate:
                self.stats.add(source, "boilerplate_lines")
            elif dkey in seen:
                self.stats.add(source, "duplicate_lines")
            else:
                seen.add(dkey)
                kept.append(line)
        return kept

    def _write_ad(self, writers: _Writers, ad_id: str, source: str, split: str, results: List[LineResult],
                  seen: set) -> None:
        examples = 0
        for _, sentences in results:
            for key, status, text, mentions in sentences:
                self.stats.add(source, "sentences")
                if key in seen:
                    self.stats.add(source, "duplicate_sentences")
                    continue
                seen.add(key)
                if status == "ok_cut_mention":
                    self.stats.add(source, "sentences_with_cut_mention")
                elif status != "ok":
                    self.stats.add(source, status)
                    if status == "too_short_with_match":
                        self.stats.add(source, "too_short")
                    continue
                self.stats.add(source, "sentences_kept")
                if mentions:
                    examples += 1
                    self._write_example(writers, split, text, mentions, ad_id, source)
                else:
                    self.stats.add(source, "sentences_unmatched")
                    writers.write("unmatched", {"text": text, "ad_id": ad_id, "source": source})
        if examples:
            self.stats.add(source, "ads_with_examples")

    def _write_example(self, writers: _Writers, split: str, text: str, mentions: List[Mention], ad_id: str,
                       source: str) -> None:
        self.stats.add(source, "sentences_matched")
        self.stats.add(source, f"examples_{split}")
        self.stats.add(source, "mentions", len(mentions))
        self.stats.add_example(source, mentions)
        writers.write(split, {
            "text": text,
            "uris": list(dict.fromkeys(uri for _, _, uri in mentions)),
            "mentions": [{"start": s, "end": e, "uri": uri} for s, e, uri in mentions],
            "ad_id": ad_id,
            "source": source,
        })

    # -- the manifest
    def manifest(self, files: Sequence[InputFile], taxonomy: Any, policy_report: dict, esco: Optional[Path],
                 pipeline_path: Optional[Path], run: Dict[str, Any]) -> dict:
        counts: Dict[str, Any] = {"files": len(files), **self.stage_counts_with_inputs()}
        counts["boilerplate_distinct"] = len(self.boilerplate)
        counts["boilerplate_kept_with_match"] = self.boilerplate_kept
        counts["duplicates"] = counts["duplicate_lines"] + counts["duplicate_sentences"]
        ranked_boilerplate = sorted(self.boilerplate.items(), key=lambda kv: -self.ads_per_line[kv[0]])
        return {
            "schema_version": SCHEMA_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "pipeline_version": __version__,
            "esco": {"path": str(esco) if esco else None, "version": getattr(taxonomy, "version", ""),
                     "skills": len(taxonomy), "attribution": ESCO_ATTRIBUTION},
            "matcher": {"pipeline": str(pipeline_path) if pipeline_path else "assembled from ESCO",
                        "label_policy": policy_report},
            "settings": {**asdict(self.settings), **run},
            "inputs": [_describe_input(f, self.report) for f in files],
            "counts": counts,
            "skills": self.stats.coverage(taxonomy),
            "by_source": {source: {"counts": self.stats.stage_counts(source),
                                   "skills": self.stats.coverage(taxonomy, source)}
                          for source in sorted(self.stats.counts)},
            "boilerplate_top": [{"text": text[:200], "ads": self.ads_per_line[key]}
                                for key, text in ranked_boilerplate[:TOP_BOILERPLATE]],
            "problems": self.report.problems,
            "problems_total": self.report.n_problems,
            "timing_s": {k: round(v, 2) for k, v in self.timing.items()},
        }

    def stage_counts_with_inputs(self) -> Dict[str, Any]:
        counts: Dict[str, Any] = dict(self.stats.stage_counts())
        inputs = self.report.totals()
        ads_rejected = dict(inputs["rejected_lines"])
        if counts["ads_empty_after_cleaning"]:
            ads_rejected["no text after cleaning"] = counts["ads_empty_after_cleaning"]
        counts.update({"ads_rejected": ads_rejected, **inputs})
        return counts


def _describe_input(file: InputFile, report: InputReport) -> dict:
    info = {"path": str(file.path), "kind": file.kind, "bytes": file.path.stat().st_size,
            "sha256": _sha256(file.path)}
    info.update(report.file(file.path).to_dict())
    return info


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_corpus(
    inputs: Sequence[Path],
    output: Path,
    *,
    esco: Optional[Path] = None,
    limit: Optional[int] = None,
    text_field: str = "description",
    id_field: str = "id",
    dev_fraction: float = 0.05,
    seed: int = 0,
    workers: int = 2,
    source_field: str = "source",
    min_words: int = 3,
    max_words: int = 100,
    max_line_chars: int = 500,
    boilerplate_min_ads: int = 20,
    min_foreign_share: float = 0.1,
    pipeline_path: Optional[Path] = None,
    progress: bool = True,
    start_method: Optional[str] = None,
) -> dict:
    """Build the distant-supervision corpus into ``output`` and return its manifest (also ``output/manifest.json``).

    The matcher is assembled from the ESCO export at ``esco`` unless ``pipeline_path`` names a saved pipeline
    with the matcher (e.g. one with a custom label policy). ``workers`` processes clean and match; results are
    identical for any number of workers and deterministic for a ``seed``. ``start_method`` picks how workers
    start (``default_start_method()`` if None).
    """
    settings = CorpusSettings(text_field=text_field, id_field=id_field, source_field=source_field, limit=limit,
                              dev_fraction=dev_fraction, seed=seed, min_words=min_words, max_words=max_words,
                              max_line_chars=max_line_chars, boilerplate_min_ads=boilerplate_min_ads,
                              min_foreign_share=min_foreign_share)
    settings.validate()
    if workers < 1:
        raise ConfigError(f"corpus setting 'workers' must be >= 1, got {workers}")
    if start_method not in (None, *multiprocessing.get_all_start_methods()):
        raise ConfigError(f"corpus setting 'start_method' must be one of {multiprocessing.get_all_start_methods()}, "
                          f"got '{start_method}'")
    if esco is None and pipeline_path is None:
        raise ConfigError("build_corpus needs the ESCO export (esco=...) or a saved matcher pipeline "
                          "(pipeline_path=...)")
    files = resolve_inputs(inputs)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / MANIFEST_FILE).unlink(missing_ok=True)  # no stale manifest beside a half-written corpus
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".corpus-work-", dir=output) as tmp:
        work_dir = Path(tmp)
        method = start_method or default_start_method()
        nlp, worker_dir = _matcher_for_build(esco, pipeline_path, work_dir, save=workers > 1 and method != "fork")
        labeller = SentenceLabeller(nlp, settings)
        pool = WorkPool(workers, worker_dir, labeller, method)
        builder = CorpusBuilder(settings, pool, work_dir, progress=progress)
        try:
            builder.read_and_clean(files)
            _require_ads(builder, files)
            builder.find_boilerplate()
            writers = _Writers(work_dir)
            builder.label_and_write(writers)
            paths = writers.finish()
        except BaseException:
            pool.terminate()
            raise
        pool.close()
        save_start = time.perf_counter()
        _save_dataset(paths, output / DATASET_DIR, progress)
        builder.timing["save"] = time.perf_counter() - save_start
    builder.timing["total"] = time.perf_counter() - started
    matcher = nlp.get_pipe("esco_skill_matcher")
    run = {"workers": workers, "start_method": method if workers > 1 else None}
    manifest = builder.manifest(files, matcher.taxonomy, matcher.policy_report, esco, pipeline_path, run)
    _write_json_atomic(output / MANIFEST_FILE, manifest)
    return manifest


def _matcher_for_build(esco: Optional[Path], pipeline_path: Optional[Path], work_dir: Path,
                       save: bool) -> Tuple["Language", Optional[Path]]:
    """The matcher pipeline, and a folder that workers can load it from (only if ``save`` and none exists)."""
    if pipeline_path is not None:
        return load_matcher_pipeline(Path(pipeline_path)), Path(pipeline_path)
    from pipeline.components.assembly import assemble

    nlp = assemble(esco, None, with_ranker=False)
    if not save:
        return nlp, None
    folder = work_dir / "matcher"
    nlp.to_disk(folder)
    return nlp, folder


def _require_ads(builder: CorpusBuilder, files: Sequence[InputFile]) -> None:
    if not builder.ads_with_lines():
        names = ", ".join(str(f.path) for f in files)
        raise EscoDataError(f"No usable ads in {names}: {builder.report.n_problems} problems "
                            f"(first: {builder.report.problems[:3]}). Check --text-field and the files.")


def _save_dataset(paths: Dict[str, Path], target: Path, progress: bool) -> None:
    import datasets

    parts = {split: datasets.Dataset.from_file(str(path)) for split, path in paths.items()}
    corpus = datasets.DatasetDict(parts)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shards = {split: max(1, math.ceil(ds.data.nbytes / MAX_SHARD_BYTES)) for split, ds in parts.items()}
    enabled = datasets.is_progress_bar_enabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        corpus.save_to_disk(str(partial), num_shards=shards)
    finally:
        if enabled and not progress:
            datasets.enable_progress_bars()
    del corpus, parts
    if target.exists():
        shutil.rmtree(target)
    os.replace(partial, target)


def _write_json_atomic(path: Path, data: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


# ---------------------------------------------------------------------------------------------------- reading back
def load_corpus(path: Path) -> "DatasetDict":
    """The corpus ``build_corpus`` wrote: splits train / dev / unmatched, memory-mapped."""
    import datasets

    path = Path(path)
    build_hint = f"build it with `python -m pipeline corpus JOBADS... --output {path}` (or `make corpus`)"
    if not path.is_dir():
        raise EscoDataError(f"No corpus at '{path}': {build_hint}.")
    required = (path / MANIFEST_FILE, path / DATASET_DIR / "dataset_dict.json")
    for file in required:
        if not file.exists():
            raise EscoDataError(f"The corpus at '{path}' is incomplete: '{file}' is missing (an interrupted "
                                f"build?); {build_hint}.")
    try:
        corpus = datasets.load_from_disk(str(path / DATASET_DIR))
    except (FileNotFoundError, ValueError, OSError, KeyError) as err:
        raise EscoDataError(f"The corpus at '{path / DATASET_DIR}' cannot be read ({err}); {build_hint}.") from err
    for split in SPLITS:
        columns = UNMATCHED_COLUMNS if split == "unmatched" else MATCHED_COLUMNS
        if split not in corpus:
            raise EscoDataError(f"The corpus at '{path}' has no '{split}' split; {build_hint}.")
        missing = [c for c in columns if c not in corpus[split].column_names]
        if missing:
            raise EscoDataError(f"The '{split}' split of '{path}' lacks columns {missing}; {build_hint}.")
    return corpus


def read_manifest(path: Path) -> dict:
    file = Path(path) / MANIFEST_FILE
    if not file.exists():
        raise EscoDataError(f"No manifest at '{file}': the corpus is missing or incomplete.")
    return json.loads(file.read_text(encoding="utf-8"))
