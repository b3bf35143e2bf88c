"""The distant-supervision corpus: job ads → sentences labelled with the ESCO skills the literal matcher finds.

``build_corpus`` streams the ads twice and writes ``OUTPUT/dataset`` (a ``datasets.DatasetDict`` on disk: splits
``train``, ``dev``, ``unmatched``) and ``OUTPUT/manifest.json`` (counts of every stage, skill coverage, overall and
per source; ``corpora/README.md`` describes it). Stages, in order — each drop is counted, never silent:

1. **read** job-ad files with ``pipeline.io.jobads`` (the reader ``extract`` uses too; its policy for bad lines,
   bad bytes, empty files and truncated gzip is described there). Every problem is counted per file and reason.
2. **clean** ``clean_job_ad`` (HTML, entities, mojibake; paragraphs, list items and bullets become line breaks);
   lines over ``max_line_chars`` are split with ``split_long_line`` (``corpus.lines``). Cleaned lines are spilled
   to a temporary file so that the second pass does not clean again.
3. **boilerplate** a line found in ``boilerplate_min_ads`` or more distinct ads (compared lower-cased, without
   punctuation, digits folded: "Closing date 12/03/2020" is one line) is boilerplate — equal-opportunity
   statements, "apply now" — unless the matcher finds a skill in it. Boilerplate is dropped. Every frequent line,
   with its key, distinct ads and whether the matcher found a skill in it, is saved to ``OUTPUT/boilerplate.jsonl``
   (``io.boilerplate.write_boilerplate``): the ``esco_boilerplate_filter`` ships the keys of the lines without a
   skill, and calibration uses them as sentences that ask for no skill.
4. **dedupe** lines, then the sentences of the remaining lines, are deduplicated over the whole corpus (same
   normalization, digits kept). The first occurrence wins; later ones are counted.
5. **filter** sentences (the segmenter's: line breaks and sentence punctuation) must look English and have
   ``min_words``..``max_words`` words (``corpus.labelling``).
6. **match** the literal matcher runs over unique lines only. A sentence with a match is an example (``train`` or
   ``dev``, split by ad with a seeded hash, so no ad is in both); the others go to ``unmatched``
   (``corpus.storage`` writes them).

An ad whose cleaning or labelling raises fails alone: counted, listed in ``OUTPUT/failed.jsonl`` (``io.failures``),
none of its sentences written (its lines still count as seen for dedupe); ``fail_fast`` raises instead.

Memory stays flat in the number of ads except for sets of 8-byte line hashes (bounded by the distinct lines) and
one float per ad (to size the dev split exactly). Masking is not baked in: examples keep their mention offsets and
``pipeline.corpus.masking`` masks them at training time.

``load_corpus``, ``read_manifest``, ``SPLITS`` and ``MANIFEST_FILE`` live in ``corpus.storage`` and are
re-exported here, where the training code imports them from.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from array import array
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple, Union

from spacy.util import minibatch

from pipeline import ESCO_ATTRIBUTION, __version__
from pipeline.components.pipes import MATCHER
from pipeline.corpus.labelling import (
    LineResult,
    Mention,
    SentenceLabeller,
    WorkPool,
    default_start_method,
    matcher_for_workers,
)
from pipeline.corpus.lines import CleanedAd, Failure
from pipeline.corpus.settings import CorpusSettings
from pipeline.corpus.stats import CorpusStats, boilerplate_top, counts_with_inputs, describe_input
from pipeline.corpus.storage import (  # noqa: F401 - re-exported: training imports them from here
    DATASET_DIR,
    MANIFEST_FILE,
    SPLITS,
    SplitSpill,
    load_corpus,
    read_manifest,
    save_dataset,
    write_json_atomic,
)
from pipeline.errors import ConfigError, EscoDataError
from pipeline.io.boilerplate import BOILERPLATE_FILE, write_boilerplate
from pipeline.io.failures import FAILED_FILE, FailedAd, FailedAdsFile
from pipeline.io.jobads import InputFile, JobAd, ReadReport, iter_ads, resolve_inputs

SCHEMA_VERSION = 1
ADS_PER_CLEAN_TASK = 64
ADS_PER_LABEL_TASK = 32  # about 500 unique lines: big enough to amortize a task, small enough to keep order cheap
LINES_PER_MATCH_TASK = 512


# ---------------------------------------------------------------------------------------------------- settings
SECTION = "corpus"


# ---------------------------------------------------------------------------------------------------- splits
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


# ---------------------------------------------------------------------------------------------------- the build
class CorpusBuilder:
    """The two passes of ``build_corpus``; see the module docstring for the stages."""

    def __init__(self, settings: CorpusSettings, pool: WorkPool, work_dir: Path, failed: FailedAdsFile,
                 progress: bool = True):
        self.settings = settings
        self.pool = pool
        self.work_dir = work_dir
        self.failed = failed  # the ads whose cleaning or labelling raised
        self.ads_spilled = 0  # ads with lines after cleaning: the ones the second pass labels
        self.progress = progress
        self.stats = CorpusStats()
        self.report = ReadReport()
        self.spill = work_dir / "cleaned.jsonl"
        self.ads_per_line: Counter = Counter()  # boilerplate key → distinct ads
        self.candidates: Dict[int, str] = {}  # boilerplate key → text, once it reaches boilerplate_min_ads
        self.boilerplate: Dict[int, str] = {}  # frequent lines without a skill: dropped
        self.boilerplate_kept: Dict[int, str] = {}  # frequent lines the matcher finds a skill in: kept
        self.units = array("d")
        self.timing: Dict[str, float] = {}

    # -- pass 1: read, clean, spill, count lines per ad
    def read_and_clean(self, files: Sequence[InputFile]) -> None:
        from tqdm import tqdm

        start = time.perf_counter()
        ads = iter_ads(files, self.settings.ad_format(), self.report, limit=self.settings.limit)
        bar = tqdm(total=self.settings.limit, unit=" ads", desc="read + clean", disable=not self.progress)
        with open(self.spill, "w", encoding="utf-8") as spill:
            for metas, cleaned in self.pool.clean(self._clean_tasks(ads), self.settings.max_line_chars):
                for (ad_id, source, *where), ad in zip(metas, cleaned):
                    self._spill_ad(spill, ad_id, source, where, ad)
                bar.update(len(metas))
        bar.close()
        self.timing["read_and_clean"] = time.perf_counter() - start

    @staticmethod
    def _clean_tasks(ads: Iterator[JobAd]) -> Iterator[Tuple[List[Tuple[str, str, str, int]], List[str]]]:
        for batch in minibatch(ads, ADS_PER_CLEAN_TASK):
            yield [(ad.id, ad.source, ad.file, ad.line) for ad in batch], [ad.text for ad in batch]

    def _spill_ad(self, spill: TextIO, ad_id: str, source: str, where: List[Any],
                  ad: Union[CleanedAd, Failure]) -> None:
        if isinstance(ad, Failure):  # read, then its cleaning raised
            self.stats.add(source, "ads_read")
            return self._fail(ad_id, source, where, ad)
        lines, dkeys, bkeys, n_long = ad
        self._count_ad(ad_id, source, lines, bkeys, n_long)
        if lines:
            spill.write(json.dumps([ad_id, source, lines, dkeys, bkeys, where], ensure_ascii=False) + "\n")

    def _fail(self, ad_id: str, source: str, where: List[Any], failure: Failure) -> None:
        """An ad whose cleaning or labelling raised: counted by error class and listed; nothing of it is written."""
        self.stats.add(source, "ads_failed")
        self.failed.write(FailedAd.make(*where, ad_id, failure.error, failure.message))

    def _count_ad(self, ad_id: str, source: str, lines: List[str], bkeys: List[int], n_long: int) -> None:
        self.stats.add(source, "ads_read")
        self.stats.add(source, "long_lines_split", n_long)
        if not lines:
            self.stats.add(source, "ads_empty_after_cleaning")
            return
        self.ads_spilled += 1
        self.units.append(_unit_hash(self.settings.seed, ad_id))
        threshold = self.settings.boilerplate_min_ads
        for key, line in dict(zip(bkeys, lines)).items():
            self.ads_per_line[key] += 1
            if self.ads_per_line[key] == threshold:
                self.candidates[key] = line

    # -- between the passes: which frequent lines are boilerplate
    def find_boilerplate(self) -> None:
        """Frequent lines are boilerplate unless the matcher finds a skill in them (then they are kept). A line whose
        labelling raises is kept too: the second pass labels it again and the first ad that holds it fails."""
        start = time.perf_counter()
        tasks = (([key for key, _ in batch], [text for _, text in batch])
                 for batch in minibatch(self.candidates.items(), LINES_PER_MATCH_TASK))
        for batch_keys, results in self.pool.label(tasks):
            for key, result in zip(batch_keys, results):
                if isinstance(result, Failure) or result[0]:
                    self.boilerplate_kept[key] = self.candidates[key]
                else:
                    self.boilerplate[key] = self.candidates[key]
        self.timing["boilerplate"] = time.perf_counter() - start

    def boilerplate_rows(self) -> List[Dict[str, Any]]:
        """Every frequent line (with or without a skill), most frequent first, for ``boilerplate.jsonl``."""
        rows = [{"key": key, "text": text, "ads": self.ads_per_line[key], "has_skill": has_skill}
                for lines, has_skill in ((self.boilerplate, False), (self.boilerplate_kept, True))
                for key, text in lines.items()]
        return sorted(rows, key=lambda row: (-row["ads"], row["key"]))

    # -- pass 2: drop boilerplate and duplicate lines, match unique lines, write examples
    def label_and_write(self, rows: SplitSpill) -> None:
        from tqdm import tqdm

        start = time.perf_counter()
        threshold = _dev_threshold(self.units, self.settings.dev_fraction)
        self.units = array("d")
        seen_sentences: set = set()
        bar = tqdm(total=self.ads_with_lines(), unit=" ads", desc="match + write", disable=not self.progress)
        for metas, results in self.pool.label(self._label_tasks(threshold)):
            offset = 0
            for ad_id, source, split, where, n_lines in metas:
                self._write_ad(rows, (ad_id, source, split, where), results[offset : offset + n_lines], seen_sentences)
                offset += n_lines
            bar.update(len(metas))
        bar.close()
        self.timing["match_and_write"] = time.perf_counter() - start

    def ads_with_lines(self) -> int:
        return self.ads_spilled

    def _label_tasks(self, threshold: float) -> Iterator[Tuple[list, List[str]]]:
        """Tasks of (per ad: id, source, split, [file, line], number of lines; the ads' unique lines, concatenated)."""
        for batch in minibatch(self._ads_to_label(threshold), ADS_PER_LABEL_TASK):
            yield [meta + (len(lines),) for meta, lines in batch], [line for _, lines in batch for line in lines]

    def _ads_to_label(self, threshold: float) -> Iterator[Tuple[Tuple[str, str, str, List[Any]], List[str]]]:
        """Per spilled ad: (id, source, split, [file, line]) and its lines neither boilerplate nor seen before."""
        seen_lines: set = set()
        with open(self.spill, encoding="utf-8") as spill:
            for row in spill:
                ad_id, source, lines, dkeys, bkeys, where = json.loads(row)
                split = "dev" if _unit_hash(self.settings.seed, ad_id) <= threshold else "train"
                yield (ad_id, source, split, where), self._unique_lines(source, lines, dkeys, bkeys, seen_lines)

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

    def _write_ad(self, rows: SplitSpill, meta: Tuple[str, str, str, List[Any]],
                  results: List[Union[LineResult, Failure]], seen: set) -> None:
        """The ad's sentences into its split, or nothing if labelling one of its lines raised (it failed)."""
        ad_id, source, split, where = meta
        failure = next((result for result in results if isinstance(result, Failure)), None)
        if failure is not None:
            return self._fail(ad_id, source, where, failure)
        self.stats.add(source, f"ads_{split}")
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
                    self._write_example(rows, split, text, mentions, ad_id, source)
                else:
                    self.stats.add(source, "sentences_unmatched")
                    rows.write("unmatched", {"text": text, "ad_id": ad_id, "source": source})
        if examples:
            self.stats.add(source, "ads_with_examples")

    def _write_example(self, rows: SplitSpill, split: str, text: str, mentions: List[Mention], ad_id: str,
                       source: str) -> None:
        self.stats.add(source, "sentences_matched")
        self.stats.add(source, f"examples_{split}")
        self.stats.add(source, "mentions", len(mentions))
        self.stats.add_example(source, mentions)
        rows.write(split, {
            "text": text,
            "uris": list(dict.fromkeys(uri for _, _, uri in mentions)),
            "mentions": [{"start": s, "end": e, "uri": uri} for s, e, uri in mentions],
            "ad_id": ad_id,
            "source": source,
        })

    # -- the manifest
    def manifest(self, files: Sequence[InputFile], taxonomy: Any, policy_report: dict, esco: Optional[Path],
                 pipeline_path: Optional[Path], run: Dict[str, Any]) -> dict:
        counts: Dict[str, Any] = {"files": len(files), **counts_with_inputs(self.stats, self.report)}
        counts["boilerplate_distinct"] = len(self.boilerplate)
        counts["boilerplate_kept_with_match"] = len(self.boilerplate_kept)
        counts["boilerplate_saved"] = len(self.boilerplate) + len(self.boilerplate_kept)
        counts["duplicates"] = counts["duplicate_lines"] + counts["duplicate_sentences"]
        counts["ads_failed_by_error"] = dict(self.failed.by_error)
        return {
            "schema_version": SCHEMA_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "pipeline_version": __version__,
            "esco": {"path": str(esco) if esco else None, "version": getattr(taxonomy, "version", ""),
                     "skills": len(taxonomy), "attribution": ESCO_ATTRIBUTION},
            "taxonomy": taxonomy.record(),
            "matcher": {"pipeline": str(pipeline_path) if pipeline_path else "assembled from ESCO",
                        "label_policy": policy_report},
            "settings": {**self.settings.model_dump(mode="json"), **run},
            "inputs": [describe_input(f, self.report) for f in files],
            "counts": counts,
            "skills": self.stats.coverage(taxonomy),
            "by_source": {source: {"counts": self.stats.stage_counts(source),
                                   "skills": self.stats.coverage(taxonomy, source)}
                          for source in sorted(self.stats.counts)},
            "boilerplate_top": boilerplate_top(self.boilerplate, self.ads_per_line),
            "problems": self.report.problems,
            "problems_total": self.report.n_problems,
            "timing_s": {k: round(v, 2) for k, v in self.timing.items()},
        }


def build_corpus(
    inputs: Sequence[Path],
    output: Path,
    *,
    esco: Optional[Path] = None,
    pipeline_path: Optional[Path] = None,
    progress: bool = True,
    fail_fast: bool = False,
    **settings: Any,
) -> dict:
    """Build the distant-supervision corpus into ``output`` and return its manifest (also ``output/manifest.json``).

    ``settings``: any keys of ``CorpusSettings`` (the rest keep its defaults), checked before the matcher is loaded
    or a file read, so that a typo costs nothing. The matcher is assembled from the ESCO export at ``esco`` unless
    ``pipeline_path`` names a saved pipeline with the matcher (e.g. one with a custom label policy). Results are
    identical for any number of ``workers`` and deterministic for a ``seed``. An ad whose cleaning or labelling
    raises is listed in ``output/failed.jsonl`` and counted; ``fail_fast`` raises its exception instead.
    """
    settings = CorpusSettings.load(SECTION, settings)
    if esco is None and pipeline_path is None:
        raise ConfigError("build_corpus needs the ESCO export (esco=...) or a saved matcher pipeline "
                          "(pipeline_path=...)")
    files = resolve_inputs(inputs)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    for stale in (MANIFEST_FILE, BOILERPLATE_FILE):  # nothing of an earlier build beside a half-written corpus
        (output / stale).unlink(missing_ok=True)
    started = time.perf_counter()
    workers, method = settings.workers, settings.start_method or default_start_method()
    with tempfile.TemporaryDirectory(prefix=".corpus-work-", dir=output) as tmp, \
            FailedAdsFile(output / FAILED_FILE) as failed:
        work_dir = Path(tmp)
        nlp, worker_dir = matcher_for_workers(esco, pipeline_path, work_dir, save=workers > 1 and method != "fork")
        pool = WorkPool(workers, worker_dir, SentenceLabeller(nlp, settings), method, fail_fast)
        builder = CorpusBuilder(settings, pool, work_dir, failed, progress=progress)
        rows = _run_passes(builder, pool, files, work_dir)
        save_start = time.perf_counter()
        save_dataset(rows, output / DATASET_DIR, work_dir / "arrow", progress)
        write_boilerplate(output / BOILERPLATE_FILE, builder.boilerplate_rows())
        builder.timing["save"] = time.perf_counter() - save_start
    builder.timing["total"] = time.perf_counter() - started
    matcher = nlp.get_pipe(MATCHER)
    run = {"start_method": method if workers > 1 else None}
    manifest = builder.manifest(files, matcher.taxonomy, matcher.policy_report, esco, pipeline_path, run)
    write_json_atomic(output / MANIFEST_FILE, manifest)
    return manifest


def _run_passes(builder: CorpusBuilder, pool: WorkPool, files: Sequence[InputFile], work_dir: Path) -> SplitSpill:
    """Both passes; the workers are stopped whatever happens (terminated on an error or an interrupt)."""
    rows = SplitSpill(work_dir)
    try:
        builder.read_and_clean(files)
        _require_ads(builder, files)
        builder.find_boilerplate()
        builder.label_and_write(rows)
    except BaseException:
        pool.terminate()
        rows.close()
        raise
    pool.close()
    return rows


def _require_ads(builder: CorpusBuilder, files: Sequence[InputFile]) -> None:
    if not builder.ads_with_lines():
        names = ", ".join(str(f.path) for f in files)
        raise EscoDataError(f"No usable ads in {names}: {builder.report.n_problems} problems "
                            f"(first: {builder.report.problems[:3]}). Check --text-field and the files.")
