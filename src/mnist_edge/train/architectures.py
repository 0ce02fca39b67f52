"""The six architectures of the reference notebooks, layer by layer, and `edgenet`, behind one registry.

Each network returns raw logits [N, 10] (the notebooks' log_softmax moves into the loss: same
predictions). `create_model` wraps it with the notebook's input normalization, so every model takes
[0, 1] pixels and the normalization travels inside exported graphs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mnist_edge.train.dropout import Dropout, dropout
from mnist_edge.errors import MnistEdgeError
from mnist_edge.spec import INPUT_SHAPE, MNIST_MEAN, MNIST_STD, NUM_CLASSES, OPEN_SET_CLASSES
from mnist_edge.train.recipes import RECIPES, Recipe


@dataclass(frozen=True)
class ArchInfo:
    name: str
    build: Callable[[], nn.Module]
    notebook: str
    description: str
    reported_accuracy: float | None  # percent, as the notebook reported it
    recipes: dict[str, Recipe]  # recipes.RECIPES[name]: "notebook" is the notebook's own; the first is the default
    normalize: tuple[float, float] | None  # (mean, std) on [0, 1] pixels, or None
    open_set: bool = False  # the network has an eleventh output, "not a digit"

    @property
    def recipe(self) -> Recipe:
        """The default recipe."""
        return next(iter(self.recipes.values()))

    def get_recipe(self, name: str | None) -> Recipe:
        if name is None:
            return self.recipe
        try:
            return self.recipes[name]
        except KeyError:
            raise MnistEdgeError(f"--recipe {name}: {self.name} has recipes {', '.join(self.recipes)}") from None


_REGISTRY: dict[str, ArchInfo] = {}


def register_model(
    *,
    notebook: str,
    description: str,
    reported_accuracy: float | None,
    normalize: tuple[float, float] | None = None,
    open_set: bool = False,
) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    """Register the architecture its builder's name names, with its recipes from recipes.RECIPES."""

    def register(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        name = build.__name__
        if name in _REGISTRY:  # a second builder of the same name would silently replace the first
            raise ValueError(f"architecture {name!r} is already registered")
        if not RECIPES.get(name):
            raise ValueError(f"architecture {name!r} has no recipe in recipes.RECIPES")
        _REGISTRY[name] = ArchInfo(
            name, build, notebook, description, reported_accuracy, RECIPES[name], normalize, open_set
        )
        return build

    return register


def list_models() -> list[str]:
    return list(_REGISTRY)


def arch_info(name: str) -> ArchInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MnistEdgeError(f"unknown architecture {name!r}; choose one of: {', '.join(_REGISTRY)}") from None


class MnistClassifier(nn.Module):
    """A notebook network behind the shared interface: [N,1,28,28] pixels in [0,1] -> logits [N,10].

    `forward` gives what the network trains on: [N,10], or [N,11] for an open-set network (the eleventh is
    "not a digit"). `deploy` gives what every exported file computes (see Deployed)."""

    mean: torch.Tensor  # buffers, registered below
    std: torch.Tensor
    temperature: torch.Tensor  # open-set networks only
    not_digit_threshold: torch.Tensor

    def __init__(
        self, arch: str, net: nn.Module, normalize: tuple[float, float] | None, open_set: bool = False
    ) -> None:
        super().__init__()
        self.arch = arch
        self.net = net
        self.normalized = normalize is not None
        self.open_set = open_set
        mean, std = normalize or (0.0, 1.0)
        self.register_buffer("mean", torch.tensor(mean), persistent=False)
        self.register_buffer("std", torch.tensor(std), persistent=False)
        if open_set:  # fitted after training (calibrate.py) and saved with the weights, so they travel together
            self.register_buffer("temperature", torch.tensor(1.0))
            self.register_buffer("not_digit_threshold", torch.tensor(1.0))  # 1.0: refuses only a certain non-digit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalized:
            x = (x - self.mean) / self.std
        return self.net(x)

    def deploy(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Calibrated digit logits [N,10] and, for an open-set network, the probability [N] of "not a digit"."""
        raw = self(x)
        if not self.open_set:
            return raw, None
        return raw[:, :NUM_CLASSES] / self.temperature, not_digit_score(raw)


def not_digit_score(raw: torch.Tensor) -> torch.Tensor:
    """The probability [N] of "not a digit" from an open-set network's raw outputs [N,11]: the softmax over all
    eleven, at the eleventh (one Softmax op, which every runtime and quantizer handles)."""
    return torch.softmax(raw, dim=1)[:, NUM_CLASSES]


class Deployed(nn.Module):
    """What an exported file computes: `logits`, and `not_digit` for an open-set network (spec.py)."""

    def __init__(self, model: MnistClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        logits, not_digit = self.model.deploy(x)
        return logits if not_digit is None else (logits, not_digit)


def min_train_batch(model: nn.Module) -> int:
    """Images a training step needs: 1, or 2 where a BatchNorm normalizes a 1x1 map (batch statistics need two
    values)."""
    probe = copy.deepcopy(model).cpu().train()  # a copy: a forward in train mode moves BatchNorm's running statistics
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):  # nor may it use up the seeded dropout draws
            probe(torch.zeros(1, *INPUT_SHAPE))
    except ValueError:  # torch: "Expected more than 1 value per channel when training"
        return 2
    return 1


def create_model(name: str) -> MnistClassifier:
    info = arch_info(name)
    return MnistClassifier(name, info.build(), info.normalize, info.open_set)


# --- notebook 000: basic CNN and the CNN with two Inception-A modules -------------------------------

class BasicNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.mp = nn.MaxPool2d(2)
        self.fc = nn.Linear(320, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.mp(self.conv1(x)))
        x = F.relu(self.mp(self.conv2(x)))
        return self.fc(x.flatten(1))


class InceptionA(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch5x5_1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch5x5_2 = nn.Conv2d(16, 24, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch3x3dbl_2 = nn.Conv2d(16, 24, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = nn.Conv2d(24, 24, kernel_size=3, padding=1)
        self.branch_pool = nn.Conv2d(in_channels, 24, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b5, b3, bp], 1)  # 16 + 24 + 24 + 24 = 88 channels


class InceptionNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(88, 20, kernel_size=5)
        self.incept1 = InceptionA(in_channels=10)
        self.incept2 = InceptionA(in_channels=20)
        self.mp = nn.MaxPool2d(2)
        self.fc = nn.Linear(1408, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.mp(self.conv1(x)))
        x = self.incept1(x)
        x = F.relu(self.mp(self.conv2(x)))
        x = self.incept2(x)
        return self.fc(x.flatten(1))


@register_model(
    notebook="000_f69d7aa103122d14",
    description="basic CNN: conv 10, conv 20 (5x5), FC 320",
    reported_accuracy=None,  # the notebook trains only the Inception CNN
)
def basic() -> nn.Module:
    return BasicNet()


@register_model(
    notebook="000_f69d7aa103122d14",
    description="CNN with two Inception-A modules, FC 1408",
    reported_accuracy=98.88,
)
def inception() -> nn.Module:
    return InceptionNet()


# --- notebook 001: wide CNN ---------------------------------------------------------------------------


class WideNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 150, 5, stride=1, padding=2)
        self.conv2 = nn.Conv2d(150, 64, 5, stride=1, padding=2)
        self.fc1 = nn.Linear(64 * 7 * 7, 1024)
        self.fc2 = nn.Linear(1024, 500)
        self.fc3 = nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        x = dropout(x, training=self.training)
        x = F.relu(self.fc2(x))
        x = dropout(x, training=self.training)
        return self.fc3(x)


@register_model(
    notebook="001_5728f5b63760230c",
    description="wide CNN: conv 150, conv 64 (5x5, pad 2), FC 1024/500/10 with dropout",
    reported_accuracy=99.0,
)
def wide() -> nn.Module:
    return WideNet()


# --- notebook 002: nn.Sequential CNN -------------------------------------------------------------------


@register_model(
    notebook="002_2128578c4b91858e",
    description="nn.Sequential: three unpadded 3x3 convs (32, 16, 8), maxpool, Linear 968/512/128/10",
    reported_accuracy=97.99,
)
def convstack() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, kernel_size=3, stride=1, padding=0),
        nn.ReLU(),
        nn.Conv2d(32, 16, kernel_size=3, stride=1, padding=0),
        nn.ReLU(),
        nn.Conv2d(16, 8, kernel_size=3, stride=1, padding=0),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=2),
        nn.Flatten(),
        nn.Linear(968, 512),
        nn.Linear(512, 128),
        nn.Linear(128, 10),
    )


# --- notebook 003: two conv blocks + FC ----------------------------------------------------------------


class TwoBlockNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, stride=1, padding=1), nn.ReLU(), nn.MaxPool2d(kernel_size=2, stride=2)
        )
        self.layer2 = nn.Sequential(
            nn.Conv2d(32, 64, kernel_size=3, stride=1, padding=1), nn.ReLU(), nn.MaxPool2d(kernel_size=2, stride=2)
        )
        self.fc = nn.Linear(7 * 7 * 64, 10)
        nn.init.xavier_uniform_(self.fc.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer2(self.layer1(x)).flatten(1))


@register_model(
    notebook="003_046b4e35bb6cf4bf",
    description="two conv blocks (32, 64, 3x3, pool) + FC 3136->10, xavier init",
    reported_accuracy=97.93,
)
def twoblock() -> nn.Module:
    return TwoBlockNet()


# --- notebook 004: tiny CNN with BatchNorm, no FC -------------------------------------------------------


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.dropout1 = Dropout(0.1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.dropout2 = Dropout(0.1)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv3 = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.dropout3 = Dropout(0.1)
        self.conv4 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn4 = nn.BatchNorm2d(16)
        self.dropout4 = Dropout(0.1)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.conv5 = nn.Conv2d(16, 16, 3, bias=False)
        self.bn5 = nn.BatchNorm2d(16)
        self.conv6 = nn.Conv2d(16, 32, 3, bias=False)
        self.conv7 = nn.Conv2d(32, 10, 1, bias=False)
        self.conv8 = nn.Conv2d(10, 10, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # conv -> ReLU -> BatchNorm -> dropout, as the notebook orders them (BN cannot fold into the conv)
        x = self.dropout1(self.bn1(F.relu(self.conv1(x))))
        x = self.pool1(self.dropout2(self.bn2(F.relu(self.conv2(x)))))
        x = self.dropout3(self.bn3(F.relu(self.conv3(x))))
        x = self.pool2(self.dropout4(self.bn4(F.relu(self.conv4(x)))))
        x = F.relu(self.conv6(self.bn5(F.relu(self.conv5(x)))))
        return self.conv8(self.conv7(x)).flatten(1)


@register_model(
    notebook="004_fa5cafab2b41519e",
    description="tiny CNN (<20k params): BatchNorm, dropout 0.1, 1x1 conv, no FC; augmentation",
    reported_accuracy=99.48,
    normalize=(MNIST_MEAN, MNIST_STD),
)
def tiny() -> nn.Module:
    return TinyNet()


# --- edge: designed here for robust edge deployment, not from a notebook --------------------------------


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    # conv -> BN -> ReLU: the BN folds into the conv at export and the ReLU fuses into it, so each block is
    # one Conv op in ONNX Runtime (one int8 QLinearConv when quantized).
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU()]


@register_model(
    notebook="-",
    description="edge CNN (<25k params): five conv-BN-ReLU 3x3 (16 | 16, 24 | 32, 32), global depthwise 7x7 conv, "
    "1x1 conv; says \"not a digit\"",
    reported_accuracy=None,
    normalize=(MNIST_MEAN, MNIST_STD),
    open_set=True,
)
def edgenet() -> nn.Module:
    # Every conv has >= 16 outputs (ONNX Runtime's int8 kernels fill 16 channels at a time), and the 7x7 stage
    # is 32 wide, a whole multiple: there 24 and 30 channels ran slower in int8 than 32. The only conv at full
    # resolution reads one channel, so it is cheap. The head is a global depthwise conv, one learned 7x7
    # weighting per channel, not global average pooling: digits are centred, so where a feature sits carries
    # information that averaging throws away. Trials (docs/edge-model.md) chose it and the five convs.
    return nn.Sequential(
        *_conv_bn_relu(1, 16),  # 28x28
        nn.MaxPool2d(2),
        *_conv_bn_relu(16, 16),  # 14x14
        *_conv_bn_relu(16, 24),
        nn.MaxPool2d(2),
        *_conv_bn_relu(24, 32),  # 7x7
        *_conv_bn_relu(32, 32),
        nn.Conv2d(32, 32, 7, groups=32, bias=False),  # global depthwise conv: a learned, position-aware pooling
        nn.BatchNorm2d(32),
        # the classifier as a 1x1 conv: no Linear layer, whose dynamic int8 file was larger
        nn.Conv2d(32, OPEN_SET_CLASSES, 1),
        nn.Flatten(),
    )

