"""What the command lines share (launch.py, `python -m trainables.train`,
`python -m analysis.report`): bad flags end in one line on stderr and exit 2.

Standard library only, so every package may import it without pulling anything in.
"""

from __future__ import annotations

import argparse

__all__ = ["OneLineArgumentParser"]


class OneLineArgumentParser(argparse.ArgumentParser):
    """Bad flags: one line on stderr and exit 2 (argparse's default adds a usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")
