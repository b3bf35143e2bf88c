"""Error types. Library code raises these; only the CLI turns them into a message and an exit code.

One class per kind of failure, whichever module detects it, all under ``EscoSkillsError`` so that a caller can
catch the project's errors in one place. Each also derives from the built-in type a caller would expect
(``ValueError`` for bad values, ``FileNotFoundError`` for missing files, ``RuntimeError`` for misuse,
``ImportError`` for a missing package).
"""

from pathlib import Path


class EscoSkillsError(Exception):
    """Base class of every error this package raises on purpose."""


class EscoDataError(EscoSkillsError, ValueError):
    """An input file (ESCO export, job ads, benchmark, corpus) is missing, empty or malformed.

    The message always names the file and, where known, the line or column at fault.
    """


class ConfigError(EscoSkillsError, ValueError):
    """A training, component or command setting is out of range; the message names the config key."""


class ModelNotFoundError(EscoSkillsError, FileNotFoundError):
    """No local weights or pipeline were found for a name; the message lists where we looked."""


class IncompletePipelineError(EscoSkillsError, FileNotFoundError):
    """A saved pipeline folder lacks a file one of its components needs; the message names the file."""

    @classmethod
    def unless_exists(cls, path: Path, owner: str) -> Path:
        """``path``, or this error naming it: a saved pipeline folder lacks what ``owner`` (words) needs."""
        if not path.exists():
            raise cls(f"'{path}' is missing: the pipeline folder is incomplete ({owner} needs it; copy the whole "
                      "folder).")
        return path


class NotInitializedError(EscoSkillsError, RuntimeError):
    """A component was used or saved before ``nlp.initialize()`` gave it its data."""


class OnnxExportError(EscoSkillsError, RuntimeError):
    """The float encoder could not be exported to ONNX, or the export does not reproduce it."""


class MissingDependencyError(EscoSkillsError, ImportError):
    """A package (or a data package's table) that this step needs is not installed; the message says what to
    install."""
