"""``esco_boilerplate_filter``: marks the sentences of an ad that ask for no skill, before the ranker ranks them.

An ad is not all requirements: company descriptions, benefits, how to apply and legal text ask for no skill, yet a
ranker gives every sentence its ten best skills ("27 days' annual leave … NHS Pension Scheme" → *develop pension
schemes*). Two cheap signals find such sentences; each can be switched off in the config:

- **boilerplate** (``skip_boilerplate``): the sentence's line, or the sentence itself, has the key of a line that
  the corpus found in ``boilerplate_min_ads`` (20) or more distinct ads *with no literal skill in it*. The key is
  the corpus' own (``pipeline.io.boilerplate.line_key``, lower-cased, punctuation dropped, digits folded), so
  "Closing date 12/03/2020" is found again as "Closing date 01/05/2021". Frequent lines that name a skill are not
  shipped: they are repeated, but they still ask for it. The keys ship in the component folder
  (``boilerplate_keys.npy``, uint64), read at ``initialize`` from ``<corpus>/boilerplate.jsonl`` (``train`` passes
  its corpus' file). A pipeline without keys (``assemble``) still skips sections.
- **sections** (``skip_sections``): a sentence in a section whose heading is recognised, ``section:<name>``. A
  *heading* is a line of at most ``max_heading_words`` words; it is compared lower-cased, with curly quotes
  straightened, "&", "/" and "+" read as "and", and the punctuation around it (``:``, ``-``, ``?``, bullets)
  dropped (``normalize_heading``); it is recognised when a pattern of ``sections`` (name → regular expressions,
  matched against the whole heading) or of ``skill_headings`` (the headings of skill-bearing sections) matches
  it. The rule, line by line:

  * a heading alone on its line that a ``sections`` pattern matches opens that section: its line and every line
    after it are skipped, up to the next line that is a recognised heading (skill-bearing or another section)
    or a short line ending with ``:`` that no pattern recognises ("In this post you will:") — an unknown heading is
    taken to open skill-bearing text, since skipping too much loses skills without a trace;
  * a heading followed by text on the same line (``Salary: £25,000``) marks that line only; a skill heading
    with text (``Requirements: Python``) ends a running section;
  * nothing else ends a section: a benefits section at the end of an ad runs to its end.

  ``sections`` in a config are merged with the defaults (spaCy merges a component's config over its factory's):
  a new name adds a section, a default name given ``[]`` turns that section off.

  With ``skip_headings`` a recognised heading of a skill-bearing section ("Main duties", "Requirements") is
  marked ``heading``: the heading itself asks for nothing; the lines under it are left alone.

A sentence that is both in a section and boilerplate gets the section's reason (it says what the text is).

Marked sentences go to ``doc._.esco_skipped`` (``mark_skipped``): the ranker does not rank them, which saves
their encoding, the pipeline's main cost. The filter also records their decision, an empty set with the reason
(``set_decisions``; a decider after the ranker decides them the same way), so ``sent._.esco_skill_set`` is empty
and ``sent._.esco_no_skill_reason`` says why even in a pipeline without a decider. Literal matches in a skipped
sentence stay in ``doc.spans["esco_skills"]`` and in the ranking (``doc._.esco_skills``, ``sent._.esco_skills``):
those words are in the text; only the set, what the ad asks for, leaves them out.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Literal, Mapping, Optional, Sequence, Tuple

import numpy as np
from spacy.language import Language
from spacy.tokens import Doc, Span

from pipeline.components.factory import component_factory
from pipeline.components.pipes import BOILERPLATE
from pipeline.components.predictions import mark_skipped, register_extensions, set_decisions
from pipeline.components.segmenter import sentences
from pipeline.io.boilerplate import line_key
from pipeline.errors import ConfigError
from pipeline.settings import Field, Settings, StrictBool, StrictInt, StrictStr
from pipeline.io.serialization import Part, Serializable, npy_bytes, read_npy

KEYS_FILE = "boilerplate_keys.npy"
BOILERPLATE_REASON = "boilerplate"
HEADING_REASON = "heading"
SECTION_PREFIX = "section:"
SECTION_NAME = re.compile(r"[a-z][a-z0-9_]*")
# Around a heading: bullets, dashes, colons and the like ("Benefits:", "- How to apply -", "Interested?").
_HEADING_EDGES = " \t-–—•*#|:;.,!?()[]"
_QUOTES = str.maketrans({"’": "'", "‘": "'", "`": "'", "“": '"', "”": '"'})
_AND = re.compile(r"\s*[&/+]\s*")
_NEWLINE = re.compile("\n")

# Section name → heading patterns (Python regular expressions, matched against the whole normalized heading).
# Chosen from the most frequent short lines of 8,000 ads in ../shared/jobads. Keep them free of "$" and of
# backslashes: the config file would read them as variables or escapes.
DEFAULT_SECTIONS: Dict[str, Tuple[str, ...]] = {
    "about_us": (
        "about (us|the company|the organi[sz]ation|the trust|the employer|the business|our company|"
        "our organi[sz]ation|our trust|our client|the client|your next employer)",
        "(the|our) (company|organi[sz]ation|mission|values|story)",
        "company (overview|description|profile|information)",
        "who (we are|are we)",
        "why (us|join us|work (for|with) us)",
    ),
    "benefits": (
        "((the|our|your|employee|staff) )?benefits?( package| include| on offer| and perks| and rewards)?",
        "perks( and benefits)?",
        "rewards?( and benefits| package)?",
        "what (we|we can|can we) offer( you)?",
        "in return( we offer( you)?)?",
        "(we offer|our offer)( you| to you)?",
        "what'?s in it for you",
        "what (you'll|you will) get( in return)?",
    ),
    "salary": ("(salary|pay|compensation|remuneration)( and benefits| range| details| package)?",),
    "how_to_apply": (
        "how (to|do i) apply",
        "(to )?apply( now| today| here| online)?",
        "(the )?next steps?",
        "what('s| is| happens)? next",
        "interested",
        "application (process|details|information)",
        "(further|more|additional)( contact)? (information|details)",
        "contact( us| details| information)?",
        "for (further|more) information( please contact)?",
    ),
    "equal_opportunities": (
        "equal (opportunit(y|ies)|employment)( employer| statement| opportunity employer)?",
        "(equality|diversity|inclusion)( and (diversity|inclusion|equality))*( statement)?",
        "(eeo|eoe)( statement)?",
    ),
    "legal": (
        "disclaimer",
        "(work|visa) authori[sz]ation",
        "right to work( in the uk)?",
        "privacy( notice| policy)?",
    ),
    "job_details": (
        "location|hours( per week)?|working (hours|pattern)|contract( type)?|job type|employment type",
        "(closing|start|interview) date|reference( number)?",
    ),
}
# Headings of skill-bearing sections: they end a skipped section (and are marked "heading" themselves).
DEFAULT_SKILL_HEADINGS: Tuple[str, ...] = (
    "((key|main|principal|core|job|your|the|role) )?(duties|responsibilities|accountabilities|tasks)"
    "( and (duties|responsibilities))?( include| of (the|this) (role|post|job)( include)?)?",
    "((minimum|preferred|basic|key|required|essential|desirable|desired|additional) )?"
    "(qualifications|requirements|skills|experience|education|criteria|competencies|knowledge)"
    "( and (experience|skills|qualifications|knowledge|education|abilities|responsibilities))?( required)?",
    "essential|desirable|desired|preferred|required|nice to have|bonus points",
    "((the|about the|your|this) )?(role|job|position|post|opportunity)"
    "( description| summary| overview| purpose| profile)?",
    "(job|role|position|post) (description|summary|purpose|profile|overview)",
    "about you|who you are|you are|you|the person|the (ideal )?candidate|ideal candidate|candidate profile",
    "(the )?person specification",
    "(who|what) (we're|we are) looking for",
    "what (you'll|you will) (do|be doing|need|bring|have)",
    "you will( have| need| be| bring)?",
    "((your|a) )?day[ -]to[ -]day",
    "overview|summary|description|(main |job )?purpose( of the (role|job|post))?",
    "applicants should (meet|have) the following( criteria)?",
)


# ---------------------------------------------------------------------------------------------------- headings
@dataclass(frozen=True)
class Heading:
    """A recognised heading line: the kind of section it opens, the section's name, text after it on its line."""

    kind: Literal["section", "skill", "unknown"]
    name: Optional[str] = None
    inline: bool = False


def normalize_heading(text: str) -> str:
    """Lower case, straight quotes, "&" and "/" as "and", single spaces, punctuation around it dropped
    ("Skills & Experience:" → "skills and experience", "Skills/Responsibilities" → "skills and responsibilities")."""
    text = _AND.sub(" and ", text.translate(_QUOTES).lower())
    return " ".join(text.split()).strip(_HEADING_EDGES)


def compile_patterns(section: str, key: str, patterns: Sequence[str]) -> re.Pattern:
    """One regex that fully matches any of ``patterns`` (none for an empty list); a blank or bad pattern is a
    ConfigError naming it."""
    if not all(p.strip() for p in patterns):
        raise ConfigError(f"[{section}] {key} must be a list of regular expressions, got {patterns!r}")
    for i, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"[{section}] {key}[{i}] is not a valid regular expression ({err}): {pattern!r}") \
                from err
    return re.compile("|".join(f"(?:{p})" for p in patterns) if patterns else "(?!)")


class HeadingRules:
    """Which short lines are headings, and of which section (see the module docstring for the rule)."""

    def __init__(self, section: str, sections: Mapping[str, Sequence[str]], skill_headings: Sequence[str],
                 max_words: int):
        for name in sections:
            if not SECTION_NAME.fullmatch(name):
                raise ConfigError(f"[{section}] sections: section name {name!r} must be lower case letters, digits "
                                  "and _ (it becomes the reason 'section:<name>')")
        self.sections = [(name, compile_patterns(section, f"sections.{name}", patterns))
                         for name, patterns in sections.items()]
        self.skill = compile_patterns(section, "skill_headings", skill_headings)
        self.max_words = max_words

    def classify(self, line: str) -> Optional[Heading]:
        text = " ".join(line.split())
        head, colon, rest = text.partition(":")
        inline = bool(colon and rest.strip(_HEADING_EDGES))
        heading = normalize_heading(head if inline else text)
        if not heading or len(heading.split()) > self.max_words:
            return None
        for name, pattern in self.sections:
            if pattern.fullmatch(heading):
                return Heading("section", name, inline)
        if self.skill.fullmatch(heading):
            return Heading("skill", None, inline)
        if not inline and text.rstrip().endswith(":"):
            return Heading("unknown")
        return None


# ---------------------------------------------------------------------------------------------------- lines
def sentences_by_line(doc: Doc) -> Iterator[Tuple[str, List[Tuple[Span, str]]]]:
    """(line text, its sentences with their text) in order, sentences of white space left out; a line break
    always starts a sentence (the segmenter's rule), so no sentence spans two lines."""
    text = doc.text
    breaks = [match.start() for match in _NEWLINE.finditer(text)]
    current, members = None, []
    for sent in sentences(doc):
        sent_text = text[sent.start_char:sent.end_char]
        if not sent_text.strip():
            continue
        line = bisect_right(breaks, sent.start_char)  # the number of line breaks before the sentence
        if line != current and members:
            yield _line_text(text, breaks, current), members
            members = []
        current = line
        members.append((sent, sent_text))
    if members:
        yield _line_text(text, breaks, current), members


def _line_text(text: str, breaks: List[int], line: int) -> str:
    start = breaks[line - 1] + 1 if line else 0
    end = breaks[line] if line < len(breaks) else len(text)
    return text[start:end]


# ---------------------------------------------------------------------------------------------------- component
class BoilerplateSettings(Settings):
    """``[components.esco_boilerplate_filter]`` (see the module docstring for the rule each key switches)."""

    skip_boilerplate: StrictBool = True
    skip_sections: StrictBool = True
    skip_headings: StrictBool = True
    max_heading_words: StrictInt = Field(8, ge=1)
    sections: Dict[StrictStr, Tuple[StrictStr, ...]] = DEFAULT_SECTIONS
    skill_headings: Tuple[StrictStr, ...] = DEFAULT_SKILL_HEADINGS


class BoilerplateFilter(Serializable):
    """Marks boilerplate sentences and sentences of skipped sections (see the module docstring)."""

    def __init__(self, nlp: Language, name: str = BOILERPLATE, settings: BoilerplateSettings = BoilerplateSettings()):
        self.name = name
        self.settings = settings
        self.rules = HeadingRules(f"components.{name}", settings.sections, settings.skill_headings,
                                  settings.max_heading_words)
        self.keys: frozenset = frozenset()
        register_extensions()

    # ------------------------------------------------------------------ setup
    def initialize(self, get_examples: Optional[Callable] = None, *, nlp: Optional[Language] = None,
                   boilerplate_path: Optional[str] = None) -> None:
        """Ship the keys of the corpus' boilerplate lines without a skill (``<corpus>/boilerplate.jsonl``, or the
        corpus folder); without a path the component ships none and skips sections only."""
        if boilerplate_path is None:
            self.keys = frozenset()
            return
        from pipeline.io.boilerplate import read_boilerplate

        self.keys = frozenset(row["key"] for row in read_boilerplate(Path(boilerplate_path)) if not row["has_skill"])

    # ------------------------------------------------------------------ running
    def __call__(self, doc: Doc) -> Doc:
        reasons = self.reasons(doc)
        mark_skipped(doc, reasons)
        set_decisions(doc, {start: ([], reason) for start, reason in reasons.items()})
        return doc

    def pipe(self, docs: Iterable[Doc], batch_size: int = 128) -> Iterator[Doc]:
        for doc in docs:
            yield self(doc)

    def reasons(self, doc: Doc) -> Dict[int, str]:
        """{sentence start token: reason} for every sentence that asks for no skill."""
        reasons: Dict[int, str] = {}
        section: Optional[str] = None  # the skipped section running at this line
        headings = self.settings.skip_sections or self.settings.skip_headings
        for line, members in sentences_by_line(doc):
            heading = self.rules.classify(line) if headings else None
            reason, section = self._line_reason(heading, section)
            if reason:
                reasons.update((sent.start, reason) for sent, _ in members)
            elif self.settings.skip_boilerplate and self.keys:
                reasons.update((sent.start, BOILERPLATE_REASON) for sent in self._boilerplate(line, members))
        return reasons

    def _line_reason(self, heading: Optional[Heading], section: Optional[str]) -> Tuple[Optional[str],
                                                                                        Optional[str]]:
        """(the line's reason, the section running after it), by the rule of the module docstring."""
        if heading is None:
            return (SECTION_PREFIX + section if section else None), section
        if heading.kind == "section" and self.settings.skip_sections:
            if heading.inline:
                return SECTION_PREFIX + heading.name, section
            return SECTION_PREFIX + heading.name, heading.name
        if heading.inline:  # a skill heading with text, or a section heading while sections are not skipped
            return None, None if heading.kind == "skill" else section
        return (HEADING_REASON if self.settings.skip_headings and heading.kind != "unknown" else None), None

    def _boilerplate(self, line: str, sentences: List[Tuple[Span, str]]) -> List[Span]:
        """The sentences of a line that are boilerplate: all of them when the line is, else those that are on
        their own (a boilerplate line the ad wrote after another sentence)."""
        if line_key(line, fold_digits=True) in self.keys:
            return [sent for sent, _ in sentences]
        if len(sentences) == 1:  # the sentence is the line: same key
            return []
        return [sent for sent, text in sentences if line_key(text, fold_digits=True) in self.keys]

    # ------------------------------------------------------------------ serialization
    def serialization_parts(self) -> Dict[str, Part]:
        """The boilerplate keys, sorted, as a uint64 ``.npy`` (the rules are the config's)."""
        return {KEYS_FILE: Part(lambda: npy_bytes(np.asarray(sorted(self.keys), dtype=np.uint64)),
                                lambda data: setattr(self, "keys", frozenset(int(key) for key in read_npy(data))))}


@component_factory(BOILERPLATE, BoilerplateSettings, assigns=["doc._.esco_skipped", "doc._.esco_decisions"],
                   requires=["token.is_sent_start"])
def make_boilerplate_filter(nlp: Language, name: str, settings: BoilerplateSettings) -> BoilerplateFilter:
    return BoilerplateFilter(nlp, name, settings)
