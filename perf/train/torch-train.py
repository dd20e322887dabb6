#!/usr/bin/python3
# torch-train.py -- the PyTorch side of perf/train-compare: the MLP that
# shoal-train trains by default (784-256-10, ReLU, cross-entropy, PyTorch's
# default init), or the CNN of examples/torch/cnn.py (--model cnn; both
# from examples/torch/models.py), SGD with momentum and a per-iteration
# cosine learning rate, on Fashion-MNIST read from the same IDX .gz files.
#
#   torch-train.py --single [--batch 128] ...          one process
#   torch-train.py --ddp --rank R --world W --store F  one DDP rank (gloo);
#                  F is a file in a fresh directory (file:// rendezvous: no
#                  port to choose; gloo's own sockets are kernel-chosen)
#
# Each rank owns samples rank, rank+W, ... (like shoal-train), reshuffled
# every epoch from --seed, and drops the last partial batch.  The clock runs
# over the training loop only: reading the files, building the model and the
# final test evaluation are outside it.  Rank 0 (or the single process)
# prints one JSON line on stdout:
#   {"method": ..., "samples_per_s": ..., "train_s": ..., "cpu_s": ..., "accuracy": ...}
# (cpu_s: CPU time of the training loop, summed over the ranks)
import argparse
import gzip
import json
import math
import os
import struct
import sys
import time


def fail(msg):
    print("torch-train: " + msg, file=sys.stderr)
    sys.exit(2)


try:
    import numpy as np
    import torch
    import torch.distributed as dist
    import torch.nn as nn
    import torch.nn.functional as F
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "examples", "torch"))
    import models
except ImportError as e:
    print("torch-train: %s: install the Debian package python3-torch "
          "(tools/install-deps --perf) and run with /usr/bin/python3" % e, file=sys.stderr)
    sys.exit(77)


def read_idx(path, magic, ndim):
    """An IDX file (gzip or raw) as a uint8 numpy array, checked."""
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        fail("%s: %s" % (path, e))
    if len(raw) < 4 + 4 * ndim:
        fail("%s: truncated header (%d bytes)" % (path, len(raw)))
    m = struct.unpack(">I", raw[:4])[0]
    if m != magic:
        fail("%s: magic number 0x%08x, expected 0x%08x" % (path, m, magic))
    dims = struct.unpack(">%dI" % ndim, raw[4:4 + 4 * ndim])
    n = 1
    for d in dims:
        n *= d
    body = raw[4 + 4 * ndim:]
    if len(body) != n:
        fail("%s: %d data bytes, the header %s says %d" % (path, len(body), dims, n))
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def find(data_dir, name):
    for suffix in (".gz", ""):
        p = os.path.join(data_dir, name + suffix)
        if os.path.exists(p):
            return p
    fail("%s: no %s[.gz] (Debian package dataset-fashion-mnist)" % (data_dir, name))


def load(data_dir, kind):
    img = read_idx(find(data_dir, kind + "-images-idx3-ubyte"), 0x00000803, 3)
    lab = read_idx(find(data_dir, kind + "-labels-idx1-ubyte"), 0x00000801, 1)
    if img.shape[0] != lab.shape[0]:
        fail("%s: %d %s images but %d labels" % (data_dir, img.shape[0], kind, lab.shape[0]))
    if lab.size and int(lab.max()) > 9:
        fail("%s: %s label %d out of range 0..9" % (data_dir, kind, int(lab.max())))
    x = torch.from_numpy(img.reshape(img.shape[0], -1).astype(np.float32) / 255.0)
    y = torch.from_numpy(lab.astype(np.int64))
    return x, y


def main():
    ap = argparse.ArgumentParser(description="PyTorch reference for perf/train-compare")
    ap.add_argument("--single", action="store_true")
    ap.add_argument("--ddp", action="store_true")
    ap.add_argument("--rank", type=int, default=0)
    ap.add_argument("--world", type=int, default=1)
    ap.add_argument("--store", default="")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64, help="per process")
    ap.add_argument("--iters-per-epoch", type=int, default=0, help="cap (short runs)")
    ap.add_argument("--model", default="mlp", choices=("mlp", "cnn"))
    ap.add_argument("--hidden", type=int, default=256, help="mlp")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args()
    if a.single == a.ddp:
        fail("give exactly one of --single and --ddp")
    if a.ddp and (a.world < 1 or not 0 <= a.rank < a.world or not a.store):
        fail("--ddp needs --rank R --world W (0 <= R < W) and --store FILE")
    if a.epochs < 1 or a.batch < 1:
        fail("--epochs and --batch must be positive")

    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    rank, world = (a.rank, a.world) if a.ddp else (0, 1)
    method = "pytorch-ddp" if a.ddp else "pytorch-single"

    x_all, y_all = load(a.data, "train")
    x, y = x_all[rank::world].contiguous(), y_all[rank::world].contiguous()
    del x_all, y_all
    xt, yt = (load(a.data, "t10k") if rank == 0 else (None, None))
    iters = x.shape[0] // a.batch
    if a.iters_per_epoch > 0:
        iters = min(iters, a.iters_per_epoch)
    if iters < 1:
        fail("a shard of %d samples holds no batch of %d" % (x.shape[0], a.batch))

    torch.manual_seed(a.seed)
    model = models.mlp(a.hidden) if a.model == "mlp" else models.cnn()
    to_input = models.to_input(a.model)
    if a.ddp:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        dist.init_process_group("gloo", init_method="file://" + a.store, rank=rank,
                                world_size=world)
        # DDP broadcasts rank 0's initial parameters: all ranks start equal.
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum)
    total = iters * a.epochs
    gen = torch.Generator()

    if a.ddp:
        dist.barrier()
    train_s = 0.0
    cpu_s = 0.0  # CPU time of this process (all its threads) in the loop
    k = 0
    for e in range(a.epochs):
        gen.manual_seed(a.seed * 1000003 + e * 101 + rank)
        order = torch.randperm(x.shape[0], generator=gen)
        model.train()
        t0 = time.perf_counter()
        c0 = time.process_time()
        loss_sum = 0.0
        for t in range(iters):
            idx = order[t * a.batch:(t + 1) * a.batch]
            xb, yb = x[idx], y[idx]
            lr = a.lr * 0.5 * (1.0 + math.cos(math.pi * k / total))
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(to_input(xb)), yb)
            loss.backward()
            opt.step()
            k += 1
            if t == iters - 1:
                loss_sum = float(loss)
        dt = time.perf_counter() - t0
        cpu_s += time.process_time() - c0
        train_s += dt
        if rank == 0 and not a.quiet:
            print("%s: epoch %d/%d  loss %.4f  %.1f s  %.0f samples/s" %
                  (method, e + 1, a.epochs, loss_sum, dt, iters * a.batch * world / dt),
                  file=sys.stderr, flush=True)

    if a.ddp:
        # The job's time is its slowest rank's; its CPU time all ranks'.
        t = torch.tensor([train_s], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        train_s = float(t[0])
        t = torch.tensor([cpu_s], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        cpu_s = float(t[0])
    acc = None
    if rank == 0:
        net = model.module if a.ddp else model
        net.eval()
        with torch.no_grad():
            pred = torch.cat([net(to_input(xt[i:i + 1000])).argmax(dim=1)
                              for i in range(0, xt.shape[0], 1000)])
            acc = float((pred == yt).sum()) / yt.shape[0]
        samples = total * a.batch * world
        print(json.dumps({"method": method, "model": a.model, "workers": world, "batch": a.batch,
                          "global_batch": a.batch * world, "epochs": a.epochs,
                          "iterations": total, "samples": samples, "train_s": train_s,
                          "cpu_s": cpu_s,
                          "samples_per_s": samples / train_s, "accuracy": acc,
                          "torch": torch.__version__, "threads": torch.get_num_threads()}),
              flush=True)
    if a.ddp:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
