"""Taxonomies other than ESCO v1.1.1: the generic CSV (every validation error), other ESCO release layouts, and
small taxonomies written here going through assemble / extract / corpus / train; ESCO re-expressed in the generic
format gives the same skills and the same predictions."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import shutil
import warnings
import zipfile
from pathlib import Path

import pytest
import spacy

from pipeline.errors import ConfigError, EscoDataError
from pipeline.esco.generic import COLUMNS, GROUP_TYPE, convert, read_generic, write_generic
from pipeline.esco.taxonomy import BROADER_FILE, GROUPS_FILE, SKILLS_FILE, Taxonomy, TaxonomyWarning

HEADER = ",".join(COLUMNS)
# A dozen concepts with a hierarchy (a group, parents, a grandchild), shared labels ("management reporting", "data
# dashboards"; multi-word: the label policy matches no one-word alternative label, ESCO's or yours)
# and descriptions.
DATA_SKILLS = f"""{HEADER}
data,data work,,,,{GROUP_TYPE}
d:analysis,data analysis,analyse data|data analytics|management reporting,Inspect and model data to find useful information.,data,skill
d:viz,data visualisation,visualise data|data dashboards,Show data as charts and dashboards for decision makers.,data,skill
d:bi,business intelligence,BI|management reporting|data dashboards,Turn company data into reports for managers.,data,knowledge
d:sql,SQL,structured query language,A language to query and change relational databases.,d:analysis,knowledge
d:python,Python,Python programming,A general-purpose programming language used for data work.,d:analysis,knowledge
d:pandas,pandas,,A Python library for tables of data.,d:python,knowledge
d:stats,statistics,statistical analysis,The science of collecting and interpreting numbers.,d:analysis,knowledge
d:ml,machine learning,ML,Algorithms that learn from data to make predictions.,d:analysis|d:python,knowledge
d:etl,data pipelines,ETL|data engineering,Move and transform data between systems on a schedule.,data,skill
d:quality,data quality,data cleansing,Make sure data is accurate and complete.,data,skill
d:excel,spreadsheets,Excel|Microsoft Excel,Work with numbers in spreadsheet software.,,knowledge
"""
# Structurally different, not derived from ESCO: a flat list of product names, no hierarchy, no descriptions, no
# types; "MS Office" names two products.
TOOLS = """id,preferred_label,alt_labels,broader
tool-001,Docker,docker containers,
tool-002,Kubernetes,k8s|K8s,
tool-003,Terraform,,
tool-004,Jira,Atlassian Jira,
tool-005,Tableau,,
tool-006,Salesforce,Salesforce CRM,
tool-007,Excel,MS Office|Microsoft Excel,
tool-008,Word,MS Office|Microsoft Word,
tool-009,PostgreSQL,Postgres,
tool-010,AWS,Amazon Web Services,
tool-011,Figma,,
tool-012,Git,GitHub|GitLab,
"""
ADS = [
    "We run our services in Docker and Kubernetes on AWS. You will write Terraform and review code in Git.",
    "Our analysts build dashboards in Tableau. Good knowledge of MS Office is required.",
    "Designers prototype in Figma and track their work in Jira.",
]


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


@pytest.fixture
def data_skills(tmp_path) -> Path:
    return write(tmp_path / "data_skills.csv", DATA_SKILLS)


@pytest.fixture(scope="module")
def tools_csv(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("tools") / "tools.csv", TOOLS)


# ---------------------------------------------------------------------------------------------- the generic reader
def test_generic_csv_reads_concepts_labels_hierarchy_and_groups(data_skills):
    taxonomy = Taxonomy.load(data_skills)
    assert taxonomy.kind == "generic" and taxonomy.name == "data_skills"
    assert list(taxonomy.skills)[:3] == ["d:analysis", "d:viz", "d:bi"] and len(taxonomy) == 11
    assert taxonomy.group_labels == {"data": "data work"}  # type "group": in the hierarchy, never predicted
    ml = taxonomy["d:ml"]
    assert (ml.preferred_label, ml.alt_labels, ml.skill_type) == ("machine learning", ("ML",), "knowledge")
    assert ml.description == "Algorithms that learn from data to make predictions."
    assert taxonomy.broader["d:ml"] == ("d:analysis", "d:python")
    assert taxonomy.ancestors("d:pandas") == ["d:python", "d:analysis", "data"]
    assert set(taxonomy.siblings("d:sql")) == {"d:python", "d:stats", "d:ml"}
    assert "d:excel" not in taxonomy.broader  # a top concept
    assert taxonomy.has_hierarchy and taxonomy.has_descriptions


def test_flat_taxonomy_without_description_and_type_columns(tools_csv):
    taxonomy = Taxonomy.load(tools_csv)
    assert len(taxonomy) == 12 and taxonomy.broader == {} and taxonomy.group_labels == {}
    assert taxonomy["tool-002"].alt_labels == ("k8s", "K8s")
    assert not taxonomy.has_hierarchy and not taxonomy.has_descriptions
    record = taxonomy.record()
    assert record["name"] == "tools" and record["concepts"] == 12 and len(record["sha256"]) == 64


def test_content_hash_is_the_content_not_the_file(tmp_path, tools_csv):
    copy = write(tmp_path / "elsewhere" / "renamed.csv", TOOLS.replace("\n", "\r\n"))
    assert Taxonomy.load(copy).content_hash() == Taxonomy.load(tools_csv).content_hash()
    changed = write(tmp_path / "changed.csv", TOOLS.replace("Figma,,", "Figma,FigJam,"))
    assert Taxonomy.load(changed).content_hash() != Taxonomy.load(tools_csv).content_hash()


@pytest.mark.parametrize(("text", "message"), [
    pytest.param(f"{HEADER}\na,alpha,,,,\nb,beta,,,,\na,gamma,,,,\n", r"line 4: duplicate id 'a' \(first on line 2\)",
                 id="duplicate-id"),
    pytest.param(f"{HEADER}\na,alpha,,,,\nb,beta,,,nowhere,\n", r"line 3: broader id 'nowhere' of 'b' is not an id",
                 id="unknown-broader"),
    pytest.param(f"{HEADER}\na,alpha,,,c,\nb,beta,,,a,\nc,gamma,,,b,\n", r"line \d: the broader ids form a cycle: "
                 r"(a → c → b → a|b → a → c → b|c → b → a → c)", id="cycle"),
    pytest.param(f"{HEADER}\na,alpha,,,a,\n", r"line 2: the broader ids form a cycle: a → a", id="self-broader"),
    pytest.param(f"{HEADER}\na,alpha,,,,\nb,  ,,,,\n", r"line 3: empty preferred_label of 'b'", id="empty-label"),
    pytest.param(f"{HEADER}\na,alpha,,,,\n,beta,,,,\n", r"line 3: empty id", id="empty-id"),
    pytest.param(f"{HEADER}\na,alpha,one||two,,,\n", r"line 2: alt_labels of 'a' holds an empty entry", id="empty-alt"),
    pytest.param(f"{HEADER}\na,alpha,,,,\nb,beta,,,a|,\n", r"line 3: broader of 'b' holds an empty entry",
                 id="empty-broader-entry"),
    pytest.param(f"{HEADER}\na,alpha,,,,\nb,beta, gamma,,,,\n", r"line 3: 7 fields, the header has 6",
                 id="unquoted-comma"),
    pytest.param(f"{HEADER}\na,alpha,,,,\nb,caf\xe9,,,,\n".encode("latin-1"), r"line 3: not UTF-8 \(byte 0xe9",
                 id="bad-encoding"),
    pytest.param("id,label,alt_labels,broader\na,alpha,,\n", r"line 1: the header lacks the column\(s\) "
                 r"\['preferred_label'\]; has unknown column\(s\) \['label'\]", id="missing-column"),
    pytest.param("id,preferred_label,alt_label\na,alpha,\n", r"has unknown column\(s\) \['alt_label'\]",
                 id="misspelt-column"),
    pytest.param(f'{HEADER}\na,"alpha,,,,\n', r"malformed CSV", id="unterminated-quote"),
    pytest.param("", r"is empty: expected the header id,preferred_label", id="empty-file"),
    pytest.param(f"{HEADER}\n", r"has a header but no concepts", id="header-only"),
    pytest.param(f"{HEADER}\ng,group,,,,{GROUP_TYPE}\n", r"every row is of type 'group'", id="only-groups"),
])
def test_every_invalid_taxonomy_csv_names_the_file_and_line(tmp_path, text, message):
    path = write(tmp_path / "mine.csv", text)
    with pytest.raises(EscoDataError, match=rf"'{re.escape(str(path))}'.*{message}"):
        Taxonomy.load(path)


def test_a_quoted_multi_line_cell_keeps_later_lines_numbered_right(tmp_path):
    path = write(tmp_path / "mine.csv", f'{HEADER}\na,alpha,,"two\nlines",,\na,again,,,,\n')
    with pytest.raises(EscoDataError, match=r"line 4: duplicate id 'a' \(first on line 2\)"):
        read_generic(path)


def test_the_documented_example_file_reads(tmp_path):
    text = (Path(__file__).parents[1] / "docs" / "taxonomy.md").read_text()
    example = max(re.findall(r"```\n(id,preferred_label,alt_labels,description,broader,type\n.*?)```", text, re.S),
                  key=len)
    assert len(example.splitlines()) == 10
    taxonomy = Taxonomy.load(write(tmp_path / "my_skills.csv", example))
    assert len(taxonomy) == 7 and taxonomy.group_labels == {"eng": "engineering", "data": "data"}
    assert taxonomy.ancestors("eng.tf") == ["eng.iac", "eng.cloud", "eng"]


def test_a_missing_taxonomy_file_is_named(tmp_path):
    with pytest.raises(EscoDataError, match=rf"not found at '{re.escape(str(tmp_path / 'nope.csv'))}'"):
        Taxonomy.load(tmp_path / "nope.csv")


# ---------------------------------------------------------------------------------------------- ESCO releases
def _member(esco_path: Path, zip_name: str, member: str) -> str:
    with zipfile.ZipFile(esco_path / zip_name) as archive:
        return archive.read(member).decode("utf-8")


def _v12_broader(text: str, labels: dict) -> str:
    """v1.1's broader relations as v1.2 writes them: ``_en`` in the name, label columns beside the URIs."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["conceptType", "conceptUri", "conceptLabel", "broaderType", "broaderUri", "broaderLabel"])
    for row in csv.DictReader(io.StringIO(text)):
        writer.writerow([row["conceptType"], row["conceptUri"], labels.get(row["conceptUri"], ""),
                         row["broaderType"], row["broaderUri"], labels.get(row["broaderUri"], "")])
    return out.getvalue()


@pytest.fixture(scope="module")
def esco_csvs(esco_path) -> dict:
    return {name: _member(esco_path, zip_name, name) for zip_name, name in (
        ("esco-v1.1.1-classification-en-csv.zip", SKILLS_FILE),
        ("esco-v1.1.1-classification-en-csv.zip", GROUPS_FILE),
        ("esco-v1.1.1-relations-csv.zip", BROADER_FILE))}


def test_a_v1_2_layout_is_read_by_its_headers_not_its_version(tmp_path, esco_csvs, taxonomy):
    folder = tmp_path / "ESCO dataset - v1.2.1 - classification - en - csv"
    write(folder / SKILLS_FILE, esco_csvs[SKILLS_FILE])
    write(folder / GROUPS_FILE, esco_csvs[GROUPS_FILE])
    labels = {**taxonomy.group_labels, **{uri: s.preferred_label for uri, s in taxonomy.skills.items()}}
    write(folder / "broaderRelationsSkillPillar_en.csv", _v12_broader(esco_csvs[BROADER_FILE], labels))
    loaded = Taxonomy.load(folder)
    assert loaded.version == "v1.2.1" and loaded.name == "ESCO v1.2.1"
    assert loaded.skills == taxonomy.skills and loaded.broader == taxonomy.broader


def test_a_renamed_esco_column_names_the_file_and_the_column(tmp_path, esco_csvs):
    header, rest = esco_csvs[SKILLS_FILE].split("\n", 1)
    write(tmp_path / "esco" / SKILLS_FILE, header.replace("altLabels", "alternativeLabels") + "\n" + rest)
    write(tmp_path / "esco" / GROUPS_FILE, esco_csvs[GROUPS_FILE])
    write(tmp_path / "esco" / BROADER_FILE, esco_csvs[BROADER_FILE])
    where = re.escape(str(tmp_path / "esco" / SKILLS_FILE))
    with pytest.raises(EscoDataError, match=rf"'{where}' lacks the column\(s\) \['altLabels'\]"):
        Taxonomy.load(tmp_path / "esco")


def test_esco_converted_to_the_generic_csv_keeps_every_skill_record(tmp_path, taxonomy):
    path = tmp_path / "esco_v1.1.1.csv"
    write_generic(taxonomy, path)
    loaded = Taxonomy.load(path)
    assert loaded.kind == "generic" and len(loaded) == 13_896
    # hidden labels and reuse levels have no column (the pipeline uses neither); everything else is the same
    carried = {uri: dataclasses.replace(s, hidden_labels=(), reuse_level="") for uri, s in taxonomy.skills.items()}
    assert loaded.skills == carried and list(loaded.skills) == list(taxonomy.skills)
    assert loaded.broader == taxonomy.broader and loaded.group_labels == taxonomy.group_labels


# ---------------------------------------------------------------------------------------------- degradation
def test_no_hierarchy_makes_the_taxonomy_sampler_refuse_naming_the_key(tools_csv, data_skills):
    from pipeline.training.config import read_config
    from pipeline.training.negatives import InBatchNegatives, MixtureNegatives, TaxonomyNegatives
    from pipeline.training.trainer import resolve_training

    flat = Taxonomy.load(tools_csv)
    with pytest.raises(ConfigError, match=r"^\[training.negatives\] esco.taxonomy_negatives.v1 .*'tools' has none.*"
                                          r"esco.in_batch_negatives.v1.*configs/flat.cfg"):
        TaxonomyNegatives().bind(flat, list(flat.skills))
    mixture = MixtureNegatives({"in_batch": InBatchNegatives(), "siblings": TaxonomyNegatives()})
    with pytest.raises(ConfigError, match=r"^\[training.negatives.samplers.siblings\] "):
        mixture.bind(flat, list(flat.skills))
    hierarchy = Taxonomy.load(data_skills)
    TaxonomyNegatives().bind(hierarchy, list(hierarchy.skills))  # a hierarchy: no complaint
    _, sampler, _ = resolve_training(read_config(Path(__file__).parents[1] / "configs" / "flat.cfg"))
    sampler.bind(flat, list(flat.skills))  # the recipe the error names trains a flat taxonomy


def test_no_descriptions_turn_the_description_source_and_paraphrase_dev_off_with_a_warning(tools_csv, data_skills):
    import random

    from pipeline.evaluation.dev_signals import paraphrase_examples
    from pipeline.training.supervision import DescriptionPairs, SupervisionContext

    flat = Taxonomy.load(tools_csv)
    ctx = SupervisionContext(flat, list(flat.skills), None, random.Random(0))
    with pytest.warns(TaxonomyWarning, match=r"esco.description_pairs.v1 is off: the taxonomy 'tools' has no desc"):
        assert DescriptionPairs().pairs(ctx) == []
    with pytest.warns(TaxonomyWarning, match=r"paraphrase dev signal is off: the taxonomy 'tools'"):
        assert paraphrase_examples(flat, set()) == []
    described = Taxonomy.load(data_skills)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TaxonomyWarning)
        pairs = DescriptionPairs().pairs(SupervisionContext(described, list(described.skills), None,
                                                            random.Random(0)))
    assert pairs and all(described.skills[list(described.skills)[p.skill]].description.startswith(p.text[:20])
                         for p in pairs)


def test_validation_files_naming_none_of_the_concepts_are_dropped_with_a_warning(tools_csv, shared_path, taxonomy):
    from pipeline.training.taxonomy_fit import validation_for

    bench = shared_path / "benchmark" / "tech_validation_annotations.csv"
    with pytest.warns(TaxonomyWarning, match=r"'[^']+tech_validation_annotations.csv': \d of "
                                             r"its \d+ gold labels are preferred labels of the taxonomy 'tools'"):
        assert validation_for(Taxonomy.load(tools_csv), [bench]) == []
    assert validation_for(taxonomy, [bench]) == [bench]


# ---------------------------------------------------------------------------------------------- a pipeline for it
def test_shared_labels_link_every_concept_that_has_them(tmp_path, data_skills):
    from pipeline.components.assembly import assemble

    nlp = assemble(data_skills, None, with_ranker=False)
    doc = nlp("You will handle management reporting in Python and SQL.")
    found = {(span.text, span.kb_id_) for span in doc.spans["esco_skills"]}
    assert found == {("management reporting", "d:analysis"), ("management reporting", "d:bi"),
                     ("Python", "d:python"), ("SQL", "d:sql")}
    shared = [p for p in doc._.esco_skills if p.uri in ("d:analysis", "d:bi")]
    assert len(shared) == 2 and all(p.score == pytest.approx(0.45) for p in shared)  # 0.9 split between the two
    assert nlp.get_pipe("esco_skill_matcher").policy_report["shared labels"] == 2


def test_assemble_and_extract_a_flat_product_taxonomy_end_to_end(tmp_path, tools_csv):
    from typer.testing import CliRunner

    from pipeline.commands.cli import app

    taxonomy_file = write(tmp_path / "tools.csv", TOOLS)
    model = tmp_path / "model"
    result = CliRunner().invoke(app, ["assemble", "--taxonomy", str(taxonomy_file), "--output", str(model)])
    assert result.exit_code == 0, result.output
    meta = json.loads((model / "meta.json").read_text())
    assert meta["taxonomy"] == Taxonomy.load(tools_csv).record()
    taxonomy_file.unlink()  # loading and running never need the taxonomy file again

    ads = write(tmp_path / "ads.txt", "\n".join(ADS) + "\n")
    out = tmp_path / "skills.jsonl"
    result = CliRunner().invoke(app, ["extract", str(model), str(ads), "--lines", "--output", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    uris = [{skill["uri"] for skill in record["skills"]} for record in records]
    assert {"tool-001", "tool-002", "tool-003", "tool-010", "tool-012"} <= uris[0]
    assert {"tool-005", "tool-007", "tool-008"} <= uris[1]  # "MS Office": both products
    assert {"tool-011", "tool-004"} <= uris[2]
    assert all(uri.startswith("tool-") for found in uris for uri in found)

    nlp = spacy.load(model)
    doc = nlp(ADS[0])
    assert {span.kb_id_ for span in doc.spans["esco_skills"]} >= {"tool-001", "tool-002", "tool-010"}
    assert {pred.uri for pred in doc._.esco_skills} <= set(Taxonomy.load(tools_csv).skills)
    assert len(nlp.get_pipe("esco_skill_ranker").index) == 12


def test_esco_alias_option_still_builds_from_a_taxonomy_csv(tmp_path, tools_csv):
    from typer.testing import CliRunner

    from pipeline.commands.cli import app

    result = CliRunner().invoke(app, ["assemble", "--esco", str(tools_csv), "--no-ranker", "-o", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m" / "meta.json").read_text())["taxonomy"]["name"] == "tools"


def test_taxonomy_commands_check_and_convert(tmp_path, data_skills):
    from typer.testing import CliRunner

    from pipeline.commands.cli import app

    result = CliRunner().invoke(app, ["taxonomy", "check", str(data_skills)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["concepts"] == 11 and summary["groups"] == 1 and summary["shared_labels"] == 2
    bad = write(tmp_path / "bad.csv", f"{HEADER}\na,alpha,,,b,\n")
    result = CliRunner().invoke(app, ["taxonomy", "check", str(bad)])
    assert result.exit_code == 2 and "line 2: broader id 'b' of 'a' is not an id" in result.output
    out = tmp_path / "copy.csv"
    result = CliRunner().invoke(app, ["taxonomy", "convert", str(data_skills), str(out)])
    assert result.exit_code == 0 and Taxonomy.load(out).skills == Taxonomy.load(data_skills).skills


def test_corpus_and_train_on_a_flat_taxonomy(tmp_path, tools_csv, data_skills):
    import random

    from pipeline.corpus.build import build_corpus, read_manifest
    from pipeline.training.taxonomy_fit import check_corpus_taxonomy
    from pipeline.training.trainer import train

    names = ["Docker", "Kubernetes", "Terraform", "Jira", "Tableau", "Salesforce", "Excel", "Word", "PostgreSQL",
             "AWS", "Figma", "Git"]
    verbs = ["You will work daily with", "Experience of", "We expect good knowledge of", "Our team relies on",
             "A plus if you have used"]
    rng = random.Random(0)
    ads = [" ".join(f"{rng.choice(verbs)} {a} and {b} in our {rng.choice(['Leeds', 'Paris', 'Oslo'])} office {i}."
                    for a, b in [rng.sample(names, 2) for _ in range(3)]) for i in range(40)]
    ads = write(tmp_path / "ads.jsonl", "".join(json.dumps({"id": f"ad{i}", "description": text}) + "\n"
                                                 for i, text in enumerate(ads)))
    corpus = tmp_path / "corpus"
    build_corpus([ads], corpus, esco=tools_csv, dev_fraction=0.25, seed=0, workers=1, progress=False)
    manifest = read_manifest(corpus)
    assert manifest["taxonomy"]["name"] == "tools"
    with pytest.warns(TaxonomyWarning, match=r"was built for the taxonomy 'tools' \(12 concepts\), the pipeline is "
                                             r"for 'data_skills' \(11 concepts\)"):
        check_corpus_taxonomy(Taxonomy.load(data_skills), corpus)
    model = tmp_path / "model"
    overrides = ["training.max_steps=4", "training.eval_every=2", "training.batch_size=8", "training.warmup_steps=1",
                 'training.device="cpu"', "training.dev_max_masked=10", "training.interpolation=[1.0]"]
    with pytest.warns(TaxonomyWarning, match="has no descriptions"):
        summary = train(Path(__file__).parents[1] / "configs" / "flat.cfg", corpus, model, esco=tools_csv,
                        overrides=overrides)
    assert summary["pairs"]["corpus"] > 0 and summary["pairs"]["descriptions"] == 0 and summary["steps"] == 4
    nlp = spacy.load(model)
    assert nlp.meta["taxonomy"]["name"] == "tools" and nlp.meta["taxonomy"]["concepts"] == 12
    doc = nlp(ADS[2])
    assert {span.kb_id_ for span in doc.spans["esco_skills"]} == {"tool-011", "tool-004"}


# ---------------------------------------------------------------------------------------------- ESCO, both ways
SENTENCES = [
    "You will manage budgets and lead a small team.",
    "Experience with PostgreSQL and Python is required.",
    "Strong communication skills and attention to detail.",
    "Plan the maintenance of the vehicle fleet.",
]


@pytest.mark.slow
def test_esco_re_expressed_in_the_generic_format_gives_the_same_predictions(tmp_path, esco_path, pipeline_nlp):
    from pipeline.components.assembly import assemble

    converted = tmp_path / "esco_v1.1.1.csv"
    convert(esco_path, converted)
    assemble(converted, tmp_path / "generic")  # saved and loaded like pipeline_nlp: the same float16 index
    generic_nlp = spacy.load(tmp_path / "generic")
    for esco_doc, generic_doc in zip(pipeline_nlp.pipe(SENTENCES), generic_nlp.pipe(SENTENCES)):
        assert [(s.start, s.end, s.kb_id_) for s in esco_doc.spans["esco_skills"]] == \
               [(s.start, s.end, s.kb_id_) for s in generic_doc.spans["esco_skills"]]
        assert [p.uri for p in esco_doc._.esco_skills] == [p.uri for p in generic_doc._.esco_skills]
        assert [p.score for p in esco_doc._.esco_skills] == \
               pytest.approx([p.score for p in generic_doc._.esco_skills], abs=1e-4)
    assert generic_nlp.meta["taxonomy"]["concepts"] == pipeline_nlp.meta["taxonomy"]["concepts"] == 13_896


def test_a_pipeline_folder_copied_without_the_taxonomy_loads(tmp_path, tools_csv):
    from pipeline.components.assembly import assemble

    source = write(tmp_path / "src" / "tools.csv", TOOLS)
    assemble(source, tmp_path / "model", with_ranker=False)
    shutil.rmtree(tmp_path / "src")
    nlp = spacy.load(tmp_path / "model")
    doc = nlp("Deploy with Docker.")
    assert {span.kb_id_ for span in doc.spans["esco_skills"]} == {"tool-001"}
