"""Explicit spans against human span annotations: seqeval P/R/F1 (exact) and a lenient overlap variant.

A **span JSONL** file (first line a JSON object with ``tokens`` and ``tags_*`` BIO layers) is read; each doc is
built from the given tokens, so alignment is exact, and ``doc.spans["esco_skills"]`` is compared with each gold
layer and with the union of all layers: seqeval's default (exact-match) P/R/F1, and a lenient variant where a
predicted span is correct if it overlaps a gold span and a gold span is found if a prediction overlaps it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities
from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import filter_spans

from pipeline.components.predictions import SPANS_KEY
from pipeline.errors import EscoDataError
from pipeline.evaluation.benchmark import pipe_quietly
from pipeline.io.files import read_lines

SPAN_TAG = "SKILL"
UNION_LAYER = "union"

Interval = Tuple[int, int]  # token offsets, end exclusive


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
    preds = [predicted_bio(doc) for doc in pipe_quietly(nlp, docs, batch_size)]
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
