"""The ESCO knowledge base read from the official v1.1.1 CSV export, its hierarchy, and its input errors."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path

import pytest

from pipeline.errors import EscoDataError, IncompletePipelineError
from pipeline.esco.taxonomy import (
    BROADER_FILE,
    GROUPS_FILE,
    KB_FILE,
    OCCUPATION_SKILLS_FILE,
    OCCUPATIONS_FILE,
    SKILLS_FILE,
    EscoTaxonomy,
)

V111_SKILLS = 13_896
CLASSIFICATION_ZIP = "esco-v1.1.1-classification-en-csv.zip"
RELATIONS_ZIP = "esco-v1.1.1-relations-csv.zip"
MANAGING_BUDGETS_GROUP = "http://data.europa.eu/esco/skill/193af349-b20e-4277-94bf-b184e92b8d6a"

# Tiny exports for the error cases: the official column names, a handful of rows written by each test.
SKILLS_HEADER = ["conceptType", "conceptUri", "skillType", "reuseLevel", "preferredLabel", "altLabels",
                 "hiddenLabels", "description"]
GROUPS_CSV = "conceptType,conceptUri,preferredLabel\nSkillGroup,http://example.org/group/1,budgeting\n"
BROADER_CSV = (
    "conceptType,conceptUri,broaderType,broaderUri\n"
    "KnowledgeSkillCompetence,http://example.org/skill/1,SkillGroup,http://example.org/group/1\n"
)


def skills_csv(*rows: dict) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, SKILLS_HEADER, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({"conceptType": "KnowledgeSkillCompetence", "skillType": "skill/competence", **row})
    return out.getvalue()


def write_export(folder: Path, skills: str | bytes, groups: str = GROUPS_CSV, broader: str = BROADER_CSV) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = skills.encode("utf-8") if isinstance(skills, str) else skills
    (folder / SKILLS_FILE).write_bytes(data)
    (folder / GROUPS_FILE).write_text(groups, encoding="utf-8")
    (folder / BROADER_FILE).write_text(broader, encoding="utf-8")
    return folder


BUDGET_ROW = {"conceptUri": "http://example.org/skill/1", "preferredLabel": "manage budgets",
              "altLabels": "budgeting\nbudget management\nbudgeting"}
TEAM_ROW = {"conceptUri": "http://example.org/skill/2", "preferredLabel": "work in teams"}


@pytest.fixture(scope="module")
def extracted_export(tmp_path_factory, esco_path) -> Path:
    """The three CSVs the knowledge base needs, extracted from the official zips into a nested folder."""
    folder = tmp_path_factory.mktemp("esco_extracted") / "csv" / "en"
    folder.mkdir(parents=True)
    for zip_name, member in ((CLASSIFICATION_ZIP, SKILLS_FILE), (CLASSIFICATION_ZIP, GROUPS_FILE),
                             (RELATIONS_ZIP, BROADER_FILE)):
        with zipfile.ZipFile(esco_path / zip_name) as archive:
            archive.extract(member, folder)
    return folder


# ---------------------------------------------------------------------------------------------- reading the export
def test_taxonomy_reads_every_v1_1_1_skill_from_the_zips_folder(taxonomy, uri_of):
    assert len(taxonomy) == V111_SKILLS
    assert taxonomy.version == "v1.1.1"
    assert taxonomy.report.rows_read[SKILLS_FILE] == V111_SKILLS
    assert taxonomy.report.rows_read[GROUPS_FILE] == 640
    assert not [key for key in taxonomy.report.skipped if key.startswith(SKILLS_FILE)]
    assert uri_of("manage budgets") == "http://data.europa.eu/esco/skill/21c5790c-0930-4d74-b3b0-84caf5af12ea"
    assert uri_of("manage budgets") in taxonomy


def test_taxonomy_reads_the_two_zips_given_as_paths(esco_path, taxonomy):
    loaded = EscoTaxonomy.from_esco([esco_path / CLASSIFICATION_ZIP, esco_path / RELATIONS_ZIP])
    assert loaded.version == "v1.1.1"
    assert loaded.skills == taxonomy.skills
    assert loaded.broader == taxonomy.broader


def test_taxonomy_reads_a_single_zip_holding_the_needed_csvs(tmp_path, extracted_export, taxonomy):
    single = tmp_path / "esco-skills-only.zip"
    with zipfile.ZipFile(single, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in (SKILLS_FILE, GROUPS_FILE, BROADER_FILE):
            archive.write(extracted_export / name, f"export/{name}")
    loaded = EscoTaxonomy.from_esco(single)
    assert len(loaded) == V111_SKILLS
    assert loaded.skills == taxonomy.skills
    assert loaded.broader == taxonomy.broader
    assert loaded.group_labels == taxonomy.group_labels


def test_taxonomy_reads_an_extracted_folder_and_reports_missing_optional_files(extracted_export, taxonomy):
    loaded = EscoTaxonomy.from_esco(extracted_export.parent.parent)
    assert len(loaded) == V111_SKILLS
    assert loaded.skills == taxonomy.skills
    assert loaded.broader == taxonomy.broader
    assert loaded.occupations == {}
    assert loaded.report.missing_optional_files == [OCCUPATIONS_FILE, OCCUPATION_SKILLS_FILE]
    assert f"optional file not found: {OCCUPATIONS_FILE}" in loaded.report.summary()


def test_classification_zip_alone_names_the_missing_relations_file(esco_path):
    with pytest.raises(EscoDataError, match=rf"'{BROADER_FILE}' was not found in the ESCO export"):
        EscoTaxonomy.from_esco(esco_path / CLASSIFICATION_ZIP)


# ---------------------------------------------------------------------------------------------- one skill
def test_skill_has_its_labels_description_type_and_reuse_level(taxonomy, uri_of):
    skill = taxonomy[uri_of("PostgreSQL")]
    assert skill.uri == "http://data.europa.eu/esco/skill/a8d07b5a-c1a1-42c6-9d53-db9c7a2ca996"
    assert skill.alt_labels == ("Postgres", "PostgreSQL")
    assert skill.labels == ("PostgreSQL", "Postgres")  # preferred first, each once
    assert skill.skill_type == "knowledge"
    assert skill.reuse_level == "sector-specific"
    assert skill.description.startswith("The computer program PostgreSQL is a free and open-source software tool")

    teams = taxonomy[uri_of("work in teams")]
    assert teams.skill_type == "skill/competence"
    assert teams.reuse_level == "transversal"
    assert {"work in groups", "working in teams", "cooperate with colleagues"} <= set(teams.alt_labels)


def test_label_names_skills_and_skill_groups(taxonomy, uri_of):
    assert taxonomy.label(uri_of("manage budgets")) == "manage budgets"
    assert taxonomy.label(MANAGING_BUDGETS_GROUP) == "managing budgets or finances"
    assert MANAGING_BUDGETS_GROUP not in taxonomy  # a group, not a skill
    with pytest.raises(KeyError, match="not an ESCO skill URI of this taxonomy"):
        taxonomy["http://example.org/not-a-skill"]


def test_occupations_list_their_essential_skills(taxonomy, uri_of):
    assert len(taxonomy.occupations) == 3007
    by_label = {occupation.preferred_label: occupation for occupation in taxonomy.occupations.values()}
    assert uri_of("manage budgets") in by_label["head chef"].essential_skills
    assert uri_of("statistics") in by_label["data scientist"].essential_skills


# ---------------------------------------------------------------------------------------------- hierarchy
def test_ancestors_start_with_the_direct_broader_concepts(taxonomy, uri_of):
    manage_budgets = uri_of("manage budgets")
    direct = taxonomy.broader[manage_budgets]
    assert set(direct) == {MANAGING_BUDGETS_GROUP, uri_of("carry out calculations")}
    ancestors = taxonomy.ancestors(manage_budgets)
    assert ancestors[: len(direct)] == list(direct)
    assert len(ancestors) == len(set(ancestors))
    assert manage_budgets not in ancestors
    labels = {taxonomy.label(uri) for uri in ancestors}
    assert {"management skills", "working with numbers and measures", "skills"} <= labels


def test_siblings_are_exactly_the_skills_sharing_a_broader_concept(taxonomy, uri_of):
    manage_budgets = uri_of("manage budgets")
    parents = set(taxonomy.broader[manage_budgets])
    siblings = taxonomy.siblings(manage_budgets)
    expected = {
        uri for uri, broader in taxonomy.broader.items()
        if uri in taxonomy.skills and uri != manage_budgets and parents & set(broader)
    }
    assert set(siblings) == expected
    assert uri_of("manage a healthcare unit budget") in siblings
    assert all(parents & set(taxonomy.broader[sibling]) for sibling in siblings)


def test_relatives_widen_to_broader_levels_only_when_siblings_are_too_few(taxonomy, uri_of):
    skill = uri_of("handle equipment while suspended")
    siblings = taxonomy.siblings(skill)
    assert len(siblings) == 2
    assert taxonomy.relatives(skill, min_count=1) == siblings

    relatives = taxonomy.relatives(skill, min_count=10)
    assert len(relatives) >= 10
    assert relatives[:2] == siblings
    assert skill not in relatives
    under_ancestors = {s for ancestor in taxonomy.ancestors(skill) for s in taxonomy.descendant_skills(ancestor)}
    assert set(relatives) <= under_ancestors


def test_descendant_skills_of_a_group_are_skills_below_it(taxonomy, uri_of):
    below = taxonomy.descendant_skills(MANAGING_BUDGETS_GROUP)
    assert uri_of("manage budgets") in below
    assert uri_of("manage a healthcare unit budget") in below
    assert all(uri in taxonomy.skills for uri in below)
    assert all(MANAGING_BUDGETS_GROUP in taxonomy.ancestors(uri) for uri in below)


# ---------------------------------------------------------------------------------------------- serialization
def test_taxonomy_round_trips_through_disk_unchanged(tmp_path, taxonomy):
    taxonomy.to_disk(tmp_path / "kb")
    assert (tmp_path / "kb" / KB_FILE).exists()
    loaded = EscoTaxonomy.from_disk(tmp_path / "kb")
    assert loaded.version == taxonomy.version
    assert loaded.uris == taxonomy.uris
    assert loaded.skills == taxonomy.skills
    assert loaded.broader == taxonomy.broader
    assert loaded.narrower == taxonomy.narrower
    assert loaded.group_labels == taxonomy.group_labels
    assert loaded.occupations == taxonomy.occupations


def test_from_disk_without_a_knowledge_base_names_the_missing_file(tmp_path):
    with pytest.raises(IncompletePipelineError, match=re.escape(str(tmp_path / KB_FILE))):
        EscoTaxonomy.from_disk(tmp_path)


# ---------------------------------------------------------------------------------------------- bad input
def test_missing_export_path_is_named_in_the_error(tmp_path):
    missing = tmp_path / "no-such-esco"
    with pytest.raises(EscoDataError, match=rf"ESCO export not found at '{re.escape(str(missing))}'"):
        EscoTaxonomy.from_esco(missing)


def test_zip_without_skills_csv_names_skills_en_csv(tmp_path):
    archive_path = tmp_path / "relations-only.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        archive.writestr(GROUPS_FILE, GROUPS_CSV)
        archive.writestr(BROADER_FILE, BROADER_CSV)
    with pytest.raises(EscoDataError, match=rf"'{SKILLS_FILE}' was not found .*relations-only\.zip"):
        EscoTaxonomy.from_esco(archive_path)


def test_file_that_is_not_a_zip_is_named_in_the_error(tmp_path):
    bogus = tmp_path / "esco.zip"
    bogus.write_text("not a zip", encoding="utf-8")
    with pytest.raises(EscoDataError, match=rf"'{re.escape(str(bogus))}' is not a readable zip file"):
        EscoTaxonomy.from_esco(bogus)


@pytest.mark.parametrize(
    ("skills", "message"),
    [
        pytest.param("conceptUri,altLabels,skillType\nhttp://example.org/skill/1,,knowledge\n",
                     r"lacks the column\(s\) \['preferredLabel'\]", id="missing-column"),
        pytest.param(",".join(SKILLS_HEADER) + "\n", "has a header but no rows", id="header-only"),
        pytest.param("", "is empty: expected a CSV header", id="fully-empty"),
        pytest.param(",".join(SKILLS_HEADER) + '\nK,http://example.org/skill/1,knowledge,,"manage budgets,,,\n',
                     "is malformed near line", id="unterminated-quote"),
        pytest.param((",".join(SKILLS_HEADER) + "\nK,http://example.org/skill/1,knowledge,,caf\xe9,,,\n")
                     .encode("latin-1"), "is not a readable UTF-8 CSV file", id="not-utf8"),
    ],
)
def test_bad_skills_csv_raises_an_error_naming_the_file(tmp_path, skills, message):
    folder = write_export(tmp_path / "export", skills)
    where = re.escape(str(folder / SKILLS_FILE))
    with pytest.raises(EscoDataError, match=rf"'{where}' {message}"):
        EscoTaxonomy.from_esco(folder)


def test_bad_csv_inside_a_zip_is_named_by_zip_and_member(tmp_path):
    archive_path = tmp_path / "export.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        archive.writestr(f"csv/{SKILLS_FILE}", ",".join(SKILLS_HEADER) + "\n")
        archive.writestr(GROUPS_FILE, GROUPS_CSV)
        archive.writestr(BROADER_FILE, BROADER_CSV)
    with pytest.raises(EscoDataError, match=rf"'{re.escape(str(archive_path))}:csv/{SKILLS_FILE}' has a header"):
        EscoTaxonomy.from_esco(archive_path)


def test_skill_row_without_preferred_label_is_skipped_and_counted(tmp_path):
    unlabelled = {"conceptUri": "http://example.org/skill/3", "preferredLabel": "", "altLabels": "orphan label"}
    folder = write_export(tmp_path / "export", skills_csv(BUDGET_ROW, unlabelled, TEAM_ROW))
    loaded = EscoTaxonomy.from_esco(folder)
    assert set(loaded.skills) == {"http://example.org/skill/1", "http://example.org/skill/2"}
    assert loaded.report.rows_read[SKILLS_FILE] == 3
    assert loaded.report.skipped == {f"{SKILLS_FILE}: no conceptUri or preferredLabel": 1}
    assert f"skipped 1 rows ({SKILLS_FILE}: no conceptUri or preferredLabel)" in loaded.report.summary()


def test_short_row_is_skipped_and_counted_not_dropped_silently(tmp_path):
    text = skills_csv(BUDGET_ROW) + "KnowledgeSkillCompetence,http://example.org/skill/9\n"
    loaded = EscoTaxonomy.from_esco(write_export(tmp_path / "export", text))
    assert list(loaded.skills) == ["http://example.org/skill/1"]
    assert loaded.report.skipped[f"{SKILLS_FILE}: no conceptUri or preferredLabel"] == 1


def test_duplicate_skill_uri_keeps_the_first_row_and_counts_the_other(tmp_path):
    duplicate = {**TEAM_ROW, "conceptUri": BUDGET_ROW["conceptUri"]}
    loaded = EscoTaxonomy.from_esco(write_export(tmp_path / "export", skills_csv(BUDGET_ROW, duplicate)))
    assert loaded["http://example.org/skill/1"].preferred_label == "manage budgets"
    assert loaded.report.skipped[f"{SKILLS_FILE}: duplicate conceptUri"] == 1


def test_broader_relation_to_an_unknown_concept_is_skipped_and_counted(tmp_path):
    broader = BROADER_CSV + "KnowledgeSkillCompetence,http://example.org/skill/2,SkillGroup,http://example.org/nowhere\n"
    loaded = EscoTaxonomy.from_esco(write_export(tmp_path / "export", skills_csv(BUDGET_ROW, TEAM_ROW), broader=broader))
    assert loaded.broader == {"http://example.org/skill/1": ("http://example.org/group/1",)}
    assert loaded.report.skipped[f"{BROADER_FILE}: concept not among the skills or skill groups"] == 1


def test_alt_labels_are_split_on_newlines_once_each(tmp_path):
    loaded = EscoTaxonomy.from_esco(write_export(tmp_path / "export", skills_csv(BUDGET_ROW)))
    skill = loaded["http://example.org/skill/1"]
    assert skill.alt_labels == ("budgeting", "budget management")
    assert skill.labels == ("manage budgets", "budgeting", "budget management")
    assert loaded.siblings("http://example.org/skill/1") == []
    assert loaded.ancestors("http://example.org/skill/1") == ["http://example.org/group/1"]
