"""The registered data sets' loaders (trainables.catalog names them), each returning an
`ImageData` (trainables.data).

Data sets (train / val / test images): `digits` (scikit-learn's bundled 8x8 digits,
offline, the default for tests; 1149 / 288 / 360), `c10`, `c100` (CIFAR in
torchvision's python format; 45000 / 5000 / 10000), `tinyimagenet` (64x64, decoded once
into a tensor cache; 90000 / 10000 / 10000) and `synthetic` (CIFAR-shaped, generated,
with a learnable signal; 50000 / 5000 / 10000 by default).

Data files are untrusted: archives are unpacked by trainables.archives, and CIFAR
pickles are read by an unpickler that resolves nothing but numpy's array reconstruction.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock
from torchvision.datasets import CIFAR10, CIFAR100

from trainables import catalog
from trainables.archives import ensure_unpacked
from trainables.data import ImageData, split_off_val
from trainables.errors import DataUnavailableError, check_range, one_line

# Tiny ImageNet has no torchvision class; this is the archive cs231n publishes.
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
# md5 of that zip (248,100,043 bytes) as checked by avalanche and other loaders.
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
_TINY_FOLDER = catalog.DOWNLOADS["tinyimagenet"][0]
_TINY_SIDE = 64  # pixels; every Tiny ImageNet image is 64 x 64


# Images held out of the official training data as the val split, per data set.
# (trainables.catalog.SPLIT_SIZES states every split's size; these are its val column.)
DIGITS_VAL_SIZE = catalog.SPLIT_SIZES["digits"][1]  # a stratified 20% of the 1437 left after the test split, rounded up as sklearn does
CIFAR10_VAL_SIZE = catalog.SPLIT_SIZES["c10"][1]  # 10% of 50000, 500 per class
CIFAR100_VAL_SIZE = catalog.SPLIT_SIZES["c100"][1]  # 10% of 50000, 50 per class
TINY_IMAGENET_VAL_SIZE = catalog.SPLIT_SIZES["tinyimagenet"][1]  # 10% of 100000, 50 per class: as many as the official test split


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


def _load_digits(data_dir: Path, download: bool) -> ImageData:
    """scikit-learn's 1797 bundled 8x8 digits: offline, seconds to train on a CPU.

    1149 train, 288 val, 360 test. The test split is a fixed stratified 20%
    (scikit-learn, `random_state=0`); val is `DIGITS_VAL_SIZE` held out of the rest.
    """
    from sklearn.datasets import load_digits  # only this loader needs scikit-learn
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # Pixel values are 0..16; scale to the uint8 range every other data set uses.
    pixels = torch.from_numpy(np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None])
    labels = torch.from_numpy(digits.target.astype(np.int64))
    rest, test = (torch.from_numpy(i) for i in train_test_split(
        np.arange(len(labels)), test_size=0.2, stratify=labels.numpy(), random_state=0))
    train_images, train_labels, val_images, val_labels = split_off_val(pixels[rest], labels[rest], DIGITS_VAL_SIZE)
    mean, std = _channel_stats(train_images)
    return ImageData(
        "digits", train_images, train_labels, val_images, val_labels, pixels[test], labels[test],
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


# The function numpy's pickles call to rebuild an array. Its module is
# numpy.core.multiarray in numpy 1 and numpy._core.multiarray in numpy 2, so it is taken
# from an array's own pickling recipe rather than imported under either name.
_RECONSTRUCT = np.empty(0).__reduce__()[0]


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR batches that resolves no global but numpy's array reconstruction.

    A batch (Python 2 cPickle, protocol 2) is a dict of bytes keys holding bytes, lists
    of ints and bytes, and one numpy uint8 array, which is the only object that needs a
    global: `_reconstruct`, `ndarray` and `dtype`. Any other global raises
    UnpicklingError instead of being imported, so a crafted file cannot call anything.
    """

    _ALLOWED: ClassVar[dict[tuple[str, str], object]] = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy 2's name for it
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR batch never does") from None


class _NotACifarBatch(Exception):
    """A file of a CIFAR folder that cannot be read as a CIFAR batch; the message names it and says why."""


def _read_cifar_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 N x 3 x 32 x 32 images, int64 labels) of one batch file; _NotACifarBatch if it is not one."""
    try:
        with open(path, "rb") as f:
            # Python 2 pickles with bytes keys; nothing in them is executed (`_CifarUnpickler`).
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except Exception as err:  # malformed bytes make the unpickler raise almost anything; all mean "not a batch"
        raise _NotACifarBatch(f"{path} is not a CIFAR batch: {one_line(err, squash_space=True) or type(err).__name__}") from err
    problem = _cifar_batch_problem(batch, label_key, num_classes)
    if problem is not None:
        raise _NotACifarBatch(f"{path} is not a CIFAR batch: {problem}")
    images = batch[b"data"].reshape(-1, 3, 32, 32)
    return torch.from_numpy(images), torch.tensor(batch[label_key], dtype=torch.int64)


def _cifar_batch_problem(batch: object, label_key: bytes, num_classes: int) -> str | None:
    """What makes an unpickled `batch` differ from a CIFAR batch, or None when it is one.

    A batch is a dict with b"data", a uint8 N x 3072 array, and `label_key`, a list of
    N ints in [0, num_classes): a label out of range would otherwise fail mid-training.
    """
    if not isinstance(batch, dict):
        return f"it holds a {type(batch).__name__}, not a dict"
    missing = [repr(key) for key in (b"data", label_key) if key not in batch]
    if missing:
        return f"it has no {' or '.join(missing)} entry"
    images, labels = batch[b"data"], batch[label_key]
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.shape[1:] == (3 * 32 * 32,)):
        return "its b'data' is not a uint8 N x 3072 array"
    if not (isinstance(labels, list) and all(type(label) is int and 0 <= label < num_classes for label in labels)):
        return f"its {label_key!r} is not a list of integers from 0 to {num_classes - 1}"
    if len(labels) != len(images):
        return f"it has {len(images)} images and {len(labels)} labels"
    return None


def _read_cifar_split(folder: Path, files: list[list[str]], spec: _Cifar) -> tuple[torch.Tensor, torch.Tensor]:
    batches = [_read_cifar_batch(folder / file, spec.label_key, spec.num_classes) for file, _md5 in files]
    return torch.cat([images for images, _ in batches]), torch.cat([labels for _, labels in batches])


def _load_cifar(name: str, spec: _Cifar, val_size: int, data_dir: Path, download: bool) -> ImageData:
    """Train and val from the training batches (`val_size` held out), test from the test batch."""
    source = spec.source
    folder = data_dir / source.base_folder
    # File md5s are not checked: they would reject every test fixture, and the
    # archive's md5 is checked when it is downloaded.
    required = [file for file, _md5 in source.train_list + source.test_list]
    ensure_unpacked(name, folder, required, source.url, source.filename, source.tgz_md5, download)
    try:
        train = _read_cifar_split(folder, source.train_list, spec)
        test = _read_cifar_split(folder, source.test_list, spec)
    except _NotACifarBatch as err:
        raise DataUnavailableError(
            f"{name}: {err}; delete {folder} and load again to unpack a fresh copy "
            f"(downloaded, or from {source.filename} put back in {data_dir})"
        ) from err
    return ImageData(name, *split_off_val(*train, val_size), *test, spec.num_classes, spec.mean, spec.std,
                     crop_padding=4, flip=True)


_CIFAR10 = _Cifar(CIFAR10, b"labels", 10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
_CIFAR100 = _Cifar(CIFAR100, b"fine_labels", 100, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))


def _load_c10(data_dir: Path, download: bool) -> ImageData:
    """CIFAR-10, 3x32x32: 45000 train, 5000 val (`CIFAR10_VAL_SIZE`), 10000 test (test_batch)."""
    return _load_cifar("c10", _CIFAR10, CIFAR10_VAL_SIZE, data_dir, download)


def _load_c100(data_dir: Path, download: bool) -> ImageData:
    """CIFAR-100 with its 100 fine labels, 3x32x32: 45000 train, 5000 val (`CIFAR100_VAL_SIZE`), 10000 test."""
    return _load_cifar("c100", _CIFAR100, CIFAR100_VAL_SIZE, data_dir, download)


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
    """The official train and val splits of an unpacked tiny-imagenet-200 tree.

    Keys train_* and val_* name the folders (val/ is the de-facto test split); labels
    index wnids.txt in file order.
    """
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


def _load_tinyimagenet(data_dir: Path, download: bool) -> ImageData:
    """Tiny ImageNet, 200 classes, 3x64x64: 90000 train, 10000 val, 10000 test.

    val is `TINY_IMAGENET_VAL_SIZE` (50 per class) held out of the official train folder;
    test is the official val folder (its labelled test split, as the real test labels
    were never published). The first load decodes the 110000 JPEGs with PIL (a one-time
    cost) into `data_dir/tiny-imagenet-200.pt` (1.35 GB of uint8), which holds the
    official folders as they are, so the holdout is carved on every load (a 1.1 GB copy of the train images).
    """
    cache = data_dir / f"{_TINY_FOLDER}.pt"
    if not cache.is_file():
        folder = data_dir / _TINY_FOLDER
        ensure_unpacked("tinyimagenet", folder, ["wnids.txt", "val/val_annotations.txt"],
                         TINY_IMAGENET_URL, f"{_TINY_FOLDER}.zip", TINY_IMAGENET_MD5, download)
        with FileLock(data_dir / f"{cache.name}.lock"):
            if not cache.is_file():  # another trial may have written it while we waited
                _save_atomically(_decode_tiny_imagenet(folder), cache)
    tensors = torch.load(cache, weights_only=True)
    train = split_off_val(tensors.pop("train_images"), tensors.pop("train_labels"), TINY_IMAGENET_VAL_SIZE)
    # The cache's val_* is the official val folder, which is this data's test split.
    return ImageData(
        "tinyimagenet", *train, tensors["val_images"], tensors["val_labels"], num_classes=200,
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


_SYNTHETIC_SIZES = catalog.SPLIT_SIZES["synthetic"]


def _load_synthetic(data_dir: Path, download: bool, *, num_train: int = _SYNTHETIC_SIZES[0],
                    num_val: int = _SYNTHETIC_SIZES[1], num_test: int = _SYNTHETIC_SIZES[2],
                    num_classes: int = 10, image_size: int = 32, channels: int = 3,
                    seed: int = 0) -> ImageData:
    """Generated images: a fixed random prototype per class plus per-pixel noise.

    Prototypes are smooth (random at 1/8 resolution, upsampled), so crops and flips keep
    the class signal. Deterministic per seed; prototypes, train, val and test draw from
    independent streams, so val and test never share a draw and changing one split's
    size leaves the others as they were. The default size (50000 / 5000 / 10000) takes
    about 2 s on 2 CPU cores.
    """
    num_train, num_val, num_test, num_classes, image_size, channels = (
        check_range(f"synthetic: {option}", value, 1, integral=True)
        for option, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test),
                              ("num_classes", num_classes), ("image_size", image_size), ("channels", channels)))
    seed = check_range("synthetic: seed", seed, 0, integral=True)
    # Children 0-2 are what the two-split version drew (spawn(n)'s first children do not
    # depend on n), so train and val are unchanged; child 3 is test's.
    streams = [torch.Generator().manual_seed(int(s.generate_state(1)[0]))
               for s in np.random.SeedSequence(seed).spawn(4)]
    coarse = max(1, image_size // 8)
    low = 128 + _SYNTHETIC_PROTOTYPE_STD * torch.randn((num_classes, channels, coarse, coarse), generator=streams[0])
    smooth = F.interpolate(low, size=(image_size, image_size), mode="bilinear", align_corners=False)
    prototypes = smooth.round().clamp(0, 255).to(torch.int16)
    train_images, train_labels = _sample_synthetic(prototypes, num_train, streams[1])
    val = _sample_synthetic(prototypes, num_val, streams[2])
    test = _sample_synthetic(prototypes, num_test, streams[3])
    mean, std = _channel_stats(train_images)
    return ImageData("synthetic", train_images, train_labels, *val, *test,
                     num_classes, mean, std, crop_padding=4, flip=True)
