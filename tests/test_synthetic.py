"""The built-in synthetic two-site chest X-ray set (explore/data/synthetic.py).

Small images (64 px) and small splits keep these fast; each check is about a property a
student relies on: determinism, masks that mean what they say, and site differences that
exist exactly when the knobs say so.
"""
from __future__ import annotations

import pytest
import torch

from explore.data import DataSpec, load_bundle
from explore.data.synthetic import (
    KNOBS,
    SHIFT_KNOBS,
    generate_synthetic,
    no_shift_knobs,
    render_patient_at_sites,
    resolve_knobs,
)

SMALL = {"n_train": 40, "n_val": 20, "n_test": 40}


@pytest.fixture(scope="module")
def bundle():
    return generate_synthetic(image_size=64, seed=0, **SMALL)


@pytest.fixture(scope="module")
def same_sites():
    """Site B with every shift at 0: statistically the same as site A."""
    return generate_synthetic(image_size=64, seed=0, n_train=10, n_val=80, n_test=80, **no_shift_knobs())


def shortcut_present(split) -> torch.Tensor:
    """Per image: does it carry the shortcut tag? The tag is burned in at full white (255);
    text markers are burned slightly darker, so marker pixels at 255 are the tag."""
    tag = split.masks["marker"] & (split.images == 255)
    return tag.flatten(1).any(dim=1)


def noise_level(images: torch.Tensor) -> float:
    """Mean absolute difference between horizontal neighbours: grows with pixel noise."""
    x = images.float()
    return (x[..., 1:] - x[..., :-1]).abs().mean().item()


# ----------------------------------------------------------------------------- the contract


def test_bundle_matches_the_data_contract(bundle):
    assert bundle.source == "synthetic"
    assert bundle.image_size == 64
    assert bundle.classes == ("NORMAL", "PNEUMONIA")
    for name, count, site in (("train", 40, "A"), ("val", 20, "A"), ("test", 40, "B")):
        split = bundle.splits[name]
        assert split.images.shape == (count, 1, 64, 64) and split.images.dtype == torch.uint8
        assert split.labels.dtype == torch.int64 and set(split.labels.tolist()) <= {0, 1}
        assert split.sites == (site,) * count
        assert split.ids[0] == f"synthetic/{site}/{name}/00000"
        assert len(set(split.ids)) == count
        assert split.original_sizes.shape == (count, 2) and split.original_sizes.dtype == torch.int64
        assert set(split.masks) == {"lung", "lesion", "marker"}
        for mask in split.masks.values():
            assert mask.shape == split.images.shape and mask.dtype == torch.bool
        # Balanced classes.
        assert torch.bincount(split.labels).tolist() == [count // 2, count // 2]


def test_load_bundle_passes_knobs_through_dataspec():
    spec = DataSpec(image_size=64, seed=3).with_knobs(n_train=12, n_val=10, n_test=10, noise=0.0)
    loaded = load_bundle(spec)
    assert [len(s) for s in loaded.splits.values()] == [12, 10, 10]


def test_original_sizes_show_site_b_lower_native_resolution():
    sharp = generate_synthetic(image_size=64, n_train=10, n_val=10, n_test=10, blur=0.0)
    blurry = generate_synthetic(image_size=64, n_train=10, n_val=10, n_test=10, blur=1.0)
    assert sharp.test.original_sizes.tolist() == [[64, 64]] * 10
    assert blurry.train.original_sizes.tolist() == [[64, 64]] * 10
    assert (blurry.test.original_sizes < 64).all()


@pytest.mark.parametrize("size", [64, 128])
def test_requested_image_size_is_rendered(size):
    small = generate_synthetic(image_size=size, n_train=10, n_val=10, n_test=10)
    assert small.test.images.shape[-2:] == (size, size)
    assert small.test.masks["lung"].shape[-2:] == (size, size)


# ----------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_tensors(bundle):
    again = generate_synthetic(image_size=64, seed=0, **SMALL)
    for name, split in bundle.splits.items():
        other = again.splits[name]
        assert torch.equal(split.images, other.images)
        assert torch.equal(split.labels, other.labels)
        for key in split.masks:
            assert torch.equal(split.masks[key], other.masks[key])


def test_thread_count_does_not_change_the_images(bundle):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        again = generate_synthetic(image_size=64, seed=0, **SMALL)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(bundle.train.images, again.train.images)
    assert torch.equal(bundle.test.images, again.test.images)


def test_different_seed_gives_different_images(bundle):
    other = generate_synthetic(image_size=64, seed=1, **SMALL)
    assert not torch.equal(bundle.train.images, other.train.images)
    assert not torch.equal(bundle.test.images, other.test.images)


def test_site_b_knobs_leave_site_a_untouched(bundle):
    shifted = generate_synthetic(image_size=64, seed=0, **SMALL, noise=1.0, exposure=0.0, positioning=1.0)
    assert torch.equal(bundle.train.images, shifted.train.images)
    assert not torch.equal(bundle.test.images, shifted.test.images)


# ----------------------------------------------------------------------------- masks


def test_every_image_has_two_plausible_lungs(bundle):
    for split in (bundle.train, bundle.test):
        lung_fraction = split.masks["lung"].float().mean(dim=(1, 2, 3))
        assert (lung_fraction > 0.08).all() and (lung_fraction < 0.6).all()


def test_lesions_lie_inside_the_lungs(bundle):
    for split in bundle.splits.values():
        lesion, lung = split.masks["lesion"], split.masks["lung"]
        assert not (lesion & ~lung).any()


def test_normal_images_have_no_lesions_and_pneumonia_images_do(bundle):
    for split in bundle.splits.values():
        lesion_pixels = split.masks["lesion"].flatten(1).sum(dim=1)
        assert (lesion_pixels[split.labels == 0] == 0).all()
        assert (lesion_pixels[split.labels == 1] > 0).float().mean() > 0.9


def test_marker_mask_marks_burned_in_bright_pixels(bundle):
    for split in bundle.splits.values():
        marker = split.masks["marker"]
        assert (split.images[marker] > 200).all()
    # Site B (default knobs) burns in text far more often than site A.
    has_marker = lambda s: s.masks["marker"].flatten(1).any(dim=1).float().mean()  # noqa: E731
    assert has_marker(bundle.test) > has_marker(bundle.val)


# ----------------------------------------------------------------------------- sites


def test_site_b_differs_from_site_a_with_default_knobs(bundle):
    # Noisier (the default noise shift outweighs the default blur) and more burned-in text.
    assert noise_level(bundle.test.images) > 1.15 * noise_level(bundle.train.images)
    assert bundle.test.masks["marker"].float().mean() > 2 * bundle.train.masks["marker"].float().mean()


def test_sites_match_when_every_shift_is_zero(same_sites):
    a, b = same_sites.val, same_sites.test
    assert noise_level(b.images) == pytest.approx(noise_level(a.images), rel=0.05)
    fraction = lambda split, name: split.masks[name].float().mean().item()  # noqa: E731
    assert fraction(b, "lung") == pytest.approx(fraction(a, "lung"), rel=0.1)
    assert fraction(b, "marker") == pytest.approx(fraction(a, "marker"), rel=0.5)
    assert torch.equal(a.original_sizes, b.original_sizes)


def site_b(**knobs):
    """Site B's test images with every shift at 0 except `knobs`. The random draws do not
    depend on the knob values, so two calls image the same patients: a paired comparison."""
    settings = no_shift_knobs() | knobs
    return generate_synthetic(image_size=64, n_train=10, n_val=10, n_test=24, **settings).test


def per_image(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over `mask`, per image."""
    mask = mask.float()
    return (values.float() * mask).flatten(1).sum(1) / mask.flatten(1).sum(1)


def test_exposure_knob_brightens_site_b_lungs():
    before, after = site_b(exposure=0.0), site_b(exposure=1.0)
    assert torch.equal(before.masks["lung"], after.masks["lung"])
    lungs = before.masks["lung"]
    gain = per_image(after.images, lungs) - per_image(before.images, lungs)
    assert (gain > 5).all()  # grey levels, in every image


def test_noise_knob_adds_pixel_noise():
    assert noise_level(site_b(noise=1.0).images) > 1.5 * noise_level(site_b(noise=0.0).images)


def test_blur_knob_lowers_native_resolution_and_sharpness():
    sharp, blurry = site_b(blur=0.0), site_b(blur=1.0)
    assert (blurry.original_sizes < sharp.original_sizes).all()
    assert noise_level(blurry.images) < 0.8 * noise_level(sharp.images)


def test_patient_size_knob_shrinks_the_chest_in_the_image():
    adult, child = site_b(patient_size=0.0), site_b(patient_size=1.0)
    lung_area = lambda split: split.masks["lung"].flatten(1).sum(1).float()  # noqa: E731
    assert (lung_area(child) < 0.9 * lung_area(adult)).all()


def test_positioning_knob_moves_the_patient():
    centred, moved = site_b(positioning=0.0), site_b(positioning=1.0)
    cols = torch.arange(64).float()
    centre_x = lambda split: per_image(cols.expand(len(split), 1, 64, 64), split.masks["lung"])  # noqa: E731
    assert (centre_x(moved) - centre_x(centred)).abs().mean() > 1.5  # pixels


def test_text_marker_knob_burns_in_more_text():
    quiet, busy = site_b(text_markers=0.0), site_b(text_markers=1.0)
    assert busy.masks["marker"].sum() > 3 * quiet.masks["marker"].sum()
    assert busy.masks["marker"].flatten(1).any(1).all()  # every image carries some text


@pytest.mark.parametrize("knob", SHIFT_KNOBS)
def test_each_shift_knob_changes_site_b_only(knob):
    sizes = {"n_train": 10, "n_val": 10, "n_test": 10}
    base = generate_synthetic(image_size=64, **sizes, **no_shift_knobs())
    moved = generate_synthetic(image_size=64, **sizes, **(no_shift_knobs() | {knob: 1.0}))
    assert not torch.equal(base.test.images, moved.test.images)
    assert torch.equal(base.val.images, moved.val.images)


# ----------------------------------------------------------------------------- the shortcut


def test_shortcut_on_about_the_requested_fraction_of_site_a_pneumonia():
    data = generate_synthetic(image_size=64, n_train=200, n_val=40, n_test=60, shortcut_fraction=0.5,
                              text_markers=1.0)
    train = data.train
    tagged = shortcut_present(train)
    assert tagged[train.labels == 0].sum() == 0
    assert 0.35 < tagged[train.labels == 1].float().mean() < 0.65
    assert shortcut_present(data.val)[data.val.labels == 0].sum() == 0
    assert shortcut_present(data.test).sum() == 0  # site B never carries it, however much text it burns


def test_no_shortcut_when_fraction_is_zero():
    data = generate_synthetic(image_size=64, n_train=60, n_val=10, n_test=10, shortcut_fraction=0.0)
    assert shortcut_present(data.train).sum() == 0


def test_shortcut_on_every_pneumonia_when_fraction_is_one():
    data = generate_synthetic(image_size=64, n_train=40, n_val=10, n_test=10, shortcut_fraction=1.0)
    assert torch.equal(shortcut_present(data.train), data.train.labels == 1)


# ----------------------------------------------------------------------------- classes


def test_three_classes_bacterial_is_focal_viral_is_bilateral():
    data = generate_synthetic(image_size=64, num_classes=3, n_train=60, n_val=12, n_test=12)
    assert data.classes == ("NORMAL", "BACTERIAL", "VIRAL")
    train = data.train
    assert torch.bincount(train.labels).tolist() == [20, 20, 20]
    lesion = train.masks["lesion"][:, 0]
    # Which half of the patient the lesion pixels are in (the lungs sit on either side of the spine).
    left, right = lesion[..., :32].flatten(1).any(1), lesion[..., 32:].flatten(1).any(1)
    both_sides = (left & right).float()
    assert both_sides[train.labels == 1].mean() < 0.1  # lobar consolidation: one lung
    assert both_sides[train.labels == 2].mean() > 0.6  # interstitial: both lungs
    assert (lesion.flatten(1).sum(1)[train.labels == 0] == 0).all()


def test_num_classes_must_be_two_or_three():
    with pytest.raises(ValueError):
        generate_synthetic(image_size=64, num_classes=4, n_train=10, n_val=10, n_test=10)


# ----------------------------------------------------------------------------- knobs


def test_every_slider_position_the_data_page_offers_is_accepted():
    """The Data page draws one slider per knob, from knob.min to knob.max, starting at knob.default: each
    end and the default resolve to themselves; one step past either end is refused, naming the knob."""
    for name, knob in KNOBS.items():
        for value in (knob.min, knob.default, knob.max):
            assert resolve_knobs(**{name: value})[name] == value
        for outside in (knob.min - knob.step, knob.max + knob.step):
            with pytest.raises(ValueError, match=name):
                resolve_knobs(**{name: outside})
    # the page's "same sites" button: every shift at 0 is a valid choice
    assert all(value == 0 for name, value in resolve_knobs(**no_shift_knobs()).items() if name in SHIFT_KNOBS)


def test_unknown_knob_raises_and_names_the_valid_ones():
    with pytest.raises(ValueError, match="shortcut_fraction"):
        generate_synthetic(image_size=64, brightness=0.5)
    with pytest.raises(ValueError, match="n_train"):
        render_patient_at_sites(image_size=64, typo=1.0)


def test_out_of_range_knob_raises():
    with pytest.raises(ValueError, match="noise"):
        resolve_knobs(noise=1.5)


def test_count_knobs_are_rounded():
    data = generate_synthetic(image_size=64, n_train=20.4, n_val=10.0, n_test=11.6)
    assert (len(data.train), len(data.val), len(data.test)) == (20, 10, 12)


# ----------------------------------------------------------------------------- the live preview


def test_preview_shapes_and_types():
    views = render_patient_at_sites(image_size=64, seed=0, patient=3, label=1)
    assert set(views) == {"A", "B"}
    for view in views.values():
        assert set(view) == {"image", "lung", "lesion", "marker"}
        assert view["image"].shape == (64, 64) and view["image"].dtype == torch.uint8
        for name in ("lung", "lesion", "marker"):
            assert view[name].shape == (64, 64) and view[name].dtype == torch.bool
    assert views["A"]["lesion"].any()
    assert not torch.equal(views["A"]["image"], views["B"]["image"])


def test_preview_shows_the_same_patient_at_both_sites():
    # Without positioning, size or resolution shifts the anatomy lands on the same pixels;
    # exposure, noise and markers still differ.
    views = render_patient_at_sites(image_size=64, seed=2, patient=5, label=1,
                                    positioning=0.0, patient_size=0.0, blur=0.0)
    assert torch.equal(views["A"]["lung"], views["B"]["lung"])
    assert torch.equal(views["A"]["lesion"], views["B"]["lesion"])
    assert not torch.equal(views["A"]["image"], views["B"]["image"])


def test_preview_is_deterministic_and_patients_differ():
    first = render_patient_at_sites(image_size=64, patient=1)
    again = render_patient_at_sites(image_size=64, patient=1)
    other = render_patient_at_sites(image_size=64, patient=2)
    assert torch.equal(first["B"]["image"], again["B"]["image"])
    assert not torch.equal(first["A"]["lung"], other["A"]["lung"])


def test_preview_three_classes_and_bad_labels():
    bacterial = render_patient_at_sites(image_size=64, patient=4, label=1, num_classes=3)["A"]["lesion"]
    viral = render_patient_at_sites(image_size=64, patient=4, label=2, num_classes=3)["A"]["lesion"]
    assert bacterial.any() and viral.any()
    assert not (bacterial[:, :32].any() and bacterial[:, 32:].any())  # one lung
    with pytest.raises(ValueError):
        render_patient_at_sites(image_size=64, label=2)  # 2 classes: no label 2


def test_preview_normal_patient_has_no_lesion():
    views = render_patient_at_sites(image_size=64, patient=0, label=0)
    assert not views["A"]["lesion"].any() and not views["B"]["lesion"].any()
