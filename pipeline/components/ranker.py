"""``esco_skill_ranker``: a bi-encoder that ranks all ESCO skills for every sentence.

Sentences and skills are embedded by the same encoder; a skill's score for a sentence is the cosine similarity
with its labels (preferred label, and alternative labels or the description when ``skill_text`` says so), pooled
over them by ``label_pooling`` (max: the best-matching label; mean), then blended with the preferred label's own
cosine by ``preferred_weight`` (``w * preferred + (1 - w) * pooled``), and clipped to [0, 1]: an
alternative label is weaker evidence than the name ESCO gives the skill (some are broader, some name a neighbour),
so a sentence that matches only an alternative label well ranks a little lower than one that matches the name. The
skill side is embedded once into an index stored in the component folder, which records the ``skill_text`` it was
built with: loading it under another ``skill_text`` fails until ``rebuild_index`` is called.

``scoring`` chooses the sentence side: ``"sentence"`` compares the mean-pooled sentence vector with each skill;
``"token"`` compares every token's contextual vector with the skill and pools the similarities with softmax
weights at ``token_temperature`` (ConTeXT-match, Decorte et al. 2025): a skill named or implied by two words of
a long sentence is not diluted by the other twenty. Token scoring costs a [tokens × skill texts] product per
sentence.

Fusion with the literal matcher (when it ran first): for each sentence,
``score = (1 - explicit_weight) * ranker_score + explicit_weight * match_score`` where ``match_score`` is the
matcher's score for skills it found literally and 0 otherwise. With ``explicit_weight = 0`` this is the ranker
alone; at 0.5 or more every literal match ranks above every implied skill.
"""

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Literal, Optional, Sequence, Tuple, Union, get_args

import numpy as np
import srsly
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.util import minibatch

from pipeline.components.encoder import ENCODER_SETTINGS, EncoderSettings, TransformerEncoder, resolve_model_path
from pipeline.components.factory import component_factory
from pipeline.errors import ConfigError, IncompletePipelineError, NotInitializedError
from pipeline.components.pipes import RANKER, find_taxonomy, load_pipeline
from pipeline.components.predictions import (SkillPrediction, TokenEncoding, implied_scale, keep_piece_vectors,
                                              register_extensions, set_predictions, skipped_sentences)
from pipeline.esco.taxonomy import EscoTaxonomy, Skill
from pipeline.settings import Field, Settings, StrictFloat, StrictInt
from pipeline.io.serialization import Part, Serializable, npy_bytes, read_npy
from pipeline.components.segmenter import sentences

SkillTextMode = Literal["preferred", "preferred+alt", "preferred+description", "preferred+alt+description"]
SKILL_TEXTS = get_args(SkillTextMode)
Scoring = Literal["sentence", "token"]
LabelPooling = Literal["max", "mean"]
ENCODER_DIR = "encoder"
INDEX_FILE = "skill_index.npy"
SKILLS_FILE = "skills.msgpack"
SORT_WINDOW = 8  # encoder batches' worth of docs sorted by length together
POOL_BLOCK = 256  # sentences scored together against an index of several texts per skill (~100 MB at ~99k texts)


def skill_texts(skill: Skill, mode: str) -> List[str]:
    """The texts that stand for a skill in the index; its score is the max over them."""
    texts = [skill.preferred_label]
    if "alt" in mode:
        texts += [label for label in skill.alt_labels if label != skill.preferred_label]
    if "description" in mode and skill.description:
        texts.append(f"{skill.preferred_label}: {skill.description}")
    return texts


class SkillIndex:
    """Label embeddings grouped by skill (rows of one skill are contiguous), float16 on disk."""

    def __init__(self, uris: List[str], labels: List[str], types: List[str], vectors: np.ndarray,
                 offsets: np.ndarray, mode: Optional[str] = None):
        self.uris, self.labels, self.types = uris, labels, types
        self.mode = mode  # the skill_text it was built with (None: an index saved before it was recorded)
        self.vectors = vectors.astype(np.float32)  # [n_texts, D]
        self.offsets = offsets.astype(np.int64)  # [n_skills]: first row of each skill
        self.position = {uri: i for i, uri in enumerate(uris)}

    def __len__(self) -> int:
        return len(self.uris)

    @classmethod
    def build(cls, taxonomy: EscoTaxonomy, encoder: TransformerEncoder, mode: str,
              progress: bool = False) -> "SkillIndex":
        uris, labels, types, texts, offsets = [], [], [], [], []
        for uri, skill in taxonomy.skills.items():
            uris.append(uri)
            labels.append(skill.preferred_label)
            types.append(skill.skill_type)
            offsets.append(len(texts))
            texts.extend(skill_texts(skill, mode))
        vectors = encoder.encode(texts, max_length=encoder.settings.skill_max_length, progress=progress)
        return cls(uris, labels, types, vectors, np.asarray(offsets), mode)

    def scores(self, sentence_vectors: np.ndarray, pooling: str = "max", preferred_weight: float = 0.0
               ) -> np.ndarray:
        """[S, D] sentence embeddings → [S, n_skills] cosine, pooled over each skill's texts. With several texts
        per skill the [S, n_texts] similarities are made a block of sentences at a time: a window of whole ads is
        thousands of sentences, and ~99k texts would make that a matrix of gigabytes."""
        if not self.several_texts:
            return sentence_vectors @ self.vectors.T
        out = np.empty((len(sentence_vectors), len(self.offsets)), np.float32)
        for start in range(0, len(sentence_vectors), POOL_BLOCK):
            block = sentence_vectors[start:start + POOL_BLOCK]
            sims = block @ self.vectors.T  # [B, n_texts] → pooled [B, n_skills]
            out[start:start + len(block)] = self.pool(sims, pooling, preferred_weight)
        return out

    def pool(self, sims: np.ndarray, pooling: str = "max", preferred_weight: float = 0.0) -> np.ndarray:
        """[S, n_texts] similarities → [S, n_skills], max or mean over each skill's texts, blended with the preferred
        label's similarity (each skill's first text) by ``preferred_weight``."""
        if len(self.offsets) == sims.shape[1]:
            return sims
        if pooling == "mean":
            counts = np.diff(np.append(self.offsets, sims.shape[1]))
            pooled = np.add.reduceat(sims, self.offsets, axis=1) / counts
        else:
            pooled = np.maximum.reduceat(sims, self.offsets, axis=1)
        if preferred_weight:  # in place: one [S, n_skills] temporary, the preferred labels' column
            preferred = np.take(sims, self.offsets, axis=1)
            preferred *= preferred_weight
            pooled *= 1.0 - preferred_weight
            pooled += preferred
        return pooled

    @property
    def several_texts(self) -> bool:
        """Whether a skill is scored over more texts than its preferred label (an index with alternative labels or
        descriptions)."""
        return len(self.vectors) > len(self.offsets)

    def preferred_scores(self, sentence_vector: np.ndarray, skills: Sequence[int]) -> np.ndarray:
        """[len(skills)] cosine of one sentence vector with those skills' preferred labels (each skill's first
        row), clipped to [0, 1]."""
        rows = self.offsets[np.asarray(skills, np.int64)]
        return np.clip(self.vectors[rows] @ sentence_vector, 0.0, 1.0)

    def token_scores(self, tokens: np.ndarray, temperature: float, pooling: str = "max",
                     preferred_weight: float = 0.0) -> np.ndarray:
        """[T, D] one sentence's token vectors → [n_skills]: per skill text, the token similarities pooled with
        softmax weights (temperature → 0: the best token; → ∞: their mean), then pooled over the skill's texts."""
        if not len(tokens):
            return np.zeros(len(self.uris), np.float32)
        sims = tokens @ self.vectors.T  # [T, n_texts]
        weights = np.exp((sims - sims.max(axis=0, keepdims=True)) / temperature)
        pooled = (weights * sims).sum(axis=0) / weights.sum(axis=0)  # [n_texts]
        return self.pool(pooled[None, :], pooling, preferred_weight)[0]

    @classmethod
    def empty(cls) -> "SkillIndex":
        """What a ranker loads its saved index into (``load_vectors``, ``load_skills``)."""
        return cls([], [], [], np.zeros((0, 0), np.float32), np.zeros(0, np.int64))

    def vectors_bytes(self) -> bytes:
        """``INDEX_FILE``: the vectors as float16 (half the size)."""
        return npy_bytes(self.vectors.astype(np.float16))

    def load_vectors(self, data: bytes) -> None:
        self.vectors = read_npy(data).astype(np.float32)

    def skills_bytes(self) -> bytes:
        """``SKILLS_FILE``: which skill each block of rows stands for, and the ``skill_text`` it was built with."""
        return srsly.msgpack_dumps({"uris": self.uris, "labels": self.labels, "types": self.types,
                                    "offsets": self.offsets.tolist(), "mode": self.mode})

    def load_skills(self, data: bytes) -> None:
        meta = srsly.msgpack_loads(data)
        self.uris, self.labels, self.types, self.mode = meta["uris"], meta["labels"], meta["types"], meta.get("mode")
        self.offsets = np.asarray(meta["offsets"], np.int64)
        self.position = {uri: i for i, uri in enumerate(self.uris)}


class RankerSettings(Settings):
    """``[components.esco_skill_ranker]`` (see the module docstring for what each key does)."""

    encoder: EncoderSettings = EncoderSettings()
    skill_text: SkillTextMode = "preferred"
    label_pooling: LabelPooling = "max"
    preferred_weight: StrictFloat = Field(0.0, ge=0.0, le=1.0)  # 0: the pooled labels alone; 1: the preferred label
    scoring: Scoring = "sentence"
    token_temperature: StrictFloat = Field(0.05, gt=0.0)
    top_k: StrictInt = Field(10, ge=1)
    threshold: StrictFloat = Field(0.0, ge=0.0, le=1.0)  # implied skills scoring below it are left out
    explicit_weight: StrictFloat = Field(0.5, ge=0.0, le=1.0)
    min_sentence_chars: StrictInt = Field(3, ge=0)  # shorter sentences are not ranked

    @classmethod
    def defaults(cls) -> Dict[str, object]:
        """The factory's config: the encoder block names its registered function, as configs always did."""
        defaults = super().defaults()
        return {**defaults, "encoder": {"@misc": ENCODER_SETTINGS, **defaults["encoder"]}}


class SkillRanker(Serializable):
    def __init__(self, nlp: Language, name: str = RANKER, settings: RankerSettings = RankerSettings()):
        self.nlp, self.name = nlp, name
        self.settings = settings
        self.encoder: Optional[TransformerEncoder] = None
        self.index: Optional[SkillIndex] = None
        register_extensions()

    # ------------------------------------------------------------------ setup
    def initialize(self, get_examples: Optional[Callable] = None, *, nlp: Optional[Language] = None,
                   esco_path: Optional[str] = None) -> None:
        """Resolve the encoder weights locally and embed every ESCO skill."""
        try:  # the knowledge base of a component before it (the matcher), else the taxonomy at esco_path
            taxonomy = find_taxonomy(nlp or self.nlp)
        except ConfigError:
            if not esco_path:
                raise
            taxonomy = EscoTaxonomy.load(esco_path)
        self.encoder = TransformerEncoder(resolve_model_path(self.settings.encoder.name), self.settings.encoder)
        self.rebuild_index(taxonomy)

    def rebuild_index(self, taxonomy: EscoTaxonomy, progress: bool = False) -> None:
        """Re-embed the skills, e.g. after training changed the encoder."""
        if self.encoder is None:
            raise NotInitializedError(f"'{self.name}' has no encoder: initialize it first.")
        self.index = SkillIndex.build(taxonomy, self.encoder, self.settings.skill_text, progress=progress)

    @contextmanager
    def ranking_with(self, index: SkillIndex) -> Iterator["SkillRanker"]:
        """Rank with another index, under the ``skill_text`` it was built with, until the block ends: the trainer
        scores its checkpoints with an index of preferred labels (13,896 texts to embed per evaluation) while the
        pipeline ships one with every alternative label (seven times as many)."""
        if index.mode is None:
            raise ValueError("ranking_with needs an index that records its skill_text (SkillIndex.build does)")
        kept = self.index, self.settings
        self.index = index
        self.settings = self.settings.replace(f"components.{self.name}", skill_text=index.mode)
        try:
            yield self
        finally:
            self.index, self.settings = kept

    # ------------------------------------------------------------------ running
    def __call__(self, doc: Doc) -> Doc:
        return next(iter(self.pipe([doc])))

    def pipe(self, docs: Iterable[Doc], batch_size: int = 64) -> Iterator[Doc]:
        """Sentences of many docs are embedded together, sorted by length across docs.

        Docs are buffered ``sort_window`` batches at a time: sorting a few hundred sentences by length before
        cutting them into encoder batches wastes far less padding than sorting each batch alone. When a later
        component reads the word pieces (``reads_piece_vectors``: a calibrated decider, for its gate and evidence),
        the same pass keeps them on each doc for it (``keep_piece_vectors``).
        """
        self._check_ready()
        with_pieces = self._pieces_wanted()
        for batch in minibatch(docs, size=batch_size * SORT_WINDOW):
            sentences = [(doc, sent) for doc in batch for sent in self._sentences(doc)]
            scores, rows, pieces, vectors = self._unique_scores([sent.text.strip() for _, sent in sentences],
                                                                with_pieces)
            # Sentences too short to rank keep what the matcher found in them.
            per_doc: Dict[int, Dict[int, List[SkillPrediction]]] = {id(doc): doc._.esco_sentence_skills for doc in batch}
            for (doc, sent), row in zip(sentences, rows):
                per_doc[id(doc)][sent.start] = self.rank_sentence(sent, scores[row], per_doc[id(doc)],
                                                                  vectors[row] if vectors is not None else None)
            if pieces is not None:
                kept: Dict[int, Dict[int, TokenEncoding]] = {id(doc): {} for doc in batch}
                for (doc, sent), row in zip(sentences, rows):
                    kept[id(doc)][sent.start] = unstripped(pieces[row], sent.text)
                for doc in batch:
                    keep_piece_vectors(doc, kept[id(doc)])
            del scores, pieces  # not held while the docs go on down the pipeline (the next window's would add up)
            for doc in batch:
                set_predictions(doc, per_doc[id(doc)])
                yield doc

    def _pieces_wanted(self) -> bool:
        return any(getattr(proc, "reads_piece_vectors", False) for _, proc in self.nlp.pipeline)

    def _unique_scores(self, texts: List[str], with_pieces: bool = False
                       ) -> Tuple[np.ndarray, np.ndarray, Optional[List[TokenEncoding]], Optional[np.ndarray]]:
        """Scores ``[n_unique, n_skills]`` of the distinct texts, each text's row in them, (``with_pieces``) the
        distinct texts' word pieces, and their sentence vectors (sentence scoring): a sentence repeated in the batch
        (boilerplate, a pasted ad) is embedded and scored once, and its row is not copied (a window of ads holds
        thousands of 13,896-wide rows)."""
        if not texts:
            return (np.zeros((0, len(self.index)), np.float32), np.zeros(0, np.int64),
                    ([] if with_pieces else None), None)
        unique, rows = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        vectors, scores, pieces = self._score(list(unique), with_pieces)
        return scores, rows.reshape(-1), pieces, vectors

    def _check_ready(self) -> None:
        if self.encoder is None or self.index is None:
            raise NotInitializedError(f"'{self.name}' is not initialized: call nlp.initialize() first.")
        skill_text = self.settings.skill_text
        if self.index.mode is not None and self.index.mode != skill_text:
            raise ConfigError(
                f"[components.{self.name}] skill_text = '{skill_text}' but the stored index was built with "
                f"'{self.index.mode}': call rebuild_index(taxonomy) (evaluate --set does) or keep '{self.index.mode}'.")

    def _sentences(self, doc: Doc) -> List[Span]:
        """Sentences to rank: long enough, and not marked by a filter as asking for no skill (their encoding is
        the pipeline's main cost, and boilerplate repeats across ads)."""
        sents = sentences(doc)
        skipped = skipped_sentences(doc)
        return [s for s in sents if len(s.text.strip()) >= self.settings.min_sentence_chars and s.start not in skipped]

    def rank_sentence(self, sent: Span, row: np.ndarray, explicit_by_sentence: Dict[int, List[SkillPrediction]],
                      vector: Optional[np.ndarray] = None) -> List[SkillPrediction]:
        """Top-k skills of one sentence, literal matches fused in (see the module docstring). With an index of
        several texts per skill and the sentence's vector, each prediction also carries ``label_score``, its
        cosine with the preferred label alone: what the decider calibrates on."""
        explicit = {p.uri: p for p in explicit_by_sentence.get(sent.start, [])}
        w, top_k = self.settings.explicit_weight, self.settings.top_k
        scale = implied_scale(bool(explicit), w)
        fused = row * scale if scale != 1.0 else row
        k = min(top_k, len(row))
        top = np.argpartition(-fused, k - 1)[:k]
        candidates = {int(i) for i in top}
        for uri in explicit:
            if uri in self.index.position:
                candidates.add(self.index.position[uri])
        order = sorted(candidates)
        label_scores = (self.index.preferred_scores(vector, order) if vector is not None and self.index.several_texts
                        else [None] * len(order))
        preds: List[SkillPrediction] = []
        for i, label_score in zip(order, label_scores):
            uri = self.index.uris[i]
            match = explicit.get(uri)
            score = float(fused[i] + (w * match.score if match else 0.0))
            if score < self.settings.threshold and match is None:
                continue
            preds.append(SkillPrediction(uri, self.index.labels[i], score, match is not None,
                                         list(match.spans) if match else [],
                                         label_score=None if label_score is None else float(label_score)))
        preds.sort(key=lambda p: -p.score)
        explicit_preds = [p for p in preds if p.explicit]
        implicit_preds = [p for p in preds if not p.explicit][: max(0, top_k - len(explicit_preds))]
        return sorted(explicit_preds + implicit_preds, key=lambda p: -p.score)

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), n_skills] ranker scores in [0, 1] (the ranking itself, evaluation, benchmarks)."""
        return self.score_and_encode(texts)[0]

    def score_and_encode(self, texts: Sequence[str], with_pieces: bool = False
                         ) -> Tuple[np.ndarray, Optional[List[TokenEncoding]]]:
        """``score_texts``, and with ``with_pieces`` (or token scoring) each text's word pieces from the same
        encoder pass (``encode_with_tokens``: the same sentence vectors as ``encode``, so the same ranking)."""
        _, scores, pieces = self._score(texts, with_pieces)
        return scores, pieces

    def _score(self, texts: Sequence[str], with_pieces: bool = False
               ) -> Tuple[Optional[np.ndarray], np.ndarray, Optional[List[TokenEncoding]]]:
        """``score_and_encode`` with the sentence vectors in front (``None`` under token scoring)."""
        self._check_ready()
        settings, texts = self.settings, list(texts)
        pieces: Optional[List[TokenEncoding]] = None
        if settings.scoring == "token" or with_pieces:
            vectors, pieces = self.encoder.encode_with_tokens(texts)
        else:
            vectors = self.encoder.encode(texts)
        if settings.scoring == "token":
            rows = [self.index.token_scores(units, settings.token_temperature, settings.label_pooling,
                                            settings.preferred_weight) for _, units in pieces]
            scores = np.stack(rows) if rows else np.zeros((0, len(self.index)), np.float32)
            vectors = None  # a skill's token score is not its cosine with one sentence vector
        else:
            scores = self.index.scores(vectors, settings.label_pooling, settings.preferred_weight)
        return vectors, np.clip(scores, 0.0, 1.0, out=scores), pieces  # in place: no second [n, n_skills] array

    # ------------------------------------------------------------------ serialization
    def serialization_parts(self) -> Dict[str, Part]:
        """The encoder (a folder of transformer files on disk, see ``TransformerEncoder.to_bytes``), then the skill
        index's vectors and skills (two files beside it)."""
        return {
            ENCODER_DIR: Part(lambda: self._initialized().encoder.to_bytes(),
                              lambda data: setattr(self, "encoder", TransformerEncoder.from_bytes(data, self.settings.encoder)),
                              write=lambda path: self._initialized().encoder.save(path), read=self._load_encoder),
            INDEX_FILE: Part(lambda: self._initialized().index.vectors_bytes(),
                             lambda data: self._loading_index().load_vectors(data)),
            SKILLS_FILE: Part(lambda: self._initialized().index.skills_bytes(),
                              lambda data: self._loading_index().load_skills(data)),
        }

    def _initialized(self) -> "SkillRanker":
        if self.encoder is None or self.index is None:
            raise NotInitializedError(f"'{self.name}' has nothing to save: initialize it first.")
        return self

    def _loading_index(self) -> SkillIndex:
        if self.index is None:
            self.index = SkillIndex.empty()
        return self.index

    def _load_encoder(self, folder: Path) -> None:
        IncompletePipelineError.unless_exists(folder / "config.json", f"component '{self.name}'")
        self.encoder = TransformerEncoder(folder, self.settings.encoder)


def unstripped(encoding: TokenEncoding, text: str) -> TokenEncoding:
    """Word pieces of ``text.strip()`` with offsets into ``text`` (what the decider's evidence indexes): the
    tokenizer skips whitespace, so the pieces are the same, only shifted by the leading whitespace."""
    lead = len(text) - len(text.lstrip())
    return (encoding[0] + lead, encoding[1]) if lead else encoding


def sync_index(nlp: Language, force: bool = False) -> bool:
    """Re-embed the skills when the ranker's ``skill_text`` differs from its stored index (a config override);
    ``force`` also for an index that did not record its ``skill_text``. Returns whether it rebuilt."""
    if RANKER not in nlp.pipe_names:
        return False
    ranker = nlp.get_pipe(RANKER)
    if ranker.index is None or not (force or ranker.index.mode not in (None, ranker.settings.skill_text)):
        return False
    ranker.rebuild_index(find_taxonomy(nlp))
    return True


def load_overridden(model: Union[str, Path, Language], config: Dict[str, object]) -> Tuple[Language, bool]:
    """A pipeline loaded with config overrides (``{"components.esco_skill_ranker.preferred_weight": 0.5}``), its
    skills re-embedded when an override names the ranker's ``skill_text``. Returns it and whether it re-embedded:
    comparing one trained encoder under two settings needs no copy of the pipeline on disk."""
    if isinstance(model, Language) and config:
        raise ConfigError("config overrides apply when a pipeline is loaded: give its folder or package name, "
                          "not a loaded pipeline")
    nlp = load_pipeline(model, config=config)
    return nlp, sync_index(nlp, force=any(key.endswith(".skill_text") for key in config))


@component_factory(RANKER, RankerSettings, assigns=["doc._.esco_skills", "doc._.esco_sentence_skills"])
def make_skill_ranker(nlp: Language, name: str, settings: RankerSettings) -> SkillRanker:
    return SkillRanker(nlp, name, settings)
