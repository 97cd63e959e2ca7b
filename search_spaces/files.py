"""Search spaces from YAML files, with the fields of `SearchSpace.to_dict()`.

The loader is PyYAML's safe loader with two fixes for hand-written files: `1e-4` is a
float (YAML 1.1 reads a number without a dot as a string; YAML 1.2 and JSON do not), and
a key given twice in one mapping is an error instead of silently keeping the last value.
A file is untrusted: only a regular file of at most MAX_BYTES is read (a FIFO would block,
/dev/zero never end), and nesting too deep for the parser or a number too long for Python
is a one-line error like any other.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import yaml

from search_spaces.space import SearchSpace, SpaceError
from trainables.errors import one_line, shown

_MERGE = "tag:yaml.org,2002:merge"
MAX_BYTES = 1_000_000  # a space is a page of YAML; a bigger file is a mistake (or an attack)


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads 1e-4 as a float and rejects repeated keys."""

    def construct_mapping(self, node, deep=False):
        # Keys brought in by a `<<` merge may be overridden; keys written twice may not.
        seen = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE:
                if key.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {shown(key.value)} given twice", key.start_mark)
                seen.add(key.value)
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."))


def _parse(text: str, where: str):
    """YAML text as data; a syntax error becomes a one-line SpaceError with its position."""
    try:
        return yaml.load(text, Loader=_Loader)
    except RecursionError:
        raise SpaceError(f"{where}: not a search space: nested too deeply") from None
    except ValueError as err:  # an integer past Python's 4300-digit limit, a date like 2026-13-01
        reason = str(err).split(";")[0]  # not the advice to raise Python's limit
        raise SpaceError(f"{where}: a value cannot be read: {one_line(reason, squash_space=True)}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise SpaceError(f"{where}: not valid YAML{at}: {problem}") from None


def space_yaml(space: SearchSpace) -> str:
    """`space` as a YAML file holds it, fields in their order, that `load_space_file` reads
    back equal; a comment line first says where it came from."""
    body = yaml.safe_dump(space.to_dict(), sort_keys=False, default_flow_style=None, width=100)
    return (f"# search space {space.name!r} (launch.py --show-space {space.name}): save it, "
            "edit it, run it with launch.py --space FILE\n" + body)


def load_space_file(path: str | os.PathLike) -> SearchSpace:
    """The search space in a YAML (or JSON) file; SpaceError naming the path if the file is
    missing or unreadable, is not valid YAML, does not hold a mapping or holds a bad space."""
    where = one_line(os.fspath(path))
    try:
        text = _read_small_file(Path(path), where).decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise SpaceError(f"{where}: cannot read search space file: {one_line(reason)}") from None
    return SearchSpace.from_dict(_parse(text, where), where)


def _read_small_file(path: Path, where: str) -> bytes:
    """The bytes of `path` if it is a regular file of at most MAX_BYTES (checked before it
    is opened, and again while reading: it may grow); else a one-line SpaceError."""
    if not stat.S_ISREG(path.stat().st_mode):
        raise SpaceError(f"{where}: not a regular file (a search space is a YAML file)")
    with path.open("rb") as file:
        data = file.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise SpaceError(f"{where}: larger than {MAX_BYTES // 1_000_000} MB: not a search space file")
    return data
