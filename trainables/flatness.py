"""Flatness diagnostics of a trained model: the curvature and sharpness of its training loss.

Measured on a fixed, seeded subset of the training images (`subset_batches`; normalised,
not augmented), with BatchNorm in eval mode (its running statistics, as PyHessian
measures) and in float32, through a `landscape`: the loss at offsets from the weights.
Afterwards the model's weights and buffers hold their values bit for bit again, and its
train/eval mode too.

Invariant to a rescaling of the weights that leaves the function as it is, because their
perturbations scale with the weights: a conv layer's weights x2 with the BatchNorm after
it (the adaptive two also for a ReLU unit's incoming weights x a and outgoing ones / a,
which the profile's per-filter norms do not follow):
- `worst_case_sharpness(adaptive=True)`: the largest loss increase found by projected,
  normalised gradient ascent over offsets |w| * u with ||u|| <= r (ASAM's and Kwon et al.'s
  adaptive sharpness), from a small random start (the gradient vanishes at a minimum).
- `adaptive_average_sharpness`: E[L(w + delta)] - L(w) with delta_i = r |w_i| z_i, z
  standard normal (Andriushchenko et al., 2023), with its Monte-Carlo standard error.
- `loss_profile`: the loss along a filter-normalised random direction (Li et al., 2018).

Not invariant (rescaling moves them; reported beside the others, labelled so):
- `curvature`: the Hessian's largest eigenvalue, by Lanczos with full reorthogonalisation
  on Hessian-vector products, with its residual bound; and its trace, exact on Lanczos'
  Krylov basis plus Hutchinson's estimate with Rademacher probes on the rest (Hutch++'s
  deflation), with its standard error.
- `worst_case_sharpness`: the same ascent over offsets u with ||u|| <= r, from the top
  eigenvector.

Hessian-vector products come from double backward (torch.autograd), over the subset in
batches (the Hessian of the mean loss is the batch-size-weighted mean of the batches'):
no library beyond torch, so the GPU check runs these with torch alone. The linear
algebra on the Krylov basis runs in float64.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

Batches = Sequence[tuple[Tensor, Tensor]]  # (inputs, targets) on the model's device
Criterion = Callable[[Tensor, Tensor], Tensor]  # mean loss of a batch


@dataclass(frozen=True)
class Flatness:
    """The diagnostics of one model (see the module docstring); losses are mean training
    losses on the subset, sharpness values are loss increases."""

    loss: float
    weight_norm: float  # ||w||, the L2 norm of every trainable parameter together
    top_eigenvalue: float
    eigenvalue_residual: float  # Lanczos' bound |beta_m s_m| on |H v - lambda v|
    trace: float
    trace_se: float
    probes: int
    radius: float
    worst_sharpness: float
    adaptive_worst_sharpness: float
    adaptive_average_sharpness: float
    adaptive_average_se: float  # standard error over the draws
    profile: tuple[tuple[float, float], ...]  # (step along the direction, loss)

    def metrics(self) -> dict[str, float]:
        """The scalar diagnostics by metric name (trainables.schema.FLATNESS_METRICS but
        flatness_seconds, which the caller times: what a confirm run logs)."""
        return {"flat_loss": self.loss, "weight_norm": self.weight_norm,
                "hessian_top_eig": self.top_eigenvalue, "hessian_top_eig_residual": self.eigenvalue_residual,
                "hessian_trace": self.trace, "hessian_trace_se": self.trace_se,
                "sharpness_worst": self.worst_sharpness, "sharpness_adaptive_worst": self.adaptive_worst_sharpness,
                "sharpness_adaptive_average": self.adaptive_average_sharpness,
                "sharpness_adaptive_average_se": self.adaptive_average_se, "sharpness_radius": self.radius}


def precision(metrics: Mapping[str, float]) -> tuple[float, float]:
    """How precise a run's curvature metrics are: Lanczos' residual bound as a share of the
    top eigenvalue, and Hutchinson's SE as a share of the trace (the report calls them
    rough above 10% and 30%: analysis.flatness)."""
    return (metrics["hessian_top_eig_residual"] / abs(metrics["hessian_top_eig"]),
            metrics["hessian_trace_se"] / abs(metrics["hessian_trace"]))


def precision_text(residual: float, trace_se: float) -> str:
    """`precision`'s two shares in words."""
    return f"Lanczos residual {residual:.1%} of the top eigenvalue, trace SE {trace_se:.1%} of the trace"


def subset_batches(data, size: int = 2048, batch_size: int = 512, seed: int = 0,
                   device: torch.device | str = "cpu") -> list[tuple[Tensor, Tensor]]:
    """A fixed, seeded subset of `size` training images of `data` (a trainables.data
    ImageData; all of them if fewer), normalised as the model saw them and not augmented,
    in batches on `device`."""
    from trainables.batching import normalize

    generator = torch.Generator().manual_seed(seed)
    count = len(data.train_labels)
    chosen = torch.randperm(count, generator=generator)[:min(size, count)].sort().values
    images = data.train_images[chosen.to(data.train_images.device)]
    labels = data.train_labels[chosen.to(data.train_labels.device)]
    return [(normalize(images[i:i + batch_size].to(device), data.mean, data.std),
             labels[i:i + batch_size].to(device)) for i in range(0, len(chosen), batch_size)]


# ---- the loss around the weights -----------------------------------------------------------

class Landscape:
    """The mean training loss over `batches` at offsets from the model's weights (`origin`,
    copies of `params`, the parameters that require gradients), inside `landscape`: losses,
    gradients and Hessian-vector products. The loss at the weights is computed once
    (`base`)."""

    def __init__(self, model: nn.Module, params: list[Tensor], origin: list[Tensor], batches: Batches,
                 criterion: Criterion):
        self.model, self.params, self.origin = model, params, origin
        self.batches, self.criterion = batches, criterion
        self.count = sum(len(y) for _, y in batches)
        self.size = sum(p.numel() for p in params)
        self.base = self.loss()

    def _weighted(self, x: Tensor, y: Tensor) -> Tensor:
        """A batch's loss, weighted so the batches' sum is the subset's mean loss."""
        return self.criterion(self.model(x), y) * (len(y) / self.count)

    def move(self, offset: list[Tensor]) -> None:
        """Set the weights to origin + offset."""
        with torch.no_grad():
            for p, w, e in zip(self.params, self.origin, offset):
                p.copy_(w + e)

    def loss(self) -> float:
        """The mean loss at the current weights (host sync: one read)."""
        with torch.no_grad():
            return float(sum(self._weighted(x, y) for x, y in self.batches))

    def loss_and_gradient(self) -> tuple[float, list[Tensor]]:
        """The mean loss and its gradient at the current weights, from one forward and one
        backward per batch (host sync: one read)."""
        loss, total = 0.0, [torch.zeros_like(p) for p in self.params]
        for x, y in self.batches:
            value = self._weighted(x, y)
            total = [t + g for t, g in zip(total, torch.autograd.grad(value, self.params))]
            loss = loss + value.detach()
        return float(loss), total

    def hessian(self) -> Callable[[list[Tensor]], list[Tensor]]:
        """v -> H v at the origin, by double backward batch by batch (call before `move`).
        With one batch its gradient's graph is built once and kept for every product,
        saving a forward and a backward (about a third of a product); with several, keeping
        them would hold every batch's graph in memory at once, so each product rebuilds
        them."""
        kept = (torch.autograd.grad(self._weighted(*self.batches[0]), self.params, create_graph=True)
                if len(self.batches) == 1 else None)

        def product(vector: list[Tensor]) -> list[Tensor]:
            total = [torch.zeros_like(p) for p in self.params]
            for x, y in self.batches:
                grads = kept or torch.autograd.grad(self._weighted(x, y), self.params, create_graph=True)
                dot = torch.cat([g.reshape(-1) for g in grads]) @ torch.cat([v.reshape(-1) for v in vector])
                hv = torch.autograd.grad(dot, self.params, retain_graph=kept is not None)
                total = [t + h for t, h in zip(total, hv)]
            return total
        return product


@contextlib.contextmanager
def landscape(model: nn.Module, batches: Batches, criterion: Criterion) -> Iterator[Landscape]:
    """The model's loss landscape on `batches` (a `Landscape`), the model in eval mode, for
    the diagnostics below; on leaving, its parameters and buffers hold their exact values
    again (the copies taken on entry, which are also the landscape's origin) and its mode
    is restored."""
    tensors = (*model.parameters(), *model.buffers())
    saved = [t.detach().clone() for t in tensors]
    training = model.training
    model.eval()
    try:
        trained = [(p, w) for p, w in zip(model.parameters(), saved) if p.requires_grad]
        yield Landscape(model, [p for p, _ in trained], [w for _, w in trained], batches, criterion)
    finally:
        with torch.no_grad():
            for tensor, value in zip(tensors, saved):
                tensor.copy_(value)
        model.train(training)


def _flat(tensors: list[Tensor]) -> Tensor:
    """One float64 vector on the host from per-parameter tensors (host sync: a copy)."""
    return torch.cat([t.reshape(-1).double().cpu() for t in tensors])


def _unflat(flat: Tensor, like: list[Tensor]) -> list[Tensor]:
    out, start = [], 0
    for t in like:
        out.append(flat[start:start + t.numel()].view_as(t).to(device=t.device, dtype=t.dtype))
        start += t.numel()
    return out


# ---- curvature -----------------------------------------------------------------------------

class Curvature(NamedTuple):
    """The Hessian's largest eigenvalue with Lanczos' residual bound |beta_m s_m| on
    |H v - lambda v| and its Ritz vector v (unit norm, float64 on the host), and the trace
    estimate with its standard error."""

    top_eigenvalue: float
    eigenvalue_residual: float
    top_eigenvector: Tensor
    trace: float
    trace_se: float


def curvature(land: Landscape, lanczos_steps: int = 20, probes: int = 20, seed: int = 0) -> Curvature:
    """The Hessian's top eigenvalue by `lanczos_steps` steps of Lanczos from a seeded
    Rademacher start, and its trace as Hutch++ deflates it (Meyer et al., 2021): exact on
    the Krylov basis Q that Lanczos built (tr Q'HQ, the sum of its diagonal), plus
    Hutchinson's estimate on the rest, the mean of z'(I - QQ')H(I - QQ')z over `probes`
    further seeded Rademacher z, with that mean's standard error. The few large
    eigenvalues, which make plain Hutchinson noisy, are what Q holds: on a quickstart
    res20s, 8 steps and 4 probes gave an SE of 2-5% of the trace, 16 plain probes 13-17%.
    lanczos_steps + probes products. Call before moving the weights."""
    product = land.hessian()
    generator = torch.Generator().manual_seed(seed)
    start = _rademacher(land.size, generator) / math.sqrt(land.size)
    krylov = _lanczos(product, land.params, start, lanczos_steps)
    samples = []
    for _ in range(probes):
        z = _rademacher(land.size, generator)
        z -= krylov.basis @ (krylov.basis.T @ z)  # the part outside the Krylov space
        samples.append(float(_flat(product(_unflat(z, land.params))) @ z))
    rest = torch.tensor(samples, dtype=torch.float64)
    return Curvature(krylov.top_eigenvalue, krylov.residual, krylov.basis @ krylov.ritz,
                     sum(krylov.alphas) + float(rest.mean()), _standard_error(rest))


def _rademacher(size: int, generator: torch.Generator) -> Tensor:
    """A seeded vector of +-1 (float64)."""
    return torch.randint(0, 2, (size,), generator=generator, dtype=torch.float64) * 2 - 1


class _Krylov(NamedTuple):
    basis: Tensor  # orthonormal columns q_i, float64 on the host
    alphas: list[float]  # q_i' H q_i
    top_eigenvalue: float
    residual: float
    ritz: Tensor  # the top eigenvalue's eigenvector in the basis


def _lanczos(product: Callable[[list[Tensor]], list[Tensor]], params: list[Tensor], start: Tensor,
             steps: int) -> _Krylov:
    """`steps` steps of Lanczos from the unit vector `start` (fewer where the Krylov space
    is exhausted), with full reorthogonalisation: the basis is kept in float64 on the host
    (steps x parameters x 8 bytes)."""
    basis, alphas, betas = [start], [], []
    for _ in range(max(1, min(steps, len(start)))):
        w = _flat(product(_unflat(basis[-1], params)))
        alphas.append(float(w @ basis[-1]))
        for b in basis:  # full reorthogonalisation: Lanczos loses it in finite precision
            w -= (w @ b) * b
        betas.append(float(w.norm()))
        if betas[-1] < 1e-12 * max(1.0, *map(abs, alphas)):
            break  # an invariant subspace: the Ritz values are eigenvalues
        basis.append(w / betas[-1])
    tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    off = torch.tensor(betas[:-1], dtype=torch.float64)
    tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
    values, vectors = torch.linalg.eigh(tridiagonal)
    return _Krylov(torch.stack(basis[:len(alphas)], 1), alphas, float(values[-1]),
                   abs(betas[-1] * float(vectors[-1, -1])), vectors[:, -1])


# ---- sharpness -----------------------------------------------------------------------------

def worst_case_sharpness(land: Landscape, radius: float, steps: int = 5, adaptive: bool = False,
                         seed: int = 0, start: Tensor | None = None) -> float:
    """The largest loss increase found inside the ball {s * u : ||u|| <= radius} (s = 1, or
    |w| with `adaptive`: ASAM's and Kwon et al.'s adaptive sharpness) by `steps` of
    projected ascent along the normalised gradient in u, step 2 * radius / steps; the loss
    is read at every point visited. Never negative: the weights themselves are in the ball.
    It starts at `start` (a flat vector in u; the top eigenvector from `curvature`, where a
    quadratic's worst case lies) scaled to the ball's edge, in whichever sign raises the
    loss more (two forwards), or else at a seeded random point of norm radius / 10 (the
    gradient vanishes at a minimum)."""
    scales = [w.abs() if adaptive else torch.ones_like(w) for w in land.origin]

    def scaled(u: Tensor) -> list[Tensor]:
        return [s * e for s, e in zip(scales, _unflat(u, land.params))]

    best, u = 0.0, _start(land.size, radius, seed, start)
    if start is not None:
        rises = []
        for sign in (1, -1):
            land.move(scaled(sign * u))
            rises.append(land.loss() - land.base)
        best, u = max(0.0, *rises), u if rises[0] >= rises[1] else -u
    for _ in range(steps):
        land.move(scaled(u))
        loss, gradient = land.loss_and_gradient()
        best = max(best, loss - land.base)
        g = _flat([s * d for s, d in zip(scales, gradient)])
        if g.norm() == 0:
            return best
        u = u + (2 * radius / steps) * g / g.norm()
        u *= min(1.0, radius / float(u.norm()))  # back onto the ball
    land.move(scaled(u))
    return max(best, land.loss() - land.base)


def _start(size: int, radius: float, seed: int, direction: Tensor | None) -> Tensor:
    """`direction` at norm `radius`, or a seeded Gaussian point at norm radius / 10."""
    if direction is not None:
        return direction * (radius / direction.norm())
    u = torch.randn(size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return u * (radius / 10 / u.norm())


def adaptive_average_sharpness(land: Landscape, radius: float, draws: int = 10,
                               seed: int = 0) -> tuple[float, float]:
    """E[L(w + delta)] - L(w) for delta_i = radius * |w_i| * z_i, z standard normal
    (Andriushchenko et al., 2023's adaptive average-case sharpness), and its standard
    error: the mean over `draws` seeded z, each taken both ways (+delta and -delta:
    antithetic pairs, so the gradient's term, zero on average but large for few draws,
    cancels within each pair), the error over the pairs' means (NaN for one draw). Two
    forwards a draw."""
    generator = torch.Generator().manual_seed(seed)
    scales = radius * _flat(land.origin).abs()
    pairs = []
    for _ in range(draws):
        delta = scales * torch.randn(land.size, generator=generator, dtype=torch.float64)
        rises = []
        for sign in (1, -1):
            land.move(_unflat(sign * delta, land.params))
            rises.append(land.loss() - land.base)
        pairs.append(sum(rises) / 2)
    values = torch.tensor(pairs, dtype=torch.float64)
    return float(values.mean()), _standard_error(values)


def _standard_error(values: Tensor) -> float:
    """The standard error of the mean of `values` (NaN for fewer than two)."""
    return float(values.std(unbiased=True) / math.sqrt(len(values))) if len(values) > 1 else math.nan


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


def loss_profile(land: Landscape, points: int = 21, span: float = 1.0,
                 seed: int = 0) -> tuple[tuple[float, float], ...]:
    """The loss at w + t d for `points` values of t evenly from -span to span (t = 0
    exactly, the weights' loss), d a filter-normalised direction
    (`filter_normalized_direction`)."""
    direction = filter_normalized_direction(land.origin, seed)
    profile = []
    for t in (span * (2 * i / (points - 1) - 1) for i in range(points)):
        land.move([t * d for d in direction])
        profile.append((t, land.loss() if t else land.base))
    return tuple(profile)


def measure(model: nn.Module, batches: Batches, criterion: Criterion, *, radius: float = 0.05,
            probes: int = 20, lanczos_steps: int = 20, directions: int = 10, ascent_steps: int = 5,
            seed: int = 0) -> Flatness:
    """Every diagnostic of the module docstring, on the same batches, seeded; `directions`
    is the adaptive average-case sharpness' draws."""
    with landscape(model, batches, criterion) as land:
        curved = curvature(land, lanczos_steps, probes, seed=seed)  # first: at the weights
        average, average_se = adaptive_average_sharpness(land, radius, directions, seed=seed)
        return Flatness(
            loss=land.base, weight_norm=float(_flat(land.origin).norm()),
            top_eigenvalue=curved.top_eigenvalue, eigenvalue_residual=curved.eigenvalue_residual,
            trace=curved.trace, trace_se=curved.trace_se, probes=probes, radius=radius,
            worst_sharpness=worst_case_sharpness(land, radius, ascent_steps, start=curved.top_eigenvector),
            adaptive_worst_sharpness=worst_case_sharpness(land, radius, ascent_steps, adaptive=True, seed=seed),
            adaptive_average_sharpness=average, adaptive_average_se=average_se,
            profile=loss_profile(land, seed=seed))
