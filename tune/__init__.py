"""The sweep: Ray Tune around `trainables.run_trial`, with an Optuna searcher and ASHA per
optimizer (equal budgets, tuned against tuned), checkpoints, fault tolerance and MLflow.

`launch.py` resolves a `SweepPlan` (tune.plan) and calls `run_sweep` (tune.sweep).
"""

import os

# Before Ray Tune is imported: experiment snapshots every second (a trial that finished two
# seconds before a crash is not rerun on resume), and no warning flood about them.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# The classic reporter honours verbose=0; tune.progress prints the concise lines instead.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# MLflow draws a progress bar on stderr for every artifact it downloads (the recorded plan).
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# No MLflow usage telemetry: a sweep sends nothing anywhere but its own tracking store
# (a cluster may have no internet), and the telemetry client's session-id variable in
# os.environ was seen to race the driver's tracking thread (a KeyError in runs/create).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# No Prometheus exporter in the local Ray's node agent: it listens on every interface without
# Ray's token (Ray binds it to loopback only for a loopback node IP, which ray.init refuses),
# and nothing here reads it. The autoscaler's and dashboard's own read-only exporters
# (ports 44217 and 44227) remain; every port that controls Ray checks the token.
os.environ.setdefault("RAY_enable_metrics_collection", "0")
