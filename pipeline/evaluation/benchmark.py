"""Ranking metrics on the ESCO skill-extraction benchmark (Decorte et al. 2022).

A **benchmark CSV** has a header with ``sentence`` and ``label`` (``span``/``sub_span`` optional): each distinct
sentence is one doc, its ranking is ``doc._.esco_skills``. Official metrics: RP@K = (gold hits in the top K) /
min(K, |gold|) and the reciprocal rank of the first gold hit (0 if none), averaged over the sentences whose gold
set is not empty. Gold labels are trimmed ESCO preferred labels; ``LABEL NOT PRESENT`` / ``UNDERSPECIFIED`` are
ignored. A gold label that is not a preferred label of the pipeline's taxonomy stays in the gold set (it counts
in |gold|, as the definition says) and is reported.

Only the output contract (``doc._.esco_skills``) is read, so the same code scores the literal matcher and the
trained ranker.

Implied vs literal: a (sentence, gold skill) pair is *literal* when one of the skill's ESCO labels (preferred or
alternative) is written in the sentence — case-insensitive, on word boundaries, whatever the matcher's label
policy — and *implied* otherwise. ``recall@5/literal`` and ``recall@5/implied`` are the shares of each kind of
pair whose skill is in the sentence's top 5: the number the implied-skills work is about.

Pooled: the metrics of several files together are those of all their sentences in one list
(``RankedSentences.pooled``), so every sentence weighs the same and a small file no more than its size.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from spacy.language import Language
from spacy.tokens import Doc

from pipeline.components.pipes import find_taxonomy
from pipeline.components.predictions import SkillPrediction
from pipeline.components.segmenter import NonEnglishWarning
from pipeline.errors import EscoDataError
from pipeline.esco.taxonomy import EscoTaxonomy
from pipeline.io.files import open_text

IGNORED_LABELS = frozenset({"LABEL NOT PRESENT", "UNDERSPECIFIED"})
RANK_CUTOFFS = (5, 10)


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


def sentence_metric(metric: str) -> Callable[[Sequence[str], Set[str]], float]:
    """The per-sentence function behind a metric name: ``rp@K`` or ``mrr``."""
    if metric == "mrr":
        return reciprocal_rank
    found = re.fullmatch(r"rp@([1-9][0-9]*)", metric)
    if found is None:
        raise ValueError(f"unknown ranking metric {metric!r}: expected 'rp@K' (K >= 1) or 'mrr'")
    k = int(found.group(1))
    return lambda ranking, gold: rp_at_k(ranking, gold, k)


def sentence_scores(rankings: Sequence[Sequence[str]], golds: Sequence[Iterable[str]], metric: str) -> List[float]:
    """``metric`` of each sentence with a non-empty gold set, in order: the values a file's metric averages (and
    that paired comparisons resample)."""
    if len(rankings) != len(golds):
        raise ValueError(f"{len(rankings)} rankings for {len(golds)} gold sets")
    score = sentence_metric(metric)
    return [score(list(ranking), set(gold)) for ranking, gold in zip(rankings, golds) if gold]


def ranking_metrics(
    rankings: Sequence[Sequence[str]], golds: Sequence[Iterable[str]], cutoffs: Sequence[int] = RANK_CUTOFFS
) -> Dict[str, float]:
    """RP@K for each cutoff, MRR and coverage, averaged over sentences with a non-empty gold set."""
    metrics: Dict[str, float] = {}
    for name in [*(f"rp@{k}" for k in cutoffs), "mrr"]:
        values = sentence_scores(rankings, golds, name)
        metrics[name] = sum(values) / len(values) if values else 0.0
    pairs = [(list(ranking), set(gold)) for ranking, gold in zip(rankings, golds) if gold]
    n = len(pairs)
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


def label_written(sentence: str, labels: Iterable[str]) -> bool:
    """Whether any label occurs in the sentence as whole words, ignoring case."""
    text = sentence.lower()
    return any(re.search(rf"(?<!\w){re.escape(label.lower())}(?!\w)", text) for label in labels if label)


def recall_by_kind(sentences: Sequence[str], rankings: Sequence[Sequence[str]], golds: Sequence[Set[str]],
                   taxonomy: EscoTaxonomy, k: int = 5) -> Dict[str, float]:
    """Recall@k over (sentence, gold skill) pairs, split into literal and implied pairs (module docstring)."""
    by_label = taxonomy.by_preferred_label()
    hits: Counter = Counter()
    totals: Counter = Counter()
    for sentence, ranking, gold in zip(sentences, rankings, golds):
        top = set(ranking[:k])
        for label in gold:
            skill = taxonomy.skills.get(by_label.get(label, ""))
            labels = [label] + (list(skill.alt_labels) if skill is not None else [])
            kind = "literal" if label_written(sentence, labels) else "implied"
            totals[kind] += 1
            hits[kind] += label in top
    metrics = {f"recall@{k}/{kind}": hits[kind] / totals[kind] if totals[kind] else 0.0
               for kind in ("literal", "implied")}
    metrics.update({f"n_{kind}_pairs": float(totals[kind]) for kind in ("literal", "implied")})
    return metrics


@dataclass
class RankedSentences:
    """The sentences of one benchmark file, or of several pooled, each with its ranking and gold set, in file
    order. Every metric is computed from these, so the metrics of files pooled are those of all their sentences
    (each sentence weighs the same, whatever its file's size)."""

    sentences: List[str]
    rankings: List[List[str]]
    golds: List[Set[str]]
    n_ignored_rows: int = 0

    @classmethod
    def pooled(cls, parts: Sequence["RankedSentences"]) -> "RankedSentences":
        return cls([s for p in parts for s in p.sentences], [r for p in parts for r in p.rankings],
                   [g for p in parts for g in p.golds], sum(p.n_ignored_rows for p in parts))

    def scores(self, metric: str) -> List[float]:
        """Per scored sentence (gold set not empty), in order: see ``sentence_scores``."""
        return sentence_scores(self.rankings, self.golds, metric)


@dataclass
class BenchmarkResult:
    metrics: Dict[str, float]
    unknown_labels: Counter = field(default_factory=Counter)
    ranked: Optional[RankedSentences] = None


def rank_benchmark(nlp: Language, path: Union[str, Path], *, batch_size: int = 64) -> RankedSentences:
    """Each distinct sentence of the file run through ``nlp``: its ranking as ESCO preferred labels."""
    benchmark = read_benchmark(path)
    taxonomy = find_taxonomy(nlp)
    sentences = list(benchmark.gold)
    rankings = [ranked_labels(doc._.esco_skills or [], taxonomy) for doc in pipe_quietly(nlp, sentences, batch_size)]
    return RankedSentences(sentences, rankings, [benchmark.gold[s] for s in sentences], benchmark.n_ignored_rows)


def evaluate_benchmark(nlp: Language, path: Union[str, Path], *, batch_size: int = 64) -> BenchmarkResult:
    return score_ranked(rank_benchmark(nlp, path, batch_size=batch_size), find_taxonomy(nlp))


def score_ranked(ranked: RankedSentences, taxonomy: EscoTaxonomy) -> BenchmarkResult:
    """Every benchmark metric of ranked sentences (one file's, or several files' pooled)."""
    known = set(taxonomy.by_preferred_label())
    metrics = ranking_metrics(ranked.rankings, ranked.golds)
    metrics.update(recall_by_kind(ranked.sentences, ranked.rankings, ranked.golds, taxonomy))
    unknown = Counter(label for gold in ranked.golds for label in gold if label not in known)
    metrics.update(
        n_sentences=float(len(ranked.sentences)),
        n_gold_labels=float(sum(len(gold) for gold in ranked.golds)),
        n_ignored_rows=float(ranked.n_ignored_rows),
        n_unknown_labels=float(sum(unknown.values())),
    )
    return BenchmarkResult(metrics, unknown, ranked)


def pipe_quietly(nlp: Language, texts: Sequence[Union[str, Doc]], batch_size: int = 64) -> List[Doc]:
    """nlp.pipe without the segmenter's language warning: benchmark sentences are short skill lists that often
    have no function words, and the warning says nothing about the scores."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonEnglishWarning)
        return list(nlp.pipe(texts, batch_size=batch_size))

