"""``extract --engine ray``: the same extraction on Ray Data, from a laptop to a cluster.

The flow is three Ray Data stages:

1. **read** (``JobAdDatasource``, one read task per input file): the project's one job-ad reader
   (``pipeline.io.jobads``) for JSON Lines and text files, and the same field and rejection rules for Parquet, so
   that a bad line is counted by the same reason as in the single-process engine. Every ad gets ``seq``, its
   position among the ads of its file; the file's ``ReadReport`` follows its last ad as one "report" row.
2. **extract** (``map_batches`` over an actor pool of ``num_workers`` ``PipelineActor``s): each actor loads the
   pipeline once and turns ads into records with ``extract.pipe_records`` (so rows follow ``doc_to_record``),
   handed on already in the output's shape (``result_columns``): the actors, not the one writer, do the per-ad
   work, in parallel with each other. A killed actor is restarted and its batch retried (``max_restarts`` /
   ``max_task_retries``).
3. **write** (``ParquetSink``): per input file, Parquet parts named by the ``seq`` range they hold, written
   atomically into ``_staging/`` by Arrow alone (sort, flatten, write), then checked and moved into place when
   the run ends (``commit``).

Output folder::

    ads/<input>/part-<first seq>-<last seq>.parquet     one row per ad
    skills/<input>/part-<first seq>-<last seq>.parquet  one row per (ad, skill of its set)
    done/<input>.json                                   the input's read report and counts, once committed
    summary.json                                        ads in, ads out, rejects by reason, over all done inputs
    run.json                                            model and reading options (a rerun must match them)

The ads table has ``input``, ``seq`` and every field of the record: ``id``, ``is_english``, ``truncated_chars``
as typed columns (``AD_TYPES``), the others (``skills``, ``ranking``, ``sentences``) as JSON strings in
``<field>_json`` columns. JSON, not Arrow structs: the record's shape belongs to ``doc_to_record`` and may grow a
field, and a JSON column keeps every part's schema the same whatever the ads hold (an empty list has no Arrow
type to infer), so a folder of parts always reads back as one table. The skills table is flat and typed for
analysts: the CSV's columns (``records.CSV_COLUMNS``; ``score``/``probability`` float, ``explicit`` bool, others
strings) and ``rank`` (1 = the ad's best).

Nothing lost, nothing twice: ``ads in`` (the reader's ads + rejected lines) must equal ``ads out`` (rows in the
written Parquet) + rejects, per input and in total, and the written ``seq`` of each input must be exactly
0..n-1 with no repeat; ``commit`` raises otherwise and keeps the staged parts. A rerun into the same folder skips
committed inputs, keeps the staged parts of an interrupted run (only the ads they lack are extracted again) and
refuses inputs that changed since they were committed, or options other than the folder's.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.constraints import PositiveInt, check_values
from pipeline.errors import ConfigError, EscoDataError
from pipeline.io.jobads import (FILE_ERROR, AdFormat, InputFile, JobAd, ReadReport, ad_from_record, iter_ads,
                                resolve_inputs)
from pipeline.io.records import CSV_COLUMNS, ExtractSummary, csv_rows, merge_summaries

PathLike = Union[str, Path]
INSTALL_HINT = 'pip install ".[ray]"'
ADS, SKILLS, DONE, STAGING = "ads", "skills", "done", "_staging"
REPORTS, PART_SUMMARIES = "reports", "summaries"
STREAM_BUFFER = "_max_num_blocks_in_streaming_gen_buffer"  # RaySettings.stream_blocks
SUMMARY_FILE, RUN_FILE = "summary.json", "run.json"
PARQUET_SUFFIX = ".parquet"
AD, REPORT = "ad", "report"
TMP_PREFIX = ".tmp-"
# Output columns with an Arrow type; any other record field is a JSON string column, any other CSV column a string.
AD_TYPES = {"id": pa.string(), "is_english": pa.bool_(), "truncated_chars": pa.int64()}
SKILL_TYPES = {"score": pa.float64(), "explicit": pa.bool_(), "probability": pa.float64(), "rank": pa.int64()}
SKILL_COLUMNS = tuple(CSV_COLUMNS) + ("rank",)
SKILL_ROW = pa.struct([(name, SKILL_TYPES.get(name, pa.string())) for name in SKILL_COLUMNS])
# Rows between the stages: what the reader emits, and what the actors return. An actor hands on each ad already
# in the output's shape (typed fields, the other fields as JSON, its skill rows, its share of the summary), so
# the writer only sorts, flattens and writes Arrow data: it parses no JSON of the records.
READ_SCHEMA = pa.schema([("input", pa.string()), ("seq", pa.int64()), ("kind", pa.string()), ("id", pa.string()),
                         ("text", pa.string()), ("source", pa.string()), ("report", pa.string())])
RESULT_SCHEMA = pa.schema([("input", pa.string()), ("seq", pa.int64()), ("kind", pa.string()),
                           ("report", pa.string()), *AD_TYPES.items(),
                           ("fields", pa.map_(pa.string(), pa.string())),  # the record's other fields → JSON
                           ("skill_rows", pa.list_(SKILL_ROW)),  # the skills table's rows of the ad
                           ("summary", pa.string())])  # ExtractSummary of the ad alone, as JSON


@dataclass(frozen=True)
class RaySettings:
    """How the run is spread: the actor pool, its batches and where Ray runs."""

    num_workers: PositiveInt = 2  # actors, each holding one loaded pipeline
    batch_size: PositiveInt = 32  # ads per actor call (and nlp.pipe's batch size)
    cpus_per_worker: PositiveInt = 1  # CPUs (and torch threads) each actor asks Ray for
    # Batches handed to an actor before it is free. One keeps the pool evenly loaded: a batch takes seconds, so
    # nothing is gained by queueing, and a queue of four (Ray's default) left one actor idle for the last ~15 %
    # of a 600-ad run while the other worked through its queue.
    batches_per_worker: PositiveInt = 1
    max_restarts: PositiveInt = 3  # restarts of a killed actor, and retries of its batch, before the run fails
    part_ads: PositiveInt = 1000  # ads per Parquet part (at least; the last part of an input may hold fewer)
    block_bytes: PositiveInt = 128 * 1024  # Ray Data's block size target in this run: about one batch of ads
    # Blocks a Ray task may yield before its consumer takes them (Ray Data's default: 2). An actor's results for
    # one batch are 2-3 MB of JSON, cut into ~20 blocks of ``block_bytes``; with 2 in flight they trickled back at
    # the pace of the driver's scheduling loop, the actor idle about 0.8 s per batch (busy 85 %; with 64: 0.12 s,
    # 94 %). The bound still caps how far a read task runs ahead of the actors (64 blocks: 8 MB of ad text).
    stream_blocks: PositiveInt = 64
    address: Optional[str] = None  # a Ray cluster; None: RAY_ADDRESS, else a local Ray with num_workers CPUs

    def validate(self) -> None:
        check_values("extract --engine ray", RaySettings, **{f.name: getattr(self, f.name)
                                                             for f in dataclasses.fields(self) if f.name != "address"})


@dataclass(frozen=True)
class InputSpec:
    """One input file of the run and how it is identified in the output folder."""

    key: str  # folder / file stem in the output: the file name + a hash of its absolute path
    path: str
    kind: str  # "jsonl" | "text" | "parquet"
    default_source: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path, kind: str, default_source: str) -> "InputSpec":
        resolved = path.resolve()
        digest = hashlib.sha1(str(resolved).encode("utf-8")).hexdigest()[:10]
        stat = resolved.stat()
        return cls(f"{re.sub(r'[^A-Za-z0-9._-]+', '_', path.name)}-{digest}", str(resolved), kind, default_source,
                   stat.st_size, stat.st_mtime_ns)

    def identity(self) -> Dict[str, Any]:
        return {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns}


# ---------------------------------------------------------------------------------------------------- inputs
def resolve_ray_inputs(inputs: Iterable[PathLike]) -> List[InputSpec]:
    """The job-ad files of ``resolve_inputs`` plus Parquet files (given, or in a given folder); each file once."""
    specs: Dict[str, InputSpec] = {}
    for path in map(Path, inputs):
        parquet = _parquet_files(path)
        try:
            files = resolve_inputs(path)
        except EscoDataError:
            if not parquet:
                raise
            files = []
        for spec in [InputSpec.of(p, "parquet", path.name if path.is_dir() else p.stem) for p in parquet] + [
                InputSpec.of(f.path, f.kind, f.default_source) for f in files]:
            specs.setdefault(spec.key, spec)
    return list(specs.values())


def _parquet_files(path: Path) -> List[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == PARQUET_SUFFIX)
    return [path] if path.is_file() and path.suffix.lower() == PARQUET_SUFFIX else []


# ---------------------------------------------------------------------------------------------------- read
def _ads_of(spec: InputSpec, ad_format: AdFormat, report: ReadReport) -> Iterator[JobAd]:
    if spec.kind == "parquet":
        return _parquet_ads(spec, ad_format, report)
    return iter_ads([InputFile(Path(spec.path), spec.kind, spec.default_source)], ad_format, report)


def _parquet_ads(spec: InputSpec, ad_format: AdFormat, report: ReadReport) -> Iterator[JobAd]:
    """One ad per row, by the JSON Lines rules: a row without usable text is rejected, one without an id gets
    ``file:row`` as id. ``row`` (1-based) plays the part of the line number."""
    path, row_no = Path(spec.path), 0
    wanted = (ad_format.text_field, ad_format.id_field, ad_format.source_field)
    try:
        handle = pq.ParquetFile(path)
        columns = [name for name in dict.fromkeys(wanted) if name in handle.schema_arrow.names]
        for batch in handle.iter_batches(batch_size=1024, columns=columns):
            for row in batch.to_pylist():
                row_no += 1
                ad = ad_from_record(row, ad_format, path, row_no, spec.default_source, report)
                if ad is not None:
                    report.file(path).ads_read += 1
                    yield ad
    except (OSError, pa.ArrowException) as err:
        report.problem(path, row_no + 1, FILE_ERROR, "unreadable file", f"after row {row_no}: {err}")
        return
    if row_no == 0:
        report.problem(path, 0, FILE_ERROR, "empty file", "no ads in it")


def read_blocks(spec: InputSpec, ad_format: AdFormat, block_ads: int, staged: Set[int]) -> Iterator[pa.Table]:
    """Blocks of ad rows of one file (ads whose ``seq`` is in ``staged`` were written by an earlier run and are
    only counted), then its report row. Runs in a Ray read task.

    Ray Data hands an actor whole blocks and merges what a read task yields up to its block size target, so the
    run sets that target to about one batch (``block_bytes``): a file is spread over every actor, and a killed
    actor costs about one batch to redo."""
    report = ReadReport()
    rows: List[Dict[str, Any]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # every problem is counted in the report row
        for seq, ad in enumerate(_ads_of(spec, ad_format, report)):
            if seq in staged:
                continue
            rows.append({"input": spec.key, "seq": seq, "kind": AD, "id": ad.id, "text": ad.text,
                         "source": ad.source, "report": None})
            if len(rows) >= block_ads:
                yield pa.Table.from_pylist(rows, schema=READ_SCHEMA)
                rows = []
    rows.append({"input": spec.key, "seq": -1, "kind": REPORT, "id": None, "text": None, "source": None,
                 "report": json.dumps(report.file(spec.path).to_dict())})
    yield pa.Table.from_pylist(rows, schema=READ_SCHEMA)


def _datasource(specs: Sequence[InputSpec], ad_format: AdFormat, block_ads: int, staged: Dict[str, Set[int]]):
    """A Ray Data datasource with one read task per input file (files are read whole, in order: ``seq``)."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class JobAdDatasource(Datasource):
        def estimate_inmemory_data_size(self) -> Optional[int]:
            return sum(spec.size for spec in specs)

        def get_read_tasks(self, parallelism: int, per_task_row_limit: Optional[int] = None,
                           data_context: Any = None) -> List[ReadTask]:
            return [ReadTask(functools.partial(read_blocks, spec, ad_format, block_ads, staged.get(spec.key, set())),
                             BlockMetadata(num_rows=None, size_bytes=spec.size, exec_stats=None,
                                           input_files=[spec.path]), schema=READ_SCHEMA)
                    for spec in specs]

    return JobAdDatasource()


# ---------------------------------------------------------------------------------------------------- extract
class PipelineActor:
    """One Ray actor: loads the pipeline once, then turns batches of read rows into result rows (reports pass).

    The model's stack (spaCy, torch) is imported here, in the actor, not by this module: Ray's read and write
    tasks import the module too and need none of it."""

    def __init__(self, model: str, config: Optional[Dict[str, Any]] = None, batch_size: int = 32):
        from pipeline.components.pipes import load_pipeline

        self.nlp = load_pipeline(model, config=config or {})
        self.batch_size = batch_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        from pipeline.commands.extract import per_ad_warnings_silenced, pipe_records

        rows = batch.to_pylist()
        ads = [JobAd(row["id"], row["text"], row["source"]) for row in rows if row["kind"] == AD]
        with per_ad_warnings_silenced():
            records = iter(list(pipe_records(self.nlp, ads, batch_size=self.batch_size)))
        out = [{"input": row["input"], "seq": row["seq"], "kind": row["kind"], "report": row["report"],
                **(result_columns(next(records)) if row["kind"] == AD else {})} for row in rows]
        return pa.Table.from_pylist(out, schema=RESULT_SCHEMA)


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


class TimedPipelineActor(PipelineActor):
    """A ``PipelineActor`` that appends when it loaded and how long each batch took to a JSON Lines file
    (``extract --timeline``, the bench's Ray rows): where a Ray run's time goes (``timeline_stats``). Every actor
    writes the same path, so on a cluster it must be on a shared filesystem."""

    def __init__(self, model: str, config: Optional[Dict[str, Any]] = None, batch_size: int = 32, *,
                 timeline: str):
        started = time.time()
        super().__init__(model, config, batch_size)
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


# ---------------------------------------------------------------------------------------------------- write
def ads_table(rows: pa.Table) -> pa.Table:
    """One row per ad: ``input``, ``seq``, the record's fields of ``AD_TYPES`` typed, any other as ``<field>_json``
    (in the record's order)."""
    fields = rows.column("fields")
    names = [name for name, _ in fields[0].as_py()] if rows.num_rows else []
    return pa.table({"input": rows.column("input"), "seq": rows.column("seq"),
                     **{name: rows.column(name) for name in AD_TYPES},
                     **{f"{name}_json": pc.map_lookup(fields, pa.scalar(name), "first") for name in names}})


def skills_table(rows: pa.Table) -> pa.Table:
    """One row per (ad, skill of its set): the CSV's columns (``csv_rows``) and the skill's rank in the set."""
    return pa.Table.from_struct_array(pc.list_flatten(rows.column("skill_rows")))


def _write_atomic(path: Path, write) -> None:
    """Write to a temporary name, then rename: a killed writer leaves no half file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")
    write(tmp)
    os.replace(tmp, path)


def write_part(staging: Path, key: str, rows: pa.Table) -> int:
    """One part of one input (its ad rows of ``RESULT_SCHEMA``): skills, then the part's summary, then the ads file
    last — the ads file is what marks the part as written (``staged_seqs``)."""
    rows = rows.sort_by("seq")
    seqs = rows.column("seq")
    name = f"part-{seqs[0].as_py():010d}-{seqs[-1].as_py():010d}"
    summary = merge_summaries(json.loads(text) for text in rows.column("summary").to_pylist())
    _write_atomic(staging / SKILLS / key / f"{name}{PARQUET_SUFFIX}",
                  functools.partial(pq.write_table, skills_table(rows)))
    _write_atomic(staging / PART_SUMMARIES / key / f"{name}.json",
                  lambda p: p.write_text(json.dumps(dataclasses.asdict(summary)), encoding="utf-8"))
    _write_atomic(staging / ADS / key / f"{name}{PARQUET_SUFFIX}", functools.partial(pq.write_table, ads_table(rows)))
    return rows.num_rows


def _datasink(staging: Path, min_rows: int):
    from ray.data.block import BlockAccessor
    from ray.data.datasource import Datasink

    class ParquetSink(Datasink):
        """Write tasks: ad rows grouped by input into parts, report rows into ``reports/<input>.json``."""

        written = 0

        @property
        def min_rows_per_write(self) -> Optional[int]:
            return min_rows

        def on_write_complete(self, write_result: Any) -> None:
            self.written = sum(write_result.write_returns)

        def write(self, blocks: Iterable[Any], ctx: Any) -> int:
            tables = [BlockAccessor.for_block(block).to_arrow() for block in blocks]
            if not tables:
                return 0
            table = pa.concat_tables(tables)
            for row in table.filter(pc.equal(table.column("kind"), REPORT)).select(["input", "report"]).to_pylist():
                _write_atomic(staging / REPORTS / f"{row['input']}.json",
                              lambda p, text=row["report"]: p.write_text(text, encoding="utf-8"))
            ads = table.filter(pc.equal(table.column("kind"), AD))
            return sum(write_part(staging, key, ads.filter(pc.equal(ads.column("input"), key)))
                       for key in pc.unique(ads.column("input")).to_pylist())

    return ParquetSink()


# ---------------------------------------------------------------------------------------------------- folder
@dataclass
class OutputFolder:
    """The output folder's layout, and the checks that make a rerun resume instead of duplicating."""

    root: Path

    @property
    def staging(self) -> Path:
        return self.root / STAGING

    def done_path(self, spec: InputSpec) -> Path:
        return self.root / DONE / f"{spec.key}.json"

    def check_run(self, run: Dict[str, Any]) -> None:
        """Record the run's options; refuse a folder written with other ones (its parts would not agree)."""
        path = self.root / RUN_FILE
        if path.exists():
            before = json.loads(path.read_text(encoding="utf-8"))
            changed = sorted(k for k in set(before) | set(run) if before.get(k) != run.get(k))
            if changed:
                raise ConfigError(f"'{self.root}' holds the output of a run with other options ({', '.join(changed)}:"
                                  f" {', '.join(f'{before.get(k)!r} then, {run.get(k)!r} now' for k in changed)}). "
                                  "Give a new --output folder, or the same options to resume.")
        self.root.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, lambda p: p.write_text(json.dumps(run, indent=2), encoding="utf-8"))

    def pending(self, specs: Sequence[InputSpec]) -> List[InputSpec]:
        """Inputs not committed yet; one committed from a file that has changed since is refused."""
        todo = []
        for spec in specs:
            path = self.done_path(spec)
            if not path.exists():
                todo.append(spec)
                continue
            done = json.loads(path.read_text(encoding="utf-8"))
            if done["input"] != spec.identity():
                raise EscoDataError(f"'{spec.path}' changed since it was extracted into '{self.root}' (size or time "
                                    f"differ from {path.name}): give a new --output folder.")
        return todo

    def staged_seqs(self, spec: InputSpec) -> Set[int]:
        """The ads of an interrupted run already written for this input (its staged parts are kept when the file
        is unchanged); half-written files and parts without their ads file are removed."""
        marker = self.staging / "inputs" / f"{spec.key}.json"
        if marker.exists() and json.loads(marker.read_text(encoding="utf-8")) != spec.identity():
            for kind in (ADS, SKILLS, PART_SUMMARIES):
                shutil.rmtree(self.staging / kind / spec.key, ignore_errors=True)
        _write_atomic(marker, lambda p: p.write_text(json.dumps(spec.identity()), encoding="utf-8"))
        (self.staging / REPORTS / f"{spec.key}.json").unlink(missing_ok=True)  # the reader writes it again
        ads = self._parts(ADS, spec)
        for kind in (SKILLS, PART_SUMMARIES):
            for part in self._parts(kind, spec):
                if part.name.startswith(TMP_PREFIX) or part.stem not in {a.stem for a in ads}:
                    part.unlink()
        seqs: Set[int] = set()
        for part in ads:
            seqs.update(pq.read_table(part, columns=["seq"]).column("seq").to_pylist())
        return seqs

    def _parts(self, kind: str, spec: InputSpec) -> List[Path]:
        folder = self.staging / kind / spec.key
        if not folder.exists():
            return []
        for tmp in folder.glob(f"{TMP_PREFIX}*"):
            tmp.unlink()
        return sorted(folder.iterdir())

    def commit(self, spec: InputSpec) -> Dict[str, Any]:
        """Check one input's staged parts against its read report, then move them into place and mark it done."""
        report_path = self.staging / REPORTS / f"{spec.key}.json"
        if not report_path.exists():
            raise EscoDataError(f"'{spec.path}': the reader's report is missing, so the file was not read to the "
                                f"end; its staged parts are kept in '{self.staging}' for a rerun.")
        report = json.loads(report_path.read_text(encoding="utf-8"))
        seqs = [s for part in self._parts(ADS, spec) for s in pq.read_table(part, columns=["seq"]).column("seq")
                .to_pylist()]
        n_read = report["ads_read"]
        if len(seqs) != n_read or len(set(seqs)) != len(seqs) or (seqs and (min(seqs) < 0 or max(seqs) >= n_read)):
            repeated = len(seqs) - len(set(seqs))
            raise EscoDataError(f"'{spec.path}': {n_read:,} ads read but {len(seqs):,} rows written ({repeated:,} "
                                f"repeated); nothing of it was committed (parts kept in '{self.staging}').")
        summary = merge_summaries(json.loads(p.read_text(encoding="utf-8"))
                                  for p in self._parts(PART_SUMMARIES, spec))
        for kind in (ADS, SKILLS):
            source, target = self.staging / kind / spec.key, self.root / kind / spec.key
            source.mkdir(parents=True, exist_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)  # never committed (no done file): left by a failed move
            os.replace(source, target)
        done = {"key": spec.key, "input": spec.identity(), "report": report, "ads_out": len(seqs),
                "summary": dataclasses.asdict(summary)}
        _write_atomic(self.done_path(spec), lambda p: p.write_text(json.dumps(done, indent=2), encoding="utf-8"))
        shutil.rmtree(self.staging / PART_SUMMARIES / spec.key, ignore_errors=True)
        report_path.unlink()
        (self.staging / "inputs" / f"{spec.key}.json").unlink(missing_ok=True)
        return done

    def remove_empty_staging(self) -> None:
        """Drop ``_staging`` once it holds no file (other inputs' interrupted parts keep it)."""
        if self.staging.exists() and not any(p.is_file() for p in self.staging.rglob("*")):
            shutil.rmtree(self.staging)

    def summarize(self, specs: Sequence[InputSpec]) -> Dict[str, Any]:
        """summary.json over the given inputs (all committed): counts, rejects by reason and the in/out check."""
        dones = [json.loads(self.done_path(spec).read_text(encoding="utf-8")) for spec in specs]
        rejected, repaired, file_errors = Counter(), Counter(), Counter()
        inputs = []
        for done in dones:
            report = done["report"]
            rejected.update(report["rejected_lines"])
            repaired.update(report["repaired_lines"])
            file_errors.update(report["file_errors"])
            n_rejected = sum(report["rejected_lines"].values())
            inputs.append({"input": done["input"]["path"], "key": done["key"],
                           "ads_in": report["ads_read"] + n_rejected,
                           "ads_out": done["ads_out"], "rejected": n_rejected})
        ads_in, ads_out = sum(i["ads_in"] for i in inputs), sum(i["ads_out"] for i in inputs)
        balanced = all(i["ads_in"] == i["ads_out"] + i["rejected"] for i in inputs)
        extract = merge_summaries(done["summary"] for done in dones)
        extract.skipped, extract.repaired, extract.file_errors = dict(rejected), dict(repaired), dict(file_errors)
        extract.n_skipped, extract.n_repaired, extract.n_file_errors = (
            sum(rejected.values()), sum(repaired.values()), sum(file_errors.values()))
        summary = {"ads_in": ads_in, "ads_out": ads_out, "rejected": sum(rejected.values()),
                   "rejected_by_reason": dict(rejected), "repaired_by_reason": dict(repaired),
                   "file_errors_by_reason": dict(file_errors), "balanced": balanced,
                   "extract": dataclasses.asdict(extract), "inputs": inputs}
        _write_atomic(self.root / SUMMARY_FILE, lambda p: p.write_text(json.dumps(summary, indent=2), encoding="utf-8"))
        if not balanced:
            raise EscoDataError(f"ads in != ads out + rejects in '{self.root / SUMMARY_FILE}': see its 'inputs'.")
        return summary


# ---------------------------------------------------------------------------------------------------- run
def import_ray():
    """Ray Data, or a ConfigError saying how to install it (Ray is an optional extra)."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"--engine ray needs Ray Data, which is not installed here ({err}): {INSTALL_HINT}") from err
    return ray


@contextmanager
def ray_session(settings: RaySettings) -> Iterator[Any]:
    """The caller's Ray if one is running; else join ``address`` / ``RAY_ADDRESS``; else a local Ray with
    ``num_workers × cpus_per_worker`` CPUs, shut down afterwards."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = settings.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level="WARNING")
    else:
        ray.init(num_cpus=settings.num_workers * settings.cpus_per_worker, include_dashboard=False,
                 logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()


@contextmanager
def data_context(ray: Any, settings: RaySettings) -> Iterator[Any]:
    """Ray Data's settings for one run, restored afterwards: blocks of about one batch of ads
    (``block_bytes``), and ``stream_blocks`` blocks a task may yield before its consumer takes them."""
    context = ray.data.DataContext.get_current()
    saved = {name: getattr(context, name) for name in ("target_max_block_size", STREAM_BUFFER)
             if hasattr(context, name)}
    context.target_max_block_size = settings.block_bytes
    if STREAM_BUFFER in saved:  # private in Ray 2.60 (pinned by the extra); without it a run is only slower
        setattr(context, STREAM_BUFFER, settings.stream_blocks)
    try:
        yield context
    finally:
        for name, value in saved.items():
            setattr(context, name, value)


@dataclass
class RayRunResult:
    """What ``extract_ray`` did: the folder's summary, and which inputs this run extracted or skipped."""

    summary: Dict[str, Any]
    extracted: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    ads_extracted: int = 0  # ads this run ran through the pipeline (the others were done by an earlier run)
    timing: Dict[str, float] = field(default_factory=dict)  # ``timeline_stats`` of the run, with ``--timeline``

    def describe(self) -> str:
        s = self.summary
        reasons = "; ".join(f"{n:,} × {r}" for r, n in Counter(s["rejected_by_reason"]).most_common())
        timing = (f"; {self.timing['start-up s']:.1f} s to the first batch, {self.timing['tail s']:.1f} s after the "
                  f"last, actors busy {self.timing['actor busy share']:.0%} in between" if self.timing else "")
        return (f"{s['ads_in']:,} ad(s) in = {s['ads_out']:,} written + {s['rejected']:,} rejected"
                f"{f' ({reasons})' if reasons else ''}; this run: {len(self.extracted)} input(s), "
                f"{self.ads_extracted:,} ad(s) extracted; {len(self.skipped)} input(s) already done{timing}")


def extract_ray(
    model: PathLike,
    inputs: Union[PathLike, Sequence[PathLike]],
    output: PathLike,
    *,
    settings: RaySettings = RaySettings(),
    text_field: str = "description",
    id_field: str = "id",
    lines: bool = False,
    config: Optional[Dict[str, Any]] = None,
    actor: type = PipelineActor,
    actor_options: Optional[Dict[str, Any]] = None,
) -> RayRunResult:
    """Extract every ad of ``inputs`` into the Parquet folder ``output`` on Ray Data (module docstring).

    ``model`` must be readable by every Ray node (a shared folder or an installed package name), and so must the
    inputs and ``output`` on a cluster. ``config`` overrides the pipeline's config in every actor (e.g.
    ``backend_override("onnx-int8")``); ``actor`` is the class the pool runs (a subclass can add behaviour) and
    ``actor_options`` its constructor's further keyword arguments.
    """
    import_ray()  # before anything is written
    settings.validate()
    ad_format = AdFormat(text_field=text_field, id_field=id_field, one_per_line=lines)
    ad_format.validate()
    specs = resolve_ray_inputs([inputs] if isinstance(inputs, (str, Path)) else inputs)
    folder = OutputFolder(Path(output))
    folder.check_run({"model": str(model), "text_field": text_field, "id_field": id_field, "lines": lines,
                      "config": config or {}})
    todo = folder.pending(specs)
    written = 0
    if todo:
        staged = {spec.key: folder.staged_seqs(spec) for spec in todo}
        with ray_session(settings) as ray, data_context(ray, settings):
            ds = ray.data.read_datasource(_datasource(todo, ad_format, settings.batch_size, staged), num_cpus=0)
            with warnings.catch_warnings():
                # Ray 2.60 takes the actors' restart limits only as plain remote args, which it announces it will
                # drop in 2.64 (its default then: unlimited restarts). A finite limit stops an ad that kills every
                # actor from looping forever.
                warnings.simplefilter("ignore", DeprecationWarning)
                ds = ds.map_batches(actor, fn_constructor_kwargs={"model": str(model), "config": config,
                                                                  "batch_size": settings.batch_size,
                                                                  **(actor_options or {})},
                                    batch_size=settings.batch_size, batch_format="pyarrow",
                                    compute=ray.data.ActorPoolStrategy(
                                        size=settings.num_workers,
                                        max_tasks_in_flight_per_actor=settings.batches_per_worker),
                                    num_cpus=settings.cpus_per_worker, max_restarts=settings.max_restarts,
                                    max_task_retries=settings.max_restarts)
            sink = _datasink(folder.staging, min_rows=settings.part_ads)
            ds.write_datasink(sink, ray_remote_args={"num_cpus": 0})
            written = sink.written
        for spec in todo:
            folder.commit(spec)
    summary = folder.summarize(specs)
    folder.remove_empty_staging()
    return RayRunResult(summary, [s.path for s in todo], [s.path for s in specs if s not in todo], written)


def run_ray_command(model: PathLike, inputs: Sequence[PathLike], output: Optional[PathLike], *, engine: str,
                    single_only: Dict[str, Any], num_workers: int, batch_size: int, address: Optional[str],
                    cpus_per_worker: int = 1, config: Optional[Dict[str, Any]] = None,
                    text_field: str = "description", id_field: str = "id", lines: bool = False,
                    timeline: Optional[PathLike] = None) -> RayRunResult:
    """``extract --engine ray``: refuse what only the single engine does (``single_only``: option → value given),
    then ``extract_ray``. With ``timeline``, the actors log their load and batches there (a path every node can
    write: on a cluster, a shared folder) and the result says where the run's time went."""
    if engine != "ray":
        raise ConfigError(f"--engine must be 'single' or 'ray', got {engine!r}")
    import_ray()
    given = [name for name, value in single_only.items() if value]
    if given:
        raise ConfigError(f"{', '.join(given)}: only with --engine single; --engine ray writes the Parquet tables "
                          "(ads, skills) and summary.json to --output")
    if output is None:
        raise ConfigError("--engine ray needs --output DIR: the folder of Parquet tables")
    settings = RaySettings(num_workers=num_workers, batch_size=batch_size, cpus_per_worker=cpus_per_worker,
                           address=address)
    timed = {"actor": TimedPipelineActor, "actor_options": {"timeline": str(timeline)}} if timeline else {}
    start = time.time()
    result = extract_ray(model, inputs, output, settings=settings, text_field=text_field, id_field=id_field,
                         lines=lines, config=config, **timed)
    if timeline and Path(timeline).exists():  # absent when every input was already done
        result.timing = timeline_stats(timeline, start, time.time())
    return result


# ---------------------------------------------------------------------------------------------------- bench
def bench_engines(model: PathLike, ads: Sequence[str], workers: Sequence[int], batch_size: int,
                  repeats: int, cpus_per_worker: int = 1) -> Dict[str, Dict[str, float]]:
    """``make bench``'s engine rows: ``python -m pipeline extract`` of the same ads, each run a fresh process
    timed from start to exit as a user runs it (imports, pipeline loading, extraction, JSONL or Parquet written):
    the single engine, then ``--engine ray`` with each worker count, joining a local Ray with ``max(workers)``
    CPUs started for the round (Ray's own start-up is not timed: a cluster is up before a run). Ray is down while
    the single process runs (its idle processes take ~3 % of two cores).

    The engines take turns, one run each per round, ``repeats`` rounds: a drift in the machine's speed over the
    minutes of a bench falls on every row alike, so that ``x single process`` compares like with like. Each Ray
    row adds ``timeline_stats`` of its last run (``--timeline``): where the time the single process does not
    spend goes."""
    from pipeline.evaluation.bench import per_second, spread

    single = "extract, single process"
    keys = {n: f"extract, Ray Data, {n} worker(s) x {cpus_per_worker} CPU" for n in workers}
    times: Dict[str, List[float]] = {key: [] for key in [single, *keys.values()]}
    stats: Dict[str, Dict[str, float]] = {}
    runs = itertools.count()  # a fresh output per run: a rerun into a finished folder would skip the work
    with tempfile.TemporaryDirectory(prefix="esco-bench-") as tmp:
        folder = Path(tmp)
        path = folder / "ads.jsonl"
        path.write_text("".join(json.dumps({"id": f"bench-{i}", "description": text}) + "\n"
                                for i, text in enumerate(ads)), encoding="utf-8")
        command = ["extract", str(model), str(path), "--batch-size", str(batch_size), "--output"]
        for _ in range(repeats):
            times[single].append(run_timed(command + [str(folder / f"{next(runs)}.jsonl")])[0])
            if not keys:  # Ray not installed: the single process alone
                continue
            with ray_session(RaySettings(num_workers=max(workers), cpus_per_worker=cpus_per_worker)) as ray:
                address = ray.get_runtime_context().gcs_address
                for n, key in keys.items():
                    timeline = folder / f"timeline-{next(runs)}.jsonl"
                    seconds, start = run_timed(command + [
                        str(folder / f"ray-{timeline.stem}"), "--engine", "ray", "--num-workers", str(n),
                        "--cpus-per-worker", str(cpus_per_worker), "--address", address, "--timeline", str(timeline)])
                    times[key].append(seconds)
                    stats[key] = timeline_stats(timeline, start, start + seconds)
    out = {key: per_second(spread(runs_s), len(ads), "ads/s") for key, runs_s in times.items()}
    for key in keys.values():
        out[key]["x single process"] = out[key]["ads/s"] / out[single]["ads/s"]
        out[key].update(stats[key])
    return out


def run_timed(args: Sequence[str]) -> Tuple[float, float]:
    """Run ``python -m pipeline ARGS`` in a fresh process: (its seconds from start to exit, its start as
    ``time.time()``). A failed run raises with the end of what it printed."""
    start, started = time.time(), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"python -m pipeline {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, start
