"""Whether a training run's inputs were made for its taxonomy: the benchmark files and the corpus.

With a taxonomy of one's own, the shipped benchmark files name ESCO v1.1.1 skills and a corpus may have been built
for another taxonomy: both would train silently on nothing (a validation score of 0 at every step keeps the
untrained weights; corpus sentences whose concepts are not in the taxonomy give no pairs). Both are said here,
before minutes of training.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Optional, Sequence

from pipeline.corpus.storage import MANIFEST_FILE, read_manifest
from pipeline.esco.taxonomy import Taxonomy, TaxonomyWarning
from pipeline.evaluation.benchmark import read_benchmark


def validation_for(taxonomy: Taxonomy, files: Sequence[Path], min_share: float = 0.5) -> List[Path]:
    """The validation files at least ``min_share`` of whose gold labels are preferred labels of ``taxonomy``; each
    other file is dropped with a warning (it was labelled for another taxonomy: it would select and calibrate the
    model on concepts it does not have). A few unknown labels (an ESCO release renaming a skill) keep a file."""
    known = set(taxonomy.by_preferred_label())
    kept = []
    for path in files:
        gold = {label for labels in read_benchmark(path).gold.values() for label in labels}
        if gold and len(gold & known) >= min_share * len(gold):
            kept.append(path)
        else:
            warnings.warn(f"'{path}': {len(gold & known)} of its {len(gold)} gold labels are preferred labels of "
                          f"the taxonomy '{taxonomy.name}': not used for model selection or calibration (give "
                          "validation files labelled with this taxonomy's preferred labels, or none).",
                          TaxonomyWarning, stacklevel=2)
    return kept


def check_corpus_taxonomy(taxonomy: Taxonomy, corpus_dir: Optional[Path]) -> None:
    """Warn when the corpus' manifest records another taxonomy than the pipeline's (a corpus built before
    manifests recorded one is not checked)."""
    if corpus_dir is None or not (Path(corpus_dir) / MANIFEST_FILE).is_file():
        return
    built_for = read_manifest(Path(corpus_dir)).get("taxonomy")
    if built_for and built_for.get("sha256") != taxonomy.content_hash():
        warnings.warn(f"the corpus at '{corpus_dir}' was built for the taxonomy '{built_for.get('name')}' "
                      f"({built_for.get('concepts')} concepts), the pipeline is for '{taxonomy.name}' "
                      f"({len(taxonomy)} concepts): its sentences may name concepts the pipeline lacks. Build the "
                      "corpus with the same --taxonomy.", TaxonomyWarning, stacklevel=2)
