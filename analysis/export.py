"""A sweep's trials as CSV, one row per trial: stage, optimizer, status, config, final metrics.

    python -m analysis.export --out trials.csv                  # the most recent sweep
    python -m analysis.export --experiment NAME --out trials.csv
    python -m analysis.export --storage results/NAME --out trials.csv

Columns are analysis.load's trial columns (`Sweep.trials`); a hyperparameter the trial's
optimizer does not read (an Adam trial's rho) is left empty, as its MLflow run omits it.
A results folder is untrusted and a spreadsheet runs a cell that starts a formula, so a
text cell or header starting with = + - @, tab or carriage return is written behind a
single quote (OWASP's CSV-injection advice); numbers are written as numbers.
"""

from __future__ import annotations

import sys

from analysis.report import command_line, error_line, load
from commandline import quiet_libraries
from trainables.schema import count


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


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def inert(value):
    """`value`, behind a single quote if it is text a spreadsheet would read as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def inert_table(table):
    """`table` with every text cell and header made inert (numbers untouched)."""
    table = table.rename(columns=inert)
    text = table.select_dtypes(include=["object", "string"]).columns
    table[text] = table[text].map(inert)
    return table


def main(argv: list[str] | None = None) -> int:
    """Write the CSV the command line asks for; returns the exit status (2: one line on
    stderr says why not)."""
    quiet_libraries()
    parser = command_line("python -m analysis.export", __doc__)
    parser.add_argument("--out", default="trials.csv", help="the CSV file to write (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        table = inert_table(trial_table(load(args)))
        table.to_csv(args.out, index=False, lineterminator="\r\n")  # RFC 4180: a cell holding \r is quoted
    except (ValueError, OSError) as error:
        print(f"{parser.prog}: error: {error_line(error)}", file=sys.stderr)
        return 2
    print(f"{args.out}: {count(len(table), 'trial')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
