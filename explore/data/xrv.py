"""The public chest X-ray sets as they are downloaded: an image folder plus a labels CSV.

Source string:  xrv:NAME:IMAGE_DIR            labels from torchxrayvision's own copy of the CSV
                xrv:NAME:IMAGE_DIR;labels=CSV  labels from a CSV file the user gives

NAME is one of `XRV_DATASETS`: nih (ChestX-ray14), rsna (RSNA Pneumonia, DICOM or JPEG/PNG),
padchest, chexpert. The `torchxrayvision` package ships the real label files of these sets
(Data_Entry_2017_v2020.csv.gz, kaggle_stage_2_train_labels.csv.zip, ...); we read them from
the installed package, never from a copy in this project.

How a multi-label public set becomes the course's two classes:
- PNEUMONIA: the pneumonia label is present (other findings allowed);
- NORMAL:    the dataset's own "no finding";
- left out and counted: images with other findings but no pneumonia, uncertain pneumonia
  labels (CheXpert's -1), lateral views (the models are made for frontal films).
Only images present on disk count: a user who downloaded one of NIH's 12 archives gets a
dataset from it; CSV rows without a file are counted and the first few listed.

Train / val / test are split BY PATIENT. NIH has up to 184 films of one patient; an image-level
split puts the same patient's lungs in train and test and the test score leaks.

Multi-task learning (`findings=True`, DataSpec.findings; NIH only): every frontal film is kept,
with NIH's 14 findings (torchxrayvision's NIH pathologies, from "Finding Labels") as
Split.findings; the class label is then pneumonia vs no pneumonia.

Per-image metadata (patient, view, age, sex, dataset) stays in the bundle for the Data page's
"label vs view / age / sex" tables; lesion boxes (NIH's BBox_List_2017 pneumonia boxes, RSNA's
boxes) become the bundle's "lesion" masks, which the Saliency page scores attributions against.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .bundle import SPLITS, DataBundle, DataError, SkippedFile, Split
from .chestmnist import FINDINGS as NIH_FINDINGS  # ChestMNIST is NIH: the same 14 labels, same order
from .folder import Decoded, Progress, decode_files, empty_split, is_visible

CLASSES = ("NORMAL", "PNEUMONIA")
# Groups of CSV rows that are not used, by the reason shown to the user.
OTHER_FINDINGS = "other findings, no pneumonia"
UNCERTAIN = "pneumonia label uncertain"
NOT_FRONTAL = "not a frontal (PA/AP) view"
NO_LABELS = "no labels"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
SHOWN_MISSING = 10  # this many missing files are listed by name


@dataclass(frozen=True)
class XrvDataset:
    """One public set: where its labels live and how a row becomes (file, class, metadata).

    read_labels(csv_path) returns the normalised table: key (what identifies the file on
    disk, see `file_key`), group (PNEUMONIA, NORMAL or a left-out reason), patient, view,
    age, sex. read_boxes(csv_path) returns {key: [(x, y, w, h) in original pixels]}.
    """

    name: str
    title: str
    csv_file: str                  # the file in torchxrayvision/data/
    read_labels: Callable[[str], pd.DataFrame]
    key_depth: int = 1             # path components that identify a file (CheXpert: 4)
    read_boxes: Callable[[str], dict] | None = None
    box_file: str | None = None    # in torchxrayvision/data/; None: the labels CSV has the boxes
    origin: str = ""
    licence: str = ""
    cite: str = ""


# --- reading each set's labels CSV ----------------------------------------------------------

def read_csv_checked(path: str, required: tuple[str, ...], what: str, **kwargs) -> pd.DataFrame:
    """Read a labels CSV; a column we need that is not there is a DataError naming it."""
    try:
        table = pd.read_csv(path, low_memory=False, **kwargs)
    except Exception as error:
        raise DataError(f"cannot read labels CSV {path}: {type(error).__name__}: {error}") from None
    missing = [column for column in required if column not in table.columns]
    if missing:
        unexpected = [c for c in table.columns if c not in required]
        raise DataError(
            f"labels CSV {path} has no column {missing[0]!r}{' (nor ' + repr(missing[1:]) + ')' if missing[1:] else ''}"
            f" needed for {what}; it has unexpected column(s) {unexpected[:8]}. "
            f"Is it the right file for this dataset?")
    return table


def _frontal(view: pd.Series, group: pd.Series, frontal: tuple[str, ...]) -> pd.Series:
    """Rows whose view is not frontal are left out, whatever their label."""
    return group.where(view.isin(frontal), NOT_FRONTAL)


def read_nih(path: str) -> pd.DataFrame:
    table = read_csv_checked(path, ("Image Index", "Finding Labels", "Patient ID", "View Position"), "NIH")
    sex_column = "Patient Gender" if "Patient Gender" in table.columns else "Patient Sex"
    findings = table["Finding Labels"].fillna("")
    group = np.where(findings.str.contains("Pneumonia"), "PNEUMONIA",
                     np.where(findings == "No Finding", "NORMAL", OTHER_FINDINGS))
    view = table["View Position"].astype(str)
    present = findings.str.lower().str.get_dummies(sep="|")  # one 0/1 column per finding named in the row
    return pd.DataFrame({
        "key": table["Image Index"].astype(str),
        "group": _frontal(view, pd.Series(group), ("PA", "AP")),
        "patient": "nih:" + table["Patient ID"].astype(str),
        "view": view,
        "age": pd.to_numeric(table.get("Patient Age"), errors="coerce"),
        "sex": table.get(sex_column, pd.Series([None] * len(table))),
    } | {f"finding:{name}": present[name].astype(float) if name in present else 0.0 for name in NIH_FINDINGS})


def read_nih_boxes(path: str) -> dict[str, list[tuple[float, float, float, float]]]:
    """NIH BBox_List_2017: only the Pneumonia boxes (x, y, w, h in the 1024 px images)."""
    table = pd.read_csv(path, names=["key", "finding", "x", "y", "w", "h", "_1", "_2", "_3"], skiprows=1)
    return _boxes(table[table["finding"] == "Pneumonia"], ("x", "y", "w", "h"))


def read_rsna(path: str) -> pd.DataFrame:
    table = read_csv_checked(path, ("patientId", "Target"), "RSNA Pneumonia")
    per_image = table.groupby("patientId", sort=False)["Target"].max().reset_index()
    headers = _rsna_headers()
    per_image = per_image.join(headers, on="patientId") if headers is not None else per_image
    return pd.DataFrame({
        "key": per_image["patientId"].astype(str),
        # RSNA's Target 1 = "lung opacity suspicious for pneumonia"; 0 includes abnormal
        # but not pneumonia-like films (the bundled file has no finer classes).
        "group": np.where(per_image["Target"] == 1, "PNEUMONIA", "NORMAL"),
        "patient": "rsna:" + per_image["patientId"].astype(str),  # one film per patient
        "view": per_image.get("ViewPosition", pd.Series([None] * len(per_image))),
        "age": pd.to_numeric(per_image.get("PatientAge"), errors="coerce"),
        "sex": per_image.get("PatientSex", pd.Series([None] * len(per_image))),
    })


def _rsna_headers() -> pd.DataFrame | None:
    """View / age / sex per RSNA image, from the DICOM headers CSV torchxrayvision ships."""
    path = package_csv("kaggle_stage_2_train_images_dicom_headers.csv.gz", required=False)
    if path is None:
        return None
    columns = ["PatientID", "ViewPosition", "PatientAge", "PatientSex"]
    return pd.read_csv(path, usecols=columns).drop_duplicates("PatientID").set_index("PatientID")


def read_rsna_boxes(path: str) -> dict[str, list[tuple[float, float, float, float]]]:
    table = pd.read_csv(path)
    if "Target" not in table.columns or "x" not in table.columns:
        return {}
    return _boxes(table[table["Target"] == 1].rename(columns={"patientId": "key"}), ("x", "y", "width", "height"))


def _boxes(table: pd.DataFrame, columns: tuple[str, str, str, str]) -> dict:
    boxes: dict[str, list] = {}
    for row in table.dropna(subset=list(columns)).itertuples(index=False):
        values = tuple(float(getattr(row, c)) for c in columns)
        boxes.setdefault(str(row.key), []).append(values)
    return boxes


def read_padchest(path: str) -> pd.DataFrame:
    required = ("ImageID", "PatientID", "Projection", "Labels")
    table = read_csv_checked(path, required, "PadChest")
    labels = table["Labels"].map(_padchest_labels)
    group = labels.map(lambda found: NO_LABELS if found is None else
                       "PNEUMONIA" if any("pneumonia" in f for f in found) else
                       "NORMAL" if found == {"normal"} else OTHER_FINDINGS)
    view = table["Projection"].astype(str).replace({"AP_horizontal": "AP supine"})
    year = pd.to_numeric(table.get("StudyDate_DICOM"), errors="coerce") // 10000
    return pd.DataFrame({
        "key": table["ImageID"].astype(str),
        "group": _frontal(view, group, ("PA", "AP", "AP supine")),
        "patient": "padchest:" + table["PatientID"].astype(str),
        "view": view,
        "age": year - pd.to_numeric(table.get("PatientBirth"), errors="coerce"),
        "sex": table.get("PatientSex_DICOM", pd.Series([None] * len(table))),
    })


def _padchest_labels(text) -> set[str] | None:
    """"['normal']" -> {'normal'}; a missing value -> None."""
    if not isinstance(text, str):
        return None
    return {part.strip(" '\"").lower() for part in text.strip("[]").split(",") if part.strip(" '\"")}


def read_chexpert(path: str) -> pd.DataFrame:
    table = read_csv_checked(path, ("Path", "Frontal/Lateral", "AP/PA", "No Finding", "Pneumonia"), "CheXpert")
    pneumonia, no_finding = table["Pneumonia"], table["No Finding"]
    group = np.where(pneumonia == 1, "PNEUMONIA", np.where(pneumonia == -1, UNCERTAIN,
                     np.where(no_finding == 1, "NORMAL", OTHER_FINDINGS)))
    frontal = table["Frontal/Lateral"] == "Frontal"
    view = table["AP/PA"].where(frontal, "lateral").astype(str)
    return pd.DataFrame({
        "key": table["Path"].astype(str).map(lambda p: file_key(p, 4)),
        "group": _frontal(view, pd.Series(group), ("PA", "AP")),
        "patient": "chexpert:" + table["Path"].str.extract(r"(patient\d+)", expand=False).fillna(table["Path"]),
        "view": view,
        "age": pd.to_numeric(table.get("Age"), errors="coerce").replace(0, np.nan),
        "sex": table.get("Sex", pd.Series([None] * len(table))).replace({"Male": "M", "Female": "F"}),
    })


XRV_DATASETS: dict[str, XrvDataset] = {
    "nih": XrvDataset(
        "nih", "NIH ChestX-ray14", "Data_Entry_2017_v2020.csv.gz", read_nih,
        read_boxes=read_nih_boxes, box_file="BBox_List_2017.csv.gz",
        origin="NIH Clinical Center, Bethesda (adults, 1992–2015); 112,120 PNG films of 30,805 patients, "
               "labels mined from reports",
        licence="public domain (NIH Clinical Center); cite the paper",
        cite="Wang et al., ChestX-ray8, CVPR 2017"),
    "rsna": XrvDataset(
        "rsna", "RSNA Pneumonia Detection Challenge", "kaggle_stage_2_train_labels.csv.zip", read_rsna,
        read_boxes=read_rsna_boxes,
        origin="a subset of NIH ChestX-ray14 relabelled by radiologists with pneumonia boxes (DICOM)",
        licence="Kaggle competition terms (research use)",
        cite="Shih et al., Radiology: Artificial Intelligence 2019"),
    "padchest": XrvDataset(
        "padchest", "PadChest", "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz", read_padchest,
        origin="Hospital San Juan, Alicante, Spain (2009–2017); 160,868 16-bit PNG films",
        licence="PadChest Dataset Research Use Agreement (BIMCV)",
        cite="Bustos et al., Medical Image Analysis 2020"),
    "chexpert": XrvDataset(
        "chexpert", "CheXpert", "chexpert_train.csv.gz", read_chexpert, key_depth=4,
        origin="Stanford Hospital (2002–2017); 224,316 JPEG films of 65,240 patients",
        licence="Stanford University School of Medicine CheXpert Dataset Research Use Agreement",
        cite="Irvin et al., AAAI 2019"),
}


# --- where the labels come from -------------------------------------------------------------

def package_data_dir() -> str | None:
    """torchxrayvision's data folder, found without importing the package (which is slow)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def package_csv(file_name: str, required: bool = True) -> str | None:
    folder = package_data_dir()
    path = os.path.join(folder, file_name) if folder else None
    if path and os.path.exists(path):
        return path
    if not required:
        return None
    raise DataError(f"the labels file {file_name} comes with torchxrayvision, which is not installed: "
                    f"`pip install torchxrayvision` (or `pip install explore[xrv]`), or give the CSV "
                    f"yourself: xrv:NAME:IMAGE_DIR;labels=/path/to/{file_name}")


def parse_xrv_source(arg: str) -> tuple[XrvDataset, str, str | None]:
    """'nih:/data/nih;labels=/x.csv' -> (the nih entry, '/data/nih', '/x.csv')."""
    name, _, rest = arg.partition(":")
    if name not in XRV_DATASETS:
        raise DataError(f"unknown public dataset {name!r}: use one of {sorted(XRV_DATASETS)} (xrv:NAME:IMAGE_DIR)")
    image_dir, _, option = rest.partition(";")
    if not image_dir:
        raise DataError(f"xrv:{name} needs the image folder: xrv:{name}:IMAGE_DIR")
    labels = None
    if option:
        key, equals, value = option.partition("=")
        if key.strip() != "labels" or not value:
            raise DataError(f"unknown option {option!r} in xrv:{arg}: the only option is ;labels=CSV")
        labels = os.path.abspath(os.path.expanduser(value.strip()))
        if not os.path.isfile(labels):
            raise DataError(f"labels CSV not found: {labels}")
    return XRV_DATASETS[name], os.path.abspath(os.path.expanduser(image_dir)), labels


@functools.lru_cache(maxsize=4)
def _read_cached(reader: Callable[[str], object], path: str, mtime_ns: int):
    return reader(path)


def read_once(reader: Callable[[str], object], path: str):
    """A labels CSV is parsed once per process (PadChest's takes seconds); a changed file again."""
    return _read_cached(reader, path, os.stat(path).st_mtime_ns)


# --- matching CSV rows to files on disk -----------------------------------------------------

def file_key(path: str, depth: int = 1) -> str:
    """The last `depth` components of a path, '/'-joined; RSNA-style bare ids lose their suffix.

    NIH / PadChest files are found by name wherever they sit (images_001/images/..., a
    PadChest ImageDir folder), CheXpert's by train/patientN/studyM/view1_frontal.jpg.
    """
    parts = re.split(r"[\\/]+", path.strip("/\\"))
    return "/".join(parts[-depth:])


def index_files(image_dir: str, depth: int) -> tuple[dict[str, str], list[SkippedFile]]:
    """{file key: path} for every image file below image_dir; the same key twice is reported."""
    found: dict[str, str] = {}
    skipped: list[SkippedFile] = []
    for folder, subfolders, files in os.walk(image_dir):
        subfolders[:] = sorted(d for d in subfolders if is_visible(d))
        for name in sorted(files):
            if not is_visible(name) or not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            path = os.path.join(folder, name)
            key = file_key(os.path.relpath(path, image_dir), depth)
            for candidate in {key, os.path.splitext(key)[0]}:  # RSNA's CSV has ids without suffix
                if candidate in found and found[candidate] != path:
                    skipped.append(SkippedFile(path, f"duplicate of {found[candidate]}"))
                    break
                found.setdefault(candidate, path)
    return found, skipped


# --- the loader -----------------------------------------------------------------------------

def load_xrv(arg: str, image_size: int = 128, seed: int = 0, all_as_test: bool = False,
             val_fraction: float = 0.2, test_fraction: float = 0.2,
             progress: Progress | None = None, cache_dir: str | None = None, findings: bool = False) -> DataBundle:
    """Load `xrv:` source `arg` ('nih:/data/nih[;labels=CSV]') into a bundle split by patient;
    with `findings` (NIH only) every frontal film with its 14 findings as Split.findings."""
    dataset, image_dir, labels_csv = parse_xrv_source(arg)
    if findings and dataset.name != "nih":
        raise DataError(f"multi-label findings are available for nih only, not {dataset.name}")
    if not os.path.isdir(image_dir):
        raise DataError(f"image folder not found: {image_dir}")
    csv_path = labels_csv or package_csv(dataset.csv_file)
    table = read_once(dataset.read_labels, csv_path)
    if findings:  # keep films with other findings: the class is then pneumonia vs no pneumonia
        table = table.assign(group=table["group"].replace(OTHER_FINDINGS, "NORMAL"))
    files, skipped = index_files(image_dir, dataset.key_depth)

    on_disk = table[table["key"].isin(files.keys())]
    selection = _selection_counts(dataset, csv_path, table, on_disk, files)
    chosen = on_disk[on_disk["group"].isin(CLASSES)].drop_duplicates("key")
    if chosen.empty:
        raise DataError(_nothing_found(dataset, image_dir, csv_path, len(set(files.values())), selection))

    paths = [files[key] for key in chosen["key"]]
    decoded, failed = decode_files(paths, image_size, image_dir, progress=progress, cache_dir=cache_dir)
    skipped += failed
    chosen = chosen[[files[key] in decoded for key in chosen["key"]]].assign(path=lambda t: t["key"].map(files))
    selection["decoded"] = len(chosen)
    boxes = _lesion_boxes(dataset, csv_path)

    assignment = split_by_patient(chosen, seed, val_fraction, test_fraction, all_as_test)
    splits = {name: _build_split(assignment[name], decoded, dataset, boxes, image_size) for name in SPLITS}
    if findings:
        splits = {name: _with_findings(split, assignment[name]) for name, split in splits.items()}
    if not all_as_test and not {0, 1} <= set(splits["train"].labels.tolist()):
        raise DataError(f"{dataset.title} in {image_dir}: the training split lacks one class "
                        f"({selection['groups']}); add more images")
    return DataBundle(
        source=f"xrv:{arg}", image_size=image_size, classes=CLASSES, splits=splits,
        skipped=tuple(skipped), selection={f"xrv:{arg}": selection},
        description=f"{dataset.title} from {image_dir}, labels {os.path.basename(csv_path)}; "
                    f"{'all images as the test set' if all_as_test else 'split by patient'}"
                    + ("; 14 findings kept" if findings else ""),
        finding_names=NIH_FINDINGS if findings else (),
    )


def _with_findings(split: Split, rows: pd.DataFrame) -> Split:
    """The split with its rows' 14 NIH findings as Split.findings (rows in the split's order: by path)."""
    columns = [f"finding:{name}" for name in NIH_FINDINGS]
    values = rows.sort_values("path")[columns].to_numpy(dtype=np.float32) if len(rows) else np.zeros((0, 14))
    return dataclasses.replace(split, findings=torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)))


def _lesion_boxes(dataset: XrvDataset, csv_path: str) -> dict:
    """{file key: boxes}: NIH's from the package's BBox_List_2017, RSNA's from its labels CSV."""
    if dataset.read_boxes is None:
        return {}
    path = csv_path if dataset.box_file is None else package_csv(dataset.box_file, required=False)
    return read_once(dataset.read_boxes, path) if path else {}


def _selection_counts(dataset, csv_path, table, on_disk, files) -> dict:
    missing = table[~table["key"].isin(files.keys())]
    matched = set(on_disk["key"])
    return {
        "dataset": dataset.name,
        "labels_csv": csv_path,
        "csv_rows": int(len(table)),
        "missing_files": int(len(missing)),
        "missing_examples": missing["key"].head(SHOWN_MISSING).tolist(),
        "files_not_in_csv": len(set(files.values()) - {files[key] for key in matched}),
        "groups": {str(k): int(v) for k, v in on_disk["group"].value_counts().items()},
    }


def _nothing_found(dataset, image_dir, csv_path, n_files, selection) -> str:
    if n_files == 0:
        return f"no image files (.png, .jpg, .dcm) found in {image_dir}"
    return (f"none of the {n_files} image files in {image_dir} is a NORMAL or PNEUMONIA image of "
            f"{dataset.title} according to {csv_path} (found: {selection['groups'] or 'no matching file names'})")


def split_by_patient(table: pd.DataFrame, seed: int, val_fraction: float, test_fraction: float,
                     all_as_test: bool = False) -> dict[str, pd.DataFrame]:
    """Patients (not images) are shuffled and cut into train/val/test, separately for patients
    with and without a pneumonia film so both classes reach every split."""
    if all_as_test:
        return {"train": table.iloc[:0], "val": table.iloc[:0], "test": table}
    sick = set(table.loc[table["group"] == "PNEUMONIA", "patient"])
    generator = torch.Generator().manual_seed(seed)
    assigned: dict[str, str] = {}
    for patients in (sorted(sick), sorted(set(table["patient"]) - sick)):
        order = [patients[i] for i in torch.randperm(len(patients), generator=generator).tolist()]
        n_val, n_test = _cut(len(order), val_fraction), _cut(len(order), test_fraction)
        for i, patient in enumerate(order):
            assigned[patient] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    split_of = table["patient"].map(assigned)
    return {name: table[split_of == name] for name in SPLITS}


def _cut(count: int, fraction: float) -> int:
    """How many patients go to a held-out split: at least one when there are 3 or more."""
    n = round(count * fraction)
    return max(n, 1) if count >= 3 and fraction > 0 else min(n, max(count - 1, 0))


def _build_split(rows: pd.DataFrame, decoded: dict[str, Decoded], dataset: XrvDataset,
                 boxes: dict, image_size: int) -> Split:
    if rows.empty:
        return _with_metadata(empty_split(image_size), {})
    rows = rows.sort_values("path")
    paths = rows["path"].tolist()
    sizes = [decoded[p].original_size for p in paths]
    masks = {}
    if boxes:
        masks["lesion"] = torch.stack([lesion_mask(boxes.get(k, []), size, image_size)
                                       for k, size in zip(rows["key"], sizes)])
    metadata = {
        "patient": tuple(rows["patient"]),
        "view": tuple(_clean(v) for v in rows["view"]),
        "age": tuple(None if pd.isna(a) else float(a) for a in rows["age"]),
        "sex": tuple(_clean(s) for s in rows["sex"]),
        "dataset": (dataset.name,) * len(rows),
    }
    return Split(
        images=torch.stack([decoded[p].image for p in paths]),
        labels=torch.tensor([CLASSES.index(g) for g in rows["group"]], dtype=torch.long),
        sites=(f"xrv:{dataset.name}",) * len(rows), ids=tuple(paths),
        original_sizes=torch.tensor(sizes, dtype=torch.long), masks=masks, metadata=metadata,
    )


def _with_metadata(split: Split, metadata: dict) -> Split:
    columns = ("patient", "view", "age", "sex", "dataset")
    return Split(split.images, split.labels, split.sites, split.ids, split.original_sizes,
                 metadata=metadata or {c: () for c in columns})


def _clean(value) -> str | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def lesion_mask(boxes: list[tuple[float, float, float, float]], original_size: tuple[int, int],
                image_size: int) -> torch.Tensor:
    """Boxes (x, y, w, h) in original pixels -> bool 1×S×S mask of the resized image.

    The image is resized directly to a square, so x scales by S/width and y by S/height.
    """
    mask = torch.zeros(1, image_size, image_size, dtype=torch.bool)
    width, height = original_size
    for x, y, w, h in boxes:
        left, right = int(x * image_size / width), int(np.ceil((x + w) * image_size / width))
        top, bottom = int(y * image_size / height), int(np.ceil((y + h) * image_size / height))
        mask[0, max(top, 0):min(bottom, image_size), max(left, 0):min(right, image_size)] = True
    return mask
