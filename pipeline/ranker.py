"""placeholder until the ranker lands (same session)."""
from spacy.language import Language


@Language.factory("esco_skill_ranker")
def make_skill_ranker(nlp, name):  # noqa: ANN001,ANN201
    raise NotImplementedError
