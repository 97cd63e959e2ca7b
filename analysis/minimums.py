"""How much evidence the analysis asks for before it shows an estimate (the report, the
notebooks and the summary apply the same rules). Standard library only: the report's
command line reads these for its defaults without importing pandas."""

# fANOVA's importances from fewer finished search trials of one optimizer are noise.
MIN_IMPORTANCE_TRIALS = 5
