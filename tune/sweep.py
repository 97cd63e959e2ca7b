"""`run_sweep(plan)`: check everything, start (or join) Ray, run or resume the Tuner.

Every check that can fail on user input runs before the first trial starts, and fails
with a `SweepError` (one line; exit 2 at the command line).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import ray
import torch
from filelock import FileLock, Timeout
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from ray import tune

from trainables.data import load_dataset
from trainables.errors import DataUnavailableError, one_line
from trainables.record import (CONFIRM, CONNECT_TIMEOUT_S, PARENT_STAGE, RECORD_KEY, RETUNE, compute_unit,
                               ranked_by_group, server_problem, split_config, sqlite_path, tracking_uri_problem)
from trainables.schema import INTERRUPTED, SEARCH_METRIC, VERDICT_METRIC, trial_status
from tune.plan import (RAY_DASHBOARD_PORT, SweepError, SweepPlan, is_uri, local_storage,
                       record_differences)
from tune.interrupt import Interrupted, StopSignals
from tune.budget import budget_arms
from tune.confirm import FixedConfigs, config_key, confirm_trials, select_finalists
from tune.progress import ConciseProgress, StageBudget, best_table, seed_table
from tune.retune import retune_groups
from tune.schedule import PerGroupASHA, SafeSnapshots
from tune.search import GroupedSearch, OptunaLinks, group_of, search_groups, study_name
from tune.seeds import replicate_seeds
from tune.store import browse_command, dashboard_command, prepare_store
from tune.tracking import (MlflowTracking, find_parent_run, flat_params, log_metrics, log_params,
                           open_parent_run)
from tune.trainable import tune_trial

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Shipped to a cluster as the job's working directory: code only.
_SHIP_EXCLUDES = [".venv/", ".git/", "results/", "data/", "*.db", "mlruns/", "__pycache__/"]


# ---- checks that need no Ray ---------------------------------------------------------

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


def check_tracking(uri: str) -> None:
    """A tracking server must answer; a SQLite file must be creatable."""
    problem = tracking_uri_problem(uri) or server_problem(uri)
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
                         f"({type(error).__name__}: {one_line(error)})") from None
    groups = [(o, r) for r in range(plan.space.replicates) for o in plan.space.optimizers]
    names = [study_name(plan.experiment, o, r) for o, r in groups]
    if plan.resume and tune.Tuner.can_restore(plan.retune_path):
        names += [study_name(plan.experiment, o, r, "retune") for o, r in groups if o in plan.retunes]
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
            path = client.download_artifacts(run_id, "plan.json", folder)
        except (MlflowException, OSError):
            return None
        return json.loads(Path(path).read_text())


def check_resources(plan: SweepPlan) -> None:
    """A local trial must fit this machine: CPUs, GPUs and a fixed device it can honour.
    (On a cluster, `check_cluster` compares with its nodes.)"""
    if plan.address is not None:
        return
    space = plan.space
    cpus, gpus = os.cpu_count() or 1, torch.cuda.device_count()
    if space.cpus_per_trial > cpus:
        raise SweepError(f"a trial asks for {space.cpus_per_trial:g} CPUs; this machine has {cpus} "
                         "(--cpus-per-trial)")
    if space.gpus_per_trial > gpus:
        raise SweepError(f"a trial asks for {space.gpus_per_trial:g} GPUs; this machine has "
                         f"{gpus or 'none'} (--gpus-per-trial 0 trains on the CPU)")
    device = str(space.fixed.get("device", "auto"))
    if device.startswith("cuda") and gpus == 0:
        raise SweepError(f"the space fixes device {device}, but this machine has no GPU")
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


def check_data(plan: SweepPlan) -> None:
    """Fetch the data set once here (or fail now) rather than in every trial."""
    try:
        load_dataset(plan.space.dataset, plan.data_dir)
    except DataUnavailableError as error:
        raise SweepError(str(error)) from None


# ---- Ray -------------------------------------------------------------------------------

def start_ray(plan: SweepPlan) -> bool:
    """Join the cluster at plan.address (shipping this code) or start a local Ray.

    Returns whether this process started Ray (and so must stop it).
    """
    common = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    if plan.address is None:
        if plan.dashboard:  # loopback only; Ray's token guards it too (its UI asks for it)
            common.update(include_dashboard=True, dashboard_host="127.0.0.1",
                          dashboard_port=RAY_DASHBOARD_PORT)
        # Ray's token authentication stays on (its default): the local Ray's GCS, raylet
        # and workers listen on every interface, and Ray has no option to bind them to
        # 127.0.0.1, so the token is what keeps other machines from joining it.
        ray.init(**common)
        return True
    try:
        ray.init(address=plan.address, runtime_env={
            "working_dir": str(PROJECT_ROOT), "excludes": _SHIP_EXCLUDES}, **common)
    except (ConnectionError, RuntimeError) as error:
        raise SweepError(f"cannot join the Ray cluster at {plan.address}: {error}") from None
    return False


def check_cluster(plan: SweepPlan, out=print) -> None:
    """On several nodes, results and tracking must live where every node reaches them; a
    trial that no node can hold is worth a warning (an autoscaling cluster may add one)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    missing = waiting_for(plan)
    if missing is not None:
        out(f"warning: trials wait until the cluster adds {missing}; the progress lines say "
            "for how long")
    if len(nodes) <= 1:
        return
    if not is_uri(plan.storage):
        raise SweepError(f"the cluster has {len(nodes)} nodes, but storage {plan.storage} is a "
                         "local path; pass --storage s3://... or file:///shared/nfs/path")
    if not plan.tracking_uri.startswith(("http://", "https://")):
        raise SweepError(f"the cluster has {len(nodes)} nodes: pass --mlflow-uri "
                         "http://host:port of a tracking server they can reach")


def waiting_for(plan: SweepPlan) -> str | None:
    """On a cluster, the node a trial needs if none of the live ones can hold it ("a node
    with 64 CPUs (the largest has 16)"), else None. (A local trial that does not fit is
    refused before Ray starts: check_resources.)"""
    if plan.address is None:
        return None
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    space = plan.space
    for kind, asked in (("CPU", space.cpus_per_trial), ("GPU", space.gpus_per_trial)):
        most = max((n.get("Resources", {}).get(kind, 0) for n in nodes), default=0)
        if asked > most:
            return f"a node with {asked:g} {kind}s (the largest has {most:g})"
    return None


# ---- the run ----------------------------------------------------------------------------

def provenance(plan: SweepPlan) -> dict:
    """Tags of the parent run: what ran, from which code, with which packages."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, text=True,
                                capture_output=True, timeout=10).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    versions = {p: metadata.version(p) for p in ("torch", "torchvision", "ray", "optuna", "mlflow")}
    return {"space": plan.space.name, "command": plan.command, "git_commit": commit,
            "python": sys.version.split()[0], "stage": PARENT_STAGE,
            **{f"version.{p}": v for p, v in versions.items()}}


def _searched_names(plan: SweepPlan) -> tuple[str, ...]:
    names = {n for o in plan.space.optimizers for n in plan.space.distributions_for(o)}
    return tuple(sorted(names))


def _trainable(plan: SweepPlan):
    return tune.with_resources(tune_trial, {"cpu": plan.space.cpus_per_trial,
                                            "gpu": plan.space.gpus_per_trial})


def run_stage(plan: SweepPlan, path: str, *, search_alg, scheduler, callbacks, num_samples: int):
    """Fit one Ray experiment at `path` (storage/name): restored if it exists, else new."""
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, _trainable(plan), resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = tune.Tuner(
            _trainable(plan),
            tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=scheduler,
                                        num_samples=num_samples,
                                        max_concurrent_trials=plan.space.max_concurrent,
                                        reuse_actors=True),
            run_config=tune.RunConfig(
                name=path.rsplit("/", 1)[1], storage_path=plan.storage, callbacks=callbacks,
                verbose=0, failure_config=tune.FailureConfig(max_failures=3),
                # Tune keeps every checkpoint; SafeSnapshots deletes all but a trial's newest
                # two, and only once storage's snapshot names the newer (Tune's num_to_keep
                # can leave a snapshot that breaks --resume).
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None)))
    return tuner.fit()


def stage_budget(plan: SweepPlan, epochs: list[int], groups: dict[str, str] | None = None) -> StageBudget:
    """The status line's plan of a stage whose trials run `epochs` each; compute is counted
    in GPU-hours when trials hold GPUs, else in CPU-hours."""
    return StageBudget(len(epochs), sum(epochs), *compute_unit(plan.space.cpus_per_trial, plan.space.gpus_per_trial), groups)


def search(plan: SweepPlan, parent_run_id: str, experiment_id: str):
    """The search: one Optuna searcher and one ASHA per optimizer and replicate."""
    space = plan.space
    groups = search_groups(space, plan.experiment, {"data_dir": plan.data_dir})
    return run_stage(
        plan, plan.experiment_path,
        search_alg=GroupedSearch(groups, plan.optuna_uri),
        scheduler=PerGroupASHA([g.key for g in groups], space.max_epochs, space.grace_period,
                               space.reduction_factor),
        callbacks=[MlflowTracking(plan.tracking_uri, parent_run_id, experiment_id,
                                  optuna_links=OptunaLinks(plan.optuna_uri, plan.experiment)),
                   ConciseProgress(stage_budget(plan, [space.max_epochs] * plan.total_trials),
                                   _searched_names(plan), SEARCH_METRIC,
                                   waiting_for=waiting_for(plan))],
        num_samples=plan.total_trials)


def retune(plan: SweepPlan, finalists: list[dict], parent_run_id: str, experiment_id: str,
           out=print) -> tuple[dict, list[dict]]:
    """The equal-compute arm's learning-rate re-search (tune.retune), per retuned optimizer
    and replicate with a finalist, on val; returns (optimizer, replicate) -> its best
    trial's summary row, and every trial's row (none without a re-search)."""
    space = plan.space
    groups = retune_groups(space, plan.experiment, finalists) if plan.retunes else []
    if not groups:
        return {}, []
    out(f"\nre-search: the lr of {', '.join(dict.fromkeys(g.key[0] for g in groups))} at the "
        "equal-compute arm's epochs, per replicate, on the validation split")
    if not tune.Tuner.can_restore(plan.retune_path):
        _drop_studies(plan.optuna_uri, [g.name for g in groups])
    epochs = groups[0].base["epochs"]  # every retuned optimizer runs the same longer arm
    factor = epochs / space.max_epochs
    results = run_stage(
        plan, plan.retune_path, search_alg=GroupedSearch(groups, plan.optuna_uri),
        scheduler=PerGroupASHA([g.key for g in groups], epochs, round(space.grace_period * factor),
                               space.reduction_factor),
        callbacks=[MlflowTracking(plan.tracking_uri, parent_run_id, experiment_id, stage=RETUNE,
                                  optuna_links=OptunaLinks(plan.optuna_uri, plan.experiment, "retune")),
                   ConciseProgress(stage_budget(plan, [g.base["epochs"] for g in groups for _ in range(g.budget)]),
                                   ("lr",), SEARCH_METRIC, waiting_for=waiting_for(plan))],
        num_samples=sum(g.budget for g in groups))
    rows = summarize(results)
    ranked = ranked_by_group(rows, lambda r: group_of(r["config"]))
    return {group: found[0] for group, found in ranked.items() if found}, rows


def _drop_studies(url: str, names: list[str]) -> None:
    """Delete the studies of a re-search that never started in Ray (a driver stopped before
    its first snapshot, which comes before any trial runs): asked trials that never ran."""
    import optuna

    held = {s.study_name for s in optuna.get_all_study_summaries(url)}
    for name in names:
        if name in held:
            optuna.delete_study(study_name=name, storage=url)


def confirm(plan: SweepPlan, finalists: list[dict], retuned: dict, parent_run_id: str,
            experiment_id: str):
    """The confirm stage: finalists x budget arms x their replicate's seeds, scored on test,
    FIFO (no early stopping). Returns Ray's results."""
    space = plan.space
    seeds = {r: replicate_seeds(space.seed, r, plan.confirm_seeds).confirm for r in range(space.replicates)}
    configs = confirm_trials(finalists, seeds, budget_arms(space.optimizers), space.refit,
                                   space.flatness_images, space.refit_factor, retuned)
    results = run_stage(
        plan, plan.confirm_path, search_alg=FixedConfigs(configs), scheduler=SafeSnapshots(),
        callbacks=[MlflowTracking(plan.tracking_uri, parent_run_id, experiment_id, stage=CONFIRM),
                   ConciseProgress(stage_budget(plan, [c["epochs"] for c in configs], {
                                       config_key(c): f"{c['optimizer']} {c[RECORD_KEY]['budget_arm']}"
                                       for c in configs}),
                                   ("seed", "epochs"), VERDICT_METRIC, waiting_for=waiting_for(plan))],
        num_samples=len(configs))
    return results


def finished_results(plan: SweepPlan):
    """A finished search's results, read from storage without running anything."""
    results = tune.Tuner.restore(plan.experiment_path, _trainable(plan)).get_results()
    if results.num_terminated + results.num_errors < plan.total_trials:
        raise SweepError(f"the search {plan.experiment!r} has not finished; pass --resume")
    return results


def summarize(results) -> list[dict]:
    """One row per trial: optimizer, replicate, config, status, epochs run, final val_acc
    and test_acc (NaN where not evaluated), and the confirm stage's budget arm."""
    rows = []
    for result in results:
        last = result.metrics or {}
        rows.append({
            "optimizer": result.config.get("optimizer"), "replicate": group_of(result.config)[1],
            "config": result.config,
            "status": trial_status(last, result.config["epochs"], result.error is not None),
            "epochs_run": int(last.get("epoch", 0)),
            "final_val_acc": float(last.get("val_acc", float("nan"))),
            "final_test_acc": float(last.get("test_acc", float("nan"))),
            "budget_arm": split_config(result.config)[1].get("budget_arm"),
            "trial_id": last.get("trial_id", Path(result.path).name)})
    return rows


def end_live_runs(client: MlflowClient, experiment_id: str, parent_run_id: str,
                  status: str) -> int:
    """Mark the sweep's child runs still RUNNING as ended (MLflow KILLED) with `status`
    ("interrupted": stopped by a signal at their last checkpoint, continued by --resume;
    "error": still running after the sweep ended, so they belong to no trial). Returns
    how many."""
    live = client.search_runs([experiment_id], filter_string=(
        f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'"))
    for run in live:
        client.set_tag(run.info.run_id, "status", status)
        client.set_terminated(run.info.run_id, "KILLED")
    return len(live)


def record_interruption(client: MlflowClient, experiment_id: str, parent_run_id: str,
                        stop: Interrupted) -> int:
    """The sweep was stopped by a signal: its running trials' runs and the parent end
    KILLED, the trials tagged `interrupted` and the parent tagged with the signal. Returns
    the number of trials stopped mid-run."""
    stopped = end_live_runs(client, experiment_id, parent_run_id, INTERRUPTED)
    client.set_tag(parent_run_id, "interrupted", stop.name)
    client.set_terminated(parent_run_id, "KILLED")
    return stopped


def resume_command(plan: SweepPlan) -> str:
    """The command that continues this sweep."""
    return plan.command if " --resume" in plan.command else f"{plan.command} --resume"


def interruption_note(plan: SweepPlan, stop: Interrupted, stopped: int | None) -> str:
    """What the driver prints when a signal stopped the sweep."""
    trials = ("" if stopped is None else
              f"; {stopped} running trial{'s' * (stopped != 1)} stopped at {'their' if stopped != 1 else 'its'} "
              "last epoch checkpoint (tagged interrupted)")
    how = " at once, without Tune's last snapshot" if stop.at_once else ""
    return (f"\nsweep interrupted by {stop.name}{how}{trials}; finished trials are kept.\n"
            f"continue it with: {resume_command(plan)}")


def run_sweep(plan: SweepPlan, out=print) -> int:
    """Run (or resume) the search and the confirm stage; returns 0, 1 if a trial failed
    with an error, or 128 + the signal (130, 143) if SIGINT or SIGTERM stopped it. Every
    check runs before Ray starts; one driver per experiment."""
    check_storage(plan)
    with StopSignals() as signals, driver_lock(plan):
        try:
            run_search, run_confirm = stages(plan)
            check_tracking(plan.tracking_uri)
            check_address(plan.address)
            check_dashboard(plan)
            check_resources(plan)
            if plan.resume or not run_search:
                check_same_sweep(plan, confirm_only=not run_search)
            check_data(plan)
            prepare_store(plan.tracking_uri)
            check_studies(plan, run_search)
            signals.check()
            started_ray = start_ray(plan)
            signals.install()  # ray.init sets a SIGTERM handler of its own
            try:
                check_cluster(plan, out)
                return _run(plan, run_search, run_confirm, out, signals)
            finally:
                if started_ray:
                    ray.shutdown()
        except Interrupted as stop:  # before the parent run existed, or a second signal
            out(interruption_note(plan, stop, None))
            return stop.exit_code


def _run(plan: SweepPlan, run_search: bool, run_confirm: bool, out, signals: StopSignals) -> int:
    client = MlflowClient(plan.tracking_uri)
    local = local_storage(plan.storage)
    parent_run_id, experiment_id = open_parent_run(
        client, plan.experiment, plan.experiment_path, not run_search or plan.resume,
        provenance(plan), artifact_location=str(Path(local, "mlartifacts")) if local else None)
    if run_search and not plan.resume:
        client.log_dict(parent_run_id, plan.space.to_dict(), "space.json")
        client.log_dict(parent_run_id, plan.record(), "plan.json")
        log_params(client, parent_run_id, flat_params(plan.record()))
    try:
        return _stages(plan, run_search, run_confirm, out, signals, client, parent_run_id,
                       experiment_id)
    except Interrupted as stop:
        stopped = record_interruption(client, experiment_id, parent_run_id, stop)
        out(interruption_note(plan, stop, stopped))
        return stop.exit_code


def _stages(plan: SweepPlan, run_search: bool, run_confirm: bool, out, signals: StopSignals,
            client: MlflowClient, parent_run_id: str, experiment_id: str) -> int:
    out(plan.describe())
    out(f"mlflow ui    {browse_command(plan.tracking_uri)}  (while it runs, too)\n"
        f"optuna       {dashboard_command(plan.optuna_uri)}"
        + (f"\nray          http://127.0.0.1:{RAY_DASHBOARD_PORT}  (it asks for Ray's token: "
           "~/.ray/auth_token)" if plan.dashboard else ""))
    signals.check()
    results = search(plan, parent_run_id, experiment_id) if run_search else finished_results(plan)
    signals.check()
    rows = summarize(results)
    out("\nsearch (single runs on the validation split; each optimizer's finalist per replicate)\n"
        + best_table(rows, _searched_names(plan)))
    confirm_rows, retune_rows = [], []
    if run_confirm:
        finalists = select_finalists(rows, plan.confirm_top_k)
        retuned, retune_rows = retune(plan, finalists, parent_run_id, experiment_id, out)
        signals.check()
        out(f"\nconfirm stage: top {plan.confirm_top_k} per replicate x {plan.confirm_seeds} seeds, "
            "on the test split")
        confirm_results = confirm(plan, finalists, retuned, parent_run_id, experiment_id)
        signals.check()
        confirm_rows = summarize(confirm_results)
    # Past here every trial has ended: after a first signal the summary and the report
    # are still written (a second one stops at once).
    end_live_runs(client, experiment_id, parent_run_id, "error")
    client.log_dict(parent_run_id, rows_for_mlflow(rows + retune_rows + confirm_rows), "trials.json")
    sweep = recorded_sweep(plan)
    out("\n" + closing_summary(sweep, confirm_rows))
    log_summary_metrics(client, parent_run_id, sweep, out)
    report = write_sweep_report(plan, client, parent_run_id, sweep)
    client.set_terminated(parent_run_id, "FINISHED")
    out(f"\nresults    {plan.experiment_path}\n{closing_commands(plan, report)}")
    return 1 if any(r["status"] == "error" for r in rows + retune_rows + confirm_rows) else 0


def recorded_sweep(plan: SweepPlan):
    """The sweep as MLflow recorded it (analysis.load), or the error that stopped loading
    it: the summary and the report read the record, not the driver's memory."""
    try:
        from analysis.load import load_sweep

        return load_sweep(plan.experiment, plan.tracking_uri)
    except Exception as error:  # noqa: BLE001  the trials are safe whatever went wrong here
        return error


def closing_summary(sweep, confirm_rows: list[dict]) -> str:
    """The verdict with its warnings (analysis.summary), or, if that fails, the confirm
    stage's seeds per optimizer and arm and why the summary is missing."""
    try:
        if isinstance(sweep, Exception):
            raise sweep
        from analysis.summary import sweep_summary

        return sweep_summary(sweep)
    except Exception as error:  # noqa: BLE001  a broken summary must not fail a finished sweep
        table = seed_table(confirm_rows) if confirm_rows else ""
        return f"summary not made ({type(error).__name__}: {error})\n{table}".rstrip()


def log_summary_metrics(client: MlflowClient, parent_run_id: str, sweep, out=print) -> None:
    """The result per optimizer (analysis.summary.summary_metrics) as the parent run's
    metrics; skipped, like the summary, when the sweep could not be read back."""
    try:
        if isinstance(sweep, Exception):
            return
        from analysis.summary import summary_metrics

        log_metrics(client, parent_run_id, summary_metrics(sweep))
    except Exception as error:  # noqa: BLE001  the trials are safe whatever went wrong here
        out(f"summary metrics not logged ({type(error).__name__}: {error})")


def write_sweep_report(plan: SweepPlan, client: MlflowClient, parent_run_id: str, sweep) -> str:
    """The HTML report of the recorded sweep, in the experiment folder (or the working
    folder for remote storage), attached to the parent run. A report that fails does not
    fail a finished sweep: it says so and how to rebuild it."""
    local = local_storage(plan.storage)
    folder = Path(local, plan.experiment) if local else Path.cwd()
    if local:  # lets a report be rebuilt from Ray's storage alone (analysis.load)
        (folder / "space.json").write_text(json.dumps(plan.space.to_dict()))
    try:
        if isinstance(sweep, Exception):
            raise sweep
        from analysis.page import write_report

        path = write_report(sweep, folder / f"{plan.experiment}-report.html")
    except Exception as error:  # noqa: BLE001  the trials are safe whatever went wrong here
        return (f"not written ({type(error).__name__}: {error}); rebuild it with python -m "
                f"analysis.report --experiment {plan.experiment} --mlflow-uri {plan.tracking_uri} "
                "--out report.html")
    client.log_artifact(parent_run_id, str(path))
    return str(path)


def closing_commands(plan: SweepPlan, report: str) -> str:
    """The commands that open what the sweep left, each runnable as printed: its report,
    the MLflow UI, Optuna's dashboard and the notebooks (which read the most recent sweep)."""
    python = Path(sys.executable)
    opener = (f"{python} -m webbrowser -t {Path(report).resolve().as_uri()}"
              if Path(report).is_file() else report)
    return (f"report     {opener}\n"
            f"mlflow ui  {browse_command(plan.tracking_uri)}\n"
            f"optuna     {dashboard_command(plan.optuna_uri)}\n"
            f"notebooks  make -C {PROJECT_ROOT} notebooks  (JupyterLab on analysis/notebooks/)")


def rows_for_mlflow(rows: list[dict]) -> list[dict]:
    """The summary rows as plain JSON (configs are already plain dicts)."""
    return json.loads(json.dumps(rows, default=str))
