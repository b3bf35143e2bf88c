"""Saving and loading a component's state the way spaCy's own components do: one table of named parts.

A component says once what its state is made of — ``serialization_parts()``, ``{name: Part}`` — and inherits
``to_bytes`` / ``from_bytes`` / ``to_disk`` / ``from_disk`` from ``Serializable``, which hand that table to
``spacy.util``'s functions of the same names. Why one table: the four methods cannot drift apart (a part saved to
disk but not to bytes was how ``nlp.to_bytes()`` lost the knowledge base), and ``exclude`` works by part name as in
spaCy — the name before its first dot, so ``exclude=["patterns"]`` leaves out ``patterns.msgpack``. A part's name
is also its file (or folder) in the component's folder: the table is the saved layout.

Loading from a folder checks that each part's file is there and raises ``IncompletePipelineError`` naming it.
"""

from __future__ import annotations

import gc
import io
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, Optional, TypeVar, Union

import numpy as np
import srsly
from spacy import util

from pipeline.errors import IncompletePipelineError

S = TypeVar("S", bound="Serializable")


def npy_bytes(array: np.ndarray) -> bytes:
    """The bytes ``np.save`` writes to a ``.npy`` file (so a part's file and its bytes are the same)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def read_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def folder_bytes(write: Callable[[Path], None], prefix: str) -> bytes:
    """What ``write(folder)`` puts in a folder, as msgpack of {relative file name: bytes}: a model that saves itself
    to files only (transformers' ``save_pretrained``) gets its bytes from the one way it writes itself."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        write(Path(tmp))
        return srsly.msgpack_dumps({str(f.relative_to(tmp)): f.read_bytes()
                                    for f in sorted(Path(tmp).rglob("*")) if f.is_file()})


def bytes_folder(data: bytes, prefix: str) -> Path:
    """A new temporary folder holding the files ``folder_bytes`` packed (the caller removes it when done)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    for name, content in srsly.msgpack_loads(data).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


@dataclass(frozen=True)
class Part:
    """One named piece of a component's state.

    ``dump`` / ``load``: the state to bytes and back (``load`` sets it on the component). On disk the part is a file
    of those bytes, unless ``write`` / ``read`` are given: a folder that a sub-object writes and reads itself (the
    knowledge base, the encoder's transformer files).
    """

    dump: Callable[[], bytes]
    load: Callable[[bytes], None]
    write: Optional[Callable[[Path], None]] = None
    read: Optional[Callable[[Path], None]] = None

    def write_to(self, path: Path) -> None:
        if self.write is not None:
            self.write(path)
        else:
            path.write_bytes(self.dump())

    def read_from(self, path: Path, owner: str) -> None:
        IncompletePipelineError.unless_exists(path, owner)
        if self.read is not None:
            self.read(path)
        else:
            self.load(path.read_bytes())


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off while a component loads its state, back as it was after.

    Why: loading builds ~100k long-lived objects (patterns, skills) and each few hundred allocations start a
    collection that walks all of them again — two thirds of the matcher's load time. Reference counting still frees
    everything; cycles made meanwhile are collected at the next collection after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Serializable:
    """spaCy's four serialization methods, from the component's ``serialization_parts()``."""

    name: str

    def serialization_parts(self) -> Dict[str, Part]:
        """{part name: Part}, in the order they are loaded (a part may need one before it)."""
        raise NotImplementedError

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        return util.to_bytes({key: part.dump for key, part in self.serialization_parts().items()}, exclude)

    def from_bytes(self: S, bytes_data: bytes, *, exclude: Iterable[str] = ()) -> S:
        with paused_gc():
            util.from_bytes(bytes_data, {key: part.load for key, part in self.serialization_parts().items()}, exclude)
        return self

    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = ()) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        util.to_disk(path, {key: part.write_to for key, part in self.serialization_parts().items()}, exclude)

    def from_disk(self: S, path: Union[str, Path], *, exclude: Iterable[str] = ()) -> S:
        readers = {key: (lambda p, part=part: part.read_from(p, f"component '{self.name}'"))
                   for key, part in self.serialization_parts().items()}
        with paused_gc():
            util.from_disk(path, readers, exclude)
        return self
