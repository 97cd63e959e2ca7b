"""Data files fetched and unpacked as untrusted input (ARCHITECTURE.md, Trust).

`ensure_unpacked` makes a data set's folder hold its files: it downloads the archive
with torchvision's `download_url` (md5 checked) under a file lock in the data folder, so
trials sharing a node fetch a data set once, and unpacks it refusing any member that
could write outside its folder (links, devices, absolute or `..` paths). A failed
download or unpack loses nothing and says in one line what to do.
"""

from __future__ import annotations

import http.client
import os
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from filelock import FileLock
from torchvision.datasets.utils import download_url

from trainables.errors import DataUnavailableError, one_line

# What a failed download raises: URLError and socket errors are OSErrors, torchvision
# raises RuntimeError on an md5 mismatch.
_FETCH_ERRORS = (OSError, RuntimeError, http.client.HTTPException)


def _first_missing(folder: Path, required: Sequence[str]) -> str | None:
    return next((name for name in required if not (folder / name).is_file()), None)


def _check_folders(name: str, folder: Path) -> None:
    """DataUnavailableError when `folder` or its parent (data_dir) exists but is not a folder."""
    for path in (folder.parent, folder):
        if path.exists() and not path.is_dir():
            raise DataUnavailableError(f"{name}: {path} is a file where a folder belongs; move it away and load again")


def ensure_unpacked(name: str, folder: Path, required: Sequence[str], url: str, filename: str,
                     md5: str | None, download: bool) -> None:
    """Make `folder` hold the `required` files, fetching and unpacking `url` if allowed.

    The archive `filename` in `folder`'s parent (data_dir) is used when its md5 is
    right, else downloaded. It unpacks into a temporary folder that replaces `folder`
    (a partial one included) only once it holds every required file; the archive is
    removed only then, so a failed unpack loses nothing. A lock in data_dir serialises
    trials on one node; whoever waited re-checks and finds the work done.
    """
    data_dir = folder.parent
    _check_folders(name, folder)
    missing = _first_missing(folder, required)
    if missing is None:
        return
    if not download:
        raise DataUnavailableError(
            f"{name}: {folder / missing} not found and download=False; "
            f"unpack {filename} ({url}) in {data_dir} or allow the download"
        )
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # e.g. a file where one of its parents belongs
        raise DataUnavailableError(f"{name}: cannot create {data_dir} ({one_line(err, squash_space=True)})") from err
    with FileLock(data_dir / f"{folder.name}.lock"):
        if _first_missing(folder, required) is None:
            return
        try:
            # Skips the download when `filename` is already in data_dir with the right md5.
            download_url(url, data_dir, filename, md5)
        except _FETCH_ERRORS as err:
            raise DataUnavailableError(
                f"{name}: {folder / missing} not found and fetching {url} failed ({one_line(err, squash_space=True)}); "
                f"put {filename} in {data_dir} and load again"
            ) from err
        archive = data_dir / filename
        _unpack(name, archive, folder, required)
        archive.unlink()


def _unpack(name: str, archive: Path, folder: Path, required: Sequence[str]) -> None:
    """Unpack `archive` and put its top-level folder `folder.name` in place as `folder`.

    Nothing in data_dir changes unless the unpacked folder holds every required file;
    then a partial `folder` already there is renamed aside, the new one renamed in, and
    the old one removed. Raises DataUnavailableError naming the archive otherwise.
    """
    # Cleanup errors are ignored: by then the folder is in place or the error says why
    # it is not, and a leftover hidden scratch folder harms no later load.
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-",
                                     ignore_cleanup_errors=True) as scratch:
        unpacked = Path(scratch) / "unpacked"
        try:
            _extract(archive, unpacked)
        except _UNPACK_ERRORS as err:
            raise DataUnavailableError(
                f"{name}: cannot unpack {archive} ({one_line(err, squash_space=True)}); it is left in place: "
                f"replace it with a good copy, or delete it to download it again"
            ) from err
        new = unpacked / folder.name
        if not new.is_dir() or new.is_symlink():
            raise DataUnavailableError(f"{name}: {archive} holds no folder {folder.name}; it is left in place")
        missing = _first_missing(new, required)
        if missing is not None:
            raise DataUnavailableError(f"{name}: {archive} holds no {folder.name}/{missing}; it is left in place")
        try:
            _move_into_place(new, folder, Path(scratch) / "replaced")
        except OSError as err:
            raise DataUnavailableError(
                f"{name}: cannot move the unpacked folder to {folder} ({one_line(err, squash_space=True)}); "
                f"{archive} is left in place"
            ) from err


def _move_into_place(new: Path, folder: Path, aside: Path) -> None:
    """Rename `new` to `folder`; an existing `folder` is first renamed to `aside` (and back if that fails)."""
    replacing = os.path.lexists(folder)
    if replacing:
        os.rename(folder, aside)
    try:
        os.rename(new, folder)
    except OSError:
        if replacing:
            os.rename(aside, folder)
        raise


def _escapes(path: str) -> bool:
    """Whether an archive path is absolute or has a '..' component, so it could resolve outside the folder.

    Backslashes count as separators too, as they do when the archive is unpacked on Windows.
    """
    posix = path.replace("\\", "/")
    return posix.startswith("/") or ".." in posix.split("/")


def _tar_member_problem(member: tarfile.TarInfo) -> str | None:
    """Why unpacking `member` could write outside the destination folder or make a special file; None if neither."""
    if _escapes(member.name):
        return "has an absolute path or a '..' component"
    if member.issym() or member.islnk():
        # A link target with '..' is refused even when it reads as inside: after a
        # symlink to '.', 'link/..' is the destination's parent. Links that only go
        # down from where they are cannot leave the folder, however they chain.
        if _escapes(member.linkname):
            return f"is a link to '{one_line(member.linkname, squash_space=True)}', which may lead outside"
        return None
    if not (member.isfile() or member.isdir()):
        return "is a device, fifo or other special file"
    return None


# What a zip member that is neither a file nor a folder is, from the file type bits of
# its Unix mode. zipfile would unpack a symlink as a plain file holding the target's
# path, but no data set we fetch has one, so any is refused rather than half-honoured.
_ZIP_SPECIAL_KINDS = {stat.S_IFLNK: "a symbolic link", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device",
                      stat.S_IFIFO: "a fifo", stat.S_IFSOCK: "a socket"}


def _zip_member_problem(member: zipfile.ZipInfo) -> str | None:
    """Why unpacking `member` could write outside the destination folder or make a special file; None if neither."""
    if _escapes(member.filename):
        return "has an absolute path or a '..' component"
    kind = stat.S_IFMT(member.external_attr >> 16)  # 0 when written without a Unix mode: a plain file
    if kind in _ZIP_SPECIAL_KINDS:
        return f"is {_ZIP_SPECIAL_KINDS[kind]}"
    return None


class _UnsafeMember(Exception):
    """An archive member that could write outside the destination folder or make a special file."""

    def __init__(self, member: str, problem: str) -> None:
        super().__init__(f"member '{one_line(member, squash_space=True)}' {problem}")


# What a failed unpack raises: a refused member, a damaged archive (the tar, zip, gzip
# and zlib errors), a full disk or a permission (OSError).
_UNPACK_ERRORS = (OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile, _UnsafeMember)


# Python 3.11.4+ (and the 3.10.12+ security releases) filter every tar member on
# extraction; "data" refuses what `_tar_member_problem` refuses and also drops owners and
# setuid bits. Where it is absent, the member check alone keeps the writes inside.
_TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def _extract(archive: Path, destination: Path) -> None:
    """Unpack the zip or tar (any compression) `archive` into `destination`.

    Every member is checked before anything is written: one that could land outside
    `destination` (absolute path, '..', a link out) or that is a device, fifo or other
    special file raises _UnsafeMember naming it, and then nothing is unpacked at all.
    """
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            _check_members((member.filename, _zip_member_problem(member)) for member in zf.infolist())
            zf.extractall(destination)
    else:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            _check_members((member.name, _tar_member_problem(member)) for member in members)
            tar.extractall(destination, members=members, **_TAR_FILTER)


def _check_members(problems: Iterable[tuple[str, str | None]]) -> None:
    """Raise _UnsafeMember for the first (member name, problem) pair that has a problem."""
    for member, problem in problems:
        if problem is not None:
            raise _UnsafeMember(member, problem)
