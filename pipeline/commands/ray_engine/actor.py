"""The extract stage: the Ray actors that hold a loaded pipeline and turn read rows into output-shaped rows.

``map_batches`` runs an actor pool of ``num_workers`` ``PipelineActor``s: each loads the pipeline once and turns
ads into records with ``doc_to_record`` (the single engine's), handed on already in the output's shape
(``result_columns``, ``RESULT_SCHEMA``): typed fields, the other fields as JSON, the ad's skill rows and its share
of the summary. The actors, not the one writer, do the per-ad work, in parallel with each other, and the writer
only sorts, flattens and writes Arrow data: it parses no JSON of the records.

An ad whose processing raises fails alone (``isolation.pipe_isolated``: its batch is run again ad by ad): it
becomes a "failed" row (``failed_columns``) that is written and counted once, and the batch returns normally, so
Ray never retries a poison ad into a failed run. Only ``fail_fast`` lets the exception out (Ray then retries the
batch, up to ``max_restarts`` times, and fails the run).

``TimedPipelineActor`` (``extract --timeline``, the bench's Ray rows) also logs its load and batches, and
``timeline_stats`` says where a run's time went.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional

import pyarrow as pa

from pipeline.commands.ray_engine.read import AD, FAILED, PathLike
from pipeline.io.failures import FailedAd
from pipeline.io.jobads import JobAd
from pipeline.io.records import CSV_COLUMNS, ExtractSummary, csv_rows

# Output columns with an Arrow type; any other record field is a JSON string column, any other CSV column a string.
AD_TYPES = {"id": pa.string(), "is_english": pa.bool_(), "truncated_chars": pa.int64()}
SKILL_TYPES = {"score": pa.float64(), "explicit": pa.bool_(), "probability": pa.float64(), "rank": pa.int64()}
SKILL_COLUMNS = tuple(CSV_COLUMNS) + ("rank",)
SKILL_ROW = pa.struct([(name, SKILL_TYPES.get(name, pa.string())) for name in SKILL_COLUMNS])
RESULT_SCHEMA = pa.schema([("input", pa.string()), ("seq", pa.int64()), ("kind", pa.string()),
                           ("report", pa.string()), *AD_TYPES.items(),
                           ("fields", pa.map_(pa.string(), pa.string())),  # the record's other fields → JSON
                           ("skill_rows", pa.list_(SKILL_ROW)),  # the skills table's rows of the ad
                           ("failure", pa.string()),  # a failed ad's FailedAd, as JSON
                           ("summary", pa.string())])  # ExtractSummary of the ad alone, as JSON


class PipelineActor:
    """One Ray actor: loads the pipeline once, then turns batches of read rows into result rows (reports pass).

    The model's stack (spaCy, torch) is imported here, in the actor, not by this module: Ray's read and write
    tasks import the package too and need none of it."""

    def __init__(self, model: str, config: Optional[Dict[str, Any]] = None, batch_size: int = 32,
                 fail_fast: bool = False):
        from pipeline.components.pipes import load_pipeline

        self.nlp = load_pipeline(model, config=config or {})
        self.batch_size = batch_size
        self.fail_fast = fail_fast

    def __call__(self, batch: pa.Table) -> pa.Table:
        from pipeline.commands.extract import per_ad_warnings_silenced
        from pipeline.commands.isolation import pipe_isolated

        rows = batch.to_pylist()
        ads = [JobAd(row["id"], row["text"], row["source"], row["file"], row["line"])
               for row in rows if row["kind"] == AD]
        with per_ad_warnings_silenced():
            outcomes = iter(list(pipe_isolated(self.nlp, ads, _ad_columns, batch_size=self.batch_size,
                                               fail_fast=self.fail_fast)))
        out = [{"input": row["input"], "seq": row["seq"], "kind": row["kind"], "report": row["report"],
                **(_outcome_columns(next(outcomes)) if row["kind"] == AD else {})} for row in rows]
        return pa.Table.from_pylist(out, schema=RESULT_SCHEMA)


def _ad_columns(doc: Any, ad: JobAd) -> Dict[str, Any]:
    from pipeline.commands.extract import doc_to_record

    return result_columns(doc_to_record(doc, ad.id))


def _outcome_columns(outcome: Any) -> Dict[str, Any]:
    """An ``AdOutcome``'s columns: the ad's result, or a "failed" row."""
    return outcome.result if outcome.failure is None else failed_columns(outcome.failure)


def failed_columns(failure: FailedAd) -> Dict[str, Any]:
    """A failed ad as an actor hands it to the writer: kind "failed", the failure, and its share of the summary."""
    summary = ExtractSummary()
    summary.add_failed(failure)
    return {"kind": FAILED, "failure": json.dumps(failure.to_dict(), ensure_ascii=False),
            "summary": json.dumps(dataclasses.asdict(summary))}


def result_columns(record: Dict[str, Any]) -> Dict[str, Any]:
    """One ad's record as an actor hands it to the writer (``RESULT_SCHEMA``)."""
    summary = ExtractSummary()
    summary.add_record(record)
    return {**{name: record.get(name) for name in AD_TYPES},
            "fields": [(name, json.dumps(value, ensure_ascii=False)) for name, value in record.items()
                       if name not in AD_TYPES],
            "skill_rows": [{name: _typed(name, value) for name, value in zip(SKILL_COLUMNS, row + (rank,))}
                           for rank, row in enumerate(csv_rows(record), start=1)],
            "summary": json.dumps(dataclasses.asdict(summary))}


def _typed(name: str, value: Any) -> Any:
    """A skills-table value of its column's type (``SKILL_TYPES``, strings otherwise), so that every part has the
    same schema. "" is the CSV's "none": null in a typed column."""
    if SKILL_TYPES.get(name, pa.string()) == pa.string():
        return None if value is None else str(value)
    return None if value is None or value == "" else value


# ---------------------------------------------------------------------------------------------------- timeline
class TimedPipelineActor(PipelineActor):
    """A ``PipelineActor`` that appends when it loaded and how long each batch took to a JSON Lines file
    (``extract --timeline``, the bench's Ray rows): where a Ray run's time goes (``timeline_stats``). Every actor
    writes the same path, so on a cluster it must be on a shared filesystem."""

    def __init__(self, model: str, config: Optional[Dict[str, Any]] = None, batch_size: int = 32,
                 fail_fast: bool = False, *, timeline: str):
        started = time.time()
        super().__init__(model, config, batch_size, fail_fast)
        self.timeline = timeline
        self._record("load", started)

    def _record(self, event: str, started: float, **extra: Any) -> None:
        with open(self.timeline, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"actor": os.getpid(), "event": event, "start": started, "end": time.time(),
                                     **extra}) + "\n")

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.time()
        out = super().__call__(batch)
        self._record("batch", started, ads=sum(kind == AD for kind in batch.column("kind").to_pylist()))
        return out


def timeline_stats(path: PathLike, run_start: float, run_end: float) -> Dict[str, float]:
    """Of one run's ``TimedPipelineActor`` timeline: seconds before the first batch (actors started, pipelines
    loaded), seconds after the last (last parts written, inputs committed), and the share of the actors' time
    between the two spent on batches (below 1: actors waiting for work, or starved of CPU by Ray's own
    processes). Actors are told apart by process id, so an actor restarted mid-run counts as two."""
    events = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
    batches = [e for e in events if e["event"] == "batch"]
    if not batches:
        return {}
    first, last = min(e["start"] for e in batches), max(e["end"] for e in batches)
    actors = {e["actor"] for e in batches}
    busy = sum(e["end"] - e["start"] for e in batches)
    return {"start-up s": first - run_start, "tail s": run_end - last,
            "actor busy share": busy / (len(actors) * (last - first)) if last > first else 1.0}
