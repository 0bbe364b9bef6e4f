"""Save what a browser upload gives (a zip of class folders, or loose images) as an image folder.

Everything here treats the upload as hostile, because on a shared server it may be:
- zip-slip: an entry named '../../x' or '/etc/x' would be written outside the target folder,
  so absolute paths, drive letters and '..' are refused (the whole upload is rejected);
- symlinks inside the zip are refused (they could point anywhere on the server);
- zip bombs: a few kB can expand to gigabytes, so the bytes actually written are counted
  while extracting (the sizes in the zip's directory can lie) and extraction stops at
  max_bytes; the number of files is capped at max_files.
Each upload goes into a fresh folder under dest_root; on any error that folder is removed.
Files that are not valid images are *not* checked here: load_folder skips and reports them.

The returned folder is usable as the data source `folder:PATH`.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib

from .bundle import DataError
from .folder import is_visible

# Defaults for a classroom server; the page may pass its own.
DEFAULT_MAX_BYTES = 500 * 1024 * 1024
DEFAULT_MAX_FILES = 20_000

_CHUNK_BYTES = 1024 * 1024
_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._\- ]")


class UploadError(DataError):
    """An upload that was refused (too big, too many files, unsafe names); nothing is kept."""


def save_upload_zip(
    data: bytes,
    dest_root: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    into: str | None = None,
) -> str:
    """Extract a zip of PATH/CLASS/* (or PATH/{train,val,test}/CLASS/*) safely; returns the folder.

    into: add to a folder returned by an earlier call instead of creating a new one.
    When the zip wraps everything in one top folder (as zipping a folder does), that inner
    folder is returned, so 'chest_xray.zip' -> .../chest_xray with the class folders in it.
    """
    _check_size(len(data), max_bytes, "the zip file")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise UploadError("the upload is not a valid zip file") from None
    with archive:
        for member in archive.infolist():  # every entry, even ones we would skip
            _check_member(member)
        files = [m for m in archive.infolist() if _wanted(m.filename) and not m.is_dir()]
        if len(files) > max_files:
            raise UploadError(f"the zip holds {len(files)} files; the limit is {max_files}")
        with _target_folder(dest_root, into) as folder:
            written = 0
            for member in files:
                try:
                    written = _extract(archive, member, folder, written, max_bytes)
                except (RuntimeError, NotImplementedError, EOFError, zipfile.BadZipFile, zlib.error) as error:
                    # encrypted entry, unsupported compression, damaged data
                    raise UploadError(f"cannot extract {member.filename!r} from the zip: {error}") from None
    return _single_top_folder(folder) if into is None else folder


def save_upload_images(
    files: list[tuple[str, bytes]],
    class_name: str,
    dest_root: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    into: str | None = None,
) -> str:
    """Save loose images (name, bytes) as FOLDER/class_name/*; returns FOLDER.

    Call once per class with `into` = the folder from the first call to build a two-class set.
    """
    class_folder_name = _safe_name(class_name, "class name")
    if len(files) > max_files:
        raise UploadError(f"{len(files)} files uploaded; the limit is {max_files}")
    _check_size(sum(len(content) for _, content in files), max_bytes, "the uploaded files")
    with _target_folder(dest_root, into) as folder:
        class_folder = os.path.join(folder, class_folder_name)
        os.makedirs(class_folder, exist_ok=True)
        for name, content in files:
            target = _unused_path(class_folder, _safe_name(os.path.basename(name.replace("\\", "/")), "file name"))
            with open(target, "xb") as file:
                file.write(content)
    return folder


def save_upload(
    files: list[tuple[str, bytes]],
    dest_root: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    class_name: str | None = None,
    into: str | None = None,
) -> str:
    """One entry point for a file uploader: a single .zip is extracted; loose images need
    `class_name`. Returns the folder to load as `folder:PATH`."""
    if len(files) == 1 and files[0][0].lower().endswith(".zip"):
        return save_upload_zip(files[0][1], dest_root, max_bytes, max_files, into=into)
    if any(name.lower().endswith(".zip") for name, _ in files):
        raise UploadError("upload either one zip file or loose images, not both")
    if not class_name:
        raise UploadError("loose images need a class (e.g. NORMAL or PNEUMONIA); or upload a zip of class folders")
    return save_upload_images(files, class_name, dest_root, max_bytes, max_files, into=into)


# --- checks ---------------------------------------------------------------------------------

def _check_size(size: int, max_bytes: int, what: str) -> None:
    if size > max_bytes:
        raise UploadError(f"{what} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.1f} MB")


def _wanted(name: str) -> bool:
    """Skip macOS/Windows clutter ('__MACOSX/', '.DS_Store', ...) without extracting it."""
    parts = [p for p in name.replace("\\", "/").split("/") if p]
    return bool(parts) and all(is_visible(p) for p in parts)


def _check_member(member: zipfile.ZipInfo) -> None:
    """Refuse entries that could write outside the target folder."""
    name = member.filename.replace("\\", "/")
    parts = name.split("/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts or "\0" in name:
        raise UploadError(f"unsafe path in zip: {member.filename!r} (absolute or with '..'); upload refused")
    unix_mode = member.external_attr >> 16
    if stat.S_ISLNK(unix_mode):
        raise UploadError(f"the zip contains a symbolic link ({member.filename!r}); upload refused")


def _safe_name(name: str, what: str) -> str:
    """One path component made of ordinary characters; refuses '', '.', '..' and hidden names."""
    cleaned = _UNSAFE_CHARACTERS.sub("_", name.strip())
    if not cleaned or cleaned in (".", "..") or not is_visible(cleaned):
        raise UploadError(f"invalid {what}: {name!r}")
    return cleaned


# --- writing --------------------------------------------------------------------------------

@contextlib.contextmanager
def _target_folder(dest_root: str, into: str | None):
    """A fresh folder under dest_root, removed on error. With `into`, the fresh folder starts as a
    copy of that earlier upload: an upload never changes once used, so a dataset cached under its
    path can never go stale, and adding files gives a new path (a new dataset)."""
    previous = _check_inside(into, dest_root) if into is not None else None
    os.makedirs(dest_root, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="upload-", dir=dest_root)
    try:
        if previous is not None:
            shutil.copytree(previous, folder, dirs_exist_ok=True)
        yield folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _check_inside(folder: str, dest_root: str) -> str:
    folder, root = os.path.realpath(folder), os.path.realpath(dest_root)
    if folder == root or os.path.commonpath([folder, root]) != root or not os.path.isdir(folder):
        raise UploadError(f"{folder} is not an upload folder under {dest_root}")
    return folder


def _extract(archive: zipfile.ZipFile, member: zipfile.ZipInfo, folder: str, written: int, max_bytes: int) -> int:
    """Copy one entry in chunks, counting real bytes; returns the new total written."""
    target = os.path.join(folder, *[p for p in member.filename.replace("\\", "/").split("/") if p])
    if os.path.commonpath([os.path.realpath(target), os.path.realpath(folder)]) != os.path.realpath(folder):
        raise UploadError(f"unsafe path in zip: {member.filename!r}; upload refused")  # belt and braces
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with archive.open(member) as source, open(target, "wb") as sink:
        while chunk := source.read(_CHUNK_BYTES):
            written += len(chunk)
            if written > max_bytes:
                raise UploadError(f"the zip expands to more than {max_bytes / 1e6:.1f} MB; upload refused")
            sink.write(chunk)
    return written


def _unused_path(folder: str, name: str) -> str:
    """folder/name, or folder/stem-1.ext, -2, ... when two uploads share a name."""
    stem, ext = os.path.splitext(name)
    candidate, counter = os.path.join(folder, name), 1
    while os.path.exists(candidate):
        candidate = os.path.join(folder, f"{stem}-{counter}{ext}")
        counter += 1
    return candidate


def _single_top_folder(folder: str) -> str:
    """If everything sits in one sub-folder that holds folders (a zipped dataset folder), use it."""
    entries = [e for e in os.scandir(folder) if is_visible(e.name)]
    if len(entries) == 1 and entries[0].is_dir():
        inner = entries[0].path
        if any(e.is_dir() for e in os.scandir(inner) if is_visible(e.name)):
            return inner
    return folder
