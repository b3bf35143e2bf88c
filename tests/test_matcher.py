"""The matcher pipeline on job-ad text: tokenizer clean-up, sentences, language flag, and literal ESCO linking.

Everything runs on the pipeline assembled once per session from the real ESCO v1.1.1 export (``matcher_nlp``);
label-policy variants are built on one copy of its first two components, never on the shared pipeline.
"""

from __future__ import annotations

import warnings

import pytest
import spacy

from pipeline.errors import ConfigError, EscoSkillsError, MissingDependencyError, NotInitializedError
from pipeline.components.matcher import LabelPolicy, SkillMatcher
from pipeline.components.predictions import SPANS_KEY

MATCHER = "esco_skill_matcher"

NHS_AD_HTML = (
    "<p>The post holder will be expected to:</p>"
    "<ul><li>Manage budgets for the ward</li><li>Work in teams with nurses &amp; doctors</li></ul>"
    "<p>Band&nbsp;5, full time.</p>"
)
HUGE_AD_PARAGRAPH = (
    "We are looking for a data engineer who has managed budgets and worked in teams. "
    "You will build pipelines in Python and PostgreSQL and report to the head of analytics.\n"
)


def linked(doc) -> list:
    """(span text, ESCO URI) of every explicit mention, in document order."""
    return [(span.text, span.kb_id_) for span in doc.spans[SPANS_KEY]]


def uris(doc) -> set:
    return {span.kb_id_ for span in doc.spans[SPANS_KEY]}


@pytest.fixture(scope="module")
def policy_nlp(matcher_dir):
    """A copy of the pipeline without its matcher: tokenizer, segmenter and normalizer only."""
    return spacy.load(matcher_dir, exclude=[MATCHER])


class PolicyVariant:
    """A matcher with its own label policy, run after the copied tokenizer, segmenter and normalizer."""

    def __init__(self, nlp, matcher: SkillMatcher):
        self.nlp = nlp
        self.matcher = matcher

    def __call__(self, text: str):
        return self.matcher(self.nlp(text))


@pytest.fixture(scope="module")
def matcher_with(policy_nlp, taxonomy):
    """``matcher_with(shared_labels="all")``: a matcher with that label policy, built once per policy."""
    built = {}

    def make(**policy) -> PolicyVariant:
        key = tuple(sorted(policy.items()))
        if key not in built:
            matcher = SkillMatcher(policy_nlp, label_policy=LabelPolicy(**policy))
            matcher.set_taxonomy(taxonomy)
            built[key] = PolicyVariant(policy_nlp, matcher)
        return built[key]

    return make


# ---------------------------------------------------------------------------------------------- tokenizer, segmenter
def test_html_ad_becomes_clean_text_with_a_sentence_per_list_item(matcher_nlp, uri_of):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plain English ad must not be flagged as foreign
        doc = matcher_nlp(NHS_AD_HTML)
    assert doc.text == (
        "The post holder will be expected to:\nManage budgets for the ward\n"
        "Work in teams with nurses & doctors\nBand 5, full time."
    )
    assert [sent.text.strip() for sent in doc.sents] == [
        "The post holder will be expected to:",
        "Manage budgets for the ward",
        "Work in teams with nurses & doctors",
        "Band 5, full time.",
    ]
    assert linked(doc) == [("Manage budgets", uri_of("manage budgets")), ("Work in teams", uri_of("work in teams"))]
    span = doc.spans[SPANS_KEY][0]
    assert doc.text[span.start_char : span.end_char] == "Manage budgets"
    assert doc._.is_english is True


def test_sentence_final_punctuation_starts_a_new_sentence_and_line_breaks_open_none_alone(matcher_nlp):
    doc = matcher_nlp("We need a nurse who manages budgets.\nYou will work in teams! Is that you?")
    assert [sent.text_with_ws for sent in doc.sents] == [
        "We need a nurse who manages budgets.\n", "You will work in teams! ", "Is that you?"
    ]


@pytest.mark.parametrize("text", ["", "   \n ", "<p>&nbsp;</p>"], ids=["empty", "whitespace", "empty-html"])
def test_empty_text_gives_empty_results(matcher_nlp, text):
    doc = matcher_nlp(text)
    assert doc.text == ""
    assert list(doc.spans[SPANS_KEY]) == []
    assert doc._.esco_skills == []
    assert doc._.esco_sentence_skills == {}


@pytest.mark.heavy  # 4 s or more: make test, not make test-fast
def test_huge_document_is_processed_whole_without_the_cap_and_finds_its_skills(matcher_dir, uri_of):
    """With ``max_chars = 0`` (no cap) a document past spaCy's default max_length goes through whole, linearly."""
    matcher_nlp = spacy.load(matcher_dir, config={"nlp": {"tokenizer": {"max_chars": 0}}})
    repeats = 1_000_001 // len(HUGE_AD_PARAGRAPH) + 1
    text = HUGE_AD_PARAGRAPH * repeats
    assert len(text) > 1_000_000  # spaCy's default max_length
    doc = matcher_nlp(text)
    assert doc.text == text.strip()
    expected = {uri_of(label) for label in ("manage budgets", "work in teams", "Python (computer programming)",
                                             "PostgreSQL")}
    assert {pred.uri for pred in doc._.esco_skills} == expected
    assert len(doc.spans[SPANS_KEY]) == 4 * repeats
    assert doc.spans[SPANS_KEY][-1].end_char > len(doc.text) - len(HUGE_AD_PARAGRAPH)
    assert len(list(doc.sents)) == 2 * repeats


@pytest.mark.parametrize(
    "text",
    [
        "Wir suchen eine engagierte Pflegefachkraft für unser Team in Berlin mit Erfahrung in der Intensivpflege "
        "und Freude an der Arbeit.",
        "Nous recherchons un développeur expérimenté pour rejoindre notre équipe à Paris et travailler sur des "
        "projets passionnants avec nous.",
    ],
    ids=["german", "french"],
)
def test_non_english_text_is_flagged_and_warns(matcher_nlp, text):
    with pytest.warns(UserWarning, match="does not look like English"):
        doc = matcher_nlp(text)
    assert doc._.is_english is False


# ---------------------------------------------------------------------------------------------- linking
def test_matcher_links_lowercase_mention_of_a_cased_label(matcher_nlp, uri_of):
    doc = matcher_nlp("Experience with postgresql is required.")
    assert linked(doc) == [("postgresql", uri_of("PostgreSQL"))]


@pytest.mark.parametrize(
    ("text", "mention", "label"),
    [
        ("Managed budgets for three years.", "Managed budgets", "manage budgets"),
        ("The nurse manages budgets.", "manages budgets", "manage budgets"),
        ("She has worked in teams before.", "worked in teams", "work in teams"),
        ("Working in teams is essential.", "Working in teams", "work in teams"),
    ],
)
def test_matcher_links_inflected_label(matcher_nlp, uri_of, text, mention, label):
    assert linked(matcher_nlp(text)) == [(mention, uri_of(label))]


def test_matcher_links_preferred_label_without_its_parenthetical(matcher_nlp, uri_of):
    doc = matcher_nlp("You write Python every day.")
    assert linked(doc) == [("Python", uri_of("Python (computer programming)"))]


def test_matcher_keeps_the_longest_of_overlapping_labels(matcher_nlp, uri_of):
    longer = matcher_nlp("Experience in enterprise risk management.")
    assert linked(longer) == [("enterprise risk management", uri_of("enterprise risk management"))]
    shorter = matcher_nlp("Knowledge of risk management.")
    assert linked(shorter) == [("risk management", uri_of("risk management"))]


def test_short_labels_match_only_with_their_exact_case(matcher_nlp, uri_of):
    doc = matcher_nlp("Daily work with R and C# on our models.")
    assert linked(doc) == [("R", uri_of("R")), ("C#", uri_of("C#"))]
    assert linked(matcher_nlp("Daily work with r and c# on our models.")) == []


def test_generic_single_word_alt_labels_are_not_linked_by_default(matcher_nlp, uri_of):
    assert uri_of("statistics") not in uris(matcher_nlp("We use data every day."))
    assert uri_of("Microsoft Access") not in uris(matcher_nlp("Give access to the building."))
    assert linked(matcher_nlp("Reports in Microsoft Access.")) == [("Microsoft Access", uri_of("Microsoft Access"))]


def test_single_word_alt_labels_are_linked_when_the_filter_is_off(matcher_with, uri_of):
    unfiltered = matcher_with(drop_single_word_alt_labels=False)
    assert uri_of("statistics") in uris(unfiltered("We use data every day."))
    assert uri_of("Microsoft Access") in uris(unfiltered("Give access to the building."))
    assert "single-word alternative label" not in unfiltered.matcher.policy_report


def test_span_label_is_the_skill_type_and_kb_id_the_uri(matcher_nlp, uri_of):
    doc = matcher_nlp("Use PostgreSQL and work in teams.")
    assert [(span.text, span.label_, span.kb_id_) for span in doc.spans[SPANS_KEY]] == [
        ("PostgreSQL", "knowledge", uri_of("PostgreSQL")),
        ("work in teams", "skill/competence", uri_of("work in teams")),
    ]


def test_doc_skills_carry_uri_label_score_explicit_and_spans(matcher_nlp, uri_of):
    doc = matcher_nlp("Reports in MS Access. You will manage budgets.")
    by_uri = {pred.uri: pred for pred in doc._.esco_skills}
    assert set(by_uri) == {uri_of("Microsoft Access"), uri_of("manage budgets")}
    budgets = by_uri[uri_of("manage budgets")]
    assert (budgets.label, budgets.score, budgets.explicit) == ("manage budgets", 1.0, True)
    assert [span.text for span in budgets.spans] == ["manage budgets"]
    access = by_uri[uri_of("Microsoft Access")]
    assert access.label == "Microsoft Access"
    assert access.score == pytest.approx(0.9)  # an alternative label scores lower than a preferred one
    assert [pred.uri for pred in doc._.esco_skills] == [uri_of("manage budgets"), uri_of("Microsoft Access")]
    assert all(0.0 <= pred.score <= 1.0 and pred.explicit for pred in doc._.esco_skills)
    assert budgets.to_dict()["spans"] == [{"start_char": 31, "end_char": 45, "text": "manage budgets"}]


def test_sentence_skills_belong_to_their_sentence(matcher_nlp, uri_of):
    doc = matcher_nlp("We need a nurse who manages budgets. You will work in teams and use PostgreSQL.")
    first, second = list(doc.sents)
    assert [pred.uri for pred in first._.esco_skills] == [uri_of("manage budgets")]
    assert {pred.uri for pred in second._.esco_skills} == {uri_of("work in teams"), uri_of("PostgreSQL")}
    assert {pred.uri for pred in doc[:]._.esco_skills} == {pred.uri for pred in doc._.esco_skills}


def test_nlp_and_pipe_give_identical_results(matcher_nlp):
    texts = [
        NHS_AD_HTML,
        "",
        "Experience with postgresql is required. Managed budgets for three years.",
        "Daily work with R and C# on our models.\nExperience in enterprise risk management.",
        HUGE_AD_PARAGRAPH * 20,
    ]

    def summary(doc):
        spans = [(s.start, s.end, s.label_, s.kb_id_) for s in doc.spans[SPANS_KEY]]
        return doc.text, spans, [pred.to_dict() for pred in doc._.esco_skills]

    one_by_one = [summary(matcher_nlp(text)) for text in texts]
    assert [summary(doc) for doc in matcher_nlp.pipe(texts, batch_size=2)] == one_by_one
    assert any(spans for _, spans, _ in one_by_one)


# ---------------------------------------------------------------------------------------------- label policy
def test_policy_report_counts_what_the_default_policy_kept_and_dropped(matcher_nlp, matcher_with):
    matcher = matcher_nlp.get_pipe(MATCHER)
    report = matcher.policy_report
    assert report["patterns"] == len(matcher.patterns)
    assert report["skills with a pattern"] == 13_896
    assert report["single-word alternative label"] > 0
    assert report["alternative label begins or ends with a stop word"] > 0
    assert report["shared labels"] > 0
    unfiltered = matcher_with(drop_single_word_alt_labels=False).matcher.policy_report
    assert unfiltered["patterns"] > report["patterns"]


@pytest.mark.slow  # make test-all: assembles two more matchers (~15 s); the default policy is tested above
def test_shared_label_policies_on_a_label_one_skill_prefers(matcher_nlp, matcher_with, uri_of):
    text = "Experience in supply chain management."
    owner = uri_of("supply chain management")
    sharers = {uri_of("manage supplies"), uri_of("analyse supply chain strategies")}

    preferred = matcher_nlp(text)
    assert linked(preferred) == [("supply chain management", owner)]

    shared = matcher_with(shared_labels="all")(text)
    assert uris(shared) == {owner} | sharers
    assert {span.text for span in shared.spans[SPANS_KEY]} == {"supply chain management"}
    ranked = shared._.esco_skills
    assert ranked[0].uri == owner and ranked[0].score == pytest.approx(1.0 / 3)
    assert [pred.score for pred in ranked[1:]] == pytest.approx([0.9 / 3, 0.9 / 3])

    skipped = matcher_with(shared_labels="skip")(text)
    assert not uris(skipped) & ({owner} | sharers)
    assert matcher_with(shared_labels="skip").matcher.policy_report["shared labels skipped"] > 0


def test_shared_label_no_skill_prefers_links_all_its_skills_by_default(matcher_nlp, uri_of):
    doc = matcher_nlp("Ensure customer satisfaction at all times.")
    expected = {uri_of(label) for label in ("guarantee customer satisfaction", "satisfy customers",
                                             "measure customer feedback")}
    assert uris(doc) == expected
    assert all(pred.score == pytest.approx(0.9 / 3) for pred in doc._.esco_skills)


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [("shared_labels", "first", " must be 'preferred', 'all' or 'skip'"), ("alt_score", 1.5, r" must be <= 1\.0"),
     ("preferred_score", 0.0, r" must be > 0\.0"), ("case_sensitive_max_chars", -1, " must be >= 0"),
     ("use_alt_labels", 1, ": input should be a valid boolean")],
)
def test_bad_label_policy_value_raises_config_error_naming_the_key(policy_nlp, key, value, says):
    with pytest.raises(ConfigError, match=rf"\[components\.bad_matcher\.label_policy\] {key}{says}"):
        policy_nlp.add_pipe(MATCHER, name="bad_matcher", config={"label_policy": {key: value}})
    assert "bad_matcher" not in policy_nlp.pipe_names


def test_bad_label_policy_naming_its_registered_function_raises_config_error(policy_nlp):
    config = {"label_policy": {"@misc": "esco.label_policy.v1", "shared_labels": "first"}}
    with pytest.raises(ConfigError, match=r"label_policy\] shared_labels must be 'preferred', 'all' or 'skip'"):
        policy_nlp.add_pipe(MATCHER, name="bad_matcher", config=config)
    assert "bad_matcher" not in policy_nlp.pipe_names


def test_uninitialized_matcher_says_how_to_initialize(policy_nlp):
    with pytest.raises(NotInitializedError, match="is not initialized: call nlp.initialize"):
        SkillMatcher(policy_nlp)(policy_nlp("Manage budgets."))


def test_a_missing_lemma_table_is_an_error_the_cli_reports(policy_nlp):
    """Without spacy-lookups-data's table the normalizer cannot initialize: a project error (the CLI prints it)
    that says what to install, not spaCy's bare ValueError."""
    from pipeline.components.normalizer import TokenNormalizer

    with pytest.raises(MissingDependencyError, match=r"'lemma_lookup' table for 'zz'.*pip install spacy-lookups-data"):
        TokenNormalizer(policy_nlp.vocab).initialize(lang="zz")
    assert issubclass(MissingDependencyError, EscoSkillsError)


def test_predictions_survive_doc_serialization_and_multiprocessing(matcher_nlp, uri_of):
    from spacy.tokens import Doc, DocBin

    texts = ["Managed budgets and worked in teams.", "Experience with postgresql is essential."]
    docs = list(matcher_nlp.pipe(texts))
    expected = [[(p.uri, p.score, p.explicit, [s.text for s in p.spans]) for p in d._.esco_skills] for d in docs]
    assert (uri_of("PostgreSQL"), 1.0, True, ["postgresql"]) in expected[1]
    copy = Doc(matcher_nlp.vocab).from_bytes(docs[1].to_bytes())
    assert [(p.uri, p.score, p.explicit, [s.text for s in p.spans]) for p in copy._.esco_skills] == expected[1]
    restored = list(DocBin(docs=docs, store_user_data=True).get_docs(matcher_nlp.vocab))
    assert [[(p.uri, p.score, p.explicit, [s.text for s in p.spans]) for p in d._.esco_skills] for d in restored] == expected
    parallel = list(matcher_nlp.pipe(texts, n_process=2, batch_size=1))
    assert [[(p.uri, p.score, p.explicit, [s.text for s in p.spans]) for p in d._.esco_skills] for d in parallel] == expected


# ---------------------------------------------------------------------------------------------- wrong matches (#20)
# Each class of wrong literal match found through the dev files: the wrong reading is dropped, a right mention of
# the same skill still links. Sentences written for these tests.
@pytest.mark.parametrize(
    ("wrong", "right", "label"),
    [
        # stock phrases of ads (stock_phrases)
        ("You will stay focused on what the customer needs.", "Drivers must stay alert on long night routes.",
         "stay alert"),
        ("Candidates who enjoy working outdoors will like this post.", "You show commitment to the people you support.",
         "show commitment"),
        # the bare word of an inflected name (inflected_names_keep_meaning)
        ("Security clearance is required for this post.", "Knowledge of securities and bonds.", "securities"),
        ("Craft a clear message for the board.", "She teaches crafting to children.", "crafting"),
        # a "Name (category)" whose name ESCO writes as an ordinary word (names_in_esco_words_exact)
        ("Able to absorb new ideas quickly.", "All our courses run on Absorb.", "Absorb (learning management systems)"),
        ("Set up from scratch.", "Apps written in Scratch.", "Scratch (computer programming)"),
    ],
)
def test_wrong_readings_of_a_label_are_dropped_and_right_ones_kept(matcher_nlp, uri_of, wrong, right, label):
    assert uri_of(label) not in uris(matcher_nlp(wrong))
    assert uri_of(label) in uris(matcher_nlp(right))


def test_a_reordered_preferred_label_links_its_own_skill(matcher_nlp, uri_of):
    """"problem solving" is an alternative label of *troubleshoot*, and *solve problems* in another order."""
    assert linked(matcher_nlp("Strong problem solving skills are a must.")) == [
        ("problem solving", uri_of("solve problems"))]
    assert linked(matcher_nlp("Troubleshooting network faults is part of the job.")) == [
        ("Troubleshooting", uri_of("troubleshoot"))]


def test_names_esco_never_writes_in_lower_case_still_match_in_lower_case(matcher_nlp, uri_of):
    assert uris(matcher_nlp("We write python and java daily.")) == {
        uri_of("Python (computer programming)"), uri_of("Java (computer programming)")}


@pytest.mark.heavy  # 4 s or more: make test, not make test-fast
def test_the_wrong_matches_come_back_with_the_rules_off(matcher_with, uri_of):
    old = matcher_with(stock_phrases=(), inflected_names_keep_meaning=False, names_in_esco_words_exact=False,
                       reordered_names_link_preferred=False)
    assert uri_of("stay alert") in uris(old("You will stay focused on what the customer needs."))
    assert uri_of("securities") in uris(old("Security clearance is required for this post."))
    assert uri_of("Absorb (learning management systems)") in uris(old("Able to absorb new ideas quickly."))
    assert uri_of("troubleshoot") in uris(old("Strong problem solving skills are a must."))
    assert "alternative labels linked to a reordered preferred label" not in old.matcher.policy_report
