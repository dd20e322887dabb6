"""shoal for PyTorch: data-parallel training through shoal's parameter
servers, with the calls BytePS and Horovod users know.

    import shoal.torch as st
    st.init()                       # a server rank serves here, then exits
    model = Net()
    opt = st.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                                  model.named_parameters(), mode="aggregate",
                                  iters_per_epoch=468, epochs=10, batch=64)
    # every worker now holds the same parameters (worker 0's)
    while opt.iteration < opt.total:         # the servers' count (see below)
        x, y = batch_of(opt.iteration)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    opt.finish()

Launch: tools/shoal-run -n 2 -s 1 -- python3 train.py (or mpirun, srun:
rank and size come from the launcher; ranks below the server count
serve), or shoal-run -n 2 -s colocated (SHOAL_SERVERS=colocated): every
process is a worker and serves one shard in a thread of its own.  init() on a server rank serves its shard until every worker is
done and exits the process with 0 (or 1 and the reason on stderr), as a
BytePS server never runs the training script; init(serve=False) returns
"server" instead, and the script calls serve() when it likes.

Modes (mode=):
  "aggregate"  the servers average the workers' gradients (BSP) and every
               worker applies its own torch.optim optimizer (any: SGD, Adam,
               ..., lr schedulers included) to the same mean, so replicas
               stay identical.  The model's state lives on the workers: a
               worker that dies cannot rejoin (use a server mode for that).
  "bsp", "async", "ssp"
               the servers run the optimizer (SGD with momentum and weight
               decay, or Adam: read from the torch optimizer given) and the
               workers pull fresh parameters; the learning-rate schedule is
               the job's (schedule="const"|"cosine"|"step"), not a torch
               scheduler's.  A worker killed and restarted with the same
               rank rejoins; a server restarted with resume=True goes on
               from its checkpoint.

Memory and copies.  At construction the parameters are moved into one
flat float32 vector and each becomes a view of it (p.data), and each
p.grad a view of one flat gradient vector; both vectors are registered
with the library once.  backward() accumulates into the gradient vector
in place; one push_pull() sends it (one-sided puts, straight from it) and
the fresh parameters (server modes) land straight in the parameter
vector, i.e. in the model.  In aggregate mode the mean gradient lands in a
third registered vector, whose views the user's optimizer sees as p.grad
during its step.  Copies of the parameters or gradients a step makes in
Python: none; zero_grad() is one memset of the gradient vector.  (One copy
per tensor, counted in stats()["grad_copies"], only if something replaced
a p.grad, e.g. zero_grad(set_to_none=True) on the model: the step then
copies that gradient into the registered vector.)  Once, at construction:
the parameters are copied into the flat vector (aggregate mode: also into
the receiving vector, and the job's initial parameters back out of it
after the join).  Below the package, the transport moves the bytes: on
verbs the NIC reads and writes these vectors itself; UCX over TCP passes
them through the kernel's sockets.

Restarts.  The iteration counter belongs to the servers: after a server
restarted from a checkpoint it may go back, and a restarted worker starts
where the job is.  Drive the loop by opt.iteration (batch k of epoch
k // iters_per_epoch), not by a counter of your own; data_shard(epoch)
says which part of the data this worker trains on in that epoch.
"""
import atexit
import ctypes
import errno
import sys
import time
import weakref

import torch

from . import _lib, ps
from .errors import ShoalError

__all__ = ["init", "serve", "shutdown", "rank", "size", "local_rank", "servers", "colocated",
           "num_workers", "worker_index", "role", "is_initialized", "DistributedOptimizer",
           "broadcast_parameters", "ShoalError"]

MODES = ("aggregate", "bsp", "async", "ssp")


class _Process:
    """What init() learned: this process's place in the job."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.rank = cfg.rank
        self.size = cfg.size
        self.local_rank = cfg.local_rank if cfg.local_rank >= 0 else 0
        self.colocated = bool(cfg.colocated)
        if self.colocated:  # every process a worker, and a server in a thread
            self.servers = self.workers = self.size
            self.index = self.rank
        else:
            self.servers = cfg.servers
            self.workers = self.size - self.servers
            self.index = self.rank - self.servers
        self.role = "server" if ps.is_server(cfg) else "worker"


_proc = None


def init(serve=True, **settings):
    """Read rank, size and the server count from the launcher (SHOAL_RANK
    and SHOAL_SIZE from tools/shoal-run, Open MPI, PMIx, Slurm;
    SHOAL_SERVERS) and the meeting place (SHOAL_RENDEZVOUS or
    SHOAL_COORDINATOR).  @settings: connect_timeout_ms, idle_timeout_ms,
    fail_timeout_ms, rejoin_timeout_ms, reconnect_timeout_ms,
    checkpoint_dir, checkpoint_every, checkpoint_secs, resume, verify,
    quiet (see shoal.ps; a SHOAL_PS_* variable sets each too).

    On a server rank, with serve=True (the default), this serves until
    every worker is done and exits the process; otherwise it returns the
    role, "worker" or "server".  A second call returns the role again."""
    global _proc
    if _proc is not None:
        return _proc.role
    cfg = ps.make_config(**settings)
    ps.check(cfg, worker=False)
    _proc = _Process(cfg)
    if _proc.role == "server" and serve:
        why = ps.serve(cfg)
        if why:
            print("shoal: server rank %d: %s" % (_proc.rank, why), file=sys.stderr, flush=True)
        sys.exit(1 if why else 0)
    return _proc.role


def serve():
    """On a server rank after init(serve=False): serve until every worker
    is done; ShoalError if serving failed."""
    p = _need("serve()")
    if p.role != "server":
        raise ShoalError("serve() on rank %d, a worker's (ranks 0-%d serve)"
                         % (p.rank, p.servers - 1))
    why = ps.serve(p.cfg)
    if why:
        raise ShoalError("server rank %d: %s" % (p.rank, why))


def _need(what):
    if _proc is None:
        raise ShoalError("%s before shoal.torch.init(): call init() first (it reads this "
                         "process's rank and the job's size from the launcher)" % what)
    return _proc


def is_initialized():
    return _proc is not None


def rank():
    """This process's rank in the job (servers first)."""
    return _need("rank()").rank


def size():
    """Servers plus workers."""
    return _need("size()").size


def local_rank():
    return _need("local_rank()").local_rank


def servers():
    """Server shards: the server ranks, or (co-located) every process."""
    return _need("servers()").servers


def colocated():
    """True when every process is a worker and serves a shard in a thread
    of its own (shoal-run -s colocated, SHOAL_SERVERS=colocated)."""
    return _need("colocated()").colocated


def num_workers():
    return _need("num_workers()").workers


def worker_index():
    """0..num_workers()-1 on a worker; ShoalError on a server."""
    p = _need("worker_index()")
    if p.role != "worker":
        raise ShoalError("worker_index() on rank %d, a server's" % p.rank)
    return p.index


def role():
    return _need("role()").role


def shutdown():
    """Close every DistributedOptimizer still open (each finishes first if
    it ran all its iterations)."""
    for o in list(_open):
        o._close(at_exit=True)


_open = weakref.WeakSet()
atexit.register(shutdown)


def broadcast_parameters(params, root_rank=0):
    """Horovod's and BytePS's call, for scripts that make it: in shoal the
    join of DistributedOptimizer() already gave every worker worker 0's
    parameters, so this only checks that @params (a state_dict, or
    (name, tensor) pairs, or tensors) are all parameters of a
    DistributedOptimizer of this process and that @root_rank is worker 0
    (0); anything else (buffers, a tensor of no optimizer, another root)
    is a ShoalError naming it, as shoal cannot broadcast it."""
    _need("broadcast_parameters()")
    if root_rank != 0:
        raise ShoalError("broadcast_parameters(root_rank=%r): shoal starts every worker from "
                         "worker 0's parameters (root_rank=0)" % (root_rank,))
    if not _open:
        raise ShoalError("broadcast_parameters() before DistributedOptimizer(): its join is "
                         "what gives every worker worker 0's parameters; create it first")
    mine = set()
    for o in _open:
        mine.update(id(t) for _, t in o._named)
        mine.update(t.data_ptr() for _, t in o._named)
    items = params.items() if hasattr(params, "items") else params
    for i, item in enumerate(items):
        if isinstance(item, tuple):
            name, t = repr(item[0]), item[1]
        else:
            name, t = "tensor %d" % i, item
        if id(t) not in mine and not (isinstance(t, torch.Tensor) and t.numel() and
                                      t.data_ptr() in mine):
            raise ShoalError("broadcast_parameters(): %s is not a parameter of a "
                             "DistributedOptimizer (a buffer?); shoal gives every worker "
                             "worker 0's parameters at the join, and nothing else" % name)


# ---- the optimizer -----------------------------------------------------------

def _server_optimizer(opt, mode):
    """The C layer's optimizer for torch optimizer @opt: (name, settings)."""
    groups = opt.param_groups
    g0 = groups[0]
    keys = [k for k in g0 if k != "params"]
    for i, g in enumerate(groups[1:], 1):
        diff = [k for k in keys if g.get(k) != g0.get(k)]
        if diff:
            raise ShoalError("mode %r runs one optimizer on the servers, but parameter group "
                             "%d has a different %s than group 0; use one setting for all "
                             "groups, or mode='aggregate'" % (mode, i, diff[0]))
    name = type(opt).__name__
    if g0.get("maximize") or g0.get("differentiable") or g0.get("foreach"):
        what = [k for k in ("maximize", "differentiable", "foreach") if g0.get(k)][0]
        raise ShoalError("mode %r: the servers' %s has no %s=True" % (mode, name, what))
    if isinstance(opt, torch.optim.SGD):
        if g0.get("nesterov") or g0.get("dampening", 0):
            raise ShoalError("mode %r: the servers run SGD without Nesterov momentum or "
                             "dampening; use mode='aggregate' for those" % mode)
        return "sgd", dict(lr=g0["lr"], momentum=g0.get("momentum", 0.0),
                           weight_decay=g0.get("weight_decay", 0.0))
    adamw = getattr(torch.optim, "AdamW", None)
    if isinstance(opt, torch.optim.Adam) or (adamw and isinstance(opt, adamw) and
                                             not g0.get("weight_decay")):
        if g0.get("amsgrad"):
            raise ShoalError("mode %r: the servers' Adam has no amsgrad; use "
                             "mode='aggregate'" % mode)
        b1, b2 = g0.get("betas", (0.9, 0.999))
        return "adam", dict(lr=g0["lr"], beta1=b1, beta2=b2, eps=g0.get("eps", 1e-8),
                            weight_decay=g0.get("weight_decay", 0.0))
    raise ShoalError("mode %r runs the optimizer on the servers, which know SGD (momentum, "
                     "weight decay) and Adam; %s is not one of them: use mode='aggregate' "
                     "to apply it on the workers" % (mode, type(opt).__module__ + "." + name))


def _compress(name):
    """compress= as (shoal_ps_compress_t, topk_ratio)."""
    c, r = ctypes.c_int(), ctypes.c_float()
    if not isinstance(name, str) or \
            _lib.load().shoal_ps_parse_compress(name.encode(), ctypes.byref(c), ctypes.byref(r)):
        raise ShoalError("compress=%r: 'none', 'fp16', 'bf16', 'topk:R' or 'topk-noef:R' (R the "
                         "fraction of each gradient sent, e.g. 0.01)" % (name,))
    return c.value, r.value


def _params_of(optimizer, named_parameters):
    """[(name, parameter)] in the flat vector's order, checked."""
    in_opt = [p for g in optimizer.param_groups for p in g["params"]]
    if named_parameters is None:
        named = [("param.%d" % i, p) for i, p in enumerate(in_opt)]
    else:
        named = list(named_parameters)
        for item in named:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                    and isinstance(item[1], torch.Tensor)):
                got = ("a tensor of shape %s" % (tuple(item.shape),)
                       if isinstance(item, torch.Tensor) else repr(item)[:100])
                raise ShoalError("named_parameters must be (name, tensor) pairs, as "
                                 "model.named_parameters() gives; got %s" % got)
    named = [(n, p) for n, p in named if p.requires_grad]
    if not named:
        raise ShoalError("no parameter to train (none requires grad)")
    seen_names, seen = set(), {}
    for n, p in named:
        if n in seen_names:
            raise ShoalError("parameter name %r appears twice" % n)
        if id(p) in seen:
            raise ShoalError("parameters %r and %r are the same tensor (pass each once)"
                             % (seen[id(p)], n))
        seen_names.add(n)
        seen[id(p)] = n
        if p.dtype != torch.float32:
            raise ShoalError("parameter %r is %s: shoal trains float32 parameters" % (n, p.dtype))
        if p.device.type != "cpu":
            raise ShoalError("parameter %r is on %s: shoal trains parameters in host memory"
                             % (n, p.device))
        if p.is_sparse or p.numel() == 0:
            raise ShoalError("parameter %r is %s" % (n, "sparse" if p.is_sparse else "empty"))
    opt_ids = set(id(p) for p in in_opt)
    for n, p in named:
        if id(p) not in opt_ids:
            raise ShoalError("parameter %r is not one the optimizer updates (every parameter "
                             "named must be in its param_groups, and the other way round)" % n)
    for p in in_opt:
        if id(p) not in seen and p.requires_grad:
            raise ShoalError("the optimizer updates a parameter of shape %s that "
                             "named_parameters does not list" % (tuple(p.shape),))
    return named


def _tensor_name(n, p):
    # The shape is part of the name the servers compare: two workers whose
    # tensors have equal sizes but different shapes differ too.
    return "%s:%s" % (n, "x".join(str(d) for d in p.shape))


class _DistributedOptimizer(torch.optim.Optimizer):
    """The methods of the class DistributedOptimizer() makes (a subclass of
    the torch optimizer's class, as Horovod does: lr schedulers, state_dict
    and param_groups work as usual)."""

    def __init__(self, params, optimizer, named, mode, job):
        super(self.__class__, self).__init__(params)
        self.state = optimizer.state
        self._mode = mode
        self._ps = None
        self._finished = False
        self._steps = 0
        self._grad_copies = 0
        self._t_push = 0.0
        self._t_step = 0.0
        self._t_inner = 0.0
        p = _need("DistributedOptimizer()")
        if p.role != "worker":
            raise ShoalError("DistributedOptimizer on rank %d, a server's: a server rank serves "
                             "(init() with serve=True does that and exits)" % p.rank)
        cfg = _lib.Config()
        ctypes_copy(cfg, p.cfg)
        j = cfg.job
        for k, v in job.items():
            if k == "label":
                _lib.set_str(j, "label", v, "label")
            else:
                setattr(j, k, v)
        ps.check(cfg, worker=True)
        self._cfg = cfg
        self.iters_per_epoch = int(j.iters_per_epoch)
        self.epochs = int(j.epochs)
        self.total = self.iters_per_epoch * self.epochs
        self._job_lr = [g["lr"] for g in self.param_groups]

        # One flat parameter vector, one flat gradient vector; the model's
        # tensors become views of them.
        self._named = named
        P = sum(t.numel() for _, t in named)
        self.nparams = P
        with torch.no_grad():
            flat = torch.empty(P, dtype=torch.float32)
            grads = torch.zeros(P, dtype=torch.float32)
            self._gviews, self._gptrs, self._spans = [], [], []
            off = 0
            for _, t in named:
                n = t.numel()
                flat[off:off + n].copy_(t.reshape(-1))
                if t.grad is not None:
                    grads[off:off + n].copy_(t.grad.reshape(-1))
                t.data = flat[off:off + n].view_as(t)
                gv = grads[off:off + n].view_as(t)
                t.grad = gv
                self._gviews.append(gv)
                self._gptrs.append(gv.data_ptr())
                self._spans.append((off, n))
                off += n
        self._flat, self._grads = flat, grads
        tensors = [(_tensor_name(n, t), t.numel()) for n, t in named]
        if mode == "aggregate":
            # The mean gradient arrives in a vector of its own; at the join
            # it carries the job's initial parameters.
            self._mean = flat.clone()
            self._mviews = [self._mean[o:o + n].view_as(t)
                            for (o, n), (_, t) in zip(self._spans, named)]
            recv = self._mean
        else:
            self._mean = None
            recv = flat
        self._ps = ps.Worker(cfg, tensors, recv, grads)
        _open.add(self)
        try:
            self._ps.join()
        except ShoalError as e:
            self._close()
            raise self._explain(e) from None
        if mode == "aggregate":
            if self._ps.iteration != 0:
                k = self._ps.iteration
                self._close()
                raise ShoalError(
                    "worker %d rejoined a job at iteration %d in aggregate mode: there the "
                    "model lives on the workers only and the servers hold no parameters to "
                    "restart from; a job whose workers must survive restarts runs the "
                    "optimizer on the servers (mode='bsp', 'async' or 'ssp')"
                    % (p.index, k))
            with torch.no_grad():
                flat.copy_(self._mean)  # once, at the start: the job's parameters

    def _explain(self, e):
        """A join refused for different parameters: add this worker's list."""
        msg = str(e)
        if "its parameters (" in msg and "differ" in msg:
            mine = ", ".join("%s%s" % (n, list(t.shape)) for n, t in self._named)
            return ShoalError("the model's parameters differ between workers (names or "
                              "shapes): %s; this worker's %d tensors: %s"
                              % (msg, len(self._named), mine[:2000]))
        if "did not publish its address" in msg or "could not reach the servers" in msg:
            return ShoalError("no parameter server answered: %s (are the server ranks "
                              "running? shoal-run -s S starts them; SHOAL_PS_CONNECT_TIMEOUT "
                              "sets how long to look)" % msg)
        return e

    # ---- what a training loop calls ---------------------------------------

    @property
    def iteration(self):
        """The iteration this worker computes next (the servers' count)."""
        return self._live("iteration").iteration

    @property
    def epoch(self):
        return self.iteration // self.iters_per_epoch

    def data_shard(self, epoch):
        """(member, shard, shards): this worker trains on part shard of
        shards of the data in @epoch (without failures: its worker index
        of num_workers())."""
        return self._live("data_shard()").data_shard(epoch)

    def _live(self, what):
        if self._ps is None:
            raise ShoalError("%s after finish() (or after the job failed)" % what)
        return self._ps

    def _gather(self):
        """Make sure every gradient is in the registered vector."""
        for i, (_, t) in enumerate(self._named):
            g = t.grad
            if g is not None and g.data_ptr() == self._gptrs[i]:
                continue
            o, n = self._spans[i]
            with torch.no_grad():
                if g is None:
                    self._grads[o:o + n].zero_()
                else:
                    self._grads[o:o + n].copy_(g.reshape(-1))
                    self._grad_copies += 1
            t.grad = self._gviews[i]

    def zero_grad(self, set_to_none=False):
        """Zero the gradient vector (one memset).  The gradients stay views
        of the registered vector whatever set_to_none says."""
        self._grads.zero_()
        for i, (_, t) in enumerate(self._named):
            if t.grad is None or t.grad.data_ptr() != self._gptrs[i]:
                t.grad = self._gviews[i]

    def step(self, closure=None):
        """Push this worker's gradients, pull the result (one push-pull),
        and in aggregate mode apply the wrapped optimizer to the mean."""
        t0 = time.perf_counter()
        w = self._live("step()")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._mode != "aggregate":
            for g, lr in zip(self.param_groups, self._job_lr):
                if g["lr"] != lr:
                    raise ShoalError(
                        "the learning rate changed from %g to %g (an lr scheduler?), but in "
                        "mode %r the servers run the optimizer with the job's schedule; give "
                        "schedule='cosine' or 'step' to DistributedOptimizer, or use "
                        "mode='aggregate'" % (lr, g["lr"], self._mode))
        k = w.iteration
        if k >= self.total:
            raise ShoalError("step() at iteration %d: the job's %d iterations (%d per epoch x %d "
                             "epochs) are done; call finish()" % (k, self.total,
                                                                  self.iters_per_epoch,
                                                                  self.epochs))
        self._gather()
        t1 = time.perf_counter()
        try:
            w.push_pull()
        except ShoalError as e:
            if e.errno not in (errno.EINVAL, errno.EBUSY):
                self._close()  # the job is lost to this worker
            raise
        t2 = t3 = time.perf_counter()
        if self._mode == "aggregate":
            named = self._named
            for i, (_, t) in enumerate(named):
                t.grad = self._mviews[i]
            try:
                t2 = time.perf_counter()
                super(self.__class__, self).step()
                t3 = time.perf_counter()
            finally:
                for i, (_, t) in enumerate(named):
                    t.grad = self._gviews[i]
        t4 = time.perf_counter()
        self._steps += 1
        self._t_push += t2 - t1
        self._t_inner += t3 - t2
        self._t_step += t4 - t0
        return loss

    def finish(self):
        """Tell the servers this worker is done, and close the handle."""
        w = self._live("finish()")
        try:
            w.finish()
        finally:
            self._close()
        self._finished = True

    def _close(self, at_exit=False):
        w = self._ps
        if w is None:
            return
        if at_exit and not w.finished:
            try:
                if w.iteration >= self.total:
                    w.finish()
            except ShoalError:
                pass
        self._ps = None
        w.close()
        _open.discard(self)

    def stats(self):
        """Counters: steps; push_pull_s (in the library), optimizer_s (the
        wrapped optimizer's own step, aggregate mode), step_s (all of
        step()); overhead_us: what the package adds per step (step() minus
        the push-pull and the wrapped optimizer's step); grad_copies;
        last_round_us."""
        s = self._steps or 1
        return {"steps": self._steps, "push_pull_s": self._t_push, "step_s": self._t_step,
                "optimizer_s": self._t_inner,
                "overhead_us": (self._t_step - self._t_push - self._t_inner) / s * 1e6,
                "grad_copies": self._grad_copies,
                "last_round_us": self._ps.last_round_us() if self._ps else 0.0}

    def describe(self):
        return self._live("describe()").describe()


def ctypes_copy(dst, src):
    ctypes.memmove(ctypes.addressof(dst), ctypes.addressof(src), ctypes.sizeof(src))


def DistributedOptimizer(optimizer, named_parameters=None, mode="aggregate", *,
                         iters_per_epoch, epochs, batch=1, staleness=2, schedule="const",
                         step_epochs=1, gamma=0.1, momentum_auto=False, label="pytorch",
                         compress="none"):
    """Wrap @optimizer (a torch.optim optimizer) for a shoal job and join it.

    named_parameters: model.named_parameters() (default: the optimizer's
    parameters, named by position); every worker must give the same names
    and shapes, in the same order.  mode: "aggregate" (default), "bsp",
    "async", "ssp" (see the module's text); staleness bounds ssp.
    iters_per_epoch x epochs is the job's length; batch (samples per worker
    per iteration) is for the servers' reports.  schedule ("const",
    "cosine", "step"; step_epochs, gamma), momentum_auto: the servers' lr
    schedule and momentum in server modes.  label: free text every worker
    must agree on.  compress: what crosses the wire, "none" (fp32), "fp16",
    "bf16", "topk:R" (the largest fraction R of each gradient slice, with
    error feedback) or "topk-noef:R"; the servers keep fp32.

    Returns an optimizer of a subclass of @optimizer's class; on return
    every worker holds the job's parameters: worker 0's at the start of a
    job (the servers fetch them and give them to every worker), the
    servers' when rejoining or after a restart."""
    _need("DistributedOptimizer()")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ShoalError("DistributedOptimizer wraps a torch.optim optimizer, not %r"
                         % type(optimizer).__name__)
    if getattr(optimizer, "_shoal_distributed", False):
        raise ShoalError("the optimizer is already a DistributedOptimizer")
    if mode not in MODES:
        raise ShoalError("mode %r: one of %s" % (mode, ", ".join(MODES)))
    for k, v in (("iters_per_epoch", iters_per_epoch), ("epochs", epochs), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v < 2**32:
            raise ShoalError("%s=%r: a positive whole number" % (k, v))
    if isinstance(staleness, bool) or not isinstance(staleness, int) or staleness < 0:
        raise ShoalError("staleness=%r: a whole number >= 0" % (staleness,))
    if schedule not in _lib.SCHEDULES:
        raise ShoalError("schedule %r: one of %s" % (schedule, ", ".join(_lib.SCHEDULES)))
    if mode == "aggregate" and schedule != "const":
        raise ShoalError("schedule=%r is the servers' schedule; in aggregate mode the workers "
                         "apply their own optimizer: use a torch.optim.lr_scheduler" % schedule)
    comp, ratio = _compress(compress)
    named = _params_of(optimizer, named_parameters)
    job = dict(iters_per_epoch=iters_per_epoch, epochs=epochs, batch=batch, staleness=staleness,
               compress=comp, topk_ratio=ratio, schedule=_lib.SCHEDULES.index(schedule),
               step_epochs=step_epochs, gamma=float(gamma), momentum_auto=bool(momentum_auto),
               label=str(label))
    if mode == "aggregate":
        job.update(mode=_lib.MODES.index("bsp"), optimizer=_lib.OPTIMIZERS.index("average"),
                   lr=0.0)
    else:
        name, hyper = _server_optimizer(optimizer, mode)
        job.update(mode=_lib.MODES.index(mode), optimizer=_lib.OPTIMIZERS.index(name))
        job.update({k: float(v) for k, v in hyper.items()})
    cls = type(type(optimizer).__name__, (type(optimizer),),
               dict(_DistributedOptimizer.__dict__, _shoal_distributed=True))
    return cls(optimizer.param_groups, optimizer, named, mode, job)
