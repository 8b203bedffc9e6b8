"""The base of every error Parley raises on purpose, and the few kinds callers tell apart.

Each module keeps its own specific class (BackupError, SearchQueryError, LlmError, ...) so a message says
where it came from, but every one of them derives from ParleyError and, where it fits, from one of the
kinds below, so a caller can catch a kind without knowing every module:

- InvalidInput: what a user or operator gave cannot be used (also a ValueError);
- NotFound: what was named does not exist (also a LookupError);
- Conflict: the request is valid but contradicts what is stored or running now;
- Unavailable: something needed is missing or busy right now; trying later may work (also a RuntimeError);
- Canceled: work stopped because someone asked it to (one spelling: Canceled, as the APIs write it).

The web tier answers them with 400, 404, 409 and 503 (web/errors.py), with the error's own message.
"""
from __future__ import annotations


class ParleyError(Exception):
    """Base of Parley's own errors."""


class InvalidInput(ParleyError, ValueError):
    """What a user or operator gave cannot be used; the message names the problem."""


class NotFound(ParleyError, LookupError):
    """What was named (a session, a job, a model) does not exist."""


class Conflict(ParleyError):
    """The request is valid, but contradicts what is stored or running now (a duplicate, a busy session)."""


class Unavailable(ParleyError, RuntimeError):
    """Something the work needs is missing or busy right now (a model, a server, a lock)."""


class Canceled(ParleyError):
    """Work stopped because someone asked it to; what was done so far may be kept."""
