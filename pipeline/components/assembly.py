"""Build a pipeline folder from the ESCO export: segmenter → normalizer → matcher (→ ranker).

The pipeline is described by a spaCy config (``base_config``), so what ``assemble`` writes is what
``spacy.load`` reads back and what training configs extend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import spacy
from spacy.language import Language
from thinc.api import Config

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
MATCHER_PIPES = ["esco_job_ad_segmenter", "esco_token_normalizer", "esco_skill_matcher"]

BASE_CONFIG = """
[paths]
esco = null

[nlp]
lang = "en"
pipeline = {pipeline}
batch_size = 64

[nlp.tokenizer]
@tokenizers = "esco.job_ad_tokenizer.v1"
clean_html = true

[nlp.after_creation]
@callbacks = "esco.allow_long_documents.v1"

[components]

[components.esco_job_ad_segmenter]
factory = "esco_job_ad_segmenter"

[components.esco_token_normalizer]
factory = "esco_token_normalizer"

[components.esco_skill_matcher]
factory = "esco_skill_matcher"

[initialize]

[initialize.components]

[initialize.components.esco_skill_matcher]
esco_path = ${{paths.esco}}
"""

RANKER_CONFIG = """
[components.esco_skill_ranker]
factory = "esco_skill_ranker"

[components.esco_skill_ranker.encoder]
@misc = "esco.transformer_encoder.v1"
name = "{encoder}"

[initialize.components.esco_skill_ranker]
esco_path = ${{paths.esco}}
"""


def base_config(with_ranker: bool = True, encoder: str = DEFAULT_ENCODER) -> Config:
    pipes = MATCHER_PIPES + (["esco_skill_ranker"] if with_ranker else [])
    text = BASE_CONFIG.format(pipeline=str(pipes).replace("'", '"'))
    if with_ranker:
        text += RANKER_CONFIG.format(encoder=encoder)
    return Config().from_str(text, interpolate=False)


def build_pipeline(config: Config, esco_path: Union[str, Path]) -> Language:
    """Create and initialize the pipeline a config describes, reading ESCO from `esco_path`."""
    config = Config(config).merge({"paths": {"esco": str(esco_path)}})
    nlp = spacy.util.load_model_from_config(config, auto_fill=True, validate=True)
    nlp.initialize()
    return nlp


def assemble(
    esco_path: Union[str, Path],
    output: Optional[Union[str, Path]] = None,
    *,
    with_ranker: bool = True,
    encoder: str = DEFAULT_ENCODER,
) -> Language:
    nlp = build_pipeline(base_config(with_ranker, encoder), esco_path)
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        nlp.to_disk(output)
    return nlp
