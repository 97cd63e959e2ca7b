"""Analysis of finished sweeps, reading only what a sweep left behind (MLflow, Ray storage).

`analysis.load` turns a sweep into tidy frames; `analysis.stats` turns confirm-stage results
(one row per optimizer, replicate and seed, with the test examples each run got right)
into per-optimizer intervals and paired comparisons from a hierarchical bootstrap over
replicates, seeds and test examples, so that a claim that one tuned pipeline beats another
holds on a rerun; `analysis.verdict` decides which runs are compared in each budget arm
(the primary contrast alone, every other test one Holm family); `analysis.warnings` says where the results could mislead; `analysis.summary`
(the console) and `analysis.report` (HTML, with plots) present them. The report's page
shows the figures registered in `analysis.figures`, with `analysis.tables`, all drawn from
inputs computed once per report (`analysis.inputs`).
"""

import os

# No MLflow usage telemetry from a report, an export or a notebook: reading a sweep sends
# nothing anywhere (tune/ says the same for the sweep).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
