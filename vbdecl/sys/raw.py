"""Raw system calls and errno-faithful call checking.

The calls go through :mod:`vbdecl.sys._linux`, a small C extension
(``_linux.c``): ctypes would do the same, but importing it costs every
``vbdecl run`` and ``vb`` about 2 ms, a tenth of the whole run. A call returns
its result, or ``-errno`` when it failed (no exception: a caller that expects
a failure pays nothing for it).

One helper per syscall lives in the family module that needs it
(``sys.mount``, ``sys.ns``, ``sys.caps``, ...); they all use :func:`check`
so that every failure becomes a :class:`~vbdecl.errors.SysError` that names
the call, its arguments and the errno, with a hint where one helps.
"""

from __future__ import annotations

import errno as _errno

from vbdecl.sys import oslite as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from vbdecl.errors import SysError

try:
    from vbdecl.sys import _linux
except ImportError as exc:     # a source tree whose extension was never built
    raise ImportError(
        "vbdecl's C extension (vbdecl.sys._linux) is not built: install vbdecl with pip, "
        "or run `make run` in a checkout (it needs gcc and the Python headers)") from exc

NR: dict[str, int] = _linux.NR


def syscall(name: str, *args: int | bytes | bytearray | None) -> int:
    """The raw syscall ``name``: its result, or -errno when it failed."""
    return _linux.syscall(NR[name], *args)


_HINTS = {
    _errno.EPERM: "this needs privileges: run as root, or enable namespaces.user for an unprivileged sandbox",
    _errno.EACCES: "permission denied: check the path's permissions and whether you run as root",
    _errno.ENOSYS: "the running kernel does not support this call",
}


def check(ret: int, what: str, *, hint: str | None = None) -> int:
    """Return ``ret``, or raise SysError naming ``what`` if the call failed (ret < 0)."""
    if ret < 0:
        raise_errno(what, -ret, hint=hint)
    return ret


def raise_errno(what: str, err: int, *, hint: str | None = None) -> NoReturn:
    raise sys_error(what, err, hint=hint)


def sys_error(what: str, err: int, *, hint: str | None = None) -> SysError:
    """The error of a call ``what`` that failed with ``err`` (errno)."""
    from vbdecl.errors import SysError

    return SysError(f"{what}: {os.strerror(err)} ({_errno.errorcode.get(err, err)})",
                    errno=err, hint=hint or _HINTS.get(err))
