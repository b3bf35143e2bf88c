"""Build a pipeline folder from the ESCO export: segmenter → normalizer → matcher (→ ranker → decider).

The pipeline is described by a spaCy config (``base_config``), so what ``assemble`` writes is what
``spacy.load`` reads back and what every training config is merged over. The config is not written out by hand:
it is the config of a blank pipeline with the project's tokenizer and each factory added with its defaults, so
a new setting of a component appears here (and in every training config) the moment its factory has it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

import spacy
from spacy.language import Language
from thinc.api import Config

from pipeline.components.pipes import (BOILERPLATE, DECIDER, DEFAULT_ENCODER, MATCHER, MATCHER_PIPES, RANKER,
                                       find_taxonomy)

# The sections that describe the pipeline; the blank pipeline's spaCy-training defaults ([training], [corpora],
# [pretraining]) are left out, since [training] is this project's own section in training configs.
PIPELINE_SECTIONS = ("paths", "system", "nlp", "components", "initialize")
# Components that read the ESCO export when the pipeline is initialized.
NEEDS_ESCO = (MATCHER, RANKER)
NLP_SETTINGS: Dict[str, Any] = {
    "batch_size": 64,
    "tokenizer": {"@tokenizers": "esco.job_ad_tokenizer.v1"},
    "after_creation": {"@callbacks": "esco.allow_long_documents.v1"},
}


def base_config(with_ranker: bool = True, encoder: str = DEFAULT_ENCODER) -> Config:
    """The pipeline's config: segmenter, normalizer, matcher (and the ranker with ``encoder``), each with its
    factory's defaults, and ``[initialize]`` reading ESCO from ``${paths.esco}`` (filled in by ``build_pipeline``).

    Nothing is loaded: adding a pipe only constructs the component; the ranker's weights come at initialize.
    """
    nlp = spacy.blank("en", config={"nlp": NLP_SETTINGS})
    for name in MATCHER_PIPES:
        nlp.add_pipe(name)
    if with_ranker:
        nlp.add_pipe(BOILERPLATE)  # before the ranker, which does not rank the sentences it marks
        nlp.add_pipe(RANKER, config={"encoder": {"name": encoder}})
        nlp.add_pipe(DECIDER)  # uncalibrated until `calibrate`: commits literal matches only
    full = nlp.config
    config = Config({key: full[key] for key in PIPELINE_SECTIONS})
    config["paths"]["esco"] = None
    config["paths"]["boilerplate"] = None  # a corpus' boilerplate.jsonl: the filter's keys (none without one)
    config["initialize"]["components"] = {name: {"esco_path": "${paths.esco}"} for name in NEEDS_ESCO
                                          if name in nlp.pipe_names}
    if BOILERPLATE in nlp.pipe_names:
        config["initialize"]["components"][BOILERPLATE] = {"boilerplate_path": "${paths.boilerplate}"}
    return config


def build_pipeline(config: Config, esco_path: Union[str, Path],
                   boilerplate_path: Optional[Union[str, Path]] = None) -> Language:
    """Create and initialize the pipeline a config describes, reading the taxonomy (an ESCO export or a taxonomy
    CSV) from `esco_path` and the boilerplate filter's keys from `boilerplate_path` (a corpus' boilerplate.jsonl;
    none when not given). ``meta["taxonomy"]`` records which taxonomy it was built for (name, hash, size)."""
    paths = {"esco": str(esco_path), "boilerplate": str(boilerplate_path) if boilerplate_path else None}
    config = Config(config).merge({"paths": paths})
    nlp = spacy.util.load_model_from_config(config, auto_fill=True, validate=True)
    nlp.initialize()
    if any(name in nlp.pipe_names for name in (MATCHER, RANKER)):  # a pipeline that reads the taxonomy at all
        nlp.meta["taxonomy"] = find_taxonomy(nlp).record()
    return nlp


def assemble(
    esco_path: Union[str, Path],
    output: Optional[Union[str, Path]] = None,
    *,
    with_ranker: bool = True,
    encoder: str = DEFAULT_ENCODER,
) -> Language:
    """The pipeline from the ESCO export (matcher, and an untrained ranker unless ``with_ranker=False``);
    written to ``output`` when given."""
    nlp = build_pipeline(base_config(with_ranker, encoder), esco_path)
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        nlp.to_disk(output)
    return nlp
