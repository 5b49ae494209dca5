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
    """A failure a client is allowed to have: it becomes a rejection, and the round goes on.

    Only these are declared: an injected crash (`deqfl.fl.faults.ClientCrash`), a payload
    that does not decode (`deqfl.fl.transport.PayloadError`), a reply the server cannot read
    (`deqfl.fl.reply.ReplyError`). Any other exception inside a client is a programming
    error and stops the run (`UnexpectedClientError`, then `RunFailed`).
    """


class UnexpectedClientError(RuntimeError):
    """A client raised an exception that is not a `ClientFailure`: a programming error.

    The engine stops the round with it (in-process, or re-raised in the parent from a
    worker process); the message names the client and round and carries the traceback.
    """

    def __init__(self, client_id: int, round_number: int, details: str) -> None:
        super().__init__(
            f"client {client_id} failed in round {round_number} with an unexpected error (a bug, not a "
            f"declared client failure), so the run stops:\n{details}"
        )
        self.client_id = client_id
        self.round_number = round_number
        lines = [line for line in details.strip().splitlines() if line.strip()]
        self.summary = f"client {client_id}: {lines[-1].strip() if lines else 'no details'}"
        """The client and the exception's last line, e.g. "client 3: RuntimeError: ..."."""


class RunFailed(DeqflError):
    """A run stopped on an unexpected error (a bug, not bad input or a client failure);
    what it had done up to its last checkpoint is kept."""
