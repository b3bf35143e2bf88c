"""``make bench``: throughput against its limit, load time and peak memory, measured in one run.

The limit is the raw encoder: the same sentences, the same batch size, forward pass alone. Everything else
(tokenizing, segmenting, matching, scoring 13,896 skills, fusing, writing the contract) is overhead to keep
small. Each timing is repeated; the median and the spread (min–max) are printed.
"""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence


from pipeline.components.pipes import MATCHER_PIPES, RANKER, load_pipeline
from pipeline.io import jobads
from pipeline.io.text import clean_job_ad, iter_lines


def read_ads(paths: Sequence[Path], limit: int, text_field: str = "description") -> List[str]:
    """The first `limit` ads, spread over the files, read by the job-ad reader ``corpus`` and ``extract`` use."""
    per_file = max(1, limit // max(1, len(paths)))
    ad_format = jobads.AdFormat(text_field=text_field)
    ads = [ad.text for path in paths for ad in jobads.read_ads(path, ad_format, limit=per_file)]
    return ads[:limit]


def ad_sentences(ads: Sequence[str], limit: int, min_chars: int = 20) -> List[str]:
    """Distinct cleaned lines of real ads (the unit the pipeline scores)."""
    seen: Dict[str, None] = {}
    for ad in ads:
        for line in iter_lines(clean_job_ad(ad)):
            if len(line) >= min_chars:
                seen.setdefault(line, None)
        if len(seen) >= limit:
            break
    return list(seen)[:limit]


def timed(fn: Callable[[], object], repeats: int) -> Dict[str, float]:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return {"median_s": statistics.median(runs), "min_s": min(runs), "max_s": max(runs)}


def run_benchmarks(model: Path, jobads: Sequence[Path], *, n_sentences: int = 2000, n_ads: int = 200,
                   batch_size: int = 64, repeats: int = 3,
                   quantize: bool = True) -> Dict[str, Dict[str, float]]:
    """Every timing of the module docstring, as ``{what: {unit: value, "min": …, "max": …}}``; the CLI prints
    ``format_results`` of it."""
    start = time.perf_counter()
    nlp = load_pipeline(model)
    load_s = time.perf_counter() - start
    ads = read_ads(jobads, max(n_ads, 50))
    sentences = ad_sentences(read_ads(jobads, 4 * n_ads + 200), n_sentences)
    ads = ads[:n_ads]
    results: Dict[str, Dict[str, float]] = {"load": {"seconds": load_s}}
    n = len(sentences)

    def rate(key: str, fn: Callable[[], object], units: int, unit: str = "sentences/s") -> None:
        t = timed(fn, repeats)
        results[key] = {unit: units / t["median_s"], "min": units / t["max_s"], "max": units / t["min_s"],
                        "n": units}

    matcher_pipes = [p for p in MATCHER_PIPES if p in nlp.pipe_names]
    with nlp.select_pipes(enable=matcher_pipes):
        rate("matcher only", lambda: list(nlp.pipe(sentences, batch_size=batch_size)), n)
    if RANKER in nlp.pipe_names:
        ranker = nlp.get_pipe(RANKER)
        rate("raw encoder (limit)", lambda: ranker.encoder.encode(sentences, batch_size=batch_size), n)
        with nlp.select_pipes(disable=[RANKER]):
            prepared = list(nlp.pipe(sentences, batch_size=batch_size))
        rate("ranker only", lambda: list(ranker.pipe(prepared, batch_size=batch_size)), n)
    rate("full pipeline", lambda: list(nlp.pipe(sentences, batch_size=batch_size)), n)
    n_ad_sentences = sum(len(list(doc.sents)) for doc in nlp.pipe(ads[:20], batch_size=batch_size))
    rate("full pipeline, whole ads", lambda: list(nlp.pipe(ads, batch_size=batch_size)), len(ads), "ads/s")
    results["full pipeline, whole ads"]["sentences per ad (first 20)"] = n_ad_sentences / max(1, min(20, len(ads)))
    results["peak memory"] = {"MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if quantize and "esco_skill_ranker" in nlp.pipe_names:
        from pipeline.components.encoder import quantized_override

        fast = load_pipeline(model, config=quantized_override())
        fast_ranker = fast.get_pipe(RANKER)
        rate("int8 encoder", lambda: fast_ranker.encoder.encode(sentences, batch_size=batch_size), n)
        rate("int8 full pipeline", lambda: list(fast.pipe(sentences, batch_size=batch_size)), n)
        results["int8 full pipeline"]["speed-up vs float pipeline"] = (
            results["int8 full pipeline"]["sentences/s"] / results["full pipeline"]["sentences/s"])
    if "raw encoder (limit)" in results:
        results["full pipeline"]["share of encoder limit"] = (
            results["full pipeline"]["sentences/s"] / results["raw encoder (limit)"]["sentences/s"])
    return results


def format_results(results: Dict[str, Dict[str, float]], model: Path, batch_size: int, repeats: int) -> str:
    lines = [f"benchmark of {model} (batch size {batch_size}, median of {repeats} runs, spread min–max)"]
    for key, values in results.items():
        parts = []
        for name, value in values.items():
            if name in ("min", "max"):
                continue
            if name == "share of encoder limit":
                parts.append(f"{name} {value:.0%}")
            elif name.startswith("speed-up"):
                parts.append(f"{name} {value:.2f}x")
            else:
                parts.append(f"{name} {value:,.1f}")
        if "min" in values:
            parts.append(f"spread {values['min']:,.1f}–{values['max']:,.1f}")
        lines.append(f"  {key:<28} " + ", ".join(parts))
    return "\n".join(lines)
