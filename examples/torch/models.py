"""The models of the shoal PyTorch examples, in one place: mlp.py and
cnn.py train them through shoal, and perf/train/torch-train.py trains the
same ones with PyTorch DDP and in one process, for perf/train-compare.
(PyTorch only: importing this needs no shoal.)"""
from torch import nn


def mlp(hidden=256):
    """784-hidden-10, ReLU (shoal-train's default model)."""
    return nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def cnn():
    """Two convolutions (3x3, 16 and 32 channels, each with ReLU and 2x2
    max pooling) and two fully connected layers (1568-128-10); input
    [N, 1, 28, 28]."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def to_input(name):
    """What each model takes: rows of 784 pixels, or 1x28x28 images."""
    return (lambda x: x.view(-1, 1, 28, 28)) if name == "cnn" else (lambda x: x)
