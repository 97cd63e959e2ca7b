"""Shared fixtures: one real digits sweep (search and confirm stage), run once per session.

Several test modules read it (the sweep's MLflow and Ray records, the analysis report),
so the most expensive thing the suite does happens once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


def space_file(folder: Path, **changes) -> str:
    """A small digits space as a YAML file, the format users write."""
    space = {
        "name": "digits_test", "description": "small digits sweep for tests",
        "dataset": "digits", "model": "res20s", "optimizers": ["adam", "zsharp"],
        "fixed": {"batch_size": 128, "warmup_epochs": 1, "schedule": "cosine"},
        "search": {"lr": {"loguniform": [1e-3, 1e-2]}, "rho": {"uniform": [0.01, 0.1]},
                   "alpha": {"uniform": [0.8, 0.95]}},
        "search_per_optimizer": {},
        "max_epochs": 3, "grace_period": 1, "reduction_factor": 4, "trials_per_optimizer": 4,
        "max_concurrent": 2, "cpus_per_trial": 1, "gpus_per_trial": 0, "seed": 0,
    }
    space.update(changes)
    path = folder / f"{space['name']}.yaml"
    path.write_text(yaml.safe_dump(space))
    return str(path)


def launch(*args, timeout=900) -> subprocess.CompletedProcess:
    """`python launch.py ARGS` as a user runs it."""
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


@dataclass(frozen=True)
class SweepRun:
    folder: Path
    storage: Path
    space: str
    done: subprocess.CompletedProcess
    experiment: str = "digits_test"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.storage / 'mlflow.db'}"


# The shared sweep: adam, sam and zsharp searched, plus sgd at an absurd learning rate
# (every sgd trial diverges); then the best config of each re-run with 2 seeds.
SHARED_SWEEP = dict(
    optimizers=["adam", "sam", "zsharp", "sgd"], trials_per_optimizer=3,
    fixed={"batch_size": 128, "warmup_epochs": 1, "schedule": "cosine", "momentum": 0.9},
    search_per_optimizer={"sgd": {"lr": {"choice": [1.0e12]}}},
    confirm_top_k=1, confirm_seeds=2)


@pytest.fixture(scope="session")
def digits_sweep(tmp_path_factory) -> SweepRun:
    folder = tmp_path_factory.mktemp("digits_sweep")
    storage = folder / "results"
    space = space_file(folder, **SHARED_SWEEP)
    return SweepRun(folder, storage, space, launch("--space", space, "--storage", str(storage)))
