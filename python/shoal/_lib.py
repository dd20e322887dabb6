"""Finding and loading libshoal-ps, and its C types mirrored with ctypes.

This file is the only place that knows the C layout of shoal_ps.h.  The
layout is checked twice: `make check` compares every field's offset with
the compiler's (tests/torch/layout.sh), and at load time
shoal_ps_config_init() must write inside the mirrored size (a library
whose struct grew would write past it).

Where the library is looked for, in order:
  1. $SHOAL_LIB_DIR: a directory holding libshoal-ps.so (libshoal.so next
     to it or in the build tree's lib/.libs), or a build directory (one
     with lib/ps/.libs);
  2. the libdir recorded by `make install` (_install.py);
  3. the source tree this package sits in: <src>/build/lib/ps/.libs;
  4. the dynamic loader's own search (ldconfig, LD_LIBRARY_PATH).
"""
import ctypes
import os
import threading

from .errors import ShoalError

HOST_MAX = 64
PATH_MAX = 4096
LABEL_MAX = 128
MAX_SERVERS = 48
MAX_WORKERS = 1024
MAX_GROUPS = 64

MODES = ("bsp", "async", "ssp")              # shoal_ps_mode_t, in order
OPTIMIZERS = ("sgd", "adam", "average")      # shoal_ps_optimizer_t
SCHEDULES = ("const", "cosine", "step")      # shoal_ps_schedule_t


class Job(ctypes.Structure):
    """shoal_ps_job_t"""
    _fields_ = [
        ("workers", ctypes.c_int),
        ("mode", ctypes.c_int),
        ("staleness", ctypes.c_int),
        ("iters_per_epoch", ctypes.c_uint32),
        ("epochs", ctypes.c_uint32),
        ("batch", ctypes.c_uint32),
        ("optimizer", ctypes.c_int),
        ("lr", ctypes.c_float),
        ("momentum", ctypes.c_float),
        ("weight_decay", ctypes.c_float),
        ("momentum_auto", ctypes.c_bool),
        ("beta1", ctypes.c_float),
        ("beta2", ctypes.c_float),
        ("eps", ctypes.c_float),
        ("schedule", ctypes.c_int),
        ("step_epochs", ctypes.c_int),
        ("gamma", ctypes.c_float),
        ("label", ctypes.c_char * LABEL_MAX),
        ("compress", ctypes.c_int),
        ("topk_ratio", ctypes.c_float),
    ]


class Config(ctypes.Structure):
    """shoal_ps_config_t"""
    _fields_ = [
        ("rank", ctypes.c_int),
        ("size", ctypes.c_int),
        ("local_rank", ctypes.c_int),
        ("servers", ctypes.c_int),
        ("coordinator", ctypes.c_char * (HOST_MAX + 8)),
        ("rendezvous", ctypes.c_char * PATH_MAX),
        ("host", ctypes.c_char * HOST_MAX),
        ("connect_timeout_ms", ctypes.c_int),
        ("idle_timeout_ms", ctypes.c_int),
        ("fail_timeout_ms", ctypes.c_int),
        ("rejoin_timeout_ms", ctypes.c_int),
        ("reconnect_timeout_ms", ctypes.c_int),
        ("checkpoint_dir", ctypes.c_char * PATH_MAX),
        ("checkpoint_every", ctypes.c_int),
        ("checkpoint_secs", ctypes.c_double),
        ("resume", ctypes.c_bool),
        ("verify", ctypes.c_bool),
        ("quiet", ctypes.c_bool),
        ("colocated", ctypes.c_bool),
        ("groups", ctypes.c_int),
        ("group", ctypes.c_int),
        ("group_rank", ctypes.c_int),
        ("group_size", ctypes.c_int),
        ("job", Job),
    ]


class Tensor(ctypes.Structure):
    """shoal_ps_tensor_t"""
    _fields_ = [("name", ctypes.c_char_p), ("count", ctypes.c_size_t)]


_c_int, _c_size, _c_char_p, _c_void_p = (ctypes.c_int, ctypes.c_size_t, ctypes.c_char_p,
                                          ctypes.c_void_p)
_CFG = ctypes.POINTER(Config)
_FLOATS = ctypes.POINTER(ctypes.c_float)
# name: (restype, argtypes)
_PROTOTYPES = {
    "shoal_ps_config_init": (None, [_CFG]),
    "shoal_ps_config_from_env": (_c_int, [_CFG, _c_char_p, _c_size]),
    "shoal_ps_config_check": (_c_int, [_CFG, ctypes.c_bool, _c_char_p, _c_size]),
    "shoal_ps_is_server": (ctypes.c_bool, [_CFG]),
    "shoal_ps_serve": (_c_int, [_CFG, _c_char_p, _c_size]),
    "shoal_ps_create": (_c_int, [_CFG, ctypes.POINTER(Tensor), _c_int, _FLOATS, _FLOATS,
                                 ctypes.POINTER(_c_void_p), _c_char_p, _c_size]),
    "shoal_ps_join": (_c_int, [_c_void_p]),
    "shoal_ps_push_pull": (_c_int, [_c_void_p]),
    "shoal_ps_push_ready": (_c_int, [_c_void_p, _c_size]),
    "shoal_ps_push_pull_at": (_c_int, [_c_void_p, ctypes.c_uint32]),
    "shoal_ps_refresh": (_c_int, [_c_void_p]),
    "shoal_ps_push_start": (_c_int, [_c_void_p]),
    "shoal_ps_push_test": (_c_int, [_c_void_p]),
    "shoal_ps_push_wait": (_c_int, [_c_void_p, _c_int]),
    "shoal_ps_iteration": (ctypes.c_uint32, [_c_void_p]),
    "shoal_ps_data_shard": (_c_int, [_c_void_p, ctypes.c_uint32, ctypes.POINTER(ctypes.c_bool),
                                     ctypes.POINTER(_c_int), ctypes.POINTER(_c_int)]),
    "shoal_ps_finish": (_c_int, [_c_void_p]),
    "shoal_ps_destroy": (None, [_c_void_p]),
    "shoal_ps_worker": (_c_int, [_c_void_p]),
    "shoal_ps_workers": (_c_int, [_c_void_p]),
    "shoal_ps_nparams": (_c_size, [_c_void_p]),
    "shoal_ps_describe": (_c_char_p, [_c_void_p]),
    "shoal_ps_errmsg": (_c_char_p, [_c_void_p]),
    "shoal_ps_last_round_us": (ctypes.c_double, [_c_void_p]),
    "shoal_ps_pushed_bytes": (None, [_c_void_p, ctypes.POINTER(ctypes.c_uint64),
                                     ctypes.POINTER(ctypes.c_uint64)]),
    "shoal_ps_mode_name": (_c_char_p, [_c_int]),
    "shoal_ps_optimizer_name": (_c_char_p, [_c_int]),
    "shoal_ps_schedule_name": (_c_char_p, [_c_int]),
    "shoal_ps_parse_compress": (_c_int, [_c_char_p, ctypes.POINTER(_c_int),
                                         ctypes.POINTER(ctypes.c_float)]),
}

_lock = threading.Lock()
_lib = None
_where = None


def _here():
    return os.path.dirname(os.path.abspath(__file__))


def _candidates():
    """(directory of libshoal-ps, directory of libshoal or None, how it was found)."""
    out = []
    env = os.environ.get("SHOAL_LIB_DIR", "")
    if env:
        if os.path.isdir(os.path.join(env, "lib", "ps", ".libs")):
            out.append((os.path.join(env, "lib", "ps", ".libs"),
                        os.path.join(env, "lib", ".libs"), "SHOAL_LIB_DIR (a build tree)"))
        else:
            out.append((env, None, "SHOAL_LIB_DIR"))
    try:
        from . import _install  # written by `make install`
        out.append((_install.LIBDIR, None, "the installed prefix"))
    except ImportError:
        pass
    src = os.path.dirname(os.path.dirname(_here()))  # <src>/python/shoal -> <src>
    b = os.path.join(src, "build")
    out.append((os.path.join(b, "lib", "ps", ".libs"), os.path.join(b, "lib", ".libs"),
                "the source tree's build/"))
    return out


def _open(path):
    # RTLD_GLOBAL: libshoal-ps.so, loaded next, finds its libshoal.so.0
    # among the objects already loaded even where its RUNPATH does not
    # name the directory (an uninstalled build tree moved or copied).
    return ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)


def load():
    """The loaded libshoal-ps (a ctypes.CDLL), loading it on first use."""
    global _lib, _where
    with _lock:
        if _lib is not None:
            return _lib
        tried = []
        lib = None
        for psdir, coredir, how in _candidates():
            ps = os.path.join(psdir, "libshoal-ps.so.0")
            if not os.path.exists(ps):
                tried.append("%s (%s): no libshoal-ps.so.0" % (psdir, how))
                continue
            for d in (coredir, psdir):
                core = os.path.join(d, "libshoal.so.0") if d else ""
                if core and os.path.exists(core):
                    try:
                        _open(core)
                    except OSError as e:
                        raise ShoalError("cannot load %s: %s" % (core, e)) from None
                    break
            try:
                lib = _open(ps)
            except OSError as e:
                raise ShoalError("cannot load %s (found through %s): %s" % (ps, how, e)) from None
            _where = ps
            break
        if lib is None:
            try:
                lib = _open("libshoal-ps.so.0")
                _where = "libshoal-ps.so.0 (the dynamic loader's path)"
            except OSError as e:
                tried.append("the dynamic loader: %s" % e)
                raise ShoalError("cannot find libshoal-ps: looked in\n  " + "\n  ".join(tried) +
                                 "\nbuild the tree (make), install it (make install), or set "
                                 "SHOAL_LIB_DIR to the directory holding libshoal-ps.so") \
                    from None
        for name, (res, args) in _PROTOTYPES.items():
            try:
                f = getattr(lib, name)
            except AttributeError:
                raise ShoalError("%s has no %s: a libshoal-ps older than this package"
                                 % (_where, name)) from None
            f.restype = res
            f.argtypes = args
        _check_layout(lib)
        _lib = lib
        return lib


def where():
    """The path of the library loaded (after load())."""
    return _where


def _check_layout(lib):
    """shoal_ps_config_init() memsets sizeof(shoal_ps_config_t) bytes: it
    must stay inside our mirror of the struct; and the enums' values must
    name what ours do."""
    for fn, names in (("shoal_ps_mode_name", MODES), ("shoal_ps_optimizer_name", OPTIMIZERS),
                      ("shoal_ps_schedule_name", SCHEDULES)):
        got = [text(getattr(lib, fn)(i)) for i in range(len(names))]
        if got != list(names):
            raise ShoalError("%s: %s names %s, this Python package expects %s: the package "
                             "and the library come from different versions of shoal"
                             % (_where, fn, got, list(names)))
    n = ctypes.sizeof(Config)
    pad = 4096
    buf = (ctypes.c_ubyte * (n + pad))(*([0xA5] * (n + pad)))
    lib.shoal_ps_config_init(ctypes.cast(buf, _CFG))
    if any(b != 0xA5 for b in buf[n:]):
        raise ShoalError("%s: its shoal_ps_config_t is larger than the %d bytes this Python "
                         "package mirrors; the package and the library come from different "
                         "versions of shoal" % (_where, n))


def new_config():
    """A Config with the library's defaults (shoal_ps_config_init)."""
    lib = load()
    c = Config()
    lib.shoal_ps_config_init(ctypes.byref(c))
    return c


def errbuf():
    return ctypes.create_string_buffer(1024)


def text(b):
    """C bytes (or a ctypes buffer) as str."""
    if b is None:
        return ""
    if not isinstance(b, bytes):
        b = b.value
    return b.decode("utf-8", "replace")


def set_str(cfg, field, value, what):
    """Copy str @value into the char array @field of @cfg, or say why not."""
    raw = value.encode()
    cap = dict((f, t) for f, t in type(cfg)._fields_)[field]._length_
    if len(raw) >= cap:
        raise ShoalError("%s is %d bytes long: at most %d" % (what, len(raw), cap - 1))
    if b"\0" in raw:
        raise ShoalError("%s contains a NUL byte" % what)
    setattr(cfg, field, raw)
