"""The learning-rate schedule: one multiplier of the peak lr per optimizer step (torch's
LambdaLR takes it). Plain Python (no torch), so TrialConfig names the schedules from here."""

from __future__ import annotations

import math

STEP_DECAY_FACTOR = 0.75  # the seed's StepLR(step_epochs, 0.75)


def _step_decay(steps_after_warmup: int, step_steps: int, decay_steps: int) -> float:
    return STEP_DECAY_FACTOR ** (steps_after_warmup // step_steps)


def _cosine(steps_after_warmup: int, step_steps: int, decay_steps: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(1.0, steps_after_warmup / max(1, decay_steps))))


# The schedules after warm-up, by the name TrialConfig's `schedule` takes.
SCHEDULES = {"step": _step_decay, "cosine": _cosine}


def lr_factor(step: int, *, schedule: str, warmup_steps: int, steps_per_epoch: int,
              total_steps: int, step_epochs: int = 30) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based).

    Linear warm-up from 1/warmup_steps (the seed started at 0, a wasted epoch) to 1,
    then the schedule: x0.75 every `step_epochs` epochs, or a cosine to 0 at the last step.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return SCHEDULES[schedule](step - warmup_steps, step_epochs * steps_per_epoch,
                                total_steps - warmup_steps)
