"""Validation scores keyed by a unique name per file; the ablation returns its table and only the CLI prints it."""

import json

import pytest
from typer.testing import CliRunner

import pipeline.evaluation.benchmark as benchmark
import pipeline.training.ablation as ablation
import pipeline.training.trainer as trainer
from pipeline.commands.cli import app
from pipeline.evaluation.benchmark import BenchmarkResult, RankedSentences, ranking_metrics
from pipeline.evaluation.validation import SELECTION_METRIC, benchmark_pools, validation_names, validation_scores

from conftest import ROOT


SHIPPED = ("tech_validation", "house_validation", "tech_dev", "house_dev", "techwolf_dev")


def test_shipped_benchmark_files_keep_their_short_names(shared_path):
    files = [shared_path / "benchmark" / f"{name}_annotations.csv" for name in SHIPPED]
    assert list(validation_names(files).values()) == ["tech", "house", "tech_dev", "house_dev", "techwolf_dev"]


def test_files_are_pooled_by_the_group_their_name_says(shared_path):
    files = [str(shared_path / "benchmark" / f"{name}_annotations.csv") for name in SHIPPED] + ["x/extra.csv"]
    pools = benchmark_pools(files)
    assert list(pools) == ["pooled_dev", "pooled_validation", "pooled"]  # the order evaluate prints them in
    assert pools["pooled_dev"] == files[2:5] and pools["pooled_validation"] == files[:2]
    assert pools["pooled"] == files  # a file of neither group counts in the pool of all only
    assert benchmark_pools([]) == {}


def test_files_with_the_same_stem_get_distinct_names(tmp_path):
    files = [tmp_path / "a" / "dev.csv", tmp_path / "b" / "dev.csv", tmp_path / "x" / "a" / "dev_2.csv",
             tmp_path / "tech_validation_annotations.csv", tmp_path / "tech.csv"]
    names = validation_names(files)
    assert len(set(names.values())) == len(files)
    assert names[str(files[0])] == "a/dev" and names[str(files[1])] == "b/dev" and names[str(files[2])] == "dev_2"
    assert validation_names([files[0], files[0]]) == {str(files[0]): "dev"}  # one file given twice: one name


@pytest.fixture
def fake_benchmark(monkeypatch):
    """evaluate_benchmark without a pipeline: each file's sentences rank their one gold skill at the ranks its
    folder lists (None: not ranked). a: RP@5 0.2 on 5 sentences; b: RP@5 0.6, RP@10 0.7 on 10."""
    ranks = {"a": [1, None, None, None, None], "b": [1, 1, 1, 1, 1, 1, 7, None, None, None]}

    def evaluate(nlp, path):
        folder = path.split("/")[-2]
        rankings = [[f"other {i}" for i in range(1, rank)] + ["gold"] if rank else [] for rank in ranks[folder]]
        ranked = RankedSentences([f"s{i}" for i in range(len(rankings))], rankings, [{"gold"}] * len(rankings))
        return BenchmarkResult(ranking_metrics(ranked.rankings, ranked.golds), ranked=ranked)

    monkeypatch.setattr(benchmark, "evaluate_benchmark", evaluate)
    return ranks


def test_validation_scores_keep_every_file_and_pool_their_sentences(tmp_path, fake_benchmark):
    files = [str(tmp_path / "a" / "dev.csv"), str(tmp_path / "b" / "dev.csv")]
    out = validation_scores(None, files)
    assert out["a/dev/rp@5"] == 0.2 and out["b/dev/rp@5"] == 0.6 and out["b/dev/rp@10"] == pytest.approx(0.7)
    assert out["b/dev/mrr"] == pytest.approx((6 + 1 / 7) / 10)
    # Pooled: every sentence weighs the same, so the 10-sentence file counts twice as much as the 5-sentence one.
    assert out[SELECTION_METRIC] == out["pooled/rp@5"] == pytest.approx(7 / 15)
    assert out["pooled/mrr"] == pytest.approx((1 + 6 + 1 / 7) / 15)
    assert not any(key.startswith(("pooled_dev", "pooled_validation")) for key in out)  # neither group's name


def test_ablation_returns_the_table_and_does_not_print(tmp_path, monkeypatch, capsys, fake_benchmark):
    files = [str(tmp_path / "a" / "dev.csv"), str(tmp_path / "b" / "dev.csv")]
    monkeypatch.setattr(ablation, "untrained_scores", lambda esco, validation: validation_scores(None, validation))

    def fake_train(config, corpus, output, *, esco, validation, overrides):
        return {"best_metrics": validation_scores(None, validation), "steps": 1}

    monkeypatch.setattr(trainer, "train", fake_train)
    table = ablation.run_ablation(ROOT / "configs", tmp_path, tmp_path, tmp_path / "out", validation=files,
                                  names=("in_batch", "random"))
    assert capsys.readouterr().out == ""
    assert "a/dev RP@5" in table and "b/dev RP@5" in table and "pooled RP@5" in table
    assert "| random | 20.0 / 20.0 / 20.0 | 60.0 / 70.0 / 61.4 | 46.7 / 53.3 / 47.6 |" in table
    assert (tmp_path / "out" / "ablation.md").read_text().strip() == table
    assert set(json.loads((tmp_path / "out" / "ablation.json").read_text())) == {"untrained", "in_batch", "random"}


def test_ablation_command_prints_the_table(monkeypatch, tmp_path):
    monkeypatch.setattr(ablation, "run_ablation", lambda *args, **kwargs: "| the table |")
    result = CliRunner().invoke(app, ["ablation", str(ROOT / "configs"), "--corpus", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "| the table |" in result.output
