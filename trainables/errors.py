"""Errors that mean "the user asked for something that cannot be done", not a bug.

Command-line entry points print their message as one line on stderr and exit with 2.
"""

import math
import numbers
import reprlib


# Longest quoted value in a message: no input makes an error message large.
SHOWN_LIMIT = 200
_REPR = reprlib.Repr()
_REPR.maxlevel = 3
for _kind in ("maxtuple", "maxlist", "maxarray", "maxdict", "maxset", "maxfrozenset", "maxdeque"):
    setattr(_REPR, _kind, 8)
_REPR.maxstring = _REPR.maxother = SHOWN_LIMIT
_REPR.maxlong = 40


def printable(text) -> str:
    """`str(text)` with every non-printable character escaped as repr writes it (a newline
    reads \\n, an escape \\x1b): untrusted text shown on a terminal cannot recolour, retitle,
    hide or break its line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def one_line(text, limit: int = SHOWN_LIMIT, *, squash_space: bool = False) -> str:
    """`str(text)` as one `printable` line of at most `limit` characters, for an error
    message: cut, ending in "..." where cut. With `squash_space`, runs of whitespace
    (newlines included) first become one space: for prose such as an exception's text."""
    escaped = printable(" ".join(str(text).split()) if squash_space else text)
    return escaped if len(escaped) <= limit else escaped[:limit - 3] + "..."


def store_error(error: BaseException) -> str:
    """A database error in one line: its kind and the first line of its text (SQLAlchemy's
    add the statement and a link)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return one_line(f"{type(error).__name__}: {first}", squash_space=True)


def shown(value) -> str:
    """`repr(value)` for an error message (`one_line`). Cheap for any input: reprlib stops
    at a few levels and items, so a YAML alias bomb (a few hundred bytes that expand to
    gigabytes) is never expanded."""
    return one_line(_REPR.repr(value))


class ConfigError(ValueError):
    """A trial setting is unknown, malformed or out of range."""


def check_range(name: str, value, low=-math.inf, high=math.inf, *, low_open: bool = False,
                high_open: bool = False, integral: bool = False):
    """The one range check of the project's settings: `value` if it is a finite number
    (with `integral`, a whole one: an int, or a float without a fraction as YAML or JSON
    may write it) from `low` to `high`, each end included unless open. Returns it as an
    int with `integral`, else as a float; raises ConfigError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fits = False
    elif isinstance(value, numbers.Integral):  # math.isfinite(10**400) would overflow
        fits = True
    else:
        fits = math.isfinite(value) and (not integral or float(value).is_integer())
    fits = fits and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not fits:
        bounds = range_text(low, high, low_open, high_open)
        kind = ("a whole number" if integral else "a finite number") + (f" {bounds}" if bounds else "")
        raise ConfigError(f"{name} must be {kind}, got {shown(value)}")
    return int(value) if integral else float(value)


def range_text(low=-math.inf, high=math.inf, low_open: bool = False, high_open: bool = False) -> str:
    """A range as messages and help texts write it: "in [0, 1)", ">= 1", "< 5", or ""
    for no bound."""
    if low == -math.inf and high == math.inf:
        return ""
    if high == math.inf:
        return f"{'>' if low_open else '>='} {low}"
    if low == -math.inf:
        return f"{'<' if high_open else '<='} {high}"
    return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


class DataUnavailableError(RuntimeError):
    """A data set is not on disk and could not be downloaded."""
