"""``make package``: two wheels in one folder — the model ``en_esco_skills`` (built by ``spacy package``) and this
project's distribution ``esco-skill-pipeline`` (its components) — so that ``pip install DIST/*.whl`` plus the
pinned torch is the whole install on a machine without this checkout.

Everything the pipeline needs travels inside it: the ESCO knowledge base and patterns (matcher), the encoder
weights and the skill index (ranker). The wheel depends on this distribution (found by ``spacy package`` from
the factories' module), whose entry points provide the components, so ``spacy.load("en_esco_skills")`` works
offline after ``pip install``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional, Union

import srsly

from pipeline import ESCO_ATTRIBUTION, __version__
from pipeline.errors import EscoDataError

DISTRIBUTION = "esco-skill-pipeline"
LICENSE = "MIT (code); ESCO data: European Commission, reuse allowed with attribution"
PACKAGE_NAME, PACKAGE_VERSION = "esco_skills", "0.1.0"  # the wheel en_esco_skills-0.1.0


def package_meta(meta: Dict, name: str, version: str, encoder: Optional[str] = None) -> Dict:
    """Add what a user of the wheel should see: the taxonomy (ESCO's version and attribution, or the user's own
    taxonomy as ``meta["taxonomy"]`` records it), license, how it was trained, and the encoder it was trained from
    (``encoder``, the name in the pipeline's config; the default one's license is known, Apache-2.0)."""
    meta = dict(meta)
    esco = dict(meta.get("esco", {}))
    taxonomy = meta.get("taxonomy") or {"kind": "esco"}  # pipelines built before #22 were all ESCO
    is_esco = taxonomy.get("kind", "esco") == "esco"
    skills = "ESCO skills" if is_esco else f"skills of the taxonomy '{taxonomy.get('name', '')}'"
    meta.update(
        name=name,
        version=version,
        description=(
            f"Finds the {skills} a job ad asks for: explicit skill spans (literal label matching) and "
            "implicit skills per sentence and per ad (a bi-encoder trained by distant supervision)."
            + (" " + ESCO_ATTRIBUTION if is_esco else "")
        ),
        license=LICENSE if is_esco else "MIT (code); the taxonomy: its owner's terms",
        author=meta.get("author") or "esco-skill-pipeline contributors",
        sources=([taxonomy_source(esco.get("version", ""))] if is_esco else
                 [{"name": taxonomy.get("name", ""), "sha256": taxonomy.get("sha256", "")}])
        + ([encoder_source(encoder)] if encoder else []),
    )
    requirements = [r for r in meta.get("requirements", []) if not r.startswith(DISTRIBUTION)]
    meta["requirements"] = requirements + [f"{DISTRIBUTION}>={__version__}"]
    if is_esco:
        esco["attribution"] = ESCO_ATTRIBUTION
        meta["esco"] = esco
    return meta


def taxonomy_source(version: str) -> Dict[str, str]:
    return {"name": f"ESCO classification {version}".strip(), "url": "https://esco.ec.europa.eu/en/use-esco/download",
            "license": "European Commission reuse policy: reuse allowed with attribution",
            "attribution": ESCO_ATTRIBUTION}


def build_package(model_dir: Path, output: Path, *, name: str = PACKAGE_NAME, version: str = PACKAGE_VERSION,
                  wheel: bool = True) -> Path:
    """Copy the pipeline, complete its meta, run ``spacy package`` and return the wheel (or package folder)."""
    from spacy.cli.package import package

    model_dir = Path(model_dir)
    if not (model_dir / "meta.json").exists() or not (model_dir / "config.cfg").exists():
        raise EscoDataError(f"'{model_dir}' is not a pipeline folder (no meta.json/config.cfg): run `make train` "
                            "or `python -m pipeline assemble` first.")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "pipeline"
        shutil.copytree(model_dir, staged, ignore=shutil.ignore_patterns("*.checkpoint", "training_log.jsonl"))
        meta = package_meta(srsly.read_json(staged / "meta.json"), name, version, encoder_name(staged))
        srsly.write_json(staged / "meta.json", meta)
        build_dir = Path(tmp) / "build"
        build_dir.mkdir()
        package(staged, build_dir, name=name, version=version, create_sdist=False, create_wheel=wheel,
                force=True, silent=True, require_parent=True)
        package_dir = build_dir / f"{meta['lang']}_{name}-{version}"
        if not wheel:
            target = output / package_dir.name
            shutil.rmtree(target, ignore_errors=True)
            return Path(shutil.copytree(package_dir, target))
        wheels = sorted((package_dir / "dist").glob("*.whl"))
        if not wheels:
            raise EscoDataError(f"spacy package produced no wheel in {package_dir / 'dist'}")
        target = output / wheels[0].name
        shutil.copy2(wheels[0], target)
        return target


def encoder_source(encoder: str) -> Dict[str, str]:
    from pipeline.components.pipes import DEFAULT_ENCODER

    return {"name": encoder, **({"license": "Apache-2.0"} if encoder == DEFAULT_ENCODER else {})}


def encoder_name(model_dir: Path) -> Optional[str]:
    """The name of the ranker's encoder in a pipeline folder's config (None without a ranker)."""
    from spacy.util import load_config

    from pipeline.components.pipes import RANKER

    components = load_config(Path(model_dir) / "config.cfg", interpolate=False)["components"]
    return components[RANKER]["encoder"]["name"] if RANKER in components else None


def build_project_wheel(project_dir: Union[str, Path], output: Path) -> Path:
    """Build this project's own wheel (``esco-skill-pipeline``) from a checkout into ``output``.

    ``--no-isolation``: the build uses the installed setuptools instead of downloading one, so it works offline.
    """
    project_dir = Path(project_dir)
    if not (project_dir / "setup.cfg").exists() or not (project_dir / "pipeline").is_dir():
        raise EscoDataError(f"'{project_dir}' is not a checkout of {DISTRIBUTION} (no setup.cfg / pipeline/).")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    before = set(output.glob("esco_skill_pipeline-*.whl"))
    result = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(output),
                             str(project_dir)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise EscoDataError(f"building the {DISTRIBUTION} wheel failed:\n{result.stderr[-2000:]}")
    wheels = sorted(set(output.glob("esco_skill_pipeline-*.whl")) - before) or sorted(output.glob(
        "esco_skill_pipeline-*.whl"))
    if not wheels:
        raise EscoDataError(f"building the {DISTRIBUTION} wheel wrote no wheel to '{output}'")
    return wheels[-1]
