"""Search spaces by name (timm style), or by the path of a YAML file.

A registered entry is a `SearchSpace`, or a function that builds one; either way
`get_space` returns a fresh, validated copy, so a caller may change its dicts freely.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable

from search_spaces.files import load_space_file
from search_spaces.space import SearchSpace, SpaceError
from trainables.errors import shown

_SPACES: dict[str, Callable[[], SearchSpace]] = {}


def register_space(space_or_factory, name: str | None = None):
    """Register a SearchSpace, or a function returning one, under `name` (default: the
    space's name, or the function's). Returns its argument, so it works as a decorator.

    A factory runs at each `get_space`; registering a name twice raises ValueError.
    """
    if isinstance(space_or_factory, SearchSpace):
        factory = functools.partial(dataclasses.replace, space_or_factory)  # copies its dicts
        name = name or space_or_factory.name
    else:
        factory = space_or_factory
        name = name or space_or_factory.__name__
    if name in _SPACES:
        raise ValueError(f"search space {shown(name)} is registered twice")
    _SPACES[name] = factory
    return space_or_factory


def list_spaces() -> list[str]:
    """Registered space names, sorted."""
    return sorted(_SPACES)


def get_space(name_or_path: str | os.PathLike) -> SearchSpace:
    """A registered space by name, or the space in a YAML file (.yaml/.yml, or any
    existing file). SpaceError for an unknown name (listing the names) or a bad file."""
    key = os.fspath(name_or_path)
    if key in _SPACES:
        space = _SPACES[key]()
        if space.name != key:
            raise ValueError(f"search space registered as {shown(key)} is named {shown(space.name)}")
        return space
    if key.endswith((".yaml", ".yml")) or os.path.exists(key):
        return load_space_file(key)
    raise SpaceError(f"unknown search space {shown(key)}; choose from {', '.join(list_spaces())}, "
                     f"or give the path of a .yaml file")
