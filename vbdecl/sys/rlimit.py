"""Resource limits of the process (setrlimit), set in the sandbox child before exec
(by vbdecl.sys.laststep).

Names are the manifest's (``limits.rlimits``): the lower-case RLIMIT_* names
without the prefix. Values are ``[soft, hard]`` (the normalized spec turns a
scalar N into ``[N, N]``); ``None``, ``-1``, ``"unlimited"`` or
``"infinity"`` mean RLIM_INFINITY.
"""

from __future__ import annotations

import errno as _errno
import os
import resource

from vbdecl.errors import SysError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


NAMES: dict[str, int] = {
    name[len("RLIMIT_"):].lower(): getattr(resource, name)
    for name in dir(resource) if name.startswith("RLIMIT_")
}

_UNLIMITED = ("unlimited", "infinity", "max")


def _one(v: Any) -> int:
    if v is None or (isinstance(v, str) and v.lower() in _UNLIMITED):
        return resource.RLIM_INFINITY
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise ValueError(f"not a limit value: {v!r}")
    n = int(v)
    if n == -1:
        return resource.RLIM_INFINITY
    if n < 0:
        raise ValueError(f"a limit cannot be negative: {n}")
    return n


def normalize(rlimits: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """{name: (soft, hard)}; raises ValueError naming the bad entry."""
    out: dict[str, tuple[int, int]] = {}
    for name, value in rlimits.items():
        if name not in NAMES:
            import difflib

            close = difflib.get_close_matches(name, NAMES, 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown rlimit {name!r}{hint}; known: {', '.join(sorted(NAMES))}")
        if isinstance(value, list | tuple):
            if len(value) != 2:
                raise ValueError(f"rlimits.{name}: expected [soft, hard], got {value!r}")
            soft, hard = _one(value[0]), _one(value[1])
        else:
            soft = hard = _one(value)
        inf = resource.RLIM_INFINITY
        if hard != inf and (soft == inf or soft > hard):
            raise ValueError(f"rlimits.{name}: soft limit {value!r} is above the hard limit")
        out[name] = (soft, hard)
    return out


def resolve(rlimits: dict[str, Any]) -> list[tuple[str, int, int, int]]:
    """(name, RLIMIT_* number, soft, hard) of each entry, for setrlimit in the
    process (vbdecl.sys.laststep); bad values raise SysError naming the entry."""
    try:
        limits = normalize(rlimits)
    except ValueError as exc:
        raise SysError(str(exc), errno=_errno.EINVAL) from None
    return [(name, NAMES[name], soft, hard) for name, (soft, hard) in limits.items()]


def failed(name: str, soft: int, hard: int, code: int) -> SysError:
    """The error of setrlimit ``name`` to (soft, hard) failing with errno ``code``."""
    hint = None
    if code == _errno.EPERM:
        cur = resource.getrlimit(NAMES[name])
        hint = (f"raising the hard limit (now {_show(cur[1])}) needs CAP_SYS_RESOURCE; "
                "lower the value or run as root")
    elif name == "nofile":
        hint = "nofile cannot exceed /proc/sys/fs/nr_open"
    return SysError(f"setrlimit {name} to [{_show(soft)}, {_show(hard)}]: {os.strerror(code)}",
                    errno=code, hint=hint)


def _show(v: int) -> str:
    return "unlimited" if v == resource.RLIM_INFINITY else str(v)
