"""Reports of the decider's calibration (``pipeline/training/decider_fit.py`` fits it): how decided skill sets
score against gold sets, the baseline they are compared with, the reliability diagram, the set size per real ad,
and the report the ``calibrate`` command prints.

Honest numbers: each validation file is scored by a fit on the others, and the files together in a pooled row
(``pooled_row``: micro P / R / F1 over all their sentences, the paired bootstrap interval of decider − threshold,
and the share of the benchmark's sentences without a gold skill given one), beside the shipped fit on all of
them (in-sample, optimistic). The baseline is the best single global threshold over
``doc._.esco_skills`` scores, chosen on the same fitting files. Every reported set comes from running the real
component on the docs (``decided_sets``), not from the threshold search's simulation.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from sklearn.calibration import calibration_curve
from spacy.language import Language
from spacy.tokens import Doc

from pipeline.evaluation.benchmark import ranked_labels
from pipeline.evaluation.comparison import CHUNK
from pipeline.errors import ConfigError, EscoDataError

PathLike = Union[str, Path]
Golds = Sequence[Optional[set]]  # per sentence; None: not a benchmark sentence (asks for no skill)


# ---------------------------------------------------------------------------------------------- scoring sets
def prf(tp: int, fp: int, fn: int) -> Dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "tp": tp, "fp": fp, "fn": fn}


def sentence_counts(predicted: Sequence[set], golds: Golds) -> np.ndarray:
    """[sentences, 3]: each sentence's (TP, FP, FN); a sentence with an empty gold set only adds false positives."""
    rows = [(len(pred & (gold or set())), len(pred - (gold or set())), len((gold or set()) - pred))
            for pred, gold in zip(predicted, golds)]
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def score_sets(predicted: Sequence[set], golds: Golds) -> Dict[str, float]:
    """Sentence-level micro P / R / F1."""
    return prf(*(int(v) for v in sentence_counts(predicted, golds).sum(axis=0)))


def micro_f1(counts: np.ndarray) -> np.ndarray:
    """Micro F1 of (TP, FP, FN) summed over the second-to-last axis: [..., sentences, 3] → [...]."""
    tp, fp, fn = np.moveaxis(counts.sum(axis=-2), -1, 0)
    return np.where(tp > 0, 2 * tp / np.maximum(1, 2 * tp + fp + fn), 0.0)


def f1_bootstrap(a: np.ndarray, b: np.ndarray, *, resamples: int = 10000, seed: int = 0) -> Dict[str, float]:
    """Paired bootstrap over sentences of micro F1 B − A: ``a``, ``b`` are [sentences, 3] counts of the same
    sentences. F1 is not a mean over sentences, so ``comparison.paired_bootstrap`` does not apply: each resample
    sums its sentences' counts on both sides and takes the difference of the two F1s."""
    if a.shape != b.shape or not len(a):
        raise ValueError(f"a paired bootstrap needs the same sentences on both sides: {a.shape} against {b.shape}")
    rng = np.random.default_rng(seed)
    diffs = np.concatenate([micro_f1(b[i]) - micro_f1(a[i]) for i in (
        rng.integers(0, len(a), size=(min(CHUNK, resamples - start), len(a))) for start in range(0, resamples, CHUNK))])
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"diff": float(micro_f1(b) - micro_f1(a)), "low": float(low), "high": float(high),
            "p_b_greater": float(np.mean(diffs > 0))}


def decided_sets(decider, docs: Sequence[Doc], taxonomy) -> List[set]:
    """Run the real component over the docs and read the contract (``doc._.esco_skill_set``) as ESCO labels."""
    return [set(ranked_labels(doc._.esco_skill_set, taxonomy)) for doc in decider.pipe(docs)]


def ranked_scores(docs: Sequence[Doc], taxonomy) -> List[List[Tuple[float, str]]]:
    """Per document, ``(score, ESCO label)`` of its whole ranking (``doc._.esco_skills``)."""
    return [[(p.score, taxonomy.label(p.uri) if p.uri in taxonomy else p.label) for p in doc._.esco_skills]
            for doc in docs]


def threshold_sets(ranked: Sequence[List[Tuple[float, str]]], threshold: float) -> List[set]:
    return [{label for score, label in doc if score >= threshold} for doc in ranked]


def best_global_threshold(docs: Sequence[Doc], golds: Golds, taxonomy) -> Tuple[float, Dict[str, float]]:
    """The baseline: one threshold over ``doc._.esco_skills`` scores, the best micro F1 on ``docs``."""
    ranked = ranked_scores(docs, taxonomy)
    best: Tuple[float, float, Dict[str, float]] = (-1.0, 1.0, {})
    for t in sorted({score for doc in ranked for score, _ in doc}):
        m = score_sets(threshold_sets(ranked, t), golds)
        if m["f1"] > best[0]:
            best = (m["f1"], t, m)
    return best[1], best[2]


def nonskill_sentence_share(counts: np.ndarray) -> Dict[str, float]:
    """Of the sentences whose gold set is empty (the benchmark's hand-labelled non-skill sentences), the share
    given a skill: with no gold, a sentence has a skill exactly when it has a false positive."""
    empty = counts[:, 0] + counts[:, 2] == 0
    return {"sentences": int(empty.sum()), "share": float((counts[empty, 1] > 0).mean()) if empty.any() else 0.0}


def pooled_row(splits: Sequence[Tuple[np.ndarray, np.ndarray]]) -> Dict[str, Any]:
    """The cross-file splits together: each file's sentences scored by the fit on the other files, pooled into one
    micro P / R / F1 per side (every sentence weighs the same), the paired bootstrap of decider − threshold, and
    each side's share of non-skill sentences given a skill. ``splits``: per file, [sentences, 3] counts of
    (the decided sets, the global threshold's sets)."""
    decider = np.concatenate([d for d, _ in splits])
    threshold = np.concatenate([t for _, t in splits])
    return {"decider": set_scores(decider), "global_threshold": set_scores(threshold),
            "sentences": len(decider), "decider_minus_threshold_f1": f1_bootstrap(threshold, decider)}


def set_scores(counts: np.ndarray) -> Dict[str, Any]:
    """Micro P / R / F1 of [sentences, 3] (TP, FP, FN) counts, and the share of non-skill sentences given a skill."""
    return {**prf(*(int(v) for v in counts.sum(axis=0))), "nonskill_sentences": nonskill_sentence_share(counts)}


def read_counts(path: Path) -> Dict[str, list]:
    """A ``calibrate --counts`` file, checked: sentences and one [TP, FP, FN] row per sentence on each side."""
    try:
        counts = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read the counts file '{path}': {err}") from err
    sides = ("decider", "threshold")
    if not isinstance(counts, dict) or not all(isinstance(counts.get(k), list) for k in ("sentences", *sides)) \
            or any(len(counts[k]) != len(counts["sentences"]) for k in sides):
        raise ConfigError(f"'{path}' is not a `calibrate --counts` file (sentences, decider, threshold rows)")
    return counts


def compare_counts(a: Dict[str, list], b: Dict[str, list], *, resamples: int = 10000) -> Dict[str, Any]:
    """The decided sets of calibration B against A on the same sentences (and each side's global threshold)."""
    if a["sentences"] != b["sentences"]:
        raise ConfigError(f"the two counts files hold other sentences ({len(a['sentences'])} against "
                          f"{len(b['sentences'])}, or another order): calibrate both on the same --validation files")
    side = lambda c, key: np.asarray(c[key], np.int64).reshape(-1, 3)  # noqa: E731
    out: Dict[str, Any] = {"sentences": len(a["sentences"])}
    for name, counts in (("A", a), ("B", b)):
        for key in ("decider", "threshold"):
            out[f"{name} {key}"] = set_scores(side(counts, key))
    out["B - A decider f1"] = f1_bootstrap(side(a, "decider"), side(b, "decider"), resamples=resamples)
    return out


def format_set_comparison(result: Dict[str, Any]) -> str:
    """``compare-sets``' table."""
    lines = [f"{result['sentences']} sentences; micro P / R / F1 ×100, non-skill sentences given a skill"]
    for key, m in result.items():
        if isinstance(m, dict) and "f1" in m:
            lines.append(f"{key:<12} {100 * m['precision']:5.1f} / {100 * m['recall']:5.1f} / {100 * m['f1']:5.1f}   "
                         f"{m['nonskill_sentences']['share']:.1%} of {m['nonskill_sentences']['sentences']}")
    d = result["B - A decider f1"]
    lines.append(f"B - A decided set F1: {100 * d['diff']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] "
                 f"(95 % paired bootstrap), P(B > A) = {d['p_b_greater']:.3f}")
    return "\n".join(lines)


def nonskill_report(decider, docs: Sequence[Doc]) -> Dict[str, Any]:
    """The share of non-skill lines given at least one skill by the real component."""
    given = [bool(doc._.esco_skill_set) for doc in decider.pipe(docs)]
    return {"lines": len(given), "given_a_skill": sum(given), "share": sum(given) / max(1, len(given))}


# ---------------------------------------------------------------------------------------------- reliability
def reliability_bins(probs: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> List[Dict[str, float]]:
    """Predicted-probability bins (``calibration_curve``'s uniform ones) → observed precision (share correct),
    mean predicted probability and count, for the bins that hold a candidate."""
    probs = np.asarray(probs, np.float64)
    precision, mean_probability = calibration_curve(np.asarray(correct, int), probs, n_bins=n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], probs), minlength=n_bins)  # calibration_curve's binning
    filled = np.flatnonzero(counts)
    return [{"low": float(edges[b]), "high": float(edges[b + 1]), "n": int(counts[b]),
             "mean_probability": float(p), "precision": float(q)}
            for b, p, q in zip(filled, mean_probability, precision)]


def reliability_svg(series: Dict[str, List[Dict[str, float]]], title: str, width: int = 480,
                    height: int = 400) -> str:
    """A reliability diagram as SVG text (no plotting dependency): mean predicted probability of each bin
    against the observed precision, point area ∝ count, the diagonal = perfect calibration."""
    left, right, top, bottom = 56, 150, 36, 48
    w, h = width - left - right, height - top - bottom
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]

    def xy(p: float, q: float) -> Tuple[float, float]:
        return left + p * w, top + (1 - q) * h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{left}" y="20" font-size="14">{_escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#444"/>',
             f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top}" stroke="#999" stroke-dasharray="4 3"/>']
    for tick in np.linspace(0, 1, 6):
        x, y = xy(tick, tick)
        parts.append(f'<text x="{x:.1f}" y="{top + h + 16}" text-anchor="middle">{tick:.1f}</text>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:.1f}</text>')
    parts.append(f'<text x="{left + w / 2}" y="{height - 10}" text-anchor="middle">predicted probability</text>')
    parts.append(f'<text transform="translate(16 {top + h / 2}) rotate(-90)" text-anchor="middle">'
                 'observed precision</text>')
    for k, (name, bins) in enumerate(series.items()):
        color = colors[k % len(colors)]
        points = [xy(b["mean_probability"], b["precision"]) for b in bins]
        if len(points) > 1:
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="'
                         + " ".join(f"{x:.1f},{y:.1f}" for x, y in points) + '"/>')
        for (x, y), b in zip(points, bins):
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{2 + 1.5 * math.sqrt(b["n"]) ** 0.75:.1f}" '
                         f'fill="{color}" fill-opacity="0.6"><title>{_escape(name)}: {b["low"]:.1f}–{b["high"]:.1f}, '
                         f'n = {b["n"]}, precision {b["precision"]:.2f}</title></circle>')
        n = sum(b["n"] for b in bins)
        ly = top + 14 + 20 * k
        parts.append(f'<circle cx="{left + w + 16}" cy="{ly}" r="5" fill="{color}"/>')
        parts.append(f'<text x="{left + w + 26}" y="{ly + 4}">{_escape(name)} (n = {n})</text>')
    parts.append(f'<text x="{left + w + 10}" y="{top + 14 + 20 * len(series) + 10}" font-size="10" fill="#555">'
                 'area ∝ candidates</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_reliability(series: Dict[str, List[Dict[str, float]]], path: PathLike, title: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(reliability_svg(series, title), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- the report
def format_report(report: Dict[str, Any]) -> str:
    """The calibration report as a short table (what the CLI prints)."""
    def cells(m: Dict[str, float]) -> str:
        return f"{100 * m['precision']:.1f} / {100 * m['recall']:.1f} / {100 * m['f1']:.1f}"

    lines = ["sentence-level micro P / R / F1 ×100: decided set | best global threshold (chosen on the fit files)"]
    for name, value in report.get("validation", {}).items():
        splits = value.items() if "decider" not in value else [("", value)]
        for file, m in splits:
            label = f"{name}{': ' + file if file else ''}"
            threshold = m["global_threshold"].get("threshold")
            lines.append(f"  {label:<58} {cells(m['decider'])} | {cells(m['global_threshold'])}"
                         + (f" (t = {threshold:.3f})" if threshold is not None else ""))
            if "decider_minus_threshold_f1" in m:
                b = m["decider_minus_threshold_f1"]
                lines.append(f"  {'':<58} F1 decider − threshold {100 * b['diff']:+.1f} "
                             f"[{100 * b['low']:+.1f}, {100 * b['high']:+.1f}] (95 % paired bootstrap); "
                             f"non-skill sentences given a skill {m['decider']['nonskill_sentences']['share']:.1%}"
                             f" | {m['global_threshold']['nonskill_sentences']['share']:.1%}")
    if "gate" in report:
        g = report["gate"]
        lines.append(f"gate: AUC {g['auc_held_out']:.3f} on {g['n_positives']} held-out skill sentences vs "
                     f"{g['n_negatives']} held-back boilerplate lines")
    for key, what in (("nonskill_held_back", "held-back boilerplate lines"),
                      ("nonskill_held_back_without_requirements", "  of them stating no requirement")):
        if key in report:
            h = report[key]
            lines.append(f"{what} given a skill: {h['given_a_skill']} / {h['lines']} = {h['share']:.1%}")
    if "set_size_per_ad" in report:
        z = report["set_size_per_ad"]
        lines.append(f"set size per ad over {z['ads']} ads: median {z['median']:g} "
                     f"(quartiles {z['q1']:g}–{z['q3']:g}), "
                     f"mean {z['mean']:.1f} ({z['mean_explicit']:.1f} explicit), empty {z['empty_share']:.1%}")
    lines.extend(f"note: {note}" for note in report.get("notes", []))
    return "\n".join(lines)


def rounded(value: Any) -> Any:
    """A report as meta.json keeps it: floats to 4 places, NaN and infinities as null, numpy scalars as Python."""
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    if isinstance(value, np.generic):
        return rounded(value.item())
    return value


# ---------------------------------------------------------------------------------------------- set sizes
def set_sizes(nlp: Language, jobads: Sequence[PathLike], n_ads: int = 1000, batch_size: int = 32) -> Dict[str, Any]:
    """Decided set size per ad over the first ``n_ads`` real ads (spread over the files as ``bench`` reads them):
    median, quartiles, share of ads with an empty set. Slow (every sentence of 1,000 ads is ranked)."""
    from pipeline.evaluation.bench import read_ads

    started = time.perf_counter()
    ads = read_ads([Path(p) for p in jobads], n_ads)
    sizes, explicit = [], []
    for doc in nlp.pipe(ads, batch_size=batch_size):
        skills = doc._.esco_skill_set
        sizes.append(len(skills))
        explicit.append(sum(p.explicit for p in skills))
    if not sizes:
        raise EscoDataError(f"no ads read from {[str(p) for p in jobads]}")
    q = np.percentile(sizes, [25, 50, 75])
    return {"ads": len(sizes), "median": float(statistics.median(sizes)), "q1": float(q[0]), "q3": float(q[2]),
            "mean": float(np.mean(sizes)), "mean_explicit": float(np.mean(explicit)),
            "empty_share": float(np.mean([s == 0 for s in sizes])), "seconds": round(time.perf_counter() - started, 1)}
