"""Training the second stage: ``python -m pipeline rerank-train MODEL --corpus C --output OUT --validation F...``.

MODEL is a trained pipeline (the first stage, untouched). OUT is MODEL with a trained ``esco_skill_reranker``
after its ranker, the ranker's ``top_k`` raised to the reranker's K (the reranker re-scores the stored ranking),
and, by default, the decider calibrated again on the new scores (as ``train`` calibrates it).

Examples: the bi-encoder's own distant pairs (``supervision.py``: corpus sentences with their literal skills,
ESCO alternative labels and description sentences, as the default recipe takes them), each sentence's mentions
masked with the default recipe's probability (``mask_text``), so the cross-encoder learns skills from context
rather than from the words the matcher already finds. Only ``max_steps × batch_size`` examples are used (one
pass, no example twice): the pool is shuffled and cut.

Hard negatives: the first stage's own mistakes, the reason a second stage exists. For each (masked) example the
ranker's ``score_texts`` ranks every skill; its top K minus the example's gold skills are the candidates the
reranker will meet at inference, and the first ``negatives`` of them are the example's negatives (random
non-gold skills fill a shortfall).

Loss: listwise softmax cross-entropy over [positive, negatives] (localized contrastive estimation, Gao et al.
2021): the task is to put the right skill first among the first stage's candidates, which is what this loss
scores, and it is what the bi-encoder is trained with. Softmax is blind to a shift of all logits, so a small BCE
term (``bce_weight``, positive → 1, negatives → 0) anchors them: the score ``sigmoid(logit)`` then stays spread
over [0, 1] instead of drifting to one end, which the decider's thresholds need.

Model selection: ``pooled/rp@5`` (``validation_scores``) of the whole pipeline (decider off: it does not change
the ranking) every ``eval_every`` steps; the best weights are kept, then each ``first_stage_weights`` mix is
scored and the best kept. The first stage alone is scored once too, and the summary (``meta.json``,
``esco.reranker_training``) says whether the reranker beat it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from spacy.language import Language
from spacy.util import fix_random_seed

from pipeline.components.pipes import DECIDER, RANKER, RERANKER, find_taxonomy, load_pipeline
from pipeline.components.reranker import RerankerSettings, SkillReranker, cross_text
from pipeline.errors import ConfigError
from pipeline.evaluation.validation import SELECTION_METRIC, check_validation_files, validation_scores
from pipeline.settings import Field, Settings, StrictBool, StrictFloat, StrictInt
from pipeline.training.config import overrides_by_section
from pipeline.training.decider_fit import calibrate_pipeline, record as record_calibration
from pipeline.training.supervision import (AltLabelPairs, CorpusPairs, DescriptionPairs, PairSource,
                                           SupervisionContext, TrainingPair, collect_pairs)
from pipeline.training.trainer import copy_state, linear_warmup_schedule, mask_text

SECTION = "rerank"
COMPONENT_SECTION = f"components.{RERANKER}"
PathLike = Union[str, Path]
Source = Literal["corpus", "alt_labels", "descriptions"]
Weight = Annotated[StrictFloat, Field(ge=0.0, le=1.0)]


class RerankTrainingSettings(Settings):
    """``--set rerank.KEY=VALUE``. Defaults sized for 2 CPU cores: about 20 minutes with the evaluations."""

    max_steps: StrictInt = Field(240, ge=1)
    batch_size: StrictInt = Field(8, ge=1)  # examples (sentences) per step, each with its negatives
    negatives: StrictInt = Field(7, ge=1)  # hard negatives per example
    learning_rate: StrictFloat = Field(3e-5, gt=0.0, le=1.0)
    warmup_steps: StrictInt = Field(24, ge=0)
    weight_decay: StrictFloat = Field(0.01, ge=0.0, le=1.0)
    max_grad_norm: StrictFloat = Field(1.0, ge=0.0)  # 0 = no clipping
    bce_weight: StrictFloat = Field(0.1, ge=0.0)  # the logit anchor beside the listwise loss (module docstring)
    mask_probability: StrictFloat = Field(0.3, ge=0.0, le=1.0)  # the default recipe's (configs/implied.cfg)
    sources: Tuple[Source, ...] = Field(("corpus", "alt_labels", "descriptions"), min_length=1)
    eval_every: StrictInt = Field(120, ge=1)
    max_minutes: StrictFloat = Field(20.0, ge=0.0)  # the loop's budget (0 = none); evaluations count
    first_stage_weights: Tuple[Weight, ...] = Field((0.0, 0.3), min_length=1)  # mixes tried after training
    calibrate: StrictBool = True  # fit the decider again on the reranked scores (needs --corpus)
    mining_batch: StrictInt = Field(256, ge=1)  # sentences ranked by the first stage at once
    seed: StrictInt = 0
    torch_threads: StrictInt = Field(0, ge=0)  # 0 = PyTorch's default


@dataclass(frozen=True)
class Example:
    """One training list: the (masked) text, its positive skill's text, then its negatives' texts."""

    text: str
    skills: Tuple[str, ...]  # [positive, negatives...]


def split_overrides(overrides: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``--set`` items for ``[rerank]`` and for ``[components.esco_skill_reranker]``; any other section is an
    error naming them."""
    found = overrides_by_section(overrides, "rerank-train", (SECTION, COMPONENT_SECTION))
    return found[SECTION], found[COMPONENT_SECTION]


def pair_sources(settings: RerankTrainingSettings, corpus_dir: Optional[Path]) -> Dict[str, PairSource]:
    """The default recipe's sources (every ESCO text, corpus sentences capped per skill); no corpus, no corpus
    pairs."""
    made = {"corpus": lambda: CorpusPairs(), "alt_labels": lambda: AltLabelPairs(max_pairs=0),
            "descriptions": lambda: DescriptionPairs(max_pairs=0)}
    return {name: made[name]() for name in settings.sources if name != "corpus" or corpus_dir is not None}


def mine_examples(nlp: Language, pairs: Sequence[TrainingPair], settings: RerankTrainingSettings,
                  candidates: int, rng: random.Random) -> List[Example]:
    """Mask each pair's mentions, rank every skill with the first stage and keep its top ``candidates`` minus
    the gold skills as hard negatives (module docstring)."""
    ranker = nlp.get_pipe(RANKER)
    taxonomy = find_taxonomy(nlp)
    mode = nlp.get_pipe(RERANKER).settings.skill_text
    uris = ranker.index.uris
    mask_token = ranker.encoder.mask_token
    texts = [mask_text(p, settings.mask_probability, rng, mask_token) for p in pairs]
    examples: List[Example] = []
    for start in range(0, len(pairs), settings.mining_batch):
        scores = ranker.score_texts(texts[start:start + settings.mining_batch])  # [b, n_skills]
        k = min(candidates, scores.shape[1])
        top = np.argsort(-scores, axis=1)[:, :k]  # [b, k], best first
        for pair, text, row in zip(pairs[start:], texts[start:], top):
            negatives = [int(i) for i in row if int(i) not in pair.gold][: settings.negatives]
            while len(negatives) < settings.negatives:  # too few mined: random non-gold skills fill the list
                pick = rng.randrange(len(uris))
                if pick not in pair.gold and pick not in negatives:
                    negatives.append(pick)
            skills = [pair.skill] + negatives
            examples.append(Example(text, tuple(cross_text(taxonomy, uris[i], mode) for i in skills)))
    return examples


def listwise_loss(logits: torch.Tensor, bce_weight: float) -> torch.Tensor:
    """[B, C] logits, the positive in column 0 → softmax cross-entropy + ``bce_weight`` × BCE (module docstring)."""
    target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    loss = torch.nn.functional.cross_entropy(logits, target)
    if bce_weight:
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        loss = loss + bce_weight * torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    return loss


def install_reranker(nlp: Language, settings: RerankerSettings, source: Optional[SkillReranker] = None) -> SkillReranker:
    """A reranker with ``settings`` after the ranker (replacing one already there), so that the saved config holds
    them; it takes ``source``'s model and state, else starts from the encoder weights (a new head)."""
    if RERANKER in nlp.pipe_names:
        nlp.remove_pipe(RERANKER)
    reranker: SkillReranker = nlp.add_pipe(RERANKER, after=RANKER, config=settings.model_dump())
    if source is None:
        reranker.initialize(nlp=nlp)
    else:
        reranker.model, reranker.state = source.model, source.state
    return reranker


class RerankTrainer:
    def __init__(self, nlp: Language, settings: RerankTrainingSettings, examples: List[Example],
                 validation: Sequence[PathLike]):
        self.nlp, self.settings, self.examples, self.validation = nlp, settings, examples, list(validation)
        self.reranker: SkillReranker = nlp.get_pipe(RERANKER)
        self.model = self.reranker.model
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=settings.learning_rate,
                                           weight_decay=settings.weight_decay)
        self.scheduler = linear_warmup_schedule(self.optimizer, settings.warmup_steps, settings.max_steps)

    def step(self, batch: Sequence[Example]) -> float:
        self.model.train()
        pairs = [(ex.text, skill) for ex in batch for skill in ex.skills]
        logits = self.model(pairs).view(len(batch), -1)  # [B, 1 + negatives]
        loss = listwise_loss(logits, self.settings.bce_weight)
        self.optimizer.zero_grad()
        loss.backward()
        if self.settings.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def evaluate(self, with_reranker: bool = True) -> Dict[str, float]:
        """The benchmark scores of the pipeline as ``evaluate`` runs it (the decider off: it keeps the ranking)."""
        disabled = [DECIDER] + ([] if with_reranker else [RERANKER])
        with self.nlp.select_pipes(disable=[p for p in disabled if p in self.nlp.pipe_names]):
            return validation_scores(self.nlp, self.validation)

    def run(self) -> Dict[str, Any]:
        s = self.settings
        started = time.time()
        first_stage = self.evaluate(with_reranker=False)
        self.reranker.mark_trained({})  # lets it run for the evaluations; the summary is recorded at the end
        best, best_metrics, best_state = -1.0, {}, copy_state(self.model)
        log: List[Dict[str, Any]] = [{"step": 0, "first_stage": first_stage[SELECTION_METRIC]}]
        losses: List[float] = []
        stop = "max_steps"
        for step in range(s.max_steps):
            batch = [self.examples[(step * s.batch_size + i) % len(self.examples)] for i in range(s.batch_size)]
            losses.append(self.step(batch))
            out_of_time = bool(s.max_minutes) and (time.time() - started) / 60 > s.max_minutes
            if (step + 1) % s.eval_every == 0 or step + 1 == s.max_steps or out_of_time:
                metrics = self.evaluate()
                score = metrics[SELECTION_METRIC]
                log.append({"step": step + 1, "loss": float(np.mean(losses[-s.eval_every:])), SELECTION_METRIC: score,
                            "elapsed_s": round(time.time() - started, 1)})
                if score > best:
                    best, best_metrics, best_state = score, metrics, copy_state(self.model)
            if out_of_time:
                stop = f"time budget of {s.max_minutes} min"
                break
        self.model.load_state_dict(best_state)
        self.model.eval()
        mix, best_metrics = self.choose_mix(best_metrics, log)
        return {"steps": len(losses), "stop_reason": stop, "examples": len(losses) * s.batch_size,
                "first_loss": losses[0], "last_loss": float(np.mean(losses[-20:])), "log": log,
                "first_stage_weight": mix, "best_metrics": best_metrics,
                "first_stage_metrics": first_stage, "beats_first_stage": best_metrics[SELECTION_METRIC] >
                first_stage[SELECTION_METRIC], "train_seconds": round(time.time() - started, 1)}

    def choose_mix(self, metrics: Dict[str, float], log: List[Dict[str, Any]]) -> Tuple[float, Dict[str, float]]:
        """Score each ``first_stage_weights`` mix with the best weights; keep the best (the component's weight, as
        trained, was the first of them)."""
        weights = self.settings.first_stage_weights
        chosen, chosen_metrics = weights[0], metrics
        for weight in weights[1:]:
            self.reranker.settings = self.reranker.settings.replace(COMPONENT_SECTION, first_stage_weight=weight)
            scored = self.evaluate()
            log.append({"first_stage_weight": weight, SELECTION_METRIC: scored[SELECTION_METRIC]})
            if scored[SELECTION_METRIC] > chosen_metrics[SELECTION_METRIC]:
                chosen, chosen_metrics = weight, scored
        return chosen, chosen_metrics


def rerank_train(model: PathLike, corpus_dir: Optional[PathLike], output: PathLike, *,
                 validation: Sequence[PathLike], overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Train a reranker on top of the pipeline ``model`` and write ``output`` (module docstring)."""
    training_values, component_values = split_overrides(overrides or {})
    settings = RerankTrainingSettings.load(SECTION, training_values)
    component = RerankerSettings.load(COMPONENT_SECTION, component_values)
    if not validation:
        raise ConfigError("rerank-train needs benchmark files (--validation) to keep the best weights")
    if settings.calibrate and corpus_dir is None:
        raise ConfigError(f"[{SECTION}] calibrate = true needs the corpus (--corpus): the decider's gate")
    check_validation_files(validation)
    corpus = Path(corpus_dir) if corpus_dir is not None else None
    fix_random_seed(settings.seed)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    nlp = load_pipeline(model, config={"components": {RANKER: {"top_k": component.candidates}}})
    if RANKER not in nlp.pipe_names:
        raise ConfigError(f"'{model}' has no '{RANKER}': the reranker re-scores its ranking")
    reranker = install_reranker(nlp, component.replace(COMPONENT_SECTION, first_stage_weight=
                                                       settings.first_stage_weights[0]))
    rng = random.Random(settings.seed)
    ctx = SupervisionContext(find_taxonomy(nlp), nlp.get_pipe(RANKER).index.uris, corpus, rng)
    pairs, counts = collect_pairs(pair_sources(settings, corpus), ctx)
    examples = mine_examples(nlp, pairs[: settings.max_steps * settings.batch_size], settings, component.candidates,
                             rng)
    summary = RerankTrainer(nlp, settings, examples, validation).run()
    summary.update({"pairs": counts, "model": str(model), "settings": settings.model_dump(mode="json")})
    final = reranker.settings.replace(COMPONENT_SECTION, first_stage_weight=summary["first_stage_weight"])
    install_reranker(nlp, final, source=reranker).mark_trained({k: v for k, v in summary.items() if k != "log"})
    if settings.calibrate:
        record_calibration(nlp, calibrate_pipeline(nlp, corpus, validation))
    nlp.meta.setdefault("esco", {})["reranker_training"] = summary
    nlp.to_disk(output)
    return summary
