"""Image data sets by name, held as uint8 tensors in three splits: `ImageData`, its
holdouts, and the registry that loads a data set by name.

A data set is looked up in a registry (`load_dataset("c10")`, `list_datasets()`), timm
style: each loader is a small function, registered by name in trainables.catalog (your
own: `@catalog.register_dataset(name)`), whose keyword-only arguments are the data set's
options. Every loader returns an `ImageData`: three disjoint splits as uint8 N x C x H x W
tensors plus the normalisation statistics and augmentation settings that belong to that
data set. The loaders themselves are in trainables.readers, the untrusted-archive
handling they share in trainables.archives, batching in trainables.batching.

Three splits, two jobs: `train` is what a model fits; `val` is a fixed, stratified
holdout carved out of the official training data (`stratified_holdout`, seeded by the
module constant `HOLDOUT_SEED`, never by a trial's seed), on which a search ranks
configurations; `test` is the official test split, for the final verdict only. A search
trial holds `data.without("test")`, so it cannot evaluate test by construction; a
confirm run refits on `data.with_val_in_train()` and evaluates `test`.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from trainables import catalog
from trainables.catalog import list_datasets
from trainables.errors import ConfigError

# The validation holdouts are fixed once for every trial of every sweep: a trial's seed
# changes its initialisation and batch order, never which images it is ranked on.
HOLDOUT_SEED = 0

# Why a split can be missing: what `ImageData.split` says when asked for it.
_WHY_DROPPED = {
    "val": "it was dropped, e.g. merged into train for a refit",
    "test": "a search trial never evaluates test",
}


@dataclasses.dataclass(frozen=True, eq=False)
class ImageData:
    """One data set in memory: three splits of uint8 images and int64 labels, and how to feed them.

    `train`, `val` and `test` are disjoint; `val` and `test` may be dropped (None, see
    `without`), `train` never. `mean` and `std` are per channel in [0, 1] pixel units;
    `crop_padding` is the zero padding in pixels of the random crop (0 = no crop);
    `flip` enables random horizontal flips.
    """

    name: str
    train_images: torch.Tensor  # uint8, N x C x H x W
    train_labels: torch.Tensor  # int64, N
    val_images: torch.Tensor | None  # uint8, M x C x H x W; None when dropped
    val_labels: torch.Tensor | None  # int64, M
    test_images: torch.Tensor | None  # uint8, K x C x H x W; None when dropped
    test_labels: torch.Tensor | None  # int64, K
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    flip: bool

    SPLITS: ClassVar[tuple[str, ...]] = ("train", "val", "test")

    def __post_init__(self) -> None:
        # A loader bug, not a user error: caught here rather than as a shape error mid-epoch.
        if len(self.train_labels) == 0:
            raise ValueError(f"{self.name}: empty training split")
        for split in self.SPLITS:
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if (images is None) != (labels is None):
                raise ValueError(f"{self.name}: {split} split has images without labels or labels without images")
            if images is not None:
                self._check_split(split, images, labels)

    def _check_split(self, split: str, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or labels.dtype != torch.int64 or labels.dim() != 1:
            raise ValueError(f"{self.name}: {split} images must be uint8 N x C x H x W and labels int64 N")
        if images.shape[1:] != self.train_images.shape[1:]:
            raise ValueError(f"{self.name}: {split} and train image shapes differ")
        if len(images) != len(labels):
            raise ValueError(f"{self.name}: {split} image and label counts differ")

    @staticmethod
    def _valid_split(split: str) -> str:
        if split not in ImageData.SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(ImageData.SPLITS)}")
        return split

    def has(self, split: str) -> bool:
        """Whether `split` ("train", "val" or "test") is present: False once dropped."""
        return getattr(self, f"{self._valid_split(split)}_images") is not None

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images, int64 labels) of `split`; ValueError naming it if it was dropped."""
        if not self.has(split):
            raise ValueError(f"{self.name}: this data has no {split} split: {_WHY_DROPPED[split]}")
        return getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")

    def without(self, *splits: str) -> ImageData:
        """A copy with `splits` ("val", "test") dropped; the tensors are shared, not copied."""
        if "train" in splits:
            raise ValueError(f"{self.name}: the train split cannot be dropped")
        dropped = {}
        for split in map(self._valid_split, splits):
            dropped.update({f"{split}_images": None, f"{split}_labels": None})
        return dataclasses.replace(self, **dropped)

    def with_val_in_train(self) -> ImageData:
        """For a refit: train is train then val (in that order), val is dropped, test kept.

        Concatenation copies the training images (CIFAR: 150 MB).
        """
        val_images, val_labels = self.split("val")
        return dataclasses.replace(
            self,
            train_images=torch.cat([self.train_images, val_images]),
            train_labels=torch.cat([self.train_labels, val_labels]),
            val_images=None, val_labels=None,
        )

    def with_holdout(self, seed: int) -> ImageData:
        """The validation holdout a sweep replicate draws: seed 0 (HOLDOUT_SEED) is the data
        set's own; another seed pools train and val (train then val, a fixed order) and
        holds out a stratified set of val's size with that seed (`stratified_holdout`).
        Test is untouched. Pooling copies the training images (CIFAR: 150 MB)."""
        if seed == HOLDOUT_SEED:
            return self
        val_images, val_labels = self.split("val")
        images = torch.cat([self.train_images, val_images])
        labels = torch.cat([self.train_labels, val_labels])
        train, val = stratified_holdout(labels, len(val_labels), seed)
        return dataclasses.replace(self, train_images=images[train], train_labels=labels[train],
                                   val_images=images[val], val_labels=labels[val])

    def _tensors(self) -> dict[str, torch.Tensor]:
        """The present tensors by field name."""
        fields = (f"{split}_{kind}" for split in self.SPLITS for kind in ("images", "labels"))
        return {field: getattr(self, field) for field in fields if getattr(self, field) is not None}

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.train_images.shape[1:])

    @property
    def nbytes(self) -> int:
        """Bytes held by the tensors of the present splits."""
        return sum(t.nbytes for t in self._tensors().values())

    def to(self, device: torch.device | str) -> ImageData:
        """A copy with the present splits' tensors on `device` (CIFAR-10, all splits: about 180 MB)."""
        return dataclasses.replace(self, **{field: t.to(device) for field, t in self._tensors().items()})

    def fits_on(self, device: torch.device | str, fraction: float = 0.5) -> bool:
        """Whether the data takes at most `fraction` of the device's free memory.

        Only CUDA memory is checked (`torch.cuda.mem_get_info`, a driver call); the data
        is already in host memory, so any other device answers True.
        """
        device = torch.device(device)
        if device.type != "cuda":
            return True
        free_bytes, _total = torch.cuda.mem_get_info(device)
        return self.nbytes <= fraction * free_bytes


def stratified_holdout(labels: torch.Tensor, size: int, seed: int = HOLDOUT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held out): sorted int64 index tensors splitting `labels` with exactly `size` held out.

    Stratified: each class gives `size * class_count / len(labels)` images, rounded down
    or up (largest remainder, ties drawn at random), so per-class counts are within 1 of
    proportional and exactly proportional when that is a whole number (Tiny ImageNet:
    500 per class, 10000 held out -> 50 each). Which images of a class are held out is
    drawn from numpy's generator seeded with `seed` alone: the same on every call and
    every machine, whatever torch's or numpy's global random state.
    """
    if labels.dim() != 1 or isinstance(size, bool) or not isinstance(size, int) or not 0 < size < len(labels):
        raise ValueError(f"a holdout needs 1-D labels and 0 < size < {len(labels)}, got size {size!r}")
    rng = np.random.default_rng(seed)
    _classes, class_of, counts = np.unique(labels.cpu().numpy(), return_inverse=True, return_counts=True)
    quotas = _largest_remainder(counts, size, rng)
    members = np.split(np.argsort(class_of, kind="stable"), np.cumsum(counts)[:-1])  # indices per class
    held = np.zeros(len(labels), dtype=bool)
    for indices, quota in zip(members, quotas, strict=True):
        held[rng.permutation(indices)[:quota]] = True
    return torch.from_numpy(np.flatnonzero(~held)), torch.from_numpy(np.flatnonzero(held))


def _largest_remainder(counts: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Integers summing to `size`, each the floor or ceiling of `size * counts / counts.sum()`."""
    quotas, remainders = np.divmod(size * counts.astype(np.int64), counts.sum())  # exact integer arithmetic
    # The classes with the largest remainders get one more; a random order breaks ties
    # so that no class is favoured for coming first.
    shuffled = rng.permutation(len(counts))
    ranked = shuffled[np.argsort(-remainders[shuffled], kind="stable")]
    quotas[ranked[:size - quotas.sum()]] += 1
    return quotas


def split_off_val(images: torch.Tensor, labels: torch.Tensor,
                   size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, train labels, val images, val labels): `size` held out, both in the original order."""
    train, val = stratified_holdout(labels, size)
    return images[train], labels[train], images[val], labels[val]


Loader = Callable[..., ImageData]


def _options(loader: Loader) -> list[str]:
    params = inspect.signature(loader).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def load_dataset(name: str, data_dir: str | os.PathLike = "data", download: bool = True, **options) -> ImageData:
    """Load data set `name`, downloading it into `data_dir` if missing and `download`.

    Raises ConfigError for an unknown name or option, DataUnavailableError when the
    files are missing and cannot be downloaded.
    """
    if name not in list_datasets():
        raise ConfigError(f"unknown data set {name!r}; valid: {', '.join(list_datasets())}")
    loader = catalog.dataset_loader(name)
    valid = _options(loader)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"data set {name!r} has no option {', '.join(unknown)}; valid: {', '.join(valid) or 'none'}")
    return loader(Path(data_dir), download, **options)


# The data set `load_dataset_once` holds in this process, by (name, resolved folder).
_HELD: dict[tuple[str, str], ImageData] = {}


def load_dataset_once(name: str, data_dir: str | os.PathLike = "data") -> ImageData:
    """`load_dataset(name, data_dir)`, held for the next call with the same name and
    folder in this process: a reused Ray worker runs trial after trial of one sweep and
    reads its data once, not once per trial (digits: 26 ms a trial; CIFAR's batches are
    read and checked again each time). One data set is held, the last one asked for;
    another name or folder is loaded afresh, never taken from another folder. Trials
    share its tensors and never write to them: batches, splits moved to a device and a
    refit's training split are copies (`ImageData.without` shares, and only drops)."""
    key = (name, str(Path(data_dir).resolve()))
    if key not in _HELD:
        _HELD.clear()  # the previous data set goes before the next is read
        _HELD[key] = load_dataset(name, data_dir)
    return _HELD[key]
