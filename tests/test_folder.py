"""Image folders: every file format and mode, bad files, layouts, class mapping, the disk cache
and safe uploads. All files are written here in tmp_path (small images, image_size=64)."""
from __future__ import annotations

import io
import os
import resource
import stat
import struct
import time
import zipfile
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from explore.data import DataError
from explore.data import folder as folder_module
from explore.data.decode import ImageDecodeError, decode_image, resize_to_square
from explore.data.folder import cache_path, load_folder, read_cache
from explore.data.upload import UploadError, save_upload, save_upload_images, save_upload_zip

SIZE = 64


# --- helpers that write files ---------------------------------------------------------------

def write_grey(path, value: int = 128, size=(40, 50), fmt=None):
    """A width×height 8-bit grey image with a faint gradient (so it is not constant)."""
    width, height = size
    pixels = np.full((height, width), value, dtype=np.int32) + np.arange(width)[None, :] % 8
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, format=fmt)
    return path


def make_flat(root, counts: dict[str, int], size=(40, 50)):
    """root/CLASS/i.png; class k gets brightness 40 + 80k so labels can be checked from pixels."""
    for k, (class_name, count) in enumerate(counts.items()):
        for i in range(count):
            write_grey(os.path.join(root, class_name, f"{i:03d}.png"), 40 + 80 * k, size)
    return str(root)


def make_split_layout(root, counts: dict[str, dict[str, int]]):
    """root/SPLIT/CLASS/i.png with counts[split][class]."""
    for split, per_class in counts.items():
        make_flat(os.path.join(root, split), per_class)
    return str(root)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_header_only(path, width: int, height: int):
    """A valid-looking PNG declaring width×height 8-bit grey pixels, with a tiny IDAT.
    Decoding it for real would need width*height bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + png_chunk(b"IEND", b""))
    with open(path, "wb") as file:
        file.write(data)
    return path


def write_dicom(path, pixels: np.ndarray, photometric="MONOCHROME2", slope=None, intercept=None,
                center=None, width=None):
    """A real DICOM file (12 bits stored in 16) written with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if center is not None:
        ds.WindowCenter, ds.WindowWidth = center, width
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def to_8bit(grey: np.ndarray) -> np.ndarray:
    return np.round(grey * 255).astype(np.uint8)


# --- decode: formats and modes --------------------------------------------------------------

@pytest.mark.parametrize("ext", ["png", "bmp", "tif", "tiff"])
def test_lossless_8bit_formats_are_exact(tmp_path, ext):
    path = write_grey(str(tmp_path / f"x.{ext}"), 100, size=(40, 50))
    grey, size = decode_image(path)
    assert grey.dtype == np.float32 and grey.shape == (50, 40) and size == (40, 50)
    assert np.array_equal(to_8bit(grey), np.asarray(Image.open(path)))


def test_jpeg_decodes_close_to_original(tmp_path):
    path = write_grey(str(tmp_path / "x.jpg"), 120, size=(48, 32))
    grey, size = decode_image(path)
    assert size == (48, 32) and grey.shape == (32, 48)
    assert abs(float(grey.mean()) * 255 - 123.5) < 3


@pytest.mark.parametrize("top", [65535, 4095])  # full 16-bit, and 12-bit data in a 16-bit file
def test_16bit_png_ramp_keeps_grey_levels(tmp_path, top):
    ramp = np.linspace(0, top, SIZE * SIZE).round().astype(np.uint16).reshape(SIZE, SIZE)
    path = str(tmp_path / "ramp16.png")
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")  # really stored as 16 bit
    grey, _ = decode_image(path)
    assert len(np.unique(to_8bit(grey))) >= 250
    assert len(torch.unique(resize_to_square(grey, SIZE))) >= 250  # the uint8 the model sees
    assert grey.min() == 0 and grey.max() == 1  # nothing clipped, full range used


def test_16bit_tiff(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).astype(np.uint16).reshape(32, 32)
    path = str(tmp_path / "ramp16.tif")
    Image.fromarray(ramp).save(path)
    grey, _ = decode_image(path)
    assert len(np.unique(to_8bit(grey))) >= 250


def test_rgba_and_la_composite_on_black(tmp_path):
    rgba = np.zeros((10, 20, 4), dtype=np.uint8)
    rgba[:, :10] = (255, 255, 255, 255)   # opaque white
    rgba[:, 10:] = (255, 255, 255, 0)     # transparent white -> black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    grey, _ = decode_image(str(tmp_path / "a.png"))
    assert np.allclose(grey[:, :10], 1) and np.allclose(grey[:, 10:], 0)

    Image.fromarray(rgba[..., [0, 3]], "LA").save(tmp_path / "la.png")
    grey, _ = decode_image(str(tmp_path / "la.png"))
    assert np.allclose(grey[:, :10], 1) and np.allclose(grey[:, 10:], 0)


def test_palette_image_with_transparency(tmp_path):
    image = Image.new("P", (20, 10), 0)
    image.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)  # index 0 white, index 1 black
    image.paste(1, (10, 0, 20, 10))
    image.save(tmp_path / "p.png")
    grey, _ = decode_image(str(tmp_path / "p.png"))
    assert np.allclose(grey[:, :10], 1) and np.allclose(grey[:, 10:], 0)

    image.save(tmp_path / "pt.png", transparency=0)  # white made transparent -> black
    grey, _ = decode_image(str(tmp_path / "pt.png"))
    assert np.allclose(grey, 0)


def test_rgb_and_cmyk_become_grey(tmp_path):
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "red.png")
    grey, _ = decode_image(str(tmp_path / "red.png"))
    assert abs(float(grey.mean()) - 0.299) < 0.01  # ITU-R 601 luma of pure red

    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "white.tif")
    Image.new("CMYK", (8, 8), (0, 0, 0, 255)).save(tmp_path / "black.tif")
    assert np.allclose(decode_image(str(tmp_path / "white.tif"))[0], 1)
    assert np.allclose(decode_image(str(tmp_path / "black.tif"))[0], 0)


def test_exif_rotated_jpeg_ends_up_upright(tmp_path):
    upright = np.zeros((80, 40), dtype=np.uint8)  # portrait 40 wide × 80 high
    upright[:40] = 255                            # bright top half
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # saved sideways: 80×40
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = str(tmp_path / "phone.jpg")
    stored.save(path, exif=exif, quality=95)
    assert Image.open(path).size == (80, 40)

    grey, size = decode_image(path)
    assert size == (40, 80) and grey.shape == (80, 40)
    assert grey[:40].mean() > 0.9 and grey[40:].mean() < 0.1

    grey, size = decode_image(path, draft_size=16)  # the fast JPEG path reports the same size
    assert size == (40, 80) and grey.shape[0] > grey.shape[1]


def test_resize_to_square_shape_and_dtype():
    image = np.linspace(0, 1, 50 * 30, dtype=np.float32).reshape(50, 30)
    out = resize_to_square(image, SIZE)
    assert out.dtype == torch.uint8 and out.shape == (1, SIZE, SIZE)
    assert out[0, 0, 0] < 10 and out[0, -1, -1] > 245


# --- decode: DICOM --------------------------------------------------------------------------

def dicom_ramp() -> np.ndarray:
    return np.tile(np.linspace(0, 4095, 32).round(), (16, 1)).astype(np.uint16)  # dark left, bright right


def test_dicom_monochrome2(tmp_path):
    path = write_dicom(str(tmp_path / "m2.dcm"), dicom_ramp())
    grey, size = decode_image(path)
    assert size == (32, 16) and grey.shape == (16, 32)
    assert grey[0, 0] == 0 and grey[0, -1] == 1
    assert np.all(np.diff(grey[0]) > 0)


def test_dicom_monochrome1_is_inverted(tmp_path):
    normal = decode_image(write_dicom(str(tmp_path / "m2.dcm"), dicom_ramp()))[0]
    inverted = decode_image(write_dicom(str(tmp_path / "m1.dcm"), dicom_ramp(), photometric="MONOCHROME1"))[0]
    assert np.allclose(inverted, 1 - normal)


def test_dicom_rescale_and_window(tmp_path):
    # stored p -> value 2p - 1000; window [0, 2000] (center 1000, width 2000) -> black..white
    pixels = np.array([[0, 500, 1000, 1500, 4095]] * 4, dtype=np.uint16)
    path = write_dicom(str(tmp_path / "w.dcm"), pixels, slope=2, intercept=-1000, center=1000, width=2000)
    grey = decode_image(path)[0][0]
    assert grey[0] == 0 and grey[1] < 0.01          # value -1000 and 0: at or below the window
    assert abs(grey[2] - 0.5) < 0.01                # value 1000: the window centre is mid-grey
    assert grey[3] > 0.99 and grey[4] == 1          # value 2000 and 7190: at or above the window
    # Without the window the image's own min..max would be used instead: p=1000 -> 0.24.
    plain = decode_image(write_dicom(str(tmp_path / "p.dcm"), pixels, slope=2, intercept=-1000))[0][0]
    assert abs(plain[2] - 1000 / 4095) < 0.01


def test_dicom_without_extension_is_recognised(tmp_path):
    path = write_dicom(str(tmp_path / "IM0001"), dicom_ramp())
    assert decode_image(path)[1] == (32, 16)


def test_garbage_dcm_is_refused(tmp_path):
    path = tmp_path / "bad.dcm"
    path.write_bytes(b"this is not DICOM" * 20)
    with pytest.raises(ImageDecodeError, match="DICOM"):
        decode_image(str(path))


# --- decode: bad files ----------------------------------------------------------------------

def test_bad_files_raise_decode_error_with_reason(tmp_path):
    jpeg = write_grey(str(tmp_path / "ok.jpg"), 90, size=(64, 64))
    data = open(jpeg, "rb").read()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello, I am not a picture\n")
    reasons = {}
    for name in ("truncated.jpg", "empty.png", "text.png"):
        with pytest.raises(ImageDecodeError) as info:
            decode_image(str(tmp_path / name))
        reasons[name] = info.value.reason
    assert "truncated" in reasons["truncated.jpg"]
    assert "empty" in reasons["empty.png"]
    assert "not an image" in reasons["text.png"]


@pytest.mark.parametrize("side", [40000, 8000])  # 1600 MP (PIL would refuse too) and 64 MP (only ours)
def test_decompression_bomb_refused_from_header(tmp_path, side):
    path = write_png_header_only(str(tmp_path / "bomb.png"), side, side)
    assert os.path.getsize(path) < 200
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="too large") as info:
        decode_image(path)
    assert time.perf_counter() - start < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 100_000  # < 100 MB
    if side == 8000:
        assert "limit 50" in info.value.reason


# --- folders: what is found, what is skipped ------------------------------------------------

def test_flat_folder_loads_and_reports_bad_files(tmp_path):
    root = make_flat(tmp_path / "data", {"NORMAL": 5, "PNEUMONIA": 5})
    (tmp_path / "data" / "NORMAL" / "empty.png").write_bytes(b"")
    (tmp_path / "data" / "PNEUMONIA" / "notes.png").write_text("not an image")
    write_png_header_only(str(tmp_path / "data" / "PNEUMONIA" / "bomb.png"), 40000, 40000)
    jpeg = write_grey(str(tmp_path / "data" / "NORMAL" / "cut.jpg"), 50, (64, 64))
    data = open(jpeg, "rb").read()
    open(jpeg, "wb").write(data[: len(data) // 2])
    (tmp_path / "data" / "README.txt").write_text("files at the top are not in a class")

    bundle = load_folder(root, image_size=SIZE, cache_dir=str(tmp_path / "cache"))
    assert bundle.classes == ("NORMAL", "PNEUMONIA")
    assert sum(len(s) for s in bundle.splits.values()) == 10
    skipped = {os.path.basename(s.path): s.reason for s in bundle.skipped}
    assert set(skipped) == {"empty.png", "notes.png", "bomb.png", "cut.jpg", "README.txt"}
    assert "too large" in skipped["bomb.png"] and "truncated" in skipped["cut.jpg"]
    for split in bundle.splits.values():
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, SIZE, SIZE)
        assert all(site == "folder:data" for site in split.sites)
        assert all(os.path.isabs(i) and os.path.exists(i) for i in split.ids)
        assert split.original_sizes.tolist() == [[40, 50]] * len(split)


def test_every_format_loads_through_a_folder(tmp_path):
    root = tmp_path / "mixed"
    write_grey(str(root / "NORMAL" / "a.png"), 60)
    write_grey(str(root / "NORMAL" / "b.jpg"), 60)
    write_grey(str(root / "NORMAL" / "c.bmp"), 60)
    write_dicom(str(root / "NORMAL" / "d.dcm"), dicom_ramp())
    write_grey(str(root / "PNEUMONIA" / "e.tif"), 200)
    Image.new("RGBA", (30, 30), (200, 200, 200, 255)).save(root / "PNEUMONIA" / "f.png")
    Image.new("CMYK", (30, 30), (0, 0, 0, 50)).save(root / "PNEUMONIA" / "g.jpg")
    Image.fromarray(np.full((30, 30), 50000, dtype=np.uint16)).save(root / "PNEUMONIA" / "h.png")
    bundle = load_folder(str(root), image_size=SIZE, all_as_test=True, cache_dir=str(tmp_path / "cache"))
    assert bundle.skipped == ()
    assert bundle.counts()["test"] == {"NORMAL": 4, "PNEUMONIA": 4}


def test_hidden_files_and_folders_are_ignored(tmp_path):
    root = make_flat(tmp_path / "data", {"NORMAL": 3, "PNEUMONIA": 3})
    (tmp_path / "data" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "data" / "NORMAL" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    write_grey(str(tmp_path / "data" / ".ipynb_checkpoints" / "x.png"))
    write_grey(str(tmp_path / "data" / "__MACOSX" / "NORMAL" / "._000.png"))
    write_grey(str(tmp_path / "data" / "PNEUMONIA" / ".hidden" / "y.png"))
    bundle = load_folder(root, image_size=SIZE, cache_dir=str(tmp_path / "cache"))
    assert bundle.classes == ("NORMAL", "PNEUMONIA")
    assert bundle.skipped == ()
    assert sum(len(s) for s in bundle.splits.values()) == 6


def test_symlink_loop_below_a_class_folder_does_not_hang(tmp_path):
    root = make_flat(tmp_path / "data", {"NORMAL": 2, "PNEUMONIA": 2})
    os.symlink(tmp_path / "data", tmp_path / "data" / "NORMAL" / "loop")
    bundle = load_folder(root, image_size=SIZE, all_as_test=True, cache_dir=str(tmp_path / "cache"))
    assert bundle.counts()["test"] == {"NORMAL": 2, "PNEUMONIA": 2}


def test_empty_class_folder_is_an_error_naming_it(tmp_path):
    root = make_flat(tmp_path / "data", {"NORMAL": 3, "PNEUMONIA": 3})
    (tmp_path / "data" / "VIRAL").mkdir()
    (tmp_path / "data" / "VIRAL" / ".DS_Store").write_bytes(b"x")  # hidden files do not count
    with pytest.raises(DataError, match="VIRAL"):
        load_folder(root, image_size=SIZE, cache_dir=str(tmp_path / "cache"))


def test_class_folder_with_only_bad_files_is_an_error(tmp_path):
    root = make_flat(tmp_path / "data", {"NORMAL": 3})
    (tmp_path / "data" / "PNEUMONIA").mkdir()
    (tmp_path / "data" / "PNEUMONIA" / "a.png").write_text("text")
    (tmp_path / "data" / "PNEUMONIA" / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    with pytest.raises(DataError, match="PNEUMONIA.*no usable images: all 2 of its files are unreadable") as error:
        load_folder(root, image_size=SIZE, cache_dir=str(tmp_path / "cache"))
    assert "a.png: " in str(error.value) and "b.jpg: " in str(error.value)  # the page stops: name them here


def test_single_class_no_images_and_missing_folder_are_errors(tmp_path):
    one = make_flat(tmp_path / "one", {"NORMAL": 3})
    with pytest.raises(DataError, match="only one class"):
        load_folder(one, image_size=SIZE, cache_dir=str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found in .*empty"):
        load_folder(str(tmp_path / "empty"), image_size=SIZE)
    with pytest.raises(DataError, match="not found: .*missing"):
        load_folder(str(tmp_path / "missing"), image_size=SIZE)


def test_normal_and_pneumonia_are_0_and_1_whatever_case_and_order(tmp_path):
    root = tmp_path / "data"
    for name, value in [("zeta", 10), ("Pneumonia", 200), ("alpha", 30), ("normal", 90)]:
        for i in range(3):
            write_grey(str(root / name / f"{i}.png"), value)
    bundle = load_folder(str(root), image_size=SIZE, cache_dir=str(tmp_path / "cache"))
    assert bundle.classes == ("NORMAL", "PNEUMONIA", "alpha", "zeta")
    brightness = {"NORMAL": 90, "PNEUMONIA": 200, "alpha": 30, "zeta": 10}
    for split in bundle.splits.values():
        for image, label in zip(split.images, split.labels):
            assert abs(float(image.float().mean()) - brightness[bundle.classes[label]]) < 6


# --- folders: layouts and splits ------------------------------------------------------------

def test_flat_layout_is_split_stratified_and_reproducibly(tmp_path):
    root = make_flat(tmp_path / "data", {"NORMAL": 10, "PNEUMONIA": 10})
    cache = str(tmp_path / "cache")
    bundle = load_folder(root, image_size=SIZE, seed=0, cache_dir=cache)
    assert bundle.counts() == {name: {"NORMAL": n, "PNEUMONIA": n} for name, n in
                               [("train", 6), ("val", 2), ("test", 2)]}
    ids = [set(s.ids) for s in bundle.splits.values()]
    assert len(set.union(*ids)) == 20 and sum(len(i) for i in ids) == 20  # disjoint, complete
    again = load_folder(root, image_size=SIZE, seed=0, cache_dir=cache)
    other = load_folder(root, image_size=SIZE, seed=1, cache_dir=cache)
    assert again.val.ids == bundle.val.ids
    assert other.val.ids != bundle.val.ids


def test_explicit_split_layout_uses_the_given_splits(tmp_path):
    root = make_split_layout(tmp_path / "data", {
        "train": {"NORMAL": 5, "PNEUMONIA": 4}, "val": {"NORMAL": 2, "PNEUMONIA": 1},
        "test": {"NORMAL": 3, "PNEUMONIA": 3},
    })
    bundle = load_folder(root, image_size=SIZE, cache_dir=str(tmp_path / "cache"))
    assert bundle.counts() == {"train": {"NORMAL": 5, "PNEUMONIA": 4}, "val": {"NORMAL": 2, "PNEUMONIA": 1},
                               "test": {"NORMAL": 3, "PNEUMONIA": 3}}
    for name, split in bundle.splits.items():
        assert all(f"{os.sep}{name}{os.sep}" in i for i in split.ids)


def test_missing_val_split_is_carved_from_train(tmp_path):
    root = make_split_layout(tmp_path / "data", {
        "TRAIN": {"normal": 10, "pneumonia": 10}, "Test": {"normal": 3, "pneumonia": 3},
    })
    bundle = load_folder(root, image_size=SIZE, cache_dir=str(tmp_path / "cache"))
    assert bundle.counts() == {"train": {"NORMAL": 8, "PNEUMONIA": 8}, "val": {"NORMAL": 2, "PNEUMONIA": 2},
                               "test": {"NORMAL": 3, "PNEUMONIA": 3}}
    assert all(f"{os.sep}TRAIN{os.sep}" in i for i in bundle.val.ids)
    assert not set(bundle.val.ids) & set(bundle.train.ids)


@pytest.mark.parametrize("layout", ["flat", "split"])
def test_all_as_test_puts_every_image_in_test(tmp_path, layout):
    if layout == "flat":
        root = make_flat(tmp_path / "data", {"NORMAL": 4, "PNEUMONIA": 3})
    else:
        root = make_split_layout(tmp_path / "data", {"train": {"NORMAL": 2, "PNEUMONIA": 2},
                                                     "test": {"NORMAL": 2, "PNEUMONIA": 1}})
    bundle = load_folder(root, image_size=SIZE, all_as_test=True, cache_dir=str(tmp_path / "cache"))
    assert bundle.counts()["test"] == {"NORMAL": 4, "PNEUMONIA": 3}
    for name in ("train", "val"):
        split = bundle.splits[name]
        assert len(split) == 0 and split.images.shape == (0, 1, SIZE, SIZE)
        assert split.original_sizes.shape == (0, 2)


# --- folders: progress, threads and the disk cache ------------------------------------------

def count_decodes(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = folder_module.decode_image

    def counting(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(folder_module, "decode_image", counting)
    return calls


def test_progress_reports_every_file(tmp_path):
    root = make_flat(tmp_path / "data", {"NORMAL": 3, "PNEUMONIA": 3})
    (tmp_path / "data" / "NORMAL" / "bad.png").write_text("x")
    reports = []
    load_folder(root, image_size=SIZE, cache_dir=str(tmp_path / "cache"), workers=3,
                progress=lambda done, total: reports.append((done, total)))
    assert reports[0] == (0, 7) and reports[-1] == (7, 7)
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)


def test_disk_cache_hit_and_invalidation_by_mtime(tmp_path, monkeypatch):
    root = make_flat(tmp_path / "data", {"NORMAL": 4, "PNEUMONIA": 4})
    (tmp_path / "data" / "NORMAL" / "bad.png").write_text("x")
    cache = str(tmp_path / "cache")
    calls = count_decodes(monkeypatch)

    first = load_folder(root, image_size=SIZE, cache_dir=cache)
    assert len(calls) == 9 and os.path.exists(cache_path(os.path.abspath(root), SIZE, cache))

    second = load_folder(root, image_size=SIZE, cache_dir=cache)
    assert len(calls) == 9  # nothing decoded again, failures included
    assert torch.equal(first.train.images, second.train.images) and first.skipped == second.skipped

    changed = os.path.join(root, "PNEUMONIA", "001.png")
    write_grey(changed, 250)
    stamp = os.stat(changed).st_mtime + 10
    os.utime(changed, (stamp, stamp))
    third = load_folder(root, image_size=SIZE, cache_dir=cache)
    assert calls[9:] == [os.path.abspath(changed)]
    assert all(ids == first.splits[name].ids for name, ids in ((n, s.ids) for n, s in third.splits.items()))

    load_folder(root, image_size=128, cache_dir=cache)  # another image size: its own cache
    assert len(calls) == 19


def test_default_cache_dir_comes_from_the_environment(tmp_path, monkeypatch):
    root = make_flat(tmp_path / "data", {"NORMAL": 2, "PNEUMONIA": 2})
    monkeypatch.setenv("EXPLORE_CACHE_DIR", str(tmp_path / "envcache"))
    load_folder(root, image_size=SIZE)
    assert any(name.endswith(".pt") for name in os.listdir(tmp_path / "envcache"))


def test_corrupt_cache_is_ignored_and_rebuilt(tmp_path, monkeypatch):
    root = make_flat(tmp_path / "data", {"NORMAL": 3, "PNEUMONIA": 3})
    cache = str(tmp_path / "cache")
    load_folder(root, image_size=SIZE, cache_dir=cache)
    cache_file = cache_path(os.path.abspath(root), SIZE, cache)
    with open(cache_file, "r+b") as file:  # damage it
        file.seek(0)
        file.write(b"garbage" * 50)
    calls = count_decodes(monkeypatch)
    bundle = load_folder(root, image_size=SIZE, cache_dir=cache)
    assert len(calls) == 6 and sum(len(s) for s in bundle.splits.values()) == 6
    assert len(read_cache(cache_file, SIZE)) == 6  # rewritten and readable again
    assert not [n for n in os.listdir(cache) if n.startswith(".tmp")]  # no temp files left


UNPICKLED = []


def _record_unpickling():
    UNPICKLED.append(True)
    return {}


class _Payload:
    def __reduce__(self):
        return (_record_unpickling, ())


def test_cache_never_unpickles_arbitrary_objects(tmp_path):
    cache_file = str(tmp_path / "evil.pt")
    torch.save({"loader_version": 1, "keys": _Payload()}, cache_file)
    assert read_cache(cache_file, SIZE) == {}
    assert UNPICKLED == []


# --- uploads ---------------------------------------------------------------------------------

def png_bytes(value: int = 100) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (36, 36), value).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_bytes(entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def test_zip_upload_extracts_a_loadable_folder(tmp_path):
    entries = {f"mydata/{cls}/{i}.png": png_bytes(60 + 100 * k)
               for k, cls in enumerate(["NORMAL", "PNEUMONIA"]) for i in range(3)}
    entries["__MACOSX/mydata/NORMAL/._0.png"] = b"junk"
    entries["mydata/NORMAL/broken.png"] = b"not a png"
    folder = save_upload([("xrays.zip", zip_bytes(entries))], str(tmp_path / "uploads"),
                         max_bytes=10_000_000, max_files=100)
    assert os.path.basename(folder) == "mydata"  # the zip's single top folder
    assert os.path.realpath(folder).startswith(os.path.realpath(tmp_path / "uploads"))
    assert not os.path.exists(os.path.join(os.path.dirname(folder), "__MACOSX"))
    bundle = load_folder(folder, image_size=SIZE, cache_dir=str(tmp_path / "cache"))
    assert sum(len(s) for s in bundle.splits.values()) == 6
    assert [os.path.basename(s.path) for s in bundle.skipped] == ["broken.png"]


@pytest.mark.parametrize("bad_name", ["../evil.png", "NORMAL/../../evil.png", "/tmp/evil.png", "C:/evil.png",
                                      "__MACOSX/../../evil.png"])
def test_zip_slip_entry_rejects_the_upload(tmp_path, bad_name):
    dest = tmp_path / "uploads"
    data = zip_bytes({"NORMAL/a.png": png_bytes(), bad_name: png_bytes()})
    with pytest.raises(UploadError, match="unsafe path"):
        save_upload_zip(data, str(dest), max_bytes=10_000_000, max_files=100)
    assert not (tmp_path / "evil.png").exists()
    assert not dest.exists() or os.listdir(dest) == []  # nothing kept


def test_zip_symlink_and_bomb_and_file_count_are_refused(tmp_path):
    dest = str(tmp_path / "uploads")
    with pytest.raises(UploadError, match="symbolic link"):
        save_upload_zip(zip_bytes({"NORMAL/a.png": png_bytes()}, symlinks={"NORMAL/b.png": "/etc/passwd"}),
                        dest, max_bytes=10_000_000, max_files=100)
    bomb = zip_bytes({"NORMAL/big.png": b"\0" * 3_000_000})  # ~3 kB compressed
    assert len(bomb) < 50_000
    with pytest.raises(UploadError, match="expands to more than"):
        save_upload_zip(bomb, dest, max_bytes=1_000_000, max_files=100)
    many = zip_bytes({f"NORMAL/{i}.png": b"x" for i in range(11)})
    with pytest.raises(UploadError, match="limit is 10"):
        save_upload_zip(many, dest, max_bytes=1_000_000, max_files=10)
    encrypted = bytearray(zip_bytes({"NORMAL/a.png": png_bytes()}))
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local + central header
        encrypted[encrypted.index(signature) + flag_offset] |= 0x1  # "password-protected"
    with pytest.raises(UploadError, match="cannot extract"):
        save_upload_zip(bytes(encrypted), dest, max_bytes=1_000_000, max_files=10)
    with pytest.raises(UploadError, match="not a valid zip"):
        save_upload_zip(b"PK-not-really", dest, max_bytes=1_000_000, max_files=10)
    assert os.listdir(dest) == []  # the bomb's half-written folder was removed again


def test_loose_image_uploads_build_a_two_class_folder(tmp_path):
    dest = str(tmp_path / "uploads")
    folder = save_upload_images([("a.png", png_bytes(50)), ("../../sneaky.png", png_bytes(50)),
                                 ("a.png", png_bytes(50))], "NORMAL", dest, max_bytes=1_000_000, max_files=10)
    both = save_upload([("b.png", png_bytes(200)), ("c.png", png_bytes(200))], dest, max_bytes=1_000_000,
                       max_files=10, class_name="PNEUMONIA", into=folder)
    # Adding makes a new folder (a copy plus the new files): a dataset cached under the first
    # folder's path never goes stale, because that folder never changes.
    assert both != folder and os.listdir(folder) == ["NORMAL"]
    assert sorted(os.listdir(os.path.join(both, "NORMAL"))) == ["a-1.png", "a.png", "sneaky.png"]
    assert not (tmp_path / "sneaky.png").exists()
    bundle = load_folder(both, image_size=SIZE, all_as_test=True, cache_dir=str(tmp_path / "cache"))
    assert bundle.counts()["test"] == {"NORMAL": 3, "PNEUMONIA": 2}

    with pytest.raises(UploadError, match="class"):
        save_upload_images([("a.png", png_bytes())], "../x", dest, max_bytes=1_000_000, max_files=10)
    with pytest.raises(UploadError, match="limit"):
        save_upload_images([("a.png", png_bytes())] * 3, "NORMAL", dest, max_bytes=1_000_000, max_files=2)
    with pytest.raises(UploadError, match="need a class"):
        save_upload([("a.png", png_bytes())], dest, max_bytes=1_000_000, max_files=10)
    with pytest.raises(UploadError, match="not an upload folder"):
        save_upload_images([("a.png", png_bytes())], "NORMAL", dest, 1_000_000, 10, into=str(tmp_path))
