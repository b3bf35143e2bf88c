"""Job-ad clean-up (repairs, HTML, entities, bullets, mojibake), long-line splitting and the English check."""

from __future__ import annotations

import unicodedata

import pytest
from bad_input import NASTY_TEXTS
from hypothesis import given, settings

from pipeline.io.text import (BYTE_ORDER_MARK, CONTROL_CHARACTER, LONE_SURROGATE, clean_job_ad, is_english,
                              looks_like_html, repair_text, split_long_line)

NHS_HTML = (
    "<p><strong>Duties:</strong></p><ul><li>Manage budgets</li><li>Lead &amp; support staff</li></ul>"
    "Band&nbsp;5<br>Full time<br/>Apply&nbsp;now"
)


def test_clean_job_ad_turns_html_blocks_into_lines_and_decodes_entities():
    assert looks_like_html(NHS_HTML)
    assert clean_job_ad(NHS_HTML) == "Duties:\nManage budgets\nLead & support staff\nBand 5\nFull time\nApply now"


def test_clean_job_ad_drops_scripts_and_styles():
    html = "<style>p {color: red}</style><script>var x = 1;</script><p>Ward manager</p>"
    assert clean_job_ad(html) == "Ward manager"


def test_clean_job_ad_decodes_entities_in_plain_text_and_keeps_ampersands():
    assert clean_job_ad("Salary &pound;30k &amp; pension") == "Salary £30k & pension"
    assert clean_job_ad("R&D and M&A roles") == "R&D and M&A roles"


def test_clean_job_ad_turns_bullets_and_list_dashes_into_lines():
    text = "Requirements:\n\u2022 Python\n\u2022 SQL \u00b7 Excel\n- Teamwork\n* Communication"
    assert clean_job_ad(text) == "Requirements:\nPython\nSQL\nExcel\nTeamwork\nCommunication"
    assert clean_job_ad("Skills: \u2022 Python \u2022 SQL") == "Skills:\nPython\nSQL"


def test_clean_job_ad_keeps_hyphens_inside_lines():
    assert clean_job_ad("Full-time e-learning role - flexible hours") == "Full-time e-learning role - flexible hours"


def test_clean_job_ad_repairs_mojibake_and_leaves_correct_text_alone():
    assert clean_job_ad("We don\u00e2\u20ac\u2122t mind \u00e2\u20ac\u201c \u00c3\u00a9tudiant") == "We don\u2019t mind \u2013 \u00e9tudiant"
    assert clean_job_ad("caf\u00e9 d\u00e9j\u00e0 vu \u2013 na\u00efve") == "caf\u00e9 d\u00e9j\u00e0 vu \u2013 na\u00efve"


def test_clean_job_ad_collapses_spaces_and_blank_lines():
    assert clean_job_ad("Salary  \t \u00a0\u00a330k\r\n\r\n\r\n  Benefits  ") == "Salary \u00a330k\nBenefits"
    assert clean_job_ad("") == ""
    assert clean_job_ad("<p>&nbsp;</p>") == ""


# ------------------------------------------------------------------------------------------ repairs
def test_repair_text_replaces_lone_surrogates_and_joins_pairs():
    assert repair_text("SQL \ud83d and more") == ("SQL \ufffd and more", (LONE_SURROGATE,))
    assert repair_text("low \ude00 then high \udbff") == ("low \ufffd then high \ufffd", (LONE_SURROGATE,))
    assert repair_text("a pair \ud83d\ude00 is its emoji") == ("a pair \U0001f600 is its emoji", ())
    assert repair_text("\ude00\ud83d") == ("\ufffd\ufffd", (LONE_SURROGATE,))  # the wrong order is no pair


def test_repair_text_removes_controls_and_byte_order_marks_and_keeps_line_breaks():
    assert repair_text("S\x00Q\x00L \x1b[1mbold\x7f") == ("SQL [1mbold", (CONTROL_CHARACTER,))
    assert repair_text("\ufeffPython and\ufeff SQL") == ("Python and SQL", (BYTE_ORDER_MARK,))
    kept = "tab\tLF\nCR\rVT\x0bFF\x0cFS\x1cUS\x1fNEL\x85LS\u2028PS\u2029 bidi\u200f\u202e ZWJ\u200d e\u0301 C1\x9b"
    assert repair_text(kept) == (kept, ())


def test_clean_job_ad_undoes_latin1_mojibake_before_it_drops_c1_controls():
    """C1 controls are mostly UTF-8 read as Latin-1: the reader keeps them so that the clean-up can undo it."""
    assert clean_job_ad("It\u00e2\x80\x99s a caf\u00c3\u00a9") == "It\u2019s a caf\u00e9"
    assert clean_job_ad("Python\x9b\x80 and SQL") == "Python and SQL"
    assert repair_text("\ud83d\x00\ufeff") == ("\ufffd", (LONE_SURROGATE, CONTROL_CHARACTER, BYTE_ORDER_MARK))


def test_clean_job_ad_reads_a_marked_section_the_html_parser_rejects_as_text():
    """Python's HTMLParser raises AssertionError on "<![foo[": the ad would fail; its text is kept instead."""
    assert clean_job_ad("<p>Manage budgets</p><![foo[ and SQL ]]>") == "Manage budgets\n<![foo[ and SQL ]]>"


def test_clean_job_ad_makes_every_line_break_a_newline():
    assert clean_job_ad("Duties\u2028Manage budgets\u2029Skills\x85Python\x0cSQL\x0bExcel") == (
        "Duties\nManage budgets\nSkills\nPython\nSQL\nExcel")
    assert clean_job_ad("<p>Python&#x2028;SQL &#0;&#1;&#xd83d;</p>") == "Python\nSQL \ufffd\ufffd"


@settings(max_examples=300, deadline=None)
@given(text=NASTY_TEXTS)
def test_repaired_and_cleaned_text_is_always_utf8_without_controls(text):
    repaired, reasons = repair_text(text)
    repaired.encode("utf-8")  # no lone surrogate left
    assert repair_text(repaired) == (repaired, ())  # nothing left to mend
    assert "\ufeff" not in repaired and not [c for c in repaired if unicodedata.category(c) == "Cc"
                                             and c not in "\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f" and c < "\x80"]
    assert bool(reasons) == (repaired != text.encode("utf-16-le", "surrogatepass").decode("utf-16-le",
                                                                                          "surrogatepass"))
    cleaned = clean_job_ad(text)
    cleaned.encode("utf-8")
    assert all(unicodedata.category(c) != "Cc" or c == "\n" for c in cleaned)


def test_split_long_line_prefers_sentence_punctuation_then_separators():
    line = "First sentence is here. Second one is here too; third, with commas, goes on - and on / and on"
    pieces = split_long_line(line, 30)
    assert pieces == ["First sentence is here.", "Second one is here too;", "third, with commas, goes on",
                      "and on and on"]
    assert all(len(piece) <= 30 for piece in pieces)


def test_split_long_line_leaves_short_lines_and_hard_splits_unbroken_text():
    assert split_long_line("Manage budgets", 30) == ["Manage budgets"]
    unbroken = "x" * 25
    pieces = split_long_line(unbroken, 10)
    assert pieces == ["x" * 10, "x" * 10, "x" * 5]
    assert "".join(pieces) == unbroken


def test_split_long_line_keeps_every_word_of_a_long_ad_line():
    line = " ".join(f"word{i}" for i in range(500))
    pieces = split_long_line(line, 80)
    assert all(len(piece) <= 80 for piece in pieces)
    assert " ".join(pieces).split() == line.split()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("We are looking for a ward manager who will manage budgets and lead a team of nurses.",
                     id="english-prose"),
        pytest.param("Life Assurance, Discounted Fitness Membership, Cycle to Work Scheme, Employee Assistance "
                     "Programme, Generous Annual Leave", id="english-noun-list"),
        pytest.param("Gute Kenntnisse", id="too-short-to-judge"),
    ],
)
def test_is_english_accepts_english_ads_and_short_text(text):
    assert is_english(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Wir suchen eine engagierte Pflegefachkraft für unser Team in Berlin mit Erfahrung in der "
                     "Intensivpflege und Freude an der Arbeit.", id="german"),
        pytest.param("Nous recherchons un développeur expérimenté pour rejoindre notre équipe à Paris et "
                     "travailler sur des projets passionnants avec nous.", id="french"),
    ],
)
def test_is_english_rejects_german_and_french_ads(text):
    assert not is_english(text)
