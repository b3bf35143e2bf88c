"""Paired comparisons: the bootstrap over sentences on vectors whose answer is known, and the `compare` command
on two real pipelines (the matcher with and without ESCO's alternative labels) over real benchmark files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.commands.cli import app
from pipeline.errors import ConfigError
from pipeline.evaluation.benchmark import evaluate_benchmark, sentence_metric
from pipeline.evaluation.comparison import paired_bootstrap

TECH = "benchmark/tech_validation_annotations.csv"
TECHWOLF_DEV = "benchmark/techwolf_dev_annotations.csv"  # sentence-level (`sentence,label`)


# ------------------------------------------------------------------------------------------ the bootstrap
def test_identical_sides_differ_by_nothing():
    a = np.random.default_rng(1).random((3, 200))
    result = paired_bootstrap(a, a.copy(), resamples=500)
    assert result.mean_diff == result.low == result.high == 0.0 and result.p_b_greater == 0.0


def test_sides_of_the_same_distribution_get_an_interval_around_zero():
    rng = np.random.default_rng(2)
    a, b = rng.binomial(1, 0.5, (1, 400)), rng.binomial(1, 0.5, (1, 400))
    result = paired_bootstrap(a, b, resamples=4000)
    assert result.low < 0 < result.high
    assert result.low < result.mean_diff < result.high
    assert 0.05 < result.p_b_greater < 0.95


def test_a_constant_shift_is_found_exactly():
    a = np.random.default_rng(3).random((2, 150))
    result = paired_bootstrap(a, a + 0.1, resamples=1000)
    assert result.mean_diff == pytest.approx(0.1)
    assert result.low == pytest.approx(0.1) and result.high == pytest.approx(0.1)
    assert result.p_b_greater == 1.0


def test_the_interval_has_the_width_of_the_mean_difference_s_standard_error():
    rng = np.random.default_rng(4)
    a = rng.normal(0.0, 1.0, (1, 900))
    b = a + rng.normal(0.05, 0.5, (1, 900))  # paired: what the sentences share drops out
    result = paired_bootstrap(a, b, resamples=4000, seed=7)
    diff = (b - a)[0]
    se = diff.std(ddof=1) / np.sqrt(diff.size)
    assert (result.high - result.low) / 2 == pytest.approx(1.96 * se, rel=0.1)
    assert result.mean_diff == pytest.approx(diff.mean())


def test_each_side_is_averaged_over_its_seeds_first():
    rng = np.random.default_rng(5)
    a, b = rng.random((3, 120)), rng.random((2, 120))
    averaged = paired_bootstrap(a.mean(axis=0, keepdims=True), b.mean(axis=0, keepdims=True), resamples=800)
    assert paired_bootstrap(a, b, resamples=800) == averaged
    # Two seeds of A at 0 and 1 on every sentence against one seed of B at 0.5: no difference at all.
    two = np.vstack([np.zeros(50), np.ones(50)])
    assert paired_bootstrap(two, np.full((1, 50), 0.5), resamples=100).high == 0.0


def test_sides_must_score_the_same_sentences():
    with pytest.raises(ValueError, match="different sentences: 3 against 4"):
        paired_bootstrap(np.zeros((1, 3)), np.zeros((1, 4)))


def test_sentence_metric_names():
    assert sentence_metric("rp@5")(["a", "x"], {"a", "b"}) == 0.5
    assert sentence_metric("mrr")(["x", "a"], {"a"}) == 0.5
    with pytest.raises(ValueError, match="unknown ranking metric 'rp@0'"):
        sentence_metric("rp@0")


# ------------------------------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def preferred_only_dir(tmp_path_factory, esco_path):
    """The matcher-only pipeline with another label policy: preferred labels only, no alternative labels."""
    from pipeline.components.assembly import base_config, build_pipeline

    config = base_config(with_ranker=False)
    config["components"]["esco_skill_matcher"]["label_policy"]["use_alt_labels"] = False
    out = tmp_path_factory.mktemp("preferred_only")
    build_pipeline(config, esco_path).to_disk(out)
    return out


@pytest.mark.heavy  # 4 s or more: make test, not make test-fast
def test_compare_prints_each_file_and_pool_and_writes_every_number(matcher_dir, matcher_nlp, preferred_only_dir,
                                                                    shared_path, tmp_path):
    files = [shared_path / TECH, shared_path / TECHWOLF_DEV]
    out = tmp_path / "cmp" / "metrics.json"
    args = ["compare", *map(str, files), "--a", str(preferred_only_dir), "--b", str(matcher_dir),
            "--b", str(matcher_dir), "--resamples", "2000", "--output", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert {"tech", "techwolf_dev", "pooled_dev", "pooled_validation", "pooled"} <= set(rows)
    written = json.loads(out.read_text())
    assert written["metric"] == "rp@5" and written["b"] == [str(matcher_dir)] * 2
    results = written["results"]
    assert list(results) == ["tech", "techwolf_dev", "pooled_dev", "pooled_validation", "pooled"]
    tech, techwolf, pooled = results["tech"], results["techwolf_dev"], results["pooled"]
    # Each side's mean is the file's RP@5 as `evaluate` computes it; B's two "seeds" are one pipeline: sd 0.
    expected = evaluate_benchmark(matcher_nlp, files[0]).metrics
    assert tech["n_sentences"] == expected["n_scored"] == 75 and techwolf["n_sentences"] == 148
    assert tech["b"]["mean"] == pytest.approx(expected["rp@5"]) and tech["b"]["sd"] == 0.0
    assert tech["a"]["sd"] is None and tech["a"]["per_seed"] == [tech["a"]["mean"]]  # one seed: no sd
    assert pooled["n_sentences"] == 75 + 148
    assert pooled["b"]["mean"] == pytest.approx((75 * tech["b"]["mean"] + 148 * techwolf["b"]["mean"]) / 223)
    assert results["pooled_dev"] == techwolf and results["pooled_validation"] == tech  # a pool of one file
    for row in results.values():
        assert row["mean_diff"] == pytest.approx(row["b"]["mean"] - row["a"]["mean"])
        assert row["low"] <= row["mean_diff"] <= row["high"]
    # Pooled, every sentence weighs the same: the difference is the files' differences weighted by their sizes.
    assert pooled["mean_diff"] == pytest.approx((75 * tech["mean_diff"] + 148 * techwolf["mean_diff"]) / 223)
    assert f"{100 * tech['a']['mean']:.1f}" in rows["tech"] and f"{100 * tech['b']['mean']:.1f} ± 0.0" in rows["tech"]
    assert f"[{100 * tech['low']:+.1f}, {100 * tech['high']:+.1f}]" in rows["tech"]


def test_compare_refuses_an_unknown_metric_before_loading_anything(shared_path, tmp_path):
    result = CliRunner().invoke(app, ["compare", str(shared_path / TECH), "--a", str(tmp_path / "nowhere"),
                                      "--b", str(tmp_path / "nowhere"), "--metric", "f1"])
    assert result.exit_code == 2 and "unknown ranking metric 'f1'" in result.output


@pytest.mark.heavy
def test_compare_sets_each_side_s_config_so_one_model_compares_two_settings(pipeline_dir, pipeline_nlp, shared_path,
                                                                            tmp_path):
    """The same pipeline on both sides, B with the literal matches unfused (explicit_weight 0): B's numbers are
    what `evaluate` gives under that override, A's the pipeline's own, and the JSON records both sides' settings."""
    from pipeline.components.ranker import load_overridden

    tech = shared_path / TECH
    out = tmp_path / "cmp.json"
    override = "components.esco_skill_ranker.explicit_weight=0"
    result = CliRunner().invoke(app, ["compare", str(tech), "--a", str(pipeline_dir), "--b", str(pipeline_dir),
                                      "--set-b", override, "--resamples", "500", "--output", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert written["set_a"] == [] and written["set_b"] == [override]
    row = written["results"]["tech"]
    unfused, rebuilt = load_overridden(pipeline_dir, {"components.esco_skill_ranker.explicit_weight": 0})
    assert not rebuilt and unfused.get_pipe("esco_skill_ranker").settings.explicit_weight == 0.0
    with pytest.raises(ConfigError, match="when a pipeline is loaded"):  # a loaded pipeline cannot take overrides
        load_overridden(pipeline_nlp, {"components.esco_skill_ranker.explicit_weight": 0})
    assert row["a"]["mean"] == pytest.approx(evaluate_benchmark(pipeline_nlp, tech).metrics["rp@5"])
    assert row["b"]["mean"] == pytest.approx(evaluate_benchmark(unfused, tech).metrics["rp@5"])
    assert row["b"]["mean"] != row["a"]["mean"]  # literal matches no longer placed first: another ranking
    bad = CliRunner().invoke(app, ["compare", str(tech), "--a", str(pipeline_dir), "--b", str(pipeline_dir),
                                   "--set-b", "explicit_weight=0"])
    assert bad.exit_code != 0 and "section.key=value" in bad.output
