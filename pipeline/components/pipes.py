"""Names of the pipeline's components and the few questions every layer asks about a loaded pipeline.

One home for them: which pipes make up the literal matcher, where the ESCO knowledge base lives, how to load a
pipeline by folder or package name, and how to tokenize text that is already clean.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Union

from pipeline.errors import ConfigError, ModelNotFoundError

if TYPE_CHECKING:  # spaCy is imported where a pipeline is loaded: the CLI reads these names without it
    from spacy.language import Language
    from spacy.tokens import Doc

SEGMENTER = "esco_job_ad_segmenter"
NORMALIZER = "esco_token_normalizer"
MATCHER = "esco_skill_matcher"
RANKER = "esco_skill_ranker"
BOILERPLATE = "esco_boilerplate_filter"  # after the matcher, before the ranker: marks sentences asking for no skill
RERANKER = "esco_skill_reranker"  # optional, after the ranker: a cross-encoder re-scores its top K per sentence
DECIDER = "esco_skill_decider"  # after the ranker (and the reranker): the calibrated skill set, with evidence
MATCHER_PIPES = (SEGMENTER, NORMALIZER, MATCHER)
ALL_PIPES = MATCHER_PIPES + (BOILERPLATE, RANKER, DECIDER)  # the default pipeline (the reranker is an option)
DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"  # the ranker's encoder unless a config names another


def load_pipeline(model: Union[str, Path, Language], **kwargs) -> Language:
    """A pipeline folder or the name of an installed pipeline package (``spacy.load`` handles both)."""
    import spacy
    from spacy.language import Language

    if isinstance(model, Language):
        return model
    try:
        return spacy.load(str(model), **kwargs)  # a str, so that a package name given as a CLI Path resolves
    except OSError as err:
        raise ModelNotFoundError(
            f"Could not load a spaCy pipeline from '{model}': give a folder written by `assemble` or `train`, "
            f"or the name of an installed pipeline package. ({err})"
        ) from err


def find_taxonomy(nlp: Language):  # -> EscoTaxonomy (not imported: this module stays below the KB's users)
    """The matcher's knowledge base, else that of any component holding one (a ranker-only pipeline)."""
    candidates = [nlp.get_pipe(MATCHER)] if MATCHER in nlp.pipe_names else []
    candidates.extend(component for _, component in nlp.pipeline)
    for component in candidates:
        taxonomy = getattr(component, "taxonomy", None)
        if taxonomy is not None:
            return taxonomy
    raise ConfigError(
        f"No component of the pipeline ({nlp.pipe_names}) holds an ESCO taxonomy. Use a pipeline built by "
        "`assemble` or `train`, or give the ESCO export (esco_path) to initialize."
    )


def make_clean_doc(nlp: Language, text: str) -> Doc:
    """Tokenize text that is already clean (corpus sentences) without the job-ad clean-up, so that character
    offsets computed on ``text`` stay valid (cleaning again could decode an entity a second time)."""
    make_raw = getattr(nlp.tokenizer, "make_raw_doc", None)
    return make_raw(text) if make_raw is not None else nlp.make_doc(text)
