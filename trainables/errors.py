"""Errors that mean "the user asked for something that cannot be done", not a bug.

Command-line entry points print their message as one line on stderr and exit with 2.
"""

import argparse
import reprlib


# Longest quoted value in a message: no input makes an error message large.
SHOWN_LIMIT = 200
_REPR = reprlib.Repr()
_REPR.maxlevel = 3
for _kind in ("maxtuple", "maxlist", "maxarray", "maxdict", "maxset", "maxfrozenset", "maxdeque"):
    setattr(_REPR, _kind, 8)
_REPR.maxstring = _REPR.maxother = SHOWN_LIMIT
_REPR.maxlong = 40


def shown(value) -> str:
    """`repr(value)` for an error message, at most SHOWN_LIMIT characters, control
    characters escaped. Cheap for any input: reprlib stops at a few levels and items, so a
    YAML alias bomb (a few hundred bytes that expand to gigabytes) is never expanded."""
    text = _REPR.repr(value)
    return text if len(text) <= SHOWN_LIMIT else text[:SHOWN_LIMIT - 3] + "..."


class ConfigError(ValueError):
    """A trial setting is unknown, malformed or out of range."""


class DataUnavailableError(RuntimeError):
    """A data set is not on disk and could not be downloaded."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """Bad flags: one line on stderr and exit 2 (argparse's default adds a usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")
