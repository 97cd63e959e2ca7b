"""Data sets by name, their three splits, their untrusted files and on-device batching
(trainables/data.py, readers.py, archives.py, batching.py).

Loaders are checked against fixtures written in the real on-disk formats
(tests/fixtures_data.py); downloads against real archives served over HTTP on localhost.
Splits are checked by content: every fixture image is distinct, so where an image went
is known from its pixels alone.
"""

import hashlib
import io
import math
import os
import pickle
import pickletools
import stat
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torchvision.datasets import CIFAR10, CIFAR100

from fixtures_data import (
    CIFAR_ARCHIVES, CIFAR_LAYOUTS, Expected, make_archive, py2_pickle, serve_directory, write_cifar,
    write_tiny_imagenet,
)
from trainables import archives, catalog, data, readers
from trainables.batching import augment, eval_batches, normalize, num_train_batches, train_batches
from trainables.catalog import list_datasets, register_dataset
from trainables.data import ImageData, load_dataset, stratified_holdout
from trainables.errors import ConfigError, DataUnavailableError, one_line

CIFAR_CLASSES = {"c10": CIFAR10, "c100": CIFAR100}
VAL_SIZE_CONSTANTS = {"c10": "CIFAR10_VAL_SIZE", "c100": "CIFAR100_VAL_SIZE", "tinyimagenet": "TINY_IMAGENET_VAL_SIZE"}
TENSOR_FIELDS = [f"{split}_{kind}" for split in ("train", "val", "test") for kind in ("images", "labels")]


def assert_same(loaded: ImageData, expected: ImageData) -> None:
    """Every split of `loaded` equals `expected`'s, dtypes included (both dropped counts as equal)."""
    for field in TENSOR_FIELDS:
        got, want = getattr(loaded, field), getattr(expected, field)
        assert (got is None and want is None) or (got.dtype == want.dtype and torch.equal(got, want)), field


def content(images: torch.Tensor) -> list[bytes]:
    """One key per image: its pixels."""
    return [image.numpy().tobytes() for image in images]


def positions_in(images: torch.Tensor, original: torch.Tensor) -> list[int]:
    """Where each of `images` is in `original`, found by its pixels (KeyError if it is not there)."""
    where = {key: i for i, key in enumerate(content(original))}
    assert len(where) == len(original), "the original images must be distinguishable"
    return [where[key] for key in content(images)]


def assert_three_splits(loaded: ImageData, expected: Expected, val_size: int) -> None:
    """val is `val_size` images of the official train split, train the rest, test the official test split.

    train and val partition the official training images exactly, each keeping its
    images' file order and labels; no image is in two splits.
    """
    train_at = positions_in(loaded.train_images, expected.train_images)
    val_at = positions_in(loaded.val_images, expected.train_images)
    assert len(val_at) == val_size and len(train_at) == len(expected.train_labels) - val_size
    assert sorted(train_at + val_at) == list(range(len(expected.train_labels)))
    assert train_at == sorted(train_at) and val_at == sorted(val_at)
    assert torch.equal(loaded.train_labels, expected.train_labels[train_at])
    assert torch.equal(loaded.val_labels, expected.train_labels[val_at])
    assert loaded.test_images.dtype == torch.uint8 and loaded.test_labels.dtype == torch.int64
    assert torch.equal(loaded.test_images, expected.test_images)
    assert torch.equal(loaded.test_labels, expected.test_labels)
    train, val, test = (set(content(images)) for images in (loaded.train_images, loaded.val_images,
                                                             loaded.test_images))
    assert not train & val and not train & test and not val & test


def assert_stratified(held_labels: torch.Tensor, labels: torch.Tensor) -> None:
    """Each class's count in `held_labels` is within 1 of its share of `labels`, scaled to the holdout size."""
    size, total = len(held_labels), len(labels)
    for k in range(int(labels.max()) + 1):
        share = size * (labels == k).sum().item() / total
        assert abs((held_labels == k).sum().item() - share) < 1, f"class {k}"


def channel_stats(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    x = images.numpy().astype(np.float64) / 255
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))


def make_data(n_train=10, n_val=10, n_test=10, crop_padding=0, flip=False, shape=(3, 4, 5), seed=0) -> ImageData:
    """Images with random pixels and labels 0..n-1, so a label identifies its image within its split."""
    g = torch.Generator().manual_seed(seed)

    def images(n: int) -> torch.Tensor:
        return torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)

    return ImageData(
        "test", images(n_train), torch.arange(n_train), images(n_val), torch.arange(n_val),
        images(n_test), torch.arange(n_test), num_classes=max(n_train, n_val, n_test),
        mean=(0.5, 0.4, 0.3)[: shape[0]], std=(0.25, 0.2, 0.3)[: shape[0]], crop_padding=crop_padding, flip=flip,
    )


def load_twice(name: str, *args, **options) -> tuple[ImageData, ImageData]:
    """Two loads under different global random states of torch and numpy."""
    loads = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        np.random.seed(global_seed)
        loads.append(load_dataset(name, *args, **options))
    return loads[0], loads[1]


@pytest.fixture
def small_holdouts(monkeypatch):
    """Hold out 2 images of each fixture's training split rather than the real sizes (5000, 10000)."""
    for constant in VAL_SIZE_CONSTANTS.values():
        monkeypatch.setattr(readers, constant, 2)


# ------------------------------------------------------------------------ registry


def test_the_registry_holds_the_offline_default_and_the_papers_data_sets():
    assert {"c10", "c100", "digits", "synthetic", "tinyimagenet"} <= set(list_datasets())
    assert list_datasets() == sorted(list_datasets())


def test_unknown_name_is_a_config_error_listing_valid_names():
    with pytest.raises(ConfigError, match="unknown data set 'cifar10'; valid: c10, c100, digits, synthetic"):
        load_dataset("cifar10")


def test_unknown_option_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="'digits' has no option foo; valid: none"):
        load_dataset("digits", tmp_path, foo=1)
    with pytest.raises(ConfigError, match="num_trian; valid: num_train, num_val, num_test"):
        load_dataset("synthetic", num_trian=5)


@pytest.mark.parametrize("option", [{"num_train": 0}, {"num_test": 0}, {"num_classes": "10"}, {"channels": True},
                                    {"image_size": 8.5},
                                    {"seed": -1}])
def test_bad_synthetic_option_value_is_a_config_error(option):
    with pytest.raises(ConfigError, match=f"synthetic: {next(iter(option))} must be a whole number"):
        load_dataset("synthetic", **option)


def test_registered_loader_gets_dir_download_and_its_options(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog, "_DATASETS", dict(catalog._DATASETS))  # the registration is undone
    calls = []

    @register_dataset("tiny_test")
    def _load(data_dir, download, *, size=2):
        calls.append((data_dir, download, size))
        return make_data(n_train=size)

    assert len(load_dataset("tiny_test", tmp_path, download=False, size=3).train_labels) == 3
    assert calls == [(tmp_path, False, 3)]
    with pytest.raises(ValueError, match="registered twice"):
        register_dataset("tiny_test")(_load)
    assert "tiny_test" in list_datasets()


# ------------------------------------------------------------------------ stratified_holdout


def test_holdout_sizes_are_the_documented_ones():
    assert (readers.CIFAR10_VAL_SIZE, readers.CIFAR100_VAL_SIZE, readers.TINY_IMAGENET_VAL_SIZE) == (5000, 5000, 10000)
    # digits: 20% of what the 360-image test split leaves, rounded up as sklearn rounds a fraction.
    assert readers.DIGITS_VAL_SIZE == math.ceil(0.2 * (1797 - 360))
    # The catalog's split sizes (what a plan counts a refit's steps by) are the loaders'.
    assert catalog.SPLIT_SIZES["digits"] == (1797 - 360 - 288, 288, 360)
    assert catalog.SPLIT_SIZES["c10"] == catalog.SPLIT_SIZES["c100"] == (50000 - 5000, 5000, 10000)
    assert catalog.SPLIT_SIZES["tinyimagenet"] == (100000 - 10000, 10000, 10000)


@pytest.mark.parametrize("constant, num_classes, per_class", [
    ("CIFAR10_VAL_SIZE", 10, 5000), ("CIFAR100_VAL_SIZE", 100, 500), ("TINY_IMAGENET_VAL_SIZE", 200, 500),
])
def test_holdout_of_a_balanced_real_sized_label_vector_is_equal_per_class(constant, num_classes, per_class):
    size = getattr(readers, constant)
    # Shaped like the real training labels: every class equally often, in a shuffled order.
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    kept, held = stratified_holdout(labels, size)
    assert len(held) == size and len(kept) == len(labels) - size
    assert torch.equal(torch.bincount(labels[held], minlength=num_classes),
                       torch.full((num_classes,), size // num_classes))
    assert torch.equal(torch.sort(torch.cat([kept, held])).values, torch.arange(len(labels)))


@pytest.mark.parametrize("size", [1, 17, 250, 499])
def test_holdout_is_exact_stratified_disjoint_and_sorted(size):
    # Uneven classes: 7 classes with probabilities 0.02 .. 0.26, one class absent.
    probs = torch.arange(1, 8, dtype=torch.float64)
    labels = torch.multinomial(probs / probs.sum(), 500, replacement=True, generator=torch.Generator().manual_seed(3))
    labels[labels == 4] = 7  # class 4 absent, labels not contiguous
    kept, held = stratified_holdout(labels, size)
    assert kept.dtype == held.dtype == torch.int64
    assert len(held) == size and len(kept) == 500 - size
    assert torch.equal(kept, torch.sort(kept).values) and torch.equal(held, torch.sort(held).values)
    assert torch.equal(torch.sort(torch.cat([kept, held])).values, torch.arange(500))
    assert_stratified(labels[held], labels)


def test_holdout_is_fixed_by_its_seed_alone():
    labels = torch.randint(0, 5, (300,), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    np.random.seed(1)
    first = stratified_holdout(labels, 40)
    torch.manual_seed(2)
    np.random.seed(2)
    torch.rand(10)  # move torch's global stream on as a trial would
    second = stratified_holdout(labels, 40)
    explicit = stratified_holdout(labels, 40, seed=data.HOLDOUT_SEED)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(first[1], explicit[1])
    assert not torch.equal(first[1], stratified_holdout(labels, 40, seed=1)[1])


@pytest.mark.parametrize("size", [0, -1, 10, 11, 2.5, True])
def test_holdout_size_must_leave_both_parts_non_empty(size):
    with pytest.raises(ValueError, match="0 < size < 10"):
        stratified_holdout(torch.arange(10) % 2, size)


def test_holdout_needs_one_dimensional_labels():
    with pytest.raises(ValueError, match="1-D labels"):
        stratified_holdout(torch.zeros(5, 2, dtype=torch.int64), 2)


# ------------------------------------------------------------------------ digits


def test_digits_three_fixed_stratified_splits_of_the_real_images():
    first, second = load_twice("digits")
    assert_same(first, second)
    assert first.train_images.shape == (1149, 1, 8, 8) and first.val_images.shape == (288, 1, 8, 8)
    assert first.test_images.shape == (360, 1, 8, 8)
    assert first.shape == (1, 8, 8) and first.num_classes == 10
    assert (first.crop_padding, first.flip) == (1, False)

    digits = load_digits()
    # test: the fixed 20% split as before; train + val: the other 1437, in sklearn's order.
    rest, test = train_test_split(np.arange(1797), test_size=0.2, stratify=digits.target, random_state=0)
    scaled = torch.tensor([[round(v * 255 / 16) for v in image.ravel()] for image in digits.images], dtype=torch.uint8)
    scaled = scaled.reshape(1797, 1, 8, 8)
    target = torch.from_numpy(digits.target).long()
    assert_three_splits(first, Expected(scaled[rest], target[rest], scaled[test], target[test]), val_size=288)
    assert_stratified(first.val_labels, target[rest])
    assert first.train_images.dtype == torch.uint8 and first.train_images.max() == 255
    mean, std = channel_stats(first.train_images)  # the training split only: nothing of val or test
    np.testing.assert_allclose(first.mean, mean, rtol=1e-9)
    np.testing.assert_allclose(first.std, std, rtol=1e-9)


# ------------------------------------------------------------------------ CIFAR


@pytest.mark.usefixtures("small_holdouts")
@pytest.mark.parametrize("name", ["c10", "c100"])
def test_cifar_reads_the_pickles_pixel_for_pixel(tmp_path, name):
    expected = write_cifar(tmp_path, name, per_file=3)
    loaded = load_dataset(name, tmp_path, download=False)
    assert_three_splits(loaded, expected, val_size=2)
    assert loaded.train_images.shape == ((15 if name == "c10" else 3) - 2, 3, 32, 32)
    assert loaded.num_classes == {"c10": 10, "c100": 100}[name]
    assert loaded.mean == {"c10": (0.4914, 0.4822, 0.4465), "c100": (0.5071, 0.4865, 0.4409)}[name]
    assert loaded.std == {"c10": (0.2470, 0.2435, 0.2616), "c100": (0.2673, 0.2564, 0.2762)}[name]
    assert (loaded.crop_padding, loaded.flip) == (4, True)


@pytest.mark.parametrize("name, per_file", [("c10", 40), ("c100", 400)])
def test_cifar_val_is_a_fixed_stratified_holdout_of_the_training_batches(tmp_path, monkeypatch, name, per_file):
    # 200 (c10: 5 files) or 400 (c100: 1 file) training images with uneven classes; hold out 50.
    monkeypatch.setattr(readers, VAL_SIZE_CONSTANTS[name], 50)
    expected = write_cifar(tmp_path, name, per_file=per_file)
    first, second = load_twice(name, tmp_path, download=False)
    assert_same(first, second)
    assert_three_splits(first, expected, val_size=50)
    assert_stratified(first.val_labels, expected.train_labels)


@pytest.mark.parametrize("name", ["c10", "c100"])
def test_cifar_smaller_than_its_holdout_is_refused(tmp_path, name):
    write_cifar(tmp_path, name, per_file=3)  # 15 or 3 training images, not 50000
    with pytest.raises(ValueError, match="0 < size <"):
        load_dataset(name, tmp_path, download=False)


@pytest.mark.parametrize("name", ["c10", "c100"])
def test_cifar_missing_without_download_names_folder_and_archive(tmp_path, name):
    folder = tmp_path / CIFAR_LAYOUTS[name][0]
    with pytest.raises(DataUnavailableError) as err:
        load_dataset(name, tmp_path, download=False)
    message = str(err.value)
    assert str(folder) in message and CIFAR_ARCHIVES[name] in message and "download=False" in message
    assert "\n" not in message


@pytest.fixture
def remote(tmp_path):
    """(folder, base URL): a folder served over HTTP on localhost."""
    folder = tmp_path / "remote"
    folder.mkdir()
    with serve_directory(folder) as url:
        yield folder, url


def serve_cifar(remote, monkeypatch, name):
    """Write a fixture, pack it as the real archive, and point torchvision's URL at it."""
    folder, url = remote
    expected = write_cifar(folder, name, per_file=4, seed=1)
    md5 = make_archive(folder / CIFAR_LAYOUTS[name][0], folder / CIFAR_ARCHIVES[name])
    monkeypatch.setattr(CIFAR_CLASSES[name], "url", f"{url}/{CIFAR_ARCHIVES[name]}")
    monkeypatch.setattr(CIFAR_CLASSES[name], "tgz_md5", md5)
    return expected


@pytest.mark.usefixtures("small_holdouts")
@pytest.mark.parametrize("name", ["c10", "c100"])
def test_cifar_download_extracts_the_archive(tmp_path, remote, monkeypatch, name):
    expected = serve_cifar(remote, monkeypatch, name)
    data_dir = tmp_path / "data"
    assert_three_splits(load_dataset(name, data_dir, download=True), expected, val_size=2)
    # Only the unpacked folder and the lock file remain: no archive, no half-unpacked temp folder.
    folder = CIFAR_LAYOUTS[name][0]
    assert sorted(p.name for p in data_dir.iterdir()) == [folder, f"{folder}.lock"]


@pytest.mark.parametrize("where", ["unreachable", "http 404"])
def test_cifar_download_failure_names_folder_and_archive(tmp_path, remote, monkeypatch, where):
    missing = {"unreachable": (tmp_path / "nowhere" / "cifar-10-python.tar.gz").as_uri(),
               "http 404": f"{remote[1]}/cifar-10-python.tar.gz"}[where]
    monkeypatch.setattr(CIFAR10, "url", missing)
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("c10", tmp_path / "data", download=True)
    message = str(err.value)
    assert str(tmp_path / "data" / "cifar-10-batches-py") in message and "put cifar-10-python.tar.gz in" in message
    assert "\n" not in message


def test_cifar_download_with_wrong_md5_is_unavailable(tmp_path, remote, monkeypatch):
    serve_cifar(remote, monkeypatch, "c10")
    monkeypatch.setattr(CIFAR10, "tgz_md5", "0" * 32)
    with pytest.raises(DataUnavailableError, match="corrupted"):
        load_dataset("c10", tmp_path / "data", download=True)
    assert not (tmp_path / "data" / "cifar-10-batches-py").exists()


@pytest.mark.usefixtures("small_holdouts")
def test_concurrent_loads_download_once(tmp_path, remote, monkeypatch):
    expected = serve_cifar(remote, monkeypatch, "c10")
    real, calls = archives.download_url, []

    def slow_download(*args, **kwargs):
        calls.append(args)
        time.sleep(0.3)  # widen the window in which an unlocked second loader would also fetch
        real(*args, **kwargs)

    monkeypatch.setattr(archives, "download_url", slow_download)
    start, results = threading.Barrier(2), []

    def load():
        start.wait()
        results.append(load_dataset("c10", tmp_path / "data", download=True))

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 2
    for loaded in results:
        assert_three_splits(loaded, expected, val_size=2)


# ------------------------------------------------------------------------ Tiny ImageNet


@pytest.mark.usefixtures("small_holdouts")
def test_tinyimagenet_decodes_jpegs_and_labels_by_wnids_order(tmp_path):
    expected = write_tiny_imagenet(tmp_path, wnids=("n02", "n01", "n03"), per_class=2, num_val=4)
    loaded = load_dataset("tinyimagenet", tmp_path, download=False)
    assert_three_splits(loaded, expected, val_size=2)
    assert expected.train_labels.tolist() == [0, 0, 1, 1, 2, 2]  # n02 is first in wnids.txt, so label 0
    grey = expected.train_images[0]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])  # grayscale JPEG -> 3 equal channels
    assert (loaded.shape, loaded.num_classes, loaded.crop_padding, loaded.flip) == ((3, 64, 64), 200, 4, True)
    assert loaded.mean == (0.4802, 0.4481, 0.3975) and loaded.std == (0.2770, 0.2691, 0.2821)


def test_tinyimagenet_val_is_a_fixed_equal_per_class_holdout_and_test_the_val_folder(tmp_path, monkeypatch):
    # 3 classes x 10 training images, 6 held out: 2 per class, as 50 of 500 per class for real.
    monkeypatch.setattr(readers, "TINY_IMAGENET_VAL_SIZE", 6)
    expected = write_tiny_imagenet(tmp_path, per_class=10, num_val=5)
    first = load_dataset("tinyimagenet", tmp_path, download=False)
    assert_three_splits(first, expected, val_size=6)
    assert torch.bincount(first.val_labels).tolist() == [2, 2, 2]
    for jpeg in (tmp_path / "tiny-imagenet-200").rglob("*.JPEG"):  # the second load reads the tensor cache
        jpeg.unlink()
    torch.manual_seed(5)
    assert_same(load_dataset("tinyimagenet", tmp_path, download=False), first)
    assert (tmp_path / "tiny-imagenet-200.pt").is_file() and not list(tmp_path.glob("*.tmp"))


def test_tinyimagenet_cache_holds_the_official_folders_under_their_own_names(tmp_path, monkeypatch):
    # A cache as the first load writes it (and as loads before the three-split change did):
    # train_* is the whole train folder, val_* the val folder, which becomes the test split.
    monkeypatch.setattr(readers, "TINY_IMAGENET_VAL_SIZE", 4)
    expected = write_tiny_imagenet(tmp_path / "source", per_class=4, num_val=3, seed=2)
    torch.save({"train_images": expected.train_images, "train_labels": expected.train_labels,
                "val_images": expected.test_images, "val_labels": expected.test_labels},
               tmp_path / "tiny-imagenet-200.pt")
    assert_three_splits(load_dataset("tinyimagenet", tmp_path, download=False), expected, val_size=4)


@pytest.mark.usefixtures("small_holdouts")
def test_tinyimagenet_download_unpacks_the_zip(tmp_path, remote, monkeypatch):
    folder, url = remote
    expected = write_tiny_imagenet(folder, seed=3)
    md5 = make_archive(folder / "tiny-imagenet-200", folder / "tiny-imagenet-200.zip")
    monkeypatch.setattr(readers, "TINY_IMAGENET_URL", f"{url}/tiny-imagenet-200.zip")
    monkeypatch.setattr(readers, "TINY_IMAGENET_MD5", md5)
    assert_three_splits(load_dataset("tinyimagenet", tmp_path / "data", download=True), expected, val_size=2)
    assert (tmp_path / "data" / "tiny-imagenet-200" / "wnids.txt").is_file()
    assert not (tmp_path / "data" / "tiny-imagenet-200.zip").exists()


@pytest.mark.parametrize("download", [False, True])
def test_tinyimagenet_missing_names_folder_and_archive(tmp_path, monkeypatch, download):
    monkeypatch.setattr(readers, "TINY_IMAGENET_URL", (tmp_path / "missing" / "tiny-imagenet-200.zip").as_uri())
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("tinyimagenet", tmp_path, download=download)
    message = str(err.value)
    assert str(tmp_path / "tiny-imagenet-200" / "wnids.txt") in message and "tiny-imagenet-200.zip" in message
    assert "\n" not in message


# ------------------------------------------------------------------------ untrusted files: helpers


def tree(root: Path, skip: Path | None = None) -> dict[str, tuple]:
    """Everything under `root` (but `skip` and what is under it) and what it is.

    A file: its bytes and link count; a symlink: its target; a folder; anything else:
    "special". Links are not followed, so a symlink out of `root` lists nothing out there.
    """
    found = {}
    for folder, dirs, files in os.walk(root):
        for entry in map(Path(folder).joinpath, dirs + files):
            if entry == skip:
                continue
            if entry.is_symlink():
                found[str(entry)] = ("symlink", os.readlink(entry))
            elif entry.is_dir():
                found[str(entry)] = ("folder",)
            elif entry.is_file():
                found[str(entry)] = ("file", entry.read_bytes(), entry.stat().st_nlink)
            else:
                found[str(entry)] = ("special",)
        dirs[:] = [d for d in dirs if Path(folder, d) != skip]
    return found


def climb(folder: Path) -> str:
    """'../' repeated enough to climb from `folder`, and a few levels of scratch folders in it, to /."""
    return "../" * (len(folder.parts) + 6)


def from_root(path: Path) -> str:
    """`path` without its leading '/', to follow a `climb`."""
    return str(path).lstrip("/")


@pytest.fixture
def outside(tmp_path):
    """A folder next to data_dir with a file in it: what a hostile archive or pickle aims at."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text("the user's own file")
    return folder


# ------------------------------------------------------------------------ untrusted files: CIFAR pickles


def test_cifar_fixture_batches_are_python2_pickles_like_the_originals(tmp_path):
    # cifar-10-batches-py was written by Python 2's cPickle at protocol 2: its strings are
    # BINSTRINGs and its only globals numpy 1's array reconstruction. Python 3 at
    # protocol 2 would add _codecs.encode, numpy 2 its numpy._core name.
    write_cifar(tmp_path, "c10", per_file=3)
    raw = (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    ops = [(op.name, arg) for op, arg, _pos in pickletools.genops(raw)]
    assert ops[0] == ("PROTO", 2)
    assert {arg for op, arg in ops if op == "GLOBAL"} == {
        "numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    assert {op for op, _ in ops if "STRING" in op or "BYTES" in op or "UNICODE" in op or "GLOBAL" in op} == {
        "SHORT_BINSTRING", "BINSTRING", "GLOBAL"}
    # A 3 x 3072 uint8 array as Python 2 with numpy 1 pickled one (less the memo opcodes).
    assert (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R(K\x01K\x03M\x00\x0c\x86"
            b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
            b"\x89T\x00\x24\x00\x00") in raw
    batch = pickle.loads(raw, encoding="bytes")  # as the CIFAR page says to read them
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (3, 3072)
    assert isinstance(batch[b"labels"], list) and all(type(label) is int for label in batch[b"labels"])


@pytest.mark.usefixtures("small_holdouts")
@pytest.mark.parametrize("protocol", [3, 4])
def test_cifar_batches_repickled_by_python3_load_too(tmp_path, protocol):
    expected = write_cifar(tmp_path, "c10", per_file=3)
    folder, train_files, test_files = CIFAR_LAYOUTS["c10"][:3]
    for file in train_files + test_files:
        path = tmp_path / folder / file
        path.write_bytes(pickle.dumps(pickle.loads(path.read_bytes(), encoding="bytes"), protocol=protocol))
    numpy2 = int(np.__version__.split(".")[0]) >= 2
    assert (b"numpy._core.multiarray" in (tmp_path / folder / "data_batch_1").read_bytes()) == numpy2
    assert_three_splits(load_dataset("c10", tmp_path, download=False), expected, val_size=2)


class Call:
    """Pickles as the call `func(*args)`: what a crafted file makes a plain unpickler run."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


# Calls that create `target` (np.save keeps a name ending in .npy as it is).
PAYLOADS = {
    "open for writing": lambda target: Call(open, str(target), "w"),
    "Path.touch": lambda target: Call(Path.touch, target),
    "numpy.save": lambda target: Call(np.save, str(target), np.zeros(1)),
}


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_cifar_batch_that_would_run_code_is_refused_and_runs_nothing(tmp_path, payload, protocol):
    def crafted(target: Path) -> bytes:
        return pickle.dumps({b"data": PAYLOADS[payload](target), b"labels": [0, 1, 2]}, protocol=protocol)

    control = tmp_path / "control.npy"
    pickle.loads(crafted(control))  # the payload is live: a plain unpickler creates its file
    assert control.is_file()
    data_dir, target = tmp_path / "data", tmp_path / "planted.npy"
    write_cifar(data_dir, "c10", per_file=3)
    batch = data_dir / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(crafted(target))
    before = tree(tmp_path)
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("c10", data_dir, download=False)
    message = str(err.value)
    assert f"{batch} is not a CIFAR batch: it refers to " in message and "\n" not in message
    assert not target.exists() and tree(tmp_path) == before


def with_labels(labels: list) -> dict:
    """A batch of black images, one per label."""
    return {b"data": np.zeros((len(labels), 3072), np.uint8), b"labels": labels}


BAD_BATCHES = {
    "random bytes": lambda good: np.random.default_rng(0).bytes(2000),
    "an empty file": lambda good: b"",
    "a cut-off file": lambda good: good[:len(good) // 2],
    "a list, not a dict": lambda good: py2_pickle([1, 2, 3]),
    "no labels": lambda good: py2_pickle({b"data": np.zeros((3, 3072), np.uint8)}),
    "no images": lambda good: py2_pickle({b"labels": [0, 1, 2]}),
    "images of the wrong shape": lambda good: py2_pickle({b"data": np.zeros((3, 3000), np.uint8),
                                                          b"labels": [0, 1, 2]}),
    "images not uint8": lambda good: pickle.dumps({b"data": np.zeros((3, 3072)), b"labels": [0, 1, 2]}, protocol=4),
    "images as a list": lambda good: py2_pickle({b"data": [0] * 3072, b"labels": [0]}),
    "a label out of range": lambda good: py2_pickle(with_labels([0, 1, 10])),
    "a label that is not an int": lambda good: py2_pickle(with_labels([0, 1, b"2"])),
    "more labels than images": lambda good: py2_pickle({**with_labels([0, 1, 2]), b"labels": [0, 1, 2, 3]}),
}


@pytest.mark.parametrize("bad", sorted(BAD_BATCHES))
def test_cifar_batch_that_is_not_one_names_the_file_and_what_to_do(tmp_path, bad):
    write_cifar(tmp_path, "c10", per_file=3)
    folder = tmp_path / "cifar-10-batches-py"
    batch = folder / "data_batch_2"
    batch.write_bytes(BAD_BATCHES[bad](batch.read_bytes()))
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("c10", tmp_path, download=False)
    message = str(err.value)
    assert message.startswith(f"c10: {batch} ") and "CIFAR batch" in message and "\n" not in message
    assert f"delete {folder} and load again" in message and "cifar-10-python.tar.gz" in message


# ------------------------------------------------------------------------ untrusted files: archives


def hostile_tar_members(case: str, outside: Path, up: str) -> list[tuple[str, bytes, str, bytes]]:
    """(name, tar type, link target, content) of the members that make `case`; the first is the culprit."""
    inside, planted, secret = "cifar-10-batches-py/", outside / "planted.txt", outside / "secret.txt"
    return {
        "absolute path": [(str(planted), tarfile.REGTYPE, "", b"planted")],
        "'..' path": [(inside + up + from_root(planted), tarfile.REGTYPE, "", b"planted")],
        "symlink to an absolute folder": [(inside + "out", tarfile.SYMTYPE, str(outside), b""),
                                          (inside + "out/planted.txt", tarfile.REGTYPE, "", b"planted")],
        "symlink up with '..'": [(inside + "up", tarfile.SYMTYPE, up + from_root(outside), b""),
                                 (inside + "up/planted.txt", tarfile.REGTYPE, "", b"planted")],
        # Written through, a hard link would change the user's file in place.
        "hardlink to an absolute path": [(inside + "hard", tarfile.LNKTYPE, str(secret), b""),
                                         (inside + "hard", tarfile.REGTYPE, "", b"overwritten")],
        "hardlink up with '..'": [(inside + "hard", tarfile.LNKTYPE, up + from_root(secret), b""),
                                  (inside + "hard", tarfile.REGTYPE, "", b"overwritten")],
        "character device": [(inside + "null", tarfile.CHRTYPE, "", b"")],
        "fifo": [(inside + "pipe", tarfile.FIFOTYPE, "", b"")],
    }[case]


def write_tar(archive: Path, good: Path, members: list[tuple[str, bytes, str, bytes]]) -> None:
    """A .tar.gz of the folder `good` followed by `members`, written as given."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(good, arcname=good.name)
        for name, kind, link, content in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, len(content)
            info.devmajor, info.devminor = (1, 3) if kind == tarfile.CHRTYPE else (0, 0)  # /dev/null's numbers
            tar.addfile(info, io.BytesIO(content))
    with tarfile.open(archive) as tar:  # the members went in as written, not sanitised
        assert [m.name for m in tar.getmembers()[-len(members):]] == [name for name, *_ in members]


def assert_refused_and_kept(err, data_dir: Path, archive: Path, member: str, lock: str) -> None:
    """One line naming the archive and the member; data_dir holds just the archive, as served, and the lock."""
    message = str(err.value)
    assert "\n" not in message and str(data_dir / archive.name) in message and f"member '{member[:120]}" in message
    assert sorted(p.name for p in data_dir.iterdir()) == sorted([archive.name, lock])
    assert (data_dir / archive.name).read_bytes() == archive.read_bytes()


TAR_CASES = ["absolute path", "'..' path", "symlink to an absolute folder", "symlink up with '..'",
             "hardlink to an absolute path", "hardlink up with '..'", "character device", "fifo"]


@pytest.mark.parametrize("case", TAR_CASES)
def test_tar_member_that_could_escape_is_refused_and_nothing_is_written(tmp_path, remote, monkeypatch, outside,
                                                                        case):
    folder, url = remote
    data_dir = tmp_path / "data"
    members = hostile_tar_members(case, outside, climb(data_dir))
    write_cifar(tmp_path / "source", "c10", per_file=3)
    archive = folder / "cifar-10-python.tar.gz"
    write_tar(archive, tmp_path / "source" / "cifar-10-batches-py", members)
    monkeypatch.setattr(CIFAR10, "url", f"{url}/{archive.name}")
    monkeypatch.setattr(CIFAR10, "tgz_md5", hashlib.md5(archive.read_bytes()).hexdigest())
    before = tree(tmp_path, skip=data_dir)
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("c10", data_dir, download=True)
    assert_refused_and_kept(err, data_dir, archive, members[0][0], "cifar-10-batches-py.lock")
    assert tree(tmp_path, skip=data_dir) == before  # the user's file keeps its bytes and its one link
    assert not (outside / "planted.txt").exists()


def hostile_zip_members(case: str, outside: Path, up: str) -> list[tuple[str, int, bytes]]:
    """(name, Unix mode, content) of the members that make `case`; the first is the culprit."""
    inside, planted, file = "tiny-imagenet-200/", outside / "planted.txt", stat.S_IFREG | 0o644
    return {
        "absolute path": [(str(planted), file, b"planted")],
        "'..' path": [(inside + up + from_root(planted), file, b"planted")],
        "symlink to an absolute folder": [(inside + "out", stat.S_IFLNK | 0o777, str(outside).encode()),
                                          (inside + "out/planted.txt", file, b"planted")],
        "symlink up with '..'": [(inside + "up", stat.S_IFLNK | 0o777, (up + from_root(outside)).encode()),
                                 (inside + "up/planted.txt", file, b"planted")],
        "character device": [(inside + "null", stat.S_IFCHR | 0o666, b"")],
        "fifo": [(inside + "pipe", stat.S_IFIFO | 0o644, b"")],
    }[case]


ZIP_CASES = ["absolute path", "'..' path", "symlink to an absolute folder", "symlink up with '..'",
             "character device", "fifo"]


@pytest.mark.parametrize("case", ZIP_CASES)
def test_zip_member_that_could_escape_is_refused_and_nothing_is_written(tmp_path, remote, monkeypatch, outside,
                                                                        case):
    folder, url = remote
    data_dir = tmp_path / "data"
    members = hostile_zip_members(case, outside, climb(data_dir))
    write_tiny_imagenet(tmp_path / "source")
    archive = folder / "tiny-imagenet-200.zip"
    make_archive(tmp_path / "source" / "tiny-imagenet-200", archive)
    with zipfile.ZipFile(archive, "a") as zf:
        for name, mode, content in members:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, content)
    with zipfile.ZipFile(archive) as zf:  # the members went in as written, not sanitised
        assert zf.namelist()[-len(members):] == [name for name, *_ in members]
    monkeypatch.setattr(readers, "TINY_IMAGENET_URL", f"{url}/{archive.name}")
    monkeypatch.setattr(readers, "TINY_IMAGENET_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    before = tree(tmp_path, skip=data_dir)
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("tinyimagenet", data_dir, download=True)
    assert_refused_and_kept(err, data_dir, archive, members[0][0], "tiny-imagenet-200.lock")
    assert tree(tmp_path, skip=data_dir) == before
    assert not (outside / "planted.txt").exists()


def test_a_crafted_member_name_is_quoted_on_one_escaped_bounded_line(tmp_path, remote, monkeypatch):
    folder, url = remote
    name = "cifar-10-batches-py/../\x1b[2J\x1b]0;owned\x07\nline two " + "A" * 1000
    write_cifar(tmp_path / "source", "c10", per_file=3)
    archive = folder / "cifar-10-python.tar.gz"
    write_tar(archive, tmp_path / "source" / "cifar-10-batches-py", [(name, tarfile.REGTYPE, "", b"x")])
    monkeypatch.setattr(CIFAR10, "url", f"{url}/{archive.name}")
    monkeypatch.setattr(CIFAR10, "tgz_md5", hashlib.md5(archive.read_bytes()).hexdigest())
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("c10", tmp_path / "data", download=True)
    message = str(err.value)
    assert "member 'cifar-10-batches-py/../\\x1b[2J\\x1b]0;owned\\x07 line two AAA" in message
    assert message.isprintable() and "A" * 200 not in message
    assert len(message) < 200 + len(str(tmp_path / "data" / archive.name)) + 200  # the name cut, the rest fixed


@pytest.mark.usefixtures("small_holdouts")
def test_links_that_stay_inside_the_folder_are_unpacked(tmp_path, remote, monkeypatch):
    folder, url = remote
    expected = write_cifar(tmp_path / "source", "c10", per_file=3)
    archive = folder / "cifar-10-python.tar.gz"
    write_tar(archive, tmp_path / "source" / "cifar-10-batches-py", [
        ("cifar-10-batches-py/alias", tarfile.SYMTYPE, "data_batch_1", b""),
        ("cifar-10-batches-py/copy", tarfile.LNKTYPE, "cifar-10-batches-py/test_batch", b""),
    ])
    monkeypatch.setattr(CIFAR10, "url", f"{url}/{archive.name}")
    monkeypatch.setattr(CIFAR10, "tgz_md5", hashlib.md5(archive.read_bytes()).hexdigest())
    assert_three_splits(load_dataset("c10", tmp_path / "data", download=True), expected, val_size=2)
    unpacked = tmp_path / "data" / "cifar-10-batches-py"
    assert os.readlink(unpacked / "alias") == "data_batch_1"
    assert (unpacked / "copy").stat().st_ino == (unpacked / "test_batch").stat().st_ino


def archive_in_data_dir(tmp_path: Path, monkeypatch, folder: Path) -> Path:
    """Pack `folder` as data_dir's CIFAR-10 archive with its md5 registered, and make any download fail."""
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    make_archive(folder, archive)
    monkeypatch.setattr(CIFAR10, "url", (tmp_path / "nowhere" / archive.name).as_uri())
    monkeypatch.setattr(CIFAR10, "tgz_md5", hashlib.md5(archive.read_bytes()).hexdigest())
    return archive


def partial_folder(data_dir: Path) -> Path:
    """What an interrupted unpack or a user's copy leaves: one stale batch and a stray file."""
    partial = data_dir / "cifar-10-batches-py"
    partial.mkdir(parents=True)
    (partial / "data_batch_1").write_bytes(py2_pickle({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}))
    (partial / "stray.txt").write_text("not from the archive")
    return partial


@pytest.mark.usefixtures("small_holdouts")
def test_good_archive_in_data_dir_replaces_a_partial_folder(tmp_path, monkeypatch):
    expected = write_cifar(tmp_path / "source", "c10", per_file=4, seed=1)
    archive_in_data_dir(tmp_path, monkeypatch, tmp_path / "source" / "cifar-10-batches-py")
    partial = partial_folder(tmp_path / "data")
    assert_three_splits(load_dataset("c10", tmp_path / "data", download=True), expected, val_size=2)
    # The partial folder was replaced whole (no stray file), then the archive removed.
    folder, train_files, test_files, meta_file, _classes = CIFAR_LAYOUTS["c10"]
    assert sorted(p.name for p in partial.iterdir()) == sorted(train_files + test_files + [meta_file])
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [folder, f"{folder}.lock"]


UNPACK_FAILURES = {
    # how the archive in data_dir fails: what the message says
    "a cut-off archive": "cannot unpack",
    "no test batch in it": "holds no cifar-10-batches-py/test_batch",
    "another folder in it": "holds no folder cifar-10-batches-py",
}


@pytest.mark.parametrize("failure", sorted(UNPACK_FAILURES))
def test_archive_that_fails_to_unpack_is_kept_and_the_partial_folder_untouched(tmp_path, monkeypatch, failure):
    write_cifar(tmp_path / "source", "c10", per_file=3)
    good = tmp_path / "source" / "cifar-10-batches-py"
    if failure == "no test batch in it":
        (good / "test_batch").unlink()
    elif failure == "another folder in it":
        good = good.rename(good.with_name("cifar-10-batches"))
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    make_archive(good, archive)
    if failure == "a cut-off archive":
        archive.write_bytes(archive.read_bytes()[:archive.stat().st_size // 2])
    archive_md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(CIFAR10, "url", (tmp_path / "nowhere" / archive.name).as_uri())
    monkeypatch.setattr(CIFAR10, "tgz_md5", archive_md5)  # it is the archive the user was meant to have
    partial_folder(tmp_path / "data")
    before = tree(tmp_path / "data")
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("c10", tmp_path / "data", download=True)
    message = str(err.value)
    assert "\n" not in message and str(archive) in message and UNPACK_FAILURES[failure] in message
    after = tree(tmp_path / "data")
    after.pop(str(tmp_path / "data" / "cifar-10-batches-py.lock"))
    assert after == before  # archive and partial folder as they were; no scratch folder left


# ------------------------------------------------------------------------ untrusted files: folders, messages


@pytest.mark.parametrize("download", [False, True])
@pytest.mark.parametrize("where", ["data_dir", "data set folder"])
@pytest.mark.parametrize("name", ["c10", "tinyimagenet"])
def test_a_file_where_a_folder_belongs_is_named_before_any_download(tmp_path, monkeypatch, name, where, download):
    fetched = []
    monkeypatch.setattr(archives, "download_url", lambda *args, **kwargs: fetched.append(args))
    data_dir = tmp_path / "data"
    file = data_dir if where == "data_dir" else data_dir / {"c10": "cifar-10-batches-py",
                                                             "tinyimagenet": "tiny-imagenet-200"}[name]
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("not a folder")
    with pytest.raises(DataUnavailableError) as err:
        load_dataset(name, data_dir, download=download)
    message = str(err.value)
    assert f"{file} is a file where a folder belongs" in message and "\n" not in message
    assert fetched == [] and file.read_text() == "not a folder"


def test_a_data_dir_that_cannot_be_created_is_one_line_naming_it(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    data_dir = tmp_path / "file" / "data"
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("c10", data_dir, download=True)
    message = str(err.value)
    assert f"cannot create {data_dir}" in message and "\n" not in message


def test_squashed_untrusted_text_is_one_printable_bounded_line():
    assert one_line(ValueError("bad \n\t  thing\r\n"), squash_space=True) == "bad thing"
    assert one_line("red\x1b[31m bell\x07 rtl\u202e", squash_space=True) == "red\\x1b[31m bell\\x07 rtl\\u202e"
    cut = one_line("x" * 1000, squash_space=True)
    assert len(cut) == 200 and cut == "x" * 197 + "..."
    assert one_line("y" * 200) == "y" * 200 and len(one_line("z" * 50, limit=20, squash_space=True)) == 20


# ------------------------------------------------------------------------ synthetic


def test_synthetic_honours_options_and_is_deterministic_per_seed():
    options = dict(num_train=64, num_val=32, num_test=48, num_classes=4, image_size=16, channels=1)
    first, second = load_twice("synthetic", **options)
    assert first.train_images.shape == (64, 1, 16, 16) and first.val_images.shape == (32, 1, 16, 16)
    assert first.test_images.shape == (48, 1, 16, 16)
    assert first.num_classes == 4 and set(first.train_labels.tolist()) == {0, 1, 2, 3}
    assert first.test_images.dtype == torch.uint8 and first.test_labels.dtype == torch.int64
    assert_same(first, second)
    assert not torch.equal(first.train_images, load_dataset("synthetic", **options, seed=1).train_images)
    mean, std = channel_stats(first.train_images)
    np.testing.assert_allclose(first.mean, mean, rtol=1e-9)
    np.testing.assert_allclose(first.std, std, rtol=1e-9)


def test_synthetic_default_split_sizes():
    d = load_dataset("synthetic", image_size=4, channels=1)  # small images: the counts are what is checked
    assert [len(d.split(split)[1]) for split in ImageData.SPLITS] == [50000, 5000, 10000]
    assert tuple(len(d.split(split)[1]) for split in ImageData.SPLITS) == catalog.SPLIT_SIZES["synthetic"]
    digits = load_dataset("digits")
    assert tuple(len(digits.split(split)[1]) for split in ImageData.SPLITS) == catalog.SPLIT_SIZES["digits"]


def test_synthetic_splits_are_independent_draws():
    options = dict(num_train=64, num_val=32, num_test=32, num_classes=4, image_size=8, channels=1)
    base = load_dataset("synthetic", **options)
    train, val, test = (set(content(base.split(split)[0])) for split in ImageData.SPLITS)
    assert not train & val and not train & test and not val & test
    # Each split is its own stream: resizing one leaves the others as they were.
    for resized, unchanged in (("num_train", ("val", "test")), ("num_val", ("train", "test")),
                               ("num_test", ("train", "val"))):
        other = load_dataset("synthetic", **{**options, resized: 50})
        for split in unchanged:
            for a, b in zip(other.split(split), base.split(split), strict=True):
                assert torch.equal(a, b), (resized, split)


def test_synthetic_class_signal_is_learnable():
    d = load_dataset("synthetic", num_train=1000, num_val=10, num_test=500, num_classes=10)
    x_train, x_test = d.train_images.flatten(1).double(), d.test_images.flatten(1).double()
    class_means = torch.stack([x_train[d.train_labels == k].mean(0) for k in range(10)])
    predicted = torch.cdist(x_test, class_means).argmin(1)
    assert (predicted == d.test_labels).double().mean() > 0.9  # chance is 0.1


# ------------------------------------------------------------------------ ImageData


def test_to_copies_and_fits_on(monkeypatch):
    d = make_data()
    moved = d.to("cpu")
    assert moved is not d and moved.test_images.device.type == "cpu"
    assert_same(moved, d)
    assert d.fits_on("cpu") and d.nbytes == 3 * (10 * 60 + 10 * 8)  # 3 splits of 10 images (60 bytes) + labels
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * d.nbytes, 10**12))
    assert d.fits_on("cuda") and d.fits_on(torch.device("cuda:0"), fraction=0.5)
    assert not d.fits_on("cuda", fraction=0.49)


def test_without_drops_splits_and_a_dropped_split_is_named_when_asked_for():
    d = make_data()
    search = d.without("test")
    assert search.has("train") and search.has("val") and not search.has("test") and d.has("test")
    assert search.test_images is None and search.test_labels is None
    assert search.train_images is d.train_images and search.val_images is d.val_images  # shared, not copied
    assert search.nbytes == 2 * (10 * 60 + 10 * 8)
    assert search.to("cpu").test_images is None
    with pytest.raises(ValueError, match="test: this data has no test split: a search trial never evaluates test"):
        search.split("test")
    with pytest.raises(ValueError, match="no test split"):
        eval_batches(search, 4, "test")
    only_train = d.without("val", "test")
    assert not only_train.has("val") and not only_train.has("test")
    with pytest.raises(ValueError, match="no val split"):
        only_train.split("val")


@pytest.mark.parametrize("call", [lambda d: d.without("train"), lambda d: d.without("valid"),
                                  lambda d: d.has("valid"), lambda d: d.split("Test")])
def test_train_cannot_be_dropped_and_split_names_are_checked(call):
    with pytest.raises(ValueError, match="train split cannot be dropped|unknown split"):
        call(make_data())


def test_split_returns_images_and_labels():
    d = make_data()
    for split in ImageData.SPLITS:
        images, labels = d.split(split)
        assert images is getattr(d, f"{split}_images") and labels is getattr(d, f"{split}_labels")


def test_with_val_in_train_appends_val_to_train_and_drops_it():
    d = make_data(n_train=7, n_val=3, n_test=4)
    refit = d.with_val_in_train()
    assert len(refit.train_labels) == 7 + 3 and not refit.has("val")
    assert torch.equal(refit.train_images[:7], d.train_images) and torch.equal(refit.train_images[7:], d.val_images)
    assert refit.train_labels.tolist() == list(range(7)) + list(range(3))
    assert refit.test_images is d.test_images and refit.test_labels is d.test_labels
    assert d.has("val") and len(d.train_labels) == 7  # the original is untouched
    with pytest.raises(ValueError, match="no val split"):
        refit.with_val_in_train()


def test_imagedata_rejects_wrong_dtypes_shapes_and_half_splits():
    d = make_data()
    fields = {field: getattr(d, field) for field in TENSOR_FIELDS}
    common = dict(num_classes=10, mean=(0.5,), std=(0.5,), crop_padding=0, flip=False)
    bad = [
        ({"train_images": d.train_images.float()}, "train images must be uint8"),
        ({"test_images": d.test_images.float()}, "test images must be uint8"),
        ({"val_labels": d.val_labels.int()}, "val images must be uint8 N x C x H x W and labels int64"),
        ({"test_images": d.test_images[:, :, :3]}, "test and train image shapes differ"),
        ({"val_labels": d.val_labels[:5]}, "val image and label counts differ"),
        ({"test_labels": None}, "test split has images without labels"),
        ({"train_images": d.train_images[:0], "train_labels": d.train_labels[:0]}, "empty training split"),
    ]
    for change, message in bad:
        with pytest.raises(ValueError, match=message):
            ImageData("bad", **{**fields, **change}, **common)
    dropped = ImageData("ok", **{**fields, "val_images": None, "val_labels": None}, **common)
    assert not dropped.has("val")


# ------------------------------------------------------------------------ augment, normalize


def test_augment_is_a_zero_padded_crop_at_some_offset_maybe_flipped():
    images = torch.randint(0, 256, (256, 3, 6, 7), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    out = augment(images, 2, True, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.zeros(256, 3, 10, 11, dtype=torch.uint8)
    padded[:, :, 2:8, 2:9] = images
    found = torch.zeros(256, dtype=torch.bool)
    seen = set()
    for dy in range(5):
        for dx in range(5):
            crop = padded[:, :, dy:dy + 6, dx:dx + 7]
            for mirrored, candidate in ((False, crop), (True, crop.flip(-1))):
                match = (candidate == out).flatten(1).all(1)
                found |= match
                if match.any():
                    seen.add((dy, dx, mirrored))
    assert found.all()
    assert {s[0] for s in seen} == {s[1] for s in seen} == set(range(5)) and {s[2] for s in seen} == {False, True}


def test_augment_identity_and_reproducibility():
    images = torch.randint(0, 256, (8, 3, 5, 5), dtype=torch.uint8)
    assert torch.equal(augment(images, 0, False, torch.Generator()), images)
    flipped = augment(images, 0, True, torch.Generator().manual_seed(0))
    is_flipped = (flipped == images.flip(-1)).flatten(1).all(1)
    assert ((flipped == images).flatten(1).all(1) | is_flipped).all() and 0 < is_flipped.sum() < 8
    first = augment(images, 4, True, torch.Generator().manual_seed(7))
    assert torch.equal(first, augment(images, 4, True, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, augment(images, 4, True, torch.Generator().manual_seed(8)))


def test_normalize_matches_the_formula():
    images = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    out = normalize(images, mean, std)
    channel_mean = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    channel_std = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    want = (images.double() / 255 - channel_mean) / channel_std
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, want.float(), rtol=0, atol=1e-5)


# ------------------------------------------------------------------------ batches


@pytest.mark.parametrize("n, batch_size, sizes", [(10, 4, [4, 4]), (10, 3, [3, 3, 3]), (10, 5, [5, 5]),
                                                  (10, 10, [10]), (10, 16, [10]), (1, 4, [1])])
def test_train_batches_counts_and_each_image_at_most_once(n, batch_size, sizes):
    d = make_data(n_train=n)
    batches = list(train_batches(d, batch_size, torch.Generator().manual_seed(0)))
    assert [len(labels) for _, labels in batches] == sizes == [len(x) for x, _ in batches]
    assert num_train_batches(d, batch_size) == len(sizes)
    labels = torch.cat([labels for _, labels in batches])
    assert len(set(labels.tolist())) == len(labels)
    for images, labels in batches:  # no augmentation here, so each batch is its images normalised
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
        torch.testing.assert_close(images, normalize(d.train_images[labels], d.mean, d.std))


def test_train_batches_reshuffle_each_epoch_and_resume_from_generator_state():
    d = make_data(n_train=32, crop_padding=2, flip=True)
    g = torch.Generator().manual_seed(0)
    first = list(train_batches(d, 8, g))
    state = g.get_state()
    second = list(train_batches(d, 8, g))
    assert not torch.equal(first[0][1], second[0][1])
    g.set_state(state)
    for (x, y), (x2, y2) in zip(second, train_batches(d, 8, g), strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)


@pytest.mark.parametrize("split", ["val", "test"])
def test_eval_batches_yield_the_given_split_in_order_with_last_partial_batch(split):
    d = make_data(n_val=10, n_test=9, crop_padding=4, flip=True)
    images, labels = d.split(split)
    batches = list(eval_batches(d, 4, split))
    assert [len(y) for _, y in batches] == [4, 4, len(labels) - 8]
    assert torch.equal(torch.cat([y for _, y in batches]), labels)
    torch.testing.assert_close(torch.cat([x for x, _ in batches]), normalize(images, d.mean, d.std))


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_bad_batch_size_is_a_config_error(batch_size):
    with pytest.raises(ConfigError, match="batch_size"):
        num_train_batches(make_data(), batch_size)
    with pytest.raises(ConfigError, match="batch_size"):
        eval_batches(make_data(), batch_size, "val")


def test_the_suite_never_reaches_the_network():
    # conftest.no_network: another host fails at once (as offline CI would), this machine
    # stays reachable, so a test that would download cannot wait on a network timeout.
    import socket
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.URLError, match="tests do not use the network"):
        urllib.request.urlopen("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", timeout=60)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=5):
            pass


def test_the_catalogs_download_folders_are_the_loaders():
    """The dry run looks for these folders without torch; the loaders unpack into them."""
    from torchvision.datasets import CIFAR10, CIFAR100

    from trainables.catalog import DOWNLOADS

    assert DOWNLOADS["c10"][0] == CIFAR10.base_folder and DOWNLOADS["c100"][0] == CIFAR100.base_folder
    assert DOWNLOADS["tinyimagenet"][0] == Path(readers.TINY_IMAGENET_URL).stem
