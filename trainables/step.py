"""One training step, written once for one-pass optimizers and the two-pass SAM family.

The training loop (`trainables.train`), the throughput benchmark and the optimizer tests
all step through `optimizer_step`, so the order of a SAM-family step lives in one place.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from trainables.optim import frozen_bn_stats

__all__ = ["optimizer_step"]

# Computes (outputs, loss) of the batch at the model's current weights.
Forward = Callable[[], tuple[Tensor, Tensor]]


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, forward: Forward,
                   passes: int) -> tuple[Tensor, Tensor]:
    """One optimizer step; returns the first pass's (outputs, loss), detached.

    model: the module whose BatchNorm layers `forward` runs (the plain module when
        `forward` calls a `torch.compile` wrapper of it).
    forward: (outputs, loss) of the batch at the current weights; autocast, if any, goes
        inside it (the backward runs outside autocast, as torch recommends).
    passes: the registry's `get_optimizer_info(name).passes_per_step`: 1, or 2 for the
        SAM family (a `first_step` / `second_step` optimizer).

    `.grad` must be empty (None) on entry and is left empty. The order of operations:
    1. `forward()`, backward: the gradient g at the weights w.
    With passes == 1:
    2. `optimizer.step()`, then `optimizer.zero_grad(set_to_none=True)`.
    With passes == 2:
    2. `optimizer.first_step(zero_grad=True)`: w -> w + e (e from g), `.grad` emptied;
    3. `forward()` again with BatchNorm statistics frozen, backward: the gradient at w + e;
    4. `optimizer.second_step(zero_grad=True)`: w restored bit for bit, the base optimizer
       steps with the gradient taken at w + e, `.grad` emptied.
    BatchNorm's running statistics are frozen in the second pass because the first pass
    already counted this batch at the weights that are kept; a second update would count
    every batch twice, with activations of the perturbed weights w + e that are thrown
    away (the seed's defect). The second pass still normalises with the batch's own
    statistics, so its gradient is that of the same training-mode loss.

    No host sync: nothing here reads a tensor's value.
    """
    outputs, loss = forward()
    loss.backward()
    if passes == 2:
        optimizer.first_step(zero_grad=True)
        with frozen_bn_stats(model):
            forward()[1].backward()
        optimizer.second_step(zero_grad=True)
    else:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return outputs.detach(), loss.detach()
