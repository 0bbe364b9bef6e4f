"""Turn one image file into a grey float array, and resize it to the model's square input.

`decode_image(path)` reads PNG (8 and 16 bit), JPEG, BMP, TIFF, GIF, WebP, PGM and DICOM and
always returns the same thing: a float32 H×W array with values in 0..1 plus the upright
(width, height). Anything wrong with the file raises `ImageDecodeError(reason)`; the folder
loader turns that into a `SkippedFile` so one bad file never stops a load.

Choices made here, and why:
- Grey levels are never thrown away before the final uint8 step. 8-bit images are divided by
  255. Images with more bits (16-bit PNG/TIFF, DICOM) are stretched from their own minimum to
  their own maximum: a 16-bit container often holds 10-, 12- or 14-bit data and the file does
  not say which, so dividing by 65535 would make a 12-bit X-ray nearly black and merge its
  4096 levels into 16. Nothing is clipped.
- Transparent pixels are composited on *black*: on a radiograph black is air / the edge of
  the detector, so a transparent border looks like the film edge instead of a bright frame.
- EXIF orientation is applied (phone photos of films are often stored sideways).
- Size is checked from the header *before* any pixel is decoded (decompression bombs): a PNG
  can declare 40000×40000 pixels in a few hundred bytes and ask for gigabytes of memory.
- Resizing is a direct resize to a square, like the course's `transforms.Resize((s, s))`
  (bilinear with antialiasing). It stretches non-square images; the Data page shows the
  original sizes and aspect ratios so students can see how much.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

# Refuse images above this many pixels (a chest X-ray is at most ~4300×4300 ≈ 18 MP).
# Checked from the header before decoding; PIL's own global limit (Image.MAX_IMAGE_PIXELS) is
# left alone because it is shared with the whole process.
MAX_IMAGE_PIXELS = 50_000_000

# Only these PIL decoders are tried. Fewer decoders = less attack surface, and a random file
# is not misread as some exotic format. (Multi-picture JPEGs, "MPO", come in through JPEG.)
PIL_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "TIFF", "GIF", "WEBP", "PPM")

DICOM_SUFFIXES = (".dcm", ".dicom")

# EXIF orientations 5..8 rotate by 90 degrees, so the upright width and height swap.
_EXIF_ORIENTATION_TAG = 0x0112
_ROTATED_ORIENTATIONS = (5, 6, 7, 8)

# PIL modes that carry transparency (P may too: see _to_grey_pil).
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
# PIL modes holding more than 8 bits per pixel (16-bit PNG/TIFF, 32-bit int, float).
_DEEP_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")


class ImageDecodeError(Exception):
    """A file that cannot be turned into an image; `reason` is a short sentence for the user."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def decode_image(path: str, draft_size: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Read one image file as a float32 H×W array in 0..1 and its upright (width, height).

    draft_size: optional speed hint for JPEG only. The JPEG decoder can decode directly at
    1/2, 1/4 or 1/8 scale; it picks the smallest scale that is still at least draft_size on
    both sides, so a later resize to draft_size loses nothing visible. The returned
    (width, height) is always the full original size.
    """
    try:
        if os.path.getsize(path) == 0:
            raise ImageDecodeError("empty file (0 bytes)")
        if _looks_like_dicom(path):
            return _decode_dicom(path)
        return _decode_pil(path, draft_size)
    except ImageDecodeError:
        raise
    except Exception as error:  # any other failure is still just "this file is unusable"
        raise ImageDecodeError(f"cannot read image: {type(error).__name__}: {_one_line(error)}") from error


def resize_to_square(image: np.ndarray, size: int) -> torch.Tensor:
    """H×W float image in 0..1 -> uint8 tensor 1×size×size (direct resize, see module doc).

    PIL's bilinear resize on the float ("F" mode) image: what torchvision's Resize does to
    PIL images, with antialiasing when shrinking. It gives the same result as
    `resize_batch_to_square` below but is several times faster on one large image, and it
    releases the GIL, so the decoding threads really run in parallel.
    """
    grey = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode="F")
    if grey.size != (size, size):
        grey = grey.resize((size, size), Image.Resampling.BILINEAR)
    resized = np.asarray(grey).clip(0, 1) * 255
    return torch.from_numpy(resized.round().astype(np.uint8))[None]


def resize_batch_to_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """Float N×1×H×W in 0..1 -> uint8 N×1×size×size.

    Bilinear with antialiasing, the same as torchvision's Resize((size, size)) on tensors.
    Rounding to uint8 happens only here, at the very end.
    """
    images = images.float()
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


# --- PIL formats ----------------------------------------------------------------------------

def _decode_pil(path: str, draft_size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    try:
        # Image.open only reads the header; pixels are decoded later by load().
        with Image.open(path, formats=_available_formats()) as image:
            # Check the size first: even reading the EXIF of a PNG may decode all its pixels.
            _refuse_if_too_large(*image.size)
            upright_size = _upright_size(image)
            if draft_size and image.format in ("JPEG", "MPO") and image.mode in ("L", "RGB"):
                image.draft("L", (draft_size, draft_size))
            image = ImageOps.exif_transpose(image)  # decodes the pixels
            return _to_grey_array(image), upright_size
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image file (or a format this app cannot read)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # PIL's own limit (raised from Image.open above 2 × Image.MAX_IMAGE_PIXELS, warned above
        # 1 ×, i.e. 179 / 89 MP by default). Ours is lower, so PIL's warning only ever comes
        # with an image refused here anyway; it is an exception only under `-W error`.
        raise ImageDecodeError(f"image too large to decode safely: {_one_line(error)}") from None
    except OSError as error:  # truncated or corrupt pixel data
        raise ImageDecodeError(f"truncated or corrupt image: {_one_line(error)}") from None


def _available_formats() -> list[str]:
    """PIL_FORMATS minus any this Pillow build lacks (asking for a missing one is an error)."""
    Image.init()
    return [name for name in PIL_FORMATS if name in Image.ID]


def _upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) as the image is meant to be seen, i.e. after the EXIF rotation."""
    width, height = image.size
    orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    if orientation in _ROTATED_ORIENTATIONS:
        width, height = height, width
    return width, height


def _refuse_if_too_large(width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageDecodeError(
            f"image too large: {width}×{height} = {width * height / 1e6:.0f} megapixels "
            f"(limit {MAX_IMAGE_PIXELS / 1e6:.0f})"
        )
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image has no pixels ({width}×{height})")


def _to_grey_array(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> float32 H×W in 0..1."""
    if image.mode in _DEEP_MODES:
        return _stretch_to_unit(np.asarray(image))
    grey = _to_grey_pil(image)
    return np.asarray(grey, dtype=np.float32) / 255.0


def _to_grey_pil(image: Image.Image) -> Image.Image:
    """8-bit modes (L, RGB, CMYK, palette, with or without alpha) -> mode L."""
    has_alpha = image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("L")
    if image.mode == "CMYK":
        image = image.convert("RGB")  # PIL has no direct CMYK -> L conversion
    return image.convert("L")  # RGB -> L uses the ITU-R 601 luma weights


def _stretch_to_unit(values: np.ndarray) -> np.ndarray:
    """Map an array's own min..max to 0..1 (keeps every grey level; nothing is clipped)."""
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


# --- DICOM ----------------------------------------------------------------------------------

def _looks_like_dicom(path: str) -> bool:
    """By extension, or by the 'DICM' marker after the 128-byte preamble (PACS exports often
    have no extension at all)."""
    if path.lower().endswith(DICOM_SUFFIXES):
        return True
    with open(path, "rb") as file:
        header = file.read(132)
    return len(header) == 132 and header[128:132] == b"DICM"


def _decode_dicom(path: str) -> tuple[np.ndarray, tuple[int, int]]:
    """DICOM -> grey 0..1 the way a viewer shows it: modality LUT (rescale slope/intercept),
    then the VOI LUT / window the file asks for, then MONOCHROME1 inverted (there 0 = white)."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        dataset = pydicom.dcmread(path)
    except InvalidDicomError as error:
        raise ImageDecodeError(f"not a valid DICOM file: {_one_line(error)}") from None
    if "PixelData" not in dataset:
        raise ImageDecodeError("DICOM file has no image (no Pixel Data element)")
    width, height = int(dataset.Columns), int(dataset.Rows)
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    _refuse_if_too_large(width, height)
    if width * height * frames > MAX_IMAGE_PIXELS:  # pydicom decodes every frame at once
        raise ImageDecodeError(f"DICOM too large: {frames} frames of {width}×{height} pixels")

    pixels = dataset.pixel_array
    if frames > 1:
        pixels = pixels[0]  # multi-frame: the first frame
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if pixels.ndim == 3:  # colour DICOM (RGB after pydicom's YBR conversion): no windowing
        return _to_grey_array(Image.fromarray(pixels.astype(np.uint8)).convert("RGB")), (width, height)

    values = apply_modality_lut(pixels, dataset)
    low, high = _voi_output_range(dataset)
    values = apply_voi_lut(values, dataset)
    if low is None:
        grey = _stretch_to_unit(values)
    else:
        grey = ((values.astype(np.float64) - low) / (high - low)).clip(0, 1).astype(np.float32)
    if photometric == "MONOCHROME1":
        grey = 1.0 - grey
    return grey, (width, height)


def _voi_output_range(dataset) -> tuple[float | None, float | None]:
    """The value range apply_voi_lut maps the window onto, or (None, None) when the file has
    no window (then the image's own min..max is used).

    The window's black and white points are what the radiologist meant the image to look
    like, so they, not the image's own min and max, define 0 and 1.
    """
    from pydicom.pixels import apply_voi_lut

    sequence = dataset.get("VOILUTSequence")
    if sequence and sequence[0].get("LUTDescriptor") and sequence[0].get("LUTData") is not None:
        bits_per_entry = int(sequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits_per_entry - 1)
    if dataset.get("WindowCenter") is not None and dataset.get("WindowWidth") is not None:
        # Ask pydicom where far-below and far-above values land: that is the output range,
        # computed exactly as it computes it (it depends on bits stored, sign and rescale).
        with np.errstate(over="ignore"):  # the SIGMOID window overflows exp() at the extremes
            probe = apply_voi_lut(np.array([-1e30, 1e30]), dataset)
        low, high = float(probe.min()), float(probe.max())
        if high > low:
            return low, high
    return None, None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:200]
