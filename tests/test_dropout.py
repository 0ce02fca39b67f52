"""The fast CPU dropout: torch's dropout in distribution, reproducible from torch's seed, in every layout."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mnist_edge.train.architectures import create_model
from mnist_edge.train.dropout import Dropout, dropout


def test_drop_rate_and_scale_match_torch() -> None:
    torch.manual_seed(0)
    x = torch.ones(200_000)
    out = dropout(x, 0.1)
    kept = out != 0
    # 200k Bernoulli(0.9) draws: the kept fraction is within 0.005 of 0.9 with overwhelming probability
    assert abs(float(kept.float().mean()) - 0.9) < 0.005
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.9), rtol=1e-4)  # kept ones scaled by 1/(1-p)
    assert abs(float(out.mean()) - 1.0) < 0.01  # unbiased, as F.dropout


def test_seeded_by_torch_and_differs_per_call() -> None:
    x = torch.randn(4, 8, 28, 28)
    torch.manual_seed(3)
    first, second = dropout(x, 0.1), dropout(x, 0.1)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.1), first) and torch.equal(dropout(x, 0.1), second)
    assert not torch.equal(first, second)


def test_gradient_is_the_mask() -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 16, requires_grad=True)
    out = dropout(x, 0.25)
    out.sum().backward()
    assert x.grad is not None
    expected = (out != 0).float() / (1 - 0.25)
    assert torch.allclose(x.grad, expected, rtol=1e-4)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_every_layout_drops_whole_elements_in_place(layout: str) -> None:
    torch.manual_seed(2)
    x = torch.rand(8, 16, 14, 14) + 1.0  # no zeros of its own: a zero out is a dropped element
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = x[:, ::2]  # neither layout: torch's own dropout
    out = dropout(x, 0.5)
    assert out.shape == x.shape
    kept = out != 0
    assert torch.allclose(out[kept], x[kept] * 2, rtol=1e-4)
    assert 0.45 < float(kept.float().mean()) < 0.55


@settings(max_examples=40, deadline=None)
@given(p=st.floats(0.0, 1.0), n=st.integers(0, 300))
def test_any_probability_is_a_valid_dropout(p: float, n: int) -> None:
    x = torch.rand(n) + 1.0
    out = dropout(x, p)
    assert out.shape == x.shape and bool(torch.isfinite(out).all())
    kept = out != 0
    if p == 1.0:
        assert not kept.any()
    if p == 0.0:
        assert torch.equal(out, x)
    assert torch.allclose(out[kept], x[kept] / (1 - p), rtol=1e-3)


def test_eval_mode_and_bad_probability() -> None:
    x = torch.randn(10)
    assert torch.equal(dropout(x, 0.5, training=False), x)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    with pytest.raises(ValueError):
        dropout(x, 1.5)


def test_notebook_networks_use_it() -> None:
    # tiny's four dropout layers are this one: a regression to nn.Dropout would bring back the slow masks
    layers = [m for m in create_model("tiny").modules() if isinstance(m, torch.nn.Dropout)]
    assert len(layers) == 4 and all(type(m) is Dropout for m in layers)
    model = create_model("tiny").train()
    x = torch.rand(2, 1, 28, 28)
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(0)
    assert torch.equal(model(x), a)  # seeded through torch, like F.dropout
