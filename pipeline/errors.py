"""Error types. Library code raises these; only the CLI turns them into a message and an exit code."""


class EscoDataError(ValueError):
    """An ESCO export (or another input file) is missing, empty or malformed.

    The message always names the file and, where known, the line or column at fault.
    """


class ConfigError(ValueError):
    """A training or component setting is out of range; the message names the config key."""


class ModelNotFoundError(FileNotFoundError):
    """No local weights were found for an encoder name; the message lists where we looked."""
