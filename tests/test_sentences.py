"""One definition of a sentence (``segmenter.sentences``), read by every component and view: a sentence's first token
is the key that joins the matcher's and the ranker's predictions, the filter's skips and the decider's decisions,
so on any doc — empty, white space only, never segmented, segmented — they must all see the same sentences."""

from __future__ import annotations

import pytest

from pipeline.commands.render import sentences_of
from pipeline.components.boilerplate import sentences_by_line
from pipeline.components.matcher import sentence_starts
from pipeline.components.pipes import SEGMENTER, make_clean_doc
from pipeline.components.predictions import RAW_KEY, skipped_sentences
from pipeline.components.segmenter import sentences
from pipeline.corpus.settings import CorpusSettings
from pipeline.corpus.labelling import SentenceLabeller
from pipeline.io.boilerplate import line_key

TWO_LINES = "Manage budgets for the ward.\nExperience with Python and SQL is essential."
# text → the sentences (their text) of the doc with and without the segmenter
CASES = {
    "empty": ("", [], []),
    "white space only": ("   ", ["   "], ["   "]),
    "two lines": (TWO_LINES, ["Manage budgets for the ward.\n", "Experience with Python and SQL is essential."],
                  [TWO_LINES]),
}


def run(nlp, text: str, segmented: bool):
    """The pipeline on ``text``, without its segmenter when not ``segmented`` (a doc no one set sentence starts on)."""
    doc = make_clean_doc(nlp, text)  # as the corpus labeller tokenizes: white space stays a token
    for name, pipe in nlp.pipeline:
        if segmented or name != SEGMENTER:
            doc = pipe(doc)
    return doc


@pytest.mark.parametrize("segmented", [True, False], ids=["segmented", "no sentence starts"])
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_every_component_keys_the_same_sentences(pipeline_nlp, case, segmented):
    text, with_starts, without_starts = CASES[case]
    doc = run(pipeline_nlp, text, segmented)
    sents = sentences(doc)
    assert [s.text_with_ws for s in sents] == (with_starts if segmented else without_starts)
    starts = [s.start for s in sents]
    assert sentence_starts(doc) == [s.start for s in sents for _ in s]  # the matcher's key of every token
    # The matcher keys every sentence; the ranker adds no key of its own and the decider decides on no other.
    assert sorted(int(key) for key in doc._.get(RAW_KEY) or {}) == starts
    assert {int(key) for key in doc._.esco_decisions or {}} <= set(starts)
    with_text = [s for s in sents if s.text.strip()]
    assert list(sentences_of(doc)) == with_text  # what the views list
    assert [s for _, members in sentences_by_line(doc) for s, _ in members] == with_text  # what the filter reads
    for sent in sents:  # a sentence's own predictions and reason are those stored under its key
        assert [p.uri for p in sent._.esco_skills] == [p.uri for p in doc._.esco_sentence_skills[sent.start]]
        assert sent._.esco_no_skill_reason == skipped_sentences(doc).get(sent.start)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_the_corpus_labeller_rows_are_the_pipelines_sentences(pipeline_nlp, case):
    text = CASES[case][0]
    _, rows = SentenceLabeller(pipeline_nlp, CorpusSettings()).label_line(text)
    assert [key for key, *_ in rows] == [line_key(s.text.strip()) for s in sentences(run(pipeline_nlp, text, True))]
