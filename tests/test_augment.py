import torch

from mnist_edge.augment import apply_params, augment, sample_params


def _digits(n: int = 16) -> torch.Tensor:
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 1.0  # a vertical bar, like a "1"
    return x


def test_keeps_shape_dtype_and_range():
    x = _digits()
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)


def test_each_sample_gets_its_own_transform():
    out = augment(_digits(8), torch.Generator().manual_seed(0))
    assert all(not torch.equal(out[0], out[i]) for i in range(1, 8))


def test_same_seed_same_result():
    a = augment(_digits(), torch.Generator().manual_seed(3))
    b = augment(_digits(), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_parameters_follow_the_notebook_ranges():
    p = sample_params(20_000, torch.Generator().manual_seed(0))
    angle, dx, dy, scale, brightness, contrast, order = p.T
    assert angle.abs().max() <= torch.deg2rad(torch.tensor(20.0)) and angle.abs().max() > 0.33
    assert set(dx.unique().tolist()) == {-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0}  # round(U(-2.8, 2.8)), whole pixels
    assert 0.9 <= scale.min() < 0.91 and 1.09 < scale.max() <= 1.1
    assert 0.8 <= brightness.min() and brightness.max() <= 1.2 and 0.8 <= contrast.min() and contrast.max() <= 1.2
    assert 0.45 < order.mean() < 0.55


def _params(n: int, **values: float) -> torch.Tensor:
    p = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]]).repeat(n, 1)
    for i, key in enumerate(("angle", "dx", "dy", "scale", "brightness", "contrast")):
        if key in values:
            p[:, i] = values[key]
    return p


def test_identity_parameters_leave_the_image_alone():
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(apply_params(x, _params(4)), x)


def test_whole_pixel_shift_moves_the_digit_and_fills_black():
    x = _digits(1)
    out = apply_params(x, _params(1, dx=2, dy=-3))
    expected = torch.zeros_like(x)
    expected[:, :, 5:17, 14:18] = 1.0
    assert torch.equal(out, expected)


def test_quarter_turn_and_brightness():
    x = _digits(1)
    turned = apply_params(x, _params(1, angle=torch.pi / 2))
    assert torch.equal(turned, x.transpose(2, 3).flip(2)) or torch.equal(turned, x.transpose(2, 3).flip(3))
    dimmer = apply_params(x, _params(1, brightness=0.8))
    assert torch.allclose(dimmer, 0.8 * x)
