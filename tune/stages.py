"""Running a sweep's stages on Ray: start (or join) Ray, then the search, the
equal-compute arm's learning-rate re-search and the confirm stage, each a Tuner run or
resumed, tracked in MLflow from the driver."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import ray
from ray import tune

from trainables.record import (COMMAND_TAG, COMMIT_TAG, CONFIRM, DEFAULT_STORE, PARENT_STAGE, RECORD_KEY, RETUNE,
                               SEARCH, SPACE_TAG, compute_unit, group_of, is_server_uri, ranked_by_group, split_config)
from trainables.errors import one_line
from trainables.schema import SEARCH_METRIC, VERDICT_METRIC, trial_summary
from tune.budget import budget_arms
from tune.confirm import FixedConfigs, config_key, confirm_trials
from tune.estimate import budget
from tune.interrupt import kill_children
from tune.plan import RAY_DASHBOARD_PORT, SweepError, SweepFailed, SweepPlan, is_uri
from tune.progress import ConciseProgress, StageBudget
from tune.retune import retune_groups
from tune.schedule import PerGroupASHA, SafeSnapshots
from tune.search import GroupedSearch, OptunaLinks, search_groups
from tune.seeds import replicate_seeds
from tune.tracking import MlflowTracking
from tune.trainable import tune_trial

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Shipped to a cluster as the job's working directory: code only.
_SHIP_EXCLUDES = [".venv/", ".git/", f"{DEFAULT_STORE}/", "data/", "*.db", "mlruns/", "__pycache__/"]


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
        try:
            ray.init(**common)
        except Exception as error:  # noqa: BLE001  Ray raises bare Exception on a startup timeout
            kill_children()  # what it started before giving up
            raise SweepFailed(f"the local Ray did not start ({one_line(error, squash_space=True)}); on a busy "
                             f"machine (load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores) it can time "
                             "out: rerun the same command") from None
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
    if not is_server_uri(plan.tracking_uri):
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


def provenance(plan: SweepPlan) -> dict:
    """Tags of the parent run: what ran, from which code, with which packages."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, text=True,
                                capture_output=True, timeout=10).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    versions = {p: metadata.version(p) for p in ("torch", "torchvision", "ray", "optuna", "mlflow")}
    return {SPACE_TAG: plan.space.name, COMMAND_TAG: plan.command, COMMIT_TAG: commit,
            "python": sys.version.split()[0], "stage": PARENT_STAGE,
            **{f"version.{p}": v for p, v in versions.items()}}


def searched_names(plan: SweepPlan) -> tuple[str, ...]:
    names = {n for o in plan.space.optimizers for n in plan.space.distributions_for(o)}
    return tuple(sorted(names))


def _trainable(plan: SweepPlan):
    return tune.with_resources(tune_trial, {"cpu": plan.space.cpus_per_trial,
                                            "gpu": plan.space.gpus_per_trial})


def trial_folder(trial) -> str:
    """A trial's folder name: its trainable, id and index, as analysis.load_storage reads
    them (Ray's default adds every setting and the date: 150 characters)."""
    index = str(trial.experiment_tag).split("_", 1)[0]
    return f"{trial.trainable_name}_{trial.trial_id}_{index}_"


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
                                        reuse_actors=True, trial_dirname_creator=trial_folder),
            run_config=tune.RunConfig(
                name=path.rsplit("/", 1)[1], storage_path=plan.storage, callbacks=callbacks,
                verbose=0, failure_config=tune.FailureConfig(max_failures=3),
                # Tune keeps every checkpoint; SafeSnapshots deletes all but a trial's newest
                # two, and only once storage's snapshot names the newer (Tune's num_to_keep
                # can leave a snapshot that breaks --resume).
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None)))
    return tuner.fit()


def stage_budget(plan: SweepPlan, epochs: list[int], stage: str,
                 groups: dict[str, str] | None = None) -> StageBudget:
    """The status line's plan of `stage`, whose trials run `epochs` each, and the stages
    after it; compute is counted in GPU-hours when trials hold GPUs, else in CPU-hours."""
    planned = budget(plan).stages()
    later = list(planned)[list(planned).index(stage) + 1:]
    unit = compute_unit(plan.space.cpus_per_trial, plan.space.gpus_per_trial)
    later_epochs = sum(sum(planned[s].values()) for s in later)
    return StageBudget(len(epochs), sum(epochs), *unit, groups, later_epochs=later_epochs)


def study_about(plan: SweepPlan) -> dict[str, str]:
    """What each Optuna study records of its sweep (optuna-dashboard shows it)."""
    return {"space": plan.space.name, "command": plan.command, "mlflow_experiment": plan.experiment,
            "mlflow_tracking_uri": plan.tracking_uri}


def search(plan: SweepPlan, parent_run_id: str, experiment_id: str, watch: tuple = ()):
    """The search: one Optuna searcher and one ASHA per optimizer and replicate. `watch`:
    more callbacks (tune.diskspace.DiskWatch), as in every stage."""
    space = plan.space
    groups = search_groups(space, plan.experiment, {"data_dir": plan.data_dir})
    return run_stage(
        plan, plan.experiment_path,
        search_alg=GroupedSearch(groups, plan.optuna_uri, study_about(plan)),
        scheduler=PerGroupASHA([g.key for g in groups], space.max_epochs, space.grace_period,
                               space.reduction_factor),
        callbacks=[MlflowTracking(plan.tracking_uri, parent_run_id, experiment_id,
                                  optuna_links=OptunaLinks(plan.optuna_uri, plan.experiment)),
                   ConciseProgress(stage_budget(plan, [space.max_epochs] * plan.total_trials, SEARCH),
                                   searched_names(plan), SEARCH_METRIC,
                                   waiting_for=waiting_for(plan)), *watch],
        num_samples=plan.total_trials)


def retune(plan: SweepPlan, finalists: list[dict], parent_run_id: str, experiment_id: str,
           out=print, watch: tuple = ()) -> tuple[dict, list[dict]]:
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
        plan, plan.retune_path, search_alg=GroupedSearch(groups, plan.optuna_uri, study_about(plan)),
        scheduler=PerGroupASHA([g.key for g in groups], epochs, round(space.grace_period * factor),
                               space.reduction_factor),
        callbacks=[MlflowTracking(plan.tracking_uri, parent_run_id, experiment_id, stage=RETUNE,
                                  optuna_links=OptunaLinks(plan.optuna_uri, plan.experiment, RETUNE)),
                   ConciseProgress(stage_budget(plan, [g.base["epochs"] for g in groups for _ in range(g.budget)],
                                                RETUNE),
                                   ("lr",), SEARCH_METRIC, waiting_for=waiting_for(plan)), *watch],
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
            experiment_id: str, watch: tuple = ()):
    """The confirm stage: finalists x budget arms x their replicate's seeds, scored on test,
    FIFO (no early stopping). Returns Ray's results."""
    space = plan.space
    seeds = {r: replicate_seeds(space.seed, r, plan.confirm_seeds).confirm for r in range(space.replicates)}
    configs = confirm_trials(finalists, seeds, budget_arms(space.optimizers), space.refit,
                                   space.flatness_images, space.refit_factor, retuned)
    results = run_stage(
        plan, plan.confirm_path, search_alg=FixedConfigs(configs), scheduler=SafeSnapshots(),
        callbacks=[MlflowTracking(plan.tracking_uri, parent_run_id, experiment_id, stage=CONFIRM),
                   ConciseProgress(stage_budget(plan, [c["epochs"] for c in configs], CONFIRM, {
                                       config_key(c): f"{c['optimizer']} {c[RECORD_KEY]['budget_arm']}"
                                       for c in configs}),
                                   ("seed", "epochs"), VERDICT_METRIC, waiting_for=waiting_for(plan)), *watch],
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
            "config": result.config, **trial_summary(last, result.config["epochs"], result.error is not None),
            "budget_arm": split_config(result.config)[1].get("budget_arm"),
            "trial_id": last.get("trial_id", Path(result.path).name)})
    return rows
