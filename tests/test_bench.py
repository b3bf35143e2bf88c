"""`make bench`: every timing is measured on real ads and reported with its spread."""

from __future__ import annotations

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from pipeline.commands.cli import app
from pipeline.evaluation.bench import bench_ads, format_results, installed_extras, run_benchmarks

HAS_ORT = all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))
HAS_RAY = importlib.util.find_spec("ray") is not None


@pytest.mark.slow  # ~40 s, in `make test-all`; `make test` runs the matcher-only bench and the engine turns
def test_bench_times_every_stage_of_the_full_pipeline_on_real_ads(pipeline_dir, shared_path):
    jobads = [shared_path / "jobads" / "tech_and_general_jobs.jsonl.gz"]
    backend = "onnx-int8" if HAS_ORT else None
    results = run_benchmarks(pipeline_dir, jobads, n_sentences=40, n_ads=4, repeats=2, backend=backend)
    keys = ["matcher only", "raw encoder (limit)", "ranker only", "full pipeline"]
    keys += ["onnx-int8 encoder", "onnx-int8 full pipeline"] if HAS_ORT else []
    for key in keys:
        assert results[key]["n"] == 40 and results[key]["min"] <= results[key]["sentences/s"] <= results[key]["max"]
    assert results["full pipeline, whole ads"]["n"] == 4 and results["full pipeline, whole ads"]["ads/s"] > 0
    assert 0 < results["full pipeline"]["share of encoder limit"] < 2
    assert results["peak memory"]["MB"] > 100 and results["load"]["seconds"] > 0
    if HAS_ORT:  # each fast-path rate is compared with the float rate it replaces
        fast = results["onnx-int8 full pipeline, whole ads"]
        assert fast["speed-up vs full pipeline, whole ads"] == pytest.approx(
            fast["ads/s"] / results["full pipeline, whole ads"]["ads/s"])
        assert "onnx-int8 full pipeline" in format_results(results, pipeline_dir, 64, 2)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_RAY, reason='Ray is an optional extra: pip install ".[ray]"')
def test_bench_times_extract_in_one_process_and_on_ray_with_each_worker_count(matcher_dir, shared_path):
    from pipeline.commands.ray_engine import bench_engines

    ads = bench_ads([shared_path / "jobads" / "nhs_jobs_2020.jsonl.gz"], 12)
    results = bench_engines(matcher_dir, ads, (1, 2), batch_size=4, repeats=1)
    for key in ("extract, single process", "extract, Ray Data, 1 worker(s) x 1 CPU",
                "extract, Ray Data, 2 worker(s) x 1 CPU"):
        assert results[key]["n"] == 12 and results[key]["ads/s"] > 0
    ratio = results["extract, Ray Data, 2 worker(s) x 1 CPU"]["x single process"]
    assert ratio == pytest.approx(results["extract, Ray Data, 2 worker(s) x 1 CPU"]["ads/s"]
                                  / results["extract, single process"]["ads/s"])
    for key in ("extract, Ray Data, 1 worker(s) x 1 CPU", "extract, Ray Data, 2 worker(s) x 1 CPU"):
        timing = results[key]
        assert timing["start-up s"] > 0 and timing["tail s"] >= 0 and 0 < timing["actor busy share"] <= 1


def test_timeline_stats_split_a_run_into_start_up_busy_share_and_tail(tmp_path):
    from pipeline.commands.ray_engine import timeline_stats

    events = [{"actor": 1, "event": "load", "start": 100.0, "end": 104.0},
              {"actor": 1, "event": "batch", "start": 105.0, "end": 109.0, "ads": 8},
              {"actor": 1, "event": "batch", "start": 110.0, "end": 115.0, "ads": 8},
              {"actor": 2, "event": "batch", "start": 106.0, "end": 111.0, "ads": 8}]  # idle from 111 to 115
    path = tmp_path / "timeline.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    stats = timeline_stats(path, run_start=100.0, run_end=118.0)
    assert stats == pytest.approx({"start-up s": 5.0, "tail s": 3.0, "actor busy share": 14.0 / 20.0})


def test_engines_take_turns_and_the_single_process_runs_without_ray(monkeypatch):
    """Rounds of single, Ray 1, Ray 2, each a fresh `python -m pipeline extract` (a drift in speed falls on every
    row alike); Ray is down for the single process and joined by address for the others. The commands are logged,
    not run; the timing arithmetic is the real one."""
    from contextlib import contextmanager
    from types import SimpleNamespace

    from pipeline.commands import ray_engine

    calls, ray_up = [], []

    @contextmanager
    def fake_session(settings):
        ray_up.append(settings.num_workers)
        yield SimpleNamespace(get_runtime_context=lambda: SimpleNamespace(gcs_address="127.0.0.1:6390"))
        ray_up.pop()

    def fake_run(args):
        engine = f"ray {args[args.index('--num-workers') + 1]}" if "--engine" in args else "single"
        calls.append((engine, list(ray_up), args[args.index("--address") + 1] if "--address" in args else None))
        return (2.0 if engine == "single" else 4.0), 0.0

    monkeypatch.setattr(ray_engine, "run_timed", fake_run)
    monkeypatch.setattr(ray_engine, "ray_session", fake_session)
    monkeypatch.setattr(ray_engine, "timeline_stats", lambda path, start, end: {"tail s": end - start})
    results = ray_engine.bench_engines("model", ["an ad"] * 5, (1, 2), batch_size=4, repeats=3)
    ray_round = [("ray 1", [2], "127.0.0.1:6390"), ("ray 2", [2], "127.0.0.1:6390")]
    assert calls == [("single", [], None), *ray_round] * 3
    assert results["extract, single process"]["ads/s"] == 2.5 and all(r["n"] == 5 for r in results.values())
    two = results["extract, Ray Data, 2 worker(s) x 1 CPU"]
    assert two["x single process"] == 0.5 and two["tail s"] == 4.0


def test_bench_leaves_out_what_is_not_installed_and_says_so(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else object())
    backend, engines, notes = installed_extras("onnx-int8", [0, 2])
    assert engines == [] and notes[-1] == 'Ray engine not timed: Ray is not installed (pip install ".[ray]")'
    assert backend == ("onnx-int8" if HAS_ORT else None)


def test_bench_command_prints_the_table_for_a_matcher_only_pipeline(matcher_dir, shared_path):
    result = CliRunner().invoke(app, ["bench", str(matcher_dir), str(shared_path / "jobads" / "nhs_jobs_2020.jsonl.gz"),
                                      "--sentences", "30", "--ads", "3", "--repeats", "1", "--ray-workers", "0"])
    assert result.exit_code == 0, result.output
    assert "matcher only" in result.output and "raw encoder" not in result.output


def test_bench_only_engines_times_the_extract_command_alone(matcher_dir, shared_path):
    """Without Ray rows (``--ray-workers 0``) only the single process is left: a real ``python -m pipeline
    extract`` run, timed, and nothing of the pipeline benchmark."""
    result = CliRunner().invoke(app, ["bench", str(matcher_dir), str(shared_path / "jobads" / "nhs_jobs_2020.jsonl.gz"),
                                      "--ads", "3", "--repeats", "1", "--ray-workers", "0", "--only-engines"])
    assert result.exit_code == 0, result.output
    rows = [line.split()[:3] for line in result.output.splitlines()[1:] if line.strip()]
    assert rows == [["extract,", "single", "process"]] and "ads/s" in result.output
