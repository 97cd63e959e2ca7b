"""The pre-flight checks that need neither torch nor Ray: `tune.sweep.run_sweep` runs them
before it imports either (about 10 s on a busy laptop), so the commonest refusals (storage,
tracking server, cluster address, a trial too big for this machine) come in a second or
two. Each fails with one line (`SweepError`)."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

from trainables.record import CONNECT_TIMEOUT_S, server_problem, sqlite_path
from tune.plan import SweepError, SweepPlan, local_storage

# NVIDIA's driver lists each GPU here, in containers too (/proc is the host kernel's).
_NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def early_checks(plan: SweepPlan) -> None:
    """Storage, tracking store, cluster address and this machine's CPUs and GPUs."""
    check_storage(plan)
    check_tracking(plan.tracking_uri)
    check_address(plan.address)
    check_machine(plan, os.cpu_count() or 1, gpus_seen())


def check_storage(plan: SweepPlan) -> None:
    """Local storage must be writable."""
    path = local_storage(plan.storage)
    if path is None:
        return
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        probe = Path(path) / ".write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise SweepError(f"storage {path} is not writable: {error.strerror or error}") from None


def check_tracking(uri: str) -> None:
    """A tracking server must answer; a SQLite file must be creatable (the URI's form:
    checked by SweepPlan)."""
    problem = server_problem(uri)
    if problem:
        raise SweepError(problem)
    database = sqlite_path(uri)
    if database is None:
        return
    folder = database.parent
    if not os.access(folder if folder.exists() else folder.parent, os.W_OK):
        raise SweepError(f"cannot write the MLflow database in {folder}")


def check_address(address: str | None) -> None:
    """An explicit host:port must accept a connection (ray.init would wait a minute)."""
    if address in (None, "auto") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as error:
        raise SweepError(f"Ray cluster at {address} is unreachable: {error}") from None


def gpus_seen() -> int | None:
    """The CUDA GPUs this machine shows without torch: NVIDIA's driver entries, limited by
    CUDA_VISIBLE_DEVICES; 0 where no GPU driver is there at all; None where a driver is
    that /proc does not list (nvidia-smi alone, AMD's ROCm, Apple's): torch tells later."""
    if _NVIDIA_GPUS.is_dir():
        count = len(list(_NVIDIA_GPUS.iterdir()))
    elif shutil.which("nvidia-smi") or Path("/dev/kfd").exists() or sys.platform == "darwin":
        return None
    else:
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return count
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    # CUDA stops at the first invalid id; -1 (or nothing) hides every GPU.
    valid = next((i for i, v in enumerate(ids) if v.startswith("-")), len(ids))
    return min(count, valid)


def check_machine(plan: SweepPlan, cpus: int, gpus: int | None) -> None:
    """A local trial must fit this machine's `cpus` and `gpus` (None: not known yet, so not
    checked). On a cluster, tune.stages.check_cluster compares with its nodes."""
    if plan.address is not None:
        return
    problem = machine_problem(plan, cpus, gpus)
    if problem:
        raise SweepError(problem)


def machine_problem(plan: SweepPlan, cpus: int, gpus: int | None) -> str | None:
    """Why a trial of `plan` does not fit a machine of `cpus` and `gpus` (None: it fits,
    or `gpus` is not known)."""
    space = plan.space
    if space.cpus_per_trial > cpus:
        return f"a trial asks for {space.cpus_per_trial:g} CPUs; this machine has {cpus} (--cpus-per-trial)"
    if gpus is None:
        return None
    if space.gpus_per_trial > gpus:
        return (f"a trial asks for {space.gpus_per_trial:g} GPUs; this machine has {gpus or 'none'} "
                "(--gpus-per-trial 0 trains on the CPU)")
    device = str(space.fixed.get("device", "auto"))
    if device.startswith("cuda") and gpus == 0:
        return f"the space fixes device {device}, but this machine has no GPU"
    return None
