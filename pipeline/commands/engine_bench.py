"""``make bench``'s engine rows: ``python -m pipeline extract`` end to end as a user runs it, one process against
Ray Data, on the same ads.

It lives with the commands, not in evaluation/: it runs them (and reads the Ray engine's settings and timeline),
and evaluation/ sits below commands/ in the import order.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

from pipeline.commands.ray_engine import SECTION, RaySettings, ray_session, timeline_stats
from pipeline.evaluation.bench import per_second, spread
from pipeline.io import jobads


def bench_engines(model: Union[str, Path], ads: Sequence[str], workers: Sequence[int], batch_size: int,
                  repeats: int, cpus_per_worker: int = 1) -> Dict[str, Dict[str, float]]:
    """``make bench``'s engine rows: ``python -m pipeline extract`` of the same ads, each run a fresh process
    timed from start to exit as a user runs it (imports, pipeline loading, extraction, JSONL or Parquet written):
    the single engine, then ``--engine ray`` with each worker count, joining a local Ray with ``max(workers)``
    CPUs started for the round (Ray's own start-up is not timed: a cluster is up before a run). Ray is down while
    the single process runs (its idle processes take ~3 % of two cores).

    The engines take turns, one run each per round, ``repeats`` rounds: a drift in the machine's speed over the
    minutes of a bench falls on every row alike, so that ``x single process`` compares like with like. Each Ray
    row adds ``timeline_stats`` of its last run (``--timeline``): where the time the single process does not
    spend goes."""
    single = "extract, single process"
    keys = {n: f"extract, Ray Data, {n} worker(s) x {cpus_per_worker} CPU" for n in workers}
    times: Dict[str, List[float]] = {key: [] for key in [single, *keys.values()]}
    stats: Dict[str, Dict[str, float]] = {}
    runs = itertools.count()  # a fresh output per run: a rerun into a finished folder would skip the work
    # Checked before minutes of timing (a bad count would otherwise fail the first Ray run).
    ray_settings = RaySettings.load(SECTION, {"num_workers": max(workers), "cpus_per_worker": cpus_per_worker}
                                    ) if keys else RaySettings()
    with tempfile.TemporaryDirectory(prefix="esco-bench-") as tmp:
        folder = Path(tmp)
        path = folder / "ads.jsonl"
        path.write_text("".join(json.dumps({jobads.ID_FIELD: f"bench-{i}", jobads.TEXT_FIELD: text}) + "\n"
                                for i, text in enumerate(ads)), encoding="utf-8")
        command = ["extract", str(model), str(path), "--batch-size", str(batch_size), "--output"]
        for _ in range(repeats):
            times[single].append(run_timed(command + [str(folder / f"{next(runs)}.jsonl")])[0])
            if not keys:  # Ray not installed: the single process alone
                continue
            with ray_session(ray_settings) as ray:
                address = ray.get_runtime_context().gcs_address
                for n, key in keys.items():
                    timeline = folder / f"timeline-{next(runs)}.jsonl"
                    seconds, start = run_timed(command + [
                        str(folder / f"ray-{timeline.stem}"), "--engine", "ray", "--num-workers", str(n),
                        "--cpus-per-worker", str(cpus_per_worker), "--address", address, "--timeline", str(timeline)])
                    times[key].append(seconds)
                    stats[key] = timeline_stats(timeline, start, start + seconds)
    out = {key: per_second(spread(runs_s), len(ads), "ads/s") for key, runs_s in times.items()}
    for key in keys.values():
        out[key]["x single process"] = out[key]["ads/s"] / out[single]["ads/s"]
        out[key].update(stats[key])
    return out


def run_timed(args: Sequence[str]) -> Tuple[float, float]:
    """Run ``python -m pipeline ARGS`` in a fresh process: (its seconds from start to exit, its start as
    ``time.time()``). A failed run raises with the end of what it printed."""
    start, started = time.time(), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"python -m pipeline {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, start
