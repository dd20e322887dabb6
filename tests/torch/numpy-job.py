"""numpy-job.py -- shoal.ps (the framework-neutral layer) with numpy
buffers, run by numpy-job.sh under tools/shoal-run with 1 server and 2
workers.  Each worker pushes gradients it can predict (worker i, iteration
k: every element (i + 1) * (k + 1)), so the parameters after each round are
known exactly: the servers' SGD with momentum (--optimizer sgd) or the mean
(--optimizer average).  Prints "ok: ..." or "FAIL: ..." lines and exits 1
on a failure."""
import sys

import numpy as np

import shoal.ps as ps
from shoal import ShoalError

opt = sys.argv[1]
cfg = ps.make_config(connect_timeout_ms=20000)
if ps.is_server(cfg):
    why = ps.serve(cfg)
    if why:
        print("server: " + why, file=sys.stderr)
    sys.exit(1 if why else 0)

P, K, lr, mom = 1000, 6, 0.01, 0.9
cfg.job.iters_per_epoch, cfg.job.epochs = 3, 2
cfg.job.optimizer = ("sgd", "adam", "average").index(opt)
cfg.job.lr, cfg.job.momentum = lr, mom
params = np.full(P, 0.5, np.float32)
grads = np.zeros(P, np.float32)
fails = 0


def check(what, cond):
    global fails
    print(("ok: " if cond else "FAIL: ") + what, flush=True)
    fails += not cond


try:
    ps.Worker(cfg, [("w", P)], np.zeros(P), grads)
    check("a float64 parameter buffer is refused", False)
except ShoalError as e:
    check("a float64 parameter buffer is refused (%s)" % e, "float32" in str(e))

w = ps.Worker(cfg, [("w", 600), ("b", 400)], params, grads)
me, W = w.index, w.workers
if me == 0:
    params[:] = 2.0  # worker 0's start differs; the job starts from worker 0's
w.join()
# (numpy-job.sh checks that both workers print the same start.)
check("worker %d joined at iteration 0, start %g" % (me, params[0]),
      w.iteration == 0 and len(set(params.tolist())) == 1 and params[0] == 2.0)
p = params.copy()
v = np.zeros(P, np.float32)
while w.iteration < w.total:
    k = w.iteration
    member, shard, shards = w.data_shard(k // 3)
    if k % 3 == 0:
        check("worker %d, epoch %d: shard %d of %d" % (me, k // 3, shard, shards),
              member and shard == me and shards == W)
    grads[:] = (me + 1) * (k + 1)
    w.push_pull()
    mean = np.float32(sum((i + 1) * (k + 1) for i in range(W)) / W)
    if opt == "average":
        expect = np.full(P, mean, np.float32)
    else:
        v = np.float32(mom) * v + mean
        p = p - np.float32(lr) * v
        expect = p
    if not np.allclose(params, expect, rtol=1e-6, atol=1e-6):
        check("iteration %d: parameters %s, expected %s" % (k, params[:2], expect[:2]), False)
        break
else:
    check("worker %d: %d rounds of %s gave the parameters expected exactly" % (me, w.total, opt),
          True)
try:
    w.push_pull()
    check("a push-pull past the job's end is refused", False)
except ShoalError as e:
    check("a push-pull past the job's end is refused (%s)" % e, "iterations are done" in str(e))
w.finish()
w.close()
try:
    w.push_pull()
    check("push_pull after close is refused", False)
except ShoalError as e:
    check("push_pull after close is refused (%s)" % e, "closed" in str(e))
sys.exit(1 if fails else 0)
