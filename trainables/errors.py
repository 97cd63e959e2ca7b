"""Errors that mean "the user asked for something that cannot be done", not a bug.

Command-line entry points print their message as one line on stderr and exit with 2.
"""

import argparse


class ConfigError(ValueError):
    """A trial setting is unknown, malformed or out of range."""


class DataUnavailableError(RuntimeError):
    """A data set is not on disk and could not be downloaded."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """Bad flags: one line on stderr and exit 2 (argparse's default adds a usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")
