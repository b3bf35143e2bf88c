"""``esco_skill_reranker``: a cross-encoder that re-scores the first stage's top K skills of every sentence.

The bi-encoder ranker embeds a sentence and a skill apart, so it cannot look at one word of the sentence in the
light of the other (why "serverless framework" lands on *JavaScript Framework*). A cross-encoder reads the pair
(sentence, skill text) together, which is too slow for 13,896 skills but cheap for the K the first stage keeps
(Bielinski & Brazier, RecSys-in-HR 2025: bi-encoder retrieval, then cross-encoder ranking).

Placed after ``esco_skill_ranker`` and before ``esco_skill_decider``. For every sentence with a stored ranking:

- **candidates**: the first ``candidates`` (K) entries of the ranker's stored ranking. The reranker does not run
  the first stage again: the ranker's ``top_k`` must be at least K (checked, a ConfigError names both keys;
  ``rerank-train`` writes the pipeline with ``top_k = K``). Why not ask the ranker's ``score_texts`` for its top
  K: that is a second bi-encoder pass over every sentence, and the stored ranking already is the first stage's
  answer (threshold, skipped sentences and fusion applied once, in one place);
- **implied candidates** are scored ``(1 - first_stage_weight) * sigmoid(logit) + first_stage_weight * cosine``
  (the cosine is the ranker's, its fusion factor undone), then fused exactly as the ranker fuses: multiplied by
  ``1 - explicit_weight`` (the ranker's setting) in a sentence with a literal match. So scores stay in [0, 1]
  and the decider's features (which undo that factor) mean what they meant;
- **literal matches** (explicit) keep the ranker's fused score and so their place: the cross-encoder ranks what
  the matcher cannot vouch for;
- the new ranking keeps every literal match and the best implied skills up to ``top_k`` in all, written back in
  the contract's form (``set_predictions``): ``doc._.esco_skills``, ``sent._.esco_skills`` and everything that
  reads them (the decider, ``evaluate``, ``compare``, ``extract``) see it unchanged in form.

The model is ``AutoModelForSequenceClassification`` (one logit) initialised from the encoder weights named by
``model`` (resolved locally by ``resolve_model_path``, never downloaded): its classification head is new, so a
freshly initialised reranker refuses to run until ``python -m pipeline rerank-train`` has trained it (the
component's ``state.json`` records that). Weights and tokenizer are saved in the component's folder.
"""

from __future__ import annotations

import json
import shutil
import weakref
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import minibatch

from pipeline.components.encoder import resolve_model_path
from pipeline.components.factory import component_factory
from pipeline.components.pipes import DEFAULT_ENCODER, RANKER, RERANKER, find_taxonomy
from pipeline.components.predictions import SkillPrediction, implied_scale, register_extensions, set_predictions
from pipeline.components.segmenter import sentences
from pipeline.errors import ConfigError, IncompletePipelineError, NotInitializedError
from pipeline.io.serialization import Part, Serializable, bytes_folder, folder_bytes
from pipeline.settings import Field, Settings, StrictFloat, StrictInt, StrictStr

MODEL_DIR = "cross_encoder"
STATE_FILE = "state.json"
SORT_WINDOW = 8  # batches of docs whose pairs are sorted by length together (as the ranker does)
CrossTextMode = Literal["preferred", "preferred+description"]
Pair = Tuple[str, str]  # (sentence, skill text)


class RerankerSettings(Settings):
    """``[components.esco_skill_reranker]`` (see the module docstring for what each key does)."""

    model: StrictStr = Field(DEFAULT_ENCODER, min_length=1)  # weights the cross-encoder starts from (initialize)
    candidates: StrictInt = Field(20, ge=1)  # K: the first stage's top K re-scored per sentence
    top_k: StrictInt = Field(10, ge=1)  # skills kept per sentence afterwards (literal matches all kept)
    skill_text: CrossTextMode = "preferred"
    max_length: StrictInt = Field(64, ge=8)  # word pieces of a (sentence, skill text) pair, the longer cut first
    batch_size: StrictInt = Field(64, ge=1)
    first_stage_weight: StrictFloat = Field(0.0, ge=0.0, le=1.0)  # the ranker's cosine mixed into the score


def cross_text(taxonomy, uri: str, mode: str) -> str:
    """The skill's side of a pair: its preferred label, and its description after a colon when ``mode`` says so
    (the ranker's ``skill_texts`` form)."""
    skill = taxonomy.skills[uri]
    if "description" in mode and skill.description:
        return f"{skill.preferred_label}: {skill.description}"
    return skill.preferred_label


def quiet_transformers() -> Callable[[], None]:
    """Silence transformers' load report (the new head is 'MISSING' on purpose); returns the restore call."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    return lambda: hf_logging.set_verbosity(level)


class CrossEncoder(torch.nn.Module):
    """(sentence, skill text) pairs → one relevance logit each. ``forward`` keeps gradients (training);
    ``probabilities`` does not, and batches the pairs sorted by length."""

    def __init__(self, path: Union[str, Path], max_length: int):
        super().__init__()
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.max_length = max_length
        restore = quiet_transformers()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1,
                                                                            local_files_only=True)
        finally:
            restore()
        self.model.eval()

    def forward(self, pairs: Sequence[Pair]) -> torch.Tensor:
        """[B] logits."""
        batch = self.tokenizer([s for s, _ in pairs], [k for _, k in pairs], padding=True, truncation="longest_first",
                               max_length=self.max_length, return_tensors="pt").to(self.model.device)
        return self.model(**batch).logits[:, 0]

    @torch.inference_mode()
    def probabilities(self, pairs: Sequence[Pair], batch_size: int) -> np.ndarray:
        """[len(pairs)] sigmoid(logit), in input order; batches cut from the pairs sorted by length (less padding)."""
        out = np.zeros(len(pairs), np.float32)
        order = np.argsort([len(s) + len(k) for s, k in pairs], kind="stable")
        was_training = self.training
        self.eval()
        try:
            for start in range(0, len(pairs), batch_size):
                idx = order[start:start + batch_size]
                out[idx] = torch.sigmoid(self([pairs[i] for i in idx])).float().cpu().numpy()
        finally:
            self.train(was_training)
        return out

    def save(self, path: Union[str, Path]) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(path), safe_serialization=True)
        self.tokenizer.save_pretrained(str(path))

    def to_bytes(self) -> bytes:
        """What ``save`` writes, as msgpack of {file name: bytes} (one way to write the model)."""
        return folder_bytes(self.save, "esco-reranker-")

    @classmethod
    def from_bytes(cls, data: bytes, max_length: int) -> "CrossEncoder":
        """transformers reads files only: the bytes go through a folder removed with the model."""
        folder = bytes_folder(data, "esco-reranker-")
        model = cls(folder, max_length)
        weakref.finalize(model, shutil.rmtree, folder, ignore_errors=True)
        return model


class SkillReranker(Serializable):
    def __init__(self, nlp: Language, name: str = RERANKER, settings: RerankerSettings = RerankerSettings()):
        self.nlp, self.name, self.settings = nlp, name, settings
        self.model: Optional[CrossEncoder] = None
        self.state: Dict[str, object] = {"trained": False}
        register_extensions()

    # ------------------------------------------------------------------ setup
    def initialize(self, get_examples: Optional[Callable] = None, *, nlp: Optional[Language] = None) -> None:
        """The encoder weights with a new, untrained classification head (``rerank-train`` trains it)."""
        self.model = CrossEncoder(resolve_model_path(self.settings.model), self.settings.max_length)
        self.state = {"trained": False}

    def mark_trained(self, summary: Dict[str, object]) -> None:
        """What the trainer calls once the head (and the encoder) are trained: the component may run."""
        self.state = {"trained": True, "training": summary}

    # ------------------------------------------------------------------ running
    def __call__(self, doc: Doc) -> Doc:
        return next(iter(self.pipe([doc])))

    def pipe(self, docs: Iterable[Doc], batch_size: int = 64) -> Iterator[Doc]:
        """The pairs of many docs are scored together, sorted by length (the ranker's ``SORT_WINDOW``)."""
        weight = self._check_ready()
        taxonomy = find_taxonomy(self.nlp)
        for batch in minibatch(docs, size=batch_size * SORT_WINDOW):
            rankings = [doc._.esco_sentence_skills for doc in batch]
            pairs = self.candidate_pairs(batch, rankings, taxonomy)
            unique = list(dict.fromkeys(pairs))
            probs = dict(zip(unique, self.model.probabilities(unique, self.settings.batch_size))) if unique else {}
            for doc, per_sentence in zip(batch, rankings):
                texts = {sent.start: sent.text.strip() for sent in sentences(doc)}
                set_predictions(doc, {start: self.rerank(texts.get(start, ""), ranking, probs, weight, taxonomy)
                                      for start, ranking in per_sentence.items()})
                yield doc

    def candidate_pairs(self, docs: Sequence[Doc], rankings: Sequence[Dict[int, List[SkillPrediction]]],
                        taxonomy) -> List[Pair]:
        """Every (sentence, skill text) pair the batch needs: the implied skills among each sentence's top K."""
        pairs: List[Pair] = []
        for doc, per_sentence in zip(docs, rankings):
            texts = {sent.start: sent.text.strip() for sent in sentences(doc)}
            for start, ranking in per_sentence.items():
                pairs.extend((texts.get(start, ""), cross_text(taxonomy, p.uri, self.settings.skill_text))
                             for p in self.implied_candidates(ranking))
        return pairs

    def implied_candidates(self, ranking: Sequence[SkillPrediction]) -> List[SkillPrediction]:
        return [p for p in ranking[: self.settings.candidates] if not p.explicit]

    def rerank(self, text: str, ranking: List[SkillPrediction], probs: Dict[Pair, float], explicit_weight: float,
               taxonomy) -> List[SkillPrediction]:
        """One sentence's new ranking (the module docstring's rule); a sentence without implied candidates keeps
        its ranking."""
        implied = self.implied_candidates(ranking)
        if not implied:
            return ranking
        explicit = [p for p in ranking if p.explicit]
        scale = implied_scale(bool(explicit), explicit_weight)
        unfuse = 1.0 / scale if scale > 0.0 else 1.0
        mix = self.settings.first_stage_weight
        rescored = []
        for pred in implied:
            cross = probs[(text, cross_text(taxonomy, pred.uri, self.settings.skill_text))]
            score = (1.0 - mix) * float(cross) + mix * min(1.0, pred.score * unfuse)
            rescored.append(SkillPrediction(pred.uri, pred.label, score * scale, False, list(pred.spans)))
        rescored.sort(key=lambda p: -p.score)
        kept = explicit + rescored[: max(0, self.settings.top_k - len(explicit))]
        return sorted(kept, key=lambda p: -p.score)

    def _check_ready(self) -> float:
        """The ranker's explicit_weight, once the reranker can run: trained, after a ranker that keeps K."""
        if self.model is None:
            raise NotInitializedError(f"'{self.name}' is not initialized: train it with `python -m pipeline "
                                      "rerank-train` (or load a pipeline that holds a trained one).")
        if not self.state.get("trained"):
            raise NotInitializedError(f"'{self.name}' has an untrained classification head: train it with "
                                      "`python -m pipeline rerank-train` before running it.")
        if RANKER not in self.nlp.pipe_names:
            raise ConfigError(f"[components.{self.name}] re-scores the ranking of '{RANKER}', which the pipeline "
                              f"lacks ({self.nlp.pipe_names})")
        ranker = self.nlp.get_pipe(RANKER).settings
        if ranker.top_k < self.settings.candidates:
            raise ConfigError(f"[components.{self.name}] candidates = {self.settings.candidates} but "
                              f"[components.{RANKER}] top_k = {ranker.top_k}: the reranker re-scores the ranker's "
                              f"stored top K, so set components.{RANKER}.top_k >= {self.settings.candidates}")
        return float(ranker.explicit_weight)

    # ------------------------------------------------------------------ serialization
    def serialization_parts(self) -> Dict[str, Part]:
        """The cross-encoder (a folder of transformer files) and ``state.json`` (whether it was trained, how)."""
        return {
            MODEL_DIR: Part(lambda: self._initialized().model.to_bytes(), self._model_from_bytes,
                            write=lambda path: self._initialized().model.save(path), read=self._load_model),
            STATE_FILE: Part(lambda: json.dumps(self.state, sort_keys=True).encode("utf-8"),
                             lambda data: setattr(self, "state", json.loads(data))),
        }

    def _initialized(self) -> "SkillReranker":
        if self.model is None:
            raise NotInitializedError(f"'{self.name}' has nothing to save: initialize or train it first.")
        return self

    def _model_from_bytes(self, data: bytes) -> None:
        self.model = CrossEncoder.from_bytes(data, self.settings.max_length)

    def _load_model(self, folder: Path) -> None:
        IncompletePipelineError.unless_exists(folder / "config.json", f"component '{self.name}'")
        self.model = CrossEncoder(folder, self.settings.max_length)


@component_factory(RERANKER, RerankerSettings, assigns=["doc._.esco_skills", "doc._.esco_sentence_skills"],
                   requires=["doc._.esco_sentence_skills"])
def make_skill_reranker(nlp: Language, name: str, settings: RerankerSettings) -> SkillReranker:
    return SkillReranker(nlp, name, settings)
