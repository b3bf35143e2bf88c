"""The read stage: which files a run reads, and how one Ray read task turns a file into blocks of ad rows.

JSON Lines and text files are read by the project's one job-ad reader (``pipeline.io.jobads``); Parquet by the
same field and rejection rules, so that a bad line is counted by the same reason as in the single-process engine.
Every ad gets ``seq``, its position among the ads of its file, and keeps its ``file`` and ``line`` (a failed ad is
listed by them); the file's ``ReadReport`` follows its last ad as one "report" row (``READ_SCHEMA``).

Ray is imported only inside ``datasource``: the rest runs (and is tested) without it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Union

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import EscoDataError
from pipeline.io.jobads import (FILE_ERROR, AdFormat, InputFile, JobAd, ReadReport, ad_from_record, iter_ads,
                                resolve_inputs)

PathLike = Union[str, Path]
PARQUET_SUFFIX = ".parquet"
# The ``kind`` of a row between the stages: one ad, one file's read report, or (from the actors on) an ad that failed
AD, REPORT, FAILED = "ad", "report", "failed"
READ_SCHEMA = pa.schema([("input", pa.string()), ("seq", pa.int64()), ("kind", pa.string()), ("id", pa.string()),
                         ("text", pa.string()), ("source", pa.string()), ("file", pa.string()), ("line", pa.int64()),
                         ("report", pa.string())])


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
                         "source": ad.source, "file": ad.file, "line": ad.line, "report": None})
            if len(rows) >= block_ads:
                yield pa.Table.from_pylist(rows, schema=READ_SCHEMA)
                rows = []
    rows.append({"input": spec.key, "seq": -1, "kind": REPORT, "id": None, "text": None, "source": None,
                 "file": None, "line": None, "report": json.dumps(report.file(spec.path).to_dict())})
    yield pa.Table.from_pylist(rows, schema=READ_SCHEMA)


def datasource(specs: Sequence[InputSpec], ad_format: AdFormat, block_ads: int, staged: Dict[str, Set[int]]):
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
