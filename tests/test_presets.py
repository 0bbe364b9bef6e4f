from explore.presets import PRESETS


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
        assert all("(quick)" in c.name for c in configs)


def test_quick_keeps_the_number_of_lr_decays():
    full = PRESETS["hw3_baseline"].configs()[0]
    quick = PRESETS["hw3_baseline"].configs(quick=True)[0]
    # decays that take effect during training happen after epochs step, 2·step, … < epochs
    assert (full.epochs - 1) // full.step_size == (quick.epochs - 1) // quick.step_size
