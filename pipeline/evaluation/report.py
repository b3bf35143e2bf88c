"""``make evaluate``: score a pipeline on benchmark CSVs and span files (recognised by content, never by name)
and print one table, metrics as rows and files as columns; with two benchmark files or more, also the pooled
columns ``pooled_dev``, ``pooled_validation`` and ``pooled`` (every sentence of those files together; which file
is dev or validation: ``evaluation.validation``)."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Union

from spacy.language import Language
from wasabi import table

from pipeline.components.pipes import find_taxonomy, load_pipeline
from pipeline.errors import EscoDataError
from pipeline.evaluation.benchmark import RankedSentences, evaluate_benchmark, score_ranked
from pipeline.evaluation.dev_signals import evaluate_dev_signals
from pipeline.evaluation.spans import evaluate_spans
from pipeline.evaluation.validation import benchmark_pools
from pipeline.io.files import read_lines

MAX_EXAMPLES = 10

FileKind = Literal["benchmark", "spans"]


def detect_file_kind(path: Union[str, Path]) -> FileKind:
    """'benchmark' for a CSV whose header has ``sentence`` and ``label``, 'spans' for span JSONL."""
    path = Path(path)
    first = _first_line(path)
    if first.lstrip().startswith("{"):
        try:
            record = json.loads(first)
        except json.JSONDecodeError as err:
            raise EscoDataError(f"'{path}' line 1 looks like JSON but does not parse: {err}") from err
        if isinstance(record, dict) and "tokens" in record and any(k.startswith("tags_") for k in record):
            return "spans"
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise EscoDataError(
            f"'{path}' is JSON Lines but not a span file: line 1 has {keys}; expected 'tokens' and BIO "
            "layers such as 'tags_skill' / 'tags_knowledge'."
        )
    header = [column.strip().lower() for column in next(csv.reader([first]), [])]
    if "sentence" in header and "label" in header:
        return "benchmark"
    raise EscoDataError(
        f"'{path}' is neither a benchmark CSV (header with 'sentence' and 'label', e.g. "
        "'sentence,span,sub_span,label' or 'sentence,label') nor a span JSONL file ('tokens' + 'tags_*'); "
        f"its first line is: {first[:80]!r}"
    )


def _first_line(path: Path) -> str:
    if not path.is_file():
        raise EscoDataError(f"Evaluation file '{path}' not found (or not a file).")
    for _, raw in read_lines(path):
        try:
            line = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise EscoDataError(f"'{path}' is not UTF-8 text ({err}): not an evaluation file.") from err
        if line.strip():
            return line.rstrip("\r\n")
    raise EscoDataError(f"Evaluation file '{path}' is empty.")


def evaluate_files(
    model: Union[str, Path, Language], files: Sequence[Union[str, Path]], *, batch_size: int = 64,
    corpus_dir: Optional[Union[str, Path]] = None, dev_signals: bool = False,
) -> Dict[str, Dict[str, float]]:
    """{file: {metric: value}} for benchmark CSVs and span JSONL files, recognised by content, the pools of two
    benchmark files or more (``pooled_columns``), and with ``dev_signals`` the masked-mention (needs
    ``corpus_dir``) and ESCO paraphrase signals as extra columns.

    Unknown benchmark labels are counted in ``n_unknown_labels`` and named in a ``UserWarning``.
    """
    kinds = {str(path): detect_file_kind(path) for path in files}  # fail on a bad file before loading
    nlp = model if isinstance(model, Language) else load_pipeline(model)
    results: Dict[str, Dict[str, float]] = {}
    ranked: Dict[str, RankedSentences] = {}
    for path, kind in kinds.items():
        if kind == "benchmark":
            result = evaluate_benchmark(nlp, path, batch_size=batch_size)
            if result.unknown_labels:
                examples = ", ".join(repr(label) for label, _ in result.unknown_labels.most_common(MAX_EXAMPLES))
                warnings.warn(
                    f"'{path}': {sum(result.unknown_labels.values())} gold label(s) are not preferred labels of "
                    f"the pipeline's ESCO taxonomy and can never be hit, e.g. {examples}. Is the benchmark for "
                    "the same ESCO version as the pipeline?",
                    UserWarning,
                    stacklevel=2,
                )
            results[path] = result.metrics
            ranked[path] = result.ranked
        else:
            results[path] = evaluate_spans(nlp, path, batch_size=batch_size)
    results.update(pooled_columns(ranked, nlp))
    if dev_signals:
        results.update(dev_signal_columns(evaluate_dev_signals(nlp, Path(corpus_dir) if corpus_dir else None)))
    return results


def pooled_columns(ranked: Dict[str, RankedSentences], nlp: Language) -> Dict[str, Dict[str, float]]:
    """Every benchmark metric of each pool (``benchmark_pools``: dev files, validation files, all), when there
    are two files or more to pool (the pool of one file is that file's column)."""
    if len(ranked) < 2:
        return {}
    taxonomy = find_taxonomy(nlp)
    return {pool: score_ranked(RankedSentences.pooled([ranked[path] for path in paths]), taxonomy).metrics
            for pool, paths in benchmark_pools(list(ranked)).items()}


def dev_signal_columns(scores: Dict[str, float]) -> Dict[str, Dict[str, float]]:
    """``{"masked/rp@5": x, ...}`` → one table column per signal: ``{"masked dev": {"rp@5": x, ...}, ...}``."""
    columns: Dict[str, Dict[str, float]] = {}
    for key, value in scores.items():
        signal, metric = key.split("/", 1)
        columns.setdefault(f"{signal} dev", {})[metric] = value
    return columns


def format_table(metrics: Dict[str, Dict[str, float]]) -> str:
    """Metrics as rows, files as columns; rates in %, counts (``n_*``, ``mean_*``) as they are."""
    if not metrics:
        return "(no files evaluated)"
    names = _short_names(list(metrics))
    keys: Dict[str, None] = {}
    for values in metrics.values():
        keys.update(dict.fromkeys(values))
    header = ["metric"] + [names[path] for path in metrics]
    rows = [[key] + [_format_value(key, metrics[path].get(key)) for path in metrics] for key in keys]
    aligns = ["l"] + ["r"] * len(metrics)
    return table(rows, header=header, divider=True, aligns=aligns) + "(rates in %; n_* are counts)"


def _format_value(key: str, value: Optional[float]) -> str:
    if value is None:
        return "-"
    if key.startswith("n_"):
        return f"{value:,.0f}"
    if key.startswith("mean_"):
        return f"{value:.2f}"
    return f"{100 * value:.1f}"


def _short_names(paths: List[str]) -> Dict[str, str]:
    """Each file by the shortest path suffix no other file shares (dev.json → skillspan/dev.json)."""
    parts = {path: Path(path).parts for path in paths}
    names = {}
    for path, own in parts.items():
        for depth in range(1, len(own) + 1):
            name = "/".join(own[-depth:])
            if not any("/".join(other[-depth:]) == name for p, other in parts.items() if p != path):
                break
        names[path] = name
    return names
