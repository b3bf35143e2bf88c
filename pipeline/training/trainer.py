"""The project trainer: the loop that trains the ranker's encoder, and ``train()``, which runs a config.

Why not ``spacy train``: the ranker's model is a PyTorch transformer whose loss needs the whole batch at once
(in-batch and mined negatives, a skill index refreshed every N steps) and model selection needs ranking
metrics on the benchmark's validation files. So this loop owns the optimizer, while everything it uses is
named in the same config ``spacy.load`` and ``spacy package`` read (see ``config.py``): ``[nlp]``/``[components]``
build the pipeline, ``[training]`` holds the loop settings (``settings.py``), ``[training.negatives]`` the
strategy and ``[training.supervision]`` the sources of positive pairs.

Checkpoints (``OUTPUT.checkpoint/`` after every evaluation) hold the current weights, optimizer and schedule to
continue from, and the best weights and metrics so far: a resumed run that never beats them still ships them.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, TextIO

import numpy as np
import torch
from spacy.language import Language
from spacy.util import fix_random_seed, minibatch

from pipeline.components.assembly import build_pipeline
from pipeline.components.encoder import weights_fingerprint
from pipeline.components.pipes import RANKER, find_taxonomy
from pipeline.components.ranker import SkillIndex
from pipeline.errors import ConfigError
from pipeline.evaluation.dev_signals import DevSignals, build_dev_signals, dev_signal_scores
from pipeline.evaluation.validation import (COMBINED_METRIC, SELECTION_METRIC, check_validation_files,
                                            combined_score, validation_scores)
from pipeline.training.config import config_seed, pipeline_config, read_config, resolve_training
from pipeline.training.decider_fit import calibrate_pipeline, record as record_calibration
from pipeline.training.loss import candidate_matrix, contrastive_loss, late_interaction_loss
from pipeline.corpus.masking import mask_mentions
from pipeline.corpus.storage import corpus_boilerplate
from pipeline.training.negatives import NegativeSampler, SamplingContext
from pipeline.training.settings import TrainingSettings, resolve_device
from pipeline.training.supervision import SupervisionContext, TrainingPair, collect_pairs
from pipeline.training.taxonomy_fit import check_corpus_taxonomy, validation_for

LOG_FILE = "training_log.jsonl"
RECENT_INDEXES = 3  # skill indexes kept in memory (13,896 × 384 float32: 21 MB each)
STATE_FILE = "state.json"
WEIGHTS_FILE = "weights.pt"
OPTIMIZER_FILE = "optimizer.pt"

StateDict = Dict[str, torch.Tensor]


def linear_warmup_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int,
                           total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the learning rate, then linear decay to 0 at ``total_steps``: the factors of transformers'
    ``get_linear_schedule_with_warmup``, written here so that training needs no transformers import."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def mask_text(pair: TrainingPair, probability: float, rng: random.Random, mask_token: str) -> str:
    if not probability or not pair.mentions:
        return pair.text
    mentions = [{"start": s, "end": e, "uri": u} for s, e, u in pair.mentions]
    return mask_mentions(pair.text, mentions, probability, rng, mask_token)


def shuffled_batches(pairs: Sequence[TrainingPair], size: int, rng: random.Random,
                     start_step: int = 0) -> Iterator[List[TrainingPair]]:
    """Endless epochs of shuffled full batches (an epoch's short tail is dropped, unless the data is smaller than
    one batch: a short batch would have fewer in-batch negatives). Skipping ``start_step`` batches replays the
    same shuffles, so resuming continues with exactly the batches the interrupted run would have seen."""

    def epochs() -> Iterator[List[TrainingPair]]:
        while True:
            order = list(pairs)
            rng.shuffle(order)
            for batch in minibatch(order, size):
                if len(batch) == size or len(order) < size:
                    yield list(batch)

    return islice(epochs(), start_step, None)


def copy_state(model: torch.nn.Module) -> StateDict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def interpolate_states(start: StateDict, end: StateDict, alpha: float) -> StateDict:
    """``(1 - alpha) * start + alpha * end`` for float tensors (WiSE-FT); integer buffers are taken from ``end``."""
    return {key: torch.lerp(start[key].to(value.device), value, alpha) if value.is_floating_point() else value
            for key, value in end.items()}


def mean_vectors(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, D] L2-normalized mean of each row's masked [B, T, D] token vectors."""
    weights = mask.unsqueeze(-1).to(tokens.dtype)  # [B, T, 1]
    pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1)


@dataclass
class Progress:
    """What a checkpoint restores besides the weights: where the run is and the best it has seen."""

    step: int = 0
    best: float = -1.0
    bad_evals: int = 0
    best_metrics: Dict[str, float] = field(default_factory=dict)


class Trainer:
    def __init__(self, nlp: Language, settings: TrainingSettings, sampler: NegativeSampler, pairs: List[TrainingPair],
                 validation: Sequence[Path], output: Path, seed: int, device: Optional[torch.device] = None,
                 dev: Optional[DevSignals] = None):
        self.nlp, self.settings, self.sampler, self.pairs = nlp, settings, sampler, pairs
        self.dev = dev
        self.selection_metric = COMBINED_METRIC if settings.selection == "combined" else SELECTION_METRIC
        self.validation, self.output, self.seed = list(validation), Path(output), seed
        self.device = device or resolve_device(settings.device)
        self.ranker = nlp.get_pipe(RANKER)
        self.encoder = self.ranker.encoder
        self.encoder.to(self.device)
        self.initial_state = copy_state(self.encoder.model)  # the untrained encoder, for interpolation
        self.taxonomy = find_taxonomy(nlp)
        self.uris = list(self.ranker.index.uris)
        self.labels = list(self.ranker.index.labels)
        self.sampler.bind(self.taxonomy, self.uris)
        self.optimizer = torch.optim.AdamW(self.encoder.parameters(), lr=settings.learning_rate,
                                           weight_decay=settings.weight_decay)
        # Linear warm-up to the learning rate, then linear decay to 0 at max_steps (a LambdaLR: checkpoints keep it).
        self.scheduler = linear_warmup_schedule(self.optimizer, settings.warmup_steps, settings.max_steps)
        self.checkpoint_dir = self.output.with_name(self.output.name + ".checkpoint")
        self.skill_vectors: Optional[np.ndarray] = None
        self.rng = random.Random(seed)
        # The indexes (of `evaluation_skill_text`) of the last few weights embedded: restoring the best weights after
        # the interpolation tries (or an evaluation of weights seen before) reuses theirs instead of embedding every
        # skill again. The ranker's own index was built from the encoder as it is now (initialize, or from_disk).
        self.recent_indexes: "OrderedDict[str, SkillIndex]" = OrderedDict()
        if self.ranker.index.mode == settings.evaluation_skill_text:
            self.recent_indexes[weights_fingerprint(self.encoder.model)] = self.ranker.index

    def evaluation_index(self) -> SkillIndex:
        """The current weights' index of `evaluation_skill_text`, embedded again only if the weights changed since
        it was built (13,896 skills: tens of seconds on two cores, at every evaluation)."""
        fingerprint = weights_fingerprint(self.encoder.model)
        if fingerprint not in self.recent_indexes:
            self.recent_indexes[fingerprint] = SkillIndex.build(self.taxonomy, self.encoder,
                                                                self.settings.evaluation_skill_text)
            while len(self.recent_indexes) > RECENT_INDEXES:
                self.recent_indexes.popitem(last=False)
        self.recent_indexes.move_to_end(fingerprint)
        return self.recent_indexes[fingerprint]

    def ship_index(self) -> bool:
        """Leave the ranker the index it ships for the current weights: the evaluation index when it is of the
        ranker's skill_text, else embedded once now. Returns whether the shipped index differs from the one the
        evaluations ranked with."""
        if self.settings.evaluation_skill_text == self.ranker.settings.skill_text:
            self.ranker.index = self.evaluation_index()
            return False
        self.ranker.rebuild_index(self.taxonomy)
        return True

    def refresh_negative_index(self) -> None:
        """The skill vectors hard-negative mining searches (refreshed every `refresh_every` steps)."""
        self.skill_vectors = self.encoder.encode(self.labels, max_length=self.encoder.settings.skill_max_length)

    def step(self, batch: List[TrainingPair], step: int) -> float:
        s = self.settings
        self.encoder.train()
        texts = [mask_text(p, s.mask_probability, self.rng, self.encoder.mask_token) for p in batch]
        token_scoring = self.ranker.settings.scoring == "token"
        if token_scoring:  # trained as the ranker scores: skill-conditioned attention over the word pieces
            tokens, token_mask = self.encoder.forward_tokens(texts)  # [B, T, D], [B, T]
            sentence_vectors = mean_vectors(tokens, token_mask)  # [B, D], for hard-negative mining only
        else:
            sentence_vectors = self.encoder(texts)  # [B, D] on self.device
        if self.sampler.needs_index and (self.skill_vectors is None or step % self.sampler.refresh_every == 0):
            self.refresh_negative_index()
        ctx = SamplingContext(
            positives=[p.skill for p in batch], gold=[p.gold for p in batch], rng=self.rng,
            sentence_vectors=sentence_vectors.detach().cpu().numpy() if self.sampler.needs_index else None,
            skill_vectors=self.skill_vectors,
        )
        negatives = self.sampler.sample(ctx)
        unique, cand, mask = candidate_matrix(ctx.positives, negatives, self.device)
        skill_vectors = self.encoder([self.labels[u] for u in unique], max_length=self.encoder.settings.skill_max_length)
        if token_scoring:
            loss = late_interaction_loss(tokens, token_mask, skill_vectors, cand, mask, s.temperature,
                                         self.ranker.settings.token_temperature)
        else:
            loss = contrastive_loss(sentence_vectors, skill_vectors, cand, mask, s.temperature)
        self.optimizer.zero_grad()
        loss.backward()
        if s.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.encoder.parameters(), s.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach().cpu())

    def evaluate(self) -> Dict[str, float]:
        """Score the current weights (their evaluation index first) on the validation files and the dev signals."""
        self.encoder.eval()
        with self.ranker.ranking_with(self.evaluation_index()):
            return self.scores()

    def scores(self) -> Dict[str, float]:
        """The pipeline as it ranks now, on the validation files and the dev signals."""
        metrics = validation_scores(self.nlp, self.validation) if self.validation else {}
        if self.dev is not None:
            metrics.update(dev_signal_scores(self.nlp, self.dev))
        if self.settings.selection == "combined":
            metrics[COMBINED_METRIC] = combined_score(metrics)
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, progress: Progress, best_state: StateDict) -> None:
        """Write to a temporary folder and swap it in, so that an interrupted save leaves the last checkpoint."""
        tmp = self.checkpoint_dir.with_name(self.checkpoint_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save({"current": self.encoder.model.state_dict(), "best": best_state}, tmp / WEIGHTS_FILE)
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                   tmp / OPTIMIZER_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(progress.__dict__))
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        tmp.rename(self.checkpoint_dir)

    def load_checkpoint(self) -> tuple[Progress, StateDict]:
        """Restore the current weights, optimizer and schedule; return the progress and the best weights."""
        files = [self.checkpoint_dir / name for name in (STATE_FILE, WEIGHTS_FILE, OPTIMIZER_FILE)]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise FileNotFoundError(f"no checkpoint to resume from at '{self.checkpoint_dir}' (missing {missing})")
        weights = torch.load(self.checkpoint_dir / WEIGHTS_FILE, map_location=self.device, weights_only=True)
        self.encoder.model.load_state_dict(weights["current"])
        states = torch.load(self.checkpoint_dir / OPTIMIZER_FILE, map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(states["optimizer"])
        self.scheduler.load_state_dict(states["scheduler"])
        progress = Progress(**json.loads((self.checkpoint_dir / STATE_FILE).read_text()))
        return progress, weights["best"]

    # ------------------------------------------------------------------ the loop
    def run(self, resume: bool = False) -> Dict[str, Any]:
        from tqdm import tqdm

        s = self.settings
        self.output.mkdir(parents=True, exist_ok=True)
        log = (self.output / LOG_FILE).open("a" if resume else "w")
        if resume:
            progress, best_state = self.load_checkpoint()
        else:
            progress, best_state = Progress(), copy_state(self.encoder.model)
            progress.best_metrics = self.evaluate()
            progress.best = progress.best_metrics.get(self.selection_metric, -1.0)
            self._log(log, {"step": 0, **progress.best_metrics})
        start = progress.step
        started = time.time()
        losses: List[float] = []
        stream = shuffled_batches(self.pairs, s.batch_size, random.Random(self.seed), start_step=start)
        bar = tqdm(range(start, s.max_steps), desc="training", unit="step", initial=start, total=s.max_steps)
        stop_reason = "max_steps"
        for step in bar:
            losses.append(self.step(next(stream), step))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", best=f"{progress.best:.3f}")
            progress.step = step + 1
            out_of_time = bool(s.max_minutes) and (time.time() - started) / 60 > s.max_minutes
            if progress.step % s.eval_every == 0 or progress.step == s.max_steps or out_of_time:
                best_state = self._evaluate_and_checkpoint(progress, best_state, losses, started, log)
                if s.patience and progress.bad_evals >= s.patience:
                    stop_reason = f"no improvement in {s.patience} evaluations"
                    break
            if out_of_time:
                stop_reason = f"time budget of {s.max_minutes} min"
                break
        bar.close()
        alpha, best_metrics = self._interpolate(best_state, progress, log)
        log.close()
        return {"best_metrics": best_metrics, "steps": progress.step, "stop_reason": stop_reason,
                "interpolation": alpha, "selection": self.selection_metric,
                "train_seconds": round(time.time() - started, 1), "device": str(self.device),
                "first_loss": losses[0] if losses else None,
                "last_loss": float(np.mean(losses[-20:])) if losses else None}

    def _evaluate_and_checkpoint(self, progress: Progress, best_state: StateDict, losses: List[float],
                                 started: float, log: TextIO) -> StateDict:
        """Score the current weights; keep them as the best when they beat it (without validation files: the
        lower training loss); checkpoint. Returns the best weights."""
        loss = float(np.mean(losses[-self.settings.eval_every:]))
        metrics = self.evaluate()
        score = metrics.get(self.selection_metric, -loss)
        improved = score > progress.best
        if improved:
            progress.best, progress.bad_evals, progress.best_metrics = score, 0, metrics
            best_state = copy_state(self.encoder.model)
        else:
            progress.bad_evals += 1
        self._log(log, {"step": progress.step, "loss": loss, "elapsed_s": round(time.time() - started, 1),
                        "improved": improved, **metrics})
        self.save_checkpoint(progress, best_state)
        return best_state

    def _interpolate(self, best_state: StateDict, progress: Progress, log: TextIO) -> tuple[float, Dict[str, float]]:
        """Try each ``interpolation`` weight between the untrained and the best weights (1.0 = the best as they
        are, already scored); keep the one that scores best. Leaves that encoder and the index the ranker ships
        in place, on the CPU. Returns the weight and its metrics (of the shipped index)."""
        chosen, chosen_state, chosen_metrics = 1.0, best_state, progress.best_metrics
        best_score = progress.best
        for alpha in sorted(set(self.settings.interpolation) - {1.0}):
            state = interpolate_states(self.initial_state, best_state, alpha)
            self.encoder.model.load_state_dict(state)
            metrics = self.evaluate()
            score = metrics.get(self.selection_metric, float("-inf"))
            self._log(log, {"step": progress.step, "interpolation": alpha, "chosen": score > best_score, **metrics})
            if score > best_score:
                chosen, chosen_state, chosen_metrics, best_score = alpha, state, metrics, score
        self.encoder.model.load_state_dict(chosen_state)
        self.encoder.eval()
        if self.ship_index():  # what the pipeline ships ranks otherwise than what was selected: scored as it ships
            chosen_metrics = self.scores()
            self._log(log, {"step": progress.step, "interpolation": chosen,
                            "skill_text": self.ranker.settings.skill_text, **chosen_metrics})
        self.encoder.to("cpu")
        return chosen, chosen_metrics

    @staticmethod
    def _log(handle: TextIO, record: Dict[str, Any]) -> None:
        handle.write(json.dumps(record) + "\n")
        handle.flush()


def train(config_path: Path, corpus_dir: Optional[Path], output: Path, *, esco: Path,
          validation: Sequence[Path] = (), overrides: Sequence[str] = (), resume: bool = False) -> Dict[str, Any]:
    """Train the ranker of the pipeline a config describes and save the best pipeline to `output`."""
    config = read_config(config_path, overrides)
    settings, sampler, sources = resolve_training(config)
    device = resolve_device(settings.device)  # before any slow work: a missing GPU is a config error
    if settings.selection == "combined" and not settings.dev_signals:
        raise ConfigError('[training] selection = "combined" needs dev_signals = true')
    check_validation_files(validation)
    seed = config_seed(config)
    fix_random_seed(seed)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    # The corpus' boilerplate lines become the boilerplate filter's keys (corpus_boilerplate warns when absent).
    nlp = build_pipeline(pipeline_config(config), esco, boilerplate_path=corpus_boilerplate(corpus_dir))
    if RANKER not in nlp.pipe_names:
        raise ConfigError(f"[nlp] pipeline must contain '{RANKER}' to be trained, got {nlp.pipe_names}")
    taxonomy = find_taxonomy(nlp)
    validation = validation_for(taxonomy, validation)  # benchmark files that name none of its concepts: dropped
    check_corpus_taxonomy(taxonomy, corpus_dir)
    ctx = SupervisionContext(taxonomy, nlp.get_pipe(RANKER).index.uris, Path(corpus_dir) if corpus_dir else None,
                             random.Random(seed))
    pairs, counts = collect_pairs(sources, ctx)
    dev = build_dev_signals(taxonomy, ctx.corpus_dir, max_masked=settings.dev_max_masked,
                            max_paraphrases=settings.dev_max_paraphrases) if settings.dev_signals else None
    trainer = Trainer(nlp, settings, sampler, pairs, validation, output, seed, device, dev)
    summary = trainer.run(resume=resume)
    summary.update({"pairs": counts, "negatives": sampler.describe(), "seed": seed, "config": str(config_path)})
    nlp.meta.setdefault("esco", {})
    nlp.meta["esco"].update({"version": taxonomy.version, "training": summary, "training_config": config.to_str()})
    nlp.meta["performance"] = {k: v for k, v in summary["best_metrics"].items() if isinstance(v, (int, float))}
    if corpus_dir is not None and validation:  # the decided skill set: calibrated on the same corpus and files
        record_calibration(nlp, calibrate_pipeline(nlp, corpus_dir, validation))
    nlp.to_disk(output)
    return summary
