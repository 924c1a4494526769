"""Run a ``vb`` document through vbdecl's runtime with bubblewrap's outward behaviour.

bubblewrap's monitoring options are served from the runtime's events:
``--info-fd`` gets one JSON object when the child started and is closed,
``--json-status-fd`` gets the same object and, at the end, ``{"exit-code": N}``.
``--sync-fd`` stays open in this process (and nowhere else) until the sandbox
is gone; ``--block-fd`` is read before the sandbox starts. Failures of vb
itself exit with status 1, as bubblewrap's do.
"""

from __future__ import annotations

import sys

from vbdecl.sys import oslite as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


# The namespace ids bubblewrap reports, in its order (bubblewrap.c ns_infos): only those
# it unshares (the mount namespace always), never the user namespace.
_NS_KEYS = (("cgroup", "cgroup-namespace"), ("ipc", "ipc-namespace"), ("mount", "mnt-namespace"),
            ("net", "net-namespace"), ("pid", "pid-namespace"), ("uts", "uts-namespace"))



def say(line: str) -> None:
    """A line on stderr with the caller's bytes as given (a path that is not UTF-8 shows
    as bubblewrap shows it, not as \\udcff); through sys.stderr's buffer, so that a
    redirected sys.stderr sees it."""
    stream = sys.stderr
    if stream is None:
        return
    try:
        stream.flush()
        raw = getattr(stream, "buffer", None)
        if raw is None:
            print(line, file=stream)
            return
        raw.write(os.fsencode(line + "\n"))
        raw.flush()
    except (OSError, ValueError):
        pass

def reported_namespaces(spec: dict[str, Any]) -> set[str]:
    """The spec's namespaces bubblewrap would report: the ones it unshares. A pid
    namespace nested in --pidns counts (--unshare-pid); a joined one does not."""
    out = {"mount"}
    for key, value in (spec.get("namespaces") or {}).items():
        if value is True or (isinstance(value, dict) and value.get("nested")):
            out.add(key)
    return out


def _format(obj: dict[str, Any], pretty: bool) -> str:
    """bubblewrap's layouts: --info-fd one key per line, --json-status-fd one line
    with spaces inside the braces."""
    import json  # only with --info-fd or --json-status-fd: vb's start-up does without it

    items = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in obj.items()]
    if pretty:
        return "{\n" + ",\n".join(f"    {i}" for i in items) + "\n}\n"
    return "{ " + ", ".join(items) + " }\n"


def _write(fd: int, obj: dict[str, Any], pretty: bool = False) -> None:
    data = _format(obj, pretty).encode()
    while data:
        data = data[os.write(fd, data):]


def _write_info(fd: int, obj: dict[str, Any], pretty: bool = False) -> None:
    """bubblewrap gives up when it cannot write the child's information (the same fd
    as --info-fd and --json-status-fd: closed after the first), in its words."""
    try:
        _write(fd, obj, pretty)
    except OSError as exc:
        from vbdecl.errors import RuntimeSetupError

        raise RuntimeSetupError(f"Write to info_fd: {exc.strerror}") from None


def _close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _block(fd: int) -> None:
    """Wait until FD has data (or EOF), as bubblewrap's --block-fd/--userns-block-fd."""
    try:
        os.read(fd, 1)
    except OSError:
        pass


class _StatusWriter:
    def __init__(self, info_fd: int | None, json_fd: int | None, reported: set[str]) -> None:
        self.info_fd = info_fd
        self.json_fd = json_fd
        self.reported = reported

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "spawned":
            info: dict[str, Any] = {"child-pid": event.get("pid")}
            ids = event.get("ns") or {}
            for key, name in _NS_KEYS:
                if key in self.reported and ids.get(key) is not None:
                    info[name] = ids[key]
            if self.info_fd is not None:
                fd, self.info_fd = self.info_fd, None
                try:
                    _write_info(fd, info, pretty=True)
                finally:
                    _close(fd)
            if self.json_fd is not None:
                _write_info(self.json_fd, info)
        elif kind == "exited" and self.json_fd is not None:
            try:       # (bubblewrap ignores a failure of this one)
                _write(self.json_fd, {"exit-code": event.get("exit_code")})
            except OSError:
                pass
            _close(self.json_fd)
            self.json_fd = None


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


def _posix_read_lock(path: str) -> int:
    """A shared fcntl lock on the regular file at ``path``. vb resolves it on the host
    (bubblewrap, inside the sandbox), where a sandbox that can write the lock's
    directory could leave a link to a host file in its place, or a FIFO that would
    hang the next run (a review): neither is followed or opened."""
    import _struct as struct
    import fcntl
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(22, "Not a regular file", path)     # (EINVAL; with the path: "Unable to open")
    try:
        fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack("hhqqhh", fcntl.F_RDLCK, 0, 0, 0, 0, 0))
    except OSError as exc:
        os.close(fd)
        raise OSError(exc.errno, exc.strerror) from None
    return fd


def _missing_source(spec: dict[str, Any]) -> str | None:
    """bubblewrap's message for a bind source that does not exist (checked up front)."""
    for e in spec.get("filesystem") or []:
        # --bind-fd FD: bubblewrap resolves /proc/self/fd/FD the same way
        if e["type"] in ("bind", "ro-bind", "dev-bind") and not e.get("optional"):
            try:
                os.stat(e["source"])
            except OSError as exc:
                return f"Can't find source path {e['source']}: {exc.strerror}"
    return None


def launch(doc: dict[str, Any], *, prog: str, level_prefix: bool) -> int:
    from vbdecl.errors import VbdeclError
    from vbdecl.plan.compile import compile_doc
    from vbdecl.runtime.spawn import run_plan

    spec = doc["spec"]
    vb = spec.get("vb") or {}
    prefix = "<3>" if level_prefix else ""
    if vb.get("userns_block_fd") is not None:    # (--block-fd: the process's last steps)
        _block(int(vb["userns_block_fd"]))
    if spec["process"].get("die_with_parent"):
        # bubblewrap itself dies with its parent too (and the sandbox with it): until the
        # sandbox exists (--block-fd may wait long) there is nothing to tear down, then
        # the run watches the caller itself (spawn.SignalGuard) and restores this after
        from vbdecl.sys.proc import set_pdeathsig

        set_pdeathsig(9, os.getppid())
    locks = []
    for path in vb.get("lock_files", []):
        # bubblewrap: a shared POSIX (fcntl) read lock, held while the sandbox runs
        try:
            locks.append(_posix_read_lock(path))
        except OSError as exc:
            what = "open" if exc.filename else "lock"
            say(f"{prefix}{prog}: Unable to {what} lock file {path}: {exc.strerror}")
            return 1
    if vb.get("seccomp_fds"):
        # bubblewrap reads (and closes) every program before anything else, with its messages
        programs = []
        datas = []
        for fd in vb["seccomp_fds"]:
            try:
                datas.append(_read_all(int(fd)))
            except OSError as exc:
                say(f"{prefix}{prog}: Can't read seccomp data: {exc.strerror}")
                return 1
        if any(len(data) % 8 for data in datas):
            say(f"{prefix}{prog}: Invalid seccomp data, must be multiple of 8")
            return 1
        for data in datas:
            if not data:
                from vbdecl.ops.sec import BWRAP_SECCOMP_EINVAL

                say(f"{prefix}{prog}: {BWRAP_SECCOMP_EINVAL}")
                return 1
            programs.append(data.hex())
        vb = {**vb, "seccomp_fds": [], "seccomp_programs": programs}
        spec = {**spec, "vb": vb}
        doc = {**doc, "spec": spec}
    for key, what in (("userns_fd", "Joining specified user namespace failed"),
                      ("pidns_fd", "Setting pidns failed")):
        if vb.get(key) is not None:     # bubblewrap's words for a namespace fd that is not open
            try:
                os.fstat(int(vb[key]))
            except OSError as exc:
                say(f"{prefix}{prog}: {what}: {exc.strerror}")
                return 1
    missing = _missing_source(spec)
    if missing is not None:
        say(f"{prefix}{prog}: {missing}")
        return 1
    writer = _StatusWriter(vb.get("info_fd"), vb.get("json_status_fd"), reported_namespaces(spec))
    try:
        plan = compile_doc(doc, with_hash=False)
    except VbdeclError as err:
        say(f"{prefix}{prog}: {err.message}")
        return 1
    from vbdecl.entry import CALLER

    result = run_plan(plan, on_event=writer, forward_signals=True, caller=CALLER,
                      speaker=(f"{prefix}{prog}", "--limit-memory"),
                      ns_ids=writer.info_fd is not None or writer.json_fd is not None,
                      share_memory=True)
    _close(writer.info_fd)
    _close(writer.json_fd)
    if result.error is not None:
        message = str(getattr(result.error, "message", result.error))
        code = getattr(result.error, "exit_code", None)
        command = (spec["process"].get("command") or ["/bin/sh"])[0]
        if code == 127 or (code == 126 and message.startswith("cannot execute")):
            # bubblewrap's words for an exec failure
            reason = "No such file or directory" if code == 127 else message.rpartition(": ")[2]
            message = f"execvp {command}: {reason}"
        said_hint = _entry_hint(spec, message, result.error)
        if getattr(result.error, "where", None) == "cgroup":
            message, said_hint = _limits_in_vb_words(message)
        say(f"{prefix}{prog}: {message}")
        if said_hint is not None:
            say(f"{prefix}{prog}: hint: {said_hint}")
        net = spec.get("network") or {}
        if net.get("mode") == "bridge" and code not in (126, 127):
            from vbdecl.vb.bridge import hint

            said = hint(str(net.get("bridge")), str(net.get("subnet")), result.error)
            if said is not None:
                say(f"{prefix}{prog}: hint: {said}")
        return 1
    for failed in result.teardown_errors:    # (the process ran: its code stays the run's)
        say(f"{prefix}{prog}: {failed.where or 'teardown'}: {failed.message}")
    return int(result.code)


_LIMIT_OPTIONS = {"limits.memory": "--limit-memory", "limits.cpu": "--limit-cpu",
                  "limits.pids": "--limit-pids"}


def _limits_in_vb_words(message: str) -> tuple[str, str | None]:
    """A failure of the sandbox's cgroup, told with vb's options rather than the manifest
    keys they set (a user's review), and what to do without root."""
    named = [option for key, option in _LIMIT_OPTIONS.items() if key + ":" in message]
    for key, option in _LIMIT_OPTIONS.items():
        message = message.replace(key + ":", option + ":")
    if not named or "not writable by this user" not in message:
        return message, None
    return message, ("run as root (limits need it: vbdecl does not use a cgroup delegated to you), "
                     f"or leave out {' and '.join(named)}")


def _entry_hint(spec: dict[str, Any], message: str, error: Any) -> str | None:
    """The hint of a filesystem entry's failure told in vbdecl's words (``ACTION-ID:
    ...``; rootfs.entry_hint phrased it with vb's options), else None: bubblewrap's
    own messages stay as bubblewrap prints them, without one."""
    hint = getattr(error, "hint", None)
    if not hint:
        return None
    from vbdecl.plan.ids import fs_action_ids

    entries = list(spec.get("filesystem") or [])
    return hint if any(message.startswith(f"{aid}: ") for aid in fs_action_ids(entries)) else None
