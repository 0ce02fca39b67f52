import pytest
import torch
from torch import nn

from mnist_edge.train.architectures import arch_info, create_model, list_models, min_train_batch, register_model
from mnist_edge.train.cost import count_macs, count_params
from mnist_edge.train.recipes import RECIPES, Recipe
from mnist_edge.errors import MnistEdgeError

EXPECTED_PARAMS = {
    "basic": 8_490,
    "inception": 97_298,
    "wide": 3_973_762,
    "convstack": 569_186,
    "twoblock": 50_186,
    "tiny": 12_364,
}


def test_registry_holds_the_six_notebook_architectures_and_edgenet():
    assert sorted(list_models()) == sorted([*EXPECTED_PARAMS, "edgenet"])


@pytest.mark.parametrize("name", EXPECTED_PARAMS)
def test_parameter_count_matches_notebook(name):
    assert count_params(create_model(name)) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", [*EXPECTED_PARAMS, "edgenet"])
@pytest.mark.parametrize("batch", [1, 7])
def test_logits_shape(name, batch):
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.rand(batch, 1, 28, 28))
        logits, not_digit = model.deploy(torch.rand(batch, 1, 28, 28))
    assert out.shape == (batch, 11 if model.open_set else 10)  # an open-set network trains an 11th class
    assert logits.shape == (batch, 10) and torch.isfinite(out).all()
    assert (not_digit is None) != model.open_set and (not_digit is None or not_digit.shape == (batch,))


def test_only_tiny_and_edgenet_normalize_their_input():
    tiny = create_model("tiny").eval()
    with torch.no_grad():
        x = torch.rand(2, 1, 28, 28)
        expected = tiny.net((x - 0.1307) / 0.3081)
        assert torch.allclose(tiny(x), expected)
    assert [n for n in list_models() if arch_info(n).normalize] == ["tiny", "edgenet"]


def test_macs_of_basic_by_hand():
    # conv1: 10*24*24 outputs x 25 taps; conv2: 20*8*8 x 250; fc: 10 x 320
    assert count_macs(create_model("basic")) == 10 * 24 * 24 * 25 + 20 * 8 * 8 * 250 + 10 * 320


def test_twoblock_fc_uses_xavier_uniform():
    torch.manual_seed(0)
    weight = create_model("twoblock").net.fc.weight
    bound = (6 / (3136 + 10)) ** 0.5  # xavier bound; default Linear init would be 1/sqrt(3136)
    assert weight.abs().max() <= bound
    assert weight.abs().max() > 1 / 3136**0.5


def test_the_registry_refuses_a_second_architecture_of_the_same_name_or_one_without_recipes():
    register = register_model(notebook="-", description="a copy", reported_accuracy=None)

    def tiny() -> torch.nn.Module:
        return torch.nn.Flatten()

    def untrained() -> torch.nn.Module:
        return torch.nn.Flatten()

    with pytest.raises(ValueError, match="'tiny' is already registered"):
        register(tiny)
    with pytest.raises(ValueError, match="'untrained' has no recipe"):
        register(untrained)
    assert arch_info("tiny").description != "a copy" and "untrained" not in list_models()
    assert set(RECIPES) == set(list_models())


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(MnistEdgeError, match="unknown architecture 'resnet'.*tiny"):
        create_model("resnet")


@pytest.mark.parametrize("name", EXPECTED_PARAMS)
def test_every_architecture_keeps_its_notebook_recipe_by_name(name):
    info = arch_info(name)
    assert info.get_recipe("notebook").schedule == "constant"  # no notebook schedules its LR
    assert info.get_recipe(None) == info.recipe == next(iter(info.recipes.values()))


def test_tiny_defaults_to_the_notebook_recipe_annealed():
    info = arch_info("tiny")
    notebook, default = info.get_recipe("notebook"), info.recipe
    assert (
        notebook.optimizer, notebook.lr, notebook.momentum, notebook.batch_size, notebook.epochs, notebook.augment,
    ) == ("sgd", 0.01, 0.9, 128, 20, True)
    # the same recipe but for the schedule: annealed from a higher peak
    assert default == type(default)(**{**notebook.as_dict(), "schedule": "cosine", "lr": 0.03})


def test_notebook_000_models_default_to_its_recipe_annealed():
    info = arch_info("basic")
    assert info.recipe == type(info.recipe)(
        **{**info.get_recipe("notebook").as_dict(), "schedule": "cosine", "lr": 0.05}
    )
    inception = arch_info("inception")  # the other network of notebook 000: the same two recipes
    assert inception.recipes == info.recipes


def test_cosine_schedule_anneals_from_the_recipe_lr_to_zero():
    recipe = arch_info("tiny").recipe
    lrs = [recipe.lr_at(step, 100) for step in range(101)]
    assert recipe.schedule == "cosine" and lrs[0] == recipe.lr and lrs[-1] == pytest.approx(0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[50] == pytest.approx(recipe.lr / 2)
    constant = arch_info("wide").recipe
    assert {constant.lr_at(s, 100) for s in range(101)} == {constant.lr}


def test_unknown_recipe_is_a_clear_error():
    with pytest.raises(MnistEdgeError, match="--recipe fast: tiny has recipes annealed, notebook"):
        arch_info("tiny").get_recipe("fast")


def test_convstack_defaults_to_its_notebook_recipe_annealed():
    info = arch_info("convstack")
    assert info.recipe == type(info.recipe)(
        **{**info.get_recipe("notebook").as_dict(), "schedule": "cosine", "lr": 3e-4}
    )


def test_edgenet_is_small_and_int8_friendly():
    model = create_model("edgenet")
    assert count_params(model) <= 25_000 and count_macs(model) < 2.5 * count_macs(create_model("tiny"))
    layers = list(model.net)
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)][:-1]  # the last is the 1x1 classifier
    for i in convs:  # every conv but the classifier is followed by a BN that folds into it
        assert isinstance(layers[i + 1], nn.BatchNorm2d) and layers[i].bias is None
        # a 3x3 conv's ReLU fuses into it; the head's depthwise conv pools the whole 7x7 map to 1x1
        assert (
            isinstance(layers[i + 2], nn.ReLU)
            if layers[i].kernel_size == (3, 3)
            else layers[i].groups == layers[i].in_channels
        )
    assert all(layers[i].out_channels >= 16 for i in convs)
    allowed = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Flatten)
    assert all(isinstance(m, allowed) for m in layers)
    assert model.eval()(torch.zeros(1, 1, 28, 28)).shape == (1, 11)  # ten digits and "not a digit"


def test_edgenet_has_only_its_robust_recipe():
    info = arch_info("edgenet")
    assert list(info.recipes) == ["robust"] and info.recipe.augmentation == "robust" and info.recipe.augment
    with pytest.raises(MnistEdgeError, match="edgenet has recipes robust"):
        info.get_recipe("notebook")


def test_onecycle_warms_up_then_anneals_to_zero():
    recipe = Recipe(optimizer="sgd", lr=0.1, batch_size=1, epochs=1, schedule="onecycle", warmup=0.2)
    lrs = [recipe.lr_at(step, 100) for step in range(101)]
    assert lrs[0] == pytest.approx(0.1 / 25) and lrs[20] == pytest.approx(0.1) and max(lrs) == lrs[20]
    assert all(a < b for a, b in zip(lrs[:20], lrs[1:21])) and all(a >= b for a, b in zip(lrs[20:], lrs[21:]))
    assert lrs[60] == pytest.approx(0.05) and lrs[-1] == pytest.approx(0, abs=1e-12)


def test_every_registered_recipe_passes_the_training_checks():
    from mnist_edge.train.validate import check_recipe, recipe_from_dict

    for name in list_models():
        for recipe in arch_info(name).recipes.values():
            assert check_recipe(recipe) is recipe
            assert recipe_from_dict(recipe.as_dict(), name) == recipe


def test_min_train_batch_probes_without_side_effects():
    # edgenet's BatchNorm after the global depthwise conv sees a 1x1 map: one image gives it no batch statistics
    model, tiny = create_model("edgenet"), create_model("tiny")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    rng = torch.get_rng_state()
    assert min_train_batch(model) == 2 and min_train_batch(tiny) == 1
    assert torch.equal(torch.get_rng_state(), rng)  # tiny's dropout in the probe did not use up seeded draws
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # running statistics untouched
