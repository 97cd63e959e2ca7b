"""Pre-flight, after tune.early's checks: the ones that need torch, Ray, MLflow or Optuna,
each failing with one line (`SweepError`; exit 2 at the command line) before the first
trial runs, and the lock that keeps one driver per experiment."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from ray import tune

from trainables.data import ImageData, load_dataset
from trainables.errors import DataUnavailableError, one_line, store_error
from trainables.record import PLAN_FILE, RETUNE, sqlite_path
from trainables.train import checkpoint_bytes
from tune.diskspace import space_problem
from tune.early import check_machine
from tune.plan import RAY_DASHBOARD_PORT, SweepError, SweepPlan, local_storage, record_differences
from tune.search import study_name
from tune.tracking import find_parent_run


def stages(plan: SweepPlan) -> tuple[bool, bool]:
    """(run the search?, run the confirm stage?) from what exists in storage and --resume.

    A new experiment runs both; --resume continues whatever exists; an explicit --confirm
    on a finished search runs only the confirm stage; anything else that exists is refused
    (no silent overwrite).
    """
    searched = tune.Tuner.can_restore(plan.experiment_path)
    confirmed = plan.confirms and tune.Tuner.can_restore(plan.confirm_path)
    if plan.resume:
        if not searched:
            raise SweepError(f"nothing to resume: no experiment {plan.experiment!r} in {plan.storage}")
        return True, plan.confirms
    if not searched:
        return True, plan.confirms
    if plan.confirm_requested and plan.confirms and not confirmed:
        return False, True
    raise SweepError(f"experiment {plan.experiment!r} already exists in {plan.storage}; "
                     "pass --resume to continue it, or --experiment NAME for a new one")


@contextlib.contextmanager
def driver_lock(plan: SweepPlan):
    """Held while this driver runs the experiment: a second launch.py on the same experiment
    is refused. An OS file lock (flock), so a crashed driver leaves nothing stuck. Remote
    storage (s3://) has no shared lock; one driver per experiment is then up to the user."""
    local = local_storage(plan.storage)
    if local is None:
        yield
        return
    lock = FileLock(str(Path(local) / f".{plan.experiment}.driver.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SweepError(f"experiment {plan.experiment!r} in {plan.storage} is being run by another "
                         "launch.py; wait for it to finish, or stop it first") from None
    try:
        yield
    finally:
        lock.release()


def check_same_sweep(plan: SweepPlan, confirm_only: bool) -> None:
    """Continuing an experiment (--resume, or a confirm stage after a finished search):
    its MLflow record must be where the plan says, and the plan must be the one recorded.
    Any change to the space, budget, optimizers or trials is refused, naming the changes
    (a confirm stage added to a finished search may choose its own K and seeds)."""
    database = sqlite_path(plan.tracking_uri)
    if database is not None and not database.is_file():
        raise SweepError(f"--resume: no MLflow database at {database}; experiment "
                         f"{plan.experiment!r} was recorded in the store it ran with (pass that one "
                         "as --mlflow-uri)")
    client = MlflowClient(plan.tracking_uri)
    parent = find_parent_run(client, plan.experiment, plan.experiment_path)
    if parent is None:
        raise SweepError(f"--resume: MLflow at {plan.tracking_uri} has no run of the sweep at "
                         f"{plan.experiment_path} (experiment {plan.experiment!r}); pass the "
                         "--mlflow-uri it ran with")
    recorded = _recorded_plan(client, parent.info.run_id)
    requested = json.loads(json.dumps(plan.record()))
    ignore = ("confirm_top_k", "confirm_seeds") if confirm_only else ()
    changed = record_differences(recorded, requested, ignore) if recorded is not None else []
    if changed:
        raise SweepError(f"experiment {plan.experiment!r} was started with other settings "
                         f"({'; '.join(changed)}); resume it as it was, or start a new one "
                         "with --experiment NAME")


def check_studies(plan: SweepPlan, run_search: bool) -> None:
    """The search's Optuna studies (EXPERIMENT/OPTIMIZER/rREPLICATE): a resumed search's
    must be in the Optuna database (and the re-search's, once it has started); a new
    search's must not hold trials there yet (an earlier sweep of that name). Opening the
    database checks the URL."""
    if not run_search:
        return
    try:
        import optuna

        held = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(plan.optuna_uri)}
    except Exception as error:  # noqa: BLE001  SQLAlchemy's and Optuna's errors have no common base
        raise SweepError(f"the Optuna database {plan.optuna_uri} cannot be opened "
                         f"({store_error(error)})") from None
    groups = [(o, r) for r in range(plan.space.replicates) for o in plan.space.optimizers]
    names = [study_name(plan.experiment, o, r) for o, r in groups]
    if plan.resume and tune.Tuner.can_restore(plan.retune_path):
        names += [study_name(plan.experiment, o, r, RETUNE) for o, r in groups if o in plan.retunes]
    if plan.resume:
        missing = [n for n in names if n not in held]
        if missing:
            raise SweepError(f"--resume: no Optuna study {missing[0]!r} in {plan.optuna_uri}; pass "
                             "the --optuna-storage the sweep ran with")
        return
    used = [n for n in names if held.get(n)]
    if used:
        raise SweepError(f"Optuna study {used[0]!r} in {plan.optuna_uri} already holds trials (an "
                         f"earlier sweep named {plan.experiment!r}); choose another --experiment, or "
                         f"delete it: optuna delete-study --study-name {used[0]} --storage {plan.optuna_uri}")


def _recorded_plan(client: MlflowClient, run_id: str) -> dict | None:
    """The plan.json the sweep's parent run holds (None for a sweep from before it was
    recorded)."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client.download_artifacts(run_id, PLAN_FILE, folder)
        except (MlflowException, OSError):
            return None
        return json.loads(Path(path).read_text())


def check_resources(plan: SweepPlan) -> None:
    """A local trial must fit this machine as torch sees it (tune.early checked what it
    could without torch): CPUs, GPUs and a fixed device it can honour."""
    if plan.address is not None:
        return
    check_machine(plan, os.cpu_count() or 1, torch.cuda.device_count())
    device = str(plan.space.fixed.get("device", "auto"))
    if device == "mps" and not torch.backends.mps.is_available():
        raise SweepError("the space fixes device mps, but this machine has no Apple GPU")


def check_dashboard(plan: SweepPlan) -> None:
    """--dashboard needs Ray's dashboard packages and a free port; it applies to a local Ray
    (a cluster's head serves its own)."""
    if not plan.dashboard:
        return
    if plan.address is not None:
        raise SweepError("--dashboard starts the local Ray's dashboard; a cluster's head serves its "
                         "own (ray dashboard cluster.yaml)")
    try:
        import ray.dashboard.optional_deps  # noqa: F401  what Ray's dashboard imports
    except ImportError as error:
        raise SweepError(f"--dashboard needs Ray's dashboard packages ({one_line(error)}): "
                         "pip install -c constraints.txt -e '.[dashboard]'") from None
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", RAY_DASHBOARD_PORT))
        except OSError:
            raise SweepError(f"--dashboard: port {RAY_DASHBOARD_PORT} on 127.0.0.1 is in use (another "
                             "Ray's dashboard?)") from None


def check_data(plan: SweepPlan) -> ImageData:
    """Fetch the data set once here (or fail now) rather than in every trial."""
    try:
        return load_dataset(plan.space.dataset, plan.data_dir)
    except DataUnavailableError as error:
        raise SweepError(str(error)) from None


def check_space(plan: SweepPlan, data: ImageData) -> int:
    """Local storage must hold the sweep's checkpoints (tune.diskspace); returns the bytes
    one checkpoint may take."""
    checkpoint = checkpoint_bytes(plan.space.model, data)
    problem = space_problem(plan, checkpoint)
    if problem:
        raise SweepError(problem)
    return checkpoint
