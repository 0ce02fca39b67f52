import pytest
import torch

from mnist_edge.architectures import arch_info, count_macs, count_params, create_model, list_models
from mnist_edge.errors import MnistEdgeError

EXPECTED_PARAMS = {
    "basic": 8_490,
    "inception": 97_298,
    "wide": 3_973_762,
    "convstack": 569_186,
    "twoblock": 50_186,
    "tiny": 12_364,
}


def test_registry_holds_the_six_notebook_architectures():
    assert sorted(list_models()) == sorted(EXPECTED_PARAMS)


@pytest.mark.parametrize("name", EXPECTED_PARAMS)
def test_parameter_count_matches_notebook(name):
    assert count_params(create_model(name)) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", EXPECTED_PARAMS)
@pytest.mark.parametrize("batch", [1, 7])
def test_logits_shape(name, batch):
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.rand(batch, 1, 28, 28))
    assert out.shape == (batch, 10)
    assert torch.isfinite(out).all()


def test_only_tiny_normalizes_its_input():
    tiny = create_model("tiny").eval()
    with torch.no_grad():
        x = torch.rand(2, 1, 28, 28)
        expected = tiny.net((x - 0.1307) / 0.3081)
        assert torch.allclose(tiny(x), expected)
    assert [n for n in list_models() if arch_info(n).normalize] == ["tiny"]


def test_macs_of_basic_by_hand():
    # conv1: 10*24*24 outputs x 25 taps; conv2: 20*8*8 x 250; fc: 10 x 320
    assert count_macs(create_model("basic")) == 10 * 24 * 24 * 25 + 20 * 8 * 8 * 250 + 10 * 320


def test_twoblock_fc_uses_xavier_uniform():
    torch.manual_seed(0)
    weight = create_model("twoblock").net.fc.weight
    bound = (6 / (3136 + 10)) ** 0.5  # xavier bound; default Linear init would be 1/sqrt(3136)
    assert weight.abs().max() <= bound
    assert weight.abs().max() > 1 / 3136**0.5


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(MnistEdgeError, match="unknown architecture 'resnet'.*tiny"):
        create_model("resnet")
