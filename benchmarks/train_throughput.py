"""Training images/s of `run_trial` against a minimal loop and a torchvision DataLoader.

Measures, for ResNet-20 (`res20s`) on synthetic CIFAR-shaped data (3 x 32 x 32, uint8),
the training throughput of three pipelines that do the same optimizer work (same model,
initial weights, batch size, optimizer and hyperparameters):
- `run_trial`: the project's trial loop, one epoch; its reported `images_per_s`, which
  times the training epoch alone (evaluation and set-up excluded);
- `minimal`: a hand-written loop with the data on the device as uint8, batches augmented
  and normalised by `trainables.batching.augment` / `normalize`, then forward, backward and
  the optimizer step: no metrics, no scheduler, no evaluation, no checkpoint. The floor
  for run_trial's bookkeeping overhead;
- `dataloader`: the same images as uint8 H x W x C arrays made PIL images one by one,
  torchvision RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize, and
  `torch.utils.data.DataLoader` (`--workers`, default 0 on this 2-core machine), then
  the same step. What the usual CIFAR recipe costs.
A round is one epoch of each, in an order rotated every round so that a drift in machine
speed hits all three alike; every epoch starts from the same freshly built model. The
table gives medians over rounds; the ratios are of those medians, with the spread of the
per-round ratios. Target on CPU: run_trial / minimal >= 0.95.

Run from the repository root:
    .venv/bin/python benchmarks/train_throughput.py                      # 2048 images, 3 rounds
    .venv/bin/python benchmarks/train_throughput.py --optimizer zsharp
    .venv/bin/python benchmarks/train_throughput.py --smoke-test         # 256 images, 1 round
On 2 CPU cores ResNet-20 trains at a few hundred images/s with Adam (half that for the
SAM family's two passes), so the default run takes a minute or two.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms

from trainables.batching import augment, normalize
from trainables.data import ImageData, load_dataset
from trainables.models import create_model
from trainables.optim import create_optimizer, get_optimizer_info, list_optimizers, optimizer_kwargs
from trainables.step import optimizer_step
from trainables.train import TrialConfig, channels_format, run_trial

MODEL = "res20s"
PIPELINES = ("run_trial", "minimal", "dataloader")
CPU_TARGET = 0.95  # wanted on CPU: run_trial / minimal images/s at least this
VAL_IMAGES = 256  # run_trial evaluates every epoch (untimed); a small split keeps that short
WARMUP_STEPS = 2  # untimed steps first: kernel choice and allocator growth (~2 s on CPU)
SMOKE_IMAGES = 256


@dataclass(frozen=True)
class Setup:
    """What all three pipelines share."""

    config: TrialConfig  # run_trial's config; the others build the same model and optimizer
    data: ImageData  # uint8 N x C x H x W, on the device
    device: torch.device
    batch_size: int  # images per step, as run_trial uses it (the whole set if smaller)
    steps: int  # full batches per epoch; a last partial batch is dropped, as run_trial does
    autocast_dtype: torch.dtype | None  # run_trial's choice: bf16 on CUDA, none on CPU
    memory_format: torch.memory_format  # run_trial's choice (trainables.train.channels_format)


def make_setup(args: argparse.Namespace) -> Setup:
    device = torch.device(args.device)
    config = TrialConfig(dataset="synthetic", model=MODEL, optimizer=args.optimizer,
                         batch_size=args.batch_size, epochs=1, warmup_epochs=0,
                         device=str(device), seed=args.seed)
    data = load_dataset("synthetic", num_train=args.num_train, num_val=VAL_IMAGES).to(device)
    batch_size = min(args.batch_size, args.num_train)
    cuda = device.type == "cuda"
    # run_trial sets this too; set here so the other two get the same kernels from round 1.
    torch.backends.cudnn.benchmark = cuda
    return Setup(config, data, device, batch_size, args.num_train // batch_size,
                 torch.bfloat16 if cuda else None,
                 channels_format(device))


def build(setup: Setup) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Model and optimizer as run_trial builds them: same seed, so the same initial weights."""
    torch.manual_seed(setup.config.seed)
    channels, size, _ = setup.data.shape
    model = create_model(MODEL, setup.data.num_classes, in_channels=channels, image_size=size)
    model = model.to(setup.device, memory_format=setup.memory_format)
    # The exact hyperparameters run_trial passes (lr, weight decay, betas or momentum, the
    # variant's own), so even the base optimizer's per-step arithmetic is the same.
    optimizer = create_optimizer(setup.config.optimizer, model, **optimizer_kwargs(setup.config))
    return model, optimizer


def _forward(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             autocast_dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.autocast(images.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        logits = model(images)
        return logits, F.cross_entropy(logits.float(), labels)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, passes: int,
               images: torch.Tensor, labels: torch.Tensor, autocast_dtype: torch.dtype | None) -> None:
    """One optimizer step, as run_trial takes it (`trainables.step.optimizer_step`)."""
    optimizer_step(model, optimizer, lambda: _forward(model, images, labels, autocast_dtype), passes)


def minimal_batches(setup: Setup, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of augmented, normalised batches from the uint8 data on the device."""
    data = setup.data
    order = torch.randperm(len(data.train_labels), generator=generator, device=data.train_images.device)
    for k in range(setup.steps):
        index = order[k * setup.batch_size:(k + 1) * setup.batch_size]
        images = augment(data.train_images[index], data.crop_padding, data.flip, generator)
        # normalize() builds its scale and shift per call: microseconds on CPU, a small
        # host-to-device copy per batch on CUDA (run_trial makes it once per epoch).
        images = normalize(images, data.mean, data.std).contiguous(memory_format=setup.memory_format)
        yield images, data.train_labels[index]


class HWCImages(torch.utils.data.Dataset):
    """uint8 H x W x C images made PIL images on access, as torchvision's CIFAR10 does."""

    def __init__(self, images: np.ndarray, labels: list[int], transform: Callable):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def make_loader(setup: Setup, workers: int) -> torch.utils.data.DataLoader:
    """The torchvision recipe over the same images and labels, held on the host."""
    data = setup.data
    recipe = transforms.Compose([
        transforms.RandomCrop(data.shape[1], padding=data.crop_padding),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(data.mean, data.std),
    ])
    images = data.train_images.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    dataset = HWCImages(images, data.train_labels.tolist(), recipe)
    return torch.utils.data.DataLoader(
        dataset, batch_size=setup.batch_size, shuffle=True, drop_last=True,
        num_workers=workers, persistent_workers=workers > 0,  # no worker start-up per epoch
        pin_memory=setup.device.type == "cuda",
        generator=torch.Generator().manual_seed(setup.config.seed))


def _on_device(batches: Iterable, setup: Setup) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for images, labels in batches:
        yield (images.to(setup.device, non_blocking=True).contiguous(memory_format=setup.memory_format),
               labels.to(setup.device, non_blocking=True))


def timed_epoch(setup: Setup, batches: Callable[[], Iterable]) -> float:
    """images/s of one epoch over `batches()` from a freshly built model; set-up untimed."""
    model, optimizer = build(setup)
    model.train()
    passes = get_optimizer_info(setup.config.optimizer).passes_per_step
    images_seen = 0
    start = time.perf_counter()
    for images, labels in batches():
        train_step(model, optimizer, passes, images, labels, setup.autocast_dtype)
        images_seen += len(labels)
    if setup.device.type == "cuda":
        torch.cuda.synchronize(setup.device)  # host sync: the queued kernels count too
    return images_seen / (time.perf_counter() - start)


def run_trial_epoch(setup: Setup) -> float:
    """run_trial's own images_per_s: its training epoch timed alone, evaluation excluded."""
    return run_trial(setup.config, data=setup.data).metrics["images_per_s"]


def epoch_runners(setup: Setup, workers: int) -> dict[str, Callable[[], float]]:
    """One callable per pipeline, each training one epoch and returning its images/s."""
    loader = make_loader(setup, workers)
    generator = torch.Generator(device=setup.data.train_images.device).manual_seed(setup.config.seed)
    return {
        "run_trial": lambda: run_trial_epoch(setup),
        "minimal": lambda: timed_epoch(setup, lambda: minimal_batches(setup, generator)),
        "dataloader": lambda: timed_epoch(setup, lambda: _on_device(loader, setup)),
    }


def warm_up(setup: Setup) -> None:
    """A few untimed steps, so round 1's first pipeline does not pay one-time costs."""
    model, optimizer = build(setup)
    passes = get_optimizer_info(setup.config.optimizer).passes_per_step
    generator = torch.Generator(device=setup.data.train_images.device).manual_seed(0)
    for images, labels in islice(minimal_batches(setup, generator), WARMUP_STEPS):
        train_step(model, optimizer, passes, images, labels, setup.autocast_dtype)


def run_rounds(runners: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """images/s per pipeline per round; round r starts at pipeline r (mod 3)."""
    rates: dict[str, list[float]] = {name: [] for name in PIPELINES}
    for r in range(rounds):
        shift = r % len(PIPELINES)
        for name in PIPELINES[shift:] + PIPELINES[:shift]:
            rates[name].append(runners[name]())
    return rates


def ratio_line(rates: dict[str, list[float]], num: str, den: str, target: float | None) -> str:
    median = statistics.median(rates[num]) / statistics.median(rates[den])
    per_round = [a / b for a, b in zip(rates[num], rates[den])]
    wanted = f"; target on CPU >= {target}" if target is not None else ""
    return (f"{num} / {den} = {median:.3f} "
            f"(per round {min(per_round):.3f}-{max(per_round):.3f}{wanted})")


def format_results(rates: dict[str, list[float]]) -> str:
    lines = [f"{'pipeline':<12}{'images/s':>10}   per round"]
    for name in PIPELINES:
        lines.append(f"{name:<12}{statistics.median(rates[name]):>10.1f}   "
                     + " ".join(f"{rate:.1f}" for rate in rates[name]))
    lines += ["", ratio_line(rates, "run_trial", "minimal", CPU_TARGET),
              ratio_line(rates, "run_trial", "dataloader", None)]
    return "\n".join(lines)


def _load_line(when: str) -> str:
    # Other processes on the cores slow every pipeline and scatter the rounds; the
    # 1-minute load average says whether the machine was quiet.
    return f"load average (1 min) {when}: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", default="adam", choices=list_optimizers(),
                        help="registry name; SAM-family ones wrap Adam (default adam)")
    parser.add_argument("--num-train", type=int, default=2048, help="synthetic training images")
    parser.add_argument("--batch-size", type=int, default=256, help="images per step")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of one epoch per pipeline")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0, help="weights, data order, augmentation")
    parser.add_argument("--smoke-test", action="store_true",
                        help=f"{SMOKE_IMAGES} images, 1 round: seconds")
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.num_train, args.rounds = SMOKE_IMAGES, 1
    if min(args.num_train, args.batch_size, args.rounds) < 1 or args.workers < 0:
        parser.error("--num-train, --batch-size and --rounds must be >= 1, --workers >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Print the settings, the table of images/s and the two ratios; exit status 0."""
    args = parse_args(argv)
    started = time.perf_counter()
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{args.device}, {torch.get_num_threads()} threads")
    print(_load_line("at start"))
    setup = make_setup(args)
    print(f"{MODEL}, {args.optimizer}, batch {setup.batch_size}, {args.num_train} synthetic "
          f"{'x'.join(map(str, setup.data.shape))} images ({setup.steps} step(s) per epoch), "
          f"DataLoader workers {args.workers}; median of {args.rounds} rounds, one epoch of "
          f"each pipeline per round in rotating order, after "
          f"{min(WARMUP_STEPS, setup.steps)} untimed warm-up step(s)\n")
    runners = epoch_runners(setup, args.workers)
    warm_up(setup)
    rates = run_rounds(runners, args.rounds)
    print(format_results(rates))
    print(_load_line("at end"))
    print(f"wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
