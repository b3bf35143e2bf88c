"""The output folder: what a run stages, how a rerun resumes, and the check before anything is committed.

::

    ads/<input>/part-<first seq>-<last seq>.parquet     one row per ad
    skills/<input>/part-<first seq>-<last seq>.parquet  one row per (ad, skill of its set)
    failed/<input>/part-<first seq>-<last seq>.jsonl    one line per ad whose processing raised (if any did)
    done/<input>.json                                   the input's read report and counts, once committed
    summary.json                                        ads in, ads out, failed by error, rejects by reason
    run.json                                            model and reading options (a rerun must match them)

Nothing lost, nothing twice: ``ads in`` (the reader's ads + rejected lines) must equal ``ads out`` (rows in the
written Parquet) + failed ads + rejects, per input and in total, and the ``seq`` of each input's written and failed
ads must be exactly 0..n-1 with no repeat; ``commit`` raises otherwise and keeps the staged parts. A rerun into the
same folder skips committed inputs, keeps the staged parts of an interrupted run (only the ads they lack are
extracted again) and refuses inputs that changed since they were committed, or options other than the folder's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Set

import pyarrow.parquet as pq

from pipeline.commands.ray_engine.read import InputSpec
from pipeline.commands.ray_engine.sink import (ADS, DONE, FAILED_ADS, PART_SUMMARIES, REPORTS, SKILLS, STAGING,
                                               TMP_PREFIX, write_text_atomic)
from pipeline.errors import ConfigError, EscoDataError
from pipeline.io.records import merge_summaries

SUMMARY_FILE, RUN_FILE = "summary.json", "run.json"
READ_COUNTS = ("rejected_lines", "repaired_lines", "file_errors")  # a read report's counts by reason
PART_FILES = (ADS, SKILLS, FAILED_ADS)  # a staged part's files besides its summary (which marks it as written)


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
        write_text_atomic(path, json.dumps(run, indent=2))

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
        """The ads of an interrupted run already written or failed for this input (its staged parts are kept when
        the file is unchanged); half-written files and parts without their summary are removed."""
        marker = self.staging / "inputs" / f"{spec.key}.json"
        if marker.exists() and json.loads(marker.read_text(encoding="utf-8")) != spec.identity():
            for kind in PART_FILES + (PART_SUMMARIES,):
                shutil.rmtree(self.staging / kind / spec.key, ignore_errors=True)
        write_text_atomic(marker, json.dumps(spec.identity()))
        (self.staging / REPORTS / f"{spec.key}.json").unlink(missing_ok=True)  # the reader writes it again
        written = {part.stem for part in self._parts(PART_SUMMARIES, spec)}
        for kind in PART_FILES:
            for part in self._parts(kind, spec):
                if part.stem not in written:
                    part.unlink()
        return set(self._seqs(ADS, spec) + self._seqs(FAILED_ADS, spec))

    def _seqs(self, kind: str, spec: InputSpec) -> List[int]:
        """The ``seq`` of every ad in this input's staged parts of ``kind`` (``ADS`` or ``FAILED_ADS``)."""
        if kind == ADS:
            return [s for part in self._parts(ADS, spec) for s in pq.read_table(part, columns=["seq"]).column("seq")
                    .to_pylist()]
        return [json.loads(line)["seq"] for part in self._parts(kind, spec)
                for line in part.read_text(encoding="utf-8").splitlines()]

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
        written, failed = self._seqs(ADS, spec), self._seqs(FAILED_ADS, spec)
        seqs = written + failed
        n_read = report["ads_read"]
        if len(seqs) != n_read or len(set(seqs)) != len(seqs) or (seqs and (min(seqs) < 0 or max(seqs) >= n_read)):
            repeated = len(seqs) - len(set(seqs))
            raise EscoDataError(f"'{spec.path}': {n_read:,} ads read but {len(seqs):,} rows written or failed "
                                f"({repeated:,} repeated); nothing of it was committed (parts kept in "
                                f"'{self.staging}').")
        summary = merge_summaries(json.loads(p.read_text(encoding="utf-8"))
                                  for p in self._parts(PART_SUMMARIES, spec))
        for kind in PART_FILES:
            source, target = self.staging / kind / spec.key, self.root / kind / spec.key
            shutil.rmtree(target, ignore_errors=True)  # never committed (no done file): left by a failed move
            if source.exists() or kind != FAILED_ADS:  # failed/<input>/ only where an ad failed
                source.mkdir(parents=True, exist_ok=True)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
        done = {"key": spec.key, "input": spec.identity(), "report": report, "ads_out": len(written),
                "failed": len(failed), "summary": dataclasses.asdict(summary)}
        write_text_atomic(self.done_path(spec), json.dumps(done, indent=2))
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
        totals: Dict[str, Counter] = {kind: Counter() for kind in READ_COUNTS}
        inputs = []
        for done in dones:
            report = done["report"]
            for kind, counts in totals.items():
                counts.update(report[kind])
            n_rejected = sum(report["rejected_lines"].values())
            inputs.append({"input": done["input"]["path"], "key": done["key"],
                           "ads_in": report["ads_read"] + n_rejected,
                           "ads_out": done["ads_out"], "failed": done.get("failed", 0), "rejected": n_rejected})
        ads_in, ads_out = sum(i["ads_in"] for i in inputs), sum(i["ads_out"] for i in inputs)
        balanced = all(i["ads_in"] == i["ads_out"] + i["failed"] + i["rejected"] for i in inputs)
        extract = merge_summaries(done["summary"] for done in dones)
        extract.add_read_totals(totals)
        summary = {"ads_in": ads_in, "ads_out": ads_out, "failed": extract.n_failed,
                   "failed_by_error": extract.failed, "rejected": extract.n_skipped,
                   "rejected_by_reason": extract.skipped, "repaired_by_reason": extract.repaired,
                   "file_errors_by_reason": extract.file_errors, "balanced": balanced,
                   "extract": dataclasses.asdict(extract), "inputs": inputs}
        write_text_atomic(self.root / SUMMARY_FILE, json.dumps(summary, indent=2))
        if not balanced:
            raise EscoDataError(f"ads in != ads out + failed + rejects in '{self.root / SUMMARY_FILE}': see its "
                                "'inputs'.")
        return summary
