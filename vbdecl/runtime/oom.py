"""OOM kills in an environment's memory cgroup, and how vbdecl tells of them.

A process the kernel's OOM killer took exits as from a plain SIGKILL (137),
so the command that ran it says so: ``vbdecl run`` and ``vb`` when the
sandbox's cgroup is torn down (it lived exactly as long as the command), and
``vbdecl exec`` for the kills that happened while its command ran (the count
is read before and after). A command that only tears an environment down
(``destroy``, a rollback) reports none: those kills happened earlier, under
some other command, and ``vbdecl status`` shows a live environment's count.

Imports only ``os``: ``vbdecl exec`` is a hot path.
"""

from __future__ import annotations

from vbdecl.sys import oslite as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def open_counter(resources: dict[str, Any] | None) -> int:
    """An fd on the file that counts the OOM kills of an environment's memory cgroup
    (``memory.events`` on cgroup2, ``memory.oom_control`` on v1), or -1 without one.
    ``resources``: the state's. Opened before entering an environment, it still reads
    the host's cgroupfs after."""
    return open_counter_at(memory_dir(resources))


def open_counter_at(path: str | None) -> int:
    """:func:`open_counter` of the memory cgroup at ``path`` (None: -1)."""
    if not path:
        return -1
    for name in ("memory.events", "memory.oom_control"):
        try:
            return os.open(os.path.join(path, name), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
    return -1


def memory_dir(resources: dict[str, Any] | None) -> str | None:
    """The environment's memory cgroup (see :func:`controller_dir`)."""
    return controller_dir(resources, "memory")


def controller_dir(resources: dict[str, Any] | None, ctrl: str) -> str | None:
    """The environment's cgroup of controller ``ctrl``: the group's, or that of a limit
    added to a live environment (kept in the limit's record as an extension of the
    group). ``resources``: the state's."""
    group = ((resources or {}).get("cgroup") or {}).get("record") or {}
    path = (group.get("controllers") or {}).get(ctrl)
    if path:
        return str(path)
    return next((str(ext["path"]) for ext in extensions(resources)
                 if ext.get("ctrl") == ctrl and ext.get("path")), None)


def extensions(resources: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The extensions of the environment's cgroup group that its limits' records keep
    (controllers brought into a live environment, sys.cgroupfs.extend_group)."""
    out = []
    for res in (resources or {}).values():
        ext = ((res or {}).get("record") or {}).get("extension") if isinstance(res, dict) else None
        if isinstance(ext, dict):
            out.append(ext)
    return out


def read_counter(fd: int) -> int | None:
    """The OOM kills counted so far (None: unreadable, or not counted by this kernel)."""
    if fd < 0:
        return None
    try:
        data = os.pread(fd, 4096, 0)
    except OSError:
        return None
    for line in data.split(b"\n"):
        key, _, value = line.partition(b" ")
        if key == b"oom_kill":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def size(n: int) -> str:
    """``268435456`` -> ``256Mi`` (exact units only). model.units.format_size's rule (up to
    Gi), here again because ``vbdecl exec`` reports from inside the environment's root,
    where vbdecl's other modules may not be importable."""
    for unit, shift in (("Gi", 30), ("Mi", 20), ("Ki", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def message(name: str, n: int, memory_limit: int | None, when: str = "", *,
            speaker: tuple[str, str] | None = None) -> str:
    """``speaker``: who tells it and the setting of the limit, for a front end that
    speaks otherwise (vb: ``("bwrap", "--limit-memory")``); default vbdecl's words."""
    who, setting = speaker or (f"vbdecl: {name}", "limits.memory")
    limit = f"{setting} {size(int(memory_limit))}" if memory_limit else setting
    return (f"{who}: out of memory: the kernel's OOM killer killed {n} "
            f"process{'es' if n > 1 else ''} of this environment{when} ({limit})\n")


def report(name: str, n: int, memory_limit: int | None, when: str = "", *,
           speaker: tuple[str, str] | None = None) -> None:
    """Say on stderr that the OOM killer killed ``n`` processes (``when``: e.g.
    `` while the command ran``)."""
    if n > 0:
        os.write(2, message(name, n, memory_limit, when, speaker=speaker).encode())
