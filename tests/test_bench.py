"""`make bench`: every timing is measured on real ads and reported with its spread."""

from __future__ import annotations

from typer.testing import CliRunner

from pipeline.commands.cli import app
from pipeline.evaluation.bench import run_benchmarks


def test_bench_times_every_stage_of_the_full_pipeline_on_real_ads(pipeline_dir, shared_path):
    jobads = [shared_path / "jobads" / "tech_and_general_jobs.jsonl.gz"]
    results = run_benchmarks(pipeline_dir, jobads, n_sentences=40, n_ads=4, repeats=2, quantize=True)
    for key in ("matcher only", "raw encoder (limit)", "ranker only", "full pipeline", "int8 full pipeline"):
        assert results[key]["n"] == 40 and results[key]["min"] <= results[key]["sentences/s"] <= results[key]["max"]
    assert results["full pipeline, whole ads"]["n"] == 4 and results["full pipeline, whole ads"]["ads/s"] > 0
    assert 0 < results["full pipeline"]["share of encoder limit"] < 2
    assert results["peak memory"]["MB"] > 100 and results["load"]["seconds"] > 0


def test_bench_command_prints_the_table_for_a_matcher_only_pipeline(matcher_dir, shared_path):
    result = CliRunner().invoke(app, ["bench", str(matcher_dir), str(shared_path / "jobads" / "nhs_jobs_2020.jsonl.gz"),
                                      "--sentences", "30", "--ads", "3", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    assert "matcher only" in result.output and "raw encoder" not in result.output
