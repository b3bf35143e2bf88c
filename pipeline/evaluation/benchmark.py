"""Evaluation: ranking metrics on the ESCO benchmark, span P/R/F1 (seqeval) on human span annotations.

Two kinds of file, recognised by content (never by name):

- **benchmark CSV** (header with ``sentence`` and ``label``; ``span``/``sub_span`` optional): each distinct
  sentence is one doc, its ranking is ``doc._.esco_skills``. Official metrics (Decorte et al. 2022):
  RP@K = (gold hits in the top K) / min(K, |gold|) and the reciprocal rank of the first gold hit (0 if none),
  averaged over the sentences whose gold set is not empty. Gold labels are trimmed ESCO preferred labels;
  ``LABEL NOT PRESENT`` / ``UNDERSPECIFIED`` are ignored. A gold label that is not a preferred label of the
  pipeline's taxonomy stays in the gold set (it counts in |gold|, as the definition says) and is reported.
- **span JSONL** (first line a JSON object with ``tokens`` and ``tags_*`` BIO layers): the doc is built from
  the given tokens, so alignment is exact, and ``doc.spans["esco_skills"]`` is compared with each gold layer
  and with the union of all layers: seqeval's default (exact-match) P/R/F1, and a lenient variant where a
  predicted span is correct if it overlaps a gold span and a gold span is found if a prediction overlaps it.

Only the output contract (``doc._.esco_skills``, ``doc.spans["esco_skills"]``) is used, so the same code scores
the literal matcher and the trained ranker.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Literal, Optional, Sequence, Set, Tuple, Union

from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities
from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import filter_spans

from pipeline.errors import ConfigError, EscoDataError
from pipeline.commands.extract import load_pipeline, open_text, read_lines
from pipeline.components.predictions import SPANS_KEY, SkillPrediction
from pipeline.esco.taxonomy import EscoTaxonomy

IGNORED_LABELS = frozenset({"LABEL NOT PRESENT", "UNDERSPECIFIED"})
RANK_CUTOFFS = (5, 10)
SPAN_TAG = "SKILL"
UNION_LAYER = "union"
MAX_EXAMPLES = 10
NON_ENGLISH_WARNING = "Text does not look like English"

FileKind = Literal["benchmark", "spans"]
Interval = Tuple[int, int]  # token offsets, end exclusive


# ---------------------------------------------------------------------------------------------- file types
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


# ---------------------------------------------------------------------------------------------- benchmark
@dataclass
class Benchmark:
    """Sentences in file order, each with its gold set of ESCO preferred labels (possibly empty)."""

    path: Path
    gold: Dict[str, Set[str]]
    n_rows: int = 0
    n_ignored_rows: int = 0

    @property
    def scored(self) -> List[Tuple[str, Set[str]]]:
        return [(sentence, labels) for sentence, labels in self.gold.items() if labels]


def read_benchmark(path: Union[str, Path]) -> Benchmark:
    """Read either benchmark format (``sentence,span,sub_span,label`` or ``sentence,label``)."""
    path = Path(path)
    benchmark = Benchmark(path, {})
    with open_text(path) as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise EscoDataError(f"'{path}' is empty: expected a header with 'sentence' and 'label'.")
        columns = {name.strip().lower().lstrip("\ufeff"): name for name in reader.fieldnames}
        if "sentence" not in columns or "label" not in columns:
            raise EscoDataError(f"'{path}' lacks a 'sentence' or 'label' column; found {reader.fieldnames}.")
        try:
            for row in reader:
                sentence = (row.get(columns["sentence"]) or "").strip()
                if not sentence:
                    raise EscoDataError(f"'{path}' line {reader.line_num}: empty sentence.")
                labels = benchmark.gold.setdefault(sentence, set())
                label = (row.get(columns["label"]) or "").strip()
                benchmark.n_rows += 1
                if not label or label in IGNORED_LABELS:
                    benchmark.n_ignored_rows += 1
                else:
                    labels.add(label)
        except (csv.Error, UnicodeDecodeError) as err:
            raise EscoDataError(f"'{path}' is malformed near line {reader.line_num}: {err}") from err
    if not benchmark.gold:
        raise EscoDataError(f"'{path}' has a header but no rows.")
    return benchmark


def rp_at_k(ranking: Sequence[str], gold: Iterable[str], k: int) -> float:
    """(gold items in the top k) / min(k, |gold|)."""
    gold = set(gold)
    if not gold:
        raise ValueError("RP@K is undefined for an empty gold set: such sentences are not scored.")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return len(set(ranking[:k]) & gold) / min(k, len(gold))


def reciprocal_rank(ranking: Sequence[str], gold: Iterable[str]) -> float:
    """1 / rank of the first gold item (1-based), 0 if no gold item is ranked."""
    gold = set(gold)
    for rank, item in enumerate(ranking, start=1):
        if item in gold:
            return 1.0 / rank
    return 0.0


def ranking_metrics(
    rankings: Sequence[Sequence[str]], golds: Sequence[Iterable[str]], cutoffs: Sequence[int] = RANK_CUTOFFS
) -> Dict[str, float]:
    """RP@K for each cutoff, MRR and coverage, averaged over sentences with a non-empty gold set."""
    if len(rankings) != len(golds):
        raise ValueError(f"{len(rankings)} rankings for {len(golds)} gold sets")
    pairs = [(list(ranking), set(gold)) for ranking, gold in zip(rankings, golds) if gold]
    n = len(pairs)
    metrics: Dict[str, float] = {}
    for k in cutoffs:
        metrics[f"rp@{k}"] = sum(rp_at_k(r, g, k) for r, g in pairs) / n if n else 0.0
    metrics["mrr"] = sum(reciprocal_rank(r, g) for r, g in pairs) / n if n else 0.0
    # Cheap diagnostics: how often there is any prediction, and how much gold the full ranking holds.
    metrics["coverage"] = sum(bool(r) for r, _ in pairs) / n if n else 0.0
    metrics["recall@all"] = sum(len(set(r) & g) / len(g) for r, g in pairs) / n if n else 0.0
    metrics["mean_predictions"] = sum(len(r) for r, _ in pairs) / n if n else 0.0
    metrics["n_scored"] = float(n)
    return metrics


def ranked_labels(predictions: Sequence[SkillPrediction], taxonomy: Optional[EscoTaxonomy]) -> List[str]:
    """The ranking as ESCO preferred labels (what the benchmark names), each once, best first."""
    labels: Dict[str, None] = {}
    for pred in predictions:
        label = taxonomy.label(pred.uri) if taxonomy is not None and pred.uri in taxonomy else pred.label
        labels.setdefault(label, None)
    return list(labels)


@dataclass
class BenchmarkResult:
    metrics: Dict[str, float]
    unknown_labels: Counter = field(default_factory=Counter)


def evaluate_benchmark(nlp: Language, path: Union[str, Path], *, batch_size: int = 64) -> BenchmarkResult:
    benchmark = read_benchmark(path)
    taxonomy = find_taxonomy(nlp)
    known = set(taxonomy.by_preferred_label())
    sentences = list(benchmark.gold)
    rankings = [ranked_labels(doc._.esco_skills or [], taxonomy) for doc in _pipe(nlp, sentences, batch_size)]
    golds = [benchmark.gold[sentence] for sentence in sentences]
    metrics = ranking_metrics(rankings, golds)
    unknown = Counter(label for gold in golds for label in gold if label not in known)
    metrics.update(
        n_sentences=float(len(sentences)),
        n_gold_labels=float(sum(len(gold) for gold in golds)),
        n_ignored_rows=float(benchmark.n_ignored_rows),
        n_unknown_labels=float(sum(unknown.values())),
    )
    return BenchmarkResult(metrics, unknown)


def find_taxonomy(nlp: Language) -> EscoTaxonomy:
    """The matcher's knowledge base, else that of any component with a ``taxonomy``."""
    candidates = []
    if "esco_skill_matcher" in nlp.pipe_names:
        candidates.append(nlp.get_pipe("esco_skill_matcher"))
    candidates.extend(component for _, component in nlp.pipeline)
    for component in candidates:
        taxonomy = getattr(component, "taxonomy", None)
        if taxonomy is not None:
            return taxonomy
    raise ConfigError(
        f"No component of the pipeline ({nlp.pipe_names}) holds an ESCO taxonomy: benchmark labels cannot be "
        "checked. Evaluate a pipeline built by `assemble` or `train`."
    )


# ---------------------------------------------------------------------------------------------- spans
@dataclass
class SpanSentence:
    tokens: List[str]
    layers: Dict[str, List[str]]  # layer name ("skill", "knowledge") → BIO tags


def read_span_file(path: Union[str, Path]) -> Tuple[List[str], List[SpanSentence]]:
    """Layer names (``tags_skill`` → "skill") and the sentences; a malformed line raises, naming file:line."""
    path = Path(path)
    layers: Optional[List[str]] = None
    sentences: List[SpanSentence] = []
    for number, raw in read_lines(path):
        if not raw.strip():
            continue
        where = f"'{path}' line {number}"
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise EscoDataError(f"{where} is not valid JSON: {err}") from err
        if not isinstance(record, dict) or not isinstance(record.get("tokens"), list):
            raise EscoDataError(f"{where} has no 'tokens' list.")
        found = [key[len("tags_"):] for key in record if key.startswith("tags_")]
        if layers is None:
            layers = found
        if sorted(found) != sorted(layers):
            raise EscoDataError(f"{where} has the tag layers {found}, the first line had {layers}.")
        tokens = [str(token) for token in record["tokens"]]
        if not tokens or not all(tokens):
            raise EscoDataError(f"{where}: 'tokens' is empty or holds an empty string.")
        tags = {name: _check_tags(record[f"tags_{name}"], len(tokens), where, name) for name in layers}
        sentences.append(SpanSentence(tokens, tags))
    if not sentences or not layers:
        raise EscoDataError(f"'{path}' has no span-annotated sentences.")
    return layers, sentences


def _check_tags(tags: object, n_tokens: int, where: str, layer: str) -> List[str]:
    if not isinstance(tags, list) or len(tags) != n_tokens:
        raise EscoDataError(f"{where}: tags_{layer} must be a list of {n_tokens} BIO tags (one per token).")
    out = []
    for tag in tags:
        text = str(tag)
        prefix, rest = text[:1].upper(), text[1:]
        if prefix not in ("B", "I", "O") or (rest and not (prefix != "O" and rest.startswith("-"))):
            raise EscoDataError(f"{where}: tags_{layer} holds '{tag}', which is not a BIO tag.")
        out.append("O" if prefix == "O" else f"{prefix}-{SPAN_TAG}")
    return out


def spans_to_bio(intervals: Iterable[Interval], n_tokens: int, label: str = SPAN_TAG) -> List[str]:
    """Token intervals → BIO tags; overlapping intervals keep the longest (then the earliest)."""
    chosen: List[Interval] = []
    taken = [False] * n_tokens
    for start, end in sorted(set(intervals), key=lambda iv: (-(iv[1] - iv[0]), iv[0])):
        if not 0 <= start < end <= n_tokens:
            raise ValueError(f"span ({start}, {end}) is outside a sequence of {n_tokens} tokens")
        if not any(taken[start:end]):
            chosen.append((start, end))
            taken[start:end] = [True] * (end - start)
    tags = ["O"] * n_tokens
    for start, end in chosen:
        tags[start] = f"B-{label}"
        tags[start + 1 : end] = [f"I-{label}"] * (end - start - 1)
    return tags


def bio_to_spans(tags: Sequence[str]) -> List[Interval]:
    """BIO tags → token intervals (end exclusive), read the way seqeval reads them."""
    return [(start, end + 1) for _, start, end in get_entities(list(tags))]


def merge_bio(*layers: Sequence[str], label: str = SPAN_TAG) -> List[str]:
    """Union of BIO layers: a token is inside if it is inside in any layer; overlapping spans become one,
    adjacent spans stay apart, and B marks each merged span's start."""
    n = len(layers[0])
    intervals = sorted(iv for tags in layers for iv in bio_to_spans(tags))
    merged: List[List[int]] = []
    for start, end in intervals:
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return spans_to_bio([(s, e) for s, e in merged], n, label)


def predicted_bio(doc: Doc, label: str = SPAN_TAG) -> List[str]:
    """``doc.spans["esco_skills"]`` as BIO tags (one label; overlapping spans: the longest is kept)."""
    spans = filter_spans(list(doc.spans[SPANS_KEY])) if SPANS_KEY in doc.spans else []
    return spans_to_bio([(span.start, span.end) for span in spans], len(doc), label)


def span_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> Dict[str, float]:
    """Exact-match P/R/F1 (seqeval defaults) and token-overlap lenient P/R/F1."""
    gold, pred = [list(g) for g in gold], [list(p) for p in pred]
    scores = {
        "precision": float(precision_score(gold, pred, zero_division=0)),
        "recall": float(recall_score(gold, pred, zero_division=0)),
        "f1": float(f1_score(gold, pred, zero_division=0)),
    }
    pred_hit = pred_total = gold_hit = gold_total = 0
    for g_tags, p_tags in zip(gold, pred):
        g_spans, p_spans = bio_to_spans(g_tags), bio_to_spans(p_tags)
        pred_total += len(p_spans)
        gold_total += len(g_spans)
        pred_hit += sum(any(_overlap(p, g) for g in g_spans) for p in p_spans)
        gold_hit += sum(any(_overlap(g, p) for p in p_spans) for g in g_spans)
    precision = pred_hit / pred_total if pred_total else 0.0
    recall = gold_hit / gold_total if gold_total else 0.0
    scores["lenient_precision"] = precision
    scores["lenient_recall"] = recall
    scores["lenient_f1"] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    scores["n_gold_spans"] = float(gold_total)
    return scores


def _overlap(a: Interval, b: Interval) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def evaluate_spans(nlp: Language, path: Union[str, Path], *, batch_size: int = 64) -> Dict[str, float]:
    """Score ``doc.spans["esco_skills"]`` against each gold layer and, with several layers, their union."""
    layers, sentences = read_span_file(path)
    docs = [Doc(nlp.vocab, words=sentence.tokens) for sentence in sentences]
    preds = [predicted_bio(doc) for doc in _pipe(nlp, docs, batch_size)]
    golds: Dict[str, List[List[str]]] = {name: [s.layers[name] for s in sentences] for name in layers}
    if len(layers) > 1:
        golds[UNION_LAYER] = [merge_bio(*(s.layers[name] for name in layers)) for s in sentences]
    metrics: Dict[str, float] = {
        "n_sentences": float(len(sentences)),
        "n_predicted_spans": float(sum(len(bio_to_spans(p)) for p in preds)),
    }
    for name, gold in golds.items():
        for key, value in span_scores(gold, preds).items():
            metrics[f"n_{name}_spans" if key == "n_gold_spans" else f"{name}_{key}"] = value
    return metrics


# ---------------------------------------------------------------------------------------------- running
def _pipe(nlp: Language, texts: Sequence[Union[str, Doc]], batch_size: int) -> List[Doc]:
    """nlp.pipe without the segmenter's per-sentence language warning: benchmark sentences are short
    skill lists that often have no function words, and the warning says nothing about the scores."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=NON_ENGLISH_WARNING)
        return list(nlp.pipe(texts, batch_size=batch_size))


def evaluate_files(
    model: Union[str, Path, Language], files: Sequence[Union[str, Path]], *, batch_size: int = 64
) -> Dict[str, Dict[str, float]]:
    """{file: {metric: value}} for benchmark CSVs and span JSONL files, recognised by content.

    Unknown benchmark labels are counted in ``n_unknown_labels`` and named in a ``UserWarning``.
    """
    kinds = {str(path): detect_file_kind(path) for path in files}  # fail on a bad file before loading
    nlp = model if isinstance(model, Language) else load_pipeline(model)
    results: Dict[str, Dict[str, float]] = {}
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
        else:
            results[path] = evaluate_spans(nlp, path, batch_size=batch_size)
    return results


# ---------------------------------------------------------------------------------------------- table
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
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + ["(rates in %; n_* are counts)"])


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
