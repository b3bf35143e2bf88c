"""Development signals large enough to tell training recipes apart (the benchmark files hold 75 + 61 sentences).

- **masked-mention dev**: the corpus' dev split (split by ad, never trained on) with every literal mention
  *removed* (deleted, not replaced by a mask token: an implied skill leaves no placeholder in real text). The
  ranker must find the skills from the rest of the sentence — the nearest large proxy for an implied mention.
- **ESCO paraphrase dev**: the held-out slice of ESCO's own text (``pipeline.esco.heldout``: alternative labels
  and description sentences that no supervision source uses) → its skill; reported overall and separately for
  skills the corpus' train split names and skills it never names (where forgetting shows first).

Both rank with the ranker alone (``score_texts``): the literal matcher cannot help when the mention is gone, and
the ESCO texts are labels, not ad sentences. Metrics are the benchmark's (RP@5, RP@10, MRR).
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

import numpy as np
from spacy.language import Language

from pipeline.components.pipes import RANKER, find_taxonomy
from pipeline.corpus.build import load_corpus
from pipeline.errors import ConfigError
from pipeline.esco.heldout import held_out_texts, skills_by_text
from pipeline.esco.taxonomy import EscoTaxonomy, TaxonomyWarning
from pipeline.evaluation.benchmark import ranking_metrics
from pipeline.corpus.masking import mask_with_offsets

MAX_MASKED = 1500
MAX_PARAPHRASES = 2000
TOP_K = 10
SIGNALS = ("masked", "paraphrase")


@dataclass
class DevExample:
    text: str
    gold: Set[str]
    group: str = ""  # paraphrases: "named" / "unnamed" by the corpus' train split


@dataclass
class DevSignals:
    """The fixed examples of both signals, built once per corpus and reused at every evaluation."""

    masked: List[DevExample]
    paraphrase: List[DevExample]

    def describe(self) -> Dict[str, int]:
        groups = [e.group for e in self.paraphrase]
        return {"masked": len(self.masked), "paraphrase": len(self.paraphrase),
                "paraphrase_named": groups.count("named"), "paraphrase_unnamed": groups.count("unnamed")}


def masked_mention_examples(corpus_dir: Path, limit: int = MAX_MASKED, seed: int = 0) -> List[DevExample]:
    """Dev sentences with every mention deleted; sentences left with fewer than 3 words are dropped."""
    rows = load_corpus(corpus_dir)["dev"]
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    out: List[DevExample] = []
    for i in order:
        if len(out) >= limit:
            break
        row = rows[i]
        text, _, _ = mask_with_offsets(row["text"], row["mentions"], 1.0, random.Random(0), mask_token="")
        if len(text.split()) >= 3 and row["uris"]:
            out.append(DevExample(text, set(row["uris"])))
    return out


def corpus_skills(corpus_dir: Path) -> Set[str]:
    """The skills the corpus' train split names at least once."""
    return {uri for uris in load_corpus(corpus_dir)["train"]["uris"] for uri in uris}


def paraphrase_examples(taxonomy: EscoTaxonomy, named: Set[str], limit: int = MAX_PARAPHRASES,
                        seed: int = 0) -> List[DevExample]:
    """A seeded sample of the held-out ESCO texts; a label shared by several skills makes each of them gold.
    Empty for a taxonomy without descriptions (its held-out slice would be a few alternative labels at most)."""
    if not taxonomy.has_descriptions:
        warnings.warn(f"the paraphrase dev signal is off: the taxonomy '{taxonomy.name}' has no descriptions.",
                      TaxonomyWarning, stacklevel=2)
        return []
    items = held_out_texts(taxonomy)
    items = random.Random(seed).sample(items, min(limit, len(items)))
    shared = skills_by_text(taxonomy)
    return [DevExample(item.text, {item.uri} | shared.get(item.text.lower(), set()),
                       "named" if item.uri in named else "unnamed") for item in items]


def build_dev_signals(taxonomy: EscoTaxonomy, corpus_dir: Optional[Path], *, max_masked: int = MAX_MASKED,
                      max_paraphrases: int = MAX_PARAPHRASES, seed: int = 0) -> DevSignals:
    """Both signals; without a corpus only the paraphrase signal exists (all its skills count as unnamed)."""
    if corpus_dir is None:
        return DevSignals([], paraphrase_examples(taxonomy, set(), max_paraphrases, seed))
    return DevSignals(masked_mention_examples(Path(corpus_dir), max_masked, seed),
                      paraphrase_examples(taxonomy, corpus_skills(Path(corpus_dir)), max_paraphrases, seed))


def top_uris(nlp: Language, texts: Sequence[str], k: int = TOP_K, batch_size: int = 256) -> List[List[str]]:
    """The ranker's top-k skills of each text, best first, scored in batches to keep memory flat."""
    if RANKER not in nlp.pipe_names:
        raise ConfigError(f"dev signals need a pipeline with '{RANKER}', got {nlp.pipe_names}")
    ranker = nlp.get_pipe(RANKER)
    uris = ranker.index.uris
    out: List[List[str]] = []
    for start in range(0, len(texts), batch_size):
        scores = ranker.score_texts(texts[start:start + batch_size])  # [B, n_skills]
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        for row, candidates in zip(scores, top):
            out.append([uris[i] for i in candidates[np.argsort(-row[candidates])]])
    return out


def _metrics(examples: List[DevExample], rankings: List[List[str]], prefix: str) -> Dict[str, float]:
    metrics = ranking_metrics(rankings, [e.gold for e in examples])
    return {f"{prefix}/{key}": metrics[key] for key in ("rp@5", "rp@10", "mrr", "n_scored")}


def dev_signal_scores(nlp: Language, signals: DevSignals) -> Dict[str, float]:
    """``masked/…``, ``paraphrase/…``, ``paraphrase_named/…``, ``paraphrase_unnamed/…`` → RP@5, RP@10, MRR."""
    out: Dict[str, float] = {}
    if signals.masked:
        out.update(_metrics(signals.masked, top_uris(nlp, [e.text for e in signals.masked]), "masked"))
    if signals.paraphrase:
        rankings = top_uris(nlp, [e.text for e in signals.paraphrase])
        out.update(_metrics(signals.paraphrase, rankings, "paraphrase"))
        for group in ("named", "unnamed"):
            pairs = [(e, r) for e, r in zip(signals.paraphrase, rankings) if e.group == group]
            if pairs:
                out.update(_metrics([e for e, _ in pairs], [r for _, r in pairs], f"paraphrase_{group}"))
    return out


def evaluate_dev_signals(nlp: Language, corpus_dir: Optional[Path]) -> Dict[str, float]:
    """Build the signals from the pipeline's own taxonomy and a corpus folder, and score them."""
    return dev_signal_scores(nlp, build_dev_signals(find_taxonomy(nlp), corpus_dir))
