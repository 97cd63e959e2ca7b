"""Data sets by name and on-device batching (trainables/data.py).

Loaders are checked against fixtures written in the real on-disk formats
(tests/fixtures_data.py); downloads against real archives served over HTTP on localhost.
"""

import threading
import time

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torchvision.datasets import CIFAR10, CIFAR100

from fixtures_data import (
    CIFAR_ARCHIVES, CIFAR_LAYOUTS, make_archive, serve_directory, write_cifar, write_tiny_imagenet,
)
from trainables import data
from trainables.data import (
    ImageData, augment, eval_batches, list_datasets, load_dataset, normalize, num_train_batches,
    register_dataset, train_batches,
)
from trainables.errors import ConfigError, DataUnavailableError

CIFAR_CLASSES = {"c10": CIFAR10, "c100": CIFAR100}


def assert_same(loaded: ImageData, expected) -> None:
    for field in ("train_images", "train_labels", "val_images", "val_labels"):
        got, want = getattr(loaded, field), getattr(expected, field)
        assert got.dtype == want.dtype and torch.equal(got, want), field


def channel_stats(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    x = images.numpy().astype(np.float64) / 255
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))


def make_data(n_train=10, n_val=10, crop_padding=0, flip=False, shape=(3, 4, 5), seed=0) -> ImageData:
    """Images with random pixels and labels 0..n-1, so a label identifies its image."""
    g = torch.Generator().manual_seed(seed)
    return ImageData(
        "test", torch.randint(0, 256, (n_train, *shape), generator=g, dtype=torch.uint8), torch.arange(n_train),
        torch.randint(0, 256, (n_val, *shape), generator=g, dtype=torch.uint8), torch.arange(n_val),
        num_classes=max(n_train, n_val), mean=(0.5, 0.4, 0.3)[: shape[0]], std=(0.25, 0.2, 0.3)[: shape[0]],
        crop_padding=crop_padding, flip=flip,
    )


# ------------------------------------------------------------------------ registry


def test_list_datasets():
    assert list_datasets() == ["c10", "c100", "digits", "synthetic", "tinyimagenet"]


def test_unknown_name_is_a_config_error_listing_valid_names():
    with pytest.raises(ConfigError, match="unknown data set 'cifar10'; valid: c10, c100, digits, synthetic"):
        load_dataset("cifar10")


def test_unknown_option_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="'digits' has no option foo; valid: none"):
        load_dataset("digits", tmp_path, foo=1)
    with pytest.raises(ConfigError, match="num_trian; valid: num_train, num_val"):
        load_dataset("synthetic", num_trian=5)


@pytest.mark.parametrize("option", [{"num_train": 0}, {"num_classes": "10"}, {"channels": True}, {"seed": -1}])
def test_bad_synthetic_option_value_is_a_config_error(option):
    with pytest.raises(ConfigError, match=f"synthetic: {next(iter(option))} must be an integer"):
        load_dataset("synthetic", **option)


def test_registered_loader_gets_dir_download_and_its_options(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_LOADERS", dict(data._LOADERS))
    calls = []

    @register_dataset("tiny_test")
    def _load(data_dir, download, *, size=2):
        calls.append((data_dir, download, size))
        return make_data(n_train=size)

    assert len(load_dataset("tiny_test", tmp_path, download=False, size=3).train_labels) == 3
    assert calls == [(tmp_path, False, 3)]
    with pytest.raises(ValueError, match="registered twice"):
        register_dataset("tiny_test")(_load)


# ------------------------------------------------------------------------ digits


def test_digits_fixed_stratified_split_of_the_real_images():
    first, second = load_dataset("digits"), load_dataset("digits")
    assert first.train_images.shape == (1437, 1, 8, 8) and first.val_images.shape == (360, 1, 8, 8)
    assert first.shape == (1, 8, 8) and first.num_classes == 10
    assert (first.crop_padding, first.flip) == (1, False)
    assert_same(first, second)
    assert set(first.train_labels.tolist()) == set(first.val_labels.tolist()) == set(range(10))

    digits = load_digits()
    train, val = train_test_split(np.arange(1797), test_size=0.2, stratify=digits.target, random_state=0)
    scaled = torch.tensor([[round(v * 255 / 16) for v in image.ravel()] for image in digits.images], dtype=torch.uint8)
    assert torch.equal(first.train_images.reshape(1437, 64), scaled[train])
    assert torch.equal(first.val_images.reshape(360, 64), scaled[val])
    assert torch.equal(first.train_labels, torch.from_numpy(digits.target[train]).long())
    assert first.train_images.dtype == torch.uint8 and first.train_images.max() == 255
    mean, std = channel_stats(first.train_images)
    np.testing.assert_allclose(first.mean, mean, rtol=1e-9)
    np.testing.assert_allclose(first.std, std, rtol=1e-9)


# ------------------------------------------------------------------------ CIFAR


@pytest.mark.parametrize("name", ["c10", "c100"])
def test_cifar_reads_the_pickles_pixel_for_pixel(tmp_path, name):
    expected = write_cifar(tmp_path, name, per_file=3)
    loaded = load_dataset(name, tmp_path, download=False)
    assert_same(loaded, expected)
    assert loaded.train_images.shape == ((15 if name == "c10" else 3), 3, 32, 32)
    assert loaded.num_classes == {"c10": 10, "c100": 100}[name]
    assert loaded.mean == {"c10": (0.4914, 0.4822, 0.4465), "c100": (0.5071, 0.4865, 0.4409)}[name]
    assert loaded.std == {"c10": (0.2470, 0.2435, 0.2616), "c100": (0.2673, 0.2564, 0.2762)}[name]
    assert (loaded.crop_padding, loaded.flip) == (4, True)


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
    expected = write_cifar(folder, name, per_file=2, seed=1)
    md5 = make_archive(folder / CIFAR_LAYOUTS[name][0], folder / CIFAR_ARCHIVES[name])
    monkeypatch.setattr(CIFAR_CLASSES[name], "url", f"{url}/{CIFAR_ARCHIVES[name]}")
    monkeypatch.setattr(CIFAR_CLASSES[name], "tgz_md5", md5)
    return expected


@pytest.mark.parametrize("name", ["c10", "c100"])
def test_cifar_download_extracts_the_archive(tmp_path, remote, monkeypatch, name):
    expected = serve_cifar(remote, monkeypatch, name)
    data_dir = tmp_path / "data"
    assert_same(load_dataset(name, data_dir, download=True), expected)
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


def test_concurrent_loads_download_once(tmp_path, remote, monkeypatch):
    expected = serve_cifar(remote, monkeypatch, "c10")
    real, calls = data.download_and_extract_archive, []

    def slow_download(*args, **kwargs):
        calls.append(args)
        time.sleep(0.3)  # widen the window in which an unlocked second loader would also fetch
        real(*args, **kwargs)

    monkeypatch.setattr(data, "download_and_extract_archive", slow_download)
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
        assert_same(loaded, expected)


# ------------------------------------------------------------------------ Tiny ImageNet


def test_tinyimagenet_decodes_jpegs_and_labels_by_wnids_order(tmp_path):
    expected = write_tiny_imagenet(tmp_path, wnids=("n02", "n01", "n03"), per_class=2, num_val=4)
    loaded = load_dataset("tinyimagenet", tmp_path, download=False)
    assert_same(loaded, expected)
    assert loaded.train_labels.tolist() == [0, 0, 1, 1, 2, 2]  # n02 is first in wnids.txt, so label 0
    grey = loaded.train_images[0]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])  # grayscale JPEG -> 3 equal channels
    assert (loaded.shape, loaded.num_classes, loaded.crop_padding, loaded.flip) == ((3, 64, 64), 200, 4, True)
    assert loaded.mean == (0.4802, 0.4481, 0.3975) and loaded.std == (0.2770, 0.2691, 0.2821)


def test_tinyimagenet_second_load_uses_the_tensor_cache(tmp_path):
    expected = write_tiny_imagenet(tmp_path)
    load_dataset("tinyimagenet", tmp_path, download=False)
    for jpeg in (tmp_path / "tiny-imagenet-200").rglob("*.JPEG"):
        jpeg.unlink()
    assert_same(load_dataset("tinyimagenet", tmp_path, download=False), expected)
    assert (tmp_path / "tiny-imagenet-200.pt").is_file() and not list(tmp_path.glob("*.tmp"))


def test_tinyimagenet_download_unpacks_the_zip(tmp_path, remote, monkeypatch):
    folder, url = remote
    expected = write_tiny_imagenet(folder, seed=3)
    md5 = make_archive(folder / "tiny-imagenet-200", folder / "tiny-imagenet-200.zip")
    monkeypatch.setattr(data, "TINY_IMAGENET_URL", f"{url}/tiny-imagenet-200.zip")
    monkeypatch.setattr(data, "TINY_IMAGENET_MD5", md5)
    assert_same(load_dataset("tinyimagenet", tmp_path / "data", download=True), expected)
    assert (tmp_path / "data" / "tiny-imagenet-200" / "wnids.txt").is_file()
    assert not (tmp_path / "data" / "tiny-imagenet-200.zip").exists()


@pytest.mark.parametrize("download", [False, True])
def test_tinyimagenet_missing_names_folder_and_archive(tmp_path, monkeypatch, download):
    monkeypatch.setattr(data, "TINY_IMAGENET_URL", (tmp_path / "missing" / "tiny-imagenet-200.zip").as_uri())
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("tinyimagenet", tmp_path, download=download)
    message = str(err.value)
    assert str(tmp_path / "tiny-imagenet-200" / "wnids.txt") in message and "tiny-imagenet-200.zip" in message
    assert "\n" not in message


# ------------------------------------------------------------------------ synthetic


def test_synthetic_honours_options_and_is_deterministic_per_seed():
    options = dict(num_train=64, num_val=32, num_classes=4, image_size=16, channels=1)
    first = load_dataset("synthetic", **options)
    assert first.train_images.shape == (64, 1, 16, 16) and first.val_images.shape == (32, 1, 16, 16)
    assert first.num_classes == 4 and set(first.train_labels.tolist()) == {0, 1, 2, 3}
    assert first.train_images.dtype == torch.uint8 and first.train_labels.dtype == torch.int64
    assert_same(first, load_dataset("synthetic", **options))
    assert not torch.equal(first.train_images, load_dataset("synthetic", **options, seed=1).train_images)
    # The val split is its own stream: more training images leave it unchanged.
    more = load_dataset("synthetic", **{**options, "num_train": 100})
    assert torch.equal(more.val_images, first.val_images) and torch.equal(more.val_labels, first.val_labels)
    mean, std = channel_stats(first.train_images)
    np.testing.assert_allclose(first.mean, mean, rtol=1e-9)
    np.testing.assert_allclose(first.std, std, rtol=1e-9)


def test_synthetic_class_signal_is_learnable():
    d = load_dataset("synthetic", num_train=1000, num_val=500, num_classes=10)
    x_train, x_val = d.train_images.flatten(1).double(), d.val_images.flatten(1).double()
    class_means = torch.stack([x_train[d.train_labels == k].mean(0) for k in range(10)])
    predicted = torch.cdist(x_val, class_means).argmin(1)
    assert (predicted == d.val_labels).double().mean() > 0.9  # chance is 0.1


# ------------------------------------------------------------------------ ImageData


def test_to_copies_and_fits_on(monkeypatch):
    d = make_data()
    moved = d.to("cpu")
    assert moved is not d and moved.train_images.device.type == "cpu"
    assert_same(moved, d)
    assert d.fits_on("cpu") and d.nbytes == 2 * 10 * 60 + 2 * 10 * 8
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * d.nbytes, 10**12))
    assert d.fits_on("cuda") and d.fits_on(torch.device("cuda:0"), fraction=0.5)
    assert not d.fits_on("cuda", fraction=0.49)


def test_imagedata_rejects_wrong_dtypes():
    d = make_data()
    with pytest.raises(ValueError, match="uint8"):
        ImageData("bad", d.train_images.float(), d.train_labels, d.val_images, d.val_labels,
                  num_classes=10, mean=(0.5,), std=(0.5,), crop_padding=0, flip=False)


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


def test_eval_batches_in_order_with_last_partial_batch():
    d = make_data(n_val=10, crop_padding=4, flip=True)
    batches = list(eval_batches(d, 4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([y for _, y in batches]), d.val_labels)
    torch.testing.assert_close(torch.cat([x for x, _ in batches]), normalize(d.val_images, d.mean, d.std))


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_bad_batch_size_is_a_config_error(batch_size):
    with pytest.raises(ConfigError, match="batch_size"):
        num_train_batches(make_data(), batch_size)
    with pytest.raises(ConfigError, match="batch_size"):
        next(eval_batches(make_data(), batch_size))
