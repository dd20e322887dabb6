"""shoal for Python: the parameter-server layer of shoal (libshoal-ps)
through ctypes, and a PyTorch interface on top (shoal.torch).

    shoal.ps      the C API of shoal_ps.h, framework-neutral (numpy, torch)
    shoal.torch   init(), DistributedOptimizer, as BytePS/Horovod users know
    shoal.data    Fashion-MNIST (IDX files, Debian's dataset-fashion-mnist)

Importing shoal loads nothing: the library (libshoal-ps.so) is found and
loaded on first use (see shoal._lib for where it is looked for).
"""
from .errors import ShoalError

__version__ = "0.1.0"
__all__ = ["ShoalError", "__version__"]
