"""One ad's extraction record in flat form: its CSV rows and its share of a run's counts.

Kept apart from ``commands.extract`` (which holds the record itself, ``doc_to_record``) and free of spaCy and
torch, so that what only writes records (Ray's read and write tasks, ``commands.ray_engine``) starts in a
fraction of a second instead of importing the model's stack.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, Mapping, Tuple

from pipeline.io.failures import FailedAd
from pipeline.io.jobads import ReadReport

CSV_COLUMNS = ("ad_id", "uri", "label", "score", "explicit", "probability", "evidence")


def csv_rows(record: Dict[str, Any], ranking: bool = False) -> Iterator[Tuple[str, str, str, float, bool, Any, str]]:
    """The ad's set (every ranked prediction with ``ranking``) as CSV rows of ``CSV_COLUMNS``."""
    for skill in record["ranking" if ranking else "skills"]:
        yield (record["id"], skill["uri"], skill["label"], skill["score"], skill["explicit"],
               skill.get("probability", ""), evidence_text(skill))


def evidence_text(skill: Dict[str, Any]) -> str:
    """A prediction's evidence words, each once, joined by `` | `` (the CSV's cell, the table's column)."""
    return " | ".join(dict.fromkeys(e["text"] for e in skill.get("evidence", [])))


@dataclass
class ExtractSummary:
    """What one run did: ads written, and every ad or line that was skipped, repaired, failed, truncated or flagged.

    Ads in = ``n_ads`` (written) + ``n_failed`` (their processing raised; ``io.failures``); lines read = ads in +
    ``n_skipped`` (the reader's rejects)."""

    n_ads: int = 0
    n_failed: int = 0
    n_skipped: int = 0
    n_repaired: int = 0
    n_file_errors: int = 0
    n_non_english: int = 0
    n_truncated: int = 0
    n_with_skills: int = 0
    skipped: Dict[str, int] = field(default_factory=dict)
    repaired: Dict[str, int] = field(default_factory=dict)
    file_errors: Dict[str, int] = field(default_factory=dict)
    failed: Dict[str, int] = field(default_factory=dict)  # failed ads by the error's class
    no_skill_sentences: Dict[str, int] = field(default_factory=dict)  # sentences with an empty set, by reason

    def add_record(self, record: Dict[str, Any]) -> None:
        self.n_ads += 1
        self.n_non_english += record["is_english"] is False
        self.n_truncated += record.get("truncated_chars", 0) > 0
        self.n_with_skills += bool(record["skills"])
        for sentence in record.get("sentences", []):
            reason = sentence.get("no_skill_reason")
            if reason:
                self.no_skill_sentences[reason] = self.no_skill_sentences.get(reason, 0) + 1

    def add_failed(self, failed: FailedAd) -> None:
        self.n_failed += 1
        self.failed[failed.error] = self.failed.get(failed.error, 0) + 1

    def add_report(self, report: ReadReport) -> None:
        """The reader's counts by reason (rejected lines are the skipped ones)."""
        self.add_read_totals(report.totals())

    def add_read_totals(self, totals: Mapping[str, Mapping[str, int]]) -> None:
        """The reader's counts by reason as ``ReadReport.totals`` gives them (``rejected_lines``,
        ``repaired_lines``, ``file_errors``), also when summed elsewhere: ``extract --engine ray`` reads each file
        in its own task and adds up their reports."""
        self.skipped, self.repaired, self.file_errors = (
            dict(totals["rejected_lines"]), dict(totals["repaired_lines"]), dict(totals["file_errors"]))
        self.n_skipped = sum(self.skipped.values())
        self.n_repaired = sum(self.repaired.values())
        self.n_file_errors = sum(self.file_errors.values())

    def describe(self) -> str:
        """One line with every count, for a log or the terminal."""
        failed = "; ".join(f"{n:,} × {error}" for error, n in Counter(self.failed).most_common())
        return (f"{self.n_ads + self.n_failed:,} ad(s) in = {self.n_ads:,} written + {self.n_failed:,} failed"
                f"{f' ({failed})' if failed else ''}; {self.n_with_skills:,} with skills; {self.n_skipped:,} line(s) "
                f"skipped, {self.n_repaired:,} repaired, {self.n_file_errors:,} file error(s); "
                f"{self.n_non_english:,} not English; {self.n_truncated:,} truncated; "
                f"{sum(self.no_skill_sentences.values()):,} sentence(s) asking for no skill")


def merge_summaries(parts: Iterable[Dict[str, Any]]) -> ExtractSummary:
    """Sum ``ExtractSummary`` dicts field by field (counts add, counts by reason add per reason)."""
    total = ExtractSummary()
    for part in parts:
        for f in dataclasses.fields(ExtractSummary):
            value = part.get(f.name)
            if isinstance(value, dict):
                setattr(total, f.name, dict(Counter(getattr(total, f.name)) + Counter(value)))
            elif isinstance(value, int):
                setattr(total, f.name, getattr(total, f.name) + value)
    return total
