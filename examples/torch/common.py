"""The training loop of the shoal PyTorch examples (mlp.py, cnn.py): a
data-parallel job on Fashion-MNIST through shoal's parameter servers.

Every rank runs the same script; shoal.torch.init() keeps the server
ranks there.  The loop is driven by the servers' iteration count
(opt.iteration), so a restarted worker, or every worker after a server
restarted from a checkpoint, continues where the job is.  In epoch e the
training set is permuted the same way on every worker (seed, e) and this
worker takes part `shard` of `shards` of it, every shards-th sample from
place `shard` on (opt.data_shard(e)); its batch t is the t-th slice of
that part.
"""
import argparse
import json
import math
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import shoal  # noqa: F401  (installed, or PYTHONPATH=python)
except ImportError:
    sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))  # the source tree

try:
    import numpy  # noqa: F401  (shoal.data reads the IDX files with it)
    import torch
    import torch.nn.functional as F
except ImportError as e:
    print("%s: install Debian's python3-torch and python3-numpy and run with /usr/bin/python3"
          % e, file=sys.stderr)
    sys.exit(77)

import shoal.data
import shoal.torch as st
from shoal import ShoalError


def parse(prog, about, d):
    ap = argparse.ArgumentParser(prog=prog, description=about + "  Run every rank with "
                                 "tools/shoal-run -n WORKERS -s SERVERS -- /usr/bin/python3 "
                                 + prog + " (or mpirun, srun).")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64, help="samples per worker per iteration")
    ap.add_argument("--iters-per-epoch", type=int, default=0,
                    help="cap the iterations per epoch (short runs)")
    ap.add_argument("--mode", default="bsp", choices=st.MODES,
                    help="aggregate: the servers average, each worker applies the optimizer; "
                    "bsp/async/ssp: the servers run it (default bsp)")
    ap.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    ap.add_argument("--lr", type=float, default=d["lr"])
    ap.add_argument("--momentum", type=float, default=0.9, help="SGD")
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--schedule", default="cosine", choices=("const", "cosine"),
                    help="learning rate over the job (default cosine)")
    ap.add_argument("--staleness", type=int, default=2, help="ssp")
    ap.add_argument("--compress", default="none",
                    help="on the wire: none, fp16, bf16, topk:R, topk-noef:R (default none)")
    ap.add_argument("--data", default=shoal.data.DEFAULT_DIR,
                    help="directory of the IDX files (default %(default)s)")
    ap.add_argument("--train-samples", type=int, default=0,
                    help="use the first N training images only (short runs)")
    ap.add_argument("--test-samples", type=int, default=0,
                    help="evaluate on the first N test images only")
    ap.add_argument("--eval-every", type=int, default=1,
                    help="epochs between test evaluations by worker 0 (0: at the end only)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="PyTorch threads per process")
    ap.add_argument("--checkpoint-dir", default=None, help="servers: write checkpoints there")
    ap.add_argument("--checkpoint-every", type=int, default=None,
                    help="servers: updates between checkpoints")
    ap.add_argument("--resume", action="store_true",
                    help="servers: start from the newest checkpoint in --checkpoint-dir")
    ap.add_argument("--save", default="", help="worker 0: save the final parameters (torch.save)")
    ap.add_argument("--json", action="store_true", help="worker 0: print the result as JSON")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    a = ap.parse_args()
    for k in ("epochs", "batch", "threads"):
        if getattr(a, k) < 1:
            ap.error("--%s must be a positive integer" % k)
    for k in ("iters_per_epoch", "train_samples", "test_samples", "eval_every", "staleness"):
        if getattr(a, k) < 0:
            ap.error("--%s must not be negative" % k.replace("_", "-"))
    if not a.lr > 0:
        ap.error("--lr must be positive")
    return a


def evaluate(model, x, y, to_input):
    model.eval()
    with torch.no_grad():
        correct, loss = 0, 0.0
        for i in range(0, x.shape[0], 1000):
            out = model(to_input(x[i:i + 1000]))
            loss += float(F.cross_entropy(out, y[i:i + 1000], reduction="sum"))
            correct += int((out.argmax(dim=1) == y[i:i + 1000]).sum())
    model.train()
    return correct / x.shape[0], loss / x.shape[0]


class Progress:
    """One progress line on stderr: rewritten in place on a terminal,
    otherwise a line every 10 s."""

    def __init__(self, quiet):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def due(self):
        """Whether a line is due now (the caller formats it only then)."""
        if self.quiet:
            return False
        now = time.monotonic()
        if now - self.last < (0.5 if self.tty else 10.0):
            return False
        self.last = now
        return True

    def show(self, text):
        if self.tty:
            sys.stderr.write("\r" + text + "\033[K")
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def line(self, text):
        if self.tty and not self.quiet:
            sys.stderr.write("\r\033[K")
        print(text, file=sys.stderr, flush=True)


def main(prog, about, make_model, to_input, defaults):
    a = parse(prog, about, defaults)
    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    # Server ranks serve in here and exit; workers go on.
    st.init(checkpoint_dir=a.checkpoint_dir, checkpoint_every=a.checkpoint_every,
            resume=a.resume or None)
    W, me = st.num_workers(), st.worker_index()

    x_np, y_np = shoal.data.load(a.data, "train")
    if a.train_samples:
        x_np, y_np = x_np[:a.train_samples], y_np[:a.train_samples]
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    ipe = x.shape[0] // (W * a.batch)
    if a.iters_per_epoch:
        ipe = min(ipe, a.iters_per_epoch)
    if ipe < 1:
        raise ShoalError("%d training samples hold no batch of %d for each of %d workers"
                         % (x.shape[0], a.batch, W))
    if me == 0:
        xt_np, yt_np = shoal.data.load(a.data, "t10k")
        if a.test_samples:
            xt_np, yt_np = xt_np[:a.test_samples], yt_np[:a.test_samples]
        xt, yt = torch.from_numpy(xt_np), torch.from_numpy(yt_np)

    # Each worker builds its own model (different seeds on purpose): the
    # join gives every worker worker 0's parameters.
    torch.manual_seed(a.seed + 7919 * me)
    model = make_model()
    if a.optimizer == "sgd":
        base = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum,
                               weight_decay=a.weight_decay)
    else:
        base = torch.optim.Adam(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    server_schedule = a.schedule if a.mode != "aggregate" else "const"
    opt = st.DistributedOptimizer(base, model.named_parameters(), mode=a.mode,
                                  iters_per_epoch=ipe, epochs=a.epochs, batch=a.batch,
                                  staleness=a.staleness, schedule=server_schedule,
                                  label=prog, compress=a.compress)
    total = opt.total
    prog_line = Progress(a.quiet or me != 0)
    if me == 0:
        prog_line.line("%s: %s, %d workers, %s, %d parameters, batch %d per worker, %d "
                       "iterations per epoch, %s%s over %s" % (
                           prog, a.mode, W, "%d servers co-located" % st.servers()
                           if st.colocated() else "%d servers" % st.servers(),
                           opt.nparams, a.batch, ipe,
                           a.optimizer, ", %s on the wire" % a.compress
                           if a.compress != "none" else "", opt.describe()))

    gen = torch.Generator()
    part, part_epoch = None, -1
    t_start = time.perf_counter()
    cpu0 = time.process_time()
    eval_s = 0.0  # worker 0's evaluations: not training time
    loss_avg, seen = 0.0, 0
    start_k = opt.iteration
    if start_k:  # rejoined a running job, or a server resumed from a checkpoint
        prog_line.line("worker %d: starting at iteration %d (epoch %d), where the job is"
                       % (me, start_k, start_k // ipe + 1))
    while opt.iteration < total:
        k = opt.iteration
        e, t = divmod(k, ipe)
        if e != part_epoch:
            member, shard, shards = opt.data_shard(e)
            # The permutation perf/train/torch-train.py --single draws: with
            # 2 workers taking its even and odd places, the global batches
            # are that single process's.
            gen.manual_seed(a.seed * 1000003 + e * 101)
            part = torch.randperm(x.shape[0], generator=gen)[shard::shards]
            part_epoch = e
        idx = part[t * a.batch:(t + 1) * a.batch]
        if a.mode == "aggregate" and a.schedule == "cosine":
            lr = a.lr * 0.5 * (1.0 + math.cos(math.pi * k / total))
            for g in opt.param_groups:
                g["lr"] = lr
        opt.zero_grad()
        loss = F.cross_entropy(model(to_input(x[idx])), y[idx])
        loss.backward()
        opt.step()
        loss_avg = 0.98 * loss_avg + 0.02 * float(loss) if seen else float(loss)
        seen += 1
        if me != 0:
            continue
        done = opt.iteration
        train_s = time.perf_counter() - t_start - eval_s
        if prog_line.due():
            prog_line.show("epoch %d/%d  iteration %d/%d  loss %.4f  %.0f samples/s" % (
                e + 1, a.epochs, t + 1, ipe, loss_avg,
                (done - start_k) * a.batch * W / max(train_s, 1e-9)))
        if done % ipe == 0 and done > k and done < total and a.eval_every and \
                (done // ipe) % a.eval_every == 0:
            t0 = time.perf_counter()
            acc, tl = evaluate(model, xt, yt, to_input)
            eval_s += time.perf_counter() - t0
            prog_line.line("epoch %d/%d done  test accuracy %.2f%%  test loss %.4f  loss %.4f  "
                           "%.1f s  %.0f samples/s overall" % (
                               done // ipe, a.epochs, 100 * acc, tl, loss_avg, train_s,
                               (done - start_k) * a.batch * W / max(train_s, 1e-9)))
    train_s = time.perf_counter() - t_start - eval_s
    cpu_s = time.process_time() - cpu0
    stats = opt.stats()
    opt.finish()
    if me != 0:
        return 0
    acc, tl = evaluate(model, xt, yt, to_input)
    samples = (total - start_k) * a.batch * W
    prog_line.line("epoch %d/%d done  test accuracy %.2f%%  test loss %.4f  loss %.4f  %.1f s  "
                   "%.0f samples/s overall" % (a.epochs, a.epochs, 100 * acc, tl, loss_avg,
                                               train_s, samples / max(train_s, 1e-9)))
    print("final test accuracy: %.2f%%" % (100 * acc), flush=True)
    n = max(stats["steps"], 1)
    print("shoal: %d steps; per step: push-pull %.0f us, %soverhead of the package %.1f us; "
          "%d gradient copies" % (stats["steps"], stats["push_pull_s"] / n * 1e6,
                                  "the optimizer's step %.0f us, " % (stats["optimizer_s"] / n
                                                                      * 1e6)
                                  if a.mode == "aggregate" else "", stats["overhead_us"],
                                  stats["grad_copies"]),
          file=sys.stderr, flush=True)
    if a.save:
        torch.save({n: p.detach().clone() for n, p in model.named_parameters()}, a.save)
    if a.json:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({"method": "shoal-torch-" + a.mode, "model": prog, "workers": W,
                          "batch": a.batch, "epochs": a.epochs, "iterations": total,
                          "samples": samples, "train_s": train_s, "cpu_s": cpu_s,
                          "samples_per_s": samples / train_s if train_s else 0.0,
                          "accuracy": acc, "test_loss": tl,
                          "push_pull_us": stats["push_pull_s"] / max(stats["steps"], 1) * 1e6,
                          "step_overhead_us": stats["overhead_us"],
                          "grad_copies": stats["grad_copies"],
                          "maxrss_kb": ru.ru_maxrss}), flush=True)
    return 0


def run(prog, about, make_model, to_input, defaults):
    try:
        sys.exit(main(prog, about, make_model, to_input, defaults))
    except ShoalError as e:
        print("%s: %s" % (prog, e), file=sys.stderr, flush=True)
        sys.exit(1)
