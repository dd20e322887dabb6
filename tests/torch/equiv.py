"""equiv.py MODE OPTIMIZER -- run by equiv.sh under tools/shoal-run with 1
server and 2 workers: a few iterations of a small model where each worker
takes half of every global batch, then (worker 0) the same iterations in
one process on the whole global batches, from the same start, with plain
PyTorch.  MODE aggregate: the servers average, each worker applies its own
torch.optim optimizer; MODE bsp: the servers run it.  Prints "ok:"/"FAIL:"
lines, and each worker a digest of its final parameters (equiv.sh checks
the replicas are identical)."""
import hashlib
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

import shoal.torch as st

mode, optname = sys.argv[1], sys.argv[2]
TOL = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-6
torch.set_num_threads(1)
st.init(connect_timeout_ms=30000)
me, W = st.worker_index(), st.num_workers()
K, B = 12, 32  # iterations; samples per worker (global batch W * B)


def make():
    return nn.Sequential(nn.Linear(20, 16), nn.Tanh(), nn.Linear(16, 3))


def optimizer(params):
    if optname == "sgd":
        return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3)
    return torch.optim.Adam(params, lr=0.01, weight_decay=1e-3)


torch.manual_seed(100 + me)  # different on purpose: the join must make them equal
model = make()
opt = st.DistributedOptimizer(optimizer(model.parameters()), model.named_parameters(),
                              mode=mode, iters_per_epoch=K, epochs=1, batch=B)
start = {n: p.detach().clone() for n, p in model.named_parameters()}
g = torch.Generator().manual_seed(7)
X = torch.randn(K * W * B, 20, generator=g)
Y = torch.randint(0, 3, (K * W * B,), generator=g)
while opt.iteration < K:
    k = opt.iteration
    lo = k * W * B + me * B
    opt.zero_grad()
    F.cross_entropy(model(X[lo:lo + B]), Y[lo:lo + B]).backward()
    opt.step()
stats = opt.stats()
opt.finish()
flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
sys.stdout.flush()
# one write() a line: the workers share the log, and a line must not be cut
# by the other's (print may write the text and the newline apart)
os.write(1, ("worker %d: parameters %s\n" % (me, hashlib.sha256(flat.numpy().tobytes())
                                               .hexdigest())).encode())
os.write(1, ("worker %d: %d steps, %d gradient copies\n" % (me, stats["steps"],
                                                            stats["grad_copies"])).encode())
if me != 0:
    sys.exit(0)

ref = make()
with torch.no_grad():
    for n, p in ref.named_parameters():
        p.copy_(start[n])
ropt = optimizer(ref.parameters())
for k in range(K):
    lo = k * W * B
    ropt.zero_grad()
    F.cross_entropy(ref(X[lo:lo + W * B]), Y[lo:lo + W * B]).backward()
    ropt.step()
rflat = torch.cat([p.detach().reshape(-1) for p in ref.parameters()])
moved = float((rflat - torch.cat([t.reshape(-1) for t in start.values()])).abs().max())
diff = float((flat - rflat).abs().max())
good = diff <= TOL and moved > 100 * TOL
print("%s: %s %s, %d iterations, 2 workers x %d samples vs one process x %d: max |difference| "
      "%.3g (tolerance %g; the parameters moved by up to %.3g)" % (
          "ok" if good else "FAIL", mode, optname, K, B, W * B, diff, TOL, moved))
sys.exit(0 if good else 1)
