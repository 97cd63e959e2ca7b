"""Errors that mean "the user asked for something that cannot be done", not a bug.

Command-line entry points print their message as one line on stderr and exit with 2.
"""

import reprlib


# Longest quoted value in a message: no input makes an error message large.
SHOWN_LIMIT = 200
_REPR = reprlib.Repr()
_REPR.maxlevel = 3
for _kind in ("maxtuple", "maxlist", "maxarray", "maxdict", "maxset", "maxfrozenset", "maxdeque"):
    setattr(_REPR, _kind, 8)
_REPR.maxstring = _REPR.maxother = SHOWN_LIMIT
_REPR.maxlong = 40


def one_line(text, limit: int = SHOWN_LIMIT) -> str:
    """`str(text)` as one printable line of at most `limit` characters, for an error
    message: every non-printable character escaped as repr writes it (a newline reads \\n,
    an escape \\x1b, so untrusted text cannot break the line or drive the terminal), then
    cut, ending in "..." where cut."""
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return escaped if len(escaped) <= limit else escaped[:limit - 3] + "..."


def shown(value) -> str:
    """`repr(value)` for an error message (`one_line`). Cheap for any input: reprlib stops
    at a few levels and items, so a YAML alias bomb (a few hundred bytes that expand to
    gigabytes) is never expanded."""
    return one_line(_REPR.repr(value))


class ConfigError(ValueError):
    """A trial setting is unknown, malformed or out of range."""


class DataUnavailableError(RuntimeError):
    """A data set is not on disk and could not be downloaded."""
