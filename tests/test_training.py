"""A tiny real training run: distant-supervision corpus from real ads, loss falls, the pipeline round-trips."""

import json
import random

import pytest
import spacy

from pipeline.errors import ConfigError
from pipeline.training.supervision import TrainingPair
from pipeline.training.trainer import TrainingSettings, mask_text, read_config, resolve_training, train

from conftest import ROOT, TINY


def test_tiny_training_run_lowers_the_loss(trained):
    out, summary = trained
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    assert len(losses) == 2
    assert losses[1] < losses[0]
    assert summary["steps"] == 12 and summary["pairs"]["corpus"] == 64
    assert "tech/rp@5" in log[0]  # the untrained model is scored before the first step


def test_trained_pipeline_round_trips_with_identical_scores(trained, tmp_path):
    out, summary = trained
    nlp = spacy.load(out)
    assert nlp.meta["esco"]["training"]["negatives"]["strategy"] == "in_batch"
    texts = ["You will keep the ward's patient files in order.", "Experience with postgresql is essential."]
    before = [[(p.uri, round(p.score, 5)) for p in d._.esco_skills] for d in nlp.pipe(texts)]
    nlp.to_disk(tmp_path / "again")
    after = [[(p.uri, round(p.score, 5)) for p in d._.esco_skills] for d in spacy.load(tmp_path / "again").pipe(texts)]
    assert before == after
    assert [[u for u, _ in row] for row in before] == [[p.uri for p in nlp(t)._.esco_skills] for t in texts]


def test_resume_continues_from_the_checkpoint(trained, tiny_corpus, esco_path):
    out, _ = trained
    summary = train(str(ROOT / "configs" / "in_batch.cfg"), tiny_corpus, out, esco=esco_path, resume=True,
                    overrides=[o.replace("max_steps=12", "max_steps=14") for o in TINY])
    assert summary["steps"] == 14
    steps = [json.loads(line)["step"] for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert steps[-1] == 14 and 12 in steps


def test_mask_text_hides_mentions_for_the_context_objective():
    pair = TrainingPair("Experience with PostgreSQL is essential", 0, frozenset([0]), ((16, 26, "u"),))
    assert mask_text(pair, 1.0, random.Random(0), "[MASK]") == "Experience with [MASK] is essential"
    assert mask_text(pair, 0.0, random.Random(0), "[MASK]") == pair.text


@pytest.mark.parametrize(
    "override,key",
    [("training.batch_size=1", "batch_size"), ("training.temperature=0", "temperature"),
     ("training.max_steps=\"many\"", "max_steps"), ("training.speed=3", "unknown key 'speed'"),
     ("training.negatives.num_negatives=-2", "negatives")],
)
def test_bad_training_config_names_the_key(override, key):
    config = read_config(ROOT / "configs" / "random.cfg", [override])
    with pytest.raises(ConfigError, match=key):
        resolve_training(config)


def test_every_shipped_config_resolves():

    for path in sorted((ROOT / "configs").glob("*.cfg")):
        settings, sampler, sources = resolve_training(read_config(path))
        assert isinstance(settings, TrainingSettings) and sources, path
