"""The project trainer: reads a spaCy config through spaCy's registry and trains the ranker's encoder.

Why not ``spacy train``: the ranker's model is a PyTorch transformer whose loss needs the whole batch at once
(in-batch and mined negatives, a skill index refreshed every N steps) and model selection needs ranking
metrics on the benchmark's validation files. So this loop owns the optimizer, while everything it uses is
named in the same config ``spacy.load`` and ``spacy package`` read: ``[nlp]``/``[components]`` build the
pipeline, ``[training]`` holds the loop settings, ``[training.negatives]`` the strategy and
``[training.supervision]`` the sources of positive pairs, all resolved through registries.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from spacy.language import Language
from spacy.util import fix_random_seed, load_config, registry
from thinc.api import Config

import pipeline.training.negatives as _negatives  # noqa: F401 - registers the samplers
import pipeline.training.supervision as _supervision  # noqa: F401 - registers the sources
from pipeline.components.assembly import build_pipeline
from pipeline.errors import ConfigError
from pipeline.training.masking import mask_mentions
from pipeline.training.negatives import NegativeSampler, SamplingContext
from pipeline.training.supervision import PairSource, SupervisionContext, TrainingPair, collect_pairs

RANKER = "esco_skill_ranker"
LOG_FILE = "training_log.jsonl"


@dataclass
class TrainingSettings:
    """The ``[training]`` section. Every key is checked up front; errors name the key."""

    max_steps: int = 500
    batch_size: int = 32
    learning_rate: float = 3e-5
    warmup_steps: int = 50
    weight_decay: float = 0.01
    temperature: float = 0.05
    mask_probability: float = 0.0
    eval_every: int = 100
    patience: int = 3
    max_minutes: float = 60.0
    max_grad_norm: float = 1.0
    torch_threads: int = 0

    RANGES = {
        "max_steps": (1, None), "batch_size": (2, None), "learning_rate": (0.0, 1.0), "warmup_steps": (0, None),
        "weight_decay": (0.0, 1.0), "temperature": (1e-4, 10.0), "mask_probability": (0.0, 1.0),
        "eval_every": (1, None), "patience": (0, None), "max_minutes": (0.0, None), "max_grad_norm": (0.0, None),
        "torch_threads": (0, None),
    }

    @classmethod
    def from_section(cls, section: Dict[str, Any]) -> "TrainingSettings":
        known = {f.name: f for f in fields(cls)}
        values = {}
        for key, value in section.items():
            if key in ("negatives", "supervision"):
                continue
            if key not in known:
                raise ConfigError(f"[training] unknown key '{key}'; known keys: {sorted(known) + ['negatives', 'supervision']}")
            expected = type(known[key].default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (expected is int and not isinstance(value, int)):
                raise ConfigError(f"[training] {key} must be {expected.__name__}, got {value!r}")
            low, high = cls.RANGES[key]
            if value < low or (high is not None and value > high):
                raise ConfigError(f"[training] {key} must be in [{low}, {high if high is not None else '∞'}], got {value}")
            values[key] = expected(value)
        return cls(**values)


def read_config(path: Path, overrides: Sequence[str] = ()) -> Config:
    """Load a training config with ``--set section.key=value`` overrides (values parsed as JSON when possible)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"training config '{path}' not found")
    parsed: Dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        key, value = item.split("=", 1)
        try:
            parsed[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key.strip()] = value
    try:
        return load_config(path, overrides=parsed, interpolate=False)
    except Exception as err:  # confection raises several types for bad files and keys
        raise ConfigError(f"cannot read training config '{path}': {err}") from err


def resolve_training(config: Config) -> Tuple[TrainingSettings, NegativeSampler, Dict[str, PairSource]]:
    if "training" not in config:
        raise ConfigError("the config has no [training] section")
    section = config.interpolate()["training"]
    for key in ("negatives", "supervision"):
        if key not in section:
            raise ConfigError(f"[training.{key}] is missing")
    settings = TrainingSettings.from_section(section)
    try:
        resolved = registry.resolve({"negatives": section["negatives"], "supervision": section["supervision"]})
    except Exception as err:
        raise ConfigError(f"[training.negatives] / [training.supervision] could not be resolved: {err}") from err
    sampler = resolved["negatives"]
    if not isinstance(sampler, NegativeSampler):
        raise ConfigError(f"[training.negatives] must name a registered negative sampler, got {sampler!r}")
    return settings, sampler, dict(resolved["supervision"])


def pipeline_config(config: Config) -> Config:
    """The parts of a training config that describe the pipeline itself (what gets saved with it)."""
    keep = {key: config[key] for key in ("paths", "system", "nlp", "components", "initialize") if key in config}
    return Config(keep)


# ---------------------------------------------------------------------------------------------- the loss
def contrastive_loss(sentence_vectors: torch.Tensor, skill_vectors: torch.Tensor, candidates: torch.Tensor,
                     candidate_mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with per-example candidate lists; the positive is candidate 0.

    sentence_vectors: [B, D]; skill_vectors: [U, D] (unique skills of the step);
    candidates: [B, C] indices into skill_vectors; candidate_mask: [B, C] True where a candidate exists.
    """
    cand = skill_vectors[candidates]  # [B, C, D]
    logits = torch.einsum("bd,bcd->bc", sentence_vectors, cand) / temperature  # [B, C]
    logits = logits.masked_fill(~candidate_mask, float("-inf"))
    target = torch.zeros(len(logits), dtype=torch.long)
    return torch.nn.functional.cross_entropy(logits, target)


def candidate_matrix(positives: Sequence[int], negatives: Sequence[Sequence[int]]) -> Tuple[List[int], torch.Tensor, torch.Tensor]:
    """Unique skills of the step, and each example's [positive, negatives...] as indices into them."""
    unique: Dict[int, int] = {}
    for skill in list(positives) + [n for row in negatives for n in row]:
        unique.setdefault(skill, len(unique))
    width = 1 + max((len(row) for row in negatives), default=0)
    cand = torch.zeros((len(positives), width), dtype=torch.long)
    mask = torch.zeros((len(positives), width), dtype=torch.bool)
    for i, (pos, row) in enumerate(zip(positives, negatives)):
        ids = [unique[pos]] + [unique[n] for n in row]
        cand[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = True
    return list(unique), cand, mask


def mask_text(pair: TrainingPair, probability: float, rng: random.Random, mask_token: str) -> str:
    if not probability or not pair.mentions:
        return pair.text
    mentions = [{"start": s, "end": e, "uri": u} for s, e, u in pair.mentions]
    return mask_mentions(pair.text, mentions, probability, rng, mask_token)


def batches(pairs: List[TrainingPair], size: int, rng: random.Random, start_step: int = 0) -> Iterator[List[TrainingPair]]:
    """Endless epochs of shuffled batches; skipping `start_step` batches makes resuming exact."""
    step = 0
    while True:
        order = list(range(len(pairs)))
        rng.shuffle(order)
        for i in range(0, len(order) - size + 1 if len(order) >= size else 1, size):
            if step >= start_step:
                yield [pairs[j] for j in order[i : i + size]]
            step += 1


def validation_scores(nlp: Language, files: Sequence[Path]) -> Dict[str, float]:
    """RP@5 / RP@10 / MRR per validation file, and the mean RP@5 that model selection maximizes."""
    from pipeline.evaluation.benchmark import evaluate_benchmark

    out: Dict[str, float] = {}
    for path in files:
        metrics = evaluate_benchmark(nlp, path).metrics
        name = Path(path).name.split("_")[0]
        out.update({f"{name}/{key}": metrics[key] for key in ("rp@5", "rp@10", "mrr")})
    out["rp@5"] = float(np.mean([out[f"{Path(p).name.split('_')[0]}/rp@5"] for p in files]))
    return out


# ---------------------------------------------------------------------------------------------- the loop
class Trainer:
    def __init__(self, nlp: Language, settings: TrainingSettings, sampler: NegativeSampler, pairs: List[TrainingPair],
                 validation: Sequence[Path], output: Path, seed: int):
        self.nlp, self.settings, self.sampler, self.pairs = nlp, settings, sampler, pairs
        self.validation, self.output, self.seed = list(validation), Path(output), seed
        self.ranker = nlp.get_pipe(RANKER)
        self.encoder = self.ranker.encoder
        if self.encoder.settings.quantize:
            raise ConfigError(f"[components.{RANKER}.encoder] quantize is an inference option; train with "
                              "quantize = false and turn it on when loading the trained pipeline")
        self.taxonomy = nlp.get_pipe("esco_skill_matcher").taxonomy
        self.uris = list(self.ranker.index.uris)
        self.labels = list(self.ranker.index.labels)
        self.sampler.bind(self.taxonomy, self.uris)
        self.optimizer = torch.optim.AdamW(self.encoder.parameters(), lr=settings.learning_rate,
                                           weight_decay=settings.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.checkpoint_dir = self.output.with_name(self.output.name + ".checkpoint")
        self.skill_vectors: Optional[np.ndarray] = None
        self.rng = random.Random(seed)

    def _lr_factor(self, step: int) -> float:
        warm = self.settings.warmup_steps
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (self.settings.max_steps - step) / max(1, self.settings.max_steps - warm))

    def refresh_index(self) -> None:
        self.skill_vectors = self.encoder.encode(self.labels, max_length=self.encoder.settings.skill_max_length)

    def step(self, batch: List[TrainingPair], step: int) -> float:
        s = self.settings
        self.encoder.train()
        texts = [mask_text(p, s.mask_probability, self.rng, self.encoder.mask_token) for p in batch]
        sentence_vectors = self.encoder(texts)  # [B, D]
        if self.sampler.needs_index and (self.skill_vectors is None or step % self.sampler.refresh_every == 0):
            self.refresh_index()
        ctx = SamplingContext(
            positives=[p.skill for p in batch], gold=[p.gold for p in batch], rng=self.rng,
            sentence_vectors=sentence_vectors.detach().numpy() if self.sampler.needs_index else None,
            skill_vectors=self.skill_vectors,
        )
        negatives = self.sampler.sample(ctx)
        unique, cand, mask = candidate_matrix(ctx.positives, negatives)
        skill_vectors = self.encoder([self.labels[u] for u in unique], max_length=self.encoder.settings.skill_max_length)
        loss = contrastive_loss(sentence_vectors, skill_vectors, cand, mask, s.temperature)
        self.optimizer.zero_grad()
        loss.backward()
        if s.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.encoder.parameters(), s.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def evaluate(self) -> Dict[str, float]:
        """Rebuild the skill index with the current encoder and score the validation files."""
        self.encoder.eval()
        self.ranker.rebuild_index(self.taxonomy)
        if not self.validation:
            return {}
        return validation_scores(self.nlp, self.validation)

    def save_checkpoint(self, step: int, best: float, bad_evals: int) -> None:
        tmp = self.checkpoint_dir.with_name(self.checkpoint_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.encoder.save(tmp / "encoder")
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                   tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "best": best, "bad_evals": bad_evals}))
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        tmp.rename(self.checkpoint_dir)

    def load_checkpoint(self) -> Tuple[int, float, int]:
        state_file = self.checkpoint_dir / "state.json"
        if not state_file.exists():
            raise FileNotFoundError(f"no checkpoint to resume from at '{self.checkpoint_dir}'")
        from transformers import AutoModel

        model = AutoModel.from_pretrained(str(self.checkpoint_dir / "encoder"), local_files_only=True)
        self.encoder.model.load_state_dict(model.state_dict())
        states = torch.load(self.checkpoint_dir / "optimizer.pt", weights_only=True)
        self.optimizer.load_state_dict(states["optimizer"])
        self.scheduler.load_state_dict(states["scheduler"])
        state = json.loads(state_file.read_text())
        return state["step"], state["best"], state["bad_evals"]

    def run(self, resume: bool = False) -> Dict[str, Any]:
        from tqdm import tqdm

        s = self.settings
        self.output.mkdir(parents=True, exist_ok=True)
        log = (self.output / LOG_FILE).open("a" if resume else "w")
        start, best, bad_evals = self.load_checkpoint() if resume else (0, -1.0, 0)
        best_state = {k: v.detach().clone() for k, v in self.encoder.model.state_dict().items()}
        best_metrics: Dict[str, float] = {}
        if not resume:
            best_metrics = self.evaluate()
            best = best_metrics.get("rp@5", -1.0)
            self._log(log, {"step": 0, **best_metrics})
        started = time.time()
        losses: List[float] = []
        stream = batches(self.pairs, s.batch_size, random.Random(self.seed), start_step=start)
        bar = tqdm(range(start, s.max_steps), desc="training", unit="step", initial=start, total=s.max_steps)
        stop_reason = "max_steps"
        for step in bar:
            losses.append(self.step(next(stream), step))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", best=f"{best:.3f}")
            done = step + 1 == s.max_steps
            out_of_time = s.max_minutes and (time.time() - started) / 60 > s.max_minutes
            if (step + 1) % s.eval_every == 0 or done or out_of_time:
                metrics = self.evaluate()
                score = metrics.get("rp@5", -float(np.mean(losses[-s.eval_every:])))
                improved = score > best
                if improved:
                    best, bad_evals, best_metrics = score, 0, metrics
                    best_state = {k: v.detach().clone() for k, v in self.encoder.model.state_dict().items()}
                else:
                    bad_evals += 1
                self._log(log, {"step": step + 1, "loss": float(np.mean(losses[-s.eval_every:])),
                                "elapsed_s": round(time.time() - started, 1), "improved": improved, **metrics})
                self.save_checkpoint(step + 1, best, bad_evals)
                if s.patience and bad_evals >= s.patience:
                    stop_reason = f"no improvement in {s.patience} evaluations"
                    break
            if out_of_time:
                stop_reason = f"time budget of {s.max_minutes} min"
                break
        bar.close()
        log.close()
        self.encoder.model.load_state_dict(best_state)
        self.encoder.eval()
        self.ranker.rebuild_index(self.taxonomy)
        return {"best_metrics": best_metrics, "steps": step + 1 if s.max_steps > start else start,
                "stop_reason": stop_reason, "train_seconds": round(time.time() - started, 1),
                "first_loss": losses[0] if losses else None, "last_loss": float(np.mean(losses[-20:])) if losses else None}

    @staticmethod
    def _log(handle, record: Dict[str, Any]) -> None:  # noqa: ANN001
        handle.write(json.dumps(record) + "\n")
        handle.flush()


def train(config_path: Path, corpus_dir: Optional[Path], output: Path, *, esco: Path,
          validation: Sequence[Path] = (), overrides: Sequence[str] = (), resume: bool = False) -> Dict[str, Any]:
    """Train the ranker of the pipeline a config describes and save the best pipeline to `output`."""
    config = read_config(config_path, overrides)
    settings, sampler, sources = resolve_training(config)
    seed = int(config.get("system", {}).get("seed", 0))
    fix_random_seed(seed)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    nlp = build_pipeline(pipeline_config(config), esco)
    if RANKER not in nlp.pipe_names:
        raise ConfigError(f"[nlp] pipeline must contain '{RANKER}' to be trained, got {nlp.pipe_names}")
    ranker = nlp.get_pipe(RANKER)
    ctx = SupervisionContext(nlp.get_pipe("esco_skill_matcher").taxonomy, ranker.index.uris,
                             Path(corpus_dir) if corpus_dir else None, random.Random(seed))
    pairs, counts = collect_pairs(sources, ctx)
    trainer = Trainer(nlp, settings, sampler, pairs, validation, output, seed)
    summary = trainer.run(resume=resume)
    summary.update({"pairs": counts, "negatives": sampler.describe(), "seed": seed, "config": str(config_path)})
    nlp.meta.setdefault("esco", {})
    nlp.meta["esco"].update({"version": trainer.taxonomy.version, "training": summary,
                             "training_config": config.to_str()})
    nlp.meta["performance"] = {k: v for k, v in summary["best_metrics"].items() if isinstance(v, (int, float))}
    nlp.to_disk(output)
    return summary
