"""Multi-task learning: synthetic findings, multi-label targets with unknown labels, the masked loss,
per-label metrics, a short multi-label run, the preset, and the real sets' 14 findings."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explore.training import multilabel as ML
from explore.training.config import RunConfig
from explore.data import DataBundle, DataSpec, Split, decoded_bundle, load_bundle
from explore.data.disk_cache import bundle_from_payload, bundle_to_payload
from explore.data.synthetic import FINDINGS, generate_synthetic
from explore.models.registry import MODELS, build_model
from explore.training.presets import PRESETS

SMALL = {"n_train": 240, "n_val": 40, "n_test": 40}


@pytest.fixture(scope="module")
def with_findings() -> DataBundle:
    return generate_synthetic(image_size=64, findings=True, **SMALL)


@pytest.fixture(scope="module")
def without_findings() -> DataBundle:
    return generate_synthetic(image_size=64, **SMALL)


def bundle_digest(bundle: DataBundle) -> str:
    m = hashlib.sha256()
    for name in ("train", "val", "test"):
        s = bundle.splits[name]
        for t in [s.images, s.labels] + [s.masks[k] for k in sorted(s.masks)]:
            m.update(t.contiguous().numpy().tobytes())
    return m.hexdigest()[:16]


# ----------------------------------------------------------------------------- the synthetic findings
def test_default_set_is_bit_identical_to_the_one_before_findings_existed():
    # Digest of this set computed with the generator as it was before findings were added (commit 5d2e482).
    bundle = generate_synthetic(image_size=64, n_train=40, n_val=20, n_test=20)
    assert bundle_digest(bundle) == "fc0fa3a0051b869d"
    assert bundle.finding_names == () and bundle.train.findings is None
    assert set(bundle.train.masks) == {"lung", "lesion", "marker"}


def test_findings_are_independent_of_pneumonia_and_drawn_at_their_rate(with_findings):
    train = with_findings.train
    assert with_findings.finding_names == FINDINGS == ("cardiomegaly", "effusion")
    assert train.findings.shape == (len(train), 2)
    pneumonia = train.labels == 1
    for j, name in enumerate(FINDINGS):
        present = train.findings[:, j]
        assert 0.2 < float(present.mean()) < 0.4, name  # rate 0.3
        # the same rate with and without pneumonia (independent), within sampling noise of 120 images each
        assert abs(float(present[pneumonia].mean()) - float(present[~pneumonia].mean())) < 0.15, name
    assert with_findings.to_json()["findings"]["train"]["effusion"] == int(train.findings[:, 1].sum())
    both = (train.findings.sum(dim=1) == 2).float().mean()
    assert 0.03 < float(both) < 0.2  # several findings on one image: about 0.3 × 0.3


def test_finding_masks_are_drawn_where_present_and_empty_where_absent(with_findings):
    for split in with_findings.splits.values():
        for name in FINDINGS:
            j = FINDINGS.index(name)
            area = split.masks[name].flatten(1).sum(1)
            present = split.findings[:, j] == 1
            assert (area[present] > 20).all(), name
            assert (area[~present] == 0).all(), name
        assert (split.masks["heart"].flatten(1).sum(1) > 0).all()
        effusion = split.masks["effusion"]
        assert not (effusion & split.masks["heart"]).any()  # fluid lies in the lung bases, not on the heart


def cardiothoracic_ratio(split: Split, i: int) -> float:
    """Widest extent of the heart / widest extent of the two lung fields (the thorax)."""
    heart = split.masks["heart"][i, 0].any(dim=0).nonzero().flatten()
    lungs = split.masks["lung"][i, 0].any(dim=0).nonzero().flatten()
    return float(heart.max() - heart.min() + 1) / float(lungs.max() - lungs.min() + 1)


def test_cardiomegaly_means_a_cardiothoracic_ratio_above_one_half(with_findings):
    train = with_findings.train
    ratios = torch.tensor([cardiothoracic_ratio(train, i) for i in range(len(train))])
    enlarged = train.findings[:, 0] == 1
    assert (ratios[enlarged] > 0.5).all()
    assert float(ratios[~enlarged].mean()) < 0.5 < float(ratios[enlarged].mean())


def test_effusion_fills_the_lowest_outer_lung_the_costophrenic_angle(with_findings):
    train = with_findings.train
    j = FINDINGS.index("effusion")
    for i in torch.nonzero(train.findings[:, j] == 1).flatten()[:10].tolist():
        fluid = train.masks["effusion"][i, 0]
        rows = fluid.any(dim=1).nonzero().flatten()
        # the fluid's upper edge is higher (smaller row) at the chest wall than next to the heart: the meniscus
        columns = fluid.any(dim=0).nonzero().flatten()
        top_of = lambda c: int(fluid[:, c].nonzero().min())  # noqa: E731
        edge_columns = (int(columns.min()), int(columns.max()))
        assert rows.numel() > 0 and min(top_of(c) for c in edge_columns) < max(top_of(c) for c in edge_columns) + 1


def test_images_without_findings_are_the_same_pixels_as_with_findings_off(with_findings, without_findings):
    for name in ("train", "test"):
        a, b = with_findings.splits[name], without_findings.splits[name]
        assert torch.equal(a.labels, b.labels)
        clear = a.findings.sum(dim=1) == 0
        assert clear.any() and torch.equal(a.images[clear], b.images[clear])
        assert torch.equal(a.masks["lesion"][clear], b.masks["lesion"][clear])
        assert not torch.equal(a.images[~clear], b.images[~clear])


def test_dataspec_findings_is_off_by_default_and_keeps_old_keys():
    assert "findings" not in DataSpec().to_dict()
    spec = DataSpec(findings=True)
    assert spec.to_dict()["findings"] is True and DataSpec.from_dict(spec.to_dict()) == spec
    assert spec.key() != DataSpec().key()


def test_subset_disk_cache_and_validation_keep_findings(with_findings):
    train = with_findings.train
    part = train.subset([3, 1])
    assert torch.equal(part.findings, train.findings[[3, 1]])
    back = bundle_from_payload(bundle_to_payload(with_findings))
    assert back.finding_names == FINDINGS and torch.equal(back.train.findings, train.findings)
    with pytest.raises(ValueError, match="findings must be a float"):
        replace(train, findings=torch.zeros(len(train), 2, dtype=torch.long))
    with pytest.raises(ValueError, match="finding columns"):
        replace(with_findings, finding_names=("cardiomegaly",))


# ----------------------------------------------------------------------------- loss and metrics
def test_masked_loss_leaves_unknown_labels_out():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.3, 0.7, -2.0]], requires_grad=True)
    targets = torch.tensor([[1.0, float("nan"), 0.0], [float("nan"), 1.0, 1.0]])
    loss = ML.masked_bce_sum(logits, targets)
    known = [(0, 0), (0, 2), (1, 1), (1, 2)]
    expected = sum(F.binary_cross_entropy_with_logits(logits[i, j], targets[i, j]) for i, j in known)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert logits.grad[0, 1] == 0 and logits.grad[1, 0] == 0  # an unknown label pushes nothing
    assert all(logits.grad[i, j] != 0 for i, j in known)
    # exact match: image 0 right on both known labels (1 at logit 2, 0 at logit 0.5 → wrong) = not all right
    assert int(ML.count_exact_matches(logits.detach(), targets)) == 0
    assert int(ML.count_exact_matches(torch.tensor([[2.0, 0.0, -1.0]]), targets[:1])) == 1


def test_per_label_auc_and_confusion_match_a_hand_computed_case():
    # scores 0.1 0.4 0.35 0.8 with labels 0 0 1 1: sklearn's roc_auc_score gives 0.75
    probs = torch.tensor([[0.1, 0.9], [0.4, 0.2], [0.35, 0.6], [0.8, 0.7], [0.99, 0.1]])
    targets = torch.tensor([[0.0, 1.0], [0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [float("nan"), 1.0]])
    report = ML.split_report(targets, probs, ("pneumonia", "effusion"))
    pneumonia = report["labels"]["pneumonia"]
    assert pneumonia["auc"] == pytest.approx(0.75) and pneumonia["n"] == 4
    assert (pneumonia["tn"], pneumonia["fp"], pneumonia["fn"], pneumonia["tp"]) == (2, 0, 1, 1)
    effusion = report["labels"]["effusion"]  # scores 0.9 0.2 0.6 0.7 0.1, labels 1 0 1 0 1: 3 of 6 pairs
    assert effusion["auc"] == pytest.approx(0.5)
    assert (effusion["tn"], effusion["fp"], effusion["fn"], effusion["tp"]) == (1, 1, 1, 2)
    assert report["auc"] == pytest.approx(0.625)
    one_class = ML.label_report(torch.ones(3), torch.tensor([0.2, 0.6, 0.9]))
    assert one_class["auc"] is None and one_class["sensitivity"] == pytest.approx(2 / 3)


def test_scarce_pneumonia_labels_single_task_drops_unlabelled_images_multi_task_keeps_them(with_findings):
    config = RunConfig(data=DataSpec(image_size=64, findings=True), tasks=("pneumonia",), pneumonia_label_fraction=0.1)
    split, targets = ML.training_split(with_findings.train, with_findings, config, config.tasks)
    assert len(split) == 24 and not torch.isnan(targets).any()  # 10% of 240
    assert torch.equal(targets[:, 0], (split.labels != 0).float())
    three = config.replace(tasks=("pneumonia", "cardiomegaly", "effusion"))
    split3, targets3 = ML.training_split(with_findings.train, with_findings, three, three.tasks)
    assert len(split3) == 240 and int((~torch.isnan(targets3[:, 0])).sum()) == 24
    assert not torch.isnan(targets3[:, 1:]).any()
    # the same 24 images keep their pneumonia label in both runs
    assert set(split.ids) == {split3.ids[i] for i in torch.nonzero(~torch.isnan(targets3[:, 0])).flatten()}


def test_config_checks_the_multi_task_fields():
    with pytest.raises(ValueError, match="needs tasks"):
        RunConfig(pneumonia_label_fraction=0.5)
    with pytest.raises(ValueError, match="loss 'bce'"):
        RunConfig(tasks=("pneumonia",), loss="ce")
    with pytest.raises(ValueError, match="repeat"):
        RunConfig(tasks=("pneumonia", "pneumonia"))
    with pytest.raises(ValueError, match="include 'pneumonia'"):
        RunConfig(tasks=("effusion",), pneumonia_label_fraction=0.1)
    config = RunConfig(tasks=("pneumonia", "effusion"), pneumonia_label_fraction=0.1)
    assert config.num_outputs == 2 and RunConfig.from_json(config.to_json()) == config
    assert "tasks" not in RunConfig().to_dict()  # single-task runs keep their old dict
    with pytest.raises(ValueError, match="turn on findings"):
        ML.check_tasks(("effusion",), generate_synthetic(image_size=64, n_train=10, n_val=10, n_test=10))


@pytest.mark.parametrize("family", sorted({info.family for info in MODELS.values()}))
def test_every_model_family_builds_with_one_output_per_task(family):
    name = "mobilenet_v3_small" if family == "transfer" else next(n for n, i in MODELS.items() if i.family == family)
    options = {"pretrained": False} if family == "transfer" else {}
    model = build_model(name, 64, 3, **options).eval()
    size = 64 if family != "transfer" else 64
    with torch.no_grad():
        out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, 3) and torch.isfinite(out).all()


# ----------------------------------------------------------------------------- a short run
def test_a_two_epoch_multi_label_run_records_per_label_auc(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORE_CACHE_DIR", str(tmp_path / "cache"))
    from explore.training.train import TrainingRun

    data = DataSpec(image_size=64, findings=True, synthetic=tuple(SMALL.items()))
    config = RunConfig(data=data, model="cnn_gap", tasks=("pneumonia", "cardiomegaly", "effusion"),
                       pneumonia_label_fraction=0.5, epochs=2, batch_size=32)
    run = TrainingRun(config)
    records = [r for r in run.fit() if r["kind"] == "epoch"]
    assert len(records) == 2 and run.status == "finished"
    for task in config.tasks:
        assert 0 <= records[-1][f"val_auc_{task}"] <= 1
        assert sum(records[-1][f"val_confusion_{task}"]) == 40
    summary = run.summary()
    assert summary["tasks"] == list(config.tasks)
    labels = summary["splits"]["val"]["labels"]
    assert set(labels) == set(config.tasks) and labels["effusion"]["positives"] > 0
    assert summary["val_acc"] == summary["splits"]["val"]["acc"]
    json.dumps(summary)  # JSON-ready (summary.json)
    rows = ML.per_label_table(summary)
    assert [r["task"] for r in rows] == list(config.tasks)
    assert len(ML.auc_curves(run.history, config.tasks)) == 6


# ----------------------------------------------------------------------------- the preset
@pytest.mark.parametrize("quick", [False, True])
def test_one_task_vs_three_tasks_preset(quick):
    single, multi = PRESETS["lecture_multitask"].configs(quick=quick)
    assert single.tasks == ("pneumonia",) and multi.tasks == ("pneumonia", "cardiomegaly", "effusion")
    assert single.pneumonia_label_fraction == multi.pneumonia_label_fraction == 0.1
    assert single.data.findings and single.data == multi.data and single.model == multi.model
    assert set(single.differences(multi)) == {"tasks", "name"}
    assert "10% of pneumonia labels" in single.name and "pneumonia + cardiomegaly + effusion" in multi.name
    assert "on pneumonia ·" in single.name


# ----------------------------------------------------------------------------- the real sets
def test_chestmnist_keeps_every_film_and_its_14_findings(tmp_path):
    from explore.data import chestmnist as C
    from test_chestmnist import write_chestmnist

    path = write_chestmnist(tmp_path / "chestmnist.npz")
    decoded_bundle.cache_clear()
    bundle = load_bundle(DataSpec(source=f"medmnist:{path}", image_size=64, findings=True))
    assert bundle.finding_names == C.FINDINGS and len(C.FINDINGS) == 14
    train = bundle.train
    assert len(train) == 16 and train.findings.shape == (16, 14)  # other findings kept
    assert torch.equal(train.labels, train.findings[:, C.FINDINGS.index("pneumonia")].long())
    assert train.findings[:, C.FINDINGS.index("infiltration")].sum() == 7
    targets = ML.split_targets(train, bundle, ("pneumonia", "effusion", "infiltration"))
    assert targets.sum(0).tolist() == [4.0, 1.0, 7.0]
    off = load_bundle(DataSpec(source=f"medmnist:{path}", image_size=64))
    assert len(off.train) == 9 and off.finding_names == ()


def test_nih_keeps_its_14_findings_from_the_finding_labels(tmp_path, monkeypatch):
    from test_xrv import nih_table, pick_nih, write_png

    monkeypatch.setenv("EXPLORE_CACHE_DIR", str(tmp_path / "cache"))
    decoded_bundle.cache_clear()
    table = nih_table()
    images, other, _ = pick_nih(table)
    root = tmp_path / "nih"
    for name in images + other:
        write_png(root / "images" / name)
    bundle = load_bundle(DataSpec(source=f"xrv:nih:{root}", image_size=64, findings=True))
    assert len(bundle.finding_names) == 14 and "effusion" in bundle.finding_names
    everything = sum(len(s) for s in bundle.splits.values())
    assert everything == len(images) + len(other)  # the "other findings" films are kept
    for split in bundle.splits.values():
        for i, path in enumerate(split.ids):
            row = table[table["Image Index"] == path.rsplit("/", 1)[1]].iloc[0]
            named = {n.lower() for n in row["Finding Labels"].split("|")}
            present = {bundle.finding_names[j] for j in torch.nonzero(split.findings[i]).flatten()}
            assert present == named - {"no finding"}
            assert split.labels[i] == int("pneumonia" in named)
    with pytest.raises(Exception, match="nih only"):
        load_bundle(DataSpec(source=f"xrv:rsna:{root}", image_size=64, findings=True))


def test_multi_label_train_targets_are_finite_for_the_loss():
    targets = torch.tensor([[1.0, float("nan")]])
    assert math.isfinite(float(ML.masked_bce_sum(torch.zeros(1, 2), targets)))


# ----------------------------------------------------------------------------- the CLI
def test_cli_trains_a_multi_label_run_and_prints_per_label_auc(tmp_path, monkeypatch, capsys):
    from explore.cli.train import build_parser, cli_main, configs_from_args

    monkeypatch.setenv("EXPLORE_CACHE_DIR", str(tmp_path / "cache"))
    args = ["--model", "cnn_gap", "--size", "64", "--knob", "n_train=60", "--knob", "n_val=20", "--knob", "n_test=20",
            "--epochs", "1", "--tasks", "pneumonia,cardiomegaly,effusion", "--pneumonia-label-fraction", "0.5"]
    (config,) = configs_from_args(build_parser().parse_args(args))
    assert config.tasks == ML.SYNTHETIC_TASKS and config.data.findings  # naming a finding turns findings on
    assert config.pneumonia_label_fraction == 0.5
    (every,) = configs_from_args(build_parser().parse_args(["--model", "hw3_cnn", "--tasks", "all"]))
    assert every.tasks == ML.SYNTHETIC_TASKS and every.data.findings
    (plain,) = configs_from_args(build_parser().parse_args(["--model", "hw3_cnn", "--findings"]))
    assert plain.data.findings and plain.tasks == ()

    assert cli_main(args + ["--runs-dir", str(tmp_path / "runs"), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    epoch, end = lines[0], lines[-1]
    assert {f"val_auc_{t}" for t in ML.SYNTHETIC_TASKS} <= set(epoch)
    assert end["status"] == "finished" and end["tasks"] == list(ML.SYNTHETIC_TASKS)
    assert set(end["per_label_auc"]["val"]) == set(ML.SYNTHETIC_TASKS)
    assert cli_main(["--model", "hw3_cnn", "--tasks", "pneumonia", "--loss", "ce",
                     "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "loss 'bce'" in capsys.readouterr().err


def test_reproduce_command_gives_back_the_multi_task_run():
    import shlex

    from explore.training.reproduce import reproduce_command
    from explore.cli.train import build_parser, configs_from_args

    single, multi = PRESETS["lecture_multitask"].configs(quick=True)
    for config in (single, multi):
        command = shlex.split(reproduce_command(config))
        assert "--tasks" in command and "--findings" in command
        (back,) = configs_from_args(build_parser().parse_args(command[4:]))
        assert back.replace(group=config.group) == config


def test_compare_table_has_per_finding_auc_columns(tmp_path):
    from explore.insight.compare import comparison_table
    from explore.training.store import RunRecord

    config = RunConfig(data=DataSpec(findings=True), tasks=("pneumonia", "effusion"), name="two findings")
    summary = {"tasks": ["pneumonia", "effusion"], "splits": {
        "val": {"labels": {"pneumonia": {"auc": 0.61}, "effusion": {"auc": 0.97}}},
        "test": {"labels": {"pneumonia": {"auc": 0.55}, "effusion": {"auc": 0.93}}}}}
    multi = RunRecord(run_id="m", path=tmp_path / "m", config=config, summary=summary, metrics=[])
    plain = RunRecord(run_id="p", path=tmp_path / "p", config=RunConfig(name="plain"), summary={}, metrics=[])
    table = comparison_table([plain, multi])
    assert table.loc[1, "val AUC · effusion"] == 0.97 and table.loc[1, "test AUC · pneumonia"] == 0.55
    assert math.isnan(table.loc[0, "val AUC · effusion"])


def test_data_page_examples_show_each_combination_of_findings():
    from explore.insight.multilabel_report import FINDING_COLOURS, finding_examples

    examples = finding_examples(64, seed=0)
    assert [e["caption"] for e in examples] == ["no finding", "cardiomegaly", "effusion", "cardiomegaly + effusion"]
    plain, both = examples[0]["picture"], examples[3]["picture"]
    assert plain.shape == (64, 64, 3) and (plain[..., 0] == plain[..., 1]).all()  # grey: nothing outlined
    for colour in FINDING_COLOURS.values():
        assert (both == colour).all(axis=2).any()


def test_class_weights_weigh_each_labels_positives_by_its_negatives():
    config = RunConfig(tasks=("pneumonia", "effusion"), class_weights=True)
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [float("nan"), 0.0]])
    loss = ML.make_loss(config, targets, torch.device("cpu"))
    logits = torch.zeros(4, 2)
    # pneumonia: 1 positive, 2 negatives known → weight 2; effusion: 1 positive, 3 negatives → weight 3
    expected = math.log(2) * (2 * 1 + 2) + math.log(2) * (3 * 1 + 3)
    assert float(loss(logits, targets)) == pytest.approx(expected)
