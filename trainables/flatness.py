"""Flatness diagnostics of a trained model: the curvature and sharpness of its training loss.

Measured on a fixed, seeded subset of the training images (`subset_batches`; normalised,
not augmented), with BatchNorm in inference mode and in float32. The model's weights and
buffers are restored bit for bit afterwards, and its train/eval mode too (`_untouched`).

- `top_eigenvalue`: the Hessian's largest eigenvalue, by Lanczos with full
  reorthogonalisation on Hessian-vector products, with the residual bound it converged to.
- `hessian_trace`: Hutchinson's estimate with Rademacher probes, and its standard error.
- `worst_case_sharpness`: the largest loss increase found by projected, normalised
  gradient ascent inside an L2 ball of radius r (from a small random start, since the
  gradient vanishes at a minimum); `adaptive=True` measures the ball in weights scaled by
  |w| (ASAM's and Kwon et al.'s adaptive sharpness).
- `average_sharpness`: the mean loss increase over random directions of norm r (each
  taken both ways).
- `loss_profile`: the loss along a filter-normalised random direction (Li et al., 2018).

Hessian-vector products come from double backward (torch.autograd), over the subset in
batches (the Hessian of the mean loss is the batch-size-weighted mean of the batches'):
no library beyond torch, so the GPU check runs these with torch alone. The linear
algebra on the Krylov basis runs in float64.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from trainables.schema import FLATNESS_METRICS

Batches = Sequence[tuple[Tensor, Tensor]]  # (inputs, targets) on the model's device
Criterion = Callable[[Tensor, Tensor], Tensor]  # mean loss of a batch


@dataclass(frozen=True)
class Flatness:
    """The diagnostics of one model (see the module docstring); losses are mean training
    losses on the subset, sharpness values are loss increases."""

    loss: float
    top_eigenvalue: float
    eigenvalue_residual: float  # Lanczos' bound |beta_m s_m| on |H v - lambda v|
    trace: float
    trace_se: float
    probes: int
    radius: float
    worst_sharpness: float
    adaptive_worst_sharpness: float
    average_sharpness: float
    profile: tuple[tuple[float, float], ...]  # (step along the direction, loss)

    def metrics(self) -> dict[str, float]:
        """The scalar diagnostics by metric name (trainables.schema.FLATNESS_METRICS, what a
        confirm run logs)."""
        values = (self.loss, self.top_eigenvalue, self.eigenvalue_residual, self.trace, self.trace_se,
                  self.worst_sharpness, self.adaptive_worst_sharpness, self.average_sharpness, self.radius)
        return dict(zip(FLATNESS_METRICS, values))


def subset_batches(data, size: int = 2048, batch_size: int = 512, seed: int = 0,
                   device: torch.device | str = "cpu") -> list[tuple[Tensor, Tensor]]:
    """A fixed, seeded subset of `size` training images of `data` (a trainables.data
    ImageData; all of them if fewer), normalised as the model saw them and not augmented,
    in batches on `device`."""
    from trainables.data import normalize

    generator = torch.Generator().manual_seed(seed)
    count = len(data.train_labels)
    chosen = torch.randperm(count, generator=generator)[:min(size, count)].sort().values
    images = data.train_images[chosen.to(data.train_images.device)]
    labels = data.train_labels[chosen.to(data.train_labels.device)]
    return [(normalize(images[i:i + batch_size].to(device), data.mean, data.std),
             labels[i:i + batch_size].to(device)) for i in range(0, len(chosen), batch_size)]


# ---- the model, untouched ------------------------------------------------------------------

@contextlib.contextmanager
def _untouched(model: nn.Module) -> Iterator[list[Tensor]]:
    """The model in eval mode, float32, for the diagnostics; afterwards its parameters and
    buffers hold their exact values again and its mode is restored. Yields the parameters
    that require gradients."""
    saved = [t.detach().clone() for t in (*model.parameters(), *model.buffers())]
    training = model.training
    model.eval()
    try:
        yield [p for p in model.parameters() if p.requires_grad]
    finally:
        with torch.no_grad():
            for tensor, value in zip((*model.parameters(), *model.buffers()), saved):
                tensor.copy_(value)
        model.train(training)


def _loss(model: nn.Module, batches: Batches, criterion: Criterion) -> float:
    """The mean loss over `batches` (host sync: one read per call)."""
    with torch.no_grad():
        total = sum(criterion(model(x), y) * len(y) for x, y in batches)
    return float(total) / sum(len(y) for _, y in batches)


def _gradient(model: nn.Module, params: list[Tensor], batches: Batches, criterion: Criterion) -> list[Tensor]:
    """The gradient of the mean loss over `batches`, batch by batch."""
    count = sum(len(y) for _, y in batches)
    total = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        grads = torch.autograd.grad(criterion(model(x), y) * (len(y) / count), params)
        total = [t + g for t, g in zip(total, grads)]
    return total


def hvp(model: nn.Module, params: list[Tensor], batches: Batches, criterion: Criterion,
        vector: list[Tensor]) -> list[Tensor]:
    """The Hessian of the mean loss over `batches` times `vector` (one tensor per parameter),
    by double backward, batch by batch."""
    count = sum(len(y) for _, y in batches)
    total = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        loss = criterion(model(x), y) * (len(y) / count)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * v).sum() for g, v in zip(grads, vector))
        total = [t + h for t, h in zip(total, torch.autograd.grad(dot, params))]
    return total


def _flat(tensors: list[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflat(flat: Tensor, like: list[Tensor]) -> list[Tensor]:
    out, start = [], 0
    for t in like:
        out.append(flat[start:start + t.numel()].view_as(t).to(device=t.device, dtype=t.dtype))
        start += t.numel()
    return out


# ---- curvature -----------------------------------------------------------------------------

def top_eigenvalue(model: nn.Module, batches: Batches, criterion: Criterion, steps: int = 20,
                   tol: float = 1e-3, seed: int = 0) -> tuple[float, float]:
    """(largest Hessian eigenvalue, its residual bound), by Lanczos from a seeded random
    start, stopping early once the bound is below `tol` times the eigenvalue. The Krylov
    basis is kept and reorthogonalised in float64 (steps x parameters x 8 bytes)."""
    with _untouched(model) as params:
        n = sum(p.numel() for p in params)
        generator = torch.Generator().manual_seed(seed)
        q = torch.randn(n, generator=generator, dtype=torch.float64)
        basis = [q / q.norm()]
        alphas, betas = [], []
        value, residual = 0.0, math.inf
        for _ in range(min(steps, n)):
            w = _flat(hvp(model, params, batches, criterion, _unflat(basis[-1], params))).double().cpu()
            alphas.append(float(w @ basis[-1]))
            for b in basis:  # full reorthogonalisation: Lanczos loses it in finite precision
                w -= (w @ b) * b
            beta = float(w.norm())
            tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
            if betas:
                off = torch.tensor(betas, dtype=torch.float64)
                tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
            values, vectors = torch.linalg.eigh(tridiagonal)
            value, residual = float(values[-1]), abs(beta * float(vectors[-1, -1]))
            if residual <= tol * abs(value) or beta < 1e-12 * max(1.0, abs(value)):
                break
            betas.append(beta)
            basis.append(w / beta)
        return value, residual


def hessian_trace(model: nn.Module, batches: Batches, criterion: Criterion, probes: int = 20,
                  seed: int = 0) -> tuple[float, float]:
    """(Hutchinson's estimate of the Hessian's trace, its standard error) from `probes`
    seeded Rademacher vectors v: the mean of v' H v."""
    with _untouched(model) as params:
        generator = torch.Generator().manual_seed(seed)
        samples = []
        for _ in range(probes):
            v = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p) for p in params]
            hv = hvp(model, params, batches, criterion, v)
            samples.append(float(sum((a * b).sum() for a, b in zip(v, hv))))
        values = torch.tensor(samples, dtype=torch.float64)
        se = float(values.std(unbiased=True) / math.sqrt(probes)) if probes > 1 else math.nan
        return float(values.mean()), se


# ---- sharpness -----------------------------------------------------------------------------

def _scales(params: list[Tensor], adaptive: bool) -> list[Tensor]:
    """Per-entry scale of the ball: 1, or |w| (adaptive)."""
    return [p.detach().abs() if adaptive else torch.ones_like(p) for p in params]


def _set(params: list[Tensor], origin: list[Tensor], offset: list[Tensor]) -> None:
    with torch.no_grad():
        for p, w, e in zip(params, origin, offset):
            p.copy_(w + e)


def worst_case_sharpness(model: nn.Module, batches: Batches, criterion: Criterion, radius: float,
                         steps: int = 5, adaptive: bool = False, seed: int = 0) -> float:
    """The largest loss increase found inside the ball {s * u : ||u|| <= radius} (s = 1, or
    |w| with `adaptive`) by `steps` of projected ascent along the normalised gradient in u,
    step 2 * radius / steps, from a seeded start of norm radius / 10. Never negative: the
    unperturbed weights are in the ball."""
    with _untouched(model) as params:
        origin = [p.detach().clone() for p in params]
        scales = _scales(params, adaptive)
        base = _loss(model, batches, criterion)
        generator = torch.Generator().manual_seed(seed)
        u = _flat([torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in params])
        u *= radius / 10 / u.norm()
        best = 0.0
        for _ in range(steps):
            _set(params, origin, [s * e for s, e in zip(scales, _unflat(u, params))])
            g = _flat([s * d for s, d in zip(scales, _gradient(model, params, batches, criterion))]).double().cpu()
            if g.norm() == 0:
                break
            u = u + (2 * radius / steps) * g / g.norm()
            u *= min(1.0, radius / float(u.norm()))  # back onto the ball
            _set(params, origin, [s * e for s, e in zip(scales, _unflat(u, params))])
            best = max(best, _loss(model, batches, criterion) - base)
        return best


def average_sharpness(model: nn.Module, batches: Batches, criterion: Criterion, radius: float,
                      directions: int = 10, seed: int = 0) -> float:
    """The mean loss increase at `directions` seeded Gaussian directions scaled to norm
    `radius`, each taken both ways (+d and -d: antithetic pairs, so the gradient's term,
    zero on average but large for few directions, cancels within each pair)."""
    with _untouched(model) as params:
        origin = [p.detach().clone() for p in params]
        base = _loss(model, batches, criterion)
        generator = torch.Generator().manual_seed(seed)
        increases = []
        for _ in range(directions):
            d = _flat([torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in params])
            for sign in (1, -1):
                _set(params, origin, _unflat(d * (sign * radius / d.norm()), params))
                increases.append(_loss(model, batches, criterion) - base)
        return sum(increases) / len(increases)


def filter_normalized_direction(params: list[Tensor], seed: int = 0) -> list[Tensor]:
    """A seeded Gaussian direction, each filter (a weight's slice along its first axis)
    scaled to the norm of the same filter of the weights; vectors (biases, BatchNorm's
    affine parameters) get no direction (Li et al., 2018)."""
    generator = torch.Generator().manual_seed(seed)
    direction = []
    for p in params:
        d = torch.randn(p.shape, generator=generator).to(p)
        if p.dim() <= 1:
            direction.append(torch.zeros_like(p))
            continue
        dims = tuple(range(1, p.dim()))
        norm = torch.linalg.vector_norm
        norms = norm(p.detach(), dim=dims, keepdim=True) / norm(d, dim=dims, keepdim=True).clamp_min(1e-12)
        direction.append(d * norms)
    return direction


def loss_profile(model: nn.Module, batches: Batches, criterion: Criterion, points: int = 21,
                 span: float = 1.0, seed: int = 0) -> tuple[tuple[float, float], ...]:
    """The loss at w + t d for `points` values of t evenly from -span to span, d a
    filter-normalised direction (`filter_normalized_direction`)."""
    with _untouched(model) as params:
        origin = [p.detach().clone() for p in params]
        direction = filter_normalized_direction(params, seed)
        profile = []
        for t in (span * (2 * i / (points - 1) - 1) for i in range(points)):  # t = 0 exactly
            _set(params, origin, [t * d for d in direction])
            profile.append((t, _loss(model, batches, criterion)))
        return tuple(profile)


def measure(model: nn.Module, batches: Batches, criterion: Criterion, *, radius: float = 0.05,
            probes: int = 20, lanczos_steps: int = 20, directions: int = 10, ascent_steps: int = 5,
            seed: int = 0) -> Flatness:
    """Every diagnostic of the module docstring, on the same batches, seeded."""
    with _untouched(model):
        loss = _loss(model, batches, criterion)
    value, residual = top_eigenvalue(model, batches, criterion, lanczos_steps, seed=seed)
    trace, se = hessian_trace(model, batches, criterion, probes, seed=seed)
    return Flatness(
        loss=loss, top_eigenvalue=value, eigenvalue_residual=residual, trace=trace, trace_se=se,
        probes=probes, radius=radius,
        worst_sharpness=worst_case_sharpness(model, batches, criterion, radius, ascent_steps, seed=seed),
        adaptive_worst_sharpness=worst_case_sharpness(model, batches, criterion, radius, ascent_steps,
                                                      adaptive=True, seed=seed),
        average_sharpness=average_sharpness(model, batches, criterion, radius, directions, seed=seed),
        profile=loss_profile(model, batches, criterion, seed=seed))
