#!/usr/bin/python3
"""A one-hidden-layer perceptron (784-256-10, ReLU) on Fashion-MNIST,
trained data-parallel through shoal's parameter servers:

    tools/shoal-run -n 2 -s 1 -- /usr/bin/python3 examples/torch/mlp.py --epochs 10

Default: bsp, SGD lr 0.1 momentum 0.9 with a cosine schedule on the
servers, batch 64 per worker (what shoal-train trains by default).
--mode aggregate applies the optimizer on the workers instead; --help
lists the rest.  The loop is in common.py, the model in models.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import models  # noqa: E402

if __name__ == "__main__":
    common.run("mlp.py", "Train a 784-256-10 MLP on Fashion-MNIST with shoal.", models.mlp,
               models.to_input("mlp"), {"lr": 0.1})
