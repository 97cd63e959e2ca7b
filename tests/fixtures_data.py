"""Small data sets written in their real on-disk formats, for tests that load them.

The layouts are written out here by hand (not taken from the code under test):
- CIFAR-10: `cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`, pickles
  as Python 2's cPickle wrote the originals (protocol 2, `py2_pickle`) of dicts with
  bytes keys holding b"data" (a numpy uint8 N x 3072 array, channel-major) and b"labels"
  (a list of ints); CIFAR-100: `cifar-100-python/{train,test,meta}` with b"fine_labels"
  and b"coarse_labels".
- Tiny ImageNet: `tiny-imagenet-200/wnids.txt`, `train/<wnid>/images/<wnid>_<i>.JPEG`,
  `train/<wnid>/<wnid>_boxes.txt`, `val/images/val_<i>.JPEG`, `val/val_annotations.txt`.
`serve_directory` serves a folder over HTTP on localhost, so downloads run through
torchvision's real code path without internet (its downloader cannot read file:// URLs).
Each writer returns the expected uint8 tensors (N x C x H x W) and int64 labels of the
official splits as written (train; test = CIFAR's test batch or Tiny ImageNet's val
folder), so a test compares what the loader read with what was written. Every image
written is distinct from every other (CIFAR: its index is stamped into its first pixels;
JPEGs: checked after decoding), so a test can tell images apart by content alone.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import struct
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image


@dataclass
class Expected:
    """The official splits of a fixture written on disk, as a loader should read them."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


CIFAR_LAYOUTS = {
    # name: (folder, train files, test files, meta file, number of classes)
    "c10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta", 10),
    "c100": ("cifar-100-python", ["train"], ["test"], "meta", 100),
}
CIFAR_ARCHIVES = {"c10": "cifar-10-python.tar.gz", "c100": "cifar-100-python.tar.gz"}


def _cifar_batch(name: str, images: np.ndarray, labels: np.ndarray, batch_label: str) -> dict:
    if name == "c10":
        label_entries = {b"labels": labels.tolist()}
    else:
        label_entries = {b"fine_labels": labels.tolist(), b"coarse_labels": (labels // 5).tolist()}
    return {
        b"batch_label": batch_label.encode(),
        **label_entries,
        b"data": images.reshape(len(images), 3 * 32 * 32),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }


class _Global(NamedTuple):
    """A module-level name, as the GLOBAL opcode refers to it."""

    module: str
    name: str


class _Reduce(NamedTuple):
    """`func(*args)`, then `__setstate__(state)`: how a pickle rebuilds an object."""

    func: _Global
    args: tuple
    state: object


# numpy's pickling recipe for a uint8 dtype and a uint8 array, as numpy 1 wrote it under
# Python 2 when the CIFAR batches were made: the dtype's flags are ints, not bools, and
# the reconstruction function lives in numpy.core.multiarray.
_UINT8 = _Reduce(_Global("numpy", "dtype"), (b"u1", 0, 1), (3, b"|", None, None, None, -1, -1, 0))


def _py2_array(array: np.ndarray) -> _Reduce:
    assert array.dtype == np.uint8
    return _Reduce(_Global("numpy.core.multiarray", "_reconstruct"), (_Global("numpy", "ndarray"), (0,), b"b"),
                   (1, array.shape, _UINT8, False, np.ascontiguousarray(array).tobytes()))


def _py2_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + struct.pack("<B", value)  # BININT1
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)  # BININT2
    return b"J" + struct.pack("<i", value)  # BININT


def _py2_save(obj: object) -> bytes:
    """The protocol 2 opcodes for `obj`, as Python 2's cPickle wrote them (its memo opcodes left out)."""
    if isinstance(obj, np.ndarray):
        obj = _py2_array(obj)
    if obj is None or isinstance(obj, bool):
        return {None: b"N", True: b"\x88", False: b"\x89"}[obj]  # NONE, NEWTRUE, NEWFALSE
    if isinstance(obj, int):
        return _py2_int(obj)
    if isinstance(obj, bytes):  # a Python 2 str: SHORT_BINSTRING or BINSTRING, never _codecs.encode
        return (b"U" + struct.pack("<B", len(obj)) if len(obj) < 256 else b"T" + struct.pack("<I", len(obj))) + obj
    if isinstance(obj, _Global):
        return f"c{obj.module}\n{obj.name}\n".encode()
    if isinstance(obj, _Reduce):
        return _py2_save(obj.func) + _py2_save(obj.args) + b"R" + _py2_save(obj.state) + b"b"  # REDUCE, BUILD
    if isinstance(obj, tuple):
        items = b"".join(map(_py2_save, obj))
        return {0: b")", 1: items + b"\x85", 2: items + b"\x86", 3: items + b"\x87"}.get(len(obj), b"(" + items + b"t")
    if isinstance(obj, list):
        return b"](" + b"".join(map(_py2_save, obj)) + b"e"  # EMPTY_LIST, MARK, items, APPENDS
    if isinstance(obj, dict):  # EMPTY_DICT, MARK, keys and values, SETITEMS
        return b"}(" + b"".join(_py2_save(key) + _py2_save(value) for key, value in obj.items()) + b"u"
    raise TypeError(f"no Python 2 pickle for {type(obj).__name__}")


def py2_pickle(obj: object) -> bytes:
    """`obj` pickled as the original CIFAR batches were: Python 2's cPickle at protocol 2.

    Python 3 cannot write this itself: at protocol 2 it pickles bytes through
    `_codecs.encode`, and numpy 2 names its array constructor numpy._core.multiarray,
    globals no real batch refers to. Handles what a batch holds: dicts, lists, ints,
    bytes (Python 2's str), None, bools and uint8 numpy arrays.
    """
    return b"\x80\x02" + _py2_save(obj) + b"."  # PROTO 2 ... STOP


def _pickle(obj: object, path: Path) -> None:
    path.write_bytes(py2_pickle(obj))


def _stamp(images: np.ndarray, first: int) -> None:
    """Write image i's number `first + i` into its first 4 red pixels (big-endian bytes)."""
    numbers = np.arange(first, first + len(images), dtype=">u4")
    images[:, 0, 0, :4] = numbers.view(np.uint8).reshape(-1, 4)


def write_cifar(data_dir: Path, name: str = "c10", per_file: int = 3, seed: int = 0) -> Expected:
    """Write a CIFAR-10 ("c10") or CIFAR-100 ("c100") fixture with `per_file` images per pickle.

    Pixels are random, labels uniformly random (so class counts are uneven), and every
    image carries its own number (`_stamp`), counting through all files.
    """
    folder_name, train_files, test_files, meta_file, num_classes = CIFAR_LAYOUTS[name]
    folder = Path(data_dir) / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for number, file in enumerate(train_files + test_files):
        images = rng.integers(0, 256, size=(per_file, 3, 32, 32), dtype=np.uint8)
        _stamp(images, number * per_file)
        labels = rng.integers(0, num_classes, size=per_file)
        _pickle(_cifar_batch(name, images, labels, f"fixture {file}"), folder / file)
        written[file] = (torch.from_numpy(images), torch.from_numpy(labels).to(torch.int64))
    _pickle({b"label_names": [f"class{i}".encode() for i in range(num_classes)]}, folder / meta_file)

    def join(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([written[f][0] for f in files]), torch.cat([written[f][1] for f in files])

    return Expected(*join(train_files), *join(test_files))


def write_tiny_imagenet(data_dir: Path, wnids: tuple[str, ...] = ("n02", "n01", "n03"), per_class: int = 2,
                        num_val: int = 4, seed: int = 0) -> Expected:
    """Write a tiny `tiny-imagenet-200` tree of real 64x64 JPEGs.

    wnids.txt keeps the given (unsorted) order: labels are positions in that file. The
    first training image of the first class is grayscale. Pixels are random; expected
    pixels are PIL's own decode of each written file (JPEG is lossy), converted to RGB,
    and are checked to be distinct image from image. The val folder (`num_val` images,
    random labels) is what a loader calls the test split.
    """
    root = Path(data_dir) / "tiny-imagenet-200"
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))

    def save(path: Path, grayscale: bool = False) -> torch.Tensor:
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        image = Image.fromarray(pixels[:, :, 0] if grayscale else pixels)  # 2-D uint8 -> mode "L"
        image.save(path, format="JPEG", quality=95)
        with Image.open(path) as decoded:
            assert decoded.mode == ("L" if grayscale else "RGB")
            return torch.from_numpy(np.asarray(decoded.convert("RGB")).copy()).permute(2, 0, 1)

    train_images, train_labels = [], []
    for label, wnid in enumerate(wnids):
        boxes = []
        for i in range(per_class):
            file = f"{wnid}_{i}.JPEG"
            train_images.append(save(root / "train" / wnid / "images" / file, grayscale=(label == 0 and i == 0)))
            train_labels.append(label)
            boxes.append(f"{file}\t0\t0\t63\t63\n")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))

    val_images, val_labels, annotations = [], [], []
    for i in range(num_val):
        label = int(rng.integers(len(wnids)))
        file = f"val_{i}.JPEG"
        val_images.append(save(root / "val" / "images" / file))
        val_labels.append(label)
        annotations.append(f"{file}\t{wnids[label]}\t1\t2\t60\t61\n")
    (root / "val" / "val_annotations.txt").write_text("".join(annotations))
    everything = torch.stack(train_images + val_images)
    assert len(torch.unique(everything.flatten(1), dim=0)) == len(everything), "two fixture images decode alike"
    return Expected(torch.stack(train_images), torch.tensor(train_labels),
                    torch.stack(val_images), torch.tensor(val_labels))


def make_archive(folder: Path, archive: Path) -> str:
    """Pack `folder` (as its own top-level directory) into a .tar.gz or .zip; returns the md5."""
    folder, archive = Path(folder), Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(folder, arcname=folder.name)
    else:
        with zipfile.ZipFile(archive, "w") as zf:
            for path in sorted(folder.rglob("*")):
                zf.write(path, path.relative_to(folder.parent).as_posix())
    return hashlib.md5(archive.read_bytes()).hexdigest()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@contextlib.contextmanager
def serve_directory(folder: Path) -> Iterator[str]:
    """Serve `folder` over HTTP on 127.0.0.1 for the duration; yields the base URL (no trailing slash)."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join()
