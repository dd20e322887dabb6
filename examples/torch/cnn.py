#!/usr/bin/python3
"""A small convolutional network on Fashion-MNIST, trained data-parallel
through shoal's parameter servers:

    tools/shoal-run -n 2 -s 1 -- /usr/bin/python3 examples/torch/cnn.py --epochs 10

Two convolutions (3x3, 16 and 32 channels, each followed by ReLU and 2x2
max pooling) and two fully connected layers (1568-128-10).  Default: bsp,
SGD lr 0.05 momentum 0.9 with a cosine schedule on the servers, batch 64
per worker.  --help lists the rest; the loop is in common.py, the model in
models.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import models  # noqa: E402

if __name__ == "__main__":
    common.run("cnn.py", "Train a two-convolution CNN on Fashion-MNIST with shoal.", models.cnn,
               models.to_input("cnn"), {"lr": 0.05})
