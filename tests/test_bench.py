"""`make bench`: every timing is measured on real ads and reported with its spread."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
from typer.testing import CliRunner

from pipeline.commands.cli import app
from pipeline.commands.ray_engine import timeline_stats
from pipeline.commands.engine_bench import bench_engines
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
    assert results["full pipeline"]["decider on"] == 0.0  # the assembled pipeline's decider is uncalibrated
    assert results["peak memory"]["MB"] > 100 and results["load"]["seconds"] > 0
    cold = results["cold start"]  # a fresh process: import, load, first call, each timed
    assert cold["seconds"] == pytest.approx(cold["import spacy s"] + cold["spacy.load s"] + cold["first call s"])
    assert cold["import spacy s"] > 0 and cold["spacy.load s"] > 0 and cold["first call s"] > 0
    if HAS_ORT:  # each fast-path rate is compared with the float rate it replaces
        fast = results["onnx-int8 full pipeline, whole ads"]
        assert fast["speed-up vs full pipeline, whole ads"] == pytest.approx(
            fast["ads/s"] / results["full pipeline, whole ads"]["ads/s"])
        assert "onnx-int8 full pipeline" in format_results(results, pipeline_dir, 64, 2)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_RAY, reason='Ray is an optional extra: pip install ".[ray]"')
def test_bench_times_extract_in_one_process_and_on_ray_with_each_worker_count(matcher_dir, shared_path):
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
    events = [{"actor": 1, "event": "load", "start": 100.0, "end": 104.0},
              {"actor": 1, "event": "batch", "start": 105.0, "end": 109.0, "ads": 8},
              {"actor": 1, "event": "batch", "start": 110.0, "end": 115.0, "ads": 8},
              {"actor": 2, "event": "batch", "start": 106.0, "end": 111.0, "ads": 8}]  # idle from 111 to 115
    path = tmp_path / "timeline.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    stats = timeline_stats(path, run_start=100.0, run_end=118.0)
    assert stats == pytest.approx({"start-up s": 5.0, "tail s": 3.0, "actor busy share": 14.0 / 20.0})


def test_bench_leaves_out_what_is_not_installed_and_says_so(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else object())
    backend, engines, notes = installed_extras("onnx-int8", [0, 2])
    assert engines == [] and notes[-1] == 'Ray engine not timed: Ray is not installed (pip install ".[ray]")'
    assert backend == ("onnx-int8" if HAS_ORT else None)


@pytest.mark.heavy  # 4 s or more: make test, not make test-fast
def test_bench_command_prints_the_table_for_a_matcher_only_pipeline(matcher_dir, shared_path):
    result = CliRunner().invoke(app, ["bench", str(matcher_dir), str(shared_path / "jobads" / "nhs_jobs_2020.jsonl.gz"),
                                      "--sentences", "30", "--ads", "3", "--repeats", "1", "--ray-workers", "0"])
    assert result.exit_code == 0, result.output
    assert "matcher only" in result.output and "raw encoder" not in result.output
    assert re.search(r"cold start +seconds [\d.]+, import spacy s [\d.]+, spacy\.load s [\d.]+, first call s",
                     result.output)


@pytest.mark.heavy  # 4 s or more: make test, not make test-fast
def test_bench_only_engines_times_the_extract_command_alone(matcher_dir, shared_path):
    """Without Ray rows (``--ray-workers 0``) only the single process is left: a real ``python -m pipeline
    extract`` run, timed, and nothing of the pipeline benchmark."""
    result = CliRunner().invoke(app, ["bench", str(matcher_dir), str(shared_path / "jobads" / "nhs_jobs_2020.jsonl.gz"),
                                      "--ads", "3", "--repeats", "1", "--ray-workers", "0", "--only-engines"])
    assert result.exit_code == 0, result.output
    rows = [line.strip() for line in result.output.splitlines()[1:] if line.strip()]
    assert len(rows) == 1 and rows[0].startswith("extract, single process ")
    # One run of 3 ads: its rate is the median and both ends of the spread.
    row = re.fullmatch(r"extract, single process +ads/s ([\d.,]+), n 3\.0, spread ([\d.,]+)–([\d.,]+)", rows[0])
    assert row and row[1] == row[2] == row[3], rows[0]
