"""One trial: SAM-family optimizers, models, data sets and a training loop.

This package never imports Ray, Optuna or MLflow: `run_trial` runs the same in a test,
in a Ray worker and on a GPU machine that has only torch and torchvision.
"""
