"""Values read from a results folder or an artifact, which are untrusted (ARCHITECTURE.md,
Trust): plain JSON only, never unpickled; text bounded; a value of the wrong shape
is no value."""

from __future__ import annotations

import json
import math
from pathlib import Path

from trainables.errors import one_line
from trainables.schema import decode_correct

# The largest artifact read back (a record of 2^20 test examples is 175 kB).
MAX_ARTIFACT_BYTES = 1 << 20


def parse_json(text: str):
    """json.loads for untrusted text: ValueError for anything that is not JSON, deep
    nesting included (on which json raises RecursionError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_text(path: Path) -> str:
    """A file's text as UTF-8 (ValueError naming the file if it is not)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{one_line(path)} is not UTF-8 text") from None


def read_json(path: Path):
    """A JSON file's value (ValueError naming the file, in one line, if it is not JSON)."""
    text = read_text(path)
    try:
        return parse_json(text)
    except ValueError as error:
        raise ValueError(f"{one_line(path)} is not valid JSON: {error}") from None


def json_object(text) -> dict:
    """The JSON object `text` holds; {} for anything else (not a string, not JSON, not an
    object): untrusted data of the wrong shape is ignored."""
    if not isinstance(text, str):
        return {}
    try:
        found = parse_json(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def file_text(path: Path) -> str | None:
    """A file's UTF-8 text if it is at most MAX_ARTIFACT_BYTES, else (or unreadable) None."""
    try:
        return read_text(path) if path.stat().st_size <= MAX_ARTIFACT_BYTES else None
    except (OSError, ValueError):
        return None


def number(value) -> float | None:
    """A JSON number (or bool) as a float; None for anything else, and for an integer
    beyond any float."""
    if not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


MAX_PROFILE = 1000  # points of a loss profile read from untrusted storage


def profile(pairs) -> tuple[tuple[float, float], ...] | None:
    """A loss profile, [[t, loss], ...] of finite numbers (at most MAX_PROFILE), as a
    tuple of pairs; None for anything else."""
    if not isinstance(pairs, list) or not 0 < len(pairs) <= MAX_PROFILE:
        return None
    points = [tuple(map(number, p)) if isinstance(p, list) and len(p) == 2 else (None,) for p in pairs]
    if not all(len(p) == 2 and None not in p and all(map(math.isfinite, p)) for p in points):
        return None
    return tuple(points)


def text(value) -> str | None:
    """A JSON string; None for anything else."""
    return value if isinstance(value, str) else None


def test_correct(text: str | None, accuracy: float):
    """Which test examples a run got right (trainables.schema.decode_correct: untrusted
    text), or None where there is no record, it is malformed, or it disagrees with the
    run's final test accuracy (then it is not this run's)."""
    correct = decode_correct(text)
    if correct is None or not math.isclose(correct.mean(), accuracy, abs_tol=1e-6):
        return None
    return correct


# The fields read from a result.json line, each through the reader of its type (anything
# else, Ray's date, pid, hostname, config..., is not needed).
