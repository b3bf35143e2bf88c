"""The ESCO CSV export of any v1.x release (v1.0.x–v1.2.x): its files, their columns, and the reader.

Releases differ in file names and in extra columns, not in the columns we read: v1.2 names the relation files
``broaderRelationsSkillPillar_en.csv`` / ``occupationSkillRelations_en.csv`` (v1.0/v1.1: without ``_en``) and
adds label columns to them. A file is found by its name with or without the ``_en`` suffix; what is read from
it is found by its header, never by a version string: a required column that is missing is an error that names
the file and the column.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from pipeline.errors import EscoDataError
from pipeline.esco.taxonomy import (
    BROADER_FILE,
    GROUPS_FILE,
    OCCUPATION_SKILLS_FILE,
    OCCUPATIONS_FILE,
    OPTIONAL_FILES,
    REQUIRED_COLUMNS,
    SKILLS_FILE,
    LoadReport,
    Occupation,
    Skill,
    Taxonomy,
)

_VERSION = re.compile(r"v\d+\.\d+(?:\.\d+)?")


def _canonical(name: str) -> str:
    """The key a file is found by: its name in lower case, without ``.csv`` and without an ``_en`` suffix."""
    stem = name.lower().removesuffix(".csv")
    return stem.removesuffix("_en")


class EscoCsvSource:
    """Finds the ESCO CSV files inside a folder (extracted, or holding the zips) or inside zip files."""

    def __init__(self, paths: Union[str, Path, Sequence[Union[str, Path]]]):
        if isinstance(paths, (str, Path)):
            paths = [paths]
        self.locations: Dict[str, Tuple[Path, Optional[str]]] = {}
        self._by_key: Dict[str, str] = {}  # _canonical(name) → the name as found
        for path in map(Path, paths):
            if not path.exists():
                raise EscoDataError(
                    f"ESCO export not found at '{path}'. Download the ESCO CSV export (classification, "
                    "English, and the relations zip) from the ESCO portal and point --taxonomy / TAXONOMY= at the "
                    "folder that holds the zips or their extracted CSV files (or give a taxonomy CSV of your own: "
                    "docs/taxonomy.md)."
                )
            self._index(path)

    def _index(self, path: Path) -> None:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.suffix.lower() == ".csv":
                    self._add(child.name, child, None)
                elif child.suffix.lower() == ".zip":
                    self._index_zip(child)
        elif path.suffix.lower() == ".zip":
            self._index_zip(path)
        elif path.suffix.lower() == ".csv":
            self._add(path.name, path, None)
        else:
            raise EscoDataError(f"'{path}' is neither a folder, a .zip nor a .csv file of the ESCO export.")

    def _add(self, name: str, path: Path, member: Optional[str]) -> None:
        if name not in self.locations:
            self.locations[name] = (path, member)
            self._by_key.setdefault(_canonical(name), name)

    def _index_zip(self, path: Path) -> None:
        try:
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    name = member.rsplit("/", 1)[-1]
                    if name.lower().endswith(".csv"):
                        self._add(name, path, member)
        except zipfile.BadZipFile as err:
            raise EscoDataError(f"'{path}' is not a readable zip file: {err}") from err

    def resolve(self, name: str) -> Optional[str]:
        """The name under which a file of the export (a v1.1 name such as ``BROADER_FILE``) was found, if any."""
        return name if name in self.locations else self._by_key.get(_canonical(name))

    def has(self, name: str) -> bool:
        return self.resolve(name) is not None

    def describe(self, name: str) -> str:
        path, member = self.locations[self.resolve(name) or name]
        return f"{path}:{member}" if member else str(path)

    def rows(self, name: str, report: LoadReport) -> Iterator[Tuple[int, Dict[str, str]]]:
        """Yield (line number, row) with the required columns checked up front."""
        found = self.resolve(name)
        if found is None:
            raise EscoDataError(
                f"'{name}' was not found in the ESCO export ({', '.join(sorted(set(str(p) for p, _ in self.locations.values()))) or 'no CSV files found'}). "
                "Both zips are needed: the classification (skills, groups) and the relations export."
            )
        where = self.describe(found)
        path, member = self.locations[found]
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


def read_esco(paths: Union[str, Path, Sequence[Union[str, Path]]], version: str = "") -> Taxonomy:
    """The taxonomy of an ESCO CSV export (folder, zips or CSV files)."""
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
    return Taxonomy(skills, broader, group_labels, occupations, version=version, report=report,
                    name=f"ESCO {version}", kind="esco")


def _split_labels(value: Optional[str]) -> Tuple[str, ...]:
    """ESCO stores alternative labels newline-separated in one cell."""
    if not value:
        return ()
    return tuple(dict.fromkeys(label.strip() for label in value.splitlines() if label.strip()))


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
    """The release named in a zip's or folder's name ("esco-v1.1.1-classification-en-csv.zip", "ESCO dataset -
    v1.2.1 - classification - en - csv"): a label for the meta only, never used to decide how to read."""
    for path, _ in source.locations.values():
        for part in (path.name, path.parent.name):
            found = _VERSION.search(part)
            if found:
                return found.group(0)
    return "unknown"
