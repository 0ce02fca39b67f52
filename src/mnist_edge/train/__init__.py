"""The training side (torch): the notebooks' architectures and their recipes, MNIST and its augmentations, the
training loop and its checkpoints."""
