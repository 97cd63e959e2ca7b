"""Image data sets by name, held as uint8 tensors, and batching done on their device.

A data set is looked up in a registry (`load_dataset("c10")`, `list_datasets()`), timm
style: each loader is a small function under `@register_dataset(name)` whose
keyword-only arguments are the data set's options. Every loader returns an `ImageData`:
the whole train and validation split as uint8 N x C x H x W tensors plus the
normalisation statistics and augmentation settings that belong to that data set.

Following airbench, the data set lives where the model does (`ImageData.to("cuda")`
when `fits_on` says so) and augmentation and normalisation run on whole batches there:
no DataLoader workers, no PIL, no per-image Python loop. All randomness comes from one
`torch.Generator` on the data's device, so an epoch is reproducible from the
generator's state and a resumed trial continues the same stream.

Data sets: `digits` (scikit-learn's bundled 8x8 digits, offline, the default for tests),
`c10`, `c100` (CIFAR in torchvision's python format), `tinyimagenet` (64x64, decoded once
into a tensor cache) and `synthetic` (CIFAR-shaped, generated, with a learnable signal).
Downloads use torchvision's helpers under a file lock in `data_dir`, so trials sharing a
node fetch a data set once.
"""

from __future__ import annotations

import dataclasses
import http.client
import inspect
import os
import pickle
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import download_and_extract_archive

from trainables.errors import ConfigError, DataUnavailableError

# Tiny ImageNet has no torchvision class; this is the archive cs231n publishes.
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
# md5 of that zip (248,100,043 bytes) as checked by avalanche and other loaders.
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
_TINY_FOLDER = "tiny-imagenet-200"
_TINY_SIDE = 64  # pixels; every Tiny ImageNet image is 64 x 64

# What a failed download or unpack raises: URLError and socket errors are OSErrors,
# torchvision raises RuntimeError on an md5 mismatch, a truncated archive the rest.
_FETCH_ERRORS = (OSError, RuntimeError, http.client.HTTPException, tarfile.TarError, zipfile.BadZipFile)


@dataclasses.dataclass(frozen=True, eq=False)
class ImageData:
    """One data set in memory: uint8 images, int64 labels, and how to feed them.

    `mean` and `std` are per channel in [0, 1] pixel units; `crop_padding` is the
    zero padding in pixels of the random crop (0 = no crop); `flip` enables random
    horizontal flips.
    """

    name: str
    train_images: torch.Tensor  # uint8, N x C x H x W
    train_labels: torch.Tensor  # int64, N
    val_images: torch.Tensor  # uint8, M x C x H x W
    val_labels: torch.Tensor  # int64, M
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    flip: bool

    def __post_init__(self) -> None:
        # A loader bug, not a user error: caught here rather than as a shape error mid-epoch.
        images, labels = (self.train_images, self.val_images), (self.train_labels, self.val_labels)
        if any(x.dtype != torch.uint8 or x.dim() != 4 for x in images) or any(y.dtype != torch.int64 for y in labels):
            raise ValueError(f"{self.name}: images must be uint8 N x C x H x W and labels int64")
        if self.val_images.shape[1:] != self.train_images.shape[1:] or len(self.train_labels) == 0:
            raise ValueError(f"{self.name}: empty training split or train/val image shapes differ")
        if len(self.train_images) != len(self.train_labels) or len(self.val_images) != len(self.val_labels):
            raise ValueError(f"{self.name}: image and label counts differ")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.train_images.shape[1:])

    @property
    def nbytes(self) -> int:
        """Bytes held by the four tensors."""
        return sum(t.nbytes for t in (self.train_images, self.train_labels, self.val_images, self.val_labels))

    def to(self, device: torch.device | str) -> ImageData:
        """A copy with the four tensors on `device` (CIFAR-10: about 180 MB)."""
        return dataclasses.replace(
            self,
            train_images=self.train_images.to(device),
            train_labels=self.train_labels.to(device),
            val_images=self.val_images.to(device),
            val_labels=self.val_labels.to(device),
        )

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


Loader = Callable[..., ImageData]
_LOADERS: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Register `loader(data_dir: Path, download: bool, *, **options)` under `name`.

    The loader's keyword-only parameters are the options `load_dataset` accepts.
    """

    def add(loader: Loader) -> Loader:
        if name in _LOADERS:
            raise ValueError(f"data set {name!r} is registered twice")
        _LOADERS[name] = loader
        return loader

    return add


def list_datasets() -> list[str]:
    """Names of the registered data sets, sorted."""
    return sorted(_LOADERS)


def _options(loader: Loader) -> list[str]:
    params = inspect.signature(loader).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def load_dataset(name: str, data_dir: str | os.PathLike = "data", download: bool = True, **options) -> ImageData:
    """Load data set `name`, downloading it into `data_dir` if missing and `download`.

    Raises ConfigError for an unknown name or option, DataUnavailableError when the
    files are missing and cannot be downloaded.
    """
    if name not in _LOADERS:
        raise ConfigError(f"unknown data set {name!r}; valid: {', '.join(list_datasets())}")
    valid = _options(_LOADERS[name])
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"data set {name!r} has no option {', '.join(unknown)}; valid: {', '.join(valid) or 'none'}")
    return _LOADERS[name](Path(data_dir), download, **options)


# ---------------------------------------------------------------------------- files


def _first_missing(folder: Path, required: Sequence[str]) -> str | None:
    return next((name for name in required if not (folder / name).is_file()), None)


def _ensure_unpacked(name: str, folder: Path, required: Sequence[str], url: str, filename: str,
                     md5: str | None, download: bool) -> None:
    """Make `folder` hold the `required` files, fetching and unpacking `url` if allowed.

    The archive unpacks into a temporary folder that is renamed into place, so an
    interrupted unpack never looks complete. A lock in `folder`'s parent serialises
    trials on one node; whoever waited re-checks and finds the work done.
    """
    data_dir = folder.parent
    missing = _first_missing(folder, required)
    if missing is None:
        return
    if not download:
        raise DataUnavailableError(
            f"{name}: {folder / missing} not found and download=False; "
            f"unpack {filename} ({url}) in {data_dir} or allow the download"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(data_dir / f"{folder.name}.lock"):
        if _first_missing(folder, required) is None:
            return
        try:
            with tempfile.TemporaryDirectory(dir=data_dir, prefix=f".{folder.name}-") as unpacked:
                # Skips the download when `filename` is already in data_dir with the right md5.
                download_and_extract_archive(url, download_root=data_dir, extract_root=unpacked,
                                             filename=filename, md5=md5, remove_finished=True)
                os.replace(Path(unpacked) / folder.name, folder)
        except _FETCH_ERRORS as err:
            reason = " ".join(str(err).split())  # one line, whatever the exception printed
            raise DataUnavailableError(
                f"{name}: {folder / missing} not found and fetching {url} failed ({reason}); "
                f"put {filename} in {data_dir} and load again"
            ) from err
    missing = _first_missing(folder, required)
    if missing is not None:
        raise DataUnavailableError(f"{name}: {filename} from {url} unpacked without {folder / missing}")


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std in [0, 1] units of uint8 images.

    Exact, from a 256-bin histogram per channel: no float copy of the data set
    (that would be 600 MB for CIFAR-10 in float32).
    """
    levels = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for channel in images.transpose(0, 1):
        counts = torch.bincount(channel.reshape(-1), minlength=256).double()
        mean = (counts * levels).sum() / counts.sum()
        means.append(mean.item())
        stds.append(((counts * (levels - mean) ** 2).sum() / counts.sum()).sqrt().item())
    return tuple(means), tuple(stds)


# ---------------------------------------------------------------------------- digits


@register_dataset("digits")
def _load_digits(data_dir: Path, download: bool) -> ImageData:
    """scikit-learn's 1797 bundled 8x8 digits: offline, seconds to train on a CPU."""
    from sklearn.datasets import load_digits  # only this loader needs scikit-learn
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # Pixel values are 0..16; scale to the uint8 range every other data set uses.
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    # A fixed split, stratified so every class is in both halves: 1437 train, 360 val.
    train, val = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0)
    train_images = torch.from_numpy(pixels[train])
    mean, std = _channel_stats(train_images)
    return ImageData(
        "digits", train_images, torch.from_numpy(labels[train]),
        torch.from_numpy(pixels[val]), torch.from_numpy(labels[val]),
        num_classes=10, mean=mean, std=std,
        crop_padding=1,  # 1 pixel of an 8x8 image already shifts a stroke by 12%
        flip=False,  # a mirrored digit is not the same digit
    )


# ---------------------------------------------------------------------------- CIFAR


@dataclasses.dataclass(frozen=True)
class _Cifar:
    """What differs between CIFAR-10 and CIFAR-100: folder, files and URL come from torchvision."""

    source: type[CIFAR10]  # read at load time, so a test can point its url at a local archive
    label_key: bytes
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _read_cifar_batch(path: Path, label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    with open(path, "rb") as f:
        # Python 2 pickles with bytes keys; the archive's md5 was checked on download.
        batch = pickle.load(f, encoding="bytes")
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return torch.from_numpy(images), torch.tensor(batch[label_key], dtype=torch.int64)


def _read_cifar_split(folder: Path, files: list[list[str]], label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    batches = [_read_cifar_batch(folder / file, label_key) for file, _md5 in files]
    return torch.cat([images for images, _ in batches]), torch.cat([labels for _, labels in batches])


def _load_cifar(name: str, spec: _Cifar, data_dir: Path, download: bool) -> ImageData:
    source = spec.source
    folder = data_dir / source.base_folder
    # File md5s are not checked: they would reject every test fixture, and the
    # archive's md5 is checked when it is downloaded.
    required = [file for file, _md5 in source.train_list + source.test_list]
    _ensure_unpacked(name, folder, required, source.url, source.filename, source.tgz_md5, download)
    train_images, train_labels = _read_cifar_split(folder, source.train_list, spec.label_key)
    val_images, val_labels = _read_cifar_split(folder, source.test_list, spec.label_key)
    return ImageData(name, train_images, train_labels, val_images, val_labels,
                     spec.num_classes, spec.mean, spec.std, crop_padding=4, flip=True)


_CIFAR10 = _Cifar(CIFAR10, b"labels", 10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
_CIFAR100 = _Cifar(CIFAR100, b"fine_labels", 100, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))


@register_dataset("c10")
def _load_c10(data_dir: Path, download: bool) -> ImageData:
    """CIFAR-10: 50000 train, 10000 val, 3x32x32."""
    return _load_cifar("c10", _CIFAR10, data_dir, download)


@register_dataset("c100")
def _load_c100(data_dir: Path, download: bool) -> ImageData:
    """CIFAR-100 with its 100 fine labels: 50000 train, 10000 val, 3x32x32."""
    return _load_cifar("c100", _CIFAR100, data_dir, download)


# ---------------------------------------------------------------------------- Tiny ImageNet


def _decode_jpegs(paths: Sequence[Path]) -> torch.Tensor:
    """N x 3 x 64 x 64 uint8 from JPEG files (one PIL decode each; some are grayscale)."""
    from PIL import Image

    out = np.empty((len(paths), _TINY_SIDE, _TINY_SIDE, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            out[i] = np.asarray(image.convert("RGB"))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _decode_tiny_imagenet(folder: Path) -> dict[str, torch.Tensor]:
    """Both splits of an unpacked tiny-imagenet-200 tree; labels index wnids.txt in file order."""
    wnids = (folder / "wnids.txt").read_text().split()
    label_of = {wnid: i for i, wnid in enumerate(wnids)}
    train = [(path, label_of[wnid]) for wnid in wnids
             for path in sorted((folder / "train" / wnid / "images").glob("*.JPEG"))]
    rows = [line.split("\t") for line in (folder / "val" / "val_annotations.txt").read_text().splitlines() if line]
    val = [(folder / "val" / "images" / row[0], label_of[row[1]]) for row in rows]
    tensors = {}
    for split, items in (("train", train), ("val", val)):
        tensors[f"{split}_images"] = _decode_jpegs([path for path, _ in items])
        tensors[f"{split}_labels"] = torch.tensor([label for _, label in items], dtype=torch.int64)
    return tensors


def _save_atomically(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """torch.save to a temporary file renamed over `path`: readers never see half a file."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(tensors, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


@register_dataset("tinyimagenet")
def _load_tinyimagenet(data_dir: Path, download: bool) -> ImageData:
    """Tiny ImageNet: 200 classes, 100000 train, 10000 val, 3x64x64.

    The first load decodes the 110000 JPEGs with PIL (a one-time cost) into
    `data_dir/tiny-imagenet-200.pt` (1.35 GB of uint8); later loads read only that file.
    """
    cache = data_dir / f"{_TINY_FOLDER}.pt"
    if not cache.is_file():
        folder = data_dir / _TINY_FOLDER
        _ensure_unpacked("tinyimagenet", folder, ["wnids.txt", "val/val_annotations.txt"],
                         TINY_IMAGENET_URL, f"{_TINY_FOLDER}.zip", TINY_IMAGENET_MD5, download)
        with FileLock(data_dir / f"{cache.name}.lock"):
            if not cache.is_file():  # another trial may have written it while we waited
                _save_atomically(_decode_tiny_imagenet(folder), cache)
    tensors = torch.load(cache, weights_only=True)
    return ImageData(
        "tinyimagenet", tensors["train_images"], tensors["train_labels"],
        tensors["val_images"], tensors["val_labels"], num_classes=200,
        mean=(0.4802, 0.4481, 0.3975), std=(0.2770, 0.2691, 0.2821),
        # The standard CIFAR-style 4-pixel crop, kept as is at 64x64 (half the
        # relative shift it makes on 32x32 images).
        crop_padding=4, flip=True,
    )


# ---------------------------------------------------------------------------- synthetic

_SYNTHETIC_PROTOTYPE_STD = 32.0  # pixel levels: spread of the class prototypes around grey
# Noise is uniform on the integers -112..112 (std 65 pixel levels) rather than Gaussian:
# integer draws in int16 take half the time of torch.randn and its float32 arithmetic.
_SYNTHETIC_NOISE_HALF_WIDTH = 112
_SYNTHETIC_CHUNK = 4096  # samples generated at once: bounds the int16 temporaries to ~25 MB


def _require_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"synthetic: {name} must be an integer >= {minimum}, got {value!r}")


def _sample_synthetic(prototypes: torch.Tensor, count: int,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` uint8 samples (prototype of a uniformly drawn class + noise) and their labels."""
    labels = torch.randint(len(prototypes), (count,), generator=generator)
    images = torch.empty((count, *prototypes.shape[1:]), dtype=torch.uint8)
    for start in range(0, count, _SYNTHETIC_CHUNK):
        chunk = labels[start:start + _SYNTHETIC_CHUNK]
        noisy = torch.randint(-_SYNTHETIC_NOISE_HALF_WIDTH, _SYNTHETIC_NOISE_HALF_WIDTH + 1,
                              (len(chunk), *prototypes.shape[1:]), generator=generator, dtype=torch.int16)
        images[start:start + len(chunk)] = noisy.add_(prototypes[chunk]).clamp_(0, 255)
    return images, labels


@register_dataset("synthetic")
def _load_synthetic(data_dir: Path, download: bool, *, num_train: int = 50000, num_val: int = 10000,
                    num_classes: int = 10, image_size: int = 32, channels: int = 3, seed: int = 0) -> ImageData:
    """Generated images: a fixed random prototype per class plus per-pixel noise.

    Prototypes are smooth (random at 1/8 resolution, upsampled), so crops and flips keep
    the class signal. Deterministic per seed; prototypes, train and val draw from
    independent streams, so changing `num_train` leaves the val split as it was.
    The default size takes about 2 s on 2 CPU cores.
    """
    for option, value in (("num_train", num_train), ("num_val", num_val), ("num_classes", num_classes),
                          ("image_size", image_size), ("channels", channels)):
        _require_int(option, value, 1)
    _require_int("seed", seed, 0)
    streams = [torch.Generator().manual_seed(int(s.generate_state(1)[0]))
               for s in np.random.SeedSequence(seed).spawn(3)]
    coarse = max(1, image_size // 8)
    low = 128 + _SYNTHETIC_PROTOTYPE_STD * torch.randn((num_classes, channels, coarse, coarse), generator=streams[0])
    smooth = F.interpolate(low, size=(image_size, image_size), mode="bilinear", align_corners=False)
    prototypes = smooth.round().clamp(0, 255).to(torch.int16)
    train_images, train_labels = _sample_synthetic(prototypes, num_train, streams[1])
    val_images, val_labels = _sample_synthetic(prototypes, num_val, streams[2])
    mean, std = _channel_stats(train_images)
    return ImageData("synthetic", train_images, train_labels, val_images, val_labels,
                     num_classes, mean, std, crop_padding=4, flip=True)


# ---------------------------------------------------------------------------- batching


def augment(images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding, and random horizontal flip, of a uint8 batch.

    Each image gets its own offset, uniform in [0, 2 * padding] on each axis, and with
    `flip` is mirrored with probability 1/2. Random numbers come from `generator`, which
    must be on the images' device. One gather over the padded batch does both: no
    per-image loop. With padding 0 and flip False the batch is returned as is.
    """
    if padding == 0 and not flip:
        return images
    n, c, h, w = images.shape
    device = images.device
    row_offset = torch.randint(0, 2 * padding + 1, (n, 1, 1, 1), generator=generator, device=device)
    col_offset = torch.randint(0, 2 * padding + 1, (n, 1, 1, 1), generator=generator, device=device)
    cols = torch.arange(w, device=device).view(1, 1, 1, w)
    if flip:
        mirrored = torch.rand((n, 1, 1, 1), generator=generator, device=device) < 0.5
        cols = torch.where(mirrored, cols.flip(-1), cols)
    padded = F.pad(images, (padding, padding, padding, padding))
    batch = torch.arange(n, device=device).view(n, 1, 1, 1)
    channel = torch.arange(c, device=device).view(1, c, 1, 1)
    rows = torch.arange(h, device=device).view(1, 1, h, 1)
    return padded[batch, channel, row_offset + rows, col_offset + cols]


def _affine(mean: Sequence[float], std: Sequence[float], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and shift with x * scale + shift == (x / 255 - mean) / std, shaped 1 x C x 1 x 1.

    Building them is a host-to-device copy (a sync on CUDA): do it once per pass.
    """
    mean_t = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    return (1 / (255 * std_t)).float().to(device), (-mean_t / std_t).float().to(device)


def _apply(images: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return images.to(torch.float32).mul_(scale).add_(shift)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """float32 (images / 255 - mean) / std per channel, from a uint8 N x C x H x W batch."""
    return _apply(images, *_affine(mean, std, images.device))


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")


def num_train_batches(data: ImageData, batch_size: int) -> int:
    """Batches per epoch of `train_batches`: full batches only, or one if fewer images than a batch."""
    _check_batch_size(batch_size)
    return max(1, len(data.train_labels) // batch_size)


def train_batches(data: ImageData, batch_size: int,
                  generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of augmented, normalised (float32 images, int64 labels) training batches.

    A fresh permutation from `generator` per call; the last incomplete batch is dropped
    (a tiny batch gives noisy BatchNorm statistics, one image breaks BatchNorm) unless
    it is the only one, so a data set smaller than a batch still trains. Cost, measured:
    a CIFAR-sized epoch at batch 512 on an H200, data on the GPU, takes about 30 ms.
    """
    count = num_train_batches(data, batch_size)
    size = min(batch_size, len(data.train_labels))
    order = torch.randperm(len(data.train_labels), generator=generator, device=data.train_images.device)
    scale, shift = _affine(data.mean, data.std, data.train_images.device)
    for k in range(count):
        index = order[k * size:(k + 1) * size]
        images = augment(data.train_images[index], data.crop_padding, data.flip, generator)
        yield _apply(images, scale, shift), data.train_labels[index]


def eval_batches(data: ImageData, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The validation set in order, normalised, not augmented, last partial batch included."""
    _check_batch_size(batch_size)
    scale, shift = _affine(data.mean, data.std, data.val_images.device)
    for start in range(0, len(data.val_labels), batch_size):
        end = start + batch_size
        yield _apply(data.val_images[start:end], scale, shift), data.val_labels[start:end]
