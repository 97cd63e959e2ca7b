"""Analysis of finished sweeps: pure functions on tidy frames of trial results, with no
plotting and no I/O, so a report (or a notebook) can load results however it likes and
call them. `analysis.stats` turns confirm-stage results (one row per optimizer, config and
seed) into per-optimizer intervals and seed-paired comparisons against a reference
optimizer, Holm-corrected, so that a claim that one optimizer beats another rests on
several seeds and an interval.
"""
