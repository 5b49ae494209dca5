"""Errors deqfl raises for bad input: each says what was wrong, where, and what to do.

The CLI prints them as one clear message (no traceback) and exits with status 2.
"""


class DeqflError(Exception):
    """Base class of every user-facing deqfl error."""


class ConfigError(DeqflError):
    """An experiment config (TOML file or --set override) is invalid."""


class DataError(DeqflError):
    """A data source is missing, corrupt, or cannot be partitioned as asked."""


class ClientFailure(Exception):
    """A failure a client is allowed to have (an injected crash, an upload that cannot be
    decoded or read, a timeout): the round lists the client under `rejected` and goes on.
    Any other exception in a round is a bug and stops the run."""


class RunFailed(DeqflError):
    """A run stopped on an unexpected error (a bug, not bad input or a client failure);
    what it had done up to its last checkpoint is kept."""
