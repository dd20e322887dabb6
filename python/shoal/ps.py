"""The parameter-server layer (shoal_ps.h) for Python, framework-neutral.

    cfg = shoal.ps.make_config(checkpoint_dir="ck")   launcher + SHOAL_PS_* + these
    if shoal.ps.is_server(cfg):
        shoal.ps.serve(cfg)                            until every worker is done
    w = shoal.ps.Worker(cfg, [("w", 7840), ("b", 10)], params, grads)
    w.join()                                           params now hold the job's
    while w.iteration < total:
        ... gradients of iteration w.iteration into grads ...
        w.push_pull()                                  push grads, pull params
    w.finish(); w.close()

params and grads are P float32s each, in memory that stays put (a numpy
array, a torch tensor's storage, a ctypes buffer): anything with a
__array_interface__, a .data_ptr() and .numel(), or a plain address.  The
library registers them once and writes the parameters into them itself.

Settings the C layer does not read from the environment are read here,
with the same meaning as shoal-ps-server's options (a keyword argument
wins over the variable):

    SHOAL_PS_CONNECT_TIMEOUT   ms to find the servers at start (60000)
    SHOAL_PS_IDLE_TIMEOUT      ms without any progress before failing (120000)
    SHOAL_PS_FAIL_TIMEOUT      ms of silence before a peer is lost (2000)
    SHOAL_PS_REJOIN_TIMEOUT    servers, bsp: ms to wait for a lost worker (10000)
    SHOAL_PS_RECONNECT_TIMEOUT workers: ms to try to reach a lost server (120000)
    SHOAL_PS_CHECKPOINT_DIR    servers: write checkpoints there
    SHOAL_PS_CHECKPOINT_EVERY  servers: updates between checkpoints (200)
    SHOAL_PS_CHECKPOINT_SECS   servers: and/or seconds between them
    SHOAL_PS_RESUME            servers: 1 = start from the newest checkpoint
    SHOAL_PS_VERIFY            1 = check every parameter delivery with a CRC
    SHOAL_PS_QUIET             servers: 1 = fewer messages
"""
import ctypes
import errno
import os
import signal
import threading

from . import _lib
from .errors import ShoalError

# keyword: (variable, kind, lowest, highest)
SETTINGS = {
    "connect_timeout_ms": ("SHOAL_PS_CONNECT_TIMEOUT", int, 1, 86400000),
    "idle_timeout_ms": ("SHOAL_PS_IDLE_TIMEOUT", int, 1, 86400000),
    "fail_timeout_ms": ("SHOAL_PS_FAIL_TIMEOUT", int, 1, 86400000),
    "rejoin_timeout_ms": ("SHOAL_PS_REJOIN_TIMEOUT", int, 0, 86400000),
    "reconnect_timeout_ms": ("SHOAL_PS_RECONNECT_TIMEOUT", int, 1, 86400000),
    "checkpoint_dir": ("SHOAL_PS_CHECKPOINT_DIR", str, None, None),
    "checkpoint_every": ("SHOAL_PS_CHECKPOINT_EVERY", int, 0, 2**31 - 1),
    "checkpoint_secs": ("SHOAL_PS_CHECKPOINT_SECS", float, 0, 86400 * 365),
    "resume": ("SHOAL_PS_RESUME", bool, None, None),
    "verify": ("SHOAL_PS_VERIFY", bool, None, None),
    "quiet": ("SHOAL_PS_QUIET", bool, None, None),
}
_BOOLS = {"1": True, "yes": True, "true": True, "on": True,
          "0": False, "no": False, "false": False, "off": False}


def _value(key, raw, source):
    var, kind, lo, hi = SETTINGS[key]
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        v = _BOOLS.get(str(raw).strip().lower())
        if v is None:
            raise ShoalError("%s=%r: expected 1 or 0 (yes/no, true/false)" % (source, raw))
        return v
    if kind is str:
        return str(raw)
    try:
        v = kind(raw)
    except (TypeError, ValueError):
        raise ShoalError("%s=%r is not a %s" % (source, raw, "number" if kind is float
                                                 else "whole number")) from None
    if isinstance(raw, bool) or not lo <= v <= hi:
        raise ShoalError("%s=%r is not a number in [%s, %s]" % (source, raw, lo, hi))
    return v


def make_config(**settings):
    """A Config: the library's defaults, then the launcher's and SHOAL_*
    variables (shoal_ps_config_from_env), then SHOAL_PS_* above, then the
    keyword arguments (None = not given).  Bad values raise ShoalError
    naming the variable or argument."""
    for k in settings:
        if k not in SETTINGS:
            raise ShoalError("unknown setting %r (known: %s)" % (k, ", ".join(sorted(SETTINGS))))
    lib = _lib.load()
    cfg = _lib.new_config()
    err = _lib.errbuf()
    if lib.shoal_ps_config_from_env(ctypes.byref(cfg), err, len(err)):
        raise ShoalError("environment: " + _lib.text(err))
    for key, (var, _, _, _) in SETTINGS.items():
        if settings.get(key) is not None:
            v = _value(key, settings[key], key)
        elif os.environ.get(var, "") != "":
            v = _value(key, os.environ[var], var)
        else:
            continue
        if key == "checkpoint_dir":
            _lib.set_str(cfg, "checkpoint_dir", v, key)
        else:
            setattr(cfg, key, v)
    if cfg.resume and not cfg.checkpoint_dir:
        raise ShoalError("resume needs a checkpoint directory (checkpoint_dir or "
                         "SHOAL_PS_CHECKPOINT_DIR)")
    return cfg


def check(cfg, worker):
    """shoal_ps_config_check: ShoalError with the C layer's reason."""
    err = _lib.errbuf()
    if _lib.load().shoal_ps_config_check(ctypes.byref(cfg), bool(worker), err, len(err)):
        raise ShoalError(_lib.text(err))


def is_server(cfg):
    return bool(_lib.load().shoal_ps_is_server(ctypes.byref(cfg)))


def serve(cfg):
    """Serve this rank's shard until every worker is done (shoal_ps_serve).
    Returns None on success, else the reason it failed (a str).  Ctrl-C
    stops the process while it serves (Python cannot run its handler
    during the C call)."""
    check(cfg, worker=False)
    err = _lib.errbuf()
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_DFL) if main else None
    try:
        rc = _lib.load().shoal_ps_serve(ctypes.byref(cfg), err, len(err))
    finally:
        if main:
            signal.signal(signal.SIGINT, old)
    if rc:
        return _lib.text(err) or os.strerror(-rc)
    return None


def address(buf, nfloats, what):
    """The address of @buf, which must hold @nfloats contiguous float32s."""
    if isinstance(buf, int):
        return buf
    if hasattr(buf, "data_ptr") and hasattr(buf, "numel"):  # a torch tensor
        if str(getattr(buf, "dtype", "")) != "torch.float32":
            raise ShoalError("%s is %s: float32 needed" % (what, buf.dtype))
        if not buf.is_contiguous() or buf.numel() != nfloats:
            raise ShoalError("%s: %d contiguous floats needed, it has %d%s"
                             % (what, nfloats, buf.numel(),
                                "" if buf.is_contiguous() else " (not contiguous)"))
        return buf.data_ptr()
    ai = getattr(buf, "__array_interface__", None)
    if ai is not None:
        if ai["typestr"] != "<f4":
            raise ShoalError("%s has type %s: float32 needed" % (what, ai["typestr"]))
        n = 1
        for d in ai["shape"]:
            n *= d
        if ai.get("strides") is not None or n != nfloats or ai["data"][1]:
            raise ShoalError("%s: %d contiguous writable floats needed" % (what, nfloats))
        return ai["data"][0]
    raise ShoalError("%s: not a numpy array, torch tensor or address" % what)


def _strerror(rc):
    return errno.errorcode.get(-rc, str(rc))


class Worker:
    """One worker's handle (shoal_ps_t): create() at construction, then
    join(), push_pull() per iteration, finish(), close()."""

    def __init__(self, cfg, tensors, params, grads):
        """@tensors: [(name, count)] in the order of the flat vector."""
        self._lib = _lib.load()
        self._h = None
        if not tensors:
            raise ShoalError("no tensors declared")
        n = sum(c for _, c in tensors)
        self.tensors = list(tensors)
        self._names = [nm.encode() for nm, _ in tensors]  # alive while the handle is
        arr = (_lib.Tensor * len(tensors))()
        for i, (nm, c) in enumerate(tensors):
            arr[i].name = self._names[i]
            arr[i].count = c
        self._cfg = cfg
        self._keep = (params, grads)
        pa = address(params, n, "the parameter buffer")
        ga = address(grads, n, "the gradient buffer")
        h = ctypes.c_void_p()
        err = _lib.errbuf()
        f = ctypes.POINTER(ctypes.c_float)
        rc = self._lib.shoal_ps_create(ctypes.byref(cfg), arr, len(tensors),
                                       ctypes.cast(pa, f), ctypes.cast(ga, f),
                                       ctypes.byref(h), err, len(err))
        if rc:
            raise ShoalError(_lib.text(err) or _strerror(rc))
        self._h = h
        self.nparams = n
        self.total = cfg.job.iters_per_epoch * cfg.job.epochs
        self.finished = False

    def _fail(self, what, rc):
        msg = _lib.text(self._lib.shoal_ps_errmsg(self._h)) or _strerror(rc)
        e = ShoalError("%s: %s" % (what, msg))
        e.errno = -rc
        raise e

    def _live(self, what):
        if self._h is None:
            raise ShoalError("%s after the worker was closed" % what)
        return self._h

    def join(self):
        rc = self._lib.shoal_ps_join(self._live("join()"))
        if rc:
            self._fail("joining the job", rc)

    def push_pull(self):
        rc = self._lib.shoal_ps_push_pull(self._live("push_pull()"))
        if rc:
            self._fail("push-pull of iteration %d" % self.iteration, rc)

    def push_start(self):
        rc = self._lib.shoal_ps_push_start(self._live("push_start()"))
        if rc:
            self._fail("starting the push-pull of iteration %d" % self.iteration, rc)

    def push_wait(self, timeout_ms=-1):
        """True when done, False when @timeout_ms passed first."""
        rc = self._lib.shoal_ps_push_wait(self._live("push_wait()"), int(timeout_ms))
        if rc == -errno.ETIMEDOUT:
            return False
        if rc:
            self._fail("push-pull of iteration %d" % self.iteration, rc)
        return True

    @property
    def iteration(self):
        return int(self._lib.shoal_ps_iteration(self._live("iteration")))

    def data_shard(self, epoch):
        """(member, shard, shards) of @epoch (shoal_ps_data_shard)."""
        m, s, n = ctypes.c_bool(), ctypes.c_int(), ctypes.c_int()
        rc = self._lib.shoal_ps_data_shard(self._live("data_shard()"), int(epoch),
                                           ctypes.byref(m), ctypes.byref(s), ctypes.byref(n))
        if rc:
            self._fail("the data shard of epoch %d" % epoch, rc)
        return bool(m.value), s.value, n.value

    @property
    def index(self):
        return self._lib.shoal_ps_worker(self._live("index"))

    @property
    def workers(self):
        return self._lib.shoal_ps_workers(self._live("workers"))

    def describe(self):
        return _lib.text(self._lib.shoal_ps_describe(self._live("describe()")))

    def last_round_us(self):
        return self._lib.shoal_ps_last_round_us(self._live("last_round_us()"))

    def finish(self):
        rc = self._lib.shoal_ps_finish(self._live("finish()"))
        if rc:
            self._fail("finishing", rc)
        self.finished = True

    def close(self):
        if self._h is not None:
            self._lib.shoal_ps_destroy(self._h)
            self._h = None
            self._keep = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
