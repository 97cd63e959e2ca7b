"""What the command lines share (launch.py, `python -m trainables.train`,
`python -m analysis.report`): bad flags end in one line on stderr and exit 2.

Standard library only, so every package may import it without pulling anything in.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

__all__ = ["OneLineArgumentParser", "from_here", "python_command", "quiet_libraries"]


class OneLineArgumentParser(argparse.ArgumentParser):
    """Bad flags: one line on stderr and exit 2 (argparse's default adds a usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def quiet_libraries() -> None:
    """MLflow's and its migrations' INFO lines off the console ("Creating initial MLflow
    database tables..."): a command says what it does itself, and bad input stays one line.
    Before or after MLflow is imported (it sets its level from MLFLOW_LOGGING_LEVEL then);
    a level the user set stays."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    level = logging.getLevelName(os.environ["MLFLOW_LOGGING_LEVEL"].upper())
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(level if isinstance(level, int) else logging.WARNING)


def python_command(*args: str) -> list[str]:
    """A command line of this Python (a virtualenv's is not on PATH, and a bare `python`
    may be another), that runs as printed from the current folder: paths inside it are
    relative, others absolute."""
    return [from_here(sys.executable), *args]


def from_here(path: str) -> str:
    """`path` as the current folder reaches it: relative inside it, else absolute."""
    relative = os.path.relpath(path)
    return relative if not relative.startswith(os.pardir) else os.path.abspath(path)
