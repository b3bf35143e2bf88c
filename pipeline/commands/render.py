"""The HTML view of a processed ad, shared by ``extract --html`` (a static page) and ``serve`` (the page at ``/``).

The ad is shown as written: each sentence is a slice of ``doc.text`` (the cleaned ad: HTML stripped, entities
decoded), cut at the character offsets of its explicit spans and of its implied skills' evidence, every piece
escaped — never the tokens, whose spacing is not the ad's. Explicit spans are highlighted (knowledge and skills in
two colours, the ESCO label on hover); the words that suggest an implied skill are marked too; each sentence's
decided set sits beside it as chips with their probability (hovering a chip outlines its words); a sentence that
asks for no skill (boilerplate, a benefits section, the decider's gate) is greyed with its reason. Above: the ad's
set as a table and a "Download CSV" link (a ``data:`` URL, so that the static page needs no server).

Reads only the output contract (``doc.spans["esco_skills"]``, ``doc._.esco_skill_set``, ``sent._.esco_skill_set``,
``sent._.esco_no_skill_reason``, ``doc._.esco_skills`` for labels), so it shows a matcher-only pipeline and a
calibrated one alike. The page around it is one template (``templates/page.html`` with its CSS and plain
JavaScript inlined: the page works offline, without a CDN or a build step); ``serve`` adds the form.
"""

from __future__ import annotations

import csv
import functools
import io
from html import escape
from pathlib import Path
from string import Template
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Set
from urllib.parse import quote

from spacy.tokens import Doc, Span

from pipeline import ESCO_ATTRIBUTION
from pipeline.components.predictions import SPANS_KEY, SkillPrediction, register_extensions
from pipeline.components.segmenter import sentences
from pipeline.errors import ConfigError
from pipeline.io.records import CSV_COLUMNS, csv_rows

TEMPLATES = Path(__file__).parent / "templates"
TITLE = "ESCO skills in job ads"
SUBTITLE = ("Explicit skills are highlighted where the ad names them; implied skills are listed beside the sentence "
            f"that asks for them, with the words that suggest them marked. {ESCO_ATTRIBUTION}")
CONTENT_SLOT = "{content}"  # where ``extract``'s HtmlWriter streams the ads into PAGE
LEGEND = ('<div class="esco-legend">'
          '<span><mark class="esco-span knowledge">knowledge</mark> <mark class="esco-span skill">skill</mark> named '
          'in the ad (hover: its ESCO skill)</span>'
          '<span><mark class="esco-evidence">words</mark> that suggest an implied skill</span>'
          '<span><mark class="esco-span dropped">matched</mark> but not asked for</span>'
          '<span class="esco-skip-sample">greyed: a sentence that asks for no skill</span></div>')


class Mark(NamedTuple):
    """A character range of ``doc.text`` to mark: its CSS classes, its hover text and the skill it is about."""

    start: int
    end: int
    css: str
    title: str
    uri: str


# ------------------------------------------------------------------------------------------------- the page
@functools.lru_cache(maxsize=None)
def template(name: str) -> str:
    """A file of ``templates/`` (read once)."""
    return (TEMPLATES / name).read_text(encoding="utf-8")


def render_page(content: str = "", *, form: str = "", title: str = TITLE, subtitle: str = SUBTITLE) -> str:
    """The standalone page around ``content`` (ad views), its CSS and script inlined; ``form`` (``serve``'s
    form) goes above the results."""
    return Template(template("page.html")).substitute(
        title=escape(title), subtitle=escape(subtitle), form=form, content=content, style=template("page.css"),
        script=template("page.js"))


PAGE = render_page(CONTENT_SLOT)


# ------------------------------------------------------------------------------------------------- one ad
def render_ad(doc: Doc, top_k: int = 10, *, ad_id: Optional[str] = None, page: bool = False) -> str:
    """HTML of one ad: a header (its id, counts, the CSV link), its set as a table, then the ad as written, one
    sentence a row with its set (or its reason for none) beside it. At most ``top_k`` skills per list; ``page=True``
    wraps it in the standalone page."""
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    register_extensions()
    labels = _labels_by_uri(doc)
    ad_set = list(doc._.esco_skill_set or [])
    anchor = f' id="ad-{escape(ad_id, quote=True)}"' if ad_id else ""
    parts = [f'<section class="esco-ad"{anchor}>', _ad_header(ad_set, ad_id), *_notes(doc),
             _skill_table(ad_set, top_k), LEGEND, '<div class="esco-text">']
    previous_end = 0
    for sent in sentences_of(doc):
        paragraph = doc.text.count("\n", previous_end, sent.start_char) >= 2
        parts.append(_render_sentence(sent, labels, top_k, paragraph))
        previous_end = _text_end(sent)
    parts += ["</div>", "</section>"]
    markup = "\n".join(parts)
    return render_page(markup) if page else markup


def _ad_header(ad_set: Sequence[SkillPrediction], ad_id: Optional[str]) -> str:
    explicit = sum(pred.explicit for pred in ad_set)
    counts = (f"{len(ad_set)} skill{'s' if len(ad_set) != 1 else ''} asked for: {explicit} explicit, "
              f"{len(ad_set) - explicit} implied")
    name = ad_id or "ad"
    link = (f'<a class="esco-csv" download="{escape(_file_name(name), quote=True)}-skills.csv" '
            f'href="data:text/csv;charset=utf-8,{quote(csv_text([_set_record(name, ad_set)]))}">Download CSV</a>')
    title = f"Ad {escape(ad_id)}" if ad_id else "The ad"
    return f'<div class="esco-ad-head"><h2>{title}</h2><span class="esco-counts">{counts}</span>{link}</div>'


def _notes(doc: Doc) -> Iterator[str]:
    """What makes the ad's skills less reliable: not English, or cut at the tokenizer's cap."""
    if doc.has_extension("is_english") and doc._.is_english is False:
        yield ('<p class="esco-note">This ad does not look like English: ESCO labels are English, so its skills are '
               'unreliable.</p>')
    cut = int(doc._.truncated_chars or 0) if doc.has_extension("truncated_chars") else 0
    if cut:
        yield f'<p class="esco-note">The ad was cut: its last {cut:,} characters were not read.</p>'


def _skill_table(ad_set: Sequence[SkillPrediction], top_k: int) -> str:
    if not ad_set:
        return '<p class="esco-none">No skill asked for.</p>'
    rows = "".join(_skill_row(pred) for pred in ad_set[:top_k])
    more = (f'<tr><td colspan="4" class="esco-more">… and {len(ad_set) - top_k} more (in the CSV)</td></tr>'
            if len(ad_set) > top_k else "")
    return ('<table class="esco-skills"><thead><tr><th>ESCO skill</th><th>kind</th><th>probability</th>'
            f'<th>evidence</th></tr></thead><tbody>{rows}{more}</tbody></table>')


def _skill_row(pred: SkillPrediction) -> str:
    kind = _kind(pred)
    if pred.probability is not None:
        value = (f'<span class="esco-bar"><span style="width:{100 * pred.probability:.0f}%"></span></span>'
                 f"{pred.probability:.2f}")
    else:
        value = f"score {pred.score:.2f}"
    return (f'<tr><td>{_skill_link(pred)}</td><td><span class="esco-kind {kind}">{kind}</span></td>'
            f'<td class="num">{value}</td><td>{escape(_evidence_words(pred))}</td></tr>')


# ------------------------------------------------------------------------------------------------- sentences
def _render_sentence(sent: Span, labels: Dict[str, str], top_k: int, paragraph: bool) -> str:
    """One row: the sentence as written with its marks, and beside it its set as chips, or why it has none."""
    reason = sent._.esco_no_skill_reason
    members = list(sent._.esco_skill_set or [])
    marks = _span_marks(sent, labels, {pred.uri for pred in members}, reason) + _evidence_marks(sent, members)
    text = marked_text(sent.doc.text, sent.start_char, _text_end(sent), marks)
    side = f'<span class="esco-reason" title="{escape(reason, quote=True)}">{escape(reason_text(reason))}</span>' \
        if reason else _chips(members, top_k)
    css = "esco-sentence" + (" esco-skipped" if reason else "") + (" esco-para" if paragraph else "")
    return (f'<div class="{css}"><div class="esco-sentence-text">{text}</div>'
            f'<div class="esco-chips">{side}</div></div>')


def _span_marks(sent: Span, labels: Dict[str, str], members: Set[str], reason: Optional[str]) -> List[Mark]:
    """The explicit spans (literal matches) in the sentence; those outside its set are marked as dropped."""
    if SPANS_KEY not in sent.doc.spans:
        return []
    marks = []
    for span in sent.doc.spans[SPANS_KEY]:
        if not (sent.start <= span.start and span.end <= sent.end):
            continue
        uri = span.kb_id_
        kind = "knowledge" if span.label_ == "knowledge" else "skill"
        title = f"{labels.get(uri, uri or span.label_)} (ESCO {span.label_ or 'skill'})"
        if uri not in members:
            kind += " dropped"
            title += f" — matched, not asked for ({reason})" if reason else " — matched, not in the set"
        marks.append(Mark(span.start_char, span.end_char, f"esco-span {kind}", title, uri))
    return marks


def _evidence_marks(sent: Span, members: Sequence[SkillPrediction]) -> List[Mark]:
    """The words that support each member: an implied skill's evidence, an explicit one's mention."""
    marks = []
    for pred in members:
        css = "esco-span" if pred.explicit else "esco-evidence"
        title = f"{'names' if pred.explicit else 'suggests'}: {pred.label}" + _probability_note(pred)
        marks.extend(Mark(e.start_char, e.end_char, css, title, pred.uri) for e in pred.evidence
                     if sent.start_char <= e.start_char < e.end_char <= sent.end_char)
    return marks


def marked_text(text: str, start: int, end: int, marks: Sequence[Mark]) -> str:
    """``text[start:end]`` escaped, each run of characters covered by the same marks in one ``<mark>`` (classes,
    hover text and skill URIs of all of them): overlapping marks never nest, and nothing of the text is lost."""
    inside = [m for m in marks if m.start < end and m.end > start]
    cuts = sorted({start, end, *(max(start, m.start) for m in inside), *(min(end, m.end) for m in inside)})
    runs: List[List[Any]] = []  # [covering marks, first, last]
    for first, last in zip(cuts, cuts[1:]):
        covering = tuple(m for m in inside if m.start <= first and last <= m.end)
        if runs and runs[-1][0] == covering:
            runs[-1][2] = last
        else:
            runs.append([covering, first, last])
    return "".join(_marked_run(text[first:last], covering) for covering, first, last in runs)


def _marked_run(piece: str, covering: Sequence[Mark]) -> str:
    if not covering:
        return escape(piece)
    classes = " ".join(dict.fromkeys(c for m in covering for c in m.css.split()))
    titles = "\n".join(dict.fromkeys(m.title for m in covering))
    uris = " ".join(dict.fromkeys(m.uri for m in covering if m.uri))
    return (f'<mark class="{escape(classes, quote=True)}" title="{escape(titles, quote=True)}" '
            f'data-uris="{escape(uris, quote=True)}">{escape(piece)}</mark>')


def _chips(members: Sequence[SkillPrediction], top_k: int) -> str:
    chips = "".join(
        f'<span class="esco-chip {_kind(pred)}" data-uri="{escape(pred.uri, quote=True)}" '
        f'title="{escape(_kind(pred) + _probability_note(pred), quote=True)}">{_skill_link(pred)}'
        f'<span class="p">{_short_value(pred)}</span></span>'
        for pred in members[:top_k])
    more = f'<span class="esco-more">+{len(members) - top_k} more</span>' if len(members) > top_k else ""
    return chips + more


# ------------------------------------------------------------------------------------------------- small parts
REASONS = {"boilerplate": "asks for no skill: boilerplate (a line many ads share)",
           "heading": "asks for no skill: a heading",
           "no_skill": "asks for no skill (the decider's gate)"}


def reason_text(reason: str) -> str:
    """Why a sentence asks for no skill, in words (the output contract's ``no_skill_reason`` as the title)."""
    if reason.startswith("section:"):
        return f"asks for no skill: in the “{reason.split(':', 1)[1].replace('_', ' ')}” section"
    return REASONS.get(reason, f"asks for no skill: {reason}")


def _kind(pred: SkillPrediction) -> str:
    return "explicit" if pred.explicit else "implied"


def _skill_link(pred: SkillPrediction) -> str:
    return f'<a href="{escape(pred.uri, quote=True)}" target="_blank" rel="noopener">{escape(pred.label)}</a>'


def _short_value(pred: SkillPrediction) -> str:
    return f"{pred.probability:.2f}" if pred.probability is not None else f"score {pred.score:.2f}"


def _probability_note(pred: SkillPrediction) -> str:
    return f" (probability {pred.probability:.2f})" if pred.probability is not None else f" (score {pred.score:.2f})"


def _evidence_words(pred: SkillPrediction) -> str:
    return " · ".join(dict.fromkeys(e.text for e in pred.evidence))


def _text_end(sent: Span) -> int:
    """Where the sentence's text ends without its trailing white space (a line break belongs to no row)."""
    return sent.start_char + len(sent.text.rstrip())


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "ad"


def _set_record(ad_id: str, ad_set: Sequence[SkillPrediction]) -> Dict[str, Any]:
    """The part of ``extract``'s record the CSV reads (its ``id`` and ``skills``)."""
    return {"id": ad_id, "skills": [pred.to_dict() for pred in ad_set]}


def csv_text(records: Iterable[Dict[str, Any]], ranking: bool = False) -> str:
    """``extract --csv`` for these records: a header of ``CSV_COLUMNS``, then each ad's set (every ranked row with
    ``ranking``)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for record in records:
        writer.writerows(csv_rows(record, ranking))
    return out.getvalue()


def _labels_by_uri(doc: Doc) -> Dict[str, str]:
    labels = {pred.uri: pred.label for pred in doc._.esco_skills or []}
    for sent in sentences_of(doc):
        for pred in sent._.esco_skills or []:
            labels.setdefault(pred.uri, pred.label)
    return labels


def sentences_of(doc: Doc) -> Iterator[Span]:
    """The sentences with text (``sentences``: the whole doc when nothing set sentence starts); what every view
    lists."""
    return (sent for sent in sentences(doc) if sent.text.strip())
