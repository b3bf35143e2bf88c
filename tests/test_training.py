"""A tiny real training run: distant-supervision corpus from real ads, loss falls, the pipeline round-trips."""

import json
import random
import shutil
from collections import OrderedDict
from itertools import islice
from types import SimpleNamespace

import numpy as np
import pytest
import spacy
import torch
from safetensors.torch import load_file
from thinc.api import Config

import pipeline.training.trainer as trainer_module
from pipeline.components.encoder import (DEFAULT_ENCODER, EncoderSettings, TransformerEncoder, resolve_model_path,
                                         weights_fingerprint)
from pipeline.components.pipes import ALL_PIPES, find_taxonomy
from pipeline.errors import ConfigError, EscoDataError
from pipeline.evaluation.validation import SELECTION_METRIC
from pipeline.training.config import read_config, resolve_training
from pipeline.components.ranker import SkillIndex, skill_texts
from pipeline.training.loss import candidate_matrix, contrastive_loss, late_interaction_loss, late_interaction_scores
from pipeline.training.settings import TrainingSettings, resolve_device
from pipeline.training.supervision import TrainingPair
from pipeline.training.trainer import copy_state, mask_text, shuffled_batches, train

from conftest import ROOT, TINY

ENCODER_WEIGHTS = "esco_skill_ranker/encoder/model.safetensors"
# Resuming re-runs the interpolation step after training; off here, so the shipped weights are the best weights.
RESUMED = [o.replace("max_steps=12", "max_steps=14").replace("interpolation=[0.5, 1.0]", "interpolation=[1.0]")
           for o in TINY]


def test_tiny_training_run_lowers_the_loss(trained):
    out, summary = trained
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    assert len(losses) == 2
    assert losses[1] < losses[0]
    assert summary["steps"] == 12 and summary["pairs"]["corpus"] == 64
    assert summary["device"] == "cpu"  # TINY asks for device = "cpu"
    assert "tech/rp@5" in log[0] and SELECTION_METRIC in log[0]  # the untrained model is scored before step 1
    # Every evaluation logs the dev signals and the combined score that selection maximizes.
    assert {"masked/rp@5", "paraphrase/rp@5", "combined/rp@5"} <= set(log[0])
    assert summary["selection"] == "combined/rp@5"
    tried = [entry for entry in log if "interpolation" in entry]
    assert [entry["interpolation"] for entry in tried] == [0.5]
    assert summary["interpolation"] in (0.5, 1.0)
    # Selection sees every evaluation, the untrained model's at step 0 included (a 12-step run may not beat it).
    evaluations = [e for e in log if "interpolation" not in e]
    chosen = tried[0] if summary["interpolation"] == 0.5 else max(evaluations, key=lambda e: e["combined/rp@5"])
    assert summary["best_metrics"]["combined/rp@5"] == chosen["combined/rp@5"]


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


def test_shipped_skill_index_is_embedded_by_the_shipped_weights(trained):
    """The trainer re-embeds the index only when the weights changed (``weights_fingerprint``): the index it ships
    must still be that of the weights it ships, not of an earlier evaluation's."""
    nlp = spacy.load(trained[0])
    ranker = nlp.get_pipe("esco_skill_ranker")
    index, encoder = ranker.index, ranker.encoder
    assert index.mode == "preferred" and len(index.vectors) == len(index.labels)  # one text per skill
    rows = list(range(0, len(index.labels), 97))
    again = encoder.encode([index.labels[i] for i in rows], max_length=encoder.settings.skill_max_length)
    # An index of other weights than those shipped: the untrained encoder's (step 0) and the last step's (the
    # checkpoint's current weights). Selection may ship either of them, so the stale one is the farther.
    other = TransformerEncoder(resolve_model_path(DEFAULT_ENCODER), EncoderSettings())
    stale = 0.0
    for state in (None, torch.load(checkpoint_of(trained[0]) / "weights.pt", weights_only=True)["current"]):
        if state is not None:
            other.model.load_state_dict(state)
        before = other.encode([index.labels[i] for i in rows], max_length=encoder.settings.skill_max_length)
        stale = max(stale, float(np.abs(before - index.vectors[rows]).max()))
    assert stale > 1e-3  # training moved the weights, so an index of the wrong ones would show
    assert np.abs(again - index.vectors[rows]).max() < min(2e-3, stale / 2)  # float16 on disk; stale would fail


def test_weights_fingerprint_follows_any_change_of_the_weights():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    before = weights_fingerprint(model)
    assert weights_fingerprint(model) == before
    with torch.no_grad():
        model[0].weight[0, 0] += 1e-6
    assert weights_fingerprint(model) != before


class CountingBuild:
    """Stands in for ``SkillIndex.build``: each call makes a new index object, of the skill_text asked for."""

    def __init__(self):
        self.built = []

    def __call__(self, taxonomy, encoder, mode):
        self.built.append(mode)
        return SimpleNamespace(mode=mode, number=len(self.built))


def test_the_evaluation_index_is_embedded_again_only_for_weights_not_seen_lately(monkeypatch):
    build = CountingBuild()
    monkeypatch.setattr(trainer_module.SkillIndex, "build", build)
    model = torch.nn.Linear(3, 2)
    untrained = SimpleNamespace(mode="preferred", number=0)  # the index the pipeline was initialized with
    trainer = SimpleNamespace(encoder=SimpleNamespace(model=model), taxonomy="esco",
                              settings=SimpleNamespace(evaluation_skill_text="preferred"),
                              recent_indexes=OrderedDict([(weights_fingerprint(model), untrained)]))
    assert trainer_module.Trainer.evaluation_index(trainer) is untrained  # e.g. the evaluation at step 0
    start = copy_state(model)
    with torch.no_grad():
        model.weight += 1.0  # a training step, or a checkpoint's weights loaded
    first = trainer_module.Trainer.evaluation_index(trainer)
    assert trainer_module.Trainer.evaluation_index(trainer) is first  # scored again with the same weights
    assert build.built == ["preferred"]
    model.load_state_dict(start)  # back to weights embedded before (the best, restored after interpolation)
    assert trainer_module.Trainer.evaluation_index(trainer) is untrained and build.built == ["preferred"]


@pytest.mark.parametrize("shipped, rebuilt", [("preferred", False), ("preferred+alt", True)])
def test_the_shipped_index_is_the_evaluation_index_unless_its_skill_text_differs(monkeypatch, shipped, rebuilt):
    """The default trains selecting on the preferred labels and ships every alternative label: that index is
    embedded once, for the weights chosen; a ranker of the evaluation's own skill_text ships its index as it is."""
    monkeypatch.setattr(trainer_module.SkillIndex, "build", CountingBuild())
    model = torch.nn.Linear(3, 2)
    ranker = SimpleNamespace(settings=SimpleNamespace(skill_text=shipped), index="initial", rebuilt=[])
    ranker.rebuild_index = lambda taxonomy: (ranker.rebuilt.append(taxonomy),
                                             setattr(ranker, "index", f"{ranker.settings.skill_text} index"))
    trainer = SimpleNamespace(encoder=SimpleNamespace(model=model), taxonomy="esco", ranker=ranker,
                              settings=SimpleNamespace(evaluation_skill_text="preferred"), recent_indexes=OrderedDict())
    trainer.evaluation_index = lambda: trainer_module.Trainer.evaluation_index(trainer)
    assert trainer_module.Trainer.ship_index(trainer) is rebuilt
    if rebuilt:
        assert ranker.rebuilt == ["esco"] and ranker.index == "preferred+alt index"
    else:
        assert ranker.rebuilt == [] and ranker.index.mode == "preferred"


@pytest.mark.slow
def test_a_run_selects_on_preferred_labels_and_ships_every_label(tiny_corpus, esco_path, shared_path, tmp_path):
    """configs/default.cfg's split, end to end: evaluations rank against the preferred labels, the saved
    pipeline's index holds every alternative label embedded by the shipped weights, its metrics are its own."""
    out = tmp_path / "model"
    overrides = [o for o in TINY if not o.startswith("training.interpolation")] + [
        "training.interpolation=[1.0]", 'components.esco_skill_ranker.skill_text="preferred+alt"']
    summary = train(str(ROOT / "configs" / "in_batch.cfg"), tiny_corpus, out, esco=esco_path,
                    validation=[shared_path / "benchmark" / "tech_validation_annotations.csv"], overrides=overrides)
    nlp = spacy.load(out)
    ranker = nlp.get_pipe("esco_skill_ranker")
    index = ranker.index
    assert ranker.settings.skill_text == index.mode == "preferred+alt" and len(index.vectors) > 5 * len(index.uris)
    rows = list(range(0, len(index.vectors), 991))
    texts = [t for skill in find_taxonomy(nlp).skills.values() for t in skill_texts(skill, "preferred+alt")]
    again = ranker.encoder.encode([texts[i] for i in rows], max_length=ranker.encoder.settings.skill_max_length)
    assert np.abs(again - index.vectors[rows]).max() < 2e-3
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    shipped = [entry for entry in log if entry.get("skill_text") == "preferred+alt"]
    assert len(shipped) == 1 and shipped[0] is log[-1]
    assert summary["best_metrics"]["tech/rp@5"] == shipped[0]["tech/rp@5"]
    assert nlp.meta["performance"]["tech/rp@5"] == pytest.approx(shipped[0]["tech/rp@5"])  # meta.json rounds
    # The evaluations before it ranked against the preferred labels: the shipped index holds the paraphrase dev's
    # held-out alternative labels verbatim, so the same weights score far higher on it there.
    selected = [entry for entry in log if "skill_text" not in entry]
    assert shipped[0]["paraphrase/rp@5"] > max(entry["paraphrase/rp@5"] for entry in selected) + 0.03


def test_saved_training_config_is_complete_and_reproducible(trained):
    out, _ = trained
    meta = json.loads((out / "meta.json").read_text())
    config = Config().from_str(meta["esco"]["training_config"], interpolate=False)
    assert "extends" not in config and "esco_skill_ranker" in config["components"]
    settings, sampler, sources = resolve_training(config)  # the run can be repeated from meta.json alone
    assert settings.max_steps == 12 and sampler.describe()["strategy"] == "in_batch" and set(sources) == {
        "corpus", "alt_labels"}
    assert spacy.load(out).pipe_names == list(ALL_PIPES)  # config.cfg loads as it is


def checkpoint_of(model_dir):
    return model_dir.with_name(model_dir.name + ".checkpoint")


def copy_trained(trained, tmp_path):
    """The session's trained pipeline and its checkpoint, copied: resuming writes into both, and the packaging
    test uses the original."""
    out, _ = trained
    model = tmp_path / "model"
    shutil.copytree(out, model)
    shutil.copytree(checkpoint_of(out), tmp_path / "model.checkpoint")
    return model


@pytest.mark.slow  # 67 s alone (a pipeline built, the index embedded twice): make test-all; make test stays under 10 min
def test_resume_continues_and_keeps_the_best_weights_when_nothing_improves(trained, tiny_corpus, esco_path,
                                                                           shared_path, tmp_path, monkeypatch):
    out, first = trained
    model = copy_trained(trained, tmp_path)
    checkpoint = tmp_path / "model.checkpoint"
    saved_best = json.loads((checkpoint / "state.json").read_text())["best_metrics"]
    best = torch.load(checkpoint / "weights.pt", weights_only=True)["best"]
    # Every evaluation after resuming scores worse than the run's best, so the best must come from the checkpoint.
    worse = {"tech/rp@5": 0.0, "tech/rp@10": 0.0, "tech/mrr": 0.0, SELECTION_METRIC: -1.0}
    monkeypatch.setattr(trainer_module, "validation_scores", lambda nlp, files: dict(worse))
    summary = train(str(ROOT / "configs" / "in_batch.cfg"), tiny_corpus, model, esco=esco_path, resume=True,
                    validation=[shared_path / "benchmark" / "tech_validation_annotations.csv"], overrides=RESUMED)
    assert summary["steps"] == 14
    log = [json.loads(line) for line in (model / "training_log.jsonl").read_text().splitlines()]
    evaluations = [entry for entry in log if "loss" in entry or entry["step"] == 0]  # not the interpolation tries
    assert [entry["step"] for entry in evaluations][-2:] == [12, 14] and evaluations[-1]["improved"] is False
    assert summary["best_metrics"] == saved_best and saved_best[SELECTION_METRIC] > -1.0
    meta = json.loads((model / "meta.json").read_text())
    assert meta["performance"] and meta["performance"] == pytest.approx(saved_best)  # meta rounds to 10 places
    shipped = load_file(model / ENCODER_WEIGHTS)
    assert all(torch.equal(best[k], shipped[k]) for k in shipped)


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
    recipes = [path for path in sorted((ROOT / "configs").glob("*.cfg")) if path.name != "base.cfg"]
    assert {p.stem for p in recipes} >= {"default", "in_batch", "random", "taxonomy", "hard", "mixture", "implied"}
    for path in recipes:
        settings, sampler, sources = resolve_training(read_config(path))
        assert isinstance(settings, TrainingSettings) and sources, path


def test_asking_for_cuda_without_one_is_a_config_error(tmp_path, esco_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=r"\[training\] device"):
            resolve_device(name)
    # train() refuses before it builds anything (no corpus is needed to get there)
    with pytest.raises(ConfigError, match=r"\[training\] device"):
        train(ROOT / "configs" / "in_batch.cfg", None, tmp_path / "model", esco=esco_path,
              overrides=['training.device="cuda"'])
    assert resolve_device("cpu") == resolve_device("auto") == torch.device("cpu")


def test_contrastive_loss_is_low_when_the_positive_is_nearest():
    skills = torch.nn.functional.normalize(torch.eye(4)[:3], dim=-1)  # [U=3, D=4]
    unique, cand, mask = candidate_matrix([7, 8], [[8, 9], [7]])  # example 1 has one negative fewer
    assert unique == [7, 8, 9] and cand.tolist() == [[0, 1, 2], [1, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, True, False]]
    right = contrastive_loss(skills[[0, 1]], skills, cand, mask, temperature=0.05)
    wrong = contrastive_loss(skills[[1, 0]], skills, cand, mask, temperature=0.05)
    assert float(right) < 1e-3 < float(wrong)


def test_late_interaction_trains_the_formula_the_ranker_scores_with():
    """The trainer's token scores are the ranker's inference scores (``SkillIndex.token_scores``), padding and
    special tokens left out: what is trained is what ships."""
    gen = torch.Generator().manual_seed(0)
    unit = lambda *shape: torch.nn.functional.normalize(torch.randn(*shape, generator=gen), dim=-1)
    tokens, skills = unit(2, 5, 8), unit(3, 8)  # [B=2, T=5, D=8], [U=3, D=8]
    mask = torch.tensor([[True] * 5, [False, True, True, False, False]])  # row 1: 2 real pieces among padding
    index = SkillIndex(["a", "b", "c"], ["a", "b", "c"], ["skill"] * 3, skills.numpy(), np.arange(3))
    trained = late_interaction_scores(tokens, mask, skills.expand(2, 3, 8), token_temperature=0.05)  # [B, C=3]
    for row in range(2):
        shipped = index.token_scores(tokens[row][mask[row]].numpy(), temperature=0.05)
        np.testing.assert_allclose(trained[row].numpy(), shipped, atol=1e-5)
    # near the best token (temperature → 0) and near the mean of the tokens (temperature large)
    sims = torch.einsum("td,ud->tu", tokens[0], skills)
    hot = late_interaction_scores(tokens[:1], mask[:1], skills[None], token_temperature=1e-3)[0]
    flat = late_interaction_scores(tokens[:1], mask[:1], skills[None], token_temperature=1e3)[0]
    np.testing.assert_allclose(hot.numpy(), sims.max(0).values.numpy(), atol=1e-3)
    np.testing.assert_allclose(flat.numpy(), sims.mean(0).numpy(), atol=1e-3)


def test_late_interaction_loss_is_low_when_one_token_names_the_positive():
    skills = torch.eye(4)[:3]  # [U=3, D=4] orthogonal skills
    unique, cand, mask = candidate_matrix([0, 1], [[1, 2], [0, 2]])
    filler = torch.nn.functional.normalize(torch.tensor([0.0, 0.0, 0.0, 1.0]), dim=0)
    # each sentence: one token on its skill among filler tokens (a mean would dilute it three times)
    right = torch.stack([torch.stack([skills[0], filler, filler]), torch.stack([filler, skills[1], filler])])
    wrong = right[[1, 0]]
    pieces = torch.ones(2, 3, dtype=torch.bool)
    loss = lambda tokens: float(late_interaction_loss(tokens, pieces, skills[unique], cand, mask, 0.05, 0.05))
    assert loss(right) < 1e-3 < loss(wrong)


def test_the_trainers_word_pieces_are_the_ones_the_ranker_scores():
    encoder = TransformerEncoder(resolve_model_path(DEFAULT_ENCODER), EncoderSettings())
    texts = ["Experience with PostgreSQL and Python.", "Keep the ward's patient files in order, please."]
    tokens, mask = encoder.forward_tokens(texts)
    assert tokens.requires_grad  # the trainer's pass keeps gradients
    for row, (offsets, vectors) in enumerate(encoder.encode_tokens(texts)):
        assert int(mask[row].sum()) == len(offsets) > 4  # padding and [CLS]/[SEP] left out on both sides
        np.testing.assert_allclose(tokens[row][mask[row]].detach().numpy(), vectors, atol=1e-4)


def test_shuffled_batches_are_full_and_resume_exactly():
    pairs = [TrainingPair(str(i), i, frozenset([i])) for i in range(10)]
    run = list(islice(shuffled_batches(pairs, 3, random.Random(0)), 7))
    assert all(len(batch) == 3 for batch in run)  # 10 pairs: 3 full batches per epoch, the tail dropped
    assert {p.skill for batch in run[:3] for p in batch} < set(range(10))
    resumed = list(islice(shuffled_batches(pairs, 3, random.Random(0), start_step=4), 3))
    assert resumed == run[4:7]


def test_interpolation_between_two_states_is_linear_and_keeps_integer_buffers():
    import torch

    from pipeline.training.trainer import interpolate_states

    start = {"w": torch.zeros(3), "ids": torch.tensor([1, 2])}
    end = {"w": torch.ones(3) * 4, "ids": torch.tensor([5, 6])}
    mixed = interpolate_states(start, end, 0.25)
    assert torch.allclose(mixed["w"], torch.ones(3)) and mixed["ids"].tolist() == [5, 6]


@pytest.mark.parametrize("value", ["[]", "[0]", "[1.5]", '["a"]', "[true]"])
def test_bad_interpolation_weights_name_the_key(value):
    config = read_config(ROOT / "configs" / "random.cfg", [f"training.interpolation={value}"])
    with pytest.raises(ConfigError, match="interpolation"):
        resolve_training(config)


def test_combined_selection_without_dev_signals_is_refused(tiny_corpus, esco_path, tmp_path):
    with pytest.raises(ConfigError, match="dev_signals"):
        train(str(ROOT / "configs" / "implied.cfg"), tiny_corpus, tmp_path / "m", esco=esco_path,
              overrides=["training.dev_signals=false"])


def test_a_missing_validation_file_fails_before_training(esco_path, tmp_path):
    """The file is read up front, before the corpus (here: none) or ESCO is touched; nothing is written."""
    missing = tmp_path / "TECH_validation.csv"
    with pytest.raises(EscoDataError, match="TECH_validation.csv"):
        train(str(ROOT / "configs" / "implied.cfg"), tmp_path / "no-corpus", tmp_path / "m", esco=esco_path,
              validation=[missing])
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.checkpoint").exists()


def test_learning_rate_schedule_is_transformers_linear_warmup():
    """The trainer's own schedule (no transformers import) gives transformers' factors step for step."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    from pipeline.training.trainer import linear_warmup_schedule

    for warmup, total in ((30, 600), (0, 10), (5, 5), (7, 3)):
        ours = linear_warmup_schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), warmup, total)
        theirs = get_linear_schedule_with_warmup(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0),
                                                 warmup, total)
        assert [ours.lr_lambdas[0](s) for s in range(total + 3)] == [theirs.lr_lambdas[0](s) for s in range(total + 3)]
