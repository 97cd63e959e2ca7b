"""The structure the design rests on: data flows one way between the top-level packages,
and the optimizer registry is the one place an optimizer is described (a new SAM variant
registered from outside the project runs a trial and plans a sweep)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGES = ("commandline", "trainables", "search_spaces", "tune", "analysis", "benchmarks", "launch")
# What each package may not import, whatever the depth (function-level imports count).
FORBIDDEN = {
    "commandline": ("trainables", "search_spaces", "tune", "analysis", "torch", "ray", "optuna", "mlflow"),
    "trainables": ("ray", "optuna", "mlflow", "search_spaces", "tune", "analysis"),
    "search_spaces": ("ray", "optuna", "mlflow", "tune", "analysis"),
    "analysis": ("ray", "tune"),  # optuna is fine: its fANOVA ranks the hyperparameters
}


def _sources(package: str) -> list[Path]:
    if package == "launch":
        return [ROOT / "launch.py"]
    return sorted((ROOT / package).rglob("*.py"))


def _imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (absolute imports; the project has no
    relative ones)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _import_graph() -> dict[str, set[str]]:
    """Top-level package -> the other top-level packages and libraries it imports."""
    return {package: {m.split(".")[0] for path in _sources(package) for m in _imported_modules(path)}
            - {package} for package in PACKAGES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle among the project's packages, or None (depth-first search)."""
    def visit(node, path):
        for nxt in sorted(graph.get(node, set()) & set(PACKAGES)):
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            found = visit(nxt, path + [nxt])
            if found:
                return found
        return None
    return next((c for c in (visit(p, [p]) for p in PACKAGES) if c), None)


def test_no_import_cycle_between_the_packages():
    graph = _import_graph()
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"
    assert "tune" in graph["launch"] and "trainables" in graph["tune"]  # the walk sees imports


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_data_flows_one_way(package):
    imported = _import_graph()[package]
    assert not imported & set(FORBIDDEN[package]), f"{package} imports {imported & set(FORBIDDEN[package])}"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"tune": {"analysis"}, "analysis": {"tune"}}) in (
        ["tune", "analysis", "tune"], ["analysis", "tune", "analysis"])


# A new SAM variant, declared and registered as a user would in their own code: one class
# and one registration, with a float, an int and a bool knob. e = +-shrink^power * rho *
# g / ||g|| (SAM's ascent, shrunk; negated with flip), so the trial's perturbation_norm must
# be shrink^power * rho exactly.
_VARIANT = '''
import json, math, sys
import torch
from trainables.hparams import HParam
from trainables.catalog import RHO, OptimizerInfo, register_optimizer
from trainables.optim import SAM


class ShrunkSAM(SAM):
    """SAM with its ascent shrunk by `shrink` `power` times, and negated with `flip` (its
    own hyperparameters: the registry's)."""

    def _perturbations(self, groups):
        return [torch._foreach_mul(e, (-1 if group["flip"] else 1) * group["shrink"] ** group["power"]) if e else []
                for e, (group, _, _) in zip(super()._perturbations(groups), groups)]


register_optimizer(OptimizerInfo(
    "shrunk_sam", "SAM with a shrunk ascent", 2, ShrunkSAM,
    (RHO, HParam("shrink", 0.5, 0, 1, low_open=True, search={"uniform": [0.1, 1.0]},
                 label="ascent shrink factor"),
     HParam("power", 1, 1, 4, kind="int", label="times shrunk"),
     HParam("flip", False, kind="bool", label="descend instead")), label="Shrunk SAM"))

import launch
from analysis.plotstyle import log_scaled
from analysis.text import label, param_label
from trainables.config import TrialConfig
from trainables.errors import ConfigError
from trainables.train import run_trial

config = TrialConfig(dataset="digits", data_dir=sys.argv[1], optimizer="shrunk_sam", rho=0.05,
                     shrink=0.3, power=2, flip=True, epochs=1, batch_size=128, warmup_epochs=0, device="cpu")
result = run_trial(config)
refused = []
for bad in ({"shrink": 0.0}, {"power": 1.5}, {"power": 5}, {"flip": 1}):
    try:
        TrialConfig(optimizer="shrunk_sam", **bad)
        refused.append("")
    except ConfigError as error:
        refused.append(str(error))
print(json.dumps({"metrics": result.metrics, "refused": refused,
                  "params": sorted(config.to_dict()),
                  "shown": [label("shrunk_sam"), param_label("shrink"), log_scaled("shrink")]}))
sys.stdout.flush()
sys.exit(launch.main(["--space", sys.argv[2], "--dry-run"]))
'''


_LIGHT = """
import importlib, sys
try:
    code = importlib.import_module(sys.argv[1]).main(sys.argv[2:])
except SystemExit as done:  # --help
    code = done.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "torchvision", "ray", "mlflow", "optuna"})
print(code, heavy)
"""


@pytest.mark.parametrize("argv", [["launch", "--help"], ["launch", "--list-spaces"],
                                  ["launch", "--space", "compare_c100", "--dry-run"],
                                  ["analysis.report", "--help"]])
def test_commands_that_only_look_import_no_torch_ray_mlflow_or_optuna(argv):
    # Those cost 2-5 s to import; the registries (trainables.catalog) name the code behind
    # their entries instead of importing it. Times: benchmarks/command_times.py.
    done = subprocess.run([sys.executable, "-c", _LIGHT, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.splitlines()[-1] == "0 []", done.stdout[-2000:] + done.stderr[-2000:]


def test_a_new_sam_variant_with_float_int_and_bool_knobs_needs_one_class_and_one_registration(tmp_path):
    from conftest import space_file

    space = space_file(tmp_path, name="shrunk", optimizers=["adam", "shrunk_sam"],
                       search={"lr": {"loguniform": [1e-3, 1e-2]},
                               "shrink": {"uniform": [0.1, 1.0]}, "power": {"int": [1, 3]}})
    script = tmp_path / "variant.py"
    script.write_text(_VARIANT)
    done = subprocess.run([sys.executable, str(script), str(ROOT / "data"), space], cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    first, plan = done.stdout.split("\n", 1)
    trial = json.loads(first)
    assert trial["metrics"]["epoch"] == 1 and trial["metrics"]["val_acc"] > 0.1
    assert trial["metrics"]["perturbation_norm"] == pytest.approx(0.3 ** 2 * 0.05, rel=1e-4)
    assert trial["refused"] == ["shrink must be a finite number in (0, 1], got 0.0",
                                "power must be a whole number in [1, 4], got 1.5",
                                "power must be a whole number in [1, 4], got 5",
                                "flip must be true or false, got 1"]
    assert {"shrink", "power", "flip"} <= set(trial["params"])  # trial settings, logged to MLflow with the rest
    # The report names it and scales its axis from the registration (uniform: linear).
    assert trial["shown"] == ["Shrunk SAM", "ascent shrink factor", False]
    lines = {line.split()[0]: line for line in plan.splitlines() if line.startswith("  ")}
    assert "shrink uniform [0.1, 1]" in lines["shrunk_sam"] and "power int [1, 3]" in lines["shrunk_sam"]
    assert "shrink" not in lines["adam"]  # only the optimizer that takes it is searched over it


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_graph() -> dict[str, set[str]]:
    """Each project module -> the project modules it imports (at any depth; `from a import b`
    counts a.b where b is a module)."""
    paths = {_module_name(p): p for package in PACKAGES for p in _sources(package)}
    graph = {}
    for name, path in paths.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in paths}
            elif isinstance(node, ast.ImportFrom) and node.module in paths and node.level == 0:
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in paths else node.module
                          for a in node.names}
        graph[name] = found - {name}
    return graph


def test_no_two_modules_import_each_other():
    """Module by module, not only package by package: no import cycle at all."""
    graph = _module_graph()
    assert graph["tune.running"] >= {"tune.preflight", "tune.stages", "tune.closing"}  # the walk sees them
    assert graph["tune.sweep"] >= {"tune.early", "tune.running"}  # function-level imports too
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [module])):
            pytest.fail(f"import cycle: {' -> '.join(cycle)}")


def test_the_readme_layout_names_every_module():
    """The README's layout table lists every module of the packages (a new one is documented)."""
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):].split("\n## ", 1)[0]
    missing = [str(path.relative_to(ROOT)) for package in ("trainables", "tune", "analysis", "search_spaces",
                                                           "benchmarks")
               for path in sorted((ROOT / package).rglob("*.py")) + sorted((ROOT / package).glob("*.sh"))
               if path.name != "__init__.py" and f"`{path.relative_to(ROOT / package).as_posix()}`" not in layout
               and f"`{path.name}`" not in layout]
    assert not missing, f"not in the README's layout: {missing}"
    assert len((ROOT / "ARCHITECTURE.md").read_text().splitlines()) <= 40
