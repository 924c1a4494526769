"""Network state shared by every environment of one state root.

``<state_root>/net.{0,1}.json`` hold what no single environment owns:

- ``bridges``: name -> ``{"created": bool, "users": [instance...],
  "subnet": str|None, "subnet6": str|None, "added": [cidr...]}``; a bridge
  vbdecl created is removed when its last user goes, a bridge it found is
  only given back the gateway addresses vbdecl added to it;
- ``leases``: subnet -> ``{address: instance}``;
- ``instances``: instance -> ``{"pid", "netns", "name", "run"}``: the
  environment's process and the inode of its network namespace, so that the
  allocations of an environment that died without a teardown (SIGKILL of
  ``vbdecl run``) are found and released (:func:`collect`); its name and
  whether it is a ``vbdecl run``, so that a conflict names it (:func:`describe`).

(The nftables table and the forwarding sysctls are host-wide and handled
under a host-wide lock by :mod:`vbdecl.ops.nat`.)

Users are lists of instance ids, not counters, so that every change is
idempotent (a revert that runs twice releases once). Every read-modify-write
happens under the short global lock (``<state_root>/global.lock``). When
nothing shared is left, the files (the lock included) are removed: a host
without environments keeps nothing of vbdecl's.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any


def state_root_of(state_dir: str) -> Path:
    """The state root for a Context's ``state_dir``: ``<state>/envs/<name>``
    -> ``<state>``; an ephemeral run may pass the root itself, or "" for the
    default root (``--state-dir``, ``VBDECL_STATE_DIR``, /var/lib/vbdecl)."""
    if not state_dir:
        from vbdecl.engine.paths import state_root

        return Path(state_root(None))
    path = Path(state_dir).absolute()
    if path.parent.name == "envs":
        return path.parent.parent
    return path


@contextlib.contextmanager
def _global_lock(root: Path) -> Iterator[None]:
    """``<state_root>/global.lock``: the same flock as vbdecl.engine.lock.global_lock
    (so the two exclude each other), without its holder bookkeeping, which
    costs more than the allocations it would guard here."""
    from vbdecl.sys.flock import lock

    try:
        fd = lock(root / "global.lock")
    except OSError as exc:      # (a read-only state directory: said as apply says it)
        from vbdecl.engine.paths import STATE_DIR_HINT, permission_hint
        from vbdecl.errors import StateError

        hint = permission_hint(root) if isinstance(exc, PermissionError) else STATE_DIR_HINT
        raise StateError(f"cannot lock {root / 'global.lock'}: {exc.strerror}", hint=hint) from None
    try:
        from vbdecl.engine.faults import crash_at

        crash_at("net-locked")      # (a test hook: a kill that leaves the lock's file)
        yield
    finally:
        os.close(fd)


def _empty() -> dict[str, Any]:
    return {"format": 1, "bridges": {}, "leases": {}, "instances": {}}


# Two slots written in turn (``net.0.json``, ``net.1.json``), each holding a
# generation and a checksum: a write overwrites the older slot in place, so a
# torn write (crash) leaves the other slot intact, and no rename or fsync is
# needed (on ext4 a rename-over or truncate-to-zero forces a data flush, which
# costs more than the whole network setup). The reader takes the valid slot
# with the higher generation. The data is derived anyway: every environment's
# records name its bridge, lease and nftables keys.
SLOTS = ("net.0.json", "net.1.json")


def _load_slot(path: Path) -> tuple[int, dict[str, Any]] | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        from vbdecl.errors import StateError

        raise StateError(f"cannot read the shared network state {path}: {err.strerror}") from err
    try:
        doc = json.loads(raw)
        body = json.dumps(doc["data"], sort_keys=True).encode()
        if "crc32" not in doc and "sha256" in doc:     # (written before 2026-11-28)
            import hashlib

            if hashlib.sha256(body).hexdigest() != doc["sha256"]:
                return None
        elif zlib.crc32(body) != doc["crc32"]:
            return None
        return int(doc["gen"]), dict(doc["data"])
    except (ValueError, KeyError, TypeError):
        return None   # torn or foreign: the other slot holds the last good state


def _read_slots(root: Path) -> tuple[int, int, dict[str, Any]]:
    """(generation, slot to write next, data). Both slots there and neither valid (damage
    from outside, as a write tears only the slot it writes, or a power loss soon after
    both were first written, unsynced) is a StateError, not a fresh start that would
    forget the leases and bridges of the environments that run (a crash review's next
    apply gave a live environment's bridge up as not vbdecl's)."""
    best: tuple[int, int, dict[str, Any]] = (0, 0, _empty())
    for i, name in enumerate(SLOTS):
        got = _load_slot(root / name)
        if got is not None and got[0] > best[0]:
            best = (got[0], 1 - i, got[1])
    if best[0] == 0 and all((root / name).exists() for name in SLOTS):
        from vbdecl.errors import StateError

        raise StateError(f"cannot read the shared network state in {root}: neither {SLOTS[0]} nor "
                         f"{SLOTS[1]} holds a valid copy (changed by another program, or cut short by a "
                         "power loss); every command on a bridge stops here",
                         hint="restore the two files, or move both away to start it afresh, which forgets "
                              "the addresses and bridges of the environments that run: destroy and apply "
                              "those again then")
    base = _empty()
    base.update(best[2])
    return best[0], best[1], base


def _write_slot(path: Path, gen: int, data: dict[str, Any]) -> None:
    body = json.dumps(data, sort_keys=True)
    doc = {"gen": gen, "crc32": zlib.crc32(body.encode()), "data": data}
    payload = (json.dumps(doc, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(payload)
        off = 0
        while off < len(payload):
            off += os.pwrite(fd, view[off:], off)
        os.ftruncate(fd, len(payload))
    finally:
        os.close(fd)


# The open shared states (id of the data -> [root, generation, slot to write next])
_OPEN: dict[int, list[Any]] = {}


@contextlib.contextmanager
def locked(state_dir: str) -> Iterator[dict[str, Any]]:
    """The shared state, under the global lock; written back if changed (and at each
    :func:`flush` before that)."""
    root = state_root_of(state_dir)
    try:
        if not root.is_dir():
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except PermissionError as exc:
        from vbdecl.engine.paths import permission_hint
        from vbdecl.errors import StateError

        raise StateError(f"cannot write {exc.filename or root}: Permission denied (the network state "
                         "of this state directory)", hint=permission_hint(root)) from None
    with _global_lock(root):
        gen, slot, data = _read_slots(root)
        initial = json.dumps(data, sort_keys=True)
        _OPEN[id(data)] = [root, gen, slot, initial]
        try:
            try:
                yield data
            except BaseException:
                if _OPEN[id(data)][3] != initial:
                    with contextlib.suppress(OSError):    # (the step's own error is the news)
                        _write_back(root, data)   # flushed on the way: what the failing step set back
                raise
            _write_back(root, data)
        finally:
            del _OPEN[id(data)]


def _write_back(root: Path, data: dict[str, Any]) -> None:
    """Write ``data`` (open in :func:`locked`) if it changed; when nothing shared is left,
    leave no files behind on the host instead."""
    if not any(data[k] for k in ("bridges", "leases", "instances")):
        for name in (*SLOTS, "global.lock"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(root / name)
    else:
        flush(data)


def flush(data: dict[str, Any]) -> None:
    """Write the shared state ``data`` (open in :func:`locked`) now, if it changed:
    before a host object it names is made, so that a vbdecl killed right after
    leaves it known. Each write goes to the older slot, as a new generation."""
    where = _OPEN[id(data)]
    root, gen, slot, written = where
    body = json.dumps(data, sort_keys=True)
    if body != written:
        _write_slot(root / SLOTS[slot], gen + 1, data)
        where[1:] = [gen + 1, 1 - slot, body]


def read(state_dir: str) -> dict[str, Any]:
    """A snapshot of the shared state (no lock: for status and tests)."""
    return _read_slots(state_root_of(state_dir))[2]


DEFAULT_MTU = 1500


def subnet_mismatches(entry: dict[str, Any], params: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key, what the bridge serves, what is asked for) for each of ``subnet``, ``subnet6``
    and ``mtu`` where the state root's entry of a bridge and a net.bridge action's params
    disagree: apply refuses them (ops.net.Bridge), and plan says so first. An MTU of
    its own on a shared bridge lowers the bridge's to it, and frames larger than that
    between the environments are dropped without a word (a network review lost
    1,400-byte datagrams so); entries from before the MTU was kept are not checked."""
    out = [(key, str(entry[key]), str(params[key])) for key in ("subnet", "subnet6")
           if params.get(key) and entry.get(key) and entry[key] != params[key]]
    if "mtu" in entry and (entry["mtu"] or DEFAULT_MTU) != (params.get("mtu") or DEFAULT_MTU):
        out.append(("mtu", str(entry["mtu"] or DEFAULT_MTU), str(params.get("mtu") or DEFAULT_MTU)))
    return out


def add_user(users: list[str], instance: str) -> None:
    if instance not in users:
        users.append(instance)


def remove_user(users: list[str], instance: str) -> None:
    while instance in users:
        users.remove(instance)


def pidns() -> int | None:
    """Our pid namespace: pids registered from another one mean nothing here."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def register(st: dict[str, Any], instance: str, pid: int | None, netns: int | None,
             owner: dict[str, Any] | None = None) -> None:
    """Remember ``instance``'s process and namespace; ``owner`` (:func:`owner`) says
    whose it is, for the messages of a conflict with it."""
    if pid is not None and netns is not None:
        st.setdefault("instances", {})[instance] = {"pid": pid, "netns": netns, "pidns": pidns(),
                                                    **(owner or {})}


def owner(name: str, state_dir: str) -> dict[str, Any]:
    """Who an instance belongs to: ``{"name": metadata.name, "run": bool, "root": str}``;
    ``run`` is true for an ephemeral ``vbdecl run`` (its state_dir is a state root, not
    ``<state>/envs/<name>`` as for an applied environment); ``root`` is its state root,
    which tells an environment from one of the same name in another state root (its real
    path: the same root given through a link is the same)."""
    return {"name": name, "run": not state_dir or Path(state_dir).absolute().parent.name != "envs",
            "root": os.path.realpath(state_root_of(state_dir))}


def is_one_of(info: dict[str, Any], names: Collection[str], state_dir: str | None) -> bool:
    """Whether the registered instance ``info`` is an applied environment of ``names``
    in the state root of ``state_dir`` (an entry from before roots were kept: by name)."""
    if info.get("name") not in names or info.get("run"):
        return False
    root = info.get("root")
    return root is None or root == os.path.realpath(state_root_of(state_dir or ""))


def describe(instance: str, info: dict[str, Any] | None, state_dir: str | None = None) -> str:
    """``environment web (instance vb-1a2b3c4d, pid 812)``, ``a `vbdecl run` of web
    (...)``, or ``instance vb-1a2b3c4d (pid 812)`` when nothing more is known. With
    ``state_dir`` (of a host-wide registry's reader), an environment of another state
    root says which: ``environment web of state root /srv/vb (...)``."""
    info = info or {}
    pid = f", pid {info['pid']}" if isinstance(info.get("pid"), int) else ""
    name = info.get("name")
    if not isinstance(name, str) or not name:
        return f"instance {instance}" + (f" ({pid[2:]})" if pid else "")
    what = f"a `vbdecl run` of {name}" if info.get("run") else f"environment {name}"
    root = info.get("root")
    if state_dir is not None and isinstance(root, str) \
            and root != os.path.realpath(state_root_of(state_dir)):
        what += f" of state root {root}"
    return f"{what} (instance {instance}{pid})"


def forget(st: dict[str, Any], instance: str) -> None:
    st.setdefault("instances", {}).pop(instance, None)


def collect(st: dict[str, Any], alive: Any) -> list[str]:
    """Release the bridge memberships and leases of registered instances
    whose namespace is gone (``alive(pid, netns)`` is false); their names."""
    mine = pidns()
    dead = [inst for inst, info in st.setdefault("instances", {}).items()
            if info.get("pidns") == mine and not alive(info.get("pid"), info.get("netns"))]
    for inst in dead:
        for entry in st["bridges"].values():
            remove_user(entry.setdefault("users", []), inst)
            if inst in entry.get("wants6") or []:      # (ops.net._wants_subnet6)
                entry["wants6"].remove(inst)
        for subnet in list(st["leases"]):
            leases = st["leases"][subnet]
            for addr in [a for a, who in leases.items() if who == inst]:
                del leases[addr]
            if not leases:
                del st["leases"][subnet]
        del st["instances"][inst]
    return dead
