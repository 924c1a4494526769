"""Namespaces: unshare, setns, id maps, namespace inodes and pins.

Only the stdlib and :mod:`vbdecl.sys.raw`; the run path imports this
module, so nothing heavy belongs here.
"""

from __future__ import annotations

import errno

from vbdecl.sys import oslite as os
from vbdecl.sys.raw import check, raise_errno, syscall

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# spec key -> (clone flag, /proc/PID/ns file name)
NAMESPACES: dict[str, tuple[int, str]] = {
    "user": (CLONE_NEWUSER, "user"),
    "mount": (CLONE_NEWNS, "mnt"),
    "pid": (CLONE_NEWPID, "pid"),
    "net": (CLONE_NEWNET, "net"),
    "uts": (CLONE_NEWUTS, "uts"),
    "ipc": (CLONE_NEWIPC, "ipc"),
    "cgroup": (CLONE_NEWCGROUP, "cgroup"),
}
# setns order: the user namespace first (it owns the others), pid and cgroup last.
JOIN_ORDER = ("user", "mount", "net", "uts", "ipc", "cgroup", "pid")

MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_BIND = 4096
MNT_DETACH = 2

_ROOT_HINT = ("creating namespaces needs root, or an unprivileged user namespace "
              "(namespaces.user: true); check /proc/sys/kernel/unprivileged_userns_clone "
              "and /proc/sys/user/max_user_namespaces")


def unshare(flags: int) -> None:
    if flags:
        check(syscall("unshare", flags), f"unshare({flags:#x})", hint=_ROOT_HINT)


NS_GET_USERNS = 0xB701      # _IO(0xb7, 0x1)
NS_GET_PARENT = 0xB702      # _IO(0xb7, 0x2)
NS_GET_NSTYPE = 0xB703      # _IO(0xb7, 0x3)


def mounts_are_ours() -> bool:
    """Whether our user namespace owns our mount namespace or is an ancestor of its
    owner (root on the host; root of a container; the host's root entered into a
    container's mounts), where CAP_SYS_ADMIN lets us mount. Not under ``unshare -r``:
    the owner is then an ancestor of ours, out of reach (EPERM). True when it cannot be
    told."""
    import fcntl

    ours = os.stat("/proc/self/ns/user").st_ino
    try:
        with open("/proc/self/ns/mnt", "rb", buffering=0) as mnt:
            userns = fcntl.ioctl(mnt.fileno(), NS_GET_USERNS)
    except OSError as exc:
        return exc.errno != errno.EPERM
    try:
        while os.fstat(userns).st_ino != ours:
            try:
                parent = fcntl.ioctl(userns, NS_GET_PARENT)
            except OSError:
                return False    # (past the top, or out of our reach: not below ours)
            os.close(userns)
            userns = parent
        return True
    finally:
        os.close(userns)


def setns(fd: int, nstype: int = 0, *, what: str = "") -> None:
    ret = syscall("setns", fd, nstype)
    hint = "joining a namespace needs CAP_SYS_ADMIN over it (root, or the owner of its user namespace)"
    if ret == -errno.EINVAL and nstype:
        hint = _wrong_type_hint(fd, nstype) or hint
    check(ret, f"setns({what or fd})", hint=hint)


def _wrong_type_hint(fd: int, wanted: int) -> str | None:
    """Why setns refused ``fd`` for a namespace of type ``wanted``: it is no
    namespace file, or one of another type (a user review joined /proc/PID/ns/mnt
    as a network namespace and was told about CAP_SYS_ADMIN)."""
    import fcntl

    names = {flag: key for key, (flag, _) in NAMESPACES.items()}
    try:
        actual = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        return "that file is no namespace: give a /proc/PID/ns/* file, or a bind mount of one"
    if actual == wanted:
        return None
    kind = names.get(actual, hex(actual))
    return (f"that file is a {kind} namespace, not a {names.get(wanted, hex(wanted))} one: "
            f"join it under namespaces.{kind}")


def contain_mounts(*, follow_host: bool = False) -> None:
    """After unshare(CLONE_NEWNS): nothing mounted here reaches the host any more.

    ``follow_host`` (vb: bubblewrap's slave mounts): what the host mounts later below
    one of its shared mounts still shows up in our copies of it (a bind of /run/netns
    sees `ip netns add`), without the flags of our binds (read-only, nosuid, nodev).
    Otherwise (manifests, live environments) our mounts are private: a bind shows the
    host's directory as it was, read-only all through, and a live environment's
    mount namespace can be pinned under a shared /run."""
    name, flag = ("MS_SLAVE", MS_SLAVE) if follow_host else ("MS_PRIVATE", MS_PRIVATE)
    ret = syscall("mount", None, b"/", None, MS_REC | flag, None)
    what = f"mount(/, MS_REC|{name})"
    if ret == -errno.EINVAL:
        # Our root is a plain directory (a chroot): the mount holding it cannot be
        # named from here, so what the sandbox mounts could reach the host's mounts.
        raise_errno(what, errno.EINVAL,
                    hint="vbdecl's root is not a mount point (is it running in a chroot?), so "
                         "the sandbox's mounts cannot be kept from the host's; run it where / is a "
                         "mount point, as bubblewrap requires too (in a chroot: bind-mount the "
                         "directory onto itself before chroot)")
    check(ret, what)


def ns_inode(pid: int | str, name: str) -> int | None:
    """The inode number of /proc/PID/ns/NAME (None when unreadable)."""
    try:
        return os.stat(f"/proc/{pid}/ns/{name}").st_ino
    except OSError:
        return None


def ns_inodes(pid: int | str) -> dict[str, int | None]:
    """Namespace inodes of a process, keyed like the spec (``mount`` for mnt)."""
    out: dict[str, int | None] = {}
    for key, (_, fname) in NAMESPACES.items():
        out[key] = ns_inode(pid, fname)
    # A process that unshared CLONE_NEWPID lives in the old one; its children in the new.
    if out.get("pid") is not None:
        child = ns_inode(pid, "pid_for_children")
        if child is not None:
            out["pid"] = child
    return out


def sethostname(name: str) -> None:
    data = os.fsencode(name)     # (bytes the caller gave, whatever their encoding)
    check(syscall("sethostname", data, len(data)), f"sethostname({name})")


def loopback_up() -> None:
    """Bring ``lo`` up in the current network namespace (ioctl, no netlink library)."""
    import _struct as struct
    import fcntl

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    fd = check(syscall("socket", 2, 2 | 0o2000000, 0), "socket(AF_INET, SOCK_DGRAM)")  # SOCK_CLOEXEC
    try:
        req = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(fd, siocgifflags, req))[1]
        fcntl.ioctl(fd, siocsifflags, struct.pack("16sh22x", b"lo", flags | iff_up))
    except OSError as exc:
        raise_errno("ioctl(lo, SIOCSIFFLAGS)", exc.errno or errno.EIO)
    finally:
        os.close(fd)


def own_ns_inodes(pid: int | str) -> dict[str, int]:
    """Inodes of the namespaces of ``pid`` that differ from the caller's (created or joined)."""
    theirs = ns_inodes(pid)
    mine = ns_inodes("self")
    mine["pid"] = ns_inode("self", "pid")
    return {k: v for k, v in theirs.items() if v is not None and v != mine.get(k)}


# --- user namespace id maps --------------------------------------------------

def _map_text(entries: list[dict[str, int]]) -> str:
    return "".join(f"{e['inside']} {e['outside']} {e['count']}\n" for e in entries)


def _write_proc(path: str, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise_errno(f"open({path})", exc.errno or errno.EIO)
    try:
        os.write(fd, text.encode())
    except OSError as exc:
        raise_errno(f"write({path}, {text.strip()!r})", exc.errno or errno.EIO,
                    hint="the id map must only name ids the caller owns, unless run as root "
                         "(ranges need newuidmap/newgidmap and /etc/subuid, /etc/subgid entries)")
    finally:
        os.close(fd)


def _is_own_single(entries: list[dict[str, int]], own: int) -> bool:
    return len(entries) == 1 and entries[0]["count"] == 1 and entries[0]["outside"] == own


def maps_own_ids(uid_map: list[dict[str, int]], gid_map: list[dict[str, int]]) -> bool:
    """Whether the maps are one line each, of our own uid and gid: what a process
    may write for a user namespace it created, from inside, without privileges."""
    return _is_own_single(uid_map, os.geteuid()) and _is_own_single(gid_map, os.getegid())


def write_own_maps(uid_map: list[dict[str, int]], gid_map: list[dict[str, int]]) -> None:
    """Write the maps of the user namespace we created, from inside it, as
    :func:`write_id_maps` does unprivileged (``setgroups deny`` before the gid
    map). Only for maps of our own ids (:func:`maps_own_ids`, asked before: inside,
    our ids read as the overflow id until mapped)."""
    _write_proc("/proc/self/uid_map", _map_text(uid_map))
    _write_proc("/proc/self/setgroups", "deny")
    _write_proc("/proc/self/gid_map", _map_text(gid_map))


def write_id_maps(pid: int, uid_map: list[dict[str, int]], gid_map: list[dict[str, int]], *,
                  deny_setgroups: bool = False) -> None:
    """Write the uid/gid maps of ``pid``'s user namespace.

    As root the maps are written directly (``deny_setgroups``: after ``setgroups
    deny``). Unprivileged, a single map of the caller's own id is written directly
    (after ``setgroups deny``, as the kernel requires); anything else goes through
    newuidmap/newgidmap.
    """
    privileged = os.geteuid() == 0
    if privileged or _is_own_single(uid_map, os.geteuid()):
        _write_proc(f"/proc/{pid}/uid_map", _map_text(uid_map))
    else:
        _helper("newuidmap", pid, uid_map)
    if privileged:
        if deny_setgroups:
            _write_proc(f"/proc/{pid}/setgroups", "deny")
        _write_proc(f"/proc/{pid}/gid_map", _map_text(gid_map))
    elif _is_own_single(gid_map, os.getegid()):
        _write_proc(f"/proc/{pid}/setgroups", "deny")
        _write_proc(f"/proc/{pid}/gid_map", _map_text(gid_map))
    else:
        _helper("newgidmap", pid, gid_map)


def _helper(tool: str, pid: int, entries: list[dict[str, int]]) -> None:
    import shutil
    import subprocess

    from vbdecl.errors import RuntimeSetupError

    path = shutil.which(tool)
    if path is None:
        raise RuntimeSetupError(
            f"{tool} is needed to map id ranges as an unprivileged user and was not found",
            hint="install the uidmap package, or map only your own id (the default)")
    args = [path, str(pid)]
    for e in entries:
        args += [str(e["inside"]), str(e["outside"]), str(e["count"])]
    res = subprocess.run(args, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeSetupError(
            f"{tool} failed: {res.stderr.strip() or res.returncode}",
            hint="the outside ids must be allowed for you in /etc/subuid and /etc/subgid")


# --- pinning ------------------------------------------------------------------

def pin(pid: int, name: str, target: str) -> None:
    """Keep /proc/PID/ns/NAME alive by bind-mounting it onto the file ``target``."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.close(fd)
    src = f"/proc/{pid}/ns/{name}".encode()
    check(syscall("mount", src, target.encode(), None, MS_BIND, None),
          f"mount --bind /proc/{pid}/ns/{name} {target}")


def unpin(target: str) -> None:
    """Detach a pinned namespace file (idempotent) and remove the file."""
    ret = syscall("umount2", target.encode(), MNT_DETACH)
    if ret < 0:
        err = -ret
        # (EPERM: a caller who may not unmount may not have pinned it either: the file of
        # a pin that failed, which an unprivileged review saw left, its error hidden)
        if err not in (errno.EINVAL, errno.ENOENT) and not (err == errno.EPERM and not is_pinned(target)):
            raise_errno(f"umount2({target})", err)
    try:
        os.unlink(target)
    except FileNotFoundError:
        pass


def is_pinned(target: str) -> bool:
    """True when ``target`` is a mounted namespace file (an nsfs inode)."""
    try:
        st = os.stat(target)
        parent = os.stat(os.path.dirname(target))
    except OSError:
        return False
    return st.st_dev != parent.st_dev
