"""Facts shared by training, export and the edge runtime.

Everything a deployed model needs to know about its input lives here and is written into
each exported artifact, so training and deployment cannot disagree.
"""

from __future__ import annotations

# Every exported model takes raw pixels in [0, 1], white digit on black (MNIST polarity);
# a model's own normalization is part of its graph.
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
IMAGE_SIZE = 28
INPUT_SHAPE = (1, IMAGE_SIZE, IMAGE_SIZE)  # C, H, W; the batch dimension is dynamic
LABELS = tuple(str(d) for d in range(10))
NUM_CLASSES = len(LABELS)

# "Not a digit": an open-set model learns an eleventh class from generated non-digits (synthetic.py) and its
# exported graph has a second output, the probability that the image is no digit at all. The threshold that
# turns it into a refusal is chosen at training time on held-out images and travels in the file's metadata.
NOT_DIGIT_NAME = "not_digit"  # the output: float32 [N] in [0, 1]
OPEN_SET_CLASSES = NUM_CLASSES + 1  # what an open-set network's last layer has during training
THRESHOLD_KEY = "not_digit_threshold"  # metadata: refuse when not_digit >= this
TEMPERATURE_KEY = "temperature"  # metadata: the temperature already divided into the logits (calibration)

# The MNIST training set's pixel statistics (on [0, 1] pixels), used by Normalize((0.1307,), (0.3081,)).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

# MNIST's own digit box: LeCun's page fits each digit into 20x20 and centres it by mass in 28x28.
DIGIT_BOX = 20



def refuses(not_digit: float, threshold: float) -> bool:
    """The one "not a digit" decision, wherever an answer is given."""
    return not_digit >= threshold


INPUT_SPEC = (
    f"{INPUT_NAME}: float32 [N,{','.join(map(str, INPUT_SHAPE))}], pixels in [0,1], white digit on black"
)
