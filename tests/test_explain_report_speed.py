"""The report card's shortcuts give the same numbers as the plain computation, with less work."""
from __future__ import annotations

import torch
from captum.metrics import infidelity
from torch import nn
from torchvision.transforms.functional import gaussian_blur

import explore.insight.explain_report as R
from explore.insight import attribution as A
from explore.training.config import RunConfig
from explore.models.registry import build_model
from explore.training.train import InputPipeline

SIZE = 32


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def cnn_explainer(seed: int = 0) -> A.Explainer:
    torch.manual_seed(seed)
    return A.make_explainer(build_model("hw3_cnn", SIZE, 1).eval(), InputPipeline(RunConfig(), images()), SIZE)


class ReusesItsInput(nn.Module):
    """ReLU, then adds the ReLU's own input: an in-place ReLU would change the sum (the copy must not be used)."""

    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()
        self.fc = nn.Linear(SIZE * SIZE, 1)

    def forward(self, x):
        return self.fc((x + self.relu(x)).flatten(1))


def test_separable_blur_is_torchvisions_gaussian_blur():
    for side in (9, 32, 128):
        x = torch.randn(3, 1, side, side)
        sigma = max(1.0, side / 16)
        kernel = min(int(2 * round(3 * sigma) + 1), 2 * ((side - 1) // 2) + 1)
        torch.testing.assert_close(R.replaced_images(x, "blur"), gaussian_blur(x, [kernel, kernel], [sigma, sigma]),
                                   atol=1e-5, rtol=0)


def test_forward_only_copy_scores_exactly_as_the_attribution_copy_and_leaves_it_alone():
    explainer = cnn_explainer()
    scorer = R.Scorer(explainer)
    assert scorer.model is not explainer.scorer  # the in-place copy is in use for the course CNN
    assert not any(getattr(m, "inplace", False) for m in explainer.model.modules())  # Captum's copy unchanged
    x = explainer.inputs(images(20, seed=1))
    with torch.no_grad():
        expected = explainer.scorer(x)
    before = x.clone()
    torch.testing.assert_close(scorer(x), expected, atol=0, rtol=0)
    assert torch.equal(x, before)


def test_scorer_splits_large_batches_into_chunks_with_the_same_result(monkeypatch):
    monkeypatch.setattr(R, "CHUNK_PIXELS", 3 * SIZE * SIZE)
    explainer = cnn_explainer()
    scorer = R.Scorer(explainer)
    assert scorer.chunk == 3
    x = explainer.inputs(images(10, seed=2))
    with torch.no_grad():
        expected = explainer.scorer(x)
    torch.testing.assert_close(scorer(x), expected, atol=1e-5, rtol=1e-5)


def test_forward_only_copy_falls_back_when_in_place_would_change_the_model():
    explainer = A.make_explainer(ReusesItsInput().eval(), InputPipeline(RunConfig(), images()), SIZE)
    assert R.forward_only_model(explainer) is explainer.scorer


def test_remembered_infidelity_equals_captums_and_scores_the_noisy_copies_once():
    explainer = cnn_explainer()
    x = explainer.inputs(images(4))
    target = torch.tensor([0, 1, 1, 0])
    maps = torch.randn(4, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    perturb = R._gaussian_perturbation(0.1, 0, x.device)
    plain = infidelity(explainer.scorer, perturb, x, maps.view_as(x), target=target, n_perturb_samples=6,
                       normalize=True)
    calls = []
    scorer = R.Scorer(explainer)
    counting = R.RememberedScorer(lambda inputs: calls.append(len(inputs)) or scorer(inputs))
    empty = R.empty_map_infidelity(explainer, x, target, 0.1, 6, 0, counting)
    first = R.map_infidelity(explainer, x, maps, target, 0.1, 6, 0, counting)
    scored = list(calls)
    second = R.map_infidelity(explainer, x, -maps, target, 0.1, 6, 0, counting)
    assert calls == scored == [24, 4]  # the noisy copies and the originals, once for all three maps
    torch.testing.assert_close(first, plain, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(second, first, atol=1e-5, rtol=1e-4)  # β absorbs the sign
    assert bool((empty > 0).all())


def test_chunked_sensitivity_equals_the_whole_batch_at_once(monkeypatch):
    explainer = cnn_explainer()
    x = explainer.inputs(images(4))
    target = torch.tensor([1, 0, 1, 1])
    whole = R.map_sensitivity(explainer, x, "gradcam", False, target, radius=0.05, n_perturb=3, seed=0)
    monkeypatch.setattr(R, "CHUNK_PIXELS", 2 * SIZE * SIZE)  # 2 images per pass instead of all 12 noisy copies
    chunked = R.map_sensitivity(explainer, x, "gradcam", False, target, radius=0.05, n_perturb=3, seed=0)
    assert bool((whole > 0).all())
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-4)


def test_bench_times_val_and_test_and_the_work_on_one_thread():
    import dataclasses

    from benchmarks import bench

    settings = dataclasses.replace(bench.Settings.make(quick=True, device="cpu"), attribution_size=SIZE,
                                   attribution_images=4, repeats=1)
    threads = torch.get_num_threads()
    result = bench.bench_explain(settings)
    assert torch.get_num_threads() == threads  # the one-thread run gives the threads back
    assert result["goal_met"] is None  # the goal is stated for 16 images at 128 px only
    assert result["val_and_test_cpu_seconds_one_thread"]["median"] > 0
    assert result["val_and_test_quiet_estimate_seconds"] == round(
        result["val_and_test_cpu_seconds_one_thread"]["median"] / result["threads"], 2)
    text = "\n".join(bench.FORMATTERS["explain"](result))
    assert "val and test" in text and "one thread" in text
