"""A sweep's trials as CSV, one row per trial: stage, optimizer, status, config, final metrics.

    python -m analysis.export --out trials.csv                  # the most recent sweep
    python -m analysis.export --experiment NAME --out trials.csv
    python -m analysis.export --storage results/NAME --out trials.csv

Columns are analysis.load's trial columns (`Sweep.trials`); a hyperparameter the trial's
optimizer does not read (an Adam trial's rho) is left empty, as its MLflow run omits it.
"""

from __future__ import annotations

import logging
import sys

from analysis.report import command_line, error_line, load


def trial_table(sweep):
    """`sweep.trials` with the settings each trial's optimizer does not read blanked (and
    without the loss profiles and per-example test results: a run's artifacts, not cells)."""
    from trainables.catalog import ignored_settings
    from trainables.schema import LOSS_PROFILE, TEST_CORRECT

    table = sweep.trials.drop(columns=[LOSS_PROFILE, TEST_CORRECT])
    for index, row in table.iterrows():
        ignored = sorted(ignored_settings(row["optimizer"], row["base"]) & set(table.columns))
        table.loc[index, ignored] = None
    return table


def main(argv: list[str] | None = None) -> int:
    """Write the CSV the command line asks for; returns the exit status (2: one line on
    stderr says why not)."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # bad input: one line on stderr
    logging.getLogger("alembic").setLevel(logging.WARNING)
    parser = command_line("python -m analysis.export", __doc__)
    parser.add_argument("--out", default="trials.csv", help="the CSV file to write (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        table = trial_table(load(args))
        table.to_csv(args.out, index=False)
    except (ValueError, OSError) as error:
        print(f"{parser.prog}: error: {error_line(error)}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(table)} trials")
    return 0


if __name__ == "__main__":
    sys.exit(main())
