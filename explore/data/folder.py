"""Load a folder of chest X-rays into a `DataBundle`.

Two layouts are understood (folder names are the class names):

    PATH/train/NORMAL/*.png        PATH/NORMAL/*.jpeg
    PATH/train/PNEUMONIA/*.png     PATH/PNEUMONIA/*.jpeg
    PATH/val/...   (optional)
    PATH/test/...  (optional)

With split folders the given splits are used; a missing val (or test) split is carved out of
train, stratified by class and reproducible from `seed`. A flat PATH/CLASS/* folder is split
the same way. NORMAL and PNEUMONIA (any case) are always classes 0 and 1, so a model trained
on one folder can be tested on another; other class names follow in sorted order.

Loading never stops on a bad file: unreadable, truncated, empty, non-image or oversized files
are listed in `bundle.skipped` with the reason. Hidden files and folders ('.DS_Store',
'.ipynb_checkpoints', anything starting with '.') and '__MACOSX' are ignored altogether.

Decoding is the slow part (a Kaggle-sized folder has ~6000 JPEGs of ~2000 px), so it runs in
a thread pool (PIL releases the GIL while decoding) and every decoded image is cached on disk.
A file's cache entry is keyed by its absolute path, size and modification time, so a second
load only decodes files that are new or changed.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from .bundle import SPLITS, DataBundle, DataError, SkippedFile, Split
from .decode import ImageDecodeError, decode_image, resize_to_square
from explore import settings

# Bump when decoding or resizing changes: old cache files are then ignored.
LOADER_VERSION = 1

# These two always get class indices 0 and 1 (in this order), whatever the folder order/case.
FIXED_CLASSES = ("NORMAL", "PNEUMONIA")

# Split folder names understood (lower case) -> split.
SPLIT_FOLDERS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}

# Never images and never classes (besides anything whose name starts with '.').
IGNORED_NAMES = {"__macosx", "thumbs.db", "desktop.ini"}

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class FoundImage:
    """A candidate image file, where it was found, and which class and split the layout gives it."""

    path: str           # absolute path; also the image's id in the bundle
    class_name: str
    class_folder: str   # the folder named after the class (error messages name it)
    split: str | None   # from PATH/{train,val,test}/..., None in a flat layout


@dataclass(frozen=True)
class Decoded:
    """One decoded, resized image."""

    image: torch.Tensor            # uint8 1×S×S
    original_size: tuple[int, int]  # (width, height)


def load_folder(
    path: str,
    image_size: int = 128,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    all_as_test: bool = False,
    progress: Progress | None = None,
    cache_dir: str | None = None,
    workers: int | None = None,
) -> DataBundle:
    """Decode every image under `path` once and split it into train/val/test.

    all_as_test: put every image in the test split (the folder is the *external* test set of
    a dataset-mismatch experiment); train and val are then empty.
    progress(done, total) is called from this thread as files are decoded.
    cache_dir: where decoded images are cached (default: $EXPLORE_CACHE_DIR or .explore_cache/).
    """
    root = _check_root(path)
    found, class_folders, skipped = find_images(root)
    if not class_folders:
        raise DataError(
            f"no images found in {root}: put them in class folders, e.g. "
            f"{os.path.join(root, 'NORMAL')} and {os.path.join(root, 'PNEUMONIA')}"
        )
    _check_no_empty_folder(class_folders, found)
    classes = class_order({image.class_name for image in found})
    _check_enough_classes(classes, root)

    decoded, failed = decode_files([image.path for image in found], image_size, root,
                                   progress=progress, cache_dir=cache_dir, workers=workers)
    skipped += failed
    usable = [image for image in found if image.path in decoded]
    _check_no_empty_folder(class_folders, usable, failed)

    assignment = assign_splits(usable, classes, seed, val_fraction, test_fraction, all_as_test)
    if not all_as_test:
        _check_every_class_trains(assignment["train"], classes, root)
    site = f"folder:{os.path.basename(root)}"
    splits = {name: build_split(assignment[name], decoded, classes, site, image_size) for name in SPLITS}
    return DataBundle(
        source=f"folder:{path}",
        image_size=image_size,
        classes=classes,
        splits=splits,
        skipped=tuple(skipped),
        description=_describe(root, found, all_as_test),
    )


# --- finding the files ----------------------------------------------------------------------

def find_images(root: str) -> tuple[list[FoundImage], list[tuple[str, str | None]], list[SkippedFile]]:
    """Walk `root`: candidate image files, the class folders (path, split) and what was skipped."""
    found: list[FoundImage] = []
    class_folders: list[tuple[str, str | None]] = []
    skipped: list[SkippedFile] = []
    entries = _visible_entries(root, skipped)
    split_dirs = {e.path: SPLIT_FOLDERS[e.name.lower()] for e in entries
                  if e.is_dir() and e.name.lower() in SPLIT_FOLDERS}
    if not split_dirs:  # flat layout: root/CLASS/*
        _collect_classes(root, None, found, class_folders, skipped)
        return found, class_folders, skipped
    for entry in entries:
        if entry.path in split_dirs:
            _collect_classes(entry.path, split_dirs[entry.path], found, class_folders, skipped)
        elif entry.is_dir():
            skipped.append(SkippedFile(entry.path, "folder ignored: not a split folder (train, val or test)"))
        else:
            skipped.append(SkippedFile(entry.path, "not inside a class folder"))
    return found, class_folders, skipped


def _collect_classes(folder: str, split: str | None, found: list[FoundImage],
                     class_folders: list[tuple[str, str | None]], skipped: list[SkippedFile]) -> None:
    """Each visible sub-folder of `folder` is a class; its files (at any depth) are candidates."""
    for entry in _visible_entries(folder, skipped):
        if not entry.is_dir():
            skipped.append(SkippedFile(entry.path, "not inside a class folder"))
            continue
        class_name = canonical_class_name(entry.name)
        class_folders.append((entry.path, split))
        for file_path in _files_below(entry.path, skipped):
            found.append(FoundImage(file_path, class_name, entry.path, split))


def _files_below(folder: str, skipped: list[SkippedFile]) -> list[str]:
    """Every visible file under `folder`, sorted (sub-folders such as patient folders included).

    Linked folders below a class folder are not followed: a link back up would loop forever.
    """
    files = []
    for entry in _visible_entries(folder, skipped):
        if entry.is_dir(follow_symlinks=False):
            files += _files_below(entry.path, skipped)
        elif entry.is_file():
            files.append(entry.path)
    return files


def _visible_entries(folder: str, skipped: list[SkippedFile]) -> list[os.DirEntry]:
    """Sorted entries of `folder` without hidden/system ones; an unreadable folder is reported."""
    try:
        with os.scandir(folder) as scan:
            entries = [e for e in scan if is_visible(e.name)]
    except OSError as error:
        skipped.append(SkippedFile(folder, f"cannot open folder: {error.strerror or error}"))
        return []
    return sorted(entries, key=lambda e: e.name)


def is_visible(name: str) -> bool:
    """False for '.DS_Store', '.ipynb_checkpoints', '__MACOSX' and the like."""
    return not name.startswith(".") and name.lower() not in IGNORED_NAMES


def canonical_class_name(folder_name: str) -> str:
    """'normal', 'Normal' -> 'NORMAL' (same for PNEUMONIA); other names are kept as they are."""
    upper = folder_name.upper()
    return upper if upper in FIXED_CLASSES else folder_name


def class_order(names: set[str]) -> tuple[str, ...]:
    """NORMAL, PNEUMONIA first (when present), then the other class names sorted."""
    first = [name for name in FIXED_CLASSES if name in names]
    return tuple(first + sorted(names - set(first)))


# --- checks with clear messages -------------------------------------------------------------

def _check_root(path: str) -> str:
    root = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(root):
        raise DataError(f"folder not found: {root}")
    if not os.path.isdir(root):
        raise DataError(f"not a folder: {root} (folder:PATH needs a directory of class folders)")
    return root


def _check_no_empty_folder(class_folders: list[tuple[str, str | None]], images: list[FoundImage],
                           failed: list[SkippedFile] = ()) -> None:
    has_images = {image.class_folder for image in images}
    for folder, _split in class_folders:
        if folder not in has_images:
            # The page stops on this error, so name the unreadable files here rather than in a list below.
            here = [f for f in failed if os.path.dirname(f.path) == folder]
            examples = "; ".join(f"{os.path.basename(f.path)}: {f.reason}" for f in here[:3])
            why = f": all {len(here)} of its files are unreadable ({examples}{'; …' if len(here) > 3 else ''})" \
                if here else ""
            raise DataError(f"class folder {folder} has no usable images{why}")


def _check_enough_classes(classes: tuple[str, ...], root: str) -> None:
    if len(classes) < 2:
        raise DataError(
            f"only one class ({classes[0]}) in {root}: a classifier needs at least two class "
            f"folders, e.g. NORMAL and PNEUMONIA (if the dataset is one level down, point to "
            f"{os.path.join(root, classes[0])})"
        )


def _check_every_class_trains(train: list[FoundImage], classes: tuple[str, ...], root: str) -> None:
    missing = set(classes) - {image.class_name for image in train}
    if missing:
        raise DataError(f"class(es) {sorted(missing)} in {root} have no training images "
                        f"(they appear only in val/test)")


# --- decoding with a disk cache -------------------------------------------------------------

def decode_files(
    paths: list[str],
    image_size: int,
    root: str,
    progress: Progress | None = None,
    cache_dir: str | None = None,
    workers: int | None = None,
) -> tuple[dict[str, Decoded], list[SkippedFile]]:
    """Decode and resize `paths` in a thread pool, reusing the disk cache for unchanged files.

    Returns {path: Decoded} for the good files and a SkippedFile for each bad one.
    Failures are cached too, so a broken file is not re-read on every load.
    """
    keys, skipped = _file_keys(paths)
    cache_file = cache_path(root, image_size, cache_dir)
    cached = read_cache(cache_file, image_size)
    results: dict[str, Decoded | str] = {p: cached[k] for p, k in keys.items() if k in cached}
    todo = [p for p in keys if p not in results]

    total, done = len(keys), len(results)
    if progress:
        progress(done, total)
    if todo:
        pool_size = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=pool_size) as pool:
            for path, result in zip(todo, pool.map(lambda p: _decode_one(p, image_size), todo)):
                results[path] = result
                done += 1
                if progress:
                    progress(done, total)
        write_cache(cache_file, image_size, {keys[p]: r for p, r in results.items()})

    decoded = {p: r for p, r in results.items() if isinstance(r, Decoded)}
    skipped += [SkippedFile(p, r) for p, r in results.items() if isinstance(r, str)]
    return decoded, skipped


def _decode_one(path: str, image_size: int) -> Decoded | str:
    """One file -> Decoded, or the reason it cannot be used."""
    try:
        grey, original_size = decode_image(path, draft_size=image_size)
        return Decoded(resize_to_square(grey, image_size), original_size)
    except ImageDecodeError as error:
        return error.reason


def _file_keys(paths: list[str]) -> tuple[dict[str, str], list[SkippedFile]]:
    """path -> 'path|size|mtime': any change to a file changes its key, so it is re-decoded."""
    keys, skipped = {}, []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError as error:
            skipped.append(SkippedFile(path, f"cannot read file: {error.strerror or error}"))
            continue
        keys[path] = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    return keys, skipped


def default_cache_dir() -> str:
    return str(settings.cache_dir())


def cache_path(root: str, image_size: int, cache_dir: str | None = None) -> str:
    """One cache file per (folder, image size, loader version)."""
    name = hashlib.sha256(f"{root}|{image_size}|{LOADER_VERSION}".encode()).hexdigest()[:24]
    return os.path.join(cache_dir or default_cache_dir(), f"folder-{name}.pt")


def read_cache(cache_file: str, image_size: int) -> dict[str, Decoded | str]:
    """{file key: Decoded or skip reason}; empty when the cache is missing, stale or corrupt.

    Only `torch.load(weights_only=True)` is used: it reads tensors, lists, dicts, strings and
    numbers and refuses to unpickle arbitrary objects, so a tampered cache cannot run code.
    """
    if not os.path.exists(cache_file):
        return {}
    try:
        payload = torch.load(cache_file, map_location="cpu", weights_only=True)
        return _unpack_cache(payload, image_size)
    except Exception:  # corrupt, truncated or from another version: ignore and rebuild
        return {}


def _unpack_cache(payload: dict, image_size: int) -> dict[str, Decoded | str]:
    if payload.get("loader_version") != LOADER_VERSION or payload.get("image_size") != image_size:
        return {}
    keys, images, sizes = payload["keys"], payload["images"], payload["original_sizes"]
    failed_keys, failed_reasons = payload["failed_keys"], payload["failed_reasons"]
    if (images.dtype != torch.uint8 or tuple(images.shape[1:]) != (1, image_size, image_size)
            or not len(keys) == len(images) == len(sizes) or len(failed_keys) != len(failed_reasons)):
        return {}
    entries: dict[str, Decoded | str] = {
        key: Decoded(images[i], (int(sizes[i, 0]), int(sizes[i, 1]))) for i, key in enumerate(keys)
    }
    entries.update({str(k): str(r) for k, r in zip(failed_keys, failed_reasons)})
    return entries


def write_cache(cache_file: str, image_size: int, entries: dict[str, Decoded | str]) -> None:
    """Save atomically (temp file + os.replace): a reader never sees a half-written file.

    The cache only saves time, so failing to write it (read-only disk, full disk) is ignored.
    """
    good = {k: v for k, v in entries.items() if isinstance(v, Decoded)}
    bad = {k: v for k, v in entries.items() if isinstance(v, str)}
    payload = {
        "loader_version": LOADER_VERSION,
        "image_size": image_size,
        "keys": list(good),
        "images": (torch.stack([d.image for d in good.values()]) if good
                   else torch.zeros(0, 1, image_size, image_size, dtype=torch.uint8)),
        "original_sizes": torch.tensor([d.original_size for d in good.values()], dtype=torch.long).reshape(-1, 2),
        "failed_keys": list(bad),
        "failed_reasons": list(bad.values()),
    }
    folder = os.path.dirname(cache_file)
    temp_path = None
    try:
        os.makedirs(folder, exist_ok=True)
        handle, temp_path = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
        os.replace(temp_path, cache_file)
    except (OSError, RuntimeError):
        if temp_path and os.path.exists(temp_path):
            os.remove(temp_path)


# --- splitting and assembling ---------------------------------------------------------------

def assign_splits(
    images: list[FoundImage],
    classes: tuple[str, ...],
    seed: int,
    val_fraction: float,
    test_fraction: float,
    all_as_test: bool = False,
) -> dict[str, list[FoundImage]]:
    """{"train": [...], "val": [...], "test": [...]} following the folder layout.

    Splits that the folder does not provide are carved out of train, stratified by class.
    """
    if all_as_test:
        return {"train": [], "val": [], "test": list(images)}
    if all(image.split is None for image in images):  # flat layout
        return stratified_split(images, classes, {"val": val_fraction, "test": test_fraction}, seed)
    given = {name: [image for image in images if image.split == name] for name in SPLITS}
    if not given["train"]:
        raise DataError("the folder has split folders but no train/ images: add PATH/train/CLASS/ folders")
    carve = {}
    if not given["val"]:
        carve["val"] = val_fraction
    if not given["test"]:
        carve["test"] = test_fraction
    if not carve:
        return given
    carved = stratified_split(given["train"], classes, carve, seed)
    return {
        "train": carved["train"],
        "val": given["val"] or carved["val"],
        "test": given["test"] or carved["test"],
    }


def stratified_split(
    images: list[FoundImage], classes: tuple[str, ...], fractions: dict[str, float], seed: int,
) -> dict[str, list[FoundImage]]:
    """Per class, shuffle (seeded) and cut off `fractions` of the images; the rest is train.

    Each class keeps at least one training image, and a class with 3 or more images gives
    at least one to every split asked for, so small folders still get a usable val/test.
    """
    generator = torch.Generator().manual_seed(seed)
    parts: dict[str, list[FoundImage]] = {"train": []} | {name: [] for name in fractions}
    for class_name in classes:
        members = sorted((image for image in images if image.class_name == class_name), key=lambda i: i.path)
        order = torch.randperm(len(members), generator=generator).tolist()
        shuffled = [members[i] for i in order]
        start = 0
        for name, fraction in fractions.items():
            count = _carve_count(len(members), fraction, already_taken=start)
            parts[name] += shuffled[start:start + count]
            start += count
        parts["train"] += shuffled[start:]
    return {name: parts.get(name, []) for name in SPLITS}


def _carve_count(class_size: int, fraction: float, already_taken: int) -> int:
    count = round(class_size * fraction)
    if fraction > 0 and class_size >= 3:
        count = max(count, 1)
    return max(0, min(count, class_size - already_taken - 1))  # leave one for train


def empty_split(image_size: int) -> Split:
    """A split with no images (shape 0×1×S×S), e.g. train/val of a test-only folder."""
    return Split(
        images=torch.zeros(0, 1, image_size, image_size, dtype=torch.uint8),
        labels=torch.zeros(0, dtype=torch.long),
        sites=(), ids=(),
        original_sizes=torch.zeros(0, 2, dtype=torch.long),
    )


def build_split(images: list[FoundImage], decoded: dict[str, Decoded], classes: tuple[str, ...],
                site: str, image_size: int) -> Split:
    """Stack decoded images (sorted by path, so the order is reproducible) into one Split."""
    if not images:
        return empty_split(image_size)
    images = sorted(images, key=lambda image: image.path)
    return Split(
        images=torch.stack([decoded[image.path].image for image in images]),
        labels=torch.tensor([classes.index(image.class_name) for image in images], dtype=torch.long),
        sites=(site,) * len(images),
        ids=tuple(image.path for image in images),
        original_sizes=torch.tensor([decoded[image.path].original_size for image in images], dtype=torch.long),
    )


def _describe(root: str, found: list[FoundImage], all_as_test: bool) -> str:
    layout = "flat PATH/CLASS/*" if all(i.split is None for i in found) else "PATH/{train,val,test}/CLASS/*"
    use = "all images used as the test set" if all_as_test else "split into train/val/test"
    return f"image folder {root} ({layout}, {use})"
