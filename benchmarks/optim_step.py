"""Speed of one optimizer step for the SAM family, and ZSharp against the seed's ZSharp.

Measures, on CPU in float32, with the parameter shapes of a CIFAR-100 ResNet-20 (`res20s`)
and of VGG16-BN (`vgg16_bn`):
- `first_step` alone (the ascent: compute e, save w, w += e), and
- a full step: `first_step` then at once `second_step` (restore w, base Adam step), timed
  in one go with `first_step` as the split; `step()` for the plain optimizers,
for sgd, adam, sam, asam, fsam and zsharp (registry defaults, base Adam) and for
`zsharp-seed`, a re-implementation of the seed repository's ZSharp written the way the
seed writes it (the baseline). Gradients are fresh random normal tensors every round,
copied into `.grad` before each timed call; no forward or backward pass runs: this times
the optimizer, not the model.

Runs are interleaved: each round times every variant once, in a shuffled order, so a
drift in machine speed hits all variants alike; warm-up rounds are run first and dropped.
The tables give medians over rounds in microseconds and ratios to SAM. The key figure is
zsharp first_step / zsharp-seed first_step (target <= 0.5 on ResNet-20), with the
quartiles of its per-round values. Before timing, the two ZSharp perturbations are checked
equal on the ResNet-20 shapes, so the comparison is of the same work.

Kernel launches: a small model's step on a GPU is bound by how many kernels it launches,
not by arithmetic. Each table ends with the aten operators (views excepted) one
`first_step` dispatches, counted on the `meta` device, where ZSharp takes its GPU path
(gathers, `topk`) and nothing is computed: each is at least one launch on a GPU. (Host
time on CPU is no proxy: there every foreach operator loops over the tensors.)

Run from the repository root:
    .venv/bin/python benchmarks/optim_step.py                 # both models, 30 rounds
    .venv/bin/python benchmarks/optim_step.py --smoke-test    # ResNet-20, 3 rounds, seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from trainables.models import create_model
from trainables.optim import create_optimizer

MODELS = ("res20s", "vgg16_bn")
NUM_CLASSES = 100  # CIFAR-100 heads
REGISTRY_VARIANTS = ("sgd", "adam", "sam", "asam", "fsam", "zsharp")
SEED_VARIANT = "zsharp-seed"
KEY_TARGET = 0.5  # wanted: zsharp first_step <= half the seed-style one on res20s

Timings = dict[str, dict[str, list[float]]]  # variant -> "first_step" | "full" -> seconds per round


class SeedStyleZSharp(torch.optim.Optimizer):
    """The seed repository's ZSharp, written the way the seed writes it: the baseline.

    Its costs, which the project's ZSharp avoids: a full sort per filtered tensor
    (`torch.quantile`), a host sync per filtered tensor (`if f.norm() > 0`, a Python branch
    on a tensor; on a GPU it stalls every layer), a fresh copy of every weight per step
    (`p.data.clone()`), and one kernel per operation per tensor.
    """

    def __init__(self, params, rho: float = 0.05, alpha: float = 0.95, **adam_kwargs):
        super().__init__(params, dict(rho=rho, alpha=alpha, **adam_kwargs))
        self.base_optimizer = torch.optim.Adam(self.param_groups, **adam_kwargs)
        self.param_groups = self.base_optimizer.param_groups

    def _grad_norm(self) -> Tensor:
        return torch.norm(torch.stack([p.grad.norm(2) for group in self.param_groups
                                       for p in group["params"] if p.grad is not None]), 2)

    @staticmethod
    def _ascent(grad: Tensor, rho: float, alpha: float, grad_norm: Tensor) -> Tensor:
        g = grad.clone()
        if g.ndim <= 1:
            return rho * g / (grad_norm + 1e-12)
        z = (g - g.mean()) / (g.std() + 1e-12)
        tau = torch.quantile(z.abs(), alpha)  # full sort of the tensor
        f = g * (z.abs() > tau)
        if f.norm() > 0:  # host sync
            return rho * f / (f.norm() + 1e-12)
        return rho * g / (grad_norm + 1e-12)

    @torch.no_grad()
    def first_step(self) -> None:
        grad_norm = self._grad_norm()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                e = self._ascent(p.grad, group["rho"], group["alpha"], grad_norm)
                self.state[p]["old_p"] = p.data.clone()
                p.add_(e)

    @torch.no_grad()
    def second_step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if "old_p" in self.state[p]:
                    p.data = self.state[p]["old_p"]
        self.base_optimizer.step()


def random_grads(params: list[Tensor], generator: torch.Generator) -> list[Tensor]:
    """Standard normal tensors shaped like `params` (float32, CPU)."""
    return [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in params]


def ascent_perturbation(optimizer, params: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
    """e from one `first_step` with `grads`, read off weights set to zero first.

    0 + e is e exactly, so the comparison sees e itself rather than e rounded into w.
    ZSharp's e does not depend on w, so zeroing changes nothing else.
    """
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.zero_()
            p.grad = g.clone()
    optimizer.first_step()
    return [p.detach().clone() for p in params]


def check_same_perturbation(model_name: str = "res20s", seed: int = 0) -> tuple[bool, float]:
    """(all tensors torch.allclose, largest absolute difference) between the project's
    and the seed-style ZSharp perturbation on `model_name`'s shapes."""
    model = create_model(model_name, NUM_CLASSES)
    params = list(model.parameters())
    grads = random_grads(params, torch.Generator().manual_seed(seed))
    project = ascent_perturbation(create_optimizer("zsharp", model), params, grads)
    seed_style = ascent_perturbation(SeedStyleZSharp(params), params, grads)
    same = all(torch.allclose(a, b) for a, b in zip(project, seed_style))
    max_diff = max((a - b).abs().max().item() for a, b in zip(project, seed_style))
    return same, max_diff


def build_variants(model: torch.nn.Module) -> dict[str, torch.optim.Optimizer]:
    """Every timed optimizer on the same parameters.

    Sharing one set of weights keeps memory at one model (VGG16-BN is 59 MB of float32);
    each optimizer keeps its own state, and the weights drifting by everyone's Adam steps
    changes no cost.
    """
    variants = {name: create_optimizer(name, model) for name in REGISTRY_VARIANTS}
    variants[SEED_VARIANT] = SeedStyleZSharp(model.parameters())
    return variants


def time_step(optimizer, params: list[Tensor], grads: list[Tensor]) -> dict[str, float]:
    """Seconds for one step with `grads` in `.grad`: "full", and "first_step" for the
    two-pass optimizers (those with a `first_step`)."""
    torch._foreach_copy_([p.grad for p in params], grads)  # outside the timed region
    if not hasattr(optimizer, "first_step"):
        start = time.perf_counter()
        optimizer.step()
        return {"full": time.perf_counter() - start}
    start = time.perf_counter()
    optimizer.first_step()
    ascent_done = time.perf_counter()
    optimizer.second_step()
    end = time.perf_counter()
    return {"first_step": ascent_done - start, "full": end - start}


def run_benchmark(model_name: str, rounds: int, warmup: int, seed: int = 0) -> Timings:
    """Per-round step times of every variant on `model_name`'s parameters, warm-up dropped."""
    model = create_model(model_name, NUM_CLASSES)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.zeros_like(p)
    variants = build_variants(model)
    order = list(variants)
    shuffler = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    timings: Timings = {name: {} for name in variants}
    for round_index in range(warmup + rounds):
        grads = random_grads(params, generator)  # one draw per round, the same for all variants
        shuffler.shuffle(order)
        for name in order:
            measured = time_step(variants[name], params, grads)
            if round_index >= warmup:
                for kind, seconds in measured.items():
                    timings[name].setdefault(kind, []).append(seconds)
    return timings


class _OperatorCount(TorchDispatchMode):
    """Counts the aten operators dispatched inside, views excepted."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += not func.is_view
        return func(*args, **(kwargs or {}))


def count_launches(model_name: str, optimizer_name: str) -> int:
    """Operators (views excepted) one `first_step` of `optimizer_name` dispatches on
    `model_name`'s parameters, counted on the meta device: each is at least one kernel
    launch on a GPU, where ZSharp takes the same path as on meta."""
    model = create_model(model_name, NUM_CLASSES).to("meta")
    optimizer = create_optimizer(optimizer_name, model)
    for p in model.parameters():
        p.grad = torch.empty_like(p)
    optimizer.first_step()  # the first call builds ZSharp's layout
    optimizer.second_step()
    with _OperatorCount() as counter:
        optimizer.first_step()
    return counter.count


def median_us(timings: Timings, name: str, kind: str) -> float | None:
    """Median over rounds in microseconds; None where the variant has no such timing."""
    values = timings[name].get(kind)
    return statistics.median(values) * 1e6 if values else None


def per_round_ratios(timings: Timings, num: str, den: str, kind: str) -> list[float]:
    """num/den within each round: both were timed back to back on the same gradients."""
    return [a / b for a, b in zip(timings[num][kind], timings[den][kind])]


def _cell(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def format_table(timings: Timings) -> str:
    """Median times per variant, ratios to SAM, and the key ZSharp figures."""
    sam = {kind: median_us(timings, "sam", kind) for kind in ("first_step", "full")}
    lines = [f"{'optimizer':<13}{'first_step us':>15}{'full step us':>15}"
             f"{'first / sam':>13}{'full / sam':>12}"]
    for name in timings:
        first, full = median_us(timings, name, "first_step"), median_us(timings, name, "full")
        lines.append(f"{name:<13}{_cell(first, '.1f', 15)}{_cell(full, '.1f', 15)}"
                     f"{_cell(None if first is None else first / sam['first_step'], '.2f', 13)}"
                     f"{_cell(full / sam['full'], '.2f', 12)}")
    key = median_us(timings, "zsharp", "first_step") / median_us(timings, SEED_VARIANT, "first_step")
    low, _, high = statistics.quantiles(
        per_round_ratios(timings, "zsharp", SEED_VARIANT, "first_step"), n=4)
    full_ratio = median_us(timings, "zsharp", "full") / sam["full"]
    lines += [f"key: zsharp first_step / {SEED_VARIANT} first_step = {key:.3f} "
              f"(per-round quartiles {low:.3f}-{high:.3f}; target <= {KEY_TARGET})",
              f"full step zsharp / sam = {full_ratio:.2f}"]
    return "\n".join(lines)


def describe_model(model_name: str) -> str:
    params = list(create_model(model_name, NUM_CLASSES).parameters())
    return f"{model_name}: {len(params)} tensors, {sum(p.numel() for p in params):,} parameters"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds (>= 2)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (>= 0)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--seed", type=int, default=0, help="gradients and variant order")
    parser.add_argument("--smoke-test", action="store_true",
                        help="3 rounds after 1 warm-up, res20s only: a few seconds")
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.rounds, args.warmup, args.models = 3, 1, ["res20s"]
    if args.rounds < 2 or args.warmup < 0:  # quartiles need two rounds
        parser.error("--rounds must be >= 2 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Print the check and one table per model; exit status 1 if the ZSharps differ."""
    args = parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, CPU float32; "
          f"median of {args.rounds} rounds after {args.warmup} warm-up, "
          f"variants interleaved in shuffled order")
    # Other processes on the cores inflate and scatter every figure (torch's threads wait
    # for each other); the 1-minute load average says whether the machine was quiet.
    print(f"load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    same, max_diff = check_same_perturbation(seed=args.seed)
    print(f"check: zsharp and {SEED_VARIANT} perturbations on res20s shapes "
          f"torch.allclose = {same} (max |difference| {max_diff:.1e})")
    if not same:
        print("the two ZSharps compute different perturbations: timings would not compare")
        return 1
    for model_name in args.models:
        timings = run_benchmark(model_name, args.rounds, args.warmup, args.seed)
        launches = ", ".join(f"{name} {count_launches(model_name, name)}"
                             for name in ("sam", "asam", "fsam", "zsharp"))
        print(f"\n{describe_model(model_name)}\n{format_table(timings)}\n"
              f"kernel launches per first_step (operators on meta): {launches}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
