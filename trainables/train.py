"""The training loop of one trial: `run_trial(config, report, checkpoint_dir)`.

The whole contract between a trial and whatever runs it (a test, a Ray worker, the
command line, a GPU machine with only torch and torchvision). Each epoch it trains,
evaluates, writes its checkpoint and then calls `report(metrics)`, so a wrapper can
attach that checkpoint to the report; on start it resumes from the checkpoint it finds.

    python -m trainables.train --dataset digits --model res20s --optimizer zsharp --epochs 5

Splits: a search trial (eval_split "val") trains on the train split and evaluates val; it
is handed the data without its test split, so it cannot evaluate test. A confirm run
(eval_split "test") evaluates test every epoch, trained on train + val (refit) or on train.

Speed: the data set sits on the trial's device as uint8 and is augmented there in whole
batches; metrics are summed on the device and read once per epoch (one host sync).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from trainables import flatness
from trainables.batching import eval_batches, num_train_batches, train_batches
from trainables.config import EVAL_SPLITS, TrialConfig
from trainables.data import ImageData, load_dataset
from trainables.lr_schedule import lr_factor
from trainables.errors import ConfigError, DataUnavailableError
from trainables.models import model_for
from trainables.optim import (all_hparams, create_optimizer, get_optimizer_info, hparams_of, list_optimizers,
                              optimizer_kwargs)
from trainables.schema import COMPLETED, DIVERGED, LOSS_PROFILE, TEST_CORRECT, encode_correct
from trainables.step import optimizer_step

__all__ = ["TrialConfig", "TrialResult", "run_trial", "trial_data", "epoch_seconds", "channels_format", "main",
           "CHECKPOINT_FILE", "EXIT_DIVERGED"]

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_COPIES = 4  # per model tensor, at most: the weights, Adam's moments, the SAM family's saved weights
# Exit status of the command line for a run that diverged (a NaN or infinite loss): not a
# success (0), not bad input (2).
EXIT_DIVERGED = 3
# Settings a checkpoint may be resumed under although they differ: where and how fast it
# runs, and how far (extending a finished run).
RESUMABLE_CHANGES = frozenset({"epochs", "data_dir", "device", "precision", "compile"})
# torch.compile's backend for `compile=True`. A test swaps in "aot_eager" (AOTAutograd,
# which traces the backward and BatchNorm's buffer updates, without inductor's C++ build:
# a minute or more on CPU).
COMPILE_BACKEND = "inductor"

Report = Callable[[dict], None]


@dataclass(frozen=True)
class TrialResult:
    """How a trial ended: status `completed` or `diverged`, and its last metrics."""

    status: str
    metrics: dict


# ---- device and precision -------------------------------------------------------------

def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' requested but this machine has no Apple GPU")
    return device


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA by default: no GradScaler needed, unlike fp16."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def channels_format(device: torch.device) -> torch.memory_format:
    """The memory format of a trial's model and batches: channels_last on CUDA (cuDNN) and
    on the CPU (oneDNN), where no model of the registry trained slower in it and most
    faster (a training step, 1 thread, channels_last over contiguous: res20s 0.67 on digits,
    1.00 on 32x32 images; res56s 0.90, vgg16_bn 0.85-0.97, vit 0.91-0.94; the quickstart's
    Adam epoch 841 -> 679 ms, SAM's 1569 -> 1166 ms); elsewhere (mps) contiguous."""
    return torch.channels_last if device.type in ("cuda", "cpu") else torch.contiguous_format


# ---- the trial ----------------------------------------------------------------------------

class _Trial:
    """Model, optimizer, scheduler and data of one trial, and one epoch of work."""

    def __init__(self, config: TrialConfig, data: ImageData, device: torch.device):
        self.config = config
        self.device = device
        # Fixed input shapes: let cuDNN pick the fastest kernels once per shape.
        torch.backends.cudnn.benchmark = device.type == "cuda"
        data = trial_data(data, config)
        # Keep the data on the device as uint8 when it fits: no host transfer per batch.
        self.data = data.to(device) if data.fits_on(device) else data
        self.eval_splits = [split for split in EVAL_SPLITS if self.data.has(split)]
        self.generator = torch.Generator(device=self.data.train_images.device)
        self.generator.manual_seed(config.seed)
        torch.manual_seed(config.seed)
        self.model = model_for(config.model, data).to(device)
        self.memory_format = channels_format(device)
        self.model.to(memory_format=self.memory_format)
        self.forward_model = (torch.compile(self.model, backend=COMPILE_BACKEND) if config.compile
                              else self.model)
        self.passes = get_optimizer_info(config.optimizer).passes_per_step
        self.optimizer = create_optimizer(config.optimizer, self.model, **optimizer_kwargs(config))
        base = getattr(self.optimizer, "base_optimizer", self.optimizer)
        self.steps_per_epoch = num_train_batches(self.data, config.batch_size)
        schedule = functools.partial(
            lr_factor, schedule=config.schedule,
            warmup_steps=config.warmup_epochs * self.steps_per_epoch,
            steps_per_epoch=self.steps_per_epoch,
            total_steps=config.epochs * self.steps_per_epoch, step_epochs=config.step_epochs)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(base, schedule)
        self.autocast_dtype = _autocast_dtype(config.precision, device)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.grad_evals = 0  # forward/backward passes over samples, cumulative

    def _loss(self, images, labels):
        with torch.autocast(self.device.type, dtype=self.autocast_dtype,
                            enabled=self.autocast_dtype is not None):
            logits = self.forward_model(images)
            return logits, self.criterion(logits.float(), labels)

    def _step(self, images, labels):
        logits, loss = optimizer_step(self.model, self.optimizer,
                                      functools.partial(self._loss, images, labels), self.passes)
        self.scheduler.step()
        return logits, loss

    def _batches(self, batches):
        for images, labels in batches:
            yield (images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format),
                   labels.to(self.device, non_blocking=True))

    def train_epoch(self) -> dict:
        """One pass over the training set; metrics read from the device once, at the end."""
        self.model.train()
        sums = torch.zeros(2, device=self.device)  # loss * images, correct
        ascent: dict[str, torch.Tensor] = {}  # the optimizer's ascent statistics, summed
        count = 0
        lr = self.scheduler.get_last_lr()[0]
        batches = train_batches(self.data, self.config.batch_size, self.generator)
        for images, labels in self._batches(batches):
            lr = self.scheduler.get_last_lr()[0]
            logits, loss = self._step(images, labels)
            sums[0] += loss * len(labels)
            sums[1] += (logits.argmax(1) == labels).sum()
            for name, value in getattr(self.optimizer, "last_ascent_stats", {}).items():
                ascent[name] = ascent[name] + value if name in ascent else value.float()
            count += len(labels)
            self.grad_evals += self.passes * len(labels)
        # Host sync, once per epoch: the sums and the ascent statistics in one read.
        totals = torch.cat([sums, *(t.view(1) for t in ascent.values())]).tolist()
        loss_sum, correct = totals[:2]
        metrics = {"train_loss": loss_sum / count, "train_acc": correct / count, "lr": lr,
                   "train_images": count}
        # The ascent statistics as means over the epoch's steps.
        metrics.update({name: total / self.steps_per_epoch for name, total in zip(ascent, totals[2:])})
        return metrics

    @torch.no_grad()
    def evaluate(self) -> tuple[dict, torch.Tensor | None]:
        """Loss and accuracy on each split the trial evaluates (`val_*`, `test_*`),
        BatchNorm in inference mode; and which test examples it got right (a bool tensor on
        the host, in the split's order; None without the test split)."""
        self.model.eval()
        metrics, correct = {}, None
        for split in self.eval_splits:
            sums = torch.zeros(2, device=self.device)  # loss * images, correct
            hits = []
            for images, labels in self._batches(eval_batches(self.data, self.config.batch_size, split)):
                logits, loss = self._loss(images, labels)
                hits.append(logits.argmax(1) == labels)
                sums[0] += loss * len(labels)
                sums[1] += hits[-1].sum()
            loss_sum, correct_sum = sums.tolist()  # host sync, once per split and evaluation
            count = sum(len(h) for h in hits)
            metrics.update({f"{split}_loss": loss_sum / count, f"{split}_acc": correct_sum / count})
            if split == "test":
                correct = torch.cat(hits).cpu()  # a copy of one bool per test image
        return metrics, correct

    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state(), "data": self.generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": rng,
                "grad_evals": self.grad_evals}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["data"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.grad_evals = state["grad_evals"]


def trial_data(data: ImageData, config: TrialConfig) -> ImageData:
    """The splits a trial holds, val being its replicate's holdout (`holdout_seed`): a
    search trial (eval_split val) never the test split; a confirm run all of them, with val
    moved into train when it refits."""
    data = data.with_holdout(config.holdout_seed)
    if config.eval_split == "val":
        return data.without("test")
    return data.with_val_in_train() if config.refit else data


# ---- checkpoints ------------------------------------------------------------------------

def checkpoint_bytes(model_name: str, data: ImageData) -> int:
    """An upper bound on a trial checkpoint of `model_name` on `data`: CHECKPOINT_COPIES x its
    tensors (built on the meta device: no memory), + 256 KiB for the rest (a few KiB seen)."""
    with torch.device("meta"):
        model = model_for(model_name, data)
    tensors = [*model.parameters(), *model.buffers()]
    return CHECKPOINT_COPIES * sum(t.numel() * t.element_size() for t in tensors) + 2 ** 18


def _save_checkpoint(directory: Path, trial: _Trial, epoch: int, result: TrialResult) -> None:
    """Atomic: a crash mid-write leaves the previous checkpoint intact."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {**trial.state_dict(), "epoch": epoch, "status": result.status,
             "metrics": result.metrics, "config": trial.config.to_dict()}
    partial = directory / (CHECKPOINT_FILE + ".tmp")
    torch.save(state, partial)
    os.replace(partial, directory / CHECKPOINT_FILE)


def _load_checkpoint(directory: Path | None, config: TrialConfig, device) -> dict | None:
    if directory is not None and directory.exists() and not directory.is_dir():
        raise ConfigError(f"checkpoint directory {directory} is a file; give a folder")
    path = directory / CHECKPOINT_FILE if directory else None
    if path is None or not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        saved_config = dict(state["config"])
    except Exception as error:  # noqa: BLE001  torch raises many types for a damaged file
        raise ConfigError(f"checkpoint {path} cannot be read ({type(error).__name__}); delete it "
                          "to start the trial afresh, or use another checkpoint directory") from None
    changed = sorted(k for k, v in saved_config.items()
                     if getattr(config, k, None) != v and k not in RESUMABLE_CHANGES)
    if changed:
        raise ConfigError(f"checkpoint {path} is of a different trial (differs in "
                          f"{', '.join(changed)}); use another checkpoint directory")
    return state


# ---- the contract -------------------------------------------------------------------------

def run_trial(config: TrialConfig | dict, report: Report | None = None,
              checkpoint_dir: str | os.PathLike | None = None,
              data: ImageData | None = None) -> TrialResult:
    """Train and evaluate one configuration, epoch by epoch.

    config: a TrialConfig or its plain dict (validated strictly).
    report: called after every epoch with the metrics (trainables.schema.METRICS: epoch
        counted from 1, train loss and accuracy and those of each evaluated split (val,
        test) as fractions, lr, epoch_time_s, images_per_s, cumulative grad_evals,
        diverged 0/1, and the optimizer's ascent statistics: perturbation_norm for the SAM
        family, kept_fraction and ascent_cosine for ZSharp), after the checkpoint of that
        epoch is written.
    checkpoint_dir: where each epoch's checkpoint goes; a checkpoint found there is
        resumed (a finished trial returns its result at once).
    data: an already loaded data set (benchmarks; a Ray worker's, read once per process);
        by default `config.dataset` is loaded.
    A NaN or infinite loss ends the trial with status `diverged` after a last report.
    """
    config = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
    device = _resolve_device(config.device)
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    saved = _load_checkpoint(directory, config, device)
    if saved is not None and (saved["status"] == DIVERGED or saved["epoch"] >= config.epochs):
        return TrialResult(saved["status"], saved["metrics"])
    data = data if data is not None else load_dataset(config.dataset, config.data_dir)
    trial = _Trial(config, data, device)
    start = 0
    if saved is not None:
        trial.load_state_dict(saved)
        start = saved["epoch"]
    result = TrialResult(COMPLETED, saved["metrics"] if saved else {})
    for epoch in range(start + 1, config.epochs + 1):
        result = _run_epoch(trial, epoch)
        if epoch == config.epochs and result.status == COMPLETED and config.flatness_images:
            result.metrics.update(_flatness(trial))  # before the checkpoint that ends the trial
        if directory is not None:
            _save_checkpoint(directory, trial, epoch, result)
        if report is not None:
            report(result.metrics)
        if result.status == DIVERGED:
            break
    return result


def _flatness(trial: _Trial) -> dict:
    """The trained model's curvature and sharpness (trainables.flatness) on a fixed subset
    of its training images, the same for every run (seed 0), under the loss it trained on
    in float32; the metrics, their wall time (flatness_seconds) and the loss profile as
    [[t, loss], ...] (loss_profile: a list, which trackers keep as an artifact)."""
    config = trial.config
    started = time.perf_counter()
    batches = flatness.subset_batches(trial.data, config.flatness_images, config.batch_size,
                                      device=trial.device)
    measured = flatness.measure(trial.model, batches, lambda out, y: trial.criterion(out.float(), y),
                                radius=config.flatness_radius, probes=config.flatness_probes,
                                lanczos_steps=config.flatness_lanczos_steps,
                                directions=config.flatness_probes,
                                ascent_steps=config.flatness_ascent_steps)
    return {**measured.metrics(), "flatness_seconds": time.perf_counter() - started,
            LOSS_PROFILE: [list(point) for point in measured.profile]}


def epoch_seconds(config: TrialConfig | dict, data: ImageData, steps: int = 3) -> float:
    """The wall seconds one epoch of `config` would take on its device, from `steps`
    training steps and one evaluation batch per split, each timed after a warm-up one and
    scaled to the epoch's batch counts (the dry run's estimate; the model is built, trained
    a few steps and dropped). Host syncs: one per timed batch, as timing needs."""
    config = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
    trial = _Trial(config, data, _resolve_device(config.device))
    train = trial._batches(train_batches(trial.data, config.batch_size, trial.generator))
    seconds = trial.steps_per_epoch * _timed(steps, lambda: trial._step(*next(train))[1])
    trial.model.eval()
    with torch.no_grad():
        for split in trial.eval_splits:
            batch = next(trial._batches(eval_batches(trial.data, config.batch_size, split)))
            count = math.ceil(len(trial.data.split(split)[1]) / config.batch_size)
            seconds += count * _timed(1, lambda: trial._loss(*batch)[1])
    return seconds


def _timed(repeats: int, work: Callable[[], torch.Tensor]) -> float:
    """Mean seconds of `work()` over `repeats` calls after one warm-up call; each call's
    result is read back (a host sync), so queued device work is counted."""
    work().item()
    started = time.perf_counter()
    for _ in range(repeats):
        work().item()
    return (time.perf_counter() - started) / repeats


def _run_epoch(trial: _Trial, epoch: int) -> TrialResult:
    started = time.perf_counter()
    train = trial.train_epoch()
    train_seconds = time.perf_counter() - started
    evaluated, correct = trial.evaluate()
    metrics = {"epoch": epoch, **train, **evaluated}
    losses = [metrics["train_loss"], *(metrics[f"{s}_loss"] for s in trial.eval_splits)]
    diverged = not all(math.isfinite(loss) for loss in losses)
    metrics.update(epoch_time_s=time.perf_counter() - started,
                   images_per_s=metrics.pop("train_images") / train_seconds,
                   grad_evals=trial.grad_evals, diverged=float(diverged))
    if correct is not None and (diverged or epoch == trial.config.epochs):  # how the run ends
        metrics[TEST_CORRECT] = encode_correct(correct.numpy())
    return TrialResult(DIVERGED if diverged else COMPLETED, metrics)


# ---- command line ---------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from commandline import OneLineArgumentParser  # the command line's only: trials never need it

    parser = OneLineArgumentParser(
        prog="python -m trainables.train", description="Train one trial; flags are TrialConfig's settings.",
        epilog=f"Exit status: 0 when the run completed, 2 for bad input, {EXIT_DIVERGED} when it diverged.")
    types = {"int": int, "float": float, "str": str}
    hparams = all_hparams()
    for name, (kind, default) in TrialConfig.settings().items():
        flags = sorted({f"--{name}", f"--{name.replace('_', '-')}"})
        shown = f"{TrialConfig.help(name)} (default: %(default)s)"
        if name in hparams:  # unset: the optimizer's own default (main drops the None)
            default, shown = None, f"{TrialConfig.help(name)} (default: {_defaults_text(name)})"
        if kind == "bool":
            parser.add_argument(*flags, dest=name, default=default, help=shown,
                                action=argparse.BooleanOptionalAction)
        else:
            parser.add_argument(*flags, dest=name, default=default, type=types[kind],
                                metavar=kind.upper(), help=shown)
    parser.add_argument("--checkpoint-dir", default=None,
                        help="write checkpoints here and resume from the one found (default: none)")
    return parser


def _defaults_text(name: str) -> str:
    """Each optimizer's default of hyperparameter `name`, on the default base: "0.05 for
    fsam, sam, zsharp; 0.5 for asam"."""
    by_value: dict[float, list[str]] = {}
    for optimizer in list_optimizers():
        if name in {h.name for h in hparams_of(optimizer, TrialConfig.base)}:
            by_value.setdefault(TrialConfig.defaults(optimizer)[name], []).append(optimizer)
    return "; ".join(f"{str(value).lower() if isinstance(value, bool) else format(value, 'g')} for "
                     f"{', '.join(names)}" for value, names in by_value.items())


def _print_epoch(total_epochs: int) -> Report:
    def report(m: dict) -> None:
        shown = [f"{name} {m[name]:.4f}" for name in ("train_loss", "train_acc", "val_loss", "val_acc",
                                                      "test_loss", "test_acc") if name in m]
        shown += [f"{name} {m[name]:.3g}" for name in ("perturbation_norm", "kept_fraction", "ascent_cosine")
                  if name in m]
        print(f"epoch {m['epoch']}/{total_epochs}  {'  '.join(shown)}  lr {m['lr']:.3g}  "
              f"{m['images_per_s']:.0f} img/s  {m['epoch_time_s']:.1f}s", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for bad input)."""
    parser = _parser()
    args = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    checkpoint_dir = args.pop("checkpoint_dir", None)
    try:
        config = TrialConfig.from_dict(args)
        result = run_trial(config, _print_epoch(config.epochs), checkpoint_dir)
    except (ConfigError, DataUnavailableError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    split = config.eval_split
    print(f"{result.status}: {split}_acc {result.metrics.get(f'{split}_acc', float('nan')):.4f}")
    return EXIT_DIVERGED if result.status == DIVERGED else 0


if __name__ == "__main__":
    sys.exit(main())
