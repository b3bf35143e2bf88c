"""The ESCO knowledge base: skills, their labels and their place in the skill hierarchy.

Read once from the official CSV export (the zips as downloaded, or their extracted folder), then serialized
next to the components that need it, so a pipeline loads it in well under a second without the CSVs.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import srsly

from pipeline.errors import EscoDataError, IncompletePipelineError

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


@dataclass(frozen=True)
class Skill:
    """One ESCO skill or knowledge concept."""

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


class EscoCsvSource:
    """Finds the ESCO CSV files inside a folder (extracted, or holding the zips) or inside zip files."""

    def __init__(self, paths: Union[str, Path, Sequence[Union[str, Path]]]):
        if isinstance(paths, (str, Path)):
            paths = [paths]
        self.locations: Dict[str, Tuple[Path, Optional[str]]] = {}
        for path in map(Path, paths):
            if not path.exists():
                raise EscoDataError(
                    f"ESCO export not found at '{path}'. Download the ESCO CSV export (classification, "
                    "English, and the relations zip) from the ESCO portal and point --esco / ESCO= at the "
                    "folder that holds the zips or their extracted CSV files."
                )
            self._index(path)

    def _index(self, path: Path) -> None:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.suffix.lower() == ".csv":
                    self.locations.setdefault(child.name, (child, None))
                elif child.suffix.lower() == ".zip":
                    self._index_zip(child)
        elif path.suffix.lower() == ".zip":
            self._index_zip(path)
        elif path.suffix.lower() == ".csv":
            self.locations.setdefault(path.name, (path, None))
        else:
            raise EscoDataError(f"'{path}' is neither a folder, a .zip nor a .csv file of the ESCO export.")

    def _index_zip(self, path: Path) -> None:
        try:
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    name = member.rsplit("/", 1)[-1]
                    if name.lower().endswith(".csv"):
                        self.locations.setdefault(name, (path, member))
        except zipfile.BadZipFile as err:
            raise EscoDataError(f"'{path}' is not a readable zip file: {err}") from err

    def has(self, name: str) -> bool:
        return name in self.locations

    def describe(self, name: str) -> str:
        path, member = self.locations[name]
        return f"{path}:{member}" if member else str(path)

    def rows(self, name: str, report: LoadReport) -> Iterator[Tuple[int, Dict[str, str]]]:
        """Yield (line number, row) with the required columns checked up front."""
        if name not in self.locations:
            raise EscoDataError(
                f"'{name}' was not found in the ESCO export ({', '.join(sorted(set(str(p) for p, _ in self.locations.values()))) or 'no CSV files found'}). "
                "Both zips are needed: the classification (skills, groups) and the relations export."
            )
        where = self.describe(name)
        path, member = self.locations[name]
        with self._open(path, member) as handle:
            # strict: an unterminated quote is an error, not a field that silently swallows the rest of the file
            reader = csv.DictReader(handle, strict=True)
            try:  # the header read decodes the first chunk: a non-UTF-8 file fails here, not in the row loop
                reader.fieldnames
            except (csv.Error, UnicodeDecodeError) as err:
                raise EscoDataError(f"'{where}' is not a readable UTF-8 CSV file: {err}") from err
            if not reader.fieldnames:
                raise EscoDataError(f"'{where}' is empty: expected a CSV header with {REQUIRED_COLUMNS[name]}.")
            missing = [col for col in REQUIRED_COLUMNS[name] if col not in reader.fieldnames]
            if missing:
                raise EscoDataError(
                    f"'{where}' lacks the column(s) {missing}; found {reader.fieldnames}. "
                    "Is this the English ESCO v1.x CSV export?"
                )
            count = 0
            try:
                for row in reader:
                    count += 1
                    yield reader.line_num, row
            except (csv.Error, UnicodeDecodeError) as err:
                raise EscoDataError(f"'{where}' is malformed near line {reader.line_num}: {err}") from err
            if count == 0:
                raise EscoDataError(f"'{where}' has a header but no rows.")
            report.rows_read[name] += count

    @staticmethod
    def _open(path: Path, member: Optional[str]) -> io.TextIOBase:
        if member is None:
            return open(path, encoding="utf-8-sig", newline="")
        archive = zipfile.ZipFile(path)
        return io.TextIOWrapper(archive.open(member), encoding="utf-8-sig", newline="")


def _split_labels(value: Optional[str]) -> Tuple[str, ...]:
    """ESCO stores alternative labels newline-separated in one cell."""
    if not value:
        return ()
    return tuple(dict.fromkeys(label.strip() for label in value.splitlines() if label.strip()))


class EscoTaxonomy:
    """Skills by URI, skill groups, the broader/narrower hierarchy and occupation → skill relations."""

    def __init__(
        self,
        skills: Iterable[Skill],
        broader: Dict[str, Sequence[str]],
        group_labels: Dict[str, str],
        occupations: Iterable[Occupation] = (),
        version: str = "",
        report: Optional[LoadReport] = None,
    ):
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
            raise KeyError(f"'{uri}' is not an ESCO skill URI of this taxonomy ({self.version})") from None

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

    # ---------------------------------------------------------------- reading the official export
    @classmethod
    def from_esco(cls, paths: Union[str, Path, Sequence[Union[str, Path]]], version: str = "") -> "EscoTaxonomy":
        source = EscoCsvSource(paths)
        report = LoadReport()
        skills = list(_read_skills(source, report))
        if not skills:
            raise EscoDataError(f"No usable skill rows in '{source.describe(SKILLS_FILE)}'.")
        group_labels = dict(_read_groups(source, report))
        broader = _read_broader(source, report, set(group_labels) | {s.uri for s in skills})
        occupations = list(_read_occupations(source, report))
        if not version:
            version = _guess_version(source)
        return cls(skills, broader, group_labels, occupations, version=version, report=report)

    # ---------------------------------------------------------------- serialization
    def to_dict(self) -> dict:
        return {
            "version": self.version,
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
    def from_dict(cls, data: dict) -> "EscoTaxonomy":
        skills = [Skill(u, p, tuple(a), tuple(h), d, t, r) for u, p, a, h, d, t, r in data["skills"]]
        occupations = [Occupation(u, p, tuple(e), tuple(o)) for u, p, e, o in data.get("occupations", [])]
        return cls(skills, data["broader"], data["group_labels"], occupations, version=data.get("version", ""))

    def to_bytes(self) -> bytes:
        """``to_dict`` as msgpack: what ``KB_FILE`` holds, and the matcher's ``kb`` part in ``nlp.to_bytes()``."""
        return srsly.msgpack_dumps(self.to_dict())

    @classmethod
    def from_bytes(cls, bytes_data: bytes) -> "EscoTaxonomy":
        return cls.from_dict(srsly.msgpack_loads(bytes_data))

    def to_disk(self, path: Union[str, Path]) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / KB_FILE).write_bytes(self.to_bytes())

    @classmethod
    def from_disk(cls, path: Union[str, Path]) -> "EscoTaxonomy":
        file = IncompletePipelineError.unless_exists(Path(path) / KB_FILE, "the ESCO knowledge base")
        return cls.from_bytes(file.read_bytes())


def _read_skills(source: EscoCsvSource, report: LoadReport) -> Iterator[Skill]:
    seen = set()
    for line, row in source.rows(SKILLS_FILE, report):
        uri = (row.get("conceptUri") or "").strip()
        label = (row.get("preferredLabel") or "").strip()
        if not uri or not label:
            report.skip(SKILLS_FILE, "no conceptUri or preferredLabel")
            continue
        if uri in seen:
            report.skip(SKILLS_FILE, "duplicate conceptUri")
            continue
        seen.add(uri)
        yield Skill(
            uri=uri,
            preferred_label=label,
            alt_labels=_split_labels(row.get("altLabels")),
            hidden_labels=_split_labels(row.get("hiddenLabels")),
            description=(row.get("description") or "").strip(),
            skill_type=(row.get("skillType") or "").strip(),
            reuse_level=(row.get("reuseLevel") or "").strip(),
        )


def _read_groups(source: EscoCsvSource, report: LoadReport) -> Iterator[Tuple[str, str]]:
    for _, row in source.rows(GROUPS_FILE, report):
        uri, label = (row.get("conceptUri") or "").strip(), (row.get("preferredLabel") or "").strip()
        if not uri or not label:
            report.skip(GROUPS_FILE, "no conceptUri or preferredLabel")
            continue
        yield uri, label


def _read_broader(source: EscoCsvSource, report: LoadReport, known: set) -> Dict[str, List[str]]:
    broader: Dict[str, List[str]] = defaultdict(list)
    for _, row in source.rows(BROADER_FILE, report):
        child, parent = (row.get("conceptUri") or "").strip(), (row.get("broaderUri") or "").strip()
        if not child or not parent:
            report.skip(BROADER_FILE, "no conceptUri or broaderUri")
        elif child not in known or parent not in known:
            report.skip(BROADER_FILE, "concept not among the skills or skill groups")
        else:
            broader[child].append(parent)
    return broader


def _read_occupations(source: EscoCsvSource, report: LoadReport) -> Iterator[Occupation]:
    """Occupations and their essential/optional skills: weak supervision for skills no ad mentions."""
    missing = [name for name in OPTIONAL_FILES if not source.has(name)]
    if missing:
        report.missing_optional_files.extend(missing)
        return
    labels = {}
    for _, row in source.rows(OCCUPATIONS_FILE, report):
        uri, label = (row.get("conceptUri") or "").strip(), (row.get("preferredLabel") or "").strip()
        if uri and label:
            labels[uri] = label
        else:
            report.skip(OCCUPATIONS_FILE, "no conceptUri or preferredLabel")
    essential: Dict[str, List[str]] = defaultdict(list)
    optional: Dict[str, List[str]] = defaultdict(list)
    for _, row in source.rows(OCCUPATION_SKILLS_FILE, report):
        occ, kind, skill = row["occupationUri"].strip(), row["relationType"].strip(), row["skillUri"].strip()
        if occ not in labels:
            report.skip(OCCUPATION_SKILLS_FILE, "unknown occupationUri")
            continue
        (essential if kind == "essential" else optional)[occ].append(skill)
    for uri, label in labels.items():
        yield Occupation(uri, label, tuple(essential.get(uri, ())), tuple(optional.get(uri, ())))


def _guess_version(source: EscoCsvSource) -> str:
    for path, _ in source.locations.values():
        for part in (path.name, path.parent.name):
            if "v1." in part:
                start = part.index("v1.")
                return part[start:].split("-")[0].split("_")[0].removesuffix(".zip")
    return "unknown"
