#!/usr/bin/python3
"""A small convolutional network on Fashion-MNIST, trained data-parallel
through shoal's parameter servers:

    tools/shoal-run -n 2 -s 1 -- /usr/bin/python3 examples/torch/cnn.py --epochs 10

Two convolutions (3x3, 16 and 32 channels, each followed by ReLU and 2x2
max pooling) and two fully connected layers (1568-128-10).  Default: bsp,
SGD lr 0.05 momentum 0.9 with a cosine schedule on the servers, batch 64
per worker.  --help lists the rest; the loop is in common.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from torch import nn  # noqa: E402


def make_model():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


if __name__ == "__main__":
    common.run("cnn.py", "Train a two-convolution CNN on Fashion-MNIST with shoal.", make_model,
               lambda x: x.view(-1, 1, 28, 28), {"lr": 0.05})
