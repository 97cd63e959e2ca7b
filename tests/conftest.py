"""Shared fixtures: one real digits sweep (search and confirm stage), run once per session.

Several test modules read it (the sweep's MLflow and Ray records, the notebooks), so one
of the most expensive things the suite does happens once.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml
from filelock import FileLock

# One torch thread per test process (before torch is imported here or in a subprocess):
# pytest-xdist runs a test per core already, and two threads per process on 2 cores spin
# against each other (test_train and test_optim took 112 s with 2, 83 s with 1, at half the
# CPU time). A sweep's trials set their own threads from their CPUs (tune.trainable).
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
# The servers tests start (mlflow server, mlflow ui) send no telemetry either (tune/__init__.py).
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


# Each SAM variant's published defaults, from its paper: Foret et al. 2021, Kwon et al.
# 2021 (ASAM's rho is 10x SAM's: its ascent is scaled by |w|), Li et al. 2024, the ZSharp seed.
PUBLISHED = {"sam": {"rho": 0.05}, "asam": {"rho": 0.5, "eta": 0.01},
             "fsam": {"rho": 0.05, "sigma": 1.0, "lmbda": 0.9}, "zsharp": {"rho": 0.05, "alpha": 0.95}}

# A digits trial that trains in seconds on a CPU: what unit tests run.
DIGITS_TRIAL = dict(dataset="digits", model="res20s", batch_size=128, warmup_epochs=1, lr=3e-3)

# Confirm runs' diagnostics as the quickstart sets them: quick, so tests stay quick.
QUICK_FLATNESS = {"flatness_probes": 3, "flatness_lanczos_steps": 6, "flatness_ascent_steps": 1}


def run_module(module: str, *args, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m module args...` as a user runs it (from the project folder unless `cwd`)."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd or ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def space_file(folder: Path, **changes) -> str:
    """A small digits space as a YAML file, the format users write."""
    space = {
        "name": "digits_test", "description": "small digits sweep for tests",
        "dataset": "digits", "model": "res8s", "optimizers": ["adam", "zsharp"],  # res8s: 8x res20s's speed
        "fixed": {"batch_size": 128, "warmup_epochs": 1, "schedule": "cosine", **QUICK_FLATNESS},
        "search": {"lr": {"loguniform": [1e-3, 1e-2]}, "rho": {"uniform": [0.01, 0.1]},
                   "alpha": {"uniform": [0.8, 0.95]}},
        "search_per_optimizer": {},
        "max_epochs": 3, "grace_period": 1, "reduction_factor": 4, "trials_per_optimizer": 4,
        "max_concurrent": 2, "cpus_per_trial": 1, "gpus_per_trial": 0, "seed": 0,
        "flatness_images": 32,  # confirm runs' diagnostics: small, so tests stay quick
    }
    space.update(changes)
    path = folder / f"{space['name']}.yaml"
    path.write_text(yaml.safe_dump(space))
    return str(path)


def kill_processes(processes: list[psutil.Process]) -> None:
    """SIGKILL each process (by pid; the ones already gone are skipped) and reap them."""
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=15)


def session_processes(session_id: int) -> list[psutil.Process]:
    """The live processes of a session (a driver's and its local Ray's)."""
    found = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session_id and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            pass
    return found


def stop_session(session_id: int) -> None:
    """SIGKILL every process of a session (what a driver's local Ray left), by pid."""
    kill_processes(session_processes(session_id))


def launch(*args, timeout=900) -> subprocess.CompletedProcess:
    """`python launch.py ARGS` as a user runs it, in its own session: whatever its Ray
    leaves running afterwards is stopped with it."""
    return run_printed([sys.executable, str(ROOT / "launch.py"), *args], timeout=timeout)


def run_printed(command: list[str], timeout=900, **env) -> subprocess.CompletedProcess:
    """`command` run as a user runs a command the tool printed (from the project folder,
    in its own session, stopped with whatever it leaves running; `env` added to ENV)."""
    process = subprocess.Popen(command, cwd=ROOT, env={**ENV, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
        stop_session(process.pid)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


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
# (every sgd trial diverges), in 2 replicates; Adam's lr searched again at 2x epochs in
# each; then the best config of each replicate re-run with 2 seeds.
SHARED_SWEEP = dict(
    optimizers=["adam", "sam", "zsharp", "sgd"], trials_per_optimizer=3, replicates=2,
    fixed={"batch_size": 128, "warmup_epochs": 1, "schedule": "cosine", "momentum": 0.9, **QUICK_FLATNESS},
    search_per_optimizer={"sgd": {"lr": {"choice": [1.0e12]}}},
    confirm_top_k=1, confirm_seeds=2)


def _this_machine() -> set[str]:
    """Every address and name of this machine (loopback and its network interfaces)."""
    found = {"localhost", socket.gethostname()}
    found |= {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs
              if a.family in (socket.AF_INET, socket.AF_INET6)}
    return found


_LOCAL = _this_machine()


def _is_local(host) -> bool:
    if host is None or str(host) in _LOCAL:
        return True
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """No test reaches beyond this machine: resolving or connecting to another host fails
    at once, as offline CI would (a test that would download fails rather than waits on a
    timeout). Servers and Ray on this machine, loopback or its own addresses, stay
    reachable. Subprocesses are not covered: none of them downloads."""
    resolve, connect = socket.getaddrinfo, socket.socket.connect

    def local_getaddrinfo(host, *args, **kwargs):
        if not _is_local(host):
            raise socket.gaierror(socket.EAI_NONAME, f"tests do not use the network ({host})")
        return resolve(host, *args, **kwargs)

    def local_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            raise OSError(f"tests do not use the network ({address[0]})")
        return connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", local_getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", local_connect)


@pytest.fixture(scope="session")
def digits_sweep(tmp_path_factory) -> SweepRun:
    """Run once per test session, however pytest-xdist splits it: the workers share a
    folder and a lock; the first runs the sweep, the others read its record."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's folder, above each worker's own
    folder = shared / "digits_sweep"
    storage = folder / "results"
    with FileLock(str(shared / "digits_sweep.lock")):
        record = folder / "launch.json"
        if not record.exists():
            folder.mkdir(parents=True, exist_ok=True)
            space = space_file(folder, **SHARED_SWEEP)
            done = launch("--space", space, "--storage", str(storage))
            record.write_text(json.dumps({"space": space, "returncode": done.returncode,
                                          "stdout": done.stdout, "stderr": done.stderr}))
        saved = json.loads(record.read_text())
    done = subprocess.CompletedProcess([], saved["returncode"], saved["stdout"], saved["stderr"])
    return SweepRun(folder, storage, saved["space"], done)
