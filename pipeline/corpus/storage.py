"""The corpus on disk: ``OUTPUT/dataset`` (a ``datasets.DatasetDict``: train, dev, unmatched),
``OUTPUT/boilerplate.jsonl`` and ``OUTPUT/manifest.json``; writing it with flat memory and reading it back with
checks that name what is wrong.

``boilerplate.jsonl`` holds every line the build found in ``boilerplate_min_ads`` or more distinct ads, one JSON
object per line, most frequent first: ``{"key": int, "text": str, "ads": int, "has_skill": bool}``. ``key`` is
``io.boilerplate.line_key(text, fold_digits=True)`` (an unsigned 64-bit int), ``ads`` the number of distinct ads
it is in, ``has_skill`` whether the literal matcher found a skill in it (such lines stay in the corpus).

Rows stream out of the build into one JSON Lines spill file per split; ``save_dataset`` turns each spill into an
Arrow dataset with ``datasets.Dataset.from_generator`` (written in batches, memory-mapped) and saves the splits
in shards. Only public ``datasets`` API is used, so the format follows ``datasets.load_from_disk``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Dict, Iterator, List, Optional

from pipeline.errors import EscoDataError
from pipeline.io.boilerplate import BOILERPLATE_FILE

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset, DatasetDict, Features

MANIFEST_FILE = "manifest.json"
DATASET_DIR = "dataset"
SPLITS = ("train", "dev", "unmatched")
MATCHED_COLUMNS = ("text", "uris", "mentions", "ad_id", "source")
UNMATCHED_COLUMNS = ("text", "ad_id", "source")
MAX_SHARD_BYTES = 500 * 1024 * 1024


def split_features(split: str) -> "Features":
    """The Arrow schema of a split: matched splits carry the skill URIs and the mention offsets."""
    from datasets import Features, Value

    unmatched = {"text": Value("string"), "ad_id": Value("string"), "source": Value("string")}
    if split == "unmatched":
        return Features(unmatched)
    # [feature] is a list of that feature in every datasets version (datasets.List exists from 4.0 only).
    mention = {"start": Value("int32"), "end": Value("int32"), "uri": Value("string")}
    return Features({"text": Value("string"), "uris": [Value("string")], "mentions": [mention],
                     "ad_id": Value("string"), "source": Value("string")})


class SplitSpill:
    """One JSON Lines file per split, written as rows stream in (nothing is held in memory)."""

    def __init__(self, folder: Path):
        self.paths = {split: Path(folder) / f"{split}.rows.jsonl" for split in SPLITS}
        self.rows: Counter = Counter()
        self._handles: Dict[str, IO[str]] = {}

    def write(self, split: str, row: dict) -> None:
        if split not in self._handles:
            self._handles[split] = open(self.paths[split], "w", encoding="utf-8")
        self._handles[split].write(json.dumps(row, ensure_ascii=False) + "\n")
        self.rows[split] += 1

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


def _spilled_rows(path: str) -> Iterator[dict]:
    """The rows of one spill file (module level: ``from_generator`` pickles and hashes its generator)."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def _split_dataset(spill: SplitSpill, split: str, cache_dir: Path) -> "Dataset":
    import datasets

    features = split_features(split)
    if not spill.rows[split]:  # from_generator refuses a generator without rows
        return datasets.Dataset.from_dict({column: [] for column in features}, features=features)
    return datasets.Dataset.from_generator(_spilled_rows, features=features, cache_dir=str(cache_dir),
                                           gen_kwargs={"path": str(spill.paths[split])}, split=split)


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    """``datasets`` progress bars off inside the block unless ``enabled`` (restored afterwards)."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    if not enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled and not enabled:
            datasets.enable_progress_bars()


def save_dataset(spill: SplitSpill, target: Path, cache_dir: Path, progress: bool) -> None:
    """Write the spilled splits to ``target`` as a ``DatasetDict``, atomically (a ``.partial`` folder first).

    ``cache_dir`` holds the intermediate Arrow files; give a fresh folder (the build's temporary one) so that no
    cached dataset of an earlier build can be reused by fingerprint.
    """
    import datasets

    spill.close()
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with _progress_bars(progress):
        corpus = datasets.DatasetDict({split: _split_dataset(spill, split, cache_dir) for split in SPLITS})
        # At least one shard per split: with max_shard_size an empty split gets none and cannot be loaded back.
        shards = {split: max(1, math.ceil(ds.data.nbytes / MAX_SHARD_BYTES)) for split, ds in corpus.items()}
        corpus.save_to_disk(str(partial), num_shards=shards)
    del corpus
    if target.exists():
        shutil.rmtree(target)
    os.replace(partial, target)


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON through a ``.partial`` file, so that a reader never sees half a manifest."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


def corpus_boilerplate(corpus_dir: Optional[Path]) -> Optional[Path]:
    """The corpus' ``boilerplate.jsonl`` for a pipeline's boilerplate filter; None (with a warning when there is a
    corpus) when there is none, e.g. a corpus built before the file existed."""
    if corpus_dir is None:
        return None
    file = Path(corpus_dir) / BOILERPLATE_FILE
    if file.is_file():
        return file
    warnings.warn(f"'{file}' is missing: the pipeline's boilerplate filter ships no boilerplate lines (it still "
                  "skips recognised sections). Build the corpus again to get the file.", UserWarning, stacklevel=2)
    return None


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
    """The manifest of the corpus at ``path`` (counts, coverage, settings)."""
    file = Path(path) / MANIFEST_FILE
    if not file.exists():
        raise EscoDataError(f"No manifest at '{file}': the corpus is missing or incomplete.")
    return json.loads(file.read_text(encoding="utf-8"))
