"""ESCO skill extraction for job ads: a spaCy pipeline (literal matcher + trainable bi-encoder ranker).

Importing the package is cheap: components live in their own modules and spaCy finds them through the
``spacy_factories`` entry points, so ``spacy.load(path)`` needs no import of this package.
"""

__version__ = "0.1.0"

ESCO_ATTRIBUTION = "This service uses the ESCO classification of the European Commission."
