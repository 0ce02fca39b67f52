import math

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from mnist_edge.train.augment import apply_params, augment, sample_params


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
    assert brightness.min() >= 0.8 and brightness.max() <= 1.2 and contrast.min() >= 0.8 and contrast.max() <= 1.2
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


def _asymmetric(n: int = 1) -> torch.Tensor:
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 6:22, 12:15] = 1.0
    x[:, :, 6:9, 12:20] = 0.6  # a "7"-like hook: no rotation or mirror maps it onto itself
    return x


@pytest.mark.parametrize(("angle", "dx", "dy", "scale"), [(30, 0, 0, 1.0), (-15, 2, -3, 1.1), (20, -1, 2, 0.9)])
def test_the_warp_is_torchvisions_random_affine(angle, dx, dy, scale):
    """RandomAffine(degrees, translate, scale) calls F.affine with what it drew: the same numbers must give the
    same image."""
    x = _asymmetric()
    expected = TF.affine(
        x, angle=angle, translate=[dx, dy], scale=scale, shear=[0.0, 0.0], interpolation=InterpolationMode.NEAREST,
        fill=0,
    )
    assert torch.equal(apply_params(x, _params(1, angle=math.radians(angle), dx=dx, dy=dy, scale=scale)), expected)
    mirrored = apply_params(x, _params(1, angle=math.radians(-angle), dx=dx, dy=dy, scale=scale))
    assert not torch.equal(mirrored, expected)  # the direction of rotation matters


@pytest.mark.parametrize("factor", [0.8, 0.9, 1.1, 1.2])
def test_brightness_and_contrast_are_torchvisions(factor):
    x = _asymmetric(2) * 0.7 + 0.1
    brighter = apply_params(x, _params(2, brightness=factor))
    assert torch.allclose(brighter, TF.adjust_brightness(x, factor), atol=1e-6)
    contrasted = apply_params(x, _params(2, contrast=factor))
    assert torch.allclose(contrasted, torch.stack([TF.adjust_contrast(img, factor) for img in x]), atol=1e-6)
    assert not torch.allclose(contrasted, x, atol=1e-3)  # a no-op contrast jitter fails here


def test_jitter_order_follows_the_order_flag():
    x = _asymmetric(1) * 0.9
    brightness_first = apply_params(x, _params(1, brightness=1.2, contrast=0.8))
    p = _params(1, brightness=1.2, contrast=0.8)
    p[:, 6] = 0.0
    contrast_first = apply_params(x, p)
    assert torch.allclose(brightness_first, TF.adjust_contrast(TF.adjust_brightness(x, 1.2), 0.8), atol=1e-6)
    assert torch.allclose(contrast_first, TF.adjust_brightness(TF.adjust_contrast(x, 0.8), 1.2), atol=1e-6)
    assert not torch.allclose(brightness_first, contrast_first)
