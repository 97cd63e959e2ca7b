"""Errors that mean "the user asked for something that cannot be done", not a bug.

Command-line entry points print their message as one line on stderr and exit with 2.
"""


class ConfigError(ValueError):
    """A trial setting is unknown, malformed or out of range."""


class DataUnavailableError(RuntimeError):
    """A data set is not on disk and could not be downloaded."""
