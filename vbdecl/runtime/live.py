"""Live environments: the namespace-holding init, the declared process, exec and logs.

* :func:`start_env` (op ``env.namespaces``): forks a detached init that
  creates and holds the namespaces (pid 1 of the new pid namespace, reaper
  of every orphan), pins them as bind mounts of ``/proc/PID/ns/*`` under
  ``<runtime>/<instance>/ns/`` and returns a record (pid + start time,
  pins). :func:`stop_env` kills the init tree and unpins.
* :func:`start_process` (op ``proc.main``): a helper enters the
  environment's namespaces and cgroup and starts the declared process with
  its output in ``<state>/envs/<name>/logs/process.log``; a supervisor under
  the environment's init reaps it and records its exit (``logs/process.exit``),
  and reaps what it left running. :func:`stop_process` ends all of it.
* :func:`exec_in` (``vbdecl exec``): enters the namespaces the same way and
  runs a command in the foreground.
"""

from __future__ import annotations

import _stat as stat
import _struct as struct
import errno
import sys
import time

from vbdecl.errors import RuntimeSetupError, StateError, SysError, VbdeclError
from vbdecl.runtime import child as C
from vbdecl.runtime import oom
from vbdecl.sys import caps as syscaps  # (the supervisor confines itself inside the environment)
from vbdecl.sys import ns as sysns
from vbdecl.sys import oslite as os
from vbdecl.sys import proc as sysproc
from vbdecl.sys import signals

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any, BinaryIO


STOP_TIMEOUT = 5.0


# --- env.namespaces ----------------------------------------------------------------

def start_env(*, spec: dict[str, Any], instance: str, runtime_dir: str,
              name: str = "") -> dict[str, Any]:
    """Start the init of the live environment ``name`` (see the module doc). Its
    command line says what it is: ``vbdecl-init: NAME (instance ID)``."""
    from vbdecl.runtime.spawn import (
        _child_error,
        _config,
        _read_msg,
        fork_holder,
        resolve_namespaces,
    )

    nsd, idmap, _ = resolve_namespaces(spec)
    cfg = _config(spec, nsd, instance, None)
    cfg.live = True
    cfg.title = _title("vbdecl-init", name, instance)
    cfg.die_with_parent = False
    cfg.needs_root = False
    lock_fd = -1
    status = spec.get("status") or {}
    if status.get("lock_file"):
        from vbdecl.runtime.lock import acquire
        from vbdecl.runtime.rootfs import sandbox_writable

        lock_fd = acquire(status["lock_file"], sandbox_writable(spec))
        cfg.lock_fd = lock_fd
    cfg.keep_fds = []
    from os import makedirs

    makedirs(os.path.join(runtime_dir, "ns"), mode=0o700, exist_ok=True)
    pid, c2p_r, p2c_w, _ = fork_holder(cfg, max(2, lock_fd))
    init_pid = -1
    record: dict[str, Any] = {}
    try:
        msg = _read_msg(c2p_r)
        if msg is None or msg[0] != C.MSG_UNSHARED:
            raise _child_error(msg[1]) if msg else RuntimeSetupError("the environment's init exited during setup")
        if cfg.user_new and idmap:
            sysns.write_id_maps(pid, idmap["uid"], idmap["gid"])
        os.write(p2c_w, C.MSG_GO)
        msg = _read_msg(c2p_r)
        if msg is None or msg[0] != C.MSG_PID:
            raise _child_error(msg[1]) if msg else RuntimeSetupError("the environment's init exited during setup")
        init_pid = struct.unpack("=i", msg[1])[0]
        if init_pid <= 0:
            raise RuntimeSetupError(f"sandbox sync protocol violation: init pid {init_pid}")
        from vbdecl.engine.faults import crash_at

        crash_at("init-pid")
        _write_init_file(runtime_dir, init_pid)
        try:
            os.write(p2c_w, C.MSG_GO)     # the init stays, now that it is on record
        except OSError:
            pass     # it is gone: it said why below, or the check after says so
        msg = _read_msg(c2p_r)
        if msg is not None:
            raise _child_error(msg[1]) if msg[0] == C.MSG_ERROR else RuntimeSetupError("sync protocol violation")
        started = sysproc.start_time(init_pid)
        if not sysproc.alive(init_pid, started):
            raise RuntimeSetupError("the environment's init exited during setup")
        record = {"instance": instance, "pid": init_pid, "start_time": started,
                  "runtime_dir": runtime_dir, "pins": {}, "ns": sysns.ns_inodes(init_pid),
                  "namespaces": nsd, "lock_file": status.get("lock_file")}
        for key, value in nsd.items():
            if value is True:
                fname = sysns.NAMESPACES[key][1]
                target = os.path.join(runtime_dir, "ns", fname)
                try:
                    sysns.pin(init_pid, fname, target)
                except SysError as err:
                    # Linux refuses to bind a mount namespace whose id is below the
                    # caller's (mnt_ns_loop); 6.18 hands ids out in per-CPU batches, so
                    # from a non-initial mount namespace this can happen. The init holds
                    # the namespace anyway; exec then enters it through /proc/PID/ns/mnt.
                    if key != "mount" or err.errno != errno.EINVAL:
                        raise
                    sysns.unpin(target)
                    record.setdefault("unpinned", []).append(key)
                    continue
                record["pins"][key] = target
    except BaseException:
        if init_pid > 0:
            stop_env(record or {"pid": init_pid, "start_time": sysproc.start_time(init_pid),
                                "runtime_dir": runtime_dir, "pins": {}})
        else:
            _remove_runtime(runtime_dir)
        raise
    finally:
        os.close(c2p_r)
        os.close(p2c_w)
        if cfg.pid_new:   # the holder exits once pid 1 exists
            _reap(pid)
        elif init_pid < 0:
            sysproc.kill_verified(pid, None)
            _reap(pid)
        if lock_fd >= 0:
            os.close(lock_fd)   # the init holds the same open file (and so the lock)
    return record


def _title(what: str, name: str, instance: str, suffix: str = "") -> str:
    """The command line of a long-lived process of a live environment (ps, pgrep -f):
    ``vbdecl-init: NAME (instance ID)``, ``vbdecl-supervise: NAME process (...)``."""
    words = " ".join(w for w in (name, suffix) if w)
    return f"{what}: {words} (instance {instance})" if words else f"{what} (instance {instance})"


INIT_FILE = "init.json"
PROCESS_FILE = "process.json"


def _write_pid_file(runtime_dir: str, name: str, data: dict[str, Any]) -> None:
    import json

    tmp = os.path.join(runtime_dir, f".{name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(data).encode())
    finally:
        os.close(fd)
    os.replace(tmp, os.path.join(runtime_dir, name))


def _read_pid_file(runtime_dir: str, name: str) -> dict[str, Any] | None:
    import json

    try:
        with open(os.path.join(runtime_dir, name), "rb") as f:
            found = json.loads(f.read())
        return {"pid": int(found["pid"]), "start_time": found.get("start_time"),
                **{k: v for k, v in found.items() if k not in ("pid", "start_time")}}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_init_file(runtime_dir: str, pid: int) -> None:
    """Name the init in the runtime dir before anything else, so that recovery of an
    apply killed before it journaled the env record still finds it (find_env)."""
    _write_pid_file(runtime_dir, INIT_FILE, {"pid": pid, "start_time": sysproc.start_time(pid)})


def find_env(instance: str, runtime_dir: str) -> dict[str, Any] | None:
    """The record of a live init of ``instance`` known only from its runtime dir."""
    found = _read_pid_file(runtime_dir, INIT_FILE)
    if found is None:
        return None
    record = {"instance": instance, "pid": found["pid"], "start_time": found["start_time"],
              "runtime_dir": runtime_dir, "pins": {}}
    return record if env_alive(record) else None


def find_process(runtime_dir: str) -> dict[str, Any] | None:
    """The record of the declared process named in the runtime dir (recovery of an
    apply killed before it journaled the process record), while it, or a process it
    left running (:func:`process_tree`), lives; else None."""
    found = _read_pid_file(runtime_dir, PROCESS_FILE)
    if found is None or not process_tree(found):
        return None
    return found


def forget_process(runtime_dir: str, record: dict[str, Any]) -> None:
    """Remove the runtime dir's note of the process ``record`` (and only of that one)."""
    found = _read_pid_file(runtime_dir, PROCESS_FILE)
    if found is not None and found["pid"] == record.get("pid") \
            and found["start_time"] == record.get("start_time"):
        try:
            os.unlink(os.path.join(runtime_dir, PROCESS_FILE))
        except FileNotFoundError:
            pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def set_hostname(record: dict[str, Any], hostname: str | None) -> None:
    """Give the live environment of ``record`` (its own uts namespace) the name
    ``hostname``; None: the host's, which a new environment without one starts with."""
    name = os.uname().nodename if hostname is None else hostname

    def rename() -> str:
        sysns.sethostname(name)
        return ""

    _in_uts(record, rename, what=f"cannot set the hostname to {name!r}")


def hostname_of(record: dict[str, Any]) -> str:
    """The hostname the live environment of ``record`` (its own uts namespace) has now:
    root inside may have changed it (status and plan see that as drift)."""
    return _in_uts(record, lambda: os.uname().nodename, what="cannot read the environment's hostname")


def _in_uts(record: dict[str, Any], work: Callable[[], str], *, what: str) -> str:
    """``work()``'s text, run by a child of ours in the environment's uts namespace."""
    path = os.path.join(str(record.get("runtime_dir") or ""), "ns", "uts")
    if not sysns.is_pinned(path):
        path = f"/proc/{int(record['pid'])}/ns/uts"
    # only the environment's own uts namespace: never the host's, nor another process's
    # that took the pid of an init gone since (a recover after a reboot: a review)
    ino: int | None = None
    try:
        ino = os.stat(path).st_ino
        ours = os.stat("/proc/self/ns/uts").st_ino
    except OSError:
        ours = None
    recorded = (record.get("ns") or {}).get("uts")
    if not env_alive(record) or ino is None or ino == ours or (recorded is not None and ino != recorded):
        raise RuntimeSetupError("the environment's uts namespace is not there",
                                hint="its init is gone: an apply makes the environment again")
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            sysns.setns(fd, sysns.CLONE_NEWUTS, what="the environment's uts namespace")
            os.write(w, work().encode(errors="surrogateescape")[:4096])
            os._exit(0)
        except BaseException as exc:
            os.write(w, (getattr(exc, "message", None) or str(exc)).encode()[:2000])
            os._exit(1)
    os.close(w)
    try:
        said = os.read(r, 8192)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeSetupError(f"{what}: {said.decode(errors='replace') or 'the helper failed'}")
    return said.decode(errors="surrogateescape")


def stop_env(record: dict[str, Any]) -> None:
    """Kill the init (and so its pid namespace), unpin, remove the runtime dir. Idempotent."""
    pid, started = int(record.get("pid") or 0), record.get("start_time")
    if pid > 0 and sysproc.alive(pid, started):
        _kill_the_rest(record)
    if pid > 0 and sysproc.kill_verified(pid, started, signals.SIGKILL):
        _wait_gone(pid, started)
    for target in (record.get("pins") or {}).values():
        sysns.unpin(target)
    if record.get("runtime_dir"):
        _remove_runtime(record["runtime_dir"])


def _kill_the_rest(record: dict[str, Any]) -> None:
    """Without a pid namespace of its own (namespaces.pid: false), the init's death
    takes no other process with it, and what the process left running in the
    background (or an exec's) was reparented outside, beyond any tree: every process
    in the environment's mount namespace is killed (a pass more for those forked
    meanwhile). Only a mount namespace the environment made (never a joined one, nor
    the one it shares with the host), and only while the init is still in the one
    recorded when it was made. Nothing to do for an init that is pid 1."""
    init = int(record["pid"])
    made = (record.get("ns") or {}).get("mount")
    if (record.get("namespaces") or {}).get("mount") is not True or not made or sysproc.is_pid1(init):
        return
    try:
        mnt = os.stat(f"/proc/{init}/ns/mnt").st_ino
        if mnt != made or mnt == os.stat("/proc/self/ns/mnt").st_ino:
            return
    except OSError:
        return
    for _ in range(20):
        if not sysproc.kill_mount_namespace(mnt, init):
            return
        time.sleep(0.01)


def env_alive(record: dict[str, Any] | None) -> bool:
    return bool(record) and sysproc.alive(int(record.get("pid") or 0), record.get("start_time"))  # type: ignore[union-attr]


def _wait_gone(pid: int, started: int | None, timeout: float = STOP_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.001
    while sysproc.alive(pid, started):
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    # A child of ours (the holder without a pid namespace) must be reaped.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return True


def _remove_runtime(runtime_dir: str) -> None:
    for name in (INIT_FILE, f".{INIT_FILE}.tmp", PROCESS_FILE, f".{PROCESS_FILE}.tmp"):
        try:
            os.unlink(os.path.join(runtime_dir, name))
        except OSError:
            pass
    ns_dir = os.path.join(runtime_dir, "ns")
    if os.path.isdir(ns_dir):
        for name in os.listdir(ns_dir):
            sysns.unpin(os.path.join(ns_dir, name))
        try:
            os.rmdir(ns_dir)
        except OSError:
            pass
    try:
        os.rmdir(runtime_dir)
    except OSError:
        pass


def _tail_start(f: BinaryIO, lines: int) -> int:
    """Where the last ``lines`` lines of the file ``f`` start (the end for 0), read back
    from its end in blocks; a last line without its newline counts as one."""
    end = f.seek(0, os.SEEK_END)
    if lines <= 0:
        return end
    pos, found = end, 0
    if end:
        f.seek(end - 1)
        if f.read(1) == b"\n":
            found = -1      # (the file's last newline ends the last line, starts none)
    while pos > 0:
        size = min(1 << 16, pos)
        pos -= size
        f.seek(pos)
        block = f.read(size)
        at = len(block)
        while (at := block.rfind(b"\n", 0, at)) >= 0:
            found += 1
            if found == lines:
                return pos + at + 1
    return 0


class _LogWriter:
    """The log's bytes to stdout as they are, or as JSON lines (whole lines only, the
    last one at the end even without its newline)."""

    def __init__(self, json_lines: bool) -> None:
        self.json_lines = json_lines
        self.partial = b""
        self.out = sys.stdout.buffer

    def write(self, data: bytes) -> None:
        if not self.json_lines:
            self.out.write(data)
        else:
            *lines, self.partial = (self.partial + data).split(b"\n")
            for line in lines:
                self._line(line)
        self.out.flush()

    def end(self) -> None:
        if self.json_lines and self.partial:
            self._line(self.partial)
            self.partial = b""
        self.out.flush()

    def _line(self, line: bytes) -> None:
        import json

        text = line.decode("utf-8", "backslashreplace")
        self.out.write((json.dumps({"event": "log", "line": text}) + "\n").encode())


# --- entering a live environment -------------------------------------------------------

def _ns_paths(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, path) of each namespace to enter, in setns order; pins first, /proc as fallback."""
    pins = record.get("pins") or {}
    pid = int(record["pid"])
    out = []
    for key in sysns.JOIN_ORDER:
        fname = sysns.NAMESPACES[key][1]
        path = pins.get(key)
        if not path or not sysns.is_pinned(path):
            path = f"/proc/{pid}/ns/{fname}"
        mine = sysns.ns_inode("self", fname)
        try:
            theirs = os.stat(path).st_ino
        except OSError:
            continue
        if theirs != mine:
            out.append((key, path))
    return out


def enter(record: dict[str, Any], spec: dict[str, Any], cgroups: list[str] | None = None) -> None:
    """Move the calling process into the environment's cgroups (the init's, and
    ``cgroups``: see :func:`_env_cgroups`) and namespaces."""
    if not env_alive(record):
        raise RuntimeSetupError("the environment is not running (its init is gone)",
                                hint="vbdecl apply FILE starts it again")
    joined = _env_cgroups(record, cgroups)
    sysproc.join_cgroups(joined)
    enter_cgroup_namespace(enter_namespaces(record, leave=("cgroup",)), fresh=bool(joined) and _own_cgroupns(spec))


def _own_cgroupns(spec: dict[str, Any]) -> bool:
    return (spec.get("namespaces") or {}).get("cgroup") is True


def enter_cgroup_namespace(later: dict[str, int], *, fresh: bool) -> None:
    """Enter the environment's cgroup namespace (``later["cgroup"]``, closed here), once
    in its cgroups. ``fresh``: a cgroup namespace of our own, rooted at the cgroups just
    joined, instead. The init made the environment's before the cgroup action moved
    it into its cgroups, so that one is rooted at the cgroups of whoever applied it:
    its processes saw host paths (``/../../vbdecl/vb-...``) where a run's see ``/``."""
    fd = later.pop("cgroup", None)
    if fd is None:
        return
    try:
        if fresh:
            sysns.unshare(sysns.CLONE_NEWCGROUP)
        else:
            sysns.setns(fd, sysns.NAMESPACES["cgroup"][0], what="cgroup namespace of the environment")
    finally:
        os.close(fd)


def _env_cgroups(record: dict[str, Any], extra: list[str] | None = None) -> list[str]:
    """The environment's cgroups the caller is not in: the init's, and ``extra``, those
    the init is kept out of (its v1 memory cgroup, ops.cgroup: where the OOM killer
    must pick only among the processes of the environment, never its init)."""
    mine = set(sysproc.cgroup_paths(os.getpid()))
    paths = sysproc.cgroup_paths(int(record["pid"]))
    hierarchies = {os.path.dirname(os.path.dirname(p)) for p in extra or []}
    # (the init's cgroup in a hierarchy of ``extra`` is not the environment's)
    paths = [p for p in paths if not any(p.startswith(h + "/") for h in hierarchies)]
    paths += [p for p in extra or [] if os.path.isdir(p)]
    return [p for p in dict.fromkeys(paths) if p not in mine]


def memory_cgroups(resources: dict[str, Any] | None, instance: str = "") -> list[str]:
    """The environment's v1 memory cgroup (the group's, or an extension's), which the
    init is not in and every other process of the environment joins; [] on cgroup2
    (there the init is in the memory cgroup too) or without one. ``instance``: also
    the one an apply is adding while ``resources`` (the committed state, read without
    the lock) knows of none yet, found where the v1 memory hierarchy has it (as
    sys.cgroupfs makes it: ``<hierarchy>/vbdecl/<instance>``): an exec that started
    meanwhile joined only the init's cgroups, which do not include it, and escaped
    the new limit."""
    from vbdecl.runtime.oom import memory_dir

    path = memory_dir(resources)
    if not path and instance and os.sep not in instance and instance not in (".", ".."):
        mount = sysproc.v1_hierarchy("memory")
        path = os.path.join(mount, "vbdecl", instance) if mount else None
    if not path or not os.path.exists(os.path.join(path, "memory.limit_in_bytes")):
        return []
    return [path]


def _cgroup_procs_fds(paths: list[str]) -> list[int]:
    """Write fds on the ``cgroup.procs`` of the environment's cgroups ``paths`` (those
    the caller is not in): a child joins them by writing "0", after it entered the
    mount namespace, where the host's cgroup paths may not exist."""
    fds: list[int] = []
    try:
        for path in paths:
            fds.append(os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC))
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        raise RuntimeSetupError(f"cannot open the environment's cgroup {path}: {exc.strerror}",
                                hint=_cgroup_hint(exc.errno)) from None
    return fds


def _pids_files(path: str | None, joined: list[str]) -> list[int]:
    """Read fds on ``pids.current`` and ``pids.max`` of the environment's pids cgroup
    ``path``, when it is among the cgroups ``joined`` (else, or unreadable, none)."""
    if not path or path not in joined:
        return []
    fds: list[int] = []
    try:
        for name in ("pids.current", "pids.max"):
            fds.append(os.open(os.path.join(path, name), os.O_RDONLY | os.O_CLOEXEC))
    except OSError:
        for fd in fds:
            os.close(fd)
        return []
    return fds


def _over_pids_limit(fds: list[int]) -> tuple[int, int] | None:
    """(processes, limit) when the pids cgroup of :func:`_pids_files` holds more
    processes than its limit, else None. The kernel checks pids.max only when a
    process forks (cgroup v1 and v2 alike): a process that joins, as exec's does,
    is let in above it."""
    if len(fds) != 2:
        return None
    try:
        current = int(os.pread(fds[0], 64, 0))
        limit = os.pread(fds[1], 64, 0).strip()
        if limit == b"max":
            return None
        most = int(limit)
    except (OSError, ValueError):
        return None
    return (current, most) if current > most else None


def _cgroup_hint(code: int | None) -> str:
    if code in (errno.ENOENT, errno.ENODEV):
        return "is the environment being destroyed? vbdecl status NAME shows it"
    return "joining needs write access to the cgroup's cgroup.procs (run as its owner or root)"


def enter_namespaces(record: dict[str, Any], *, leave: tuple[str, ...] = ()) -> dict[str, int]:
    """setns into the environment's namespaces, but for those in ``leave``: open fds on
    those are returned, for the caller to enter (and close)."""
    return join_namespaces(open_namespaces(record), leave=leave)


def open_namespaces(record: dict[str, Any]) -> dict[str, int]:
    """Fds on the environment's namespaces that are not ours, in setns order. They are
    all opened before any setns: the mount namespace changes what paths mean."""
    fds: dict[str, int] = {}
    try:
        for key, path in _ns_paths(record):
            fds[key] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


def join_namespaces(fds: dict[str, int], *, leave: tuple[str, ...] = ()) -> dict[str, int]:
    """setns into each namespace of ``fds`` (closed here) but those in ``leave``, whose
    fds are returned. pid namespace membership applies to children. Once in the
    environment's mount namespace, this process imports nothing more from files: they
    would be the environment's (proc.seal_imports)."""
    kept: dict[str, int] = {}
    try:
        for key, fd in fds.items():
            if key in leave:
                kept[key] = fd
                continue
            sysns.setns(fd, sysns.NAMESPACES[key][0], what=f"{key} namespace of the environment")
            if key == "mount":
                sysproc.seal_imports()
    except BaseException:
        kept.clear()
        raise
    finally:
        for fd in fds.values():
            if fd not in kept.values():
                os.close(fd)
    return kept


def _process_cfg(spec: dict[str, Any], argv: list[str] | None, c2p: int) -> C.ChildConfig:
    cfg = C.ChildConfig()
    cfg.spec = spec
    cfg.argv = argv
    cfg.c2p = c2p
    cfg.die_with_parent = bool(spec["process"].get("die_with_parent", True))
    return cfg


# --- proc.main ------------------------------------------------------------------

def start_process(*, env_record: dict[str, Any], spec: dict[str, Any], log_path: str,
                  cgroups: list[str] | None = None, name: str = "",
                  memory_dir: str | None = None) -> dict[str, Any]:
    """Start the declared process inside the live environment; output to ``log_path``.

    Tree: helper (host pid ns, enters the environment) -> bridge (in the
    environment's pid ns, a child of its init) -> process. The process runs only
    once it is on record (the runtime dir's process.json): an apply that fails or is
    killed before that leaves no process behind, tracked by nobody. The bridge
    stays as a tiny supervisor (``vbdecl-supervise``, moved out of the environment's
    cgroups into the root cgroup of each hierarchy, :func:`_root_cgroup_procs`, so
    that it counts against none of the environment's limits; it keeps no privilege,
    :func:`_confine_supervisor`): it reaps the process, writes its
    exit status to :func:`exit_file` (``{"pid", "start_time", "exit_code", "signal",
    "time"}``, and ``"oom_kills"``, the kills in the environment's memory cgroup
    ``memory_dir`` while the process ran; read by ``status`` and ``logs -f``) and,
    with ``status.events``,
    appends the ``exited`` event (``runtime_init_warnings``, ``spawned`` and
    ``setup_finished`` are appended here). It is a child subreaper: what the
    process leaves running (a daemon, a shell's background jobs) is reparented to
    it, and it stays, reaping, until none of that is left; :func:`stop_process`
    ends the whole tree. If the supervisor dies first, the process is reparented
    to the environment's init, which reaps it. Record: ``{"pid", "start_time",
    "log", "supervisor": {"pid", "start_time"}}`` (host pids). The supervisor's command
    line says what it is: ``vbdecl-supervise: NAME process (instance ID)``.
    """
    from os import makedirs

    from vbdecl.runtime.events import EventSink
    from vbdecl.runtime.spawn import _child_error, _read_msg, reopened_read_only

    makedirs(os.path.dirname(log_path), mode=0o700, exist_ok=True)
    own_logs(log_path)      # (kept from a process before, which may have chmod-ed them)
    events_path = (spec.get("status") or {}).get("events")
    if events_path:
        from vbdecl.runtime.rootfs import sandbox_writable

        sink: EventSink | None = EventSink(path=events_path, beside=sandbox_writable(spec))
    else:
        sink = None
    marker = _begin_log(log_path, str(env_record.get("instance") or ""))
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    if marker:
        try:
            os.write(log_fd, marker)
        except OSError:
            pass
    # a new, empty file: what it says is about this process, once it exits (the
    # supervisor of a process this one replaces may still write to the old one)
    try:
        os.unlink(exit_file(log_path))
    except FileNotFoundError:
        pass
    exit_fd = os.open(exit_file(log_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    cap = LogCap.open(log_path, log_fd)
    c2p_r, c2p_w = os.pipe2(os.O_CLOEXEC)
    # "recorded" (b"r"), once the process is in the runtime dir's process.json: only
    # then may it run (an apply killed before that leaves no process nobody tracks)
    rec_r, rec_w = os.pipe2(os.O_CLOEXEC)
    helper = os.fork()
    if helper == 0:
        try:
            os.close(c2p_r)
            os.close(rec_w)
            # Nothing in the environment may ptrace us, nor the bridge and the process's
            # Python before its exec (forks keep this; the exec ends it): the bridge holds
            # the host's /proc and cgroup fds, which a process given CAP_SYS_PTRACE in
            # its user namespace took from it (a security review).
            sysproc.set_dumpable(False)
            # (a seccomp profile is a host file: read here, before entering)
            spec = C._security().load_host_files(spec)
            C.preload(spec, C._security())
            sysproc.load_title()    # for the supervisor, before entering: not the environment's files
            title = _title("vbdecl-supervise", name, str(env_record.get("instance") or ""), "process")
            # the host's /proc, opened before entering: inside, /proc (if any) shows the
            # environment's pid namespace, where the bridge's host pid means nothing
            host_proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            host_ns = _inodes_at(host_proc)
            # stdin of the process: opened here, since the environment may have no /dev;
            # behind a read-only mount (as root), or root inside could chmod the host's
            # /dev/null through /proc/self/fd/0 (spawn.guarded_stdio)
            null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
            guarded = reopened_read_only(null)
            if guarded >= 0:
                os.close(null)
                null = guarded
            home = _root_cgroup_procs()
            # the OOM kills before the process starts, and (the supervisor) after it exits
            oom_fd = oom.open_counter_at(memory_dir)
            oom_kills = (oom_fd, oom.read_counter(oom_fd))
            enter(env_record, spec, cgroups)
            # (through the host's /proc: the environment's may be read-only, or missing)
            C._security().prepare_in_child(spec, proc_dir=host_proc)
            env_ns = {k: v for k, v in _inodes_at(host_proc).items() if v != host_ns.get(k)}
            ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
            done_r, done_w = os.pipe2(os.O_CLOEXEC)
            closed_r, closed_w = os.pipe2(os.O_CLOEXEC)
            bridge = os.fork()
            if bridge == 0:
                # Once more, so that the bridge's parent (in the environment's pid namespace)
                # exits at once and it becomes a child of the environment's init: orphans are
                # reparented within their dying parent's namespace, and ours is the host's.
                if os.fork() != 0:
                    os._exit(0)
                os.close(ready_r)
                os.close(done_w)
                # What the process starts and leaves behind (a daemon's double fork, a
                # shell's background jobs) is reparented to us, not to the init: its
                # tree stays ours to reap, and a restart or a stop finds all of it
                # (stop_process). Before the fork: the process inherits the mark.
                sysproc.set_child_subreaper()
                child = os.fork()
                if child == 0:
                    for fd in (host_proc, *home, closed_w):
                        os.close(fd)
                    if os.read(closed_r, 1) != b"g":
                        os._exit(125)     # the bridge failed (or died): no process without it
                    os.close(closed_r)    # the bridge holds the host's fds no more
                    os.setsid()
                    os.dup2(null, 0)
                    os.dup2(log_fd, 1)
                    os.dup2(log_fd, 2)
                    s = dict(spec)
                    s["process"] = dict(spec["process"], new_session=False, tty="auto")  # setsid done
                    cfg = _process_cfg(s, None, c2p_w)
                    cfg.die_with_parent = False
                    cfg.fresh_signals = True
                    cfg.userns_disabled = True      # (above, for the whole user namespace)
                    C.exec_process(cfg)
                try:
                    # The child's host pid, read through the host's /proc (inside, pids
                    # are the environment's): our own host pid, then our only child.
                    me = int(os.readlink("self", dir_fd=host_proc))
                    with open(f"{me}/task/{me}/children",
                              opener=lambda p, fl: os.open(p, fl, dir_fd=host_proc)) as f:
                        host_pid = int(f.read().split()[0])
                except BaseException:
                    os.kill(child, signals.SIGKILL)   # never leave a process nobody tracks
                    os._exit(1)
                started = _start_time_at(host_proc, host_pid)
                mine = _start_time_at(host_proc, me)
                for fd in home:     # out of the environment's cgroups (best effort)
                    try:
                        os.write(fd, b"0")
                    except OSError:
                        pass
                for fd in (host_proc, *home, closed_r):
                    os.close(fd)
                # Nothing of vbdecl's privileges stays with us: a process that may ptrace
                # us (CAP_SYS_PTRACE without a user namespace of its own) would have them
                _confine_supervisor()
                os.write(ready_w, struct.pack(_STARTED, host_pid, -1 if started is None else started,
                                              me, -1 if mine is None else mine))
                if len(os.read(done_r, 4)) != 4:
                    # not on record (the apply failed or was killed): the process never runs
                    os.kill(child, signals.SIGKILL)
                    os._exit(0)
                os.write(closed_w, b"g")     # the process goes on
                os.close(closed_w)
                _supervise(child, host_pid, started, sink, env_ns, exit_fd, null, title, oom_kills, cap)
            for fd in (ready_w, done_r, closed_r, closed_w):
                os.close(fd)
            os.waitpid(bridge, 0)
            data = os.read(ready_r, struct.calcsize(_STARTED))
            if len(data) != struct.calcsize(_STARTED):
                raise RuntimeSetupError("the process could not be started")
            C.send(c2p_w, C.MSG_STARTED, data)
            if os.read(rec_r, 1) != b"r":
                os._exit(0)     # the apply failed (or was killed) before it recorded the process
            os.write(done_w, data[:4])
            os.close(done_w)
        except BaseException as exc:
            if isinstance(exc, BlockingIOError):
                C.fail(c2p_w, 125, *C.no_more_processes())
            C.fail(c2p_w, 125, getattr(exc, "message", None) or str(exc), getattr(exc, "hint", None))
        os._exit(0)
    os.close(c2p_w)
    os.close(rec_r)
    os.close(log_fd)
    os.close(exit_fd)
    cap.close()
    try:
        msg = _read_msg(c2p_r)
        if msg is None or msg[0] != C.MSG_STARTED or len(msg[1]) != struct.calcsize(_STARTED):
            raise _child_error(msg[1]) if msg and msg[0] == C.MSG_ERROR else \
                RuntimeSetupError("the process helper exited")
        pid, started, sup, sup_started = struct.unpack(_STARTED, msg[1])
        # (start times read by the supervisor while the process was its unreaped child)
        record = {"pid": pid, "start_time": None if started < 0 else started, "log": log_path,
                  "supervisor": {"pid": sup, "start_time": None if sup_started < 0 else sup_started}}
        from vbdecl.engine.faults import crash_at

        crash_at("process-started")
        if env_record.get("runtime_dir"):
            # named before anything else, so that recovery of an apply killed before it
            # journaled this record still finds the process (find_process)
            _write_pid_file(env_record["runtime_dir"], PROCESS_FILE, record)
        os.write(rec_w, b"r")     # the process may run now
        os.close(rec_w)
        rec_w = -1
        inodes = sysns.own_ns_inodes(pid)
        if sink is not None:
            sink.emit("runtime_init_warnings", warning_count=0, warnings=[])
            sink.emit("spawned", pid=pid, ns=inodes)
        msg = _read_msg(c2p_r)
        if msg is not None:
            err = _child_error(msg[1])
            raise err
        if sink is not None:
            sink.emit("setup_finished", pid=pid, ns=inodes)
    finally:
        if rec_w >= 0:
            os.close(rec_w)     # (the process never runs: it was not recorded)
        os.close(c2p_r)
        _reap(helper)
        if sink is not None:
            sink.close()
    return record


_STARTED = "=iqiq"    # MSG_STARTED: the process's host pid and start time, the supervisor's


def _inodes_at(proc_fd: int) -> dict[str, int]:
    """Our namespace inodes, read through an fd on the host's /proc (pid: for children)."""
    out = {}
    for key, (_, fname) in sysns.NAMESPACES.items():
        name = "pid_for_children" if key == "pid" else fname
        try:
            out[key] = os.stat(f"self/ns/{name}", dir_fd=proc_fd).st_ino
        except OSError:
            pass
    return out


def _root_cgroup_procs() -> list[int]:
    """Write fds on the ``cgroup.procs`` of the root cgroup of every hierarchy we are
    in: a supervisor that entered the environment's cgroups leaves them by writing
    "0" to these. Not the caller's cgroups: those are often a systemd unit or a CI
    job, which would kill the supervisor when it stops, or never empty while the
    environment lives."""
    fds = []
    for path in sysproc.cgroup_roots(os.getpid()):
        try:
            fds.append(os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            pass
    return fds


def _start_time_at(proc_fd: int, pid: int) -> int | None:
    """sysproc.start_time through an fd on the host's /proc."""
    try:
        with open(f"{pid}/stat", "rb", opener=lambda p, fl: os.open(p, fl, dir_fd=proc_fd)) as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _begin_log(log_path: str, instance: str) -> bytes:
    """Make ``log_path`` ready for a process of the environment's ``instance`` and
    return the line to write first, if any. The log belongs to one instance (its id
    in ``process.instance`` beside it): a new instance (the first apply, or an apply
    after a destroy or a replacement of the environment) starts an empty one and
    keeps the last instance's as ``process.log.1``; a process that starts again in
    the same instance (an update of it, a restart after it exited) appends to it,
    after a line that says so. ``logs -f`` follows the new file (:func:`logs`)."""
    owner_path = os.path.join(os.path.dirname(log_path), "process.instance")
    try:
        with open(owner_path, "rb") as f:
            owner = f.read().decode("utf-8", "replace").strip()
    except FileNotFoundError:
        owner = None
    try:
        size = os.stat(log_path).st_size
    except FileNotFoundError:
        size = None
    if size is not None and owner == instance:
        if not size:
            return b""
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return f"--- vbdecl: the process started again ({when}) ---\n".encode()
    if size:    # (an empty one is kept as the new log: the last part in .1 stays)
        os.replace(log_path, log_path + ".1")
    tmp = f"{owner_path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, instance.encode() + b"\n")
    finally:
        os.close(fd)
    os.replace(tmp, owner_path)
    return b""


def exit_file(log_path: str) -> str:
    """Where the supervisor of the process logging to ``log_path`` writes its exit."""
    return os.path.join(os.path.dirname(log_path), "process.exit")


def killed_by(ended: dict[str, Any]) -> int | None:
    """The signal that killed the process of an exit record (:func:`read_exit`), or
    None when it exited; a record from before ``signal`` tells only by a code above 128."""
    if "signal" in ended:
        sig = ended["signal"]
        return sig if isinstance(sig, int) else None
    code = ended.get("exit_code")
    return code - 128 if isinstance(code, int) and code > 128 else None


def read_exit(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The exit the supervisor recorded for the process of ``record`` (a proc.main
    record): ``{"pid", "start_time", "exit_code", "signal", "time"}`` (``signal``: what
    killed it, or None; not in records from before it), or None (still running, or no
    exit recorded for this very process)."""
    if not record or not record.get("log"):
        return None
    import json

    try:
        with open(exit_file(str(record["log"])), "rb") as f:
            found = json.loads(f.read() or b"null")
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or found.get("pid") != record.get("pid"):
        return None
    if record.get("start_time") is not None and found.get("start_time") != record.get("start_time"):
        return None
    return found


def _confine_supervisor() -> None:
    """The supervisor keeps no capability (effective, permitted, inheritable, ambient,
    bounding) and gains none through an execve (no_new_privs): it reaps and writes to
    fds it holds already. Done after the fork of the process (which keeps what the
    manifest gives it) and before the process runs; its seccomp filter comes once its
    title is set (:func:`_supervise`)."""
    syscaps.drop_all()


# What process.log may grow to before the supervisor moves it to process.log.1
# (VBDECL_LOG_MAX_BYTES, when the apply that starts the process has it), and how
# often it looks.
LOG_MAX_BYTES = 64 << 20
LOG_CHECK_SECONDS = 1.0


class LogCap:
    """The supervisor's hold on the process's log, which the process (and what it
    leaves running) writes straight into: past ``limit`` bytes its last ``limit`` go to
    ``process.log.1`` and it is emptied in place (logrotate's copytruncate: what is
    written between the copy and the truncation is lost), with a line that says so. Its fds
    are opened here, before the supervisor confines itself: it may open nothing after.
    ``logs -f`` follows the emptied file from its start."""

    def __init__(self, write_fd: int, read_fd: int, old_fd: int, limit: int) -> None:
        self.write_fd, self.read_fd, self.old_fd, self.limit = write_fd, read_fd, old_fd, limit

    @classmethod
    def open(cls, log_path: str, write_fd: int) -> LogCap:
        try:
            limit = int(os.getenv("VBDECL_LOG_MAX_BYTES") or LOG_MAX_BYTES)
        except ValueError:
            limit = LOG_MAX_BYTES
        read_fd = os.open(log_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            old_fd = os.open(log_path + ".1", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except BaseException:
            os.close(read_fd)
            raise
        return cls(write_fd, read_fd, old_fd, max(limit, 4096))

    @property
    def fds(self) -> list[int]:
        return [self.write_fd, self.read_fd, self.old_fd]

    def close(self) -> None:
        for fd in (self.read_fd, self.old_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def check(self) -> None:
        """Move the log aside once it has grown past the limit: its last ``limit`` bytes
        to process.log.1 (what a second's writing brought past it goes), then empty it,
        also when the copy failed (a full disk: emptied, it frees what it held)."""
        try:
            size = os.lseek(self.read_fd, 0, os.SEEK_END)
        except OSError:
            return
        if size < self.limit:
            return
        start = size - self.limit
        kept = "its last part is in process.log.1"
        try:
            os.ftruncate(self.old_fd, 0)
            done = start
            while done < size:
                chunk = os.pread(self.read_fd, min(1 << 20, size - done), done)
                if not chunk:
                    break
                os.pwrite(self.old_fd, chunk, done - start)
                done += len(chunk)
        except OSError as exc:
            kept = f"it could not be kept ({os.strerror(exc.errno or 0)})"
            try:
                os.ftruncate(self.old_fd, 0)
            except OSError:
                pass
        try:
            os.ftruncate(self.write_fd, 0)
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            os.write(self.write_fd, f"--- vbdecl: the log reached {size} bytes ({when}): {kept} ---\n"
                                    .encode())
        except OSError:
            pass        # (the process goes on writing; the next look tries again)


def _supervise_children(child: int | None, cap: LogCap) -> int | None:
    """Reap children until ``child`` (its wait status) or, with None, until none is left
    (None), looking at the log's size between (the supervisor's loop)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except InterruptedError:
            continue
        except ChildProcessError:
            return None
        if pid == 0:
            cap.check()
            try:
                signals.sigtimedwait([signals.SIGCHLD], LOG_CHECK_SECONDS)
            except InterruptedError:
                pass
            continue
        if child is not None and pid == child:
            return status


def _supervise(child: int, host_pid: int, started: int | None, sink: Any, inodes: dict[str, int],
               exit_fd: int, null: int, title: str, oom_kills: tuple[int, int | None], cap: LogCap) -> None:
    """The bridge as the process's supervisor: reap it, record its exit (and append
    ``exited`` with ``status.events``) with the OOM kills in the environment's memory
    cgroup since it started (``oom_kills``: the counter's fd, -1 without one, and its
    count before the process started), then reap what it left running (a child
    subreaper: its orphaned descendants are ours) until nothing is left, and exit.
    Never returns. It keeps none of vbdecl's fds, stdio included: ``vbdecl apply |
    cat`` must not wait for the process; once the exit is recorded, only the log's
    (what the process left running may write on: :class:`LogCap`)."""
    try:
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        oom_fd, oom_before = oom_kills
        sysproc.close_fds_except([*(sink.fds if sink is not None else []), exit_fd, *cap.fds,
                                  *([oom_fd] if oom_fd >= 0 else [])])
        sysproc.set_title(title, "vbdecl-supervise")
        # (SIGCHLD waited for, not handled: _supervise_children)
        signals.pthread_sigmask(signals.SIG_BLOCK, [signals.SIGCHLD])
        # the calls of this loop only, from here on (no_new_privs is set: _confine_supervisor)
        sysproc.confine_supervisor_calls()
        status = _supervise_children(child, cap)
        if status is None:
            os._exit(0)     # (cannot be: the process is our child until we reap it)
        code = C.status_code(status)
        oom_after = oom.read_counter(oom_fd)
        kills = (f', "oom_kills": {oom_after - oom_before}'
                 if oom_before is not None and oom_after is not None else "")
        # the signal that killed it, or null: an exit code above 128 may be either
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else "null"
        record = (f'{{"pid": {host_pid}, "start_time": {"null" if started is None else started}, '
                  f'"exit_code": {code}, "signal": {sig}{kills}, "time": {time.time():.3f}}}\n').encode()
        try:
            os.pwrite(exit_fd, record, 0)
            os.ftruncate(exit_fd, len(record))
        except OSError:
            pass
        if sink is not None:
            sink.emit("exited", pid=host_pid, exit_code=code, ns=inodes)
        sysproc.close_fds_except(cap.fds)
        # What the process left running stays (a daemon that forked away is no failure)
        # and stays in its tree: a restart or a stop of the process ends it too. It
        # may go on writing the log.
        _supervise_children(None, cap)
    finally:
        os._exit(0)


def _int_field(record: dict[str, Any], key: str) -> int:
    """``record[key]`` when it is a number (not a bool), else 0."""
    value = record.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def process_tree(record: dict[str, Any]) -> list[tuple[int, int | None]]:
    """The live processes of the process of ``record`` (a proc.main record): itself and
    everything under its supervisor (what it started, what was reparented to the
    supervisor when its parent exited, the process itself exited or not), each as
    (host pid, start time). Not the supervisor, nor the init, nor `vbdecl exec`'s
    commands (never under the supervisor). A record without a supervisor (from an
    older vbdecl) or one whose supervisor is gone: the process and its descendants."""
    # (fields of another type, a record edited by hand: a crash review's status failed
    # as a bug; such a record names no process)
    pid, started = _int_field(record, "pid"), _int_field(record, "start_time") or None
    found: list[tuple[int, int | None]] = []
    if pid > 0 and sysproc.alive(pid, started):
        found.append((pid, started))
    sup = record.get("supervisor")
    sup = sup if isinstance(sup, dict) else {}
    below = sysproc.tree(_int_field(sup, "pid"), _int_field(sup, "start_time") or None)
    if not below and found and started is not None:
        below = sysproc.tree(pid, started)
    found += [m for m in below if m[0] != pid]
    return found


def stop_process(record: dict[str, Any]) -> None:
    """End the process of ``record`` and every process of its tree (:func:`process_tree`):
    SIGTERM (and SIGCONT, for one stopped) to each, again to any forked meanwhile,
    SIGKILL to what is left after STOP_TIMEOUT; then wait for its supervisor, which
    exits once it has nothing left to reap. Every signal goes to the very process
    listed (pid and start time, through a pidfd). What is still there after the
    SIGKILLs (a process in uninterruptible sleep, a frozen cgroup) is a
    RuntimeSetupError naming it: the caller keeps the record, so that nothing starts
    beside it (a new process's port would still be taken, for one)."""
    signalled: set[tuple[int, int | None]] = set()
    deadline = time.monotonic() + STOP_TIMEOUT
    delay = 0.001
    while True:
        members = process_tree(record)
        if not members:
            break
        if time.monotonic() > deadline:
            for _ in range(100):
                for pid, started in members:
                    sysproc.kill_verified(pid, started, signals.SIGKILL)
                time.sleep(0.01)
                members = process_tree(record)
                if not members:
                    break
            if members:
                pids = ", ".join(str(pid) for pid, _ in members[:8]) + (", ..." if len(members) > 8 else "")
                raise RuntimeSetupError(
                    f"the process's tree did not end: {len(members)} process"
                    f"{'es' if len(members) > 1 else ''} still there after SIGKILL (host pids {pids})",
                    hint="a process in uninterruptible sleep (state D in /proc/PID/stat: a hung "
                         "mount or device) or in a frozen cgroup ends only once that is over; "
                         "then run the command again (nothing starts beside them meanwhile)")
            break
        for pid, started in members:
            if (pid, started) not in signalled:
                signalled.add((pid, started))
                if sysproc.kill_verified(pid, started, signals.SIGTERM):
                    sysproc.kill_verified(pid, started, signals.SIGCONT)
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    sup = record.get("supervisor") or {}
    if sup.get("pid") and sup.get("start_time") is not None:
        _wait_gone(int(sup["pid"]), sup["start_time"], STOP_TIMEOUT)
    if record.get("log"):
        own_logs(str(record["log"]))


def own_logs(log_path: str) -> None:
    """Give the process's logs (``log_path`` and its ``.1``) back to us, mode 0600.
    The process writes to the log's file itself, and root inside (CAP_CHOWN and
    CAP_FOWNER, without a user namespace) may chown or chmod it through
    /proc/self/fd/1, setuid bits included (a security review): whatever it did
    ends with the process (and before the next one starts)."""
    for path in (log_path, log_path + ".1"):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                    os.fchown(fd, os.geteuid(), os.getegid())
                if stat.S_IMODE(st.st_mode) != 0o600:
                    os.fchmod(fd, 0o600)
        except OSError:
            pass
        finally:
            os.close(fd)


# --- vbdecl exec / logs -------------------------------------------------------------

def _copy(f: Any, out: Any) -> None:
    """The rest of the log ``f`` to ``out``, a MiB at a time."""
    while chunk := f.read(1 << 20):
        out.write(chunk)


def load_state(name: str, state_dir: str | None) -> dict[str, Any]:
    """The committed state of ``name``, through a marshal copy in the cache dir:
    exec would otherwise pay ~4 ms to import json (and re, enum) on every start.
    state.json stays the only truth; the copy is keyed by its inode, size and mtime,
    and removed when the environment is destroyed (vbdecl.engine.statecache)."""
    from vbdecl.engine import cachefile, statecache
    from vbdecl.engine.paths import state_file

    path = state_file(name, state_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        from vbdecl.engine.store import not_committed

        raise not_committed(name, state_dir,
                            hint="vbdecl ls lists the environments; vbdecl apply FILE creates one") from None
    except OSError as exc:
        from vbdecl.engine.paths import permission_hint

        denied = exc.errno in (errno.EACCES, errno.EPERM)
        raise StateError(f"cannot read the state of {name}: {exc.strerror}", where=path,
                         hint=permission_hint(path) if denied else None) from None
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        key = f"{path}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{sys.implementation.cache_tag}"
        copy = statecache.copy_path(path)
        entry = cachefile.read(copy, key)
        if entry is not None and isinstance(entry.get("state"), dict):
            state: dict[str, Any] = entry["state"]
            return state
        import json

        try:
            data: dict[str, Any] = json.loads(f.read())
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read the state of {name}: {exc}", where=path) from None
    from vbdecl.engine.stateshape import check

    check(data, path)
    if cachefile.write(copy, {"key": key, "state": data}):
        cachefile.prune(os.path.dirname(copy), statecache.COPIES)
    return data


def env_record(state: dict[str, Any]) -> dict[str, Any]:
    res = (state.get("resources") or {}).get("env") or {}
    record = res.get("record")
    if not record:
        raise StateError(f"environment {state.get('name')} has no live namespaces",
                         hint="vbdecl apply FILE starts it")
    return dict(record)


def exec_in(name: str, argv: list[str] | None, *, state_dir: str | None = None,
            cwd: str | None = None, forward_signals: bool = True, tty: bool = False,
            report: Callable[[VbdeclError], object] | None = None) -> int:
    """``vbdecl exec``: run ``argv`` in the live environment ``name``; return its exit status.
    What failed once the environment was entered (the command not found, the
    environment stopped under it) goes to ``report``, else to stderr as text.
    ``tty``: on a terminal of the environment's own, relayed (vbdecl.runtime.terminal)."""
    # Everything is imported before entering: the environment's root may not hold vbdecl.
    from vbdecl.runtime import spawn
    from vbdecl.runtime.spawn import SignalGuard, _child_error, _read_msg, _wait

    state = load_state(name, state_dir)
    spec = dict(state["plan"]["spec"])
    ptrace = C._security().live_ptrace_problem(spec)
    if ptrace is not None:      # (applied by a vbdecl from before plan refused it)
        raise RuntimeSetupError(f"cannot exec in {name}: {ptrace['message']}", hint=ptrace["hint"])
    record = env_record(state)
    # OOM kills while the command runs are its news (opened here: inside, /sys may differ)
    oom_fd = oom.open_counter(state.get("resources"))
    oom_before = oom.read_counter(oom_fd)
    proc = dict(spec["process"])
    proc["command"] = None        # without CMD: /bin/sh, not a second copy of the process
    if cwd:
        proc["cwd"] = cwd
        proc["cwd_option"] = True       # (a failure names --cwd, not process.cwd)
    terminal: ModuleType | None = None
    if tty:
        from vbdecl.runtime import terminal as term  # (before the fork: the child imports nothing)

        terminal = term
        # (the child makes its session itself, with the new terminal as its own)
        proc["new_session"], proc["tty"] = False, "auto"
        proc["env"] = term.with_term(proc)
    spec["process"] = proc
    # Only the command joins the environment's cgroups: vbdecl waiting for it stays
    # out of them (it would count against pids and memory, and be killed without a
    # word by a destroy that empties them). It joins them before their namespace,
    # which older kernels check the writer's place against.
    init_dir = lock_fd = host_proc = -1
    cgroup_fds: list[int] = []
    pids_fds: list[int] = []
    ns_fds: dict[str, int] = {}
    # the caller's terminal (or /dev/null) behind a read-only mount, while in the host's
    # mount namespace, where its mount may be cloned
    # (with -t only a stdin that is no terminal: the rest is the new terminal)
    keep_stdin = terminal is not None and not os.isatty(0)
    stdio = spawn.guarded_stdio(which=(0,)) if keep_stdin else [] if terminal is not None \
        else spawn.guarded_stdio()
    pty_sock = terminal.pair() if terminal is not None else None
    try:
        spec = C._security().load_host_files(spec)     # (the seccomp profile is a host file)
        C.preload(spec, C._security())
        # the init, watched through the host's /proc (inside, /proc is the environment's)
        found = sysproc.open_proc_dir(int(record["pid"]), record.get("start_time"))
        if found is None:
            raise RuntimeSetupError(f"environment {name} is not running (its init is gone)",
                                    hint="vbdecl apply FILE starts it again")
        init_dir = found
        from vbdecl.engine.paths import lock_file

        try:
            lock_fd = os.open(lock_file(name, state_dir), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            lock_fd = -1
        joined = _env_cgroups(record, memory_cgroups(state.get("resources"), str(record.get("instance") or "")))
        cgroup_fds = _cgroup_procs_fds(joined)
        pids_fds = _pids_files(oom.controller_dir(state.get("resources"), "pids"), joined)
        host_proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        ns_fds = open_namespaces(record)
        # Only the command's process enters the environment (its mount namespace, its
        # root): this one, which waits with the host's privileges, would otherwise run
        # what root inside planted where it imports from (a security review). Its pid
        # namespace applies to children only.
        pid_ns = ns_fds.pop("pid", -1)
        if pid_ns >= 0:
            try:
                sysns.setns(pid_ns, sysns.NAMESPACES["pid"][0], what="pid namespace of the environment")
            finally:
                os.close(pid_ns)
    except BaseException:
        for fd in [*cgroup_fds, *pids_fds, *ns_fds.values(), oom_fd, lock_fd, init_dir, host_proc]:
            if fd >= 0:
                os.close(fd)
        spawn.close_stdio(stdio)
        for sock in pty_sock or ():
            sock.close()
        raise
    c2p_r, c2p_w = os.pipe2(os.O_CLOEXEC)
    error: VbdeclError | None = None
    with SignalGuard(forward_signals) as guard:
        try:
            pid = os.fork()
        except BaseException:
            spawn.close_stdio(stdio)
            for sock in pty_sock or ():
                sock.close()
            raise
        if pid == 0:
            # Not to be ptraced from inside while it is Python with the caller's fds
            # (the exec of the command ends this, as for any process)
            sysproc.set_dumpable(False)
            C.take_stdio(stdio)
            os.close(c2p_r)
            for fd in cgroup_fds:
                try:
                    os.write(fd, b"0")
                except OSError as exc:
                    C.fail(c2p_w, 125, f"cannot join the environment's cgroup: {exc.strerror}",
                           _cgroup_hint(exc.errno))
                os.close(fd)     # never handed on (process.inherit_fds names fds by number)
            # In first, then counted: a process of the environment that forks meanwhile
            # is refused by the kernel once we are in, and one above the limit backs out
            # (it exits) before it runs anything. (Counted first, a fork between the
            # count and the join would leave both in, above the limit.)
            over = _over_pids_limit(pids_fds)
            if over is not None:
                C.fail(c2p_w, 125, f"cannot run the command in {name}: its pids cgroup is at its limit "
                       f"(limits.pids: {over[1]}, which counts threads too; {over[0] - 1} in use)",
                       "wait for some of its processes or threads to exit, or raise limits.pids in the manifest and "
                       f"apply it (vbdecl status {name} shows the count)")
            for fd in pids_fds:
                os.close(fd)
            try:
                later = join_namespaces(ns_fds, leave=("cgroup",))
                # (through the host's /proc: the environment's may be read-only, or missing)
                C._security().prepare_in_child(spec, proc_dir=host_proc)
                os.close(host_proc)
                enter_cgroup_namespace(later, fresh=bool(cgroup_fds) and _own_cgroupns(spec))
            except VbdeclError as exc:
                C.fail(c2p_w, 125, exc.message, exc.hint)
            except BaseException as exc:    # (never back into the parent's code)
                C.fail(c2p_w, 125, f"cannot enter {name}: {exc}")
            os.close(init_dir)
            if lock_fd >= 0:
                os.close(lock_fd)
            if terminal is not None and pty_sock is not None:
                pty_sock[0].close()
                try:
                    terminal.take_in_child(pty_sock[1], stdin=not keep_stdin)
                except BaseException as exc:    # (never back into the parent's code)
                    why = exc.message if isinstance(exc, VbdeclError) else \
                        (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))
                    C.fail(c2p_w, 125, f"cannot make a terminal in {name} for exec -t: {why}",
                           "the environment needs /dev/pts of its own: a dev entry in its filesystem")
            cfg = _process_cfg(spec, argv, c2p_w)
            cfg.userns_disabled = True      # (above, for the whole user namespace)
            C.exec_process(cfg)
        for fd in [*cgroup_fds, *pids_fds, *ns_fds.values(), host_proc]:
            os.close(fd)
        spawn.close_stdio(stdio)
        os.close(c2p_w)
        master = -1
        if terminal is not None and pty_sock is not None:
            pty_sock[1].close()
            master = terminal.receive(pty_sock[0], terminal.outside_ids(
                init_dir, int(proc.get("user") or 0), int(proc.get("group") or 0)))
        try:
            msg = _read_msg(c2p_r)
            if msg is not None and msg[0] == C.MSG_ERROR:
                error = _child_error(msg[1])
            if terminal is not None and master >= 0:
                with terminal.raw() as caller:
                    status = terminal.pump(pid, guard, master, caller)
            else:
                status = _wait(pid, pid, guard, C.own_session(proc))
        finally:
            os.close(c2p_r)
            if master >= 0:
                os.close(master)
    code = C.status_code(status)
    if error is None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signals.SIGKILL and \
            _stopped(init_dir, record.get("start_time"), lock_fd):
        error = RuntimeSetupError(f"{name} stopped while the command ran, which was killed with it "
                                  "(vbdecl destroy, or an apply that replaced the environment)")
        error.exit_code = code
    if error is not None:
        if report is not None:
            report(error)
        else:
            os.write(2, f"error: {error}\n".encode())
    os.close(init_dir)
    if lock_fd >= 0:
        os.close(lock_fd)
    oom_after = oom.read_counter(oom_fd)
    if oom_fd >= 0:
        os.close(oom_fd)
    if oom_before is not None and oom_after is not None and oom_after > oom_before:
        oom.report(name, oom_after - oom_before, (spec.get("limits") or {}).get("memory"),
                   " while the command ran")
    return code


def _stopped(init_dir: int, started: int | None, lock_fd: int, wait: float = 10.0) -> bool:
    """Whether the environment's init is gone, after its command was SIGKILLed. A
    destroy kills the command (with the cgroup) before the init, so while another
    vbdecl command holds the environment's lock this waits (up to ``wait`` seconds)
    for the init to go or the lock to be let go."""
    import fcntl

    deadline = time.monotonic() + wait
    # An init killed from outside: the kernel kills the rest of its pid namespace, ours
    # among them, before the init itself is gone (a review saw 137 and no word, 2 in 3)
    dying = time.monotonic() + 0.2
    while sysproc.alive(0, started, proc_dir=init_dir):
        if time.monotonic() < dying:
            time.sleep(0.01)
            continue
        if lock_fd < 0:
            return False
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:     # held: a destroy or an apply is under way
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
            continue
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        return not sysproc.alive(0, started, proc_dir=init_dir)
    return True


def _reopened(path: str, f: Any) -> Any:
    """``path`` opened again when it names another file than ``f`` now, else None."""
    try:
        newer = open(path, "rb")  # noqa: SIM115 (the caller's to close)
    except OSError:
        return None
    if os.fstat(newer.fileno()).st_ino == os.fstat(f.fileno()).st_ino:
        newer.close()
        return None
    return newer


def _process_ended(name: str, state_dir: str | None) -> bool:
    """Whether the environment's process has ended, or the environment is gone."""
    try:
        state = load_state(name, state_dir)
        record = env_record(state)
    except VbdeclError:
        return True
    proc = ((state.get("resources") or {}).get("process") or {}).get("record")
    return not env_alive(record) or bool(proc and not sysproc.alive(int(proc.get("pid") or 0),
                                                                    proc.get("start_time")))


def logs(name: str, *, state_dir: str | None = None, follow: bool = False, tail: int | None = None,
         json_lines: bool = False) -> int:
    """Print the process's output (``json_lines``: one ``{"event": "log", "line": ...}``
    object per line, as --json)."""
    from vbdecl.engine.paths import env_dir

    path = os.path.join(env_dir(name, state_dir), "logs", "process.log")
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed at the end)
    except FileNotFoundError:
        load_state(name, state_dir)   # says "no environment" when there is none
        raise StateError(f"{name} has no process log yet ({path})",
                         hint="its process has not started, or wrote nothing yet") from None
    from vbdecl.engine import lock
    from vbdecl.engine.paths import lock_file, state_file

    if not os.path.exists(state_file(name, state_dir)):
        # (the log outlives a destroy, as history does: say whose output this is)
        print(f"note: {name} does not exist any more (destroyed): this is the output of its "
              "last process", file=sys.stderr)
        follow = False
    out = _LogWriter(json_lines)
    try:
        # in chunks, from where the last ``tail`` lines start (a scale review: a 100 MB
        # log was read whole, and split into lines for -n 10: 264 MB)
        if tail is not None:
            f.seek(_tail_start(f, tail))
        _copy(f, out)
        if not follow:
            out.end()
            return 0
        try:
            while True:
                # (in chunks: the process may grow its log sparsely by gigabytes at once,
                # a review's follower ran out of memory reading it whole)
                chunk = f.read(1 << 20)
                if chunk:
                    out.write(chunk)
                    continue
                if os.fstat(f.fileno()).st_size < f.tell():
                    f.seek(0)   # truncated (copytruncate rotation): from its new start
                    continue
                newer = _reopened(path, f)
                if newer is not None:   # a new instance's log (ours became process.log.1)
                    _copy(f, out)
                    f.close()
                    f = newer
                    continue
                # done when the environment is gone, or its process exited (what it
                # wrote is in the file by then: read to the end, then stop); but not while
                # a command holds the environment's lock: an apply or a rollback that
                # replaces it ends the old one first (a day-2 review's follower stopped
                # there), and one that has just committed is read again
                if _process_ended(name, state_dir) and (lock.holder(lock_file(name, state_dir)) is None
                                                        and _process_ended(name, state_dir)):
                    _copy(f, out)
                    out.end()
                    return 0
                time.sleep(0.2)
        except KeyboardInterrupt:
            return 130      # (as tail -f: a script can tell the follow was cut short)
    finally:
        f.close()     # (the one followed last)
