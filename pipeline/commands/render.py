"""HTML view of one processed ad: displaCy spans for explicit mentions, each sentence's decided set under it.

Reads only the output contract (``doc.spans["esco_skills"]``, ``doc._.esco_skill_set``, ``sent._.esco_skill_set``,
``sent._.esco_no_skill_reason``, ``doc._.esco_skills`` for labels), so it shows a matcher-only pipeline and a
calibrated one alike. Each explicit span is labelled with the ESCO preferred label of the skill it links to and
links to the skill's URI. Under each sentence: its set, each skill with its kind, probability (or score when no
decider gave one) and its evidence — the words of the sentence that support it — in ``<mark>``. A sentence that
asks for no skill (boilerplate, a benefits section, the decider's gate) is greyed, with the reason.
"""

from __future__ import annotations

from html import escape
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from spacy import displacy
from spacy.tokens import Doc, Span

from pipeline.components.predictions import SPANS_KEY, Evidence, SkillPrediction, register_extensions
from pipeline.components.segmenter import sentences
from pipeline.errors import ConfigError

TYPE_COLORS = {"knowledge": "#a6cee3", "skill/competence": "#b2df8a"}
DEFAULT_COLOR = "#ddd"
CONTEXT_CHARS = 60  # characters of the sentence shown on each side of a skill's evidence
STYLE = ("<style>.esco-skipped{opacity:.45}.esco-reason{font-style:italic;color:#666;margin:0 0 .5em}"
         ".esco-evidence mark{background:#ffe08a;padding:0 .15em}.esco-sentence{margin-bottom:1em}</style>")
PAGE = '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"></head>\n<body>\n{content}\n</body>\n</html>'


def render_ad(doc: Doc, top_k: int = 10, *, page: bool = False) -> str:
    """HTML: the ad's set (the skills it asks for), then each sentence with its explicit spans (displaCy "span"
    style) and, under it, its set with the evidence marked, or the reason it asks for none. At most ``top_k``
    skills per list. ``page=True`` wraps it in a standalone HTML page."""
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    register_extensions()
    labels = _labels_by_uri(doc)
    parts = [STYLE, '<div class="esco-ad">',
             _skill_list(doc._.esco_skill_set, top_k, "esco-ad-skills", "Skills asked for")]
    for sent in sentences_of(doc):
        parts.append(_render_block(sent, labels, top_k))
    parts.append("</div>")
    markup = "\n".join(parts)
    return PAGE.format(content=markup) if page else markup


def _render_block(sent: Span, labels: Dict[str, str], top_k: int) -> str:
    """One sentence: greyed with its reason when it asks for no skill, else with its set under it."""
    reason = sent._.esco_no_skill_reason
    css = "esco-sentence esco-skipped" if reason else "esco-sentence"
    parts = [f'<div class="{css}">', _render_sentence(sent, labels)]
    if reason:
        parts.append(f'<p class="esco-reason">asks for no skill: {escape(reason)}</p>')
    else:
        members = sent._.esco_skill_set
        if members:
            parts.append(_skill_list(members, top_k, "esco-set", "Asks for", sent))
    parts.append("</div>")
    return "\n".join(parts)


def _render_sentence(sent: Span, labels: Dict[str, str]) -> str:
    spans = [span for span in sent.doc.spans[SPANS_KEY] if sent.start <= span.start and span.end <= sent.end] \
        if SPANS_KEY in sent.doc.spans else []
    colors: Dict[str, str] = {}
    manual_spans = []
    for span in spans:
        # displaCy inserts the label unescaped, so it is escaped here (and the color key with it).
        label = escape(labels.get(span.kb_id_, span.kb_id_ or span.label_))
        colors[label] = TYPE_COLORS.get(span.label_, DEFAULT_COLOR)
        manual_spans.append({
            "start_token": span.start - sent.start,
            "end_token": span.end - sent.start,
            "label": label,
            "kb_id": "ESCO" if span.kb_id_ else "",
            "kb_url": escape(span.kb_id_, quote=True),
        })
    parsed = {"text": sent.text, "tokens": [token.text for token in sent], "spans": manual_spans}
    return displacy.render(parsed, style="span", manual=True, jupyter=False, options={"colors": colors})


def _skill_list(predictions: Sequence[SkillPrediction], top_k: int, css_class: str, title: str,
                sent: Optional[Span] = None) -> str:
    if not predictions:
        return f'<p class="{css_class}">{escape(title)}: none</p>'
    items = "".join(_skill_item(pred, sent) for pred in predictions[:top_k])
    more = f"<li>… {len(predictions) - top_k} more</li>" if len(predictions) > top_k else ""
    return f'<div class="{css_class}"><strong>{escape(title)}</strong><ul>{items}{more}</ul></div>'


def _skill_item(pred: SkillPrediction, sent: Optional[Span] = None) -> str:
    kind = "explicit" if pred.explicit else "implied"
    value = f"p {pred.probability:.2f}" if pred.probability is not None else f"score {pred.score:.2f}"
    item = f'<li><a href="{escape(pred.uri, quote=True)}">{escape(pred.label)}</a> ({kind}, {value})'
    if sent is not None and pred.evidence:
        item += f' — <span class="esco-evidence">{marked_context(sent, pred.evidence)}</span>'
    return item + "</li>"


def marked_context(sent: Span, evidence: Sequence[Evidence], context: int = CONTEXT_CHARS) -> str:
    """The sentence around ``evidence`` (escaped), each evidence range in ``<mark>``; evidence outside the
    sentence is left out, and the text more than ``context`` characters away from it is cut (…)."""
    ranges = _ranges_in(sent, evidence)
    if not ranges:
        return ""
    text, offset = sent.doc.text, sent.start_char
    start, end = max(offset, ranges[0][0] - context), min(sent.end_char, ranges[-1][1] + context)
    pieces = ["…" if start > offset else ""]
    position = start
    for begin, finish in ranges:
        pieces.append(escape(text[position:begin]) + f"<mark>{escape(text[begin:finish])}</mark>")
        position = finish
    pieces.append(escape(text[position:end]) + ("…" if end < sent.end_char else ""))
    return "".join(pieces).strip()


def _ranges_in(sent: Span, evidence: Sequence[Evidence]) -> List[Tuple[int, int]]:
    """Sorted, non-overlapping (start, end) character ranges of the evidence that lies in the sentence."""
    inside = sorted((e.start_char, e.end_char) for e in evidence
                    if sent.start_char <= e.start_char < e.end_char <= sent.end_char)
    merged: List[Tuple[int, int]] = []
    for begin, finish in inside:
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], finish))
        else:
            merged.append((begin, finish))
    return merged


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
