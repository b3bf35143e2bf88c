"""Validation scores keyed by a unique name per file; the ablation returns its table and only the CLI prints it."""

import json

import pytest
from typer.testing import CliRunner

import pipeline.evaluation.benchmark as benchmark
import pipeline.training.ablation as ablation
import pipeline.training.trainer as trainer
from pipeline.commands.cli import app
from pipeline.evaluation.benchmark import BenchmarkResult
from pipeline.evaluation.validation import validation_names, validation_scores

from conftest import ROOT


def test_shipped_benchmark_files_keep_their_short_names(shared_path):
    files = [shared_path / "benchmark" / "tech_validation_annotations.csv",
             shared_path / "benchmark" / "house_validation_annotations.csv"]
    assert list(validation_names(files).values()) == ["tech", "house"]


def test_files_with_the_same_stem_get_distinct_names(tmp_path):
    files = [tmp_path / "a" / "dev.csv", tmp_path / "b" / "dev.csv", tmp_path / "x" / "a" / "dev_2.csv",
             tmp_path / "tech_validation_annotations.csv", tmp_path / "tech.csv"]
    names = validation_names(files)
    assert len(set(names.values())) == len(files)
    assert names[str(files[0])] == "a/dev" and names[str(files[1])] == "b/dev" and names[str(files[2])] == "dev_2"
    assert validation_names([files[0], files[0]]) == {str(files[0]): "dev"}  # one file given twice: one name


@pytest.fixture
def fake_benchmark(monkeypatch):
    """evaluate_benchmark that scores each file by its folder (a → 0.2, b → 0.6), without a pipeline."""
    scores = {"a": 0.2, "b": 0.6}

    def evaluate(nlp, path):
        value = scores[path.split("/")[-2]]
        return BenchmarkResult({"rp@5": value, "rp@10": value + 0.1, "mrr": value + 0.2, "n_sentences": 3.0})

    monkeypatch.setattr(benchmark, "evaluate_benchmark", evaluate)
    return scores


def test_validation_scores_keep_every_file(tmp_path, fake_benchmark):
    files = [str(tmp_path / "a" / "dev.csv"), str(tmp_path / "b" / "dev.csv")]
    out = validation_scores(None, files)
    assert out["a/dev/rp@5"] == 0.2 and out["b/dev/rp@5"] == 0.6 and out["b/dev/mrr"] == pytest.approx(0.8)
    assert out["rp@5"] == pytest.approx(0.4)  # the mean over both files, not the last one twice


def test_ablation_returns_the_table_and_does_not_print(tmp_path, monkeypatch, capsys, fake_benchmark):
    files = [str(tmp_path / "a" / "dev.csv"), str(tmp_path / "b" / "dev.csv")]
    monkeypatch.setattr(ablation, "untrained_scores", lambda esco, validation: validation_scores(None, validation))

    def fake_train(config, corpus, output, *, esco, validation, overrides):
        return {"best_metrics": validation_scores(None, validation), "steps": 1}

    monkeypatch.setattr(trainer, "train", fake_train)
    table = ablation.run_ablation(ROOT / "configs", tmp_path, tmp_path, tmp_path / "out", validation=files,
                                  names=("in_batch", "random"))
    assert capsys.readouterr().out == ""
    assert "a/dev RP@5" in table and "b/dev RP@5" in table
    assert "| random | 20.0 / 30.0 / 40.0 | 60.0 / 70.0 / 80.0 |" in table
    assert (tmp_path / "out" / "ablation.md").read_text().strip() == table
    assert set(json.loads((tmp_path / "out" / "ablation.json").read_text())) == {"untrained", "in_batch", "random"}


def test_ablation_command_prints_the_table(monkeypatch, tmp_path):
    monkeypatch.setattr(ablation, "run_ablation", lambda *args, **kwargs: "| the table |")
    result = CliRunner().invoke(app, ["ablation", str(ROOT / "configs"), "--corpus", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "| the table |" in result.output
