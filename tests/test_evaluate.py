"""Benchmark ranking metrics, span metrics and the `evaluate` command."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipeline.commands.cli import app
from pipeline.errors import EscoDataError
from pipeline.evaluation.benchmark import (
    evaluate_benchmark,
    ranking_metrics,
    read_benchmark,
    recall_by_kind,
    reciprocal_rank,
    rp_at_k,
)
from pipeline.evaluation.report import detect_file_kind, evaluate_files, format_table
from pipeline.evaluation.spans import evaluate_spans, merge_bio, predicted_bio, span_scores, spans_to_bio

BUDGETS = "You will manage budgets and write Python code."
TEAM = "Experience leading a team"
PADDED = "  Python (computer programming)  "  # gold labels are trimmed
ROWS = [  # (sentence, span, label)
    (BUDGETS, "manage budgets", "manage budgets"),
    (BUDGETS, "Python", PADDED),
    (BUDGETS, "code", "LABEL NOT PRESENT"),
    ("Nice office with a view.", "view", "UNDERSPECIFIED"),
    (TEAM, "leading a team", "lead a team"),
    (TEAM, "leading", "not a real skill label"),
]
SPAN_FORMAT = "sentence,span,sub_span,label\n" + "".join(f"{s},{span},,{label}\n" for s, span, label in ROWS)
SENTENCE_FORMAT = "sentence,label\n" + "".join(f"{s},{label}\n" for s, _, label in ROWS)

# Gold (skill, knowledge) layers for three sentences the matcher finds
# (manage budgets)(Python) / (communication)(computer science) / (Managed budgets)(SQL).
SPAN_LINES = [
    {"tokens": ["You", "will", "manage", "budgets", "and", "write", "Python", "code", "."],
     "tags_skill": ["O", "O", "B", "I", "O", "O", "O", "O", "O"],
     "tags_knowledge": ["O", "O", "O", "O", "O", "O", "B", "O", "O"]},
    {"tokens": ["Strong", "communication", "skills", "and", "a", "degree", "in", "computer", "science", "."],
     "tags_skill": ["O", "B", "I", "O", "O", "O", "O", "O", "O", "O"],
     "tags_knowledge": ["O", "O", "O", "O", "O", "O", "O", "B", "I", "O"]},
    {"tokens": ["Managed", "budgets", "carefully", "in", "SQL", "."],
     "tags_skill": ["B", "I", "I", "O", "O", "O"],
     "tags_knowledge": ["O", "O", "O", "O", "O", "O"]},
]
TECH_VALIDATION = "benchmark/tech_validation_annotations.csv"


@pytest.fixture
def span_file(tmp_path):
    path = tmp_path / "spans.json"
    path.write_text("".join(json.dumps(line) + "\n" for line in SPAN_LINES))
    return path


# ------------------------------------------------------------------------------------------ ranking metrics
def test_rp_at_k_divides_by_gold_size_when_gold_is_smaller_than_k():
    ranking = ["a", "x", "b", "y", "z", "c"]
    assert rp_at_k(ranking, {"a", "b"}, 5) == 1.0
    assert rp_at_k(ranking, {"a", "b", "c"}, 5) == pytest.approx(2 / 3)
    assert rp_at_k(ranking, {"a", "b", "c"}, 10) == 1.0


def test_rp_at_k_divides_by_k_when_gold_is_larger():
    gold = {"a", "b", "c", "d", "e", "f", "g"}
    ranking = ["a", "x", "b", "y", "c", "d", "e", "z", "w", "v", "f"]
    assert rp_at_k(ranking, gold, 5) == pytest.approx(3 / 5)
    assert rp_at_k(ranking, gold, 10) == pytest.approx(5 / 7)


def test_rp_at_k_counts_a_repeated_prediction_once():
    assert rp_at_k(["a", "a", "a"], {"a", "b"}, 5) == 0.5


def test_rp_at_k_refuses_an_empty_gold_set():
    with pytest.raises(ValueError, match="empty gold set"):
        rp_at_k(["a"], set(), 5)


def test_reciprocal_rank_of_first_gold_hit_and_zero_without_hit():
    assert reciprocal_rank(["x", "y", "b", "a"], {"a", "b"}) == pytest.approx(1 / 3)
    assert reciprocal_rank(["x", "y"], {"a"}) == 0.0
    assert reciprocal_rank([], {"a"}) == 0.0


def test_ranking_metrics_average_over_sentences_with_gold_only():
    metrics = ranking_metrics([["a", "b"], ["x", "c"], ["z"]], [{"a"}, {"c", "d"}, set()])
    assert metrics["rp@5"] == pytest.approx((1.0 + 0.5) / 2)
    assert metrics["mrr"] == pytest.approx((1.0 + 0.5) / 2)
    assert metrics["coverage"] == 1.0
    assert metrics["n_scored"] == 2


# ------------------------------------------------------------------------------------------ benchmark files
@pytest.mark.parametrize("content", [SPAN_FORMAT, SENTENCE_FORMAT], ids=["span-format", "sentence-format"])
def test_read_benchmark_reads_both_formats(tmp_path, content):
    path = tmp_path / "bench.csv"
    path.write_text(content)
    benchmark = read_benchmark(path)
    assert detect_file_kind(path) == "benchmark"
    assert benchmark.gold == {
        BUDGETS: {"manage budgets", "Python (computer programming)"},
        "Nice office with a view.": set(),
        TEAM: {"lead a team", "not a real skill label"},
    }
    assert benchmark.n_ignored_rows == 2
    assert [sentence for sentence, _ in benchmark.scored] == [BUDGETS, TEAM]


@pytest.mark.parametrize("content", [SPAN_FORMAT, SENTENCE_FORMAT], ids=["span-format", "sentence-format"])
def test_evaluate_benchmark_scores_matcher_and_reports_unknown_labels(tmp_path, matcher_nlp, content):
    path = tmp_path / "bench.csv"
    path.write_text(content)
    result = evaluate_benchmark(matcher_nlp, path)
    # BUDGETS: both gold skills found (RP 1, RR 1); TEAM: 'lead a team' first, the unknown label never (RP 1/2).
    assert result.metrics["rp@5"] == pytest.approx(0.75)
    assert result.metrics["rp@10"] == pytest.approx(0.75)
    assert result.metrics["mrr"] == pytest.approx(1.0)
    assert result.metrics["n_scored"] == 2
    assert result.metrics["n_sentences"] == 3
    assert result.metrics["n_unknown_labels"] == 1
    assert result.unknown_labels == {"not a real skill label": 1}


def test_evaluate_files_warns_with_unknown_label_examples(tmp_path, matcher_nlp):
    path = tmp_path / "bench.csv"
    path.write_text(SENTENCE_FORMAT)
    with pytest.warns(UserWarning, match="1 gold label.*'not a real skill label'"):
        metrics = evaluate_files(matcher_nlp, [path])
    assert metrics[str(path)]["n_unknown_labels"] == 1


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("ads.csv", "id,text\n1,hello\n", "neither a benchmark CSV"),
        ("ads.jsonl", '{"id": 1, "description": "hello"}\n', "not a span file"),
        ("empty.csv", "\n\n", "is empty"),
        ("binary.bin", b"\xff\xfe\x00\x01", "not UTF-8"),
    ],
)
def test_detect_file_kind_names_a_file_of_neither_kind(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(EscoDataError, match=message) as err:
        detect_file_kind(path)
    assert str(path) in str(err.value)


def test_detect_file_kind_missing_file(tmp_path):
    with pytest.raises(EscoDataError, match="not found"):
        detect_file_kind(tmp_path / "nope.csv")


def test_detect_file_kind_reads_span_jsonl_whatever_its_name(tmp_path, span_file):
    renamed = span_file.rename(tmp_path / "spans.data")
    assert detect_file_kind(renamed) == "spans"


# ------------------------------------------------------------------------------------------ spans
def test_spans_to_bio_keeps_the_longest_of_overlapping_spans():
    assert spans_to_bio([(1, 3), (2, 5), (6, 7)], 8) == [
        "O", "O", "B-SKILL", "I-SKILL", "I-SKILL", "O", "B-SKILL", "O"
    ]


def test_predicted_bio_of_matcher_spans(matcher_nlp):
    from spacy.tokens import Doc

    doc = matcher_nlp(Doc(matcher_nlp.vocab, words=SPAN_LINES[0]["tokens"]))
    assert predicted_bio(doc) == ["O", "O", "B-SKILL", "I-SKILL", "O", "O", "B-SKILL", "O", "O"]


def test_merge_bio_joins_overlapping_spans_and_keeps_adjacent_ones_apart():
    skill = ["B-SKILL", "I-SKILL", "O", "O", "B-SKILL", "O"]
    knowledge = ["O", "B-SKILL", "I-SKILL", "O", "O", "B-SKILL"]
    assert merge_bio(skill, knowledge) == ["B-SKILL", "I-SKILL", "I-SKILL", "O", "B-SKILL", "B-SKILL"]


def test_span_scores_strict_and_lenient():
    gold = [["B-SKILL", "I-SKILL", "I-SKILL", "O", "B-SKILL"]]
    pred = [["B-SKILL", "I-SKILL", "O", "O", "B-SKILL"]]
    scores = span_scores(gold, pred)
    assert scores["precision"] == 0.5 and scores["recall"] == 0.5 and scores["f1"] == 0.5
    assert scores["lenient_precision"] == 1.0 and scores["lenient_recall"] == 1.0
    assert scores["n_gold_spans"] == 2


def test_evaluate_spans_per_layer_and_union(matcher_nlp, span_file):
    metrics = evaluate_spans(matcher_nlp, span_file)
    # Predicted: (manage budgets)(Python) / (communication)(computer science) / (Managed budgets)(SQL) = 6 spans.
    assert metrics["n_predicted_spans"] == 6
    assert metrics["n_skill_spans"] == 3 and metrics["n_knowledge_spans"] == 2 and metrics["n_union_spans"] == 5
    assert metrics["skill_precision"] == pytest.approx(1 / 6)
    assert metrics["skill_recall"] == pytest.approx(1 / 3)
    assert metrics["skill_f1"] == pytest.approx(2 / 9)
    assert metrics["skill_lenient_precision"] == pytest.approx(3 / 6)
    assert metrics["skill_lenient_recall"] == 1.0
    assert metrics["knowledge_precision"] == pytest.approx(2 / 6)
    assert metrics["knowledge_recall"] == 1.0
    assert metrics["union_precision"] == pytest.approx(3 / 6)
    assert metrics["union_recall"] == pytest.approx(3 / 5)
    assert metrics["union_f1"] == pytest.approx(6 / 11)
    assert metrics["union_lenient_f1"] == pytest.approx(10 / 11)


def test_span_file_with_one_layer_has_no_union(matcher_nlp, tmp_path):
    path = tmp_path / "green.json"
    path.write_text(json.dumps({"tokens": SPAN_LINES[0]["tokens"], "tags_skill": SPAN_LINES[0]["tags_skill"]}))
    metrics = evaluate_spans(matcher_nlp, path)
    assert metrics["skill_precision"] == 0.5 and metrics["skill_recall"] == 1.0
    assert not any(key.startswith(("knowledge", "union")) for key in metrics)


def test_span_file_with_bad_tags_names_file_and_line(matcher_nlp, tmp_path):
    path = tmp_path / "bad.json"
    good = json.dumps(SPAN_LINES[0])
    bad = json.dumps({**SPAN_LINES[1], "tags_skill": ["X"] * len(SPAN_LINES[1]["tokens"])})
    path.write_text(f"{good}\n{bad}\n")
    with pytest.raises(EscoDataError, match=r"bad\.json' line 2: tags_skill holds 'X'"):
        evaluate_spans(matcher_nlp, path)


# ------------------------------------------------------------------------------------------ end to end
def test_matcher_on_tech_validation(matcher_nlp, shared_path, uri_of):
    path = shared_path / TECH_VALIDATION
    metrics = evaluate_files(matcher_nlp, [path])[str(path)]
    for key in ("rp@5", "rp@10", "mrr", "coverage", "recall@all"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["n_scored"] == 75
    assert metrics["n_unknown_labels"] == 0
    # A plain regex over preferred + alternative labels reaches RP@5 = 30.0 here; the matcher must not be worse.
    assert metrics["rp@5"] >= 0.299
    # The normalizer links the inflected "leading a team" to the gold skill, ranked first.
    assert read_benchmark(path).gold[TEAM] == {"lead a team"}
    assert matcher_nlp(TEAM)._.esco_skills[0].uri == uri_of("lead a team")
    # The matcher finds only what is written: it recalls literal pairs, never implied ones.
    assert metrics["n_literal_pairs"] > 0 and metrics["n_implied_pairs"] > metrics["n_literal_pairs"]
    assert metrics["recall@5/literal"] > 0.5 and metrics["recall@5/implied"] < 0.1


def test_evaluate_pools_the_dev_and_validation_files_sentence_by_sentence(matcher_nlp, shared_path):
    files = [shared_path / TECH_VALIDATION, shared_path / "benchmark/techwolf_dev_annotations.csv",
             shared_path / "benchmark/house_dev_annotations.csv"]
    metrics = evaluate_files(matcher_nlp, files)
    tech, techwolf, house = (metrics[str(path)] for path in files)
    assert list(metrics)[3:] == ["pooled_dev", "pooled_validation", "pooled"]  # after the files, in this order
    assert metrics["pooled_validation"] == tech  # a pool of one file is that file
    dev, pooled = metrics["pooled_dev"], metrics["pooled"]
    assert techwolf["n_scored"] == 148 and house["n_scored"] == 133 and dev["n_scored"] == 148 + 133
    assert pooled["n_scored"] == 75 + 148 + 133 and pooled["n_sentences"] == sum(m["n_sentences"] for m in (
        tech, techwolf, house))
    for key in ("rp@5", "rp@10", "mrr"):  # every sentence weighs the same: the files weighted by their sizes
        assert dev[key] == pytest.approx((148 * techwolf[key] + 133 * house[key]) / 281)
    literal = pooled["n_literal_pairs"]
    assert literal == sum(m["n_literal_pairs"] for m in (tech, techwolf, house))
    assert pooled["recall@5/literal"] == pytest.approx(
        sum(m["recall@5/literal"] * m["n_literal_pairs"] for m in (tech, techwolf, house)) / literal)
    assert "pooled_dev" in format_table(metrics) and evaluate_files(matcher_nlp, files[:1]).keys() == {str(files[0])}


def test_recall_by_kind_splits_written_and_implied_gold(taxonomy):
    sentences = ["Experience with PostgreSQL and Java is essential.", "You will keep the ward's patient files in order."]
    golds = [{"PostgreSQL", "JavaScript"}, {"patient record storage"}]
    rankings = [["PostgreSQL", "JavaScript"], ["manage budgets", "patient record storage"]]
    metrics = recall_by_kind(sentences, rankings, golds, taxonomy, k=1)
    # PostgreSQL is written; "Java" is not JavaScript; patient record storage is implied.
    assert metrics["n_literal_pairs"] == 1 and metrics["n_implied_pairs"] == 2
    assert metrics["recall@1/literal"] == 1.0 and metrics["recall@1/implied"] == 0.0
    assert recall_by_kind(sentences, rankings, golds, taxonomy, k=2)["recall@2/implied"] == 1.0


def test_format_table_shows_each_file_and_rates_in_percent():
    metrics = {"a/tech.csv": {"rp@5": 0.3, "n_scored": 75.0}, "x/dev.json": {"skill_f1": 0.125}}
    table = format_table(metrics)
    assert "tech.csv" in table and "dev.json" in table
    assert "30.0" in table and "12.5" in table and " 75" in table


def test_cli_evaluate_prints_table_and_writes_json(matcher_dir, tmp_path, span_file):
    bench = tmp_path / "bench.csv"
    bench.write_text(SPAN_FORMAT)
    out = tmp_path / "metrics" / "metrics.json"
    with pytest.warns(UserWarning, match="not a real skill label"):
        result = CliRunner().invoke(app, ["evaluate", str(matcher_dir), str(bench), str(span_file), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "rp@5" in result.output and "union_f1" in result.output
    written = json.loads(out.read_text())
    assert written[str(bench)]["rp@5"] == pytest.approx(0.75)
    assert written[str(span_file)]["union_f1"] == pytest.approx(6 / 11)


def test_cli_evaluate_fails_cleanly_on_an_unknown_file_kind(matcher_dir, tmp_path):
    path = tmp_path / "ads.csv"
    path.write_text("id,text\n1,hello\n")
    result = CliRunner().invoke(app, ["evaluate", str(matcher_dir), str(path)])
    assert result.exit_code == 2
    assert "neither a benchmark CSV" in result.output and "ads.csv" in result.output
