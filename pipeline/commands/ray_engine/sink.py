"""The write stage: Ray write tasks turning the actors' rows into Parquet parts, atomically, in ``_staging/``.

Per input file, parts are named by the ``seq`` range they hold and written by Arrow alone (sort, flatten,
write). Every file is written under a temporary name and renamed (``write_atomic``), so a killed writer leaves
no half file under a final name; ``output.OutputFolder`` checks the staged parts and moves them into place when
the run ends. A part's ads that failed (``actor.failed_columns``) go to its ``failed/`` file, one JSON object a
line (``input``, ``seq`` and the ``FailedAd``); the part's summary, written last, marks the part as written.

The ads table has ``input``, ``seq`` and every field of the record: ``id``, ``is_english``, ``truncated_chars``
as typed columns (``AD_TYPES``), the others (``skills``, ``ranking``, ``sentences``) as JSON strings in
``<field>_json`` columns. JSON, not Arrow structs: the record's shape belongs to ``doc_to_record`` and may grow a
field, and a JSON column keeps every part's schema the same whatever the ads hold (an empty list has no Arrow
type to infer), so a folder of parts always reads back as one table. The skills table is flat and typed for
analysts: the CSV's columns (``records.CSV_COLUMNS``; ``score``/``probability`` float, ``explicit`` bool, others
strings) and ``rank`` (1 = the ad's best).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.commands.ray_engine.actor import AD_TYPES
from pipeline.commands.ray_engine.read import AD, FAILED, PARQUET_SUFFIX, REPORT
from pipeline.io.records import merge_summaries

# The output folder's names (the ``output`` module's layout); parts of a run are staged under the same names.
ADS, SKILLS, FAILED_ADS, DONE, STAGING = "ads", "skills", "failed", "done", "_staging"
FAILED_SUFFIX = ".jsonl"
REPORTS, PART_SUMMARIES = "reports", "summaries"
TMP_PREFIX = ".tmp-"


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write to a temporary name, then rename: a killed writer leaves no half file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")
    write(tmp)
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    """``write_atomic`` of a UTF-8 text (the folder's JSON files)."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


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


def failed_lines(rows: pa.Table) -> str:
    """The failed rows of a part as JSON Lines: ``input``, ``seq``, then the ``FailedAd``'s fields."""
    return "".join(json.dumps({"input": row["input"], "seq": row["seq"], **json.loads(row["failure"])},
                              ensure_ascii=False) + "\n"
                   for row in rows.select(["input", "seq", "failure"]).to_pylist())


def write_part(staging: Path, key: str, rows: pa.Table) -> int:
    """One part of one input (its ad and failed rows of ``RESULT_SCHEMA``): the failed ads, skills and ads (each
    only if the part has such rows), then the part's summary last — the summary is what marks the part as written
    (``OutputFolder.staged_seqs``)."""
    rows = rows.sort_by("seq")
    seqs = rows.column("seq")
    name = f"part-{seqs[0].as_py():010d}-{seqs[-1].as_py():010d}"
    summary = merge_summaries(json.loads(text) for text in rows.column("summary").to_pylist())
    failed, ads = (rows.filter(pc.equal(rows.column("kind"), kind)) for kind in (FAILED, AD))
    if failed.num_rows:
        write_text_atomic(staging / FAILED_ADS / key / f"{name}{FAILED_SUFFIX}", failed_lines(failed))
    if ads.num_rows:
        write_atomic(staging / SKILLS / key / f"{name}{PARQUET_SUFFIX}",
                     functools.partial(pq.write_table, skills_table(ads)))
        write_atomic(staging / ADS / key / f"{name}{PARQUET_SUFFIX}", functools.partial(pq.write_table, ads_table(ads)))
    write_text_atomic(staging / PART_SUMMARIES / key / f"{name}.json", json.dumps(dataclasses.asdict(summary)))
    return rows.num_rows


def datasink(staging: Path, min_rows: int):
    """A Ray Data datasink writing the actors' rows into ``staging``; its ``written`` is the ads written or failed."""
    from ray.data.block import BlockAccessor
    from ray.data.datasource import Datasink

    class ParquetSink(Datasink):
        """Write tasks: ad and failed rows grouped by input into parts, report rows into ``reports/<input>.json``."""

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
                write_text_atomic(staging / REPORTS / f"{row['input']}.json", row["report"])
            ads = table.filter(pc.is_in(table.column("kind"), pa.array([AD, FAILED])))
            return sum(write_part(staging, key, ads.filter(pc.equal(ads.column("input"), key)))
                       for key in pc.unique(ads.column("input")).to_pylist())

    return ParquetSink()
