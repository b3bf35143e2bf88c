"""``make bench``: throughput against its limit, load time and peak memory, measured in one run.

The limit is the raw encoder: the same sentences, the same batch size, forward pass alone. Everything else
(tokenizing, segmenting, matching, scoring 13,896 skills, fusing, deciding, writing the contract) is overhead to
keep small; the full pipeline's line says whether its decider is on (calibrated: gate and evidence from the
ranker's word pieces). Each timing is repeated; the median and the spread (min–max) are printed.

Cold start: what a CLI call, a Ray actor or a packaged model pays before its first answer — a fresh Python
process that imports spaCy, loads the pipeline (``spacy.load``) and runs it on one ad, each step timed in it.

Optional: the fast path (``backend``, e.g. the ``onnx-int8`` encoder: raw encoder, sentences and whole ads, each
with its speed-up over the float pipeline). The extraction engines are timed by ``commands/engine_bench.py``
(``extract`` end to end as a user runs it: it runs the commands, so it sits with them).
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from pipeline.components.pipes import DECIDER, MATCHER_PIPES, RANKER, load_pipeline
from pipeline.errors import EscoSkillsError
from pipeline.io import jobads
from pipeline.io.text import clean_job_ad, iter_lines


def read_ads(paths: Sequence[Path], limit: int, text_field: str = jobads.TEXT_FIELD) -> List[str]:
    """The first `limit` ads, spread over the files, read by the job-ad reader ``corpus`` and ``extract`` use."""
    per_file = max(1, limit // max(1, len(paths)))
    ad_format = jobads.AdFormat(text_field=text_field)
    ads = [ad.text for path in paths for ad in jobads.read_ads(path, ad_format, limit=per_file)]
    return ads[:limit]


def bench_ads(paths: Sequence[Path], n_ads: int) -> List[str]:
    """The whole ads every ads/s figure is timed on (the same for the pipeline and the engines)."""
    return read_ads(paths, max(n_ads, 50))[:n_ads]


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
    return spread(runs)


def spread(runs: Sequence[float]) -> Dict[str, float]:
    """The median, fastest and slowest of some runs' seconds."""
    return {"median_s": statistics.median(runs), "min_s": min(runs), "max_s": max(runs)}


Results = Dict[str, Dict[str, float]]


def run_benchmarks(model: Path, jobads: Sequence[Path], *, n_sentences: int = 2000, n_ads: int = 200,
                   batch_size: int = 64, repeats: int = 3, backend: Optional[str] = None) -> Results:
    """Every timing of the module docstring, as ``{what: {unit: value, "min": …, "max": …}}``; the CLI prints
    ``format_results`` of it. ``backend``: also time that encoder backend."""
    start = time.perf_counter()
    nlp = load_pipeline(model)
    load_s = time.perf_counter() - start
    ads = bench_ads(jobads, n_ads)
    sentences = ad_sentences(read_ads(jobads, 4 * n_ads + 200), n_sentences)
    results: Dict[str, Dict[str, float]] = {"load": {"seconds": load_s}}
    n = len(sentences)

    def time_rate(key: str, fn: Callable[[], object], units: int, unit: str = "sentences/s") -> None:
        results[key] = rate(fn, units, repeats, unit)

    matcher_pipes = [p for p in MATCHER_PIPES if p in nlp.pipe_names]
    with nlp.select_pipes(enable=matcher_pipes):
        time_rate("matcher only", lambda: list(nlp.pipe(sentences, batch_size=batch_size)), n)
    if RANKER in nlp.pipe_names:
        ranker = nlp.get_pipe(RANKER)
        time_rate("raw encoder (limit)", lambda: ranker.encoder.encode(sentences, batch_size=batch_size), n)
        with nlp.select_pipes(disable=[RANKER]):
            prepared = list(nlp.pipe(sentences, batch_size=batch_size))
        time_rate("ranker only", lambda: list(ranker.pipe(prepared, batch_size=batch_size)), n)
    time_rate("full pipeline", lambda: list(nlp.pipe(sentences, batch_size=batch_size)), n)
    n_ad_sentences = sum(len(list(doc.sents)) for doc in nlp.pipe(ads[:20], batch_size=batch_size))
    time_rate("full pipeline, whole ads", lambda: list(nlp.pipe(ads, batch_size=batch_size)), len(ads), "ads/s")
    results["full pipeline, whole ads"]["sentences per ad (first 20)"] = n_ad_sentences / max(1, min(20, len(ads)))
    results["peak memory"] = {"MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    results["full pipeline"]["decider on"] = float(DECIDER in nlp.pipe_names and nlp.get_pipe(DECIDER).calibrated)
    if "raw encoder (limit)" in results:
        for key, unit in (("full pipeline", "sentences/s"), ("ranker only", "sentences/s")):
            results[key]["share of encoder limit"] = results[key][unit] / results["raw encoder (limit)"][unit]
    results["cold start"] = cold_start(model, ads[0] if ads else sentences[0], repeats)
    if backend and RANKER in nlp.pipe_names:
        results.update(bench_backend(model, backend, sentences, ads, batch_size, repeats, results))
    return results


COLD_START = """
import sys, time
start = time.perf_counter()
import spacy
imported = time.perf_counter()
nlp = spacy.load(sys.argv[1])
loaded = time.perf_counter()
nlp(sys.argv[2])
print(imported - start, loaded - imported, time.perf_counter() - loaded)
"""


class ColdStartError(EscoSkillsError, RuntimeError):
    """The fresh process of the cold-start timing failed."""


def cold_start(model: Path, text: str, repeats: int) -> Dict[str, float]:
    """Seconds from a fresh interpreter to the first ``nlp(text)`` (``import spacy`` + ``spacy.load`` + first
    call, timed inside the process; the median of ``repeats`` processes, each part's median beside it)."""
    parts: List[List[float]] = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", COLD_START, str(model), text], capture_output=True, text=True)
        if done.returncode != 0:
            raise ColdStartError(f"cold start of {model} failed: {done.stderr.strip()[-2000:]}")
        parts.append([float(x) for x in done.stdout.split()[-3:]])
    totals = [sum(p) for p in parts]
    out = {"seconds": statistics.median(totals), "min": min(totals), "max": max(totals)}
    for i, name in enumerate(("import spacy s", "spacy.load s", "first call s")):
        out[name] = statistics.median(p[i] for p in parts)
    return out


def installed_extras(backend: Optional[str], engines: Sequence[int]) -> Tuple[Optional[str], List[int], List[str]]:
    """The backend and engine counts that can be timed here, and a note for each part left out (a missing extra
    would otherwise fail after minutes of timing, or time the PyTorch fallback under the backend's name)."""
    import importlib.util

    from pipeline.components.onnx_backend import runtime_missing

    notes = []
    if backend == "onnx-int8" and runtime_missing(export=True):
        notes.append(f"{backend} not timed: {runtime_missing(export=True)}")
        backend = None
    engines = [n for n in engines if n > 0]
    if engines and importlib.util.find_spec("ray") is None:
        notes.append('Ray engine not timed: Ray is not installed (pip install ".[ray]")')
        engines = []
    return backend, engines, notes


def rate(fn: Callable[[], object], units: int, repeats: int, unit: str) -> Dict[str, float]:
    """``units`` per second of ``fn``: the median over ``repeats`` runs, the spread, and ``n`` = units."""
    return per_second(timed(fn, repeats), units, unit)


def per_second(t: Dict[str, float], units: int, unit: str) -> Dict[str, float]:
    """``units`` per second of the runs ``spread`` sums up (also for runs timed elsewhere)."""
    return {unit: units / t["median_s"], "min": units / t["max_s"], "max": units / t["min_s"], "n": units}


def bench_backend(model: Path, backend: str, sentences: Sequence[str], ads: Sequence[str], batch_size: int,
                  repeats: int, float_results: Results) -> Results:
    """The pipeline with another encoder backend: load (its export, if the pipeline has none saved), raw encoder,
    sentences and whole ads, each with its speed-up over the float numbers in ``float_results``."""
    from pipeline.components.encoder import backend_override

    start = time.perf_counter()
    fast = load_pipeline(model, config=backend_override(backend))
    encoder = fast.get_pipe(RANKER).encoder
    encoder.encode(sentences[:8])  # the export happens at the first batch when the pipeline has none saved
    out: Results = {f"{backend} load + first batch": {"seconds": time.perf_counter() - start}}
    for key, base, fn, units, unit in (
            (f"{backend} encoder", "raw encoder (limit)", lambda: encoder.encode(sentences, batch_size=batch_size),
             len(sentences), "sentences/s"),
            (f"{backend} full pipeline", "full pipeline", lambda: list(fast.pipe(sentences, batch_size=batch_size)),
             len(sentences), "sentences/s"),
            (f"{backend} full pipeline, whole ads", "full pipeline, whole ads",
             lambda: list(fast.pipe(ads, batch_size=batch_size)), len(ads), "ads/s")):
        out[key] = rate(fn, units, repeats, unit)
        out[key][f"speed-up vs {base}"] = out[key][unit] / float_results[base][unit]
    return out


def format_results(results: Dict[str, Dict[str, float]], model: Path, batch_size: int, repeats: int) -> str:
    lines = [f"benchmark of {model} (batch size {batch_size}, median of {repeats} runs, spread min–max)"]
    for key, values in results.items():
        parts = []
        for name, value in values.items():
            if name in ("min", "max"):
                continue
            if name in ("share of encoder limit", "actor busy share"):
                parts.append(f"{name} {value:.0%}")
            elif name == "decider on":
                parts.append("decider on" if value else "decider off (uncalibrated or absent)")
            elif name.startswith("speed-up") or name.startswith("x "):
                parts.append(f"{name} {value:.2f}x")
            else:
                parts.append(f"{name} {value:,.1f}")
        if "min" in values:
            parts.append(f"spread {values['min']:,.1f}–{values['max']:,.1f}")
        lines.append(f"  {key:<36} " + ", ".join(parts))
    return "\n".join(lines)
