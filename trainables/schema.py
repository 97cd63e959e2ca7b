"""What crosses the seams between a trial, the sweep and the analysis: metric names, status
words, budget arms, how a search picks each optimizer's best configuration, and how a
duration reads.

Plain Python (no torch, Ray, Optuna or MLflow), so `tune/`, `analysis/` and the notebooks
import it cheaply and none of them restates these facts.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping

# Reported with a confirm run's last epoch (trainables.flatness, TrialConfig.flatness_images):
# the training loss on the measured subset and ||w|| (the L2 norm of the trainable
# parameters); the measures invariant to a function-preserving rescaling of the weights,
# adaptive worst-case and adaptive average-case sharpness (with its Monte-Carlo standard
# error); those that rescaling moves, the Hessian's top eigenvalue (with Lanczos' residual
# bound), Hutchinson's trace (with its standard error) and worst-case sharpness; the
# sharpness radius, and the wall seconds it all took. Sharpness values are loss increases.
FLATNESS_METRICS = ("flat_loss", "weight_norm", "sharpness_adaptive_worst", "sharpness_adaptive_average",
                    "sharpness_adaptive_average_se", "hessian_top_eig", "hessian_top_eig_residual",
                    "hessian_trace", "hessian_trace_se", "sharpness_worst", "sharpness_radius",
                    "flatness_seconds")
# The loss along a filter-normalised direction, [[t, loss], ...]: kept as an artifact.
LOSS_PROFILE = "loss_profile"
# Which test examples a confirm run got right at its last epoch ("COUNT:BASE64" of the bits,
# `encode_correct`): kept as an artifact, so the verdict can resample test examples.
TEST_CORRECT = "test_correct"
# The most test examples such a record may hold when read back (untrusted): 2^20 bits, a
# 175 kB string.
MAX_TEST_EXAMPLES = 1 << 20

# Reported by a trial every epoch (trainables.train). val_* only where the validation split
# is evaluated (every search trial; a confirm run trained on train only), test_* only in
# confirm runs (eval_split "test"); perturbation_norm by the SAM family, kept_fraction and
# ascent_cosine (with SAM's ascent direction) by ZSharp.
METRICS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
           "lr", "epoch_time_s", "images_per_s", "grad_evals", "diverged", "perturbation_norm",
           "kept_fraction", "ascent_cosine", *FLATNESS_METRICS)

# The search decides on this metric (ASHA's rungs, the Optuna objective, finalists); the
# verdict is the final-epoch value of VERDICT_METRIC in confirm runs.
SEARCH_METRIC = "val_acc"
VERDICT_METRIC = "test_acc"

# How a trial ended, the words MLflow's `status` tag uses; "error" also marks the run FAILED.
STATUSES = ("completed", "stopped_early", "diverged", "error")
COMPLETED, STOPPED_EARLY, DIVERGED, ERROR = STATUSES
# The tag of a trial that has not ended: running, or stopped by a signal at its last
# checkpoint (its run KILLED until `--resume` continues it).
RUNNING, INTERRUPTED = "running", "interrupted"
UNFINISHED = (RUNNING, INTERRUPTED)

# Confirm-stage arms: every optimizer at the space's epochs, and the 1-pass optimizers
# again at (passes of the SAM family) x the epochs, so both spend the same gradient
# evaluations.
EQUAL_EPOCHS = "equal_epochs"
EQUAL_COMPUTE = "equal_compute"
BUDGET_ARMS = (EQUAL_EPOCHS, EQUAL_COMPUTE)


def trial_status(last_result: Mapping, planned_epochs: int, errored: bool) -> str:
    """How a finished trial ended: error, diverged, completed (ran its planned epochs) or
    stopped_early (ASHA stopped it before)."""
    if errored:
        return ERROR
    if last_result.get("diverged", 0) == 1:
        return DIVERGED
    return COMPLETED if last_result.get("epoch", 0) >= planned_epochs else STOPPED_EARLY


def final_metrics(last_result: Mapping) -> dict:
    """What a trial's last result says of its end: epochs run, and the final val and test
    accuracy (NaN where the trial did not evaluate the split)."""
    return {"epochs_run": int(last_result.get("epoch", 0)),
            "final_val_acc": float(last_result.get(SEARCH_METRIC, math.nan)),
            "final_test_acc": float(last_result.get(VERDICT_METRIC, math.nan))}


def trial_summary(last_result: Mapping, planned_epochs: int, errored: bool) -> dict:
    """How a trial ended, from its last result: status (`trial_status`) and `final_metrics`."""
    return {"status": trial_status(last_result, planned_epochs, errored), **final_metrics(last_result)}


def finalist_key(status: str, epochs_run: int, final_val_acc: float) -> tuple[int, float] | None:
    """Sort key (higher is better) of a search trial as a candidate for its optimizer's
    best configuration, or None if it is none (an error, a divergence, no accuracy).

    Trials are compared at equal epochs first: a trial ASHA stopped at epoch 2 is never
    preferred to one that ran the full budget, whatever its accuracy then. Among equals,
    the final-epoch validation accuracy decides (never the best epoch: the verdict, too,
    is read at the final epoch).
    """
    if status in (ERROR, DIVERGED) or final_val_acc is None or math.isnan(final_val_acc):
        return None
    return (int(epochs_run), float(final_val_acc))


def rank_finalists(rows: Iterable[Mapping]) -> list[Mapping]:
    """The candidates among `rows` (mappings with status, epochs_run and final_val_acc),
    best first by `finalist_key`; ties keep the rows' order (the earlier trial first)."""
    keyed = [(finalist_key(r["status"], r["epochs_run"], r["final_val_acc"]), i, r)
             for i, r in enumerate(rows)]
    ranked = sorted(((k, i, r) for k, i, r in keyed if k is not None),
                    key=lambda item: (-item[0][0], -item[0][1], item[1]))
    return [r for _, _, r in ranked]


def encode_correct(flags) -> str:
    """"COUNT:BASE64" of a 1-D boolean array (numpy or anything numpy reads): the bits
    packed first example first, high bit first (numpy's packbits), then base64. 10,000
    examples take 1,674 characters."""
    import numpy as np

    bits = np.asarray(flags, dtype=bool).ravel()
    return f"{bits.size}:{base64.b64encode(np.packbits(bits).tobytes()).decode('ascii')}"


def decode_correct(text):
    """The boolean array `encode_correct` wrote, or None for anything else: read as
    untrusted (at most MAX_TEST_EXAMPLES; strict base64; exactly the bytes the count
    needs; the pad bits zero)."""
    import numpy as np

    if not isinstance(text, str) or len(text) > 8 + 4 * (MAX_TEST_EXAMPLES // 24 + 1):
        return None
    count, _, encoded = text.partition(":")
    if not count.isdigit() or not 0 < int(count) <= MAX_TEST_EXAMPLES:
        return None
    try:
        packed = np.frombuffer(base64.b64decode(encoded, validate=True), dtype=np.uint8)
    except ValueError:  # binascii.Error is a ValueError
        return None
    count = int(count)
    if packed.size != -(-count // 8):
        return None
    bits = np.unpackbits(packed)
    return None if bits[count:].any() else bits[:count].astype(bool)


def count(n: int, noun: str) -> str:
    """A count with its noun, singular or plural: "1 seed", "3 seeds"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def duration_text(seconds: float) -> str:
    """A duration in the unit that reads: 45s, 12m05s, 3h20m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
