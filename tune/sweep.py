"""`run_sweep(plan)`: the checks that need neither torch nor Ray (tune.early), then, with
torch and Ray imported, the rest of the pre-flight, the stages and the closing summary and
report (tune.running).

Every check that can fail on user input runs before the first trial starts, and fails
with a `SweepError` (one line; exit 2 at the command line).
"""

from __future__ import annotations

from tune.early import early_checks
from tune.plan import SweepPlan


def run_sweep(plan: SweepPlan, out=print) -> int:
    """Run (or resume) the search and the confirm stage; returns 0, 1 if a trial failed
    with an error, or 128 + the signal (130, 143) if SIGINT or SIGTERM stopped it. Every
    check runs before Ray starts; one driver per experiment."""
    early_checks(plan)
    # Imported only now: torch, Ray and MLflow take about 10 s, which a refusal need not wait.
    from tune.running import run_checked

    return run_checked(plan, out)
