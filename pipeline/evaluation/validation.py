"""Validation scores for model selection: RP@5 / RP@10 / MRR per benchmark file and pooled.

Every file's metrics are keyed by a name unique among the files scored together (``tech/rp@5``), so two files
never overwrite each other's numbers: the file stem without the benchmark's ``_validation_annotations`` or
``_annotations`` suffix (``tech_validation_annotations.csv`` → ``tech``, ``tech_dev_annotations.csv`` →
``tech_dev``), prefixed with as many parent folders as it takes when stems collide (``a/dev.csv``, ``b/dev.csv``
→ ``a/dev``, ``b/dev``).

Pooled (``pooled/rp@5``): the metric over all sentences of all files together, each sentence weighing the same;
``pooled_dev/…`` and ``pooled_validation/…`` pool the dev files and the validation files apart, so readers see
whether they agree. A file is *dev* when its name contains ``_dev_``, *validation* when it contains
``_validation_`` (the shipped benchmark files' names); any other file counts only in ``pooled/…`` (and as itself).
Model selection maximises ``pooled/rp@5`` (``SELECTION_METRIC``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from spacy.language import Language

PathLike = Union[str, Path]
METRICS = ("rp@5", "rp@10", "mrr")
POOLED = "pooled"  # all benchmark files together
GROUPS = {"dev": "_dev_", "validation": "_validation_"}  # group → what the file name contains; first match wins
SELECTION_METRIC = f"{POOLED}/rp@5"  # what training maximizes: RP@5 over every sentence of every file
COMBINED_METRIC = "combined/rp@5"
COMBINED_PARTS = (SELECTION_METRIC, "masked/rp@5", "paraphrase/rp@5")
BENCHMARK_SUFFIXES = ("_validation_annotations", "_annotations")  # the shipped files' suffixes, longest first


def short_name(path: PathLike) -> str:
    """The file stem, minus the shipped benchmark files' common suffix."""
    stem = Path(path).stem
    for suffix in BENCHMARK_SUFFIXES:
        if stem.endswith(suffix) and stem != suffix:
            return stem[: -len(suffix)]
    return stem


def benchmark_group(path: PathLike) -> Optional[str]:
    """``dev`` or ``validation`` by the file's name (module docstring), else None."""
    return next((group for group, marker in GROUPS.items() if marker in Path(path).name), None)


def benchmark_pools(files: Sequence[PathLike]) -> Dict[str, List[PathLike]]:
    """``pooled_dev`` / ``pooled_validation`` → the files of that group (only groups that have files), then
    ``pooled`` → every file."""
    pools: Dict[str, List[PathLike]] = {}
    for group in GROUPS:
        members = [file for file in files if benchmark_group(file) == group]
        if members:
            pools[f"{POOLED}_{group}"] = members
    if files:
        pools[POOLED] = list(files)
    return pools


def validation_names(files: Sequence[PathLike]) -> Dict[str, str]:
    """``str(path)`` → a name that no other file in ``files`` has (the same file given twice is scored once).

    Per file, the first of these that no other file shares: the short name, then with 1, 2, … parent folders;
    then the same with the full stem (``a/tech.csv`` next to ``a/tech_validation_annotations.csv``); the
    resolved path as the last resort.
    """
    first: Dict[Path, str] = {}
    for file in files:
        first.setdefault(Path(file).resolve(), str(file))
    paths = list(first.values())
    levels = {p: _candidates(p) for p in paths}
    names: Dict[str, str] = {}
    for path in paths:
        others = [levels[o] for o in paths if o != path]
        for level, name in enumerate(levels[path]):
            if all(other[level] != name for other in others):
                break
        names[path] = name
    if len(set(names.values())) < len(names):  # pragma: no cover - only for adversarial folder names
        names = {path: str(Path(path).resolve()) for path in paths}
    return names


def _candidates(path: str) -> List[str]:
    """The names ``path`` may take, shortest first; every file has the same number (deepest folder padded)."""
    folders = Path(path).resolve().parent.parts
    stems = (short_name(path), Path(path).stem)
    deep = 64  # more than any real folder depth, so that every file has the same number of levels
    return ["/".join([*folders[max(0, len(folders) - depth):], stem]) if depth else stem
            for stem in stems for depth in range(deep)] + [str(Path(path).resolve())]


def check_validation_files(files: Sequence[PathLike]) -> None:
    """Read every validation file once, up front: a missing or malformed file must fail before minutes of corpus
    loading and training, not at the first evaluation."""
    from pipeline.evaluation.benchmark import read_benchmark

    for path in files:
        read_benchmark(path)


def validation_scores(nlp: Language, files: Sequence[PathLike]) -> Dict[str, float]:
    """``{name}/rp@5``, ``{name}/rp@10``, ``{name}/mrr`` per file, and the same for each pool
    (``pooled_dev/…``, ``pooled_validation/…``, ``pooled/…``: see ``benchmark_pools``)."""
    from pipeline.evaluation.benchmark import RankedSentences, evaluate_benchmark, ranking_metrics

    names = validation_names(files)
    out: Dict[str, float] = {}
    ranked: Dict[str, RankedSentences] = {}
    for path, name in names.items():
        result = evaluate_benchmark(nlp, path)
        out.update({f"{name}/{key}": float(result.metrics[key]) for key in METRICS})
        ranked[path] = result.ranked
    for pool, paths in benchmark_pools(list(names)).items():
        together = RankedSentences.pooled([ranked[path] for path in paths])
        metrics = ranking_metrics(together.rankings, together.golds)
        out.update({f"{pool}/{key}": float(metrics[key]) for key in METRICS})
    return out


def combined_score(metrics: Dict[str, float]) -> float:
    """The declared combination for model selection: the pooled RP@5 of the benchmark files (as one signal), the
    masked-mention dev and the ESCO paraphrase dev — a point of RP@5 counts the same on each. Signals that were
    not computed are left out."""
    parts = [metrics[key] for key in COMBINED_PARTS if key in metrics]
    return float(np.mean(parts)) if parts else float("nan")
