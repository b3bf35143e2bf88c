"""``esco_skill_matcher``: literal matching of ESCO skill labels, linked to ESCO URIs.

Matching is on normalized tokens (``token.norm_`` from ``esco_token_normalizer``: lower case + lookup lemma),
with spaCy's PhraseMatcher, so "Managed budgets" finds *manage budgets*. Which labels become patterns is a
visible, configurable policy (``LabelPolicy``), because ESCO's alternative labels include generic words
("data", "lead", "access") that would otherwise swamp every ad.
"""

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Literal, Optional, Sequence, Tuple

import srsly
from spacy.lang.en.stop_words import STOP_WORDS
from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.tokens import Doc, Span
from spacy.util import filter_spans, registry

from pipeline.components.factory import component_factory, settings_block
from pipeline.components.pipes import MATCHER
from pipeline.errors import ConfigError, NotInitializedError
from pipeline.components.predictions import SPANS_KEY, SkillPrediction, register_extensions, set_predictions
from pipeline.components.segmenter import sentences
from pipeline.esco.taxonomy import EscoTaxonomy
from pipeline.settings import Field, Settings, StrictBool, StrictFloat, StrictInt, StrictStr
from pipeline.io.serialization import Part, Serializable

PATTERNS_FILE = "patterns.msgpack"
MATCH_KEY = "ESCO_SKILL"
KB_DIR = "kb"
LABEL_POLICY = "esco.label_policy.v1"  # the registered function of the matcher's label_policy block
# Measured on the 19k-ad corpus (hand check of 50 random examples): these labels were wrong nearly every time
# they matched — "plan" (care plans, pension plans) and "Source" (the game engine, from "Source (digital game
# creation systems)", matching "sources"/"sourcing").
DEFAULT_BLOCKLIST = ("plan", "Source")
# ESCO alternative labels that are stock phrases of job ads, where they frame something else ("enjoy working in a
# team", "stay focused on common goals", "achieving set targets") rather than name their skill (*show commitment*,
# *stay alert*, *develop strategy to solve problems*). Found through the dev files, confirmed on the corpus (every
# one of their corpus matches read was of that kind); no rule on the label's form separates them from right ones.
DEFAULT_STOCK_PHRASES = ("enjoy working", "stay focused", "remain focused", "set targets")
MODES = ("norm", "lower", "exact")  # how a pattern is matched: lemma, lower-cased surface, exact surface
_PARENTHETICAL = re.compile(r"\s*\([^)]*\)\s*$")
_LOWER_WORD = re.compile(r"(?<![\w-])[a-z][a-z]*(?![\w-])")


class LabelPolicy(Settings):
    """Which ESCO labels are matched, and how a label shared by several skills is linked.

    - ``use_alt_labels`` / ``use_hidden_labels``: match those label kinds at all.
    - ``drop_single_word_alt_labels``: a one-word alternative label is kept only if it equals the preferred
      label without its parenthetical ("python" for *Python (computer programming)*).
    - ``drop_stopword_edges``: drop alternative labels that begin or end with a stop word ("ensure the safety of").
    - ``case_sensitive_max_chars``: labels this short ("R", "C") only match with the exact case.
    - ``case_sensitive_common_words``: an all-capitals label that is also an English word ("LESS", "SPARK")
      only matches in capitals — measured on the corpus, "less"/"least" and "spark" were never the skill.
    - ``single_words_on_surface``: one-word labels match the lower-cased word as written, not its lemma:
      lemmas merge "accounting" with "account", "securities" with "security", "medicines" with "medicine".
    - ``shared_labels``: "preferred" links a shared label to the skills whose preferred label it is, if any, else to
      all; "all" links every skill; "skip" drops shared labels.
    - ``inflected_names_keep_meaning``: a one-word alternative label that is only the uninflected form of an
      inflected preferred label (security for *securities*, medicine for *medicines*, craft for *crafting*, survey
      for *surveying*) is dropped like any one-word alternative: ESCO names those skills by the inflected word
      because the inflection carries the meaning, and the bare word is common in another sense ("security
      clearance", "Division of Medicine"). The other way round it is kept ("troubleshooting" for *troubleshoot*).
    - ``names_in_esco_words_exact``: the bare name of a "Name (category)" skill (*Absorb (learning management
      systems)*, *Swift (computer programming)*) matches only as written when ESCO itself uses the name in lower
      case as an ordinary word (absorb, assembly, scratch, swift): in lower case, in an ad, it is that word.
      Names ESCO never writes in lower case (Python, Java, Ruby) still match in lower case.
    - ``reordered_names_link_preferred``: an alternative label that is another skill's preferred label in another
      word order ("problem solving" for *troubleshoot*, *solve problems*) links to that skill, as a shared label
      does under ``shared_labels="preferred"``.
    - ``blocklist``: normalized labels never matched (measured generic terms).
    - ``stock_phrases``: alternative labels never matched: job-ad stock phrases (``DEFAULT_STOCK_PHRASES``).
    """

    use_alt_labels: StrictBool = True
    use_hidden_labels: StrictBool = False
    drop_single_word_alt_labels: StrictBool = True
    drop_stopword_edges: StrictBool = True
    case_sensitive_max_chars: StrictInt = Field(2, ge=0)
    case_sensitive_common_words: StrictBool = True
    single_words_on_surface: StrictBool = True
    shared_labels: Literal["preferred", "all", "skip"] = "preferred"
    preferred_score: StrictFloat = Field(1.0, gt=0.0, le=1.0)
    alt_score: StrictFloat = Field(0.9, gt=0.0, le=1.0)
    inflected_names_keep_meaning: StrictBool = True
    names_in_esco_words_exact: StrictBool = True
    reordered_names_link_preferred: StrictBool = True
    blocklist: Tuple[StrictStr, ...] = DEFAULT_BLOCKLIST
    stock_phrases: Tuple[StrictStr, ...] = DEFAULT_STOCK_PHRASES


class MatcherSettings(Settings):
    """``[components.esco_skill_matcher]``: the label policy, a block of its own."""

    label_policy: LabelPolicy = LabelPolicy()

    @classmethod
    def defaults(cls) -> Dict[str, object]:
        """The factory's config: the policy block names its registered function, as configs always did."""
        return {"label_policy": {"@misc": LABEL_POLICY, **LabelPolicy.defaults()}}


@dataclass
class Pattern:
    """One surface form: its tokens (in the form its mode compares), and the skills it links to."""

    tokens: Tuple[str, ...]
    mode: str  # one of MODES
    skills: List[Tuple[str, bool]] = field(default_factory=list)


def strip_parenthetical(label: str) -> str:
    return _PARENTHETICAL.sub("", label).strip()


class SkillMatcher(Serializable):
    def __init__(
        self,
        nlp: Language,
        name: str = MATCHER,
        *,
        label_policy: LabelPolicy = LabelPolicy(),
        normalize: Optional[Callable[[str], List[str]]] = None,
    ):
        self.nlp = nlp
        self.vocab = nlp.vocab
        self.name = name
        self.policy = label_policy
        self.taxonomy: Optional[EscoTaxonomy] = None
        self.patterns: Dict[str, Pattern] = {}
        self.policy_report: Dict[str, int] = {}
        self._normalize = normalize
        self._matchers: Dict[str, PhraseMatcher] = {}
        register_extensions()

    # ------------------------------------------------------------------ building
    def initialize(
        self,
        get_examples: Optional[Callable] = None,
        *,
        nlp: Optional[Language] = None,
        esco_path: Optional[str] = None,
    ) -> None:
        if esco_path is None:
            raise ConfigError(
                f"[initialize.components.{self.name}] esco_path is required: the taxonomy, the folder or zips of "
                "the ESCO CSV export (e.g. ../shared/esco/v1.1.1) or a taxonomy CSV (docs/taxonomy.md)."
            )
        self.set_taxonomy(EscoTaxonomy.load(esco_path))

    def set_taxonomy(self, taxonomy: EscoTaxonomy) -> None:
        """Build the patterns from an already loaded knowledge base."""
        self.taxonomy = taxonomy
        normalizer = self._normalizer()
        common = set(normalizer.table.values()) | set(STOP_WORDS) if normalizer is not None else set(STOP_WORDS)
        self.patterns, self.policy_report = build_patterns(
            taxonomy, self.policy, self.normalize_label, tokenize=self.label_orths, common_words=common
        )
        self._compile()

    def normalize_label(self, label: str) -> List[str]:
        """Tokenize and normalize a label exactly like a job-ad sentence."""
        if self._normalize is not None:
            return self._normalize(label)
        doc = self.nlp.tokenizer.tokenizer(label) if hasattr(self.nlp.tokenizer, "tokenizer") else self.nlp.make_doc(label)
        normalizer = self._normalizer()
        return [normalizer.normal_form(t.text) if normalizer else t.lower_ for t in doc if not t.is_space]

    def label_orths(self, label: str) -> List[str]:
        """A label's tokens as written ("C#" → "C", "#"): what a case-sensitive pattern must match."""
        tokenizer = getattr(self.nlp.tokenizer, "tokenizer", self.nlp.tokenizer)
        return [t.text for t in tokenizer(label) if not t.is_space]

    def _normalizer(self):  # noqa: ANN202
        for _, component in self.nlp.pipeline:
            if hasattr(component, "normal_form"):
                return component
        return None

    def _compile(self) -> None:
        """Load the patterns into two PhraseMatchers as raw hash sequences.

        All patterns share one match key and the pattern is recovered from the matched tokens: a key per
        pattern would make spaCy create a lexeme per key, and a Doc per pattern costs more still (seconds at
        load for 94k patterns, against a fraction of a second this way).
        """
        strings = self.vocab.strings
        ids = {t: strings.add(t) for t in {t for p in self.patterns.values() for t in p.tokens}}  # ~8k distinct
        self._matchers = {}
        for mode, attr in (("exact", "ORTH"), ("lower", "LOWER"), ("norm", "NORM")):
            sequences = [[ids[t] for t in p.tokens] for p in self.patterns.values() if p.mode == mode]
            self._matchers[mode] = PhraseMatcher(self.vocab, attr=attr)
            if sequences:
                self._matchers[mode].add(MATCH_KEY, sequences)

    # ------------------------------------------------------------------ running
    def __call__(self, doc: Doc) -> Doc:
        if self.taxonomy is None:
            raise NotInitializedError(f"'{self.name}' is not initialized: call nlp.initialize() with an esco_path first.")
        matches = self.match(doc)
        doc.spans[SPANS_KEY] = [span for span, _ in matches]
        set_predictions(doc, self.sentence_predictions(doc, matches))
        return doc

    def match(self, doc: Doc) -> List[Tuple[Span, float]]:
        """Longest non-overlapping matches with their scores; a span linked to several skills comes once per skill."""
        keys_at: Dict[Tuple[int, int], str] = {}  # exact beats lower beats lemma for the same tokens
        for mode, matcher in self._matchers.items():
            for _, start, end in matcher(doc):
                keys_at.setdefault((start, end), pattern_key(mode, doc[start:end]))
        if not keys_at:
            return []
        kept = filter_spans([Span(doc, start, end) for start, end in keys_at])
        matches: List[Tuple[Span, float]] = []
        for span in sorted(kept, key=lambda s: s.start):
            pattern = self.patterns[keys_at[(span.start, span.end)]]
            for uri, preferred in pattern.skills:
                score = self.policy.preferred_score if preferred else self.policy.alt_score
                skill_type = self.taxonomy.skills[uri].skill_type or "skill/competence"
                matches.append((Span(doc, span.start, span.end, label=skill_type, kb_id=uri),
                                score / len(pattern.skills)))
        return matches

    def sentence_predictions(
        self, doc: Doc, matches: Sequence[Tuple[Span, float]]
    ) -> Dict[int, List[SkillPrediction]]:
        """One explicit prediction per (sentence, skill); a shared label's score is split among its skills."""
        starts = sentence_starts(doc)
        per_sentence: Dict[int, Dict[str, SkillPrediction]] = {start: {} for start in set(starts)}
        for span, score in matches:
            preds = per_sentence[starts[span.start]]
            pred = preds.get(span.kb_id_)
            if pred is None:
                preds[span.kb_id_] = SkillPrediction(span.kb_id_, self.taxonomy.label(span.kb_id_), score, True, [span])
            else:
                pred.score = max(pred.score, score)
                pred.spans.append(span)
        return {start: sorted(p.values(), key=lambda x: -x.score) for start, p in per_sentence.items()}

    # ------------------------------------------------------------------ serialization
    def serialization_parts(self) -> Dict[str, Part]:
        """The knowledge base (a folder on disk, loaded first: the patterns link to its skills), then the patterns."""
        return {
            KB_DIR: Part(lambda: self._saved_taxonomy().to_bytes(),
                         lambda data: setattr(self, "taxonomy", EscoTaxonomy.from_bytes(data)),
                         write=lambda path: self._saved_taxonomy().to_disk(path),
                         read=lambda path: setattr(self, "taxonomy", EscoTaxonomy.from_disk(path))),
            PATTERNS_FILE: Part(lambda: srsly.msgpack_dumps(self._patterns_data()),
                                lambda data: self._set_patterns(srsly.msgpack_loads(data))),
        }

    def _saved_taxonomy(self) -> EscoTaxonomy:
        if self.taxonomy is None:
            raise NotInitializedError(f"'{self.name}' has no knowledge base to save: initialize it first.")
        return self.taxonomy

    def _patterns_data(self) -> dict:
        return {
            "policy": self.policy.model_dump(mode="json"),
            "report": self.policy_report,
            "patterns": [[k, list(p.tokens), p.mode, [list(s) for s in p.skills]] for k, p in self.patterns.items()],
        }

    def _set_patterns(self, data: dict) -> None:
        """The saved patterns (the policy that made them is the config's), compiled into the PhraseMatchers."""
        self.policy_report = data["report"]
        self.patterns = {
            key: Pattern(tuple(tokens), mode, [(u, bool(p)) for u, p in skills])
            for key, tokens, mode, skills in data["patterns"]
        }
        self._compile()


def sentence_starts(doc: Doc) -> List[int]:
    """For each token, the index of its sentence's first token (the key of its sentence, see ``sentences``)."""
    return [sent.start for sent in sentences(doc) for _ in range(len(sent))]


def build_patterns(
    taxonomy: EscoTaxonomy,
    policy: LabelPolicy,
    normalize: Callable[[str], List[str]],
    tokenize: Optional[Callable[[str], List[str]]] = None,
    common_words: Sequence[str] = (),
) -> Tuple[Dict[str, Pattern], Dict[str, int]]:
    """Apply the label policy; return patterns keyed by normalized form and counts of what was dropped why.

    Case-sensitive patterns keep the label's tokens as written, split by `tokenize` (default: the whole label
    as one token, which never matches a label the tokenizer splits, such as "C#").
    """
    report: Counter = Counter()
    blocked = {" ".join(normalize(label)) for label in policy.blocklist}
    stock = {" ".join(normalize(label)) for label in policy.stock_phrases}
    esco_words = lower_case_words(taxonomy) if policy.names_in_esco_words_exact else frozenset()
    candidates: Dict[str, Pattern] = {}
    counted: set = set()
    common_words = frozenset(common_words)
    for uri, skill in taxonomy.skills.items():
        forms = [(skill.preferred_label, True)]
        short = strip_parenthetical(skill.preferred_label)
        if short and short != skill.preferred_label:
            forms.append((short, True))
        if policy.use_alt_labels:
            forms += [(label, False) for label in skill.alt_labels]
        if policy.use_hidden_labels:
            forms += [(label, False) for label in skill.hidden_labels]
        # normalized preferred form -> whether it is written uninflected (its own lemma: "troubleshoot", not "securities")
        preferred_forms = {" ".join(normalize(name)): name.lower() == " ".join(normalize(name))
                           for name in (skill.preferred_label, short)}
        names = {name.lower() for name in (skill.preferred_label, short)}
        for label, is_preferred in forms:
            tokens = normalize(label)
            if not tokens:
                report["empty after tokenization"] += 1
                continue
            norm = " ".join(tokens)
            if not is_preferred and norm in preferred_forms:
                is_preferred = (len(tokens) > 1 or not policy.inflected_names_keep_meaning
                                or preferred_forms[norm] or label.lower() in names)
            reason = _drop_reason(tokens, norm, is_preferred, policy, blocked, stock)
            if reason:
                report[reason] += 1
                continue
            if label == short != skill.preferred_label and len(tokens) == 1 and label.lower() in esco_words:
                mode = "exact"  # "Absorb", not "absorb new technologies" (names_in_esco_words_exact)
            else:
                mode = match_mode(label, tokens, policy, common_words)
            orths = tuple(tokenize(label) if tokenize else [label])
            form = {"exact": orths, "lower": tuple(t.lower() for t in orths), "norm": tuple(tokens)}[mode]
            key = pattern_key(mode, form)
            pattern = candidates.setdefault(key, Pattern(form, mode))
            report[f"{mode} patterns"] += key not in counted
            counted.add(key)
            if uri not in {u for u, _ in pattern.skills}:
                pattern.skills.append((uri, is_preferred))
            elif is_preferred:
                pattern.skills = [(u, p or u == uri) for u, p in pattern.skills]
    patterns: Dict[str, Pattern] = {}
    for key, pattern in candidates.items():
        if len(pattern.skills) > 1:
            report["shared labels"] += 1
            if policy.shared_labels == "skip":
                report["shared labels skipped"] += 1
                continue
            if policy.shared_labels == "preferred":
                preferred = [(u, p) for u, p in pattern.skills if p]
                if preferred:
                    pattern.skills = preferred
        patterns[key] = pattern
    if policy.reordered_names_link_preferred:
        report["alternative labels linked to a reordered preferred label"] = link_reordered_names(patterns)
    report["patterns"] = len(patterns)
    report["skills with a pattern"] = len({u for p in patterns.values() for u, _ in p.skills})
    return patterns, dict(report)


def lower_case_words(taxonomy: EscoTaxonomy) -> frozenset:
    """The words ESCO itself writes in lower case in its labels and descriptions: its ordinary English words."""
    words: set = set()
    for skill in taxonomy.skills.values():
        for text in (skill.preferred_label, skill.description or "", *skill.alt_labels):
            words.update(_LOWER_WORD.findall(text))
    return frozenset(words)


def link_reordered_names(patterns: Dict[str, Pattern]) -> int:
    """Link each multi-word alternative-only pattern whose words are another skill's preferred label in another
    order ("problem solve" of *troubleshoot* / *solve problems*) to that skill; return how many were relinked.
    A reordering of the pattern's own skill's preferred label ("budget managing") stays as it is."""
    def bag(pattern: Pattern) -> Tuple[str, ...]:
        return tuple(sorted(pattern.tokens))

    wordy = [p for p in patterns.values() if p.mode == "norm" and len(p.tokens) > 1]
    named: Dict[Tuple[str, ...], List[Tuple[str, bool]]] = {}
    for pattern in wordy:
        named.setdefault(bag(pattern), []).extend(s for s in pattern.skills if s[1])
    relinked = 0
    for pattern in wordy:
        owners = named.get(bag(pattern))
        own = {uri for uri, _ in pattern.skills}
        if owners and not any(p for _, p in pattern.skills) and not own & {uri for uri, _ in owners}:
            pattern.skills = list(owners)
            relinked += 1
    return relinked


def match_mode(label: str, tokens: Sequence[str], policy: LabelPolicy, common_words: frozenset) -> str:
    if len(label) <= policy.case_sensitive_max_chars:
        return "exact"
    if len(tokens) == 1:
        if policy.case_sensitive_common_words and label.isupper() and label.lower() in common_words:
            return "exact"
        if policy.single_words_on_surface:
            return "lower"
    return "norm"


def pattern_key(mode: str, tokens) -> str:  # noqa: ANN001 - a Span or a sequence of strings
    """The key of a pattern, from its tokens (strings) or from the tokens a matcher of that mode matched."""
    if isinstance(tokens, Span):
        tokens = {"exact": [t.text for t in tokens], "lower": [t.lower_ for t in tokens],
                  "norm": [t.norm_ for t in tokens]}[mode]
    prefix = {"exact": "=", "lower": "~", "norm": ""}[mode]
    return prefix + " ".join(tokens)


def _drop_reason(
    tokens: List[str], norm: str, is_preferred: bool, policy: LabelPolicy, blocked: set, stock: set
) -> Optional[str]:
    if norm in blocked:
        return "blocklisted"
    if is_preferred:
        return None
    if norm in stock:
        return "stock phrase of job ads"
    if policy.drop_single_word_alt_labels and len(tokens) == 1:
        return "single-word alternative label"
    if policy.drop_stopword_edges and (tokens[0] in STOP_WORDS or tokens[-1] in STOP_WORDS):
        return "alternative label begins or ends with a stop word"
    return None


@component_factory(MATCHER, MatcherSettings, assigns=["doc.spans", "doc._.esco_skills", "doc._.esco_sentence_skills"],
                   requires=["token.norm"])
def make_skill_matcher(nlp: Language, name: str, settings: MatcherSettings) -> SkillMatcher:
    return SkillMatcher(nlp, name, label_policy=settings.label_policy)


create_label_policy = settings_block(LabelPolicy, "``esco.label_policy.v1``: the matcher's ``label_policy`` "
                                                  "block; its keys are ``LabelPolicy``'s fields.")
registry.misc.register(LABEL_POLICY, func=create_label_policy)
