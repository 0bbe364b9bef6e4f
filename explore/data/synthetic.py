"""The built-in synthetic chest X-rays: two hospitals, one disease, many ways to differ.

Why synthetic? The course's lesson is that a classifier scoring ~95% on its own hospital's
images can drop to 70-85% on another hospital's. Real data sets mix many causes at once;
here every cause is a knob you can see and move, and the app works offline.

Each image is a procedurally drawn frontal chest radiograph: body outline and soft tissue,
two dark lung fields, heart and mediastinum, spine, ribs, clavicles and diaphragm domes,
with per-patient variation (size, lung shape, heart size, rotation, depth of breath).
Pneumonia adds opacities inside the lungs: focal lobar consolidation (BACTERIAL) or
diffuse bilateral interstitial shadowing (VIRAL). With two classes (NORMAL, PNEUMONIA)
pneumonia images mix both patterns.

Two sites:
  site A gives train and val; site B gives test.
  Both sites draw patients from the same population. What differs is how the images are
  taken, and every difference is a knob: how far site B is shifted from site A, 0..1
  (0 = site B is indistinguishable from site A):

  exposure      B's exposure and tone curve (brighter, greyer, less contrast)
  noise         B's detector noise
  blur          B's resolution: rendered at a lower native size, then resized, and blurrier
  patient_size  B's patients are smaller in the field (children on an adult protocol)
  positioning   B's patients are off-centre and tilted; the collimator crops the edges
  text_markers  B burns in more text: laterality letters "L"/"R" and "AP"/"PORTABLE" tags

  and one confounder that real data sets have:
  shortcut_fraction  the fraction of site-A PNEUMONIA images (train and val) that carry a
                     bright tag in a corner. NORMAL images and site B never carry it, so a
                     model can score well on val by looking at the corner, then fail on B.

Every image comes with masks (bool N×1×H×W in Split.masks): "lung", "lesion" (the
opacities; empty for NORMAL) and "marker" (burned-in text and tags).

Findings besides pneumonia (multi-task learning; off unless `findings=True`, DataSpec.findings):
  cardiomegaly  an enlarged heart: a wider cardiac silhouette, cardiothoracic ratio > 0.5
  effusion      pleural fluid at one or both lung bases: a homogeneous basal opacity whose upper
                edge rises laterally (the meniscus) and blunts the costophrenic angle
Each is present in FINDING_RATES of the images of every split, independently of pneumonia and of
each other, so one image can have several. They come as Split.findings (N×2, columns
FINDINGS) and masks "heart" (every image's cardiac silhouette), "cardiomegaly" and "effusion"
(empty where the finding is absent). They are drawn from their own random generator: with
findings off, every image is bit-identical to the set without them.

Both sites mark laterality with an "R" on some images (40%); that is not a difference.

Everything is deterministic: one torch.Generator per (seed, site, split), so the same seed
and knobs give bit-identical tensors. Images are drawn in batches with tensor ops
(coordinate grids, low-resolution noise upsampled into smooth fields), not pixel loops.

Measured (seed 0, 128 px, the course CNN hw3_cnn, Adam 1e-3, batch 32, 12 epochs, CPU):
  default knobs            val (site A) 92.8%   test (site B) 74.3%   (epochs 8-12: val 92-94, test 74-78)
  every shift 0, shortcut 0  val 91.0%          test 92.8%            (epochs 8-12: gap <= 2.3 points)
Generating the default set (2,400 images) takes ~7 s at 128 px, ~2 s at 64, ~18 s at 224
and ~23 s at 256 on a shared 2-core VM (`python -c "from explore.data.synthetic import
generate_synthetic as g; g(image_size=128)"`).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .bundle import DataBundle, Split

CLASS_NAMES = {2: ("NORMAL", "PNEUMONIA"), 3: ("NORMAL", "BACTERIAL", "VIRAL")}
SITES = ("A", "B")

# Lesion patterns (what a pneumonia looks like on the film).
NO_LESION, LOBAR, DIFFUSE = 0, 1, 2

# Findings independent of pneumonia (multi-task learning): column order of Split.findings.
FINDINGS = ("cardiomegaly", "effusion")
FINDING_RATES = {"cardiomegaly": 0.3, "effusion": 0.3}


@dataclass(frozen=True)
class Knob:
    """One user-movable setting of the synthetic data (the Data page draws a slider per knob)."""

    name: str
    label: str
    default: float
    min: float
    max: float
    help: str
    integer: bool = False  # counts: the value is rounded to a whole number

    @property
    def step(self) -> float:
        return 1.0 if self.integer else 0.05


KNOBS: dict[str, Knob] = {
    knob.name: knob
    for knob in (
        Knob("exposure", "Exposure / contrast (site B)", 0.2, 0.0, 1.0,
             "How differently site B exposes and processes its films: brighter, greyer, less contrast."),
        Knob("noise", "Detector noise (site B)", 0.35, 0.0, 1.0,
             "Extra grainy noise in site B's images (an older or lower-dose detector)."),
        Knob("blur", "Blur / resolution (site B)", 0.45, 0.0, 1.0,
             "Site B acquires at a lower native resolution (resized up to the same size) and blurrier."),
        Knob("patient_size", "Patient size (site B)", 0.25, 0.0, 1.0,
             "Site B images smaller patients (children): the chest fills less of the image."),
        Knob("positioning", "Positioning and collimation (site B)", 0.3, 0.0, 1.0,
             "Site B's patients are off-centre and tilted, and the collimator crops the edges."),
        Knob("text_markers", "Burned-in text (site B)", 0.45, 0.0, 1.0,
             "How often site B burns in laterality letters and 'AP' / 'PORTABLE' tags."),
        Knob("shortcut_fraction", "Shortcut tag on site-A pneumonia", 0.3, 0.0, 1.0,
             "Fraction of site-A PNEUMONIA images (train and val) with a bright corner tag. "
             "NORMAL images and site B never have it: a shortcut a model can learn instead of the lungs."),
        Knob("n_train", "Training images (site A)", 1600, 10, 10000,
             "Number of site-A training images (classes balanced).", integer=True),
        Knob("n_val", "Validation images (site A)", 400, 10, 5000,
             "Number of site-A validation images (classes balanced).", integer=True),
        Knob("n_test", "Test images (site B)", 400, 10, 5000,
             "Number of site-B test images (classes balanced).", integer=True),
    )
}

# The knobs that make site B differ from site A (all 0: the two sites are the same).
SHIFT_KNOBS = ("exposure", "noise", "blur", "patient_size", "positioning", "text_markers")


def resolve_knobs(**knobs: float) -> dict[str, float]:
    """Defaults overridden by `knobs`; unknown names and out-of-range values raise ValueError."""
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise ValueError(f"unknown synthetic knob(s) {unknown}; valid knobs: {sorted(KNOBS)}")
    values = {}
    for name, knob in KNOBS.items():
        value = float(knobs.get(name, knob.default))
        if knob.integer:
            value = float(round(value))
        if not knob.min <= value <= knob.max:
            raise ValueError(f"synthetic knob {name}={value} is outside [{knob.min}, {knob.max}]")
        values[name] = value
    return values


def no_shift_knobs() -> dict[str, float]:
    """Knob overrides that make the two sites identical (every shift 0, no shortcut)."""
    return {name: 0.0 for name in SHIFT_KNOBS} | {"shortcut_fraction": 0.0}


def same_sites(values: dict[str, float]) -> dict[str, float]:
    """`values` with every shift and the shortcut at 0, the image counts kept (the Data page's 'Sites identical')."""
    return no_shift_knobs() | {name: value for name, value in values.items() if KNOBS[name].integer}


def changed_knobs(values: dict[str, float]) -> dict[str, float]:
    """Only the knobs that differ from their defaults (what a DataSpec stores)."""
    return {name: float(value) for name, value in values.items() if float(value) != KNOBS[name].default}


def slider_label(name: str) -> str:
    """A knob's label under the Data page's 'site B' heading ('Detector noise', not 'Detector noise (site B)')."""
    return KNOBS[name].label.replace(" (site B)", "") if name in SHIFT_KNOBS else KNOBS[name].label


# ----------------------------------------------------------------------------- randomness


def _generator(*parts: object) -> torch.Generator:
    """A generator seeded from e.g. (seed, site, split): independent streams, stable across runs."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _normal(gen: torch.Generator, n: int, std: float) -> torch.Tensor:
    return std * torch.randn(n, generator=gen)


def _balanced_labels(n: int, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """n labels, as close to equal counts per class as n allows, in random order."""
    labels = torch.arange(n) % num_classes
    return labels[torch.randperm(n, generator=gen)]


# ----------------------------------------------------------------------------- patients


def _sample_patients(labels: torch.Tensor, num_classes: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-image anatomy and disease, in patient coordinates (x: -1 image left .. 1 image right,
    y: -1 top .. 1 bottom; the patient's left is on the image's right, as on a real film).

    Independent of the site, so the same patient can be imaged at either site.
    """
    n = len(labels)
    u = lambda low, high: _uniform(gen, n, low, high)  # noqa: E731 (short local helper)
    patient = {
        "body_half_width": u(0.84, 0.96),
        "shoulder_y": u(-0.72, -0.60),  # where the shoulders reach full width
        "lung_center_x": u(0.40, 0.45),
        "lung_half_width": u(0.33, 0.38),
        "lung_apex_y": u(-0.80, -0.70),
        # Depth of breath: deeper inspiration pushes the domes down and the lungs get taller.
        "diaphragm_y": u(0.18, 0.36),  # top of the domes
        "right_dome_lift": u(0.02, 0.07),  # the liver pushes the right dome up a little
        "dome_curvature": u(0.9, 1.4),
        "heart_half_width": u(0.34, 0.42),
        "heart_half_height": u(0.22, 0.27),
        "heart_center_x": u(0.08, 0.14),
        "mediastinum_half_width": u(0.10, 0.13),
        # How the patient stands: a little off-centre, turned and of varying build.
        "rotation": _normal(gen, n, 0.035),  # radians, ~2 degrees
        "pose_x": _normal(gen, n, 0.015),
        "pose_y": _normal(gen, n, 0.015),
        "size": u(0.94, 1.04),
        "rib_phase": u(-0.2, 0.2),
        "rib_thickness": u(0.32, 0.42),  # fraction of the rib spacing
        "tissue": u(0.9, 1.1),  # soft-tissue density (build)
        "breast": torch.where(torch.rand(n, generator=gen) < 0.4, u(0.02, 0.07), torch.zeros(n)),
        "vessel_phase": u(0.0, 2 * math.pi),
        # Smooth random fields sampled in patient coordinates (so they move with the patient):
        # coarse channels: lung texture, lesion outline warp, diffuse pattern, vessel wobble.
        "coarse_noise": torch.randn(n, 4, 6, 6, generator=gen),
        # fine channels: reticular (interstitial) texture, fine lung mottle.
        "fine_noise": torch.randn(n, 2, 24, 24, generator=gen),
    }
    patient.update(_sample_lesions(labels, num_classes, patient, gen))
    return patient


def _sample_lesions(labels, num_classes, patient, gen) -> dict[str, torch.Tensor]:
    """Where and how strong the opacities are. Every image draws the same numbers (so the
    random stream does not depend on the labels' order); NORMAL images get amplitude 0."""
    n = len(labels)
    u = lambda low, high: _uniform(gen, n, low, high)  # noqa: E731
    if num_classes == 3:
        kind = labels.clone()  # 1 BACTERIAL -> LOBAR, 2 VIRAL -> DIFFUSE
    else:
        pattern = torch.where(torch.rand(n, generator=gen) < 0.5, LOBAR, DIFFUSE)
        kind = torch.where(labels == 1, pattern, NO_LESION)
    side = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    # Lobar consolidation: one blob, more often in the lower zones.
    zone = torch.rand(n, generator=gen) ** 0.7
    top, bottom = patient["lung_apex_y"] + 0.25, patient["diaphragm_y"] + 0.05
    # 0 subtle .. 1 obvious: the main source of difficulty. Most cases are clearly visible,
    # a few are faint (as in real data, where some positives are hard even for experts).
    severity = u(0.0, 1.0) ** 0.5
    return {
        "lesion_kind": kind,
        "lesion_x": side * (patient["lung_center_x"] + u(-0.10, 0.08)),
        "lesion_y": top + (bottom - top) * zone,
        "lesion_rx": u(0.13, 0.25),
        "lesion_ry": u(0.12, 0.25),
        "lesion_severity": severity,
        "lesion_coverage": u(-0.2, 0.7),  # diffuse: how much of the lungs is involved
    }


def _sample_findings(n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Cardiomegaly and pleural effusion, each present with its FINDING_RATES, independently of the
    pneumonia label and of each other. `gen` is the findings' own generator (see module docstring)."""
    u = lambda low, high: _uniform(gen, n, low, high)  # noqa: E731
    has = {name: torch.rand(n, generator=gen) < FINDING_RATES[name] for name in FINDINGS}
    one = torch.ones(n)
    side = torch.rand(n, generator=gen)  # effusion: patient's right (image left), left, or both bases
    return {
        "finding_cardiomegaly": has["cardiomegaly"].float(),
        "finding_effusion": has["effusion"].float(),
        # The enlarged heart is mostly wider (to the patient's left), a little taller.
        "heart_enlarge_x": torch.where(has["cardiomegaly"], u(1.35, 1.6), one),
        "heart_enlarge_y": torch.where(has["cardiomegaly"], u(1.05, 1.15), one),
        "effusion_side": torch.where(side < 0.4, -1.0, torch.where(side < 0.8, 1.0, 0.0)),
        "effusion_height": torch.where(has["effusion"], u(0.20, 0.40), torch.zeros(n)),  # above the dome
        "effusion_meniscus": u(0.10, 0.20),  # how much higher the fluid climbs at the chest wall
    }


# ----------------------------------------------------------------------------- sites


def _sample_acquisition(labels: torch.Tensor, site: str, knobs: dict[str, float],
                        gen: torch.Generator) -> dict[str, torch.Tensor]:
    """How each image is taken at `site`: positioning, exposure, noise, blur, markers.

    Site A uses every shift knob at 0; site B uses the knobs. Both draw the same random
    numbers, so with all knobs at 0 the two sites are statistically identical.
    """
    n = len(labels)
    shift = {k: (knobs[k] if site == "B" else 0.0) for k in SHIFT_KNOBS}
    size, pos, expo = shift["patient_size"], shift["positioning"], shift["exposure"]
    u = lambda low, high: _uniform(gen, n, low, high)  # noqa: E731
    acquisition = {
        # Field of view: a smaller patient fills less of the image.
        "field_scale": 1.0 - size * u(0.10, 0.32),
        "heart_scale": torch.full((n,), 1.0 + 0.10 * size),  # children's hearts are relatively larger
        "offset_x": _normal(gen, n, 0.10 * pos),
        "offset_y": _normal(gen, n, 0.08 * pos) + 0.04 * pos,
        "tilt": _normal(gen, n, 0.09 * pos),  # radians
        "collimation": torch.rand(n, 4, generator=gen) * 0.16 * pos,  # left, right, top, bottom
        # Tone curve: displayed = brightness + contrast * raw ** gamma.
        "gamma": (1.0 - 0.22 * expo) * torch.exp(_normal(gen, n, 0.05)),
        "contrast": (1.0 - 0.15 * expo) * torch.exp(_normal(gen, n, 0.04)),
        "brightness": 0.05 * expo + _normal(gen, n, 0.02),
        "noise_std": (0.012 + 0.05 * shift["noise"]) * u(0.8, 1.2),
        "blur_px": (0.4 + 1.4 * shift["blur"]) * u(0.9, 1.1),  # gaussian sigma in output pixels
    }
    acquisition.update(_sample_markers(labels, site, shift["text_markers"], knobs["shortcut_fraction"], gen))
    return acquisition


def _native_size(site: str, knobs: dict[str, float], image_size: int) -> int:
    """The resolution a site's detector delivers before resizing: site B's is lower with blur."""
    if site == "B":
        return max(16, round(image_size * (1.0 - 0.5 * knobs["blur"])))
    return image_size


def _sample_markers(labels, site, text_shift, shortcut_fraction, gen) -> dict[str, torch.Tensor]:
    """Burned-in text. Both sites sometimes mark laterality with an "R"; site B adds "L"
    letters and "AP"/"PORTABLE" tags as `text_shift` grows. The shortcut tag is site A only."""
    n = len(labels)
    draw = lambda: torch.rand(n, generator=gen)  # noqa: E731
    has_letter = draw() < 0.4 + 0.6 * text_shift
    letter_is_l = draw() < 0.5 * text_shift
    has_tag = draw() < text_shift
    tag_is_portable = draw() < 0.5
    tag_at_bottom = draw() < 0.5
    shortcut = draw() < shortcut_fraction
    jitter = torch.rand(n, 4, generator=gen)
    if site != "A":
        shortcut = torch.zeros(n, dtype=torch.bool)
    return {
        "has_letter": has_letter,
        "letter_is_l": letter_is_l,
        "has_tag": has_tag,
        "tag_is_portable": tag_is_portable,
        "tag_at_bottom": tag_at_bottom,
        "marker_scale": torch.full((n,), 1.0 + text_shift),
        "has_shortcut": shortcut & (labels != 0),
        "marker_jitter": jitter,
    }


# ----------------------------------------------------------------------------- drawing


def _inside(distance: torch.Tensor, edge: float | torch.Tensor) -> torch.Tensor:
    """Soft indicator of `distance < 0`: 1 inside, 0 outside, a linear ramp `edge` wide
    across the boundary (anti-aliasing: edge pixels get partial values)."""
    return (0.5 - distance / edge).clamp_(0.0, 1.0)


def _ellipse(x, y, cx, cy, rx, ry) -> torch.Tensor:
    """Approximate signed distance to an ellipse (negative inside)."""
    r = torch.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + 1e-12)
    return (r - 1.0) * torch.minimum(torch.as_tensor(rx), torch.as_tensor(ry))


def _col(t: torch.Tensor) -> torch.Tensor:
    """Per-image values (N,) -> (N, 1, 1) so they broadcast over the pixels."""
    return t.reshape(-1, 1, 1)


def _patient_coordinates(size: int, acq: dict):
    """Image pixel grid -> patient coordinates, undoing each image's offset, tilt and scale."""
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    u, v = axis.reshape(1, 1, size), axis.reshape(1, size, 1)
    cos, sin = torch.cos(_col(acq["angle"])), torch.sin(_col(acq["angle"]))
    du, dv = u - _col(acq["offset_x"]), v - _col(acq["offset_y"])
    scale = _col(acq["scale"])
    x = (cos * du + sin * dv) / scale
    y = (-sin * du + cos * dv) / scale
    return x, y


def _sample_fields(field: torch.Tensor, acq: dict, size: int, reduction: int) -> torch.Tensor:
    """Smooth random fields (N×C×k×k) evaluated at each image's patient coordinates -> N×C×S×S.

    The fields are smooth, so they are sampled on a grid `reduction` times coarser and then
    upsampled: the same picture for a fraction of the cost.
    """
    low = max(8, size // reduction)
    x, y = _patient_coordinates(low, acq)
    sampled = F.grid_sample(field, torch.stack((x, y), dim=-1), mode="bicubic", padding_mode="border",
                            align_corners=False)
    return F.interpolate(sampled, size=(size, size), mode="bilinear", align_corners=False)


def _draw_anatomy(p: dict, acq: dict, x: torch.Tensor, y: torch.Tensor, edge: torch.Tensor):
    """Brightness of the raw radiograph (0 air .. 1 dense bone) and the lung and lesion fields.

    x, y: N×H×W patient coordinates of every pixel; edge: N×1×1, one pixel in those units.
    """
    c = {k: _col(v) for k, v in p.items() if v.ndim == 1}
    coarse = _sample_fields(p["coarse_noise"], acq, x.shape[-1], reduction=4)
    fine = _sample_fields(p["fine_noise"], acq, x.shape[-1], reduction=2)
    ax = x.abs()

    # Edges in a radiograph are soft (organs are rounded in depth): each boundary gets its
    # own width in patient units, but never less than a pixel (anti-aliasing).
    def soft(width: float) -> torch.Tensor:
        return torch.clamp(edge, min=width)

    body, depth = _body(c, x, y, ax, soft)
    below_dome, dome_top = _domes(c, x, y, ax, soft)
    heart, heart_thickness, mediastinum, heart_top, knob_y = _heart_and_mediastinum(c, acq, x, y, ax, soft)
    central = torch.maximum(heart, mediastinum)
    lung = _lung_fields(c, y, ax, soft) * (1.0 - central) * (1.0 - below_dome) * body
    findings = {}
    aerated = lung  # the air-filled lung; with findings off this is the lung itself (bit-identical images)
    if "effusion_height" in c:
        fluid = _effusion(c, x, y, ax, dome_top, soft) * lung
        aerated = lung * (1.0 - fluid)
        findings = {"heart": heart * body, "effusion": fluid}

    # Soft tissue is thicker in the middle of the body than at its edges.
    image = body * c["tissue"] * (0.30 + 0.38 * depth)
    # Air is dark; lungs are darkest where they are thickest (mid and lower zones).
    lung_depth = (1.0 - ((ax - c["lung_center_x"]) / c["lung_half_width"]) ** 2).clamp(0.0, 1.0)
    lung_depth = lung_depth * (0.6 + 0.4 * ((y - c["lung_apex_y"]) / 0.6).clamp(0.0, 1.0))
    image = image - aerated * (0.22 + 0.16 * lung_depth + 0.025 * coarse[:, 0])
    # Heart and abdomen have the same density, so the heart's lower border disappears into
    # the domes (as on a real film). The heart is thickest, so brightest, in its middle.
    heart_density = torch.maximum(heart * heart_thickness, 0.85 * mediastinum)
    image = image + body * torch.maximum(0.20 * heart_density, 0.17 * below_dome)
    image, spacing = _stomach_breasts_spine_trachea(image, c, x, y, ax, soft, body, dome_top, knob_y,
                                                    torch.maximum(central, below_dome))

    # Ribs and clavicles: bone, bright over the dark lungs and fainter over soft tissue.
    image = image + _ribs(c, y, ax, spacing, soft(0.015)) * (0.45 + 0.55 * aerated) * body
    image = image + _clavicles(c, y, ax, soft(0.015)) * body * 0.20

    # Lung markings: vessels fanning out from each hilum, and a fine mottle.
    image = image + _vessels(c, x, y, coarse, fine, heart_top) * aerated
    image = image + 0.02 * fine[:, 1] * aerated

    lesion = _lesion_field(p, c, x, y, coarse, fine) * aerated
    image = image + lesion
    if findings:  # the fluid is homogeneous and as dense as the abdomen under the dome
        image = image + 0.17 * findings["effusion"] * body
    return image, lung, lesion, findings


def _stomach_breasts_spine_trachea(image, c, x, y, ax, soft, body, dome_top, knob_y, dense_middle):
    """The soft-tissue and midline details drawn over the torso, in the order that keeps images bit-identical.
    Returns the image and the vertebral spacing (the ribs use it)."""
    # The gas bubble in the stomach, under the left dome.
    stomach = _ellipse(x, y, c["lung_center_x"] + 0.06, dome_top + 0.20, 0.10, 0.06)
    image = image - 0.10 * _inside(stomach, soft(0.05))
    # Breast shadows: a normal soft-tissue variant over the lower zones.
    breast = _inside(_ellipse(ax, y, c["lung_center_x"] + 0.12, c["diaphragm_y"] + 0.05, 0.32, 0.26), 0.08)
    image = image + c["breast"] * breast * body
    # Spine: vertebral bodies with darker disc spaces, seen through the mediastinum and the domes.
    spine = _inside(ax - 0.075, soft(0.02)) * body
    spacing = (c["diaphragm_y"] - c["lung_apex_y"]) / 8.0
    disc = _inside(-torch.cos(2 * math.pi * (y - c["lung_apex_y"]) / (spacing * 0.9)) + 0.8, 0.1)
    image = image + spine * (0.06 - 0.025 * disc) * dense_middle
    # Trachea: a dark air column down the middle to the carina.
    trachea = _inside(ax - 0.04, soft(0.03)) * _inside(y - knob_y, soft(0.06))
    return image - trachea * 0.07, spacing


def _body(c, x, y, ax, soft):
    """The torso (sides straight down, shoulders rounding off into the neck) and its depth:
    1 along the midline, 0 at the skin edge."""
    rise = ((c["shoulder_y"] - y) / (c["shoulder_y"] + 1.1)).clamp(0.0, 1.0)
    body_width = 0.22 + (c["body_half_width"] - 0.22) * torch.sqrt(1.0 - rise**4)
    body = _inside(ax - body_width, soft(0.03))
    depth = torch.sqrt((1.0 - (x / body_width) ** 2).clamp(min=0.0))
    return body, depth


def _domes(c, x, y, ax, soft):
    """Diaphragm domes, highest under the middle of each lung (the right one a little higher,
    pushed up by the liver). Returns the region below them (the abdomen) and the dome tops."""
    dome_top = c["diaphragm_y"] - torch.where(x < 0, c["right_dome_lift"], torch.zeros_like(x))
    dome_y = dome_top + c["dome_curvature"] * (ax - c["lung_center_x"] + 0.05) ** 2
    return _inside(dome_y - y, soft(0.03)), dome_top


def _heart_and_mediastinum(c, acq, x, y, ax, soft):
    """The heart (bulging to the patient's left = the image's right) with its relative
    thickness, the mediastinum with the aortic knob, the heart's top and the knob's level."""
    heart_scale = _col(acq["heart_scale"])
    heart_rx, heart_ry = c["heart_half_width"] * heart_scale, c["heart_half_height"] * heart_scale
    heart_cx = c["heart_center_x"]
    if "heart_enlarge_x" in c:  # cardiomegaly (findings on): wider, growing towards the patient's left
        enlarged_rx = heart_rx * c["heart_enlarge_x"]
        heart_cx = heart_cx + 0.6 * (enlarged_rx - heart_rx)
        heart_rx, heart_ry = enlarged_rx, heart_ry * c["heart_enlarge_y"]
    heart_cy = c["diaphragm_y"] + 0.12 - 0.75 * heart_ry
    # The heart's long axis runs from the patient's right shoulder to the left hip.
    tilt_cos, tilt_sin = math.cos(0.45), math.sin(0.45)
    hx, hy = x - heart_cx, y - heart_cy
    heart_r = torch.sqrt(((tilt_cos * hx + tilt_sin * hy) / heart_rx) ** 2
                         + ((-tilt_sin * hx + tilt_cos * hy) / heart_ry) ** 2)
    heart = _inside((heart_r - 1.0) * heart_ry, soft(0.06))
    thickness = 0.75 + 0.25 * (1 - heart_r**2).clamp(min=0.0).sqrt()
    knob_y = heart_cy - heart_ry - 0.08
    mediastinum = _inside(ax - c["mediastinum_half_width"] - 0.04 * (y + 1.0), soft(0.04))
    aortic_knob = _inside(_ellipse(x, y, c["mediastinum_half_width"] + 0.01, knob_y, 0.08, 0.07), soft(0.04))
    return heart, thickness, torch.maximum(mediastinum, aortic_knob), heart_cy - heart_ry, knob_y


def _effusion(c, x, y, ax, dome_top, soft):
    """Pleural fluid (0 where absent): everything below a level `effusion_height` above the dome,
    on the chosen side(s). The level climbs towards the chest wall (the meniscus), so the fluid
    fills the lateral costophrenic angle first and blunts it."""
    side = c["effusion_side"]
    on_side = torch.where(side == 0, torch.ones_like(x), (torch.sign(x) == side).float())
    lateral = ((ax - c["lung_center_x"] + c["lung_half_width"]) / (2 * c["lung_half_width"])).clamp(0.0, 1.0)
    level = dome_top - c["effusion_height"] - c["effusion_meniscus"] * lateral**2
    return _inside(level - y, soft(0.02)) * on_side * (c["effusion_height"] > 0).float()


def _lung_fields(c, y, ax, soft):
    """Both lungs as tall ellipses, narrower towards the apex. The caller cuts them with the
    heart, mediastinum and domes; the domes' cut makes the sharp costophrenic angles."""
    lung_ry = 0.95
    lung_cy = c["lung_apex_y"] + lung_ry
    lung_rx = c["lung_half_width"] * (1.0 - 0.30 * ((lung_cy - 0.35 - y) / lung_ry).clamp(0.0, 1.0))
    return _inside(_ellipse(ax, y, c["lung_center_x"], lung_cy, lung_rx, lung_ry), soft(0.03))


def _ribs(c, y, ax, spacing, edge):
    """Posterior ribs (bright bands, brighter at their cortical edges) and faint anterior ribs."""
    # Each rib rises a little from the spine, then curves down towards the side.
    curve = 0.45 * ax**2 + 0.5 * (ax - 0.45).clamp(min=0.0) ** 2 - 0.12 * ax
    phase = (y - c["lung_apex_y"] + 0.06 - curve) / spacing + c["rib_phase"]
    offset = torch.remainder(phase, 1.0) - 0.5  # -0.5..0.5 around each rib's centre line
    half = c["rib_thickness"] / 2
    edge_phase = edge / spacing
    band = _inside(offset.abs() - half, edge_phase)
    cortex = _inside((offset.abs() - half).abs() - 0.07, edge_phase) * band
    in_range = _inside(-phase, 0.2) * _inside(phase - 10.5, 0.2)  # about ten ribs per side
    lateral = _inside(0.07 - ax, edge) * _inside(ax - 0.95 * c["body_half_width"], 0.04)
    posterior = (0.5 * band + 0.5 * cortex) * in_range * lateral
    # Anterior ribs slope down towards the middle and fade out medially (their cartilage
    # does not show on X-ray).
    phase_a = (y - c["lung_apex_y"] - 0.05 + 0.35 * ax) / (spacing * 1.25)
    offset_a = torch.remainder(phase_a, 1.0) - 0.5
    band_a = _inside(offset_a.abs() - 0.16, edge_phase) * _inside(0.28 - ax, 0.06)
    band_a = band_a * _inside(-phase_a + 0.5, 0.2) * _inside(phase_a - 6.5, 0.2)
    return 0.10 * posterior + 0.04 * band_a


def _clavicles(c, y, ax, edge):
    """Two clavicles from the top of the sternum out and up to the shoulders (an S-shaped bar)."""
    start_y = c["lung_apex_y"] + 0.14
    centre = start_y - 0.30 * (ax - 0.06) + 0.04 * torch.sin(2 * math.pi * (ax - 0.06) / 0.65)
    return _inside((y - centre).abs() - 0.03, edge) * _inside(0.06 - ax, edge) * _inside(ax - 0.72, edge)


def _vessels(c, x, y, coarse, fine, hilum_top):
    """The hila and the branching vessel markings that fan out from them and fade to the edges."""
    side_sign = torch.where(x < 0, -1.0, 1.0)
    hilum_x = side_sign * (c["mediastinum_half_width"] + 0.10)
    hilum_y = hilum_top + 0.08
    dx, dy = (x - hilum_x) * side_sign, y - hilum_y
    radius = torch.sqrt(dx**2 + dy**2 + 1e-6)
    angle = torch.atan2(dy, dx)
    wobble = 2.0 * coarse[:, 3] + 0.4 * fine[:, 1]
    rays = torch.cos(9 * angle + c["vessel_phase"] + wobble).clamp(min=0.0) ** 8
    markings = 0.10 * rays * torch.exp(-radius / 0.30) * (0.6 + 0.4 * fine[:, 0].clamp(-1, 1))
    hilum = 0.08 * torch.exp(-(radius / 0.12) ** 2)
    return markings + hilum


def _lesion_field(p, c, x, y, coarse, fine):
    """Added opacity from pneumonia (0 for NORMAL): each image gets its own pattern."""
    kind = p["lesion_kind"]
    opacity = torch.zeros_like(x)
    for pattern, draw in ((LOBAR, _lobar_opacity), (DIFFUSE, _diffuse_opacity)):
        pick = kind == pattern
        if pick.any():
            chosen = {k: v[pick] for k, v in c.items()}
            opacity[pick] = draw(chosen, x[pick], y[pick], coarse[pick], fine[pick])
    return opacity


def _lobar_opacity(c, x, y, coarse, fine):
    """Lobar consolidation: one irregular blob with a fuzzy margin, in one lung."""
    warp = 0.25 * coarse[:, 1]
    distance = torch.sqrt(((x - c["lesion_x"]) / c["lesion_rx"]) ** 2
                          + ((y - c["lesion_y"]) / c["lesion_ry"]) ** 2) + warp
    return torch.sigmoid((1.0 - distance) / 0.18) * (0.08 + 0.30 * c["lesion_severity"])


def _diffuse_opacity(c, x, y, coarse, fine):
    """Interstitial pneumonia: patches in both lungs, mostly around the hila and in the lower
    zones, from a smooth random field, with a fine reticular texture on top."""
    zone = torch.exp(-((x.abs() - 0.3) ** 2) / 0.08) * (0.6 + 0.4 * (y + 1.0) / 2)
    patches = torch.sigmoid((coarse[:, 2] + c["lesion_coverage"] * 2.0) / 0.5) * zone
    texture = 0.7 + 0.3 * fine[:, 0]
    return patches * texture * (0.07 + 0.27 * c["lesion_severity"])


def _gaussian_blur(images: torch.Tensor, sigma_px: torch.Tensor) -> torch.Tensor:
    """Per-image gaussian blur (N×H×W) as a separable sum of shifted copies (deterministic)."""
    radius = max(1, int(math.ceil(2.5 * float(sigma_px.max()))))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    weights = torch.exp(-0.5 * (offsets.reshape(1, -1) / sigma_px.reshape(-1, 1)) ** 2)
    weights = weights / weights.sum(dim=1, keepdim=True)  # N × taps
    for dim in (1, 2):
        padded = F.pad(images.unsqueeze(1), (radius, radius, 0, 0) if dim == 2 else (0, 0, radius, radius),
                       mode="replicate").squeeze(1)
        out = torch.zeros_like(images)
        length = images.shape[dim]
        for tap in range(2 * radius + 1):
            out += weights[:, tap].reshape(-1, 1, 1) * padded.narrow(dim, tap, length)
        images = out
    return images


def _expose(raw: torch.Tensor, acq: dict, size: int, gen: torch.Generator) -> torch.Tensor:
    """Raw brightness -> the site's processed image: tone curve, blur, noise, collimation."""
    image = raw.clamp(0.0, 1.0)
    image = _col(acq["brightness"]) + _col(acq["contrast"]) * image ** _col(acq["gamma"])
    image = _gaussian_blur(image, acq["blur_px"] * size / acq["output_size"])
    image = image + _col(acq["noise_std"]) * torch.randn(image.shape, generator=gen)
    # Collimator shutters: unexposed film at the edges stays bright.
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    shutter = acq["collimation"]
    outside = ((axis.reshape(1, 1, -1) < shutter[:, 0].reshape(-1, 1, 1))
               | (axis.reshape(1, 1, -1) > 1 - shutter[:, 1].reshape(-1, 1, 1))
               | (axis.reshape(1, -1, 1) < shutter[:, 2].reshape(-1, 1, 1))
               | (axis.reshape(1, -1, 1) > 1 - shutter[:, 3].reshape(-1, 1, 1)))
    return torch.where(outside, torch.full_like(image, 0.82), image)


# ----------------------------------------------------------------------------- text markers

# A 5×7 bitmap font for the few letters the markers need.
_FONT = {
    "A": ["01110", "10001", "10001", "11111", "10001", "10001", "10001"],
    "B": ["11110", "10001", "10001", "11110", "10001", "10001", "11110"],
    "E": ["11111", "10000", "10000", "11110", "10000", "10000", "11111"],
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "O": ["01110", "10001", "10001", "10001", "10001", "10001", "01110"],
    "P": ["11110", "10001", "10001", "11110", "10000", "10000", "10000"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
    "T": ["11111", "00100", "00100", "00100", "00100", "00100", "00100"],
}


def _text_bitmap(text: str, pixel: int) -> torch.Tensor:
    """bool (7·pixel)×(6·len-1)·pixel bitmap of `text`, each font dot pixel×pixel."""
    columns = []
    for i, char in enumerate(text):
        if i:
            columns.append(torch.zeros(7, 1, dtype=torch.bool))
        columns.append(torch.tensor([[bit == "1" for bit in row] for row in _FONT[char]]))
    bitmap = torch.cat(columns, dim=1)
    return bitmap.repeat_interleave(pixel, 0).repeat_interleave(pixel, 1)


def _stamp(image: torch.Tensor, mask: torch.Tensor, bitmap: torch.Tensor, top: int, left: int, value: float):
    """Burn `bitmap` into one H×W image at (top, left), clipped to the image."""
    size = image.shape[-1]
    top, left = max(0, min(top, size - 1)), max(0, min(left, size - 1))
    h, w = min(bitmap.shape[0], size - top), min(bitmap.shape[1], size - left)
    region = bitmap[:h, :w]
    image[top:top + h, left:left + w][region] = value
    mask[top:top + h, left:left + w] |= region


def _burn_markers(images: torch.Tensor, acq: dict) -> torch.Tensor:
    """Draw the laterality letters, the AP/PORTABLE tags and the shortcut tags; return their mask."""
    n, size = images.shape[0], images.shape[-1]
    marks = torch.zeros(images.shape, dtype=torch.bool)
    margin = max(1, round(size * 0.04))
    for i in range(n):
        jitter = acq["marker_jitter"][i]
        pixel = max(1, round(size / 128 * float(acq["marker_scale"][i])))
        if acq["has_letter"][i]:
            letter = _text_bitmap("L" if acq["letter_is_l"][i] else "R", pixel)
            left = margin + int(jitter[0] * size * 0.1)
            if acq["letter_is_l"][i]:  # the "L" goes on the patient's left: the image's right
                left = size - left - letter.shape[1]
            _stamp(images[i], marks[i], letter, margin + int(jitter[1] * size * 0.1), left, 0.97)
        if acq["has_tag"][i]:
            tag = _text_bitmap("PORTABLE" if acq["tag_is_portable"][i] else "AP", pixel)
            top = size - margin - tag.shape[0] if acq["tag_at_bottom"][i] else margin
            left = size - margin - tag.shape[1] - int(jitter[2] * size * 0.05)
            if not acq["tag_at_bottom"][i]:
                left = (size - tag.shape[1]) // 2
            _stamp(images[i], marks[i], tag, top, left, 0.95)
        if acq["has_shortcut"][i]:
            # The confounder: a solid box in the lower-right corner, burned in at full white
            # (255, a touch brighter than the text, so tests can tell the two apart).
            box = max(3, round(size * 0.07))
            square = torch.ones(box, box, dtype=torch.bool)
            top = size - margin - box - int(jitter[3] * size * 0.04)
            left = size - margin - box - int(jitter[2] * size * 0.04)
            _stamp(images[i], marks[i], square, top, left, 1.0)
    return marks


# ----------------------------------------------------------------------------- rendering


@contextlib.contextmanager
def _one_thread():
    """Draw on one CPU thread, then restore the caller's setting.

    The drawing is thousands of quick elementwise ops; on a small, busy machine torch's
    worker threads spend more time waiting for each other than working (measured on a
    2-core VM shared with another job: 7 s on one thread, 90 s on two). With torch's
    OpenMP backend the setting belongs to the calling thread, so a training loop running
    in another thread keeps its threads.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _chunk_size(native_size: int) -> int:
    """Images per batch: about 1 M pixels (fits the CPU caches better than bigger batches)."""
    return max(8, (1 << 20) // (native_size * native_size))


def _render(patients: dict, acq: dict, native_size: int, image_size: int, gen: torch.Generator):
    """Draw every image (in chunks) -> uint8 images and bool masks, N×1×S×S."""
    n = len(acq["tilt"])
    # Where the patient lands in the image: their own pose plus the site's positioning.
    acq = dict(acq, output_size=image_size,
               angle=patients["rotation"] + acq["tilt"],
               offset_x=patients["pose_x"] + acq["offset_x"],
               offset_y=patients["pose_y"] + acq["offset_y"],
               scale=patients["size"] * acq["field_scale"])
    images = torch.empty(n, 1, image_size, image_size, dtype=torch.uint8)
    lung_mask = torch.empty(n, 1, image_size, image_size, dtype=torch.bool)
    lesion_mask = torch.empty_like(lung_mask)
    marker_mask = torch.empty_like(lung_mask)
    finding_masks: dict[str, torch.Tensor] = {}
    step = _chunk_size(native_size)
    for start in range(0, n, step):
        part = slice(start, min(n, start + step))
        p = {k: v[part] for k, v in patients.items()}
        a = {k: (v[part] if torch.is_tensor(v) and v.ndim >= 1 else v) for k, v in acq.items()}
        x, y = _patient_coordinates(native_size, a)
        edge = 1.2 * (2.0 / native_size) / _col(a["scale"])  # about one pixel, in patient units
        raw, lung, lesion, findings = _draw_anatomy(p, a, x, y, edge)
        image = _expose(raw, a, native_size, gen)
        masks = torch.stack((lung > 0.5, (lesion > 0.02) & (lung > 0.5))
                            + tuple(field > 0.5 for field in findings.values()), dim=1)
        if native_size != image_size:  # site B's lower-resolution detector, resized like any input
            image = F.interpolate(image.unsqueeze(1), size=(image_size, image_size), mode="bilinear",
                                  align_corners=False).squeeze(1)
            masks = F.interpolate(masks.float(), size=(image_size, image_size), mode="nearest") > 0.5
        marker_mask[part, 0] = _burn_markers(image, a)
        images[part, 0] = (image.clamp(0.0, 1.0) * 255).round().to(torch.uint8)
        lung_mask[part, 0], lesion_mask[part, 0] = masks[:, 0], masks[:, 1]
        for i, name in enumerate(findings):
            finding_masks.setdefault(name, torch.zeros_like(lung_mask))[part, 0] = masks[:, 2 + i]
    return images, {"lung": lung_mask, "lesion": lesion_mask, "marker": marker_mask} | _finding_masks(
        finding_masks, patients)


def _finding_masks(drawn: dict[str, torch.Tensor], patients: dict) -> dict[str, torch.Tensor]:
    """"heart" on every image; "cardiomegaly" and "effusion" only where the finding is present."""
    if not drawn:
        return {}
    has_cardiomegaly = patients["finding_cardiomegaly"].bool().reshape(-1, 1, 1, 1)
    return {"heart": drawn["heart"], "cardiomegaly": drawn["heart"] & has_cardiomegaly,
            "effusion": drawn["effusion"]}


def _render_split(split: str, site: str, count: int, image_size: int, seed: int, num_classes: int,
                  knobs: dict[str, float], findings: bool = False) -> Split:
    gen = _generator("synthetic", seed, site, split)
    labels = _balanced_labels(count, num_classes, gen)
    patients = _sample_patients(labels, num_classes, gen)
    if findings:  # their own generator: the pneumonia set's random stream stays exactly as without them
        patients.update(_sample_findings(count, _generator("synthetic-findings", seed, site, split)))
    acquisition = _sample_acquisition(labels, site, knobs, gen)
    native_size = _native_size(site, knobs, image_size)
    images, masks = _render(patients, acquisition, native_size, image_size, gen)
    return Split(
        images=images,
        labels=labels.long(),
        sites=(site,) * count,
        ids=tuple(f"synthetic/{site}/{split}/{i:05d}" for i in range(count)),
        original_sizes=torch.full((count, 2), native_size, dtype=torch.long),  # (width, height)
        masks=masks,
        findings=torch.stack([patients[f"finding_{name}"] for name in FINDINGS], dim=1) if findings else None,
    )


def generate_synthetic(image_size: int = 128, seed: int = 0, num_classes: int = 2, findings: bool = False,
                       **knobs: float) -> DataBundle:
    """The two-site synthetic chest X-ray set: train/val from site A, test from site B.

    `knobs` override the defaults in KNOBS (ValueError for unknown names). `findings` adds
    cardiomegaly and pleural effusion (Split.findings, DataBundle.finding_names). Deterministic:
    the same arguments give bit-identical tensors.
    """
    if num_classes not in CLASS_NAMES:
        raise ValueError(f"num_classes must be 2 or 3, got {num_classes}")
    settings = resolve_knobs(**knobs)
    plan = (("train", "A", "n_train"), ("val", "A", "n_val"), ("test", "B", "n_test"))
    with _one_thread():
        splits = {
            split: _render_split(split, site, int(settings[count]), image_size, seed, num_classes, settings,
                                 findings)
            for split, site, count in plan
        }
    changed = {k: v for k, v in settings.items() if v != KNOBS[k].default}
    return DataBundle(
        source="synthetic",
        image_size=image_size,
        classes=CLASS_NAMES[num_classes],
        splits=splits,
        description=("Synthetic chest X-rays: train/val from site A, test from site B. "
                     f"Knobs changed from the defaults: {changed or 'none'}."
                     + (f" Findings besides pneumonia: {', '.join(FINDINGS)}." if findings else "")),
        finding_names=FINDINGS if findings else (),
    )


def render_patient_at_sites(image_size: int = 128, seed: int = 0, patient: int = 0, label: int = 1,
                            num_classes: int = 2, **knobs: float) -> dict[str, dict[str, torch.Tensor]]:
    """One patient (same anatomy, same lesion) imaged at site A and at site B.

    Returns {"A": {"image": uint8 H×W, "lung": bool H×W, "lesion": ..., "marker": ...}, "B": {...}}
    for the Data page's live preview. `label` indexes CLASS_NAMES[num_classes]: with 2
    classes 1 is PNEUMONIA (either pattern); with 3, 1 is BACTERIAL and 2 VIRAL.
    """
    if num_classes not in CLASS_NAMES:
        raise ValueError(f"num_classes must be 2 or 3, got {num_classes}")
    if not 0 <= label < num_classes:
        raise ValueError(f"label must index {CLASS_NAMES[num_classes]}, got {label}")
    settings = resolve_knobs(**knobs)
    labels = torch.tensor([label])
    patients = _sample_patients(labels, num_classes, _generator("synthetic-preview", seed, patient, label))
    views = {}
    with _one_thread():
        for site in SITES:
            gen = _generator("synthetic-preview", seed, patient, label, site)
            acquisition = _sample_acquisition(labels, site, settings, gen)
            native_size = _native_size(site, settings, image_size)
            images, masks = _render(patients, acquisition, native_size, image_size, gen)
            views[site] = {"image": images[0, 0]} | {name: mask[0, 0] for name, mask in masks.items()}
    return views
