"""Job-ad text clean-up shared by the tokenizer (what ``nlp(ad)`` sees) and the corpus builder.

Ads arrive as HTML (NHS), as plain text with bullets, or with mojibake from a bad re-encoding. Everything that
separates items visually (paragraphs, list items, line breaks, bullets) becomes a newline, which the segmenter
treats as a sentence boundary.

Before any of it, ``repair_text`` mends what no text should carry (the readers call it and count each repair; the
tokenizer calls it again for text that came another way):

- **lone UTF-16 surrogates** (U+D800-U+DFFF, e.g. ``"\\ud83d"`` from a feed that cut an emoji in half) cannot
  be encoded as UTF-8, so spaCy's tokenizer, Arrow and every UTF-8 writer raise on them. A surrogate *pair* is
  joined into its character; a lone one becomes U+FFFD, one for one, as bad UTF-8 bytes do: the reader of the
  output sees that something was there.
- **control characters** (NUL and the other C0 controls, DEL) carry no text — padding, terminal colour codes,
  bytes of UTF-16 read as 8-bit — and are removed, as BERT-style tokenizers do: U+FFFD would glue a symbol into a
  word. Kept: tab, the line breaks (LF, CR, VT, FF, the information separators U+001C-U+001F) and the Unicode line
  and paragraph separators U+2028 / U+2029, which are text; ``normalize_whitespace`` turns them into newlines
  (sentence boundaries). C1 controls (U+0080-U+009F) are kept too: they are mostly UTF-8 read as Latin-1
  ("â\x80\x99" for "’"), which ``fix_mojibake`` can undo only while they are there; ``clean_job_ad`` removes
  what is left of them afterwards (NEL U+0085 becomes a newline).
- **a byte-order mark** (U+FEFF) inside the text is left over from concatenated files and hides the word it
  sticks to from the matcher: removed.

Everything else is kept as it is, bidi marks, zero-width joiners and combining sequences included.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import Iterable, List, NamedTuple, Tuple

BLOCK_TAGS = frozenset(
    "p div br li ul ol tr td th table h1 h2 h3 h4 h5 h6 section article header footer dt dd blockquote hr".split()
)
SKIP_TAGS = frozenset(("script", "style", "head", "title", "noscript"))
_HTML_HINT = re.compile(r"<\s*/?\s*(?:p|br|li|ul|ol|div|span|strong|b|i|em|table|tr|td|h[1-6])\b[^>]*>|&(?:[a-z]+|#\d+);", re.I)
_BULLETS = re.compile(r"(?:^|(?<=\s))[\u2022\u25CF\u25AA\u25E6\u2023\u2043\u2219\u00B7\u25A0\u25BA\u27A2\u2713\u2714\uf0b7*]+\s*")
_DASH_BULLET = re.compile(r"(?m)^\s*[-\u2013\u2014>]\s+")
_SPACES = re.compile(r"[ \t\u00A0\u2000-\u200B\u202F\u205F\u3000]+")
_BLANK_LINES = re.compile(r"\s*\n\s*")
# Common UTF-8-read-as-cp1252 sequences; a full re-decode is tried first.
_MOJIBAKE_HINT = re.compile("[\u00c2\u00c3\u00e2][\u0080-\u00bf\u201a-\u203a\u2122\u20ac]")
# Line breaks other than LF / CR (Python's str.splitlines boundaries, and the unit separator): newlines.
_LINE_BREAKS = re.compile("[\x0b\x0c\x1c-\x1f\x85\u2028\u2029]")

# repair_text: what it mends, and the reason each repair is counted under (ReadReport, by reason).
LONE_SURROGATE = "lone UTF-16 surrogates replaced with U+FFFD"
CONTROL_CHARACTER = "control characters removed"
BYTE_ORDER_MARK = "byte-order mark inside the text removed"
_SURROGATES = re.compile("[\ud800-\udfff]")
_CONTROLS = re.compile("[\x00-\x08\x0e-\x1b\x7f]")
_C1_CONTROLS = re.compile("[\x80-\x84\x86-\x9f]")  # NEL (U+0085) is a line break: kept for normalize_whitespace
_BOM = "\ufeff"


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: List[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs) -> None:  # noqa: ANN001 - HTMLParser's signature
        if tag in SKIP_TAGS:
            self._skip += 1
        elif tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs) -> None:  # noqa: ANN001
        if tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


class Repair(NamedTuple):
    """``repair_text``'s result: the mended text and the reasons it was mended for (empty: untouched)."""

    text: str
    reasons: Tuple[str, ...]


def repair_text(text: str) -> Repair:
    """The text without lone surrogates, control characters or stray byte-order marks (module docstring).

    Cheap on clean text (three searches, no copy): every reader calls it on every field it keeps."""
    reasons = []
    if _SURROGATES.search(text):
        # A round trip through UTF-16 joins each pair into its character (no loss: not counted); lone ones stay.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
        text, n_lone = _SURROGATES.subn("\ufffd", text)
        if n_lone:
            reasons.append(LONE_SURROGATE)
    if _CONTROLS.search(text):
        text = _CONTROLS.sub("", text)
        reasons.append(CONTROL_CHARACTER)
    if _BOM in text:
        text = text.replace(_BOM, "")
        reasons.append(BYTE_ORDER_MARK)
    return Repair(text, tuple(reasons))


def looks_like_html(text: str) -> bool:
    return bool(_HTML_HINT.search(text))


def html_to_text(text: str) -> str:
    """Strip tags, decode entities; block-level tags become newlines. A marked section Python's parser does not know
    (``<![foo[``, where it raises AssertionError) is read as text instead of losing the ad."""
    try:
        return _parse_html(text)
    except AssertionError:
        return _parse_html(text.replace("<![", "&lt;!["))


def _parse_html(text: str) -> str:
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)


def fix_mojibake(text: str) -> str:
    """Undo UTF-8 text that was decoded as cp1252/latin-1 ("â€™" → "’"), only where that round-trips."""
    if not _MOJIBAKE_HINT.search(text):
        return text
    for codec in ("cp1252", "latin-1"):
        try:
            return text.encode(codec).decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            continue
    return text


def normalize_whitespace(text: str) -> str:
    """Bullets, list dashes and every kind of line break become newlines; runs of spaces and blank lines
    collapse."""
    text = _LINE_BREAKS.sub("\n", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _BULLETS.sub("\n", text)
    text = _DASH_BULLET.sub("\n", text)
    text = _SPACES.sub(" ", text)
    text = _BLANK_LINES.sub("\n", text)
    return text.strip()


def clean_job_ad(text: str) -> str:
    """The one clean-up every ad goes through: repairs, HTML → text, entities, mojibake, C1 controls, bullets,
    whitespace."""
    if not text:
        return ""
    text = repair_text(text).text  # a reader repaired and counted it already; text given to nlp() directly not
    if looks_like_html(text):
        text = html_to_text(text)
    elif "&" in text:
        text = html.unescape(text)
    return normalize_whitespace(_C1_CONTROLS.sub("", fix_mojibake(text)))


def split_long_line(line: str, max_chars: int) -> List[str]:
    """Split a line longer than `max_chars` at sentence punctuation, then at separators, then hard."""
    if len(line) <= max_chars:
        return [line]
    pieces: List[str] = []
    for pattern in (r"(?<=[.!?;])\s+", r"(?<=[,:])\s+|\s+[-|/]\s+", r"\s+"):
        parts = re.split(pattern, line)
        if len(parts) > 1:
            current = ""
            for part in parts:
                if current and len(current) + 1 + len(part) > max_chars:
                    pieces.append(current)
                    current = part
                else:
                    current = f"{current} {part}" if current else part
            if current:
                pieces.append(current)
            return [p for piece in pieces for p in split_long_line(piece, max_chars)]
    return [line[i : i + max_chars] for i in range(0, len(line), max_chars)]


# Closed-class words tell languages apart: English prose uses many of the English ones and almost none of the
# others. Job ads are often noun lists ("Life Assurance, Discounted Fitness Membership") with few function
# words of any language, so a text is called non-English only when other languages' function words outnumber
# the English ones — not merely when English ones are rare.
ENGLISH_FUNCTION_WORDS = frozenset(
    """a an the and or but of to in on at for with from by as is are was were be been being will would can
    could should may must have has had do does did not no this that these those it its we you they our your
    their he she his her who which what when where how all any some more most other such than then there
    about into through during before after above below up down out over under again further also only very
    just within across""".split()
)
OTHER_FUNCTION_WORDS = frozenset(
    """der die das den dem des und ist sind nicht mit für von zu auf ein eine einen wir sie ich oder auch bei
    le la les et est sont des une un pour avec dans du au aux nous vous ou sur par pas qui
    el los las y es son por para con una unos del al que como su sus pero más
    il di che per non sono della nel gli
    het een van en ook niet voor zijn wij bij naar
    się nie jest oraz dla przez""".split()
) - ENGLISH_FUNCTION_WORDS
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def english_score(text: str) -> float:
    """Share of word tokens that are English function words (0..1); about 0.3-0.5 for English prose."""
    words = _WORD.findall(text.lower())
    if not words:
        return 0.0
    return sum(word in ENGLISH_FUNCTION_WORDS for word in words) / len(words)


def foreign_score(text: str) -> float:
    """Share of word tokens that are function words of other European languages (German, French, ...)."""
    words = _WORD.findall(text.lower())
    if not words:
        return 0.0
    return sum(word in OTHER_FUNCTION_WORDS for word in words) / len(words)


def is_english(text: str, min_foreign: float = 0.1, min_words: int = 8) -> bool:
    """False only when other languages' function words are frequent and outnumber English ones.

    Short texts (under `min_words` words) and noun lists get the benefit of the doubt.
    """
    if len(_WORD.findall(text)) < min_words:
        return True
    foreign = foreign_score(text)
    return not (foreign >= min_foreign and foreign > english_score(text))


def iter_lines(text: str) -> Iterable[str]:
    return (line.strip() for line in text.split("\n") if line.strip())
