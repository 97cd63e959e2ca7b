"""Analysis of finished sweeps, reading only what a sweep left behind (MLflow, Ray storage).

`analysis.load` turns a sweep into tidy frames; `analysis.stats` turns confirm-stage results
(one row per optimizer, config and seed) into per-optimizer intervals and seed-paired
comparisons, Holm-corrected, so that a claim that one optimizer beats another rests on
several seeds and an interval; `analysis.verdict` decides which runs are compared in each
budget arm; `analysis.warnings` says where the results could mislead; `analysis.summary`
(the console) and `analysis.report` (HTML, with plots) present them. The report's page
shows the figures registered in `analysis.figures`, with `analysis.tables`, all drawn from
inputs computed once per report (`analysis.inputs`).
"""
