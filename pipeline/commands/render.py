"""HTML view of one processed ad: displaCy spans for explicit mentions, implicit skills under each sentence.

Reads only the output contract (``doc.spans["esco_skills"]``, ``doc._.esco_skills``, ``sent._.esco_skills``),
so it shows the matcher's and the ranker's predictions alike. Each explicit span is labelled with the ESCO
preferred label of the skill it links to and links to the skill's URI.
"""

from __future__ import annotations

from html import escape
from typing import Dict, Iterator, List

from spacy import displacy
from spacy.tokens import Doc, Span

from pipeline.errors import ConfigError
from pipeline.components.predictions import SPANS_KEY, SkillPrediction, register_extensions

TYPE_COLORS = {"knowledge": "#a6cee3", "skill/competence": "#b2df8a"}
DEFAULT_COLOR = "#ddd"
PAGE = '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"></head>\n<body>\n{content}\n</body>\n</html>'


def render_ad(doc: Doc, top_k: int = 5, *, page: bool = False) -> str:
    """HTML: the ad's top_k skills, then each sentence with its explicit spans (displaCy "span" style) and,
    under it, the sentence's top_k implicit skills. ``page=True`` wraps it in a standalone HTML page."""
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    register_extensions()
    labels = _labels_by_uri(doc)
    parts = ['<div class="esco-ad">', _skill_list(_ad_predictions(doc)[:top_k], "esco-ad-skills", "Top skills")]
    for sent in _sentences(doc):
        parts.append('<div class="esco-sentence">')
        parts.append(_render_sentence(sent, labels))
        implicit = [pred for pred in (sent._.esco_skills or []) if not pred.explicit][:top_k]
        if implicit:
            parts.append(_skill_list(implicit, "esco-implicit", "Implied"))
        parts.append("</div>")
    parts.append("</div>")
    markup = "\n".join(parts)
    if page:
        markup = PAGE.format(content=markup)
    return markup


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


def _skill_list(predictions: List[SkillPrediction], css_class: str, title: str) -> str:
    if not predictions:
        return f'<p class="{css_class}">{escape(title)}: none</p>'
    items = "".join(
        f'<li><a href="{escape(pred.uri, quote=True)}">{escape(pred.label)}</a> '
        f'({"explicit" if pred.explicit else "implicit"}, {pred.score:.2f})</li>'
        for pred in predictions
    )
    return f'<div class="{css_class}"><strong>{escape(title)}</strong><ul>{items}</ul></div>'


def _ad_predictions(doc: Doc) -> List[SkillPrediction]:
    return list(doc._.esco_skills or []) if doc.has_extension("esco_skills") else []


def _labels_by_uri(doc: Doc) -> Dict[str, str]:
    labels = {pred.uri: pred.label for pred in _ad_predictions(doc)}
    for sent in _sentences(doc):
        for pred in sent._.esco_skills or []:
            labels.setdefault(pred.uri, pred.label)
    return labels


def _sentences(doc: Doc) -> Iterator[Span]:
    sentences = doc.sents if doc.has_annotation("SENT_START") else [doc[:]]
    return (sent for sent in sentences if sent.text.strip())
