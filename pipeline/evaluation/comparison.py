"""``python -m pipeline compare``: is B better than A on the benchmark files, beyond the noise?

Each side is one or more pipelines (the same recipe trained with different seeds). Per file and per pool
(``pooled_dev``, ``pooled_validation``, ``pooled``: ``evaluation.validation``), the command reports each side's
mean ± sd over its seeds, the difference B − A, and a paired bootstrap over sentences: the sentences are
resampled with replacement, each sentence's value being the metric averaged over each side's seeds, and the 2.5
and 97.5 percentiles of the resampled mean difference give the 95 % interval; the share of resamples where B
beats A is reported beside it. Pairing by sentence removes what both sides share (the hard and the easy
sentences), which is most of the variance between files' scores; averaging the seeds first keeps the seed noise
in the values the interval is built from.

Only the output contract is read (``rank_benchmark``, ``RankedSentences.scores``), so any two pipelines compare:
a trained one against the matcher, one label policy against another.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
from wasabi import table

from pipeline.errors import ConfigError
from pipeline.evaluation.benchmark import rank_benchmark, sentence_metric
from pipeline.evaluation.validation import benchmark_pools, check_validation_files, validation_names

PathLike = Union[str, Path]
CHUNK = 1000  # resamples drawn at once: 1000 × 600 sentences of indices is 5 MB


@dataclass
class Bootstrap:
    mean_diff: float  # mean over sentences of B − A (each side averaged over its seeds)
    low: float  # 2.5th percentile of the resampled mean difference
    high: float  # 97.5th percentile
    p_b_greater: float  # share of resamples whose mean difference is above 0


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, resamples: int = 10000, seed: int = 0) -> Bootstrap:
    """Paired bootstrap over sentences of ``b − a``; ``a`` is [seeds of A, sentences], ``b`` [seeds of B,
    sentences], the same sentences in the same order (module docstring)."""
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the sides score different sentences: {a.shape[1]} against {b.shape[1]}")
    if a.shape[1] == 0 or resamples < 1:
        raise ValueError("a paired bootstrap needs at least one sentence and one resample")
    diff = b.mean(axis=0) - a.mean(axis=0)
    rng = np.random.default_rng(seed)
    means = np.concatenate([diff[rng.integers(0, len(diff), size=(min(CHUNK, resamples - start), len(diff)))]
                            .mean(axis=1) for start in range(0, resamples, CHUNK)])
    low, high = np.percentile(means, [2.5, 97.5])
    return Bootstrap(float(diff.mean()), float(low), float(high), float(np.mean(means > 0)))


@dataclass
class Side:
    per_seed: List[float]  # the metric of each seed's pipeline (mean over sentences)

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_seed))

    @property
    def sd(self) -> Optional[float]:
        """Sample standard deviation over seeds; None with one seed."""
        return float(np.std(self.per_seed, ddof=1)) if len(self.per_seed) > 1 else None

    @classmethod
    def of(cls, scores: np.ndarray) -> "Side":
        return cls([float(v) for v in scores.mean(axis=1)])


@dataclass
class Comparison:
    name: str  # a file's validation name or a pool
    n_sentences: int
    a: Side
    b: Side
    bootstrap: Bootstrap

    def to_json(self) -> Dict:
        return {"n_sentences": self.n_sentences,
                "a": {"mean": self.a.mean, "sd": self.a.sd, "per_seed": self.a.per_seed},
                "b": {"mean": self.b.mean, "sd": self.b.sd, "per_seed": self.b.per_seed},
                **asdict(self.bootstrap)}


def side_scores(models: Sequence[PathLike], files: Sequence[PathLike], metric: str,
                config: Optional[Dict[str, Any]] = None) -> Dict[str, np.ndarray]:
    """``str(file)`` → [models, scored sentences] of per-sentence ``metric``; one pipeline loaded at a time, with
    the ``config`` overrides (``load_overridden``)."""
    from pipeline.components.ranker import load_overridden  # the encoder's imports only when a pipeline is loaded

    rows: Dict[str, List[List[float]]] = {str(file): [] for file in files}
    for model in models:
        nlp, _ = load_overridden(model, config or {})
        for file in rows:
            rows[file].append(rank_benchmark(nlp, file).scores(metric))
        del nlp
    return {file: np.array(values, dtype=float) for file, values in rows.items()}


def compare(a_models: Sequence[PathLike], b_models: Sequence[PathLike], files: Sequence[PathLike], *,
            metric: str = "rp@5", resamples: int = 10000, seed: int = 0, a_config: Optional[Dict[str, Any]] = None,
            b_config: Optional[Dict[str, Any]] = None) -> List[Comparison]:
    """One ``Comparison`` per file (in order, named as ``validation_names`` names them), then per pool. ``a_config``
    / ``b_config``: config overrides each side's pipelines load with (the same models under two settings)."""
    if not a_models or not b_models or not files:
        raise ConfigError("compare needs at least one model on each side (--a, --b) and one benchmark file")
    try:
        sentence_metric(metric)
    except ValueError as err:
        raise ConfigError(f"--metric: {err}") from err
    check_validation_files(files)
    names = validation_names(files)
    a, b = side_scores(a_models, list(names), metric, a_config), side_scores(b_models, list(names), metric, b_config)
    groups = {name: [path] for path, name in names.items()}
    groups.update(benchmark_pools(list(names)))
    out = []
    for name, paths in groups.items():
        a_all = np.concatenate([a[p] for p in paths], axis=1)
        b_all = np.concatenate([b[p] for p in paths], axis=1)
        out.append(Comparison(name, a_all.shape[1], Side.of(a_all), Side.of(b_all),
                              paired_bootstrap(a_all, b_all, resamples=resamples, seed=seed)))
    return out


def comparison_json(results: Sequence[Comparison], a_models: Sequence[PathLike], b_models: Sequence[PathLike],
                    *, metric: str, resamples: int, seed: int, set_a: Sequence[str] = (),
                    set_b: Sequence[str] = ()) -> Dict:
    """Every number of a comparison, with the ``--set-a`` / ``--set-b`` overrides as the user wrote them."""
    return {"metric": metric, "resamples": resamples, "seed": seed, "a": [str(m) for m in a_models],
            "b": [str(m) for m in b_models], "set_a": list(set_a), "set_b": list(set_b),
            "results": {r.name: r.to_json() for r in results}}


def format_comparison(results: Sequence[Comparison], metric: str) -> str:
    """One row per file and pool; values ×100."""
    header = ["file", "n", f"A {metric}", f"B {metric}", "B − A", "95 % interval", "P(B > A)"]
    rows = [[r.name, r.n_sentences, mean_sd(r.a.per_seed), mean_sd(r.b.per_seed), f"{100 * r.bootstrap.mean_diff:+.1f}",
             f"[{100 * r.bootstrap.low:+.1f}, {100 * r.bootstrap.high:+.1f}]", f"{r.bootstrap.p_b_greater:.3f}"]
            for r in results]
    seeds = f"seeds: A {len(results[0].a.per_seed)}, B {len(results[0].b.per_seed)}; " if results else ""
    return (table(rows, header=header, divider=True, aligns=["l", "r", "r", "r", "r", "r", "r"])
            + f"(values ×100, mean ± sd over seeds; {seeds}95 % paired bootstrap interval over sentences)")


def mean_sd(values: Sequence[float]) -> str:
    """×100, one decimal; ``mean ± sd`` when there are several seeds."""
    if not values:
        return "–"
    mean = 100 * statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}"
