"""`make package`: both wheels (model + project) install into a fresh virtual environment and load there offline."""

import json
import os
import site
import subprocess
import sys
import zipfile

import pytest
import spacy

from pipeline import ESCO_ATTRIBUTION
from pipeline.commands.packaging import DISTRIBUTION, build_package, build_project_wheel, package_meta

from conftest import ROOT

TEXTS = ["<p>Experience with postgresql.</p><ul><li>You will keep the ward's patient files in order.</li></ul>"]
PROBE = """
import json, sys, spacy
nlp = spacy.load("en_esco_skills")
doc = nlp(sys.argv[1])
import pipeline
print(json.dumps({"skills": [[p.uri, round(p.score, 4), p.explicit] for p in doc._.esco_skills],
                  "spans": [s.kb_id_ for s in doc.spans["esco_skills"]],
                  "meta": nlp.meta, "pipeline_file": pipeline.__file__}))
"""


def test_package_meta_names_esco_attribution_license_and_the_project_requirement():
    meta = package_meta({"lang": "en", "esco": {"version": "v1.1.1"}, "requirements": ["esco-skill-pipeline>=0.0.1",
                                                                                      "spacy>=3.8"]}, "x", "1.2.3")
    assert meta["name"] == "x" and meta["version"] == "1.2.3"
    assert ESCO_ATTRIBUTION in meta["description"] and meta["esco"]["attribution"] == ESCO_ATTRIBUTION
    assert meta["sources"][0]["name"] == "ESCO classification v1.1.1"
    # The project's own requirement is replaced (not duplicated) by the installed version's.
    assert [r for r in meta["requirements"] if r.startswith(DISTRIBUTION)] == [f"{DISTRIBUTION}>=0.1.0"]
    assert "spacy>=3.8" in meta["requirements"]


def test_a_package_of_another_taxonomy_names_it_and_claims_no_esco():
    meta = package_meta({"lang": "en", "taxonomy": {"name": "acme_tools", "kind": "generic", "sha256": "ab12"}},
                        "x", "1.0.0")
    assert "acme_tools" in meta["description"] and "ESCO" not in meta["description"]
    assert meta["sources"] == [{"name": "acme_tools", "sha256": "ab12"}] and "esco" not in meta


def test_wheel_installs_in_fresh_venv_and_loads_offline(trained, tmp_path):
    model_dir, _ = trained
    wheel = build_package(model_dir, tmp_path / "dist")
    project_wheel = build_project_wheel(ROOT, tmp_path / "dist")
    with zipfile.ZipFile(project_wheel) as archive:
        project_names = archive.namelist()
    assert "pipeline/components/ranker.py" in project_names and "pipeline/esco/taxonomy.py" in project_names
    assert any(n.endswith("entry_points.txt") for n in project_names)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert any(n.endswith("esco_skill_ranker/encoder/model.safetensors") for n in names)
    assert any(n.endswith("esco_skill_ranker/skill_index.npy") for n in names)
    assert any(n.endswith("esco_skill_matcher/kb/esco_kb.msgpack") for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # The fresh environment sees the project's dependencies (torch, spaCy, ...) through a .pth file rather than
    # downloading them again; the wheel itself is installed for real, offline, without dependencies.
    target = subprocess.run([str(py), "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                            capture_output=True, text=True).stdout.strip()
    with open(os.path.join(target, "project_deps.pth"), "w") as handle:
        handle.write(f"import site; site.addsitedir({site.getsitepackages()[0]!r})\n")
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel),
                    str(project_wheel)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "empty_hf_home"))
    result = subprocess.run([str(py), "-c", PROBE, TEXTS[0]], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    probe = json.loads(result.stdout.strip().splitlines()[-1])

    expected = spacy.load(model_dir)(TEXTS[0])
    assert probe["skills"] == [[p.uri, round(p.score, 4), p.explicit] for p in expected._.esco_skills]
    assert probe["spans"] == [s.kb_id_ for s in expected.spans["esco_skills"]]
    assert probe["pipeline_file"].startswith(str(venv)), probe["pipeline_file"]  # the wheel's code, not the checkout
    meta = probe["meta"]
    assert meta["name"] == "esco_skills" and ESCO_ATTRIBUTION in meta["description"]
    assert meta["esco"]["version"] == "v1.1.1" and "training_config" in meta["esco"]
    assert any(r.startswith("esco-skill-pipeline") for r in meta["requirements"])
