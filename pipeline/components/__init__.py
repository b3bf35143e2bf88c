"""The spaCy components (segmenter, normalizer, matcher, encoder, ranker), the output contract and the
pipeline they form."""
