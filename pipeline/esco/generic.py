"""The generic taxonomy format: one UTF-8 CSV file, one concept per row, for any taxonomy that is not ESCO.

Header (columns in any order; ``description`` and ``type`` may be left out)::

    id,preferred_label,alt_labels,description,broader,type

- ``id``: unique, non-empty; what ``span.kb_id_`` and the predictions' ``uri`` carry.
- ``preferred_label``: non-empty; ``alt_labels``: other names, ``|``-separated (may be empty).
- ``broader``: ``|``-separated ids of this file (empty for a top concept); no cycles.
- ``type``: free text (the span label); the value ``group`` marks a concept that only groups others in the
  hierarchy and is never predicted, like ESCO's skill groups.

Every violation is an ``EscoDataError`` naming the file and the line, so a user fixes the file, not the code. A
label shared by several concepts needs nothing here: the matcher splits a shared label's score among its
concepts, as it does for ESCO's shared labels. ``write_generic`` writes a taxonomy in this format (ESCO's
hidden labels, reuse levels and occupations have no column and are left out; the pipeline does not use them).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from pipeline.errors import EscoDataError
from pipeline.esco.taxonomy import PathOrPaths, Skill, Taxonomy

COLUMNS = ("id", "preferred_label", "alt_labels", "description", "broader", "type")
REQUIRED = ("id", "preferred_label")
SEPARATOR = "|"
GROUP_TYPE = "group"
FORMAT_HINT = "the format: docs/taxonomy.md"


class _Row:
    """One concept as read, with the line it starts on (for the errors found after the whole file is read)."""

    __slots__ = ("line", "id", "label", "alt", "description", "broader", "type")

    def __init__(self, line: int, values: Dict[str, str], where: str):
        self.line = line
        self.id = values.get("id", "")
        self.label = values.get("preferred_label", "")
        self.alt = _split(values.get("alt_labels", ""), "alt_labels", self.id, where)
        self.description = values.get("description", "")
        self.broader = _split(values.get("broader", ""), "broader", self.id, where)
        self.type = values.get("type", "")


def _split(cell: str, column: str, concept: str, where: str) -> Tuple[str, ...]:
    """A ``|``-separated cell, each part stripped, each once; an empty part ("a||b", "a|") is an error."""
    if not cell:
        return ()
    parts = [part.strip() for part in cell.split(SEPARATOR)]
    if not all(parts):
        raise EscoDataError(f"{where}: {column} of '{concept}' holds an empty entry ('{cell}': two '{SEPARATOR}' "
                            f"in a row, or one at an end).")
    return tuple(dict.fromkeys(parts))


def _decode(path: Path) -> str:
    """The file's text; a byte that is not UTF-8 is an error naming its line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise EscoDataError(f"'{path}' line {line}: not UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start}): "
                            "save the file as UTF-8.") from err


def _header(fieldnames: Optional[Sequence[str]], path: Path) -> List[str]:
    """The header, stripped; missing, unknown or repeated columns are errors that name them."""
    if not fieldnames:
        raise EscoDataError(f"'{path}' is empty: expected the header {','.join(COLUMNS)} ({FORMAT_HINT}).")
    header = [name.strip() for name in fieldnames]
    missing = [name for name in REQUIRED if name not in header]
    unknown = [name for name in header if name not in COLUMNS]
    repeated = [name for name, n in Counter(header).items() if n > 1]
    if missing or unknown or repeated:
        problems = [f"lacks the column(s) {missing}" if missing else "",
                    f"has unknown column(s) {unknown}" if unknown else "",
                    f"repeats the column(s) {repeated}" if repeated else ""]
        raise EscoDataError(f"'{path}' line 1: the header {'; '.join(p for p in problems if p)}; found {header}, "
                            f"expected {','.join(COLUMNS)} ({FORMAT_HINT}).")
    return header


def _rows(path: Path) -> List[_Row]:
    """Every row, checked on its own: ids present and unique, labels present, list cells well formed."""
    reader = csv.reader(io.StringIO(_decode(path), newline=""), strict=True)
    rows: List[_Row] = []
    first_line: Dict[str, int] = {}
    try:
        names = _header(next(reader, None), path)
        line = reader.line_num + 1  # where the next row starts (a quoted cell may span lines)
        for cells in reader:
            start, line = line, reader.line_num + 1
            where = f"'{path}' line {start}"
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) > len(names):
                raise EscoDataError(f"{where}: {len(cells)} fields, the header has {len(names)} (an unquoted "
                                    "comma in a label? quote the cell).")
            row = _Row(start, {name: cell.strip() for name, cell in zip(names, cells)}, where)
            if not row.id:
                raise EscoDataError(f"{where}: empty id.")
            if row.id in first_line:
                raise EscoDataError(f"{where}: duplicate id '{row.id}' (first on line {first_line[row.id]}).")
            if not row.label:
                raise EscoDataError(f"{where}: empty preferred_label of '{row.id}'.")
            first_line[row.id] = row.line
            rows.append(row)
    except csv.Error as err:
        raise EscoDataError(f"'{path}' line {reader.line_num}: malformed CSV ({err}).") from err
    if not rows:
        raise EscoDataError(f"'{path}' has a header but no concepts.")
    return rows


def _check_hierarchy(rows: Sequence[_Row], path: Path) -> None:
    """Every broader id exists in the file, and following broader never returns to where it started."""
    by_id = {row.id: row for row in rows}
    for row in rows:
        for parent in row.broader:
            if parent not in by_id:
                raise EscoDataError(f"'{path}' line {row.line}: broader id '{parent}' of '{row.id}' is not an id "
                                    "of this file.")
    state: Dict[str, int] = {}  # 1: on the current path, 2: done (no cycle through it)
    for root in rows:
        if root.id in state:
            continue
        trail: List[str] = [root.id]
        stack = [iter(root.broader)]
        state[root.id] = 1
        while stack:
            parent = next(stack[-1], None)
            if parent is None:
                state[trail.pop()] = 2
                stack.pop()
            elif state.get(parent) == 1:
                cycle = trail[trail.index(parent):] + [parent]
                raise EscoDataError(f"'{path}' line {by_id[parent].line}: the broader ids form a cycle: "
                                    f"{' → '.join(cycle)}.")
            elif parent not in state:
                state[parent] = 1
                trail.append(parent)
                stack.append(iter(by_id[parent].broader))


def read_generic(path: Union[str, Path]) -> Taxonomy:
    """The taxonomy in a generic CSV file (module docstring), every row checked."""
    path = Path(path)
    if not path.is_file():
        raise EscoDataError(f"Taxonomy file '{path}' not found (or not a file).")
    rows = _rows(path)
    _check_hierarchy(rows, path)
    skills = [Skill(row.id, row.label, row.alt, (), row.description, row.type) for row in rows
              if row.type != GROUP_TYPE]
    if not skills:
        raise EscoDataError(f"'{path}': every row is of type '{GROUP_TYPE}': no concept to predict.")
    groups = {row.id: row.label for row in rows if row.type == GROUP_TYPE}
    broader = {row.id: row.broader for row in rows if row.broader}
    return Taxonomy(skills, broader, groups, name=path.stem, kind="generic")


def write_generic(taxonomy: Taxonomy, path: Union[str, Path]) -> Path:
    """Write ``taxonomy`` in the generic format: its skills in order, then its groups (type ``group``)."""
    path = Path(path)
    rows = [[skill.uri, skill.preferred_label, _join(skill.alt_labels, skill.uri), skill.description,
             _join(taxonomy.broader.get(skill.uri, ()), skill.uri), skill.skill_type]
            for skill in taxonomy.skills.values()]
    rows += [[uri, label, "", "", _join(taxonomy.broader.get(uri, ()), uri), GROUP_TYPE]
             for uri, label in taxonomy.group_labels.items()]
    clash = [row[0] for row in rows[: len(taxonomy.skills)] if row[5] == GROUP_TYPE]
    if clash:
        raise EscoDataError(f"skill(s) {clash[:3]} have the type '{GROUP_TYPE}', which the generic format keeps for "
                            "grouping concepts.")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return path


def _join(values: Sequence[str], concept: str) -> str:
    bad = [value for value in values if SEPARATOR in value]
    if bad:
        raise EscoDataError(f"'{concept}': {bad[0]!r} holds '{SEPARATOR}', the generic format's list separator.")
    return SEPARATOR.join(values)


def convert(source: PathOrPaths, output: Union[str, Path]) -> Taxonomy:
    """Any taxonomy (an ESCO export, or a generic CSV) written as a generic CSV to ``output``; returns it."""
    taxonomy = Taxonomy.load(source)
    write_generic(taxonomy, output)
    return taxonomy


def describe(taxonomy: Taxonomy) -> Dict[str, object]:
    """What a user checks before building a pipeline: sizes, shared labels, hierarchy and descriptions."""
    owners: Dict[str, set] = {}
    for skill in taxonomy.skills.values():
        for label in skill.labels:
            owners.setdefault(label.strip().lower(), set()).add(skill.uri)
    return {**taxonomy.record(),
            "labels": sum(len(skill.labels) for skill in taxonomy.skills.values()),
            "shared_labels": sum(len(uris) > 1 for uris in owners.values()),
            "with_broader": sum(uri in taxonomy.broader for uri in taxonomy.skills),
            "with_description": sum(bool(skill.description) for skill in taxonomy.skills.values()),
            "types": dict(Counter(skill.skill_type or "(none)" for skill in taxonomy.skills.values()))}
