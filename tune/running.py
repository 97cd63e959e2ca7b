"""A sweep once tune.early's checks passed (tune.sweep.run_sweep): the pre-flight checks
that need torch, Ray, MLflow or Optuna (tune.preflight), then Ray and the stages
(tune.stages), then the closing summary and report (tune.closing). Imports torch and Ray.
"""

from __future__ import annotations

from pathlib import Path

import ray
from mlflow.tracking import MlflowClient

from trainables.record import PLAN_FILE, SPACE_FILE, TRIALS_FILE
from trainables.schema import ERROR
from tune.closing import (closing_commands, closing_summary, end_live_runs, interruption_note,
                          log_summary_metrics, record_interruption, recorded_sweep, report_path, rows_for_mlflow,
                          write_sweep_report)
from tune.confirm import select_finalists
from tune.interrupt import Interrupted, StopSignals
from tune.plan import RAY_DASHBOARD_PORT, SweepPlan, local_storage
from tune.diskspace import DiskWatch, space_needed
from tune.preflight import (check_dashboard, check_data, check_resources, check_same_sweep, check_space,
                            check_studies, driver_lock, stages)
from tune.progress import best_table
from tune.stages import (check_cluster, confirm, finished_results, provenance, retune, search, searched_names,
                         start_ray, summarize)
from tune.store import browse_command, dashboard_command, prepare_store
from tune.tracking import flat_params, log_params, open_parent_run


def run_checked(plan: SweepPlan, out=print) -> int:
    """`run_sweep` past tune.early's checks: every other check, then the stages."""
    with StopSignals() as signals, driver_lock(plan):
        signals.last_words = lambda stop: out(interruption_note(plan, stop, None))
        try:
            run_search, run_confirm = stages(plan)
            check_dashboard(plan)
            check_resources(plan)
            if plan.resume or not run_search:
                check_same_sweep(plan, confirm_only=not run_search)
            reserve = space_needed(plan, check_space(plan, check_data(plan)))[1]
            prepare_store(plan.tracking_uri)
            check_studies(plan, run_search)
            signals.check()
            started_ray = start_ray(plan)
            signals.install()  # ray.init sets a SIGTERM handler of its own
            try:
                check_cluster(plan, out)
                return _run(plan, run_search, run_confirm, out, signals, (DiskWatch(plan, reserve),))
            finally:
                if started_ray:
                    ray.shutdown()
        except Interrupted as stop:  # a first signal, before the parent run existed
            signals.last_words(stop)
            return stop.exit_code


def _run(plan: SweepPlan, run_search: bool, run_confirm: bool, out, signals: StopSignals, watch: tuple) -> int:
    client = MlflowClient(plan.tracking_uri)
    local = local_storage(plan.storage)
    parent_run_id, experiment_id = open_parent_run(
        client, plan.experiment, plan.experiment_path, not run_search or plan.resume,
        provenance(plan), artifact_location=str(Path(local, "mlartifacts")) if local else None)
    signals.last_words = lambda stop: out(interruption_note(
        plan, stop, record_interruption(client, experiment_id, parent_run_id, stop)))
    if run_search and not plan.resume:
        client.log_dict(parent_run_id, plan.space.to_dict(), SPACE_FILE)
        client.log_dict(parent_run_id, plan.record(), PLAN_FILE)
        log_params(client, parent_run_id, flat_params(plan.record()))
    try:
        return _stages(plan, run_search, run_confirm, out, signals, client, parent_run_id,
                       experiment_id, watch)
    except Interrupted as stop:
        signals.last_words(stop)  # the record and the resume line, as a second signal says them
        return stop.exit_code


def _partial_report(plan: SweepPlan, client: MlflowClient, parent_run_id: str, out) -> None:
    """The report of the search, before the stages that follow it, marked partial."""
    sweep = recorded_sweep(plan)
    done = 0 if isinstance(sweep, Exception) else len(sweep.trials)
    to_come = "the re-search and the confirm stage are" if plan.retunes else "the confirm stage is"
    partial = f"{done} of {plan.all_trials} trials: the search is done; {to_come} to come, so no verdict yet"
    out(f"\nreport       {write_sweep_report(plan, client, parent_run_id, sweep, partial)}  (partial)")


def _stages(plan: SweepPlan, run_search: bool, run_confirm: bool, out, signals: StopSignals,
            client: MlflowClient, parent_run_id: str, experiment_id: str, watch: tuple) -> int:
    out(plan.describe())
    out(f"mlflow ui    {browse_command(plan.tracking_uri)}  (while it runs, too)\n"
        f"optuna       {dashboard_command(plan.optuna_uri)}\n"
        f"report       {report_path(plan)}  ({'after the search, partial, and ' if run_confirm else ''}at the end)"
        + (f"\nray          http://127.0.0.1:{RAY_DASHBOARD_PORT}  (it asks for Ray's token: "
           "~/.ray/auth_token)" if plan.dashboard else ""))
    signals.check()
    results = search(plan, parent_run_id, experiment_id, watch) if run_search else finished_results(plan)
    signals.check()
    rows = summarize(results)
    out("\nsearch (single runs on the validation split; each optimizer's finalist per replicate)\n"
        + best_table(rows, searched_names(plan)))
    confirm_rows, retune_rows = [], []
    if run_confirm:
        _partial_report(plan, client, parent_run_id, out)
        finalists = select_finalists(rows, plan.confirm_top_k)
        retuned, retune_rows = retune(plan, finalists, parent_run_id, experiment_id, out, watch)
        signals.check()
        out(f"\nconfirm stage: top {plan.confirm_top_k} per replicate x {plan.confirm_seeds} seeds, "
            "on the test split")
        confirm_results = confirm(plan, finalists, retuned, parent_run_id, experiment_id, watch)
        signals.check()
        confirm_rows = summarize(confirm_results)
    # Past here every trial has ended: after a first signal the summary and the report
    # are still written (a second one stops at once).
    end_live_runs(client, experiment_id, parent_run_id, ERROR)
    client.log_dict(parent_run_id, rows_for_mlflow(rows + retune_rows + confirm_rows), TRIALS_FILE)
    sweep = recorded_sweep(plan)
    out("\n" + closing_summary(sweep, confirm_rows))
    log_summary_metrics(client, parent_run_id, sweep, out)
    report = write_sweep_report(plan, client, parent_run_id, sweep)
    client.set_terminated(parent_run_id, "FINISHED")
    out(f"\nresults    {plan.experiment_path}\n{closing_commands(plan, report)}")
    return 1 if any(r["status"] == ERROR for r in rows + retune_rows + confirm_rows) else 0
