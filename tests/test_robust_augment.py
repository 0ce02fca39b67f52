"""robust_augment: the batched robustness augmentation behind the `robust` recipe."""

from __future__ import annotations

import math
import signal

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mnist_edge.train import robust_augment as ra
from mnist_edge.train.robust_augment import N_PARAMS, apply_params, augment, sample_params


def _digits(n: int = 16) -> torch.Tensor:
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 1.0  # a vertical bar, like a "1"
    return x


def _neutral(n: int) -> torch.Tensor:
    """Parameters that change nothing: no rotation, scale 1, no thickness, blur, low resolution or noise, full ink."""
    p = torch.zeros(n, N_PARAMS)
    p[:, ra._COL["scale"]] = 1.0
    p[:, ra._COL["ink"]] = 1.0
    return p


def test_neutral_parameters_leave_the_digits_alone():
    x = _digits(4)
    torch.testing.assert_close(apply_params(x, _neutral(4)), x, atol=1e-5, rtol=0)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 40), st.integers(0, 2**31 - 1))
def test_keeps_shape_and_range_and_is_reproducible(n, seed):
    x = torch.rand(n, 1, 28, 28)
    a = augment(x, torch.Generator().manual_seed(seed))
    b = augment(x.clone(), torch.Generator().manual_seed(seed))
    assert a.shape == x.shape and a.dtype == x.dtype and torch.isfinite(a).all()
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)


def test_each_sample_gets_its_own_shift():
    out = augment(_digits(8), torch.Generator().manual_seed(0))
    assert all(not torch.equal(out[0], out[i]) for i in range(1, 8))


def test_parameters_cover_the_documented_ranges():
    p = sample_params(20_000, torch.Generator().manual_seed(0))
    col = ra._COL
    assert p.shape == (20_000, N_PARAMS)
    angle = p[:, col["angle"]].abs()
    assert angle.max() <= math.radians(ra.DEGREES) and angle.max() > math.radians(ra.DEGREES) * 0.99
    assert ra.SCALE[0] <= p[:, col["scale"]].min() and p[:, col["scale"]].max() <= ra.SCALE[1]
    thickness = p[:, col["thickness"]]
    shares = [(thickness == v).float().mean().item() for v in (-1, 0, 1, 2)]
    assert shares == pytest.approx(ra.THICKNESS_P, abs=0.015)
    assert (p[:, col["blur"]] > 0).float().mean().item() == pytest.approx(ra.BLUR_P, abs=0.015)
    lowres = p[:, col["lowres"]]
    assert set(lowres.unique().tolist()) == {0.0, *map(float, ra.LOWRES_SIZES)}
    assert (p[:, col["noise"]] > 0).float().mean().item() == pytest.approx(ra.NOISE_P, abs=0.015)
    elastic = p[:, len(ra._FIXED) :]
    assert (elastic.abs().sum(1) > 0).float().mean().item() == pytest.approx(ra.ELASTIC_P, abs=0.015)


def _one(x: torch.Tensor, **values: float) -> torch.Tensor:
    p = _neutral(len(x))
    for name, value in values.items():
        p[:, ra._COL[name]] = value
    return apply_params(x, p)


def test_each_step_does_what_it_says():
    x = _digits(1)
    ink = x.sum()
    assert _one(x, thickness=-1).sum() < ink < _one(x, thickness=1).sum() < _one(x, thickness=2).sum()
    blurred = _one(x, blur=1.0)
    assert blurred.max() < 1 and blurred.sum() == pytest.approx(ink.item(), rel=0.01)
    low = _one(x, lowres=12)  # softer edges: less change from pixel to pixel, most of the ink kept
    assert low.diff(dim=3).abs().sum() < x.diff(dim=3).abs().sum() and 0.7 * ink < low.sum() <= ink
    assert _one(x, ink=0.8).max() == pytest.approx(0.8)
    turned = _one(x, angle=math.pi / 2)  # a vertical bar turns horizontal
    assert turned[0, 0].sum(0).count_nonzero() > turned[0, 0].sum(1).count_nonzero()
    noisy = _one(torch.full((1, 1, 28, 28), 0.5), noise=0.1)
    assert (noisy - 0.5).std().item() == pytest.approx(0.1, rel=0.1)


def test_sliced_parameters_give_the_slice_of_the_batch():
    # distributed ranks apply their slice of the global batch's parameters
    x = torch.rand(8, 1, 28, 28)
    p = sample_params(8, torch.Generator().manual_seed(1))
    p[:, ra._COL["noise"]] = 0  # noise is drawn per batch from the first row's seed
    whole = apply_params(x, p)
    torch.testing.assert_close(apply_params(x[1::2], p[1::2]), whole[1::2])


def test_robust_recipe_trains_edgenet_and_resumes_exactly(mnist_dir, tmp_path):
    from mnist_edge.train.checkpoint import load_checkpoint
    from mnist_edge.train.loop import TrainConfig, train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        quick = dict(arch="edgenet", limit=384, batch_size=64, data_dir=mnist_dir, device="cpu", progress=False)
        straight, resumed = tmp_path / "straight.pt", tmp_path / "resumed.pt"
        result = train(TrainConfig(epochs=2, out=straight, **quick), log=lambda _line: None)

        def press_ctrl_c(line: str) -> None:
            if line.startswith("recipe"):  # just before the first step: stops after it, mid-warm-up
                signal.raise_signal(signal.SIGINT)

        assert train(TrainConfig(epochs=2, out=resumed, **quick), log=press_ctrl_c).interrupted
        train(TrainConfig(resume=resumed, device="cpu", data_dir=mnist_dir, progress=False), log=lambda _line: None)
    finally:
        torch.set_num_threads(threads)
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    recipe = a.meta["recipe"]
    assert (recipe["augmentation"], recipe["schedule"], recipe["label_smoothing"]) == ("robust", "onecycle", 0.05)
    history = a.meta["history"]
    assert result.epochs_done == 2 and history[1]["train_loss"] < history[0]["train_loss"]
