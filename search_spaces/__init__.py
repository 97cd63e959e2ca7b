"""Search spaces: named sweeps as data (no training logic, no Ray or Optuna).

    from search_spaces import get_space
    space = get_space("compare_c10").with_overrides(max_epochs=50)
    space.distributions_for("zsharp")   # {"lr": Distribution("loguniform", 1e-4, 1e-2), "rho": ..., ...}
    space.base_config("zsharp")         # the fixed part of each zsharp trial's TrialConfig dict

`get_space` also takes the path of a YAML file with the fields of `SearchSpace.to_dict()`;
the built-in spaces are in `search_spaces/builtin.py`.
"""

from search_spaces.files import load_space_file, space_yaml
from search_spaces.registry import get_space, list_spaces, register_space
from search_spaces.space import Distribution, SearchSpace, SpaceError
from search_spaces import builtin  # noqa: F401  (registers the built-in spaces)

__all__ = [
    "Distribution",
    "SearchSpace",
    "SpaceError",
    "get_space",
    "list_spaces",
    "load_space_file",
    "space_yaml",
    "register_space",
]
