"""The one exception the package raises for wrong use and failed jobs."""


class ShoalError(RuntimeError):
    """A shoal call failed; the message names the problem (the C layer's
    own words where it has them).  errno: the C call's error (EINVAL for
    wrong use, ETIMEDOUT, ...), or None when Python found the problem."""

    errno = None
