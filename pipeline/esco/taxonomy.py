"""The taxonomy: concepts (skills), their labels and their place in a hierarchy — what every component reads.

Two readers fill it (``Taxonomy.load`` picks one by what the path holds): the ESCO CSV export of any v1.x release
(``pipeline.esco.esco_csv``) and the generic one-file CSV of any other taxonomy (``pipeline.esco.generic``,
docs/taxonomy.md). Read once, then serialized next to the components that need it, so a pipeline loads it in
well under a second without the original files.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import srsly

from pipeline.errors import IncompletePipelineError

PathOrPaths = Union[str, Path, Sequence[Union[str, Path]]]

SKILLS_FILE = "skills_en.csv"
GROUPS_FILE = "skillGroups_en.csv"
BROADER_FILE = "broaderRelationsSkillPillar.csv"
OCCUPATIONS_FILE = "occupations_en.csv"
OCCUPATION_SKILLS_FILE = "occupationSkillRelations.csv"

# Columns we cannot work without, per file; others are read when present.
REQUIRED_COLUMNS: Dict[str, Tuple[str, ...]] = {
    SKILLS_FILE: ("conceptUri", "preferredLabel", "altLabels", "skillType"),
    GROUPS_FILE: ("conceptUri", "preferredLabel"),
    BROADER_FILE: ("conceptUri", "broaderUri"),
    OCCUPATIONS_FILE: ("conceptUri", "preferredLabel"),
    OCCUPATION_SKILLS_FILE: ("occupationUri", "relationType", "skillUri"),
}
OPTIONAL_FILES = (OCCUPATIONS_FILE, OCCUPATION_SKILLS_FILE)
KB_FILE = "esco_kb.msgpack"
ESCO_MARKER_COLUMNS = frozenset({"conceptUri", "conceptType", "broaderUri", "occupationUri"})


class TaxonomyWarning(UserWarning):
    """The taxonomy lacks something a step would use (descriptions): the step is off, the run goes on."""


@dataclass(frozen=True)
class Skill:
    """One concept of the taxonomy: an ESCO skill or knowledge concept, or a row of a generic taxonomy CSV."""

    uri: str
    preferred_label: str
    alt_labels: Tuple[str, ...] = ()
    hidden_labels: Tuple[str, ...] = ()
    description: str = ""
    skill_type: str = ""
    reuse_level: str = ""

    @property
    def labels(self) -> Tuple[str, ...]:
        """Preferred label first, then the alternative labels, without duplicates."""
        seen = {self.preferred_label}
        extra = [label for label in self.alt_labels if not (label in seen or seen.add(label))]
        return (self.preferred_label, *extra)


@dataclass(frozen=True)
class Occupation:
    uri: str
    preferred_label: str
    essential_skills: Tuple[str, ...] = ()
    optional_skills: Tuple[str, ...] = ()


@dataclass
class LoadReport:
    """What was read and what was skipped, per file and reason; skipped rows are never silent."""

    rows_read: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    missing_optional_files: List[str] = field(default_factory=list)

    def skip(self, file_name: str, reason: str) -> None:
        self.skipped[f"{file_name}: {reason}"] += 1

    def summary(self) -> str:
        lines = [f"read {n:,} rows from {name}" for name, n in sorted(self.rows_read.items())]
        lines += [f"skipped {n:,} rows ({key})" for key, n in sorted(self.skipped.items())]
        lines += [f"optional file not found: {name}" for name in self.missing_optional_files]
        return "\n".join(lines)


class Taxonomy:
    """Skills by id (ESCO: URI), skill groups, the broader/narrower hierarchy and occupation → skill relations.

    ``skills`` are the concepts a pipeline predicts; ``group_labels`` name concepts that only group others in the
    hierarchy (ESCO's skill groups; rows of ``type`` "group" in the generic CSV). ``name`` and ``kind`` ("esco" or
    "generic") say which taxonomy it is, for the model's meta.
    """

    def __init__(
        self,
        skills: Iterable[Skill],
        broader: Dict[str, Sequence[str]],
        group_labels: Dict[str, str],
        occupations: Iterable[Occupation] = (),
        version: str = "",
        report: Optional[LoadReport] = None,
        name: str = "",
        kind: str = "esco",
    ):
        self.name = name or (f"ESCO {version}" if version else "taxonomy")
        self.kind = kind
        self.skills: Dict[str, Skill] = {skill.uri: skill for skill in skills}
        self.broader: Dict[str, Tuple[str, ...]] = {k: tuple(v) for k, v in broader.items() if v}
        self.group_labels = dict(group_labels)
        self.occupations: Dict[str, Occupation] = {occ.uri: occ for occ in occupations}
        self.version = version
        self.report = report or LoadReport()
        narrower: Dict[str, List[str]] = defaultdict(list)
        for child, parents in self.broader.items():
            for parent in parents:
                narrower[parent].append(child)
        self.narrower: Dict[str, Tuple[str, ...]] = {k: tuple(v) for k, v in narrower.items()}
        self.uris: List[str] = list(self.skills)
        self.index: Dict[str, int] = {uri: i for i, uri in enumerate(self.uris)}

    def __len__(self) -> int:
        return len(self.skills)

    def __contains__(self, uri: object) -> bool:
        return uri in self.skills

    def __getitem__(self, uri: str) -> Skill:
        try:
            return self.skills[uri]
        except KeyError:
            raise KeyError(f"'{uri}' is not an ESCO skill URI of this taxonomy ({self.version or self.name})") from None

    def label(self, uri: str) -> str:
        if uri in self.skills:
            return self.skills[uri].preferred_label
        return self.group_labels.get(uri, uri)

    def by_preferred_label(self) -> Dict[str, str]:
        """Preferred label → URI (the benchmark names skills by their v1.1.1 preferred label)."""
        return {skill.preferred_label: uri for uri, skill in self.skills.items()}

    def ancestors(self, uri: str) -> List[str]:
        """Broader concepts (skills and groups), nearest first, each once."""
        seen: Dict[str, None] = {}
        queue = deque(self.broader.get(uri, ()))
        while queue:
            node = queue.popleft()
            if node in seen or node == uri:
                continue
            seen[node] = None
            queue.extend(self.broader.get(node, ()))
        return list(seen)

    def descendant_skills(self, uri: str) -> List[str]:
        """Every skill below a concept (not the concept itself)."""
        out: Dict[str, None] = {}
        queue = deque(self.narrower.get(uri, ()))
        while queue:
            node = queue.popleft()
            if node in out:
                continue
            out[node] = None
            queue.extend(self.narrower.get(node, ()))
        return [node for node in out if node in self.skills and node != uri]

    def siblings(self, uri: str) -> List[str]:
        """Skills that share a direct broader concept with `uri` (excluding `uri`)."""
        out: Dict[str, None] = {}
        for parent in self.broader.get(uri, ()):
            for child in self.narrower.get(parent, ()):
                if child != uri and child in self.skills:
                    out[child] = None
        return list(out)

    def relatives(self, uri: str, min_count: int = 1, max_levels: int = 4) -> List[str]:
        """Siblings first; when there are fewer than `min_count`, skills under ever broader ancestors.

        This is what the taxonomy negative sampler draws from: the nearest skills in ESCO's own hierarchy.
        """
        found: Dict[str, None] = dict.fromkeys(self.siblings(uri))
        level_parents = list(self.broader.get(uri, ()))
        for _ in range(max_levels):
            if len(found) >= min_count or not level_parents:
                break
            next_parents: List[str] = []
            for parent in level_parents:
                for grand in self.broader.get(parent, ()):
                    for skill in self.descendant_skills(grand):
                        if skill != uri:
                            found.setdefault(skill, None)
                    next_parents.append(grand)
            level_parents = next_parents
        return list(found)

    @property
    def has_hierarchy(self) -> bool:
        """Whether any concept has a broader one (what the taxonomy negative sampler walks)."""
        return bool(self.broader)

    @property
    def has_descriptions(self) -> bool:
        """Whether any skill has a description (the description source and the paraphrase dev read them)."""
        return any(skill.description for skill in self.skills.values())

    # ---------------------------------------------------------------- reading
    @classmethod
    def load(cls, paths: PathOrPaths) -> "Taxonomy":
        """The taxonomy at ``paths``: a generic taxonomy CSV (docs/taxonomy.md), else the ESCO CSV export
        (a folder, zips or its CSV files). A single CSV is told apart by its header: ESCO's files have
        ``conceptUri``-style columns, the generic format ``id,preferred_label,…``."""
        from pipeline.esco.generic import read_generic

        single = Path(paths) if isinstance(paths, (str, Path)) else (Path(paths[0]) if len(paths) == 1 else None)
        if single is not None and single.suffix.lower() == ".csv" and single.is_file():
            if not ESCO_MARKER_COLUMNS & set(_header(single)):
                return read_generic(single)
        return cls.from_esco(paths)

    @classmethod
    def from_esco(cls, paths: PathOrPaths, version: str = "") -> "Taxonomy":
        """The taxonomy of an ESCO CSV export of any v1.x release (``pipeline.esco.esco_csv``)."""
        from pipeline.esco.esco_csv import read_esco

        return read_esco(paths, version)

    # ---------------------------------------------------------------- identity
    def content_hash(self) -> str:
        """SHA-256 of what the pipeline uses (skills, labels, descriptions, types, hierarchy, groups), in a fixed
        order: the same taxonomy gives the same hash wherever and however it was read."""
        data = self.to_dict()
        content = [data["skills"], sorted(data["broader"].items()), sorted(data["group_labels"].items())]
        return hashlib.sha256(srsly.msgpack_dumps(content)).hexdigest()

    def record(self) -> Dict[str, object]:
        """What the model's meta says about the taxonomy it was built for (``meta["taxonomy"]``)."""
        return {"name": self.name, "kind": self.kind, "version": self.version, "concepts": len(self.skills),
                "groups": len(self.group_labels), "hierarchy": self.has_hierarchy,
                "descriptions": self.has_descriptions, "sha256": self.content_hash()}

    # ---------------------------------------------------------------- serialization
    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "name": self.name,
            "kind": self.kind,
            "skills": [
                [s.uri, s.preferred_label, list(s.alt_labels), list(s.hidden_labels), s.description, s.skill_type,
                 s.reuse_level]
                for s in self.skills.values()
            ],
            "broader": {k: list(v) for k, v in self.broader.items()},
            "group_labels": self.group_labels,
            "occupations": [
                [o.uri, o.preferred_label, list(o.essential_skills), list(o.optional_skills)]
                for o in self.occupations.values()
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Taxonomy":
        skills = [Skill(u, p, tuple(a), tuple(h), d, t, r) for u, p, a, h, d, t, r in data["skills"]]
        occupations = [Occupation(u, p, tuple(e), tuple(o)) for u, p, e, o in data.get("occupations", [])]
        return cls(skills, data["broader"], data["group_labels"], occupations, version=data.get("version", ""),
                   name=data.get("name", ""), kind=data.get("kind", "esco"))

    def to_bytes(self) -> bytes:
        """``to_dict`` as msgpack: what ``KB_FILE`` holds, and the matcher's ``kb`` part in ``nlp.to_bytes()``."""
        return srsly.msgpack_dumps(self.to_dict())

    @classmethod
    def from_bytes(cls, bytes_data: bytes) -> "Taxonomy":
        return cls.from_dict(srsly.msgpack_loads(bytes_data))

    def to_disk(self, path: Union[str, Path]) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / KB_FILE).write_bytes(self.to_bytes())

    @classmethod
    def from_disk(cls, path: Union[str, Path]) -> "Taxonomy":
        file = IncompletePipelineError.unless_exists(Path(path) / KB_FILE, "the taxonomy (knowledge base)")
        return cls.from_bytes(file.read_bytes())


# The name every consumer imports; it reads any taxonomy, ESCO's among them.
EscoTaxonomy = Taxonomy


def _header(path: Path) -> List[str]:
    """The first row of a CSV file (empty when it has none or cannot be decoded: the reader then says why)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return next(csv.reader(handle), [])
    except (UnicodeDecodeError, csv.Error):
        return []
