import re

import pytest

from explore.training.presets import PRESETS, short_number

WHAT_CHANGES_A_RUN = lambda c: {k: v for k, v in c.to_dict().items() if k not in ("name", "group")}  # noqa: E731


def test_homework_settings_are_the_reports():
    baseline = PRESETS["hw3_baseline"].runs[0]
    assert (baseline.model, baseline.optimizer, baseline.lr, baseline.scheduler, baseline.step_size,
            baseline.gamma, baseline.loss, baseline.batch_size, baseline.epochs, baseline.data.image_size) == \
        ("hw3_cnn", "adam", 1e-3, "step", 10, 0.1, "bce", 32, 30, 256)
    bce, ce = PRESETS["hw2_bce_vs_ce"].runs
    assert (bce.loss, ce.loss) == ("bce", "ce")
    assert (bce.model, bce.lr, bce.step_size, bce.gamma, bce.batch_size, bce.epochs) == \
        ("hw2_mlp", 3e-6, 4, 0.4, 128, 30)
    assert [r.lr for r in PRESETS["hw2_lr_sweep"].runs] == [3e-5, 3e-6, 3e-7]
    assert [r.step_size for r in PRESETS["hw2_step_sweep"].runs] == [2, 4, 8]
    assert [r.model for r in PRESETS["hw3_gap"].runs] == ["lab4_gap", "hw3_gap_wide"]


def test_every_preset_has_a_two_line_note_and_one_group():
    for preset in PRESETS.values():
        assert len(preset.note.splitlines()) == 2
        configs = preset.configs(quick=True)
        assert {c.group for c in configs} == {preset.name}
        assert all(c.data.image_size <= preset.quick_size for c in configs)
        assert all("(quick " in c.name for c in configs)


def test_quick_keeps_the_number_of_lr_decays():
    full = PRESETS["hw3_baseline"].configs()[0]
    quick = PRESETS["hw3_baseline"].configs(quick=True)[0]
    # decays that take effect during training happen after epochs step, 2·step, … < epochs
    assert (full.epochs - 1) // full.step_size == (quick.epochs - 1) // quick.step_size


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("quick", [False, True])
def test_every_preset_runs_distinct_settings_under_names_that_state_them(name, quick):
    configs = PRESETS[name].configs(quick=quick)
    settings = [WHAT_CHANGES_A_RUN(c) for c in configs]
    assert all(settings.count(s) == 1 for s in settings), f"{name}: two runs train the same settings"
    assert len({c.name for c in configs}) == len(configs), f"{name}: two runs share a name"
    for c in configs:
        assert "{" not in c.name  # every template placeholder was filled
        # every learning rate, step size, patience or gamma a name states is the one the run uses
        for value in re.findall(r"\blr ([0-9][^ )]*)", c.name):
            assert value == short_number(c.lr), c.name
        for value in re.findall(r"step (\d+)", c.name):
            assert int(value) == c.step_size and c.scheduler == "step", c.name
        for value in re.findall(r"patience (\d+)", c.name):
            assert int(value) == c.early_stopping_patience, c.name
        for value in re.findall(r"γ (\S+?)\)?$", c.name.split(" (quick")[0]):
            assert float(value) == c.gamma, c.name
        if quick:
            assert f"{c.data.image_size} px" in c.name and f"{c.epochs} epochs" in c.name
            if PRESETS[name].quick_lr_scale != 1:
                assert f"×{PRESETS[name].quick_lr_scale:g} lr" in c.name


@pytest.mark.parametrize("name", list(PRESETS))
def test_quick_variants_keep_the_lesson_contrast(name):
    configs = PRESETS[name].configs(quick=True)
    for c in configs:
        if c.scheduler == "step":  # the rate decays at least once within the quick run
            assert c.step_size < c.epochs, c.name
        if c.early_stopping_patience:  # early stopping can fire before the last epoch
            assert c.early_stopping_patience < c.epochs - 1, c.name
    step_sizes = [c.step_size for c in configs if c.scheduler == "step"]
    if name == "hw2_step_sweep":
        assert step_sizes == [2, 4, 8] and all(s < configs[0].epochs for s in step_sizes)


def test_quick_learning_rates_are_named_by_their_real_value():
    names = [c.name for c in PRESETS["hw2_lr_sweep"].configs(quick=True)]
    assert [n.split(" (")[0] for n in names] == ["HW2 lr 3e-4", "HW2 lr 3e-5", "HW2 lr 3e-6"]
    assert all("(quick ×10 lr" in n for n in names)


def test_lecture_presets_compare_schedules_and_batch_norm():
    schedules = PRESETS["lecture_lr_schedules"].configs()
    assert [c.scheduler for c in schedules] == ["none", "step", "exponential", "cosine"]
    assert len({c.model for c in schedules}) == 1
    without, with_bn = PRESETS["lecture_batch_norm"].configs()
    assert without.model == with_bn.model == "cnn"
    assert (without.options()["batch_norm"], with_bn.options()["batch_norm"]) == (False, True)
    assert without.differences(with_bn).keys() == {"model_options.batch_norm", "name"}
    # exponential decay over the quick run reaches the same final rate factor as over the full run
    full_exp, quick_exp = schedules[2], PRESETS["lecture_lr_schedules"].configs(quick=True)[2]
    assert abs(full_exp.gamma ** full_exp.epochs - quick_exp.gamma ** quick_exp.epochs) < 0.01


def test_a_preset_run_at_the_data_pages_size_says_that_size():
    from explore.training.presets import at_image_size

    quick = PRESETS["hw3_baseline"].configs(quick=True)[0]
    assert "128 px" in quick.name
    small = at_image_size(quick, 64)
    assert small.data.image_size == 64 and "64 px" in small.name and "128 px" not in small.name
    full = PRESETS["hw3_baseline"].configs()[0]
    assert at_image_size(full, 64).name == f"{full.name} (64 px)" and at_image_size(full, 256) == full
