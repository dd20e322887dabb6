"""bad-use.py CASE -- wrong use of shoal.torch must raise a ShoalError
naming the problem (never a crash or a hang); run by bad-use.sh.  Prints
"ok: ..."/"FAIL: ..." lines; exits 1 on a failure.

  before-init   the calls that need init() before it
  args          bad arguments to DistributedOptimizer (refused before any
                network traffic)
  join          join a job (bad-use.sh arranges what is wrong: no server,
                a wrong secret, or --shape/--names differing per worker);
                exits 3 when refused as expected
  misc          a tiny job (1 server, 1 worker): broadcast_parameters, an
                lr scheduler in server mode, grads replaced behind the
                optimizer's back, a step after finish()
"""
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import shoal.torch as st
from shoal import ShoalError

torch.set_num_threads(1)
fails = 0


def check(what, cond):
    global fails
    print(("ok: " if cond else "FAIL: ") + what, flush=True)
    fails += not cond


def raises(what, words, fn):
    """fn() must raise ShoalError whose message has every one of @words."""
    try:
        fn()
    except ShoalError as e:
        msg = str(e)
        check("%s: ShoalError: %s" % (what, msg[:300]), all(w in msg for w in words))
        return msg
    except Exception as e:  # noqa: BLE001 -- any other exception is the failure
        check("%s: raised %s: %s, not ShoalError" % (what, type(e).__name__, e), False)
        return ""
    check("%s: no exception" % what, False)
    return ""


def model(hidden=16, names=False):
    if names:
        return nn.Sequential(nn.Linear(8, hidden), nn.Tanh(), nn.Identity(), nn.Linear(hidden, 2))
    return nn.Sequential(nn.Linear(8, hidden), nn.Tanh(), nn.Linear(hidden, 2))


def dopt(m, opt=None, **kw):
    args = dict(iters_per_epoch=4, epochs=1)
    args.update(kw)
    return st.DistributedOptimizer(opt or torch.optim.SGD(m.parameters(), lr=0.1),
                                   m.named_parameters(), **args)


case = sys.argv[1]
if case == "before-init":
    m = model()
    raises("DistributedOptimizer before init()", ["before shoal.torch.init()", "init() first"],
           lambda: dopt(m))
    raises("rank() before init()", ["before shoal.torch.init()"], st.rank)
    raises("worker_index() before init()", ["before shoal.torch.init()"], st.worker_index)
    raises("broadcast_parameters() before init()", ["before shoal.torch.init()"],
           lambda: st.broadcast_parameters(m.state_dict()))
elif case == "env":
    raises("init() with " + sys.argv[2], sys.argv[3:], st.init)
elif case == "args":
    st.init()
    m = model()
    raises("broadcast_parameters() before DistributedOptimizer()", ["create it first"],
           lambda: st.broadcast_parameters(m.state_dict()))
    raises("mode='foo'", ["mode 'foo'", "aggregate, bsp, async, ssp"], lambda: dopt(m, mode="foo"))
    raises("iters_per_epoch=0", ["iters_per_epoch=0"], lambda: dopt(m, iters_per_epoch=0))
    raises("RMSprop with mode='bsp'", ["RMSprop", "mode='aggregate'"],
           lambda: dopt(m, torch.optim.RMSprop(m.parameters(), lr=0.01), mode="bsp"))
    raises("SGD with Nesterov with mode='async'", ["Nesterov"],
           lambda: dopt(m, torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True),
                        mode="async"))
    raises("Adam amsgrad with mode='bsp'", ["amsgrad"],
           lambda: dopt(m, torch.optim.Adam(m.parameters(), amsgrad=True), mode="bsp"))
    raises("schedule='cosine' in aggregate mode", ["lr_scheduler"],
           lambda: dopt(m, schedule="cosine"))
    m64 = model().double()
    raises("float64 parameters", ["float64", "float32"], lambda: dopt(m64))
    m2 = model()
    raises("a parameter the optimizer does not update", ["'2.bias'", "not one the optimizer"],
           lambda: st.DistributedOptimizer(
               torch.optim.SGD(list(m2.parameters())[:3], lr=0.1), m2.named_parameters(),
               iters_per_epoch=4, epochs=1))
    raises("named_parameters given as a list of tensors", ["(name, tensor) pairs"],
           lambda: st.DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.1),
                                           list(m.parameters()), iters_per_epoch=4, epochs=1))
    raises("two groups with different lr in mode='bsp'", ["group 1", "lr"],
           lambda: dopt(m, torch.optim.SGD([{"params": [m[0].weight, m[0].bias]},
                                            {"params": [m[2].weight, m[2].bias], "lr": 0.5}],
                                           lr=0.1), mode="bsp"))
    raises("staleness=-1", ["staleness=-1"], lambda: dopt(m, staleness=-1, mode="ssp"))
    raises("compress='zip'", ["compress='zip'", "fp16"], lambda: dopt(m, compress="zip"))
elif case == "join":
    # bad-use.sh sets what is wrong; the join must fail with these words
    # within the time it allows.
    st.init()
    words = sys.argv[2].split("|")
    shape = "--shape" in sys.argv and st.worker_index() == 1
    names = "--names" in sys.argv and st.worker_index() == 1
    torch.manual_seed(1)
    m = model(hidden=17 if shape else 16, names=names)
    t0 = time.monotonic()

    def join_and_train():
        o = dopt(m, iters_per_epoch=50, epochs=1)
        while o.iteration < o.total:  # the worker that was accepted
            o.zero_grad()
            m(torch.ones(4, 8)).sum().backward()
            o.step()
        o.finish()

    msg = raises("worker %d joining" % st.worker_index(), words, join_and_train)
    print("joined or failed after %.1f s" % (time.monotonic() - t0), flush=True)
    if msg and not fails:
        sys.exit(3)  # refused, as expected: a script would stop here
elif case == "misc":
    st.init()
    m = model()
    base = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.5)
    o = dopt(m, base, mode="bsp", iters_per_epoch=6)
    x, y = torch.randn(16, 8), torch.randint(0, 2, (16,))

    def one():
        o.zero_grad()
        F.cross_entropy(m(x), y).backward()
        o.step()

    st.broadcast_parameters(m.state_dict(), root_rank=0)  # the parameters: nothing to do
    check("broadcast_parameters(model.state_dict()) after the join: accepted", True)
    raises("broadcast_parameters of a buffer", ["'buf'", "not a parameter"],
           lambda: st.broadcast_parameters({"buf": torch.zeros(3)}))
    raises("broadcast_parameters(root_rank=1)", ["root_rank=0"],
           lambda: st.broadcast_parameters(m.state_dict(), root_rank=1))
    sched = torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5)
    one()
    sched.step()
    raises("an lr scheduler in mode 'bsp'", ["learning rate changed", "schedule="], one)
    for g in o.param_groups:
        g["lr"] = 0.1
    # A gradient replaced behind the optimizer's back is copied in (counted).
    ref = [p.detach().clone() for p in m.parameters()]
    m.zero_grad(set_to_none=True)
    F.cross_entropy(m(x), y).backward()
    o.step()
    check("zero_grad(set_to_none=True) on the model: the step copied %d gradients in"
          % o.stats()["grad_copies"], o.stats()["grad_copies"] == 4)
    check("... and the parameters moved",
          any(not torch.equal(a, b.detach()) for a, b in zip(ref, m.parameters())))
    while o.iteration < o.total:
        one()
    raises("a step past the job's end", ["iterations", "are done", "finish()"], one)
    o.finish()
    raises("step() after finish()", ["after finish()"], one)
    raises("a second DistributedOptimizer of the same optimizer", ["already a Distributed"],
           lambda: dopt(m, o))
else:
    sys.exit("bad-use.py: unknown case %r" % case)
sys.exit(1 if fails else 0)
